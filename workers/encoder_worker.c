/* workers/encoder_worker.c - batching ENCODE jobs across requests and running the encoders.
 *
 * Nothing here knows a modality: decoding, row counts and encoding go through
 * the table of encoders/modality.h. */
#include "workers/encoder_worker.h"

#include "core/alloc.h"
#include "core/backend_open.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "encoders/modality.h"
#include "proto/transport.h"
#include "workers/model_identity.h"
#include "workers/worker_link.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

_Static_assert(AM_ENCODER_MAX_CAPACITY <= AM_MOD_MAX_BATCH,
               "a batch is at most the worker's capacity");

typedef struct job {
    am_wire_in in;
    am_msg m; /* ENCODE; payloads point into in */
    int64_t t_ms;
    /* while a batch runs */
    am_mod_input input; /* decoded and preprocessed media */
    float *out;
    int64_t n_rows;
    int failed;
} job;

typedef struct ew {
    const am_encoder_worker_opts *o;
    void *pipe;
    am_backend *be;
    am_mod_set *enc; /* every served modality's encoder (encoders/modality.h) */
    int32_t out_dim;
    int n_threads;
    job *jobs;
    int n_jobs, capacity, max_batch;
    int64_t n_done, n_batches;
} ew;

static void free_rows(void *data, void *hint) {
    (void)hint;
    am_aligned_free(data);
}

static void job_clear(job *j) {
    am_mod_input_fini(&j->input);
    am_aligned_free(j->out);
    am_msg_fini(&j->m);
    am_wire_in_close(&j->in);
    memset(j, 0, sizeof *j);
}

static void reply_error(ew *w, const am_msg *req, int32_t code, const char *what) {
    am_msg m;
    char msg[AM_PROTO_MAX_MESSAGE_BYTES];
    snprintf(msg, sizeof msg, "%s", what);
    am_msg_init(&m, AM_CMD_ERROR);
    m.id = req->id;
    m.part = req->part;
    m.code = code;
    m.message = msg;
    (void)am_wire_send(w->pipe, NULL, 0, &m, NULL, 0, 0);
}

/* Decodes and preprocesses one job's media; on failure replies ERROR (am_wire_code). */
static void prepare(ew *w, job *j) {
    const am_msg *m = &j->m;
    char name[64];
    snprintf(name, sizeof name, "request %llu part %u", (unsigned long long)m->id, m->part);
    am_mod_opts o = am_mod_default_opts();
    o.frames = (int32_t)m->frames;
    o.n_threads = w->n_threads;
    o.image.max_pixels =
        w->o->max_pixels > 0 ? w->o->max_pixels : AM_IMAGE_SERVE_MAX_PIXELS_DEFAULT;
    if (o.image.max_pixels < o.video.max_frame_pixels)
        o.video.max_frame_pixels = o.image.max_pixels;
    int rc = am_mod_set_prepare(w->enc, m->modality, m->payloads[0].data, m->payloads[0].len, name,
                                &o, &j->input);
    if (!rc) j->n_rows = j->input.n_rows;
    if (!rc && !(j->out = am_aligned_alloc((size_t)j->n_rows * (size_t)w->out_dim * sizeof(float))))
        rc = am_err_set(AM_ENOMEM, "%s: out of memory for %lld rows", name, (long long)j->n_rows);
    if (rc) {
        j->failed = 1;
        reply_error(w, m, am_wire_code(rc), am_err_msg()[0] ? am_err_msg() : am_strerror(rc));
    }
}

static void send_embed(ew *w, job *j, uint32_t encode_us) {
    am_msg m;
    am_msg_init(&m, AM_CMD_EMBED);
    m.id = j->m.id;
    m.part = j->m.part;
    m.attempt = j->m.attempt;
    m.modality = j->m.modality;
    m.n_rows = (uint32_t)j->n_rows;
    m.dim = (uint32_t)w->out_dim;
    m.encode_us = encode_us;
    zmq_msg_t pay;
    size_t bytes = (size_t)j->n_rows * (size_t)w->out_dim * sizeof(float);
    if (am_wire_payload_own(&pay, j->out, bytes, free_rows, NULL)) {
        reply_error(w, &j->m, AM_WERR_INTERNAL, am_err_msg());
        return;
    }
    j->out = NULL; /* libzmq frees it after sending */
    if (am_wire_send(w->pipe, NULL, 0, &m, &pay, 1, 0))
        AM_LOGW("encoder worker: EMBED of request %llu not sent: %s", (unsigned long long)m.id,
                am_err_msg());
}

/* Runs every waiting job: one batched encoder call per model (image and video share one). */
static void run_batch(ew *w) {
    int n = w->n_jobs;
    for (int i = 0; i < n; i++)
        prepare(w, &w->jobs[i]);
    const am_mod_input *in[AM_ENCODER_MAX_CAPACITY];
    float *out[AM_ENCODER_MAX_CAPACITY];
    for (int model = 0; model < am_mod_set_n_models(w->enc); model++) {
        int cnt = 0;
        for (int i = 0; i < n; i++) {
            job *j = &w->jobs[i];
            if (j->failed || am_mod_set_model_of(w->enc, j->m.modality) != model) continue;
            in[cnt] = &j->input;
            out[cnt++] = j->out;
        }
        if (!cnt) continue;
        const int64_t t0 = am_now_us();
        int rc = am_mod_set_encode(w->enc, model, in, out, cnt);
        uint32_t us = (uint32_t)(am_now_us() - t0);
        for (int i = 0; i < n; i++) {
            job *j = &w->jobs[i];
            if (j->failed || am_mod_set_model_of(w->enc, j->m.modality) != model) continue;
            if (rc)
                reply_error(w, &j->m, AM_WERR_INTERNAL, am_err_msg());
            else
                send_embed(w, j, us);
        }
    }
    for (int i = 0; i < n; i++)
        job_clear(&w->jobs[i]);
    w->n_done += n;
    w->n_batches++;
    w->n_jobs = 0;
}

