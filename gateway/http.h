/* gateway/http.h - an HTTP/1.1 server on a libuv loop: connections, parsing, limits, responses.
 *
 * The gateway's transport, knowing nothing of OpenAI or the coordinator. One
 * libuv loop (the caller's) accepts TCP connections; Debian's http_parser
 * (libhttp-parser, nodejs' parser) reads requests; every complete request is
 * handed to the handler as an am_http_req, which the handler finishes exactly
 * once, now or later, with am_http_respond or am_http_stream_end.
 *
 * Keep-alive and pipelining: a connection handles one request at a time.
 * Bytes of the next (pipelined) requests that arrive meanwhile are kept
 * unparsed (reading stops past AM_HTTP_MAX_PENDING_BYTES) and parsed when the
 * current response is finished, so responses go out in request order, as
 * HTTP/1.1 requires. The socket is still read while a request is handled: an
 * end of stream or a reset then aborts the request (on_abort), which is how a
 * client that goes away cancels its generation. A client that only half-closes
 * its side is treated the same (HTTP clients do not do it).
 *
 * Limits, each answered in the caller's error shape (error_body) and then a
 * close: headers over max_header_bytes (431), a body over max_body_bytes (413,
 * sent as soon as Content-Length says so, or when a chunked body passes it;
 * the rest of the body is read and dropped for at most AM_HTTP_LINGER_MS so
 * that the client sees the answer instead of a reset), a request whose
 * headers and body take longer than request_timeout_ms from its first byte
 * (408: slow-loris), malformed HTTP (400). A connection idle between requests
 * for idle_timeout_ms is closed; so is one whose unsent output passes
 * max_write_queue_bytes (a client that does not read). Past max_connections,
 * new connections are accepted and closed at once. `Expect: 100-continue` is
 * answered before the body is read (or with 413 when it would not fit).
 *
 * Threading: everything runs on the loop's thread. Errors: am_http_server_new
 * returns AM_EIO naming the address (bind/listen), AM_EINVAL for options.
 */
#ifndef AM_HTTP_H
#define AM_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define AM_HTTP_MAX_HEADERS          64
#define AM_HTTP_MAX_PENDING_BYTES    ((size_t)1 << 20) /* pipelined bytes kept unparsed */
#define AM_HTTP_LINGER_MS            2000 /* reading and dropping a refused body before close */
#define AM_HTTP_MAX_HEADER_BYTES_DEF ((size_t)32 << 10)
#define AM_HTTP_MAX_BODY_BYTES_DEF   ((size_t)64 << 20)
#define AM_HTTP_REQUEST_TIMEOUT_MS   10000
#define AM_HTTP_IDLE_TIMEOUT_MS      75000
#define AM_HTTP_MAX_CONNECTIONS_DEF  16384
#define AM_HTTP_MAX_WRITE_QUEUE_DEF  ((size_t)16 << 20)
#define AM_HTTP_TCP_KEEPALIVE_S      60 /* half-open peers of a long stream are found by TCP */

typedef struct am_http_server am_http_server;
typedef struct am_http_conn am_http_conn;

typedef struct am_http_header {
    const char *name, *value; /* NUL-terminated; the name as sent */
} am_http_header;

typedef struct am_http_req {
    am_http_conn *conn; /* NULL once the client has gone (after on_abort) */
    am_http_server *srv;
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* the URL up to '?', NUL-terminated */
    const char *query;  /* after '?', or "" */
    am_http_header headers[AM_HTTP_MAX_HEADERS];
    int n_headers;
    char *body; /* NUL-terminated (one spare byte); body_len bytes */
    size_t body_len;
    int http_minor;     /* HTTP/1.<minor> */
    int keep_alive;     /* the client asked to keep the connection */
    int64_t t_start_us; /* first byte of the request (core/clock.h) */
    void *user;         /* the handler's per-request state */
    /* private */
    int streaming, chunked, finished, aborted;
    char *arena;
    size_t arena_len, arena_cap, body_cap;
} am_http_req;

/* Called once per complete request. */
typedef void (*am_http_handler)(void *user, am_http_req *req);
/* Called once when the client of an unfinished request goes away (EOF, reset,
 * a write error or a timeout). req stays valid; the handler must still finish
 * it (am_http_respond or am_http_stream_end), which then only frees it. */
typedef void (*am_http_abort_fn)(void *user, am_http_req *req);
/* Formats the body of an error the server sends by itself (400, 408, 413,
 * 431, 503) into buf (size cap); returns its length. NULL: text/plain. */
typedef size_t (*am_http_error_fn)(int status, const char *message, char *buf, size_t cap);

typedef struct am_http_opts {
    const char *host; /* numeric IPv4/IPv6 address to bind */
    int port;         /* 0 = any free port (am_http_server_port tells which) */
    size_t max_body_bytes, max_header_bytes, max_write_queue_bytes; /* 0 = the defaults above */
    int request_timeout_ms, idle_timeout_ms, max_connections;       /* 0 = the defaults above */
    am_http_handler handler;
    am_http_abort_fn on_abort;
    am_http_error_fn error_body; /* its content type is application/json */
    void *user;
} am_http_opts;

int am_http_server_new(uv_loop_t *loop, const am_http_opts *o, am_http_server **out);
/* Stops listening and closes every connection (aborting unfinished requests);
 * the memory goes once the loop has run the close callbacks (uv_run after). */
void am_http_server_close(am_http_server *s);
int am_http_server_port(const am_http_server *s);

typedef struct am_http_stats {
    int64_t connections_open, connections_total, connections_refused;
    int64_t requests, timeouts, aborted;
    int64_t responses[6]; /* by class: [1] 1xx ... [5] 5xx */
} am_http_stats;
am_http_stats am_http_server_stats(const am_http_server *s);
/* Responses sent with this status so far (100..599; 0 otherwise). */
int64_t am_http_server_code_count(const am_http_server *s, int status);

/* The value of header name (case-insensitive), or NULL. */
const char *am_http_header_get(const am_http_req *r, const char *name);

/* Finishes r with one whole response. extra_headers: "Name: value\r\n" lines
 * or NULL. close != 0 closes the connection after it. */
void am_http_respond(am_http_req *r, int status, const char *content_type,
                     const char *extra_headers, const void *body, size_t len, int close);
/* The standard reason phrase of status ("Not Found"). */
const char *am_http_reason(int status);

/* A streamed response: the head now, then any number of pieces (chunked
 * transfer encoding on HTTP/1.1; on HTTP/1.0, raw bytes and a close), then
 * the end, which finishes r. Writes to a client that has gone are dropped. */
void am_http_stream_begin(am_http_req *r, int status, const char *content_type,
                          const char *extra_headers);
void am_http_stream_write(am_http_req *r, const void *data, size_t len);
void am_http_stream_end(am_http_req *r);

#endif
