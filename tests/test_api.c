/* tests/test_api.c - api/openai.h without a socket: OpenAI bodies -> parts and parameters,
 * the chat template against am_chat_encode, every refusal (status, field, message), strict
 * base64, media roots, the IMU extension, and the response/error JSON.
 *
 * The template check tokenizes the parts the way the shard leader does (BOS, then each
 * text part on its own, ids as given) with LLaMA-2's real tokenizer from
 * $AM_SHARED_DIR/models (a synthetic vocabulary when it is absent) and compares the ids
 * with am_chat_encode, Meta's generation.py transcription.
 */
#include "api/openai.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "llm_shards/tokenizer.h"
#include "test_util.h"

#include <stdlib.h>
#include <unistd.h>

static char media_root[512], golden[512];
static const char *const chat = "/v1/chat/completions";

static int parse(const char *json, am_api_request *r, am_api_error *e) {
    am_api_opts o = {.media_root = media_root};
    return am_api_parse(json, strlen(json), chat, &o, r, e);
}

/* The body must be refused with this status, the field named in param and message. */
static void refused(const char *url, const char *json, const am_api_opts *o, int status,
                    const char *param, const char *needle) {
    am_api_request r;
    am_api_error e;
    am_api_opts def = {.media_root = media_root};
    int rc = am_api_parse(json, strlen(json), url, o ? o : &def, &r, &e);
    CHECK(rc != 0);
    CHECK_EQ_INT(e.status, status);
    if (strcmp(e.param, param) || !strstr(e.message, needle))
        fprintf(stderr, "  body %s\n  -> %d param '%s' message '%s' (want '%s', '%s')\n", json,
                e.status, e.param, e.message, param, needle);
    CHECK(!strcmp(e.param, param));
    CHECK(strstr(e.message, needle) != NULL);
    CHECK(r.parts == NULL && r.n_parts == 0); /* nothing left behind */
}
#define BAD(json, status, param, needle) refused(chat, json, NULL, status, param, needle)

static void setup(void) {
    const char *src = getenv("AM_SOURCE_DIR");
    snprintf(golden, sizeof golden, "%s/tests/golden", src ? src : ".");
    snprintf(media_root, sizeof media_root, "%s", golden);
}

/* ---- base64 ---- */

static void test_base64(void) {
    void *d;
    size_t n;
    CHECK_OK(am_api_base64_decode("aGVsbG8=", 8, 100, &d, &n));
    CHECK_EQ_INT(n, 5);
    CHECK(!memcmp(d, "hello", 5));
    am_free(d);
    CHECK_OK(am_api_base64_decode("aGk=", 4, 100, &d, &n)); /* "hi" */
    CHECK(n == 2 && !memcmp(d, "hi", 2));
    am_free(d);
    CHECK_OK(am_api_base64_decode("YQ==", 4, 100, &d, &n));
    CHECK(n == 1 && ((char *)d)[0] == 'a');
    am_free(d);
    CHECK_OK(am_api_base64_decode("+/+/", 4, 100, &d, &n));
    CHECK(n == 3 && ((unsigned char *)d)[0] == 0xFB && ((unsigned char *)d)[2] == 0xBF);
    am_free(d);
    CHECK_OK(am_api_base64_decode("", 0, 100, &d, &n));
    CHECK_EQ_INT(n, 0);
    am_free(d);
    static const char *const bad[] = {"aGVsbG8",  "aGVs bG8=", "aGVsbG8=\n", "a=Vs",
                                      "aGVs=G8=", "YR==",      "YWI=A===",   "aGV-bG8=",
                                      "aGV_",     "====",      "aGVsbG8%"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        d = (void *)1;
        int rc = am_api_base64_decode(bad[i], strlen(bad[i]), 100, &d, &n);
        if (rc != AM_EFORMAT) fprintf(stderr, "  base64 '%s' -> %d\n", bad[i], rc);
        CHECK_EQ_INT(rc, AM_EFORMAT);
        CHECK(d == NULL);
    }
    CHECK_EQ_INT(am_api_base64_decode("aGVsbG8=", 8, 4, &d, &n), AM_ERANGE);
    CHECK(strstr(am_err_msg(), "limit of 4") != NULL);
}