static void on_pipe(ew *w) {
    for (;;) {
        /* Received straight into the next job slot (there is one spare): a
         * decoded message points into its frames, so they must not move. */
        job *j = &w->jobs[w->n_jobs];
        memset(j, 0, sizeof *j);
        if (am_wire_recv(w->pipe, 0, &j->in)) return;
        am_msg *m = &j->m;
        int rc = am_wire_decode(&j->in, m);
        if (rc) {
            AM_LOGW("encoder worker: dropped a malformed message: %s", am_err_msg());
            job_clear(j);
            continue;
        }
        if (m->cmd == AM_CMD_DISCONNECT) {
            /* The session ended: the coordinator has given these jobs to others. */
            job_clear(j);
            for (int i = 0; i < w->n_jobs; i++)
                job_clear(&w->jobs[i]);
            w->n_jobs = 0;
            continue;
        }
        if (m->cmd == AM_CMD_ENCODE) {
            if (am_mod_set_model_of(w->enc, m->modality) < 0) {
                char msg[96];
                snprintf(msg, sizeof msg, "this worker does not serve %s",
                         am_modality_name(m->modality));
                reply_error(w, m, AM_WERR_NOT_FOUND, msg);
            } else if (w->n_jobs >= w->capacity) {
                reply_error(w, m, AM_WERR_OVERLOADED, "encoder worker over its capacity");
            } else {
                j->t_ms = am_now_ms();
                w->n_jobs++; /* the job keeps its frames and message */
                continue;
            }
        }
        job_clear(j);
    }
}

static int load(ew *w) {
    const am_encoder_worker_opts *o = w->o;
    w->n_threads = o->n_threads > 0 ? o->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    int rc;
    if ((rc = am_backend_open(o->device, w->n_threads, &w->be)) ||
        (rc = am_mod_set_open(o->model_dir, o->modalities, w->be, w->n_threads, &w->enc)))
        return rc;
    w->out_dim = am_mod_set_out_dim(w->enc);
    return 0;
}

int am_encoder_worker_run(const am_encoder_worker_opts *o, volatile sig_atomic_t *stop) {
    ew w = {.o = o};
    am_link *link = NULL;
    w.max_batch = o->max_batch > 0 ? o->max_batch : AM_ENCODER_MAX_BATCH_DEFAULT;
    w.capacity = o->capacity > 0 ? o->capacity : 2 * w.max_batch;
    if (w.capacity > AM_ENCODER_MAX_CAPACITY) w.capacity = AM_ENCODER_MAX_CAPACITY;
    if (w.max_batch > w.capacity) w.max_batch = w.capacity;
    const int wait_ms = o->batch_wait_ms >= 0 ? o->batch_wait_ms : AM_ENCODER_BATCH_WAIT_MS_DEFAULT;
    char model[AM_PROTO_MAX_NAME_BYTES + 1], fp[17], name[64];
    int rc = load(&w);
    if (!rc) rc = am_model_identity(o->model_dir, model, sizeof model, fp);
    if (!rc && !(w.jobs = am_calloc((size_t)w.capacity + 1, sizeof *w.jobs))) rc = AM_ENOMEM;
    if (rc) goto done;
    snprintf(name, sizeof name, "encoder-%d", (int)getpid());
    am_link_opts lo = o->link;
    am_msg_init(&lo.ready, AM_CMD_READY);
    lo.ready.role = AM_ROLE_ENCODER;
    lo.ready.name = o->name ? o->name : name;
    lo.ready.model = o->model_name ? o->model_name : model;
    lo.ready.fingerprint = fp;
    lo.ready.capacity = (uint32_t)w.capacity;
    lo.ready.out_dim = (uint32_t)w.out_dim;
    for (int mod = 0; mod < AM_MOD_COUNT; mod++)
        if (o->modalities & (1u << mod))
            lo.ready.modalities[lo.ready.n_modalities++] = (uint8_t)mod;
    if ((rc = am_link_new(&lo, &link))) goto done;
    w.pipe = am_link_pipe(link);
    am_drain drain = {0};
    while (*stop < 2) {
        am_link_alive(link);
        if (*stop == 1 && am_drain_poll(&drain, w.pipe, w.n_jobs, o->drain_ms)) break;
        int timeout = 100;
        if (w.n_jobs) {
            int64_t left = w.jobs[0].t_ms + wait_ms - am_now_ms();
            timeout = left > 0 ? (int)left : 0;
        }
        zmq_pollitem_t pi = {w.pipe, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&pi, 1, timeout) < 0 && zmq_errno() != EINTR) break;
        if (pi.revents & ZMQ_POLLIN) on_pipe(&w);
        if (w.n_jobs && (w.n_jobs >= w.max_batch || am_now_ms() - w.jobs[0].t_ms >= wait_ms))
            run_batch(&w);
    }
    AM_LOGI("encoder worker: %lld jobs in %lld batches", (long long)w.n_done,
            (long long)w.n_batches);
done:
    am_link_destroy(&link);
    if (w.jobs)
        for (int i = 0; i < w.n_jobs; i++)
            job_clear(&w.jobs[i]);
    am_free(w.jobs);
    am_mod_set_destroy(&w.enc);
    am_backend_destroy(&w.be);
    return rc;
}
