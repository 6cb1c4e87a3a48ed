/* tools/cmd_client.c - `anymal client`: submit a multimodal request to a coordinator, stream the
 * answer.
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

#define CMD              "client"
#define CLIENT_MAX_PARTS 64
#define CLIENT_MAX_IDS   4096

static void help(void) {
    printf(
        "usage: anymal client [--coordinator EP] PROMPT-PARTS... [--max-tokens N] [--temperature "
        "T]\n"
        "                     [--top-k K] [--top-p P] [--seed S] [--stop STR]... [--deadline-ms N] "
        "[--no-bos]\n"
        "                     [--model NAME] [--print-ids] [--timeout-ms N] [--repeat N "
        "--concurrency C]\n"
        "                     [--ignore-eos]\n"
        "       anymal client [--coordinator EP] --health [--model NAME]\n"
        "       (either with [--curve-key FILE --coordinator-key FILE])\n\n"
        "Sends one request to an anymal coordinator and streams the answer to stdout.\n"
        "PROMPT-PARTS, in order: --text STR, --prompt-ids 1,2,3, --image FILE, --video FILE "
        "[--frames F\n"
        "before it], --audio FILE, --imu FILE (media are encoded by the cluster's encoder "
        "workers).\n"
        "  --coordinator  default tcp://127.0.0.1:5555\n"
        "  --curve-key FILE --coordinator-key FILE  this client's CURVE secret key (anymal "
        "keygen) and\n"
        "                 the coordinator's public key: needed when the coordinator has keys\n"
        "  --max-tokens   default 32; greedy unless --temperature > 0\n"
        "  --repeat N --concurrency C  send it N times, C in flight; print a JSON throughput line\n"
        "  --ignore-eos   generate --max-tokens tokens past EOS (benchmarks)\n"
        "  --health       print the coordinator's health as JSON; exit status 1 when no live "
        "shard\n"
        "                 group serves the model (any model without --model)\n");
}

static int stream_piece(void *user, const char *text, size_t len, const int32_t *ids,
                        uint32_t n_ids) {
    const int print_ids = *(const int *)user;
    if (print_ids)
        for (uint32_t i = 0; i < n_ids; i++)
            printf("%s%d", "", ids[i]), putchar(' ');
    else
        fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_repeat(am_client *c, const am_client_part *parts, int n_parts,
                      const am_client_params *p, int n, int conc, int timeout_ms) {
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
                fprintf(stderr, "anymal client: request %llu: %d %s\n", (unsigned long long)ev.rid,
                        ev.msg.code, ev.msg.message ? ev.msg.message : "");
            }
            done++;
        }
        if (ev.cmd == AM_CMD_TOKEN) tokens += ev.msg.n_ids;
        am_client_event_fini(&ev);
    }
out:;
    double secs = ((double)am_now_ms() - t0) / 1000.0;
    qsort(lat, (size_t)done, sizeof *lat, cmp_d);
    printf("{\"requests\": %d, \"failed\": %d, \"concurrency\": %d, \"seconds\": %.3f, "
           "\"requests_per_s\": %.2f, "
           "\"tokens\": %lld, \"tokens_per_s\": %.1f, \"latency_ms_p50\": %.1f, "
           "\"latency_ms_p99\": %.1f}\n",
           done, failed, conc, secs, done / (secs > 0 ? secs : 1), (long long)tokens,
           tokens / (secs > 0 ? secs : 1), done ? lat[done / 2] : 0.0,
           done ? lat[(done * 99) / 100 < done ? (done * 99) / 100 : done - 1] : 0.0);
    am_free(lat);
    am_free(t_sub);
    am_free(rids);
    if (rc) return am_cli_error(CMD, rc);
    return failed ? 1 : 0;
}

/* Everything the command line says. Parts point into argv, files[] and idbufs[]
 * (owned here, freed by opts_fini); params.stop points into stops[]. */
typedef struct client_opts {
    const char *endpoint, *curve_key, *coordinator_key;
    am_client_part parts[CLIENT_MAX_PARTS];
    void *files[CLIENT_MAX_PARTS];     /* media file contents, by part index */
    int32_t *idbufs[CLIENT_MAX_PARTS]; /* --prompt-ids arrays, by part index */
    const char *stops[AM_PROTO_MAX_STOP];
    int n_parts, print_ids, repeat, conc, timeout_ms, want_health;
    uint32_t frames; /* --frames for the videos that follow */
    am_client_params params;
} client_opts;

static void opts_fini(client_opts *o) {
    for (int i = 0; i < CLIENT_MAX_PARTS; i++)
        am_free(o->files[i]), am_free(o->idbufs[i]);
}

