/* tools/cmd_batch.c - `anymal batch`: an OpenAI Batch JSONL file through the cluster,
 * results written as they finish, resumable exactly once (docs/batch.md).
 *
 * Two passes over the input, both streamed: the first (tools/batch_input.c) hashes it,
 * counts its lines and indexes the custom_ids; the journal (tools/batch_journal.c) then
 * says which lines are done already. The second pass keeps at most --concurrency requests
 * in flight on one client socket: each line is parsed (api/openai.h), its media read and
 * decoded, submitted, and its media freed at once (ZeroMQ has copied them); a retry reads
 * the line again from the input at its offset instead of keeping anything.
 *
 * A request that got no answer is sent again: after ERROR 503 (its shard group died),
 * 429 (overloaded) or 408 (its deadline passed while no group was there), with a backoff;
 * when the coordinator says it holds no request at all while ours wait (it restarted and
 * lost them: a HEALTH probe, sent when the window has been silent for --probe-ms); and
 * after --request-timeout-ms of silence (cancelled first). Each resend is counted.
 * Failures that say something about the request (400, 404, 413, ...) are its answer: an
 * error line.
 */
#include "api/openai.h"
#include "coordinator/client.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "tools/batch_input.h"
#include "tools/batch_journal.h"
#include "tools/cli.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CMD                       "batch"
#define BATCH_MAX_CONCURRENCY     4096
#define BATCH_DEFAULT_MAX_LINE    ((size_t)64 << 20)
#define BATCH_RETRY_BASE_MS       100
#define BATCH_RETRY_MAX_MS        5000
#define BATCH_POLL_MS             100
#define BATCH_HIST_BUCKETS        2048 /* latency histogram: 1% steps from 0.1 ms */
#define BATCH_HIST_MIN_MS         0.1
#define BATCH_HIST_RATIO          1.01
#define BATCH_HEALTH_WAIT_STEP_MS 250

static void help(void) {
    printf(
        "usage: anymal batch --input REQUESTS.jsonl --output RESULTS.jsonl [--errors "
        "ERRORS.jsonl]\n"
        "                    [--coordinator EP] [--concurrency N] [--media-root DIR]\n"
        "                    [--max-tokens-limit N] [--max-media-bytes N] [--max-attempts N]\n"
        "                    [--probe-ms N] [--request-timeout-ms N] [--sync-ms N] [--progress-s "
        "N]\n"
        "                    [--max-line-bytes N] [--wait-s N] [--curve-key FILE --coordinator-key "
        "FILE]\n\n"
        "Runs an OpenAI Batch file (one {\"custom_id\", \"method\": \"POST\", \"url\":\n"
        "\"/v1/chat/completions\" or \"/v1/completions\", \"body\"} per line) through the "
        "cluster.\n"
        "Results are written as they finish, one line each; failed requests get an error line\n"
        "(in --errors when given). Killed at any point, the same command finishes the job:\n"
        "every custom_id ends up exactly once (docs/batch.md).\n"
        "  --coordinator      default tcp://127.0.0.1:5555\n"
        "  --curve-key, --coordinator-key  this client's CURVE secret key and the coordinator's\n"
        "                     public key, for a coordinator with keys (docs/security.md)\n"
        "  --concurrency      requests in flight (default 64)\n"
        "  --media-root       where file paths and file:// URLs of media may point (else refused)\n"
        "  --max-tokens-limit a larger max_tokens is an error line (default %d)\n"
        "  --max-media-bytes  a larger media item is an error line (413); give the\n"
        "                     coordinator's --max-msg-bytes when it was lowered (default %zu)\n"
        "  --max-attempts     sends of one request before it fails (default 8)\n"
        "  --probe-ms         silence before asking the coordinator whether it lost our\n"
        "                     requests (default 2000)\n"
        "  --request-timeout-ms  silence before a request is cancelled and sent again\n"
        "                     (default 600000)\n"
        "  --sync-ms          fdatasync the results this often, in a thread (default 1000;\n"
        "                     0: after every line)\n"
        "  --progress-s       seconds between progress lines when stderr is not a terminal\n"
        "                     (default 5)\n"
        "  --wait-s           how long to wait for a live shard group at the start (default 120)\n"
        "Prints a JSON summary line at the end. Exit status: 0 every request succeeded, 1 some\n"
        "failed (or the job could not finish), 2 usage errors (also: an output of another job).\n",
        AM_PROTO_MAX_TOKENS, AM_PROTO_MAX_PAYLOAD_BYTES);
}

