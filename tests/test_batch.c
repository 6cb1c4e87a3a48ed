/* tests/test_batch.c - `anymal batch` against a real cluster on loopback (issue 16).
 *
 * setup starts a coordinator, two encoder workers (all modalities) and a P = 2 shard
 * group (tests/cluster_util.h) and writes an OpenAI Batch input of AM_TEST_BATCH_LINES
 * lines (default 2000) mixing chat text, images (a path under the media root and a data
 * URL), audio (audio_url and base64 input_audio), video, IMU (.npy, CSV, raw f32) and
 * /v1/completions prompts, greedy or seeded. Then:
 *  - bad_input: every kind of bad line (malformed JSON, missing and duplicate custom_id,
 *    unknown url and model, an unsupported part, a missing and an undecodable media
 *    file, max_tokens over the limit, a line over the size limit, method, stream) gets
 *    an error line naming its line and field, the good lines around them succeed, exit
 *    status 1; usage errors and another job's output exit 2;
 *  - reference: the input uninterrupted (concurrency 64): every custom_id once, all
 *    succeed;
 *  - kill_resume: the runner (concurrency 32) is SIGKILLed three times at random points
 *    and started again; a torn last line is made and repaired; the output then has every
 *    custom_id once with the reference's results; the coordinator's admitted count gives
 *    how many requests were sent twice (at most the window per kill);
 *  - kill_workers: with a second shard group serving too, a rank of the first group, an
 *    encoder worker and then the coordinator are SIGKILLed mid-job and started again by
 *    the test (the coordinator on the same port);
 *    the job finishes with the reference's results: the group's requests failed with 503
 *    and the coordinator's were found lost (a HEALTH probe) and sent again.
 * teardown stops every process; the test directory is removed when all passed.
 */
#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "cluster_util.h"
#include "test_util.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#define KILL_CONC     "32"
#define N_KILLS       3
#define RUN_TIMEOUT_S 240

static am_tc T;
static pid_t p_coord, p_enc[2], p_shard, p_shard2;
static char media[600], input[400], anymal[600];
static int n_lines, n_coord;
static double ref_wall_s;
static char **ref; /* by line: the reference's result, canonical */

/* ---- the input ---- */

static char *b64(const char *rel) {
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char path[700];
    void *d = NULL;
    size_t n = 0;
    if (rel[0] == '/')
        snprintf(path, sizeof path, "%s", rel);
    else
        snprintf(path, sizeof path, "%s/%s", media, rel);
    CHECK_OK(am_read_file_limited(path, 1 << 24, &d, &n));
    const unsigned char *u = d;
    char *o = am_malloc(n / 3 * 4 + 8), *p = o;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v =
            (uint32_t)u[i] << 16 | (i + 1 < n ? u[i + 1] << 8 : 0) | (i + 2 < n ? u[i + 2] : 0);
        *p++ = al[v >> 18 & 63];
        *p++ = al[v >> 12 & 63];
        *p++ = i + 1 < n ? al[v >> 6 & 63] : '=';
        *p++ = i + 2 < n ? al[v & 63] : '=';
    }
    *p = '\0';
    am_free(d);
    return o;
}

static const char *const prompts[] = {"Once upon a time", "The llama", "Hello world, this is",
                                      "What do you see",  "zebra",     "Tell me a story about"};

