/* core/formats/strtab.c - small string utilities for the format code: an arena
 * for names, a UTF-8 validator and a growable byte buffer with JSON string
 * escaping. (The name index is core/strmap.h: checkpoints hold up to
 * AM_CKPT_MAX_TENSORS tensors, and duplicate detection and lookups must stay
 * linear.)
 */
#include "core/formats/formats_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <stdarg.h>
#include <string.h>

/* ---- Arena. ---------------------------------------------------------------- */

#define ARENA_BLOCK_BYTES (64u * 1024)

struct am__arena_block {
    am__arena_block *next;
    size_t used, cap;
    _Alignas(8) unsigned char mem[];
};

void *am__arena_alloc(am__arena *a, size_t n) {
    n = (n + 7) & ~(size_t)7;
    if (n == 0) n = 8;
    am__arena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLOCK_BYTES ? n : ARENA_BLOCK_BYTES;
        if (cap > SIZE_MAX - sizeof *b) return NULL;
        b = am_malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->mem + b->used;
    b->used += n;
    return p;
}

char *am__arena_strndup(am__arena *a, const char *s, size_t n) {
    if (n == SIZE_MAX) return NULL;
    char *d = am__arena_alloc(a, n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void am__arena_free(am__arena *a) {
    am__arena_block *b = a->head;
    while (b) {
        am__arena_block *next = b->next;
        am_free(b);
        b = next;
    }
    a->head = NULL;
}

/* ---- UTF-8. ------------------------------------------------------------------- */

int am__utf8_valid(const uint8_t *s, size_t n) { return am__utf8_bad_at(s, n) == n; }

size_t am__utf8_bad_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return i;
        }
        if (n - i <= k) return i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += k + 1;
    }
    return n;
}

/* ---- Growable buffer. ------------------------------------------------------- */

void am__buf_put(am__buf *b, const void *p, size_t n) {
    if (b->err || n == 0) return;
    if (b->cap - b->n < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n < n) {
            if (cap > SIZE_MAX / 2) {
                b->err = AM_ENOMEM;
                return;
            }
            cap *= 2;
        }
        char *q = am_realloc(b->p, cap);
        if (!q) {
            b->err = AM_ENOMEM;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

void am__buf_printf(am__buf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    /* Only used for numbers and short literals, so 256 bytes always suffice. */
    AM_ASSERT(k >= 0 && (size_t)k < sizeof tmp);
    am__buf_put(b, tmp, (size_t)k);
}

void am__buf_json_str(am__buf *b, const char *s) {
    am__buf_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            am__buf_put(b, e, 2);
        } else if (*p < 0x20) {
            am__buf_printf(b, "\\u%04x", *p);
        } else {
            am__buf_put(b, p, 1);
        }
    }
    am__buf_put(b, "\"", 1);
}

void am__buf_free(am__buf *b) {
    am_free(b->p);
    memset(b, 0, sizeof *b);
}
