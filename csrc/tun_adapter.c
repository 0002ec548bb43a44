/* The TUN adapter: everything the hot path reads from and writes to the TUN device.
 *
 * Reads: a plain TUN hands out one packet per read(); with IFF_VNET_HDR each read is a
 * virtio_net_hdr and up to 64 KiB of TCP/UDP (a super-packet), which tun_cut segments at the
 * MSS into the round, head-room for the encapsulation before each segment. Writes: one packet
 * per write() (a zero virtio_net_hdr in front when the TUN takes them), or, with IFF_VNET_HDR,
 * the coalescer's frames: one writev() each of the frame's head (virtio_net_hdr + rewritten
 * headers) and its segments' payloads, so the kernel sees one packet where there were forty.
 *
 * With the TUN through io_uring (dp_fwd_tun_uring, tun_uring.c) the reads are a batch per
 * io_uring_enter, or none at all in multishot mode, and the writes a batch per enter.
 */
#include "adapters.h"   /* first: it sets _GNU_SOURCE */

#include <stdlib.h>

#include "offload.h"

#define SLOT_SIZE (DP_HEADROOM + SLOT_DATA)
#define IOV_MAX_WRITE 1024               /* UIO_MAXIOV: the most one writev takes */
#define CUT_CAP (320u * 1024)           /* types.GSO_CAPACITY: any cut at >= DP_TCP_MIN_MSS */

void tun_adapter_free(struct tun_adapter *t)
{
    if (!t)
        return;
    free(t->slots);
    free(t->reads);
    free(t->round);
    free(t->cut);
    free(t->frame_buf);
    free(t->ring_iov);
    dp_uring_close(t->uring);
    free(t);
}

/* Buffers are allocated on first use, for the descriptors' flags of the drain at hand (pages
 * are touched only as used). */
struct tun_adapter *tun_adapter_get(struct dp_fwd *f)
{
    struct tun_adapter *t = f->tun ? f->tun : calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    f->tun = t;
    if (f->cfg.io_flags & DP_IO_VNET) {
        if (!t->reads)
            t->reads = malloc((size_t)SUPER_READS * VNET_READ);
        if (!t->round)
            t->round = malloc(ROUND_CAP);
        return t->reads && t->round ? t : NULL;
    }
    if (!t->slots)
        t->slots = malloc((size_t)PLAIN_BATCH * SLOT_SIZE);
    return t->slots ? t : NULL;
}

int dp_fwd_tun_uring(struct dp_fwd *f, int tun_fd, int max_mode)
{
    struct tun_adapter *t = f->tun ? f->tun : calloc(1, sizeof(*t));
    if (!t)
        return DP_URING_OFF;
    f->tun = t;
    if (t->uring)
        return dp_uring_mode(t->uring);
    int mode;
    /* A slot takes the largest TUN read of either path (a virtio_net_hdr and 64 KiB), with
     * the head-room the plain egress path encapsulates into. */
    t->uring = dp_uring_open(tun_fd, max_mode, VNET_READ, DP_HEADROOM, &mode);
    return mode;
}

int dp_fwd_tun_wait_fd(const struct dp_fwd *f, int tun_fd)
{
    return f->tun && f->tun->uring ? dp_uring_wait_fd(f->tun->uring) : tun_fd;
}

static inline uint8_t *plain_slot(struct tun_adapter *t, int i)
{
    return t->slots + (size_t)i * SLOT_SIZE + DP_HEADROOM;
}

static inline uint8_t *vnet_slot(struct tun_adapter *t, int i)
{
    return t->reads + (size_t)i * VNET_READ;
}

/* tun_read_batch through io_uring: the packets lie in the ring's slots until tun_read_done. */
static int uring_read_batch(struct dp_fwd *f, struct tun_adapter *t, int want, int drained,
                            int *empty)
{
    uint8_t *data[DP_URING_SLOTS];
    uint32_t len[DP_URING_SLOTS];
    int enters = 0, vnet = (f->cfg.io_flags & DP_IO_VNET) != 0;
    tun_read_done(t);
    int n = dp_uring_read(t->uring, want, data, len, &enters);
    f->ctr.syscalls[DP_EGRESS] += (uint64_t)enters;
    if (n < 0 && drained == 0)
        return n;
    if (n <= 0 || dp_uring_empty(t->uring)) {
        *empty = 1;
        n = n < 0 ? 0 : n;
    }
    for (int i = 0; i < n; i++) {
        if (vnet) {
            t->read_data[i] = data[i];
            t->read_len[i] = len[i];
        } else {
            t->pkts[i] = (struct dp_pkt){.data = data[i], .len = len[i]};
        }
    }
    return n;
}

