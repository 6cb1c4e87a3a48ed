/* core/clock.c - the monotonic clock (core/clock.h). */
#include "core/clock.h"

#include <time.h>

static struct timespec now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
}

double am_now_s(void) {
    const struct timespec ts = now();
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t am_now_us(void) {
    const struct timespec ts = now();
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t am_now_ms(void) {
    const struct timespec ts = now();
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
