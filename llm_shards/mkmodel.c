/* llm_shards/mkmodel.c - writing random-init LLaMA checkpoints in every supported format. */
#include "llm_shards/mkmodel.h"

#include "core/alloc.h"
#include "core/ckpt.h"
#include "core/error.h"
#include "core/log.h"
#include "llm_shards/tokenizer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static const struct {
    const char *name;
    am_llama_config cfg; /* dim, layers, heads, kv heads, head_dim, ffn, vocab, ctx, eps, theta */
} shapes[] = {
    {"tiny", {64, 2, 4, 2, 16, 192, 512, 512, 1e-5f, 10000.0f}},
    {"15m", {288, 6, 6, 6, 48, 768, 32000, 256, 1e-5f, 10000.0f}},
    {"110m", {768, 12, 12, 12, 64, 2048, 32000, 1024, 1e-5f, 10000.0f}},
    {"1b", {2048, 22, 32, 4, 64, 5632, 32000, 2048, 1e-5f, 10000.0f}},
    {"7b", {4096, 32, 32, 32, 128, 11008, 32000, 4096, 1e-5f, 10000.0f}},
    {"13b", {5120, 40, 40, 40, 128, 13824, 32000, 4096, 1e-5f, 10000.0f}},
    {"70b", {8192, 80, 64, 8, 128, 28672, 32000, 4096, 1e-5f, 10000.0f}},
};
#define N_SHAPES (sizeof shapes / sizeof shapes[0])

const char *am_mkmodel_shape_names(void) { return "tiny, 15m, 110m, 1b, 7b, 13b, 70b"; }

int am_mkmodel_shape(const char *name, int32_t n_layers, am_llama_config *out) {
    for (size_t i = 0; i < N_SHAPES; i++) {
        if (strcasecmp(name, shapes[i].name) == 0) {
            *out = shapes[i].cfg;
            if (n_layers > 0) out->n_layers = n_layers;
            return am_llama_config_check(out);
        }
    }
    return am_err_set(AM_EINVAL, "unknown shape '%s' (known: %s)", name, am_mkmodel_shape_names());
}

int am_mkmodel_parse_format(const char *name, am_model_format *out) {
    static const char *const names[] = {"safetensors", "gguf", "llama2c"};
    for (int i = 0; i < 3; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (am_model_format)i;
            return 0;
        }
    }
    return am_err_set(AM_EINVAL, "unknown format '%s' (want safetensors, gguf or llama2c)", name);
}

/* ---- deterministic values --------------------------------------------------- */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1), a pure function of (stream, i). */
static float unit_uniform(uint64_t stream, uint64_t i) {
    uint64_t r = mix64(stream + 0x9e3779b97f4a7c15ull * (i + 1));
    return (float)(int64_t)(r >> 40) / 8388608.0f - 1.0f;
}

static uint64_t stream_of(uint64_t seed, int role, int layer) {
    return mix64(seed * 0x100000001b3ull + (uint64_t)role * 0x10001ull +
                 (uint64_t)(layer + 1) * 0x1000193ull);
}

/* Fills (rows, cols) f32 in Meta layout for a role. */
static void fill_tensor(float *dst, int64_t rows, int64_t cols, uint64_t seed, int role,
                        int layer) {
    uint64_t st = stream_of(seed, role, layer);
    int64_t n = rows * cols;
    if (role == AM_W_NORM || role == AM_W_ATTN_NORM || role == AM_W_FFN_NORM) {
        for (int64_t i = 0; i < n; i++)
            dst[i] = 1.0f + 0.1f * unit_uniform(st, (uint64_t)i);
        return;
    }
    /* Uniform(-a, a) has variance a^2/3: a = sqrt(3/fan_in) gives variance 1/fan_in. */
    float a = role == AM_W_TOK ? sqrtf(3.0f) : sqrtf(3.0f / (float)cols);
    for (int64_t i = 0; i < n; i++)
        dst[i] = a * unit_uniform(st, (uint64_t)i);
}