/* Line i (0-based) of the mixed input, custom_id "r<i>". */
static void write_line(FILE *f, int i, const char *png64, const char *ogg64, const char *csv_url) {
    const char *p = prompts[i % 6];
    const int mt = 4 + i % 5;
    char gen[160];
    static char audio[1 << 16];
    if (i % 7 == 3) /* sampled, reproducible by its seed */
        snprintf(gen, sizeof gen, "\"max_tokens\":%d,\"temperature\":0.8,\"seed\":%d", mt, i);
    else
        snprintf(gen, sizeof gen, "\"max_completion_tokens\":%d,\"temperature\":0", mt);
    fprintf(f, "{\"custom_id\":\"r%d\",\"method\":\"POST\",", i);
    switch (i % 10) {
    case 0:
    case 1:
    case 2:
        fprintf(f,
                "\"url\":\"/v1/chat/completions\",\"body\":{\"model\":\"tiny\",\"messages\":[{"
                "\"role\":\"user\",\"content\":\"%s %d\"}],%s}}\n",
                p, i, gen);
        break;
    case 3:
        fprintf(f,
                "\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[{\"role\":\"system\","
                "\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                "\"text\":\"Look:\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"vision/"
                "images/land_q90.jpg\"}},{\"type\":\"text\",\"text\":\"%s\"}]}],%s}}\n",
                p, gen);
        break;
    case 4:
        fprintf(f,
                "\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[{\"role\":\"user\","
                "\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;"
                "base64,%s\"}},{\"type\":\"text\",\"text\":\"%s\"}]}],%s}}\n",
                png64, p, gen);
        break;
    case 5:
        if (i % 20 == 5)
            snprintf(audio, sizeof audio, "\"input_audio\":{\"format\":\"ogg\",\"data\":\"%s\"}",
                     ogg64);
        else
            snprintf(audio, sizeof audio,
                     "\"audio_url\":{\"url\":\"file://%s/audio/speech48.flac\"}", media);
        fprintf(f,
                "\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[{\"role\":\"user\","
                "\"content\":[{\"type\":\"text\",\"text\":\"Listen:\"},{\"type\":\"%s\",%s}]}],"
                "%s}}\n",
                i % 20 == 5 ? "input_audio" : "audio_url", audio, gen);
        break;
    case 6:
        fprintf(f,
                "\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[{\"role\":\"user\","
                "\"content\":[{\"type\":\"video_url\",\"video_url\":{\"url\":\"vision/video/"
                "clip.%s\"}},{\"type\":\"text\",\"text\":\"What happens?\"}]}],%s}}\n",
                i % 20 == 6 ? "mp4" : "webm", gen);
        break;
    case 7: {
        /* .npy and raw f32 files, and a CSV data URL (the wire carries no time unit: CSV
         * timestamps would have to be in seconds; this one has none, 200 Hz) */
        const char *imu[] = {"imu/imu333.npy", csv_url, "imu/imu50_200hz.f32"};
        fprintf(f,
                "\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[{\"role\":\"user\","
                "\"content\":[{\"type\":\"text\",\"text\":\"This motion:\"},{\"type\":\"imu_url\","
                "\"imu_url\":{\"url\":\"%s\"}},{\"type\":\"text\",\"text\":\"What is it?\"}]}],"
                "%s}}\n",
                imu[(i / 10) % 3], gen);
        break;
    }
    case 8:
        fprintf(f,
                "\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[{\"role\":\"user\","
                "\"content\":\"Hi\"},{\"role\":\"assistant\",\"content\":\"Hello!\"},{\"role\":"
                "\"user\",\"content\":\"%s\"}],\"stop\":[\"zz\"],%s}}\n",
                p, gen);
        break;
    default: fprintf(f, "\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"%s\",%s}}\n", p, gen);
    }
}

static void make_input(void) {
    char *png64 = b64("vision/images/small_up.png"), *ogg64 = b64("audio/speech48.ogg");
    /* 1.5 s of a 6-channel signal as CSV, base64 in a data URL */
    char csv[400], *csv64, *csv_url;
    snprintf(csv, sizeof csv, "%s/motion.csv", T.dir);
    FILE *f = fopen(csv, "w");
    for (int k = 0; f && k < 300; k++)
        fprintf(f, "%.4f,%.4f,%.4f,%.4f,%.4f,%.4f\n", sin(k * 0.05), cos(k * 0.03), 9.81, 0.01 * k,
                -0.02 * k, 0.5);
    if (f) fclose(f);
    csv64 = b64(csv);
    csv_url = am_malloc(strlen(csv64) + 64);
    sprintf(csv_url, "data:text/csv;base64,%s", csv64);
    f = fopen(input, "w");
    CHECK(f != NULL);
    for (int i = 0; f && i < n_lines; i++)
        write_line(f, i, png64, ogg64, csv_url);
    am_free(csv64);
    am_free(csv_url);
    if (f) fclose(f);
    am_free(png64);
    am_free(ogg64);
}

