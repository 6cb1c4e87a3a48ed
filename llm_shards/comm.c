/* llm_shards/comm.c - am_tp_comm over MPI (Open MPI 4.1): the only file that calls MPI. */
#include "llm_shards/comm.h"

#include "core/alloc.h"
#include "core/error.h"

#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Elements per MPI call: MPI counts are int. */
#define AM_COMM_MAX_COUNT (1 << 30)

typedef struct mpi_impl {
    MPI_Comm comm;   /* private duplicate of MPI_COMM_WORLD, errors returned */
    MPI_Op bf16_sum; /* user op: bf16 + bf16 in f32 */
    uint16_t *wire;  /* bf16 scratch */
    size_t wire_cap; /* elements */
    int local_size;
    int *counts, *displs; /* (P) gatherv scratch */
    char host[MPI_MAX_PROCESSOR_NAME];
} mpi_impl;

static int mpi_err(int mrc, const char *call) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(mrc, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", mrc);
    return am_err_set(AM_EIO, "%s failed: %s", call, text);
}

#define MPI_TRY(call)                                                                              \
    do {                                                                                           \
        int _mrc = (call);                                                                         \
        if (_mrc != MPI_SUCCESS) return mpi_err(_mrc, #call);                                      \
    } while (0)

static void bf16_sum_fn(void *in, void *inout, int *len, MPI_Datatype *dt) {
    (void)dt;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = am_f32_to_bf16(am_bf16_to_f32(a[i]) + am_bf16_to_f32(b[i]));
}

static int mpi_allreduce_sum(am_tp_comm *c, float *x, int64_t n, am_dtype wire) {
    mpi_impl *im = c->impl;
    if (wire == AM_DTYPE_F32) {
        for (int64_t done = 0; done < n; done += AM_COMM_MAX_COUNT) {
            int cnt = (int)(n - done < AM_COMM_MAX_COUNT ? n - done : AM_COMM_MAX_COUNT);
            MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, x + done, cnt, MPI_FLOAT, MPI_SUM, im->comm));
        }
        return 0;
    }
    if (wire != AM_DTYPE_BF16)
        return am_err_set(AM_EUNSUPPORTED, "all-reduce dtype %s", am_dtype_name(wire));
    if ((size_t)n > im->wire_cap) {
        uint16_t *w = am_aligned_alloc((size_t)n * sizeof(uint16_t));
        if (!w) return am_err_set(AM_ENOMEM, "bf16 all-reduce of %lld values", (long long)n);
        am_aligned_free(im->wire);
        im->wire = w;
        im->wire_cap = (size_t)n;
    }
    for (int64_t i = 0; i < n; i++)
        im->wire[i] = am_f32_to_bf16(x[i]);
    for (int64_t done = 0; done < n; done += AM_COMM_MAX_COUNT) {
        int cnt = (int)(n - done < AM_COMM_MAX_COUNT ? n - done : AM_COMM_MAX_COUNT);
        MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, im->wire + done, cnt, MPI_UINT16_T, im->bf16_sum,
                              im->comm));
    }
    for (int64_t i = 0; i < n; i++)
        x[i] = am_bf16_to_f32(im->wire[i]);
    return 0;
}

static int mpi_bcast(am_tp_comm *c, void *buf, size_t bytes) {
    mpi_impl *im = c->impl;
    for (size_t done = 0; done < bytes; done += AM_COMM_MAX_COUNT) {
        int cnt = (int)(bytes - done < AM_COMM_MAX_COUNT ? bytes - done : AM_COMM_MAX_COUNT);
        MPI_TRY(MPI_Bcast((char *)buf + done, cnt, MPI_BYTE, 0, im->comm));
    }
    return 0;
}

