/* bench/bench_coordinator.c - coordinator overhead: messages per second through the broker and the
 * latency it adds per hop, with a real encoder worker doing minimal work.
 *
 * usage: bench_coordinator MODEL_DIR IMU_FILE [N] [CONCURRENCY] [curve]
 * Runs the coordinator (coordinator.c, the same loop as anymal-coordinator) and
 * an IMU encoder worker (workers/encoder_worker.c, 1 thread) in this process on
 * threads, over loopback TCP, and a client that sends N ENCODE requests of
 * IMU_FILE (one 5 s window: the smallest real job). Pass 1: one request at a
 * time: round-trip latency minus the worker's reported compute time = the
 * cost of 4 hops (client -> coordinator -> worker -> coordinator -> client).
 * Pass 2: CONCURRENCY in flight: requests/s and messages/s through the broker
 * (4 messages per request). Prints one JSON line. With `curve`, every link is
 * CURVE (proto/curve.h: keys made in a temporary directory, the coordinator's
 * ZAP handler and per-message role checks): the cost of encryption per hop.
 */
#include "coordinator/client.h"
#include "coordinator/coordinator.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/file.h"
#include "proto/curve.h"
#include "workers/encoder_worker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static void *coord_main(void *c) {
    am_coord_run(c);
    return NULL;
}
static volatile sig_atomic_t worker_stop;
static am_encoder_worker_opts wopts;
static void *worker_main(void *arg) {
    (void)arg;
    if (am_encoder_worker_run(&wopts, &worker_stop)) fprintf(stderr, "worker: %s\n", am_err_msg());
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_coordinator MODEL_DIR IMU_FILE [N] [CONCURRENCY] [curve]\n");
        return 2;
    }
    int n = argc > 3 ? atoi(argv[3]) : 2000, conc = argc > 4 ? atoi(argv[4]) : 64;
    int curve = argc > 5 && !strcmp(argv[5], "curve");
    char kd[] = "/tmp/bench_coordinator_keys.XXXXXX", k[5][600];
    if (curve) {
        const char *names[] = {"coordinator", "worker", "client"};
        if (!mkdtemp(kd)) return perror("mkdtemp"), 1;
        for (int i = 0; i < 3; i++) {
            snprintf(k[i], sizeof k[i], "%s/%s", kd, names[i]);
            if (am_curve_keygen(k[i])) return fprintf(stderr, "%s\n", am_err_msg()), 1;
            strcat(k[i], ".key");
        }
        snprintf(k[3], sizeof k[3], "%s/worker.pub", kd);
        snprintf(k[4], sizeof k[4], "%s/client.pub", kd);
    }
    void *data = NULL;
    size_t len = 0;
    if (am_read_file_limited(argv[2], 1 << 24, &data, &len))
        return fprintf(stderr, "%s\n", am_err_msg()), 1;
    am_coord *c = NULL;
    char server_pub[600];
    snprintf(server_pub, sizeof server_pub, "%s/coordinator.pub", kd);
    am_coord_opts co = {.endpoint = "tcp://127.0.0.1:*",
                        .max_requests = 4096,
                        .curve_secret = curve ? k[0] : NULL,
                        .worker_keys = curve ? k[3] : NULL,
                        .client_keys = curve ? k[4] : NULL};
    if (am_coord_new(&co, &c)) return fprintf(stderr, "%s\n", am_err_msg()), 1;
    pthread_t tc, tw;
    pthread_create(&tc, NULL, coord_main, c);
    wopts = (am_encoder_worker_opts){.link = {.endpoint = am_coord_endpoint(c),
                                              .curve_key = curve ? k[1] : NULL,
                                              .coordinator_key = curve ? server_pub : NULL},
                                     .model_dir = argv[1],
                                     .modalities = 1u << AM_MOD_IMU,
                                     .n_threads = 1,
                                     .batch_wait_ms = 0,
                                     .max_batch = 16,
                                     .capacity = 256};
    pthread_create(&tw, NULL, worker_main, NULL);
    am_client *cl = NULL;
    am_client_opts clo = {.endpoint = am_coord_endpoint(c),
                          .curve_key = curve ? k[2] : NULL,
                          .coordinator_key = curve ? server_pub : NULL};
    if (am_client_new_opts(&clo, &cl)) return fprintf(stderr, "%s\n", am_err_msg()), 1;
    am_client_part media = {.kind = AM_SEG_MEDIA, .modality = AM_MOD_IMU, .data = data, .len = len};
    double *lat = am_calloc((size_t)n, sizeof *lat), *over = am_calloc((size_t)n, sizeof *over);
    /* Warm up (and wait for the worker to register). */
    for (int i = 0; i < 50; i++) {
        uint64_t rid;
        am_client_event ev;
        am_client_encode(cl, &media, &rid);
        while (!am_client_next(cl, 5000, &ev)) {
            int fin = am_client_event_final(&ev);
            am_client_event_fini(&ev);
            if (fin) break;
        }
    }
    int n_lat = n < 1000 ? n : 1000;
    for (int i = 0; i < n_lat; i++) {
        uint64_t rid;
        am_client_event ev;
        double t0 = (double)am_now_us();
        am_client_encode(cl, &media, &rid);
        if (am_client_next(cl, 10000, &ev)) break;
        lat[i] = (double)am_now_us() - t0;
        over[i] = lat[i] - ev.msg.encode_us;
        am_client_event_fini(&ev);
    }
    qsort(lat, (size_t)n_lat, sizeof *lat, cmp_d);
    qsort(over, (size_t)n_lat, sizeof *over, cmp_d);
    am_coord_stats s0 = am_coord_get_stats(c);
    double t0 = (double)am_now_us();
    int sent = 0, done = 0;
    while (done < n) {
        while (sent < n && sent - done < conc) {
            uint64_t rid;
            am_client_encode(cl, &media, &rid);
            sent++;
        }
        am_client_event ev;
        if (am_client_next(cl, 10000, &ev)) break;
        done += am_client_event_final(&ev);
        am_client_event_fini(&ev);
    }
    double secs = ((double)am_now_us() - t0) / 1e6;
    am_coord_stats s1 = am_coord_get_stats(c);
    printf("{\"bench\": \"coordinator\", \"links\": \"%s\", "
           "\"worker\": \"imu encoder, 1 thread, tiny model\", "
           "\"serial_requests\": %d, "
           "\"rtt_us_p50\": %.1f, \"rtt_us_p99\": %.1f, \"overhead_us_per_hop_p50\": %.1f, "
           "\"overhead_us_per_hop_p99\": %.1f, \"concurrency\": %d, \"requests\": %d, "
           "\"requests_per_s\": %.0f, "
           "\"broker_msgs_per_s\": %.0f}\n",
           curve ? "curve" : "plain", n_lat, lat[n_lat / 2], lat[n_lat * 99 / 100],
           over[n_lat / 2] / 4, over[n_lat * 99 / 100] / 4, conc, done, done / secs,
           (double)((s1.msgs_in - s0.msgs_in) + (s1.msgs_out - s0.msgs_out)) / secs);
    am_client_destroy(&cl);
    worker_stop = 1;
    pthread_join(tw, NULL);
    am_coord_stop(c);
    pthread_join(tc, NULL);
    am_coord_destroy(&c);
    am_free(lat), am_free(over), am_free(data);
    if (curve) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf %s", kd);
        if (system(cmd)) fprintf(stderr, "bench_coordinator: could not remove %s\n", kd);
    }
    return 0;
}
