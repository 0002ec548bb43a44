/* Fuzz target: the per-packet decisions, dp_ingress_batch (flannel udp and VXLAN decap) and
 * dp_egress_batch (encap, TTL, ICMP errors), then the coalescing of what ingress delivers, as
 * the offload drain does.
 *
 * Input: one control byte (bit 0: vxlan, bit 1: TTL decrement, bits 2-3: max_inner 65535,
 * 1450, 576, 68, bit 4: DP_IO_VNET, bit 5: DP_IO_TUN_USO), then records of one source byte and a datagram: the source picks the outer
 * sender (peers 127.0.0.2 and .3, 127.0.0.4 whose lease covers the whole network, a stranger)
 * and, bit 7, whether the datagram comes with the drain's UDP_GRO size hint (SUPER_UDP: one
 * tunnelled super-packet, not a run).
 * Each datagram sits in a slot with DP_HEADROOM bytes before it and, as the API requires, room
 * for an ICMP error after; no more, so ASan sees any access beyond.
 * Invariants: every packet is decided once (forwarded + dropped == n, reasons in range); what
 * ingress delivers lies inside its datagram, is valid IPv4 of exactly its length, no longer
 * than max_inner unless it is a partial super-packet dp_super_gso recognises (gso_size set),
 * from a source the sender holds, to our subnet, its L4 checksum state what dp_l4_csum says
 * of it (never BAD; without DP_IO_VNET never PARTIAL: completed); what egress sends is
 * addressed to the peer holding its destination, in vxlan behind a well-formed header. */
#include "fuzz.h"

#define MAXPKTS 64
#define LOCAL_NET 0x0af40100u           /* 10.244.1.0/24 */
#define SUPER_UDP 1000                  /* the UDP_GRO size hint of bit 7 */

static const uint32_t senders[4] = {0x7f000002, 0x7f000003, 0x7f000004, 0x7f000009};
static const uint8_t own_mac[6] = {2, 0, 0, 0, 0, 1};

static struct dp_fwd *make(uint8_t ctl)
{
    static const uint32_t max_inner[4] = {65535, 1450, 576, 68};
    struct dp_config cfg = {
        .mode = ctl & 1 ? DP_MODE_VXLAN : DP_MODE_UDP, .vni = 1, .tun_addr = LOCAL_NET,
        .local_net = LOCAL_NET, .local_plen = 24, .port = 8472, .ttl_decrement = ctl >> 1 & 1,
        .max_inner = max_inner[ctl >> 2 & 3],
        .io_flags = (ctl & 16 ? DP_IO_VNET : 0) | (ctl & 32 ? DP_IO_TUN_USO : 0),
    };
    memcpy(cfg.mac, own_mac, 6);
    struct dp_fwd *f = dp_fwd_new(&cfg);
    CHECK(f);
    uint8_t mac[6] = {2, 0, 0, 0, 0, 2};
    CHECK(dp_fwd_set_peer(f, 0x0af40200, 24, senders[0], mac) == 0);
    mac[5] = 3;
    CHECK(dp_fwd_set_peer(f, 0x0af40300, 24, senders[1], mac) == 0);
    mac[5] = 4;       /* a /16 left over from a SubnetLen change; may be refused (issue 9.3) */
    (void)dp_fwd_set_peer(f, 0x0af40000, 16, senders[2], mac);
    return f;
}

/* Copy the records into their slots (again for egress: ingress rewrote TTLs in place). */
static void load(struct dp_pkt *pkts, uint8_t **slots, size_t *sizes, const uint8_t **recs,
                 const size_t *lens, const uint8_t *src, int n)
{
    for (int i = 0; i < n; i++) {
        memset(slots[i], 0xa5, sizes[i]);
        memcpy(slots[i] + DP_HEADROOM, recs[i], lens[i]);
        pkts[i] = (struct dp_pkt){.data = slots[i] + DP_HEADROOM, .len = (uint32_t)lens[i],
                                  .addr = senders[src[i] & 3], .port = 8472,
                                  .gso_size = src[i] & 0x80 ? SUPER_UDP : 0};
    }
}

