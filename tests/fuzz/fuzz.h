/* fuzz.h: what the libFuzzer harnesses share: reading structure out of the fuzzer's bytes,
 * copies into buffers of exactly their size (so AddressSanitizer sees one byte past the end),
 * and CHECK, which turns a broken invariant into a crash libFuzzer keeps as a reproducer.
 *
 * Input layout, for every target: a few control bytes, then records. A record is a 16-bit
 * big-endian length and that many bytes (cut short at the end of the input), so mutations
 * that grow or shrink one packet leave the others in place. */
#ifndef DP_FUZZ_H
#define DP_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp.h"

#define CHECK(c)                                                                            \
    do {                                                                                    \
        if (!(c)) {                                                                         \
            fprintf(stderr, "invariant broken: %s (%s:%d)\n", #c, __FILE__, __LINE__);       \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

struct input {
    const uint8_t *p;
    size_t n;
};

static inline uint8_t take8(struct input *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static inline uint16_t take16(struct input *in)
{
    uint16_t hi = take8(in);
    return (uint16_t)(hi << 8 | take8(in));
}

/* The next record: *len bytes at the returned pointer; NULL when the input is used up. */
static inline const uint8_t *take_record(struct input *in, size_t *len)
{
    if (!in->n)
        return NULL;
    size_t want = take16(in);
    *len = want < in->n ? want : in->n;
    const uint8_t *p = in->p;
    in->p += *len;
    in->n -= *len;
    return p;
}

/* A heap copy of exactly n bytes (malloc(0) too: any access is then an overflow). */
static inline uint8_t *exact_copy(const uint8_t *src, size_t n)
{
    uint8_t *p = malloc(n);              /* ASan: a unique 0-byte block for n == 0 */
    CHECK(p || !n);
    if (n)
        memcpy(p, src, n);
    return p;
}

/* Is the L4 checksum of this IPv4 packet (TCP or UDP, whole packet) good? */
static inline int l4_sum_ok(const uint8_t *ip, size_t len)
{
    size_t ihl = (size_t)(ip[IPH_VHL] & 0x0f) * 4;
    uint32_t sum = dp_csum_partial(ip + IPH_SRC, 8, (uint32_t)(ip[IPH_PROTO] + len - ihl));
    return dp_csum_fold(dp_csum_partial(ip + ihl, len - ihl, sum)) == 0;
}

#endif