/* HF stores q/k rows permuted so that rotate_half pairs (i, i + D/2) are Meta's
 * (2i, 2i + 1): HF row h*D + j*D/2 + i = Meta row h*D + 2i + j. */
static void permute_for_hf(const float *meta, float *hf, int n_heads, int head_dim, int64_t cols) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < half; i++)
                memcpy(hf + ((int64_t)h * head_dim + j * half + i) * cols,
                       meta + ((int64_t)h * head_dim + 2 * i + j) * cols,
                       (size_t)cols * sizeof(float));
}

/* ---- the tensor list ----------------------------------------------------- */

typedef struct {
    am_tensor_src src;
    void *owned;
} out_tensor;

typedef struct {
    out_tensor *t;
    int64_t n, cap;
} tensor_list;

static void tensor_list_free(tensor_list *l) {
    for (int64_t i = 0; i < l->n; i++) {
        am_aligned_free(l->t[i].owned);
        am_free((char *)l->t[i].src.name);
    }
    am_free(l->t);
    memset(l, 0, sizeof *l);
}

/* Generates one tensor (rows, cols) for role/layer, converts it to dtype and
 * appends it under name. n_dims 1 for vectors. hf_heads > 0 permutes rows. */
static int add_tensor(tensor_list *l, const char *name, int role, int layer, int64_t rows,
                      int64_t cols, int n_dims, am_dtype dtype, uint64_t seed, int hf_heads,
                      int head_dim) {
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 64;
        out_tensor *t = am_realloc(l->t, (size_t)cap * sizeof *t);
        if (!t) return AM_ENOMEM;
        l->t = t;
        l->cap = cap;
    }
    size_t row_bytes = am_dtype_row_bytes(dtype, cols);
    if (!row_bytes)
        return am_err_set(
            AM_EINVAL, "tensor %s: %lld columns are not a multiple of %lld (needed by %s)", name,
            (long long)cols, (long long)am_dtype_block_elems(dtype), am_dtype_name(dtype));
    float *f = am_aligned_alloc((size_t)(rows * cols) * sizeof(float));
    void *data = dtype == AM_DTYPE_F32 ? NULL : am_aligned_alloc(row_bytes * (size_t)rows);
    char *nm = am_strdup(name);
    if (!f || (dtype != AM_DTYPE_F32 && !data) || !nm) {
        am_aligned_free(f);
        am_aligned_free(data);
        am_free(nm);
        return am_err_set(AM_ENOMEM, "tensor %s: cannot allocate %lld x %lld", name,
                          (long long)rows, (long long)cols);
    }
    fill_tensor(f, rows, cols, seed, role, layer);
    if (hf_heads > 0) {
        float *perm = am_aligned_alloc((size_t)(rows * cols) * sizeof(float));
        if (!perm) {
            am_aligned_free(f);
            am_aligned_free(data);
            am_free(nm);
            return AM_ENOMEM;
        }
        permute_for_hf(f, perm, hf_heads, head_dim, cols);
        am_aligned_free(f);
        f = perm;
    }
    if (dtype != AM_DTYPE_F32) {
        for (int64_t r = 0; r < rows; r++)
            am_quantize_row(dtype, f + r * cols, (char *)data + (size_t)r * row_bytes, cols);
        am_aligned_free(f);
    } else {
        data = f;
    }
    out_tensor *t = &l->t[l->n++];
    t->owned = data;
    t->src = (am_tensor_src){.name = nm,
                             .dtype = dtype,
                             .n_dims = n_dims,
                             .data = data,
                             .nbytes = row_bytes * (size_t)rows};
    if (n_dims == 1) {
        t->src.shape[0] = cols;
    } else {
        t->src.shape[0] = rows;
        t->src.shape[1] = cols;
    }
    return 0;
}

/* All tensors of the model in the given naming; norms stay f32 in GGUF (as
 * llama.cpp writes them) and follow dtype in safetensors (as HF does). */