typedef struct batch_opts {
    const char *endpoint, *input, *output, *errors, *media_root, *curve_key, *coordinator_key;
    int conc, max_attempts, probe_ms, timeout_ms, sync_ms, progress_s, wait_s;
    uint32_t max_tokens_limit;
    size_t max_line, max_media;
} batch_opts;

/* ---- a log-bucket histogram: percentiles in bounded memory ---- */

typedef struct hist {
    uint64_t n[BATCH_HIST_BUCKETS], count;
} hist;

static void hist_add(hist *h, double ms) {
    int b =
        ms <= BATCH_HIST_MIN_MS ? 0 : (int)(log(ms / BATCH_HIST_MIN_MS) / log(BATCH_HIST_RATIO));
    if (b >= BATCH_HIST_BUCKETS) b = BATCH_HIST_BUCKETS - 1;
    h->n[b]++;
    h->count++;
}

static double hist_pct(const hist *h, double p) {
    if (!h->count) return 0;
    uint64_t want = (uint64_t)ceil(p * (double)h->count), seen = 0;
    if (!want) want = 1;
    for (int b = 0; b < BATCH_HIST_BUCKETS; b++)
        if ((seen += h->n[b]) >= want) return BATCH_HIST_MIN_MS * pow(BATCH_HIST_RATIO, b + 0.5);
    return 0;
}

/* ---- the window ---- */

typedef struct slot {
    int used, waiting; /* waiting: to be sent (again) at t_retry */
    uint64_t line, off, rid, seq;
    size_t len;
    int attempts;
    int64_t t_retry, t_submit, t_first, t_event;
    char *custom_id, *model;
    am_api_kind kind;
    char *text;
    size_t text_len, text_cap;
} slot;

typedef struct batch {
    batch_opts o;
    am_client *client;
    am_batch_reader in;
    am_batch_scan scan;
    am_batch_journal j;
    uint8_t *done;
    slot *slots;
    int n_used;
    uint64_t seq;
    const char **models; /* known to the cluster, for am_api_opts */
    int n_models;
    /* probe */
    uint64_t probe_rid, probe_seq;
    int64_t probe_ms_at;
    /* counts of this run */
    uint64_t sent, resent, lost_resent, ok, failed, skipped, out_tokens;
    int64_t t0;
    hist ttft, lat;
    am_batch_resume resume;
    int tty;
    int64_t last_progress;
    int eof;
    int fatal;
} batch;

static void slot_clear(slot *s) {
    am_free(s->custom_id);
    am_free(s->model);
    am_free(s->text);
    memset(s, 0, sizeof *s);
}

/* ---- writing lines ---- */

static int write_json(batch *b, int is_error, cJSON *o) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s) return am_err_set(AM_ENOMEM, "out of memory for a result line");
    int rc = am_batch_journal_append(&b->j, is_error, s, strlen(s));
    cJSON_free(s);
    return rc;
}

static void batch_req_id(char *buf, size_t cap, uint64_t line) {
    snprintf(buf, cap, "batch_req_%llu", (unsigned long long)line);
}

/* An error line: {"id", "custom_id", "response": null, "error": {"code", "message", "line",
 * "status", "param"}}. */
static int write_error(batch *b, uint64_t line, const char *custom_id, const am_api_error *e) {
    cJSON *o = cJSON_CreateObject(), *x = NULL;
    char id[48];
    batch_req_id(id, sizeof id, line);
    if (o && cJSON_AddStringToObject(o, "id", id) &&
        (custom_id ? cJSON_AddStringToObject(o, "custom_id", custom_id)
                   : cJSON_AddNullToObject(o, "custom_id")) &&
        cJSON_AddNullToObject(o, "response") && (x = cJSON_AddObjectToObject(o, "error"))) {
        cJSON_AddStringToObject(x, "code", am_api_error_code(e));
        cJSON_AddStringToObject(x, "message", e->message);
        cJSON_AddNumberToObject(x, "line", (double)line);
        cJSON_AddNumberToObject(x, "status", e->status);
        if (e->param[0]) cJSON_AddStringToObject(x, "param", e->param);
    }
    b->failed++;
    am_batch_done_set(b->done, line);
    return write_json(b, 1, o);
}

