/* net.h: the descriptors the drain targets run over, made once per process: a fake TUN (a
 * socketpair of datagrams, as tests/offload/drain_rig.py uses) and UDP sockets on loopback, our
 * node on 127.0.0.1 and peers on 127.0.0.2 / .3 / .9 (a stranger), all on one port. Nothing
 * leaves loopback. Buffers are forced large (root) so loopback never drops for lack of room. */
#ifndef DP_FUZZ_NET_H
#define DP_FUZZ_NET_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

struct net {
    int tun_dev, tun_kernel;           /* the forwarder's end, the stack's end */
    int node;
    int peer[3];                       /* 127.0.0.2, .3, .9 */
    uint16_t port;
};

static void big_buffers(int fd)
{
    int size = 64 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)))
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)))
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
}

static int udp_on(uint32_t addr, uint16_t port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(addr)};
    if (bind(fd, (struct sockaddr *)&a, sizeof(a))) {
        close(fd);
        return -1;
    }
    big_buffers(fd);
    return fd;
}

static struct net net_open(void)
{
    struct net n;
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, sv) == 0);
    n.tun_dev = sv[0];
    n.tun_kernel = sv[1];
    big_buffers(sv[0]);
    big_buffers(sv[1]);
    static const uint32_t peers[3] = {0x7f000002, 0x7f000003, 0x7f000009};
    for (int tries = 0;; tries++) {
        CHECK(tries < 50);
        n.node = udp_on(0x7f000001, 0);
        CHECK(n.node >= 0);
        struct sockaddr_in a;
        socklen_t al = sizeof(a);
        getsockname(n.node, (struct sockaddr *)&a, &al);
        n.port = ntohs(a.sin_port);
        int ok = 1;
        for (int i = 0; i < 3; i++)
            ok &= (n.peer[i] = udp_on(peers[i], n.port)) >= 0;
        if (ok)
            break;
        close(n.node);
        for (int i = 0; i < 3; i++)
            if (n.peer[i] >= 0)
                close(n.peer[i]);
    }
    return n;
}

/* Read and discard (or count) whatever waits on fd. */
static int flush_fd(int fd)
{
    static uint8_t sink[1 << 17];
    int n = 0;
    while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) >= 0)
        n++;
    return n;
}

#endif
