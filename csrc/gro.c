/* Coalescing, the receive side: a batch of decapsulated inner IPv4 packets becomes frames for
 * a TUN opened with IFF_VNET_HDR, consecutive segments of a flow merged into one GSO frame so
 * the kernel's stack sees one packet where there were forty.
 *
 * A packet is a candidate for merging when it is a plain IPv4 packet (no options, not a
 * fragment, total length = its length, header checksum good) carrying
 *   TCP: flags ACK or ACK|PSH, no AE/reserved bits, payload > 0, checksum good;
 *   UDP: length field = IP payload, a checksum (not 0) that is good, payload > 0.
 * A checksum is verified before the packet may join a merge: the merged frame goes up with
 * NEEDS_CSUM, which the kernel trusts, so a bad segment must never be hidden inside one. The
 * caller may have judged it already (dp_buf.csum, from dp_l4_csum in the ingress decision):
 * VALID is not summed again; PARTIAL (a kernel sender on veth left the pseudo-header sum) is
 * merged as it is, since the merged frame's field holds that sum anyway, and a PARTIAL packet
 * that goes alone gets a NEEDS_CSUM header of its own. UNKNOWN is verified here. A kernel
 * peer's GSO super-packet (dp_buf.gso_size) goes alone as the GSO frame it was.
 *
 * A candidate joins its flow's open frame (same addresses, ports, protocol) when it matches
 * the first member: TOS, TTL, DF; the IP ID counts up by one unless DF is set; for TCP the
 * same header length, options, ACK number and window, and a sequence number that continues
 * the frame; a payload no larger than the first member's (gso_size); at most 65535 bytes of
 * IP packet (and DP_GRO_UDP_MAX_SEGS datagrams). A shorter payload, or PSH, joins and then
 * closes the frame. Anything else closes the flow's frame and starts a new one (a candidate)
 * or goes out alone, untouched (everything else). A non-candidate also closes the open frame
 * of its own flow so nothing behind it is pulled in front of it; a fragment or truncated
 * header with no ports closes every frame between its two addresses for its protocol.
 *
 * Frames are ordered by their first member, so packets of one flow keep their order; packets
 * of different flows may pass each other. At most DP_GRO_FLOWS flows are open at once; a
 * candidate of another flow goes alone until one closes. pyref/gro.py:gro_coalesce is the
 * reference and makes the same choices. */
#include "offload.h"

struct flow {
    const uint8_t *first;     /* first member: the headers the others must match */
    int32_t frame;
    int32_t last;             /* input index of the latest member */
    uint32_t saddr, daddr;
    uint16_t sport, dport;
    uint8_t proto;
    uint8_t psh;              /* the latest member had PSH: the merged header gets it */
    uint16_t hlen;            /* IP + L4 header length, the same in every member */
    uint16_t gso;             /* payload of the first member */
    uint16_t last_id;
    uint32_t next_seq;
    uint32_t ip_len;          /* IP length of the merged packet so far */
};

struct gro {
    const struct dp_buf *pkts;
    struct dp_gro_frame *frames;
    int32_t *next;
    int nframes;
    int nopen;
    struct flow open[DP_GRO_FLOWS];
};

/* What a candidate offers, parsed once. */
struct seg {
    uint32_t saddr, daddr, seq;
    uint16_t sport, dport, id, hlen, pay;
    uint8_t proto, tflags;
};

static int ipv4_plain(const uint8_t *p, size_t len)
{
    return len >= 20 && p[IPH_VHL] == 0x45 && rd16(p + IPH_TOTLEN) == len &&
           (rd16(p + IPH_FRAG) & ~IP_DF) == 0 && dp_csum_fold(dp_csum_partial(p, 20, 0)) == 0;
}

/* Is the L4 checksum of p good? (Pseudo-header + header + payload sum to all ones.) */
static int l4_sum_ok(const uint8_t *p, size_t len)
{
    uint32_t sum = pseudo_sum(p, p[IPH_PROTO], (uint32_t)(len - 20), 0);
    return dp_csum_fold(dp_csum_partial(p + 20, len - 20, sum)) == 0;
}

