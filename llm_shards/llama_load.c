/* llm_shards/llama_load.c - resolving a LLaMA-2 decoder from a checkpoint.
 *
 * One table maps each weight role to its name in the three naming schemes
 * (HF, Meta, GGUF); the config comes from config.json (HF), GGUF metadata or
 * the llama2.c header. Matrices stay views into the mapped files; a rank of a
 * tensor-parallel group views its row ranges and copies its o/down column
 * ranges (see llama.h).
 */
#include "llm_shards/llama.h"

#include "core/alloc.h"
#include "core/error.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const weight_names[3][AM_W_COUNT] = {
    [AM_NAMES_HF] = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                     "model.layers.%d.input_layernorm.weight",
                     "model.layers.%d.self_attn.q_proj.weight",
                     "model.layers.%d.self_attn.k_proj.weight",
                     "model.layers.%d.self_attn.v_proj.weight",
                     "model.layers.%d.self_attn.o_proj.weight",
                     "model.layers.%d.post_attention_layernorm.weight",
                     "model.layers.%d.mlp.gate_proj.weight", "model.layers.%d.mlp.down_proj.weight",
                     "model.layers.%d.mlp.up_proj.weight"},
    [AM_NAMES_META] = {"tok_embeddings.weight", "norm.weight", "output.weight",
                       "layers.%d.attention_norm.weight", "layers.%d.attention.wq.weight",
                       "layers.%d.attention.wk.weight", "layers.%d.attention.wv.weight",
                       "layers.%d.attention.wo.weight", "layers.%d.ffn_norm.weight",
                       "layers.%d.feed_forward.w1.weight", "layers.%d.feed_forward.w2.weight",
                       "layers.%d.feed_forward.w3.weight"},
    [AM_NAMES_GGUF] = {"token_embd.weight", "output_norm.weight", "output.weight",
                       "blk.%d.attn_norm.weight", "blk.%d.attn_q.weight", "blk.%d.attn_k.weight",
                       "blk.%d.attn_v.weight", "blk.%d.attn_output.weight",
                       "blk.%d.ffn_norm.weight", "blk.%d.ffn_gate.weight", "blk.%d.ffn_down.weight",
                       "blk.%d.ffn_up.weight"},
};

const char *am_llama_weight_name(am_llama_naming naming, am_llama_weight w) {
    return weight_names[naming][w];
}

int am_llama_config_check(const am_llama_config *cfg) {
    const struct {
        const char *name;
        int64_t v, max;
    } fields[] = {
        {"dim", cfg->dim, 1 << 16},
        {"n_layers", cfg->n_layers, AM_LLAMA_MAX_LAYERS},
        {"n_heads", cfg->n_heads, 1024},
        {"n_kv_heads", cfg->n_kv_heads, 1024},
        {"ffn_dim", cfg->ffn_dim, 1 << 20},
        {"vocab_size", cfg->vocab_size, 1 << 24},
        {"max_seq_len", cfg->max_seq_len, 1 << 20},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (fields[i].v <= 0 || fields[i].v > fields[i].max)
            return am_err_set(AM_ERANGE, "model config: %s = %lld is outside [1, %lld]",
                              fields[i].name, (long long)fields[i].v, (long long)fields[i].max);
    }
    if (cfg->dim % cfg->n_heads)
        return am_err_set(AM_EINVAL, "model config: dim %d is not a multiple of n_heads %d",
                          cfg->dim, cfg->n_heads);
    if (cfg->n_heads % cfg->n_kv_heads)
        return am_err_set(AM_EINVAL, "model config: n_heads %d is not a multiple of n_kv_heads %d",
                          cfg->n_heads, cfg->n_kv_heads);
    if (cfg->head_dim != cfg->dim / cfg->n_heads || cfg->head_dim % 2)
        return am_err_set(AM_EINVAL, "model config: head_dim %d must be dim/n_heads and even",
                          cfg->head_dim);
    if (!(cfg->norm_eps > 0 && cfg->norm_eps < 1))
        return am_err_set(AM_ERANGE, "model config: norm_eps %g is outside (0, 1)", cfg->norm_eps);
    if (!(cfg->rope_theta > 1))
        return am_err_set(AM_ERANGE, "model config: rope_theta %g must be > 1", cfg->rope_theta);
    return 0;
}

