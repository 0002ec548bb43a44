/* The offload I/O path: super-packets in, super-packets out.
 *
 * Egress (DP_IO_VNET):
 *   read() a TUN super-packet (virtio_net_hdr + up to 64 KiB of TCP/UDP) -> no peer? one ICMP
 *   error for the whole of it -> dp_gso_segment cuts it into MTU-sized packets at a fixed
 *   stride, head-room for the encapsulation in front of each -> dp_egress_batch decides and
 *   encapsulates every segment in place -> the segments of one super-packet, now back to back,
 *   leave in one message with UDP_SEGMENT (the kernel cuts them again at the stride), all
 *   messages of a round in one sendmmsg().
 * Ingress (DP_IO_UDP_GRO and/or DP_IO_VNET):
 *   recvmmsg() datagrams, each possibly a UDP_GRO run of equal segments (gso_size in a cmsg)
 *   -> split at gso_size -> dp_ingress_batch decides and decapsulates in place ->
 *   dp_gro_coalesce merges consecutive segments of a flow -> one write() per frame to the TUN,
 *   a virtio_net_hdr in front (GSO_TCPV4 or GSO_UDP_L4) so the kernel sees one packet where
 *   there were forty.
 * A UDP_SEGMENT send the kernel refuses (EMSGSIZE: the path MTU to that peer fell below the
 * stride, after an ICMP "fragmentation needed" or with a smaller route MTU; EIO, EINVAL, ...: the
 * socket or device cannot do it) is resent one datagram a message, and GSO to that peer address
 * pauses, for 1 s, then twice as long after each refusal that follows a retry (up to 60 s), until
 * a retry goes through. Other peers keep GSO. The pod MTU stays as it is: a datagram larger than
 * the path MTU is fragmented by the kernel (the socket is IP_PMTUDISC_WANT), as a kernel VXLAN
 * device without `df set` does. Clamping the stride instead would let one forged ICMP message
 * shrink every segment to 552 bytes for ten minutes.
 */
#include "io.h"         /* first: it sets _GNU_SOURCE for sendmmsg/recvmmsg */

#include <netinet/udp.h>
#include <stdlib.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define READS 16                        /* super-packets read per round */
#define OUT_CAP (1u << 20)              /* segment area of one round */
#define MAX_SEGS 4096                   /* segments per round (a flush makes room) */
#define GSO_MAX_SEGS 64                 /* per UDP_SEGMENT send (UDP_MAX_SEGMENTS, old kernels) */
#define UDP_MAX_PAYLOAD 65507
#define MMSG_MAX 1024                   /* UIO_MAXIOV: the most sendmmsg takes at once */
#define RBUF (DP_VNET_HLEN + 65536)

#define RECVS 32                        /* datagrams per recvmmsg */
#define RSLOT 65536                     /* a UDP_GRO run is at most 64 KiB */
#define IN_SEGS (RECVS * 64)            /* segments decided at once (a run holds up to 128) */

#define BACKOFF_SLOTS 64                /* peer addresses whose GSO is paused, at most */
#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS 60000

union ctl {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
};

struct run {                            /* the segments of one super-packet */
    uint32_t first, count, stride;
};

struct backoff {                        /* GSO to addr refused: plain datagrams until `until` */
    uint32_t addr;
    uint32_t wait_ms;                   /* the pause that ends at until; doubles on each refusal */
    uint64_t until;
};

struct egress {
    uint8_t *rbuf;
    uint8_t *out;
    size_t used;
    int npkts, nruns;
    struct dp_pkt pkts[MAX_SEGS];
    struct run runs[READS];
    struct mmsghdr msgs[MAX_SEGS];
    struct iovec iov[MAX_SEGS];
    struct sockaddr_in addrs[MAX_SEGS];
    union ctl ctl[MAX_SEGS];
    uint32_t msg_first[MAX_SEGS], msg_count[MAX_SEGS];
    struct mmsghdr fb_msgs[GSO_MAX_SEGS];   /* one refused message's segments, resent */
    struct iovec fb_iov[GSO_MAX_SEGS];
    struct backoff off[BACKOFF_SLOTS];
    int noff;
};

