/* tests/test_batch_input.c - `anymal batch`'s input pass (tools/batch_input.h) on files:
 * line reading (CRLF, no final newline, over-long lines skipped), the input's identity,
 * the custom_id index with real duplicates and with two different ids whose index bits
 * agree (found by a birthday search over the real hash), which must stay apart.
 */
#include "core/alloc.h"
#include "core/error.h"
#include "test_util.h"
#include "tools/batch_input.h"

#include <stdlib.h>
#include <unistd.h>

static char path[64];

static void write_input(const char *text) {
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static void setup(void) {
    snprintf(path, sizeof path, "/tmp/test_batch_input_%d.jsonl", (int)getpid());
}

static void test_reader(void) {
    write_input("{\"a\":1}\r\n\n"                            /* CRLF, blank */
                "0123456789012345678901234567890123456789\n" /* 40 bytes: over a 32-byte limit */
                "last");                                     /* no final newline */
    am_batch_reader r;
    CHECK_OK(am_batch_reader_open(&r, path, 32));
    const char *s;
    size_t len, full;
    uint64_t off;
    CHECK_EQ_INT(am_batch_reader_next(&r, &s, &len, &off, &full), 1);
    CHECK(s && len == 7 && !strcmp(s, "{\"a\":1}") && off == 0 && r.line == 1);
    CHECK_EQ_INT(am_batch_reader_next(&r, &s, &len, &off, &full), 1);
    CHECK(s && len == 0 && off == 9);
    CHECK_EQ_INT(am_batch_reader_next(&r, &s, &len, &off, &full), 1);
    CHECK(s == NULL && full == 40 && r.line == 3);
    CHECK_EQ_INT(am_batch_reader_next(&r, &s, &len, &off, &full), 1);
    CHECK(s && !strcmp(s, "last") && off == 51);
    CHECK_EQ_INT(am_batch_reader_next(&r, &s, &len, &off, &full), 0);
    CHECK_OK(am_batch_reader_pread(&r, 51, 4, &s)); /* a line again, at its offset */
    CHECK(!strcmp(s, "last"));
    CHECK_OK(am_batch_reader_pread(&r, 0, 7, &s));
    CHECK(!strcmp(s, "{\"a\":1}"));
    am_batch_reader_close(&r);
}

static void test_scan(void) {
    write_input("{\"custom_id\":\"x\",\"body\":{\"model\":\"tiny\"}}\n"
                "\n"
                "not json\n"
                "{\"custom_id\":\"y\",\"body\":{\"model\":\"7b\"}}\n"
                "{\"custom_id\":\"x\",\"body\":{\"model\":\"tiny\"}}\n");
    am_batch_scan s;
    CHECK_OK(am_batch_scan_input(path, 1024, &s));
    CHECK_EQ_INT(s.n_lines, 5);
    CHECK_EQ_INT(s.n_requests, 4);
    CHECK_EQ_INT(am_batch_scan_find(&s, "x"), 1); /* the first line with it */
    CHECK_EQ_INT(am_batch_scan_find(&s, "y"), 4);
    CHECK_EQ_INT(am_batch_scan_find(&s, "z"), 0);
    CHECK_EQ_INT(s.n_models, 2);
    CHECK_EQ_INT(s.n_exc_ids, 0); /* x on line 5 is a real duplicate */
    const uint64_t fnv = s.fnv1a64, bytes = s.bytes;
    am_batch_scan_fini(&s);
    /* One byte more: another identity. */
    FILE *f = fopen(path, "ab");
    fputc(' ', f);
    fclose(f);
    CHECK_OK(am_batch_scan_input(path, 1024, &s));
    CHECK(s.fnv1a64 != fnv && s.bytes == bytes + 1);
    am_batch_scan_fini(&s);
    CHECK_EQ_INT(am_batch_scan_input("/nonexistent/in.jsonl", 1024, &s), AM_EIO);
}

typedef struct {
    uint32_t hi, pos, i;
} cand;

static int cmp_cand(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->hi != y->hi) return x->hi < y->hi ? -1 : 1;
    if (x->pos != y->pos) return x->pos < y->pos ? -1 : 1;
    return 0;
}

/* Two different ids whose entry (high 32 bits) and slot (low 32 bits scaled to the
 * table of a 3-line input) agree: the index cannot tell them apart by itself. */
static void test_colliding_ids(void) {
    const uint64_t n_slots = 4 + 4 / 4 + 64; /* 3 lines + 1, as the scan sizes it */
    const uint32_t n = 1u << 21;
    cand *c = am_malloc(n * sizeof *c);
    char id[32];
    for (uint32_t i = 0; i < n; i++) {
        snprintf(id, sizeof id, "c%u", i);
        uint64_t h = am_batch_id_hash(id);
        c[i] = (cand){(uint32_t)(h >> 32), (uint32_t)(((h & 0xFFFFFFFFu) * n_slots) >> 32), i};
    }
    qsort(c, n, sizeof *c, cmp_cand);
    int found = -1;
    for (uint32_t i = 1; i < n && found < 0; i++)
        if (c[i].hi == c[i - 1].hi && c[i].pos == c[i - 1].pos) found = (int)i;
    CHECK(found > 0);
    if (found > 0) {
        char text[256];
        snprintf(text, sizeof text,
                 "{\"custom_id\":\"c%u\"}\n{\"custom_id\":\"c%u\"}\n{\"custom_id\":\"c%u\"}\n",
                 c[found - 1].i, c[found].i, c[found].i);
        write_input(text);
        printf("colliding ids: c%u and c%u (entry %08x, slot %u)\n", c[found - 1].i, c[found].i,
               c[found].hi, c[found].pos);
        am_batch_scan s;
        CHECK_OK(am_batch_scan_input(path, 1024, &s));
        snprintf(id, sizeof id, "c%u", c[found - 1].i);
        CHECK_EQ_INT(am_batch_scan_find(&s, id), 1);
        snprintf(id, sizeof id, "c%u", c[found].i);
        CHECK_EQ_INT(am_batch_scan_find(&s, id), 2); /* its own line, not line 1 */
        CHECK_EQ_INT(s.n_exc_ids, 1);                /* line 3 is a real duplicate of line 2 */
        am_batch_scan_fini(&s);
    }
    am_free(c);
}

static void teardown(void) { unlink(path); }

AM_TEST_MAIN(AM_TEST(setup), AM_TEST(test_reader), AM_TEST(test_scan), AM_TEST(test_colliding_ids),
             AM_TEST(teardown))
