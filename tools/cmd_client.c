/* tools/cmd_client.c - `anymal client`: submit a multimodal request to a coordinator, stream the answer.
 *
 * The prompt is the --text, --prompt-ids and media options in the order given
 * (e.g. --text "Describe" --image cat.jpg --text "briefly."). The answer is
 * streamed to stdout as it arrives; a summary (finish reason, token counts,
 * latency) goes to stderr. --repeat N --concurrency C sends the same request N
 * times with C in flight and prints one JSON throughput line instead.
 */
#include "coordinator/client.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/file.h"
#include "tools/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CMD "client"
#define CLIENT_MAX_PARTS 64
#define CLIENT_MAX_IDS 4096

static void help(void) {
    printf("usage: anymal client [--coordinator EP] PROMPT-PARTS... [--max-tokens N] [--temperature T]\n"
           "                     [--top-k K] [--top-p P] [--seed S] [--stop STR]... [--deadline-ms N] [--no-bos]\n"
           "                     [--model NAME] [--print-ids] [--timeout-ms N] [--repeat N --concurrency C]\n"
           "                     [--ignore-eos]\n"
           "       anymal client [--coordinator EP] --health [--model NAME]\n\n"
           "Sends one request to an anymal coordinator and streams the answer to stdout.\n"
           "PROMPT-PARTS, in order: --text STR, --prompt-ids 1,2,3, --image FILE, --video FILE [--frames F\n"
           "before it], --audio FILE, --imu FILE (media are encoded by the cluster's encoder workers).\n"
           "  --coordinator  default tcp://127.0.0.1:5555\n"
           "  --max-tokens   default 32; greedy unless --temperature > 0\n"
           "  --repeat N --concurrency C  send it N times, C in flight; print a JSON throughput line\n"
           "  --ignore-eos   generate --max-tokens tokens past EOS (benchmarks)\n"
           "  --health       print the coordinator's health as JSON; exit status 1 when no live shard\n"
           "                 group serves the model (any model without --model)\n");
}

