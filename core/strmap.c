/* core/strmap.c - the string -> int64 hash index (core/strmap.h). */
#include "core/strmap.h"

#include "core/alloc.h"
#include "core/error.h"

#include <string.h>

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29); /* fold high bits into the low ones the mask keeps */
}

/* Rehashes into cap slots (a power of two, more than twice the keys). */
static int rehash(am_strmap *m, size_t cap) {
    am_strmap_slot *slots = am_calloc(cap, sizeof *slots);
    if (!slots) return AM_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        const am_strmap_slot *s = &m->slots[i];
        if (!s->key) continue;
        size_t j = (size_t)hash_bytes(s->key, s->len) & (cap - 1);
        while (slots[j].key)
            j = (j + 1) & (cap - 1);
        slots[j] = *s;
    }
    am_free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

int am_strmap_reserve(am_strmap *m, size_t n) {
    size_t cap = m->cap ? m->cap : 64;
    while (n * 2 >= cap) {
        if (cap > SIZE_MAX / 2 / sizeof(am_strmap_slot)) return AM_ENOMEM;
        cap *= 2;
    }
    return cap == m->cap ? 0 : rehash(m, cap);
}

int am_strmap_put(am_strmap *m, const char *key, size_t len, int64_t val, int64_t *existing) {
    int rc = am_strmap_reserve(m, m->n + 1);
    if (rc) return rc;
    size_t j = (size_t)hash_bytes(key, len) & (m->cap - 1);
    while (m->slots[j].key) {
        const am_strmap_slot *s = &m->slots[j];
        if (s->len == len && memcmp(s->key, key, len) == 0) {
            if (existing) *existing = s->val;
            return 1;
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->slots[j] = (am_strmap_slot){key, len, val};
    m->n++;
    return 0;
}

int64_t am_strmap_get(const am_strmap *m, const char *key, size_t len) {
    if (!m->cap) return -1;
    size_t j = (size_t)hash_bytes(key, len) & (m->cap - 1);
    while (m->slots[j].key) {
        const am_strmap_slot *s = &m->slots[j];
        if (s->len == len && memcmp(s->key, key, len) == 0) return s->val;
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

void am_strmap_free(am_strmap *m) {
    am_free(m->slots);
    memset(m, 0, sizeof *m);
}
