/* workers/worker_link.c - registration, heartbeats, reconnects and forwarding on the link's I/O
 * thread. */
#include "workers/worker_link.h"

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "proto/curve.h"
#include "proto/transport.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LINK_POLL_MAX_MS 50

struct am_link {
    am_link_opts o;
    void *zctx, *pipe_engine, *pipe_io, *sock;
    pthread_t thread;
    int started;
    atomic_int stop;
    atomic_int sessions;
    _Atomic int64_t alive_ms; /* the engine's last am_link_alive */
    char pipe_name[64];
    /* I/O thread state */
    int64_t expiry_ms, last_sent_ms, next_connect_ms;
    int backoff_ms;
    zmq_msg_t pending[AM_PROTO_MAX_FRAMES]; /* an engine message waiting for room upstream */
    int n_pending;
    am_curve_client keys; /* when curve */
    int curve;
    void *mon; /* the session socket's failed handshakes: a refusal is logged as one */
};

static void send_cmd(am_link *l, int cmd) {
    am_msg m;
    am_msg_init(&m, cmd);
    if (!am_wire_send(l->sock, NULL, 0, &m, NULL, 0, ZMQ_DONTWAIT)) l->last_sent_ms = am_now_ms();
}

static void tell_engine_disconnect(am_link *l) {
    am_msg m;
    am_msg_init(&m, AM_CMD_DISCONNECT);
    (void)am_wire_send(l->pipe_io, NULL, 0, &m, NULL, 0, ZMQ_DONTWAIT);
}

static void close_session(am_link *l, const char *why, int say_disconnect) {
    if (!l->sock) return;
    if (say_disconnect) send_cmd(l, AM_CMD_DISCONNECT);
    char refused[256] = "";
    if (am_curve_monitor_read(l->mon, refused, sizeof refused)) why = refused;
    am_curve_monitor_close(l->sock, &l->mon);
    int zero = 0;
    zmq_setsockopt(l->sock, ZMQ_LINGER, &zero,
                   sizeof zero); /* what is queued belongs to a dead session */
    zmq_close(l->sock);
    l->sock = NULL;
    for (int i = 0; i < l->n_pending; i++)
        zmq_msg_close(&l->pending[i]);
    l->n_pending = 0;
    if (refused[0])
        AM_LOGW("worker link: the coordinator refused the session: %s; retrying in %d ms", why,
                l->backoff_ms);
    else
        AM_LOGI("worker link: session ended (%s); reconnecting in %d ms", why, l->backoff_ms);
    l->next_connect_ms = am_now_ms() + l->backoff_ms;
    l->backoff_ms =
        l->backoff_ms * 2 > l->o.reconnect_max_ms ? l->o.reconnect_max_ms : l->backoff_ms * 2;
    tell_engine_disconnect(l);
}

