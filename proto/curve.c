/* proto/curve.c - CURVE key files, allow-lists, the ZAP handler thread and peer roles.
 *
 * The ZAP handler is a REP socket on inproc://zeromq.zap.01 in the guarded
 * socket's own context, served by one thread: libzmq asks it once per new
 * connection (after the CURVE handshake proved the peer holds the secret key of
 * the public key it shows), never per message, so one thread is plenty. It
 * polls with a short timeout so that am_zap_stop can end it without tearing the
 * context down.
 *
 * Without a ZAP handler libzmq 4.3 admits every CURVE client (the option that
 * would refuse them, ZMQ_ZAP_ENFORCE_DOMAIN, is a draft API Debian does not
 * build). So the handler is bound before the guarded socket, and the
 * coordinator also checks every message's User-Id (am_curve_peer): a message
 * that was not admitted by this handler carries none and is dropped.
 */
#include "proto/curve.h"

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/file.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_FILE_MAX_BYTES ((size_t)1 << 20) /* an allow-list of 4096 keys is ~450 KB */
#define ZAP_ENDPOINT       "inproc://zeromq.zap.01"
#define ZAP_POLL_MS        100
#define ZAP_MAX_FRAMES     8

/* ---------------------------------------------------------------- parsing */

static int z85_valid(const char *s, size_t n) {
    uint8_t raw[32];
    char z[AM_CURVE_KEY_CHARS + 1];
    if (n != AM_CURVE_KEY_CHARS) return 0;
    memcpy(z, s, n);
    z[n] = 0;
    return zmq_z85_decode(raw, z) != NULL;
}

static int name_valid(const char *s, size_t n) {
    if (n < 1 || n > AM_CURVE_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-' || ch == '@'))
            return 0;
    }
    return 1;
}

/* Splits one line into at most max whitespace-separated words (pointers into line). A
 * word that starts with '#' starts a comment: no Z85 key does (a key's first character is
 * the high digit of a 32-bit group, at most 82 of Z85's 85, and '#' is the 85th). */
static int words(char *line, char **w, size_t *len, int max) {
    int n = 0;
    char *p = line;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\r')
            p++;
        if (!*p || *p == '#') break;
        if (n == max) return max + 1;
        w[n] = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\r')
            p++;
        len[n] = (size_t)(p - w[n]);
        n++;
    }
    return n;
}

/* A file's lines, numbered from 1 (blank ones too, so messages name the right line). */
typedef struct line_iter {
    char *p;
    int no;
} line_iter;

/* The words of the next line that has any (words() above, at most 2): their count, 0 at
 * the end of the text. */
static int next_words(line_iter *it, char **w, size_t *len) {
    while (it->p && *it->p) {
        char *ln = it->p, *nl = strchr(ln, '\n');
        if (nl) *nl = 0;
        it->p = nl ? nl + 1 : NULL;
        it->no++;
        int n = words(ln, w, len, 2);
        if (n) return n;
    }
    return 0;
}

/* Calls fn for each public-key line of a file's text; default_name names keys given
 * without one (NULL: their first 8 characters). */
typedef int (*key_fn)(void *user, const char *z85, const char *name);
static int parse_public(const char *path, char *text, const char *default_name, key_fn fn,
                        void *user) {
    line_iter it = {text, 0};
    char *w[3];
    size_t len[3];
    for (int n; (n = next_words(&it, w, len));) {
        const int line_no = it.no;
        if (len[0] == 6 && !memcmp(w[0], "secret", 6))
            return am_err_set(AM_EFORMAT,
                              "%s: line %d is a secret key: give its public key file (.pub), and "
                              "keep this one private",
                              path, line_no);
        if (n > 2 || !z85_valid(w[0], len[0]))
            return am_err_set(AM_EFORMAT,
                              "%s: line %d: want '<40 Z85 characters of a CURVE public key> "
                              "[NAME]' (anymal keygen writes them)",
                              path, line_no);
        char z85[AM_CURVE_KEY_CHARS + 1], name[AM_CURVE_NAME_MAX + 1];
        memcpy(z85, w[0], AM_CURVE_KEY_CHARS);
        z85[AM_CURVE_KEY_CHARS] = 0;
        if (n == 2) {
            if (!name_valid(w[1], len[1]))
                return am_err_set(
                    AM_EFORMAT, "%s: line %d: key name '%.*s' (want 1..%d of A-Z a-z 0-9 . _ @ -)",
                    path, line_no, (int)(len[1] > 80 ? 80 : len[1]), w[1], AM_CURVE_NAME_MAX);
            memcpy(name, w[1], len[1]);
            name[len[1]] = 0;
        } else {
            snprintf(name, sizeof name, "%s", default_name ? default_name : "");
            if (!default_name) memcpy(name, z85, 8), name[8] = 0;
        }
        int rc = fn(user, z85, name);
        if (rc) return rc;
    }
    return 0;
}

