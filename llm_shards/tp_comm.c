/* llm_shards/tp_comm.c - the counting wrappers around a group's collectives (tp_comm.h). */
#include "llm_shards/tp_comm.h"

#include "core/clock.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- counting wrappers ------------------------------------------------------ */

int am_tp_allreduce(am_tp_comm *c, float *x, int64_t n) {
    if (c->size == 1) return 0;
    double t0 = am_now_s();
    int rc = c->ops->allreduce_sum(c, x, n, c->allreduce_dtype);
    c->stats.allreduce_s += am_now_s() - t0;
    c->stats.n_allreduce++;
    c->stats.allreduce_bytes += n * (c->allreduce_dtype == AM_DTYPE_BF16 ? 2 : 4);
    return rc;
}

int am_tp_bcast(am_tp_comm *c, void *buf, size_t bytes) {
    if (c->size == 1) return 0;
    c->stats.n_bcast++;
    c->stats.bcast_bytes += (int64_t)bytes;
    return c->ops->bcast(c, buf, bytes);
}

int am_tp_gatherv(am_tp_comm *c, const float *send, int64_t n, float *recv, const int64_t *counts) {
    if (c->size == 1) {
        if (recv != send) memcpy(recv, send, (size_t)n * sizeof(float));
        return 0;
    }
    double t0 = am_now_s();
    int rc = c->ops->gatherv(c, send, n, recv, counts);
    c->stats.gather_s += am_now_s() - t0;
    c->stats.n_gather++;
    c->stats.gather_bytes += n * (int64_t)sizeof(float);
    return rc;
}

_Noreturn void am_tp_fatal(am_tp_comm *c, int code, const char *what) {
    const char *msg = am_err_msg();
    fprintf(stderr, "anymal rank %d/%d: error: %s: %s; ending the shard group\n", c->rank, c->size,
            what, msg[0] ? msg : am_strerror(code));
    fflush(stderr);
    c->ops->abort(c, code);
    abort(); /* ops->abort does not return; this keeps _Noreturn honest */
}