/* ---- requests ---- */

static void test_text_chat(void) {
    am_api_request r;
    am_api_error e;
    CHECK_OK(
        parse("{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\" Hi there \"}],"
              "\"max_tokens\":7,\"temperature\":0.5,\"top_p\":0.9,\"seed\":42,"
              "\"stop\":[\"a\",\"bc\"],\"n\":1,\"user\":\"ignored\"}",
              &r, &e));
    CHECK_EQ_INT(r.kind, AM_API_CHAT);
    CHECK_EQ_INT(r.n_parts, 1);
    CHECK(r.parts[0].kind == AM_SEG_TEXT);
    CHECK(r.parts[0].text_len == strlen("[INST] Hi there [/INST]") &&
          !memcmp(r.parts[0].text, "[INST] Hi there [/INST]", r.parts[0].text_len));
    CHECK_EQ_INT(r.params.max_tokens, 7);
    CHECK_NEAR(r.params.temperature, 0.5, 1e-7);
    CHECK_NEAR(r.params.top_p, 0.9, 1e-7);
    CHECK_EQ_INT(r.params.seed, 42);
    CHECK_EQ_INT(r.params.n_stop, 2);
    CHECK(!strcmp(r.params.stop[1], "bc"));
    CHECK(!strcmp(r.params.model, "tiny") && !strcmp(r.model, "tiny"));
    CHECK_EQ_INT(r.params.no_bos, 0);
    am_api_request_fini(&r);
    am_api_request_fini(&r); /* twice is harmless */
    /* max_completion_tokens wins; defaults */
    CHECK_OK(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":3,"
                   "\"max_completion_tokens\":5,\"stop\":\"z\"}",
                   &r, &e));
    CHECK_EQ_INT(r.params.max_tokens, 5);
    CHECK(r.params.n_stop == 1 && !strcmp(r.params.stop[0], "z"));
    CHECK(!strcmp(r.model, "") && r.params.temperature == 0);
    am_api_request_fini(&r);
    CHECK_OK(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r, &e));
    CHECK_EQ_INT(r.params.max_tokens, AM_API_DEFAULT_MAX_TOKENS_CHAT);
    am_api_request_fini(&r);
}

static void test_completion(void) {
    am_api_request r;
    am_api_error e;
    const char *b = "{\"prompt\":\"Once upon\",\"max_tokens\":4}";
    CHECK_OK(am_api_parse(b, strlen(b), "/v1/completions", NULL, &r, &e));
    CHECK_EQ_INT(r.kind, AM_API_COMPLETION);
    CHECK(r.n_parts == 1 && r.parts[0].text_len == 9 && !memcmp(r.parts[0].text, "Once upon", 9));
    am_api_request_fini(&r);
    b = "{\"prompt\":[\"one\"]}";
    CHECK_OK(am_api_parse(b, strlen(b), "/v1/completions", NULL, &r, &e));
    CHECK(r.n_parts == 1 && r.parts[0].text_len == 3);
    CHECK_EQ_INT(r.params.max_tokens, AM_API_DEFAULT_MAX_TOKENS_COMPL);
    am_api_request_fini(&r);
    b = "{\"prompt\":[1,15043,29892]}";
    CHECK_OK(am_api_parse(b, strlen(b), "/v1/completions", NULL, &r, &e));
    CHECK(r.n_parts == 1 && r.parts[0].kind == AM_SEG_IDS && r.parts[0].n_ids == 3 &&
          r.parts[0].ids[1] == 15043);
    am_api_request_fini(&r);
    b = "{\"prompt\":\"\"}";
    CHECK_OK(am_api_parse(b, strlen(b), "/v1/completions", NULL, &r, &e));
    CHECK(r.n_parts == 1 && r.parts[0].text_len == 0);
    am_api_request_fini(&r);
}

