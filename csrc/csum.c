/* Folding the Internet checksum (RFC 1071) and its incremental update (RFC 1624); the sums
 * themselves are in csum64.c. */
#include "dp.h"

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
