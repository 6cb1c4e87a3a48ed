/* gateway/metrics.c - the string builder, histograms and per-second rates of the gateway. */
#include "gateway/metrics.h"

#include "core/alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int sb_reserve(am_sb *b, size_t extra) {
    if (b->oom) return -1;
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *s = am_realloc(b->s, cap);
    if (!s) {
        b->oom = 1;
        return -1;
    }
    b->s = s;
    b->cap = cap;
    return 0;
}

void am_sb_add(am_sb *b, const char *s, size_t n) {
    if (sb_reserve(b, n)) return;
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void am_sb_printf(am_sb *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sb_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void am_sb_fini(am_sb *b) {
    am_free(b->s);
    memset(b, 0, sizeof *b);
}

void am_hist_init(am_hist *h, const double *le, int n) {
    memset(h, 0, sizeof *h);
    h->le = le;
    h->n = n < AM_HIST_MAX_BUCKETS ? n : AM_HIST_MAX_BUCKETS;
}

void am_hist_observe(am_hist *h, double v) {
    int i = 0;
    while (i < h->n && v > h->le[i])
        i++;
    if (i < h->n)
        h->counts[i]++;
    else
        h->inf++;
    h->count++;
    h->sum += v;
}

void am_hist_render(am_sb *b, const char *name, const char *help, const char *labels,
                    const am_hist *h, int with_header) {
    if (with_header) am_sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (int i = 0; i < h->n; i++) {
        cum += h->counts[i];
        am_sb_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->le[i],
                     (unsigned long long)cum);
    }
    am_sb_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                 (unsigned long long)h->count);
    const char *o = labels[0] ? "{" : "", *c = labels[0] ? "}" : "";
    am_sb_printf(b, "%s_sum%s%s%s %.9g\n%s_count%s%s%s %llu\n", name, o, labels, c, h->sum, name, o,
                 labels, c, (unsigned long long)h->count);
}

void am_rate_add(am_rate *r, int64_t now_s, double v) {
    int i = (int)(now_s % AM_RATE_SLOTS);
    if (r->sec[i] != now_s) r->sec[i] = now_s, r->val[i] = 0;
    r->val[i] += v;
}

double am_rate_sum(const am_rate *r, int64_t now_s) {
    double s = 0;
    for (int i = 0; i < AM_RATE_SLOTS; i++)
        if (r->sec[i] > now_s - AM_RATE_SLOTS && r->sec[i] <= now_s) s += r->val[i];
    return s;
}

void am_rate_series(const am_rate *r, int64_t now_s, double *out) {
    for (int k = 0; k < AM_RATE_SLOTS; k++) {
        int64_t t = now_s - (AM_RATE_SLOTS - 1) + k;
        int i = (int)(t % AM_RATE_SLOTS);
        out[k] = r->sec[i] == t ? r->val[i] : 0;
    }
}
