/* The TUN through io_uring, on the raw syscalls.
 *
 * Why raw syscalls and not liburing: the one liburing Debian 12 ships (2.3) has no
 * io_uring_prep_read_multishot, so the opcode would be set by hand anyway; what we use is
 * four calls (setup, enter, register, mmap) and two rings, about 100 lines, and it spares a
 * build and runtime dependency. Debian 12's <linux/io_uring.h> is 6.1's, so the constants
 * newer than that are defined here.
 *
 *   multishot (6.7+): one IORING_OP_READ_MULTISHOT on the TUN fills a ring of provided
 *       buffers as packets arrive; the kernel posts a completion per packet and signals the
 *       ring's fd, which the event loop waits on. Reading a batch is then no syscall at all,
 *       only walking the completion queue; a read ends (no buffer left, error) and is
 *       armed again when the batch's buffers go back.
 *   batch: the event loop waits on the TUN; one io_uring_enter issues up to 64 reads into
 *       our slots (an O_NONBLOCK TUN makes each one a packet or -EAGAIN at once); how many
 *       follows the last batch's fill.
 *   writes: one io_uring_enter writes up to 64 frames (writev, a frame's iovecs), on a ring
 *       of their own so their completions never mix with the reads'.
 */
#define _GNU_SOURCE
#include "tun_uring.h"

#include <errno.h>
#include <fcntl.h>                 /* RWF_NOWAIT */
#include <linux/io_uring.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "dp.h"

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#define __NR_io_uring_enter 426
#define __NR_io_uring_register 427
#endif
#define OP_READ_MULTISHOT 49               /* IORING_OP_READ_MULTISHOT, Linux 6.7 */
#define PROBE_OPS 64
#define BGID 0                             /* our one provided-buffer group */

struct ring {
    int fd;
    unsigned entries;                      /* SQ size */
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
    void *sq_map, *cq_map;
    size_t sq_len, cq_len, sqes_len;
    unsigned tail;                         /* SQEs prepared, not yet published */
};

struct dp_uring {
    int mode, tun_fd;
    struct ring rd, wr;
    uint8_t *arena;                        /* DP_URING_SLOTS slots of stride bytes */
    uint32_t stride, headroom, slot_len;
    /* multishot */
    struct io_uring_buf_ring *br;
    size_t br_len;
    uint16_t br_tail;
    int armed;
    uint16_t held[DP_URING_SLOTS];         /* buffers handed out by the last read */
    int nheld;
    /* batch */
    int want;
    int empty;                             /* dp_uring_empty */
};

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(int fd, unsigned submit, unsigned complete, unsigned flags)
{
    return (int)syscall(__NR_io_uring_enter, fd, submit, complete, flags, NULL, 0);
}

static int sys_register(int fd, unsigned op, void *arg, unsigned n)
{
    return (int)syscall(__NR_io_uring_register, fd, op, arg, n);
}

static void ring_close(struct ring *r)
{
    if (r->sqes)
        munmap(r->sqes, r->sqes_len);
    if (r->cq_map && r->cq_map != r->sq_map)
        munmap(r->cq_map, r->cq_len);
    if (r->sq_map)
        munmap(r->sq_map, r->sq_len);
    if (r->fd >= 0)
        close(r->fd);
    memset(r, 0, sizeof(*r));
    r->fd = -1;
}

static int ring_open(struct ring *r, unsigned entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    memset(r, 0, sizeof(*r));
    r->fd = sys_setup(entries, &p);
    if (r->fd < 0)
        return -errno;
    r->entries = p.sq_entries;
    r->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP)
        r->sq_len = r->cq_len = r->sq_len > r->cq_len ? r->sq_len : r->cq_len;
    r->sq_map = mmap(NULL, r->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                     IORING_OFF_SQ_RING);
    if (r->sq_map == MAP_FAILED) {
        r->sq_map = NULL;
        goto fail;
    }
    r->cq_map = r->sq_map;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
        r->cq_map = mmap(NULL, r->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                         r->fd, IORING_OFF_CQ_RING);
        if (r->cq_map == MAP_FAILED) {
            r->cq_map = NULL;
            goto fail;
        }
    }
    r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
                   IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED) {
        r->sqes = NULL;
        goto fail;
    }
    uint8_t *sq = r->sq_map, *cq = r->cq_map;
    r->sq_head = (unsigned *)(sq + p.sq_off.head);
    r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->cq_head = (unsigned *)(cq + p.cq_off.head);
    r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    r->tail = *r->sq_tail;
    return 0;