static int candidate(const uint8_t *p, size_t len, int csum, int flags, struct seg *s)
{
    if (!ipv4_plain(p, len))
        return 0;
    const uint8_t *l4 = p + 20;
    s->proto = p[IPH_PROTO];
    if (s->proto == PROTO_TCP && (flags & DP_GRO_TCP)) {
        if (len < 40)
            return 0;
        size_t thl = (size_t)(l4[TCPH_DOFF] >> 4) * 4;
        s->tflags = l4[TCPH_FLAGS];
        if (thl < 20 || 20 + thl >= len || (l4[TCPH_DOFF] & 0x0f) ||
            (s->tflags & ~(TCP_ACK | TCP_PSH)) || !(s->tflags & TCP_ACK))
            return 0;
        s->hlen = (uint16_t)(20 + thl);
        s->seq = rd32(l4 + TCPH_SEQ);
    } else if (s->proto == PROTO_UDP && (flags & DP_GRO_UDP)) {
        if (len <= 28 || rd16(l4 + UDPH_LEN) != len - 20 || rd16(l4 + UDPH_CHECK) == 0)
            return 0;
        s->hlen = 28;
        s->tflags = 0;
        s->seq = 0;
    } else {
        return 0;
    }
    if (csum == DP_CSUM_BAD || (csum == DP_CSUM_UNKNOWN && !l4_sum_ok(p, len)))
        return 0;
    s->pay = (uint16_t)(len - s->hlen);
    s->saddr = rd32(p + IPH_SRC);
    s->daddr = rd32(p + IPH_DST);
    s->sport = rd16(l4);
    s->dport = rd16(l4 + 2);
    s->id = rd16(p + IPH_ID);
    return 1;
}

/* A partial packet alone: NEEDS_CSUM at its L4 checksum field (if it really has one), so
 * the kernel completes or trusts it as it would have on receipt from a veth. */
static void partial_head(uint8_t *h, const uint8_t *p, size_t len)
{
    if (len < 20 || p[IPH_VHL] >> 4 != 4)
        return;
    size_t ihl = (size_t)(p[IPH_VHL] & 0x0f) * 4;
    uint8_t proto = p[IPH_PROTO];
    size_t off = proto == PROTO_TCP ? TCPH_CHECK : proto == PROTO_UDP ? UDPH_CHECK : 0;
    if (!off || ihl < 20 || ihl + off + 2 > len)
        return;
    h[VNET_FLAGS] = DP_VNET_F_NEEDS_CSUM;
    wrle16(h + VNET_HDR_LEN, (uint16_t)(ihl + off + 2));     /* what tun.c would make of 0 */
    wrle16(h + VNET_CSUM_START, (uint16_t)ihl);
    wrle16(h + VNET_CSUM_OFFSET, (uint16_t)off);
}

static struct dp_gro_frame *new_frame(struct gro *g, int32_t i)
{
    struct dp_gro_frame *fr = &g->frames[g->nframes++];
    memset(fr->head, 0, DP_VNET_HLEN);          /* gso_type NONE, no flags: as it came */
    if (g->pkts[i].gso_size)
        dp_super_vnet(fr->head, g->pkts[i].data, g->pkts[i].len, g->pkts[i].gso_size);
    else if (g->pkts[i].csum == DP_CSUM_PARTIAL)
        partial_head(fr->head, g->pkts[i].data, g->pkts[i].len);
    fr->head_len = DP_VNET_HLEN;
    fr->skip = 0;
    fr->len = DP_VNET_HLEN + g->pkts[i].len;
    fr->first = i;
    fr->count = 1;
    g->next[i] = -1;
    return fr;
}

/* Write the merged frame's head: virtio_net_hdr, then the first member's headers with the
 * merged length, a fresh IP checksum, and the pseudo-header sum in the L4 checksum field (what
 * NEEDS_CSUM means; the kernel completes or trusts it). */