int am_llama_shard_plan(const am_llama_config *cfg, int32_t rank, int32_t size,
                        am_llama_shard *out) {
    if (size < 1 || size > AM_TP_MAX_RANKS)
        return am_err_set(AM_ERANGE, "tensor-parallel group size %d is outside [1, %d]", size,
                          AM_TP_MAX_RANKS);
    if (rank < 0 || rank >= size)
        return am_err_set(AM_ERANGE, "rank %d is outside [0, %d)", rank, size);
    if (cfg->n_heads % size)
        return am_err_set(
            AM_EINVAL, "model config: n_heads %d is not a multiple of the %d tensor-parallel ranks",
            cfg->n_heads, size);
    if (cfg->ffn_dim % size)
        return am_err_set(
            AM_EINVAL, "model config: ffn_dim %d is not a multiple of the %d tensor-parallel ranks",
            cfg->ffn_dim, size);
    if (cfg->n_kv_heads % size && size % cfg->n_kv_heads)
        return am_err_set(AM_EINVAL,
                          "model config: n_kv_heads %d and the %d tensor-parallel ranks: one must "
                          "divide the other "
                          "(kv heads are split, or replicated when there are fewer than ranks)",
                          cfg->n_kv_heads, size);
    am_llama_shard s = {.rank = rank, .size = size};
    s.n_heads = cfg->n_heads / size;
    s.head0 = rank * s.n_heads;
    if (cfg->n_kv_heads >= size) {
        s.n_kv_heads = cfg->n_kv_heads / size;
        s.kv_head0 = rank * s.n_kv_heads;
    } else {
        /* P / Hkv consecutive ranks share one kv head: exactly the one their
         * H / P query heads read (head h uses kv head h / (H / Hkv)). */
        s.n_kv_heads = 1;
        s.kv_head0 = rank / (size / cfg->n_kv_heads);
    }
    s.ffn_dim = cfg->ffn_dim / size;
    s.ffn0 = rank * s.ffn_dim;
    int32_t base = cfg->vocab_size / size, rem = cfg->vocab_size % size;
    s.n_vocab = base + (rank < rem);
    s.vocab0 = rank * base + (rank < rem ? rank : rem);
    if (s.n_vocab < 1)
        return am_err_set(
            AM_EINVAL, "model config: vocab_size %d is smaller than the %d tensor-parallel ranks",
            cfg->vocab_size, size);
    *out = s;
    return 0;
}

/* ---- config sources ------------------------------------------------------ */

static int json_int(const cJSON *root, const char *file, const char *key, int required,
                    int32_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return am_err_set(AM_ENOTFOUND, "%s: missing field \"%s\"", file, key);
        return 0;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= INT32_MIN && v->valuedouble <= INT32_MAX) ||
        v->valuedouble != (double)(int32_t)v->valuedouble)
        return am_err_set(AM_EFORMAT, "%s: field \"%s\" must be a 32-bit integer", file, key);
    *out = (int32_t)v->valuedouble;
    return 0;
}

static int json_float(const cJSON *root, const char *file, const char *key, float *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v))
        return am_err_set(AM_EFORMAT, "%s: field \"%s\" must be a number", file, key);
    *out = (float)v->valuedouble;
    return 0;
}

#define AM_CONFIG_JSON_MAX_BYTES (1u << 20)