static int build_tensors(const am_llama_config *cfg, const am_mkmodel_opts *o, tensor_list *l) {
    am_llama_naming naming = o->format == AM_FORMAT_GGUF ? AM_NAMES_GGUF : AM_NAMES_HF;
    int hf = o->format == AM_FORMAT_SAFETENSORS;
    am_dtype norm_dtype = o->format == AM_FORMAT_GGUF ? AM_DTYPE_F32 : o->dtype;
    int64_t C = cfg->dim, F = cfg->ffn_dim, V = cfg->vocab_size, D = cfg->head_dim;
    int64_t QD = (int64_t)cfg->n_heads * D, KD = (int64_t)cfg->n_kv_heads * D;
    char name[AM_CKPT_MAX_NAME_BYTES];
    int rc;
    if ((rc = add_tensor(l, am_llama_weight_name(naming, AM_W_TOK), AM_W_TOK, -1, V, C, 2, o->dtype,
                         o->seed, 0, 0)))
        return rc;
    for (int layer = 0; layer < cfg->n_layers; layer++) {
        const struct {
            int role;
            int64_t rows, cols;
            int n_dims, heads;
        } spec[] = {
            {AM_W_ATTN_NORM, 1, C, 1, 0},
            {AM_W_Q, QD, C, 2, cfg->n_heads},
            {AM_W_K, KD, C, 2, cfg->n_kv_heads},
            {AM_W_V, KD, C, 2, 0},
            {AM_W_O, C, QD, 2, 0},
            {AM_W_FFN_NORM, 1, C, 1, 0},
            {AM_W_GATE, F, C, 2, 0},
            {AM_W_DOWN, C, F, 2, 0},
            {AM_W_UP, F, C, 2, 0},
        };
        for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++) {
            snprintf(name, sizeof name, am_llama_weight_name(naming, spec[i].role), layer);
            am_dtype dt = spec[i].n_dims == 1 ? norm_dtype : o->dtype;
            if ((rc = add_tensor(l, name, spec[i].role, layer, spec[i].rows, spec[i].cols,
                                 spec[i].n_dims, dt, o->seed, hf ? spec[i].heads : 0, (int)D)))
                return rc;
        }
    }
    if ((rc = add_tensor(l, am_llama_weight_name(naming, AM_W_NORM), AM_W_NORM, -1, 1, C, 1,
                         norm_dtype, o->seed, 0, 0)))
        return rc;
    return add_tensor(l, am_llama_weight_name(naming, AM_W_OUTPUT), AM_W_OUTPUT, -1, V, C, 2,
                      o->dtype, o->seed, 0, 0);
}

/* ---- writers per format ---------------------------------------------------- */

static int path_join(char *buf, size_t cap, const char *dir, const char *file) {
    if ((size_t)snprintf(buf, cap, "%s/%s", dir, file) >= cap)
        return am_err_set(AM_ERANGE, "path too long: %s/%s", dir, file);
    return 0;
}

static int write_hf_config(const char *dir, const am_llama_config *cfg, am_dtype dtype) {
    char path[4096];
    int rc = path_join(path, sizeof path, dir, "config.json");
    if (rc) return rc;
    FILE *f = fopen(path, "w");
    if (!f) return am_err_set(AM_EIO, "%s: %s", path, strerror(errno));
    fprintf(
        f,
        "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"model_type\": \"llama\",\n"
        "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
        "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"vocab_size\": %d,\n"
        "  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": %g,\n  \"rope_theta\": %g,\n"
        "  \"hidden_act\": \"silu\",\n  \"tie_word_embeddings\": false,\n  \"bos_token_id\": 1,\n"
        "  \"eos_token_id\": 2,\n  \"torch_dtype\": \"%s\"\n}\n",
        cfg->dim, cfg->ffn_dim, cfg->n_layers, cfg->n_heads, cfg->n_kv_heads, cfg->vocab_size,
        cfg->max_seq_len, (double)cfg->norm_eps, (double)cfg->rope_theta,
        dtype == AM_DTYPE_F32   ? "float32"
        : dtype == AM_DTYPE_F16 ? "float16"
                                : "bfloat16");
    if (fclose(f) != 0) return am_err_set(AM_EIO, "%s: write failed", path);
    return 0;
}

