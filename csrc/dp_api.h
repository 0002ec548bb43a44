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
    DP_DROP_BAD_VNET_HDR = 18,
    DP_DROP_BAD_L4_HEADER = 19,
    DP_DROP_IPV6_UNSUPPORTED = 20,
    DP_DROP_BAD_L4_CHECKSUM = 21,
    DP_DROP_TX_TOO_BIG = 22,
    DP_DROP_COUNT = 23
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
 * Returns its length, or 0 when no error may be sent (RFC 1812 4.3.2.7: about an ICMP message
 * other than a query, a non-first fragment, a broadcast or multicast destination, or a source
 * that is not one host: 0/8, 127/8, 224/4, 240/4 and 255.255.255.255). */
size_t dp_icmp_net_unreachable(uint8_t *out, const uint8_t *pkt, size_t len, uint32_t src);

/* ---- L4 checksums on ingress (l4csum.c) ----------------------------------------------------
 *
 * A kernel sender on a veth underlay (kind, containers, our lab) leaves inner TCP/UDP checksums
 * CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum (addresses, protocol, L4
 * length), not complemented, and nobody completes it. Such a packet cannot be verified; it is
 * handed on as partial (NEEDS_CSUM) or completed, as a kernel receiver would pass it on. Any
 * other checksum that does not verify is corruption. */

#define DP_CSUM_UNKNOWN 0      /* not checked: not TCP/UDP, a fragment, UDP checksum 0, cut short */
#define DP_CSUM_VALID 1        /* verified (or completed by us) */
#define DP_CSUM_PARTIAL 2      /* the field holds the pseudo-header sum: to be completed */
#define DP_CSUM_BAD 3          /* wrong in any other way */

/* The DP_CSUM_* state of the L4 checksum of a valid IPv4 packet of len bytes (its total
 * length). A fragment is never verified: its checksum covers bytes it does not hold (and
 * the kernel completes partial checksums before it fragments). */
int dp_l4_csum(const uint8_t *pkt, size_t len);
/* Complete a DP_CSUM_PARTIAL checksum in place, as skb_checksum_help does. */
void dp_l4_csum_complete(uint8_t *pkt, size_t len);

/* Over veth a kernel sender's GSO super-packets also cross whole: one VXLAN datagram carries
 * an inner TCP (TSO) or UDP (UDP_SEGMENT) packet of up to 64 KiB, its checksum the
 * pseudo-header sum over all of it. For such a packet longer than max_inner, the payload size
 * to cut it at; 0 for anything else (that stays OVERSIZE). TCP: so every segment fits
 * max_inner (at least DP_TCP_MIN_MSS). UDP: udp_gso, the datagram size the sender chose, which
 * only the kernel's UDP_GRO report on receipt tells (0: unknown, not accepted). */
#define DP_TCP_MIN_MSS 48      /* the kernel's tcp_min_snd_mss default */
uint16_t dp_super_gso(const uint8_t *pkt, size_t len, uint32_t max_inner, uint16_t udp_gso);
/* The virtio_net_hdr (DP_VNET_HLEN bytes at vnet) that hands such a packet on as the GSO
 * frame it was: NEEDS_CSUM, GSO_TCPV4 (+ECN with CWR) or GSO_UDP_L4, gso_size gso. Zero for a
 * packet too short to be one. */
void dp_super_vnet(uint8_t *vnet, const uint8_t *pkt, size_t len, uint16_t gso);

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
    uint32_t io_flags;        /* DP_IO_*: what the descriptors handed to dp_drain_* can do */
    uint32_t icmp_rate;       /* ICMP errors per second the token bucket refills; 0: no limit */
    uint32_t icmp_burst;      /* the bucket's depth (and how full it starts) */
};

#define DP_IO_VNET 1          /* the TUN was opened with IFF_VNET_HDR (TUNSETOFFLOAD done) */
#define DP_IO_UDP_GSO 2       /* send runs of equal segments with UDP_SEGMENT */
#define DP_IO_UDP_GRO 4       /* the socket has UDP_GRO: datagrams may arrive coalesced */
#define DP_IO_TUN_USO 8       /* the TUN took TUN_F_USO4: coalesce UDP too (GSO_UDP_L4) */

