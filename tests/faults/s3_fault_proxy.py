#!/usr/bin/env python3
"""A loopback HTTP proxy in front of an S3 endpoint (moto) that injects S3 faults.

Forwards path-style S3 requests (/bucket/key?query) of any method unchanged (same
request-target, headers including Host, and body) to the upstream and relays the
upstream's status, headers and body unchanged, 4xx/5xx included. A share of the
requests instead get a real S3 SlowDown error or a TCP reset. Standard library only.

    s3_fault_proxy.py --upstream http://127.0.0.1:PORT [--port N] \
        [--methods GET,PUT] [--slowdown-every N] [--reset-every M] \
        [--overwrite-on-get BUCKET/KEY --overwrite-body TEXT] [--verbose]

Only requests whose method is in --methods (comma list, default: all) are counted;
the others are always forwarded. Among the counted requests, numbered 1, 2, 3, ...
across all connections and threads:

--slowdown-every N  every Nth one is answered, without forwarding, with HTTP 503,
                    Content-Type application/xml and an S3 <Error> body with Code
                    SlowDown (the request body is read and discarded first). 0 = never.
--reset-every M     every Mth one gets its TCP connection reset (SO_LINGER on/0, then
                    close, so the client sees ECONNRESET). A GET is forwarded and, if
                    the upstream response has a body of more than 1 byte, the status
                    line, the headers and about half of the body are sent before the
                    reset; otherwise the reset comes before any response byte. Any
                    other method is NOT forwarded (its body is read and discarded,
                    then the connection is reset), so the request has no effect
                    upstream. 0 = never.
                    If one request is picked by both, slowdown wins (and only the
                    slowdown count goes up).
--max-faults K      at most K SlowDowns and resets in all (0 = no limit): a fault
                    that passes, for clients that must recover from exactly one.
--overwrite-on-get BUCKET/KEY with --overwrite-body TEXT
                    the first forwarded GET of exactly /BUCKET/KEY (any query string
                    or Range) that the upstream answers with a 2xx makes the proxy,
                    after receiving that response and before relaying it, PUT TEXT
                    (UTF-8) to /BUCKET/KEY on the upstream: a concurrent writer
                    replacing the object under a reader. The client still gets the
                    old response. Happens at most once (a reset GET counts too). The
                    PUT reuses the GET's Authorization/X-Amz-Date/X-Amz-Security-Token
                    (moto checks no signatures but refuses anonymous writes).
--overwrite-target BUCKET/KEY
                    with --overwrite-on-get: the PUT goes to /BUCKET/KEY instead of
                    the GET's own object: another writer creating an output while its
                    source is read.

--delay-every N with --delay-seconds S
                    every Nth counted request not picked for a SlowDown or a reset
                    waits S seconds (float) before it is forwarded: a slow server.
                    0 = never.
--stall-every N with --stall-seconds S
                    counted GETs are numbered 1, 2, 3, ... on their own; every Nth
                    one not picked for a SlowDown or a reset is forwarded and, if
                    the upstream response has a body of more than 1 byte, the
                    status line, the headers and about half of the body are sent,
                    then the proxy stalls S seconds (float) before sending the rest:
                    a mid-body stall. A smaller body is sent after the stall. A
                    request may be both delayed and stalled. 0 = never.

--ignore-range      GET requests are forwarded without their Range header, so the
                    upstream answers with the whole object: a server that ignores
                    ranges.

Request bodies: Content-Length bodies (aws-chunked ones included) are streamed to the
upstream byte for byte. A "Transfer-Encoding: chunked" body is de-chunked (HTTP
trailers are dropped) and sent with a Content-Length instead. "Expect: 100-continue"
is answered by the proxy itself and not forwarded, nor are hop-by-hop headers
(Connection, Keep-Alive, Transfer-Encoding, TE, Trailer, Upgrade, Proxy-*).
Response bodies are streamed in chunks; an upstream response without a
Content-Length is relayed with chunked encoding. The client side is HTTP/1.1
keep-alive; each request uses a fresh upstream connection.

Prints "PORT <n>" on stdout once listening (127.0.0.1, a free port unless --port);
nothing is logged per request unless --verbose, which logs "METHOD PATH region=R" (R
the region the request was signed for, "-" if unsigned) and errors. Stops on SIGTERM or SIGINT, printing
"seen=<n> slowdown=<n> reset=<n> overwritten=<n>" to stderr (seen = counted requests),
followed by " delayed=<n>" with --delay-every and " stalled=<n>" with --stall-every,
and exiting 0.
"""
import argparse
import hashlib
import http.client
import re
import os
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 256 * 1024
SPOOL = 16 * 1024 * 1024
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}

