/* gateway/http.c - connections, http_parser callbacks, timers and writes of the HTTP server.
 *
 * One state per connection drives its one timer: IDLE (between requests:
 * idle timeout), READING (a request has begun: the request timeout counts from
 * its first byte, so a client that trickles bytes cannot hold a connection),
 * HANDLING (the handler owns the request: no timer, the coordinator keeps the
 * deadline), LINGER (an error was sent: read and drop what the client still
 * sends, then close, so a refused upload reads 413 rather than a reset).
 * Strings of a request (URL, header names and values) go into one arena as
 * offsets while http_parser hands them over in pieces, and become pointers
 * only when the headers are complete, since the arena may move as it grows.
 */
#include "gateway/http.h"

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"

#include <http_parser.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define READ_BUF_BYTES (64 << 10)

enum { S_IDLE = 0, S_READING, S_HANDLING, S_LINGER };

typedef struct hoff {
    size_t name, value;
} hoff;

struct am_http_conn {
    uv_tcp_t tcp; /* first: the handle's data points back here too */
    uv_timer_t timer;
    am_http_server *srv;
    am_http_conn *prev, *next;
    http_parser parser;
    char *in; /* bytes received, not parsed yet */
    size_t in_len, in_cap;
    am_http_req *cur;    /* being parsed */
    am_http_req *active; /* handed to the handler */
    int state, reading, closing, handles_open, in_process, close_after, pending_writes;
    int refuse_status; /* set by a callback: answer this and linger */
    const char *refuse_msg;
    int hstate; /* 0 url, 1 header name, 2 header value */
    size_t url_off, header_bytes;
    hoff hoffs[AM_HTTP_MAX_HEADERS];
    int message_done;
};

struct am_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    am_http_opts o;
    http_parser_settings ps;
    am_http_conn *conns;
    am_http_stats st;
    int64_t codes[600];
    int closing, port;
    char readbuf[READ_BUF_BYTES];
};

typedef struct wreq {
    uv_write_t w;
    am_http_conn *conn;
    uv_buf_t buf;
    char data[];
} wreq;

static void conn_close(am_http_conn *c);
static void conn_process(am_http_conn *c);

/* ---------------------------------------------------------------- small helpers */

const char *am_http_reason(int s) {
    switch (s) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static int grow(char **p, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 256;
    while (nc < need)
        nc *= 2;
    char *d = am_realloc(*p, nc);
    if (!d) return AM_ENOMEM;
    *p = d;
    *cap = nc;
    return 0;
}

static void req_free(am_http_req *r) {
    if (!r) return;
    am_free(r->arena);
    am_free(r->body);
    am_free(r);
}

static void count_status(am_http_server *s, int status) {
    if (status >= 100 && status < 600) {
        s->codes[status]++;
        s->st.responses[status / 100]++;
    }
}

static void timer_set(am_http_conn *c, int state);

/* ---------------------------------------------------------------- writes */

static void on_shutdown(uv_shutdown_t *sh, int status) {
    (void)status;
    am_free(sh);
}

static void on_write(uv_write_t *w, int status) {
    wreq *q = (wreq *)w;
    am_http_conn *c = q->conn;
    am_free(q);
    c->pending_writes--;
    if (c->closing) return;
    if (status < 0) {
        AM_LOGD("gateway http: write failed: %s", uv_strerror(status));
        conn_close(c);
        return;
    }
    if (c->close_after && !c->pending_writes) {
        if (c->state == S_LINGER) {
            /* Our side is done; keep reading until the client's EOF or the linger timer. */
            uv_shutdown_t *sh = am_calloc(1, sizeof *sh);
            if (!sh || uv_shutdown(sh, (uv_stream_t *)&c->tcp, on_shutdown)) {
                am_free(sh);
                conn_close(c);
            }
        } else {
            conn_close(c);
        }
    }
}

/* Queues head + body (either may be empty) as one write. */
static void conn_write(am_http_conn *c, const char *head, size_t hlen, const void *body,
                       size_t blen, const char *tail, size_t tlen) {
    if (!c || c->closing) return;
    wreq *q = am_malloc(sizeof *q + hlen + blen + tlen);
    if (!q) {
        conn_close(c);
        return;
    }
    memcpy(q->data, head, hlen);
    if (blen) memcpy(q->data + hlen, body, blen);
    if (tlen) memcpy(q->data + hlen + blen, tail, tlen);
    q->conn = c;
    q->buf = uv_buf_init(q->data, (unsigned)(hlen + blen + tlen));
    int rc = uv_write(&q->w, (uv_stream_t *)&c->tcp, &q->buf, 1, on_write);
    if (rc) {
        am_free(q);
        conn_close(c);
        return;
    }
    c->pending_writes++;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > c->srv->o.max_write_queue_bytes) {
        AM_LOGI("gateway http: a client does not read its response (over %zu bytes queued): "
                "closing it",
                c->srv->o.max_write_queue_bytes);
        c->srv->st.timeouts++;
        conn_close(c);
    }
}

