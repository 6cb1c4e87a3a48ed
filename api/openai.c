/* api/openai.c - an OpenAI request body -> client parts + parameters (api/openai.h).
 *
 * One pass over the cJSON tree: generation parameters first (so a bad max_tokens is
 * reported before any media file is read), then the prompt. Every refusal goes through
 * am_api_fail with the JSON path of the field, so a batch error line or an HTTP 400 says
 * exactly what to fix. The chat template is written into text parts here (why, and the
 * stripping rules, are in the header).
 */
#include "api/api_internal.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/text.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int32_t eos_bos[2] = {AM_API_EOS_ID, AM_API_BOS_ID};

int am_api_fail(am_api_error *e, int status, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    e->status = status;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    int code = status == 404   ? AM_ENOTFOUND
               : status == 413 ? AM_ERANGE
               : status >= 500 ? AM_EINTERNAL
                               : AM_EINVAL;
    return am_err_set(code, "%s", e->message);
}

static int oom(am__api_parse *P, const char *what) {
    am_api_fail(P->err, 500, "", "out of memory for %s", what);
    return am_err_set(AM_ENOMEM, "out of memory for %s", what);
}

char *am__api_keep(am_api_request *r, char *s) {
    if (!s) return NULL;
    if (r->n_strs == r->cap_strs) {
        int cap = r->cap_strs ? r->cap_strs * 2 : 16;
        char **v = am_realloc(r->strs, (size_t)cap * sizeof *v);
        if (!v) {
            am_free(s);
            return NULL;
        }
        r->strs = v, r->cap_strs = cap;
    }
    return r->strs[r->n_strs++] = s;
}

static char *dup_n(const char *s, size_t n) {
    char *d = am_malloc(n + 1);
    if (d) memcpy(d, s, n), d[n] = '\0';
    return d;
}

int am_api_url_kind(const char *url, am_api_kind *kind, am_api_error *err) {
    if (url && !strcmp(url, "/v1/chat/completions")) return *kind = AM_API_CHAT, 0;
    if (url && !strcmp(url, "/v1/completions")) return *kind = AM_API_COMPLETION, 0;
    return am_api_fail(err, 404, "url",
                       "url '%s' is not served: use /v1/chat/completions or /v1/completions",
                       url ? url : "(none)");
}

/* ---- generation parameters ---- */

/* An optional number field: 0 absent or null (*out untouched), 1 present, or an error. */
static int get_num(am__api_parse *P, const cJSON *body, const char *name, double lo, double hi,
                   int integer, double *out) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(body, name);
    if (!f || cJSON_IsNull(f)) return 0;
    if (!cJSON_IsNumber(f)) return am_api_fail(P->err, 400, name, "%s must be a number", name);
    const double v = f->valuedouble;
    if (integer && (v != floor(v) || fabs(v) > 9007199254740992.0))
        return am_api_fail(P->err, 400, name, "%s must be an integer (got %.17g)", name, v);
    if (!(v >= lo && v <= hi))
        return am_api_fail(P->err, 400, name, "%s is %.17g, outside [%.17g, %.17g]", name, v, lo,
                           hi);
    *out = v;
    return 1;
}

static int get_bool(am__api_parse *P, const cJSON *body, const char *name, int *out) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(body, name);
    if (!f || cJSON_IsNull(f)) return 0;
    if (!cJSON_IsBool(f)) return am_api_fail(P->err, 400, name, "%s must be true or false", name);
    *out = cJSON_IsTrue(f);
    return 1;
}

/* Fields that change the answer and that the engine does not do: refused rather than
 * silently ignored. Fields not listed anywhere (user, metadata, ...) are ignored. */
