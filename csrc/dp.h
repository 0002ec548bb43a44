/* dp.h: what every C file of the hot path shares. */
#ifndef DP_H
#define DP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>

#include "dp_api.h"

_Static_assert(DP_DROP_COUNT <= DP_MAX_DROPS, "grow dp_counters.drops");

/* Unaligned loads and stores in network order: packet fields are rarely aligned. */
static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static inline uint32_t prefix_mask(int plen) { return plen ? ~(uint32_t)0 << (32 - plen) : 0; }

/* IPv4 header fields (offsets into the header). */
#define IPH_VHL 0
#define IPH_TOTLEN 2
#define IPH_ID 4
#define IPH_FRAG 6
#define IPH_TTL 8
#define IPH_PROTO 9
#define IPH_CHECK 10
#define IPH_SRC 12
#define IPH_DST 16

#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17

/* Internal state shared by forward.c, egress.c, ingress.c and the adapters. */
struct peer {
    uint32_t subnet;
    int plen;
    uint32_t public_ip;
    uint8_t mac[6];
    int live;
};

struct tun_adapter;               /* tun_adapter.c: TUN reads, segments, frames (adapters.h) */
struct udp_adapter;               /* udp_adapter.c: message vectors, receive slots, back-off */

struct dp_fwd {
    struct dp_config cfg;
    struct dp_routes *routes;     /* subnet -> index into peers */
    struct dp_routes *by_ip;      /* public IP/32 -> number of peers behind it */
    struct peer *peers;
    int npeers, cap, live;
    struct dp_counters ctr;
    struct tun_adapter *tun;      /* the I/O state, allocated by the first drain */
    struct udp_adapter *udp;
    uint64_t now_ms;              /* dp_fwd_set_clock / CLOCK_MONOTONIC at each drain */
    uint64_t icmp_tokens;         /* ICMP error bucket, in thousandths of an error */
    uint64_t icmp_last;           /* now_ms of its last refill */
};

/* forward.c: may one more ICMP error be sent now? Counts it as sent or suppressed. */
int dp_icmp_allow(struct dp_fwd *f);

/* Room for one more entry in r: the next dp_routes_set of a new key cannot fail. 0 or -ENOMEM. */
int dp_routes_reserve(struct dp_routes *r);

/* dp_fault_alloc: a countdown to an allocation that fails (tests only; 0 = off). */
extern int dp_alloc_countdown;
static inline int alloc_fails(void)
{
    return dp_alloc_countdown > 0 && --dp_alloc_countdown == 0;
}

#endif
