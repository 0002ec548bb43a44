/* io.h: what the plain I/O path (io.c) and the offload path (io_offload.c) share. */
#ifndef DP_IO_H
#define DP_IO_H

#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "dp.h"

/* A packet the batch decided to forward failed in the syscall: move it to the drop count.
 * len is what was sent or written; the byte counters hold inner packet bytes. */
static inline void unforward(struct dp_fwd *f, int dir, uint32_t len, int why)
{
    if (dir == DP_EGRESS && f->cfg.mode == DP_MODE_VXLAN)
        len -= DP_VXLAN_OVERHEAD;
    f->ctr.packets[dir]--;
    f->ctr.bytes[dir] -= len;
    f->ctr.drops[dir][why]++;
}

/* Why a send failed, as a drop reason: EMSGSIZE says the datagram was too big to leave. */
static inline int tx_drop(int err)
{
    return err == EMSGSIZE ? DP_DROP_TX_TOO_BIG : DP_DROP_TX_ERROR;
}

/* Each drain runs on the monotonic clock (the ICMP rate limit, the GSO back-off). */
static inline void clock_tick(struct dp_fwd *f)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    f->now_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline struct sockaddr_in sockaddr_of(uint32_t addr, uint16_t port)
{
    return (struct sockaddr_in){
        .sin_family = AF_INET,
        .sin_port = htons(port),
        .sin_addr.s_addr = htonl(addr),
    };
}

/* write() to the TUN, retried on EINTR; with IFF_VNET_HDR the packet gets a zero header
 * (nothing to offload). Returns whether the whole packet went in. */
static inline int tun_put(const struct dp_fwd *f, int tun_fd, const uint8_t *data, uint32_t len)
{
    static const uint8_t no_offload[DP_VNET_HLEN];
    ssize_t r, want = len;
    int vnet = (f->cfg.io_flags & DP_IO_VNET) != 0;
    struct iovec iov[2] = {{(void *)no_offload, DP_VNET_HLEN}, {(void *)data, len}};
    if (vnet)
        want += DP_VNET_HLEN;
    do
        r = vnet ? writev(tun_fd, iov, 2) : write(tun_fd, data, len);
    while (r < 0 && errno == EINTR);
    return r == want;
}

/* recvmmsg without waiting, EINTR retried: how many arrived, 0 when nothing more is to be had
 * now (EAGAIN, or an error after some progress), -errno for a hard error before any. */
static inline int recv_batch(struct dp_fwd *f, int sock_fd, struct mmsghdr *msgs, int want,
                             int total)
{
    for (;;) {
        int n = recvmmsg(sock_fd, msgs, (unsigned)want, MSG_DONTWAIT, NULL);
        f->ctr.syscalls[DP_INGRESS]++;
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return errno != EAGAIN && total == 0 ? -errno : 0;
    }
}

/* Write one packet the ingress batch delivers to a TUN without virtio_net_hdrs; a kernel
 * peer's GSO super-packet (p->gso_size) is cut into segments first. */
void dp_tun_deliver(struct dp_fwd *f, int tun_fd, struct dp_pkt *p);

int dp_drain_tun_vnet(struct dp_fwd *f, int tun_fd, int sock_fd, int budget);
int dp_drain_udp_gro(struct dp_fwd *f, int sock_fd, int tun_fd, int budget);

#endif
