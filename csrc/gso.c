/* Segmentation, the send side: what a TUN with TSO/USO enabled hands us becomes wire-ready
 * IPv4 packets, packed at a fixed stride for one sendmsg with UDP_SEGMENT.
 *
 * Per segment, as the kernel's own TCP/UDP segmentation does: IP total length, IP ID counting
 * up from the super-packet's, IP checksum; TCP sequence advanced by gso_size per segment, CWR
 * kept on the first segment only, FIN and PSH on the last only; UDP length; and a complete
 * TCP/UDP checksum, summed while the payload is copied (dp_csum_copy). The checksum field the
 * kernel left (a pseudo-header sum) is not trusted: every segment's sum is built from scratch.
 *
 * pyref/gso.py:gso_segment is the reference; the checks run in the same order in both so the two
 * give the same reason for the same input. */
#include "offload.h"

/* Validate the virtio_net_hdr against the packet; on DP_OK *hlen is the IP + L4 header length
 * (GSO only). The order of the checks is part of the contract with pyref/gso.py. */
static int gso_check(const uint8_t *vnet, const uint8_t *pkt, size_t tot, size_t ihl,
                     size_t *hlen)
{
    uint8_t flags = vnet[VNET_FLAGS], type = vnet[VNET_GSO_TYPE];
    size_t cstart = rdle16(vnet + VNET_CSUM_START), coff = rdle16(vnet + VNET_CSUM_OFFSET);

    if (type == DP_VNET_GSO_NONE) {
        /* The checksum to complete must lie in the L4 part of the packet. */
        if ((flags & DP_VNET_F_NEEDS_CSUM) &&
            (cstart < ihl || cstart > tot || coff + 2 > tot - cstart))
            return DP_DROP_BAD_VNET_HDR;
        return DP_OK;
    }
    /* ECN only qualifies TCP (the super-packet has CWR, which stays on segment 0 anyway). */
    int tcp = (type & ~DP_VNET_GSO_ECN) == DP_VNET_GSO_TCPV4;
    if (!tcp && type != DP_VNET_GSO_UDP_L4)
        return DP_DROP_BAD_VNET_HDR;                /* UFO, TCPV6 on IPv4, unknown */
    if (!(flags & DP_VNET_F_NEEDS_CSUM) || (rd16(pkt + IPH_FRAG) & (IP_MF | IP_OFFMASK)) ||
        pkt[IPH_PROTO] != (tcp ? PROTO_TCP : PROTO_UDP) || cstart != ihl ||
        coff != (tcp ? TCPH_CHECK : UDPH_CHECK))
        return DP_DROP_BAD_VNET_HDR;

    size_t l4hl;
    if (tcp) {
        if (tot < ihl + 20)
            return DP_DROP_TRUNCATED;
        l4hl = (size_t)(pkt[ihl + TCPH_DOFF] >> 4) * 4;
        if (l4hl < 20)
            return DP_DROP_BAD_L4_HEADER;
        if (ihl + l4hl > tot)
            return DP_DROP_TRUNCATED;
    } else {
        l4hl = 8;
        if (tot < ihl + 8)
            return DP_DROP_TRUNCATED;
        if (rd16(pkt + ihl + UDPH_LEN) != tot - ihl)
            return DP_DROP_BAD_L4_HEADER;
    }
    /* hdr_len is a hint (the kernel reports its linear length, which may include payload), but
     * it may not point past the packet; tun.c rejects the same on write. */
    size_t gso = rdle16(vnet + VNET_GSO_SIZE);
    if (rdle16(vnet + VNET_HDR_LEN) > tot || gso == 0 || ihl + l4hl + gso > 0xffff)
        return DP_DROP_BAD_VNET_HDR;
    *hlen = ihl + l4hl;
    return DP_OK;
}

/* The sum of the IPv4 header without its length, ID and checksum, the fields that differ
 * from segment to segment: each segment's header checksum is this plus its own two. */
static uint32_t ip_template_sum(const uint8_t *pkt, size_t ihl)
{
    uint8_t h[60];
    memcpy(h, pkt, ihl);
    wr16(h + IPH_TOTLEN, 0);
    wr16(h + IPH_ID, 0);
    wr16(h + IPH_CHECK, 0);
    return dp_csum_partial(h, ihl, 0);
}