static int open_session(am_link *l) {
    l->sock = zmq_socket(l->zctx, ZMQ_DEALER);
    if (!l->sock) return am_err_set(AM_EIO, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    int rc = am_wire_setup(l->sock, 0, 0, 0);
    if (!rc && l->curve) rc = am_curve_client_setup(l->sock, &l->keys);
    if (!rc) rc = am_curve_monitor_open(l->zctx, l->sock, 0, &l->mon);
    if (!rc && zmq_connect(l->sock, l->o.endpoint))
        rc = am_err_set(AM_EIO, "cannot connect to %s: %s", l->o.endpoint,
                        zmq_strerror(zmq_errno()));
    if (!rc) rc = am_wire_send(l->sock, NULL, 0, &l->o.ready, NULL, 0, ZMQ_DONTWAIT);
    if (rc) {
        AM_LOGW("worker link: %s", am_err_msg());
        am_curve_monitor_close(l->sock, &l->mon);
        zmq_close(l->sock);
        l->sock = NULL;
        l->next_connect_ms = am_now_ms() + l->backoff_ms;
        return rc;
    }
    int64_t now = am_now_ms();
    l->last_sent_ms = now;
    l->expiry_ms = now + (int64_t)l->o.heartbeat_ms * l->o.liveness;
    atomic_fetch_add(&l->sessions, 1);
    AM_LOGI("worker link: READY sent to %s (session %d)", l->o.endpoint, atomic_load(&l->sessions));
    return 0;
}

/* Coordinator -> engine. */
static void on_upstream(am_link *l) {
    for (int k = 0; k < 256; k++) {
        am_wire_in in;
        int rc = am_wire_recv(l->sock, 0, &in);
        if (rc) return;
        int64_t now = am_now_ms();
        l->expiry_ms = now + (int64_t)l->o.heartbeat_ms * l->o.liveness;
        int cmd = 0;
        if (in.n_frames < 1 ||
            am_proto_check_header(zmq_msg_data(&in.frames[0]), zmq_msg_size(&in.frames[0]), &cmd)) {
            AM_LOGW("worker link: dropped a malformed message from the coordinator: %s",
                    am_err_msg());
            am_wire_in_close(&in);
            continue;
        }
        if (cmd == AM_CMD_HEARTBEAT) {
            l->backoff_ms = l->o.reconnect_min_ms; /* the session works */
            am_wire_in_close(&in);
            continue;
        }
        if (cmd == AM_CMD_DISCONNECT) {
            am_wire_in_close(&in);
            l->backoff_ms =
                l->o.reconnect_min_ms / 4 + 1; /* the coordinator is alive: come back soon */
            close_session(l, "the coordinator said DISCONNECT", 0);
            return;
        }
        /* Forward the frames as they are (moved). */
        for (int i = 0; i < in.n_frames; i++) {
            if (zmq_msg_send(&in.frames[i], l->pipe_io, i + 1 < in.n_frames ? ZMQ_SNDMORE : 0) <
                0) {
                for (int j = i; j < in.n_frames; j++)
                    zmq_msg_close(&in.frames[j]);
                in.n_frames = 0;
                break;
            }
        }
        in.n_frames = 0;
        am_wire_in_close(&in);
    }
}

/* Sends the pending engine message upstream; 0 when it went (or was dropped with a log). */
static int flush_pending(am_link *l) {
    for (int i = 0; i < l->n_pending; i++) {
        if (zmq_msg_send(&l->pending[i], l->sock,
                         (i + 1 < l->n_pending ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) {
            if (i == 0 && zmq_errno() == EAGAIN) return AM_EAGAIN; /* keep it; poll for room */
            AM_LOGW("worker link: a message to the coordinator failed: %s",
                    zmq_strerror(zmq_errno()));
            for (int j = i; j < l->n_pending; j++)
                zmq_msg_close(&l->pending[j]);
            break;
        }
    }
    l->n_pending = 0;
    l->last_sent_ms = am_now_ms();
    return 0;
}

/* Engine -> coordinator. */
static void on_engine(am_link *l) {
    while (!l->n_pending) {
        am_wire_in in;
        if (am_wire_recv(l->pipe_io, 0, &in)) return;
        if (!l->sock ||
            in.n_dropped) { /* no session: the coordinator re-sends what is still wanted */
            am_wire_in_close(&in);
            continue;
        }
        for (int i = 0; i < in.n_frames; i++) {
            zmq_msg_init(&l->pending[i]);
            zmq_msg_move(&l->pending[i], &in.frames[i]);
        }
        l->n_pending = in.n_frames;
        am_wire_in_close(&in);
        if (flush_pending(l) == AM_EAGAIN) return;
    }
}

static void default_on_stall(void *user, int64_t stalled_ms) {
    (void)user;
    /* fprintf and _exit only: the engine thread is stuck, maybe holding locks. */
    fprintf(stderr,
            "anymal worker: the engine made no progress for %lld ms: it is stuck; "
            "exiting (%d) so that its work goes elsewhere and a supervisor restarts it\n",
            (long long)stalled_ms, AM_STALL_EXIT_CODE);
    _exit(AM_STALL_EXIT_CODE);
}

void am_link_alive(am_link *l) { atomic_store(&l->alive_ms, am_now_ms()); }

static void *io_main(void *arg) {
    am_link *l = arg;
    l->backoff_ms = l->o.reconnect_min_ms;
    while (!atomic_load(&l->stop)) {
        int64_t now = am_now_ms();
        const int64_t stalled = now - atomic_load(&l->alive_ms);
        if (stalled > l->o.stall_ms) {
            AM_LOGE("worker link: the engine made no progress for %lld ms (--stall-ms %d): "
                    "telling the coordinator, then ending the process",
                    (long long)stalled, l->o.stall_ms);
            if (l->sock) {
                send_cmd(l, AM_CMD_DISCONNECT);
                int linger = 1000; /* let the DISCONNECT out before the process ends */
                zmq_setsockopt(l->sock, ZMQ_LINGER, &linger, sizeof linger);
                am_curve_monitor_close(l->sock, &l->mon);
                zmq_close(l->sock);
                l->sock = NULL;
                usleep(100000); /* libzmq's I/O thread sends it */
            }
            l->o.on_stall(l->o.stall_user, stalled);
            atomic_store(&l->alive_ms, am_now_ms()); /* an on_stall that returned: start over */
        }
        if (!l->sock && now >= l->next_connect_ms) (void)open_session(l);
        /* Expiry first: after a SIGSTOP the queued input belongs to a session the coordinator
         * dropped. */
        if (l->sock && now > l->expiry_ms) close_session(l, "the coordinator went silent", 1);
        if (l->sock && now - l->last_sent_ms >= l->o.heartbeat_ms) send_cmd(l, AM_CMD_HEARTBEAT);
        zmq_pollitem_t pi[2] = {{l->pipe_io, 0, ZMQ_POLLIN, 0}, {l->sock, 0, ZMQ_POLLIN, 0}};
        if (l->n_pending) pi[0].events = 0, pi[1].events |= ZMQ_POLLOUT;
        int timeout =
            l->o.heartbeat_ms / 4 < LINK_POLL_MAX_MS ? l->o.heartbeat_ms / 4 : LINK_POLL_MAX_MS;
        if (zmq_poll(pi, l->sock ? 2 : 1, timeout) < 0) {
            if (zmq_errno() == ETERM) break;
            continue;
        }
        if (l->sock && (pi[1].revents & ZMQ_POLLIN)) on_upstream(l);
        if (l->n_pending && l->sock && (pi[1].revents & ZMQ_POLLOUT)) (void)flush_pending(l);
        if (pi[0].revents & ZMQ_POLLIN) on_engine(l);
    }
    /* Deliver what the engine wrote last (its final replies), then say goodbye. */
    if (l->sock) {
        on_engine(l);
        if (l->n_pending) (void)flush_pending(l);
        send_cmd(l, AM_CMD_DISCONNECT);
        am_curve_monitor_close(l->sock, &l->mon);
        zmq_close(l->sock);
        l->sock = NULL;
    }
    for (int i = 0; i < l->n_pending; i++)
        zmq_msg_close(&l->pending[i]);
    l->n_pending = 0;
    return NULL;
}

int am_link_new(const am_link_opts *o, am_link **out) {
    static atomic_int counter;
    *out = NULL;
    am_link *l = am_calloc(1, sizeof *l);
    if (!l) return AM_ENOMEM;
    l->o = *o;
    if (!l->o.heartbeat_ms) l->o.heartbeat_ms = AM_HEARTBEAT_MS;
    if (!l->o.stall_ms) l->o.stall_ms = AM_STALL_MS_DEFAULT;
    if (!l->o.on_stall) l->o.on_stall = default_on_stall;
    atomic_store(&l->alive_ms, am_now_ms());
    if (!l->o.liveness) l->o.liveness = AM_HEARTBEAT_LIVENESS;
    if (!l->o.reconnect_min_ms) l->o.reconnect_min_ms = AM_RECONNECT_MIN_MS;
    if (!l->o.reconnect_max_ms) l->o.reconnect_max_ms = AM_RECONNECT_MAX_MS;
    if (l->o.reconnect_max_ms < l->o.reconnect_min_ms)
        l->o.reconnect_max_ms = l->o.reconnect_min_ms;
    int rc = am_curve_client_load(o->curve_key, o->coordinator_key, &l->keys, &l->curve);
    if (rc) {
        am_free(l);
        return rc;
    }
    snprintf(l->pipe_name, sizeof l->pipe_name, "inproc://am-link-%d",
             atomic_fetch_add(&counter, 1));
    l->zctx = zmq_ctx_new();
    if (!l->zctx || !(l->pipe_io = zmq_socket(l->zctx, ZMQ_PAIR)) ||
        !(l->pipe_engine = zmq_socket(l->zctx, ZMQ_PAIR)) || zmq_bind(l->pipe_io, l->pipe_name) ||
        zmq_connect(l->pipe_engine, l->pipe_name)) {
        rc = am_err_set(AM_EIO, "cannot create the worker's inproc pipe: %s",
                        zmq_strerror(zmq_errno()));
        goto fail;
    }
    int hwm = 0, linger = 0; /* unlimited inside the process: back-pressure is applied upstream */
    zmq_setsockopt(l->pipe_io, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(l->pipe_engine, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(l->pipe_io, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(l->pipe_engine, ZMQ_LINGER, &linger, sizeof linger);
    if (pthread_create(&l->thread, NULL, io_main, l)) {
        rc = am_err_set(AM_EIO, "cannot start the worker's I/O thread");
        goto fail;
    }
    l->started = 1;
    *out = l;
    return 0;
fail:
    am_link_destroy(&l);
    return rc;
}

void *am_link_pipe(am_link *l) { return l->pipe_engine; }
int am_link_sessions(am_link *l) { return atomic_load(&l->sessions); }

void am_link_destroy(am_link **p) {
    am_link *l = p ? *p : NULL;
    if (!l) return;
    if (l->started) {
        atomic_store(&l->stop, 1);
        pthread_join(l->thread, NULL);
    }
    if (l->pipe_engine) zmq_close(l->pipe_engine);
    if (l->pipe_io) zmq_close(l->pipe_io);
    if (l->zctx) zmq_ctx_term(l->zctx);
    memset(&l->keys, 0, sizeof l->keys);
    am_free(l);
    *p = NULL;
}

int am_drain_poll(am_drain *d, void *pipe, int in_flight, int drain_ms) {
    const int64_t now = am_now_ms();
    if (!d->said) {
        am_msg m;
        am_msg_init(&m, AM_CMD_HEARTBEAT);
        m.drain = 1;
        (void)am_wire_send(pipe, NULL, 0, &m, NULL, 0, 0); /* inproc: never full for long */
        d->said = 1;
        d->deadline_ms = now + (drain_ms > 0 ? drain_ms : AM_DRAIN_MS_DEFAULT);
        d->idle_since_ms = 0;
        AM_LOGI("worker: draining: %d in flight, at most %d ms", in_flight,
                drain_ms > 0 ? drain_ms : AM_DRAIN_MS_DEFAULT);
    }
    if (in_flight > 0)
        d->idle_since_ms = 0;
    else if (!d->idle_since_ms)
        d->idle_since_ms = now;
    if (d->idle_since_ms && now - d->idle_since_ms >= AM_DRAIN_GRACE_MS) return 1;
    if (now >= d->deadline_ms) {
        AM_LOGW("worker: drain time is up with %d in flight: they go back to the coordinator",
                in_flight);
        return 1;
    }
    return 0;
}
