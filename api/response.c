/* api/response.c - OpenAI response and error objects.
 *
 * The generated text is made valid UTF-8 before it goes into JSON (each malformed byte
 * becomes U+FFFD, as Python's errors="replace" and the peers' servers do): a model can
 * stop in the middle of a multi-byte character (byte-fallback tokens, max_tokens), and
 * cJSON copies bytes as they are, which would make the line unreadable to a strict JSON
 * reader.
 */
#include "api/api_internal.h"

#include "core/alloc.h"
#include "core/text.h"

#include <string.h>

const char *am_api_finish_reason(uint8_t finish) {
    switch (finish) {
    case AM_FIN_LENGTH: return "length";
    case AM_FIN_EOS:
    case AM_FIN_STOP: return "stop";
    case AM_FIN_CANCELLED: return "cancelled";
    default: return NULL;
    }
}

/* text[0..n) as a NUL-terminated valid UTF-8 string (am_free), NULL when out of memory. */
static char *utf8_clean(const char *text, size_t n) {
    char *d = am_malloc(n * 3 + 1);
    if (!d) return NULL;
    const unsigned char *u = (const unsigned char *)text;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int k = am_utf8_decode(u + i, n - i, &cp);
        if (k > 0 && cp != 0) {
            memcpy(d + o, u + i, (size_t)k);
            o += (size_t)k, i += (size_t)k;
        } else { /* malformed, or a NUL that would end the C string: U+FFFD */
            memcpy(d + o, "\xEF\xBF\xBD", 3);
            o += 3, i++;
        }
    }
    d[o] = '\0';
    return d;
}

cJSON *am_api_response_obj(am_api_kind kind, const char *id, int64_t created, const char *model,
                           const am_api_result *res) {
    cJSON *o = cJSON_CreateObject(), *choices = NULL, *c = NULL, *u = NULL;
    char *text = utf8_clean(res->text ? res->text : "", res->text ? res->text_len : 0);
    const char *fin = am_api_finish_reason(res->finish);
    if (!o || !text) goto fail;
    if (!cJSON_AddStringToObject(o, "id", id ? id : "") ||
        !cJSON_AddStringToObject(o, "object",
                                 kind == AM_API_CHAT ? "chat.completion" : "text_completion") ||
        !cJSON_AddNumberToObject(o, "created", (double)created) ||
        !cJSON_AddStringToObject(o, "model", model ? model : "") ||
        !(choices = cJSON_AddArrayToObject(o, "choices")) || !(c = cJSON_CreateObject()))
        goto fail;
    cJSON_AddItemToArray(choices, c);
    if (!cJSON_AddNumberToObject(c, "index", 0)) goto fail;
    if (kind == AM_API_CHAT) {
        cJSON *m = cJSON_AddObjectToObject(c, "message");
        if (!m || !cJSON_AddStringToObject(m, "role", "assistant") ||
            !cJSON_AddStringToObject(m, "content", text))
            goto fail;
    } else if (!cJSON_AddStringToObject(c, "text", text)) {
        goto fail;
    }
    if (!(fin ? cJSON_AddStringToObject(c, "finish_reason", fin)
              : cJSON_AddNullToObject(c, "finish_reason")) ||
        !(u = cJSON_AddObjectToObject(o, "usage")) ||
        !cJSON_AddNumberToObject(u, "prompt_tokens", res->prompt_tokens) ||
        !cJSON_AddNumberToObject(u, "completion_tokens", res->completion_tokens) ||
        !cJSON_AddNumberToObject(u, "total_tokens",
                                 (double)res->prompt_tokens + res->completion_tokens))
        goto fail;
    am_free(text);
    return o;
fail:
    am_free(text);
    cJSON_Delete(o);
    return NULL;
}

const char *am_api_error_code(const am_api_error *e) {
    switch (e->status) {
    case 400: return "invalid_request";
    case 404: { /* "model", or "body.model" as a batch line names it */
        const size_t n = strlen(e->param);
        return n >= 5 && !strcmp(e->param + n - 5, "model") ? "model_not_found" : "not_found";
    }
    case 408: return "timeout";
    case 413: return "too_large";
    case 429: return "rate_limit_exceeded";
    case 503: return "unavailable";
    default: return e->status >= 500 ? "server_error" : "invalid_request";
    }
}

cJSON *am_api_error_obj(const am_api_error *e) {
    cJSON *o = cJSON_CreateObject(), *x = o ? cJSON_AddObjectToObject(o, "error") : NULL;
    char *msg = utf8_clean(e->message, strnlen(e->message, sizeof e->message));
    if (!x || !msg || !cJSON_AddStringToObject(x, "message", msg) ||
        !cJSON_AddStringToObject(x, "type",
                                 e->status >= 500 ? "server_error" : "invalid_request_error") ||
        !(e->param[0] ? cJSON_AddStringToObject(x, "param", e->param)
                      : cJSON_AddNullToObject(x, "param")) ||
        !cJSON_AddStringToObject(x, "code", am_api_error_code(e))) {
        am_free(msg);
        cJSON_Delete(o);
        return NULL;
    }
    am_free(msg);
    return o;
}

/* cJSON's printed string (cJSON's malloc) as an am_free-able copy. */
static char *print_owned(cJSON *o) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL, *d = NULL;
    if (s) {
        size_t n = strlen(s);
        if ((d = am_malloc(n + 1))) memcpy(d, s, n + 1);
        cJSON_free(s);
    }
    cJSON_Delete(o);
    return d;
}

char *am_api_response_json(am_api_kind kind, const char *id, int64_t created, const char *model,
                           const am_api_result *res) {
    return print_owned(am_api_response_obj(kind, id, created, model, res));
}

char *am_api_error_json(const am_api_error *e) { return print_owned(am_api_error_obj(e)); }