/* The segments of a user message with media, one of each kind. */
static void test_media_parts(void) {
    am_api_request r;
    am_api_error e;
    char body[2048];
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
             "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Look: \"},"
             "{\"type\":\"image_url\",\"image_url\":{\"url\":\"vision/images/land_q90.jpg\"}},"
             "{\"type\":\"text\",\"text\":\" and\"},{\"type\":\"text\",\"text\":\"listen \"},"
             "{\"type\":\"audio_url\",\"audio_url\":{\"url\":\"file://%s/audio/speech48.wav\"}},"
             "{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"UklGRiQAAABXQVZF\","
             "\"format\":\"wav\"}},"
             "{\"type\":\"video_url\",\"video_url\":{\"url\":\"vision/video/clip.mp4\","
             "\"frames\":4}},"
             "{\"type\":\"imu_url\",\"imu_url\":{\"url\":\"imu/imu50.npy\"}}]}]}",
             golden);
    CHECK_OK(parse(body, &r, &e));
    /* "[INST] <<SYS>>...Look:" img "and\nlisten" aud aud "" vid "" imu "[/INST]" */
    CHECK_EQ_INT(r.n_parts, 8);
    CHECK_EQ_INT(r.n_media, 5);
    const char *t0 = "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nLook:";
    CHECK(r.parts[0].kind == AM_SEG_TEXT && r.parts[0].text_len == strlen(t0) &&
          !memcmp(r.parts[0].text, t0, strlen(t0)));
    CHECK(r.parts[1].kind == AM_SEG_MEDIA && r.parts[1].modality == AM_MOD_IMAGE);
    CHECK(r.parts[2].kind == AM_SEG_TEXT && r.parts[2].text_len == 10 &&
          !memcmp(r.parts[2].text, "and\nlisten", 10));
    CHECK(r.parts[3].modality == AM_MOD_AUDIO && r.parts[4].modality == AM_MOD_AUDIO);
    CHECK_EQ_INT(r.parts[4].len, 12);
    CHECK(r.parts[5].modality == AM_MOD_VIDEO && r.parts[5].frames == 4);
    CHECK(r.parts[6].modality == AM_MOD_IMU);
    CHECK(r.parts[7].kind == AM_SEG_TEXT && r.parts[7].text_len == 7 &&
          !memcmp(r.parts[7].text, "[/INST]", 7));
    /* The image's bytes are the file's. */
    void *img;
    size_t n;
    char p[700];
    snprintf(p, sizeof p, "%s/vision/images/land_q90.jpg", golden);
    CHECK_OK(am_read_file_limited(p, 1 << 26, &img, &n));
    CHECK(r.parts[1].len == n && !memcmp(r.parts[1].data, img, n));
    am_free(img);
    CHECK(r.media_bytes > n);
    am_api_request_drop_media(&r);
    CHECK(r.parts[1].data == NULL && r.media_bytes == 0);
    am_api_request_fini(&r);
    /* Media first: the bare template text around it. */
    CHECK_OK(parse("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
                   "\"image_url\":{\"url\":\"vision/images/land_q90.jpg\"}}]}]}",
                   &r, &e));
    CHECK_EQ_INT(r.n_parts, 3);
    CHECK(r.parts[0].text_len == 6 && !memcmp(r.parts[0].text, "[INST]", 6));
    CHECK(r.parts[2].text_len == 7 && !memcmp(r.parts[2].text, "[/INST]", 7));
    am_api_request_fini(&r);
}

/* IMU: CSV and raw float32 (sent as .npy), by mime type, extension or "format". */
static void test_imu(void) {
    am_api_request r;
    am_api_error e;
    CHECK_OK(parse("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"imu_url\","
                   "\"imu_url\":{\"url\":\"imu/imu50_200hz.f32\"}}]}]}",
                   &r, &e));
    void *raw;
    size_t n;
    char p[700];
    snprintf(p, sizeof p, "%s/imu/imu50_200hz.f32", golden);
    CHECK_OK(am_read_file_limited(p, 1 << 26, &raw, &n));
    const am_client_part *q = &r.parts[1];
    CHECK(q->modality == AM_MOD_IMU && q->len == n + 128);
    CHECK(!memcmp(q->data, "\x93NUMPY\x01\x00", 8) && ((const char *)q->data)[127] == '\n');
    CHECK(strstr((const char *)q->data + 10, "'shape': (") != NULL);
    CHECK(!memcmp((const char *)q->data + 128, raw, n));
    am_free(raw);
    am_api_request_fini(&r);
    /* A data URL: base64 of "1,2,3,4,5,6\n" as text/csv, kept as is */
    CHECK_OK(parse("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"imu_url\","
                   "\"imu_url\":{\"url\":\"data:text/csv;base64,MSwyLDMsNCw1LDYK\"}}]}]}",
                   &r, &e));
    CHECK(r.parts[1].len == 12 && !memcmp(r.parts[1].data, "1,2,3,4,5,6\n", 12));
    am_api_request_fini(&r);
    /* format f32 on a data URL of 24 zero bytes */
    CHECK_OK(parse("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"imu_url\","
                   "\"imu_url\":{\"url\":\"data:application/x-whatever;base64,"
                   "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\",\"format\":\"f32\"}}]}]}",
                   &r, &e));
    CHECK_EQ_INT(r.parts[1].len, 24 + 128);
    am_api_request_fini(&r);
}

