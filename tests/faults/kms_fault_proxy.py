#!/usr/bin/env python3
"""A loopback HTTP proxy in front of a KMS endpoint (moto) that injects KMS errors.

Answers a share of the calls to chosen KMS actions with a real KMS error response
(HTTP 400, awsJson1_1 body with __type and x-amzn-ErrorType header) and forwards the
rest unchanged. Standard library only.

    kms_fault_proxy.py --upstream http://127.0.0.1:PORT --error ThrottlingException \
        --every 3 [--actions GenerateDataKey,Decrypt]

--every N injects on every Nth matching call (1 = always, 0 = never). Prints
"PORT <n>" once listening; stops on SIGTERM. Counts are printed to stderr on exit, as
one JSON object: {"seen": n, "injected": n}, plus the keys of the options below when
they are given.

Further options (off by default; the counts above are unchanged without them):

--burst-every N --burst-length K
                throttling bursts: among the matching calls, numbered 1, 2, 3, ...,
                calls 1..K, N+1..N+K, 2N+1..2N+K, ... get the --error response too
                (K consecutive calls every N). Counted in "injected" and in "burst".
--delay-every N --delay-seconds S
                every Nth matching call that gets no error waits S seconds (float)
                before it is forwarded: a slow KMS. Counted in "delayed".
"""
import argparse
import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
counts = {"seen": 0, "injected": 0}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--upstream", required=True)
    p.add_argument("--error", default="ThrottlingException")
    p.add_argument("--message", default="Rate exceeded")
    p.add_argument("--every", type=int, default=2)
    p.add_argument("--actions", default="")
    p.add_argument("--burst-every", type=int, default=0, metavar="N")
    p.add_argument("--burst-length", type=int, default=0, metavar="K")
    p.add_argument("--delay-every", type=int, default=0, metavar="N")
    p.add_argument("--delay-seconds", type=float, default=0.0, metavar="S")
    args = p.parse_args()
    if args.every < 0 or args.burst_every < 0 or args.burst_length < 0 or args.delay_every < 0:
        p.error("--every, --burst-every, --burst-length and --delay-every must be >= 0")
    if bool(args.burst_every) != bool(args.burst_length):
        p.error("--burst-every and --burst-length go together")
    if bool(args.delay_every) != (args.delay_seconds > 0):
        p.error("--delay-every and --delay-seconds go together")
    if args.burst_every:
        counts["burst"] = 0
    if args.delay_every:
        counts["delayed"] = 0
    actions = {a for a in args.actions.split(",") if a}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            target = self.headers.get("X-Amz-Target", "")
            action = target.rsplit(".", 1)[-1]
            inject = delay = False
            if not actions or action in actions:
                with lock:
                    counts["seen"] += 1
                    n = counts["seen"]
                    inject = args.every > 0 and n % args.every == 0
                    if not inject and args.burst_every and (n - 1) % args.burst_every < args.burst_length:
                        inject = True
                        counts["burst"] += 1
                    counts["injected"] += inject
                    if not inject and args.delay_every and n % args.delay_every == 0:
                        delay = True
                        counts["delayed"] += 1
            if delay:
                time.sleep(args.delay_seconds)
            if inject:
                payload = json.dumps({"__type": args.error, "message": args.message}).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("x-amzn-ErrorType", args.error)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
            request = urllib.request.Request(args.upstream + self.path, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30) as r:
                    status, reply, reply_headers = r.status, r.read(), r.headers.items()
            except urllib.error.HTTPError as e:
                status, reply, reply_headers = e.code, e.read(), e.headers.items()
            self.send_response(status)
            for k, v in reply_headers:
                if k.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True

    def stop(*_):
        print(json.dumps(counts), file=sys.stderr, flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