/* Reads HF config.json: LlamaConfig fields. *tied is set from tie_word_embeddings. */
static int config_from_hf_json(const char *file, am_llama_config *cfg, int *tied) {
    FILE *f = fopen(file, "rb");
    if (!f)
        return am_err_set(
            AM_EIO, "%s: cannot open the model config (needed for safetensors weights)", file);
    char *buf = am_malloc(AM_CONFIG_JSON_MAX_BYTES + 1);
    if (!buf) {
        fclose(f);
        return AM_ENOMEM;
    }
    size_t n = fread(buf, 1, AM_CONFIG_JSON_MAX_BYTES + 1, f);
    fclose(f);
    if (n > AM_CONFIG_JSON_MAX_BYTES) {
        am_free(buf);
        return am_err_set(AM_ERANGE, "%s: larger than %u bytes", file, AM_CONFIG_JSON_MAX_BYTES);
    }
    cJSON *root = cJSON_ParseWithLength(buf, n);
    am_free(buf);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return am_err_set(AM_EFORMAT, "%s: not a JSON object", file);
    }
    int rc = 0;
    const cJSON *all = root;
    /* An HF LLaVA config nests the decoder's config in "text_config", which
     * stores only what differs from LlamaConfig's defaults (llava-1.5-7b-hf
     * has just vocab_size, rms_norm_eps, max_position_embeddings): start
     * from those defaults there. A plain LlamaConfig must be complete. */
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    int nested = cJSON_IsObject(text);
    if (nested) {
        root = (cJSON *)text;
        *cfg = (am_llama_config){.dim = 4096,
                                 .n_layers = 32,
                                 .n_heads = 32,
                                 .ffn_dim = 11008,
                                 .vocab_size = 32000,
                                 .max_seq_len = 2048,
                                 .norm_eps = 1e-6f,
                                 .rope_theta = 10000.0f};
    } else {
        cfg->max_seq_len = 4096;
        cfg->norm_eps = 1e-5f;
        cfg->rope_theta = 10000.0f;
    }
    cfg->n_kv_heads = 0;
    const int req = !nested;
    if ((rc = json_int(root, file, "hidden_size", req, &cfg->dim)) ||
        (rc = json_int(root, file, "num_hidden_layers", req, &cfg->n_layers)) ||
        (rc = json_int(root, file, "num_attention_heads", req, &cfg->n_heads)) ||
        (rc = json_int(root, file, "num_key_value_heads", 0, &cfg->n_kv_heads)) ||
        (rc = json_int(root, file, "intermediate_size", req, &cfg->ffn_dim)) ||
        (rc = json_int(root, file, "vocab_size", req, &cfg->vocab_size)) ||
        (rc = json_int(root, file, "max_position_embeddings", 0, &cfg->max_seq_len)) ||
        (rc = json_float(root, file, "rms_norm_eps", &cfg->norm_eps)) ||
        (rc = json_float(root, file, "rope_theta", &cfg->rope_theta)))
        goto done;
    if (!cfg->n_kv_heads) cfg->n_kv_heads = cfg->n_heads;
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(all, "tie_word_embeddings");
    *tied = cJSON_IsTrue(tie);
    /* transformers >= 5 writes rope_parameters {rope_theta, rope_type}; older
     * versions rope_theta and rope_scaling. Only plain RoPE is LLaMA-2's. */
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (cJSON_IsObject(rp)) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
        if (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "default") == 0)) {
            rc = am_err_set(AM_EUNSUPPORTED, "%s: rope_parameters.rope_type must be \"default\"",
                            file);
            goto done;
        }
        if ((rc = json_float(rp, file, "rope_theta", &cfg->rope_theta))) goto done;
    }
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) {
        rc = am_err_set(AM_EUNSUPPORTED, "%s: rope_scaling is not supported (LLaMA-2 uses none)",
                        file);
        goto done;
    }
    if (cfg->n_heads > 0) cfg->head_dim = cfg->dim / cfg->n_heads;
    int32_t head_dim = cfg->head_dim;
    if ((rc = json_int(root, file, "head_dim", 0, &head_dim))) goto done;
    if (head_dim != cfg->head_dim)
        rc = am_err_set(AM_EUNSUPPORTED,
                        "%s: head_dim %d differs from hidden_size / num_attention_heads = %d", file,
                        head_dim, cfg->head_dim);