/* Write segment i: headers from pkt, payload [off, off + plen) copied and summed. */
static void gso_one(uint8_t *ip, const uint8_t *pkt, size_t ihl, size_t hlen, size_t off,
                    size_t plen, uint32_t i, uint32_t segs, int tcp, uint32_t ip_sum)
{
    memcpy(ip, pkt, hlen);
    uint32_t sum = dp_csum_copy(ip + hlen, pkt + off, plen, 0);

    uint16_t totlen = (uint16_t)(hlen + plen), id = (uint16_t)(rd16(pkt + IPH_ID) + i);
    wr16(ip + IPH_TOTLEN, totlen);
    wr16(ip + IPH_ID, id);
    wr16(ip + IPH_CHECK, dp_csum_fold(ip_sum + totlen + id));   /* incremental: RFC 1624 */

    uint8_t *l4 = ip + ihl;
    size_t l4len = hlen - ihl + plen;
    size_t check_at;
    if (tcp) {
        wr32(l4 + TCPH_SEQ, rd32(pkt + ihl + TCPH_SEQ) + (uint32_t)(off - hlen));
        if (i > 0)
            l4[TCPH_FLAGS] &= (uint8_t)~TCP_CWR;
        if (i + 1 < segs)
            l4[TCPH_FLAGS] &= (uint8_t)~(TCP_FIN | TCP_PSH);
        check_at = TCPH_CHECK;
    } else {
        wr16(l4 + UDPH_LEN, (uint16_t)l4len);
        check_at = UDPH_CHECK;
    }
    wr16(l4 + check_at, 0);
    sum = dp_csum_partial(l4, hlen - ihl, sum);
    uint16_t check = dp_csum_fold(pseudo_sum(ip, ip[IPH_PROTO], (uint32_t)l4len, sum));
    wr16(l4 + check_at, check ? check : 0xffff);    /* UDP: 0 would mean "no checksum" */
}

int dp_gso_segment(const uint8_t *vnet, const uint8_t *pkt, size_t len, size_t headroom,
                   uint8_t *out, size_t cap, struct dp_gso_result *res)
{
    if (len >= 1 && pkt[0] >> 4 == 6)
        return DP_DROP_IPV6_UNSUPPORTED;
    int err = dp_ipv4_validate(pkt, len);
    if (err)
        return err;
    size_t tot = rd16(pkt + IPH_TOTLEN);            /* bytes after it are not the packet's */
    size_t ihl = (size_t)(pkt[IPH_VHL] & 0x0f) * 4;
    size_t hlen = 0;
    if ((err = gso_check(vnet, pkt, tot, ihl, &hlen)))
        return err;
    if (headroom > 0xffff)
        return DP_DROP_OVERSIZE;

    uint8_t type = vnet[VNET_GSO_TYPE];
    if (type == DP_VNET_GSO_NONE) {
        if (headroom + tot > cap)
            return DP_DROP_OVERSIZE;
        uint8_t *ip = out + headroom;
        if (vnet[VNET_FLAGS] & DP_VNET_F_NEEDS_CSUM) {
            /* The field holds the pseudo-header sum: sum from csum_start to the end, as
             * skb_checksum_help does, folding the sum into the copy of that part. */
            size_t cstart = rdle16(vnet + VNET_CSUM_START);
            size_t at = cstart + rdle16(vnet + VNET_CSUM_OFFSET);
            memcpy(ip, pkt, cstart);
            uint16_t check = dp_csum_fold(dp_csum_copy(ip + cstart, pkt + cstart, tot - cstart, 0));
            wr16(ip + at, check ? check : 0xffff);
        } else {
            memcpy(ip, pkt, tot);
        }
        *res = (struct dp_gso_result){1, (uint32_t)(headroom + tot), (uint32_t)tot,
                                      (uint32_t)tot, (uint32_t)(headroom + tot)};
        return DP_OK;
    }

    size_t gso = rdle16(vnet + VNET_GSO_SIZE);
    size_t pay = tot - hlen;
    size_t segs = pay > gso ? (pay + gso - 1) / gso : 1;
    size_t seg_len = hlen + (pay < gso ? pay : gso);
    size_t last_len = hlen + pay - (segs - 1) * gso;
    size_t stride = headroom + seg_len;
    size_t total = (segs - 1) * stride + headroom + last_len;
    if (total > cap)
        return DP_DROP_OVERSIZE;

    int tcp = (type & ~DP_VNET_GSO_ECN) == DP_VNET_GSO_TCPV4;
    uint32_t ip_sum = ip_template_sum(pkt, ihl);
    for (size_t i = 0; i < segs; i++) {
        size_t plen = i + 1 < segs ? gso : last_len - hlen;
        gso_one(out + i * stride + headroom, pkt, ihl, hlen, hlen + i * gso, plen, (uint32_t)i,
                (uint32_t)segs, tcp, ip_sum);
    }
    *res = (struct dp_gso_result){(uint32_t)segs, (uint32_t)stride, (uint32_t)seg_len,
                                  (uint32_t)last_len, (uint32_t)total};
    return DP_OK;
}
