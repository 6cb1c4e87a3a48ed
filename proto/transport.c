/* proto/transport.c - multipart framing of anymal messages on ZeroMQ sockets. */
#include "proto/transport.h"

#include "core/error.h"

#include <errno.h>
#include <string.h>
#include <time.h>

static int zerr(const char *what) {
    int e = zmq_errno();
    if (e == EAGAIN) return AM_EAGAIN;
    if (e == EHOSTUNREACH) return AM_EUNREACH;
    if (e == ETERM) return AM_ETERM;
    return am_err_set(AM_EIO, "%s: %s", what, zmq_strerror(e));
}

int am_wire_setup(void *sock, int router, int hwm, int64_t max_msg_bytes) {
    int linger = AM_WIRE_LINGER_MS, one = 1;
    int64_t maxmsg = max_msg_bytes > 0 ? max_msg_bytes : AM_WIRE_MAX_MSG_BYTES;
    if (hwm <= 0) hwm = AM_WIRE_HWM_MSGS;
    if (zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm)) return zerr("ZMQ_SNDHWM");
    if (zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm)) return zerr("ZMQ_RCVHWM");
    if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg)) return zerr("ZMQ_MAXMSGSIZE");
    if (zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger)) return zerr("ZMQ_LINGER");
    if (router && zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one))
        return zerr("ZMQ_ROUTER_MANDATORY");
    return 0;
}

void am_wire_in_close(am_wire_in *in) {
    if (in->has_routing) zmq_msg_close(&in->routing);
    for (int i = 0; i < in->n_frames; i++)
        zmq_msg_close(&in->frames[i]);
    in->has_routing = 0;
    in->n_frames = 0;
    in->n_dropped = 0;
}

int am_wire_recv(void *sock, int router, am_wire_in *in) {
    in->has_routing = 0;
    in->n_frames = 0;
    in->n_dropped = 0;
    zmq_msg_t part;
    int first = 1, more = 1;
    while (more) {
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, first ? ZMQ_DONTWAIT : 0) < 0) {
            zmq_msg_close(&part);
            if (first) return zerr("zmq_msg_recv");
            /* The rest of a multipart message arrives with its first frame;
             * failing here means the context is going away. */
            am_wire_in_close(in);
            return zerr("zmq_msg_recv (continuation)");
        }
        more = zmq_msg_more(&part);
        if (first && router) {
            zmq_msg_init(&in->routing);
            zmq_msg_move(&in->routing, &part);
            zmq_msg_close(&part);
            in->has_routing = 1;
        } else if (in->n_frames < AM_PROTO_MAX_FRAMES) {
            zmq_msg_init(&in->frames[in->n_frames]);
            zmq_msg_move(&in->frames[in->n_frames++], &part);
            zmq_msg_close(&part);
        } else {
            zmq_msg_close(&part);
            in->n_dropped++;
        }
        first = 0;
    }
    if (router && in->n_frames == 0) {
        am_wire_in_close(in);
        return am_err_set(AM_EFORMAT, "a message with a routing id and no frames");
    }
    return 0;
}

int am_wire_decode(const am_wire_in *in, am_msg *m) {
    memset(m, 0, sizeof *m);
    if (in->n_dropped)
        return am_err_set(AM_ERANGE, "a message of %d frames (at most %d)",
                          in->n_frames + in->n_dropped, AM_PROTO_MAX_FRAMES);
    if (in->n_frames < 2)
        return am_err_set(AM_EFORMAT, "a message of %d frame(s): want a header and a body",
                          in->n_frames);
    am_bytes pay[AM_PROTO_MAX_PAYLOADS];
    int n_pay = in->n_frames - 2;
    for (int i = 0; i < n_pay; i++) {
        zmq_msg_t *f = (zmq_msg_t *)&in->frames[2 + i];
        pay[i].data = zmq_msg_data(f);
        pay[i].len = zmq_msg_size(f);
    }
    zmq_msg_t *h = (zmq_msg_t *)&in->frames[0], *b = (zmq_msg_t *)&in->frames[1];
    return am_msg_decode(zmq_msg_data(h), zmq_msg_size(h), zmq_msg_data(b), zmq_msg_size(b), pay,
                         (size_t)n_pay, m);
}

static int send_buf(void *sock, const void *data, size_t len, int flags) {
    return zmq_send(sock, data, len, flags) < 0 ? zerr("zmq_send") : 0;
}

int am_wire_send(void *sock, const void *routing, size_t routing_len, const am_msg *m,
                 zmq_msg_t *payloads, int n_payloads, int flags) {
    am_buf body = {0};
    uint8_t hdr[AM_PROTO_HEADER_BYTES];
    int rc = am_msg_encode(m, &body);
    int sent_first = 0;
    am_proto_header(m->cmd, hdr);
    if (rc) goto done;
    if (routing) {
        if ((rc = send_buf(sock, routing, routing_len, ZMQ_SNDMORE | flags))) goto done;
        sent_first = 1;
    }
    /* After the first frame of a multipart message is queued, the rest are
     * accepted as well (libzmq queues multipart messages atomically). */
    if ((rc = send_buf(sock, hdr, sizeof hdr, ZMQ_SNDMORE | flags))) goto done;
    sent_first = 1;
    if ((rc = send_buf(sock, body.data, body.len, (n_payloads ? ZMQ_SNDMORE : 0) | flags)))
        goto done;
    for (int i = 0; i < n_payloads; i++) {
        if (zmq_msg_send(&payloads[i], sock, (i + 1 < n_payloads ? ZMQ_SNDMORE : 0) | flags) < 0) {
            rc = zerr("zmq_msg_send (payload)");
            for (int j = i; j < n_payloads; j++)
                zmq_msg_close(&payloads[j]);
            n_payloads = 0;
            goto done;
        }
    }
    n_payloads = 0;
done:
    (void)sent_first;
    for (int i = 0; i < n_payloads; i++)
        zmq_msg_close(&payloads[i]);
    am_buf_fini(&body);
    return rc;
}

int am_wire_send_bufs(void *sock, const void *routing, size_t routing_len, const am_msg *m,
                      const am_bytes *bufs, int n_bufs, int flags) {
    zmq_msg_t pay[AM_PROTO_MAX_PAYLOADS];
    if (n_bufs < 0 || n_bufs > AM_PROTO_MAX_PAYLOADS)
        return am_err_set(AM_ERANGE, "%d payloads", n_bufs);
    for (int i = 0; i < n_bufs; i++) {
        if (zmq_msg_init_size(&pay[i], bufs[i].len)) {
            for (int j = 0; j < i; j++)
                zmq_msg_close(&pay[j]);
            return am_err_set(AM_ENOMEM, "payload of %zu bytes", bufs[i].len);
        }
        if (bufs[i].len) memcpy(zmq_msg_data(&pay[i]), bufs[i].data, bufs[i].len);
    }
    return am_wire_send(sock, routing, routing_len, m, pay, n_bufs, flags);
}

int am_wire_payload_own(zmq_msg_t *msg, void *data, size_t len, zmq_free_fn *free_fn, void *hint) {
    if (zmq_msg_init_data(msg, data, len, free_fn, hint)) return zerr("zmq_msg_init_data");
    return 0;
}

int am_wire_send_raw(void *sock, const am_bytes *frames, int n, int flags) {
    for (int i = 0; i < n; i++) {
        int rc =
            send_buf(sock, frames[i].data, frames[i].len, (i + 1 < n ? ZMQ_SNDMORE : 0) | flags);
        if (rc) return rc;
    }
    return 0;
}
