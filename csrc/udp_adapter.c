/* The UDP adapter: everything the hot path receives from and sends to the underlay socket.
 *
 * Receives: one recvmmsg() for a batch of datagrams; with UDP_GRO each may be a run of equal
 * segments, whose size comes in a cmsg (udp_run_size). Sends: one sendmmsg() a round; the
 * segments of one super-packet to one peer, back to back at the stride, leave as one message
 * with UDP_SEGMENT (the kernel cuts them again), one datagram a message otherwise. Interleaved
 * iovecs under UDP_SEGMENT are not used: measured, the kernel spends more on 129 iovecs than
 * the copy into the round saves.
 *
 * A UDP_SEGMENT send the kernel refuses (EMSGSIZE: the path MTU to that peer fell below the
 * stride, after an ICMP "fragmentation needed" or with a smaller route MTU; EIO, EINVAL, ...: the
 * socket or device cannot do it) is resent one datagram a message, and GSO to that peer address
 * pauses, for 1 s, then twice as long after each refusal that follows a retry (up to 60 s), until
 * a retry goes through. Other peers keep GSO. The pod MTU stays as it is: a datagram larger than
 * the path MTU is fragmented by the kernel (the socket is IP_PMTUDISC_WANT), as a kernel VXLAN
 * device without `df set` does. Clamping the stride instead would let one forged ICMP message
 * shrink every segment to 552 bytes for ten minutes.
 *
 * The socket is left blocking so a full send buffer pushes back instead of dropping; receives
 * are non-blocking and stop at EAGAIN.
 */
#include "adapters.h"   /* first: it sets _GNU_SOURCE for sendmmsg/recvmmsg */

#include <netinet/udp.h>
#include <stdlib.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define UDP_MAX_PAYLOAD 65507
#define MMSG_MAX 1024                   /* UIO_MAXIOV: the most sendmmsg takes at once */
#define BACKOFF_FIRST_MS 1000
#define BACKOFF_MAX_MS 60000

void udp_adapter_free(struct udp_adapter *u)
{
    if (u) {
        free(u->arena);
        free(u);
    }
}

struct udp_adapter *udp_adapter_get(struct dp_fwd *f)
{
    if (f->udp)
        return f->udp;
    struct udp_adapter *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    if (!(u->arena = malloc((size_t)PLAIN_BATCH * SLOT_DATA))) {    /* touched only as used */
        free(u);
        return NULL;
    }
    return f->udp = u;
}

static inline struct sockaddr_in sockaddr_of(uint32_t addr, uint16_t port)
{
    return (struct sockaddr_in){
        .sin_family = AF_INET,
        .sin_port = htons(port),
        .sin_addr.s_addr = htonl(addr),
    };
}

/* Why a send failed, as a drop reason: EMSGSIZE says the datagram was too big to leave. */
static inline int tx_drop(int err)
{
    return err == EMSGSIZE ? DP_DROP_TX_TOO_BIG : DP_DROP_TX_ERROR;
}

/* ---- receive ----------------------------------------------------------------------------- */

int udp_recv_batch(struct dp_fwd *f, struct udp_adapter *u, int sock_fd, int want, int gro,
                   int drained)
{
    for (int i = 0; i < want; i++) {
        u->in_iov[i] = (struct iovec){udp_slot(u, i), SLOT_DATA};
        u->in[i].msg_hdr = (struct msghdr){
            .msg_name = &u->in_addr[i],
            .msg_namelen = sizeof(u->in_addr[i]),
            .msg_iov = &u->in_iov[i],
            .msg_iovlen = 1,
            .msg_control = gro ? u->in_ctl[i].buf : NULL,
            .msg_controllen = gro ? sizeof(u->in_ctl[i].buf) : 0,
        };
    }
    for (;;) {
        int n = recvmmsg(sock_fd, u->in, (unsigned)want, MSG_DONTWAIT, NULL);
        f->ctr.syscalls[DP_INGRESS]++;
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return errno != EAGAIN && drained == 0 ? -errno : 0;
    }
}

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

/* A kernel peer's UDP_SEGMENT send crosses veth as one tunnelled GSO skb, and UDP_GRO reports
 * its inner datagram size as if it were a run of ours. A run's first datagram holds one inner
 * packet; this one's inner IPv4 length covers the whole datagram. */