static int write_safetensors(const am_mkmodel_opts *o, const am_llama_config *cfg,
                             const tensor_list *l, const am_tokenizer *tok) {
    if (mkdir(o->out, 0755) != 0 && errno != EEXIST)
        return am_err_set(AM_EIO, "%s: cannot create the output directory: %s", o->out,
                          strerror(errno));
    am_tensor_src *src = am_malloc((size_t)l->n * sizeof *src);
    if (!src) return AM_ENOMEM;
    for (int64_t i = 0; i < l->n; i++)
        src[i] = l->t[i].src;
    int rc = am_safetensors_write_dir(o->out, src, l->n,
                                      o->shard_bytes ? o->shard_bytes : (size_t)4 << 30);
    am_free(src);
    if (rc) return rc;
    if ((rc = write_hf_config(o->out, cfg, o->dtype))) return rc;
    char path[4096];
    if ((rc = path_join(path, sizeof path, o->out, "tokenizer.model"))) return rc;
    return am_tokenizer_write_model(tok, path);
}

static int write_gguf(const am_mkmodel_opts *o, const am_llama_config *cfg, const tensor_list *l,
                      const am_tokenizer *tok) {
    am_gguf_writer *w = NULL;
    int rc = am_gguf_writer_new(&w);
    if (rc) return rc;
    char name[64];
    snprintf(name, sizeof name, "anymal-%s-seed%llu", o->shape, (unsigned long long)o->seed);
    if ((rc = am_gguf_set_str(w, "general.architecture", "llama")) ||
        (rc = am_gguf_set_str(w, "general.name", name)) ||
        (rc = am_gguf_set_u32(w, "general.alignment", 32)) ||
        (rc = am_gguf_set_u32(w, "llama.context_length", (uint32_t)cfg->max_seq_len)) ||
        (rc = am_gguf_set_u32(w, "llama.embedding_length", (uint32_t)cfg->dim)) ||
        (rc = am_gguf_set_u32(w, "llama.block_count", (uint32_t)cfg->n_layers)) ||
        (rc = am_gguf_set_u32(w, "llama.feed_forward_length", (uint32_t)cfg->ffn_dim)) ||
        (rc = am_gguf_set_u32(w, "llama.rope.dimension_count", (uint32_t)cfg->head_dim)) ||
        (rc = am_gguf_set_f32(w, "llama.rope.freq_base", cfg->rope_theta)) ||
        (rc = am_gguf_set_u32(w, "llama.attention.head_count", (uint32_t)cfg->n_heads)) ||
        (rc = am_gguf_set_u32(w, "llama.attention.head_count_kv", (uint32_t)cfg->n_kv_heads)) ||
        (rc = am_gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", cfg->norm_eps)) ||
        (rc = am_gguf_set_u32(w, "llama.vocab_size", (uint32_t)cfg->vocab_size)) ||
        (rc = am_tokenizer_write_gguf(tok, w)))
        goto done;
    for (int64_t i = 0; i < l->n; i++)
        if ((rc = am_gguf_add_tensor(w, &l->t[i].src))) goto done;
    rc = am_gguf_writer_write(w, o->out);
done:
    am_gguf_writer_destroy(&w);
    return rc;
}

/* llama2.c wants the stacked per-layer arrays; gather the layer tensors. */
static int write_llama2c(const am_mkmodel_opts *o, const am_llama_config *cfg, const tensor_list *l,
                         const am_tokenizer *tok) {
    int L = cfg->n_layers;
    enum { N_PER_LAYER = 9 };
    float *stacked[N_PER_LAYER] = {0};
    int rc = 0;
    /* build_tensors order: tok, then per layer the 9 roles (attn_norm, q, k, v,
     * o, ffn_norm, gate, down, up), then norm, output. */
    for (int r = 0; r < N_PER_LAYER; r++) {
        size_t bytes = l->t[1 + r].src.nbytes;
        if (!(stacked[r] = am_aligned_alloc(bytes * (size_t)L))) {
            rc = AM_ENOMEM;
            goto done;
        }
        for (int layer = 0; layer < L; layer++)
            memcpy((char *)stacked[r] + bytes * (size_t)layer,
                   l->t[1 + layer * N_PER_LAYER + r].src.data, bytes);
    }
    am_llama2c_config c2 = {cfg->dim,        cfg->ffn_dim,    cfg->n_layers,    cfg->n_heads,
                            cfg->n_kv_heads, cfg->vocab_size, cfg->max_seq_len, 0};
    am_llama2c_weights w = {
        .token_embedding_table = l->t[0].src.data,
        .rms_att_weight = stacked[0],
        .wq = stacked[1],
        .wk = stacked[2],
        .wv = stacked[3],
        .wo = stacked[4],
        .rms_ffn_weight = stacked[5],
        .w1 = stacked[6],
        .w2 = stacked[7],
        .w3 = stacked[8],
        .rms_final_weight = l->t[l->n - 2].src.data,
        .wcls = l->t[l->n - 1].src.data,
    };
    if ((rc = am_llama2c_write(o->out, &c2, &w))) goto done;
    char dir[4096], path[4096];
    const char *slash = strrchr(o->out, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - o->out) : 1, slash ? o->out : ".");
    if ((rc = path_join(path, sizeof path, dir, "tokenizer.bin"))) goto done;
    rc = am_tokenizer_write_llama2c(tok, path);
done:
    for (int r = 0; r < N_PER_LAYER; r++)
        am_aligned_free(stacked[r]);
    return rc;
}

