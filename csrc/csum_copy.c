/* Copy and checksum in one pass, so segmentation touches each payload byte once.
 *
 * Words are loaded in host order and summed 64 bits at a time with end-around carry: the
 * one's-complement sum does not care how its 16-bit lanes are grouped, and summing
 * byte-swapped lanes gives the byte-swapped sum, so one swap at the end turns the host-order
 * result into the network-order value dp_csum_partial returns. */
#include "dp.h"

static inline uint64_t add_carry(uint64_t sum, uint64_t v)
{
    sum += v;
    return sum + (sum < v);            /* end-around carry: compiles to add + adc */
}

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

uint32_t dp_csum_copy(uint8_t *dst, const uint8_t *src, size_t len, uint32_t initial)
{
    /* Two independent chains so consecutive adds need not wait on each other's carry. */
    uint64_t s0 = 0, s1 = 0;
    while (len >= 32) {
        uint64_t a = load64(src), b = load64(src + 8), c = load64(src + 16), d = load64(src + 24);
        memcpy(dst, &a, 8);
        memcpy(dst + 8, &b, 8);
        memcpy(dst + 16, &c, 8);
        memcpy(dst + 24, &d, 8);
        s0 = add_carry(s0, a);
        s1 = add_carry(s1, b);
        s0 = add_carry(s0, c);
        s1 = add_carry(s1, d);
        src += 32;
        dst += 32;
        len -= 32;
    }
    while (len >= 8) {
        uint64_t a = load64(src);
        memcpy(dst, &a, 8);
        s0 = add_carry(s0, a);
        src += 8;
        dst += 8;
        len -= 8;
    }
    if (len) {
        /* The tail, zero-padded: an odd last byte is the high byte of its network-order word. */
        uint64_t t = 0;
        memcpy(&t, src, len);
        memcpy(dst, src, len);
        s1 = add_carry(s1, t);
    }
    uint64_t s = add_carry(s0, s1);
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    s = (s >> 8 | s << 8) & 0xffff;
#endif
    /* Add the caller's partial sum and fold exactly as dp_csum_partial does. */
    s += initial;
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (uint32_t)s;
}