fail:
    {
        int err = errno;
        ring_close(r);
        return -err;
    }
}

/* A zeroed SQE at the tail, or NULL when the queue is full (callers stay under entries). */
static struct io_uring_sqe *sqe_get(struct ring *r)
{
    if (r->tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE) >= r->entries)
        return NULL;
    unsigned i = r->tail & *r->sq_mask;
    r->sq_array[i] = i;
    r->tail++;
    memset(&r->sqes[i], 0, sizeof(r->sqes[i]));
    return &r->sqes[i];
}

/* Publish the prepared SQEs and submit them, waiting for `complete` completions; EINTR is
 * retried (what was submitted stays submitted). */
static int ring_submit(struct ring *r, unsigned complete, int *enters)
{
    unsigned submit = r->tail - *r->sq_tail;
    __atomic_store_n(r->sq_tail, r->tail, __ATOMIC_RELEASE);
    for (;;) {
        int n = sys_enter(r->fd, submit, complete, complete ? IORING_ENTER_GETEVENTS : 0);
        (*enters)++;
        if (n >= 0) {
            if ((unsigned)n >= submit)
                return 0;
            submit -= (unsigned)n;
            continue;
        }
        if (errno == EINTR) {
            submit = 0;                    /* the submission happened; only the wait broke */
            continue;
        }
        return -errno;
    }
}

static struct io_uring_cqe *cqe_peek(struct ring *r)
{
    unsigned head = *r->cq_head;
    if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
        return NULL;
    return &r->cqes[head & *r->cq_mask];
}

static void cqe_seen(struct ring *r)
{
    __atomic_store_n(r->cq_head, *r->cq_head + 1, __ATOMIC_RELEASE);
}

static uint8_t *slot(const struct dp_uring *u, unsigned i)
{
    return u->arena + (size_t)i * u->stride + u->headroom;
}

static int supported(const struct io_uring_probe *pr, int op)
{
    return op < pr->ops_len && (pr->ops[op].flags & IO_URING_OP_SUPPORTED);
}

/* The ring's completions for `count` SQEs issued at once, into res[user_data]. */
static int reap(struct ring *r, int count, int32_t *res, int *enters)
{
    for (int got = 0; got < count;) {
        struct io_uring_cqe *c = cqe_peek(r);
        if (!c) {                          /* not posted yet (cannot be: we waited); wait */
            int err = ring_submit(r, 1, enters);
            if (err)
                return err;
            continue;
        }
        if (c->user_data < (uint64_t)count)
            res[c->user_data] = c->res;
        cqe_seen(r);
        got++;
    }
    return 0;
}

static void buffers_give(struct dp_uring *u, const uint16_t *bids, int n)
{
    uint16_t mask = DP_URING_SLOTS - 1;
    for (int i = 0; i < n; i++) {
        struct io_uring_buf *b = &u->br->bufs[(u->br_tail + i) & mask];
        b->addr = (uint64_t)(uintptr_t)slot(u, bids[i]);
        b->len = u->slot_len;
        b->bid = bids[i];
    }
    u->br_tail = (uint16_t)(u->br_tail + n);
    __atomic_store_n(&u->br->tail, u->br_tail, __ATOMIC_RELEASE);
}

static int arm(struct dp_uring *u, int *enters)
{
    struct io_uring_sqe *s = sqe_get(&u->rd);
    if (!s)
        return -EBUSY;
    s->opcode = OP_READ_MULTISHOT;
    s->fd = u->tun_fd;
    s->flags = IOSQE_BUFFER_SELECT;
    s->buf_group = BGID;
    s->user_data = 1;
    int err = ring_submit(&u->rd, 0, enters);
    if (!err)
        u->armed = 1;
    return err;
}

