/* workers/encoder_worker.h - the encoder worker: ENCODE jobs in, EMBED rows out.
 *
 * Loads the encoders of an AnyMAL model directory for the modalities it
 * serves (image and video share the vision tower; audio; imu), registers
 * with the coordinator (workers/worker_link.h: heartbeats and reconnects on
 * their own thread) and serves ENCODE jobs. Jobs are batched across
 * requests: a batch is run when max_batch jobs are waiting or the oldest has
 * waited batch_wait_ms, and all its items of one encoder go through one
 * batched call (results equal one at a time, encoders/README.md). Each job
 * gets an EMBED (n_rows x out_dim f32 rows, sent without copying) or an
 * ERROR naming what was wrong with its media (400; the coordinator does not
 * retry those). The worker admits at most `capacity` jobs at once (it says
 * so in READY; the coordinator never sends more).
 */
#ifndef AM_ENCODER_WORKER_H
#define AM_ENCODER_WORKER_H

#include "workers/worker_link.h"

#include <signal.h>
#include <stdint.h>

#define AM_ENCODER_MAX_BATCH_DEFAULT     8
#define AM_ENCODER_BATCH_WAIT_MS_DEFAULT 2
#define AM_ENCODER_MAX_CAPACITY          1024

typedef struct am_encoder_worker_opts {
    /* The link to the coordinator: its endpoint, heartbeats, reconnects, keys and stall
     * limit (worker_link.h; 0/NULL = defaults, a plain link). The worker fills its READY. */
    am_link_opts link;
    const char *model_dir;  /* AnyMAL model directory */
    const char *name;       /* worker name in logs and READY (NULL: "encoder-<pid>") */
    const char *model_name; /* NULL: the directory's base name */
    uint32_t modalities;    /* bit per am_modality */
    const char
        *device;   /* compute backend: "cpu", "cuda", "cuda:N" (NULL: cpu; core/backend_open.h) */
    int n_threads; /* compute threads (0: online CPUs) */
    int max_batch; /* 0 = AM_ENCODER_MAX_BATCH_DEFAULT */
    int batch_wait_ms; /* < 0 = AM_ENCODER_BATCH_WAIT_MS_DEFAULT */
    int capacity;      /* 0 = 2 * max_batch */
    int drain_ms;      /* *stop == 1: finish what is in flight for at most this (0 = default) */
    int64_t
        max_pixels; /* images over this are refused (400); 0 = AM_IMAGE_SERVE_MAX_PIXELS_DEFAULT */
} am_encoder_worker_opts;

/* Loads the models and serves. *stop == 1 drains (worker_link.h am_drain_poll:
 * nothing new, what is in flight finishes), *stop >= 2 stops at once; either
 * way it says DISCONNECT and returns 0. Or returns a load error (message names
 * the file) before serving. */
int am_encoder_worker_run(const am_encoder_worker_opts *o, volatile sig_atomic_t *stop);

#endif
