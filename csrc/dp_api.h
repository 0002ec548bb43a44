/* dp_api.h: the public surface of the C hot path.
 *
 * This text is fed verbatim to cffi's cdef (see dataplane/fastpath/_build_ffi.py), so it holds
 * only plain declarations: no #include, no #if, and #define only for integer constants.
 * C code includes it through dp.h.
 *
 * Conventions: IPv4 addresses cross this boundary in host byte order (uint32_t), ports in
 * host byte order; everything inside packet buffers is in network byte order.
 */

/* Mirrors dataplane/drops.py:Drop (tests/wire/test_drops.py keeps the two in step). */
enum dp_drop {
    DP_OK = 0,
    DP_DROP_TRUNCATED = 1,
    DP_DROP_BAD_IP_VERSION = 2,
    DP_DROP_BAD_IP_HEADER = 3,
    DP_DROP_BAD_IP_CHECKSUM = 4,
    DP_DROP_TTL_EXCEEDED = 5,
    DP_DROP_NO_ROUTE = 6,
    DP_DROP_UNKNOWN_PEER = 7,
    DP_DROP_SPOOFED_SOURCE = 8,
    DP_DROP_NOT_LOCAL = 9,
    DP_DROP_BAD_VXLAN_FLAGS = 10,
    DP_DROP_WRONG_VNI = 11,
    DP_DROP_WRONG_INNER_MAC = 12,
    DP_DROP_LOOPED_INNER_MAC = 13,
    DP_DROP_BAD_ETHERTYPE = 14,
    DP_DROP_OVERSIZE = 15,
    DP_DROP_TX_ERROR = 16,
    DP_DROP_TUN_WRITE_ERROR = 17,
    DP_DROP_COUNT = 18
};

#define DP_MAX_DROPS 32        /* capacity of the drop arrays; DP_DROP_COUNT must not exceed it */
#define DP_EGRESS 0            /* TUN -> wire */
#define DP_INGRESS 1           /* wire -> TUN */

#define DP_MODE_UDP 0          /* flannel udp: the UDP payload is the inner IPv4 packet */
#define DP_MODE_VXLAN 1        /* RFC 7348 as Linux speaks it: VXLAN header + inner Ethernet */

#define DP_VXLAN_HLEN 8
#define DP_ETH_HLEN 14
#define DP_VXLAN_OVERHEAD 22   /* what we prepend to an inner packet in vxlan mode */
#define DP_OUTER_HLEN 28       /* outer IPv4 (20) + UDP (8) */
#define DP_HEADROOM 64         /* bytes kept free before each packet in a batch slot */
#define DP_ICMP_MAX 96         /* largest ICMP error we build: 20 + 8 + 60 + 8 */

/* What a batch function decided for one packet. */
#define DP_ACT_DROP 0          /* counted under pkt->drop */
#define DP_ACT_SEND 1          /* egress: send data/len to addr:port */
#define DP_ACT_TUN 2           /* ingress: deliver; egress: an ICMP error written back to the TUN */

/* ---- primitives ------------------------------------------------------------------------- */

/* RFC 1071 one's-complement sum of buf added to `initial` (a partial sum), folded to 16 bits
 * but not complemented. */
uint32_t dp_csum_partial(const uint8_t *buf, size_t len, uint32_t initial);
/* Fold a partial sum to 16 bits and complement it: the value that goes in a header. */
uint16_t dp_csum_fold(uint32_t sum);
/* RFC 1624 eqn. 3: header checksum after one 16-bit field changes from old to new. */
uint16_t dp_csum_update16(uint16_t check, uint16_t old, uint16_t new_);

/* Version, IHL, total length against len, header checksum. Returns DP_OK or why not. */
int dp_ipv4_validate(const uint8_t *pkt, size_t len);
/* Decrement TTL in place with an incremental checksum fix; DP_DROP_TTL_EXCEEDED at TTL <= 1. */
int dp_ipv4_ttl_decrement(uint8_t *pkt, size_t len);
/* 32-bit hash of the inner flow (addresses, protocol, ports of a first fragment). */
uint32_t dp_flow_hash(const uint8_t *pkt, size_t len);
/* A UDP source port in [lo, hi] chosen by dp_flow_hash, as RFC 7348 section 5 suggests. */
uint16_t dp_flow_sport(const uint8_t *pkt, size_t len, uint16_t lo, uint16_t hi);

/* Writes the VXLAN header and inner Ethernet header into the 22 bytes at out. */
void dp_vxlan_header(uint8_t *out, uint32_t vni, const uint8_t *dst_mac, const uint8_t *src_mac);
/* Checks a VXLAN payload; on DP_OK *inner_off is where the inner IPv4 packet starts. */
int dp_vxlan_check(const uint8_t *buf, size_t len, uint32_t vni, const uint8_t *own_mac,
                   size_t *inner_off);