static void sleep_us(long us) {
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static int mpi_bcast_step(am_tp_comm *c, void *buf, size_t bytes) {
    mpi_impl *im = c->impl;
    if (bytes > INT_MAX) return am_err_set(AM_ERANGE, "step header of %zu bytes", bytes);
    MPI_Request req;
    MPI_TRY(MPI_Ibcast(buf, (int)bytes, MPI_BYTE, 0, im->comm, &req));
    if (c->rank == 0) {
        MPI_TRY(MPI_Wait(&req, MPI_STATUS_IGNORE));
        return 0;
    }
    /* Spin (yielding) while steps may come back-to-back, then sleep between polls. */
    double t0 = MPI_Wtime();
    long nap_us = AM_COMM_IDLE_SLEEP_MIN_US;
    for (;;) {
        int done = 0;
        MPI_TRY(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
        if (done) return 0;
        if ((MPI_Wtime() - t0) * 1e6 < AM_COMM_IDLE_SPIN_US) {
            sched_yield();
            continue;
        }
        sleep_us(nap_us);
        nap_us = nap_us * 2 > AM_COMM_IDLE_SLEEP_MAX_US ? AM_COMM_IDLE_SLEEP_MAX_US : nap_us * 2;
    }
}

static int mpi_gatherv(am_tp_comm *c, const float *send, int64_t n, float *recv,
                       const int64_t *counts) {
    mpi_impl *im = c->impl;
    if (n > INT_MAX) return am_err_set(AM_ERANGE, "gather of %lld floats", (long long)n);
    if (c->rank == 0) {
        int64_t off = 0;
        for (int r = 0; r < c->size; r++) {
            if (counts[r] > INT_MAX || off > INT_MAX)
                return am_err_set(AM_ERANGE, "gather of %lld floats from rank %d at offset %lld",
                                  (long long)counts[r], r, (long long)off);
            im->counts[r] = (int)counts[r];
            im->displs[r] = (int)off;
            off += counts[r];
        }
    }
    MPI_TRY(
        MPI_Gatherv(send, (int)n, MPI_FLOAT, recv, im->counts, im->displs, MPI_FLOAT, 0, im->comm));
    return 0;
}

static int mpi_gather(am_tp_comm *c, const void *send, size_t bytes, void *recv) {
    mpi_impl *im = c->impl;
    if (bytes > INT_MAX) return am_err_set(AM_ERANGE, "gather of %zu bytes", bytes);
    MPI_TRY(MPI_Gather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, 0, im->comm));
    return 0;
}

static void mpi_abort(am_tp_comm *c, int code) {
    (void)c;
    fflush(stdout);
    fflush(stderr);
    /* MPI_Abort on the world communicator: mpirun ends every rank. */
    MPI_Abort(MPI_COMM_WORLD, code < 0 ? 1 : (code ? code : 1));
    for (;;)
        sleep_us(1000000); /* MPI_Abort does not return in practice */
}

static const am_tp_comm_ops mpi_ops = {
    .allreduce_sum = mpi_allreduce_sum,
    .bcast = mpi_bcast,
    .bcast_step = mpi_bcast_step,
    .gatherv = mpi_gatherv,
    .gather = mpi_gather,
    .abort = mpi_abort,
};

int am_comm_new(int *argc, char ***argv, am_tp_comm **out) {
    int inited = 0, provided = 0;
    MPI_TRY(MPI_Initialized(&inited));
    if (!inited) {
        MPI_TRY(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
        if (provided < MPI_THREAD_FUNNELED) {
            MPI_Finalize();
            return am_err_set(AM_EUNSUPPORTED,
                              "the MPI library gives thread level %d; anymal needs "
                              "MPI_THREAD_FUNNELED (compute threads beside the MPI thread)",
                              provided);
        }
    }
    am_tp_comm *c = am_calloc(1, sizeof *c);
    mpi_impl *im = am_calloc(1, sizeof *im);
    if (!c || !im) {
        am_free(c);
        am_free(im);
        return AM_ENOMEM;
    }
    c->ops = &mpi_ops;
    c->impl = im;
    c->allreduce_dtype = AM_DTYPE_F32;
    int rank = 0, size = 1, rc = 0, mrc;
    MPI_Comm local = MPI_COMM_NULL;
    if ((mrc = MPI_Comm_dup(MPI_COMM_WORLD, &im->comm)) != MPI_SUCCESS) {
        rc = mpi_err(mrc, "MPI_Comm_dup");
        goto fail;
    }
    MPI_Comm_set_errhandler(im->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(im->comm, &rank);
    MPI_Comm_size(im->comm, &size);
    c->rank = rank;
    c->size = size;
    if ((mrc = MPI_Op_create(bf16_sum_fn, 1, &im->bf16_sum)) != MPI_SUCCESS) {
        rc = mpi_err(mrc, "MPI_Op_create");
        goto fail;
    }
    im->local_size = 1;
    if (MPI_Comm_split_type(im->comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local) ==
        MPI_SUCCESS) {
        MPI_Comm_size(local, &im->local_size);
        MPI_Comm_free(&local);
    }
    int len = 0;
    if (MPI_Get_processor_name(im->host, &len) != MPI_SUCCESS)
        snprintf(im->host, sizeof im->host, "?");
    im->counts = am_calloc((size_t)size, sizeof(int));
    im->displs = am_calloc((size_t)size, sizeof(int));
    if (!im->counts || !im->displs) {
        rc = AM_ENOMEM;
        goto fail;
    }
    *out = c;
    return 0;
fail:
    am_comm_destroy(&c);
    return rc;
}

void am_comm_destroy(am_tp_comm **p) {
    if (!p || !*p) return;
    am_tp_comm *c = *p;
    mpi_impl *im = c->impl;
    if (im) {
        if (im->bf16_sum != MPI_OP_NULL && im->bf16_sum) MPI_Op_free(&im->bf16_sum);
        if (im->comm != MPI_COMM_NULL && im->comm) MPI_Comm_free(&im->comm);
        am_aligned_free(im->wire);
        am_free(im->counts);
        am_free(im->displs);
        am_free(im);
    }
    am_free(c);
    *p = NULL;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
}

int am_comm_local_size(const am_tp_comm *c) { return ((const mpi_impl *)c->impl)->local_size; }

int am_comm_barrier(am_tp_comm *c) {
    MPI_TRY(MPI_Barrier(((mpi_impl *)c->impl)->comm));
    return 0;
}

int am_comm_allreduce_max(am_tp_comm *c, double *x) {
    MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, x, 1, MPI_DOUBLE, MPI_MAX, ((mpi_impl *)c->impl)->comm));
    return 0;
}

void am_comm_host(const am_tp_comm *c, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", ((const mpi_impl *)c->impl)->host);
}
