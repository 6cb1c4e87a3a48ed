/* tools/batch_journal.c - the output files as the journal of a batch job
 * (tools/batch_journal.h, docs/batch.md).
 *
 * Why the output is its own journal: a separate log of "done" marks would have to be
 * written and synced in step with the output, and a crash between the two writes would
 * either lose a result or send it twice. A result line that is on disk is the proof that
 * its request is done; nothing else is needed, and the resume reads exactly what the user
 * reads.
 */
#include "tools/batch_journal.h"

#include "core/alloc.h"
#include "core/error.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STATE_MAX_BYTES  8192
#define JOURNAL_MAX_LINE ((size_t)256 << 20) /* a result line: the longest answer, escaped */

/* The state file's line for this job. */
static int state_line(char *buf, size_t cap, const am_batch_scan *scan, const char *input_path,
                      const char *err_path) {
    cJSON *o = cJSON_CreateObject();
    char fnv[24];
    snprintf(fnv, sizeof fnv, "%016llx", (unsigned long long)scan->fnv1a64);
    int ok = o && cJSON_AddNumberToObject(o, "version", 1) &&
             cJSON_AddStringToObject(o, "input", input_path) &&
             cJSON_AddNumberToObject(o, "input_bytes", (double)scan->bytes) &&
             cJSON_AddStringToObject(o, "input_fnv1a64", fnv) &&
             cJSON_AddNumberToObject(o, "input_lines", (double)scan->n_lines) &&
             (err_path ? cJSON_AddStringToObject(o, "errors", err_path)
                       : cJSON_AddNullToObject(o, "errors")) &&
             cJSON_PrintPreallocated(o, buf, (int)cap - 2, 0);
    cJSON_Delete(o);
    if (!ok) return am_err_set(AM_ENOMEM, "out of memory for the job's state");
    strcat(buf, "\n");
    return 0;
}

static int fsync_dir_of(const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    int fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY);
    if (fd < 0) return am_err_set(AM_EIO, "%s: %s", dirname(tmp), strerror(errno));
    int rc =
        fsync(fd) ? am_err_set(AM_EIO, "fsync of %s's directory: %s", path, strerror(errno)) : 0;
    close(fd);
    return rc;
}

static int write_all(int fd, const char *s, size_t n, const char *path) {
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return am_err_set(AM_EIO, "%s: write: %s", path, strerror(errno));
        s += w, n -= (size_t)w;
    }
    return 0;
}