struct ingress {
    uint8_t *arena;                     /* RECVS slots of RSLOT */
    uint8_t *wbuf;                      /* one frame for the TUN */
    struct mmsghdr msgs[RECVS];
    struct iovec iov[RECVS];
    struct sockaddr_in addrs[RECVS];
    union ctl ctl[RECVS];
    struct dp_pkt pkts[IN_SEGS];
    struct dp_buf bufs[IN_SEGS];
    struct dp_gro_frame frames[IN_SEGS];
    int32_t next[IN_SEGS];
};

struct dp_offload_io {
    struct egress *eg;
    struct ingress *in;
};

void dp_offload_io_free(struct dp_offload_io *o)
{
    if (!o)
        return;
    if (o->eg) {
        free(o->eg->rbuf);
        free(o->eg->out);
        free(o->eg);
    }
    if (o->in) {
        free(o->in->arena);
        free(o->in->wbuf);
        free(o->in);
    }
    free(o);
}

static struct dp_offload_io *oio(struct dp_fwd *f)
{
    if (!f->oio)
        f->oio = calloc(1, sizeof(*f->oio));
    return f->oio;
}

static struct egress *egress_get(struct dp_fwd *f)
{
    struct dp_offload_io *o = oio(f);
    if (!o)
        return NULL;
    if (!o->eg) {
        struct egress *e = calloc(1, sizeof(*e));
        if (!e)
            return NULL;
        e->rbuf = malloc(RBUF);
        e->out = malloc(OUT_CAP);
        if (!e->rbuf || !e->out) {
            free(e->rbuf);
            free(e->out);
            free(e);
            return NULL;
        }
        o->eg = e;
    }
    return o->eg;
}

static struct ingress *ingress_get(struct dp_fwd *f)
{
    struct dp_offload_io *o = oio(f);
    if (!o)
        return NULL;
    if (!o->in) {
        struct ingress *in = calloc(1, sizeof(*in));
        if (!in)
            return NULL;
        in->arena = malloc((size_t)RECVS * RSLOT);
        in->wbuf = malloc(RBUF);
        if (!in->arena || !in->wbuf) {
            free(in->arena);
            free(in->wbuf);
            free(in);
            return NULL;
        }
        o->in = in;
    }
    return o->in;
}

/* ---- egress ------------------------------------------------------------------------------ */

