/* offload.h: what gso.c and gro.c share (internal, not part of the cffi surface). */
#ifndef DP_OFFLOAD_H
#define DP_OFFLOAD_H

#include <sys/uio.h>

#include "dp.h"

_Static_assert(DP_GRO_HEAD_MAX >= DP_VNET_HLEN + 20 + 60, "room for the longest TCP header");
_Static_assert(sizeof(((struct dp_gro_frame *)0)->head) == DP_GRO_HEAD_MAX,
               "dp_api.h spells the head size out for cffi: keep the two equal");

/* virtio_net_hdr field offsets; the 16-bit fields are little-endian. */
#define VNET_FLAGS 0
#define VNET_GSO_TYPE 1
#define VNET_HDR_LEN 2
#define VNET_GSO_SIZE 4
#define VNET_CSUM_START 6
#define VNET_CSUM_OFFSET 8

static inline uint16_t rdle16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline void wrle16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = v >> 8; }

/* TCP header fields (offsets into the TCP header). */
#define TCPH_SEQ 4
#define TCPH_ACK 8
#define TCPH_DOFF 12              /* data offset in the high nibble; AE and reserved below */
#define TCPH_FLAGS 13
#define TCPH_WINDOW 14
#define TCPH_CHECK 16

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_URG 0x20
#define TCP_ECE 0x40
#define TCP_CWR 0x80

#define UDPH_LEN 4
#define UDPH_CHECK 6

#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFMASK 0x1fff

/* One's-complement sum of the pseudo-header (addresses of ip, protocol, L4 length) added to
 * sum; folded to 16 bits like dp_csum_partial. */
static inline uint32_t pseudo_sum(const uint8_t *ip, uint8_t proto, uint32_t l4len, uint32_t sum)
{
    return dp_csum_partial(ip + IPH_SRC, 8, sum + proto + l4len);
}

/* The IPv4 header checksum, recomputed over ihl bytes. */
static inline void ip_set_check(uint8_t *ip, size_t ihl)
{
    wr16(ip + IPH_CHECK, 0);
    wr16(ip + IPH_CHECK, dp_csum_fold(dp_csum_partial(ip, ihl, 0)));
}

/* One frame as the iovecs of one writev (head, then each member's bytes from skip on), what
 * dp_gro_frame_copy would lay out in one buffer; iov has room for 1 + frame->count. Returns
 * how many. */
int dp_gro_frame_iov(struct iovec *iov, const struct dp_gro_frame *frame,
                     const struct dp_buf *pkts, const int32_t *next);

#endif