lock = threading.Lock()
counts = {"seen": 0, "slowdown": 0, "reset": 0, "overwritten": 0, "delayed": 0, "stalled": 0, "gets": 0}
overwrite_claimed = False


class Stop(Exception):
    pass


def main():
    p = argparse.ArgumentParser(description="S3 fault-injecting proxy (see module docstring)")
    p.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT of the S3 (moto) server")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    p.add_argument("--methods", default="", help="comma list of methods that count (default: all)")
    p.add_argument("--slowdown-every", type=int, default=0, metavar="N")
    p.add_argument("--reset-every", type=int, default=0, metavar="M")
    p.add_argument("--max-faults", type=int, default=0, metavar="K")
    p.add_argument("--overwrite-on-get", default="", metavar="BUCKET/KEY")
    p.add_argument("--overwrite-body", default=None, metavar="TEXT")
    p.add_argument("--overwrite-target", default="", metavar="BUCKET/KEY")
    p.add_argument("--delay-every", type=int, default=0, metavar="N")
    p.add_argument("--delay-seconds", type=float, default=0.0, metavar="S")
    p.add_argument("--stall-every", type=int, default=0, metavar="N")
    p.add_argument("--stall-seconds", type=float, default=0.0, metavar="S")
    p.add_argument("--ignore-range", action="store_true", help="forward GETs without their Range header")
    p.add_argument("--timeout", type=float, default=300.0, help="upstream socket timeout, seconds")
    p.add_argument("--verbose", action="store_true", help="log each request and errors to stderr")
    args = p.parse_args()
    if args.slowdown_every < 0 or args.reset_every < 0:
        p.error("--slowdown-every and --reset-every must be >= 0")
    if args.delay_every < 0 or args.stall_every < 0:
        p.error("--delay-every and --stall-every must be >= 0")
    if bool(args.delay_every) != (args.delay_seconds > 0):
        p.error("--delay-every and --delay-seconds go together")
    if bool(args.stall_every) != (args.stall_seconds > 0):
        p.error("--stall-every and --stall-seconds go together")
    if bool(args.overwrite_on_get) != (args.overwrite_body is not None):
        p.error("--overwrite-on-get and --overwrite-body go together")
    if args.overwrite_target and not args.overwrite_on_get:
        p.error("--overwrite-target needs --overwrite-on-get")

    up = urllib.parse.urlsplit(args.upstream)
    if up.scheme != "http" or not up.hostname:
        p.error("--upstream must be http://HOST:PORT")
    up_host, up_port = up.hostname, up.port or 80
    up_prefix = up.path.rstrip("/")
    up_netloc = up.netloc
    methods = {m.strip().upper() for m in args.methods.split(",") if m.strip()}
    overwrite_path = "/" + args.overwrite_on_get.lstrip("/") if args.overwrite_on_get else None
    overwrite_body = (args.overwrite_body or "").encode("utf-8")
    overwrite_target = "/" + args.overwrite_target.lstrip("/") if args.overwrite_target else None

    def log(msg):
        if args.verbose:
            print(msg, file=sys.stderr, flush=True)

    def upstream_conn():
        return http.client.HTTPConnection(up_host, up_port, timeout=args.timeout)

    def do_overwrite(path, get_headers, query):
        # moto does not check signatures but does reject anonymous writes (403), so the
        # PUT borrows the reader's credentials: its Authorization (or, for a presigned
        # GET, a header built from X-Amz-Credential), X-Amz-Date and session token.
        auth = get_headers.get("Authorization")
        if auth is None:
            cred = urllib.parse.parse_qs(query).get("X-Amz-Credential")
            if cred:
                auth = f"AWS4-HMAC-SHA256 Credential={cred[0]}, SignedHeaders=host, Signature={'0' * 64}"
        conn = upstream_conn()
        try:
            conn.putrequest("PUT", up_prefix + path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", get_headers.get("Host") or up_netloc)
            if auth:
                conn.putheader("Authorization", auth)
            for h in ("X-Amz-Date", "X-Amz-Security-Token"):
                if get_headers.get(h):
                    conn.putheader(h, get_headers[h])
            conn.putheader("x-amz-content-sha256", hashlib.sha256(overwrite_body).hexdigest())
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(len(overwrite_body)))
            conn.endheaders(overwrite_body)
            resp = conn.getresponse()
            resp.read()
            ok = 200 <= resp.status < 300
            if not ok:
                print(f"s3_fault_proxy: overwrite PUT {path} got HTTP {resp.status}", file=sys.stderr, flush=True)
            return ok
        except (OSError, http.client.HTTPException) as e:
            print(f"s3_fault_proxy: overwrite PUT {path} failed: {e!r}", file=sys.stderr, flush=True)
            return False
        finally:
            conn.close()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "s3_fault_proxy"

        def log_message(self, fmt, *a):
            log(fmt % a)

        # ---- request body -------------------------------------------------------

        def body_chunks(self):
            """Yields the request body in pieces (de-chunked if chunked)."""
            te = self.headers.get("Transfer-Encoding", "")
            if "chunked" in te.lower():
                while True:
                    line = self.rfile.readline(65537)
                    if not line:
                        raise ConnectionError("client closed in chunked body")
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass  # trailers: dropped
                        return
                    while size:
                        piece = self.rfile.read(min(size, CHUNK))
                        if not piece:
                            raise ConnectionError("client closed in chunked body")
                        size -= len(piece)
                        yield piece
                    self.rfile.readline(65537)  # CRLF after the chunk data
            else:
                left = int(self.headers.get("Content-Length") or 0)
                while left > 0:
                    piece = self.rfile.read(min(left, CHUNK))
                    if not piece:
                        raise ConnectionError("client closed in body")
                    left -= len(piece)
                    yield piece

        def drain_body(self):
            for _ in self.body_chunks():
                pass

        # ---- faults -------------------------------------------------------------

        def reset(self):
            """Aborts the client connection with a RST (client sees ECONNRESET)."""
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            try:
                self.rfile.close()  # the makefile() reference would keep the fd open
            except OSError:
                pass
            try:
                self.connection.close()
            except OSError:
                pass

        def slowdown(self):
            self.drain_body()
            request_id = os.urandom(8).hex().upper()
            body = (
                '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                "<Message>Please reduce your request rate.</Message>"
                f"<RequestId>{request_id}</RequestId></Error>"
            ).encode()
            self.send_response_only(503, "Slow Down")
            self.send_header("Date", self.date_time_string())
            self.send_header("x-amz-request-id", request_id)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        # ---- forwarding ---------------------------------------------------------

        def target(self):
            path = self.path
            if "://" in path.split("?", 1)[0]:  # absolute-form request-target
                s = urllib.parse.urlsplit(path)
                path = s.path + ("?" + s.query if s.query else "")
            return path

        def send_upstream(self, conn, path):
            """Sends the request to the upstream; returns the response."""
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            spool = None
            if chunked:
                spool = tempfile.SpooledTemporaryFile(max_size=SPOOL)
                for piece in self.body_chunks():
                    spool.write(piece)
                length = spool.tell()
                spool.seek(0)
            conn.putrequest(self.command, up_prefix + path, skip_host=True, skip_accept_encoding=True)
            has_host = False
            for k, v in self.headers.items():
                lk = k.lower()
                if lk in HOP_BY_HOP or (chunked and lk == "content-length"):
                    continue
                if args.ignore_range and self.command == "GET" and lk == "range":
                    continue
                has_host |= lk == "host"
                conn.putheader(k, v)
            if not has_host:
                conn.putheader("Host", up_netloc)
            if chunked:
                conn.putheader("Content-Length", str(length))
            conn.endheaders()
            if chunked:
                with spool:
                    while True:
                        piece = spool.read(CHUNK)
                        if not piece:
                            break
                        conn.send(piece)
            else:
                for piece in self.body_chunks():
                    conn.send(piece)
            return conn.getresponse()

        def relay(self, resp, reset_after_half, stall=False):
            """Relays resp to the client; optionally resets halfway through the body, or
            stalls there for --stall-seconds."""
            no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
            length = resp.getheader("Content-Length")
            length = int(length) if length is not None and length.strip().isdigit() else None
            if reset_after_half:
                if no_body:
                    self.reset()
                    return
                if length is None:  # unknown size: buffer it to find the half
                    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL)
                    while True:
                        piece = resp.read(CHUNK)
                        if not piece:
                            break
                        spool.write(piece)
                    length = spool.tell()
                    spool.seek(0)
                    source = spool
                else:
                    source = resp
                if length <= 1:
                    self.reset()
                    return
            chunk_out = not no_body and length is None
            if chunk_out and self.request_version == "HTTP/1.0":
                chunk_out = False
                self.close_connection = True
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                lk = k.lower()
                if lk in HOP_BY_HOP or (reset_after_half and lk == "content-length"):
                    continue
                self.send_header(k, v)
            if reset_after_half:
                self.send_header("Content-Length", str(length))
            if chunk_out:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if no_body:
                if stall:
                    time.sleep(args.stall_seconds)
                return
            if reset_after_half:
                left = length // 2
                while left > 0:
                    piece = source.read(min(left, CHUNK))
                    if not piece:
                        break
                    self.wfile.write(piece)
                    left -= len(piece)
                self.reset()
                return
            # A stall waits once, when about half the body is out (after the first piece
            # when the size is unknown; before any byte of a body of 0 or 1 bytes).
            stall_at = None
            if stall:
                stall_at = 1 if length is None else (length // 2 if length > 1 else 0)
                if stall_at == 0:
                    self.wfile.flush()
                    time.sleep(args.stall_seconds)
                    stall_at = None
            sent = 0
            while True:
                want = CHUNK if stall_at is None else max(1, min(CHUNK, stall_at - sent))
                piece = resp.read(want)
                if not piece:
                    break
                if chunk_out:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    self.wfile.write(piece)
                sent += len(piece)
                if stall_at is not None and sent >= stall_at:
                    self.wfile.flush()
                    time.sleep(args.stall_seconds)
                    stall_at = None
            if stall and stall_at is not None:  # body shorter than announced
                time.sleep(args.stall_seconds)
            if chunk_out:
                self.wfile.write(b"0\r\n\r\n")

        def proxy(self):
            global overwrite_claimed
            slow = rst = delay = stall = False
            if not methods or self.command in methods:
                with lock:
                    counts["seen"] += 1
                    n = counts["seen"]
                    if self.command == "GET":
                        counts["gets"] += 1
                    g = counts["gets"]
                    room = not args.max_faults or counts["slowdown"] + counts["reset"] < args.max_faults
                    if room and args.slowdown_every and n % args.slowdown_every == 0:
                        slow = True
                        counts["slowdown"] += 1
                    elif room and args.reset_every and n % args.reset_every == 0:
                        rst = True
                        counts["reset"] += 1
                    else:
                        if args.delay_every and n % args.delay_every == 0:
                            delay = True
                            counts["delayed"] += 1
                        if args.stall_every and self.command == "GET" and g % args.stall_every == 0:
                            stall = True
                            counts["stalled"] += 1
            self.started = False
            if args.verbose:
                scope = re.search(r"Credential=[^/]+/[0-9]+/([^/]+)/", self.headers.get("Authorization", ""))
                log(
                    f"{self.command} {self.path} region={scope.group(1) if scope else '-'}"
                    + (" -> SlowDown" if slow else " -> reset" if rst else "")
                    + (" -> delay" if delay else "")
                    + (" -> stall" if stall else "")
                )
            try:
                if slow:
                    self.started = True
                    self.slowdown()
                    return
                if rst and self.command != "GET":
                    self.drain_body()
                    self.reset()
                    return
                if delay:
                    time.sleep(args.delay_seconds)
                path = self.target()
                conn = upstream_conn()
                try:
                    resp = self.send_upstream(conn, path)
                    if (
                        overwrite_path
                        and self.command == "GET"
                        and 200 <= resp.status < 300
                        and urllib.parse.unquote(path.split("?", 1)[0]) == overwrite_path
                    ):
                        with lock:
                            mine = not overwrite_claimed
                            overwrite_claimed = True
                        written = overwrite_target or path.partition("?")[0]
                        if mine and do_overwrite(written, self.headers, path.partition("?")[2]):
                            with lock:
                                counts["overwritten"] += 1
                    self.started = True
                    self.relay(resp, rst, stall)
                finally:
                    conn.close()
            except Exception as e:  # upstream down or broken, client went away, ...
                self.close_connection = True
                if not self.started:  # nothing sent yet: try a 502 (fails quietly if the client is gone)
                    try:
                        self.bad_gateway(e)
                    except Exception:
                        pass
                if args.verbose:
                    traceback.print_exc()

        def bad_gateway(self, e):
            log(f"upstream error: {e!r}")
            body = f"s3_fault_proxy: upstream error: {e!r}\n".encode()
            self.send_response_only(502)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = proxy

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            if args.verbose:
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", args.port), Handler)

    def stop(*_):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except Stop:
        pass
    finally:
        with lock:
            line = "seen={seen} slowdown={slowdown} reset={reset} overwritten={overwritten}".format(**counts)
            if args.delay_every:
                line += " delayed={delayed}".format(**counts)
            if args.stall_every:
                line += " stalled={stalled}".format(**counts)
        print(line, file=sys.stderr, flush=True)
    server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
