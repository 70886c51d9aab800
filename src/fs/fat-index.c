/* A small hash index for FAT directories, so that lookups and creates in
 * a directory of tens of thousands of entries do not scan it each time. */
#include <stdlib.h>
#include <string.h>

#include "fat-int.h"
#include "util.h"

void fat_ix_free(struct fat_ix *ix)
{
    free(ix->hash);
    free(ix->slot1);
    memset(ix, 0, sizeof *ix);
}

static void ix_put(uint32_t *hash, uint32_t *slot1, uint32_t cap, uint32_t h, uint32_t s1)
{
    uint32_t j = (h * 0x9E3779B1u) & (cap - 1);
    while (slot1[j])
        j = (j + 1) & (cap - 1);
    hash[j] = h;
    slot1[j] = s1;
}

void fat_ix_insert(struct fat_ix *ix, uint32_t h, uint32_t slot)
{
    if ((uint64_t)(ix->used + 1) * 2 > ix->cap) {
        uint32_t cap = ix->cap ? ix->cap * 2 : 64;
        uint32_t *hash = qimg_xmalloc(sizeof *hash * cap);
        uint32_t *slot1 = qimg_xcalloc(cap, sizeof *slot1);
        for (uint32_t i = 0; i < ix->cap; i++)
            if (ix->slot1[i])
                ix_put(hash, slot1, cap, ix->hash[i], ix->slot1[i]);
        free(ix->hash);
        free(ix->slot1);
        ix->hash = hash;
        ix->slot1 = slot1;
        ix->cap = cap;
    }
    ix_put(ix->hash, ix->slot1, ix->cap, h, slot + 1);
    ix->used++;
}

static uint32_t ix_scan(const struct fat_ix *ix, uint32_t h, uint32_t j)
{
    for (; ix->slot1[j]; j = (j + 1) & (ix->cap - 1))
        if (ix->hash[j] == h)
            return j;
    return UINT32_MAX;
}

uint32_t fat_ix_first(const struct fat_ix *ix, uint32_t h)
{
    if (!ix->cap)
        return UINT32_MAX;
    return ix_scan(ix, h, (h * 0x9E3779B1u) & (ix->cap - 1));
}

uint32_t fat_ix_next(const struct fat_ix *ix, uint32_t h, uint32_t pos)
{
    return ix_scan(ix, h, (pos + 1) & (ix->cap - 1));
}

uint32_t fat_name_hash(const uint16_t *name, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        uint16_t c = fat_upcase(name[i]);
        h = (h ^ (c & 0xFF)) * 16777619u;
        h = (h ^ (c >> 8)) * 16777619u;
    }
    return h;
}

uint32_t fat_short_hash(const uint8_t name[11])
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 11; i++)
        h = (h ^ name[i]) * 16777619u;
    return h;
}