/* ---- running the runner ---- */

/* anymal batch with the given extra arguments, stdout to summary, stderr to log. */
static pid_t start_batch(char *const extra[], const char *summary, const char *log) {
    char *argv[40];
    int n = 0;
    argv[n++] = anymal;
    argv[n++] = "batch";
    argv[n++] = "--coordinator";
    argv[n++] = T.ep;
    argv[n++] = "--media-root";
    argv[n++] = media;
    argv[n++] = "--probe-ms";
    argv[n++] = "1000";
    for (int i = 0; extra[i]; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t p = fork();
    if (p == 0) {
        setpgid(0, 0);
        int o = open(summary, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int e = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(o, 1);
        dup2(e, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return p;
}

/* Waits for p (SIGKILL after timeout_s); its exit status, or -1. */
static int wait_exit(pid_t p, int timeout_s) {
    int st = 0;
    for (int i = 0; i < timeout_s * 20; i++) {
        if (waitpid(p, &st, WNOHANG) == p) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        usleep(50000);
    }
    kill(-p, SIGKILL);
    waitpid(p, &st, 0);
    fprintf(stderr, "anymal batch did not finish within %d s\n", timeout_s);
    return -1;
}

static int run_batch(char *const extra[], const char *tag) {
    char summary[400], log[400];
    snprintf(summary, sizeof summary, "%s/%s.summary", T.dir, tag);
    snprintf(log, sizeof log, "%s/%s.log", T.dir, tag);
    return wait_exit(start_batch(extra, summary, log), RUN_TIMEOUT_S);
}

/* The last summary line of a run, parsed (cJSON_Delete). */
static cJSON *summary_of(const char *tag) {
    char path[400], line[4096], last[4096] = "";
    snprintf(path, sizeof path, "%s/%s.summary", T.dir, tag);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (line[0] == '{') memcpy(last, line, sizeof line);
    if (f) fclose(f);
    return cJSON_Parse(last);
}

static double num(const cJSON *o, const char *path) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *x = o;
    for (char *k = strtok(buf, "."); k && x; k = strtok(NULL, "."))
        x = cJSON_GetObjectItemCaseSensitive(x, k);
    return cJSON_IsNumber(x) ? x->valuedouble : -1;
}

/* ---- reading results ---- */

/* A result line -> "content|finish|prompt_tokens|completion_tokens" (am_free). */
static char *canon(const cJSON *o) {
    const cJSON *body = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "response"), "body");
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(body, "choices"), 0);
    const cJSON *m = cJSON_GetObjectItem(c, "message");
    const cJSON *t = m ? cJSON_GetObjectItem(m, "content") : cJSON_GetObjectItem(c, "text");
    const cJSON *fin = cJSON_GetObjectItem(c, "finish_reason");
    const cJSON *u = cJSON_GetObjectItem(body, "usage");
    if (!cJSON_IsString(t) || !cJSON_IsString(fin)) return NULL;
    char *s = am_malloc(strlen(t->valuestring) + 128);
    sprintf(s, "%s|%s|%d|%d", t->valuestring, fin->valuestring, (int)num(u, "prompt_tokens"),
            (int)num(u, "completion_tokens"));
    return s;
}

/* Reads an output file: res[i] for custom_id r<i> (am_free each), seen[i] how often.
 * Returns the number of lines, -1 if one is not JSON or names an unknown id. */
