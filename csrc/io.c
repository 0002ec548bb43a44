/* The syscall side of the hot path: one call per readiness event drains a file descriptor in
 * batches, lets forward.c decide each packet, and moves the batch on.
 *
 *   dp_drain_tun: read() x n (a TUN hands out one packet per read) -> egress batch
 *                 -> one sendmmsg() for the datagrams, write() back for ICMP errors
 *   dp_drain_udp: one recvmmsg() for n datagrams -> ingress batch -> write() x n to the TUN
 *
 * With offloads (DP_IO_VNET / DP_IO_UDP_GRO) both hand over to io_offload.c, which moves
 * super-packets instead. The UDP socket is left blocking so a full send buffer pushes back
 * instead of dropping; receives and TUN reads are non-blocking and stop at EAGAIN.
 */
#include "io.h"         /* first: it sets _GNU_SOURCE for sendmmsg/recvmmsg */

#include <stdlib.h>

#define BATCH 64
#define SLOT_DATA 65536                    /* any IPv4 packet or UDP datagram fits */
#define SLOT_SIZE (DP_HEADROOM + SLOT_DATA)

struct dp_io {
    uint8_t *arena;                        /* BATCH slots; pages are touched only as used */
    struct dp_pkt pkts[BATCH];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in addrs[BATCH];
};

void dp_io_free(struct dp_io *io)
{
    if (io) {
        free(io->arena);
        free(io);
    }
}

static struct dp_io *io_get(struct dp_fwd *f, int dir)
{
    if (!f->io[dir]) {
        struct dp_io *io = calloc(1, sizeof(*io));
        if (!io)
            return NULL;
        io->arena = malloc((size_t)BATCH * SLOT_SIZE);
        if (!io->arena) {
            free(io);
            return NULL;
        }
        f->io[dir] = io;
    }
    return f->io[dir];
}

static inline uint8_t *slot(struct dp_io *io, int i)
{
    return io->arena + (size_t)i * SLOT_SIZE + DP_HEADROOM;
}

static void tun_write(struct dp_fwd *f, int tun_fd, int dir, struct dp_pkt *p)
{
    f->ctr.syscalls[dir]++;
    if (!tun_put(f, tun_fd, p->data, p->len) && p->drop == DP_OK)
        unforward(f, dir, p->len, DP_DROP_TUN_WRITE_ERROR);
}

#define SEG_CAP (320u * 1024)              /* types.GSO_CAPACITY: any cut at >= DP_TCP_MIN_MSS */

void dp_tun_deliver(struct dp_fwd *f, int tun_fd, struct dp_pkt *p)
{
    if (!p->gso_size)
        return tun_write(f, tun_fd, DP_INGRESS, p);
    /* Cut as the kernel would have before a device without TSO/USO: complete checksums, IP
     * IDs counting up, every segment within the TUN MTU. */
    if (!f->seg_buf && !(f->seg_buf = malloc(SEG_CAP)))
        return unforward(f, DP_INGRESS, p->len, DP_DROP_OVERSIZE);
    uint8_t vnet[DP_VNET_HLEN];
    struct dp_gso_result res;
    dp_super_vnet(vnet, p->data, p->len, p->gso_size);
    int err = dp_gso_segment(vnet, p->data, p->len, 0, f->seg_buf, SEG_CAP, &res);
    if (err)
        return unforward(f, DP_INGRESS, p->len, err);
    int ok = 1;
    for (uint32_t i = 0; i < res.segs; i++) {
        f->ctr.syscalls[DP_INGRESS]++;
        ok &= tun_put(f, tun_fd, f->seg_buf + (size_t)i * res.stride,
                      i + 1 < res.segs ? res.seg_len : res.last_len);
    }
    if (!ok)
        unforward(f, DP_INGRESS, p->len, DP_DROP_TUN_WRITE_ERROR);
}