static int refuse_unsupported(am__api_parse *P, const cJSON *body) {
    static const char *const flags[] = {"logprobs", "echo"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        int v = 0;
        int rc = get_bool(P, body, flags[i], &v);
        if (rc < 0) return rc;
        if (v) return am_api_fail(P->err, 400, flags[i], "%s is not supported", flags[i]);
    }
    static const char *const zero[] = {"presence_penalty", "frequency_penalty"};
    for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++) {
        double v = 0;
        int rc = get_num(P, body, zero[i], -2, 2, 0, &v);
        if (rc < 0) return rc;
        if (v != 0)
            return am_api_fail(P->err, 400, zero[i], "%s is not supported (give 0)", zero[i]);
    }
    static const char *const absent[] = {"tools",  "functions", "tool_choice", "logit_bias",
                                         "suffix", "audio",     "prediction"};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(body, absent[i]);
        if (f && !cJSON_IsNull(f) && !(cJSON_IsArray(f) && !cJSON_GetArraySize(f)) &&
            !(cJSON_IsObject(f) && !f->child))
            return am_api_fail(P->err, 400, absent[i], "%s is not supported", absent[i]);
    }
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(body, "response_format");
    if (rf && !cJSON_IsNull(rf)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(rf, "type");
        if (!cJSON_IsString(t) || strcmp(t->valuestring, "text"))
            return am_api_fail(P->err, 400, "response_format",
                               "response_format must be {\"type\": \"text\"} (structured output is "
                               "not supported)");
    }
    return 0;
}

static int parse_stop(am__api_parse *P, const cJSON *body) {
    am_api_request *r = P->r;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(body, "stop");
    if (!f || cJSON_IsNull(f)) return 0;
    const cJSON *one = cJSON_IsString(f) ? f : NULL;
    int n = one ? 1 : cJSON_IsArray(f) ? cJSON_GetArraySize(f) : -1;
    if (n < 0)
        return am_api_fail(P->err, 400, "stop", "stop must be a string or a list of strings");
    if (n > AM_PROTO_MAX_STOP)
        return am_api_fail(P->err, 400, "stop", "stop has %d strings, at most %d", n,
                           AM_PROTO_MAX_STOP);
    const char **v = n ? am_calloc((size_t)n, sizeof *v) : NULL;
    if (n && !(v = (const char **)am__api_keep(r, (char *)v))) return oom(P, "stop");
    for (int i = 0; i < n; i++) {
        const cJSON *s = one ? one : cJSON_GetArrayItem(f, i);
        char path[32];
        snprintf(path, sizeof path, one ? "stop" : "stop[%d]", i);
        if (!cJSON_IsString(s)) return am_api_fail(P->err, 400, path, "%s must be a string", path);
        size_t len = strlen(s->valuestring);
        if (!len || len > AM_PROTO_MAX_STOP_BYTES)
            return am_api_fail(P->err, 400, path, "%s has %zu bytes, want 1..%d", path, len,
                               AM_PROTO_MAX_STOP_BYTES);
        if (!(v[i] = am__api_keep(r, dup_n(s->valuestring, len)))) return oom(P, "stop");
    }
    r->params.stop = v;
    r->params.n_stop = (uint32_t)n;
    return 0;
}

static int parse_model(am__api_parse *P, const cJSON *body) {
    am_api_request *r = P->r;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(body, "model");
    const char *name = "";
    if (f && !cJSON_IsNull(f)) {
        if (!cJSON_IsString(f)) return am_api_fail(P->err, 400, "model", "model must be a string");
        name = f->valuestring;
        if (strlen(name) > AM_PROTO_MAX_NAME_BYTES)
            return am_api_fail(P->err, 400, "model", "model name of %zu bytes, at most %d",
                               strlen(name), AM_PROTO_MAX_NAME_BYTES);
    }
    if (name[0] && P->o.models) {
        int found = 0;
        for (int i = 0; i < P->o.n_models && !found; i++)
            found = !strcmp(P->o.models[i], name);
        if (!found) return am_api_fail(P->err, 404, "model", "The model '%s' does not exist", name);
    }
    if (!(r->model = am__api_keep(r, dup_n(name, strlen(name))))) return oom(P, "model");
    r->params.model = r->model;
    return 0;
}