static int read_results(const char *path, char **res, int *seen) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t cap = 0;
    char *line = NULL;
    int n = 0, bad = 0;
    while (getline(&line, &cap, f) > 0) {
        n++;
        cJSON *o = cJSON_Parse(line);
        const cJSON *id = cJSON_GetObjectItem(o, "custom_id");
        int i = cJSON_IsString(id) && id->valuestring[0] == 'r' ? atoi(id->valuestring + 1) : -1;
        if (!o || i < 0 || i >= n_lines) {
            bad++;
        } else {
            seen[i]++;
            am_free(res[i]);
            res[i] = canon(o);
        }
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    return bad ? -1 : n;
}

/* Every custom_id exactly once, with the reference's result. */
static void check_equal_to_reference(const char *out, const char *what) {
    char **res = am_calloc((size_t)n_lines, sizeof *res);
    int *seen = am_calloc((size_t)n_lines, sizeof *seen);
    int n = read_results(out, res, seen);
    CHECK_EQ_INT(n, n_lines);
    int once = 0, equal = 0;
    for (int i = 0; i < n_lines; i++) {
        once += seen[i] == 1;
        int same = res[i] && ref[i] && !strcmp(res[i], ref[i]);
        equal += same;
        if (!same && equal + 3 > i) /* the first few differences */
            fprintf(stderr, "  %s: r%d: '%s' vs reference '%s'\n", what, i, res[i] ? res[i] : "-",
                    ref[i] ? ref[i] : "-");
        am_free(res[i]);
    }
    printf("%s: %d of %d custom_ids exactly once, %d equal to the uninterrupted run\n", what, once,
           n_lines, equal);
    CHECK_EQ_INT(once, n_lines);
    CHECK_EQ_INT(equal, n_lines);
    am_free(res);
    am_free(seen);
}

/* ---- cluster ---- */

static int all_back(const am_client_health *h) {
    return h->healthy && h->shards == 1 && h->encoders == 2;
}

static int two_groups(const am_client_health *h) { return h->healthy && h->shards == 2; }

static void wait_all_back(void) {
    am_client *c = NULL;
    CHECK_OK(am_client_new(T.ep, &c));
    CHECK(am_tc_wait_health(c, all_back, 60000) >= 0);
    am_client_destroy(&c);
}

/* Stops the coordinator (its counters go to its log), returns its admitted count, and
 * starts a new one on the same port: the workers register with it again. */
static long restart_coordinator(void) {
    am_tc_stop(&p_coord);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "grep -o '\"admitted\": [0-9]*' %s | tail -1 | cut -d' ' -f2",
             T.coord_log);
    FILE *f = popen(cmd, "r");
    long admitted = -1;
    if (f && fscanf(f, "%ld", &admitted) != 1) admitted = -1;
    if (f) pclose(f);
    snprintf(T.coord_log, sizeof T.coord_log, "%s/coord%d.log", T.dir, ++n_coord);
    p_coord = am_tc_start_coordinator(&T, T.ep);
    wait_all_back();
    return admitted;
}

static void setup(void) {
    const char *nl = getenv("AM_TEST_BATCH_LINES");
    n_lines = nl ? atoi(nl) : 2000;
    T.shard_capacity = "64";
    CHECK(am_tc_setup(&T, "am_batch", &p_coord) == 0);
    snprintf(media, sizeof media, "%s/tests/golden", T.src);
    snprintf(input, sizeof input, "%s/in.jsonl", T.dir);
    snprintf(anymal, sizeof anymal, "%s/anymal", T.bin);
    p_enc[0] = am_tc_start_encoder(&T, 0);
    p_enc[1] = am_tc_start_encoder(&T, 1);
    p_shard = am_tc_start_shard(&T, 0);
    make_input();
    ref = am_calloc((size_t)n_lines, sizeof *ref);
    wait_all_back();
}

/* ---- bad input ---- */