done:
    cJSON_Delete((cJSON *)all);
    return rc;
}

static int gguf_int(const am_ckpt *c, const char *key, int required, int32_t *out) {
    int64_t v;
    int rc = am_ckpt_meta_int(c, key, &v);
    if (rc == AM_ENOTFOUND && !required) return 0;
    if (rc == AM_ENOTFOUND) return am_err_set(rc, "%s: missing GGUF key %s", am_ckpt_path(c), key);
    if (rc) return rc;
    if (v < 0 || v > INT32_MAX)
        return am_err_set(AM_ERANGE, "%s: GGUF key %s = %lld out of range", am_ckpt_path(c), key,
                          (long long)v);
    *out = (int32_t)v;
    return 0;
}

static int gguf_float(const am_ckpt *c, const char *key, float *out) {
    double v;
    int rc = am_ckpt_meta_float(c, key, &v);
    if (rc == AM_ENOTFOUND) return 0;
    if (rc == 0) *out = (float)v;
    return rc;
}

static int config_from_gguf(const am_ckpt *c, am_llama_config *cfg) {
    const char *arch;
    size_t arch_len;
    if (am_ckpt_meta_str(c, "general.architecture", &arch, &arch_len) != 0 || arch_len != 5 ||
        memcmp(arch, "llama", 5) != 0)
        return am_err_set(AM_EUNSUPPORTED, "%s: general.architecture is not \"llama\"",
                          am_ckpt_path(c));
    int rc;
    cfg->n_kv_heads = 0;
    cfg->vocab_size = 0;
    cfg->max_seq_len = 4096;
    cfg->norm_eps = 1e-5f;
    cfg->rope_theta = 10000.0f;
    if ((rc = gguf_int(c, "llama.embedding_length", 1, &cfg->dim)) ||
        (rc = gguf_int(c, "llama.block_count", 1, &cfg->n_layers)) ||
        (rc = gguf_int(c, "llama.attention.head_count", 1, &cfg->n_heads)) ||
        (rc = gguf_int(c, "llama.attention.head_count_kv", 0, &cfg->n_kv_heads)) ||
        (rc = gguf_int(c, "llama.feed_forward_length", 1, &cfg->ffn_dim)) ||
        (rc = gguf_int(c, "llama.context_length", 0, &cfg->max_seq_len)) ||
        (rc = gguf_int(c, "llama.vocab_size", 0, &cfg->vocab_size)) ||
        (rc = gguf_float(c, "llama.attention.layer_norm_rms_epsilon", &cfg->norm_eps)) ||
        (rc = gguf_float(c, "llama.rope.freq_base", &cfg->rope_theta)))
        return rc;
    if (!cfg->n_kv_heads) cfg->n_kv_heads = cfg->n_heads;
    if (cfg->n_heads > 0) cfg->head_dim = cfg->dim / cfg->n_heads;
    if (!cfg->vocab_size) {
        const am_ckpt_tensor *t = am_ckpt_find(c, "token_embd.weight");
        if (t) cfg->vocab_size = (int32_t)t->shape[0];
    }
    return 0;
}

static int config_from_llama2c(const am_ckpt *c, am_llama_config *cfg) {
    static const char *const keys[] = {
        "llama2c.dim",        "llama2c.hidden_dim", "llama2c.n_layers", "llama2c.n_heads",
        "llama2c.n_kv_heads", "llama2c.vocab_size", "llama2c.seq_len"};
    int32_t *dst[] = {&cfg->dim,        &cfg->ffn_dim,    &cfg->n_layers,   &cfg->n_heads,
                      &cfg->n_kv_heads, &cfg->vocab_size, &cfg->max_seq_len};
    for (int i = 0; i < 7; i++) {
        int rc = gguf_int(c, keys[i], 1, dst[i]);
        if (rc) return rc;
    }
    cfg->head_dim = cfg->dim / cfg->n_heads;
    cfg->norm_eps = 1e-5f;
    cfg->rope_theta = 10000.0f;
    return 0;
}

