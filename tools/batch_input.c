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

#include <cjson/cJSON.h>
#include <errno.h>
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

static uint64_t id_hash(const char *s) {
    uint64_t h = am_batch_fnv1a64(AM_FNV1A64_INIT, s, strlen(s));
    h ^= h >> 33; /* murmur3's finalizer: FNV's low bits alone spread poorly */
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

/* The slot of h: its entry, or the empty slot where it would go. */
static uint64_t *find_slot(const am_batch_scan *s, uint64_t h) {
    for (uint64_t i = h & s->mask;; i = (i + 1) & s->mask) {
        uint64_t e = s->slots[i];
        if (!e || e >> 32 == h >> 32) return &s->slots[i];
    }
}

uint64_t am_batch_scan_find(const am_batch_scan *s, const char *custom_id) {
    if (!s->slots) return 0;
    uint64_t e = *find_slot(s, id_hash(custom_id));
    return e & 0xFFFFFFFFu;
}

/* The custom_id and model of one line (borrowed from the parsed tree). */
static void index_line(am_batch_scan *s, const char *line, size_t len, uint64_t no) {
    cJSON *j = cJSON_ParseWithLength(line, len);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "custom_id");
    if (cJSON_IsString(id) && id->valuestring[0]) {
        uint64_t h = id_hash(id->valuestring), *e = find_slot(s, h);
        if (!*e) *e = (h >> 32) << 32 | no; /* the first line with it wins */
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
    uint64_t slots = 1024;
    while (slots * 3 < lines * 4) /* load at most 3/4 (linear probing) */
        slots *= 2;
    if (!(out->slots = am_calloc(slots, sizeof *out->slots))) {
        am_batch_reader_close(&r);
        return am_err_set(AM_ENOMEM, "%s: out of memory for a custom_id index of %llu slots", path,
                          (unsigned long long)slots);
    }
    out->mask = slots - 1;
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
    if (rc < 0) {
        am_batch_scan_fini(out);
        return rc;
    }
    return 0;
}

void am_batch_scan_fini(am_batch_scan *s) {
    am_free(s->slots);
    for (int i = 0; i < s->n_models; i++)
        am_free(s->models[i]);
    memset(s, 0, sizeof *s);
}
