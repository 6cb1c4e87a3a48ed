/* core/alloc.c - allocation helpers with test fault injection. */
#include "core/alloc.h"

#include "core/error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static long fail_countdown = -1;

static int should_fail(void) {
    if (fail_countdown < 0) return 0;
    if (fail_countdown == 0) {
        fail_countdown = -1;
        return 1;
    }
    fail_countdown--;
    return 0;
}

void am_alloc_fail_after(long n) { fail_countdown = n; }

void *am_malloc(size_t n) { return should_fail() ? NULL : malloc(n ? n : 1); }

void *am_calloc(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) return NULL;
    return should_fail() ? NULL : calloc(count ? count : 1, size ? size : 1);
}

void *am_realloc(void *p, size_t n) { return should_fail() ? NULL : realloc(p, n ? n : 1); }

void am_free(void *p) { free(p); }

char *am_strndup(const char *s, size_t n) {
    char *d = am_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *am_strdup(const char *s) { return am_strndup(s, strlen(s)); }

void *am_aligned_alloc(size_t n) {
    if (should_fail()) return NULL;
    size_t rounded = (n + AM_ALIGN_BYTES - 1) / AM_ALIGN_BYTES * AM_ALIGN_BYTES;
    if (rounded < n) return NULL;
    void *p = aligned_alloc(AM_ALIGN_BYTES, rounded ? rounded : AM_ALIGN_BYTES);
    if (p) memset(p, 0, rounded);
    return p;
}

void am_aligned_free(void *p) { free(p); }

int am_aligned_reserve(void **buf, size_t *cap, size_t bytes) {
    if (*cap >= bytes) return 0;
    void *p = am_aligned_alloc(bytes);
    if (!p) return AM_ENOMEM;
    am_aligned_free(*buf);
    *buf = p;
    *cap = bytes;
    return 0;
}