/* Writes the state file whole: temporary file, fsync, rename, fsync of the directory. */
static int state_write(const char *state_path, const char *line) {
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", state_path) >= (int)sizeof tmp)
        return am_err_set(AM_EINVAL, "%s: path too long", state_path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return am_err_set(AM_EIO, "%s: %s", tmp, strerror(errno));
    int rc = write_all(fd, line, strlen(line), tmp);
    if (!rc && fsync(fd)) rc = am_err_set(AM_EIO, "%s: fsync: %s", tmp, strerror(errno));
    close(fd);
    if (!rc && rename(tmp, state_path))
        rc = am_err_set(AM_EIO, "rename %s -> %s: %s", tmp, state_path, strerror(errno));
    return rc ? rc : fsync_dir_of(state_path);
}

static int file_size(const char *path, off_t *size) {
    struct stat st;
    if (stat(path, &st)) {
        if (errno != ENOENT) return am_err_set(AM_EIO, "%s: %s", path, strerror(errno));
        *size = -1;
        return 0;
    }
    *size = st.st_size;
    return 0;
}

/* Compares the state file with this job's; a clear refusal when they differ. The input's
 * path may differ (a moved file is the same input); its size and hash may not. */
static int state_check(const char *state_path, const char *want, const char *out_path) {
    char have[STATE_MAX_BYTES] = "";
    FILE *f = fopen(state_path, "r");
    if (!f) return am_err_set(AM_EIO, "%s: %s", state_path, strerror(errno));
    size_t n = fread(have, 1, sizeof have - 1, f);
    fclose(f);
    have[n] = '\0';
    cJSON *h = cJSON_Parse(have), *w = cJSON_Parse(want);
    static const char *const keys[] = {"input_bytes", "input_fnv1a64", "errors"};
    const char *why = h ? NULL : "its state file is not one anymal batch wrote";
    for (int k = 0; h && w && k < 3 && !why; k++) {
        char *a = cJSON_PrintUnformatted(cJSON_GetObjectItem(h, keys[k]));
        char *b = cJSON_PrintUnformatted(cJSON_GetObjectItem(w, keys[k]));
        if (!a || !b || strcmp(a, b))
            why = k < 2 ? "it was written for a different input (its size or FNV-1a 64 hash "
                          "differ)"
                        : "it was written with a different --errors file";
        cJSON_free(a);
        cJSON_free(b);
    }
    const cJSON *was = cJSON_GetObjectItem(h, "input");
    int rc = 0;
    if (why)
        rc = am_err_set(AM_EINVAL,
                        "%s belongs to another job: %s (%s names input %s). Resume with the same "
                        "--input and --errors as before, or choose another --output",
                        out_path, why, state_path, cJSON_IsString(was) ? was->valuestring : "?");
    cJSON_Delete(h);
    cJSON_Delete(w);
    return rc;
}

/* Reads one journal file: marks done lines, cuts a torn tail. */
static int replay(const char *path, int fd, int is_err_file, const am_batch_scan *scan,
                  uint8_t *done, am_batch_resume *info) {
    off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0) return 0;
    am_batch_reader r;
    int rc = am_batch_reader_open(&r, path, JOURNAL_MAX_LINE);
    if (rc) return rc;
    uint64_t good_end = 0, bad_line = 0, no = 0;
    const char *s;
    size_t len, full;
    uint64_t off;
    while ((rc = am_batch_reader_next(&r, &s, &len, &off, &full)) == 1) {
        no++;
        const int terminated = off + full < (uint64_t)size; /* a '\n' follows */
        cJSON *j = s && terminated ? cJSON_ParseWithLength(s, len) : NULL;
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "custom_id");
        const cJSON *el = cJSON_GetObjectItemCaseSensitive(err, "line");
        uint64_t line = 0;
        if (cJSON_IsObject(err) && cJSON_IsNumber(el))
            line = (uint64_t)el->valuedouble;
        else if (j && cJSON_IsString(id) && !cJSON_IsObject(err))
            line = am_batch_scan_find(scan, id->valuestring);
        cJSON_Delete(j);
        if (!line || line > scan->n_lines) {
            if (!bad_line) bad_line = no;
            continue;
        }
        if (bad_line) {
            rc = am_err_set(AM_EINVAL,
                            "%s: line %llu is not a result of this job, and good lines follow it: "
                            "the file was changed by something else; move it away to start over",
                            path, (unsigned long long)bad_line);
            break;
        }
        if (am_batch_done_get(done, line))
            info->doubled++;
        else
            info->done++;
        am_batch_done_set(done, line);
        if (is_err_file)
            info->errors++;
        else if (cJSON_IsObject(err))
            info->errors++;
        else
            info->results++;
        good_end = off + full + 1;
    }
    am_batch_reader_close(&r);
    if (rc < 0) return rc;
    if ((uint64_t)size > good_end) {
        info->torn_bytes += (uint64_t)size - good_end;
        if (ftruncate(fd, (off_t)good_end) || fdatasync(fd))
            return am_err_set(AM_EIO, "%s: cutting the torn tail: %s", path, strerror(errno));
    }
    return 0;
}

static void *sync_thread(void *arg);

static int open_append(const char *path, int *fd) {
    *fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    return *fd < 0 ? am_err_set(AM_EIO, "%s: %s", path, strerror(errno)) : 0;
}