struct dp_counters {
    uint64_t packets[2];      /* indexed by DP_EGRESS / DP_INGRESS: forwarded */
    uint64_t bytes[2];        /* inner packet bytes forwarded */
    uint64_t drops[2][32];    /* [direction][enum dp_drop] */
    uint64_t batches[2];      /* calls that moved at least one packet */
    uint64_t icmp_sent;       /* net-unreachable errors written back to the TUN */
    uint64_t super_packets[2];/* egress: TUN reads cut into several segments;
                                 ingress: TUN writes carrying several packets */
    uint64_t syscalls[2];     /* egress: read + sendmmsg/sendmsg; ingress: recvmmsg + write */
    uint64_t gso_fallbacks;   /* UDP_SEGMENT sends refused: segments went out one by one */
    uint64_t icmp_suppressed; /* net-unreachable errors the rate limit held back */
    uint64_t gso_sends;       /* UDP_SEGMENT messages the kernel took */
    uint64_t gso_too_big;     /* of gso_fallbacks: refused with EMSGSIZE (path MTU < stride) */
    uint64_t gso_backoffs;    /* times GSO to one peer address was suspended after a refusal */
};

/* One packet in a batch. data points into a slot with DP_HEADROOM bytes writable before it. */
struct dp_pkt {
    uint8_t *data;
    uint32_t len;
    uint32_t addr;            /* egress: peer public IP (out); ingress: outer source IP (in) */
    uint16_t port;            /* egress: peer port (out); ingress: outer source port (in) */
    uint8_t action;           /* DP_ACT_* (out) */
    uint8_t drop;             /* enum dp_drop (out) */
    uint8_t csum;             /* ingress: DP_CSUM_* of a delivered packet (out) */
    uint16_t gso_size;        /* ingress: a kernel peer's GSO super-packet, to cut at this
                                 (out); in: the drain's UDP_GRO size for a datagram that is one
                                 tunnelled super-packet, not a run (see dp_super_gso) */
};

struct dp_fwd;
struct dp_fwd *dp_fwd_new(const struct dp_config *cfg);
void dp_fwd_free(struct dp_fwd *f);
/* Peers are keyed by their subnet; set replaces. 0 or -errno, and on an error nothing changed:
 * -EEXIST when the subnet overlaps our own or another peer's (a lease covering ours would let
 * its holder speak for our pods), -ENOMEM. */
int dp_fwd_set_peer(struct dp_fwd *f, uint32_t subnet, int plen, uint32_t public_ip,
                    const uint8_t *mac);
int dp_fwd_del_peer(struct dp_fwd *f, uint32_t subnet, int plen);
int dp_fwd_peer_count(const struct dp_fwd *f);
void dp_fwd_counters(const struct dp_fwd *f, struct dp_counters *out);
/* The forwarder's clock (milliseconds, any epoch; the ICMP rate limit and the GSO back-off
 * run on it). Each dp_drain_* call sets it from CLOCK_MONOTONIC; batch callers set it here. */
void dp_fwd_set_clock(struct dp_fwd *f, uint64_t now_ms);

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

/* The TUN through io_uring (tun_uring.c, owned by the TUN adapter): the drains read it a batch
 * per io_uring_enter, or with no syscall from a multishot read's buffer ring, and write it a
 * batch per enter. */
#define DP_URING_OFF 0         /* read() and write(), a packet each */
#define DP_URING_BATCH 1       /* a batch of reads in flight per io_uring_enter */
#define DP_URING_MULTISHOT 2   /* IORING_OP_READ_MULTISHOT into a provided-buffer ring (6.7+) */
/* Use io_uring on tun_fd from now on, in the best mode up to max_mode the kernel supports;
 * returns the mode taken (DP_URING_OFF: the plain path stays). Once per forwarder. */
int dp_fwd_tun_uring(struct dp_fwd *f, int tun_fd, int max_mode);
/* What the event loop waits on to call dp_drain_tun: tun_fd, or the ring in multishot mode. */
int dp_fwd_tun_wait_fd(const struct dp_fwd *f, int tun_fd);

/* ---- offloads: virtio_net_hdr, segmentation (GSO) and coalescing (GRO) --------------------
 *
 * Pure functions over buffers (csum64.c, gso.c, gro.c); the pyref package holds the reference of
 * each. The virtio_net_hdr is the 10 bytes a TUN opened with IFF_VNET_HDR puts before every
 * packet it hands out and expects before every packet written to it; its 16-bit fields are
 * little-endian (the TUN default on little-endian hosts): flags, gso_type, hdr_len, gso_size,
 * csum_start, csum_offset. */

#define DP_VNET_HLEN 10
#define DP_VNET_F_NEEDS_CSUM 1     /* L4 checksum field holds the pseudo-header sum only */
#define DP_VNET_F_DATA_VALID 2     /* the checksum was verified */
#define DP_VNET_GSO_NONE 0
#define DP_VNET_GSO_TCPV4 1
#define DP_VNET_GSO_UDP 3          /* UFO (IP fragmentation of UDP): never negotiated here */
#define DP_VNET_GSO_TCPV6 4
#define DP_VNET_GSO_UDP_L4 5       /* USO: UDP datagrams of gso_size payload each */
#define DP_VNET_GSO_ECN 0x80       /* TCP: the super-packet carries CWR */

