/* llm_shards/model_files.c - loading a decoder together with its tokenizer. */
#include "llm_shards/model_files.h"

#include "core/error.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int tokenizer_beside(const char *model_path, char *buf, size_t cap) {
    struct stat st;
    char dir[4096];
    if (stat(model_path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(dir, sizeof dir, "%s", model_path);
    } else {
        const char *slash = strrchr(model_path, '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - model_path) : 1,
                 slash ? model_path : ".");
    }
    static const char *const names[] = {"tokenizer.model", "tokenizer.bin"};
    for (int i = 0; i < 2; i++) {
        if ((size_t)snprintf(buf, cap, "%s/%s", dir, names[i]) >= cap)
            return am_err_set(AM_ERANGE, "path too long: %s/%s", dir, names[i]);
        if (access(buf, R_OK) == 0) return 0;
    }
    return am_err_set(AM_ENOTFOUND,
                      "no tokenizer.model or tokenizer.bin beside %s (give --tokenizer)",
                      model_path);
}

int am_model_files_open(am_model_files *mf, const char *model_path, const char *tok_path,
                        int need_tok) {
    return am_model_files_open_shard(mf, model_path, tok_path, need_tok, 0, 1);
}

int am_model_files_open_shard(am_model_files *mf, const char *model_path, const char *tok_path,
                              int need_tok, int32_t rank, int32_t size) {
    memset(mf, 0, sizeof *mf);
    int rc = am_llama_load_shard(model_path, rank, size, &mf->model);
    if (rc) return rc;
    if (rank != 0) return 0;
    char found[4096];
    if (tok_path) {
        rc = am_tokenizer_load(tok_path, &mf->tok);
    } else if (am_ckpt_get_format(mf->model->ckpt) == AM_CKPT_GGUF &&
               am_ckpt_meta_str(mf->model->ckpt, "tokenizer.ggml.model", &(const char *){0},
                                &(size_t){0}) == 0) {
        rc = am_tokenizer_from_ckpt(mf->model->ckpt, &mf->tok);
    } else if ((rc = tokenizer_beside(model_path, found, sizeof found)) == 0) {
        rc = am_tokenizer_load(found, &mf->tok);
    } else if (!need_tok) {
        am_err_clear();
        return 0;
    }
    if (rc) goto fail;
    /* A model may pad its vocabulary past the tokenizer's pieces (LLaVA-1.5:
     * 32064 rows, 32000 pieces); a tokenizer with more pieces than rows would
     * produce ids the model cannot embed. */
    if (am_tokenizer_n_vocab(mf->tok) > mf->model->cfg.vocab_size) {
        rc = am_err_set(AM_ESHAPE,
                        "the tokenizer has %d pieces but the model %s has a vocabulary of only %d",
                        am_tokenizer_n_vocab(mf->tok), model_path, mf->model->cfg.vocab_size);
        goto fail;
    }
    return 0;
fail:
    am_model_files_close(mf);
    return rc;
}

void am_model_files_close(am_model_files *mf) {
    am_tokenizer_destroy(&mf->tok);
    am_llama_destroy(&mf->model);
}
