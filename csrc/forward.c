/* The forwarder: its configuration, the peers, the counters, the clock and the ICMP error
 * bucket. The decisions are made in egress.c and ingress.c; the buffers and message vectors
 * belong to the TUN and UDP adapters (tun_adapter.c, udp_adapter.c).
 */
#include "adapters.h"   /* first: it sets _GNU_SOURCE */

#include <stdlib.h>

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
    tun_adapter_free(f->tun);
    udp_adapter_free(f->udp);
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
