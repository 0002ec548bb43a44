/* Fuzz target: dp_gro_coalesce and dp_gro_frame_copy over a batch of decapsulated packets,
 * with GSO as the oracle: a merged frame cut again by dp_gso_segment must give back exactly
 * the packets it merged (up to what GRO may legitimately forget: the IP ID under DF, the
 * urgent pointer of a TCP segment without URG).
 *
 * Input: one control byte (bits 0-1: DP_GRO_TCP / DP_GRO_UDP; bit 2: each packet's checksum
 * state comes with it, dp_l4_csum as the ingress decision finds it, else UNKNOWN; bit 3: one
 * longer than SUPER_MAX that dp_super_gso recognises comes as a kernel peer's super-packet,
 * gso_size and PARTIAL, as the decision marks it), then records, one packet each (at most 96).
 * Invariants: every packet is in exactly one frame, members in arrival order, frames ordered
 * by their first member; a frame copies to exactly frame->len bytes; a lone packet goes out
 * unchanged behind a zero virtio_net_hdr (NEEDS_CSUM at its checksum for a PARTIAL one, the
 * header dp_super_vnet makes for a super-packet); a merged frame has a sound virtio_net_hdr
 * and IPv4 header and cuts back into its members (PARTIAL ones completed); a BAD packet never
 * joins a merge. */
#include "fuzz.h"
#include "offload.h"          /* rdle16 */

#define MAXPKTS 96
#define GSO_CAP (320 * 1024)
#define SUPER_MAX 1500                  /* the max_inner super-packets are recognised at */
#define SUPER_UDP 1000                  /* the UDP_GRO size a drain would pass with one */

/* What dp_ingress_batch leaves in dp_pkt.csum / gso_size for a packet it delivers. */
static void classify(struct dp_buf *b, int ctl)
{
    b->csum = DP_CSUM_UNKNOWN;
    b->gso_size = 0;
    if (dp_ipv4_validate(b->data, b->len) != DP_OK || rd16(b->data + IPH_TOTLEN) != b->len)
        return;
    if (ctl & 8 && b->len > SUPER_MAX &&
        (b->gso_size = dp_super_gso(b->data, b->len, SUPER_MAX, SUPER_UDP))) {
        b->csum = DP_CSUM_PARTIAL;
        return;
    }
    if (ctl & 4)
        b->csum = (uint8_t)dp_l4_csum(b->data, b->len);
}

/* A member as GSO rebuilds it, made comparable: the IP ID (and so the IP checksum) when DF is
 * set, since GRO does not require consecutive IDs then; for TCP the urgent pointer, which means
 * nothing without URG (candidates never have it) and which GRO, like Linux's tcp_gro_receive,
 * does not compare, so the frame carries the first member's; and with it the TCP checksum,
 * checked on its own before. */
static void normalise(uint8_t *p, size_t len)
{
    if (rd16(p + IPH_FRAG) & 0x4000) {
        wr16(p + IPH_ID, 0);
        wr16(p + IPH_CHECK, 0);
    }
    if (p[IPH_PROTO] == PROTO_TCP) {
        CHECK(l4_sum_ok(p, len));
        wr16(p + 20 + 16, 0);
        wr16(p + 20 + 18, 0);
    }
}

