/* The forwarder: peers, the decision for each packet of a batch, and the counters.
 *
 * Egress (TUN -> wire), per packet:
 *   validate IPv4 -> look up the peer holding the destination (none: ICMP net-unreachable back
 *   into the TUN) -> udp: decrement TTL | vxlan: prepend VXLAN + inner Ethernet in the headroom
 *   -> SEND to the peer's public IP.
 * Ingress (wire -> TUN), per datagram:
 *   the outer source must hold a lease -> vxlan: flags, VNI, inner MACs, EtherType -> validate
 *   IPv4 -> the inner source must be inside the sender's subnet, the inner destination inside
 *   ours -> udp: decrement TTL -> TCP/UDP checksum: a partial one (a kernel sender on veth) is
 *   completed here, or left to the TUN as NEEDS_CSUM when it takes virtio_net_hdrs; a wrong one
 *   is dropped -> deliver to the TUN. Larger than the TUN MTU is OVERSIZE, except a kernel
 *   peer's partial GSO super-packet (TSO or UDP_SEGMENT over veth), which delivery cuts or
 *   hands on as GSO.
 */
#include <errno.h>
#include <stdlib.h>

#include "dp.h"

struct dp_fwd *dp_fwd_new(const struct dp_config *cfg)
{
    struct dp_fwd *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->cfg = *cfg;
    f->icmp_tokens = (uint64_t)cfg->icmp_burst * 1000;
    f->routes = dp_routes_new();
    f->by_ip = dp_routes_new();
    if (!f->routes || !f->by_ip) {
        dp_fwd_free(f);
        return NULL;
    }
    return f;
}

void dp_fwd_free(struct dp_fwd *f)
{
    if (!f)
        return;
    dp_routes_free(f->routes);
    dp_routes_free(f->by_ip);
    free(f->peers);
    dp_io_free(f->io[0]);
    dp_io_free(f->io[1]);
    dp_offload_io_free(f->oio);
    free(f->seg_buf);
    free(f);
}

static void ip_ref(struct dp_fwd *f, uint32_t ip, int delta)
{
    int32_t n = dp_routes_lookup(f->by_ip, ip);
    n = (n < 0 ? 0 : n) + delta;
    if (n > 0)
        dp_routes_set(f->by_ip, ip, 32, n);
    else
        dp_routes_del(f->by_ip, ip, 32);
}

static int overlap(uint32_t a, int alen, uint32_t b, int blen)
{
    return ((a ^ b) & prefix_mask(alen < blen ? alen : blen)) == 0;
}

/* Every allocation is made before anything changes, so an error leaves the tables as they were. */
int dp_fwd_set_peer(struct dp_fwd *f, uint32_t subnet, int plen, uint32_t public_ip,
                    const uint8_t *mac)
{
    if (plen < 0 || plen > 32)
        return -EINVAL;
    subnet &= prefix_mask(plen);
    if (overlap(subnet, plen, f->cfg.local_net, f->cfg.local_plen))
        return -EEXIST;
    int32_t idx = -1, free_idx = -1;
    for (int i = 0; i < f->npeers; i++) {    /* control plane: a scan is fine */
        const struct peer *q = &f->peers[i];
        if (!q->live)
            free_idx = free_idx < 0 ? i : free_idx;
        else if (q->subnet == subnet && q->plen == plen)
            idx = i;
        else if (overlap(subnet, plen, q->subnet, q->plen))
            return -EEXIST;
    }
    int err, fresh = idx < 0;
    if (fresh) {
        idx = free_idx;
        if (idx < 0) {
            if (f->npeers == f->cap) {
                int cap = f->cap ? f->cap * 2 : 16;
                struct peer *p = alloc_fails() ? NULL : realloc(f->peers, sizeof(*p) * cap);
                if (!p)
                    return -ENOMEM;
                f->peers = p;
                f->cap = cap;
            }
            idx = f->npeers;
        }
        if ((err = dp_routes_reserve(f->routes)))
            return err;
    }
    if (dp_routes_lookup(f->by_ip, public_ip) < 0 && (err = dp_routes_reserve(f->by_ip)))
        return err;
    /* Nothing below can fail. */
    ip_ref(f, public_ip, +1);                 /* before the old one's -1: never a re-insert */
    if (fresh) {
        dp_routes_set(f->routes, subnet, plen, idx);
        if (idx == f->npeers)
            f->npeers++;
        f->live++;
    } else {
        ip_ref(f, f->peers[idx].public_ip, -1);
    }
    struct peer *p = &f->peers[idx];
    p->subnet = subnet;
    p->plen = plen;
    p->public_ip = public_ip;
    memcpy(p->mac, mac, 6);
    p->live = 1;
    return 0;
}

int dp_fwd_del_peer(struct dp_fwd *f, uint32_t subnet, int plen)
{
    if (plen < 0 || plen > 32)
        return -EINVAL;
    subnet &= prefix_mask(plen);
    for (int i = 0; i < f->npeers; i++) {
        struct peer *p = &f->peers[i];
        if (p->live && p->subnet == subnet && p->plen == plen) {
            p->live = 0;
            f->live--;
            ip_ref(f, p->public_ip, -1);
            return dp_routes_del(f->routes, subnet, plen);
        }
    }
    return -ENOENT;
}

int dp_fwd_peer_count(const struct dp_fwd *f) { return f->live; }

void dp_fwd_counters(const struct dp_fwd *f, struct dp_counters *out) { *out = f->ctr; }

void dp_fwd_set_clock(struct dp_fwd *f, uint64_t now_ms) { f->now_ms = now_ms; }

/* May one more ICMP error go? A token bucket as the kernel's icmp_global_allow: refilled at
 * icmp_rate a second up to icmp_burst, one token per error; counted in thousandths. */
