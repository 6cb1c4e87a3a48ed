/* core/error.h - error codes and the per-thread error message.
 *
 * Every fallible function in anymal returns an int: 0 on success or a negative
 * AM_E* code. The code says what kind of failure it was; the human-readable
 * detail (which file, which tensor, which field, which limit) is recorded with
 * am_err_set() in a thread-local buffer and read back with am_err_msg(). Callers
 * that print errors should print am_err_msg() when it is non-empty, else
 * am_strerror(code).
 */
#ifndef AM_ERROR_H
#define AM_ERROR_H

#include <stdarg.h>

enum {
    AM_OK = 0,
    AM_EINVAL = -1000,       /* bad argument or bad user input */
    AM_ENOMEM = -1001,       /* allocation failed */
    AM_EIO = -1002,          /* open/read/write/mmap failed (errno in message) */
    AM_EFORMAT = -1003,      /* a file or message is malformed */
    AM_ERANGE = -1004,       /* a value is outside an allowed range or limit */
    AM_ENOTFOUND = -1005,    /* a named thing (tensor, key, file) is missing */
    AM_EUNSUPPORTED = -1006, /* valid but not supported (dtype, version, ...) */
    AM_ESHAPE = -1007,       /* tensor shape does not match what is expected */
    AM_EINTERNAL = -1008,    /* a bug: an invariant did not hold */
    /* Messaging (proto/transport.h). */
    AM_EAGAIN = -1100,   /* send would block at the high-water mark: nothing sent */
    AM_EUNREACH = -1101, /* ROUTER: the addressed peer is not connected */
    AM_ETERM = -1102,    /* the ZeroMQ context is being terminated */
};

/* Static description of an error code; never NULL. */
const char *am_strerror(int code);

/* Records a formatted detail message for the calling thread and returns code,
 * so that `return am_err_set(AM_EFORMAT, "%s: tensor '%s': ...", ...);` works. */
int am_err_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes the current thread's message with "prefix: " (for adding context
 * while an error propagates up) and returns code. */
int am_err_prefix(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The last message recorded on this thread ("" if none). Valid until the next
 * am_err_set/am_err_prefix/am_err_clear on this thread. */
const char *am_err_msg(void);

/* Clears this thread's message. */
void am_err_clear(void);

/* AM_ASSERT is for programmer errors only (never for input from a file, a
 * socket or a user); it stays on in release builds. */
#define AM_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) am__assert_fail(#cond, __FILE__, __LINE__);                                   \
    } while (0)
__attribute__((noreturn)) void am__assert_fail(const char *expr, const char *file, int line);

#endif