/* ---- the chat template equals am_chat_encode ---- */

static am_tokenizer *load_tok(void) {
    const char *sh = getenv("AM_SHARED_DIR");
    char p[600];
    am_tokenizer *t = NULL;
    snprintf(p, sizeof p, "%s/models/tokenizer.model", sh ? sh : "../shared");
    if (access(p, R_OK) || am_tokenizer_load(p, &t)) {
        fprintf(stderr, "  (LLaMA-2 tokenizer not found: a synthetic vocabulary)\n");
        CHECK_OK(am_tokenizer_synthetic(4000, &t));
    }
    return t;
}

/* The prompt ids the shard leader makes of r's parts (text-only requests). */
static int64_t leader_ids(const am_tokenizer *t, const am_api_request *r, int32_t *out) {
    int64_t n = 0;
    out[n++] = am_tokenizer_bos(t);
    for (int i = 0; i < r->n_parts; i++) {
        const am_client_part *q = &r->parts[i];
        if (q->kind == AM_SEG_IDS) {
            memcpy(out + n, q->ids, q->n_ids * sizeof *out);
            n += q->n_ids;
            continue;
        }
        int32_t *ids;
        int64_t k;
        CHECK_OK(am_tokenizer_encode(t, q->text, q->text_len, 0, &ids, &k));
        memcpy(out + n, ids, (size_t)k * sizeof *out);
        n += k;
        am_free(ids);
    }
    return n;
}

static void test_template_equals_chat_encode(void) {
    am_tokenizer *t = load_tok();
    if (!t) return;
    CHECK_EQ_INT(am_tokenizer_bos(t), AM_API_BOS_ID);
    static const struct {
        const char *body;
        am_chat_msg msgs[6];
        int n;
    } cases[] = {
        {"[{\"role\":\"user\",\"content\":\"What is a llama?\"}]",
         {{"user", "What is a llama?"}},
         1},
        {"[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"  Hi "
         "\\u3000\"}]",
         {{"system", "Be brief."}, {"user", "  Hi \xE3\x80\x80"}},
         2},
        {"[{\"role\":\"user\",\"content\":\"Hello\"},{\"role\":\"assistant\",\"content\":\" Hi! "
         "\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"How\"},{\"type\":"
         "\"text\",\"text\":\"are you?\"}]}]",
         {{"user", "Hello"}, {"assistant", " Hi! "}, {"user", "How\nare you?"}},
         3},
        {"[{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"S\"}]},{\"role\":"
         "\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":\"b\"},{\"role\":"
         "\"user\",\"content\":\"c\\n\"},{\"role\":\"assistant\",\"content\":\"d\"},{\"role\":"
         "\"user\",\"content\":\"e\"}]",
         {{"system", "S"},
          {"user", "a"},
          {"assistant", "b"},
          {"user", "c\n"},
          {"assistant", "d"},
          {"user", "e"}},
         6},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char body[1024];
        snprintf(body, sizeof body, "{\"messages\":%s}", cases[c].body);
        am_api_request r;
        am_api_error e;
        CHECK_OK(parse(body, &r, &e));
        int32_t got[512];
        int64_t n_got = leader_ids(t, &r, got), n_want;
        int32_t *want;
        CHECK_OK(am_chat_encode(t, cases[c].msgs, cases[c].n, &want, &n_want));
        int same = n_got == n_want && !memcmp(got, want, (size_t)n_want * sizeof *want);
        if (!same)
            fprintf(stderr, "  case %zu: %lld ids vs %lld\n", c, (long long)n_got,
                    (long long)n_want);
        CHECK(same);
        am_free(want);
        am_api_request_fini(&r);
    }
    am_tokenizer_destroy(&t);
}

