/* bench/bench_allreduce.c - all-reduce latency and bandwidth of a shard group (llm_shards/comm.h).
 *
 *   mpirun -np P bench_allreduce [--min-bytes B] [--max-bytes B] [--wire f32|bf16] [--seconds S]
 *
 * For every power-of-two message size from --min-bytes (default 4) to
 * --max-bytes (default 64 MiB) of wire bytes, it times back-to-back
 * all-reduces through the same am_tp_comm call the decoder uses (so the bf16
 * conversion is included for --wire bf16) and prints one table row: time per
 * all-reduce (the slowest rank's mean over a batch of about --seconds,
 * default 0.2, best of 3 batches), algorithm bandwidth (bytes / time) and bus
 * bandwidth (algbw * 2(P-1)/P, the nccl-tests convention: what each link
 * carries in a ring all-reduce). A last line fits the ring model
 *   t(n) = 2(P-1) alpha + 2(P-1)/P * n / B
 * to the measured points (least squares on t = a + b n, weighted by 1/t so small and
 * large messages count alike) and prints alpha and B as JSON for
 * bench/scaling_model.py.
 */
#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "llm_shards/comm.h"
#include "llm_shards/generate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AM_BENCH_REPEATS    3
#define AM_BENCH_MAX_POINTS 64

static int fail(am_tp_comm *c, int rc, const char *what) {
    fprintf(stderr, "bench_allreduce rank %d: %s: %s\n", c ? c->rank : -1, what,
            am_err_msg()[0] ? am_err_msg() : am_strerror(rc));
    return 1;
}

int main(int argc, char **argv) {
    am_tp_comm *c = NULL;
    int rc = am_comm_new(&argc, &argv, &c);
    if (rc) return fail(NULL, rc, "MPI");
    size_t min_bytes = 4, max_bytes = (size_t)64 << 20;
    double seconds = 0.2;
    am_dtype wire = AM_DTYPE_F32;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--min-bytes") && i + 1 < argc)
            min_bytes = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--max-bytes") && i + 1 < argc)
            max_bytes = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--wire") && i + 1 < argc)
            wire = strcmp(argv[++i], "bf16") ? AM_DTYPE_F32 : AM_DTYPE_BF16;
        else {
            if (c->rank == 0)
                fprintf(stderr, "usage: mpirun -np P bench_allreduce [--min-bytes B] [--max-bytes "
                                "B] [--wire f32|bf16] "
                                "[--seconds S]\n");
            am_comm_destroy(&c);
            return 2;
        }
    }
    const size_t esize = wire == AM_DTYPE_BF16 ? 2 : 4;
    if (min_bytes < esize) min_bytes = esize;
    const int P = c->size;
    float *buf = am_aligned_alloc(max_bytes / esize * sizeof(float) + 64);
    if (!buf) return fail(c, AM_ENOMEM, "buffer");
    char host[256];
    am_comm_host(c, host, sizeof host);
    if (c->rank == 0) {
        printf(
            "# all-reduce, P = %d ranks (rank 0 on %s), wire %s, through am_tp_comm (Open MPI)\n",
            P, host, am_dtype_name(wire));
        printf("| bytes | us per all-reduce | algbw GB/s | busbw GB/s |\n|---:|---:|---:|---:|\n");
    }
    double xs[AM_BENCH_MAX_POINTS], ts[AM_BENCH_MAX_POINTS];
    int np = 0;
    for (size_t bytes = min_bytes; bytes <= max_bytes && np < AM_BENCH_MAX_POINTS; bytes *= 2) {
        int64_t n = (int64_t)(bytes / esize);
        for (int64_t i = 0; i < n; i++)
            buf[i] = 1.0f / (float)(1 + c->rank);
        /* Calibrate the batch size on rank 0's estimate, agreed by all. */
        if ((rc = am_comm_barrier(c))) return fail(c, rc, "barrier");
        double t0 = am_now_s();
        for (int k = 0; k < 3; k++)
            if ((rc = c->ops->allreduce_sum(c, buf, n, wire))) return fail(c, rc, "all-reduce");
        double est = (am_now_s() - t0) / 3;
        if ((rc = am_comm_allreduce_max(c, &est))) return fail(c, rc, "max");
        int iters = (int)fmin(100000.0, fmax(3.0, seconds / fmax(est, 1e-7)));
        double best = 1e30;
        for (int r = 0; r < AM_BENCH_REPEATS; r++) {
            if ((rc = am_comm_barrier(c))) return fail(c, rc, "barrier");
            t0 = am_now_s();
            for (int k = 0; k < iters; k++)
                if ((rc = c->ops->allreduce_sum(c, buf, n, wire))) return fail(c, rc, "all-reduce");
            double t = (am_now_s() - t0) / iters;
            if ((rc = am_comm_allreduce_max(c, &t))) return fail(c, rc, "max");
            if (t < best) best = t;
        }
        xs[np] = (double)bytes;
        ts[np] = best;
        np++;
        if (c->rank == 0) {
            double alg = (double)bytes / best / 1e9;
            printf("| %zu | %.2f | %.3f | %.3f |\n", bytes, best * 1e6, alg,
                   alg * 2.0 * (P - 1) / P);
            fflush(stdout);
        }
    }
    if (c->rank == 0 && np >= 2 && P > 1) {
        /* Weighted least squares of t = a + b x with weights 1/t^2 (relative error). */
        double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
        for (int i = 0; i < np; i++) {
            double w = 1.0 / (ts[i] * ts[i]);
            sw += w;
            sx += w * xs[i];
            sy += w * ts[i];
            sxx += w * xs[i] * xs[i];
            sxy += w * xs[i] * ts[i];
        }
        double b = (sw * sxy - sx * sy) / (sw * sxx - sx * sx), a = (sy - b * sx) / sw;
        double alpha = a / (2.0 * (P - 1)), bw = 2.0 * (P - 1) / P / b;
        printf("{\"bench\":\"allreduce\",\"ranks\":%d,\"wire\":\"%s\",\"alpha_us\":%.3f,\"link_gb_"
               "per_s\":%.3f,"
               "\"t0_us\":%.3f,\"points\":%d}\n",
               P, am_dtype_name(wire), alpha * 1e6, bw / 1e9, a * 1e6, np);
    }
    am_aligned_free(buf);
    am_comm_destroy(&c);
    return 0;
}
