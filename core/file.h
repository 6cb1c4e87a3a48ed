/* core/file.h - reading a whole file into memory, with a size limit.
 *
 * For inputs that come whole (a media file a client sends, a config): the
 * limit is checked against the file's size before anything is read.
 */
#ifndef AM_FILE_H
#define AM_FILE_H

#include <stddef.h>

/* Reads a whole regular file into *data (free with am_free; *len bytes) when
 * it is at most max_bytes. Returns 0, AM_EIO (message with errno; not a
 * regular file; read failed), AM_ERANGE (too large, names the limit) or
 * AM_ENOMEM; *data is NULL on failure. */
int am_read_file_limited(const char *path, size_t max_bytes, void **data, size_t *len);

#endif