/* ---- refusals: status, field, message ---- */

#define USER(content) "{\"messages\":[{\"role\":\"user\",\"content\":" content "}]"
#define PART(p)       USER("[" p "]") "}"

static void test_bad_json_and_url(void) {
    am_api_request r;
    am_api_error e;
    CHECK(am_api_parse("{\"messages\": [", 14, chat, NULL, &r, &e) == AM_EINVAL);
    CHECK(e.status == 400 && !strcmp(e.param, "body") && strstr(e.message, "not valid JSON"));
    refused("/v1/embeddings", "{}", NULL, 404, "url", "/v1/embeddings");
    refused(NULL, "{}", NULL, 404, "url", "(none)");
    BAD("[1,2]", 400, "body", "JSON object");
    BAD("{\"prompt\":\"x\"}", 400, "messages", "messages must be a list");
    BAD("{\"messages\":[]}", 400, "messages", "empty");
    refused("/v1/completions", "{\"prompt\":5}", NULL, 400, "prompt", "prompt must be");
    refused("/v1/completions", "{\"prompt\":[\"a\",\"b\"]}", NULL, 400, "prompt", "not a token id");
    refused("/v1/completions", "{\"prompt\":[1,-2]}", NULL, 400, "prompt", "prompt[1]");
}

static void test_bad_params(void) {
    BAD(USER("\"x\"") ",\"max_tokens\":0}", 400, "max_tokens", "at least 1");
    BAD(USER("\"x\"") ",\"max_tokens\":2.5}", 400, "max_tokens", "integer");
    BAD(USER("\"x\"") ",\"max_tokens\":\"9\"}", 400, "max_tokens", "must be a number");
    BAD(USER("\"x\"") ",\"max_tokens\":2000000}", 400, "max_tokens", "over the limit of 1048576");
    BAD(USER("\"x\"") ",\"max_completion_tokens\":-1}", 400, "max_completion_tokens", "at least");
    am_api_opts lim = {.max_tokens_limit = 64};
    refused(chat, USER("\"x\"") ",\"max_tokens\":65}", &lim, 400, "max_tokens",
            "over the limit of 64");
    BAD(USER("\"x\"") ",\"temperature\":2.5}", 400, "temperature", "outside [0, 2]");
    BAD(USER("\"x\"") ",\"top_p\":0}", 400, "top_p", "(0, 1]");
    BAD(USER("\"x\"") ",\"top_p\":1.5}", 400, "top_p", "outside");
    BAD(USER("\"x\"") ",\"seed\":1.5}", 400, "seed", "integer");
    BAD(USER("\"x\"") ",\"n\":2}", 400, "n", "only n = 1");
    BAD(USER("\"x\"") ",\"best_of\":3}", 400, "best_of", "only 1");
    BAD(USER("\"x\"") ",\"stream\":\"yes\"}", 400, "stream", "true or false");
    BAD(USER("\"x\"") ",\"stop\":5}", 400, "stop", "string or a list");
    BAD(USER("\"x\"") ",\"stop\":[\"a\",3]}", 400, "stop[1]", "must be a string");
    BAD(USER("\"x\"") ",\"stop\":\"\"}", 400, "stop", "want 1..256");
    BAD(USER(
            "\"x\"") ",\"stop\":[\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\","
                     "\"a\",\"a\",\"a\",\"a\",\"a\",\"a\"]}",
        400, "stop", "at most 16");
    BAD(USER("\"x\"") ",\"logprobs\":true}", 400, "logprobs", "not supported");
    BAD(USER("\"x\"") ",\"presence_penalty\":0.5}", 400, "presence_penalty", "not supported");
    BAD(USER("\"x\"") ",\"tools\":[{\"type\":\"function\"}]}", 400, "tools", "not supported");
    BAD(USER("\"x\"") ",\"response_format\":{\"type\":\"json_object\"}}", 400, "response_format",
        "structured output");
    BAD(USER("\"x\"") ",\"model\":7}", 400, "model", "must be a string");
    static const char *const models[] = {"tiny", "7b"};
    am_api_opts mo = {.models = models, .n_models = 2};
    refused(chat, USER("\"x\"") ",\"model\":\"gpt-4\"}", &mo, 404, "model",
            "The model 'gpt-4' does not exist");
    am_api_request r;
    am_api_error e;
    const char *ok = USER("\"x\"") ",\"model\":\"7b\"}";
    CHECK_OK(am_api_parse(ok, strlen(ok), chat, &mo, &r, &e));
    am_api_request_fini(&r);
}

