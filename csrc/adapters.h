/* adapters.h: the TUN adapter (tun_adapter.c) and the UDP adapter (udp_adapter.c), which own
 * every buffer and message vector of the hot path, and what egress.c and ingress.c call in them.
 * The forwarder (struct dp_fwd) holds one of each, allocated on first use. */
#ifndef DP_ADAPTERS_H
#define DP_ADAPTERS_H

#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "dp.h"
#include "tun_uring.h"

#define SLOT_DATA 65536                 /* any IPv4 packet or UDP datagram fits */
#define PLAIN_BATCH 64                  /* packets per round without offloads */
#define SUPER_READS 16                  /* TUN super-packets read per round */
#define ROUND_CAP (1u << 20)            /* segment area of one egress round */
#define ROUND_SEGS 4096                 /* segments per egress round (a full round is sent) */
#define GRO_RECVS 32                    /* datagrams per recvmmsg with UDP_GRO */
#define IN_SEGS (GRO_RECVS * 64)        /* ingress segments decided at once (a run holds <= 128) */
#define VNET_READ (DP_VNET_HLEN + SLOT_DATA)

/* The segments of one super-packet, back to back at a fixed stride in the round. */
struct run {
    uint32_t first, count, stride;
};

/* ---- the TUN adapter: virtio_net_hdrs, GSO cut on read, GRO frames on write --------------- */

struct tun_adapter {
    uint8_t *slots;                     /* plain reads: PLAIN_BATCH slots, headroom before each */
    uint8_t *reads;                     /* vnet reads: SUPER_READS slots of VNET_READ */
    uint32_t read_len[SUPER_READS];
    uint8_t *read_data[SUPER_READS];    /* vnet reads: where each lies (ours, or the ring's) */
    uint8_t *round;                     /* segments cut from this round's super-packets */
    size_t used;
    int npkts, nruns;
    struct dp_pkt pkts[ROUND_SEGS];     /* what the egress loop decides: packets or segments */
    struct run runs[SUPER_READS];
    uint8_t *cut;                       /* ingress: a kernel super-packet cut for a plain TUN */
    struct dp_buf bufs[IN_SEGS];        /* ingress: what the coalescer merges into frames */
    struct dp_gro_frame frames[IN_SEGS];
    int32_t next[IN_SEGS];
    struct iovec frame_iov[1 + IN_SEGS];    /* one frame's head and payloads, for its writev */
    uint8_t *frame_buf;                 /* a frame of more pieces than writev takes, copied */
    struct dp_uring *uring;             /* dp_fwd_tun_uring (tun_uring.c); NULL: read(), write() */
    struct iovec *ring_iov;             /* io_uring writes: every frame's iovecs of one batch */
    int ring_cnt[IN_SEGS];
    int32_t ring_res[IN_SEGS];
};

struct tun_adapter *tun_adapter_get(struct dp_fwd *f);
void tun_adapter_free(struct tun_adapter *t);

/* Read a batch from the TUN: up to want packets into t->pkts (plain), or with IFF_VNET_HDR up to
 * want super-packets into t->reads (t->read_len). Returns how many, 0 when nothing more is to be
 * had now (*empty set), or -errno for a hard error before anything was read in this drain
 * (drained: what the drain read before). This is where another read backend plugs in. */
int tun_read_batch(struct dp_fwd *f, struct tun_adapter *t, int tun_fd, int want, int drained,
                   int *empty);
/* The batch tun_read_batch read is done with (sent, or cut into the round): with io_uring its
 * buffers go back to the kernel. */
void tun_read_done(struct tun_adapter *t);

/* Cut the super-packet of t->reads slot i into the round (headroom bytes free before each
 * segment) as one run of t->pkts. 0, a DP_DROP_* reason, or TUN_ROUND_FULL: send the round,
 * tun_round_reset, and cut again. */
#define TUN_ROUND_FULL (-1)
int tun_cut(struct tun_adapter *t, int i, size_t headroom);
void tun_round_reset(struct tun_adapter *t);

/* Write one packet (an ICMP error, or a delivered packet) to the TUN, with a zero
 * virtio_net_hdr when the TUN takes them. Counts the syscall; returns whether it all went in. */
int tun_write_packet(struct dp_fwd *f, int tun_fd, int dir, const uint8_t *data, uint32_t len);