int tun_read_batch(struct dp_fwd *f, struct tun_adapter *t, int tun_fd, int want, int drained,
                   int *empty)
{
    if (t->uring)
        return uring_read_batch(f, t, want, drained, empty);
    int vnet = (f->cfg.io_flags & DP_IO_VNET) != 0, n = 0;
    while (n < want) {
        uint8_t *d = vnet ? vnet_slot(t, n) : plain_slot(t, n);
        ssize_t r = read(tun_fd, d, vnet ? VNET_READ : SLOT_DATA);
        f->ctr.syscalls[DP_EGRESS]++;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && drained + n == 0)
                return -errno;
            *empty = 1;
            break;
        }
        if (vnet) {
            t->read_data[n] = d;
            t->read_len[n] = (uint32_t)r;
        } else {
            t->pkts[n] = (struct dp_pkt){.data = d, .len = (uint32_t)r};
        }
        n++;
    }
    return n;
}

void tun_read_done(struct tun_adapter *t)
{
    if (t->uring)
        dp_uring_release(t->uring);
}

void tun_round_reset(struct tun_adapter *t)
{
    t->used = 0;
    t->npkts = 0;
    t->nruns = 0;
}

int tun_cut(struct tun_adapter *t, int i, size_t headroom)
{
    const uint8_t *vnet = t->read_data[i], *pkt = vnet + DP_VNET_HLEN;
    size_t len = t->read_len[i] - DP_VNET_HLEN;
    struct dp_gso_result res;
    int err = dp_gso_segment(vnet, pkt, len, headroom, t->round + t->used, ROUND_CAP - t->used,
                             &res);
    if (err == DP_DROP_OVERSIZE && t->used > 0)
        return TUN_ROUND_FULL;              /* out of bytes: the round goes first */
    if (!err && res.segs > ROUND_SEGS)
        err = DP_DROP_OVERSIZE;
    if (err)
        return err;
    if (t->npkts + (int)res.segs > ROUND_SEGS)
        return TUN_ROUND_FULL;              /* out of slots, not of bytes */
    t->runs[t->nruns++] = (struct run){(uint32_t)t->npkts, res.segs, res.stride};
    uint8_t *base = t->round + t->used + headroom;
    for (uint32_t k = 0; k < res.segs; k++)
        t->pkts[t->npkts++] = (struct dp_pkt){
            .data = base + (size_t)k * res.stride,
            .len = k + 1 < res.segs ? res.seg_len : res.last_len,
        };
    t->used += (res.total + 63) & ~(size_t)63;
    return 0;
}

/* writev, retried on EINTR: whether all want bytes went in. */
static int put(int tun_fd, const struct iovec *iov, int n, size_t want)
{
    ssize_t r;
    do
        r = writev(tun_fd, iov, n);
    while (r < 0 && errno == EINTR);
    return r == (ssize_t)want;
}

static int put_packet(const struct dp_fwd *f, int tun_fd, const uint8_t *data, uint32_t len)
{
    static const uint8_t no_offload[DP_VNET_HLEN];
    struct iovec iov[2] = {{(void *)no_offload, DP_VNET_HLEN}, {(void *)data, len}};
    if (f->cfg.io_flags & DP_IO_VNET)
        return put(tun_fd, iov, 2, DP_VNET_HLEN + (size_t)len);
    return put(tun_fd, iov + 1, 1, len);
}

int tun_write_packet(struct dp_fwd *f, int tun_fd, int dir, const uint8_t *data, uint32_t len)
{
    f->ctr.syscalls[dir]++;
    return put_packet(f, tun_fd, data, len);
}

/* A packet for a TUN without virtio_net_hdrs; a kernel peer's GSO super-packet (gso_size) is
 * cut as the kernel would before a device without TSO/USO: complete checksums, IP IDs
 * counting up, every segment within the TUN MTU. */