static int read_text(const char *path, char **text) {
    void *d = NULL;
    size_t len = 0;
    int rc = am_read_file_limited(path, KEY_FILE_MAX_BYTES, &d, &len);
    if (rc) return am_err_prefix(rc, "key file");
    char *t = am_malloc(len + 1);
    if (!t) {
        am_free(d);
        return AM_ENOMEM;
    }
    memcpy(t, d, len);
    t[len] = 0;
    am_free(d);
    if (strlen(t) != len) {
        am_free(t);
        return am_err_set(AM_EFORMAT, "%s: not a key file (it holds NUL bytes)", path);
    }
    *text = t;
    return 0;
}

/* ---------------------------------------------------------------- key files */

static int write_new(const char *path, int mode, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0)
        return am_err_set(AM_EIO, "%s: %s%s", path, strerror(errno),
                          errno == EEXIST ? " (refusing to overwrite a key file)" : "");
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    int e = w < 0 ? errno : EIO;
    int bad = w != (ssize_t)n || fsync(fd);
    if (bad && w == (ssize_t)n) e = errno;
    if (close(fd) && !bad) bad = 1, e = errno;
    if (bad) {
        unlink(path);
        return am_err_set(AM_EIO, "%s: cannot write it: %s", path, strerror(e));
    }
    return 0;
}

int am_curve_keygen(const char *path) {
    char kpath[4096], ppath[4096], pub[AM_CURVE_KEY_CHARS + 1], sec[AM_CURVE_KEY_CHARS + 1];
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (!name_valid(base, strlen(base)))
        return am_err_set(AM_EINVAL,
                          "keygen --out %s: the file name '%s' is the key's name: want 1..%d of "
                          "A-Z a-z 0-9 . _ @ -",
                          path, base, AM_CURVE_NAME_MAX);
    if (snprintf(kpath, sizeof kpath, "%s.key", path) >= (int)sizeof kpath ||
        snprintf(ppath, sizeof ppath, "%s.pub", path) >= (int)sizeof ppath)
        return am_err_set(AM_ERANGE, "keygen --out: path too long");
    struct stat st;
    if (!stat(kpath, &st) || !stat(ppath, &st))
        return am_err_set(AM_EIO, "%s: exists already (refusing to overwrite a key file)",
                          !stat(kpath, &st) ? kpath : ppath);
    if (zmq_curve_keypair(pub, sec))
        return am_err_set(AM_EUNSUPPORTED, "zmq_curve_keypair: %s (libzmq without CURVE?)",
                          zmq_strerror(zmq_errno()));
    char text[512];
    snprintf(text, sizeof text,
             "# anymal CURVE secret key '%s' (Z85). Keep it private (mode 0600); its public key\n"
             "# is in %s.pub, which is what a coordinator's operator needs.\n"
             "secret %s\n",
             base, base, sec);
    int rc = write_new(kpath, 0600, text);
    memset(text, 0, sizeof text);
    memset(sec, 0, sizeof sec);
    if (rc) return rc;
    snprintf(text, sizeof text,
             "# anymal CURVE public key '%s' (Z85): add this line to a coordinator's\n"
             "# --worker-keys or --client-keys file, or this file to such a directory.\n"
             "%s %s\n",
             base, pub, base);
    if ((rc = write_new(ppath, 0644, text))) unlink(kpath);
    return rc;
}

static int first_key(void *user, const char *z85, const char *name) {
    char *out = user;
    (void)name;
    if (!out[0]) memcpy(out, z85, AM_CURVE_KEY_CHARS + 1);
    return 0;
}

