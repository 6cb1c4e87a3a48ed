/* tools/batch_input.h - `anymal batch`'s input: a streaming line reader with a line-size
 * limit, and the first pass over the input (its identity, its line count, the custom_id
 * index, the model names).
 *
 * Memory is bounded whatever the input's size: the reader holds one line (at most
 * max_line bytes; a longer line is skipped while read and reported by its length), and
 * the index holds 8 bytes per slot, 5/4 slots per line (the lines are counted first): a
 * 1 GB input of 200-byte lines (5 M lines) takes a 50 MB index. An entry is 32 bits of
 * the custom_id's 64-bit hash and the line number; the slot comes from 32 other bits.
 * When a line's id meets an earlier line's entry (a duplicate custom_id, or two ids
 * whose 64 hash bits partly agree: about n * 1e-9 such pairs), the scan reads the input
 * again for just those lines and keeps every id that is not a real duplicate in an exact
 * map: lookups are exact, and a duplicate is one only when the ids are equal.
 *
 * Errors: AM_EIO (read failures, errno in the message), AM_ENOMEM, AM_ERANGE (more than
 * 2^32 - 2 lines). Every message names the file.
 */
#ifndef AM_BATCH_INPUT_H
#define AM_BATCH_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/strmap.h"

#define AM_BATCH_MAX_MODELS 64 /* distinct model names checked with the cluster */

typedef struct am_batch_reader {
    FILE *f;
    struct am_batch_block *blk; /* the read block and the running hash of the bytes read */
    char *buf;                  /* the current line, NUL-terminated (owned) */
    size_t cap, max_line;
    uint64_t offset; /* of the next line */
    uint64_t line;   /* 1-based number of the line last returned */
} am_batch_reader;

int am_batch_reader_open(am_batch_reader *r, const char *path, size_t max_line);
/* The next line without its '\n' (and a '\r' before it): 1 with *s, *len, *off (its byte
 * offset) and *full (its length in the file, over max_line when *s is NULL: too long); 0 at
 * the end; or an AM_E* code. */
int am_batch_reader_next(am_batch_reader *r, const char **s, size_t *len, uint64_t *off,
                         size_t *full);
/* Reads length bytes at off into the reader's buffer (a line again, for a retry). */
int am_batch_reader_pread(am_batch_reader *r, uint64_t off, size_t length, const char **s);
void am_batch_reader_close(am_batch_reader *r);

typedef struct am_batch_suspect {
    uint64_t line, first;
} am_batch_suspect;

typedef struct am_batch_scan {
    uint64_t bytes, fnv1a64; /* the input's identity */
    uint64_t n_lines;        /* lines, blank ones included */
    uint64_t n_requests;     /* lines that are not blank */
    uint64_t *slots;         /* the custom_id index (owned) */
    uint64_t n_slots;
    am_strmap exc;  /* ids whose entry bits met another id's: id -> line, exact */
    char **exc_ids; /* its keys (owned) */
    size_t n_exc_ids, cap_exc_ids;
    am_batch_suspect *susp; /* during the scan: lines that met an earlier entry */
    size_t n_susp, cap_susp;
    int susp_oom;
    char *models[AM_BATCH_MAX_MODELS]; /* distinct body.model names (owned) */
    int n_models, models_overflow;
} am_batch_scan;

/* The first pass. Lines that do not parse, or have no custom_id, are counted but not
 * indexed (the second pass reports them). */
int am_batch_scan_input(const char *path, size_t max_line, am_batch_scan *out);
/* The 64-bit hash of a custom_id the index uses (FNV-1a 64, then murmur3's finalizer). */
uint64_t am_batch_id_hash(const char *custom_id);
/* The first line (1-based) with this custom_id, 0 if none. */
uint64_t am_batch_scan_find(const am_batch_scan *s, const char *custom_id);
void am_batch_scan_fini(am_batch_scan *s);

/* FNV-1a 64 of n bytes, continuing from h (start with AM_FNV1A64_INIT). */
#define AM_FNV1A64_INIT 1469598103934665603ull
uint64_t am_batch_fnv1a64(uint64_t h, const void *p, size_t n);

#endif