static void send_batch(struct dp_fwd *f, struct dp_io *io, int n, int sock_fd, int tun_fd)
{
    int m = 0;
    struct dp_pkt *sent[BATCH];
    for (int i = 0; i < n; i++) {
        struct dp_pkt *p = &io->pkts[i];
        if (p->action == DP_ACT_TUN) {          /* an ICMP error for the local sender */
            tun_write(f, tun_fd, DP_EGRESS, p);
            continue;
        }
        if (p->action != DP_ACT_SEND)
            continue;
        io->addrs[m] = sockaddr_of(p->addr, p->port);
        io->iov[m] = (struct iovec){p->data, p->len};
        io->msgs[m].msg_hdr = (struct msghdr){
            .msg_name = &io->addrs[m],
            .msg_namelen = sizeof(io->addrs[m]),
            .msg_iov = &io->iov[m],
            .msg_iovlen = 1,
        };
        sent[m++] = p;
    }
    for (int done = 0; done < m;) {
        int r = sendmmsg(sock_fd, io->msgs + done, (unsigned)(m - done), 0);
        f->ctr.syscalls[DP_EGRESS]++;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            /* The first message failed (no route, refused, too big): count it, go on. */
            unforward(f, DP_EGRESS, sent[done]->len, tx_drop(errno));
            done++;
        } else {
            done += r;
        }
    }
}

int dp_drain_tun(struct dp_fwd *f, int tun_fd, int sock_fd, int budget)
{
    clock_tick(f);
    if (f->cfg.io_flags & DP_IO_VNET)
        return dp_drain_tun_vnet(f, tun_fd, sock_fd, budget);
    struct dp_io *io = io_get(f, DP_EGRESS);
    if (!io)
        return -ENOMEM;
    int total = 0, empty = 0;
    while (total < budget && !empty) {
        int n = 0, want = budget - total < BATCH ? budget - total : BATCH;
        while (n < want) {
            uint8_t *d = slot(io, n);
            ssize_t r = read(tun_fd, d, SLOT_DATA);
            f->ctr.syscalls[DP_EGRESS]++;
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                if (errno != EAGAIN && total + n == 0)
                    return -errno;
                empty = 1;
                break;
            }
            io->pkts[n++] = (struct dp_pkt){.data = d, .len = (uint32_t)r};
        }
        if (n == 0)
            break;
        dp_egress_batch(f, io->pkts, n);
        send_batch(f, io, n, sock_fd, tun_fd);
        total += n;
    }
    return total;
}

int dp_drain_udp(struct dp_fwd *f, int sock_fd, int tun_fd, int budget)
{
    clock_tick(f);
    if (f->cfg.io_flags & (DP_IO_VNET | DP_IO_UDP_GRO))
        return dp_drain_udp_gro(f, sock_fd, tun_fd, budget);
    struct dp_io *io = io_get(f, DP_INGRESS);
    if (!io)
        return -ENOMEM;
    int total = 0;
    while (total < budget) {
        int want = budget - total < BATCH ? budget - total : BATCH;
        for (int i = 0; i < want; i++) {
            io->iov[i] = (struct iovec){slot(io, i), SLOT_DATA};
            io->msgs[i].msg_hdr = (struct msghdr){
                .msg_name = &io->addrs[i],
                .msg_namelen = sizeof(io->addrs[i]),
                .msg_iov = &io->iov[i],
                .msg_iovlen = 1,
            };
        }
        int n = recv_batch(f, sock_fd, io->msgs, want, total);
        if (n <= 0) {
            if (n < 0)
                return n;
            break;
        }
        for (int i = 0; i < n; i++)
            io->pkts[i] = (struct dp_pkt){
                .data = slot(io, i),
                .len = io->msgs[i].msg_len,
                .addr = ntohl(io->addrs[i].sin_addr.s_addr),
                .port = ntohs(io->addrs[i].sin_port),
            };
        dp_ingress_batch(f, io->pkts, n);
        for (int i = 0; i < n; i++)
            if (io->pkts[i].action == DP_ACT_TUN)
                dp_tun_deliver(f, tun_fd, &io->pkts[i]);
        total += n;
        if (n < want)
            break;
    }
    return total;
}
