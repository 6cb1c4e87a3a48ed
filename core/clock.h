/* core/clock.h - the one monotonic clock of the project.
 *
 * CLOCK_MONOTONIC: it never jumps with the wall clock, so deadlines,
 * heartbeats, timeouts and measured durations stay right across NTP steps.
 * Every module that needs the time reads it here, in the unit it wants.
 */
#ifndef AM_CLOCK_H
#define AM_CLOCK_H

#include <stdint.h>

/* Seconds, microseconds and milliseconds since an arbitrary fixed point. */
double am_now_s(void);
int64_t am_now_us(void);
int64_t am_now_ms(void);

#endif
