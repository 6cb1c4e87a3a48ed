/* bench/bench_e2e.c - end-to-end aggregate throughput through a running coordinator.
 *
 * usage: bench_e2e ENDPOINT --batch B --prompt-tokens N --gen-tokens M --vocab V
 *                  [--media IMAGE,AUDIO,IMU] [--timeout-ms T]
 *
 * The client side of bench/run_e2e.sh. Waits until the coordinator reports a
 * live shard group (HEALTH), sends one short warm-up request, then submits B
 * requests at once and collects their streams. Each prompt is the one
 * `anymal bench batch` builds (tools/batch_bench.c: BOS, then
 * 3 + ((i + 131 r) x 7919) mod (V - 3)), sent as token ids without another
 * BOS, with ignore_eos so that every request yields exactly M tokens: the
 * same work as the in-process benchmark. With --media, request r % 4 = 1, 2,
 * 3 carries the image, audio or IMU file between its prompt ids and 8 more
 * ids (r % 4 = 0 stays text only): a mix that keeps the encoders busy.
 * Prints one JSON line: tokens, wall time from the first submit to the last
 * final event, aggregate tokens/s, time to first token.
 */
#include "coordinator/client.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *d = n > 0 ? am_malloc((size_t)n) : NULL;
    if (d && fread(d, 1, (size_t)n, f) != (size_t)n) am_free(d), d = NULL;
    fclose(f);
    *len = d ? (size_t)n : 0;
    return d;
}