static int write_result(batch *b, slot *s, const am_msg *fin) {
    char id[48], rid[48];
    batch_req_id(id, sizeof id, s->line);
    snprintf(rid, sizeof rid, "req_%llu", (unsigned long long)s->line);
    am_api_result res = {.text = s->text,
                         .text_len = s->text_len,
                         .finish = fin->finish,
                         .prompt_tokens = fin->prompt_tokens,
                         .completion_tokens = fin->completion_tokens};
    /* created: the time the answer came; the body's id is the line's, so a rerun of the
     * same line gives the same id. */
    char cid[64];
    snprintf(cid, sizeof cid, "%s-%llu", s->kind == AM_API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)s->line);
    cJSON *body = am_api_response_obj(s->kind, cid, (int64_t)time(NULL), s->model, &res);
    cJSON *o = cJSON_CreateObject(), *resp = NULL;
    if (!body || !o || !cJSON_AddStringToObject(o, "id", id) ||
        !cJSON_AddStringToObject(o, "custom_id", s->custom_id) ||
        !(resp = cJSON_AddObjectToObject(o, "response")) ||
        !cJSON_AddNumberToObject(resp, "status_code", 200) ||
        !cJSON_AddStringToObject(resp, "request_id", rid) ||
        !cJSON_AddItemToObject(resp, "body", body) || !cJSON_AddNullToObject(o, "error")) {
        if (!resp || !cJSON_GetObjectItem(resp, "body")) cJSON_Delete(body);
        cJSON_Delete(o);
        return am_err_set(AM_ENOMEM, "out of memory for a result line");
    }
    b->ok++;
    b->out_tokens += fin->completion_tokens;
    am_batch_done_set(b->done, s->line);
    return write_json(b, 0, o);
}

/* ---- one input line -> a request ---- */

/* Parses the batch line; on a bad line writes its error line (0 returned, *req empty). */
static int parse_line(batch *b, uint64_t no, const char *s, size_t len, am_api_request *req,
                      char **custom_id, int *ok) {
    am_api_error e = {0};
    *ok = 0;
    *custom_id = NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "custom_id");
    const char *cid = cJSON_IsString(id) && id->valuestring[0] ? id->valuestring : NULL;
    uint64_t first = cid ? am_batch_scan_find(&b->scan, cid) : 0;
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(j, "method");
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(j, "url");
    am_api_kind kind;
    if (!j) {
        am_api_fail(&e, 400, "", "line %llu is not valid JSON (error near byte %lld)",
                    (unsigned long long)no, end ? (long long)(end - s) : -1LL);
    } else if (!cJSON_IsObject(j)) {
        am_api_fail(&e, 400, "", "line %llu is not a JSON object", (unsigned long long)no);
    } else if (!cid) {
        am_api_fail(&e, 400, "custom_id", "line %llu has no custom_id (a non-empty string)",
                    (unsigned long long)no);
    } else if (first != no) {
        am_api_fail(&e, 400, "custom_id", "duplicate custom_id \"%s\" (first on line %llu)", cid,
                    (unsigned long long)first);
        cid = NULL; /* the error line must not carry it: that custom_id is the first line's */
    } else if (method && (!cJSON_IsString(method) || strcmp(method->valuestring, "POST"))) {
        am_api_fail(&e, 400, "method", "method must be \"POST\"");
    } else if (!am_api_url_kind(cJSON_IsString(url) ? url->valuestring : NULL, &kind, &e)) {
        am_api_opts ao = {.media_root = b->o.media_root,
                          .models = b->models,
                          .n_models = b->n_models,
                          .max_tokens_limit = b->o.max_tokens_limit,
                          .max_media_bytes = b->o.max_media};
        const cJSON *body = cJSON_GetObjectItemCaseSensitive(j, "body");
        if (!am_api_parse_body(body, kind, &ao, req, &e)) {
            if (req->stream) {
                am_api_request_fini(req);
                am_api_fail(&e, 400, "body.stream", "stream is not supported in a batch");
            } else {
                *ok = 1;
            }
        } else if (e.param[0] && strncmp(e.param, "body", 4)) {
            char p[AM_API_MAX_PARAM_BYTES];
            snprintf(p, sizeof p, "body.%.150s", e.param);
            memcpy(e.param, p, sizeof p);
        }
    }
    int rc = 0;
    if (*ok && !(*custom_id = am_malloc(strlen(cid) + 1))) rc = AM_ENOMEM;
    if (*custom_id) strcpy(*custom_id, cid);
    if (!*ok) {
        char *keep = NULL;
        if (cid && (keep = am_malloc(strlen(cid) + 1))) strcpy(keep, cid);
        rc = write_error(b, no, keep, &e);
        am_free(keep);
    }
    cJSON_Delete(j);
    return rc;
}