/* Takes one prompt part (--text, --prompt-ids or a media option). 0: taken,
 * -1: opt is not a part; else the exit status (message printed). */
static int parse_part(am_cli *cli, const char *opt, client_opts *o) {
    am_client_part *part = &o->parts[o->n_parts];
    if (!strcmp(opt, "--text")) {
        const char *t = am_cli_value(cli);
        if (!t) return AM_EXIT_USAGE;
        *part = (am_client_part){.kind = AM_SEG_TEXT, .text = t, .text_len = strlen(t)};
    } else if (!strcmp(opt, "--prompt-ids")) {
        const char *t = am_cli_value(cli);
        if (!t) return AM_EXIT_USAGE;
        int32_t *ids = NULL;
        int64_t n = 0;
        int status = am_cli_parse_ids(CMD, "--prompt-ids", t, CLIENT_MAX_IDS, &ids, &n);
        if (status) return status;
        o->idbufs[o->n_parts] = ids;
        *part = (am_client_part){.kind = AM_SEG_IDS, .ids = ids, .n_ids = (uint32_t)n};
    } else if (!strcmp(opt, "--image") || !strcmp(opt, "--video") || !strcmp(opt, "--audio") ||
               !strcmp(opt, "--imu")) {
        am_modality mod = AM_MOD_COUNT;
        am_modality_parse(opt + 2, &mod);
        const char *path = am_cli_value(cli);
        if (!path) return AM_EXIT_USAGE;
        size_t len;
        int rc =
            am_read_file_limited(path, AM_PROTO_MAX_PAYLOAD_BYTES, &o->files[o->n_parts], &len);
        if (rc) return am_cli_error(CMD, rc);
        *part = (am_client_part){.kind = AM_SEG_MEDIA,
                                 .modality = (uint8_t)mod,
                                 .data = o->files[o->n_parts],
                                 .len = len,
                                 .frames = o->frames};
    } else {
        return -1;
    }
    o->n_parts++;
    return 0;
}

/* The value of the current option into *out as the field's type: 0, or
 * AM_EXIT_USAGE (message printed by core/cli.c). */
static int opt_u32(am_cli *cli, int64_t min, int64_t max, uint32_t *out) {
    int64_t v;
    if (am_cli_int(cli, min, max, &v)) return AM_EXIT_USAGE;
    *out = (uint32_t)v;
    return 0;
}

static int opt_i32(am_cli *cli, int64_t min, int64_t max, int32_t *out) {
    uint32_t v;
    int rc = opt_u32(cli, min, max, &v);
    if (!rc) *out = (int32_t)v;
    return rc;
}

static int opt_f32(am_cli *cli, double min, double max, float *out) {
    double d;
    if (am_cli_float(cli, min, max, &d)) return AM_EXIT_USAGE;
    *out = (float)d;
    return 0;
}

/* Takes one option that is not a prompt part. 0: taken; else the exit status
 * (message printed). */
static int parse_setting(am_cli *cli, const char *opt, client_opts *o) {
    am_client_params *p = &o->params;
    if (!strcmp(opt, "--coordinator")) return (o->endpoint = am_cli_value(cli)) ? 0 : AM_EXIT_USAGE;
    if (!strcmp(opt, "--curve-key")) return (o->curve_key = am_cli_value(cli)) ? 0 : AM_EXIT_USAGE;
    if (!strcmp(opt, "--coordinator-key"))
        return (o->coordinator_key = am_cli_value(cli)) ? 0 : AM_EXIT_USAGE;
    if (!strcmp(opt, "--frames")) return opt_u32(cli, 1, AM_PROTO_MAX_FRAMES_PER_VIDEO, &o->frames);
    if (!strcmp(opt, "--max-tokens")) return opt_u32(cli, 1, AM_PROTO_MAX_TOKENS, &p->max_tokens);
    if (!strcmp(opt, "--temperature")) return opt_f32(cli, 0, 100, &p->temperature);
    if (!strcmp(opt, "--top-k")) return opt_i32(cli, 0, INT32_MAX, &p->top_k);
    if (!strcmp(opt, "--top-p")) return opt_f32(cli, 1e-6, 1, &p->top_p);
    if (!strcmp(opt, "--seed")) return am_cli_u64(cli, &p->seed) ? AM_EXIT_USAGE : 0;
    if (!strcmp(opt, "--stop")) {
        if (p->n_stop == AM_PROTO_MAX_STOP)
            return am_cli_fail(cli, "more than %d --stop strings", AM_PROTO_MAX_STOP);
        return (o->stops[p->n_stop++] = am_cli_value(cli)) ? 0 : AM_EXIT_USAGE;
    }
    if (!strcmp(opt, "--deadline-ms"))
        return opt_u32(cli, 1, AM_PROTO_MAX_DEADLINE_MS, &p->deadline_ms);
    if (!strcmp(opt, "--timeout-ms")) return opt_i32(cli, 1, 86400000, &o->timeout_ms);
    if (!strcmp(opt, "--model")) return (p->model = am_cli_value(cli)) ? 0 : AM_EXIT_USAGE;
    if (!strcmp(opt, "--repeat")) return opt_i32(cli, 1, 1000000, &o->repeat);
    if (!strcmp(opt, "--concurrency")) return opt_i32(cli, 1, 65535, &o->conc);
    int *flag = !strcmp(opt, "--no-bos")       ? &p->no_bos
                : !strcmp(opt, "--ignore-eos") ? &p->ignore_eos
                : !strcmp(opt, "--health")     ? &o->want_health
                : !strcmp(opt, "--print-ids")  ? &o->print_ids
                                               : NULL;
    if (!flag) return am_cli_fail(cli, "unknown option '%s'", opt);
    *flag = 1;
    return 0;
}

