/* tests/test_tokenizer.c - the SentencePiece BPE tokenizer against the python
 * sentencepiece library (golden fixtures in tests/golden/tokenizer/, made by
 * gen_tokenizer_golden.py), on LLaMA-2's real tokenizer.model and
 * tokenizer.bin from $AM_SHARED_DIR/models, on synthetic vocabularies, and on
 * hostile files.
 *
 * The shared LLaMA files are always present in CI; a missing one is a test
 * failure, not a skip, so a broken checkout cannot pass silently.
 *
 * With AM_TOK_GOLDEN_EXPORT=dir the `export_for_golden` case writes the files
 * gen_tokenizer_golden.py feeds to python (synthetic .model files, LLaMA
 * re-written by our writer); it is a no-op otherwise.
 */
#include "core/alloc.h"
#include "core/ckpt.h"
#include "core/error.h"
#include "llm_shards/tokenizer.h"
#include "test_util.h"

#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------ */

static char g_tmpdir[256];

static void cleanup(void) {
    if (!g_tmpdir[0]) return;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmpdir);
}

static const char *tmp_path(const char *name, char *buf, size_t cap) {
    if (!g_tmpdir[0]) {
        snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/am_test_tokenizer.XXXXXX");
        if (!mkdtemp(g_tmpdir)) {
            perror("mkdtemp");
            exit(1);
        }
        atexit(cleanup);
    }
    snprintf(buf, cap, "%s/%s", g_tmpdir, name);
    return buf;
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *d = malloc((size_t)n + 1);
    if (d && fread(d, 1, (size_t)n, f) != (size_t)n) {
        free(d);
        d = NULL;
    }
    fclose(f);
    if (d) d[n] = 0;
    *len = (size_t)n;
    return d;
}

static int write_all(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(d, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Hex ("-" = empty) into a malloc'ed buffer. */
static char *unhex(const char *h, size_t hl, size_t *len) {
    char *out = malloc(hl / 2 + 1);
    *len = 0;
    if (!(hl == 1 && h[0] == '-')) {
        for (size_t i = 0; i + 1 < hl; i += 2)
            out[(*len)++] = (char)(hexval(h[i]) * 16 + hexval(h[i + 1]));
    }
    out[*len] = 0;
    return out;
}

/* Comma-separated ids ("-" = none). */
static int32_t *parse_ids(const char *s, size_t sl, int64_t *n) {
    int32_t *ids = malloc((sl + 1) * sizeof *ids);
    *n = 0;
    if (sl == 1 && s[0] == '-') return ids;
    const char *p = s, *e = s + sl;
    while (p < e) {
        ids[(*n)++] = (int32_t)strtol(p, (char **)&p, 10);
        if (p < e && *p == ',') p++;
    }
    return ids;
}

/* A fixture line split at tabs. */
typedef struct fields {
    const char *f[8];
    size_t len[8];
    int n;
} fields;

static void split_tabs(const char *line, size_t len, fields *out) {
    out->n = 0;
    const char *p = line, *e = line + len;
    while (out->n < 8) {
        const char *t = memchr(p, '\t', (size_t)(e - p));
        const char *end = t ? t : e;
        out->f[out->n] = p;
        out->len[out->n] = (size_t)(end - p);
        out->n++;
        if (!t) break;
        p = t + 1;
    }
}

/* Iterates the non-comment lines of a fixture file. */
typedef struct fixture {
    unsigned char *data;
    size_t len, pos;
} fixture;

static int fixture_open(fixture *fx, const char *rel) {
    char path[1024];
    AM_SRC_PATH(rel, path);
    memset(fx, 0, sizeof *fx);
    fx->data = read_all(path, &fx->len);
    if (!fx->data) {
        fprintf(stderr, "missing fixture %s (run tests/golden/tokenizer/gen_tokenizer_golden.py)\n",
                path);
        am_test_failures++;
        return -1;
    }
    return 0;
}

static int fixture_next(fixture *fx, fields *out) {
    while (fx->pos < fx->len) {
        const char *line = (const char *)fx->data + fx->pos;
        const char *nl = memchr(line, '\n', fx->len - fx->pos);
        size_t ll = nl ? (size_t)(nl - line) : fx->len - fx->pos;
        fx->pos += ll + (nl ? 1 : 0);
        if (ll == 0 || line[0] == '#') continue;
        split_tabs(line, ll, out);
        return 1;
    }
    return 0;
}

static am_tokenizer *load_shared(const char *name) {
    if (am_test_no_shared_dir(name)) return NULL;
    char path[1024];
    AM_SHARED_PATH(name, path);
    am_tokenizer *t = NULL;
    int rc = am_tokenizer_load(path, &t);
    if (rc) {
        fprintf(stderr,
                "FATAL: cannot load %s: %s (the shared LLaMA tokenizer files are required)\n", path,
                am_err_msg());
        am_test_failures++;
        return NULL;
    }
    return t;
}

static int ids_equal(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

static void print_ids(const char *what, const int32_t *ids, int64_t n) {
    fprintf(stderr, "  %s (%lld):", what, (long long)n);
    for (int64_t i = 0; i < n && i < 60; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 60 ? " ...\n" : "\n");
}

static uint32_t crc32_bytes(uint32_t crc, const void *data, size_t n) {
    static uint32_t table[256];
    if (!table[1]) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    }
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++)
        crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

static uint32_t crc32_ids(const int32_t *ids, int64_t n) {
    uint32_t crc = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)ids[i];
        unsigned char le[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                               (unsigned char)(u >> 24)};
        crc = crc32_bytes(crc, le, 4);
    }
    return crc;
}

/* Checks a fixture against t. Lines:
 *   case <name> <hex text> <ids> <hex decoded>: encode(text) == ids and
 *       decode(ids) == decoded, and the streaming bytes concatenate to it;
 *   decode <name> <ids> <hex decoded>: decode(ids) == decoded.
 * Returns the number of lines checked. */
