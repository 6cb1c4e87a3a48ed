/* tests/fuzz_api.c - libFuzzer target for the gateway's and the batch runner's request
 * parser (api/openai.h am_api_parse: an OpenAI request body and its content parts).
 *
 * Input layout: byte 0 picks the endpoint (chat or completions), the rest is the body.
 * Every input must parse or be refused with a status and a message, without a crash, a
 * leak or undefined behaviour; a parsed request must hold at least one part. Media paths
 * resolve under a root that does not exist, so every file reference is refused.
 * Build and run: deploy/test.sh (clang -fsanitize=fuzzer,address,undefined).
 */
#include "api/openai.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *url = data[0] & 1 ? "/v1/completions" : "/v1/chat/completions";
    const char *const models[] = {"tiny"};
    am_api_opts o = {.media_root = "/nonexistent-fuzz-root",
                     .models = data[0] & 2 ? models : NULL,
                     .n_models = 1,
                     .max_media_bytes = 1 << 20};
    am_api_request r;
    am_api_error err;
    int rc = am_api_parse((const char *)data + 1, size - 1, url, &o, &r, &err);
    if (rc == 0) {
        if (r.n_parts < 1) abort();
        am_api_request_fini(&r);
    } else if (err.status < 400 || err.status > 599 || !err.message[0]) {
        abort(); /* every refusal has a status and says why */
    }
    return 0;
}
