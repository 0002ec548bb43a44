/* Longest-prefix match: one open-addressing hash table of (prefix, length) and a bitmap of the
 * lengths present, probed longest first. A pod network holds one length (/24) in practice, so
 * a lookup is one hash probe however many nodes there are. */
#include <errno.h>
#include <stdlib.h>

#include "dp.h"

#define EMPTY -1
#define TOMBSTONE -2

struct route {
    uint32_t prefix;
    int32_t plen;          /* EMPTY, TOMBSTONE or 0..32 */
    int32_t value;
};

struct dp_routes {
    struct route *slots;
    uint32_t cap;          /* a power of two */
    uint32_t used;         /* live entries + tombstones */
    uint32_t count;        /* live entries */
    uint32_t per_len[33];
    uint64_t lengths;      /* bit n set: some entry has length n */
};

static inline uint32_t slot_of(uint32_t prefix, int plen, uint32_t cap)
{
    uint32_t h = (prefix ^ (uint32_t)plen * 0x9e3779b9u) * 0x85ebca6bu;
    return (h ^ h >> 15) & (cap - 1);
}

static struct route *find(const struct dp_routes *r, uint32_t prefix, int plen)
{
    for (uint32_t i = slot_of(prefix, plen, r->cap), n = 0; n < r->cap;
         i = (i + 1) & (r->cap - 1), n++) {
        struct route *s = &r->slots[i];
        if (s->plen == EMPTY)
            return NULL;
        if (s->plen == plen && s->prefix == prefix)
            return s;
    }
    return NULL;
}

int dp_alloc_countdown;

void dp_fault_alloc(int n) { dp_alloc_countdown = n; }

static struct route *alloc_slots(uint32_t cap)
{
    struct route *s = alloc_fails() ? NULL : malloc(sizeof(*s) * cap);
    if (s)
        for (uint32_t i = 0; i < cap; i++)
            s[i].plen = EMPTY;
    return s;
}

static void insert_fresh(struct dp_routes *r, uint32_t prefix, int plen, int32_t value)
{
    uint32_t i = slot_of(prefix, plen, r->cap);
    while (r->slots[i].plen >= 0)
        i = (i + 1) & (r->cap - 1);
    if (r->slots[i].plen == EMPTY)
        r->used++;
    r->slots[i] = (struct route){prefix, plen, value};
}

static int resize(struct dp_routes *r, uint32_t cap)
{
    struct route *old = r->slots, *fresh = alloc_slots(cap);
    uint32_t old_cap = r->cap;
    if (!fresh)
        return -ENOMEM;
    r->slots = fresh;
    r->cap = cap;
    r->used = 0;
    for (uint32_t i = 0; i < old_cap; i++)
        if (old[i].plen >= 0)
            insert_fresh(r, old[i].prefix, old[i].plen, old[i].value);
    free(old);
    return 0;
}

struct dp_routes *dp_routes_new(void)
{
    struct dp_routes *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->cap = 16;
    r->slots = alloc_slots(r->cap);
    if (!r->slots) {
        free(r);
        return NULL;
    }
    return r;
}

void dp_routes_free(struct dp_routes *r)
{
    if (r) {
        free(r->slots);
        free(r);
    }
}

int dp_routes_set(struct dp_routes *r, uint32_t prefix, int plen, int32_t value)
{
    if (plen < 0 || plen > 32 || value < 0)
        return -EINVAL;
    prefix &= prefix_mask(plen);
    struct route *s = find(r, prefix, plen);
    if (s) {
        s->value = value;
        return 0;
    }
    int err = dp_routes_reserve(r);
    if (err)
        return err;
    insert_fresh(r, prefix, plen, value);
    r->count++;
    r->per_len[plen]++;
    r->lengths |= (uint64_t)1 << plen;
    return 0;
}

int dp_routes_reserve(struct dp_routes *r)
{
    if ((r->used + 1) * 4 <= r->cap * 3)
        return 0;
    /* Grow when live entries fill half; otherwise just sweep the tombstones. */
    return resize(r, (r->count + 1) * 2 > r->cap ? r->cap * 2 : r->cap);
}

int dp_routes_del(struct dp_routes *r, uint32_t prefix, int plen)
{
    if (plen < 0 || plen > 32)
        return -EINVAL;
    prefix &= prefix_mask(plen);
    struct route *s = find(r, prefix, plen);
    if (!s)
        return -ENOENT;
    s->plen = TOMBSTONE;
    r->count--;
    if (--r->per_len[plen] == 0)
        r->lengths &= ~((uint64_t)1 << plen);
    return 0;
}

int32_t dp_routes_lookup(const struct dp_routes *r, uint32_t addr)
{
    uint64_t lengths = r->lengths;
    while (lengths) {
        int plen = 63 - __builtin_clzll(lengths);   /* longest remaining length */
        lengths &= ~((uint64_t)1 << plen);
        const struct route *s = find(r, addr & prefix_mask(plen), plen);
        if (s)
            return s->value;
    }
    return -1;
}

int dp_routes_len(const struct dp_routes *r) { return (int)r->count; }