/* dp_csum_partial's sum of src while copying it to dst, in one pass. dst and src must not overlap. */
uint32_t dp_csum_copy(uint8_t *dst, const uint8_t *src, size_t len, uint32_t initial);

/* Where dp_gso_segment put the segments: segment i starts at out + i * stride, its IPv4 packet
 * at out + i * stride + headroom; all but the last are seg_len bytes long. The caller fills the
 * head-room of each (encapsulation) and sends the `total` bytes from out with UDP_SEGMENT =
 * stride, cut at multiples of stride: one sendmsg takes at most 65507 bytes of UDP payload and
 * UDP_MAX_SEGMENTS datagrams (128 on 6.18, 64 before). */
struct dp_gso_result {
    uint32_t segs;            /* >= 1 */
    uint32_t stride;          /* headroom + seg_len */
    uint32_t seg_len;         /* IPv4 length of every segment but the last */
    uint32_t last_len;        /* IPv4 length of the last segment */
    uint32_t total;           /* (segs - 1) * stride + headroom + last_len */
};

/* Turn what a TUN read handed out (its virtio_net_hdr `vnet`, DP_VNET_HLEN bytes, and the IPv4
 * packet after it) into wire-ready packets: a TCPV4 or UDP_L4 super-packet is cut into
 * gso_size-payload segments with their own IP length, ID, checksum, TCP sequence and flags and
 * complete L4 checksums; a NEEDS_CSUM packet gets its checksum completed; anything else is
 * copied. Head-room bytes are left untouched. Returns DP_OK and fills *res, or a drop reason
 * (DP_DROP_OVERSIZE when the output does not fit in cap bytes). */
int dp_gso_segment(const uint8_t *vnet, const uint8_t *pkt, size_t len, size_t headroom,
                   uint8_t *out, size_t cap, struct dp_gso_result *res);

/* One packet handed to the coalescer. */
struct dp_buf {
    const uint8_t *data;
    uint32_t len;
    uint8_t csum;             /* DP_CSUM_*: UNKNOWN makes the coalescer verify it itself */
    uint16_t gso_size;        /* non-zero: a kernel peer's super-packet (dp_super_gso), written
                                 alone as GSO_TCPV4 / GSO_UDP_L4 with this gso_size */
};

#define DP_GRO_TCP 1               /* coalesce TCP segments (written as GSO_TCPV4) */
#define DP_GRO_UDP 2               /* coalesce UDP datagrams (written as GSO_UDP_L4) */
#define DP_GRO_FLOWS 16            /* flows open at once; others go alone until one closes */
#define DP_GRO_UDP_MAX_SEGS 64     /* datagrams per UDP_L4 frame (older kernels accept 64) */
#define DP_GRO_HEAD_MAX 96         /* virtio_net_hdr + IPv4 (20) + TCP header (<= 60) */

/* One frame to write to the TUN: head[0:head_len], then for each member packet k (input
 * indices first, next[first], next[next[first]], ... until -1) its bytes from `skip` on.
 * A single packet: head is a zero virtio_net_hdr, skip is 0, the packet goes out unchanged.
 * A merged one: head is the virtio_net_hdr plus the rewritten IP and TCP/UDP headers of the
 * first member, skip is that header length, so the members contribute their payloads only. */
struct dp_gro_frame {
    uint8_t head[96];         /* DP_GRO_HEAD_MAX */
    uint16_t head_len;
    uint16_t skip;
    uint32_t len;             /* head_len + the members' bytes: what one write() takes */
    int32_t first;            /* input index of the first member */
    uint32_t count;           /* members */
};

/* Coalesce n decapsulated IPv4 packets, in arrival order, into frames (at most n; the caller
 * provides n of each array). Frames come out ordered by their first member; packets of one
 * flow never change order. Returns the number of frames. */
int dp_gro_coalesce(const struct dp_buf *pkts, int n, int flags, struct dp_gro_frame *frames,
                    int32_t *next);
/* Copy one frame into out (frame->len bytes): the frame's bytes for tests and the Python side.
 * The drain writes frames with writev instead (dp_gro_frame_iov, offload.h): measured into a
 * real TUN with IFF_VNET_HDR (a 44-segment, 63762-byte GSO_TCPV4 frame, CPU time per frame,
 * 12 interleaved rounds of 30000 on the shared 2-core VM), copy + write 9.73 us median, writev
 * of the 45 pieces 9.55 us: no slower, and no 64 KiB frame buffer to pass the bytes through. */
size_t dp_gro_frame_copy(uint8_t *out, const struct dp_gro_frame *frame,
                         const struct dp_buf *pkts, const int32_t *next);

/* ---- testing ------------------------------------------------------------------------------ */

/* Make the n-th control-plane allocation from now fail (peer and route tables); 0 disarms. */
void dp_fault_alloc(int n);