static void write_response(am_http_conn *c, int status, const char *ctype, const char *extra,
                           const void *body, size_t len, int close) {
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nServer: anymal-gateway\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\nConnection: %s\r\n%s\r\n",
                     status, am_http_reason(status), ctype, len, close ? "close" : "keep-alive",
                     extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof head) n = 0;
    count_status(c->srv, status);
    conn_write(c, head, (size_t)n, body, len, NULL, 0);
}

/* An error the server answers by itself; the connection then lingers and closes. */
static void conn_refuse(am_http_conn *c, int status, const char *msg) {
    char body[1024];
    size_t len;
    const char *ctype = "application/json";
    if (c->srv->o.error_body) {
        len = c->srv->o.error_body(status, msg, body, sizeof body);
    } else {
        int n = snprintf(body, sizeof body, "%s\n", msg);
        len = n > 0 && (size_t)n < sizeof body ? (size_t)n : 0;
        ctype = "text/plain";
    }
    c->close_after = 1;
    timer_set(c, S_LINGER);
    write_response(c, status, ctype, NULL, body, len, 1);
    req_free(c->cur);
    c->cur = NULL;
    c->in_len = 0;
}

/* ---------------------------------------------------------------- timers */

static void on_timer(uv_timer_t *t) {
    am_http_conn *c = t->data;
    switch (c->state) {
    case S_IDLE: conn_close(c); break;
    case S_READING:
        c->srv->st.timeouts++;
        conn_refuse(c, 408, "the request did not arrive in time");
        break;
    case S_LINGER: conn_close(c); break;
    default: break;
    }
}

static void timer_set(am_http_conn *c, int state) {
    c->state = state;
    int ms = state == S_IDLE      ? c->srv->o.idle_timeout_ms
             : state == S_READING ? c->srv->o.request_timeout_ms
             : state == S_LINGER  ? AM_HTTP_LINGER_MS
                                  : 0;
    if (ms)
        uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
    else
        uv_timer_stop(&c->timer);
}

/* ---------------------------------------------------------------- parser callbacks */

static am_http_conn *P(http_parser *p) { return p->data; }

static int arena_add(am_http_req *r, const char *s, size_t n) {
    if (grow(&r->arena, &r->arena_cap, r->arena_len + n + 1)) return -1;
    memcpy(r->arena + r->arena_len, s, n);
    r->arena_len += n;
    return 0;
}

static int on_message_begin(http_parser *p) {
    am_http_conn *c = P(p);
    c->cur = am_calloc(1, sizeof *c->cur);
    if (!c->cur) return -1;
    c->cur->t_start_us = am_now_us();
    c->cur->srv = c->srv;
    c->hstate = 0;
    c->url_off = 0;
    c->header_bytes = 0;
    c->message_done = 0;
    c->srv->st.requests++;
    if (c->state != S_READING) timer_set(c, S_READING);
    return 0;
}

static int too_big(am_http_conn *c, size_t n) {
    c->header_bytes += n;
    if (c->header_bytes <= c->srv->o.max_header_bytes) return 0;
    c->refuse_status = 431;
    c->refuse_msg = "the request's URL and headers are too large";
    return 1;
}

static int on_url(http_parser *p, const char *at, size_t n) {
    am_http_conn *c = P(p);
    if (too_big(c, n)) return -1;
    return arena_add(c->cur, at, n);
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
    am_http_conn *c = P(p);
    am_http_req *r = c->cur;
    if (too_big(c, n)) return -1;
    if (c->hstate != 1) {
        if (arena_add(r, "", 1)) return -1; /* ends the URL or the previous value */
        if (r->n_headers == AM_HTTP_MAX_HEADERS) {
            c->refuse_status = 431;
            c->refuse_msg = "too many header fields";
            return -1;
        }
        c->hoffs[r->n_headers++].name = r->arena_len;
        c->hstate = 1;
    }
    return arena_add(r, at, n);
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
    am_http_conn *c = P(p);
    am_http_req *r = c->cur;
    if (too_big(c, n)) return -1;
    if (c->hstate != 2) {
        if (arena_add(r, "", 1)) return -1;
        c->hoffs[r->n_headers - 1].value = r->arena_len;
        c->hstate = 2;
    }
    return arena_add(r, at, n);
}