static int parse_params(am__api_parse *P, const cJSON *body) {
    am_api_request *r = P->r;
    am_client_params *p = &r->params;
    double v;
    int rc;
    if ((rc = parse_model(P, body))) return rc;
    if ((rc = refuse_unsupported(P, body))) return rc;
    if ((rc = get_num(P, body, "n", -1e300, 1e300, 1, &v)) < 0) return rc;
    if (rc && v != 1)
        return am_api_fail(P->err, 400, "n", "n is %.17g: only n = 1 is supported", v);
    if ((rc = get_num(P, body, "best_of", -1e300, 1e300, 1, &v)) < 0) return rc;
    if (rc && v != 1)
        return am_api_fail(P->err, 400, "best_of", "best_of is %.17g: only 1 is supported", v);
    if ((rc = get_bool(P, body, "stream", &r->stream)) < 0) return rc;
    p->max_tokens =
        r->kind == AM_API_CHAT ? AM_API_DEFAULT_MAX_TOKENS_CHAT : AM_API_DEFAULT_MAX_TOKENS_COMPL;
    static const char *const mt[] = {"max_tokens", "max_completion_tokens"};
    for (int i = 0; i < 2; i++) { /* max_completion_tokens, OpenAI's newer name, wins */
        if ((rc = get_num(P, body, mt[i], -1e300, 1e300, 1, &v)) < 0) return rc;
        if (!rc) continue;
        if (v < 1) return am_api_fail(P->err, 400, mt[i], "%s is %.17g, at least 1", mt[i], v);
        if (v > P->o.max_tokens_limit)
            return am_api_fail(P->err, 400, mt[i], "%s is %.17g, over the limit of %u", mt[i], v,
                               P->o.max_tokens_limit);
        p->max_tokens = (uint32_t)v;
    }
    if (p->max_tokens > P->o.max_tokens_limit) p->max_tokens = P->o.max_tokens_limit;
    if ((rc = get_num(P, body, "temperature", 0, 2, 0, &v)) < 0) return rc;
    if (rc) p->temperature = (float)v;
    if ((rc = get_num(P, body, "top_p", 0, 1, 0, &v)) < 0) return rc;
    if (rc && v <= 0) return am_api_fail(P->err, 400, "top_p", "top_p is %.17g, want (0, 1]", v);
    if (rc) p->top_p = (float)v;
    if ((rc = get_num(P, body, "top_k", -1, INT32_MAX, 1, &v)) < 0) return rc; /* vLLM's */
    if (rc) p->top_k = v < 0 ? 0 : (int32_t)v;
    if ((rc = get_num(P, body, "repetition_penalty", 1e-3, 100, 0, &v)) < 0) return rc;
    if (rc) p->repetition_penalty = (float)v;
    if ((rc = get_num(P, body, "seed", -9007199254740992.0, 9007199254740992.0, 1, &v)) < 0)
        return rc;
    if (rc) p->seed = (uint64_t)(int64_t)v;
    return parse_stop(P, body);
}

/* ---- parts ---- */

static int push_part(am__api_parse *P, const am_client_part *q, const char *path) {
    am_api_request *r = P->r;
    if (r->n_parts == AM_PROTO_MAX_SEGMENTS)
        return am_api_fail(P->err, 413, path, "%s: the prompt has more than %d parts", path,
                           AM_PROTO_MAX_SEGMENTS);
    r->parts[r->n_parts++] = *q;
    return 0;
}

/* Pushes text as a text part (stripped at the sides that touch media), unless empty. */
static int push_text(am__api_parse *P, const char *s, size_t n, int strip_l, int strip_r,
                     const char *path) {
    size_t b = 0, e = n;
    am_py_strip(s, n, &b, &e);
    if (!strip_l) b = 0;
    if (!strip_r) e = n;
    if (e <= b) return 0;
    if (e - b > AM_PROTO_MAX_TEXT_BYTES)
        return am_api_fail(P->err, 413, path, "%s: text of %zu bytes, at most %zu", path, e - b,
                           AM_PROTO_MAX_TEXT_BYTES);
    char *t = am__api_keep(P->r, dup_n(s + b, e - b));
    if (!t) return oom(P, "the prompt");
    am_client_part q = {.kind = AM_SEG_TEXT, .text = t, .text_len = e - b};
    return push_part(P, &q, path);
}

