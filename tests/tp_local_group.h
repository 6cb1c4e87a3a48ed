/* tests/tp_local_group.h - a tensor-parallel group of threads for tests.
 *
 * An am_tp_comm whose ranks are threads of one process: a barrier and shared
 * pointers, sums taken in rank order (so every rank gets the same bits). The
 * leader (rank 0) runs the leader's calls; the others sit in am_tp_follow.
 * It runs the same step protocol as the MPI group (tp.h), under ASan too.
 */
#ifndef AM_TESTS_TP_LOCAL_GROUP_H
#define AM_TESTS_TP_LOCAL_GROUP_H

#include "core/dtype.h"
#include "llm_shards/tp.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_P 8

typedef struct local_group {
    int P;
    pthread_barrier_t bar;
    const void *ptr[MAX_P];
} local_group;

typedef struct local_rank {
    local_group *g;
    am_tp_comm comm;
    float *tmp;
    int64_t tmp_cap;
} local_rank;

static int l_allreduce(am_tp_comm *c, float *x, int64_t n, am_dtype wire) {
    local_rank *lr = c->impl;
    local_group *g = lr->g;
    if (n > lr->tmp_cap) {
        free(lr->tmp);
        lr->tmp = malloc((size_t)n * sizeof(float));
        lr->tmp_cap = n;
    }
    g->ptr[c->rank] = x;
    pthread_barrier_wait(&g->bar);
    for (int64_t i = 0; i < n; i++) {
        float s = 0;
        for (int r = 0; r < g->P; r++) {
            float v = ((const float *)g->ptr[r])[i];
            s += wire == AM_DTYPE_BF16 ? am_bf16_to_f32(am_f32_to_bf16(v)) : v;
        }
        lr->tmp[i] = wire == AM_DTYPE_BF16 ? am_bf16_to_f32(am_f32_to_bf16(s)) : s;
    }
    pthread_barrier_wait(&g->bar);
    memcpy(x, lr->tmp, (size_t)n * sizeof(float));
    return 0;
}

static int l_bcast(am_tp_comm *c, void *buf, size_t bytes) {
    local_group *g = ((local_rank *)c->impl)->g;
    if (c->rank == 0) g->ptr[0] = buf;
    pthread_barrier_wait(&g->bar);
    if (c->rank != 0) memcpy(buf, g->ptr[0], bytes);
    pthread_barrier_wait(&g->bar);
    return 0;
}

static int l_gatherv(am_tp_comm *c, const float *send, int64_t n, float *recv,
                     const int64_t *counts) {
    local_group *g = ((local_rank *)c->impl)->g;
    g->ptr[c->rank] = send;
    pthread_barrier_wait(&g->bar);
    if (c->rank == 0) {
        int64_t off = 0;
        for (int r = 0; r < g->P; r++) {
            memcpy(recv + off, g->ptr[r], (size_t)counts[r] * sizeof(float));
            off += counts[r];
        }
    }
    (void)n;
    pthread_barrier_wait(&g->bar);
    return 0;
}

static int l_gather(am_tp_comm *c, const void *send, size_t bytes, void *recv) {
    local_group *g = ((local_rank *)c->impl)->g;
    g->ptr[c->rank] = send;
    pthread_barrier_wait(&g->bar);
    if (c->rank == 0)
        for (int r = 0; r < g->P; r++)
            memcpy((char *)recv + (size_t)r * bytes, g->ptr[r], bytes);
    pthread_barrier_wait(&g->bar);
    return 0;
}

static void l_abort(am_tp_comm *c, int code) {
    fprintf(stderr, "test group: rank %d aborts with %d\n", c->rank, code);
    abort();
}

static const am_tp_comm_ops local_ops = {l_allreduce, l_bcast,  l_bcast,
                                         l_gatherv,   l_gather, l_abort};

#endif
