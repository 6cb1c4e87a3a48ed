/* llm_shards/tokenizer/load.c - am_tokenizer_load: reads a tokenizer file and
 * hands it to the loader its content names (model_proto.c or llama2c.c).
 *
 * Kept apart from tokenizer.c, which every loader builds with, so that the
 * calls run one way: load.c -> loaders -> tokenizer.c (they made a circle
 * while the dispatch lived in tokenizer.c).
 */
#include "llm_shards/tokenizer/tok_internal.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"

int am_tokenizer_load(const char *path, am_tokenizer **out) {
    if (!path || !out) return am_err_set(AM_EINVAL, "am_tokenizer_load: NULL argument");
    *out = NULL;
    void *file;
    size_t len;
    int rc = am_read_file_limited(path, AM_TOKENIZER_MAX_FILE_BYTES, &file, &len);
    if (rc) return rc;
    unsigned char *data = file;
    /* A ModelProto starts with field 1 (pieces), length-delimited: byte 0x0A.
     * A tokenizer.bin starts with an int32 max_token_length, which is 0x0A
     * only for a 10-byte maximum; then only a file that walks exactly as
     * llama2.c records is taken as one. */
    if (len > 0 && data[0] == 0x0A && !am__tok_looks_llama2c(data, len))
        rc = am__tok_load_model_proto(data, len, path, out);
    else
        rc = am__tok_load_llama2c(data, len, path, out);
    am_free(data);
    return rc;
}