static int check_text(am__api_parse *P, const char *s, const char *path) {
    if (am_chat_has_tag(s))
        return am_api_fail(P->err, 400, path,
                           "%s holds a chat template tag ([INST], [/INST], <<SYS>> or <</SYS>>), "
                           "which could forge a turn",
                           path);
    return 0;
}

/* The text of a system or assistant message (a string, or text parts joined by "\n"). */
static int text_only(am__api_parse *P, const cJSON *content, const char *path, am_strbuf *out) {
    if (cJSON_IsString(content)) {
        am_strbuf_puts(out, content->valuestring);
        return check_text(P, content->valuestring, path);
    }
    if (!cJSON_IsArray(content))
        return am_api_fail(P->err, 400, path, "%s must be a string or a list of parts", path);
    int i = 0;
    for (const cJSON *q = content->child; q; q = q->next, i++) {
        char pp[AM_API_MAX_PARAM_BYTES];
        snprintf(pp, sizeof pp, "%s[%d]", path, i);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(q, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(q, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text"))
            return am_api_fail(P->err, 400, pp, "%s: this role's content takes text parts only",
                               pp);
        if (!cJSON_IsString(text))
            return am_api_fail(P->err, 400, pp, "%s.text must be a string", pp);
        if (check_text(P, text->valuestring, pp)) return AM_EINVAL;
        if (i) am_strbuf_puts(out, "\n");
        am_strbuf_puts(out, text->valuestring);
    }
    return 0;
}

/* The message content of a user turn: runs of text between media parts. */
typedef struct turn {
    am_strbuf run[AM_PROTO_MAX_PAYLOADS + 1];
    am_client_part media[AM_PROTO_MAX_PAYLOADS];
    int n_media;
} turn;

static void turn_fini(turn *t) {
    for (int i = 0; i <= AM_PROTO_MAX_PAYLOADS; i++)
        am_free(t->run[i].d);
}

static int user_content(am__api_parse *P, const cJSON *content, const char *path, turn *t) {
    if (cJSON_IsString(content)) {
        am_strbuf_puts(&t->run[0], content->valuestring);
        return check_text(P, content->valuestring, path);
    }
    if (!cJSON_IsArray(content))
        return am_api_fail(P->err, 400, path, "%s must be a string or a list of parts", path);
    int i = 0, texts_in_run = 0;
    for (const cJSON *q = content->child; q; q = q->next, i++) {
        char pp[AM_API_MAX_PARAM_BYTES];
        snprintf(pp, sizeof pp, "%s[%d]", path, i);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(q, "type");
        if (!cJSON_IsObject(q) || !cJSON_IsString(type))
            return am_api_fail(P->err, 400, pp, "%s must be an object with a \"type\"", pp);
        const char *ty = type->valuestring;
        if (!strcmp(ty, "text")) {
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(q, "text");
            if (!cJSON_IsString(text))
                return am_api_fail(P->err, 400, pp, "%s.text must be a string", pp);
            if (check_text(P, text->valuestring, pp)) return AM_EINVAL;
            if (texts_in_run++) am_strbuf_puts(&t->run[t->n_media], "\n");
            am_strbuf_puts(&t->run[t->n_media], text->valuestring);
            continue;
        }
        if (strcmp(ty, "image_url") && strcmp(ty, "input_audio") && strcmp(ty, "audio_url") &&
            strcmp(ty, "video_url") && strcmp(ty, "imu_url"))
            return am_api_fail(P->err, 400, pp,
                               "%s: unsupported content part type '%s' (text, image_url, "
                               "input_audio, audio_url, video_url, imu_url)",
                               pp, ty);
        if (P->r->n_media == AM_PROTO_MAX_PAYLOADS)
            return am_api_fail(P->err, 413, pp, "%s: more than %d media items in one request", pp,
                               AM_PROTO_MAX_PAYLOADS);
        int rc = am__api_media(P, q, ty, pp, &t->media[t->n_media]);
        if (rc) return rc;
        t->n_media++;
        P->r->n_media++;
        texts_in_run = 0;
    }
    return 0;
}

/* Emits one user turn (plus its answer when given) as parts. sys: the system text to fold
 * in, or NULL. */
static int emit_turn(am__api_parse *P, turn *t, const char *sys, const am_strbuf *answer,
                     const char *path) {
    const int last = t->n_media;
    /* generation.py strips B_SYS + system + E_SYS + user as one string: fold first. */
    if (sys) {
        am_strbuf m = {0};
        am_strbuf_puts(&m, AM_CHAT_B_SYS);
        am_strbuf_puts(&m, sys);
        am_strbuf_puts(&m, AM_CHAT_E_SYS);
        am_strbuf_put(&m, t->run[0].d ? t->run[0].d : "", t->run[0].n);
        am_free(t->run[0].d);
        t->run[0] = m;
    }
    int rc = 0;
    for (int k = 0; k <= last && !rc; k++) {
        am_strbuf *run = &t->run[k];
        if (run->oom) return oom(P, "the prompt");
        /* Strip: the message's ends (Python) and every side that touches media. */
        size_t b = 0, e = run->n;
        am_py_strip(run->d ? run->d : "", run->n, &b, &e);
        am_strbuf seg = {0};
        if (k == 0) am_strbuf_puts(&seg, AM_CHAT_B_INST " ");
        if (e > b) am_strbuf_put(&seg, run->d + b, e - b);
        if (k == last) {
            am_strbuf_puts(&seg, " " AM_CHAT_E_INST);
            if (answer) {
                size_t ab = 0, ae = answer->n;
                am_py_strip(answer->d ? answer->d : "", answer->n, &ab, &ae);
                am_strbuf_puts(&seg, " ");
                if (ae > ab) am_strbuf_put(&seg, answer->d + ab, ae - ab);
                am_strbuf_puts(&seg, " ");
            }
        }
        if (seg.oom || (answer && answer->oom)) {
            am_free(seg.d);
            return oom(P, "the prompt");
        }
        rc = push_text(P, seg.d ? seg.d : "", seg.n, k > 0, k < last, path);
        am_free(seg.d);
        if (!rc && k < last) rc = push_part(P, &t->media[k], path);
    }
    if (!rc && answer) {
        am_client_part q = {.kind = AM_SEG_IDS, .ids = eos_bos, .n_ids = 2};
        rc = push_part(P, &q, path);
    }
    return rc;
}

static const char *role_of(am__api_parse *P, const cJSON *msg, int i, int *rc) {
    char pp[48];
    snprintf(pp, sizeof pp, "messages[%d]", i);
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
    if (!cJSON_IsObject(msg) || !cJSON_IsString(role)) {
        *rc = am_api_fail(P->err, 400, pp, "%s must be an object with a string \"role\"", pp);
        return NULL;
    }
    const char *r = role->valuestring;
    if (!strcmp(r, "developer")) r = "system"; /* OpenAI's newer name for it */
    if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant")) {
        snprintf(pp, sizeof pp, "messages[%d].role", i);
        *rc = am_api_fail(P->err, 400, pp,
                          "%s is '%s': supported roles are system (developer), user, assistant", pp,
                          role->valuestring);
        return NULL;
    }
    return r;
}

static int parse_messages(am__api_parse *P, const cJSON *body) {
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages");
    if (!cJSON_IsArray(msgs))
        return am_api_fail(P->err, 400, "messages", "messages must be a list of messages");
    const int n = cJSON_GetArraySize(msgs);
    if (n == 0) return am_api_fail(P->err, 400, "messages", "messages is empty");
    if (n > AM_API_MAX_MESSAGES)
        return am_api_fail(P->err, 413, "messages", "%d messages, at most %d", n,
                           AM_API_MAX_MESSAGES);
    int rc = 0, first = 0;
    const cJSON *m0 = cJSON_GetArrayItem(msgs, 0);
    const char *r0 = role_of(P, m0, 0, &rc);
    if (!r0) return rc;
    am_strbuf sys = {0};
    turn *t = am_calloc(1, sizeof *t);
    if (!t) return oom(P, "the prompt");
    if (!strcmp(r0, "system")) {
        first = 1;
        rc = text_only(P, cJSON_GetObjectItemCaseSensitive(m0, "content"), "messages[0].content",
                       &sys);
        if (!rc && n == 1)
            rc = am_api_fail(P->err, 400, "messages",
                             "a system message must be followed by a user message");
    }
    for (int i = first; i < n && !rc; i += 2) {
        char pp[64];
        const cJSON *mu = cJSON_GetArrayItem(msgs, i);
        const char *ru = role_of(P, mu, i, &rc);
        if (!ru) break;
        if (strcmp(ru, "user")) {
            snprintf(pp, sizeof pp, "messages[%d].role", i);
            rc = am_api_fail(P->err, 400, pp,
                             "%s is '%s', expected 'user' (an optional system message, then user "
                             "and assistant alternating, ending with user)",
                             pp, ru);
            break;
        }
        snprintf(pp, sizeof pp, "messages[%d].content", i);
        turn_fini(t);
        memset(t, 0, sizeof *t);
        if ((rc = user_content(P, cJSON_GetObjectItemCaseSensitive(mu, "content"), pp, t))) break;
        am_strbuf ans = {0};
        const int answered = i + 1 < n;
        if (answered) {
            const cJSON *ma = cJSON_GetArrayItem(msgs, i + 1);
            const char *ra = role_of(P, ma, i + 1, &rc);
            if (ra && strcmp(ra, "assistant")) {
                snprintf(pp, sizeof pp, "messages[%d].role", i + 1);
                rc = am_api_fail(P->err, 400, pp,
                                 "%s is '%s', expected 'assistant' (roles alternate; the last "
                                 "message is the user's)",
                                 pp, ra);
            } else if (ra) {
                snprintf(pp, sizeof pp, "messages[%d].content", i + 1);
                rc = text_only(P, cJSON_GetObjectItemCaseSensitive(ma, "content"), pp, &ans);
                if (!rc && i + 2 >= n)
                    rc = am_api_fail(P->err, 400, "messages",
                                     "the last message must be from 'user', got 'assistant'");
            }
        }
        snprintf(pp, sizeof pp, "messages[%d]", i);
        if (!rc)
            rc = emit_turn(P, t, i == first && first ? (sys.d ? sys.d : "") : NULL,
                           answered ? &ans : NULL, pp);
        am_free(ans.d);
    }
    if (!rc && sys.oom) rc = oom(P, "the prompt");
    turn_fini(t);
    am_free(t);
    am_free(sys.d);
    return rc;
}

static int parse_prompt(am__api_parse *P, const cJSON *body) {
    am_api_request *r = P->r;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(body, "prompt");
    if (cJSON_IsArray(f) && cJSON_GetArraySize(f) == 1 && cJSON_IsString(f->child)) f = f->child;
    if (cJSON_IsString(f)) {
        size_t n = strlen(f->valuestring);
        if (n > AM_PROTO_MAX_TEXT_BYTES)
            return am_api_fail(P->err, 413, "prompt", "prompt of %zu bytes, at most %zu", n,
                               AM_PROTO_MAX_TEXT_BYTES);
        char *t = am__api_keep(r, dup_n(f->valuestring, n));
        if (!t) return oom(P, "prompt");
        am_client_part q = {.kind = AM_SEG_TEXT, .text = t, .text_len = n};
        return push_part(P, &q, "prompt");
    }
    const int n = cJSON_IsArray(f) ? cJSON_GetArraySize(f) : 0;
    if (!n)
        return am_api_fail(P->err, 400, "prompt",
                           "prompt must be a string, a list of one string or a list of token ids");
    if (n > AM_PROTO_MAX_IDS)
        return am_api_fail(P->err, 413, "prompt", "prompt of %d token ids, at most %d", n,
                           AM_PROTO_MAX_IDS);
    if (!(r->ids = am_malloc((size_t)n * sizeof *r->ids))) return oom(P, "prompt");
    int i = 0;
    for (const cJSON *q = f->child; q; q = q->next, i++) {
        const double v = cJSON_IsNumber(q) ? q->valuedouble : -1;
        if (v < 0 || v > INT32_MAX || v != floor(v))
            return am_api_fail(P->err, 400, "prompt",
                               "prompt[%d] is not a token id (a list of prompts is not supported: "
                               "send one request per prompt)",
                               i);
        r->ids[i] = (int32_t)v;
    }
    am_client_part q = {.kind = AM_SEG_IDS, .ids = r->ids, .n_ids = (uint32_t)n};
    return push_part(P, &q, "prompt");
}

int am_api_parse_body(const cJSON *body, am_api_kind kind, const am_api_opts *o,
                      am_api_request *out, am_api_error *err) {
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    am__api_parse P = {.r = out, .err = err};
    if (o) P.o = *o;
    if (!P.o.max_tokens_limit || P.o.max_tokens_limit > AM_PROTO_MAX_TOKENS)
        P.o.max_tokens_limit = AM_PROTO_MAX_TOKENS;
    if (!P.o.max_media_bytes || P.o.max_media_bytes > AM_PROTO_MAX_PAYLOAD_BYTES)
        P.o.max_media_bytes = AM_PROTO_MAX_PAYLOAD_BYTES;
    out->kind = kind;
    int rc = 0;
    if (!cJSON_IsObject(body)) {
        rc = am_api_fail(err, 400, "body", "the body must be a JSON object");
        goto done;
    }
    if (P.o.media_root && P.o.media_root[0] && !(P.root_real = realpath(P.o.media_root, NULL))) {
        rc = am_api_fail(err, 500, "", "media root '%s': %s", P.o.media_root, strerror(errno));
        goto done;
    }
    out->parts = am_calloc(AM_PROTO_MAX_SEGMENTS, sizeof *out->parts);
    out->media = am_calloc(AM_PROTO_MAX_PAYLOADS, sizeof *out->media);
    if (!out->parts || !out->media) {
        rc = oom(&P, "the request");
        goto done;
    }
    if ((rc = parse_params(&P, body))) goto done;
    rc = kind == AM_API_CHAT ? parse_messages(&P, body) : parse_prompt(&P, body);
    if (!rc && !out->n_parts) {
        /* e.g. a lone empty prompt: BOS alone, as OpenAI accepts "" */
        am_client_part q = {.kind = AM_SEG_TEXT, .text = "", .text_len = 0};
        rc = push_part(&P, &q, "prompt");
    }
done:
    free(P.root_real); /* realpath's malloc */
    if (rc) am_api_request_fini(out);
    return rc;
}

int am_api_parse(const char *json, size_t len, const char *url, const am_api_opts *o,
                 am_api_request *out, am_api_error *err) {
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    am_api_kind kind;
    int rc = am_api_url_kind(url, &kind, err);
    if (rc) return rc;
    const char *end = NULL;
    cJSON *body = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!body) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        return am_api_fail(err, 400, "body", "the body is not valid JSON (error near byte %zu)",
                           at);
    }
    rc = am_api_parse_body(body, kind, o, out, err);
    cJSON_Delete(body);
    return rc;
}

void am_api_request_drop_media(am_api_request *r) {
    if (!r->media) return;
    for (int i = 0; i < r->n_parts; i++)
        if (r->parts[i].kind == AM_SEG_MEDIA) r->parts[i].data = NULL;
    for (int i = 0; i < AM_PROTO_MAX_PAYLOADS; i++)
        am_free(r->media[i]), r->media[i] = NULL;
    r->media_bytes = 0;
}

void am_api_request_fini(am_api_request *r) {
    if (!r) return;
    am_api_request_drop_media(r);
    for (int i = 0; i < r->n_strs; i++)
        am_free(r->strs[i]);
    am_free(r->strs);
    am_free(r->media);
    am_free(r->parts);
    am_free(r->ids);
    memset(r, 0, sizeof *r);
}