int am_curve_load_public(const char *path, char pub[AM_CURVE_KEY_CHARS + 1]) {
    char *text = NULL;
    pub[0] = 0;
    int rc = read_text(path, &text);
    if (!rc) rc = parse_public(path, text, "", first_key, pub);
    am_free(text);
    if (!rc && !pub[0]) rc = am_err_set(AM_EFORMAT, "%s: no public key in it", path);
    return rc;
}

int am_curve_load_secret(const char *path, am_curve_pair *out) {
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(path, &st)) return am_err_set(AM_EIO, "secret key %s: %s", path, strerror(errno));
    if (st.st_mode & 077)
        return am_err_set(AM_EINVAL,
                          "secret key %s is open to other users (mode %04o): chmod 600 it, and "
                          "make a new key if anyone may have read it",
                          path, (unsigned)(st.st_mode & 07777));
    char *text = NULL;
    int rc = read_text(path, &text), found = 0;
    const size_t text_len = text ? strlen(text) : 0; /* before the lines are cut: to wipe it */
    line_iter it = {rc ? NULL : text, 0};
    char *w[3];
    size_t len[3];
    for (int n; !rc && (n = next_words(&it, w, len));) {
        const int line_no = it.no;
        if (n != 2 || len[0] != 6 || memcmp(w[0], "secret", 6) || !z85_valid(w[1], len[1]) || found)
            rc = am_err_set(AM_EFORMAT,
                            "%s: line %d: want one line 'secret <40 Z85 characters>' (a key file "
                            "of anymal keygen; a .pub file is the public half)",
                            path, line_no);
        else
            memcpy(out->sec, w[1], AM_CURVE_KEY_CHARS), found = 1;
    }
    if (text) {
        memset(text, 0, text_len);
        am_free(text);
    }
    if (!rc && !found) rc = am_err_set(AM_EFORMAT, "%s: no 'secret' line in it", path);
    if (!rc && zmq_curve_public(out->pub, out->sec))
        rc = am_err_set(AM_EUNSUPPORTED, "zmq_curve_public: %s (libzmq without CURVE?)",
                        zmq_strerror(zmq_errno()));
    /* PATH.pub beside PATH.key must be its public half. */
    size_t pl = strlen(path);
    char ppath[4096];
    if (!rc && pl > 4 && !strcmp(path + pl - 4, ".key") && pl < sizeof ppath) {
        memcpy(ppath, path, pl - 4);
        memcpy(ppath + pl - 4, ".pub", 5);
        char pub[AM_CURVE_KEY_CHARS + 1];
        if (!access(ppath, F_OK)) {
            rc = am_curve_load_public(ppath, pub);
            if (!rc && strcmp(pub, out->pub))
                rc = am_err_set(AM_EINVAL, "%s holds %s, not the public key of %s (%s)", ppath, pub,
                                path, out->pub);
        }
    }
    if (rc) memset(out, 0, sizeof *out);
    return rc;
}

/* ---------------------------------------------------------------- allow-lists */

typedef struct list_add {
    am_curve_list *l;
    int cap;
    const char *path;
} list_add;

static int add_key(void *user, const char *z85, const char *name) {
    list_add *a = user;
    am_curve_list *l = a->l;
    for (int i = 0; i < l->n; i++) {
        if (!strcmp(l->keys[i].z85, z85))
            return am_err_set(AM_EINVAL, "%s: key %s ('%s') is listed twice (also as '%s')",
                              a->path, z85, name, l->keys[i].name);
        if (!strcmp(l->keys[i].name, name))
            return am_err_set(AM_EINVAL,
                              "%s: two keys are named '%s': names must be unique (they appear "
                              "in the logs)",
                              a->path, name);
    }
    if (l->n == AM_CURVE_MAX_KEYS)
        return am_err_set(AM_ERANGE, "%s: more than %d keys", a->path, AM_CURVE_MAX_KEYS);
    if (l->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 16;
        am_curve_key *k = am_malloc((size_t)cap * sizeof *k);
        if (!k) return AM_ENOMEM;
        if (l->n) memcpy(k, l->keys, (size_t)l->n * sizeof *k);
        am_free(l->keys);
        l->keys = k;
        a->cap = cap;
    }
    am_curve_key *k = &l->keys[l->n++];
    memcpy(k->z85, z85, sizeof k->z85);
    snprintf(k->name, sizeof k->name, "%s", name);
    return 0;
}