static int check_cases(am_tokenizer *t, const char *rel, const char *label) {
    fixture fx;
    fields f;
    int n_cases = 0, bad = 0;
    if (fixture_open(&fx, rel)) return 0;
    while (fixture_next(&fx, &f)) {
        int is_case = f.n == 5 && f.len[0] == 4 && memcmp(f.f[0], "case", 4) == 0;
        int is_decode = f.n == 4 && f.len[0] == 6 && memcmp(f.f[0], "decode", 6) == 0;
        if (!is_case && !is_decode) continue;
        size_t tl = 0, dl;
        char *text = is_case ? unhex(f.f[2], f.len[2], &tl) : NULL;
        char *dec_want = unhex(f.f[is_case ? 4 : 3], f.len[is_case ? 4 : 3], &dl);
        int64_t nw;
        int32_t *want = parse_ids(f.f[is_case ? 3 : 2], f.len[is_case ? 3 : 2], &nw);
        n_cases++;
        if (is_case) {
            int32_t *got = NULL;
            int64_t ng = 0;
            CHECK_OK(am_tokenizer_encode(t, text, tl, 0, &got, &ng));
            if (!ids_equal(got, ng, want, nw)) {
                if (bad++ < 5) {
                    fprintf(stderr, "%s: case %.*s: encode mismatch\n", label, (int)f.len[1],
                            f.f[1]);
                    print_ids("want", want, nw);
                    print_ids("got ", got, ng);
                }
                am_test_failures++;
            }
            am_free(got);
        }
        char *dec = NULL;
        size_t dlen = 0;
        CHECK_OK(am_tokenizer_decode(t, want, nw, &dec, &dlen));
        if (!dec || dlen != dl || memcmp(dec, dec_want, dl) != 0) {
            if (bad++ < 5)
                fprintf(stderr, "%s: %s %.*s: decode mismatch: got '%s' want '%s'\n", label,
                        is_case ? "case" : "decode", (int)f.len[1], f.f[1], dec ? dec : "(null)",
                        dec_want);
            am_test_failures++;
        }
        /* Streaming bytes concatenate to DecodeIds' text for encoder output
         * (byte fallback only ever spells valid UTF-8). */
        if (dec && is_case) {
            size_t cap = am_tokenizer_max_token_bytes(t);
            char *stream = malloc(cap * (size_t)(nw + 1) + 1);
            size_t sn = 0;
            int32_t prev = -1;
            for (int64_t i = 0; i < nw; i++) {
                int k = am_tokenizer_token_bytes(t, prev, want[i], stream + sn, cap);
                CHECK(k >= 0);
                if (k > 0) sn += (size_t)k;
                prev = want[i];
            }
            if (sn != dlen || memcmp(stream, dec, dlen) != 0) {
                if (bad++ < 5)
                    fprintf(stderr, "%s: case %.*s: streaming bytes differ from decode\n", label,
                            (int)f.len[1], f.f[1]);
                am_test_failures++;
            }
            free(stream);
        }
        am_free(dec);
        free(want);
        free(text);
        free(dec_want);
    }
    free(fx.data);
    CHECK(n_cases > 0);
    return n_cases;
}

/* ---- LLaMA-2 golden ------------------------------------------------------- */

static void test_llama_model_golden(void) {
    am_tokenizer *t = load_shared("models/tokenizer.model");
    if (!t) return;
    CHECK_EQ_INT(am_tokenizer_n_vocab(t), 32000);
    CHECK_EQ_INT(am_tokenizer_bos(t), 1);
    CHECK_EQ_INT(am_tokenizer_eos(t), 2);
    CHECK_EQ_INT(am_tokenizer_unk(t), 0);
    CHECK(strcmp(am_tokenizer_piece(t, 13), "<0x0A>") == 0);
    CHECK_EQ_INT(am_tokenizer_type(t, 13), AM_PIECE_BYTE);
    CHECK_EQ_INT(am_tokenizer_type(t, 1), AM_PIECE_CONTROL);
    CHECK(strcmp(am_tokenizer_piece(t, 29871), "\xE2\x96\x81") == 0);
    CHECK(am_tokenizer_piece(t, 32000) == NULL);
    CHECK(am_tokenizer_piece(t, -1) == NULL);
    int n = check_cases(t, "tests/golden/tokenizer/llama_cases.tsv", "tokenizer.model");
    printf("  tokenizer.model: %d golden cases\n", n);
    am_tokenizer_destroy(&t);
    CHECK(t == NULL);
    am_tokenizer_destroy(&t); /* NULL is fine */
    am_tokenizer_destroy(NULL);
}

static void test_llama_bin_golden(void) {
    am_tokenizer *t = load_shared("models/tokenizer.bin");
    if (!t) return;
    CHECK_EQ_INT(am_tokenizer_n_vocab(t), 32000);
    CHECK_EQ_INT(am_tokenizer_bos(t), 1);
    CHECK_EQ_INT(am_tokenizer_eos(t), 2);
    int n = check_cases(t, "tests/golden/tokenizer/llama_cases.tsv", "tokenizer.bin");
    printf("  tokenizer.bin: %d golden cases\n", n);
    am_tokenizer_destroy(&t);
}

/* Both LLaMA files describe the same vocabulary: same pieces, scores, types. */
static void test_llama_model_vs_bin(void) {
    am_tokenizer *a = load_shared("models/tokenizer.model");
    am_tokenizer *b = load_shared("models/tokenizer.bin");
    if (!a || !b) goto out;
    CHECK_EQ_INT(am_tokenizer_n_vocab(a), am_tokenizer_n_vocab(b));
    int diffs = 0;
    for (int32_t i = 0; i < am_tokenizer_n_vocab(a) && i < am_tokenizer_n_vocab(b); i++) {
        if (strcmp(am_tokenizer_piece(a, i), am_tokenizer_piece(b, i)) != 0 ||
            am_tokenizer_score(a, i) != am_tokenizer_score(b, i) ||
            am_tokenizer_type(a, i) != am_tokenizer_type(b, i)) {
            if (diffs++ < 5)
                fprintf(stderr, "piece %d differs: '%s' %g %d vs '%s' %g %d\n", (int)i,
                        am_tokenizer_piece(a, i), am_tokenizer_score(a, i), am_tokenizer_type(a, i),
                        am_tokenizer_piece(b, i), am_tokenizer_score(b, i),
                        am_tokenizer_type(b, i));
        }
    }
    CHECK_EQ_INT(diffs, 0);
out:
    am_tokenizer_destroy(&a);
    am_tokenizer_destroy(&b);
}

