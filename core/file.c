/* core/file.c - whole-file reads with a size limit (core/file.h). */
#include "core/file.h"

#include "core/alloc.h"
#include "core/error.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int am_read_file_limited(const char *path, size_t max_bytes, void **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return am_err_set(AM_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return am_err_set(AM_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        return am_err_set(AM_ERANGE, "%s: %lld bytes, over the limit of %zu bytes", path,
                          (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = am_malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return am_err_set(AM_ENOMEM, "%s: cannot allocate %zu bytes", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    int err = ferror(f);
    fclose(f);
    if (got != n || err) {
        am_free(buf);
        return am_err_set(AM_EIO, "%s: read failed", path);
    }
    *data = buf;
    *len = n;
    return 0;
}