typedef struct {
    uint64_t rid;
    int64_t tokens;
    double t_first, t_end;
    int done, err;
} req;

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr,
                "usage: bench_e2e ENDPOINT --batch B --prompt-tokens N --gen-tokens M --vocab V "
                "[--media IMAGE,AUDIO,IMU] [--timeout-ms T]\n");
        return 2;
    }
    const char *ep = argv[1], *media = NULL;
    int B = 16, N = 64, M = 64, V = 0, timeout_ms = 600000;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--batch"))
            B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt-tokens"))
            N = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--gen-tokens"))
            M = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--vocab"))
            V = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--media"))
            media = argv[i + 1];
        else if (!strcmp(argv[i], "--timeout-ms"))
            timeout_ms = atoi(argv[i + 1]);
        else
            return fprintf(stderr, "bench_e2e: unknown option %s\n", argv[i]), 2;
    }
    if (B < 1 || N < 1 || M < 1 || V < 4)
        return fprintf(stderr, "bench_e2e: --batch, --prompt-tokens, --gen-tokens, --vocab\n"), 2;
    void *mdata[3] = {0};
    size_t mlen[3] = {0};
    if (media) {
        char buf[3][1024];
        if (sscanf(media, "%1023[^,],%1023[^,],%1023s", buf[0], buf[1], buf[2]) != 3)
            return fprintf(stderr, "bench_e2e: --media wants IMAGE,AUDIO,IMU\n"), 2;
        for (int k = 0; k < 3; k++)
            if (!(mdata[k] = read_all(buf[k], &mlen[k])))
                return fprintf(stderr, "bench_e2e: cannot read %s\n", buf[k]), 1;
    }
    am_client *c = NULL;
    if (am_client_new(ep, &c)) return fprintf(stderr, "bench_e2e: %s\n", am_err_msg()), 1;
    /* Wait for a shard group (and, with media, the encoders). */
    am_client_health h = {0};
    for (int i = 0; i < 600; i++) {
        if (!am_client_health_get(c, NULL, 1000, &h) && h.healthy && (!media || h.encoders > 0))
            break;
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    if (!h.healthy) return fprintf(stderr, "bench_e2e: no shard group registered\n"), 1;

    int32_t *prompts = am_malloc((size_t)B * (size_t)N * sizeof(int32_t)), tail[8];
    for (int r = 0; r < B; r++) {
        int32_t *p = prompts + (size_t)r * N;
        p[0] = 1; /* AM_LLAMA_BOS */
        for (int i = 1; i < N; i++)
            p[i] = (int32_t)(3 + ((int64_t)(i + 131 * r) * 7919) % (V - 3));
    }
    for (int i = 0; i < 8; i++)
        tail[i] = 3 + (i * 104729) % (V - 3);
    am_client_params prm = {.max_tokens = (uint32_t)M,
                            .no_bos = 1,
                            .ignore_eos = 1,
                            .deadline_ms = (uint32_t)timeout_ms};

    /* Warm-up: one short request (pages the weights in on every rank). */
    am_client_part wp = {.kind = AM_SEG_IDS, .ids = prompts, .n_ids = (uint32_t)(N < 8 ? N : 8)};
    am_client_params wprm = prm;
    wprm.max_tokens = 2;
    am_client_result wr;
    if (am_client_generate(c, &wp, 1, &wprm, NULL, NULL, timeout_ms, &wr))
        return fprintf(stderr, "bench_e2e: warm-up: %s\n", am_err_msg()), 1;
    am_client_result_fini(&wr);

    req *q = am_calloc((size_t)B, sizeof *q);
    const double t0 = am_now_s();
    for (int r = 0; r < B; r++) {
        am_client_part parts[3] = {
            {.kind = AM_SEG_IDS, .ids = prompts + (size_t)r * N, .n_ids = (uint32_t)N}};
        int np = 1, k = r % 4 - 1;
        if (media && k >= 0) {
            parts[np++] = (am_client_part){.kind = AM_SEG_MEDIA,
                                           .modality = (uint8_t)(k == 0   ? AM_MOD_IMAGE
                                                                 : k == 1 ? AM_MOD_AUDIO
                                                                          : AM_MOD_IMU),
                                           .data = mdata[k],
                                           .len = mlen[k]};
            parts[np++] = (am_client_part){.kind = AM_SEG_IDS, .ids = tail, .n_ids = 8};
        }
        if (am_client_submit(c, parts, np, &prm, &q[r].rid))
            return fprintf(stderr, "bench_e2e: %s\n", am_err_msg()), 1;
    }
    int done = 0, errors = 0;
    int64_t tokens = 0;
    while (done < B && am_now_s() - t0 < timeout_ms / 1000.0) {
        am_client_event ev;
        if (am_client_next(c, 1000, &ev)) continue;
        int r = (int)(ev.rid - q[0].rid);
        if (r >= 0 && r < B && q[r].rid == ev.rid && !q[r].done) {
            if (ev.cmd == AM_CMD_TOKEN && ev.msg.n_ids) {
                if (!q[r].tokens) q[r].t_first = am_now_s();
                q[r].tokens += ev.msg.n_ids;
            }
            if (ev.cmd == AM_CMD_ERROR) {
                fprintf(stderr, "bench_e2e: request %d: %d %s\n", r, ev.msg.code, ev.msg.message);
                q[r].err = 1, errors++;
            }
            if (am_client_event_final(&ev)) q[r].done = 1, q[r].t_end = am_now_s(), done++;
        }
        am_client_event_fini(&ev);
    }
    const double t_end = am_now_s();
    double *ttft = am_malloc((size_t)B * sizeof *ttft);
    int n_ttft = 0;
    for (int r = 0; r < B; r++) {
        tokens += q[r].tokens;
        if (q[r].tokens) ttft[n_ttft++] = q[r].t_first - t0;
    }
    qsort(ttft, (size_t)n_ttft, sizeof *ttft, cmp_d);
    printf("{\"bench\":\"e2e\",\"batch\":%d,\"prompt_tokens\":%d,\"gen_tokens\":%d,\"media\":%s,"
           "\"done\":%d,"
           "\"errors\":%d,\"tokens\":%lld,\"total_s\":%.3f,\"agg_tok_per_s\":%.2f,\"ttft_ms_p50\":%"
           ".1f,"
           "\"ttft_ms_max\":%.1f}\n",
           B, N, M, media ? "true" : "false", done, errors, (long long)tokens, t_end - t0,
           tokens / (t_end - t0), n_ttft ? 1e3 * ttft[n_ttft / 2] : 0.0,
           n_ttft ? 1e3 * ttft[n_ttft - 1] : 0.0);
    am_client_destroy(&c);
    for (int k = 0; k < 3; k++)
        am_free(mdata[k]);
    am_free(prompts), am_free(q), am_free(ttft);
    return done == B && !errors && tokens == (int64_t)B * M ? 0 : 1;
}
