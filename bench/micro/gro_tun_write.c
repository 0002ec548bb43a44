/* How to hand a coalesced frame to the TUN: writev of its pieces (head + each member's
 * payload, no copy) or copy into one buffer and write() it; and, for scale, no coalescing at
 * all (one write per segment). Built and run by gro_tun_write.py inside `unshare --net`.
 *
 * usage: gro_tun_write <segments file> <iterations per round> <rounds>
 * The file: u32 count, then count x (u32 length, bytes), host order. Frames go to a TUN with
 * IFF_VNET_HDR and offloads on, addressed to a blackhole route, so the kernel's cost per write
 * is real but nothing queues up. Rounds interleave the variants; medians are printed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "dp.h"

#define MAXSEG 64

static struct dp_buf pkts[MAXSEG];
static int npkts;
static struct dp_gro_frame frames[MAXSEG];
static int32_t next[MAXSEG];
static uint8_t copybuf[70000];
static int tun;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void must(int ok, const char *what)
{
    if (!ok) {
        perror(what);
        exit(1);
    }
}

static void writev_frames(void)
{
    int n = dp_gro_coalesce(pkts, npkts, DP_GRO_TCP, frames, next);
    for (int f = 0; f < n; f++) {
        struct iovec iov[MAXSEG + 1];
        int k = 0;
        iov[k++] = (struct iovec){frames[f].head, frames[f].head_len};
        for (int32_t m = frames[f].first; m >= 0; m = next[m])
            iov[k++] = (struct iovec){(void *)(pkts[m].data + frames[f].skip),
                                      pkts[m].len - frames[f].skip};
        must(writev(tun, iov, k) == (ssize_t)frames[f].len, "writev");
    }
}

static void copy_frames(void)
{
    int n = dp_gro_coalesce(pkts, npkts, DP_GRO_TCP, frames, next);
    for (int f = 0; f < n; f++) {
        size_t len = dp_gro_frame_copy(copybuf, &frames[f], pkts, next);
        must(write(tun, copybuf, len) == (ssize_t)len, "write");
    }
}

static void no_coalescing(void)
{
    static const uint8_t vnet[DP_VNET_HLEN];
    for (int i = 0; i < npkts; i++) {
        struct iovec iov[2] = {{(void *)vnet, DP_VNET_HLEN}, {(void *)pkts[i].data, pkts[i].len}};
        must(writev(tun, iov, 2) == (ssize_t)(DP_VNET_HLEN + pkts[i].len), "writev single");
    }
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    FILE *f = fopen(argv[1], "rb");
    must(f != NULL, argv[1]);
    uint32_t count;
    must(fread(&count, 4, 1, f) == 1 && count <= MAXSEG, "count");
    for (npkts = 0; npkts < (int)count; npkts++) {
        uint32_t len;
        must(fread(&len, 4, 1, f) == 1, "length");
        uint8_t *p = malloc(len);
        must(p && fread(p, 1, len, f) == len, "packet");
        pkts[npkts] = (struct dp_buf){p, len};
    }
    int iters = atoi(argv[2]), rounds = atoi(argv[3]);

    tun = open("/dev/net/tun", O_RDWR);
    must(tun >= 0, "open /dev/net/tun");
    struct ifreq ifr = {.ifr_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR};
    snprintf(ifr.ifr_name, IFNAMSIZ, "bw0");
    must(ioctl(tun, TUNSETIFF, &ifr) == 0, "TUNSETIFF");
    must(ioctl(tun, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) == 0, "TUNSETOFFLOAD");
    must(system("ip link set lo up && ip addr add 10.9.0.1/24 dev bw0 && ip link set bw0 up && "
                "ip route add blackhole 10.9.5.0/24 && sysctl -qw net.ipv4.ip_forward=1") == 0,
         "ip setup");

    void (*variant[3])(void) = {writev_frames, copy_frames, no_coalescing};
    const char *name[3] = {"writev of pieces", "copy + write", "one write per segment"};
    double *t[3];
    for (int v = 0; v < 3; v++)
        t[v] = calloc(rounds, sizeof(double));
    for (int r = 0; r < rounds; r++)
        for (int v = 0; v < 3; v++) {
            double start = now();
            for (int i = 0; i < iters; i++)
                variant[v]();
            t[v][r] = (now() - start) / iters;
        }
    size_t payload = 0;
    for (int i = 0; i < npkts; i++)
        payload += pkts[i].len - 52;
    for (int v = 0; v < 3; v++) {
        qsort(t[v], rounds, sizeof(double), cmp);
        double med = t[v][rounds / 2];
        printf("%-24s %8.2f us per %d segments  %6.2f GB/s\n", name[v], med * 1e6, npkts,
               payload / med / 1e9);
    }
    return 0;
}