static int on_headers_complete(http_parser *p) {
    am_http_conn *c = P(p);
    am_http_req *r = c->cur;
    if (arena_add(r, "", 1)) return -1;
    r->arena[r->arena_len] = '\0';
    r->method = http_method_str((enum http_method)p->method);
    r->path = r->arena + c->url_off;
    char *q = strchr(r->arena + c->url_off, '?');
    if (q) *q = '\0';
    r->query = q ? q + 1 : "";
    for (int i = 0; i < r->n_headers; i++) {
        r->headers[i].name = r->arena + c->hoffs[i].name;
        r->headers[i].value = c->hoffs[i].value ? r->arena + c->hoffs[i].value : "";
    }
    r->http_minor = p->http_minor;
    if (p->http_major != 1) {
        c->refuse_status = 505;
        c->refuse_msg = "only HTTP/1.0 and HTTP/1.1 are served";
        return -1;
    }
    size_t max = c->srv->o.max_body_bytes;
    int has_len = (p->flags & F_CONTENTLENGTH) != 0;
    if (has_len && p->content_length > max) {
        c->refuse_status = 413;
        c->refuse_msg = "the request body is larger than the gateway's --max-body-bytes";
        return -1;
    }
    const char *expect = am_http_header_get(r, "expect");
    if (expect && !strcasecmp(expect, "100-continue") && r->http_minor >= 1) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        count_status(c->srv, 100);
        conn_write(c, cont, sizeof cont - 1, NULL, 0, NULL, 0);
    }
    if (has_len && p->content_length) {
        r->body = am_malloc((size_t)p->content_length + 1);
        if (!r->body) return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
    am_http_conn *c = P(p);
    am_http_req *r = c->cur;
    if (r->body_len + n > c->srv->o.max_body_bytes) {
        c->refuse_status = 413;
        c->refuse_msg = "the request body is larger than the gateway's --max-body-bytes";
        return -1;
    }
    if (!(p->flags & F_CONTENTLENGTH) && grow(&r->body, &r->body_cap, r->body_len + n + 1))
        return -1; /* chunked: it grows as it comes */
    memcpy(r->body + r->body_len, at, n);
    r->body_len += n;
    return 0;
}

static int on_message_complete(http_parser *p) {
    am_http_conn *c = P(p);
    if (!c->cur->body) c->cur->body = am_calloc(1, 1);
    if (!c->cur->body) return -1;
    c->cur->body[c->cur->body_len] = '\0';
    c->cur->keep_alive = http_should_keep_alive(p);
    c->message_done = 1;
    http_parser_pause(p, 1); /* one request at a time: the rest waits, unparsed */
    return 0;
}

/* ---------------------------------------------------------------- request flow */

static void dispatch(am_http_conn *c) {
    am_http_req *r = c->cur;
    c->cur = NULL;
    c->message_done = 0;
    r->conn = c;
    c->active = r;
    timer_set(c, S_HANDLING);
    c->srv->o.handler(c->srv->o.user, r);
}

static void resume_reading(am_http_conn *c);

/* Parses what is buffered while no request is being handled. */
static void conn_process(am_http_conn *c) {
    if (c->in_process) return; /* the outer call goes on */
    c->in_process = 1;
    while (!c->closing && !c->active && c->state != S_LINGER && c->in_len) {
        size_t n = http_parser_execute(&c->parser, &c->srv->ps, c->in, c->in_len);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (n > c->in_len) n = c->in_len;
        memmove(c->in, c->in + n, c->in_len - n);
        c->in_len -= n;
        if (c->refuse_status) {
            int st = c->refuse_status;
            c->refuse_status = 0;
            conn_refuse(c, st, c->refuse_msg);
            break;
        }
        if (e != HPE_OK && e != HPE_PAUSED) {
            char msg[200];
            snprintf(msg, sizeof msg, "malformed HTTP request: %s", http_errno_description(e));
            conn_refuse(c, 400, msg);
            break;
        }
        if (c->message_done) {
            http_parser_pause(&c->parser, 0);
            if (c->parser.upgrade) {
                conn_refuse(c, 400, "protocol upgrades are not supported");
                break;
            }
            dispatch(c);
        } else if (n == 0) {
            break;
        }
    }
    c->in_process = 0;
    if (!c->closing) resume_reading(c);
}

