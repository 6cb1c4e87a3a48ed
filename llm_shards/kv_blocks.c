/* llm_shards/kv_blocks.c - a stack of free block ids plus an owned bitmap
 * that catches double frees. */
#include "llm_shards/kv_blocks.h"

#include "core/alloc.h"
#include "core/error.h"

struct am_kv_blocks {
    int32_t n_total;
    int32_t n_free;
    int32_t *free_ids; /* (n_total) the free ids are free_ids[0 .. n_free) */
    uint8_t *in_use;   /* (n_total) 1 while handed out */
};

int am_kv_blocks_new(int32_t n_blocks, am_kv_blocks **out) {
    *out = NULL;
    if (n_blocks < 1) return am_err_set(AM_ERANGE, "KV blocks %d: need at least 1", n_blocks);
    am_kv_blocks *b = am_calloc(1, sizeof *b);
    if (!b) return AM_ENOMEM;
    b->free_ids = am_malloc((size_t)n_blocks * sizeof(int32_t));
    b->in_use = am_calloc((size_t)n_blocks, 1);
    if (!b->free_ids || !b->in_use) {
        am_kv_blocks_destroy(&b);
        return AM_ENOMEM;
    }
    b->n_total = b->n_free = n_blocks;
    /* Block 0 on top: a fresh pool hands out ids in increasing order. */
    for (int32_t i = 0; i < n_blocks; i++)
        b->free_ids[i] = n_blocks - 1 - i;
    *out = b;
    return 0;
}

void am_kv_blocks_destroy(am_kv_blocks **p) {
    if (!p || !*p) return;
    am_free((*p)->free_ids);
    am_free((*p)->in_use);
    am_free(*p);
    *p = NULL;
}

int am_kv_blocks_alloc(am_kv_blocks *b, int32_t n, int32_t *ids) {
    AM_ASSERT(n >= 0);
    if (n > b->n_free) return AM_ENOMEM;
    for (int32_t i = 0; i < n; i++) {
        int32_t id = b->free_ids[--b->n_free];
        b->in_use[id] = 1;
        ids[i] = id;
    }
    return 0;
}

void am_kv_blocks_free(am_kv_blocks *b, const int32_t *ids, int32_t n) {
    for (int32_t i = 0; i < n; i++) {
        AM_ASSERT(ids[i] >= 0 && ids[i] < b->n_total && b->in_use[ids[i]]);
        b->in_use[ids[i]] = 0;
        b->free_ids[b->n_free++] = ids[i];
    }
}

int32_t am_kv_blocks_n_free(const am_kv_blocks *b) { return b->n_free; }

int32_t am_kv_blocks_n_total(const am_kv_blocks *b) { return b->n_total; }