static void test_bad_messages(void) {
    BAD("{\"messages\":[5]}", 400, "messages[0]", "object with a string \"role\"");
    BAD("{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 400, "messages[0].role",
        "'tool'");
    BAD("{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"}]}", 400, "messages[0].role",
        "expected 'user'");
    BAD("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"user\",\"content\":"
        "\"y\"}]}",
        400, "messages[1].role", "expected 'assistant'");
    BAD("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\","
        "\"content\":\"y\"}]}",
        400, "messages", "last message must be from 'user'");
    BAD("{\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", 400, "messages",
        "followed by a user message");
    BAD("{\"messages\":[{\"role\":\"system\",\"content\":[{\"type\":\"image_url\"}]},{\"role\":"
        "\"user\",\"content\":\"y\"}]}",
        400, "messages[0].content[0]", "text parts only");
    BAD(USER("5") "}", 400, "messages[0].content", "string or a list of parts");
    BAD(USER("\"a [INST] b\"") "}", 400, "messages[0].content", "chat template tag");
    BAD(PART("{\"type\":\"text\",\"text\":\"<</SYS>>\"}"), 400, "messages[0].content[0]",
        "template tag");
    BAD(PART("{\"type\":\"text\"}"), 400, "messages[0].content[0]", ".text must be a string");
    BAD(PART("{\"text\":\"x\"}"), 400, "messages[0].content[0]", "with a \"type\"");
    BAD(PART("{\"type\":\"file\",\"file\":{}}"), 400, "messages[0].content[0]",
        "unsupported content part type 'file'");
    BAD(PART("{\"type\":\"input_text\",\"text\":\"x\"}"), 400, "messages[0].content[0]",
        "unsupported content part type 'input_text'");
}