static void finish(am_http_req *r) {
    am_http_conn *c = r->conn;
    r->finished = 1;
    if (c) {
        c->active = NULL;
        if (!r->keep_alive) c->close_after = 1;
        if (c->close_after) {
            if (!c->pending_writes) conn_close(c);
        } else {
            timer_set(c, c->in_len ? S_READING : S_IDLE);
            conn_process(c);
        }
    }
    req_free(r);
}

/* ---------------------------------------------------------------- reads */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    am_http_conn *c = h->data;
    buf->base = c->srv->readbuf; /* consumed within on_read */
    buf->len = sizeof c->srv->readbuf;
}

static void abort_active(am_http_conn *c) {
    am_http_req *r = c->active;
    if (!r) return;
    c->active = NULL;
    r->conn = NULL;
    r->aborted = 1;
    c->srv->st.aborted++;
    if (c->srv->o.on_abort) c->srv->o.on_abort(c->srv->o.user, r);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    (void)buf;
    am_http_conn *c = s->data;
    if (n < 0) {
        conn_close(c); /* EOF or reset: an unfinished request is aborted */
        return;
    }
    if (!n || c->closing || c->state == S_LINGER) return;
    if (grow(&c->in, &c->in_cap, c->in_len + (size_t)n)) {
        conn_close(c);
        return;
    }
    memcpy(c->in + c->in_len, c->srv->readbuf, (size_t)n);
    c->in_len += (size_t)n;
    if (c->active) {
        if (c->in_len > AM_HTTP_MAX_PENDING_BYTES) {
            uv_read_stop(s);
            c->reading = 0;
        }
        return;
    }
    conn_process(c);
}

static void resume_reading(am_http_conn *c) {
    if (c->reading || c->closing || c->in_len > AM_HTTP_MAX_PENDING_BYTES) return;
    if (!uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) c->reading = 1;
}

/* ---------------------------------------------------------------- connections */

static void on_handle_closed(uv_handle_t *h) {
    am_http_conn *c = h->data;
    if (--c->handles_open) return;
    am_http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->st.connections_open--;
    am_free(c->in);
    am_free(c);
}

static void conn_close(am_http_conn *c) {
    if (c->closing) return;
    c->closing = 1;
    abort_active(c);
    req_free(c->cur);
    c->cur = NULL;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

static void on_connection(uv_stream_t *ls, int status) {
    am_http_server *s = ls->data;
    if (status < 0) {
        AM_LOGW("gateway http: accept: %s", uv_strerror(status));
        return;
    }
    am_http_conn *c = am_calloc(1, sizeof *c);
    if (!c) return;
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->st.connections_open++;
    s->st.connections_total++;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp)) {
        conn_close(c);
        return;
    }
    if (s->st.connections_open > s->o.max_connections || s->closing) {
        s->st.connections_refused++;
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, AM_HTTP_TCP_KEEPALIVE_S);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    timer_set(c, S_IDLE);
    resume_reading(c);
}