static int64_t backoff_ms(int attempts) {
    int64_t d = BATCH_RETRY_BASE_MS << (attempts < 6 ? attempts : 6);
    return d < BATCH_RETRY_MAX_MS ? d : BATCH_RETRY_MAX_MS;
}

static int finish(batch *b, slot *s, const am_api_error *e, const am_msg *fin);

/* Sends the slot's request (read again from the input when it is a retry). */
static int submit(batch *b, slot *s, am_api_request *given) {
    am_api_request local, *req = given;
    int rc = 0;
    if (!req) {
        const char *line;
        char *cid = NULL;
        int ok;
        if ((rc = am_batch_reader_pread(&b->in, s->off, s->len, &line))) return rc;
        /* The line parsed before, so it parses again, unless a media file changed (then
         * parse_line has written its error line, and the slot is done). */
        rc = parse_line(b, s->line, line, s->len, &local, &cid, &ok);
        am_free(cid);
        if (rc || !ok) {
            slot_clear(s);
            b->n_used--;
            return rc;
        }
        req = &local;
    }
    s->attempts++;
    s->text_len = 0;
    s->t_submit = s->t_event = am_now_ms();
    s->t_first = 0;
    s->seq = ++b->seq;
    rc = am_client_submit(b->client, req->parts, req->n_parts, &req->params, &s->rid);
    if (rc == AM_EAGAIN) { /* at the socket's high-water mark: later */
        s->waiting = 1;
        s->t_retry = am_now_ms() + backoff_ms(1);
        s->attempts--;
        rc = 0;
    } else if (!rc) {
        s->waiting = 0;
        if (s->attempts == 1)
            b->sent++;
        else
            b->resent++;
    } else if (rc == AM_ERANGE || rc == AM_EINVAL) {
        /* A limit of the protocol that api/ did not check: this request's error line, not
         * the job's end. */
        am_api_error e;
        am_api_fail(&e, rc == AM_ERANGE ? 413 : 400, "", "%s", am_err_msg());
        rc = finish(b, s, &e, NULL);
    }
    if (!given) am_api_request_fini(&local);
    return rc;
}

/* Takes the next input line into a free slot; 0 when the input is exhausted. */
static int feed_one(batch *b, slot *s) {
    for (;;) {
        const char *line;
        size_t len, full;
        uint64_t off;
        int rc = am_batch_reader_next(&b->in, &line, &len, &off, &full);
        if (rc <= 0) {
            if (rc == 0) b->eof = 1;
            return rc;
        }
        const uint64_t no = b->in.line;
        if (line && strspn(line, " \t") == len) continue; /* blank */
        if (am_batch_done_get(b->done, no)) {
            b->skipped++;
            continue;
        }
        if (!line) {
            am_api_error e;
            am_api_fail(&e, 413, "", "line %llu has %zu bytes, over --max-line-bytes %zu",
                        (unsigned long long)no, full, b->o.max_line);
            return (rc = write_error(b, no, NULL, &e)) ? rc : 1;
        }
        am_api_request req;
        char *cid = NULL;
        int ok;
        if ((rc = parse_line(b, no, line, len, &req, &cid, &ok))) return rc;
        if (!ok) return 1;
        memset(s, 0, sizeof *s);
        s->used = 1;
        s->line = no;
        s->off = off;
        s->len = len;
        s->kind = req.kind;
        s->custom_id = cid;
        if ((s->model = am_malloc(strlen(req.model) + 1))) strcpy(s->model, req.model);
        b->n_used++;
        rc = s->model ? submit(b, s, &req) : AM_ENOMEM;
        am_api_request_fini(&req); /* its media too: the message holds a copy */
        return rc ? rc : 1;
    }
}

/* ---- events ---- */

static slot *slot_of(batch *b, uint64_t rid) {
    for (int i = 0; i < b->o.conc; i++)
        if (b->slots[i].used && !b->slots[i].waiting && b->slots[i].rid == rid) return &b->slots[i];
    return NULL;
}

static void retry_later(batch *b, slot *s) {
    s->waiting = 1;
    s->t_retry = am_now_ms() + backoff_ms(s->attempts);
    (void)b;
}