static void test_bad_input(void) {
    char in[400], out[400], err[400], root[400], path[1200];
    snprintf(root, sizeof root, "%s/media", T.dir);
    snprintf(in, sizeof in, "%s/bad.jsonl", T.dir);
    snprintf(out, sizeof out, "%s/bad.out.jsonl", T.dir);
    snprintf(err, sizeof err, "%s/bad.err.jsonl", T.dir);
    mkdir(root, 0755);
    snprintf(path, sizeof path, "%s/broken.jpg", root);
    FILE *f = fopen(path, "w");
    fputs("this is not a JPEG at all, just text with a .jpg name", f);
    fclose(f);
    snprintf(path, sizeof path, "cp %s/vision/images/land_q90.jpg %s/ok.jpg", media, root);
    CHECK(system(path) == 0);
    f = fopen(in, "w");
#define GOOD(id)                                                                                   \
    "{\"custom_id\":\"" id                                                                         \
    "\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[{\"role\":"                       \
    "\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"ok.jpg\"}}]}],"        \
    "\"max_tokens\":3}}\n"
#define CHAT(id, extra, content)                                                                   \
    "{\"custom_id\":\"" id "\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{"    \
    "\"messages\":[{\"role\":\"user\",\"content\":" content "}]" extra "}}\n"
    fputs(GOOD("g1"), f);                                                           /* line 1 */
    fputs("{\"custom_id\":\"x\",\"url\":\"/v1/chat/completions\",\"body\":{\n", f); /* 2 */
    fputs(CHAT("", "", "\"hi\""), f);                                               /* 3 */
    fputs(CHAT("g1", "", "\"hi\""), f);                                             /* 4 */
    fputs("{\"custom_id\":\"u\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{}}\n",
          f);                                                                      /* 5 */
    fputs(CHAT("m", ",\"model\":\"gpt-4\"", "\"hi\""), f);                         /* 6 */
    fputs(CHAT("p", "", "[{\"type\":\"file\",\"file\":{\"file_id\":\"f\"}}]"), f); /* 7 */
    fputs(CHAT("miss", "", "[{\"type\":\"image_url\",\"image_url\":{\"url\":\"nope.jpg\"}}]"),
          f); /* 8 */
    fputs(CHAT("undec", ",\"max_tokens\":2",
               "[{\"type\":\"image_url\",\"image_url\":{\"url\":\"broken.jpg\"}}]"),
          f);                                                            /* 9 */
    fputs(CHAT("big", ",\"max_tokens\":65", "\"hi\""), f);               /* 10 */
    fprintf(f, "{\"custom_id\":\"long\",\"body\":\"%0*d\"}\n", 5000, 0); /* 11 */
    fputs("{\"custom_id\":\"get\",\"method\":\"GET\",\"url\":\"/v1/completions\",\"body\":{}}\n",
          f);                                           /* 12 */
    fputs(CHAT("st", ",\"stream\":true", "\"hi\""), f); /* 13 */
    fputs("\n", f);                                     /* 14: blank */
    fputs(GOOD("g2"), f);                               /* 15 */
    fclose(f);
#undef GOOD
#undef CHAT
    char *args[] = {"--input",
                    in,
                    "--output",
                    out,
                    "--errors",
                    err,
                    "--media-root",
                    root,
                    "--max-tokens-limit",
                    "64",
                    "--max-line-bytes",
                    "4096",
                    NULL};
    /* --media-root given twice: the last one counts (core/cli.h), the test's own root. */
    CHECK_EQ_INT(run_batch(args, "bad"), 1);
    static const struct {
        int line;
        int status;
        const char *param, *needle, *custom_id;
    } want[] = {
        {2, 400, NULL, "not valid JSON", NULL},
        {3, 400, "custom_id", "has no custom_id", NULL},
        {4, 400, "custom_id", "duplicate custom_id \"g1\" (first on line 1)", NULL},
        {5, 404, "url", "/v1/embeddings", "u"},
        {6, 404, "body.model", "The model 'gpt-4' does not exist", "m"},
        {7, 400, "body.messages[0].content[0]", "unsupported content part type 'file'", "p"},
        {8, 400, "body.messages[0].content[0].image_url.url", "'nope.jpg' not found", "miss"},
        {9, 400, NULL, "image", "undec"},
        {10, 400, "body.max_tokens", "over the limit of 64", "big"},
        {11, 413, NULL, "over --max-line-bytes 4096", NULL},
        {12, 400, "method", "must be \"POST\"", "get"},
        {13, 400, "body.stream", "not supported in a batch", "st"},
    };
    const int n_want = (int)(sizeof want / sizeof want[0]);
    int found[16] = {0};
    f = fopen(err, "r");
    char line[16384];
    int n_err = 0;
    while (f && fgets(line, sizeof line, f)) {
        n_err++;
        cJSON *o = cJSON_Parse(line);
        const cJSON *e = cJSON_GetObjectItem(o, "error");
        const int ln = (int)num(e, "line");
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(o, "response")));
        for (int k = 0; k < n_want; k++) {
            if (want[k].line != ln) continue;
            const cJSON *msg = cJSON_GetObjectItem(e, "message");
            const cJSON *param = cJSON_GetObjectItem(e, "param");
            const cJSON *id = cJSON_GetObjectItem(o, "custom_id");
            int ok = (int)num(e, "status") == want[k].status && cJSON_IsString(msg) &&
                     strstr(msg->valuestring, want[k].needle) &&
                     (!want[k].param ||
                      (cJSON_IsString(param) && !strcmp(param->valuestring, want[k].param))) &&
                     (want[k].custom_id
                          ? cJSON_IsString(id) && !strcmp(id->valuestring, want[k].custom_id)
                          : cJSON_IsNull(id));
            if (!ok) fprintf(stderr, "  bad_input line %d: %s", ln, line);
            CHECK(ok);
            found[k]++;
        }
        cJSON_Delete(o);
    }
    if (f) fclose(f);
    CHECK_EQ_INT(n_err, n_want);
    for (int k = 0; k < n_want; k++) {
        if (found[k] != 1)
            fprintf(stderr, "  bad_input: no error line for line %d\n", want[k].line);
        CHECK_EQ_INT(found[k], 1);
    }
    /* The good lines ran. */
    f = fopen(out, "r");
    int good = 0;
    while (f && fgets(line, sizeof line, f))
        good += strstr(line, "\"custom_id\":\"g1\"") || strstr(line, "\"custom_id\":\"g2\"");
    if (f) fclose(f);
    CHECK_EQ_INT(good, 2);
    cJSON *s = summary_of("bad");
    CHECK(num(s, "succeeded") == 2 && num(s, "failed") == n_want && num(s, "requests") == 14);
    cJSON_Delete(s);
    printf("bad_input: %d bad lines, each an error line naming its line and field; 2 good lines "
           "answered\n",
           n_want);
    /* Usage errors: status 2. */
    char *none[] = {"--output", out, NULL};
    CHECK_EQ_INT(run_batch(none, "usage"), 2);
    char *same[] = {"--input", in, "--output", in, NULL};
    CHECK_EQ_INT(run_batch(same, "usage"), 2);
    /* The same output with another input: refused, named. */
    char *other[] = {"--input", input, "--output", out, "--errors", err, NULL};
    CHECK_EQ_INT(run_batch(other, "other"), 2);
    snprintf(path, sizeof path,
             "grep -q 'belongs to another job: it was written for a different "
             "input' %s/other.log",
             T.dir);
    CHECK(system(path) == 0);
    /* A different --errors: refused too. */
    char *noerr[] = {"--input", in, "--output", out, NULL};
    CHECK_EQ_INT(run_batch(noerr, "other"), 2);
    /* An output that anymal batch did not write. */
    char *foreign[] = {"--input", in, "--output", err, NULL};
    CHECK_EQ_INT(run_batch(foreign, "foreign"), 2);
    snprintf(path, sizeof path, "grep -q 'is not empty and has no' %s/foreign.log", T.dir);
    CHECK(system(path) == 0);
}

