/* proto/transport.h - anymal messages on ZeroMQ sockets: multipart framing, socket options.
 *
 * The only module of proto/ that calls libzmq. A message is the frames
 * [routing id (ROUTER side only)] [header] [body] [payload]... (proto.h,
 * PROTOCOL.md). Receiving always drains the whole multipart message, even a
 * malformed or oversized one, so one bad peer can never desynchronise a
 * socket. Payload frames are kept as zmq_msg_t and can be forwarded to
 * another peer without copying their bytes (zmq_msg_send moves them;
 * zmq_msg_copy shares the buffer of a large message).
 *
 * Errors: AM_EAGAIN (the peer's queue is at its high-water mark: nothing was
 * sent), AM_EUNREACH (ROUTER_MANDATORY: no such peer connected: nothing was
 * sent), AM_EFORMAT/AM_ERANGE/AM_EUNSUPPORTED from decoding, AM_EIO for
 * other libzmq failures (message names zmq_strerror).
 */
#ifndef AM_TRANSPORT_H
#define AM_TRANSPORT_H

#include "proto/proto.h"

#include <zmq.h>

/* Transport status codes (next to core/error.h's AM_E* range). */

/* Socket defaults for every anymal socket (explicit instead of libzmq's). */
#define AM_WIRE_HWM_MSGS 10000 /* per peer, each direction */
#define AM_WIRE_MAX_MSG_BYTES                                                                      \
    ((int64_t)AM_PROTO_MAX_PAYLOAD_BYTES + 4096) /* ZMQ_MAXMSGSIZE: per frame */
#define AM_WIRE_LINGER_MS         200            /* on close: how long unsent messages may wait */
#define AM_WIRE_MAX_ROUTING_BYTES 255            /* ZeroMQ routing ids are 1..255 bytes */

/* One received message. Frames past AM_PROTO_MAX_FRAMES are received and
 * dropped (n_dropped counts them) so the socket stays in sync. */
typedef struct am_wire_in {
    zmq_msg_t routing; /* valid when has_routing */
    int has_routing;
    zmq_msg_t frames[AM_PROTO_MAX_FRAMES];
    int n_frames;
    int n_dropped;
} am_wire_in;

/* Sets HWMs, ZMQ_MAXMSGSIZE (max_msg_bytes; 0 = AM_WIRE_MAX_MSG_BYTES), linger,
 * and, for a ROUTER, ZMQ_ROUTER_MANDATORY. AM_EIO naming the option. */
int am_wire_setup(void *sock, int router, int hwm, int64_t max_msg_bytes);

/* Receives one whole message without blocking: 0, AM_EAGAIN when none is
 * waiting, AM_ETERM, AM_EIO. router: the first frame is the routing id (an
 * empty-handed ROUTER message is reported as AM_EFORMAT after draining).
 * On success the caller closes it with am_wire_in_close. */
int am_wire_recv(void *sock, int router, am_wire_in *in);
void am_wire_in_close(am_wire_in *in);

/* Decodes the received frames (header, body, payloads) into *m, which then
 * borrows the payload bytes from in (keep in open while m is used). A message
 * with dropped frames is AM_ERANGE. */
int am_wire_decode(const am_wire_in *in, am_msg *m);

/* Sends m: [routing] [header] [body] [payloads...]. routing may be NULL (a
 * DEALER/PAIR socket). The n_payloads payload frames are always consumed
 * (sent, or closed on failure); pass zmq_msg_copy()s to keep them. flags:
 * ZMQ_DONTWAIT or 0. */
int am_wire_send(void *sock, const void *routing, size_t routing_len, const am_msg *m,
                 zmq_msg_t *payloads, int n_payloads, int flags);

/* Sends m with payload frames built from plain buffers (copied by libzmq). */
int am_wire_send_bufs(void *sock, const void *routing, size_t routing_len, const am_msg *m,
                      const am_bytes *bufs, int n_bufs, int flags);

/* A payload frame that takes ownership of data (freed by free_fn(data, hint)
 * when libzmq is done with it): the zero-copy way to send embedding rows. */
int am_wire_payload_own(zmq_msg_t *msg, void *data, size_t len, zmq_free_fn *free_fn, void *hint);

/* Sends a raw multipart message of n buffers (tests of hostile input). */
int am_wire_send_raw(void *sock, const am_bytes *frames, int n, int flags);

#endif