/* Ends the slot: with its result (fin, the final TOKEN) or, when fin is NULL, the error e. */
static int finish(batch *b, slot *s, const am_api_error *e, const am_msg *fin) {
    int rc;
    if (!fin) {
        rc = write_error(b, s->line, s->custom_id, e);
    } else {
        const double now = (double)am_now_ms();
        hist_add(&b->lat, now - (double)s->t_submit);
        hist_add(&b->ttft, (double)((s->t_first ? s->t_first : (int64_t)now) - s->t_submit));
        rc = write_result(b, s, fin);
    }
    slot_clear(s);
    b->n_used--;
    return rc;
}

/* Did a live shard group serve this model when the job started? */
static int model_served(const batch *b, const char *model) {
    for (int i = 0; model && model[0] && i < b->n_models; i++)
        if (!strcmp(b->models[i], model)) return 1;
    return 0;
}

static int on_event(batch *b, am_client_event *ev) {
    if (ev->cmd == AM_CMD_HEALTH) {
        if (ev->rid == b->probe_rid) {
            b->probe_rid = 0;
            /* The coordinator holds no request: ours that it got before the probe are lost
             * (it restarted). Requests are admitted in the order sent on this socket. */
            if (ev->msg.n_active == 0)
                for (int i = 0; i < b->o.conc; i++) {
                    slot *s = &b->slots[i];
                    if (s->used && !s->waiting && s->seq <= b->probe_seq) {
                        b->lost_resent++;
                        s->waiting = 1;
                        s->t_retry = 0;
                    }
                }
        }
        return 0;
    }
    slot *s = slot_of(b, ev->rid);
    if (!s) return 0; /* an old attempt's end, or a cancelled one */
    s->t_event = am_now_ms();
    const am_msg *m = &ev->msg;
    if (ev->cmd == AM_CMD_TOKEN) {
        if (!s->t_first && (m->n_ids || m->text_len)) s->t_first = s->t_event;
        if (m->text_len) {
            if (s->text_len + m->text_len + 1 > s->text_cap) {
                size_t cap = (s->text_len + m->text_len + 1) * 2;
                char *t = am_realloc(s->text, cap);
                if (!t) return am_err_set(AM_ENOMEM, "out of memory for an answer");
                s->text = t, s->text_cap = cap;
            }
            memcpy(s->text + s->text_len, m->text, m->text_len);
            s->text_len += m->text_len;
        }
        if (m->finish == AM_FIN_NONE) return 0;
        return finish(b, s, NULL, m);
    }
    if (ev->cmd == AM_CMD_ERROR || ev->cmd == AM_CMD_DISCONNECT) {
        const int code = ev->cmd == AM_CMD_ERROR ? m->code : AM_WERR_UNAVAILABLE;
        /* 404 for a model a group served when the job started: a restarted coordinator
         * that has not seen the group register again yet (it answers 404 for a model no
         * group registered with it). */
        const int retryable = code == AM_WERR_UNAVAILABLE || code == AM_WERR_OVERLOADED ||
                              code == AM_WERR_DEADLINE ||
                              (code == AM_WERR_NOT_FOUND && model_served(b, s->model));
        if (retryable && s->attempts < b->o.max_attempts) {
            retry_later(b, s);
            return 0;
        }
        am_api_error e;
        am_api_fail(&e, code ? code : 500, "", "%s%s",
                    m->message ? m->message : "the cluster failed the request",
                    retryable ? " (retries exhausted)" : "");
        return finish(b, s, &e, NULL);
    }
    return 0;
}

/* Resends what waits, probes the coordinator when the window is silent, times out. */
static int tend(batch *b) {
    const int64_t now = am_now_ms();
    int silent = 0;
    for (int i = 0; i < b->o.conc; i++) {
        slot *s = &b->slots[i];
        if (!s->used) continue;
        if (s->waiting && now >= s->t_retry) {
            if (s->attempts >= b->o.max_attempts) {
                am_api_error e;
                am_api_fail(&e, 503, "", "no answer after %d attempts", s->attempts);
                int rc = finish(b, s, &e, NULL);
                if (rc) return rc;
                continue;
            }
            int rc = submit(b, s, NULL);
            if (rc) return rc;
            continue;
        }
        if (s->waiting) continue;
        if (now - s->t_event >= b->o.probe_ms) silent = 1;
        if (now - s->t_event >= b->o.timeout_ms) {
            (void)am_client_cancel(b->client, s->rid);
            retry_later(b, s);
        }
    }
    if (silent && (!b->probe_rid || now - b->probe_ms_at >= 4 * (int64_t)b->o.probe_ms) &&
        now - b->probe_ms_at >= b->o.probe_ms) {
        b->probe_seq = b->seq;
        b->probe_ms_at = now;
        int rc = am_client_health_send(b->client, NULL, 0, &b->probe_rid);
        if (rc && rc != AM_EAGAIN) return rc;
    }
    return 0;
}