/* ---- the reference: no interruption ---- */

static void test_reference(void) {
    char out[400];
    snprintf(out, sizeof out, "%s/ref.jsonl", T.dir);
    char *args[] = {"--input", input, "--output", out, "--concurrency", "64", NULL};
    int64_t t0 = am_now_ms();
    CHECK_EQ_INT(run_batch(args, "ref"), 0);
    ref_wall_s = (double)(am_now_ms() - t0) / 1000.0;
    int *seen = am_calloc((size_t)n_lines, sizeof *seen);
    CHECK_EQ_INT(read_results(out, ref, seen), n_lines);
    int once = 0;
    for (int i = 0; i < n_lines; i++)
        once += seen[i] == 1 && ref[i];
    CHECK_EQ_INT(once, n_lines);
    am_free(seen);
    cJSON *s = summary_of("ref");
    char *txt = cJSON_PrintUnformatted(s);
    printf("reference: %d lines in %.1f s: %s\n", n_lines, ref_wall_s, txt ? txt : "?");
    cJSON_free(txt);
    CHECK(num(s, "succeeded") == n_lines && num(s, "this_run.resent") == 0);
    cJSON_Delete(s);
}

/* ---- SIGKILL of the runner, three times ---- */

static void test_kill_resume(void) {
    char out[400], summary[400], log[400];
    snprintf(out, sizeof out, "%s/killed.jsonl", T.dir);
    snprintf(summary, sizeof summary, "%s/killed.summary", T.dir);
    snprintf(log, sizeof log, "%s/killed.log", T.dir);
    (void)restart_coordinator(); /* a fresh count of admitted requests for this job */
    char *args[] = {"--input", input, "--output", out, "--concurrency", KILL_CONC, NULL};
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    int killed_mid = 0;
    for (int k = 0; k < N_KILLS; k++) {
        /* A random point in the first quarter of what the whole job took: each run resumes
         * with less to do, so every kill lands mid-job. */
        const int ms = 100 + (int)((double)rand() / RAND_MAX * ref_wall_s * 250.0);
        pid_t p = start_batch(args, summary, log);
        usleep((useconds_t)ms * 1000);
        kill(-p, SIGKILL);
        int st;
        waitpid(p, &st, 0);
        char cmd[500];
        snprintf(cmd, sizeof cmd, "wc -l < %s", out);
        FILE *f = popen(cmd, "r");
        int lines = 0;
        if (f && fscanf(f, "%d", &lines) != 1) lines = 0;
        if (f) pclose(f);
        killed_mid += lines < n_lines && WIFSIGNALED(st);
        printf("kill_resume: SIGKILL %d after %d ms: %d of %d lines written\n", k + 1, ms, lines,
               n_lines);
    }
    printf("kill_resume: seed %u, %d of %d kills landed mid-job\n", seed, killed_mid, N_KILLS);
    CHECK_EQ_INT(killed_mid, N_KILLS);
    CHECK_EQ_INT(wait_exit(start_batch(args, summary, log), RUN_TIMEOUT_S), 0);
    check_equal_to_reference(out, "kill_resume");
    /* A torn last line (a power loss mid-write): cut 40 bytes off; the resume repairs it
     * and runs that one request again. */
    struct stat st;
    CHECK(stat(out, &st) == 0);
    CHECK(truncate(out, st.st_size - 40) == 0);
    CHECK_EQ_INT(wait_exit(start_batch(args, summary, log), RUN_TIMEOUT_S), 0);
    cJSON *s = summary_of("killed");
    CHECK(num(s, "torn_bytes_repaired") > 0 && num(s, "this_run.sent") == 1 &&
          num(s, "doubled_on_disk") == 0);
    cJSON_Delete(s);
    check_equal_to_reference(out, "kill_resume + torn line");
    long admitted = restart_coordinator();
    /* Each line was admitted once, plus the torn line again, plus those in flight at a kill. */
    long twice = admitted - n_lines - 1;
    printf("kill_resume: the coordinator admitted %ld requests for %d lines (+1 torn line): %ld "
           "sent twice (window %s per kill, %d kills)\n",
           admitted, n_lines, twice, KILL_CONC, N_KILLS);
    CHECK(admitted >= n_lines + 1);
    CHECK(twice <= (long)N_KILLS * atoi(KILL_CONC));
}