/* Decoding arbitrary id sequences (control pieces, <unk>, broken byte runs,
 * leading spaces) exactly as DecodeIds does. */
static void test_llama_decode_golden(void) {
    am_tokenizer *t = load_shared("models/tokenizer.model");
    if (!t) return;
    int n = check_cases(t, "tests/golden/tokenizer/llama_decode.tsv", "decode");
    printf("  %d decode cases\n", n);
    /* Out-of-range ids are an error, as in sentencepiece. */
    int32_t bad[2] = {5, 32000};
    char *s = (char *)1;
    size_t sl = 7;
    CHECK_EQ_INT(am_tokenizer_decode(t, bad, 2, &s, &sl), AM_EINVAL);
    CHECK(s == NULL);
    bad[1] = -1;
    CHECK_EQ_INT(am_tokenizer_decode(t, bad, 2, &s, &sl), AM_EINVAL);
    char buf[64];
    CHECK_EQ_INT(am_tokenizer_token_bytes(t, -1, 32000, buf, sizeof buf), AM_EINVAL);
    am_tokenizer_destroy(&t);
}

static void test_llama_streaming(void) {
    am_tokenizer *t = load_shared("models/tokenizer.model");
    if (!t) return;
    char buf[64];
    int32_t hello = am_tokenizer_find(t, "\xE2\x96\x81hello", 8);
    CHECK(hello > 0);
    CHECK_EQ_INT(am_tokenizer_token_bytes(t, -1, 1, buf, sizeof buf), 0); /* BOS: nothing */
    CHECK_EQ_INT(am_tokenizer_token_bytes(t, 1, hello, buf, sizeof buf),
                 5); /* after BOS: "hello" */
    CHECK(memcmp(buf, "hello", 5) == 0);
    CHECK_EQ_INT(am_tokenizer_token_bytes(t, 500, hello, buf, sizeof buf), 6); /* " hello" */
    CHECK(memcmp(buf, " hello", 6) == 0);
    CHECK_EQ_INT(am_tokenizer_token_bytes(t, 500, 13, buf, sizeof buf), 1); /* <0x0A> */
    CHECK_EQ_INT(buf[0], '\n');
    CHECK_EQ_INT(am_tokenizer_token_bytes(t, 500, 0, buf, sizeof buf), 5); /* <unk> -> " ⁇ " */
    CHECK(memcmp(buf, " \xE2\x81\x87 ", 5) == 0);
    CHECK_EQ_INT(am_tokenizer_token_bytes(t, 500, hello, buf, 3), AM_ERANGE);
    CHECK(am_tokenizer_max_token_bytes(t) <= 64);
    am_tokenizer_destroy(&t);
}

/* ---- chat template ------------------------------------------------------- */

static void test_chat_golden(void) {
    am_tokenizer *t = load_shared("models/tokenizer.model");
    if (!t) return;
    fixture fx;
    fields f;
    int n = 0;
    if (fixture_open(&fx, "tests/golden/tokenizer/chat.tsv") == 0) {
        while (fixture_next(&fx, &f)) {
            if (f.n != 4) continue;
            /* f[1]: role:hex,role:hex,...  f[2]: ids or "error"  f[3]: special tags */
            am_chat_msg msgs[16];
            char *bufs[16];
            int nm = 0;
            const char *p = f.f[1], *e = f.f[1] + f.len[1];
            while (p < e && nm < 16) {
                const char *comma = memchr(p, ',', (size_t)(e - p));
                const char *end = comma ? comma : e;
                const char *colon = memchr(p, ':', (size_t)(end - p));
                char *role = strndup(p, (size_t)(colon - p));
                size_t cl;
                bufs[nm] = unhex(colon + 1, (size_t)(end - colon - 1), &cl);
                msgs[nm].role = role;
                msgs[nm].content = bufs[nm];
                nm++;
                p = comma ? comma + 1 : e;
            }
            int32_t *got = NULL;
            int64_t ng = 0;
            int rc = am_chat_encode(t, msgs, nm, &got, &ng);
            if (f.len[2] == 5 && memcmp(f.f[2], "error", 5) == 0) {
                if (rc != AM_EINVAL) {
                    fprintf(stderr, "chat %.*s: expected AM_EINVAL, got %d\n", (int)f.len[0],
                            f.f[0], rc);
                    am_test_failures++;
                } else {
                    CHECK(strlen(am_err_msg()) > 0);
                }
            } else {
                int64_t nw;
                int32_t *want = parse_ids(f.f[2], f.len[2], &nw);
                CHECK_EQ_INT(rc, 0);
                if (!ids_equal(got, ng, want, nw)) {
                    fprintf(stderr, "chat %.*s: ids mismatch\n", (int)f.len[0], f.f[0]);
                    print_ids("want", want, nw);
                    print_ids("got ", got, ng);
                    am_test_failures++;
                }
                free(want);
            }
            CHECK_EQ_INT(am_chat_has_special_tags(msgs, nm), f.f[3][0] == '1');
            am_free(got);
            for (int i = 0; i < nm; i++) {
                free((char *)msgs[i].role);
                free(bufs[i]);
            }
            n++;
        }
        free(fx.data);
    }
    CHECK(n > 0);
    printf("  %d chat dialogs\n", n);
    am_tokenizer_destroy(&t);
}

