/* core/strmap.h - a string -> int64 hash index (open addressing, FNV-1a).
 *
 * The one string map of the project: checkpoint tensor and metadata names
 * (core/formats), tokenizer pieces and the synthetic BPE trainer's symbols.
 * Keys are (pointer, length) byte strings the map does not own: they must
 * stay put while the map lives. Linear probing at a load factor under 1/2.
 *
 * Ownership: an am_strmap is embedded (zero-initialised = empty) and freed
 * with am_strmap_free; it owns its slot array only.
 */
#ifndef AM_STRMAP_H
#define AM_STRMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct am_strmap_slot {
    const char *key; /* not owned; NULL marks a free slot */
    size_t len;
    int64_t val;
} am_strmap_slot;

typedef struct am_strmap {
    am_strmap_slot *slots; /* cap entries */
    size_t cap, n;
} am_strmap;

/* Makes room for n keys in all without growing again. 0 or AM_ENOMEM. */
int am_strmap_reserve(am_strmap *m, size_t n);
/* Inserts key -> val. Returns 0, 1 if key was present (*existing set when
 * existing is non-NULL; the map is unchanged) or AM_ENOMEM. */
int am_strmap_put(am_strmap *m, const char *key, size_t len, int64_t val, int64_t *existing);
/* The value of key, or -1 when absent. */
int64_t am_strmap_get(const am_strmap *m, const char *key, size_t len);
/* Frees the slots and empties the map; accepts an empty map. */
void am_strmap_free(am_strmap *m);

#endif
