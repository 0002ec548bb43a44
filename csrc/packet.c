/* Per-packet primitives: IPv4 checks, TTL, flow hash, VXLAN and outer headers, ICMP errors.
 * dataplane/fastpath/pyref/packet.py holds the reference for each; the two must agree byte for byte. */
#include "dp.h"

int dp_ipv4_validate(const uint8_t *pkt, size_t len)
{
    if (len < 20)
        return len && (pkt[IPH_VHL] >> 4) != 4 ? DP_DROP_BAD_IP_VERSION : DP_DROP_TRUNCATED;
    if ((pkt[IPH_VHL] >> 4) != 4)
        return DP_DROP_BAD_IP_VERSION;
    size_t ihl = (size_t)(pkt[IPH_VHL] & 0x0f) * 4;
    size_t tot = rd16(pkt + IPH_TOTLEN);
    if (ihl < 20 || tot < ihl)
        return DP_DROP_BAD_IP_HEADER;
    if (ihl > len || tot > len)
        return DP_DROP_TRUNCATED;
    if (dp_csum_fold(dp_csum_partial(pkt, ihl, 0)) != 0)
        return DP_DROP_BAD_IP_CHECKSUM;
    return DP_OK;
}

int dp_ipv4_ttl_decrement(uint8_t *pkt, size_t len)
{
    if (len < 20)
        return DP_DROP_TRUNCATED;
    uint8_t ttl = pkt[IPH_TTL];
    if (ttl <= 1)
        return DP_DROP_TTL_EXCEEDED;
    /* TTL is the high byte of the 16-bit word it shares with the protocol. */
    uint16_t old = rd16(pkt + IPH_TTL);
    pkt[IPH_TTL] = ttl - 1;
    wr16(pkt + IPH_CHECK, dp_csum_update16(rd16(pkt + IPH_CHECK), old, rd16(pkt + IPH_TTL)));
    return DP_OK;
}