static void test_chat_errors(void) {
    am_tokenizer *t = NULL;
    CHECK_OK(am_tokenizer_synthetic(512, &t));
    if (!t) return;
    int32_t *ids = NULL;
    int64_t n = 0;
    am_chat_msg bad1[] = {{"user", "a"}, {"user", "b"}};
    CHECK_EQ_INT(am_chat_encode(t, bad1, 2, &ids, &n), AM_EINVAL);
    am_chat_msg bad2[] = {{"user", "a"}, {"assistant", "b"}};
    CHECK_EQ_INT(am_chat_encode(t, bad2, 2, &ids, &n), AM_EINVAL); /* ends with assistant */
    am_chat_msg bad3[] = {{"system", "s"}};
    CHECK_EQ_INT(am_chat_encode(t, bad3, 1, &ids, &n), AM_EINVAL);
    am_chat_msg bad4[] = {{"system", "s"}, {"system", "t"}, {"user", "u"}};
    CHECK_EQ_INT(am_chat_encode(t, bad4, 3, &ids, &n), AM_EINVAL);
    am_chat_msg bad5[] = {{"tool", "x"}};
    CHECK_EQ_INT(am_chat_encode(t, bad5, 1, &ids, &n), AM_EINVAL);
    am_chat_msg bad6[] = {{"user", NULL}};
    CHECK_EQ_INT(am_chat_encode(t, bad6, 1, &ids, &n), AM_EINVAL);
    CHECK_EQ_INT(am_chat_encode(t, bad1, 0, &ids, &n), AM_EINVAL);
    CHECK(ids == NULL);
    am_chat_msg ok[] = {{"user", "  hi  "}};
    CHECK_OK(am_chat_encode(t, ok, 1, &ids, &n));
    CHECK(n > 2 && ids[0] == am_tokenizer_bos(t));
    am_free(ids);
    am_tokenizer_destroy(&t);
}

/* ---- synthetic vocabularies ---------------------------------------------- */

static const int32_t kSynthSizes[] = {260, 512, 4000};

static void test_synthetic_golden(void) {
    char rel[256];
    for (size_t k = 0; k < sizeof kSynthSizes / sizeof kSynthSizes[0]; k++) {
        am_tokenizer *t = NULL;
        CHECK_OK(am_tokenizer_synthetic(kSynthSizes[k], &t));
        if (!t) continue;
        snprintf(rel, sizeof rel, "tests/golden/tokenizer/synth_%d.tsv", (int)kSynthSizes[k]);
        char label[64];
        snprintf(label, sizeof label, "synthetic %d", (int)kSynthSizes[k]);
        check_cases(t, rel, label);
        am_tokenizer_destroy(&t);
    }
}

static void test_synthetic_layout(void) {
    am_tokenizer *t = NULL;
    CHECK_EQ_INT(am_tokenizer_synthetic(259, &t), AM_ERANGE);
    CHECK_EQ_INT(am_tokenizer_synthetic(-5, &t), AM_ERANGE);
    CHECK(t == NULL);
    CHECK_OK(am_tokenizer_synthetic(512, &t));
    if (!t) return;
    CHECK_EQ_INT(am_tokenizer_n_vocab(t), 512);
    CHECK(strcmp(am_tokenizer_piece(t, 0), "<unk>") == 0);
    CHECK_EQ_INT(am_tokenizer_type(t, 0), AM_PIECE_UNKNOWN);
    CHECK(strcmp(am_tokenizer_piece(t, 1), "<s>") == 0);
    CHECK_EQ_INT(am_tokenizer_type(t, 1), AM_PIECE_CONTROL);
    CHECK(strcmp(am_tokenizer_piece(t, 2), "</s>") == 0);
    CHECK(strcmp(am_tokenizer_piece(t, 3), "<0x00>") == 0);
    CHECK(strcmp(am_tokenizer_piece(t, 258), "<0xFF>") == 0);
    CHECK_EQ_INT(am_tokenizer_type(t, 258), AM_PIECE_BYTE);
    CHECK_EQ_INT(am_tokenizer_score(t, 259), 0);
    CHECK_EQ_INT(am_tokenizer_score(t, 260), -1);
    CHECK_EQ_INT(am_tokenizer_type(t, 300), AM_PIECE_NORMAL);
    /* Scores decrease strictly over the learned pieces and characters. */
    for (int32_t i = 260; i < 512; i++)
        CHECK(am_tokenizer_score(t, i) < am_tokenizer_score(t, i - 1));

    /* Deterministic, and a smaller vocabulary is a prefix of a larger one. */
    am_tokenizer *u = NULL;
    CHECK_OK(am_tokenizer_synthetic(4000, &u));
    if (u) {
        /* The learned merges come first in both. */
        int same = 1;
        for (int32_t i = 0; i < 400; i++)
            if (strcmp(am_tokenizer_piece(t, i), am_tokenizer_piece(u, i)) != 0) same = 0;
        /* (pieces 400..511 of t are characters, placed after all merges) */
        CHECK(same);
        CHECK_EQ_INT(am_tokenizer_type(u, 3999), AM_PIECE_UNUSED);
        am_tokenizer_destroy(&u);
    }

    /* Timing: the largest usual size must be quick. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_OK(am_tokenizer_synthetic(32000, &u));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("  synthetic(32000): %.3f s\n", s);
    CHECK(s < 1.0);
    if (u) {
        CHECK_EQ_INT(am_tokenizer_n_vocab(u), 32000);
        int32_t *ids;
        int64_t n;
        const char *txt = "The tokenizer is the first thing a request meets.";
        CHECK_OK(am_tokenizer_encode(u, txt, strlen(txt), 1, &ids, &n));
        CHECK(n >= 2 && n < 20); /* learned words, not bytes */
        char *d;
        size_t dl;
        CHECK_OK(am_tokenizer_decode(u, ids, n, &d, &dl));
        CHECK(d && strcmp(d, txt) == 0);
        am_free(d);
        am_free(ids);
        am_tokenizer_destroy(&u);
    }
    am_tokenizer_destroy(&t);
}

/* Variant models made by python from our synthetic .model (UNUSED pieces,
 * USER_DEFINED pieces, whitespace folding, no byte fallback, no dummy
 * prefix): each .model next to its expected ids. */