int am_batch_journal_open(am_batch_journal *j, const char *out_path, const char *err_path,
                          const char *input_path, const am_batch_scan *scan, int sync_ms,
                          uint8_t *done, am_batch_resume *info) {
    memset(j, 0, sizeof *j);
    memset(info, 0, sizeof *info);
    j->out_fd = j->err_fd = -1;
    j->out_path = out_path;
    j->err_path = err_path ? err_path : out_path;
    j->sync_ms = sync_ms;
    char state_path[4096], want[STATE_MAX_BYTES];
    if (snprintf(state_path, sizeof state_path, "%s.state", out_path) >= (int)sizeof state_path)
        return am_err_set(AM_EINVAL, "%s: path too long", out_path);
    int rc = state_line(want, sizeof want, scan, input_path, err_path);
    off_t st_size, out_size, err_size = -1;
    if (!rc) rc = file_size(state_path, &st_size);
    if (!rc) rc = file_size(out_path, &out_size);
    if (!rc && err_path) rc = file_size(err_path, &err_size);
    if (rc) return rc;
    if (st_size < 0) {
        if (out_size > 0 || err_size > 0)
            return am_err_set(AM_EINVAL,
                              "%s is not empty and has no %s: it was not written by anymal batch "
                              "(or its state file was removed); move it away or choose another "
                              "--output",
                              out_size > 0 ? out_path : err_path, state_path);
        if ((rc = state_write(state_path, want))) return rc;
        info->fresh = 1;
    } else if ((rc = state_check(state_path, want, out_path))) {
        return rc;
    }
    if ((rc = open_append(out_path, &j->out_fd))) return rc;
    if (err_path && (rc = open_append(err_path, &j->err_fd))) goto fail;
    if (!err_path) j->err_fd = j->out_fd;
    if ((rc = replay(out_path, j->out_fd, 0, scan, done, info))) goto fail;
    if (err_path && (rc = replay(err_path, j->err_fd, 1, scan, done, info))) goto fail;
    if (info->fresh && ((rc = fsync_dir_of(out_path)))) goto fail; /* the new files' names */
    if (sync_ms > 0) {
        pthread_mutex_init(&j->mu, NULL);
        pthread_cond_init(&j->cv, NULL);
        if (pthread_create(&j->thr, NULL, sync_thread, j)) {
            pthread_mutex_destroy(&j->mu);
            pthread_cond_destroy(&j->cv);
            rc = am_err_set(AM_EIO, "cannot start the journal's syncing thread");
            goto fail;
        }
        j->thr_on = 1;
    }
    return 0;
fail:
    am_batch_journal_close(j);
    return rc;
}

static int sync_fds(const am_batch_journal *j) {
    if (fdatasync(j->out_fd) || (j->err_fd != j->out_fd && fdatasync(j->err_fd))) return errno;
    return 0;
}

/* Every sync_ms: fdatasync when lines were written since the last one. */
static void *sync_thread(void *arg) {
    am_batch_journal *j = arg;
    pthread_mutex_lock(&j->mu);
    while (!j->stop) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_sec += j->sync_ms / 1000;
        t.tv_nsec += (long)(j->sync_ms % 1000) * 1000000L;
        if (t.tv_nsec >= 1000000000L) t.tv_sec++, t.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&j->cv, &j->mu, &t);
        if (!j->dirty) continue;
        j->dirty = 0;
        pthread_mutex_unlock(&j->mu);
        const int e = sync_fds(j); /* without the lock: appends go on meanwhile */
        pthread_mutex_lock(&j->mu);
        if (e && !j->sync_errno) j->sync_errno = e;
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

int am_batch_journal_sync(am_batch_journal *j) {
    const int e = sync_fds(j);
    return e ? am_err_set(AM_EIO, "fdatasync of %s: %s", j->out_path, strerror(e)) : 0;
}

int am_batch_journal_append(am_batch_journal *j, int is_error, const char *s, size_t n) {
    /* One write of the whole line: a kill cannot leave half of it behind; only a power
     * loss or a full disk can, and the next open cuts it off. */
    char *line = am_malloc(n + 1);
    if (!line) return am_err_set(AM_ENOMEM, "out of memory for a %zu-byte result line", n);
    memcpy(line, s, n);
    line[n] = '\n';
    int fd = is_error ? j->err_fd : j->out_fd;
    int rc = write_all(fd, line, n + 1, is_error ? j->err_path : j->out_path);
    am_free(line);
    if (rc) return rc;
    if (!j->thr_on) return am_batch_journal_sync(j);
    pthread_mutex_lock(&j->mu);
    j->dirty = 1;
    const int e = j->sync_errno;
    pthread_mutex_unlock(&j->mu);
    return e ? am_err_set(AM_EIO, "fdatasync of %s: %s", j->out_path, strerror(e)) : 0;
}

int am_batch_journal_close(am_batch_journal *j) {
    int rc = 0;
    if (j->thr_on) {
        pthread_mutex_lock(&j->mu);
        j->stop = 1;
        pthread_cond_signal(&j->cv);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->thr, NULL);
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cv);
        if (j->sync_errno)
            rc = am_err_set(AM_EIO, "fdatasync of %s: %s", j->out_path, strerror(j->sync_errno));
        j->thr_on = 0;
    }
    if (j->out_fd >= 0) {
        const int r2 = am_batch_journal_sync(j);
        if (!rc) rc = r2;
    }
    if (j->err_fd >= 0 && j->err_fd != j->out_fd) close(j->err_fd);
    if (j->out_fd >= 0) close(j->out_fd);
    j->out_fd = j->err_fd = -1;
    return rc;
}