static void add_msg(struct egress *e, int m, struct dp_pkt *p, uint32_t first, uint32_t count,
                    uint32_t len, uint16_t gso)
{
    e->addrs[m] = sockaddr_of(p->addr, p->port);
    e->iov[m] = (struct iovec){p->data, len};
    e->msgs[m].msg_hdr = (struct msghdr){
        .msg_name = &e->addrs[m],
        .msg_namelen = sizeof(e->addrs[m]),
        .msg_iov = &e->iov[m],
        .msg_iovlen = 1,
    };
    if (gso) {
        struct msghdr *h = &e->msgs[m].msg_hdr;
        h->msg_control = e->ctl[m].buf;
        h->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
        struct cmsghdr *c = CMSG_FIRSTHDR(h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        memcpy(CMSG_DATA(c), &gso, sizeof(gso));
    }
    e->msg_first[m] = first;
    e->msg_count[m] = count;
}

static struct backoff *backoff_of(struct egress *e, uint32_t addr)
{
    for (int i = 0; i < e->noff; i++)
        if (e->off[i].addr == addr)
            return &e->off[i];
    return NULL;
}

/* May a run to addr go with UDP_SEGMENT now? */
static int gso_allowed(const struct dp_fwd *f, struct egress *e, uint32_t addr)
{
    const struct backoff *b = e->noff ? backoff_of(e, addr) : NULL;
    return !b || f->now_ms >= b->until;
}

/* GSO to addr was refused: pause it (once per pause, however many messages of the round fail). */
static void gso_pause(struct dp_fwd *f, struct egress *e, uint32_t addr)
{
    struct backoff *b = backoff_of(e, addr);
    if (b && f->now_ms < b->until)
        return;
    if (!b) {
        if (e->noff < BACKOFF_SLOTS) {
            b = &e->off[e->noff++];
        } else {                            /* full: the pause nearest its end gives way */
            b = &e->off[0];
            for (int i = 1; i < e->noff; i++)
                if (e->off[i].until < b->until)
                    b = &e->off[i];
        }
        *b = (struct backoff){addr, 0, 0};
    }
    b->wait_ms = b->wait_ms ? b->wait_ms * 2 : BACKOFF_FIRST_MS;
    if (b->wait_ms > BACKOFF_MAX_MS)
        b->wait_ms = BACKOFF_MAX_MS;
    b->until = f->now_ms + b->wait_ms;
    f->ctr.gso_backoffs++;
}

/* A UDP_SEGMENT message to addr went through: a pause that led to it is over. */
static void gso_resumed(struct egress *e, uint32_t addr)
{
    struct backoff *b = backoff_of(e, addr);
    if (b)
        *b = e->off[--e->noff];
}

/* Message m failed with err. A refused UDP_SEGMENT message is resent one datagram a message
 * (in one sendmmsg) and that peer's GSO pauses; anything else is dropped. */
static void send_failed(struct dp_fwd *f, struct egress *e, int m, int err, int sock_fd)
{
    uint32_t first = e->msg_first[m], count = e->msg_count[m];
    int gso_refused = count > 1 && (err == EMSGSIZE || err == EIO || err == EINVAL ||
                                    err == EOPNOTSUPP || err == ENOPROTOOPT);
    if (!gso_refused) {
        for (uint32_t k = first; k < first + count; k++)
            unforward(f, DP_EGRESS, e->pkts[k].len, tx_drop(err));
        return;
    }
    f->ctr.gso_fallbacks++;
    f->ctr.gso_too_big += err == EMSGSIZE;
    gso_pause(f, e, e->pkts[first].addr);
    for (uint32_t k = 0; k < count; k++) {      /* one peer: the message's own address */
        struct dp_pkt *p = &e->pkts[first + k];
        e->fb_iov[k] = (struct iovec){p->data, p->len};
        e->fb_msgs[k].msg_hdr = (struct msghdr){
            .msg_name = &e->addrs[m],
            .msg_namelen = sizeof(e->addrs[m]),
            .msg_iov = &e->fb_iov[k],
            .msg_iovlen = 1,
        };
    }
    for (uint32_t done = 0; done < count;) {
        int r = sendmmsg(sock_fd, e->fb_msgs + done, count - done, 0);
        f->ctr.syscalls[DP_EGRESS]++;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            unforward(f, DP_EGRESS, e->pkts[first + done].len, tx_drop(errno));
            done++;
        } else {
            done += (uint32_t)r;
        }
    }
}

/* Decide every segment gathered this round and send them: a run of one super-packet's
 * segments to one peer goes as UDP_SEGMENT messages, anything else one datagram a message. */
