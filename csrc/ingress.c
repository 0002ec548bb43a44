/* Ingress: datagrams from the peers (the UDP socket) to the local pods (the TUN).
 *
 * The inbound flow, one dp_drain_udp call per socket readiness:
 *
 *   1. udp_recv_batch receives a batch of datagrams in one recvmmsg; with UDP_GRO each may be
 *      a run of equal segments (udp_run_size).
 *   2. The outer source must hold a lease, checked once per datagram, before its run is split
 *      into segments.
 *   3. dp_ingress_batch decides every segment (ingress_one; the lease and the sender's subnet
 *      are looked up once for the segments of a run): vxlan: flags, VNI, inner MACs,
 *      EtherType -> validate IPv4 -> the inner source inside the sender's subnet, the inner
 *      destination inside ours -> udp: decrement TTL -> the TCP/UDP checksum: a partial one (a
 *      kernel sender on veth) is completed, or left to the TUN as NEEDS_CSUM when it takes
 *      virtio_net_hdrs; a wrong one is dropped. Larger than the TUN MTU is OVERSIZE, except a
 *      kernel peer's partial GSO super-packet (TSO or UDP_SEGMENT over veth), which the TUN
 *      adapter cuts or hands on as GSO.
 *   4. tun_write_batch writes what is delivered: with IFF_VNET_HDR coalesced into GRO frames
 *      (one write each, a virtio_net_hdr in front), else one write a packet.
 */
#include "adapters.h"   /* first: it sets _GNU_SOURCE */

static inline void drop(struct dp_fwd *f, struct dp_pkt *p, int why)
{
    p->action = DP_ACT_DROP;
    p->drop = (uint8_t)why;
    f->ctr.drops[DP_INGRESS][why]++;
}

/* What the last packet of a batch looked up: the segments of a UDP_GRO run share their outer
 * source and, from one peer, their inner source, so each is looked up once a run (the peers
 * cannot change within a batch). */
struct lookup_memo {
    uint32_t addr, src;
    int32_t lease, idx;
    int have_addr, have_src;
};

static void ingress_one(struct dp_fwd *f, struct dp_pkt *p, struct lookup_memo *memo)
{
    int err;
    uint16_t udp_gso = p->gso_size;                /* the drain's hint, if any */
    p->csum = DP_CSUM_UNKNOWN;
    p->gso_size = 0;
    if (!memo->have_addr || memo->addr != p->addr) {
        memo->addr = p->addr;
        memo->lease = dp_routes_lookup(f->by_ip, p->addr);
        memo->have_addr = 1;
    }
    if (memo->lease < 0)
        return drop(f, p, DP_DROP_UNKNOWN_PEER);
    if (f->cfg.mode == DP_MODE_VXLAN) {
        size_t off;
        if ((err = dp_vxlan_check(p->data, p->len, f->cfg.vni, f->cfg.mac, &off)))
            return drop(f, p, err);
        p->data += off;
        p->len -= (uint32_t)off;
    }
    if ((err = dp_ipv4_validate(p->data, p->len)))
        return drop(f, p, err);
    p->len = rd16(p->data + IPH_TOTLEN);          /* strip padding after the IP packet */
    uint16_t gso = 0;                              /* a kernel peer's GSO super-packet */
    if (p->len > f->cfg.max_inner &&
        (!(gso = dp_super_gso(p->data, p->len, f->cfg.max_inner, udp_gso)) ||
         (p->data[IPH_PROTO] == PROTO_UDP &&      /* a vnet TUN without USO cannot take it */
          (f->cfg.io_flags & (DP_IO_VNET | DP_IO_TUN_USO)) == DP_IO_VNET)))
        return drop(f, p, DP_DROP_OVERSIZE);

    /* Our own subnet is never a source from the wire, whatever lease covers it. */
    uint32_t src = rd32(p->data + IPH_SRC), mask = prefix_mask(f->cfg.local_plen);
    if (!memo->have_src || memo->src != src) {
        memo->src = src;
        memo->idx = dp_routes_lookup(f->routes, src);
        memo->have_src = 1;
    }
    int32_t idx = memo->idx;
    if (idx < 0 || f->peers[idx].public_ip != p->addr || (src & mask) == (f->cfg.local_net & mask))
        return drop(f, p, DP_DROP_SPOOFED_SOURCE);
    if ((rd32(p->data + IPH_DST) & mask) != (f->cfg.local_net & mask))
        return drop(f, p, DP_DROP_NOT_LOCAL);
    if (f->cfg.ttl_decrement && (err = dp_ipv4_ttl_decrement(p->data, p->len)))
        return drop(f, p, err);
    /* Last, as the only check that reads the payload. With offloads this is the one pass over
     * it: the coalescer trusts the state instead of summing again. */
    int cs = gso ? DP_CSUM_PARTIAL : dp_l4_csum(p->data, p->len);
    if (cs == DP_CSUM_BAD)
        return drop(f, p, DP_DROP_BAD_L4_CHECKSUM);
    if (cs == DP_CSUM_PARTIAL && !gso && !(f->cfg.io_flags & DP_IO_VNET)) {
        dp_l4_csum_complete(p->data, p->len);   /* no header to say "partial": finish it */
        cs = DP_CSUM_VALID;
    }
    p->csum = (uint8_t)cs;
    p->gso_size = gso;                          /* delivery cuts it or writes it as GSO */
    p->action = DP_ACT_TUN;
    p->drop = DP_OK;
    f->ctr.packets[DP_INGRESS]++;
    f->ctr.bytes[DP_INGRESS] += p->len;
}