static int stream_piece(void *user, const char *text, size_t len, const int32_t *ids, uint32_t n_ids) {
    const int print_ids = *(const int *)user;
    if (print_ids)
        for (uint32_t i = 0; i < n_ids; i++) printf("%s%d", "", ids[i]), putchar(' ');
    else
        fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_repeat(am_client *c, const am_client_part *parts, int n_parts, const am_client_params *p, int n,
                      int conc, int timeout_ms) {
    double *lat = am_calloc((size_t)n, sizeof *lat), *t_sub = am_calloc((size_t)n, sizeof *t_sub);
    uint64_t *rids = am_calloc((size_t)n, sizeof *rids);
    if (!lat || !t_sub || !rids) return am_cli_error(CMD, AM_ENOMEM);
    int sent = 0, done = 0, failed = 0, rc = 0;
    int64_t tokens = 0;
    double t0 = (double)am_now_ms();
    while (done < n) {
        while (sent < n && sent - done < conc) {
            if ((rc = am_client_submit(c, parts, n_parts, p, &rids[sent]))) goto out;
            t_sub[sent++] = (double)am_now_ms();
        }
        am_client_event ev;
        if ((rc = am_client_next(c, timeout_ms, &ev))) goto out;
        if (am_client_event_final(&ev)) {
            int k = -1;
            for (int i = 0; i < sent; i++)
                if (rids[i] == ev.rid) k = i;
            if (k >= 0) lat[done] = (double)am_now_ms() - t_sub[k];
            if (ev.cmd != AM_CMD_TOKEN) {
                failed++;
                fprintf(stderr, "anymal client: request %llu: %d %s\n", (unsigned long long)ev.rid, ev.msg.code,
                        ev.msg.message ? ev.msg.message : "");
            }
            done++;
        }
        if (ev.cmd == AM_CMD_TOKEN) tokens += ev.msg.n_ids;
        am_client_event_fini(&ev);
    }
out:;
    double secs = ((double)am_now_ms() - t0) / 1000.0;
    qsort(lat, (size_t)done, sizeof *lat, cmp_d);
    printf("{\"requests\": %d, \"failed\": %d, \"concurrency\": %d, \"seconds\": %.3f, \"requests_per_s\": %.2f, "
           "\"tokens\": %lld, \"tokens_per_s\": %.1f, \"latency_ms_p50\": %.1f, \"latency_ms_p99\": %.1f}\n",
           done, failed, conc, secs, done / (secs > 0 ? secs : 1), (long long)tokens, tokens / (secs > 0 ? secs : 1),
           done ? lat[done / 2] : 0.0, done ? lat[(done * 99) / 100 < done ? (done * 99) / 100 : done - 1] : 0.0);
    am_free(lat);
    am_free(t_sub);
    am_free(rids);
    if (rc) return am_cli_error(CMD, rc);
    return failed ? 1 : 0;
}

int am_cmd_client(int argc, char **argv) {
    am_cli cli;
    am_cli_init(&cli, CMD, argc, argv);
    const char *endpoint = "tcp://127.0.0.1:5555", *opt;
    am_client_part parts[CLIENT_MAX_PARTS];
    void *files[CLIENT_MAX_PARTS] = {0};
    int32_t *idbufs[CLIENT_MAX_PARTS] = {0};
    const char *stops[AM_PROTO_MAX_STOP];
    int n_parts = 0, print_ids = 0, repeat = 0, conc = 1, status = 0, timeout_ms = 600000, want_health = 0;
    uint32_t frames = 0;
    am_client_params p = {.max_tokens = 32};
    am_client *c = NULL;
    while ((opt = am_cli_next(&cli))) {
        int64_t v;
        double d;
        am_modality mod = AM_MOD_COUNT;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            help();
            goto out;
        }
        if (n_parts == CLIENT_MAX_PARTS) {
            status = am_cli_fail(&cli, "more than %d prompt parts", CLIENT_MAX_PARTS);
            goto out;
        }
        if (!strcmp(opt, "--coordinator")) {
            if (!(endpoint = am_cli_value(&cli))) goto usage;
        } else if (!strcmp(opt, "--text")) {
            const char *t = am_cli_value(&cli);
            if (!t) goto usage;
            parts[n_parts++] = (am_client_part){.kind = AM_SEG_TEXT, .text = t, .text_len = strlen(t)};
        } else if (!strcmp(opt, "--prompt-ids")) {
            const char *t = am_cli_value(&cli);
            if (!t) goto usage;
            int32_t *ids = NULL;
            int64_t n = 0;
            if ((status = am_cli_parse_ids(CMD, "--prompt-ids", t, CLIENT_MAX_IDS, &ids, &n)) != 0) goto out;
            idbufs[n_parts] = ids;
            parts[n_parts++] = (am_client_part){.kind = AM_SEG_IDS, .ids = ids, .n_ids = (uint32_t)n};
        } else if (!strcmp(opt, "--image") || !strcmp(opt, "--video") || !strcmp(opt, "--audio") ||
                   !strcmp(opt, "--imu")) {
            am_modality_parse(opt + 2, &mod);
            const char *path = am_cli_value(&cli);
            if (!path) goto usage;
            size_t len;
            int rc = am_read_file_limited(path, AM_PROTO_MAX_PAYLOAD_BYTES, &files[n_parts], &len);
            if (rc) {
                status = am_cli_error(CMD, rc);
                goto out;
            }
            parts[n_parts] = (am_client_part){.kind = AM_SEG_MEDIA, .modality = (uint8_t)mod,
                                              .data = files[n_parts], .len = len, .frames = frames};
            n_parts++;
        } else if (!strcmp(opt, "--frames")) {
            if (am_cli_int(&cli, 1, AM_PROTO_MAX_FRAMES_PER_VIDEO, &v)) goto usage;
            frames = (uint32_t)v;
        } else if (!strcmp(opt, "--max-tokens")) {
            if (am_cli_int(&cli, 1, AM_PROTO_MAX_TOKENS, &v)) goto usage;
            p.max_tokens = (uint32_t)v;
        } else if (!strcmp(opt, "--temperature")) {
            if (am_cli_float(&cli, 0, 100, &d)) goto usage;
            p.temperature = (float)d;
        } else if (!strcmp(opt, "--top-k")) {
            if (am_cli_int(&cli, 0, INT32_MAX, &v)) goto usage;
            p.top_k = (int32_t)v;
        } else if (!strcmp(opt, "--top-p")) {
            if (am_cli_float(&cli, 1e-6, 1, &d)) goto usage;
            p.top_p = (float)d;
        } else if (!strcmp(opt, "--seed")) {
            if (am_cli_u64(&cli, &p.seed)) goto usage;
        } else if (!strcmp(opt, "--stop")) {
            if (p.n_stop == AM_PROTO_MAX_STOP) {
                status = am_cli_fail(&cli, "more than %d --stop strings", AM_PROTO_MAX_STOP);
                goto out;
            }
            if (!(stops[p.n_stop++] = am_cli_value(&cli))) goto usage;
        } else if (!strcmp(opt, "--deadline-ms")) {
            if (am_cli_int(&cli, 1, AM_PROTO_MAX_DEADLINE_MS, &v)) goto usage;
            p.deadline_ms = (uint32_t)v;
        } else if (!strcmp(opt, "--timeout-ms")) {
            if (am_cli_int(&cli, 1, 86400000, &v)) goto usage;
            timeout_ms = (int)v;
        } else if (!strcmp(opt, "--no-bos")) {
            p.no_bos = 1;
        } else if (!strcmp(opt, "--ignore-eos")) {
            p.ignore_eos = 1;
        } else if (!strcmp(opt, "--health")) {
            want_health = 1;
        } else if (!strcmp(opt, "--model")) {
            if (!(p.model = am_cli_value(&cli))) goto usage;
        } else if (!strcmp(opt, "--print-ids")) {
            print_ids = 1;
        } else if (!strcmp(opt, "--repeat")) {
            if (am_cli_int(&cli, 1, 1000000, &v)) goto usage;
            repeat = (int)v;
        } else if (!strcmp(opt, "--concurrency")) {
            if (am_cli_int(&cli, 1, 65535, &v)) goto usage;
            conc = (int)v;
        } else {
            status = am_cli_fail(&cli, "unknown option '%s'", opt);
            goto out;
        }
    }
    if (want_health) {
        am_client_health h;
        int rc = am_client_new(endpoint, &c);
        if (!rc) rc = am_client_health_get(c, p.model, timeout_ms < 5000 ? timeout_ms : 5000, &h);
        if (rc) {
            status = am_cli_error(CMD, rc);
            goto out;
        }
        printf("{\"healthy\": %s, \"shard_groups\": %u, \"encoders\": %u, \"active_requests\": %u}\n",
               h.healthy ? "true" : "false", h.shards, h.encoders, h.active);
        status = h.healthy ? 0 : 1;
        goto out;
    }
    if (!n_parts) {
        status = am_cli_fail(&cli, "the prompt is empty: give --text, --prompt-ids or a media file");
        goto out;
    }
    p.stop = stops;
    int rc = am_client_new(endpoint, &c);
    if (rc) {
        status = am_cli_error(CMD, rc);
        goto out;
    }
    if (repeat) {
        status = run_repeat(c, parts, n_parts, &p, repeat, conc, timeout_ms);
        goto out;
    }
    am_client_result res;
    int64_t t0 = am_now_ms();
    rc = am_client_generate(c, parts, n_parts, &p, stream_piece, &print_ids, timeout_ms, &res);
    if (rc) {
        printf("\n");
        status = am_cli_error(CMD, rc);
        goto out;
    }
    printf("\n");
    fprintf(stderr, "anymal client: finish=%s prompt_tokens=%u completion_tokens=%u latency_ms=%lld\n",
            am_fin_name(res.finish), res.prompt_tokens, res.completion_tokens, (long long)(am_now_ms() - t0));
    am_client_result_fini(&res);
    goto out;
usage:
    status = AM_EXIT_USAGE;
out:
    am_client_destroy(&c);
    for (int i = 0; i < CLIENT_MAX_PARTS; i++) am_free(files[i]), am_free(idbufs[i]);
    return status;
}