int am_http_server_new(uv_loop_t *loop, const am_http_opts *o, am_http_server **out) {
    *out = NULL;
    if (!o->handler || o->port < 0 || o->port > 65535)
        return am_err_set(AM_EINVAL, "http server: a handler and a port in 0..65535 are needed");
    am_http_server *s = am_calloc(1, sizeof *s);
    if (!s) return AM_ENOMEM;
    s->loop = loop;
    s->o = *o;
    if (!s->o.max_body_bytes) s->o.max_body_bytes = AM_HTTP_MAX_BODY_BYTES_DEF;
    if (!s->o.max_header_bytes) s->o.max_header_bytes = AM_HTTP_MAX_HEADER_BYTES_DEF;
    if (!s->o.max_write_queue_bytes) s->o.max_write_queue_bytes = AM_HTTP_MAX_WRITE_QUEUE_DEF;
    if (!s->o.request_timeout_ms) s->o.request_timeout_ms = AM_HTTP_REQUEST_TIMEOUT_MS;
    if (!s->o.idle_timeout_ms) s->o.idle_timeout_ms = AM_HTTP_IDLE_TIMEOUT_MS;
    if (!s->o.max_connections) s->o.max_connections = AM_HTTP_MAX_CONNECTIONS_DEF;
    s->ps.on_message_begin = on_message_begin;
    s->ps.on_url = on_url;
    s->ps.on_header_field = on_header_field;
    s->ps.on_header_value = on_header_value;
    s->ps.on_headers_complete = on_headers_complete;
    s->ps.on_body = on_body;
    s->ps.on_message_complete = on_message_complete;
    struct sockaddr_storage addr;
    const char *host = o->host ? o->host : "127.0.0.1";
    int rc = strchr(host, ':') ? uv_ip6_addr(host, o->port, (struct sockaddr_in6 *)&addr)
                               : uv_ip4_addr(host, o->port, (struct sockaddr_in *)&addr);
    if (rc) {
        am_free(s);
        return am_err_set(AM_EINVAL, "--host %s: not a numeric IPv4/IPv6 address", host);
    }
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0)) ||
        (rc = uv_listen((uv_stream_t *)&s->listener, 4096, on_connection))) {
        uv_close((uv_handle_t *)&s->listener, (uv_close_cb)NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        am_free(s);
        return am_err_set(AM_EIO, "cannot listen on %s port %d: %s", host, o->port,
                          uv_strerror(rc));
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
    s->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    *out = s;
    return 0;
}

static void on_listener_closed(uv_handle_t *h) { am_free(h->data); }

void am_http_server_close(am_http_server *s) {
    if (!s || s->closing) return;
    s->closing = 1;
    for (am_http_conn *c = s->conns, *n; c; c = n) {
        n = c->next;
        conn_close(c);
    }
    /* Connections free themselves in their close callbacks; the server memory
     * goes with the listener's, after theirs (libuv runs close callbacks in order). */
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
}

int am_http_server_port(const am_http_server *s) { return s->port; }
am_http_stats am_http_server_stats(const am_http_server *s) { return s->st; }
int64_t am_http_server_code_count(const am_http_server *s, int status) {
    return status >= 100 && status < 600 ? s->codes[status] : 0;
}

const char *am_http_header_get(const am_http_req *r, const char *name) {
    for (int i = 0; i < r->n_headers; i++)
        if (!strcasecmp(r->headers[i].name, name)) return r->headers[i].value;
    return NULL;
}

/* ---------------------------------------------------------------- responses */

void am_http_respond(am_http_req *r, int status, const char *content_type,
                     const char *extra_headers, const void *body, size_t len, int close) {
    if (r->finished) return;
    am_http_conn *c = r->conn;
    if (c) {
        if (close) c->close_after = 1;
        write_response(c, status, content_type, extra_headers, body, len, close || !r->keep_alive);
    }
    finish(r);
}

void am_http_stream_begin(am_http_req *r, int status, const char *content_type,
                          const char *extra_headers) {
    am_http_conn *c = r->conn;
    r->streaming = 1;
    r->chunked = r->http_minor >= 1;
    if (!r->chunked) r->keep_alive = 0;
    if (!c) return;
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nServer: anymal-gateway\r\nContent-Type: %s\r\n"
                     "Cache-Control: no-cache\r\n%sConnection: %s\r\n%s\r\n",
                     status, am_http_reason(status), content_type,
                     r->chunked ? "Transfer-Encoding: chunked\r\n" : "",
                     r->keep_alive ? "keep-alive" : "close", extra_headers ? extra_headers : "");
    if (n < 0 || (size_t)n >= sizeof head) n = 0;
    count_status(c->srv, status);
    conn_write(c, head, (size_t)n, NULL, 0, NULL, 0);
}

void am_http_stream_write(am_http_req *r, const void *data, size_t len) {
    if (!r->conn || !len) return;
    if (!r->chunked) {
        conn_write(r->conn, "", 0, data, len, NULL, 0);
        return;
    }
    char head[24];
    int n = snprintf(head, sizeof head, "%zx\r\n", len);
    conn_write(r->conn, head, (size_t)n, data, len, "\r\n", 2);
}

void am_http_stream_end(am_http_req *r) {
    if (r->finished) return;
    if (r->conn && r->chunked) conn_write(r->conn, "0\r\n\r\n", 5, NULL, 0, NULL, 0);
    finish(r);
}
