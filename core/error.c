/* core/error.c - error codes, per-thread error messages, AM_ASSERT. */
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AM_ERR_MSG_BYTES 1024

static _Thread_local char err_msg[AM_ERR_MSG_BYTES];

const char *am_strerror(int code) {
    switch (code) {
    case AM_OK: return "success";
    case AM_EINVAL: return "invalid argument";
    case AM_ENOMEM: return "out of memory";
    case AM_EIO: return "I/O error";
    case AM_EFORMAT: return "malformed data";
    case AM_ERANGE: return "value out of range";
    case AM_ENOTFOUND: return "not found";
    case AM_EUNSUPPORTED: return "unsupported";
    case AM_ESHAPE: return "shape mismatch";
    case AM_EINTERNAL: return "internal error";
    case AM_EAGAIN: return "would block (peer queue full)";
    case AM_EUNREACH: return "peer not connected";
    case AM_ETERM: return "messaging context terminated";
    default: return code < 0 && code > -1000 ? strerror(-code) : "unknown error";
    }
}

int am_err_set(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return code;
}

int am_err_prefix(int code, const char *fmt, ...) {
    char prefix[AM_ERR_MSG_BYTES];
    char old[AM_ERR_MSG_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_msg, sizeof old);
    /* Both parts are bounded so that the result always fits the buffer. */
    snprintf(err_msg, sizeof err_msg, "%.400s: %.600s", prefix, old[0] ? old : am_strerror(code));
    return code;
}

const char *am_err_msg(void) { return err_msg; }

void am_err_clear(void) { err_msg[0] = '\0'; }

void am__assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "anymal: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}
