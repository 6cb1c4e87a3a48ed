#!/usr/bin/env python3
"""tests/gateway_robust.py - hostile and unusual HTTP clients against a running anymal-gateway.

Run by tests/test_gateway.sh with GW (http://127.0.0.1:PORT), MODEL and STATUS_URL set,
against a gateway started with --request-timeout-ms 1000 and --max-body-bytes 8 MiB.
Raw sockets, stdlib only: malformed HTTP, keep-alive and pipelining, a 100 MB body,
10,000 idle connections, slow-loris, invalid UTF-8 and base64, a client that disconnects
mid-stream (its request must be cancelled and its KV blocks returned). After each, a
normal request must still be answered. Prints one line per check; exits 1 on a failure.
"""
import json
import os
import resource
import socket
import sys
import time

GW = os.environ["GW"]
MODEL = os.environ["MODEL"]
HOST, PORT = GW.split("//")[1].split(":")[0], int(GW.rsplit(":", 1)[1])
fails = 0


def check(ok, what):
    global fails
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        fails += 1


def conn(timeout=10):
    s = socket.create_connection((HOST, PORT), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(s, f=None):
    """One HTTP/1.1 response (Content-Length or chunked) from file f; (status, headers, body)."""
    f = f or s.makefile("rb")
    line = f.readline()
    if not line:
        return None, {}, b""
    status = int(line.split()[1])
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b""):
            break
        k, v = h.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while True:
            n = int(f.readline().strip(), 16)
            body += f.read(n)
            f.readline()
            if n == 0:
                break
    else:
        body = f.read(int(headers.get("content-length", "0")))
    return status, headers, body


def chat_body(content="Hello", max_tokens=4, stream=False):
    return json.dumps({"model": MODEL, "max_tokens": max_tokens, "stream": stream,
                       "messages": [{"role": "user", "content": content}]}).encode()


def post(path, body, extra=b""):
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def still_serving(what):
    s = conn()
    s.sendall(post("/v1/chat/completions", chat_body()))
    st, _, body = read_response(s)
    s.close()
    check(st == 200 and b"chat.completion" in body, "still serving after " + what)


def status():
    s = conn()
    s.sendall(b"GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n")
    st, _, body = read_response(s)
    s.close()
    return json.loads(body)


