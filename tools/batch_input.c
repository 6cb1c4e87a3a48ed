/* tools/batch_input.c - the batch input's line reader and first pass (tools/batch_input.h).
 *
 * The reader reads the file in 1 MiB blocks and hashes every block as it goes, so the
 * first pass gets the input's identity (FNV-1a 64 of all its bytes) for free while it
 * builds the custom_id index. A line over the limit is skipped while it streams by,
 * never held.
 */
#include "tools/batch_input.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/strmap.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_BLOCK_BYTES ((size_t)1 << 20)

uint64_t am_batch_fnv1a64(uint64_t h, const void *p, size_t n) {
    const unsigned char *u = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ u[i]) * 1099511628211ull;
    return h;
}

/* The reader's block buffer and running hash, behind the line buffer's pointer in the
 * header's struct (r->blk). */
typedef struct am_batch_block {
    char *d;
    size_t n, at;
    uint64_t fnv;
    int eof;
} block;

static block *blk(am_batch_reader *r) { return r->blk; }

int am_batch_reader_open(am_batch_reader *r, const char *path, size_t max_line) {
    memset(r, 0, sizeof *r);
    r->max_line = max_line;
    block *b = am_calloc(1, sizeof *b);
    r->blk = b;
    r->buf = am_malloc(max_line + 1);
    if (!b || !r->buf || !(b->d = am_malloc(READ_BLOCK_BYTES))) {
        am_batch_reader_close(r);
        return am_err_set(AM_ENOMEM, "%s: out of memory for a %zu-byte line buffer", path,
                          max_line);
    }
    b->fnv = AM_FNV1A64_INIT;
    if (!(r->f = fopen(path, "rb"))) {
        am_batch_reader_close(r);
        return am_err_set(AM_EIO, "%s: %s", path, strerror(errno));
    }
    return 0;
}

static int refill(am_batch_reader *r, block *b) {
    b->n = fread(b->d, 1, READ_BLOCK_BYTES, r->f);
    b->at = 0;
    if (b->n < READ_BLOCK_BYTES) {
        if (ferror(r->f)) return am_err_set(AM_EIO, "reading the input: %s", strerror(errno));
        b->eof = 1;
    }
    b->fnv = am_batch_fnv1a64(b->fnv, b->d, b->n);
    return 0;
}

int am_batch_reader_next(am_batch_reader *r, const char **s, size_t *len, uint64_t *off,
                         size_t *full) {
    block *b = blk(r);
    size_t n = 0, total = 0;
    int any = 0;
    *off = r->offset;
    for (;;) {
        if (b->at == b->n) {
            if (b->eof) break;
            int rc = refill(r, b);
            if (rc) return rc;
            if (!b->n) break;
        }
        any = 1;
        const char *p = b->d + b->at;
        const char *nl = memchr(p, '\n', b->n - b->at);
        size_t take = nl ? (size_t)(nl - p) : b->n - b->at;
        if (total + take <= r->max_line) memcpy(r->buf + n, p, take), n += take;
        total += take;
        b->at += take + (nl ? 1 : 0);
        r->offset += take + (nl ? 1 : 0);
        if (nl) break;
    }
    if (!any) return 0;
    r->line++;
    *full = total;
    if (total > r->max_line) {
        *s = NULL;
        *len = 0;
        return 1;
    }
    if (n && r->buf[n - 1] == '\r') n--;
    r->buf[n] = '\0';
    *s = r->buf;
    *len = n;
    return 1;
}

int am_batch_reader_pread(am_batch_reader *r, uint64_t off, size_t length, const char **s) {
    if (length > r->max_line) return am_err_set(AM_ERANGE, "line of %zu bytes", length);
    ssize_t got = pread(fileno(r->f), r->buf, length, (off_t)off);
    if (got != (ssize_t)length)
        return am_err_set(AM_EIO, "reading the input again at byte %llu: %s",
                          (unsigned long long)off, got < 0 ? strerror(errno) : "short read");
    if (length && r->buf[length - 1] == '\r') length--;
    r->buf[length] = '\0';
    *s = r->buf;
    return 0;
}

void am_batch_reader_close(am_batch_reader *r) {
    if (r->f) fclose(r->f);
    am_free(r->buf);
    if (r->blk) am_free(r->blk->d);
    am_free(r->blk);
    memset(r, 0, sizeof *r);
}

/* ---- the custom_id index ---- */