static int load_file(list_add *a, const char *path, const char *default_name) {
    char *text = NULL;
    int rc = read_text(path, &text);
    const char *saved = a->path;
    a->path = path;
    if (!rc) rc = parse_public(path, text, default_name, add_key, a);
    a->path = saved;
    am_free(text);
    return rc;
}

static int cmp_str(const void *x, const void *y) {
    return strcmp(*(char *const *)x, *(char *const *)y);
}

int am_curve_list_load(const char *file_or_dir, am_curve_list *l) {
    memset(l, 0, sizeof *l);
    list_add a = {l, 0, file_or_dir};
    struct stat st;
    if (stat(file_or_dir, &st))
        return am_err_set(AM_EIO, "key list %s: %s", file_or_dir, strerror(errno));
    int rc = 0;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(file_or_dir);
        if (!d) return am_err_set(AM_EIO, "key list %s: %s", file_or_dir, strerror(errno));
        char **names = NULL;
        int n = 0, cap = 0;
        struct dirent *e;
        while (!rc && (e = readdir(d))) {
            size_t len = strlen(e->d_name);
            if (len <= 4 || strcmp(e->d_name + len - 4, ".pub") || e->d_name[0] == '.') continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                char **nn = am_malloc((size_t)cap * sizeof *nn);
                if (!nn) {
                    rc = AM_ENOMEM;
                    break;
                }
                if (n) memcpy(nn, names, (size_t)n * sizeof *nn);
                am_free(names);
                names = nn;
            }
            if (!(names[n] = am_malloc(len + 1))) {
                rc = AM_ENOMEM;
                break;
            }
            memcpy(names[n++], e->d_name, len + 1);
        }
        closedir(d);
        if (n) qsort(names, (size_t)n, sizeof *names, cmp_str); /* same order on every run */
        for (int i = 0; i < n && !rc; i++) {
            char path[4096], base[AM_CURVE_NAME_MAX + 1];
            size_t bl = strlen(names[i]) - 4;
            snprintf(path, sizeof path, "%s/%s", file_or_dir, names[i]);
            snprintf(base, sizeof base, "%.*s", (int)(bl < sizeof base - 1 ? bl : sizeof base - 1),
                     names[i]);
            rc = load_file(&a, path, name_valid(names[i], bl) ? base : NULL);
        }
        for (int i = 0; i < n; i++)
            am_free(names[i]);
        am_free(names);
    } else {
        rc = load_file(&a, file_or_dir, NULL);
    }
    if (!rc && !l->n)
        rc = am_err_set(AM_EFORMAT, "key list %s: no public key in it%s", file_or_dir,
                        S_ISDIR(st.st_mode) ? " (a directory's keys are its *.pub files)" : "");
    if (rc) am_curve_list_fini(l);
    return rc;
}

void am_curve_list_fini(am_curve_list *l) {
    am_free(l->keys);
    l->keys = NULL;
    l->n = 0;
}

const am_curve_key *am_curve_list_find(const am_curve_list *l, const char *z85) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->keys[i].z85, z85)) return &l->keys[i];
    return NULL;
}

/* ---------------------------------------------------------------- sockets */

int am_curve_client_load(const char *key_file, const char *server_key_file, am_curve_client *out,
                         int *on) {
    memset(out, 0, sizeof *out);
    *on = 0;
    if (!key_file && !server_key_file) return 0;
    if (!key_file || !server_key_file)
        return am_err_set(AM_EINVAL,
                          "--curve-key and --coordinator-key go together (this end's secret key, "
                          "the coordinator's public key): %s is missing",
                          key_file ? "--coordinator-key" : "--curve-key");
    int rc = am_curve_load_secret(key_file, &out->me);
    if (!rc) rc = am_curve_load_public(server_key_file, out->server);
    if (rc) {
        memset(out, 0, sizeof *out);
        return rc;
    }
    *on = 1;
    return 0;
}

static int sockopt(void *sock, int opt, const void *v, size_t len, const char *name) {
    if (zmq_setsockopt(sock, opt, v, len))
        return am_err_set(AM_EIO, "%s: %s", name, zmq_strerror(zmq_errno()));
    return 0;
}