static int tunnelled_whole(const struct dp_fwd *f, const uint8_t *data, uint32_t len)
{
    uint32_t off = f->cfg.mode == DP_MODE_VXLAN ? DP_VXLAN_OVERHEAD : 0;
    return len >= off + 20 && data[off] >> 4 == 4 && rd16(data + off + IPH_TOTLEN) == len - off;
}

uint32_t udp_run_size(const struct dp_fwd *f, struct udp_adapter *u, int i, uint16_t *hint)
{
    uint32_t len = u->in[i].msg_len, size = (uint32_t)gro_size(&u->in[i].msg_hdr);
    *hint = 0;
    if (size == 0 || size >= len)
        return len;
    if (tunnelled_whole(f, udp_slot(u, i), len)) {
        *hint = (uint16_t)size;              /* the inner datagram size: not a run */
        return len;
    }
    return size;
}

/* ---- send -------------------------------------------------------------------------------- */

static void add_msg(struct udp_adapter *u, int m, const struct dp_pkt *p, uint32_t first,
                    uint32_t count, uint32_t len, uint16_t gso)
{
    u->out_addr[m] = sockaddr_of(p->addr, p->port);
    u->out_iov[m] = (struct iovec){p->data, len};
    u->out[m].msg_hdr = (struct msghdr){
        .msg_name = &u->out_addr[m],
        .msg_namelen = sizeof(u->out_addr[m]),
        .msg_iov = &u->out_iov[m],
        .msg_iovlen = 1,
    };
    if (gso) {
        struct msghdr *h = &u->out[m].msg_hdr;
        h->msg_control = u->out_ctl[m].buf;
        h->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
        struct cmsghdr *c = CMSG_FIRSTHDR(h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        memcpy(CMSG_DATA(c), &gso, sizeof(gso));
    }
    u->msg_first[m] = first;
    u->msg_count[m] = count;
}

static struct backoff *backoff_of(struct udp_adapter *u, uint32_t addr)
{
    for (int i = 0; i < u->noff; i++)
        if (u->off[i].addr == addr)
            return &u->off[i];
    return NULL;
}

/* May a run to addr go with UDP_SEGMENT now? */
static int gso_allowed(const struct dp_fwd *f, struct udp_adapter *u, uint32_t addr)
{
    const struct backoff *b = u->noff ? backoff_of(u, addr) : NULL;
    return !b || f->now_ms >= b->until;
}

/* GSO to addr was refused: pause it (once per pause, however many messages of the round fail). */
static void gso_pause(struct dp_fwd *f, struct udp_adapter *u, uint32_t addr)
{
    struct backoff *b = backoff_of(u, addr);
    if (b && f->now_ms < b->until)
        return;
    if (!b) {
        if (u->noff < BACKOFF_SLOTS) {
            b = &u->off[u->noff++];
        } else {                            /* full: the pause nearest its end gives way */
            b = &u->off[0];
            for (int i = 1; i < u->noff; i++)
                if (u->off[i].until < b->until)
                    b = &u->off[i];
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
static void gso_resumed(struct udp_adapter *u, uint32_t addr)
{
    struct backoff *b = backoff_of(u, addr);
    if (b)
        *b = u->off[--u->noff];
}

/* sendmmsg msgs[0:count], EINTR retried; a message that fails is dropped and the rest go on.
 * pkts[k] is the first packet of message k (its length is what a drop uncounts). */
static void send_all(struct dp_fwd *f, int sock_fd, struct mmsghdr *msgs, int count,
                     const struct dp_pkt *pkts, const uint32_t *first)
{
    for (int done = 0; done < count;) {
        int want = count - done < MMSG_MAX ? count - done : MMSG_MAX;
        int r = sendmmsg(sock_fd, msgs + done, (unsigned)want, 0);
        f->ctr.syscalls[DP_EGRESS]++;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            count_as_dropped(f, DP_EGRESS, pkts[first ? first[done] : (uint32_t)done].len,
                             tx_drop(errno));
            done++;
        } else {
            done += r;
        }
    }
}

/* Message m failed with err. A refused UDP_SEGMENT message is resent one datagram a message
 * (in one sendmmsg) and that peer's GSO pauses; anything else is dropped. */
static void send_failed(struct dp_fwd *f, struct udp_adapter *u, int m, int err, int sock_fd,
                        struct dp_pkt *pkts)
{
    uint32_t first = u->msg_first[m], count = u->msg_count[m];
    int gso_refused = count > 1 && (err == EMSGSIZE || err == EIO || err == EINVAL ||
                                    err == EOPNOTSUPP || err == ENOPROTOOPT);
    if (!gso_refused) {
        for (uint32_t k = first; k < first + count; k++)
            count_as_dropped(f, DP_EGRESS, pkts[k].len, tx_drop(err));
        return;
    }
    f->ctr.gso_fallbacks++;
    f->ctr.gso_too_big += err == EMSGSIZE;
    gso_pause(f, u, pkts[first].addr);
    for (uint32_t k = 0; k < count; k++) {      /* one peer: the message's own address */
        struct dp_pkt *p = &pkts[first + k];
        u->resend_iov[k] = (struct iovec){p->data, p->len};
        u->resend[k].msg_hdr = (struct msghdr){
            .msg_name = &u->out_addr[m],
            .msg_namelen = sizeof(u->out_addr[m]),
            .msg_iov = &u->resend_iov[k],
            .msg_iovlen = 1,
        };
    }
    send_all(f, sock_fd, u->resend, (int)count, pkts + first, NULL);
}

/* The messages of one run: UDP_SEGMENT when its segments all go to one peer back to back. */
static int run_msgs(const struct dp_fwd *f, struct udp_adapter *u, struct dp_pkt *pkts,
                    const struct run *run, int m)
{
    struct dp_pkt *p0 = &pkts[run->first];
    int together = (f->cfg.io_flags & DP_IO_UDP_GSO) && run->count > 1 &&
                   gso_allowed(f, u, p0->addr);
    for (uint32_t k = 0; k < run->count && together; k++) {
        struct dp_pkt *p = &pkts[run->first + k];
        together = p->action == DP_ACT_SEND && p->addr == p0->addr &&
                   p->data == p0->data + (size_t)k * run->stride;
    }
    if (!together) {
        for (uint32_t k = run->first; k < run->first + run->count; k++)
            if (pkts[k].action == DP_ACT_SEND)
                add_msg(u, m++, &pkts[k], k, 1, pkts[k].len, 0);
        return m;
    }
    uint32_t per = UDP_MAX_PAYLOAD / run->stride;
    if (per > GSO_MAX_SEGS)
        per = GSO_MAX_SEGS;
    for (uint32_t k = 0; k < run->count; k += per) {
        uint32_t c = run->count - k < per ? run->count - k : per;
        struct dp_pkt *last = &pkts[run->first + k + c - 1];
        uint32_t len = (c - 1) * run->stride + last->len;
        add_msg(u, m++, &pkts[run->first + k], run->first + k, c, len,
                c > 1 ? (uint16_t)run->stride : 0);
    }
    return m;
}

void udp_send_batch(struct dp_fwd *f, struct udp_adapter *u, int sock_fd, struct dp_pkt *pkts,
                    int n, const struct run *runs, int nruns)
{
    int m = 0;
    if (runs) {
        for (int r = 0; r < nruns; r++)
            m = run_msgs(f, u, pkts, &runs[r], m);
    } else {
        for (int k = 0; k < n; k++)
            if (pkts[k].action == DP_ACT_SEND)
                add_msg(u, m++, &pkts[k], (uint32_t)k, 1, pkts[k].len, 0);
    }
    for (int done = 0; done < m;) {
        int want = m - done < MMSG_MAX ? m - done : MMSG_MAX;
        int r = sendmmsg(sock_fd, u->out + done, (unsigned)want, 0);
        f->ctr.syscalls[DP_EGRESS]++;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            send_failed(f, u, done, errno, sock_fd, pkts);
            done++;
        } else {
            for (int k = done; k < done + r; k++)
                if (u->msg_count[k] > 1) {
                    f->ctr.gso_sends++;
                    if (u->noff)
                        gso_resumed(u, pkts[u->msg_first[k]].addr);
                }
            done += r;
        }
    }
}