static void flush(struct dp_fwd *f, struct egress *e, int sock_fd, int tun_fd)
{
    if (e->npkts == 0)
        return;
    dp_egress_batch(f, e->pkts, e->npkts);
    int m = 0, gso = (f->cfg.io_flags & DP_IO_UDP_GSO) != 0;
    for (int r = 0; r < e->nruns; r++) {
        struct run *run = &e->runs[r];
        struct dp_pkt *p0 = &e->pkts[run->first];
        int together = gso && run->count > 1 && gso_allowed(f, e, p0->addr);
        for (uint32_t k = 0; k < run->count && together; k++) {
            struct dp_pkt *p = &e->pkts[run->first + k];
            together = p->action == DP_ACT_SEND && p->addr == p0->addr &&
                       p->data == p0->data + (size_t)k * run->stride;
        }
        if (together) {
            uint32_t per = UDP_MAX_PAYLOAD / run->stride;
            if (per > GSO_MAX_SEGS)
                per = GSO_MAX_SEGS;
            for (uint32_t k = 0; k < run->count; k += per) {
                uint32_t c = run->count - k < per ? run->count - k : per;
                struct dp_pkt *last = &e->pkts[run->first + k + c - 1];
                uint32_t len = (c - 1) * run->stride + last->len;
                add_msg(e, m++, &e->pkts[run->first + k], run->first + k, c, len,
                        c > 1 ? (uint16_t)run->stride : 0);
            }
            continue;
        }
        for (uint32_t k = run->first; k < run->first + run->count; k++) {
            struct dp_pkt *p = &e->pkts[k];
            if (p->action == DP_ACT_SEND)
                add_msg(e, m++, p, k, 1, p->len, 0);
            else if (p->action == DP_ACT_TUN && tun_put(f, tun_fd, p->data, p->len))
                f->ctr.syscalls[DP_EGRESS]++;
        }
    }
    for (int done = 0; done < m;) {
        int want = m - done < MMSG_MAX ? m - done : MMSG_MAX;
        int r = sendmmsg(sock_fd, e->msgs + done, (unsigned)want, 0);
        f->ctr.syscalls[DP_EGRESS]++;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            send_failed(f, e, done, errno, sock_fd);
            done++;
        } else {
            for (int k = done; k < done + r; k++)
                if (e->msg_count[k] > 1) {
                    f->ctr.gso_sends++;
                    if (e->noff)
                        gso_resumed(e, e->pkts[e->msg_first[k]].addr);
                }
            done += r;
        }
    }
    e->npkts = 0;
    e->nruns = 0;
}

/* A super-packet nobody holds the destination of: one ICMP error answers all of it. */
static int no_route(struct dp_fwd *f, const uint8_t *pkt, size_t len, int tun_fd)
{
    int err = len >= 1 && pkt[0] >> 4 == 6 ? DP_DROP_IPV6_UNSUPPORTED
                                            : dp_ipv4_validate(pkt, len);
    if (err) {
        f->ctr.drops[DP_EGRESS][err]++;
        return 1;
    }
    if (dp_routes_lookup(f->routes, rd32(pkt + IPH_DST)) >= 0)
        return 0;
    uint8_t icmp[DP_ICMP_MAX];
    size_t n = dp_icmp_net_unreachable(icmp, pkt, len, f->cfg.tun_addr);
    f->ctr.drops[DP_EGRESS][DP_DROP_NO_ROUTE]++;
    if (n && dp_icmp_allow(f)) {
        f->ctr.syscalls[DP_EGRESS]++;
        tun_put(f, tun_fd, icmp, (uint32_t)n);
    }
    return 1;
}

