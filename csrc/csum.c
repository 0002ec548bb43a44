/* Internet checksum (RFC 1071) and its incremental update (RFC 1624). */
#include "dp.h"

uint32_t dp_csum_partial(const uint8_t *buf, size_t len, uint32_t initial)
{
    /* Sum 32-bit big-endian words into 64 bits: no carry handling inside the loop, and the
     * result folds to the same 16-bit sum as adding 16-bit words (the sum is associative
     * over 2^16 - 1 in one's-complement arithmetic). */
    uint64_t sum = initial;
    while (len >= 4) {
        sum += rd32(buf);
        buf += 4;
        len -= 4;
    }
    if (len >= 2) {
        sum += rd16(buf);
        buf += 2;
        len -= 2;
    }
    if (len)
        sum += (uint32_t)buf[0] << 8;
    /* Fold to 16 bits: every non-zero sum ends in 1..0xffff, so C and Python agree exactly. */
    sum = (sum & 0xffffffffu) + (sum >> 32);
    sum = (sum & 0xffffffffu) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (uint32_t)sum;
}

uint16_t dp_csum_fold(uint32_t sum)
{
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

uint16_t dp_csum_update16(uint16_t check, uint16_t old, uint16_t new_)
{
    /* HC' = ~(~HC + ~m + m') */
    uint32_t sum = (uint16_t)~check + (uint32_t)(uint16_t)~old + new_;
    return dp_csum_fold(sum);
}
