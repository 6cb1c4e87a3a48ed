/* proto/curve.h - authenticated, encrypted links: CURVE keys, allow-lists and the ZAP handler.
 *
 * Every ZeroMQ link of a cluster (worker -> coordinator, client -> coordinator)
 * can run ZeroMQ's CURVE mechanism (CurveZMQ: Curve25519 key exchange, every
 * frame encrypted and authenticated). The coordinator is the CURVE server; it
 * admits a peer only when a ZAP handler (RFC 27, a thread of the coordinator
 * process bound to inproc://zeromq.zap.01, am_zap_start) finds the peer's
 * public key on one of its allow-lists, and the ZAP reply names the peer's
 * role as the connection's user id: "worker:NAME" or "client:NAME". libzmq
 * attaches that to every message from the connection (the "User-Id" property),
 * which am_curve_peer reads back, so the coordinator decides per message what
 * the peer may send. docs/security.md has the threat model.
 *
 * Key files (written by `anymal keygen --out PATH`, am_curve_keygen):
 *   PATH.key  the secret key, mode 0600:  `secret <40 Z85 characters>`
 *   PATH.pub  the public key:             `<40 Z85 characters> NAME`
 * A word starting with '#' starts a comment (no Z85 key starts with '#'); blank lines
 * are ignored. An allow-list is
 * a file of public-key lines (`cat *.pub > workers.keys`; a line without a NAME is named by its
 * first 8 key characters) or a directory whose `*.pub` files are read (a line without a NAME is
 * named after its file). NAME: 1..64 of [A-Za-z0-9._@-]. The public key is derived from the secret
 * one (zmq_curve_public); when PATH.pub lies beside PATH.key it must match.
 *
 * Errors: AM_EIO (a file that cannot be read or written, or exists already
 * when writing), AM_EFORMAT (not a key file; the message names the file and
 * line), AM_EINVAL (a secret key readable by others, a key on two lists,
 * a name used twice), AM_ERANGE (more than AM_CURVE_MAX_KEYS keys), AM_EIO
 * naming the libzmq call that failed.
 */
#ifndef AM_CURVE_H
#define AM_CURVE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#define AM_CURVE_KEY_CHARS  40   /* a Z85 key (32 bytes) */
#define AM_CURVE_NAME_MAX   64   /* a key's name */
#define AM_CURVE_MAX_KEYS   4096 /* per allow-list */
#define AM_CURVE_ZAP_DOMAIN "anymal"
/* Refusals logged per offender and window (am_log_limit); more are counted. */
#define AM_CURVE_LOG_PER_WINDOW 3
#define AM_CURVE_LOG_WINDOW_MS  10000

/* Secret key file PATH.key and public PATH.pub (name: PATH's last component).
 * Refuses to overwrite either (AM_EIO naming it). */
int am_curve_keygen(const char *path);

/* A key pair from a secret key file (public derived, checked against PATH.pub
 * beside it when present). The file must not be readable by group or others. */
typedef struct am_curve_pair {
    char pub[AM_CURVE_KEY_CHARS + 1], sec[AM_CURVE_KEY_CHARS + 1];
} am_curve_pair;
int am_curve_load_secret(const char *path, am_curve_pair *out);
/* The first public key of a public key file (a peer's PATH.pub). */
int am_curve_load_public(const char *path, char pub[AM_CURVE_KEY_CHARS + 1]);

/* An allow-list. */
typedef struct am_curve_key {
    char z85[AM_CURVE_KEY_CHARS + 1];
    char name[AM_CURVE_NAME_MAX + 1];
} am_curve_key;
typedef struct am_curve_list {
    am_curve_key *keys; /* am_malloc'd */
    int n;
} am_curve_list;
/* Reads a FILE or every DIR/ *.pub into l (zeroed first). An empty list is AM_EFORMAT. */
int am_curve_list_load(const char *file_or_dir, am_curve_list *l);
void am_curve_list_fini(am_curve_list *l);
/* The entry of key z85 (NULL when it is not on the list). */
const am_curve_key *am_curve_list_find(const am_curve_list *l, const char *z85);