static void write_plain(struct dp_fwd *f, struct tun_adapter *t, int tun_fd, struct dp_pkt *p)
{
    if (!p->gso_size) {
        if (!tun_write_packet(f, tun_fd, DP_INGRESS, p->data, p->len))
            count_as_dropped(f, DP_INGRESS, p->len, DP_DROP_TUN_WRITE_ERROR);
        return;
    }
    if (!t->cut && !(t->cut = malloc(CUT_CAP)))
        return count_as_dropped(f, DP_INGRESS, p->len, DP_DROP_OVERSIZE);
    uint8_t vnet[DP_VNET_HLEN];
    struct dp_gso_result res;
    dp_super_vnet(vnet, p->data, p->len, p->gso_size);
    int err = dp_gso_segment(vnet, p->data, p->len, 0, t->cut, CUT_CAP, &res);
    if (err)
        return count_as_dropped(f, DP_INGRESS, p->len, err);
    int ok = 1;
    for (uint32_t i = 0; i < res.segs; i++)
        ok &= tun_write_packet(f, tun_fd, DP_INGRESS, t->cut + (size_t)i * res.stride,
                               i + 1 < res.segs ? res.seg_len : res.last_len);
    if (!ok)
        count_as_dropped(f, DP_INGRESS, p->len, DP_DROP_TUN_WRITE_ERROR);
}

/* A frame as the iovecs of its writev: head and payloads where they lie; copied into one buffer
 * only past UIO_MAXIOV pieces (many tiny segments). 0 when that buffer cannot be had. */
static int frame_iovecs(struct tun_adapter *t, const struct dp_gro_frame *fr)
{
    if (fr->count < IOV_MAX_WRITE)
        return dp_gro_frame_iov(t->frame_iov, fr, t->bufs, t->next);
    if (!t->frame_buf && !(t->frame_buf = malloc(VNET_READ)))
        return 0;
    t->frame_iov[0] = (struct iovec){t->frame_buf,
                                     dp_gro_frame_copy(t->frame_buf, fr, t->bufs, t->next)};
    return 1;
}

/* How a frame written to the TUN counts: ok, or its members dropped. */
static void frame_written(struct dp_fwd *f, struct tun_adapter *t, const struct dp_gro_frame *fr,
                          int ok)
{
    if (ok) {
        /* merged, or a kernel peer's super-packet passed on whole (head[1]: gso_type) */
        if (fr->count > 1 || fr->head[1] != DP_VNET_GSO_NONE)
            f->ctr.super_packets[DP_INGRESS]++;
        return;
    }
    for (int32_t j = fr->first; j >= 0; j = t->next[j])
        count_as_dropped(f, DP_INGRESS, t->bufs[j].len, DP_DROP_TUN_WRITE_ERROR);
}

/* One frame, one writev. */
static void write_frame(struct dp_fwd *f, struct tun_adapter *t, int tun_fd,
                        const struct dp_gro_frame *fr)
{
    int iovs = frame_iovecs(t, fr);
    f->ctr.syscalls[DP_INGRESS]++;
    frame_written(f, t, fr, iovs > 0 && put(tun_fd, t->frame_iov, iovs, fr->len));
}

/* The frames t->frames[first:last], their iovecs back to back in t->ring_iov, written through
 * io_uring (one io_uring_enter per DP_URING_SLOTS frames) and counted; written one writev each
 * where the ring failed. */
static void uring_flush(struct dp_fwd *f, struct tun_adapter *t, int tun_fd, int first, int last)
{
    if (last == first)
        return;
    int r = dp_uring_write(t->uring, t->ring_iov, t->ring_cnt + first, last - first,
                           t->ring_res + first);
    if (r < 0) {
        for (int i = first; i < last; i++)
            write_frame(f, t, tun_fd, &t->frames[i]);
        return;
    }
    f->ctr.syscalls[DP_INGRESS] += (uint64_t)r;
    for (int i = first; i < last; i++)
        frame_written(f, t, &t->frames[i], t->ring_res[i] == (int32_t)t->frames[i].len);
}