static void test_bad_media(void) {
    BAD(PART("{\"type\":\"image_url\",\"image_url\":\"x.jpg\"}"), 400,
        "messages[0].content[0].image_url", "must be an object");
    BAD(PART("{\"type\":\"image_url\",\"image_url\":{}}"), 400,
        "messages[0].content[0].image_url.url", "non-empty string");
    BAD(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.org/a.jpg\"}}"), 400,
        "messages[0].content[0].image_url.url", "'https' URLs are not fetched");
    BAD(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png,abc\"}}"), 400,
        "messages[0].content[0].image_url.url", "must be base64");
    BAD(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,ab!=\"}}"),
        400, "messages[0].content[0].image_url.url", "offset 2");
    BAD(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,\"}}"), 400,
        "messages[0].content[0].image_url.url", "holds no bytes");
    BAD(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:audio/wav;base64,YQ==\"}}"),
        400, "messages[0].content[0].image_url.url", "'audio/wav' where image/*");
    BAD(PART("{\"type\":\"video_url\",\"video_url\":{\"url\":\"vision/video/nope.mp4\"}}"), 400,
        "messages[0].content[0].video_url.url", "'vision/video/nope.mp4' not found");
    BAD(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":\"../../../../../../../../etc/"
             "passwd\"}}"),
        400, "messages[0].content[0].image_url.url", "outside the media root");
    BAD(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":\"file:///etc/passwd\"}}"), 400,
        "messages[0].content[0].image_url.url", "outside the media root");
    BAD(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":\"file://host/x\"}}"), 400,
        "messages[0].content[0].image_url.url", "no host");
    BAD(PART("{\"type\":\"image_url\",\"image_url\":{\"url\":\"a%zz.jpg\"}}"), 400,
        "messages[0].content[0].image_url.url", "malformed path");
    /* A symlink inside a root that leads out of it. */
    char tmp[] = "/tmp/test_api.XXXXXX", link[64];
    CHECK(mkdtemp(tmp) != NULL);
    snprintf(link, sizeof link, "%s/out.jpg", tmp);
    CHECK(symlink("/etc/hostname", link) == 0);
    am_api_opts in_tmp = {.media_root = tmp};
    refused(chat, PART("{\"type\":\"image_url\",\"image_url\":{\"url\":\"out.jpg\"}}"), &in_tmp,
            400, "messages[0].content[0].image_url.url", "outside the media root");
    unlink(link);
    rmdir(tmp);
    am_api_opts noroot = {0};
    refused(chat,
            PART("{\"type\":\"image_url\",\"image_url\":{\"url\":\"vision/images/land_q90.jpg\"}}"),
            &noroot, 400, "messages[0].content[0].image_url.url", "no media root");
    am_api_opts small = {.media_root = media_root, .max_media_bytes = 1000};
    refused(chat,
            PART("{\"type\":\"image_url\",\"image_url\":{\"url\":\"vision/images/land_q90.jpg\"}}"),
            &small, 413, "messages[0].content[0].image_url.url", "over the limit of 1000");
    refused(chat,
            PART("{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
                 "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\"}}"),
            &small, 413, "messages[0].content[0].image_url.url", "over the limit of 1000");
    BAD(PART("{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"YQ==\",\"format\":\"aac\"}}"),
        400, "messages[0].content[0].input_audio.format", "\"wav\", \"mp3\"");
    BAD(PART("{\"type\":\"input_audio\",\"input_audio\":{\"format\":\"wav\"}}"), 400,
        "messages[0].content[0].input_audio.data", "base64 string");
    BAD(PART("{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"YQ=\",\"format\":\"wav\"}}"),
        400, "messages[0].content[0].input_audio.data", "multiple of 4");
    BAD(PART("{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"T2dnUw==\",\"format\":"
             "\"flac\"}}"),
        400, "messages[0].content[0].input_audio.data", "is not flac audio");
    BAD(PART("{\"type\":\"video_url\",\"video_url\":{\"url\":\"vision/video/clip.mp4\","
             "\"frames\":0}}"),
        400, "messages[0].content[0].video_url.frames", "1..256");
    BAD(PART("{\"type\":\"imu_url\",\"imu_url\":{\"url\":\"data:image/png;base64,YQ==\"}}"), 400,
        "messages[0].content[0].imu_url", "IMU data of type 'image/png'");
    BAD(PART("{\"type\":\"imu_url\",\"imu_url\":{\"url\":\"vision/images/land_q90.jpg\"}}"), 400,
        "messages[0].content[0].imu_url", "cannot tell the IMU format");
    BAD(PART("{\"type\":\"imu_url\",\"imu_url\":{\"url\":\"imu/imu100.csv\",\"format\":\"xml\"}}"),
        400, "messages[0].content[0].imu_url.format", "\"csv\", \"npy\" or \"f32\"");
    BAD(PART("{\"type\":\"imu_url\",\"imu_url\":{\"url\":\"imu/imu100.csv\",\"format\":\"npy\"}}"),
        400, "messages[0].content[0].imu_url.url", "not a .npy file");
    BAD(PART("{\"type\":\"imu_url\",\"imu_url\":{\"url\":\"data:application/octet-stream;base64,"
             "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}}"),
        400, "messages[0].content[0].imu_url.url", "not a whole number of 6-channel samples");
    /* 33 media items */
    char body[8192] = "{\"messages\":[{\"role\":\"user\",\"content\":[";
    for (int i = 0; i < 33; i++)
        strcat(body, "{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"T2dnUw==\","
                     "\"format\":\"ogg\"}},");
    body[strlen(body) - 1] = '\0';
    strcat(body, "]}]}");
    BAD(body, 413, "messages[0].content[32]", "more than 32 media items");
}

/* ---- responses ---- */