/* ---- tensors ------------------------------------------------------------- */

static int get_matrix(const am_ckpt *c, const char *name, int64_t rows, int64_t cols,
                      am_matrix *out) {
    const am_ckpt_tensor *t;
    int64_t shape[2] = {rows, cols};
    int rc = am_ckpt_get(c, name, 2, shape, &t);
    if (rc) return rc;
    switch (t->dtype) {
    case AM_DTYPE_F32:
    case AM_DTYPE_F16:
    case AM_DTYPE_BF16:
    case AM_DTYPE_Q8_0:
    case AM_DTYPE_Q4_0: break;
    default:
        return am_err_set(AM_EUNSUPPORTED,
                          "%s: tensor %s has dtype %s (want f32, f16, bf16, q8_0 or q4_0)", t->file,
                          name, am_dtype_name(t->dtype));
    }
    *out = (am_matrix){.dtype = t->dtype,
                       .rows = rows,
                       .cols = cols,
                       .data = t->data,
                       .row_bytes = am_dtype_row_bytes(t->dtype, cols)};
    if (!out->row_bytes)
        return am_err_set(AM_ESHAPE, "%s: tensor %s: %lld columns do not fit dtype %s", t->file,
                          name, (long long)cols, am_dtype_name(t->dtype));
    return 0;
}

static int get_vector_f32(const am_ckpt *c, const char *name, int64_t n, float **out) {
    const am_ckpt_tensor *t;
    int rc = am_ckpt_get(c, name, 1, &n, &t);
    if (rc) return rc;
    if (t->dtype != AM_DTYPE_F32 && t->dtype != AM_DTYPE_F16 && t->dtype != AM_DTYPE_BF16)
        return am_err_set(AM_EUNSUPPORTED, "%s: tensor %s has dtype %s (want f32, f16 or bf16)",
                          t->file, name, am_dtype_name(t->dtype));
    float *v = am_aligned_alloc((size_t)n * sizeof(float));
    if (!v) return AM_ENOMEM;
    am_dequantize_row(t->dtype, t->data, v, n);
    *out = v;
    return 0;
}

/* HF LLaVA-1.5 checkpoints (llava-1.5-7b-hf as published) keep the decoder
 * under "language_model.": language_model.model.layers.N...,
 * language_model.lm_head.weight. */
#define AM_LLAVA_PREFIX "language_model."

/* The full name of a weight: prefix + the naming's format, with the layer. */
static void layer_name(char *buf, size_t cap, const char *prefix, const char *fmt, int layer) {
    char tail[AM_CKPT_MAX_NAME_BYTES];
    /* The formats in weight_names hold at most one %d. */
    snprintf(tail, sizeof tail, fmt, layer);
    snprintf(buf, cap, "%.64s%.400s", prefix, tail); /* both bounded: always fits */
}

/* A view of rows [r0, r0 + n) of w: a column-parallel slice, zero-copy. */
static am_matrix row_range(const am_matrix *w, int64_t r0, int64_t n) {
    am_matrix v = *w;
    v.rows = n;
    v.data = (const char *)w->data + (size_t)r0 * w->row_bytes;
    return v;
}

/* Row-parallel slices are column ranges; block types cannot be cut inside a block. */
static int check_column_split(const am_ckpt *c, const char *name, const am_matrix *w, int64_t col0,
                              int64_t ncols, int32_t size) {
    int64_t be = am_dtype_block_elems(w->dtype);
    if (col0 % be || ncols % be)
        return am_err_set(AM_EUNSUPPORTED,
                          "%s: tensor %s is %s: its split over %d tensor-parallel ranks (%lld "
                          "columns from column %lld) "
                          "does not fall on %lld-element blocks",
                          am_ckpt_path(c), name, am_dtype_name(w->dtype), size, (long long)ncols,
                          (long long)col0, (long long)be);
    return 0;
}

