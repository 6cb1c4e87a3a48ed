/* workers/worker_link.h - a worker's session with the coordinator, on its own I/O thread.
 *
 * Every worker process (encoder worker, shard leader) is two threads: the
 * engine thread computes, and the link's I/O thread owns the DEALER socket
 * to the coordinator: it registers (READY), sends and checks heartbeats, and
 * reconnects with backoff when the coordinator goes silent for `liveness`
 * intervals or says DISCONNECT. Because heartbeats never wait for compute, a
 * long encode or prefill does not make the coordinator think the worker died.
 *
 * The engine talks to the link through an inproc PAIR socket (am_link_pipe):
 * the messages it reads are the coordinator's application messages (ENCODE,
 * GENERATE, EMBED, CANCEL, ERROR), frame for frame, plus one from the link
 * itself: DISCONNECT, meaning the session ended (every job of the old session
 * has been handed to someone else; drop them). What the engine writes is
 * forwarded as is. Frames are moved, never copied. When the coordinator's
 * queue is full the link stops reading the pipe until it drains
 * (back-pressure instead of dropping).
 *
 * Each new session uses a new socket, hence a new routing id, so the
 * coordinator can tell a reconnected worker's messages from a stale session.
 */
#ifndef AM_WORKER_LINK_H
#define AM_WORKER_LINK_H

#include "proto/proto.h"

#define AM_RECONNECT_MIN_MS 1000  /* first reconnect delay (RFC 18 guidance) */
#define AM_RECONNECT_MAX_MS 32000 /* backoff doubles up to this */

typedef struct am_link_opts {
    const char *endpoint;
    am_msg ready;     /* the READY to send on every (re)connect; strings must outlive the link */
    int heartbeat_ms; /* 0 = AM_HEARTBEAT_MS (proto/proto.h) */
    int liveness;     /* 0 = 3 */
    int reconnect_min_ms; /* 0 = AM_RECONNECT_MIN_MS */
    int reconnect_max_ms; /* 0 = AM_RECONNECT_MAX_MS */
    /* CURVE (proto/curve.h): this worker's secret key file and the coordinator's public
     * key file; both NULL: a plain link. A session the coordinator refuses (a key it does
     * not list) is logged with the reason and retried with backoff. */
    const char *curve_key, *coordinator_key;
    /* Liveness by progress: when the engine has not called am_link_alive for stall_ms
     * (0 = AM_STALL_MS_DEFAULT), it is stuck (a shard group whose rank stopped, an
     * encode that never returns): the link says DISCONNECT, so the coordinator hands
     * the work to others at once, then calls on_stall(stall_user) from its own
     * thread, which must end the process (default: print why and _exit(70), so a
     * shard group's mpirun ends the other ranks and a supervisor starts it again). */
    int stall_ms;
    void (*on_stall)(void *stall_user, int64_t stalled_ms);
    void *stall_user;
} am_link_opts;

#define AM_STALL_MS_DEFAULT 60000
#define AM_STALL_EXIT_CODE  70 /* EX_SOFTWARE: the default on_stall's exit status */

typedef struct am_link am_link;

/* Starts the I/O thread (which connects at once). AM_EIO, AM_ENOMEM, or the key files'
 * errors (proto/curve.h). */
int am_link_new(const am_link_opts *o, am_link **out);
/* The engine's end of the pipe (a PAIR socket; use from one thread). */
void *am_link_pipe(am_link *l);
/* The engine's loop calls this on every turn (it is cheap: one atomic store),
 * whatever it is doing: what it says is "not stuck". Thread-safe. */
void am_link_alive(am_link *l);
/* Sessions started so far (1 after the first READY). */
int am_link_sessions(am_link *l);
/* Says DISCONNECT to the coordinator, stops the thread, closes everything. NULL-safe. */
void am_link_destroy(am_link **p);

/* A worker's graceful drain (first SIGTERM/SIGINT; a second one stops at once).
 * am_drain_poll, called from the engine's loop with what it holds in flight,
 * first says so to the coordinator (a HEARTBEAT with drain set, written to the
 * engine's pipe), which then sends this worker nothing new. It returns 1 when
 * the worker may end: nothing has been in flight for AM_DRAIN_GRACE_MS (a job
 * the coordinator sent before it heard arrives within that), or drain_ms
 * (0 = AM_DRAIN_MS_DEFAULT) has passed; what is left then goes back to the
 * coordinator when the link says DISCONNECT (encoder jobs are sent again,
 * generations end with 503). */
#define AM_DRAIN_MS_DEFAULT 30000
#define AM_DRAIN_GRACE_MS   500
typedef struct am_drain {
    int64_t deadline_ms, idle_since_ms;
    int said;
} am_drain;
int am_drain_poll(am_drain *d, void *pipe, int in_flight, int drain_ms);

#endif