static void test_response_json(void) {
    am_api_result res = {.text = "hi \xFF there",
                         .text_len = 10,
                         .finish = AM_FIN_EOS,
                         .prompt_tokens = 12,
                         .completion_tokens = 4};
    char *s = am_api_response_json(AM_API_CHAT, "chatcmpl-7", 1700000000, "tiny", &res);
    CHECK(s != NULL);
    cJSON *o = cJSON_Parse(s);
    CHECK(o != NULL);
    CHECK(!strcmp(cJSON_GetObjectItem(o, "object")->valuestring, "chat.completion"));
    CHECK(!strcmp(cJSON_GetObjectItem(o, "id")->valuestring, "chatcmpl-7"));
    CHECK(cJSON_GetObjectItem(o, "created")->valuedouble == 1700000000);
    cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
    cJSON *m = cJSON_GetObjectItem(c, "message");
    CHECK(!strcmp(cJSON_GetObjectItem(m, "role")->valuestring, "assistant"));
    CHECK(!strcmp(cJSON_GetObjectItem(m, "content")->valuestring, "hi \xEF\xBF\xBD there"));
    CHECK(!strcmp(cJSON_GetObjectItem(c, "finish_reason")->valuestring, "stop"));
    cJSON *u = cJSON_GetObjectItem(o, "usage");
    CHECK(cJSON_GetObjectItem(u, "total_tokens")->valuedouble == 16);
    cJSON_Delete(o);
    am_free(s);
    res.finish = AM_FIN_LENGTH;
    s = am_api_response_json(AM_API_COMPLETION, "cmpl-1", 1, "", &res);
    o = cJSON_Parse(s);
    c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
    CHECK(!strcmp(cJSON_GetObjectItem(o, "object")->valuestring, "text_completion"));
    CHECK(cJSON_GetObjectItem(c, "text") && !cJSON_GetObjectItem(c, "message"));
    CHECK(!strcmp(cJSON_GetObjectItem(c, "finish_reason")->valuestring, "length"));
    cJSON_Delete(o);
    am_free(s);
    am_api_error e;
    CHECK_EQ_INT(am_api_fail(&e, 404, "model", "The model '%s' does not exist", "x"), AM_ENOTFOUND);
    s = am_api_error_json(&e);
    CHECK(s && !strcmp(s, "{\"error\":{\"message\":\"The model 'x' does not exist\",\"type\":"
                          "\"invalid_request_error\",\"param\":\"model\",\"code\":"
                          "\"model_not_found\"}}"));
    am_free(s);
    CHECK_EQ_INT(am_api_fail(&e, 413, "", "big"), AM_ERANGE);
    CHECK(!strcmp(am_api_error_code(&e), "too_large"));
    CHECK_EQ_INT(am_api_fail(&e, 503, "", "gone"), AM_EINTERNAL);
    s = am_api_error_json(&e);
    CHECK(s && strstr(s, "\"type\":\"server_error\"") && strstr(s, "\"param\":null"));
    am_free(s);
}

/* Allocation failures anywhere in a parse leave nothing behind (ASan checks the leaks). */
static void test_alloc_failures(void) {
    char body[1024];
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\","
             "\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"imu_url\",\"imu_url\":"
             "{\"url\":\"imu/imu50_200hz.f32\"}}]},{\"role\":\"assistant\",\"content\":\"b\"},"
             "{\"role\":\"user\",\"content\":\"c\"}],\"stop\":[\"x\",\"y\"]}");
    int ok = 0;
    for (int k = 0; k < 60 && !ok; k++) {
        am_api_request r;
        am_api_error e;
        am_alloc_fail_after(k);
        int rc = parse(body, &r, &e);
        am_alloc_fail_after(-1);
        if (!rc) ok = 1;
        am_api_request_fini(&r);
    }
    CHECK(ok);
}

AM_TEST_MAIN(AM_TEST(setup), AM_TEST(test_base64), AM_TEST(test_text_chat),
             AM_TEST(test_completion), AM_TEST(test_media_parts), AM_TEST(test_imu),
             AM_TEST(test_template_equals_chat_encode), AM_TEST(test_bad_json_and_url),
             AM_TEST(test_bad_params), AM_TEST(test_bad_messages), AM_TEST(test_bad_media),
             AM_TEST(test_response_json), AM_TEST(test_alloc_failures))