/* A CURVE client's keys: its own pair and the server's public key. */
typedef struct am_curve_client {
    am_curve_pair me;
    char server[AM_CURVE_KEY_CHARS + 1];
} am_curve_client;
/* Loads --curve-key (secret) and --coordinator-key (public) files. Both NULL: *on = 0
 * (a plain link); one without the other is AM_EINVAL naming the missing option. */
int am_curve_client_load(const char *key_file, const char *server_key_file, am_curve_client *out,
                         int *on);
/* Socket options, before zmq_connect / zmq_bind. */
int am_curve_client_setup(void *sock, const am_curve_client *k);
int am_curve_server_setup(void *sock, const am_curve_pair *k);

/* The ZAP handler of one ZeroMQ context: admits a CURVE peer whose key is on
 * workers (user id "worker:NAME") or clients ("client:NAME"); every other one is
 * refused (status 400) and logged with its address and key (rate-limited). Start
 * it before binding; stop it after closing the sockets it guards. The lists are
 * copied. A key on both lists is AM_EINVAL. */
typedef struct am_zap am_zap;
int am_zap_start(void *zctx, const am_curve_list *workers, const am_curve_list *clients,
                 am_zap **out);
void am_zap_stop(am_zap **p);            /* NULL-safe */
int64_t am_zap_refused(const am_zap *z); /* connections refused so far (thread-safe) */

/* The role a message's connection was admitted with (its "User-Id" property). */
typedef enum { AM_PEER_NONE = 0, AM_PEER_WORKER, AM_PEER_CLIENT } am_peer_role;
/* Reads frame's User-Id: the role, and the key's name into name (cap bytes). A
 * frame without one (a plain link, or no ZAP handler) is AM_PEER_NONE. */
am_peer_role am_curve_peer(zmq_msg_t *frame, char *name, size_t cap);

/* Failed handshakes of a socket, for the logs: am_curve_monitor_open starts a monitor of
 * sock (events HANDSHAKE_FAILED_*; a server leaves out the refused keys, which its ZAP
 * handler logs with their address) and connects a PAIR socket of zctx to it (*mon;
 * close it with am_curve_monitor_close). am_curve_monitor_read drains what is waiting
 * without blocking: the number of failures, the last one's reason in why (cap bytes;
 * left as is when there was none), e.g. that one end has keys and the other none. */
int am_curve_monitor_open(void *zctx, void *sock, int server, void **mon);
int am_curve_monitor_read(void *mon, char *why, size_t cap);
void am_curve_monitor_close(void *sock, void **mon); /* NULL-safe; before closing sock */

/* 1 when a ZeroMQ endpoint is reachable from this machine only: tcp:// on a
 * loopback address (127.x.y.z, localhost, ::1), ipc:// or inproc://. */
int am_endpoint_is_local(const char *endpoint);

/* A log rate limiter (one per thread that logs refusals), per offender: each `who` (a
 * key, a key name and what it did, or a reason) may log AM_CURVE_LOG_PER_WINDOW lines
 * per AM_CURVE_LOG_WINDOW_MS, and all together AM_CURVE_LOG_TOTAL_PER_WINDOW, so one
 * peer retrying every 100 ms neither floods the log nor hides another. take returns 1
 * when the caller may log now; *suppressed then holds how many lines were dropped in
 * the last window (say so in the line). */
#define AM_CURVE_LOG_TOTAL_PER_WINDOW 40
#define AM_CURVE_LOG_SLOTS            32
typedef struct am_log_limit {
    int64_t window_ms;
    int n_logged;
    int64_t n_suppressed, last_suppressed;
    struct {
        uint64_t who;
        int n;
    } slot[AM_CURVE_LOG_SLOTS];
} am_log_limit;
int am_log_limit_take(am_log_limit *l, int64_t now_ms, const char *who, int64_t *suppressed);

#endif