static int multishot_open(struct dp_uring *u)
{
    u->br_len = DP_URING_SLOTS * sizeof(struct io_uring_buf);
    void *m = mmap(NULL, u->br_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -errno;
    u->br = m;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)m;
    reg.ring_entries = DP_URING_SLOTS;
    reg.bgid = BGID;
    if (sys_register(u->rd.fd, IORING_REGISTER_PBUF_RING, &reg, 1) < 0) {
        int err = errno;
        munmap(m, u->br_len);
        u->br = NULL;
        return -err;
    }
    uint16_t all[DP_URING_SLOTS];
    for (int i = 0; i < DP_URING_SLOTS; i++)
        all[i] = (uint16_t)i;
    buffers_give(u, all, DP_URING_SLOTS);
    int enters = 0;
    return arm(u, &enters);
}

struct dp_uring *dp_uring_open(int tun_fd, int max_mode, uint32_t slot_len, uint32_t headroom,
                               int *mode)
{
    *mode = DP_URING_OFF;
    if (max_mode <= DP_URING_OFF)
        return NULL;
    struct dp_uring *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    u->tun_fd = tun_fd;
    u->rd.fd = u->wr.fd = -1;
    u->headroom = headroom;
    u->slot_len = slot_len;
    u->stride = (headroom + slot_len + 63) & ~63u;
    u->want = 8;
    u->arena = malloc((size_t)DP_URING_SLOTS * u->stride);   /* pages touched as used */
    if (!u->arena || ring_open(&u->rd, DP_URING_SLOTS) || ring_open(&u->wr, DP_URING_SLOTS))
        goto off;
    struct {
        struct io_uring_probe p;
        struct io_uring_probe_op ops[PROBE_OPS];
    } pr;
    memset(&pr, 0, sizeof(pr));
    if (sys_register(u->rd.fd, IORING_REGISTER_PROBE, &pr, PROBE_OPS) < 0 ||
        !supported(&pr.p, IORING_OP_READ) || !supported(&pr.p, IORING_OP_WRITEV))
        goto off;
    u->mode = DP_URING_BATCH;
    if (max_mode >= DP_URING_MULTISHOT && supported(&pr.p, OP_READ_MULTISHOT) &&
        multishot_open(u) == 0)
        u->mode = DP_URING_MULTISHOT;
    *mode = u->mode;
    return u;
off:
    dp_uring_close(u);
    return NULL;
}

void dp_uring_close(struct dp_uring *u)
{
    if (!u)
        return;
    if (u->rd.sq_map || u->rd.fd >= 0)
        ring_close(&u->rd);                        /* closing the ring cancels the read */
    if (u->wr.sq_map || u->wr.fd >= 0)
        ring_close(&u->wr);
    if (u->br)
        munmap(u->br, u->br_len);
    free(u->arena);
    free(u);
}

int dp_uring_mode(const struct dp_uring *u)
{
    return u ? u->mode : DP_URING_OFF;
}

int dp_uring_wait_fd(const struct dp_uring *u)
{
    return u->mode == DP_URING_MULTISHOT ? u->rd.fd : u->tun_fd;
}

static int read_multishot(struct dp_uring *u, int max, uint8_t **data, uint32_t *len,
                          int *enters)
{
    int n = 0, err = 0, armed_now = 0;
    struct io_uring_cqe *c;
again:
    while (n < max && (c = cqe_peek(&u->rd))) {
        int32_t res = c->res;
        uint32_t flags = c->flags;
        cqe_seen(&u->rd);
        if (!(flags & IORING_CQE_F_MORE))
            u->armed = 0;                  /* ended: armed again once buffers are back */
        if (flags & IORING_CQE_F_BUFFER) {
            uint16_t bid = (uint16_t)(flags >> IORING_CQE_BUFFER_SHIFT);
            u->held[u->nheld++] = bid;
            if (res > 0) {
                data[n] = slot(u, bid);
                len[n++] = (uint32_t)res;
            }
        } else if (res < 0 && res != -ENOBUFS && res != -EAGAIN && res != -ECANCELED) {
            err = res;
        }
    }
    /* The read ended with nothing left to hand out (its ENOBUFS seen only now): arm it again
     * here, since no completion would wake the loop for it; what it reads at once is posted
     * before io_uring_enter returns. */
    if (n == 0 && !u->armed && u->nheld == 0 && !armed_now) {
        armed_now = 1;
        int e = arm(u, enters);
        if (e)
            return err ? err : e;
        goto again;
    }
    u->empty = n < max;
    return n == 0 && err ? err : n;
}