static void test_variants_golden(void) {
    static const char *const names[] = {"unused", "user_defined", "remove_ws", "no_byte_fallback",
                                        "no_dummy_prefix"};
    char rel[256], path[1024];
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        snprintf(rel, sizeof rel, "tests/golden/tokenizer/variant_%s.model", names[k]);
        AM_SRC_PATH(rel, path);
        am_tokenizer *t = NULL;
        int rc = am_tokenizer_load(path, &t);
        if (rc) {
            fprintf(stderr, "%s: %s\n", path, am_err_msg());
            am_test_failures++;
            continue;
        }
        snprintf(rel, sizeof rel, "tests/golden/tokenizer/variant_%s.tsv", names[k]);
        check_cases(t, rel, names[k]);
        am_tokenizer_destroy(&t);
    }
}

/* ---- writers --------------------------------------------------------------- */

static void expect_same_vocab(const am_tokenizer *a, const am_tokenizer *b, const char *what) {
    CHECK_EQ_INT(am_tokenizer_n_vocab(a), am_tokenizer_n_vocab(b));
    CHECK_EQ_INT(am_tokenizer_bos(a), am_tokenizer_bos(b));
    CHECK_EQ_INT(am_tokenizer_eos(a), am_tokenizer_eos(b));
    CHECK_EQ_INT(am_tokenizer_unk(a), am_tokenizer_unk(b));
    int diffs = 0;
    for (int32_t i = 0; i < am_tokenizer_n_vocab(a) && i < am_tokenizer_n_vocab(b); i++) {
        if (strcmp(am_tokenizer_piece(a, i), am_tokenizer_piece(b, i)) != 0 ||
            am_tokenizer_score(a, i) != am_tokenizer_score(b, i) ||
            am_tokenizer_type(a, i) != am_tokenizer_type(b, i))
            diffs++;
    }
    if (diffs) fprintf(stderr, "%s: %d pieces differ\n", what, diffs);
    CHECK_EQ_INT(diffs, 0);
}

static void test_write_model_roundtrip(void) {
    char path[512];
    am_tokenizer *t = load_shared("models/tokenizer.model"), *u = NULL;
    if (!t) return;
    CHECK_OK(am_tokenizer_write_model(t, tmp_path("llama.model", path, sizeof path)));
    CHECK_OK(am_tokenizer_load(path, &u));
    if (u) {
        expect_same_vocab(t, u, "model roundtrip");
        check_cases(u, "tests/golden/tokenizer/llama_cases.tsv", "rewritten tokenizer.model");
        am_tokenizer_destroy(&u);
    }
    am_tokenizer_destroy(&t);
}

/* Our llama2.c writer reproduces the distributed tokenizer.bin byte for byte. */
static void test_write_llama2c_exact(void) {
    char path[512], shared[1024];
    am_tokenizer *t = load_shared("models/tokenizer.model");
    if (!t) return;
    CHECK_OK(am_tokenizer_write_llama2c(t, tmp_path("llama.bin", path, sizeof path)));
    size_t la, lb;
    unsigned char *a = read_all(path, &la);
    unsigned char *b = read_all(AM_SHARED_PATH("models/tokenizer.bin", shared), &lb);
    CHECK(a && b && la == lb && memcmp(a, b, la) == 0);
    free(a);
    free(b);
    /* The synthetic vocabulary round-trips too (UNUSED fillers come back
     * NORMAL: llama2.c has no types; they are unreachable either way). */
    am_tokenizer *s = NULL, *u = NULL;
    CHECK_OK(am_tokenizer_synthetic(512, &s));
    CHECK_OK(am_tokenizer_write_llama2c(s, tmp_path("synth.bin", path, sizeof path)));
    CHECK_OK(am_tokenizer_load(path, &u));
    if (s && u) {
        CHECK_EQ_INT(am_tokenizer_n_vocab(u), 512);
        check_cases(u, "tests/golden/tokenizer/synth_512.tsv", "synthetic via tokenizer.bin");
    }
    am_tokenizer_destroy(&s);
    am_tokenizer_destroy(&u);
    am_tokenizer_destroy(&t);
}

/* The newer llama2.c export writes byte pieces as chr(b); we read them back
 * as <0xXX> BYTE pieces. */
static void test_llama2c_new_export(void) {
    if (am_test_no_shared_dir("llama2c new export")) return;
    char path[512], shared[1024];
    size_t n;
    unsigned char *d = read_all(AM_SHARED_PATH("models/tokenizer.bin", shared), &n);
    if (!d) {
        fprintf(stderr, "FATAL: %s missing\n", shared);
        am_test_failures++;
        return;
    }
    unsigned char *o = malloc(n + 512);
    size_t on = 4, off = 4;
    memcpy(o, d, 4);
    for (int i = 0; off < n; i++) {
        int32_t l;
        memcpy(&l, d + off + 4, 4);
        memcpy(o + on, d + off, 4); /* score */
        if (i >= 3 && i < 259) {
            int b = i - 3;
            unsigned char u[2];
            int32_t ul = b < 0x80 ? 1 : 2;
            if (b < 0x80)
                u[0] = (unsigned char)b;
            else {
                u[0] = (unsigned char)(0xC0 | (b >> 6));
                u[1] = (unsigned char)(0x80 | (b & 0x3F));
            }
            memcpy(o + on + 4, &ul, 4);
            memcpy(o + on + 8, u, (size_t)ul);
            on += 8 + (size_t)ul;
        } else {
            memcpy(o + on + 4, d + off + 4, 4 + (size_t)l);
            on += 8 + (size_t)l;
        }
        off += 8 + (size_t)l;
    }
    CHECK(write_all(tmp_path("new_export.bin", path, sizeof path), o, on) == 0);
    am_tokenizer *a = NULL, *b = load_shared("models/tokenizer.model");
    CHECK_OK(am_tokenizer_load(path, &a));
    if (a && b) expect_same_vocab(a, b, "new llama2.c export");
    am_tokenizer_destroy(&a);
    am_tokenizer_destroy(&b);
    free(d);
    free(o);
}