static void decided(struct dp_fwd *f, int dir, int n)
{
    struct dp_counters c;
    dp_fwd_counters(f, &c);
    uint64_t total = c.packets[dir];
    for (int r = 1; r < DP_MAX_DROPS; r++) {
        CHECK(r < DP_DROP_COUNT || c.drops[dir][r] == 0);
        total += c.drops[dir][r];
    }
    CHECK(c.drops[dir][0] == 0 && total == (uint64_t)n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    uint8_t ctl = take8(&in);
    uint8_t *slots[MAXPKTS], src[MAXPKTS];
    const uint8_t *recs[MAXPKTS];
    size_t sizes[MAXPKTS], lens[MAXPKTS];
    struct dp_pkt pkts[MAXPKTS];
    int n = 0;
    while (n < MAXPKTS && in.n) {
        src[n] = take8(&in);
        if (!(recs[n] = take_record(&in, &lens[n])))
            break;
        sizes[n] = DP_HEADROOM + (lens[n] > DP_ICMP_MAX ? lens[n] : DP_ICMP_MAX);
        CHECK((slots[n] = malloc(sizes[n])));
        n++;
    }
    load(pkts, slots, sizes, recs, lens, src, n);
    struct dp_fwd *f = make(ctl);
    uint32_t max_inner = f->cfg.max_inner;

    /* ingress, then coalescing of what it delivers */
    dp_ingress_batch(f, pkts, n);
    decided(f, DP_INGRESS, n);
    struct dp_buf bufs[MAXPKTS];
    int m = 0;
    for (int i = 0; i < n; i++) {
        struct dp_pkt *p = &pkts[i];
        CHECK(p->action == DP_ACT_TUN || p->action == DP_ACT_DROP);
        if (p->action == DP_ACT_DROP) {
            CHECK(p->drop > 0 && p->drop < DP_DROP_COUNT);
            continue;
        }
        uint8_t *start = slots[i] + DP_HEADROOM;
        CHECK(p->data >= start && p->data + p->len <= start + lens[i]);
        CHECK(dp_ipv4_validate(p->data, p->len) == DP_OK);
        CHECK(rd16(p->data + IPH_TOTLEN) == p->len);
        if (p->len > max_inner) {
            uint16_t hint = src[i] & 0x80 ? SUPER_UDP : 0;
            CHECK(p->gso_size && p->gso_size == dp_super_gso(p->data, p->len, max_inner, hint));
            CHECK(p->csum == DP_CSUM_PARTIAL);
            CHECK(p->data[IPH_PROTO] == PROTO_TCP ||       /* a vnet TUN without USO: no */
                  (f->cfg.io_flags & (DP_IO_VNET | DP_IO_TUN_USO)) != DP_IO_VNET);
        } else {
            CHECK(p->gso_size == 0);
            CHECK(p->csum == dp_l4_csum(p->data, p->len) ||      /* completed: no vnet */
                  (p->csum == DP_CSUM_VALID && !(f->cfg.io_flags & DP_IO_VNET)));
        }
        CHECK(p->csum != DP_CSUM_BAD);
        CHECK(f->cfg.io_flags & DP_IO_VNET || p->gso_size ||   /* completed, or cut later */
              p->csum != DP_CSUM_PARTIAL);
        CHECK((rd32(p->data + IPH_DST) & 0xffffff00u) == LOCAL_NET);
        int32_t idx = dp_routes_lookup(f->routes, rd32(p->data + IPH_SRC));
        CHECK(idx >= 0 && f->peers[idx].public_ip == p->addr);
        bufs[m++] = (struct dp_buf){p->data, p->len, p->csum, p->gso_size};
    }
    if (m) {
        struct dp_gro_frame frames[MAXPKTS];
        int32_t next[MAXPKTS];
        int nf = dp_gro_coalesce(bufs, m, DP_GRO_TCP | DP_GRO_UDP, frames, next);
        for (int k = 0; k < nf; k++) {
            uint8_t *buf = malloc(frames[k].len);
            CHECK(buf);
            CHECK(dp_gro_frame_copy(buf, &frames[k], bufs, next) == frames[k].len);
            free(buf);
        }
    }

    /* egress of the same bytes, as if the pods had sent them */
    load(pkts, slots, sizes, recs, lens, src, n);
    dp_egress_batch(f, pkts, n);
    decided(f, DP_EGRESS, n);
    for (int i = 0; i < n; i++) {
        struct dp_pkt *p = &pkts[i];
        CHECK(p->data >= slots[i] && p->data + p->len <= slots[i] + sizes[i]);
        if (p->action == DP_ACT_SEND) {
            const uint8_t *ip = p->data;
            if (f->cfg.mode == DP_MODE_VXLAN) {
                CHECK(p->len >= DP_VXLAN_OVERHEAD);
                CHECK(rd32(ip) == 0x08000000 && rd32(ip + 4) == 1u << 8);
                CHECK(memcmp(ip + 14, own_mac, 6) == 0 && rd16(ip + 20) == 0x0800);
                ip += DP_VXLAN_OVERHEAD;
            }
            size_t iplen = p->len - (size_t)(ip - p->data);
            CHECK(dp_ipv4_validate(ip, iplen) == DP_OK && iplen <= max_inner);
            int32_t idx = dp_routes_lookup(f->routes, rd32(ip + IPH_DST));
            CHECK(idx >= 0 && f->peers[idx].public_ip == p->addr && p->port == 8472);
        } else if (p->action == DP_ACT_TUN) {
            CHECK(p->drop == DP_DROP_NO_ROUTE && p->len <= DP_ICMP_MAX);
            CHECK(dp_ipv4_validate(p->data, p->len) == DP_OK && p->data[IPH_PROTO] == PROTO_ICMP);
        } else {
            CHECK(p->action == DP_ACT_DROP && p->drop > 0 && p->drop < DP_DROP_COUNT);
        }
    }
    for (int i = 0; i < n; i++)
        free(slots[i]);
    dp_fwd_free(f);
    return 0;
}