/* Source bytes copied between two releases of the pages already read. */
#define AM_SLICE_RELEASE_BYTES ((size_t)16 << 20)

/* Drops this process's page-table entries for the whole pages in
 * [from, to) (from rounded up, to rounded down to pages) of a read-only file
 * mapping, so that a rank that copies its slice out of a tensor does not keep
 * the rest resident (the kernel maps up to 64 KiB of cached file around each
 * fault, so even the columns it skips would be counted). The mapping is
 * read-only and file-backed: a later access would just fault the file back
 * in, so this never changes what the memory reads as. Returns the new `from`. */
static uintptr_t release_pages(uintptr_t from, uintptr_t to) {
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) return from;
    uintptr_t a = (from + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t b = to & ~((uintptr_t)page - 1);
    if (b <= a) return from;
    (void)madvise((void *)a, b - a, MADV_DONTNEED);
    return b;
}

static size_t slice_bytes(const am_matrix *w, int64_t ncols) {
    return (am_dtype_row_bytes(w->dtype, ncols) * (size_t)w->rows + AM_ALIGN_BYTES - 1) /
           AM_ALIGN_BYTES * AM_ALIGN_BYTES;
}

/* Copies columns [col0, col0 + ncols) of every row of w to dst (row-parallel
 * slice) and makes *w a view of the copy. Only those byte ranges of the
 * source are read, and the pages read are released every
 * AM_SLICE_RELEASE_BYTES, so the peak stays near the slices' size. */
static void copy_columns(am_matrix *w, int64_t col0, int64_t ncols, char *dst) {
    size_t off = (size_t)(col0 / am_dtype_block_elems(w->dtype)) * am_dtype_block_bytes(w->dtype);
    size_t rb = am_dtype_row_bytes(w->dtype, ncols);
    const char *src = w->data;
    uintptr_t released = (uintptr_t)src, since = 0;
    for (int64_t r = 0; r < w->rows; r++) {
        memcpy(dst + (size_t)r * rb, src + (size_t)r * w->row_bytes + off, rb);
        if ((since += w->row_bytes) >= AM_SLICE_RELEASE_BYTES) {
            released = release_pages(released, (uintptr_t)(src + (size_t)(r + 1) * w->row_bytes));
            since = 0;
        }
    }
    release_pages(released, (uintptr_t)(src + (size_t)w->rows * w->row_bytes));
    *w = (am_matrix){
        .dtype = w->dtype, .rows = w->rows, .cols = ncols, .data = dst, .row_bytes = rb};
}

