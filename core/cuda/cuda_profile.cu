/* core/cuda/cuda_profile.cu - per-op device and host times (AM_CUDA_PROFILE=1).
 *
 * Why: "is a decode step slow because of its kernels or because of the gaps
 * between them?" decides what to build next (faster kernels, or fewer
 * launches and CUDA graphs), and the GPU machine has no profiler we can count
 * on. Each op of the backend opens an am__cuda_prof_scope (cuda_internal.cuh):
 * a pair of CUDA events around whatever it queues, and the host time spent in
 * the call. At every point where the host waits for the device anyway
 * (download, synchronize, destroy) the finished pairs are read and summed per
 * op. The table printed at destroy gives, per op: calls, device time, host
 * time, and over everything the device's busy fraction (sum of op times / the
 * span from the first event to the last) - a fraction well below 1 means
 * launch gaps.
 *
 * Cost: two event records per op (a few microseconds of host time each),
 * so a profiled run is somewhat slower than an unprofiled one; the
 * unprofiled path tests one pointer per op.
 */
#include "core/cuda/cuda_internal.cuh"
#include "core/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Event pairs recorded between two harvests; more force a harvest (a wait). */
#define AM_CUDA_PROF_PAIRS 8192
/* Distinct op names the table holds. */
#define AM_CUDA_PROF_OPS 48

typedef struct {
    const char *name;
    int64_t calls;
    double device_ms, host_ms;
} prof_row;

struct am__cuda_prof {
    cudaEvent_t start[AM_CUDA_PROF_PAIRS], end[AM_CUDA_PROF_PAIRS];
    const char *pair_op[AM_CUDA_PROF_PAIRS];
    int n_pairs; /* recorded since the last harvest */
    prof_row rows[AM_CUDA_PROF_OPS];
    int n_rows;
    int depth;              /* nested scopes (an op calling another): only the outer one counts */
    double span_ms;         /* first start to last end, summed over harvests */
    double device_ms;       /* sum of the pairs' times */
    double host_outside_ms; /* host time between ops: the caller's own work */
    int64_t last_exit_us;   /* host clock at the end of the previous op, 0 before the first */
};

static prof_row *row_of(am__cuda_prof *p, const char *name) {
    for (int i = 0; i < p->n_rows; i++)
        if (p->rows[i].name == name || strcmp(p->rows[i].name, name) == 0) return &p->rows[i];
    if (p->n_rows == AM_CUDA_PROF_OPS) return &p->rows[AM_CUDA_PROF_OPS - 1]; /* lumped */
    prof_row *r = &p->rows[p->n_rows++];
    r->name = name;
    return r;
}

int am__cuda_prof_new(am__cuda_ctx *c) {
    const char *env = getenv("AM_CUDA_PROFILE");
    if (!env || strcmp(env, "1") != 0) return 0;
    am__cuda_prof *p = (am__cuda_prof *)am_calloc(1, sizeof *p);
    if (!p) return AM_ENOMEM;
    for (int i = 0; i < AM_CUDA_PROF_PAIRS; i++)
        if (cudaEventCreate(&p->start[i]) != cudaSuccess ||
            cudaEventCreate(&p->end[i]) != cudaSuccess) {
            cudaGetLastError();
            c->prof = p;
            am__cuda_prof_free(c);
            return am_err_set(AM_EIO, "AM_CUDA_PROFILE: cannot create CUDA events");
        }
    c->prof = p;
    AM_LOGI("cuda backend: AM_CUDA_PROFILE=1: timing every op (the table is printed at exit)");
    return 0;
}

void am__cuda_prof_harvest(am__cuda_ctx *c) {
    am__cuda_prof *p = c->prof;
    if (!p || p->n_pairs == 0 || p->depth > 0) return; /* an open scope's end is not recorded yet */
    if (cudaEventSynchronize(p->end[p->n_pairs - 1]) != cudaSuccess) {
        cudaGetLastError();
        p->n_pairs = 0;
        return;
    }
    for (int i = 0; i < p->n_pairs; i++) {
        float ms = 0.0f;
        if (cudaEventElapsedTime(&ms, p->start[i], p->end[i]) != cudaSuccess) cudaGetLastError();
        row_of(p, p->pair_op[i])->device_ms += ms;
        p->device_ms += ms;
    }
    float span = 0.0f;
    if (cudaEventElapsedTime(&span, p->start[0], p->end[p->n_pairs - 1]) != cudaSuccess)
        cudaGetLastError();
    p->span_ms += span;
    p->n_pairs = 0;
}

void am__cuda_prof_enter(am__cuda_ctx *c, am__cuda_prof_scope *s, const char *op) {
    am__cuda_prof *p = c->prof;
    s->pair = -1;
    s->t0_us = am_now_us();
    if (p->depth++ > 0) return;
    if (p->last_exit_us) p->host_outside_ms += (double)(s->t0_us - p->last_exit_us) / 1e3;
    if (p->n_pairs == AM_CUDA_PROF_PAIRS) am__cuda_prof_harvest(c);
    s->pair = p->n_pairs++;
    p->pair_op[s->pair] = op;
    cudaEventRecord(p->start[s->pair], c->stream);
}

void am__cuda_prof_exit(am__cuda_ctx *c, am__cuda_prof_scope *s, const char *op) {
    am__cuda_prof *p = c->prof;
    p->depth--;
    if (s->pair < 0) return;
    cudaEventRecord(p->end[s->pair], c->stream);
    const int64_t now = am_now_us();
    prof_row *r = row_of(p, op);
    r->calls++;
    r->host_ms += (double)(now - s->t0_us) / 1e3;
    p->last_exit_us = now;
}

void am__cuda_prof_free(am__cuda_ctx *c) {
    am__cuda_prof *p = c->prof;
    if (!p) return;
    am__cuda_prof_harvest(c);
    if (p->n_rows > 0) {
        double host = 0.0;
        for (int i = 0; i < p->n_rows; i++)
            host += p->rows[i].host_ms;
        fprintf(stderr, "AM_CUDA_PROFILE (device %d): %-18s %9s %12s %10s %12s\n", c->device, "op",
                "calls", "device ms", "us/call", "host ms");
        for (int i = 0; i < p->n_rows; i++) {
            const prof_row *r = &p->rows[i];
            fprintf(stderr, "AM_CUDA_PROFILE (device %d): %-18s %9lld %12.2f %10.2f %12.2f\n",
                    c->device, r->name, (long long)r->calls, r->device_ms,
                    r->calls ? 1e3 * r->device_ms / (double)r->calls : 0.0, r->host_ms);
        }
        fprintf(
            stderr,
            "AM_CUDA_PROFILE (device %d): ops busy the device %.2f of %.2f ms between their first "
            "and last event (%.2f); host %.2f ms inside ops, %.2f ms between them\n",
            c->device, p->device_ms, p->span_ms, p->span_ms > 0 ? p->device_ms / p->span_ms : 0.0,
            host, p->host_outside_ms);
    }
    for (int i = 0; i < AM_CUDA_PROF_PAIRS; i++) {
        if (p->start[i]) cudaEventDestroy(p->start[i]);
        if (p->end[i]) cudaEventDestroy(p->end[i]);
    }
    am_free(p);
    c->prof = NULL;
}
