/* core/formats/formats_internal.h - shared internals of the checkpoint readers
 * and writers (core/ckpt.h). Not a public header: only the sources in core/formats/
 * and the format tests include it.
 *
 * An am_ckpt is a list of read-only file mappings, a flat tensor table whose
 * data pointers point into those mappings, a flat metadata table, name indexes
 * for both, and an arena that owns every name and string the reader had to copy.
 * Each format reader fills these through the am__ckpt_* helpers (ckpt_build.c),
 * then am__ckpt_finish() builds the indexes (rejecting duplicate names). Calls
 * run one way: ckpt.c (am_ckpt_open) -> the readers -> ckpt_build.c.
 */
#ifndef AM_FORMATS_INTERNAL_H
#define AM_FORMATS_INTERNAL_H

#include "core/ckpt.h"
#include "core/strmap.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Every reader copies little-endian values out of the mapping with memcpy; a
 * big-endian host would need byte swaps that nobody has written yet. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "core/formats assumes a little-endian host"
#endif

/* GGUF keys are limited to 65535 bytes by the GGUF spec. */
#define AM_GGUF_MAX_KEY_BYTES 65535u
/* Nested GGUF arrays deeper than this are rejected (they only exist in tests). */
#define AM_GGUF_MAX_ARRAY_DEPTH 8
/* Largest general.alignment accepted (a power of two). */
#define AM_GGUF_MAX_ALIGNMENT 65536u
/* Alignment the GGUF writer uses, and the GGUF default. */
#define AM_GGUF_DEFAULT_ALIGNMENT 32u
/* Integers in JSON headers are doubles to cJSON; beyond 2^53 they are not exact. */
#define AM_JSON_MAX_EXACT_INT 9007199254740992.0

/* ---- A read-only file mapping. ------------------------------------------ */
typedef struct am__mfile {
    char *path;          /* owned */
    const uint8_t *data; /* NULL when size == 0 */
    size_t size;
} am__mfile;

/* Maps path read-only. AM_EIO (errno in the message) if it cannot be opened,
 * stat'ed or mapped, AM_EFORMAT if it is not a regular file. */
int am__mfile_open(am__mfile *f, const char *path);
/* Unmaps and frees; accepts a zeroed struct. */
void am__mfile_close(am__mfile *f);

/* ---- An arena for names and copied strings; freed all at once. ----------- */
typedef struct am__arena_block am__arena_block;
typedef struct am__arena {
    am__arena_block *head;
} am__arena;

/* 8-byte aligned memory, or NULL. */
void *am__arena_alloc(am__arena *a, size_t n);
/* A NUL-terminated copy of s[0..n), or NULL. */
char *am__arena_strndup(am__arena *a, const char *s, size_t n);
void am__arena_free(am__arena *a);

/* 1 if s[0..n) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
int am__utf8_valid(const uint8_t *s, size_t n);
/* Offset of the first byte of the first ill-formed sequence, or n. */
size_t am__utf8_bad_at(const uint8_t *s, size_t n);

/* ---- Metadata entries. --------------------------------------------------- */
typedef struct am__strref {
    const char *s;
    size_t len;
} am__strref;

typedef struct am__meta {
    const char *key;        /* NUL-terminated, in the arena */
    am_gguf_type type;      /* value type; safetensors metadata is AM_GGUF_STRING */
    const void *val;        /* scalars: LE bytes; strings: the bytes; arrays: first element */
    uint64_t len;           /* strings: byte length; arrays: element count */
    am_gguf_type elem_type; /* arrays */
    const am__strref *strs; /* string arrays: len entries (arena) */
    int64_t inl;            /* storage for synthesized integers (llama2.c header) */
} am__meta;

/* ---- The checkpoint. ------------------------------------------------------ */
struct am_ckpt {
    am_ckpt_format format;
    char *path;
    am__mfile *files;
    int64_t n_files, cap_files;
    am_ckpt_tensor *tensors;
    int64_t n_tensors, cap_tensors;
    am__meta *meta;
    int64_t n_meta, cap_meta;
    am_strmap tensor_index, meta_index;
    am__arena arena;
};

/* ---- Table building (ckpt_build.c): used by the readers and am_ckpt_open. */
/* Maps one more file; returns its index in c->files or a negative code. */
int am__ckpt_add_file(am_ckpt *c, const char *path, int64_t *index);
/* Appends a zeroed tensor slot (NULL on ENOMEM, message set). */
am_ckpt_tensor *am__ckpt_new_tensor(am_ckpt *c);
/* Appends a zeroed metadata slot (NULL on ENOMEM, message set). */
am__meta *am__ckpt_new_meta(am_ckpt *c);
/* Builds the name indexes; AM_EFORMAT naming the file on a duplicate tensor or key. */
int am__ckpt_finish(am_ckpt *c);

/* Bytes of a tensor of dtype and shape (outermost first): AM_ERANGE on
 * overflow, AM_ESHAPE if the last dim is not a multiple of the block size. */
int am__tensor_nbytes(am_dtype dtype, int n_dims, const int64_t *shape, size_t *out);
/* Checks that the tensors [first, last) of c, all in file, do not overlap
 * (empty tensors are ignored). AM_EFORMAT naming both tensors if they do. */
int am__ckpt_check_overlaps(am_ckpt *c, int64_t first, int64_t last, const char *file);
/* "[a, b, c]" into buf. */
const char *am__shape_str(int n_dims, const int64_t *shape, char *buf, size_t cap);

/* Test hook: verifies that every tensor and metadata value lies inside its
 * mapping and that nbytes matches dtype*shape. 0 or AM_EINTERNAL. */
int am__ckpt_validate(const am_ckpt *c);

/* ---- Format readers: fill c (files, tensors, meta) from path; called only by
 * am_ckpt_open (ckpt.c). -------------------------------------------------- */
int am__safetensors_open_file(am_ckpt *c, const char *path);
int am__safetensors_open_dir(am_ckpt *c, const char *dir);
int am__gguf_open(am_ckpt *c, const char *path);
int am__llama2c_open(am_ckpt *c, const char *path);

/* ---- Atomic file writing: a temp file in the same directory, renamed at the end. */
typedef struct am__wfile {
    char *path;     /* final path (owned) */
    char *tmp_path; /* owned */
    FILE *fp;
    int err;      /* first error (negative AM_E*); later writes are skipped */
    uint64_t pos; /* bytes written so far */
} am__wfile;

/* Creates path's temporary sibling. AM_EIO with errno on failure. */
int am__wfile_open(am__wfile *w, const char *path);
/* Appends n bytes (errors are remembered in w->err). */
void am__wfile_write(am__wfile *w, const void *p, size_t n);
/* Appends zero bytes until pos is a multiple of align. */
void am__wfile_pad(am__wfile *w, size_t align);
/* Flushes, syncs and renames over the final path; on any earlier error removes
 * the temporary file instead. Returns 0 or the first error. Frees w. */
int am__wfile_commit(am__wfile *w);
/* ---- A growable byte buffer for headers. Appends after a failed one are
 * skipped, so callers check err once at the end. ------------------------- */
typedef struct am__buf {
    char *p;
    size_t n, cap;
    int err; /* AM_ENOMEM once an append failed */
} am__buf;
void am__buf_put(am__buf *b, const void *p, size_t n);
/* Short formatted text (numbers, literals: at most 255 bytes). */
void am__buf_printf(am__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s as a JSON string literal: quoted, with '"', '\\' and control bytes escaped. */
void am__buf_json_str(am__buf *b, const char *s);
void am__buf_free(am__buf *b);

#endif