static int load_weights(am_llama_model *m, am_llama_naming names, const char *prefix, int tied) {
    const am_llama_config *cfg = &m->cfg;
    const am_llama_shard *sh = &m->shard;
    const am_ckpt *c = m->ckpt;
    const char *const *nm = weight_names[names];
    int64_t C = cfg->dim, F = cfg->ffn_dim, V = cfg->vocab_size, D = cfg->head_dim;
    int64_t QD = (int64_t)cfg->n_heads * D, KD = (int64_t)cfg->n_kv_heads * D;
    int rc;
    char name[AM_CKPT_MAX_NAME_BYTES];
    layer_name(name, sizeof name, prefix, nm[AM_W_TOK], 0);
    if ((rc = get_matrix(c, name, V, C, &m->tok_embeddings))) return rc;
    layer_name(name, sizeof name, prefix, nm[AM_W_NORM], 0);
    if ((rc = get_vector_f32(c, name, C, &m->norm))) return rc;
    layer_name(name, sizeof name, prefix, nm[AM_W_OUTPUT], 0);
    if (tied || !am_ckpt_find(c, name)) {
        if (!tied && names == AM_NAMES_HF)
            return am_err_set(AM_ENOTFOUND,
                              "%s: missing tensor %s (and tie_word_embeddings is false)",
                              am_ckpt_path(c), name);
        m->output = m->tok_embeddings; /* GGUF omits output.weight when tied */
    } else if ((rc = get_matrix(c, name, V, C, &m->output))) {
        return rc;
    }
    m->output = row_range(&m->output, sh->vocab0, sh->n_vocab);
    m->layers = am_calloc((size_t)cfg->n_layers, sizeof *m->layers);
    if (!m->layers) return AM_ENOMEM;
    /* Column-parallel matrices: (first row, rows) of this rank; row-parallel: (first column,
     * columns). */
    const int64_t q0 = (int64_t)sh->head0 * D, nq = (int64_t)sh->n_heads * D;
    const int64_t k0 = (int64_t)sh->kv_head0 * D, nk = (int64_t)sh->n_kv_heads * D;
    const int64_t f0 = sh->ffn0, nf = sh->ffn_dim;
    size_t total_slices = 0;
    for (int l = 0; l < cfg->n_layers; l++) {
        am_llama_layer *ly = &m->layers[l];
        const struct {
            int role;
            am_matrix *dst;
            int64_t rows, cols, first, n;
            int row_parallel;
        } mats[] = {
            {AM_W_Q, &ly->wq, QD, C, q0, nq, 0},   {AM_W_K, &ly->wk, KD, C, k0, nk, 0},
            {AM_W_V, &ly->wv, KD, C, k0, nk, 0},   {AM_W_O, &ly->wo, C, QD, q0, nq, 1},
            {AM_W_GATE, &ly->w1, F, C, f0, nf, 0}, {AM_W_DOWN, &ly->w2, C, F, f0, nf, 1},
            {AM_W_UP, &ly->w3, F, C, f0, nf, 0},
        };
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
            layer_name(name, sizeof name, prefix, nm[mats[i].role], l);
            if ((rc = get_matrix(c, name, mats[i].rows, mats[i].cols, mats[i].dst))) return rc;
            if (!mats[i].row_parallel) {
                *mats[i].dst = row_range(mats[i].dst, mats[i].first, mats[i].n);
            } else if (sh->size > 1) {
                /* Copied below, once every shape and dtype has been checked. */
                if ((rc = check_column_split(c, name, mats[i].dst, mats[i].first, mats[i].n,
                                             sh->size)))
                    return rc;
                total_slices += slice_bytes(mats[i].dst, mats[i].n);
            }
        }
        layer_name(name, sizeof name, prefix, nm[AM_W_ATTN_NORM], l);
        if ((rc = get_vector_f32(c, name, C, &ly->attn_norm))) return rc;
        layer_name(name, sizeof name, prefix, nm[AM_W_FFN_NORM], l);
        if ((rc = get_vector_f32(c, name, C, &ly->ffn_norm))) return rc;
    }
    /* A layer past n_layers means the config and the weights disagree. */
    layer_name(name, sizeof name, prefix, nm[AM_W_Q], cfg->n_layers);
    if (am_ckpt_find(c, name))
        return am_err_set(AM_ESHAPE, "%s: has tensor %s but the config says %d layers",
                          am_ckpt_path(c), name, cfg->n_layers);
    if (sh->size > 1) {
        /* Row-parallel slices: one allocation, filled layer by layer. The
         * kernels want contiguous rows, so a strided view would not do. */
        if (!(m->slices = am_aligned_alloc(total_slices)))
            return am_err_set(AM_ENOMEM, "cannot allocate %zu MiB for the o/down slices of rank %d",
                              total_slices >> 20, sh->rank);
        m->slices_bytes = total_slices;
        char *dst = m->slices;
        for (int l = 0; l < cfg->n_layers; l++) {
            am_llama_layer *ly = &m->layers[l];
            size_t bo = slice_bytes(&ly->wo, nq), b2 = slice_bytes(&ly->w2, nf);
            copy_columns(&ly->wo, q0, nq, dst);
            dst += bo;
            copy_columns(&ly->w2, f0, nf, dst);
            dst += b2;
        }
    }
    return 0;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* config.json lives in the model directory, or beside a single .safetensors file. */