static void check_roundtrip(const uint8_t *frame, size_t flen, const struct dp_gro_frame *fr,
                            const struct dp_buf *pkts, const int32_t *next)
{
    const uint8_t *ip = frame + DP_VNET_HLEN;
    size_t iplen = flen - DP_VNET_HLEN;
    CHECK(frame[0] == DP_VNET_F_NEEDS_CSUM);
    CHECK(frame[1] == DP_VNET_GSO_TCPV4 || frame[1] == DP_VNET_GSO_UDP_L4);
    CHECK(iplen <= 0xffff && rd16(ip + IPH_TOTLEN) == iplen);
    CHECK(dp_ipv4_validate(ip, iplen) == DP_OK);
    CHECK(fr->skip == fr->head_len - DP_VNET_HLEN);

    static uint8_t *out;                   /* once: a fresh 320 KiB per frame is slow */
    if (!out)
        CHECK((out = malloc(GSO_CAP)));
    struct dp_gso_result res;
    CHECK(dp_gso_segment(frame, ip, iplen, 0, out, GSO_CAP, &res) == DP_OK);
    CHECK(res.segs == fr->count);
    uint32_t i = 0;
    for (int32_t k = fr->first; k >= 0; k = next[k], i++) {
        uint32_t sl = i + 1 < res.segs ? res.seg_len : res.last_len;
        CHECK(sl == pkts[k].len);
        uint8_t *a = out + (size_t)i * res.stride, *b = malloc(sl);
        CHECK(b);
        CHECK(pkts[k].csum != DP_CSUM_BAD && pkts[k].gso_size == 0);
        memcpy(b, pkts[k].data, sl);
        if (pkts[k].csum == DP_CSUM_PARTIAL)
            dp_l4_csum_complete(b, sl);     /* GSO completes every segment's checksum */
        normalise(a, sl);
        normalise(b, sl);
        CHECK(memcmp(a, b, sl) == 0);
        free(b);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    int ctl = take8(&in);
    int flags = ctl & (DP_GRO_TCP | DP_GRO_UDP);
    struct dp_buf pkts[MAXPKTS];
    int n = 0;
    const uint8_t *rec;
    size_t len;
    while (n < MAXPKTS && (rec = take_record(&in, &len))) {
        pkts[n].data = exact_copy(rec, len);
        pkts[n].len = (uint32_t)len;
        classify(&pkts[n], ctl);
        n++;
    }
    if (n == 0)
        return 0;
    struct dp_gro_frame *frames = malloc(sizeof(*frames) * (size_t)n);
    int32_t *next = malloc(sizeof(*next) * (size_t)n);
    CHECK(frames && next);
    int nf = dp_gro_coalesce(pkts, n, flags, frames, next);
    CHECK(nf >= 1 && nf <= n);

    uint8_t seen[MAXPKTS] = {0};
    int32_t prev_first = -1;
    for (int f = 0; f < nf; f++) {
        const struct dp_gro_frame *fr = &frames[f];
        CHECK(fr->first > prev_first && fr->first < n);
        prev_first = fr->first;
        uint32_t count = 0, bytes = fr->head_len;
        int32_t last = -1;
        for (int32_t k = fr->first; k >= 0; k = next[k]) {
            CHECK(k < n && k > last && !seen[k]);
            CHECK(pkts[k].len >= fr->skip);
            seen[k] = 1;
            last = k;
            bytes += pkts[k].len - fr->skip;
            CHECK(++count <= fr->count);
        }
        CHECK(count == fr->count && bytes == fr->len);
        uint8_t *buf = malloc(fr->len);
        CHECK(buf);
        CHECK(dp_gro_frame_copy(buf, fr, pkts, next) == fr->len);
        if (fr->count == 1) {
            const struct dp_buf *b = &pkts[fr->first];
            uint8_t head[DP_VNET_HLEN] = {0};
            if (b->gso_size)
                dp_super_vnet(head, b->data, b->len, b->gso_size);
            CHECK(fr->skip == 0);
            if (!b->gso_size && b->csum == DP_CSUM_PARTIAL && buf[0]) {
                CHECK(buf[0] == DP_VNET_F_NEEDS_CSUM && buf[1] == DP_VNET_GSO_NONE);
                size_t ihl = (size_t)(b->data[IPH_VHL] & 0x0f) * 4;
                CHECK(rdle16(buf + 6) == ihl && ihl + rdle16(buf + 8) + 2 <= b->len);
            } else {
                CHECK(memcmp(buf, head, DP_VNET_HLEN) == 0);
            }
            CHECK(memcmp(buf + DP_VNET_HLEN, pkts[fr->first].data, pkts[fr->first].len) == 0);
        } else {
            check_roundtrip(buf, fr->len, fr, pkts, next);
        }
        free(buf);
    }
    for (int i = 0; i < n; i++) {
        CHECK(seen[i]);
        free((void *)pkts[i].data);
    }
    free(frames);
    free(next);
    return 0;
}