int am_curve_client_setup(void *sock, const am_curve_client *k) {
    int rc = sockopt(sock, ZMQ_CURVE_SERVERKEY, k->server, AM_CURVE_KEY_CHARS + 1,
                     "ZMQ_CURVE_SERVERKEY");
    if (!rc)
        rc = sockopt(sock, ZMQ_CURVE_PUBLICKEY, k->me.pub, AM_CURVE_KEY_CHARS + 1,
                     "ZMQ_CURVE_PUBLICKEY");
    if (!rc)
        rc = sockopt(sock, ZMQ_CURVE_SECRETKEY, k->me.sec, AM_CURVE_KEY_CHARS + 1,
                     "ZMQ_CURVE_SECRETKEY");
    return rc;
}

int am_curve_server_setup(void *sock, const am_curve_pair *k) {
    int one = 1;
    int rc = sockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one, "ZMQ_CURVE_SERVER");
    if (!rc)
        rc = sockopt(sock, ZMQ_CURVE_SECRETKEY, k->sec, AM_CURVE_KEY_CHARS + 1,
                     "ZMQ_CURVE_SECRETKEY");
    if (!rc)
        rc = sockopt(sock, ZMQ_ZAP_DOMAIN, AM_CURVE_ZAP_DOMAIN, strlen(AM_CURVE_ZAP_DOMAIN),
                     "ZMQ_ZAP_DOMAIN");
    return rc;
}

/* ---------------------------------------------------------------- ZAP */

struct am_zap {
    void *sock;
    pthread_t thread;
    atomic_int stop;
    atomic_llong refused;
    am_curve_list workers, clients;
    am_log_limit lim;
};

int am_log_limit_take(am_log_limit *l, int64_t now_ms, const char *who, int64_t *suppressed) {
    if (now_ms - l->window_ms >= AM_CURVE_LOG_WINDOW_MS) {
        l->last_suppressed = l->n_suppressed;
        l->window_ms = now_ms;
        l->n_logged = 0;
        l->n_suppressed = 0;
        memset(l->slot, 0, sizeof l->slot);
    }
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = who; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    h |= 1; /* 0 marks a free slot */
    int s = -1;
    for (int i = 0; i < AM_CURVE_LOG_SLOTS && s < 0; i++)
        if (l->slot[i].who == h || !l->slot[i].who) s = i;
    int ok = l->n_logged < AM_CURVE_LOG_TOTAL_PER_WINDOW && s >= 0 &&
             l->slot[s].n < AM_CURVE_LOG_PER_WINDOW;
    *suppressed = 0;
    if (!ok) {
        l->n_suppressed++;
        return 0;
    }
    l->slot[s].who = h;
    l->slot[s].n++;
    l->n_logged++;
    *suppressed = l->last_suppressed;
    l->last_suppressed = 0;
    return 1;
}

/* One request (RFC 27): version, request id, domain, address, routing id, mechanism,
 * credentials. The reply: version, request id, status, text, user id, metadata. */
static void zap_serve(am_zap *z) {
    zmq_msg_t f[ZAP_MAX_FRAMES];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, z->sock, n ? 0 : ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            for (int i = 0; i < n; i++)
                zmq_msg_close(&f[i]);
            return;
        }
        more = zmq_msg_more(&part);
        if (n < ZAP_MAX_FRAMES) {
            zmq_msg_init(&f[n]);
            zmq_msg_move(&f[n++], &part);
        }
        zmq_msg_close(&part);
    }
    char addr[64] = "?", key[AM_CURVE_KEY_CHARS + 1] = "", user[AM_CURVE_NAME_MAX + 16] = "";
    const char *status = "400", *text = "key not on the allow-list";
    int ok = n >= 7 && zmq_msg_size(&f[0]) == 3 && !memcmp(zmq_msg_data(&f[0]), "1.0", 3);
    if (ok) {
        size_t al = zmq_msg_size(&f[3]);
        snprintf(addr, sizeof addr, "%.*s", (int)(al < sizeof addr - 1 ? al : sizeof addr - 1),
                 (const char *)zmq_msg_data(&f[3]));
    }
    if (!ok || zmq_msg_size(&f[5]) != 5 || memcmp(zmq_msg_data(&f[5]), "CURVE", 5) ||
        zmq_msg_size(&f[6]) != 32) {
        text = "only CURVE is accepted";
    } else {
        zmq_z85_encode(key, zmq_msg_data(&f[6]), 32);
        const am_curve_key *k;
        if ((k = am_curve_list_find(&z->workers, key))) {
            snprintf(user, sizeof user, "worker:%s", k->name);
        } else if ((k = am_curve_list_find(&z->clients, key))) {
            snprintf(user, sizeof user, "client:%s", k->name);
        }
        if (user[0]) status = "200", text = "OK";
    }
    if (!user[0]) {
        atomic_fetch_add(&z->refused, 1);
        int64_t dropped;
        if (am_log_limit_take(&z->lim, am_now_ms(), key[0] ? key : addr, &dropped)) {
            AM_LOGW("coordinator: refused a connection from %s: %s%s%s", addr,
                    key[0] ? "its CURVE key " : text, key,
                    key[0] ? " is on neither --worker-keys nor --client-keys" : "");
            if (dropped)
                AM_LOGW("coordinator: and %lld more connections refused in the %d s before (not "
                        "logged)",
                        (long long)dropped, AM_CURVE_LOG_WINDOW_MS / 1000);
        }
    }
    /* The request id (frame 1) is echoed; a malformed request still gets a reply so
     * the REP socket stays in step. */
    const char *reply[] = {"1.0", NULL, status, text, user, ""};
    for (int i = 0; i < 6; i++) {
        int flags = i < 5 ? ZMQ_SNDMORE : 0;
        if (i == 1) {
            if (n > 1)
                zmq_send(z->sock, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), flags);
            else
                zmq_send(z->sock, "", 0, flags);
        } else {
            zmq_send(z->sock, reply[i], strlen(reply[i]), flags);
        }
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
}