/* Writes outer IPv4 + UDP (28 bytes) in front of a payload already at hdr + 28.
 * payload_len must be at most 65507 (65535 - 28); the length fields would wrap past it. */
void dp_outer_udp4(uint8_t *hdr, size_t payload_len, uint32_t saddr, uint32_t daddr,
                   uint16_t sport, uint16_t dport, uint8_t ttl, uint16_t ident);
/* Builds ICMP net-unreachable for the packet at pkt (from src) into out (>= DP_ICMP_MAX bytes).
 * Returns its length, or 0 when no error may be sent (ICMP error, non-first fragment, ...). */
size_t dp_icmp_net_unreachable(uint8_t *out, const uint8_t *pkt, size_t len, uint32_t src);

/* ---- longest-prefix-match table: prefix/len -> int32 value ------------------------------ */

struct dp_routes;
struct dp_routes *dp_routes_new(void);
void dp_routes_free(struct dp_routes *r);
int dp_routes_set(struct dp_routes *r, uint32_t prefix, int plen, int32_t value); /* 0 or -errno */
int dp_routes_del(struct dp_routes *r, uint32_t prefix, int plen);                /* 0 or -ENOENT */
int32_t dp_routes_lookup(const struct dp_routes *r, uint32_t addr);               /* value or -1 */
int dp_routes_len(const struct dp_routes *r);

/* ---- the forwarder: one node's hot-path state -------------------------------------------- */

struct dp_config {
    int mode;                 /* DP_MODE_UDP or DP_MODE_VXLAN */
    uint32_t vni;             /* vxlan */
    uint8_t mac[6];           /* vxlan: our VtepMAC */
    uint32_t tun_addr;        /* source of the ICMP errors we write back (<subnet>.0) */
    uint32_t local_net;       /* our lease: ingress destinations must fall inside it */
    int local_plen;
    uint16_t port;            /* the UDP port every peer listens on */
    int ttl_decrement;        /* flannel udp decrements TTL on both ends */
    uint32_t max_inner;       /* largest inner packet accepted (TUN MTU); larger: OVERSIZE */
};

struct dp_counters {
    uint64_t packets[2];      /* indexed by DP_EGRESS / DP_INGRESS: forwarded */
    uint64_t bytes[2];        /* inner packet bytes forwarded */
    uint64_t drops[2][32];    /* [direction][enum dp_drop] */
    uint64_t batches[2];      /* calls that moved at least one packet */
    uint64_t icmp_sent;       /* net-unreachable errors written back to the TUN */
};

/* One packet in a batch. data points into a slot with DP_HEADROOM bytes writable before it. */
struct dp_pkt {
    uint8_t *data;
    uint32_t len;
    uint32_t addr;            /* egress: peer public IP (out); ingress: outer source IP (in) */
    uint16_t port;            /* egress: peer port (out); ingress: outer source port (in) */
    uint8_t action;           /* DP_ACT_* (out) */
    uint8_t drop;             /* enum dp_drop (out) */
};

struct dp_fwd;
struct dp_fwd *dp_fwd_new(const struct dp_config *cfg);
void dp_fwd_free(struct dp_fwd *f);
/* Peers are keyed by their subnet; set replaces. 0 or -errno. */
int dp_fwd_set_peer(struct dp_fwd *f, uint32_t subnet, int plen, uint32_t public_ip,
                    const uint8_t *mac);
int dp_fwd_del_peer(struct dp_fwd *f, uint32_t subnet, int plen);
int dp_fwd_peer_count(const struct dp_fwd *f);
void dp_fwd_counters(const struct dp_fwd *f, struct dp_counters *out);

/* Decide every packet of a batch in place: headers are written into the headroom (egress) or
 * stripped (ingress), ICMP errors replace the packet they answer. Counters are updated. */
void dp_egress_batch(struct dp_fwd *f, struct dp_pkt *pkts, int n);
void dp_ingress_batch(struct dp_fwd *f, struct dp_pkt *pkts, int n);

/* ---- I/O: one call per readiness event ----------------------------------------------------- */

/* Drain the TUN (until EAGAIN or budget packets), decide, and sendmmsg the batch to sock.
 * Returns packets read, or -errno on a hard read error. */
int dp_drain_tun(struct dp_fwd *f, int tun_fd, int sock_fd, int budget);
/* Drain the UDP socket with recvmmsg (until EAGAIN or budget), decide, write to the TUN. */
int dp_drain_udp(struct dp_fwd *f, int sock_fd, int tun_fd, int budget);