static void finish(struct gro *g, const struct flow *f)
{
    struct dp_gro_frame *fr = &g->frames[f->frame];
    if (fr->count < 2)
        return;
    int tcp = f->proto == PROTO_TCP;
    uint8_t *h = fr->head, *ip = h + DP_VNET_HLEN, *l4 = ip + 20;
    h[VNET_FLAGS] = DP_VNET_F_NEEDS_CSUM;
    h[VNET_GSO_TYPE] = tcp ? DP_VNET_GSO_TCPV4 : DP_VNET_GSO_UDP_L4;
    wrle16(h + VNET_HDR_LEN, f->hlen);
    wrle16(h + VNET_GSO_SIZE, f->gso);
    wrle16(h + VNET_CSUM_START, 20);
    wrle16(h + VNET_CSUM_OFFSET, tcp ? TCPH_CHECK : UDPH_CHECK);
    memcpy(ip, f->first, f->hlen);
    wr16(ip + IPH_TOTLEN, (uint16_t)f->ip_len);
    ip_set_check(ip, 20);
    uint16_t psum = (uint16_t)pseudo_sum(ip, f->proto, f->ip_len - 20, 0);
    if (tcp) {
        if (f->psh)
            l4[TCPH_FLAGS] |= TCP_PSH;
        wr16(l4 + TCPH_CHECK, psum);
    } else {
        wr16(l4 + UDPH_LEN, (uint16_t)(f->ip_len - 20));
        wr16(l4 + UDPH_CHECK, psum);
    }
    fr->head_len = (uint16_t)(DP_VNET_HLEN + f->hlen);
    fr->skip = f->hlen;
    fr->len = DP_VNET_HLEN + f->ip_len;
}

static void close_flow(struct gro *g, int k)
{
    finish(g, &g->open[k]);
    g->nopen--;
    memmove(&g->open[k], &g->open[k + 1], sizeof(g->open[0]) * (size_t)(g->nopen - k));
}

static int find_flow(const struct gro *g, uint8_t proto, uint32_t saddr, uint32_t daddr,
                     uint16_t sport, uint16_t dport)
{
    for (int k = 0; k < g->nopen; k++) {
        const struct flow *f = &g->open[k];
        if (f->proto == proto && f->saddr == saddr && f->daddr == daddr && f->sport == sport &&
            f->dport == dport)
            return k;
    }
    return -1;
}

/* A packet that will not merge: close whatever of its flow is open, so it stays behind it. */
static void close_related(struct gro *g, const uint8_t *p, size_t len)
{
    if (len < 20 || p[IPH_VHL] >> 4 != 4 ||
        (p[IPH_PROTO] != PROTO_TCP && p[IPH_PROTO] != PROTO_UDP))
        return;
    size_t ihl = (size_t)(p[IPH_VHL] & 0x0f) * 4;
    uint32_t saddr = rd32(p + IPH_SRC), daddr = rd32(p + IPH_DST);
    if (!(rd16(p + IPH_FRAG) & IP_OFFMASK) && ihl >= 20 && len >= ihl + 4) {
        int k = find_flow(g, p[IPH_PROTO], saddr, daddr, rd16(p + ihl), rd16(p + ihl + 2));
        if (k >= 0)
            close_flow(g, k);
        return;
    }
    for (int k = g->nopen - 1; k >= 0; k--) {   /* no ports to tell its flow: be safe */
        const struct flow *f = &g->open[k];
        if (f->proto == p[IPH_PROTO] && f->saddr == saddr && f->daddr == daddr)
            close_flow(g, k);
    }
}

static int can_join(const struct flow *f, const struct dp_gro_frame *fr, const uint8_t *p,
                    const struct seg *s)
{
    const uint8_t *q = f->first;
    if (p[1] != q[1] || p[IPH_TTL] != q[IPH_TTL] || rd16(p + IPH_FRAG) != rd16(q + IPH_FRAG))
        return 0;                                       /* TOS, TTL, DF */
    if (!(rd16(q + IPH_FRAG) & IP_DF) && s->id != (uint16_t)(f->last_id + 1))
        return 0;                                       /* without DF the ID must count up */
    if (s->hlen != f->hlen || s->pay > f->gso || f->ip_len + s->pay > 0xffff)
        return 0;
    if (f->proto == PROTO_TCP)
        return s->seq == f->next_seq && rd32(p + 20 + TCPH_ACK) == rd32(q + 20 + TCPH_ACK) &&
               rd16(p + 20 + TCPH_WINDOW) == rd16(q + 20 + TCPH_WINDOW) &&
               memcmp(p + 40, q + 40, f->hlen - 40) == 0;
    return fr->count < DP_GRO_UDP_MAX_SEGS;
}