static void test_write_gguf_roundtrip(void) {
    char path[512];
    const char *srcs[2] = {"models/tokenizer.model", NULL};
    for (int k = 0; k < 2; k++) {
        am_tokenizer *t = NULL, *u = NULL;
        if (srcs[k])
            t = load_shared(srcs[k]);
        else
            CHECK_OK(am_tokenizer_synthetic(512, &t));
        if (!t) continue;
        am_gguf_writer *w = NULL;
        CHECK_OK(am_gguf_writer_new(&w));
        if (!w) {
            am_tokenizer_destroy(&t);
            continue;
        }
        CHECK_OK(am_gguf_set_str(w, "general.architecture", "llama"));
        CHECK_OK(am_tokenizer_write_gguf(t, w));
        /* One tiny tensor: a GGUF model file always has some. */
        static const float one[4] = {1, 2, 3, 4};
        am_tensor_src ts = {"token_embd.weight", AM_DTYPE_F32, 1, {4, 1, 1, 1}, one, sizeof one};
        CHECK_OK(am_gguf_add_tensor(w, &ts));
        CHECK_OK(
            am_gguf_writer_write(w, tmp_path(k ? "synth.gguf" : "llama.gguf", path, sizeof path)));
        am_gguf_writer_destroy(&w);
        am_ckpt *c = NULL;
        CHECK_OK(am_ckpt_open(path, &c));
        if (c) {
            CHECK_OK(am_tokenizer_from_ckpt(c, &u));
            if (u) {
                expect_same_vocab(t, u, "gguf roundtrip");
                check_cases(u,
                            k ? "tests/golden/tokenizer/synth_512.tsv"
                              : "tests/golden/tokenizer/llama_cases.tsv",
                            "gguf");
            }
            am_ckpt_destroy(&c);
        }
        am_tokenizer_destroy(&u);
        am_tokenizer_destroy(&t);
    }
}

/* ---- hostile files ---------------------------------------------------------- */

/* Loads data from a file; the result must be an error naming the file (or,
 * for fuzzed input, a clean success). Never a crash: ASan checks the rest. */
static int load_bytes(const unsigned char *d, size_t n, const char *name, int must_fail) {
    char path[512];
    tmp_path(name, path, sizeof path);
    if (write_all(path, d, n) != 0) {
        am_test_failures++;
        return 0;
    }
    am_tokenizer *t = NULL;
    am_err_clear();
    int rc = am_tokenizer_load(path, &t);
    if (rc == 0) {
        /* Whatever loaded must work. */
        int32_t *ids;
        int64_t ni;
        const char *txt = "hello world \xff\x80 \xE4\xBD\xA0";
        if (am_tokenizer_encode(t, txt, strlen(txt), 0, &ids, &ni) == 0) {
            char *s;
            size_t sl;
            if (am_tokenizer_decode(t, ids, ni, &s, &sl) == 0) am_free(s);
            am_free(ids);
        }
        am_tokenizer_destroy(&t);
        if (must_fail) {
            fprintf(stderr, "%s: hostile file was accepted\n", name);
            am_test_failures++;
        }
    } else {
        CHECK(t == NULL);
        if (!strstr(am_err_msg(), path)) {
            fprintf(stderr, "%s: error message does not name the file: '%s'\n", name, am_err_msg());
            am_test_failures++;
        }
    }
    return rc;
}

static void test_hostile_model(void) {
    if (am_test_no_shared_dir("hostile tokenizer.model")) return;
    char path[1024];
    size_t n;
    unsigned char *d = read_all(AM_SHARED_PATH("models/tokenizer.model", path), &n);
    if (!d) {
        fprintf(stderr, "FATAL: %s missing\n", path);
        am_test_failures++;
        return;
    }
    /* Truncations: every prefix of the first 2 KB, then a spread. Pieces are
     * at the front; a cut inside any message must be caught. */
    for (size_t cut = 0; cut < n; cut += cut < 2048 ? 1 : 997)
        load_bytes(d, cut, "trunc.model", 1);
    /* The tail holds trainer_spec and normalizer_spec: cut through them too. */
    for (size_t k = 1; k < 600 && k < n; k++)
        load_bytes(d, n - k, "trunc_tail.model", 0);

    unsigned char *m = malloc(n + 16);
    /* Length of the first piece message made huge: 0x0A <len varint>. */
    memcpy(m, d, n);
    m[1] = 0xFF;
    m[2] = 0xFF;
    m[3] = 0xFF;
    m[4] = 0x7F;
    CHECK(load_bytes(m, n, "biglen.model", 1) == AM_EFORMAT);
    CHECK(strstr(am_err_msg(), "runs past the end") != NULL);
    /* An 11-byte varint. */
    memcpy(m, d, n);
    for (int i = 1; i < 12; i++)
        m[i] = 0x80;
    CHECK(load_bytes(m, n, "varint.model", 1) == AM_EFORMAT);
    /* Wire type 3 (group start) at the top level. */
    memcpy(m, d, n);
    m[0] = 0x0B;
    CHECK(load_bytes(m, n, "group.model", 1) < 0);
    /* Inside the first piece (0A len 0A 05 '<unk>' 15 score 18 type):
     * change its type to 9. */
    memcpy(m, d, n);
    if (m[0] == 0x0A && m[2] == 0x0A && m[3] == 5 && m[9] == 0x15 && m[14] == 0x18) {
        m[15] = 9;
        CHECK(load_bytes(m, n, "badtype.model", 1) == AM_EFORMAT);
        CHECK(strstr(am_err_msg(), "pieces[0].type") != NULL);
        /* Make <unk> NORMAL: no UNKNOWN piece left. */
        m[15] = 1;
        CHECK(load_bytes(m, n, "nounk.model", 1) == AM_EFORMAT);
        /* A piece with NUL bytes in it. */
        memcpy(m, d, n);
        memcpy(m + 4, "<s>\0\0", 5);
        CHECK(load_bytes(m, n, "nul.model", 1) == AM_EFORMAT);
    } else {
        fprintf(stderr, "unexpected tokenizer.model layout\n");
        am_test_failures++;
    }
    /* Random byte flips: must never crash; most fail cleanly. */
    uint64_t rng = 12345;
    for (int it = 0; it < 300; it++) {
        memcpy(m, d, n);
        for (int k = 0; k < 4; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(rng >> 33) % (it % 2 ? n : 4096);
            m[pos] = (unsigned char)(rng >> 13);
        }
        load_bytes(m, n, "flip.model", 0);
    }
    /* Empty and tiny files. */
    load_bytes(d, 0, "empty.model", 1);
    CHECK(load_bytes((const unsigned char *)"\x0a\x00", 2, "tiny.model", 1) < 0);
    free(m);
    free(d);
}