uint64_t am_batch_id_hash(const char *s) {
    uint64_t h = am_batch_fnv1a64(AM_FNV1A64_INIT, s, strlen(s));
    h ^= h >> 33; /* murmur3's finalizer: FNV's low bits alone spread poorly */
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

/* The slot of h: its entry, or the empty slot where it would go. */
static uint64_t *find_slot(const am_batch_scan *s, uint64_t h) {
    /* The slot from the hash's low 32 bits (scaled to n_slots: any table size, no power of
     * two), the entry keeps the high 32: the two are independent bits of the hash. */
    for (uint64_t i = ((h & 0xFFFFFFFFu) * s->n_slots) >> 32;;
         i = i + 1 == s->n_slots ? 0 : i + 1) {
        uint64_t e = s->slots[i];
        if (!e || e >> 32 == h >> 32) return &s->slots[i];
    }
}

uint64_t am_batch_scan_find(const am_batch_scan *s, const char *custom_id) {
    if (!s->slots) return 0;
    if (s->exc.n) { /* ids whose hash bits met another id's: exact */
        int64_t v = am_strmap_get(&s->exc, custom_id, strlen(custom_id));
        if (v >= 0) return (uint64_t)v;
    }
    uint64_t e = *find_slot(s, am_batch_id_hash(custom_id));
    return e & 0xFFFFFFFFu;
}

/* A line whose custom_id's entry bits met an earlier line's entry: the same id (a real
 * duplicate) or another one (a collision); the verification pass tells them apart. */
static void suspect(am_batch_scan *s, uint64_t line, uint64_t first) {
    if (s->n_susp == s->cap_susp) {
        size_t cap = s->cap_susp ? s->cap_susp * 2 : 64;
        am_batch_suspect *v = am_realloc(s->susp, cap * sizeof *v);
        if (!v) {
            s->susp_oom = 1;
            return;
        }
        s->susp = v, s->cap_susp = cap;
    }
    s->susp[s->n_susp++] = (am_batch_suspect){line, first};
}

/* The custom_id and model of one line (borrowed from the parsed tree). */
static void index_line(am_batch_scan *s, const char *line, size_t len, uint64_t no) {
    cJSON *j = cJSON_ParseWithLength(line, len);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "custom_id");
    if (cJSON_IsString(id) && id->valuestring[0]) {
        uint64_t h = am_batch_id_hash(id->valuestring), *e = find_slot(s, h);
        if (!*e)
            *e = (h >> 32) << 32 | no; /* the first line with it wins */
        else
            suspect(s, no, *e & 0xFFFFFFFFu);
    }
    const cJSON *m =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "body"), "model");
    if (cJSON_IsString(m) && m->valuestring[0]) {
        int k = 0;
        while (k < s->n_models && strcmp(s->models[k], m->valuestring))
            k++;
        if (k == s->n_models && k == AM_BATCH_MAX_MODELS) {
            s->models_overflow = 1;
        } else if (k == s->n_models) {
            size_t n = strlen(m->valuestring);
            if ((s->models[k] = am_malloc(n + 1))) {
                memcpy(s->models[k], m->valuestring, n + 1);
                s->n_models++;
            }
        }
    }
    cJSON_Delete(j);
}

static int cmp_u64(const void *a, const void *b) {
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_susp(const void *a, const void *b) {
    return cmp_u64(&((const am_batch_suspect *)a)->line, &((const am_batch_suspect *)b)->line);
}

/* The custom_id of a line (am_free), NULL if it has none. */
static char *line_id(const char *line, size_t len) {
    cJSON *j = cJSON_ParseWithLength(line, len);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "custom_id");
    char *d = NULL;
    if (cJSON_IsString(id) && (d = am_malloc(strlen(id->valuestring) + 1)))
        strcpy(d, id->valuestring);
    cJSON_Delete(j);
    return d;
}

/* The verification pass, only when lines met earlier lines' entries: reads the input
 * again, keeps the custom_ids of the earlier lines concerned, and puts every later line
 * whose id differs (a collision, not a duplicate) into the exact map. Memory: the ids of
 * the lines concerned, none for an input without duplicates or collisions. */
