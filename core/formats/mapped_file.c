/* core/formats/mapped_file.c - read-only file mappings for the readers and
 * atomic (temp file + rename) output for the writers.
 *
 * Mappings are MAP_PRIVATE + PROT_READ: the readers hand out pointers into them
 * and never copy tensor data, so the kernel pages in only what is touched.
 */
#include "core/formats/formats_internal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int am__mfile_open(am__mfile *f, const char *path) {
    memset(f, 0, sizeof *f);
    /* O_NONBLOCK: opening a FIFO must not hang; it is rejected below as not regular. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        return am_err_set(e == ENOENT ? AM_ENOTFOUND : AM_EIO, "%s: cannot open: %s", path,
                          strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return am_err_set(AM_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return am_err_set(AM_EFORMAT, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return am_err_set(AM_ERANGE, "%s: file too large to map", path);
    }
    size_t size = (size_t)st.st_size;
    const uint8_t *data = NULL;
    if (size > 0) {
        /* mmap of length 0 fails, so an empty file simply has no mapping. */
        void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return am_err_set(AM_EIO, "%s: cannot mmap %zu bytes: %s", path, size, strerror(e));
        }
        data = p;
    }
    close(fd); /* the mapping keeps the file referenced */
    f->path = am_strdup(path);
    if (!f->path) {
        if (data) munmap((void *)data, size);
        return am_err_set(AM_ENOMEM, "%s: out of memory", path);
    }
    f->data = data;
    f->size = size;
    return 0;
}

void am__mfile_close(am__mfile *f) {
    if (f->data) munmap((void *)f->data, f->size);
    am_free(f->path);
    memset(f, 0, sizeof *f);
}

/* ---- Atomic writes. ------------------------------------------------------ */

int am__wfile_open(am__wfile *w, const char *path) {
    memset(w, 0, sizeof *w);
    size_t n = strlen(path);
    static const char suffix[] = ".tmp.XXXXXX";
    w->path = am_strdup(path);
    w->tmp_path = am_malloc(n + sizeof suffix);
    if (!w->path || !w->tmp_path) {
        am_free(w->path);
        am_free(w->tmp_path);
        memset(w, 0, sizeof *w);
        return am_err_set(AM_ENOMEM, "%s: out of memory", path);
    }
    memcpy(w->tmp_path, path, n);
    memcpy(w->tmp_path + n, suffix, sizeof suffix);
    /* mkstemp makes the name unique, so two writers of the same path do not
     * trample each other's temp file; the last rename wins. */
    int fd = mkstemp(w->tmp_path);
    if (fd < 0) {
        int e = errno;
        am_free(w->path);
        am_free(w->tmp_path);
        memset(w, 0, sizeof *w);
        return am_err_set(AM_EIO, "%s: cannot create temporary file: %s", path, strerror(e));
    }
    (void)fchmod(fd, 0644); /* mkstemp creates 0600; model files are meant to be shared */
    w->fp = fdopen(fd, "wb");
    if (!w->fp) {
        int e = errno;
        close(fd);
        unlink(w->tmp_path);
        am_free(w->path);
        am_free(w->tmp_path);
        memset(w, 0, sizeof *w);
        return am_err_set(AM_EIO, "%s: fdopen: %s", path, strerror(e));
    }
    return 0;
}

void am__wfile_write(am__wfile *w, const void *p, size_t n) {
    if (w->err || n == 0) return;
    if (fwrite(p, 1, n, w->fp) != n) {
        w->err = am_err_set(AM_EIO, "%s: write failed: %s", w->tmp_path, strerror(errno));
        return;
    }
    w->pos += n;
}

void am__wfile_pad(am__wfile *w, size_t align) {
    static const uint8_t zeros[64];
    size_t pad = (size_t)((align - w->pos % align) % align);
    while (pad > 0) {
        size_t k = pad < sizeof zeros ? pad : sizeof zeros;
        am__wfile_write(w, zeros, k);
        pad -= k;
    }
}

static void wfile_free(am__wfile *w) {
    am_free(w->path);
    am_free(w->tmp_path);
    memset(w, 0, sizeof *w);
}

int am__wfile_commit(am__wfile *w) {
    int rc = w->err;
    if (!rc && fflush(w->fp) != 0)
        rc = am_err_set(AM_EIO, "%s: flush failed: %s", w->tmp_path, strerror(errno));
    /* fsync before rename, or a crash could leave a renamed but empty file. */
    if (!rc && fsync(fileno(w->fp)) != 0)
        rc = am_err_set(AM_EIO, "%s: fsync failed: %s", w->tmp_path, strerror(errno));
    if (fclose(w->fp) != 0 && !rc)
        rc = am_err_set(AM_EIO, "%s: close failed: %s", w->tmp_path, strerror(errno));
    w->fp = NULL;
    if (!rc && rename(w->tmp_path, w->path) != 0)
        rc = am_err_set(AM_EIO, "%s: cannot rename %s: %s", w->path, w->tmp_path, strerror(errno));
    if (rc) unlink(w->tmp_path);
    wfile_free(w);
    return rc;
}
