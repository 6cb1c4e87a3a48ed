/* workers/model_identity.h - the name and fingerprint a worker reports for its model.
 *
 * Every worker of a model (encoder workers and shard leaders alike) reports
 * the same pair in READY, so the coordinator can tell workers of one model
 * from workers of another that happens to share its name.
 */
#ifndef AM_MODEL_IDENTITY_H
#define AM_MODEL_IDENTITY_H

#include <stddef.h>

/* name: base name of path. fp: FNV-1a 64 of anymal.json (or config.json) for a
 * directory, of the size and first 64 KiB for a file, as 16 hex digits.
 * Returns 0, or AM_EIO naming path when it cannot be stat'ed. */
int am_model_identity(const char *path, char *name, size_t name_cap, char fp[17]);

#endif