static int verify_suspects(const char *path, size_t max_line, am_batch_scan *s) {
    if (s->susp_oom)
        return am_err_set(AM_ENOMEM, "%s: out of memory for the duplicate custom_ids", path);
    qsort(s->susp, s->n_susp, sizeof *s->susp, cmp_susp);
    uint64_t *firsts = am_malloc(s->n_susp * sizeof *firsts);
    char **fid = am_calloc(s->n_susp, sizeof *fid);
    if (!firsts || !fid) {
        am_free(firsts), am_free(fid);
        return am_err_set(AM_ENOMEM, "%s: out of memory for the duplicate custom_ids", path);
    }
    size_t nf = 0;
    for (size_t i = 0; i < s->n_susp; i++)
        firsts[nf++] = s->susp[i].first;
    qsort(firsts, nf, sizeof *firsts, cmp_u64);
    size_t u = 0;
    for (size_t i = 0; i < nf; i++)
        if (!u || firsts[u - 1] != firsts[i]) firsts[u++] = firsts[i];
    nf = u;
    am_batch_reader r;
    int rc = am_batch_reader_open(&r, path, max_line);
    const char *line;
    size_t len, full, next = 0;
    uint64_t off;
    while (!rc && next < s->n_susp &&
           (rc = am_batch_reader_next(&r, &line, &len, &off, &full)) == 1) {
        rc = 0;
        const uint64_t no = r.line;
        if (!line) continue;
        uint64_t *f = bsearch(&no, firsts, nf, sizeof *firsts, cmp_u64);
        if (f && !(fid[f - firsts] = line_id(line, len))) rc = AM_ENOMEM;
        for (; !rc && next < s->n_susp && s->susp[next].line == no; next++) {
            uint64_t *g = bsearch(&s->susp[next].first, firsts, nf, sizeof *firsts, cmp_u64);
            char *id = line_id(line, len);
            if (!id) {
                rc = AM_ENOMEM;
            } else if (g && fid[g - firsts] && strcmp(id, fid[g - firsts])) {
                /* another id: exact from now on (a later duplicate of it finds this line;
                 * one already there keeps its first line) */
                if (s->n_exc_ids == s->cap_exc_ids) {
                    size_t cap = s->cap_exc_ids ? s->cap_exc_ids * 2 : 16;
                    char **v = am_realloc(s->exc_ids, cap * sizeof *v);
                    if (!v) rc = AM_ENOMEM;
                    if (v) s->exc_ids = v, s->cap_exc_ids = cap;
                }
                const int put = rc ? 0 : am_strmap_put(&s->exc, id, strlen(id), (int64_t)no, NULL);
                if (put < 0) rc = AM_ENOMEM;
                if (!rc && put == 0) s->exc_ids[s->n_exc_ids++] = id, id = NULL;
            }
            am_free(id);
        }
    }
    if (rc > 0) rc = 0;
    if (rc == AM_ENOMEM) rc = am_err_set(AM_ENOMEM, "%s: out of memory verifying custom_ids", path);
    am_batch_reader_close(&r);
    for (size_t i = 0; i < nf; i++)
        am_free(fid[i]);
    am_free(fid);
    am_free(firsts);
    return rc;
}

int am_batch_scan_input(const char *path, size_t max_line, am_batch_scan *out) {
    memset(out, 0, sizeof *out);
    am_batch_reader r;
    int rc = am_batch_reader_open(&r, path, max_line);
    if (rc) return rc;
    /* Size the index from a count of the lines (a fast first read: memchr). */
    uint64_t lines = 1;
    block *b = blk(&r);
    while (!b->eof && !(rc = refill(&r, b)))
        for (const char *p = b->d; (p = memchr(p, '\n', (size_t)(b->d + b->n - p))); p++)
            lines++;
    if (rc || fseeko(r.f, 0, SEEK_SET)) {
        am_batch_reader_close(&r);
        return rc ? rc : am_err_set(AM_EIO, "%s: cannot seek: %s", path, strerror(errno));
    }
    *b = (block){.d = b->d, .fnv = AM_FNV1A64_INIT};
    const uint64_t slots = lines + lines / 4 + 64; /* load at most 4/5 (linear probing) */
    if (!(out->slots = am_calloc(slots, sizeof *out->slots))) {
        am_batch_reader_close(&r);
        return am_err_set(AM_ENOMEM, "%s: out of memory for a custom_id index of %llu slots", path,
                          (unsigned long long)slots);
    }
    out->n_slots = slots;
    const char *s;
    size_t len, full;
    uint64_t off;
    while ((rc = am_batch_reader_next(&r, &s, &len, &off, &full)) == 1) {
        out->n_lines++;
        if (out->n_lines >= 0xFFFFFFFFu) {
            rc = am_err_set(AM_ERANGE, "%s: more than %u lines", path, 0xFFFFFFFEu);
            break;
        }
        if (s && strspn(s, " \t") == len) continue;
        out->n_requests++;
        if (s) index_line(out, s, len, out->n_lines);
    }
    out->bytes = r.offset;
    out->fnv1a64 = blk(&r)->fnv;
    am_batch_reader_close(&r);
    if (!rc && (out->n_susp || out->susp_oom)) rc = verify_suspects(path, max_line, out);
    am_free(out->susp);
    out->susp = NULL;
    out->n_susp = out->cap_susp = 0;
    if (rc < 0) {
        am_batch_scan_fini(out);
        return rc;
    }
    return 0;
}

void am_batch_scan_fini(am_batch_scan *s) {
    am_free(s->slots);
    am_free(s->susp);
    am_strmap_free(&s->exc);
    for (size_t i = 0; i < s->n_exc_ids; i++)
        am_free(s->exc_ids[i]);
    am_free(s->exc_ids);
    for (int i = 0; i < s->n_models; i++)
        am_free(s->models[i]);
    memset(s, 0, sizeof *s);
}