static void *zap_main(void *arg) {
    am_zap *z = arg;
    while (!atomic_load(&z->stop)) {
        zmq_pollitem_t pi = {z->sock, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&pi, 1, ZAP_POLL_MS);
        if (n < 0 && zmq_errno() == ETERM) break;
        if (n > 0) zap_serve(z);
    }
    return NULL;
}

static int copy_list(am_curve_list *dst, const am_curve_list *src) {
    dst->n = 0;
    dst->keys = NULL;
    if (!src || !src->n) return 0;
    if (!(dst->keys = am_malloc((size_t)src->n * sizeof *dst->keys))) return AM_ENOMEM;
    memcpy(dst->keys, src->keys, (size_t)src->n * sizeof *dst->keys);
    dst->n = src->n;
    return 0;
}

int am_zap_start(void *zctx, const am_curve_list *workers, const am_curve_list *clients,
                 am_zap **out) {
    *out = NULL;
    for (int i = 0; workers && clients && i < workers->n; i++) {
        const am_curve_key *k = am_curve_list_find(clients, workers->keys[i].z85);
        if (k)
            return am_err_set(AM_EINVAL,
                              "key %s is on both lists (worker '%s', client '%s'): a key has one "
                              "role; make the worker and the client a key each",
                              k->z85, workers->keys[i].name, k->name);
    }
    am_zap *z = am_calloc(1, sizeof *z);
    if (!z) return AM_ENOMEM;
    int rc = copy_list(&z->workers, workers);
    if (!rc) rc = copy_list(&z->clients, clients);
    if (!rc && !(z->sock = zmq_socket(zctx, ZMQ_REP)))
        rc = am_err_set(AM_EIO, "ZAP handler socket: %s", zmq_strerror(zmq_errno()));
    int linger = 0;
    if (!rc) zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (!rc && zmq_bind(z->sock, ZAP_ENDPOINT))
        rc = am_err_set(AM_EIO, "ZAP handler: cannot bind %s: %s", ZAP_ENDPOINT,
                        zmq_strerror(zmq_errno()));
    if (!rc && pthread_create(&z->thread, NULL, zap_main, z))
        rc = am_err_set(AM_EIO, "ZAP handler: cannot start its thread");
    if (rc) {
        if (z->sock) zmq_close(z->sock);
        am_curve_list_fini(&z->workers);
        am_curve_list_fini(&z->clients);
        am_free(z);
        return rc;
    }
    *out = z;
    return 0;
}

void am_zap_stop(am_zap **p) {
    am_zap *z = p ? *p : NULL;
    if (!z) return;
    atomic_store(&z->stop, 1);
    pthread_join(z->thread, NULL);
    zmq_close(z->sock);
    am_curve_list_fini(&z->workers);
    am_curve_list_fini(&z->clients);
    am_free(z);
    *p = NULL;
}

int64_t am_zap_refused(const am_zap *z) { return z ? atomic_load(&((am_zap *)z)->refused) : 0; }