/* ---- progress ---- */

static void progress(batch *b, int final) {
    const int64_t now = am_now_ms();
    if (!final && now - b->last_progress < (b->tty ? 250 : 1000LL * b->o.progress_s)) return;
    b->last_progress = now;
    const double secs = (double)(now - b->t0) / 1000.0;
    const uint64_t total = b->scan.n_requests;
    const uint64_t done = b->resume.done + b->ok + b->failed;
    const double rps = secs > 0 ? (double)(b->ok + b->failed) / secs : 0;
    const double tps = secs > 0 ? (double)b->out_tokens / secs : 0;
    const double eta = rps > 0 && total > done ? (double)(total - done) / rps : 0;
    if (b->tty) {
        char bar[31];
        int fill = total ? (int)(30.0 * (double)done / (double)total) : 30;
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr,
                "\r[%s] %llu/%llu done, %llu failed, %d in flight, %.1f req/s, %.0f tok/s, ETA "
                "%.0fs   %s",
                bar, (unsigned long long)done, (unsigned long long)total,
                (unsigned long long)(b->failed + b->resume.errors), b->n_used, rps, tps, eta,
                final ? "\n" : "");
    } else {
        fprintf(stderr,
                "anymal batch: %llu/%llu done, %llu failed, %d in flight, %.1f req/s, %.0f tok/s, "
                "ETA %.0fs\n",
                (unsigned long long)done, (unsigned long long)total,
                (unsigned long long)(b->failed + b->resume.errors), b->n_used, rps, tps, eta);
    }
}

static void summary(const batch *b, double secs) {
    const uint64_t total = b->scan.n_requests;
    const uint64_t done = b->resume.done + b->ok + b->failed;
    printf("{\"input\": \"%s\", \"output\": \"%s\", \"requests\": %llu, \"done\": %llu, "
           "\"succeeded\": %llu, \"failed\": %llu, \"already_done\": %llu, "
           "\"this_run\": {\"succeeded\": %llu, \"failed\": %llu, \"sent\": %llu, "
           "\"resent\": %llu, \"resent_lost\": %llu}, \"torn_bytes_repaired\": %llu, "
           "\"doubled_on_disk\": %llu, \"concurrency\": %d, \"wall_s\": %.3f, "
           "\"requests_per_s\": %.2f, \"output_tokens\": %llu, \"output_tokens_per_s\": %.1f, "
           "\"ttft_ms\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f}, "
           "\"latency_ms\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f}}\n",
           b->o.input, b->o.output, (unsigned long long)total, (unsigned long long)done,
           (unsigned long long)(b->resume.results + b->ok),
           (unsigned long long)(b->resume.errors + b->failed), (unsigned long long)b->resume.done,
           (unsigned long long)b->ok, (unsigned long long)b->failed, (unsigned long long)b->sent,
           (unsigned long long)b->resent, (unsigned long long)b->lost_resent,
           (unsigned long long)b->resume.torn_bytes, (unsigned long long)b->resume.doubled,
           b->o.conc, secs, secs > 0 ? (double)(b->ok + b->failed) / secs : 0,
           (unsigned long long)b->out_tokens, secs > 0 ? (double)b->out_tokens / secs : 0,
           hist_pct(&b->ttft, 0.5), hist_pct(&b->ttft, 0.9), hist_pct(&b->ttft, 0.99),
           hist_pct(&b->lat, 0.5), hist_pct(&b->lat, 0.9), hist_pct(&b->lat, 0.99));
    fflush(stdout);
}

/* ---- the cluster's models ---- */

/* Waits for a live shard group, then asks which of the input's models are served: a
 * model no live group serves when the job starts is unknown (404 lines). */