static int read_batch(struct dp_uring *u, int max, uint8_t **data, uint32_t *len, int *enters)
{
    int want = u->want < max ? u->want : max;
    int32_t res[DP_URING_SLOTS];
    for (int i = 0; i < want; i++) {
        struct io_uring_sqe *s = sqe_get(&u->rd);
        s->opcode = IORING_OP_READ;
        s->fd = u->tun_fd;
        s->addr = (uint64_t)(uintptr_t)slot(u, (unsigned)i);
        s->len = u->slot_len;
        s->rw_flags = RWF_NOWAIT;          /* -EAGAIN now rather than a read armed to wait */
        s->user_data = (uint64_t)i;
        res[i] = -EAGAIN;
    }
    int err = ring_submit(&u->rd, (unsigned)want, enters);
    if (!err)
        err = reap(&u->rd, want, res, enters);
    if (err)
        return err;
    int n = 0;
    for (int i = 0; i < want; i++) {       /* issued in order, so packets are in order */
        if (res[i] > 0) {
            data[n] = slot(u, (unsigned)i);
            len[n++] = (uint32_t)res[i];
        } else if (res[i] < 0 && res[i] != -EAGAIN && !err) {
            err = res[i];
        }
    }
    /* Next time: twice as many after a full batch, a few more than this one found else. */
    int next = n == want ? 2 * want : n + 4;
    u->want = next > DP_URING_SLOTS ? DP_URING_SLOTS : next;
    u->empty = n < want;
    return n == 0 && err ? err : n;
}

int dp_uring_read(struct dp_uring *u, int max, uint8_t **data, uint32_t *len, int *enters)
{
    if (max > DP_URING_SLOTS)
        max = DP_URING_SLOTS;
    if (max <= 0)
        return 0;
    return u->mode == DP_URING_MULTISHOT ? read_multishot(u, max, data, len, enters)
                                         : read_batch(u, max, data, len, enters);
}

int dp_uring_empty(const struct dp_uring *u)
{
    return u->empty;
}

void dp_uring_release(struct dp_uring *u)
{
    if (u->mode != DP_URING_MULTISHOT || u->nheld == 0)
        return;
    buffers_give(u, u->held, u->nheld);
    u->nheld = 0;
    if (!u->armed) {
        int enters = 0;
        arm(u, &enters);                   /* failing, the next read tries again */
    }
}

int dp_uring_write(struct dp_uring *u, const struct iovec *iov, const int *iovcnt, int n,
                   int32_t *res)
{
    int enters = 0;
    size_t off = 0;
    for (int done = 0; done < n;) {
        int k = n - done < DP_URING_SLOTS ? n - done : DP_URING_SLOTS;
        for (int i = 0; i < k; i++) {
            struct io_uring_sqe *s = sqe_get(&u->wr);
            s->opcode = IORING_OP_WRITEV;
            s->fd = u->tun_fd;
            s->addr = (uint64_t)(uintptr_t)(iov + off);
            s->len = (uint32_t)iovcnt[done + i];
            s->rw_flags = RWF_NOWAIT;      /* a full TUN: -EAGAIN (a drop), as write() says */
            s->user_data = (uint64_t)i;
            off += (size_t)iovcnt[done + i];
            res[done + i] = -EIO;
        }
        int err = ring_submit(&u->wr, (unsigned)k, &enters);
        if (!err)
            err = reap(&u->wr, k, res + done, &enters);
        if (err)
            return err;
        done += k;
    }
    return enters;
}
