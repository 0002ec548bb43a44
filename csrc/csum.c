/* Internet checksum (RFC 1071) and its incremental update (RFC 1624). */
#include "dp.h"

uint32_t dp_csum_partial(const uint8_t *buf, size_t len, uint32_t initial)
{
    /* csum64.c sums 64 bits at a time with add-with-carry and folds to the same 16-bit value
     * (0 only for all-zero input), about twice as fast as 32-bit words; one loop for all. */
    return dp_csum64(buf, len, initial);
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