/* Segment the super-packet in e->rbuf (r bytes read) into the round. */
static void take(struct dp_fwd *f, struct egress *e, size_t r, int sock_fd, int tun_fd)
{
    if (r < DP_VNET_HLEN) {
        f->ctr.drops[DP_EGRESS][DP_DROP_TRUNCATED]++;
        return;
    }
    const uint8_t *pkt = e->rbuf + DP_VNET_HLEN;
    size_t len = r - DP_VNET_HLEN;
    if (no_route(f, pkt, len, tun_fd))
        return;
    size_t headroom = f->cfg.mode == DP_MODE_VXLAN ? DP_VXLAN_OVERHEAD : 0;
    struct dp_gso_result res;
    int err = dp_gso_segment(e->rbuf, pkt, len, headroom, e->out + e->used, OUT_CAP - e->used,
                             &res);
    if (err == DP_DROP_OVERSIZE && e->used > 0) {       /* the round is full: send it first */
        flush(f, e, sock_fd, tun_fd);
        e->used = 0;
        err = dp_gso_segment(e->rbuf, pkt, len, headroom, e->out, OUT_CAP, &res);
    }
    if (!err && res.segs > MAX_SEGS)
        err = DP_DROP_OVERSIZE;
    if (err) {
        f->ctr.drops[DP_EGRESS][err]++;
        return;
    }
    if (e->npkts + (int)res.segs > MAX_SEGS) {      /* out of slots, not of bytes */
        flush(f, e, sock_fd, tun_fd);
    }
    if (res.segs > 1)
        f->ctr.super_packets[DP_EGRESS]++;
    e->runs[e->nruns++] = (struct run){(uint32_t)e->npkts, res.segs, res.stride};
    uint8_t *base = e->out + e->used + headroom;
    for (uint32_t i = 0; i < res.segs; i++)
        e->pkts[e->npkts++] = (struct dp_pkt){
            .data = base + (size_t)i * res.stride,
            .len = i + 1 < res.segs ? res.seg_len : res.last_len,
        };
    e->used += (res.total + 63) & ~(size_t)63;
}

int dp_drain_tun_vnet(struct dp_fwd *f, int tun_fd, int sock_fd, int budget)
{
    struct egress *e = egress_get(f);
    if (!e)
        return -ENOMEM;
    int total = 0, empty = 0;
    while (total < budget && !empty) {
        int reads = 0;
        e->used = 0;
        while (reads < READS && total < budget) {
            ssize_t r = read(tun_fd, e->rbuf, RBUF);
            f->ctr.syscalls[DP_EGRESS]++;
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                if (errno != EAGAIN && total == 0) {
                    flush(f, e, sock_fd, tun_fd);
                    return -errno;
                }
                empty = 1;
                break;
            }
            reads++;
            total++;
            take(f, e, (size_t)r, sock_fd, tun_fd);
        }
        flush(f, e, sock_fd, tun_fd);
    }
    return total;
}

/* ---- ingress ----------------------------------------------------------------------------- */

static int gro_size(struct msghdr *h)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c))
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
            int size;
            memcpy(&size, CMSG_DATA(c), sizeof(size));
            return size;
        }
    return 0;
}

/* Write what the batch delivers: coalesced frames with a virtio_net_hdr, or one by one. */
static void deliver(struct dp_fwd *f, struct ingress *in, int n, int tun_fd)
{
    if (!(f->cfg.io_flags & DP_IO_VNET)) {
        for (int i = 0; i < n; i++)
            if (in->pkts[i].action == DP_ACT_TUN)
                dp_tun_deliver(f, tun_fd, &in->pkts[i]);
        return;
    }
    int m = 0;
    for (int i = 0; i < n; i++)
        if (in->pkts[i].action == DP_ACT_TUN)
            in->bufs[m++] = (struct dp_buf){in->pkts[i].data, in->pkts[i].len, in->pkts[i].csum,
                                            in->pkts[i].gso_size};
    if (m == 0)
        return;
    int flags = DP_GRO_TCP | (f->cfg.io_flags & DP_IO_TUN_USO ? DP_GRO_UDP : 0);
    int frames = dp_gro_coalesce(in->bufs, m, flags, in->frames, in->next);
    for (int k = 0; k < frames; k++) {
        struct dp_gro_frame *fr = &in->frames[k];
        size_t len = dp_gro_frame_copy(in->wbuf, fr, in->bufs, in->next);
        ssize_t r;
        f->ctr.syscalls[DP_INGRESS]++;
        do
            r = write(tun_fd, in->wbuf, len);
        while (r < 0 && errno == EINTR);
        if (r == (ssize_t)len) {
            /* merged, or a kernel peer's super-packet passed on whole (head[1]: gso_type) */
            if (fr->count > 1 || fr->head[1] != DP_VNET_GSO_NONE)
                f->ctr.super_packets[DP_INGRESS]++;
            continue;
        }
        for (int32_t j = fr->first; j >= 0; j = in->next[j])
            unforward(f, DP_INGRESS, in->bufs[j].len, DP_DROP_TUN_WRITE_ERROR);
    }
}

