/* api/openai.h - OpenAI request bodies in, anymal client requests out; OpenAI responses
 * and errors back out. No socket: `anymal batch` (tools/cmd_batch.c) and the HTTP
 * gateway both call it on bodies they have read.
 *
 * Requests. am_api_parse turns one body of
 *   POST /v1/chat/completions  {"model", "messages": [...], "max_tokens" | "max_completion_tokens",
 *                               "temperature", "top_p", "seed", "stop", "n", "stream", ...}
 *   POST /v1/completions       {"model", "prompt": "..." | ["..."] | [ids...], same parameters}
 * into the parts and parameters of coordinator/client.h, ready for am_client_submit.
 * A message's content is a string or a list of parts:
 *   {"type": "text", "text": "..."}
 *   {"type": "image_url", "image_url": {"url": U}}            JPEG / PNG / WebP
 *   {"type": "input_audio", "input_audio": {"data": BASE64, "format": "wav|mp3|flac|ogg"}}
 *   {"type": "audio_url", "audio_url": {"url": U}}            WAV / FLAC / OGG / MP3
 *   {"type": "video_url", "video_url": {"url": U, "frames": F}} mp4 / webm / mkv; frames optional
 *   {"type": "imu_url", "imu_url": {"url": U, "format": "csv|npy|f32"}}   our extension
 * where U is "data:<mime>;base64,<data>", "file:///abs/path" or a relative path; both file
 * forms are resolved under the caller's media root (am_api_opts.media_root) and refused when
 * they lead outside it (after symlinks, by realpath) or when there is no media root. Remote
 * URLs (http, https) are refused: the runner fetches nothing from the network.
 *
 * imu_url (docs/batch.md): 6 channels, accelerometer x y z then gyroscope x y z, as
 * `anymal encode --modality imu` takes them: CSV (6 numbers per line, or 7 with a leading
 * timestamp in seconds), .npy (float32/float64, (T,6), (T,7) or (6,T)), or raw
 * little-endian float32 (T,6) at 200 Hz. The format is "format" when given, else the data
 * URL's mime type (text/csv, application/x-npy, application/octet-stream) or the file's
 * extension (.csv, .npy, .f32/.bin/.raw). Raw float32 is sent as a .npy (a 128-byte
 * header put before the same bytes), because the encoder worker recognises .npy by its
 * magic bytes and reads anything else as CSV.
 *
 * The chat template. The shard leader tokenizes each text part on its own (SentencePiece
 * with add_dummy_prefix: every part starts at a word boundary) and puts BOS first
 * (params.no_bos = 0); this module cannot tokenize (it links no tokenizer), so it writes
 * the LLaMA-2-chat template (llm_shards/tokenizer/chat.c, Meta's generation.py) into the
 * text parts:
 *   [BOS] "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} " [EOS] [BOS]
 *   "[INST] {user} [/INST]"
 * with [EOS] [BOS] as token-id parts (LLaMA-2's ids 2 and 1, AM_API_EOS_ID / AM_API_BOS_ID)
 * and each finished turn's text one text part, as generation.py encodes each turn. A
 * text-only dialog thus gives exactly am_chat_encode's ids (test_api checks it with a real
 * tokenizer). A user message with media becomes text parts around media parts:
 *   "[INST] Look:"  <image>  "What is it? [/INST]"
 * The message is stripped as a whole as generation.py does (Python's str.strip), and a
 * text part is also stripped on each side that touches a media part: the tokenizer starts
 * the part after a media item at a word boundary anyway, which stands for the space
 * around the media, and a kept space would add a second one ("▁▁What"). A message that
 * starts or ends with media gets the bare template text ("[INST]", "[/INST]") as its own
 * part. Adjacent text parts of one message are joined with "\n" (as vLLM joins them).
 * Texts holding the template's tags ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>") are
 * refused (400): generation.py refuses them too, and they would forge turns. Roles:
 * an optional "system" (or "developer") first, then "user" and "assistant" alternating,
 * ending with "user"; system and assistant content is text only. /v1/completions prompts
 * are sent raw (BOS + the text, no template).
 *
 * Errors. Every refusal fills an am_api_error: an HTTP status (400 malformed or invalid,
 * 404 unknown url or model, 413 over a size limit), the field at fault as a JSON path
 * ("messages[1].content[0].image_url.url") and a message naming it, the field and the
 * value or limit. am_api_error_json renders OpenAI's error object.
 *
 * Ownership. An am_api_request owns everything its parts and params point to (texts,
 * decoded media, ids, stop strings, the model name); am_api_request_fini frees it all,
 * am_api_request_drop_media frees only the media bytes (after am_client_submit has copied
 * them into the message: a runner keeps no decoded media while it waits for the answer).
 * The request does not point into the parsed JSON: the cJSON tree may be deleted at once.
 * Strings returned by the builders are NUL-terminated, freed with am_free.
 * Thread safety: none needed; no global state.
 */
#ifndef AM_API_OPENAI_H
#define AM_API_OPENAI_H

#include "coordinator/client.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#define AM_API_BOS_ID                   1   /* LLaMA-2's <s> */
#define AM_API_EOS_ID                   2   /* LLaMA-2's </s> */
#define AM_API_DEFAULT_MAX_TOKENS_CHAT  256 /* OpenAI: "up to the context"; ours is fixed */
#define AM_API_DEFAULT_MAX_TOKENS_COMPL 16  /* OpenAI's default for /v1/completions */
#define AM_API_MAX_MESSAGES             128
#define AM_API_MAX_PARAM_BYTES          160 /* am_api_error.param */
#define AM_API_MAX_ERROR_BYTES          1024