/* Parses the command line into o. 1: run the command; 0: stop with *status
 * (0 after --help, else a usage or file error, message printed). */
static int parse_opts(int argc, char **argv, client_opts *o, int *status) {
    am_cli cli;
    am_cli_init(&cli, CMD, argc, argv);
    const char *opt;
    *status = 0;
    while ((opt = am_cli_next(&cli))) {
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            help();
            return 0;
        }
        if (o->n_parts == CLIENT_MAX_PARTS) {
            *status = am_cli_fail(&cli, "more than %d prompt parts", CLIENT_MAX_PARTS);
            return 0;
        }
        int rc = parse_part(&cli, opt, o);
        if (rc < 0) rc = parse_setting(&cli, opt, o);
        if (rc) {
            *status = rc;
            return 0;
        }
    }
    if (!o->want_health && !o->n_parts) {
        *status =
            am_cli_fail(&cli, "the prompt is empty: give --text, --prompt-ids or a media file");
        return 0;
    }
    o->params.stop = o->stops;
    return 1;
}

/* --health: one HEALTH exchange, printed as JSON; exit status 1 when unhealthy. */
static int run_health(am_client *c, const client_opts *o) {
    am_client_health h;
    int timeout_ms = o->timeout_ms < 5000 ? o->timeout_ms : 5000;
    int rc = am_client_health_get(c, o->params.model, timeout_ms, &h);
    if (rc) return am_cli_error(CMD, rc);
    printf("{\"healthy\": %s, \"shard_groups\": %u, \"encoders\": %u, \"active_requests\": %u}\n",
           h.healthy ? "true" : "false", h.shards, h.encoders, h.active);
    return h.healthy ? 0 : 1;
}

/* One request, its answer streamed to stdout and a summary line to stderr. */
static int run_once(am_client *c, client_opts *o) {
    am_client_result res;
    int64_t t0 = am_now_ms();
    int rc = am_client_generate(c, o->parts, o->n_parts, &o->params, stream_piece, &o->print_ids,
                                o->timeout_ms, &res);
    printf("\n");
    if (rc) return am_cli_error(CMD, rc);
    fprintf(stderr,
            "anymal client: finish=%s prompt_tokens=%u completion_tokens=%u latency_ms=%lld\n",
            am_fin_name(res.finish), res.prompt_tokens, res.completion_tokens,
            (long long)(am_now_ms() - t0));
    am_client_result_fini(&res);
    return 0;
}

int am_cmd_client(int argc, char **argv) {
    client_opts o = {.endpoint = "tcp://127.0.0.1:5555",
                     .conc = 1,
                     .timeout_ms = 600000,
                     .params = {.max_tokens = 32}};
    int status;
    am_client *c = NULL;
    if (parse_opts(argc, argv, &o, &status)) {
        am_client_opts co = {
            .endpoint = o.endpoint, .curve_key = o.curve_key, .coordinator_key = o.coordinator_key};
        int rc = am_client_new_opts(&co, &c);
        if (rc)
            status = am_cli_error(CMD, rc);
        else if (o.want_health)
            status = run_health(c, &o);
        else if (o.repeat)
            status = run_repeat(c, o.parts, o.n_parts, &o.params, o.repeat, o.conc, o.timeout_ms);
        else
            status = run_once(c, &o);
    }
    am_client_destroy(&c);
    opts_fini(&o);
    return status;
}
