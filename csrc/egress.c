/* Egress: packets from the local pods (the TUN) to the peers (the UDP socket).
 *
 * The outbound flow, one dp_drain_tun call per TUN readiness:
 *
 *   1. tun_read_batch reads a batch from the TUN: packets, or with IFF_VNET_HDR super-packets
 *      (a virtio_net_hdr and up to 64 KiB of TCP/UDP).
 *   2. A super-packet is checked and routed once (check_super): no peer holds its destination?
 *      One ICMP net-unreachable answers all of it, back into the TUN.
 *   3. tun_cut segments it at the MSS into the round, head-room before each segment.
 *   4. dp_egress_batch decides every packet or segment (egress_one): validate IPv4, find the
 *      peer holding the destination (none: ICMP net-unreachable back into the TUN; looked up
 *      once for the segments of a super-packet), udp: decrement TTL | vxlan: VXLAN + inner
 *      Ethernet into the head-room.
 *   5. udp_send_batch sends the round in one sendmmsg: a super-packet's segments to one peer as
 *      UDP_SEGMENT messages, everything else one datagram a message; ICMP errors go back to
 *      the TUN first (tun_write_packet).
 */
#include "adapters.h"   /* first: it sets _GNU_SOURCE */

static inline void drop(struct dp_fwd *f, struct dp_pkt *p, int why)
{
    p->action = DP_ACT_DROP;
    p->drop = (uint8_t)why;
    f->ctr.drops[DP_EGRESS][why]++;
}

/* The last destination a batch looked up: the segments of a super-packet share one, so it is
 * routed once, not once a segment (the peers cannot change within a batch). */
struct route_memo {
    uint32_t dst;
    int32_t idx;
    int valid;
};

static void egress_one(struct dp_fwd *f, struct dp_pkt *p, struct route_memo *memo)
{
    if (p->len >= 1 && p->data[0] >> 4 == 6)
        return drop(f, p, DP_DROP_IPV6_UNSUPPORTED);
    int err = dp_ipv4_validate(p->data, p->len);
    if (err)
        return drop(f, p, err);
    p->len = rd16(p->data + IPH_TOTLEN);          /* ignore anything after the IP packet */
    if (p->len > f->cfg.max_inner)
        return drop(f, p, DP_DROP_OVERSIZE);

    uint32_t dst = rd32(p->data + IPH_DST);
    if (!memo->valid || memo->dst != dst)
        *memo = (struct route_memo){dst, dp_routes_lookup(f->routes, dst), 1};
    int32_t idx = memo->idx;
    if (idx < 0) {
        size_t n = dp_icmp_net_unreachable(p->data, p->data, p->len, f->cfg.tun_addr);
        drop(f, p, DP_DROP_NO_ROUTE);
        if (n && dp_icmp_allow(f)) {
            p->len = (uint32_t)n;
            p->action = DP_ACT_TUN;
        }
        return;
    }
    const struct peer *peer = &f->peers[idx];
    if (f->cfg.ttl_decrement && (err = dp_ipv4_ttl_decrement(p->data, p->len)))
        return drop(f, p, err);
    f->ctr.bytes[DP_EGRESS] += p->len;            /* inner bytes, as on ingress */
    if (f->cfg.mode == DP_MODE_VXLAN) {
        p->data -= DP_VXLAN_OVERHEAD;
        p->len += DP_VXLAN_OVERHEAD;
        dp_vxlan_header(p->data, f->cfg.vni, peer->mac, f->cfg.mac);
    }
    p->addr = peer->public_ip;
    p->port = f->cfg.port;
    p->action = DP_ACT_SEND;
    p->drop = DP_OK;
    f->ctr.packets[DP_EGRESS]++;
}

void dp_egress_batch(struct dp_fwd *f, struct dp_pkt *pkts, int n)
{
    struct route_memo memo = {0};
    for (int i = 0; i < n; i++)
        egress_one(f, &pkts[i], &memo);
    if (n > 0)
        f->ctr.batches[DP_EGRESS]++;
}

/* Step 2: may the super-packet of len bytes be cut? Not when it is no IPv4 or nobody holds its
 * destination (one ICMP error then answers all of it). */