# Keep-alive: three requests on one connection; pipelining: three in one write, answered in order.
s = conn()
f = s.makefile("rb")
codes = []
for path in ("/health", "/v1/models", "/nope"):
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    codes.append(read_response(s, f)[0])
check(codes == [200, 200, 404], "keep-alive: 3 requests on one connection %s" % codes)
s.sendall(post("/v1/completions", json.dumps({"model": MODEL, "prompt": "a", "max_tokens": 2}).encode())
          + b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
got = [read_response(s, f) for _ in range(3)]
check([g[0] for g in got] == [200, 404, 200] and b"text_completion" in got[0][2],
      "pipelining: 3 requests in one write answered in order %s" % [g[0] for g in got])
s.close()

# Malformed HTTP: 400 in OpenAI's error shape, then the connection closes.
for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/2.0\r\n\r\n", b"POST /v1/completions HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", b"\x00\xff\x13\x37" * 100):
    s = conn()
    s.sendall(raw)
    st, h, body = read_response(s)
    rest = s.recv(100)
    s.close()
    check(st in (400, 505) and b'"error"' in body and rest == b"", "malformed HTTP %r -> 400 and close" % raw[:20])
still_serving("malformed HTTP")

# Invalid UTF-8 and invalid base64 in the body: 400 naming what was wrong.
s = conn()
f = s.makefile("rb")
s.sendall(post("/v1/chat/completions", chat_body().replace(b"Hello", b"Hel\xc3\x28lo")))
st, _, body = read_response(s, f)
check(st == 400 and b"UTF-8" in body, "invalid UTF-8 -> 400: %s" % body[:120])
bad64 = json.dumps({"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": [
    {"type": "text", "text": "Look:"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR*w0KGgo="}}]}]}).encode()
s.sendall(post("/v1/chat/completions", bad64))
st, _, body = read_response(s, f)
check(st == 400 and b"base64" in body, "invalid base64 -> 400: %s" % body[:160])
s.close()
still_serving("invalid UTF-8 and base64")

# A 100 MB body: refused with 413 as soon as its Content-Length is read.
s = conn(timeout=20)
t0 = time.time()
s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n")
chunk = b"x" * (1 << 20)
sent = 0
try:
    for _ in range(100):
        s.sendall(chunk)
        sent += len(chunk)
except OSError:
    pass
st, h, body = read_response(s)
s.close()
check(st == 413 and b"max-body-bytes" in body, "100 MB body -> 413 after %.1f MB sent, %.2f s"
      % (sent / 1e6, time.time() - t0))
# The same with Expect: 100-continue (curl's way): 413 before any byte of the body.
s = conn()
s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 104857600\r\n\r\n")
st, _, _ = read_response(s)
s.close()
check(st == 413, "100 MB body with Expect: 100-continue -> 413 first")
still_serving("a 100 MB body")

# Slow-loris: a request that trickles in gets 408 after --request-timeout-ms (1 s here).
s = conn()
t0 = time.time()
st = None
try:
    for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
        s.send(bytes([b]))
        time.sleep(0.1)
except OSError:
    pass
st, _, body = read_response(s)
s.close()
check(st == 408 and time.time() - t0 < 6, "slow-loris -> 408 after %.1f s" % (time.time() - t0))
still_serving("slow-loris")

# 10,000 idle connections: all accepted and held while others are served.
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))
idle = []
try:
    for i in range(10000):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex((HOST, PORT))
        idle.append(c)
    # The gateway accepts them from its listen backlog as fast as its loop turns: on a
    # loaded machine that takes more than a second, so wait (at most 30 s) for all.
    t_open = time.time()
    n = 0
    while time.time() - t_open < 30:
        n = status()["gateway"]["connections"]
        if n >= 10000:
            break
        time.sleep(0.2)
    t0 = time.time()
    still_serving("opening 10,000 idle connections (answered in %.3f s)" % (time.time() - t0))
    check(n >= 10000, "the gateway holds %d connections (after %.1f s)" % (n, time.time() - t_open))
finally:
    for c in idle:
        c.close()

# A client that disconnects mid-stream: the request is cancelled, its KV blocks come back.
# The "slow" group (110m shape, ~30 tokens/s) would take ~25 s for these 800 tokens.
def slow_group(st):
    return [w for w in st["workers"] if w["model"] == "slow"][0]


s = conn()
s.sendall(post("/v1/chat/completions", json.dumps({
    "model": "slow", "max_tokens": 800, "stream": True,
    "messages": [{"role": "user", "content": "Tell a long story"}]}).encode()))
seen = b""
while seen.count(b"data: ") < 3:
    seen += s.recv(4096)
busy, t0 = 0, time.time()
while time.time() - t0 < 3 and busy == 0:
    g = slow_group(status())
    busy = g["kv_total"] - g["kv_free"]
    time.sleep(0.05)
s.shutdown(socket.SHUT_RDWR)
s.close()
t0 = time.time()
back = False
while time.time() - t0 < 5:
    st = status()
    g = slow_group(st)
    if g["kv_free"] == g["kv_total"] and g["load"] == 0 and st["gateway"]["in_flight"] == 0:
        back = True
        break
    time.sleep(0.05)
check(seen.startswith(b"HTTP/1.1 200") and busy > 0 and back,
      "disconnect mid-stream: %d KV blocks in use -> all %d free again %.2f s after the close"
      % (busy, g["kv_total"], time.time() - t0))
still_serving("a disconnect mid-stream")
sys.exit(1 if fails else 0)
