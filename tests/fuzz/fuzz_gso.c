/* Fuzz target: dp_gso_segment, a TUN read (virtio_net_hdr + packet) cut into segments, and the
 * checksum primitives under it (dp_csum_partial against a word-by-word sum, dp_csum_copy against dp_csum_partial).
 *
 * Input: virtio_net_hdr (10 bytes), one control byte, then the packet.
 *   control bit 0: head-room 22 (vxlan) or 0; bits 1-2: output capacity (the round's 1 MiB,
 *   64 KiB, 3000 bytes, or (control >> 3) * 64 bytes).
 * Invariants on success: the layout adds up and fits; every segment is a valid IPv4 packet of
 * its own length; a GSO super-packet's segments carry good L4 checksums, its payload in order,
 * headers up to the TCP/UDP header copied (but lengths, ID, checksums, seq, flags); the
 * head-room bytes are never written. */
#include "fuzz.h"

static void check_csum_primitives(const uint8_t *buf, size_t len, uint32_t initial)
{
    uint32_t ref = dp_csum_partial(buf, len, initial);
    uint64_t naive = initial;                   /* RFC 1071 word by word, the slow way */
    for (size_t i = 0; i < len; i += 2)
        naive += (uint32_t)buf[i] << 8 | (i + 1 < len ? buf[i + 1] : 0);
    while (naive >> 16)
        naive = (naive & 0xffff) + (naive >> 16);
    CHECK(dp_csum_fold(ref) == (uint16_t)~naive);
    uint8_t *copy = malloc(len);
    CHECK(copy || !len);
    CHECK(dp_csum_copy(copy, buf, len, initial) == ref);
    CHECK(!len || memcmp(copy, buf, len) == 0);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < DP_VNET_HLEN + 1)
        return 0;
    uint8_t *vnet = exact_copy(data, DP_VNET_HLEN);
    uint8_t ctl = data[DP_VNET_HLEN];
    size_t len = size - DP_VNET_HLEN - 1;
    uint8_t *pkt = exact_copy(data + DP_VNET_HLEN + 1, len);
    check_csum_primitives(pkt, len, (uint32_t)ctl * 0x01010101u & 0x3ffff);

    size_t headroom = ctl & 1 ? DP_VXLAN_OVERHEAD : 0;
    static const size_t caps[] = {1u << 20, 65536, 3000};
    size_t cap = (ctl >> 1 & 3) < 3 ? caps[ctl >> 1 & 3] : (size_t)(ctl >> 3) * 64;
    /* The output ends where the arena ends, so a write past cap is past the allocation; the
     * arena is allocated once (a fresh megabyte per run would cost more than the run). */
    static uint8_t *arena;
    if (!arena)
        CHECK((arena = malloc(caps[0])));
    uint8_t *out = arena + caps[0] - cap;
    /* Only what success could write: segs <= len and each holds at most 120 header bytes. */
    size_t reach = (len + 1) * (headroom + 122);
    memset(out, 0xa5, reach < cap ? reach : cap);
    struct dp_gso_result res;
    int why = dp_gso_segment(vnet, pkt, len, headroom, out, cap, &res);
    CHECK(why >= 0 && why < DP_DROP_COUNT);
    if (why == DP_OK) {
        CHECK(res.segs >= 1 && res.total <= cap && res.total <= reach);
        CHECK(res.stride == headroom + res.seg_len && res.last_len <= res.seg_len);
        CHECK(res.total == (res.segs - 1) * res.stride + headroom + res.last_len);
        size_t tot = rd16(pkt + IPH_TOTLEN), ihl = (size_t)(pkt[0] & 0x0f) * 4;
        int gso = vnet[1] != DP_VNET_GSO_NONE;
        size_t hlen = !gso ? tot : pkt[IPH_PROTO] == PROTO_TCP ? ihl + (pkt[ihl + 12] >> 4) * 4
                                                               : ihl + 8;
        size_t at = hlen;                          /* next payload byte of pkt */
        for (uint32_t i = 0; i < res.segs; i++) {
            uint8_t *seg = out + (size_t)i * res.stride;
            uint32_t sl = i + 1 < res.segs ? res.seg_len : res.last_len;
            for (size_t h = 0; h < headroom; h++)
                CHECK(seg[h] == 0xa5);
            uint8_t *ip = seg + headroom;
            CHECK(dp_ipv4_validate(ip, sl) == DP_OK && rd16(ip + IPH_TOTLEN) == sl);
            if (!gso) {
                CHECK(sl == tot);
                continue;
            }
            CHECK(sl > hlen || (res.segs == 1 && sl == hlen));
            CHECK(memcmp(ip + IPH_TTL, pkt + IPH_TTL, 2) == 0);       /* TTL, protocol */
            CHECK(memcmp(ip + IPH_SRC, pkt + IPH_SRC, 8) == 0);
            CHECK(l4_sum_ok(ip, sl));
            CHECK(memcmp(ip + hlen, pkt + at, sl - hlen) == 0);
            at += sl - hlen;
        }
        CHECK(!gso || at == tot);
    }
    free(pkt);
    free(vnet);
    return 0;
}