typedef enum { AM_API_CHAT = 0, AM_API_COMPLETION = 1 } am_api_kind;

typedef struct am_api_error {
    int status;                         /* 400, 404, 413, ... (0: no error) */
    char param[AM_API_MAX_PARAM_BYTES]; /* JSON path of the field at fault, "" if none */
    char message[AM_API_MAX_ERROR_BYTES];
} am_api_error;

typedef struct am_api_opts {
    const char *media_root;    /* NULL/"": file paths and file:// URLs are refused */
    const char *const *models; /* NULL: any model name is accepted (the cluster decides) */
    int n_models;
    uint32_t max_tokens_limit; /* 0 = AM_PROTO_MAX_TOKENS; larger max_tokens: 400 */
    size_t max_media_bytes;    /* one media item, decoded; 0 = AM_PROTO_MAX_PAYLOAD_BYTES; 413 */
} am_api_opts;

typedef struct am_api_request {
    am_api_kind kind;
    int stream;            /* "stream": true was asked (the caller decides if it serves it) */
    char *model;           /* "" when absent; also params.model */
    am_client_part *parts; /* n_parts of them, ready for am_client_submit */
    int n_parts;
    int n_media;
    size_t media_bytes; /* decoded media held now (0 after am_api_request_drop_media) */
    am_client_params params;
    /* Owned storage the parts point into (opaque). */
    char **strs;
    int n_strs, cap_strs;
    void **media;
    int32_t *ids;
} am_api_request;

/* The kind of an endpoint url ("/v1/chat/completions", "/v1/completions"); 404 otherwise. */
int am_api_url_kind(const char *url, am_api_kind *kind, am_api_error *err);

/* Parses a request body (len bytes of JSON; need not be NUL-terminated) for url into
 * *out. 0, or AM_EINVAL / AM_ERANGE / AM_ENOTFOUND / AM_ENOMEM with *err filled (status,
 * field, message; am_err_msg() says the same) and *out empty. o may be NULL (defaults). */
int am_api_parse(const char *json, size_t len, const char *url, const am_api_opts *o,
                 am_api_request *out, am_api_error *err);
/* The same on an already parsed body (borrowed; *out does not point into it). */
int am_api_parse_body(const cJSON *body, am_api_kind kind, const am_api_opts *o,
                      am_api_request *out, am_api_error *err);
/* Frees the decoded media (parts keep their lengths, data becomes NULL). */
void am_api_request_drop_media(am_api_request *r);
void am_api_request_fini(am_api_request *r);

/* Strict base64 (RFC 4648 section 4, the standard alphabet): length a multiple of 4,
 * '=' only as the last one or two characters, no whitespace, the unused bits of the
 * last group zero. 0 with *out (am_free; *out_len bytes, a NUL after them), or AM_EFORMAT
 * naming the offset and the character, AM_ERANGE past max_out bytes, AM_ENOMEM. */
int am_api_base64_decode(const char *s, size_t n, size_t max_out, void **out, size_t *out_len);

/* The answer to a request, as the client collected it (am_client_result's fields). */
typedef struct am_api_result {
    const char *text;
    size_t text_len;
    uint8_t finish; /* am_fin: LENGTH "length", EOS and STOP "stop", CANCELLED "cancelled" */
    uint32_t prompt_tokens, completion_tokens;
} am_api_result;

/* OpenAI's finish_reason for an am_fin ("length", "stop", "cancelled"; NULL for none). */
const char *am_api_finish_reason(uint8_t finish);

/* The response body: a chat.completion ({"id", "object", "created", "model", "choices":
 * [{"index": 0, "message": {"role": "assistant", "content"}, "finish_reason"}], "usage"})
 * or a text_completion (choices[].text). id and model are copied. NULL when out of memory;
 * free with cJSON_Delete. */
cJSON *am_api_response_obj(am_api_kind kind, const char *id, int64_t created, const char *model,
                           const am_api_result *res);
/* OpenAI's error object {"error": {"message", "type", "param", "code"}}: type
 * "invalid_request_error" (4xx) or "server_error" (5xx), code the status's name
 * ("model_not_found" for a 404 on a model). NULL when out of memory; cJSON_Delete. */
cJSON *am_api_error_obj(const am_api_error *e);
/* The error's code string: "invalid_request" (400), "model_not_found" / "not_found" (404),
 * "timeout" (408), "too_large" (413), "rate_limit_exceeded" (429), "unavailable" (503),
 * "server_error" (other 5xx). */
const char *am_api_error_code(const am_api_error *e);
/* The two above printed compactly (am_free). NULL when out of memory. */
char *am_api_response_json(am_api_kind kind, const char *id, int64_t created, const char *model,
                           const am_api_result *res);
char *am_api_error_json(const am_api_error *e);

/* Fills *e (status, param, printf message) and returns the AM_E* code that goes with the
 * status (AM_ENOTFOUND 404, AM_ERANGE 413, AM_EINTERNAL 5xx, AM_EINVAL otherwise); the
 * message is also am_err_set. For callers that report their own errors in this shape. */
int am_api_fail(am_api_error *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
