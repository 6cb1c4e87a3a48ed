/* tools/batch_journal.h - `anymal batch`'s state on disk: the output files are the journal.
 *
 * Three files (docs/batch.md has the full argument):
 *   OUTPUT.state  one JSON line naming the job: the input's size and FNV-1a 64 hash and
 *                 the errors file. Written once, before any result, through a temporary
 *                 file, fsync, rename and an fsync of the directory: it exists whole or
 *                 not at all.
 *   OUTPUT        one result line per finished request, each written with one write(2) of
 *                 the whole line and its '\n' (O_APPEND);
 *   ERRORS        the same for failed requests (the output itself when no --errors).
 * What is done is what the two files say: a result line names its custom_id (found in
 * the input through the custom_id index), an error line names its input line. Reopening
 * reads both files: a last line without its '\n', or trailing lines that are not JSON
 * (a power loss can leave a tail of zeros), are cut off (ftruncate + fsync) and their
 * requests run again; a bad line followed by good ones means someone else wrote there,
 * and the job refuses to go on. Lines are fdatasync'ed every sync_ms by a thread of the
 * journal's own (an fdatasync on a busy disk took long enough to drain the window in
 * flight when the request loop made it: 80% of the throughput), and when the job ends;
 * sync_ms 0 syncs after every line, in the caller. A SIGKILL loses nothing written (the
 * page cache keeps it), a power loss loses at most the results of the last sync_ms and
 * one sync's duration, which are then run again, never written twice.
 *
 * Errors: AM_EINVAL (another job's output: a different input or errors file, an output
 * without its state file, a foreign line: the message says which and what to do),
 * AM_EIO (errno in the message), AM_ENOMEM.
 */
#ifndef AM_BATCH_JOURNAL_H
#define AM_BATCH_JOURNAL_H

#include "tools/batch_input.h"

#include <pthread.h>

#include <stdint.h>

typedef struct am_batch_journal {
    int out_fd, err_fd; /* err_fd == out_fd when there is no errors file */
    const char *out_path, *err_path;
    int sync_ms;
    /* The syncing thread (sync_ms > 0) and what it shares, under mu. */
    pthread_t thr;
    int thr_on;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int dirty, stop, sync_errno;
} am_batch_journal;

typedef struct am_batch_resume {
    uint64_t results, errors; /* lines found on disk, by file */
    uint64_t done;            /* input lines they account for */
    uint64_t doubled;         /* input lines found more than once (never, if all is well) */
    uint64_t torn_bytes;      /* cut off the files' tails */
    int fresh;                /* 1: a new job (the state file was written now) */
} am_batch_resume;

/* Opens (creating) the output and errors files for the job on input_path (scan: its
 * identity and custom_id index), checks or writes OUTPUT.state, repairs torn tails and
 * marks in done (a bitmap of scan->n_lines + 1 bits, caller-allocated, zeroed) every
 * input line that already has its line. err_path NULL: errors go to the output. */
int am_batch_journal_open(am_batch_journal *j, const char *out_path, const char *err_path,
                          const char *input_path, const am_batch_scan *scan, int sync_ms,
                          uint8_t *done, am_batch_resume *info);
/* Appends one line (s, n bytes, without the '\n') to the output (is_error 0) or the
 * errors file (the syncing thread syncs it within sync_ms). AM_EIO also when a background
 * sync failed. */
int am_batch_journal_append(am_batch_journal *j, int is_error, const char *s, size_t n);
/* fdatasync of both files now, in the caller. */
int am_batch_journal_sync(am_batch_journal *j);
/* Stops the syncing thread, syncs and closes. */
int am_batch_journal_close(am_batch_journal *j);

static inline int am_batch_done_get(const uint8_t *done, uint64_t line) {
    return (done[line >> 3] >> (line & 7)) & 1;
}
static inline void am_batch_done_set(uint8_t *done, uint64_t line) {
    done[line >> 3] |= (uint8_t)(1u << (line & 7));
}

#endif
