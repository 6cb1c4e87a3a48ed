/* gateway/metrics.h - Prometheus text exposition: a string builder, histograms, a minute of rates.
 *
 * What /metrics and the status page are made of. Histograms have fixed upper
 * bounds (seconds) chosen like vLLM's for the same quantities, so dashboards
 * built for vLLM read ours with the prefix changed. Single-threaded (the
 * gateway's loop). Builders never fail half-way silently: on out-of-memory
 * the builder's `oom` is set and the caller answers 500.
 */
#ifndef AM_GW_METRICS_H
#define AM_GW_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* A growable NUL-terminated string. */
typedef struct am_sb {
    char *s;
    size_t len, cap;
    int oom;
} am_sb;
void am_sb_printf(am_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void am_sb_add(am_sb *b, const char *s, size_t n);
void am_sb_fini(am_sb *b);

#define AM_HIST_MAX_BUCKETS 32

typedef struct am_hist {
    const double *le; /* upper bounds, increasing; +Inf is implied */
    int n;
    uint64_t counts[AM_HIST_MAX_BUCKETS]; /* per bucket, not cumulative */
    uint64_t inf, count;
    double sum;
} am_hist;

void am_hist_init(am_hist *h, const double *le, int n);
void am_hist_observe(am_hist *h, double v);
/* "# HELP/# TYPE name histogram" and the _bucket/_sum/_count lines. labels: "" or
 * 'key="value"' put inside every line's braces. */
void am_hist_render(am_sb *b, const char *name, const char *help, const char *labels,
                    const am_hist *h, int with_header);

/* Events per second over the last minute: 60 one-second slots. */
#define AM_RATE_SLOTS 60
typedef struct am_rate {
    int64_t sec[AM_RATE_SLOTS];
    double val[AM_RATE_SLOTS];
} am_rate;
void am_rate_add(am_rate *r, int64_t now_s, double v);
/* The sum over the last AM_RATE_SLOTS seconds before now_s (the current one included). */
double am_rate_sum(const am_rate *r, int64_t now_s);
/* Per-second values, oldest first (out[AM_RATE_SLOTS]). */
void am_rate_series(const am_rate *r, int64_t now_s, double *out);

#endif
