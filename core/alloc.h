/* core/alloc.h - allocation helpers.
 *
 * All heap memory of anymal goes through these so that tests can inject
 * failures (am_alloc_fail_after) and large buffers are aligned for AVX-512.
 * Every function returns NULL on failure and never aborts; am_free(NULL) is a
 * no-op. Memory from am_aligned_alloc must be released with am_aligned_free.
 */
#ifndef AM_ALLOC_H
#define AM_ALLOC_H

#include <stddef.h>

#define AM_ALIGN_BYTES 64

void *am_malloc(size_t n);
void *am_calloc(size_t count, size_t size); /* checks count*size overflow */
void *am_realloc(void *p, size_t n);
void am_free(void *p);
char *am_strdup(const char *s);
char *am_strndup(const char *s, size_t n);
void *am_aligned_alloc(size_t n); /* AM_ALIGN_BYTES-aligned, zero-filled */
void am_aligned_free(void *p);
/* Makes *buf (from am_aligned_alloc, *cap bytes) hold at least `bytes`: a
 * reused scratch buffer. Contents are not kept. 0, or AM_ENOMEM with *buf and
 * *cap unchanged. */
int am_aligned_reserve(void **buf, size_t *cap, size_t bytes);

/* Fault injection for tests: the n-th allocation from now fails (and every
 * later one keeps succeeding). n < 0 disables. Not thread-safe; tests only. */
void am_alloc_fail_after(long n);

#endif