/* Write a batch of delivered packets (the DP_ACT_TUN ones of pkts) to the TUN: with
 * IFF_VNET_HDR coalesced into GRO frames, each one writev; else one write a packet, a kernel
 * peer's GSO super-packet cut first. A failed write moves its packets to the drop count. This
 * is where another write backend plugs in. */
void tun_write_batch(struct dp_fwd *f, struct tun_adapter *t, int tun_fd, struct dp_pkt *pkts,
                     int n);

/* ---- the UDP adapter: recvmmsg and UDP_GRO split, sendmmsg and UDP_SEGMENT ---------------- */

#define BACKOFF_SLOTS 64                /* peer addresses whose GSO is paused, at most */

struct backoff {                        /* GSO to addr refused: plain datagrams until `until` */
    uint32_t addr;
    uint32_t wait_ms;                   /* the pause that ends at until; doubles on each refusal */
    uint64_t until;
};

union ctl {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
};

#define GSO_MAX_SEGS 64                 /* per UDP_SEGMENT send (UDP_MAX_SEGMENTS, old kernels) */

struct udp_adapter {
    /* send */
    struct mmsghdr out[ROUND_SEGS];
    struct iovec out_iov[ROUND_SEGS];
    struct sockaddr_in out_addr[ROUND_SEGS];
    union ctl out_ctl[ROUND_SEGS];
    uint32_t msg_first[ROUND_SEGS], msg_count[ROUND_SEGS];
    struct mmsghdr resend[GSO_MAX_SEGS];    /* one refused message's segments, resent */
    struct iovec resend_iov[GSO_MAX_SEGS];
    struct backoff off[BACKOFF_SLOTS];
    int noff;
    /* receive */
    uint8_t *arena;                     /* PLAIN_BATCH slots of SLOT_DATA */
    struct mmsghdr in[PLAIN_BATCH];
    struct iovec in_iov[PLAIN_BATCH];
    struct sockaddr_in in_addr[PLAIN_BATCH];
    union ctl in_ctl[PLAIN_BATCH];
    struct dp_pkt pkts[IN_SEGS];        /* what the ingress loop decides: datagrams or segments */
};

struct udp_adapter *udp_adapter_get(struct dp_fwd *f);
void udp_adapter_free(struct udp_adapter *u);

/* recvmmsg up to want datagrams without waiting (with their UDP_GRO size when gro). Returns
 * how many, 0 when nothing more is to be had now, -errno for a hard error before any in this
 * drain (drained: how many before). */
int udp_recv_batch(struct dp_fwd *f, struct udp_adapter *u, int sock_fd, int want, int gro,
                   int drained);
static inline uint8_t *udp_slot(struct udp_adapter *u, int i)
{
    return u->arena + (size_t)i * SLOT_DATA;
}

/* Datagram i of the last receive as the segment size its run is cut at (its length when it
 * is no run), and the hint for a whole tunnelled super-packet (dp_pkt.gso_size in). */
uint32_t udp_run_size(const struct dp_fwd *f, struct udp_adapter *u, int i, uint16_t *hint);

/* Send the DP_ACT_SEND packets of pkts in one sendmmsg round. With runs, the segments of one
 * super-packet to one peer go as UDP_SEGMENT messages (GSO refused: resent one a message, and
 * that peer's GSO backs off); without, one datagram a message. */
void udp_send_batch(struct dp_fwd *f, struct udp_adapter *u, int sock_fd, struct dp_pkt *pkts,
                    int n, const struct run *runs, int nruns);

/* ---- shared by both ------------------------------------------------------------------------ */

/* A packet the batch decided to forward failed in the syscall: move it to the drop count.
 * len is what was sent or written; the byte counters hold inner packet bytes. */
static inline void count_as_dropped(struct dp_fwd *f, int dir, uint32_t len, int why)
{
    if (dir == DP_EGRESS && f->cfg.mode == DP_MODE_VXLAN)
        len -= DP_VXLAN_OVERHEAD;
    f->ctr.packets[dir]--;
    f->ctr.bytes[dir] -= len;
    f->ctr.drops[dir][why]++;
}

/* Each drain runs on the monotonic clock (the ICMP rate limit, the GSO back-off). */
static inline void clock_tick(struct dp_fwd *f)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    f->now_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#endif
