/* llm_shards/kv_blocks.h - the free list of a paged KV cache's blocks.
 *
 * The KV pool itself lives in the context (am_llama_ctx_new_paged); this
 * module only hands out block ids 0 .. n_blocks - 1 and takes them back.
 * Freed blocks are reused last-in first-out (their cache lines may still be
 * warm). A double free or a foreign id is a programmer error (AM_ASSERT):
 * block ids never come from outside the process.
 */
#ifndef AM_KV_BLOCKS_H
#define AM_KV_BLOCKS_H

#include <stdint.h>

typedef struct am_kv_blocks am_kv_blocks;

/* 0, AM_ERANGE (n_blocks < 1) or AM_ENOMEM. */
int am_kv_blocks_new(int32_t n_blocks, am_kv_blocks **out);
void am_kv_blocks_destroy(am_kv_blocks **p);
/* Takes n free blocks into ids (all or none): 0, or AM_ENOMEM when fewer are free. */
int am_kv_blocks_alloc(am_kv_blocks *b, int32_t n, int32_t *ids);
/* Returns n blocks to the free list. */
void am_kv_blocks_free(am_kv_blocks *b, const int32_t *ids, int32_t n);
int32_t am_kv_blocks_n_free(const am_kv_blocks *b);
int32_t am_kv_blocks_n_total(const am_kv_blocks *b);

#endif