/* A kernel peer's UDP_SEGMENT send crosses veth as one tunnelled GSO skb, and UDP_GRO reports
 * its inner datagram size as if it were a run of ours. A run's first datagram holds one inner
 * packet; this one's inner IPv4 length covers the whole datagram. */
static int tunnelled_whole(const struct dp_fwd *f, const uint8_t *data, uint32_t len)
{
    uint32_t off = f->cfg.mode == DP_MODE_VXLAN ? DP_VXLAN_OVERHEAD : 0;
    return len >= off + 20 && data[off] >> 4 == 4 && rd16(data + off + IPH_TOTLEN) == len - off;
}

int dp_drain_udp_gro(struct dp_fwd *f, int sock_fd, int tun_fd, int budget)
{
    struct ingress *in = ingress_get(f);
    if (!in)
        return -ENOMEM;
    int total = 0;
    while (total < budget) {
        int want = budget - total < RECVS ? budget - total : RECVS;
        for (int i = 0; i < want; i++) {
            in->iov[i] = (struct iovec){in->arena + (size_t)i * RSLOT, RSLOT};
            in->msgs[i].msg_hdr = (struct msghdr){
                .msg_name = &in->addrs[i],
                .msg_namelen = sizeof(in->addrs[i]),
                .msg_iov = &in->iov[i],
                .msg_iovlen = 1,
                .msg_control = in->ctl[i].buf,
                .msg_controllen = sizeof(in->ctl[i].buf),
            };
        }
        int n = recv_batch(f, sock_fd, in->msgs, want, total);
        if (n <= 0) {
            if (n < 0)
                return n;
            break;
        }
        uint32_t segs = 0;
        for (int i = 0; i < n; i++) {
            struct msghdr *h = &in->msgs[i].msg_hdr;
            uint8_t *data = in->arena + (size_t)i * RSLOT;
            uint32_t len = in->msgs[i].msg_len;
            uint32_t size = (uint32_t)gro_size(h);
            uint16_t hint = 0;
            if (size == 0 || size >= len)
                size = len;
            else if (tunnelled_whole(f, data, len)) {
                hint = (uint16_t)size;           /* the inner datagram size: not a run */
                size = len;
            }
            uint32_t addr = ntohl(in->addrs[i].sin_addr.s_addr);
            uint16_t port = ntohs(in->addrs[i].sin_port);
            uint32_t pieces = len ? (len + size - 1) / size : 1;
            /* The lease first: a run from an address that holds none costs its receive and
             * nothing more, not the room of a peer's run. */
            if (dp_routes_lookup(f->by_ip, addr) < 0) {
                f->ctr.drops[DP_INGRESS][DP_DROP_UNKNOWN_PEER] += pieces;
                continue;
            }
            if (pieces > IN_SEGS) {            /* far more than UDP_GRO ever merges: refuse */
                f->ctr.drops[DP_INGRESS][DP_DROP_OVERSIZE]++;
                continue;
            }
            if (segs + pieces > IN_SEGS) {     /* full: decide and deliver what came so far */
                dp_ingress_batch(f, in->pkts, (int)segs);
                deliver(f, in, (int)segs, tun_fd);
                segs = 0;
            }
            uint32_t off = 0;
            do {
                uint32_t l = len - off < size ? len - off : size;
                in->pkts[segs++] = (struct dp_pkt){.data = data + off, .len = l,
                                                   .addr = addr, .port = port,
                                                   .gso_size = hint};
                off += l;
            } while (off < len);
        }
        dp_ingress_batch(f, in->pkts, (int)segs);
        deliver(f, in, (int)segs, tun_fd);
        total += n;
        if (n < want)
            break;
    }
    return total;
}