int am_mkmodel_write(const am_mkmodel_opts *o) {
    am_llama_config cfg;
    int rc = am_mkmodel_shape(o->shape, o->n_layers, &cfg);
    if (rc) return rc;
    switch (o->dtype) {
    case AM_DTYPE_F32: break;
    case AM_DTYPE_F16:
    case AM_DTYPE_BF16:
        if (o->format == AM_FORMAT_LLAMA2C)
            return am_err_set(AM_EUNSUPPORTED, "llama2c checkpoints are f32 only (asked for %s)",
                              am_dtype_name(o->dtype));
        break;
    case AM_DTYPE_Q8_0:
    case AM_DTYPE_Q4_0:
        if (o->format != AM_FORMAT_GGUF)
            return am_err_set(AM_EUNSUPPORTED, "%s weights need --format gguf",
                              am_dtype_name(o->dtype));
        break;
    default:
        return am_err_set(AM_EUNSUPPORTED, "dtype %s is not a weight dtype",
                          am_dtype_name(o->dtype));
    }
    am_tokenizer *tok = NULL;
    rc = o->tokenizer ? am_tokenizer_load(o->tokenizer, &tok)
                      : am_tokenizer_synthetic(cfg.vocab_size, &tok);
    if (rc) return rc;
    if (am_tokenizer_n_vocab(tok) != cfg.vocab_size) {
        rc = am_err_set(AM_ESHAPE,
                        "%s: the tokenizer has %d pieces but shape %s has a vocabulary of %d",
                        o->tokenizer ? o->tokenizer : "synthetic", am_tokenizer_n_vocab(tok),
                        o->shape, cfg.vocab_size);
        am_tokenizer_destroy(&tok);
        return rc;
    }
    tensor_list l = {0};
    if ((rc = build_tensors(&cfg, o, &l))) goto done;
    AM_LOGI("mkmodel: writing %s (%lld tensors)", o->out, (long long)l.n);
    switch (o->format) {
    case AM_FORMAT_SAFETENSORS: rc = write_safetensors(o, &cfg, &l, tok); break;
    case AM_FORMAT_GGUF: rc = write_gguf(o, &cfg, &l, tok); break;
    case AM_FORMAT_LLAMA2C: rc = write_llama2c(o, &cfg, &l, tok); break;
    }
done:
    tensor_list_free(&l);
    am_tokenizer_destroy(&tok);
    return rc;
}
