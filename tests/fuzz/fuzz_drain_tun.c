/* Fuzz target: dp_drain_tun with offloads, the TUN-side drain (csrc/egress.c over the adapters):
 * TUN reads of a virtio_net_hdr and a packet, parsed, segmented, decided, sent with
 * UDP_SEGMENT over loopback to the peers, ICMP errors written back into the TUN.
 *
 * Input: one control byte (bit 0: vxlan; bit 1: DP_IO_UDP_GSO; bit 2: the kernel refuses
 * UDP_SEGMENT sends (SO_NO_CHECK), so the one-by-one fallback runs; bits 3-7: the budget, 0 for
 * unlimited), then records, each one TUN read (at most 40).
 * Invariants: the drain returns the reads it took; every datagram a peer receives is what a
 * peer may receive (VXLAN header to its MAC, a valid IPv4 packet for the subnet it holds, at
 * most 65507 bytes), and there are exactly as many as the forwarded count; what is written
 * back into the TUN is a zero virtio_net_hdr and an ICMP error, one per icmp_sent, and sent
 * plus rate-limited errors are at most the NO_ROUTE drops; the GSO counters agree (no
 * UDP_SEGMENT message without DP_IO_UDP_GSO, none taken while the kernel refuses them, a
 * back-off or a too-big only with a fallback). */
#include "net.h"

#define MAXREADS 40

static struct net N;
static const uint8_t own_mac[6] = {2, 0, 0, 0, 0, 1};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    N = net_open();
    return 0;
}

/* One forwarder per mode, kept across runs (a fresh one allocates its 2 MiB of round buffers,
 * which costs more than the run); what a run may change in it is reset at the start of the
 * next: the offload flags and the counters. The GSO back-off of a peer and the ICMP bucket
 * stay, on the monotonic clock, as they would in a daemon. */
static struct dp_fwd *make(uint8_t ctl)
{
    struct dp_config cfg = {
        .mode = ctl & 1 ? DP_MODE_VXLAN : DP_MODE_UDP, .vni = 1, .tun_addr = 0x0af40100,
        .local_net = 0x0af40100, .local_plen = 24, .port = N.port, .ttl_decrement = !(ctl & 1),
        .max_inner = 65535,
        .icmp_rate = 1000, .icmp_burst = 50,  /* ForwarderConfig's: the daemon always limits */
    };
    memcpy(cfg.mac, own_mac, 6);
    struct dp_fwd *f = dp_fwd_new(&cfg);
    CHECK(f);
    uint8_t mac[6] = {2, 0, 0, 0, 0, 2};
    CHECK(dp_fwd_set_peer(f, 0x0af40200, 24, 0x7f000002, mac) == 0);
    mac[5] = 3;
    CHECK(dp_fwd_set_peer(f, 0x0af40300, 24, 0x7f000003, mac) == 0);
    return f;
}

/* Check and count the datagrams that reached peer i (subnet 10.244.(2 + i).0/24). */
static uint64_t received(int i, int vxlan)
{
    static uint8_t buf[1 << 17];
    uint64_t n = 0;
    ssize_t r;
    while ((r = recv(N.peer[i], buf, sizeof(buf), MSG_DONTWAIT)) >= 0) {
        const uint8_t *ip = buf;
        size_t len = (size_t)r;
        CHECK(len <= 65507);
        if (vxlan) {
            CHECK(len >= DP_VXLAN_OVERHEAD && rd32(buf) == 0x08000000 && rd32(buf + 4) == 1u << 8);
            CHECK(buf[8] == 2 && buf[13] == 2 + i && memcmp(buf + 14, own_mac, 6) == 0);
            ip += DP_VXLAN_OVERHEAD;
            len -= DP_VXLAN_OVERHEAD;
        }
        CHECK(dp_ipv4_validate(ip, len) == DP_OK && rd16(ip + IPH_TOTLEN) == len);
        CHECK((rd32(ip + IPH_DST) & 0xffffff00u) == 0x0af40200u + ((uint32_t)i << 8));
        n++;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    uint8_t ctl = take8(&in);
    int budget = ctl >> 3 ? ctl >> 3 : 1000;
    int nocheck = (ctl & 4) != 0;
    CHECK(setsockopt(N.node, SOL_SOCKET, SO_NO_CHECK, &nocheck, sizeof(nocheck)) == 0);
    int reads = 0;
    const uint8_t *rec;
    size_t len;
    while (reads < MAXREADS && (rec = take_record(&in, &len))) {
        CHECK(send(N.tun_kernel, rec, len, 0) == (ssize_t)len);
        reads++;
    }
    static struct dp_fwd *fwds[2];
    struct dp_fwd *f = fwds[ctl & 1] ? fwds[ctl & 1] : (fwds[ctl & 1] = make(ctl));
    f->cfg.io_flags = DP_IO_VNET | DP_IO_UDP_GRO | DP_IO_TUN_USO | (ctl & 2 ? DP_IO_UDP_GSO : 0);
    memset(&f->ctr, 0, sizeof(f->ctr));
    int got = dp_drain_tun(f, N.tun_dev, N.node, budget);
    CHECK(got == (reads < budget ? reads : budget));

    struct dp_counters c;
    dp_fwd_counters(f, &c);
    CHECK(received(0, ctl & 1) + received(1, ctl & 1) == c.packets[DP_EGRESS]);
    CHECK(flush_fd(N.peer[2]) == 0);
    static uint8_t back[1 << 17];
    ssize_t r;
    uint64_t icmp = 0;
    while ((r = recv(N.tun_kernel, back, sizeof(back), MSG_DONTWAIT)) >= 0) {
        static const uint8_t zero[DP_VNET_HLEN];
        CHECK(r > DP_VNET_HLEN && memcmp(back, zero, DP_VNET_HLEN) == 0);
        CHECK(dp_ipv4_validate(back + DP_VNET_HLEN, (size_t)r - DP_VNET_HLEN) == DP_OK);
        CHECK(back[DP_VNET_HLEN + IPH_PROTO] == PROTO_ICMP);
        icmp++;
    }
    CHECK(icmp == c.icmp_sent);
    CHECK(c.icmp_sent + c.icmp_suppressed <= c.drops[DP_EGRESS][DP_DROP_NO_ROUTE]);
    CHECK(c.gso_too_big <= c.gso_fallbacks && c.gso_backoffs <= c.gso_fallbacks);
    CHECK((ctl & 2) || (c.gso_sends == 0 && c.gso_fallbacks == 0));
    CHECK(!nocheck || c.gso_sends == 0);
    flush_fd(N.tun_dev);                 /* reads beyond the budget: not this run's business */
    return 0;
}