/* Does a frame end with this member? (Nothing may follow a short one or a PSH.) */
static int ends_frame(const struct flow *f, const struct dp_gro_frame *fr, const struct seg *s)
{
    if (s->pay < f->gso || (s->tflags & TCP_PSH))
        return 1;
    return f->proto == PROTO_UDP && fr->count >= DP_GRO_UDP_MAX_SEGS;
}

static void add_candidate(struct gro *g, int32_t i, const struct seg *s)
{
    const uint8_t *p = g->pkts[i].data;
    int k = find_flow(g, s->proto, s->saddr, s->daddr, s->sport, s->dport);
    if (k >= 0) {
        struct flow *f = &g->open[k];
        struct dp_gro_frame *fr = &g->frames[f->frame];
        if (can_join(f, fr, p, s)) {
            g->next[f->last] = i;
            g->next[i] = -1;
            f->last = i;
            f->last_id = s->id;
            f->next_seq += s->pay;
            f->ip_len += s->pay;
            f->psh = (s->tflags & TCP_PSH) != 0;
            fr->count++;
            if (ends_frame(f, fr, s))
                close_flow(g, k);
            return;
        }
        close_flow(g, k);
    }
    new_frame(g, i);
    /* Pushed: nothing may follow it. A full table: this flow is not tracked and the packet
     * goes alone (evicting instead would thrash when more flows than slots take turns). */
    if ((s->tflags & TCP_PSH) || g->nopen == DP_GRO_FLOWS)
        return;
    g->open[g->nopen++] = (struct flow){
        .first = p, .frame = g->nframes - 1, .last = i, .saddr = s->saddr, .daddr = s->daddr,
        .sport = s->sport, .dport = s->dport, .proto = s->proto, .hlen = s->hlen,
        .gso = s->pay, .last_id = s->id, .next_seq = s->seq + s->pay,
        .ip_len = s->hlen + (uint32_t)s->pay,
    };
}

int dp_gro_coalesce(const struct dp_buf *pkts, int n, int flags, struct dp_gro_frame *frames,
                    int32_t *next)
{
    struct gro g = {.pkts = pkts, .frames = frames, .next = next};
    for (int32_t i = 0; i < n; i++) {
        struct seg s;
        const struct dp_buf *b = &pkts[i];
        if (!b->gso_size && candidate(b->data, b->len, b->csum, flags, &s)) {
            add_candidate(&g, i, &s);
        } else {
            close_related(&g, pkts[i].data, pkts[i].len);
            new_frame(&g, i);
        }
    }
    while (g.nopen)
        close_flow(&g, g.nopen - 1);
    return g.nframes;
}

size_t dp_gro_frame_copy(uint8_t *out, const struct dp_gro_frame *frame,
                         const struct dp_buf *pkts, const int32_t *next)
{
    size_t o = frame->head_len;
    memcpy(out, frame->head, o);
    for (int32_t k = frame->first; k >= 0; k = next[k]) {
        size_t n = pkts[k].len - frame->skip;
        memcpy(out + o, pkts[k].data + frame->skip, n);
        o += n;
    }
    return o;
}

int dp_gro_frame_iov(struct iovec *iov, const struct dp_gro_frame *frame,
                     const struct dp_buf *pkts, const int32_t *next)
{
    int n = 0;
    iov[n++] = (struct iovec){(void *)frame->head, frame->head_len};
    for (int32_t k = frame->first; k >= 0; k = next[k])
        iov[n++] = (struct iovec){(void *)(pkts[k].data + frame->skip), pkts[k].len - frame->skip};
    return n;
}
