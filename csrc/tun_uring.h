/* tun_uring.h: the TUN read and written through io_uring (tun_uring.c), for the TUN adapter
 * (tun_adapter.c), which owns it. A TUN hands out one packet per read(); here one io_uring_enter reads a batch
 * (DP_URING_BATCH), or none at all when a multishot read keeps filling a buffer ring
 * (DP_URING_MULTISHOT), and one io_uring_enter writes a batch of frames. */
#ifndef DP_TUN_URING_H
#define DP_TUN_URING_H

#include <stdint.h>
#include <sys/uio.h>

#define DP_URING_SLOTS 64                  /* packets read per call, at most */

struct dp_uring;

/* Probe the kernel and open rings for tun_fd, in the best mode up to max_mode (DP_URING_*)
 * the kernel supports. Each read slot holds slot_len bytes with headroom bytes free before
 * it. Returns NULL (and *mode = DP_URING_OFF) where io_uring is missing or refused. */
struct dp_uring *dp_uring_open(int tun_fd, int max_mode, uint32_t slot_len, uint32_t headroom,
                               int *mode);
void dp_uring_close(struct dp_uring *u);
int dp_uring_mode(const struct dp_uring *u);
/* What the event loop waits on before dp_uring_read: the TUN (batch) or the ring (multishot). */
int dp_uring_wait_fd(const struct dp_uring *u);

/* Up to max (<= DP_URING_SLOTS) packets read now, without waiting: data[i], len[i] point into
 * the uring's slots (headroom writable before each) and stay valid until dp_uring_release.
 * Returns the count (0: nothing to be had now), or -errno for a hard error; *enters counts
 * the io_uring_enter calls made. */
int dp_uring_read(struct dp_uring *u, int max, uint8_t **data, uint32_t *len, int *enters);
/* Whether the last dp_uring_read found the TUN empty (a read said EAGAIN, or no completion
 * was left): the drain need not ask again before the next wakeup. */
int dp_uring_empty(const struct dp_uring *u);
/* The slots of the last dp_uring_read go back to the kernel. */
void dp_uring_release(struct dp_uring *u);

/* Write n frames, frame i the iovcnt[i] iovecs that follow frame i-1's in iov, in one
 * io_uring_enter per DP_URING_SLOTS frames. res[i]: bytes written or -errno. Returns the
 * io_uring_enter calls made, or -errno when the ring itself failed (nothing reported). */
int dp_uring_write(struct dp_uring *u, const struct iovec *iov, const int *iovcnt, int n,
                   int32_t *res);

#endif
