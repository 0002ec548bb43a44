/* Fuzz target: dp_drain_udp with offloads, the UDP-side drain (csrc/ingress.c over the adapters):
 * datagrams and UDP_GRO runs from loopback peers (a run is one UDP_SEGMENT send, which the
 * node's UDP_GRO socket receives whole with its gso_size), cut, decided, decapsulated,
 * coalesced and written into the fake TUN with a virtio_net_hdr.
 *
 * Input: one control byte (bit 0: vxlan; bit 1: DP_IO_VNET; bit 2: DP_IO_TUN_USO; bits 3-7:
 * the budget, 0 for unlimited), then per datagram a source byte (peer 127.0.0.2, .3 or the
 * stranger .9), a 16-bit gso_size (0, or not below the length: a plain datagram) and a record
 * (at most 48 datagrams).
 * Invariants: the drain returns the datagrams it took; every write into the TUN is one valid
 * IPv4 packet for our subnet behind a zero virtio_net_hdr, or behind one dp_gso_segment accepts
 * (a GSO frame it cuts into its members; without IFF_VNET_HDR, a bare IPv4 packet); the packets
 * the writes carry add up to the forwarded count. */
#include <netinet/udp.h>

#include "net.h"

#define MAXDGRAMS 48
#define GSO_CAP (320 * 1024)

static struct net N;
static const uint8_t own_mac[6] = {2, 0, 0, 0, 0, 1};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    N = net_open();
    int on = 1;
    CHECK(setsockopt(N.node, SOL_UDP, UDP_GRO, &on, sizeof(on)) == 0);
    return 0;
}

static struct dp_fwd *make(int vxlan)
{
    struct dp_config cfg = {
        .mode = vxlan ? DP_MODE_VXLAN : DP_MODE_UDP, .vni = 1, .tun_addr = 0x0af40100,
        .local_net = 0x0af40100, .local_plen = 24, .port = N.port, .ttl_decrement = !vxlan,
        .max_inner = 65535,
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

/* Send one datagram or run from peer `who`; returns whether the kernel took it. */
static int send_run(int who, uint16_t gso, const uint8_t *rec, size_t len)
{
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(N.port),
                             .sin_addr.s_addr = htonl(0x7f000001)};
    struct iovec iov = {(void *)rec, len};
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } ctl;
    struct msghdr h = {.msg_name = &to, .msg_namelen = sizeof(to), .msg_iov = &iov,
                       .msg_iovlen = 1};
    if (gso && gso < len) {
        h.msg_control = ctl.buf;
        h.msg_controllen = sizeof(ctl.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        memcpy(CMSG_DATA(c), &gso, sizeof(gso));
    }
    return sendmsg(N.peer[who], &h, 0) == (ssize_t)len;
}

/* Check one write into the TUN; returns how many packets it carries. */
static uint64_t frame_packets(const uint8_t *w, size_t len, int vnet)
{
    static const uint8_t zero[DP_VNET_HLEN];
    static uint8_t *out;
    if (!vnet) {
        CHECK(dp_ipv4_validate(w, len) == DP_OK && rd16(w + IPH_TOTLEN) == len);
        CHECK((rd32(w + IPH_DST) & 0xffffff00u) == 0x0af40100u);
        return 1;
    }
    CHECK(len > DP_VNET_HLEN);
    const uint8_t *ip = w + DP_VNET_HLEN;
    size_t iplen = len - DP_VNET_HLEN;
    CHECK(dp_ipv4_validate(ip, iplen) == DP_OK && rd16(ip + IPH_TOTLEN) == iplen);
    CHECK((rd32(ip + IPH_DST) & 0xffffff00u) == 0x0af40100u);
    if (memcmp(w, zero, DP_VNET_HLEN) == 0)
        return 1;
    /* Any other header must be one the TUN accepts for this packet: GSO cuts it (a lone
     * NEEDS_CSUM packet into itself, a merged frame into its members). */
    if (!out)
        CHECK((out = malloc(GSO_CAP)));
    struct dp_gso_result res;
    CHECK(dp_gso_segment(w, ip, iplen, 0, out, GSO_CAP, &res) == DP_OK);
    CHECK(w[1] == DP_VNET_GSO_NONE ? res.segs == 1 : res.segs >= 2);
    return res.segs;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    uint8_t ctl = take8(&in);
    int vxlan = ctl & 1, vnet = (ctl & 2) != 0;
    int budget = ctl >> 3 ? ctl >> 3 : 1000;
    int sent = 0, from_peers = 0;
    for (int i = 0; i < MAXDGRAMS && in.n; i++) {
        int who = take8(&in) % 3;
        uint16_t gso = take16(&in);
        size_t len;
        const uint8_t *rec = take_record(&in, &len);
        if (!rec)
            break;
        if (send_run(who, gso, rec, len)) {
            sent++;
            from_peers += who < 2;
        }
    }
    static struct dp_fwd *fwds[2];
    struct dp_fwd *f = fwds[vxlan] ? fwds[vxlan] : (fwds[vxlan] = make(vxlan));
    f->cfg.io_flags = DP_IO_UDP_GRO | (vnet ? DP_IO_VNET : 0) | (ctl & 4 ? DP_IO_TUN_USO : 0);
    memset(&f->ctr, 0, sizeof(f->ctr));
    int got = dp_drain_udp(f, N.node, N.tun_dev, budget);
    CHECK(got == (sent < budget ? sent : budget));

    static uint8_t w[1 << 17];
    ssize_t r;
    uint64_t packets = 0;
    while ((r = recv(N.tun_kernel, w, sizeof(w), MSG_DONTWAIT)) >= 0)
        packets += frame_packets(w, (size_t)r, vnet);
    struct dp_counters c;
    dp_fwd_counters(f, &c);
    CHECK(packets == c.packets[DP_INGRESS]);
    CHECK(from_peers || c.packets[DP_INGRESS] == 0);
    flush_fd(N.node);                    /* datagrams beyond the budget */
    return 0;
}