static void test_hostile_bin(void) {
    if (am_test_no_shared_dir("hostile tokenizer.bin")) return;
    char path[1024];
    size_t n;
    unsigned char *d = read_all(AM_SHARED_PATH("models/tokenizer.bin", path), &n);
    if (!d) {
        fprintf(stderr, "FATAL: %s missing\n", path);
        am_test_failures++;
        return;
    }
    unsigned char *m = malloc(n + 16);
    /* Truncations inside the header, a record header and a record body. */
    static const size_t cuts[] = {1, 3, 4, 7, 11, 12, 13, 20, 1000, 433860};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++)
        if (cuts[k] < n) CHECK(load_bytes(d, cuts[k], "trunc.bin", 1) < 0);
    CHECK(load_bytes(d, n - 1, "trunc1.bin", 1) < 0);
    /* max_token_length 0, negative, huge. */
    int32_t bad_max[] = {0, -1, 1 << 30};
    for (int k = 0; k < 3; k++) {
        memcpy(m, d, n);
        memcpy(m, &bad_max[k], 4);
        CHECK(load_bytes(m, n, "max.bin", 1) == AM_EFORMAT);
    }
    /* First token length negative, zero, larger than max_token_length, huge. */
    int32_t bad_len[] = {-5, 0, 28, 0x7FFFFFFF};
    for (int k = 0; k < 4; k++) {
        memcpy(m, d, n);
        memcpy(m + 8, &bad_len[k], 4);
        CHECK(load_bytes(m, n, "len.bin", 1) == AM_EFORMAT);
        CHECK(strstr(am_err_msg(), "token 0") != NULL);
    }
    /* Trailing garbage after the last record. */
    memcpy(m, d, n);
    memcpy(m + n, "\x01\x02\x03", 3);
    CHECK(load_bytes(m, n + 3, "trailing.bin", 1) == AM_EFORMAT);
    /* A duplicate piece: token 260 (" t") renamed to " a" (token 263). */
    memcpy(m, d, n);
    size_t off = 4;
    for (int i = 0; i < 260; i++) {
        int32_t l;
        memcpy(&l, m + off + 4, 4);
        off += 8 + (size_t)l;
    }
    if (memcmp(m + off + 8, " t", 2) == 0) {
        m[off + 9] = 'a';
        CHECK(load_bytes(m, n, "dup.bin", 1) == AM_EFORMAT);
        CHECK(strstr(am_err_msg(), "already defined") != NULL);
    } else {
        am_test_failures++;
    }
    /* Random flips. */
    uint64_t rng = 777;
    for (int it = 0; it < 200; it++) {
        memcpy(m, d, n);
        for (int k = 0; k < 3; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            m[(size_t)(rng >> 33) % n] = (unsigned char)(rng >> 13);
        }
        load_bytes(m, n, "flip.bin", 0);
    }
    free(m);
    free(d);
    am_tokenizer *t = NULL;
    CHECK_EQ_INT(am_tokenizer_load("/nonexistent/tokenizer.model", &t), AM_EIO);
    CHECK(strstr(am_err_msg(), "/nonexistent/tokenizer.model") != NULL);
    char dir[512];
    tmp_path("", dir, sizeof dir);
    CHECK_EQ_INT(am_tokenizer_load(dir, &t), AM_EIO); /* a directory */
    CHECK(t == NULL);
}

/* Allocation failures anywhere in load, encode and decode fail cleanly
 * (ASan reports any leak on those paths). */
static void test_alloc_failures(void) {
    char path[512];
    am_tokenizer *s = NULL;
    CHECK_OK(am_tokenizer_synthetic(300, &s));
    if (!s) return;
    CHECK_OK(am_tokenizer_write_model(s, tmp_path("small.model", path, sizeof path)));
    am_tokenizer_destroy(&s);
    int saw_ok = 0;
    for (long k = 0; k < 400 && !saw_ok; k++) {
        am_tokenizer *t = NULL;
        am_alloc_fail_after(k);
        int rc = am_tokenizer_load(path, &t);
        if (rc == 0) {
            int32_t *ids = NULL;
            int64_t n = 0;
            rc = am_tokenizer_encode(t, "hello world", 11, 1, &ids, &n);
            if (rc == 0) {
                char *d = NULL;
                size_t dl;
                rc = am_tokenizer_decode(t, ids, n, &d, &dl);
                am_free(d);
            }
            am_free(ids);
            am_tokenizer_destroy(&t);
            if (rc == 0) saw_ok = 1;
        } else {
            CHECK(t == NULL);
        }
        am_alloc_fail_after(-1);
    }
    CHECK(saw_ok);
    for (long k = 0; k < 2000; k++) {
        am_alloc_fail_after(k);
        int rc = am_tokenizer_synthetic(300, &s);
        am_alloc_fail_after(-1);
        if (rc == 0) {
            am_tokenizer_destroy(&s);
            break;
        }
        CHECK(s == NULL);
    }
}

/* ---- speed ------------------------------------------------------------------ */

/* ~100 KB built from the golden corpus; its ids' CRC and count are in the
 * fixture (python computed them), so this is also a golden check. */
