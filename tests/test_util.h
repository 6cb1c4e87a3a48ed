/* tests/test_util.h - a minimal test harness shared by every test program.
 *
 * Each test program is a table of named test functions run in order by
 * AM_TEST_MAIN; a failed check prints file:line and the values, and the
 * program exits non-zero. `prog NAME` runs one test (and cases named
 * "setup"/"teardown", which always run). Tests may read fixtures under AM_SOURCE_DIR and the
 * shared data under AM_SHARED_DIR (both set by CTest).
 */
#ifndef AM_TEST_UTIL_H
#define AM_TEST_UTIL_H

#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

static int am_test_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            am_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long _a = (long long)(a), _b = (long long)(b);                                        \
        if (_a != _b) {                                                                            \
            fprintf(stderr, "%s:%d: CHECK_EQ_INT failed: %s = %lld, %s = %lld\n", __FILE__,        \
                    __LINE__, #a, _a, #b, _b);                                                     \
            am_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double _a = (double)(a), _b = (double)(b);                                                 \
        if (!(fabs(_a - _b) <= (tol))) {                                                           \
            fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s = %g, %s = %g (tol %g)\n", __FILE__,     \
                    __LINE__, #a, _a, #b, _b, (double)(tol));                                      \
            am_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

/* CHECK_OK(expr): expr must return 0; prints am_err_msg() otherwise. */
#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        int _rc = (expr);                                                                          \
        if (_rc != 0) {                                                                            \
            fprintf(stderr, "%s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #expr, _rc,         \
                    am_err_msg());                                                                 \
            am_test_failures++;                                                                    \
        }                                                                                          \
    } while (0)

typedef struct {
    const char *name;
    void (*fn)(void);
} am_test_case;

#define AM_TEST_MAIN(...)                                                                          \
    int main(int argc, char **argv) {                                                              \
        static const am_test_case cases[] = {__VA_ARGS__};                                         \
        int n = (int)(sizeof cases / sizeof cases[0]);                                             \
        for (int i = 0; i < n; i++) {                                                              \
            int always = !strcmp(cases[i].name, "setup") || !strcmp(cases[i].name, "teardown");    \
            if (argc > 1 && !always && strcmp(argv[1], cases[i].name) != 0) continue;              \
            int before = am_test_failures;                                                         \
            cases[i].fn();                                                                         \
            printf("%s %s\n", am_test_failures == before ? "ok  " : "FAIL", cases[i].name);        \
        }                                                                                          \
        return am_test_failures ? 1 : 0;                                                           \
    }

#define AM_TEST(fn)                                                                                \
    { #fn, fn }

/* Path helpers: "$AM_SOURCE_DIR/rel" and "$AM_SHARED_DIR/rel" in a static buffer per call site. */
static inline const char *am_test_path(const char *env, const char *fallback, const char *rel,
                                       char *buf, size_t cap) {
    const char *base = getenv(env);
    snprintf(buf, cap, "%s/%s", base ? base : fallback, rel);
    return buf;
}
#define AM_SRC_PATH(rel, buf)    am_test_path("AM_SOURCE_DIR", ".", rel, buf, sizeof buf)
#define AM_SHARED_PATH(rel, buf) am_test_path("AM_SHARED_DIR", "../shared", rel, buf, sizeof buf)

/* 1 when there is no shared directory at all ($AM_SHARED_DIR, default ../shared):
 * a checkout on its own, as ../shared/tools/fresh-debian runs it. The checks
 * that read the real LLaMA tokenizer files from it then skip, saying so; where
 * the directory exists, a missing file stays a failure. */
static inline int am_test_no_shared_dir(const char *what) {
    const char *dir = getenv("AM_SHARED_DIR");
    if (!dir) dir = "../shared";
    struct stat st;
    if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
    printf("     SKIP %s: no shared directory at %s (the LLaMA tokenizer files live there)\n", what,
           dir);
    return 1;
}

#endif