int dp_icmp_allow(struct dp_fwd *f)
{
    uint64_t rate = f->cfg.icmp_rate, cap = (uint64_t)f->cfg.icmp_burst * 1000;
    if (rate == 0) {                      /* no limit: every error goes, and is counted */
        f->ctr.icmp_sent++;
        return 1;
    }
    if (f->now_ms > f->icmp_last) {
        uint64_t elapsed = f->now_ms - f->icmp_last;
        f->icmp_tokens = elapsed >= (cap + rate - 1) / rate ? cap : f->icmp_tokens + elapsed * rate;
        if (f->icmp_tokens > cap)
            f->icmp_tokens = cap;
        f->icmp_last = f->now_ms;
    }
    if (f->icmp_tokens < 1000) {
        f->ctr.icmp_suppressed++;
        return 0;
    }
    f->icmp_tokens -= 1000;
    f->ctr.icmp_sent++;
    return 1;
}

static inline void drop(struct dp_fwd *f, struct dp_pkt *p, int dir, int why)
{
    p->action = DP_ACT_DROP;
    p->drop = (uint8_t)why;
    f->ctr.drops[dir][why]++;
}

static void egress_one(struct dp_fwd *f, struct dp_pkt *p)
{
    if (p->len >= 1 && p->data[0] >> 4 == 6)
        return drop(f, p, DP_EGRESS, DP_DROP_IPV6_UNSUPPORTED);
    int err = dp_ipv4_validate(p->data, p->len);
    if (err)
        return drop(f, p, DP_EGRESS, err);
    p->len = rd16(p->data + IPH_TOTLEN);          /* ignore anything after the IP packet */
    if (p->len > f->cfg.max_inner)
        return drop(f, p, DP_EGRESS, DP_DROP_OVERSIZE);

    int32_t idx = dp_routes_lookup(f->routes, rd32(p->data + IPH_DST));
    if (idx < 0) {
        size_t n = dp_icmp_net_unreachable(p->data, p->data, p->len, f->cfg.tun_addr);
        drop(f, p, DP_EGRESS, DP_DROP_NO_ROUTE);
        if (n && dp_icmp_allow(f)) {
            p->len = (uint32_t)n;
            p->action = DP_ACT_TUN;
        }
        return;
    }
    const struct peer *peer = &f->peers[idx];
    if (f->cfg.ttl_decrement && (err = dp_ipv4_ttl_decrement(p->data, p->len)))
        return drop(f, p, DP_EGRESS, err);
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

static void ingress_one(struct dp_fwd *f, struct dp_pkt *p)
{
    int err;
    uint16_t udp_gso = p->gso_size;                /* the drain's hint, if any */
    p->csum = DP_CSUM_UNKNOWN;
    p->gso_size = 0;
    if (dp_routes_lookup(f->by_ip, p->addr) < 0)
        return drop(f, p, DP_INGRESS, DP_DROP_UNKNOWN_PEER);
    if (f->cfg.mode == DP_MODE_VXLAN) {
        size_t off;
        if ((err = dp_vxlan_check(p->data, p->len, f->cfg.vni, f->cfg.mac, &off)))
            return drop(f, p, DP_INGRESS, err);
        p->data += off;
        p->len -= (uint32_t)off;
    }
    if ((err = dp_ipv4_validate(p->data, p->len)))
        return drop(f, p, DP_INGRESS, err);
    p->len = rd16(p->data + IPH_TOTLEN);          /* strip padding after the IP packet */
    uint16_t gso = 0;                              /* a kernel peer's GSO super-packet */
    if (p->len > f->cfg.max_inner &&
        (!(gso = dp_super_gso(p->data, p->len, f->cfg.max_inner, udp_gso)) ||
         (p->data[IPH_PROTO] == PROTO_UDP &&      /* a vnet TUN without USO cannot take it */
          (f->cfg.io_flags & (DP_IO_VNET | DP_IO_TUN_USO)) == DP_IO_VNET)))
        return drop(f, p, DP_INGRESS, DP_DROP_OVERSIZE);

    /* Our own subnet is never a source from the wire, whatever lease covers it. */
    uint32_t src = rd32(p->data + IPH_SRC), mask = prefix_mask(f->cfg.local_plen);
    int32_t idx = dp_routes_lookup(f->routes, src);
    if (idx < 0 || f->peers[idx].public_ip != p->addr || (src & mask) == (f->cfg.local_net & mask))
        return drop(f, p, DP_INGRESS, DP_DROP_SPOOFED_SOURCE);
    if ((rd32(p->data + IPH_DST) & mask) != (f->cfg.local_net & mask))
        return drop(f, p, DP_INGRESS, DP_DROP_NOT_LOCAL);
    if (f->cfg.ttl_decrement && (err = dp_ipv4_ttl_decrement(p->data, p->len)))
        return drop(f, p, DP_INGRESS, err);
    /* Last, as the only check that reads the payload. With offloads this is the one pass over
     * it: the coalescer trusts the state instead of summing again. */
    int cs = gso ? DP_CSUM_PARTIAL : dp_l4_csum(p->data, p->len);
    if (cs == DP_CSUM_BAD)
        return drop(f, p, DP_INGRESS, DP_DROP_BAD_L4_CHECKSUM);
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

void dp_egress_batch(struct dp_fwd *f, struct dp_pkt *pkts, int n)
{
    for (int i = 0; i < n; i++)
        egress_one(f, &pkts[i]);
    if (n > 0)
        f->ctr.batches[DP_EGRESS]++;
}

void dp_ingress_batch(struct dp_fwd *f, struct dp_pkt *pkts, int n)
{
    for (int i = 0; i < n; i++)
        ingress_one(f, &pkts[i]);
    if (n > 0)
        f->ctr.batches[DP_INGRESS]++;
}