static void test_encode_speed_100k(void) {
    fixture fx;
    fields f;
    if (fixture_open(&fx, "tests/golden/tokenizer/llama_cases.tsv")) return;
    char *texts = malloc(1 << 20);
    size_t tn = 0;
    int64_t want_n = -1;
    uint32_t want_crc = 0;
    long reps = 0;
    int first = 1;
    while (fixture_next(&fx, &f)) {
        if (f.n == 5 && memcmp(f.f[0], "case", 4) == 0) {
            size_t l;
            char *t = unhex(f.f[2], f.len[2], &l);
            if (!first) texts[tn++] = '\n';
            first = 0;
            memcpy(texts + tn, t, l);
            tn += l;
            free(t);
        } else if (f.n == 4 && f.len[0] == 3 && memcmp(f.f[0], "big", 3) == 0) {
            reps = strtol(f.f[1], NULL, 10);
            want_n = strtoll(f.f[2], NULL, 10);
            want_crc = (uint32_t)strtoul(f.f[3], NULL, 10);
        }
    }
    free(fx.data);
    CHECK(reps > 0);
    if (reps <= 0) {
        free(texts);
        return;
    }
    size_t big_n = tn * (size_t)reps + (size_t)reps - 1;
    char *big = malloc(big_n + 1);
    size_t bn = 0;
    for (long r = 0; r < reps; r++) {
        if (r) big[bn++] = '\n';
        memcpy(big + bn, texts, tn);
        bn += tn;
    }
    am_tokenizer *t = load_shared("models/tokenizer.model");
    am_tokenizer *tb = load_shared("models/tokenizer.bin");
    if (t && tb) {
        int32_t *ids = NULL, *ids_b = NULL;
        int64_t n = 0, n_b = 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        CHECK_OK(am_tokenizer_encode(t, big, bn, 0, &ids, &n));
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        printf("  encode %zu bytes -> %lld tokens in %.2f ms (%.1f MB/s)\n", bn, (long long)n,
               s * 1e3, (double)bn / s / 1e6);
        CHECK_EQ_INT(n, want_n);
        CHECK_EQ_INT(crc32_ids(ids, n), want_crc);
        CHECK_OK(am_tokenizer_encode(tb, big, bn, 0, &ids_b, &n_b));
        CHECK(ids_equal(ids, n, ids_b, n_b));
        CHECK(s < 1.0);
        /* Decode speed and round trip: the corpus holds malformed UTF-8,
         * which decodes to U+FFFD, so compare with a valid-only text. */
        clock_gettime(CLOCK_MONOTONIC, &t0);
        char *d = NULL;
        size_t dl = 0;
        CHECK_OK(am_tokenizer_decode(t, ids, n, &d, &dl));
        clock_gettime(CLOCK_MONOTONIC, &t1);
        s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        printf("  decode %lld tokens in %.2f ms\n", (long long)n, s * 1e3);
        am_free(d);
        am_free(ids);
        am_free(ids_b);
    }
    am_tokenizer_destroy(&t);
    am_tokenizer_destroy(&tb);
    free(big);
    free(texts);
}

/* A pathological input for greedy BPE: one long run of a single character
 * (every pair scores the same, so stale heap entries pile up). */
static void test_encode_long_runs(void) {
    am_tokenizer *t = load_shared("models/tokenizer.model");
    if (!t) return;
    size_t n = 200000;
    char *s = malloc(n);
    memset(s, ' ', n);
    int32_t *ids;
    int64_t ni;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_OK(am_tokenizer_encode(t, s, n, 0, &ids, &ni));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("  200000 spaces -> %lld tokens in %.2f ms\n", (long long)ni, sec * 1e3);
    CHECK(sec < 2.0);
    char *d;
    size_t dl;
    CHECK_OK(am_tokenizer_decode(t, ids, ni, &d, &dl));
    CHECK_EQ_INT(dl, n); /* the dummy prefix space is dropped again */
    am_free(d);
    am_free(ids);
    memset(s, 'a', n);
    CHECK_OK(am_tokenizer_encode(t, s, n, 1, &ids, &ni));
    CHECK(ni > 1 && ids[0] == 1);
    am_free(ids);
    /* Empty text: no ids, or just BOS. */
    CHECK_OK(am_tokenizer_encode(t, "", 0, 0, &ids, &ni));
    CHECK_EQ_INT(ni, 0);
    am_free(ids);
    CHECK_OK(am_tokenizer_encode(t, NULL, 0, 1, &ids, &ni));
    CHECK_EQ_INT(ni, 1);
    am_free(ids);
    free(s);
    am_tokenizer_destroy(&t);
}

/* ---- export for the fixture generator -------------------------------------- */

static void export_for_golden(void) {
    const char *dir = getenv("AM_TOK_GOLDEN_EXPORT");
    if (!dir) return;
    char path[1024];
    for (size_t k = 0; k < sizeof kSynthSizes / sizeof kSynthSizes[0]; k++) {
        am_tokenizer *t = NULL;
        CHECK_OK(am_tokenizer_synthetic(kSynthSizes[k], &t));
        snprintf(path, sizeof path, "%s/synth_%d.model", dir, (int)kSynthSizes[k]);
        if (t) CHECK_OK(am_tokenizer_write_model(t, path));
        am_tokenizer_destroy(&t);
    }
    am_tokenizer *t = load_shared("models/tokenizer.model");
    if (t) {
        snprintf(path, sizeof path, "%s/llama_rewritten.model", dir);
        CHECK_OK(am_tokenizer_write_model(t, path));
        am_tokenizer_destroy(&t);
    }
    printf("  exported to %s\n", dir);
}

AM_TEST_MAIN(AM_TEST(export_for_golden), AM_TEST(test_llama_model_golden),
             AM_TEST(test_llama_bin_golden), AM_TEST(test_llama_model_vs_bin),
             AM_TEST(test_llama_decode_golden), AM_TEST(test_llama_streaming),
             AM_TEST(test_chat_golden), AM_TEST(test_chat_errors), AM_TEST(test_synthetic_golden),
             AM_TEST(test_synthetic_layout), AM_TEST(test_variants_golden),
             AM_TEST(test_write_model_roundtrip), AM_TEST(test_write_llama2c_exact),
             AM_TEST(test_llama2c_new_export), AM_TEST(test_write_gguf_roundtrip),
             AM_TEST(test_hostile_model), AM_TEST(test_hostile_bin), AM_TEST(test_alloc_failures),
             AM_TEST(test_encode_speed_100k), AM_TEST(test_encode_long_runs))