static void hf_config_path(const char *path, char *buf, size_t cap) {
    if (is_dir(path)) {
        snprintf(buf, cap, "%s/config.json", path);
        return;
    }
    const char *slash = strrchr(path, '/');
    if (slash)
        snprintf(buf, cap, "%.*s/config.json", (int)(slash - path), path);
    else
        snprintf(buf, cap, "config.json");
}

int am_llama_load(const char *path, am_llama_model **out) {
    return am_llama_load_shard(path, 0, 1, out);
}

int am_llama_load_shard(const char *path, int32_t rank, int32_t size, am_llama_model **out) {
    am_llama_model *m = am_calloc(1, sizeof *m);
    if (!m) return AM_ENOMEM;
    int rc = AM_ENOMEM;
    if (!(m->path = am_strdup(path))) goto fail;
    if ((rc = am_ckpt_open(path, &m->ckpt))) goto fail;
    am_llama_naming names;
    const char *prefix = "";
    int tied = 0;
    switch (am_ckpt_get_format(m->ckpt)) {
    case AM_CKPT_GGUF:
        names = AM_NAMES_GGUF;
        rc = config_from_gguf(m->ckpt, &m->cfg);
        break;
    case AM_CKPT_LLAMA2C:
        names = AM_NAMES_META;
        rc = config_from_llama2c(m->ckpt, &m->cfg);
        break;
    default: {
        char cfg_path[4096];
        hf_config_path(path, cfg_path, sizeof cfg_path);
        names = am_ckpt_find(m->ckpt, weight_names[AM_NAMES_META][AM_W_TOK]) ? AM_NAMES_META
                                                                             : AM_NAMES_HF;
        if (names == AM_NAMES_HF &&
            am_ckpt_find(m->ckpt, AM_LLAVA_PREFIX "model.embed_tokens.weight"))
            prefix = AM_LLAVA_PREFIX;
        rc = config_from_hf_json(cfg_path, &m->cfg, &tied);
        break;
    }
    }
    if (rc || (rc = am_llama_config_check(&m->cfg))) goto fail;
    if ((rc = am_llama_shard_plan(&m->cfg, rank, size, &m->shard))) {
        am_err_prefix(rc, "%s", path);
        goto fail;
    }
    m->rope_layout = names == AM_NAMES_HF ? AM_ROPE_HALVES : AM_ROPE_ADJACENT;
    if ((rc = load_weights(m, names, prefix, tied))) goto fail;
    *out = m;
    return 0;
fail:
    am_llama_destroy(&m);
    return rc;
}

void am_llama_destroy(am_llama_model **p) {
    if (!p || !*p) return;
    am_llama_model *m = *p;
    if (m->layers) {
        for (int l = 0; l < m->cfg.n_layers; l++) {
            am_aligned_free(m->layers[l].attn_norm);
            am_aligned_free(m->layers[l].ffn_norm);
        }
        am_free(m->layers);
    }
    am_aligned_free(m->norm);
    am_aligned_free(m->slices);
    am_ckpt_destroy(&m->ckpt);
    am_free(m->path);
    am_free(m);
    *p = NULL;
}

static int64_t matrix_size(const am_matrix *w, int elements) {
    return w->rows * (elements ? w->cols : (int64_t)w->row_bytes);
}

/* Sums bytes (or elements) over every matrix a token reads: the layers and lm_head. */
static int64_t sum_matrices(const am_llama_model *m, int elements) {
    int64_t total = matrix_size(&m->output, elements);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const am_llama_layer *ly = &m->layers[l];
        const am_matrix *mats[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w1, &ly->w2, &ly->w3};
        for (int i = 0; i < 7; i++)
            total += matrix_size(mats[i], elements);
    }
    return total;
}

size_t am_llama_weight_bytes(const am_llama_model *m) { return (size_t)sum_matrices(m, 0); }

int64_t am_llama_weight_params(const am_llama_model *m) { return sum_matrices(m, 1); }

am_dtype am_llama_weight_dtype(const am_llama_model *m) { return m->layers[0].w1.dtype; }
