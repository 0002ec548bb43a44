/* L4 checksums on ingress: recognise what a CHECKSUM_PARTIAL sender left, verify the rest.
 *
 * Over veth a kernel VXLAN sender never completes the inner TCP/UDP checksum: it leaves the
 * folded pseudo-header sum in the field (tcp_v4_send_check, udp4_hwcsum: ~csum_tcpudp_magic)
 * for "the NIC", and the receiving kernel trusts it as CHECKSUM_PARTIAL. We see the bytes, so
 * we recognise exactly that value and pass the packet on as partial (NEEDS_CSUM) or complete
 * it; anything else that does not verify is corruption. Only unfragmented packets are judged:
 * a fragment's checksum covers bytes it does not hold, and the kernel completes partial
 * checksums before fragmenting. pyref/packet.py:l4_csum is the reference. */
#include "offload.h"

/* Where the checksum field is and how many bytes it covers; 0 when there is none to judge. */
static int l4_layout(const uint8_t *pkt, size_t len, size_t *at, uint32_t *l4len)
{
    size_t ihl = (size_t)(pkt[IPH_VHL] & 0x0f) * 4;
    if (rd16(pkt + IPH_FRAG) & (IP_MF | IP_OFFMASK))
        return 0;
    if (pkt[IPH_PROTO] == PROTO_TCP) {
        if (len < ihl + 20)
            return 0;                           /* no TCP header: the kernel drops it */
        *at = ihl + TCPH_CHECK;
        *l4len = (uint32_t)(len - ihl);
        return 1;
    }
    if (pkt[IPH_PROTO] == PROTO_UDP) {
        if (len < ihl + 8 || rd16(pkt + ihl + UDPH_CHECK) == 0)
            return 0;                           /* cut short, or 0: "no checksum" */
        /* The kernel trims to the UDP length and sums that much; a length past the packet
         * (or below the header) is its to drop as malformed. */
        uint32_t ulen = rd16(pkt + ihl + UDPH_LEN);
        if (ulen < 8 || ulen > len - ihl)
            return 0;
        *at = ihl + UDPH_CHECK;
        *l4len = ulen;
        return 1;
    }
    return 0;
}

int dp_l4_csum(const uint8_t *pkt, size_t len)
{
    size_t at;
    uint32_t l4len;
    if (!l4_layout(pkt, len, &at, &l4len))
        return DP_CSUM_UNKNOWN;
    size_t ihl = (size_t)(pkt[IPH_VHL] & 0x0f) * 4;
    uint32_t psum = pseudo_sum(pkt, pkt[IPH_PROTO], l4len, 0);
    if (rd16(pkt + at) == psum)
        return DP_CSUM_PARTIAL;
    return dp_csum_fold(dp_csum_partial(pkt + ihl, l4len, psum)) == 0 ? DP_CSUM_VALID : DP_CSUM_BAD;
}

void dp_l4_csum_complete(uint8_t *pkt, size_t len)
{
    size_t at;
    uint32_t l4len;
    if (!l4_layout(pkt, len, &at, &l4len))
        return;
    /* The field already holds the pseudo-header sum: summing the L4 bytes as they are gives
     * the whole sum (a complete checksum that happens to equal it comes out unchanged). */
    size_t ihl = (size_t)(pkt[IPH_VHL] & 0x0f) * 4;
    uint16_t check = dp_csum_fold(dp_csum_partial(pkt + ihl, l4len, 0));
    if (check == 0 && pkt[IPH_PROTO] == PROTO_UDP)
        check = 0xffff;                         /* 0 would mean "no checksum" */
    wr16(pkt + at, check);
}

uint16_t dp_super_gso(const uint8_t *pkt, size_t len, uint32_t max_inner, uint16_t udp_gso)
{
    if (len < 20)
        return 0;
    size_t ihl = (size_t)(pkt[IPH_VHL] & 0x0f) * 4;
    uint8_t proto = pkt[IPH_PROTO];
    if (rd16(pkt + IPH_FRAG) & (IP_MF | IP_OFFMASK))
        return 0;
    size_t hlen, gso;
    if (proto == PROTO_TCP) {
        if (len < ihl + 20)
            return 0;
        hlen = ihl + (size_t)(pkt[ihl + TCPH_DOFF] >> 4) * 4;
        if (hlen < ihl + 20 || hlen >= len || max_inner < hlen + DP_TCP_MIN_MSS)
            return 0;
        gso = max_inner - hlen;                 /* what the sender's MSS was cut to fit */
    } else if (proto == PROTO_UDP) {
        /* The datagram size is the sender's choice, not on the wire: only the drain knows it
         * (the kernel's UDP_GRO report), and every datagram must fit the TUN. */
        hlen = ihl + 8;
        if (!udp_gso || len < hlen || rd16(pkt + ihl + UDPH_LEN) != len - ihl ||
            len - hlen <= udp_gso || hlen + udp_gso > max_inner)
            return 0;
        gso = udp_gso;
    } else {
        return 0;
    }
    /* Only what a GSO sender leaves: the pseudo-header sum over the whole length. */
    size_t at = ihl + (proto == PROTO_TCP ? TCPH_CHECK : UDPH_CHECK);
    if (rd16(pkt + at) != pseudo_sum(pkt, proto, (uint32_t)(len - ihl), 0))
        return 0;
    return (uint16_t)gso;
}

void dp_super_vnet(uint8_t *vnet, const uint8_t *pkt, size_t len, uint16_t gso)
{
    memset(vnet, 0, DP_VNET_HLEN);
    if (len < 20)
        return;                                 /* not what the caller promised: as it came */
    size_t ihl = (size_t)(pkt[IPH_VHL] & 0x0f) * 4;
    int tcp = pkt[IPH_PROTO] == PROTO_TCP;
    if (ihl < 20 || ihl + (tcp ? 20 : 8) > len || (!tcp && pkt[IPH_PROTO] != PROTO_UDP))
        return;
    const uint8_t *l4 = pkt + ihl;
    vnet[VNET_FLAGS] = DP_VNET_F_NEEDS_CSUM;
    if (tcp) {
        vnet[VNET_GSO_TYPE] = DP_VNET_GSO_TCPV4 | (l4[TCPH_FLAGS] & TCP_CWR ? DP_VNET_GSO_ECN : 0);
        wrle16(vnet + VNET_HDR_LEN, (uint16_t)(ihl + (size_t)(l4[TCPH_DOFF] >> 4) * 4));
    } else {
        vnet[VNET_GSO_TYPE] = DP_VNET_GSO_UDP_L4;
        wrle16(vnet + VNET_HDR_LEN, (uint16_t)(ihl + 8));
    }
    wrle16(vnet + VNET_GSO_SIZE, gso);
    wrle16(vnet + VNET_CSUM_START, (uint16_t)ihl);
    wrle16(vnet + VNET_CSUM_OFFSET, tcp ? TCPH_CHECK : UDPH_CHECK);
}