static int check_super(struct dp_fwd *f, const uint8_t *pkt, size_t len, int tun_fd)
{
    int err = len >= 1 && pkt[0] >> 4 == 6 ? DP_DROP_IPV6_UNSUPPORTED
                                            : dp_ipv4_validate(pkt, len);
    if (err) {
        f->ctr.drops[DP_EGRESS][err]++;
        return 0;
    }
    if (dp_routes_lookup(f->routes, rd32(pkt + IPH_DST)) >= 0)
        return 1;
    uint8_t icmp[DP_ICMP_MAX];
    size_t n = dp_icmp_net_unreachable(icmp, pkt, len, f->cfg.tun_addr);
    f->ctr.drops[DP_EGRESS][DP_DROP_NO_ROUTE]++;
    if (n && dp_icmp_allow(f))
        tun_write_packet(f, tun_fd, DP_EGRESS, icmp, (uint32_t)n);
    return 0;
}

/* Steps 4 and 5 for the packets of pkts (runs: their super-packets, or NULL). */
static void decide_and_send(struct dp_fwd *f, struct udp_adapter *u, int tun_fd, int sock_fd,
                            struct dp_pkt *pkts, int n, const struct run *runs, int nruns)
{
    if (n == 0)
        return;
    dp_egress_batch(f, pkts, n);
    for (int i = 0; i < n; i++)
        if (pkts[i].action == DP_ACT_TUN)       /* an ICMP error for the local sender */
            tun_write_packet(f, tun_fd, DP_EGRESS, pkts[i].data, pkts[i].len);
    udp_send_batch(f, u, sock_fd, pkts, n, runs, nruns);
}

static void send_round(struct dp_fwd *f, struct tun_adapter *t, struct udp_adapter *u,
                       int tun_fd, int sock_fd)
{
    decide_and_send(f, u, tun_fd, sock_fd, t->pkts, t->npkts, t->runs, t->nruns);
    tun_round_reset(t);
}

int dp_drain_tun(struct dp_fwd *f, int tun_fd, int sock_fd, int budget)
{
    clock_tick(f);
    struct tun_adapter *t = tun_adapter_get(f);
    struct udp_adapter *u = udp_adapter_get(f);
    if (!t || !u)
        return -ENOMEM;
    int vnet = (f->cfg.io_flags & DP_IO_VNET) != 0, batch = vnet ? SUPER_READS : PLAIN_BATCH;
    size_t headroom = f->cfg.mode == DP_MODE_VXLAN ? DP_VXLAN_OVERHEAD : 0;
    int total = 0, empty = 0;
    while (total < budget && !empty) {
        int want = budget - total < batch ? budget - total : batch;
        int n = tun_read_batch(f, t, tun_fd, want, total, &empty);     /* 1 */
        if (n < 0)
            return n;
        if (n == 0)
            break;
        total += n;
        if (!vnet) {
            decide_and_send(f, u, tun_fd, sock_fd, t->pkts, n, NULL, 0);     /* 4, 5 */
            tun_read_done(t);
            continue;
        }
        for (int i = 0; i < n; i++) {
            uint32_t len = t->read_len[i];
            if (len < DP_VNET_HLEN) {
                f->ctr.drops[DP_EGRESS][DP_DROP_TRUNCATED]++;
                continue;
            }
            if (!check_super(f, t->read_data[i] + DP_VNET_HLEN,                       /* 2 */
                             len - DP_VNET_HLEN, tun_fd))
                continue;
            int err = tun_cut(t, i, headroom);                                   /* 3 */
            if (err == TUN_ROUND_FULL) {
                send_round(f, t, u, tun_fd, sock_fd);
                err = tun_cut(t, i, headroom);
            }
            if (err) {
                f->ctr.drops[DP_EGRESS][err]++;
                continue;
            }
            uint32_t segs = t->runs[t->nruns - 1].count;
            if (segs > 1)
                f->ctr.super_packets[DP_EGRESS]++;
        }
        tun_read_done(t);                       /* cut into the round: the reads are free */
        send_round(f, t, u, tun_fd, sock_fd);                                   /* 4, 5 */
    }
    return total;
}