static int check_models(batch *b) {
    am_client_health h = {0};
    const int64_t end = am_now_ms() + 1000LL * b->o.wait_s;
    int rc;
    for (;;) {
        rc = am_client_health_get(b->client, NULL, 2000, &h);
        if (!rc && h.healthy) break;
        if (am_now_ms() >= end)
            return am_err_set(AM_EUNREACH,
                              "no live shard group at %s after %d s (--wait-s): is the cluster "
                              "up?",
                              b->o.endpoint, b->o.wait_s);
        usleep(BATCH_HEALTH_WAIT_STEP_MS * 1000);
    }
    if (b->scan.models_overflow) return 0; /* too many names to ask about: the cluster decides */
    b->models = am_calloc((size_t)b->scan.n_models + 1, sizeof *b->models);
    if (!b->models) return AM_ENOMEM;
    for (int i = 0; i < b->scan.n_models; i++) {
        if ((rc = am_client_health_get(b->client, b->scan.models[i], 5000, &h))) return rc;
        if (h.shards) b->models[b->n_models++] = b->scan.models[i];
    }
    return 0;
}

/* ---- the job ---- */

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static int run(batch *b) {
    int rc = 0;
    while (!rc && !g_stop && (!b->eof || b->n_used)) {
        for (int i = 0; !rc && !b->eof && i < b->o.conc; i++)
            if (!b->slots[i].used) {
                const int f = feed_one(b, &b->slots[i]);
                if (f < 0) rc = f;
            }
        if (rc) break;
        if (!b->n_used) continue;
        am_client_event ev;
        int64_t until = am_now_ms() + BATCH_POLL_MS;
        while (!rc) {
            int left = (int)(until - am_now_ms());
            int e = am_client_next(b->client, left > 0 ? left : 0, &ev);
            if (e == AM_EAGAIN) break;
            if (e) {
                rc = e;
                break;
            }
            rc = on_event(b, &ev);
            am_client_event_fini(&ev);
            if (b->n_used < b->o.conc && !b->eof) break; /* room: read more input */
        }
        if (!rc) rc = tend(b);
        progress(b, 0);
    }
    return rc;
}

static int parse_opts(int argc, char **argv, batch_opts *o, int *status) {
    am_cli cli;
    am_cli_init(&cli, CMD, argc, argv);
    const char *opt;
    *status = 0;
    while ((opt = am_cli_next(&cli))) {
        int64_t v;
        const char **str = !strcmp(opt, "--coordinator")       ? &o->endpoint
                           : !strcmp(opt, "--input")           ? &o->input
                           : !strcmp(opt, "--output")          ? &o->output
                           : !strcmp(opt, "--errors")          ? &o->errors
                           : !strcmp(opt, "--media-root")      ? &o->media_root
                           : !strcmp(opt, "--curve-key")       ? &o->curve_key
                           : !strcmp(opt, "--coordinator-key") ? &o->coordinator_key
                                                               : NULL;
        int *num = !strcmp(opt, "--concurrency")          ? &o->conc
                   : !strcmp(opt, "--max-attempts")       ? &o->max_attempts
                   : !strcmp(opt, "--probe-ms")           ? &o->probe_ms
                   : !strcmp(opt, "--request-timeout-ms") ? &o->timeout_ms
                   : !strcmp(opt, "--sync-ms")            ? &o->sync_ms
                   : !strcmp(opt, "--progress-s")         ? &o->progress_s
                   : !strcmp(opt, "--wait-s")             ? &o->wait_s
                                                          : NULL;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            help();
            return 0;
        } else if (str) {
            if (!(*str = am_cli_value(&cli))) return *status = AM_EXIT_USAGE, 0;
        } else if (num) {
            const int64_t max = num == &o->conc ? BATCH_MAX_CONCURRENCY : 86400000;
            const int64_t min = num == &o->sync_ms ? 0 : 1;
            if (am_cli_int(&cli, min, max, &v)) return *status = AM_EXIT_USAGE, 0;
            *num = (int)v;
        } else if (!strcmp(opt, "--max-tokens-limit")) {
            if (am_cli_int(&cli, 1, AM_PROTO_MAX_TOKENS, &v)) return *status = AM_EXIT_USAGE, 0;
            o->max_tokens_limit = (uint32_t)v;
        } else if (!strcmp(opt, "--max-media-bytes")) {
            if (am_cli_int(&cli, 1, (int64_t)AM_PROTO_MAX_PAYLOAD_BYTES, &v))
                return *status = AM_EXIT_USAGE, 0;
            o->max_media = (size_t)v;
        } else if (!strcmp(opt, "--max-line-bytes")) {
            if (am_cli_int(&cli, 1024, (int64_t)1 << 32, &v)) return *status = AM_EXIT_USAGE, 0;
            o->max_line = (size_t)v;
        } else {
            *status = am_cli_fail(&cli, "unknown option '%s'", opt);
            return 0;
        }
    }
    if (!o->input || !o->output) {
        *status = am_cli_fail(&cli, "--input and --output are required");
        return 0;
    }
    if (o->errors && !strcmp(o->errors, o->output)) {
        *status = am_cli_fail(&cli, "--errors must differ from --output (or be left out)");
        return 0;
    }
    if (!strcmp(o->input, o->output) || (o->errors && !strcmp(o->input, o->errors))) {
        *status = am_cli_fail(&cli, "--output and --errors must differ from --input");
        return 0;
    }
    return 1;
}