/* ---- a shard rank and an encoder killed mid-job, restarted ---- */

static void test_kill_workers(void) {
    char out[400], summary[400], log[400];
    snprintf(out, sizeof out, "%s/workers.jsonl", T.dir);
    snprintf(summary, sizeof summary, "%s/workers.summary", T.dir);
    snprintf(log, sizeof log, "%s/workers.log", T.dir);
    char *args[] = {"--input", input, "--output", out, "--concurrency", KILL_CONC, NULL};
    /* A second shard group: two replicas serve the job (the reference had one). */
    p_shard2 = am_tc_start_shard(&T, 2);
    am_client *c = NULL;
    CHECK_OK(am_client_new(T.ep, &c));
    CHECK(am_tc_wait_health(c, two_groups, 60000) >= 0);
    am_client_destroy(&c);
    pid_t p = start_batch(args, summary, log);
    usleep((useconds_t)(ref_wall_s * 150000)); /* 15% in */
    pid_t rank1 = am_tc_shard_rank_pid(p_shard, 1);
    CHECK(rank1 > 0);
    if (rank1 > 0) kill(rank1, SIGKILL);
    am_tc_stop(&p_shard); /* mpirun ends the group; reaped here */
    p_shard = am_tc_start_shard(&T, 1);
    printf("kill_workers: shard rank 1 (pid %d) SIGKILLed and the group started again\n",
           (int)rank1);
    usleep((useconds_t)(ref_wall_s * 150000));
    kill(-p_enc[0], SIGKILL);
    waitpid(p_enc[0], NULL, 0);
    p_enc[0] = am_tc_start_encoder(&T, 2);
    printf("kill_workers: encoder 0 SIGKILLed and started again\n");
    usleep((useconds_t)(ref_wall_s * 150000));
    kill(-p_coord, SIGKILL); /* scenario 4: the requests it held are lost with it */
    waitpid(p_coord, NULL, 0);
    snprintf(T.coord_log, sizeof T.coord_log, "%s/coord%d.log", T.dir, ++n_coord);
    p_coord = am_tc_start_coordinator(&T, T.ep);
    printf("kill_workers: the coordinator SIGKILLed and started again on the same port\n");
    CHECK_EQ_INT(wait_exit(p, RUN_TIMEOUT_S), 0);
    cJSON *s = summary_of("workers");
    char *txt = cJSON_PrintUnformatted(cJSON_GetObjectItem(s, "this_run"));
    printf("kill_workers: %s\n", txt ? txt : "?");
    cJSON_free(txt);
    CHECK(num(s, "this_run.resent") > 0); /* the group's requests failed with 503: sent again */
    CHECK(num(s, "this_run.resent_lost") > 0); /* the coordinator's, found lost by a probe */
    cJSON_Delete(s);
    check_equal_to_reference(out, "kill_workers");
}

static void teardown(void) {
    am_tc_stop(&p_shard);
    am_tc_stop(&p_shard2);
    for (int i = 0; i < 2; i++)
        am_tc_stop(&p_enc[i]);
    am_tc_stop(&p_coord);
    for (int i = 0; ref && i < n_lines; i++)
        am_free(ref[i]);
    am_free(ref);
    char cmd[400];
    if (!am_test_failures) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", T.dir);
        CHECK(system(cmd) == 0);
    } else {
        fprintf(stderr, "logs kept in %s\n", T.dir);
    }
}

AM_TEST_MAIN(AM_TEST(setup), AM_TEST(test_bad_input), AM_TEST(test_reference),
             AM_TEST(test_kill_resume), AM_TEST(test_kill_workers), AM_TEST(teardown))