/* FNV-1a over the flow key; cheap, and simple to mirror exactly in Python. */
static inline uint32_t fnv1a(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

uint32_t dp_flow_hash(const uint8_t *pkt, size_t len)
{
    uint32_t h = 2166136261u;
    if (len < 20)
        return fnv1a(h, pkt, len);
    h = fnv1a(h, pkt + IPH_SRC, 8);
    h = fnv1a(h, pkt + IPH_PROTO, 1);
    size_t ihl = (size_t)(pkt[IPH_VHL] & 0x0f) * 4;
    uint8_t proto = pkt[IPH_PROTO];
    int first_fragment = (rd16(pkt + IPH_FRAG) & 0x1fff) == 0;
    if ((proto == PROTO_TCP || proto == PROTO_UDP) && first_fragment && ihl >= 20 &&
        len >= ihl + 4)
        h = fnv1a(h, pkt + ihl, 4);
    return h;
}

uint16_t dp_flow_sport(const uint8_t *pkt, size_t len, uint16_t lo, uint16_t hi)
{
    if (hi < lo)
        return lo;
    uint32_t span = (uint32_t)hi - lo + 1;
    return (uint16_t)(lo + dp_flow_hash(pkt, len) % span);
}

void dp_vxlan_header(uint8_t *out, uint32_t vni, const uint8_t *dst_mac, const uint8_t *src_mac)
{
    wr32(out, 0x08000000u);            /* flags: I (VNI valid); everything else reserved */
    wr32(out + 4, (vni & 0xffffff) << 8);
    memcpy(out + 8, dst_mac, 6);
    memcpy(out + 14, src_mac, 6);
    wr16(out + 20, 0x0800);
}

int dp_vxlan_check(const uint8_t *buf, size_t len, uint32_t vni, const uint8_t *own_mac,
                   size_t *inner_off)
{
    if (len < DP_VXLAN_OVERHEAD)
        return DP_DROP_TRUNCATED;
    /* Linux drops frames with reserved bits set (no GBP/GPE here) or without the I flag. */
    if (rd32(buf) != 0x08000000u || buf[7] != 0)
        return DP_DROP_BAD_VXLAN_FLAGS;
    if (rd32(buf + 4) >> 8 != (vni & 0xffffff))
        return DP_DROP_WRONG_VNI;
    const uint8_t *eth = buf + DP_VXLAN_HLEN;
    if (memcmp(eth, own_mac, 6) != 0)
        return DP_DROP_WRONG_INNER_MAC;
    if (memcmp(eth + 6, own_mac, 6) == 0)
        return DP_DROP_LOOPED_INNER_MAC;
    if (rd16(eth + 12) != 0x0800)
        return DP_DROP_BAD_ETHERTYPE;
    *inner_off = DP_VXLAN_OVERHEAD;
    return DP_OK;
}

void dp_outer_udp4(uint8_t *hdr, size_t payload_len, uint32_t saddr, uint32_t daddr,
                   uint16_t sport, uint16_t dport, uint8_t ttl, uint16_t ident)
{
    uint16_t udp_len = (uint16_t)(8 + payload_len);
    uint8_t *ip = hdr, *udp = hdr + 20;

    ip[0] = 0x45;
    ip[1] = 0;
    wr16(ip + IPH_TOTLEN, (uint16_t)(20 + udp_len));
    wr16(ip + IPH_ID, ident);
    wr16(ip + IPH_FRAG, 0);
    ip[IPH_TTL] = ttl;
    ip[IPH_PROTO] = PROTO_UDP;
    wr16(ip + IPH_CHECK, 0);
    wr32(ip + IPH_SRC, saddr);
    wr32(ip + IPH_DST, daddr);
    wr16(ip + IPH_CHECK, dp_csum_fold(dp_csum_partial(ip, 20, 0)));

    wr16(udp, sport);
    wr16(udp + 2, dport);
    wr16(udp + 4, udp_len);
    wr16(udp + 6, 0);
    /* Pseudo-header: addresses, protocol, UDP length. */
    uint32_t sum = dp_csum_partial(ip + IPH_SRC, 8, PROTO_UDP + (uint32_t)udp_len);
    uint16_t check = dp_csum_fold(dp_csum_partial(udp, udp_len, sum));
    wr16(udp + 6, check ? check : 0xffff);   /* 0 means "no checksum" in UDP over IPv4 */
}

/* The ICMP types an error may be sent about: the queries of RFC 1122 3.2.2 (echo, timestamp,
 * information, address mask; requests and replies), as the kernel's icmp_pointers has them
 * (icmp_send skips errors, the unassigned types up to 18 and every type above). */
static int is_icmp_query(uint8_t type)
{
    return type == 0 || type == 8 || (type >= 13 && type <= 18);
}

/* RFC 1812 4.3.2.7 / 5.3.7: a source that does not name one host gets no error. */
static int is_single_host(uint32_t a)
{
    uint8_t top = a >> 24;
    return top != 0 && top != 127 && top < 224;
}

size_t dp_icmp_net_unreachable(uint8_t *out, const uint8_t *pkt, size_t len, uint32_t src)
{
    if (len < 20 || (pkt[IPH_VHL] >> 4) != 4)
        return 0;
    size_t ihl = (size_t)(pkt[IPH_VHL] & 0x0f) * 4;
    if (ihl < 20 || ihl > len)
        return 0;
    if (rd16(pkt + IPH_FRAG) & 0x1fff)          /* only the first fragment is answered */
        return 0;
    uint32_t dst = rd32(pkt + IPH_DST), osrc = rd32(pkt + IPH_SRC);
    if ((dst >> 28) == 0xe || dst == 0xffffffffu || !is_single_host(osrc))
        return 0;                                /* RFC 1812: no errors about broadcasts */
    if (pkt[IPH_PROTO] == PROTO_ICMP) {
        if (len < ihl + 1 || !is_icmp_query(pkt[ihl]))
            return 0;                            /* RFC 792: never an error about an error */
    }
    size_t quote = ihl + 8 <= len ? ihl + 8 : len;
    size_t total = 20 + 8 + quote;

    /* The quote goes in first: out may overlap pkt (the batch path answers in place). */
    memmove(out + 28, pkt, quote);
    uint8_t *ip = out, *icmp = out + 20;
    ip[0] = 0x45;
    ip[1] = 0;
    wr16(ip + IPH_TOTLEN, (uint16_t)total);
    wr16(ip + IPH_ID, 0);
    wr16(ip + IPH_FRAG, 0);
    ip[IPH_TTL] = 64;
    ip[IPH_PROTO] = PROTO_ICMP;
    wr16(ip + IPH_CHECK, 0);
    wr32(ip + IPH_SRC, src);
    wr32(ip + IPH_DST, osrc);
    wr16(ip + IPH_CHECK, dp_csum_fold(dp_csum_partial(ip, 20, 0)));
    icmp[0] = 3;                                 /* destination unreachable */
    icmp[1] = 0;                                 /* net unreachable */
    wr16(icmp + 2, 0);
    wr32(icmp + 4, 0);
    wr16(icmp + 2, dp_csum_fold(dp_csum_partial(icmp, 8 + quote, 0)));
    return total;
}