int am_cmd_batch(int argc, char **argv) {
    batch *b = am_calloc(1, sizeof *b);
    if (!b) return am_cli_error(CMD, AM_ENOMEM);
    b->o = (batch_opts){.endpoint = "tcp://127.0.0.1:5555",
                        .conc = 64,
                        .max_attempts = 8,
                        .probe_ms = 2000,
                        .timeout_ms = 600000,
                        .sync_ms = 1000,
                        .progress_s = 5,
                        .wait_s = 120,
                        .max_tokens_limit = AM_PROTO_MAX_TOKENS,
                        .max_line = BATCH_DEFAULT_MAX_LINE};
    int status = 0, rc = 0;
    b->j.out_fd = b->j.err_fd = -1;
    if (!parse_opts(argc, argv, &b->o, &status)) {
        am_free(b);
        return status;
    }
    b->t0 = am_now_ms();
    b->tty = isatty(2);
    if ((rc = am_batch_scan_input(b->o.input, b->o.max_line, &b->scan))) goto out;
    if (!(b->done = am_calloc(b->scan.n_lines / 8 + 2, 1)) ||
        !(b->slots = am_calloc((size_t)b->o.conc, sizeof *b->slots))) {
        rc = am_err_set(AM_ENOMEM, "out of memory for the job's tables");
        goto out;
    }
    rc = am_batch_journal_open(&b->j, b->o.output, b->o.errors, b->o.input, &b->scan, b->o.sync_ms,
                               b->done, &b->resume);
    if (rc == AM_EINVAL) {
        fprintf(stderr, "anymal batch: %s\n", am_err_msg());
        status = AM_EXIT_USAGE;
        goto cleanup;
    }
    if (rc) goto out;
    if (!b->resume.fresh)
        fprintf(stderr,
                "anymal batch: resuming %s: %llu of %llu requests already done (%llu results, "
                "%llu errors)%s\n",
                b->o.output, (unsigned long long)b->resume.done,
                (unsigned long long)b->scan.n_requests, (unsigned long long)b->resume.results,
                (unsigned long long)b->resume.errors,
                b->resume.torn_bytes ? "; a torn last line was cut off" : "");
    if ((rc = am_batch_reader_open(&b->in, b->o.input, b->o.max_line))) goto out;
    if (b->resume.done < b->scan.n_requests) {
        am_client_opts co = {.endpoint = b->o.endpoint,
                             .curve_key = b->o.curve_key,
                             .coordinator_key = b->o.coordinator_key};
        if ((rc = am_client_new_opts(&co, &b->client))) goto out;
        if ((rc = check_models(b))) goto out;
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        b->t0 = am_now_ms(); /* throughput counts the cluster's time, not the scan's */
        rc = run(b);
    }
out:
    if (!rc && b->j.out_fd >= 0) rc = am_batch_journal_close(&b->j); /* the last sync */
    if (rc) {
        status = am_cli_error(CMD, rc);
    } else if (g_stop) {
        fprintf(stderr, "anymal batch: stopped by a signal; run the same command to finish\n");
        status = 1;
    } else {
        status = b->resume.errors + b->failed ? 1 : 0;
    }
    progress(b, 1);
    summary(b, (double)(am_now_ms() - b->t0) / 1000.0);
cleanup:
    if (b->j.out_fd >= 0) (void)am_batch_journal_close(&b->j);
    for (int i = 0; b->slots && i < b->o.conc; i++)
        slot_clear(&b->slots[i]);
    am_client_destroy(&b->client);
    am_batch_reader_close(&b->in);
    am_batch_scan_fini(&b->scan);
    am_free(b->models);
    am_free(b->slots);
    am_free(b->done);
    am_free(b);
    return status;
}