void dp_ingress_batch(struct dp_fwd *f, struct dp_pkt *pkts, int n)
{
    struct lookup_memo memo = {0};
    for (int i = 0; i < n; i++)
        ingress_one(f, &pkts[i], &memo);
    if (n > 0)
        f->ctr.batches[DP_INGRESS]++;
}

/* Steps 3 and 4. */
static void decide_and_write(struct dp_fwd *f, struct tun_adapter *t, int tun_fd,
                             struct dp_pkt *pkts, int n)
{
    dp_ingress_batch(f, pkts, n);
    tun_write_batch(f, t, tun_fd, pkts, n);
}

int dp_drain_udp(struct dp_fwd *f, int sock_fd, int tun_fd, int budget)
{
    clock_tick(f);
    struct tun_adapter *t = tun_adapter_get(f);
    struct udp_adapter *u = udp_adapter_get(f);
    if (!t || !u)
        return -ENOMEM;
    int runs = (f->cfg.io_flags & (DP_IO_VNET | DP_IO_UDP_GRO)) != 0;
    int batch = runs ? GRO_RECVS : PLAIN_BATCH, total = 0;
    while (total < budget) {
        int want = budget - total < batch ? budget - total : batch;
        int n = udp_recv_batch(f, u, sock_fd, want, runs, total);                    /* 1 */
        if (n <= 0) {
            if (n < 0)
                return n;
            break;
        }
        uint32_t segs = 0;
        for (int i = 0; i < n; i++) {
            uint8_t *data = udp_slot(u, i);
            uint32_t len = u->in[i].msg_len;
            uint32_t addr = ntohl(u->in_addr[i].sin_addr.s_addr);
            uint16_t port = ntohs(u->in_addr[i].sin_port), hint = 0;
            if (!runs) {
                u->pkts[segs++] = (struct dp_pkt){.data = data, .len = len, .addr = addr,
                                                  .port = port};
                continue;
            }
            uint32_t size = udp_run_size(f, u, i, &hint);
            uint32_t pieces = len ? (len + size - 1) / size : 1;
            /* 2: the lease first: a run from an address that holds none costs its receive
             * and nothing more, not the room of a peer's run. */
            if (dp_routes_lookup(f->by_ip, addr) < 0) {
                f->ctr.drops[DP_INGRESS][DP_DROP_UNKNOWN_PEER] += pieces;
                continue;
            }
            if (pieces > IN_SEGS) {            /* far more than UDP_GRO ever merges: refuse */
                f->ctr.drops[DP_INGRESS][DP_DROP_OVERSIZE]++;
                continue;
            }
            if (segs + pieces > IN_SEGS) {     /* full: decide and deliver what came so far */
                decide_and_write(f, t, tun_fd, u->pkts, (int)segs);
                segs = 0;
            }
            uint32_t off = 0;
            do {
                uint32_t l = len - off < size ? len - off : size;
                u->pkts[segs++] = (struct dp_pkt){.data = data + off, .len = l, .addr = addr,
                                                  .port = port, .gso_size = hint};
                off += l;
            } while (off < len);
        }
        decide_and_write(f, t, tun_fd, u->pkts, (int)segs);                         /* 3, 4 */
        total += n;
        if (n < want)
            break;
    }
    return total;
}