/* ---------------------------------------------------------------- peers, endpoints */

am_peer_role am_curve_peer(zmq_msg_t *frame, char *name, size_t cap) {
    if (cap) name[0] = 0;
    const char *uid = zmq_msg_gets(frame, "User-Id");
    if (!uid) return AM_PEER_NONE;
    am_peer_role r = AM_PEER_NONE;
    const char *n = NULL;
    if (!strncmp(uid, "worker:", 7))
        r = AM_PEER_WORKER, n = uid + 7;
    else if (!strncmp(uid, "client:", 7))
        r = AM_PEER_CLIENT, n = uid + 7;
    if (n && cap) snprintf(name, cap, "%s", n);
    return r;
}

int am_endpoint_is_local(const char *ep) {
    if (!strncmp(ep, "ipc://", 6) || !strncmp(ep, "inproc://", 9)) return 1;
    if (strncmp(ep, "tcp://", 6)) return 0;
    const char *h = ep + 6;
    /* A connect-style "src;dst" is not a bind address. */
    if (strchr(h, ';')) return 0;
    if (!strncmp(h, "localhost:", 10) || !strncmp(h, "[::1]:", 6)) return 1;
    if (strncmp(h, "127.", 4)) return 0;
    /* 127.a.b.c: digits and dots up to the port. */
    const char *p = h + 4;
    while ((*p >= '0' && *p <= '9') || *p == '.')
        p++;
    return *p == ':';
}

/* ---------------------------------------------------------------- handshake monitor */

int am_curve_monitor_open(void *zctx, void *sock, int server, void **mon) {
    static atomic_int counter;
    char ep[64];
    int zero = 0;
    *mon = NULL;
    snprintf(ep, sizeof ep, "inproc://am-handshake-monitor-%d", atomic_fetch_add(&counter, 1));
    if (zmq_socket_monitor(sock, ep,
                           ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               (server ? 0 : ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)))
        return am_err_set(AM_EIO, "zmq_socket_monitor: %s", zmq_strerror(zmq_errno()));
    void *m = zmq_socket(zctx, ZMQ_PAIR);
    if (!m || zmq_setsockopt(m, ZMQ_LINGER, &zero, sizeof zero) || zmq_connect(m, ep)) {
        int rc = am_err_set(AM_EIO, "the handshake monitor: %s", zmq_strerror(zmq_errno()));
        if (m) zmq_close(m);
        zmq_socket_monitor(sock, NULL, 0);
        return rc;
    }
    *mon = m;
    return 0;
}

int am_curve_monitor_read(void *mon, char *why, size_t cap) {
    int n = 0;
    for (int k = 0; mon && k < 256; k++) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&f);
            break;
        }
        uint16_t ev = 0;
        uint32_t v = 0;
        if (zmq_msg_size(&f) >= 6) {
            memcpy(&ev, zmq_msg_data(&f), 2);
            memcpy(&v, (const uint8_t *)zmq_msg_data(&f) + 2, 4);
        }
        int more = zmq_msg_more(&f);
        zmq_msg_close(&f);
        while (more) { /* the endpoint frame */
            zmq_msg_init(&f);
            more = zmq_msg_recv(&f, mon, 0) >= 0 && zmq_msg_more(&f);
            zmq_msg_close(&f);
        }
        n++;
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL && why[0])
            continue; /* a closed connection says less than the failure before it */
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            snprintf(why, cap,
                     "the coordinator refused this key (it is on none of its allow-lists)");
        else if (v == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
            snprintf(why, cap,
                     "one end has CURVE keys and the other none (give the peer --curve-key and "
                     "--coordinator-key)");
        else if (v == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
            snprintf(why, cap,
                     "the CURVE handshake did not decrypt (the peer's --coordinator-key is not "
                     "the coordinator's public key)");
        else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
            snprintf(why, cap,
                     "the handshake failed (the connection closed or timed out: does one end have "
                     "CURVE keys and the other none?)");
        else
            snprintf(why, cap, "a protocol error in the handshake (0x%x)", v);
    }
    return n;
}

void am_curve_monitor_close(void *sock, void **mon) {
    if (!mon || !*mon) return;
    if (sock) zmq_socket_monitor(sock, NULL, 0);
    zmq_close(*mon);
    *mon = NULL;
}