static int ring_iov_get(struct tun_adapter *t)
{
    if (!t->ring_iov)
        t->ring_iov = malloc(2 * IN_SEGS * sizeof(*t->ring_iov));
    return t->ring_iov != NULL;
}

/* GRO frames through io_uring, each one writev of its head and its members' slices; a frame of
 * more pieces than one writev takes is copied and written on its own, in its place (the frames
 * before it flushed first: the order holds). -1: no ring buffers, nothing written. */
static int uring_write_frames(struct dp_fwd *f, struct tun_adapter *t, int tun_fd, int frames)
{
    if (!ring_iov_get(t))
        return -1;
    int first = 0, k = 0;
    for (int i = 0; i < frames; i++) {
        const struct dp_gro_frame *fr = &t->frames[i];
        if (fr->count >= IOV_MAX_WRITE) {
            uring_flush(f, t, tun_fd, first, i);
            write_frame(f, t, tun_fd, fr);
            first = i + 1;
            k = 0;
            continue;
        }
        t->ring_cnt[i] = dp_gro_frame_iov(t->ring_iov + k, fr, t->bufs, t->next);
        k += t->ring_cnt[i];
    }
    uring_flush(f, t, tun_fd, first, frames);
    return 0;
}

/* The plain TUN's delivered packets through io_uring, a write each, in one io_uring_enter per
 * DP_URING_SLOTS; a kernel peer's super-packet is cut and written in its place (those before
 * it flushed first). The ring failing, the rest go by write(). -1: no ring buffers. */
static int uring_write_plain(struct dp_fwd *f, struct tun_adapter *t, int tun_fd,
                             struct dp_pkt *pkts, int n)
{
    if (!ring_iov_get(t))
        return -1;
    int m = 0, failed = 0;
    struct dp_pkt *held[DP_URING_SLOTS];
    for (int i = 0; i <= n; i++) {
        struct dp_pkt *p = i < n ? &pkts[i] : NULL;
        if (p && p->action != DP_ACT_TUN)
            continue;
        if (p && !p->gso_size && !failed) {
            t->ring_iov[m] = (struct iovec){p->data, p->len};
            t->ring_cnt[m] = 1;
            held[m++] = p;
            if (m < DP_URING_SLOTS)
                continue;
            p = NULL;                       /* full: flush, nothing to write after */
        }
        if (m > 0) {
            int r = dp_uring_write(t->uring, t->ring_iov, t->ring_cnt, m, t->ring_res);
            if (r < 0) {
                failed = 1;
                for (int j = 0; j < m; j++)
                    write_plain(f, t, tun_fd, held[j]);
            } else {
                f->ctr.syscalls[DP_INGRESS] += (uint64_t)r;
                for (int j = 0; j < m; j++)
                    if (t->ring_res[j] != (int32_t)held[j]->len)
                        count_as_dropped(f, DP_INGRESS, held[j]->len, DP_DROP_TUN_WRITE_ERROR);
            }
            m = 0;
        }
        if (p)
            write_plain(f, t, tun_fd, p);
    }
    return 0;
}

void tun_write_batch(struct dp_fwd *f, struct tun_adapter *t, int tun_fd, struct dp_pkt *pkts,
                     int n)
{
    if (!(f->cfg.io_flags & DP_IO_VNET)) {
        if (t->uring && uring_write_plain(f, t, tun_fd, pkts, n) == 0)
            return;
        for (int i = 0; i < n; i++)
            if (pkts[i].action == DP_ACT_TUN)
                write_plain(f, t, tun_fd, &pkts[i]);
        return;
    }
    int m = 0;
    for (int i = 0; i < n; i++)
        if (pkts[i].action == DP_ACT_TUN)
            t->bufs[m++] = (struct dp_buf){pkts[i].data, pkts[i].len, pkts[i].csum,
                                           pkts[i].gso_size};
    if (m == 0)
        return;
    int flags = DP_GRO_TCP | (f->cfg.io_flags & DP_IO_TUN_USO ? DP_GRO_UDP : 0);
    int frames = dp_gro_coalesce(t->bufs, m, flags, t->frames, t->next);
    if (t->uring && uring_write_frames(f, t, tun_fd, frames) == 0)
        return;
    for (int k = 0; k < frames; k++)
        write_frame(f, t, tun_fd, &t->frames[k]);
}
