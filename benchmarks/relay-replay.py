#!/usr/bin/env python3
"""Recorded-traffic backend and client for benchmarks/relay.sh (standard library only).

  relay-replay.py serve --model NAME --file A.jsonl [--file B.jsonl] [--gap-ms 1]
      An OpenAI-compatible backend that answers each request with a recorded response of
      /work/shared/data/traffic-*.jsonl: the request body carries "replay_key": "<file>#<i>"
      and gets row i's recorded status, content type and body bytes back. A streamed (SSE) body
      is written event by event (HTTP/1.1 chunked, TCP_NODELAY), `--gap-ms` between two events,
      so the tunnel sees one event at a time as from a real server. GET /v1/models lists NAME
      only. Prints `LISTEN port` once bound.

  relay-replay.py replay --url http://127.0.0.1:PORT --token T --model NAME --file A.jsonl
                         [--concurrency 8]
      Sends every row's recorded request (model replaced by NAME, "replay_key" added) to URL,
      `--concurrency` lanes (lane k: rows k, k+C, …), reads every body to the end and compares
      it with the recorded bytes. Prints one line:
      `REPLAY ok rows=N errors=E mismatched=M body_bytes=B request_bytes=Q seconds=S`.
"""
import argparse
import http.client
import http.server
import json
import os
import socketserver
import sys
import threading
import time


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def serve(args):
    rows = {}
    for path in args.file:
        name = os.path.basename(path)
        for i, row in enumerate(load(path)):
            rows[f"{name}#{i}"] = row
    models = json.dumps({"object": "list", "data": [{"id": args.model, "object": "model", "owned_by": "replay"}]}).encode()
    gap = args.gap_ms / 1000.0

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *a):
            pass

        def send_body(self, status, ctype, body):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.startswith("/v1/models"):
                self.send_body(200, "application/json", models)
            else:
                self.send_body(404, "application/json", b'{"error":{"message":"not found"}}')

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n)
            try:
                row = rows[json.loads(raw)["replay_key"]]
            except Exception:
                self.send_body(400, "application/json", b'{"error":{"message":"no such replay_key"}}')
                return
            body = row["response"].encode()
            if not row["content_type"].startswith("text/event-stream"):
                self.send_body(row["status"], row["content_type"], body)
                return
            self.send_response(row["status"])
            self.send_header("Content-Type", row["content_type"])
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            events = body.split(b"\n\n")
            for k, ev in enumerate(events):
                piece = ev + b"\n\n" if k < len(events) - 1 else ev
                if not piece:
                    continue
                if k and gap:
                    time.sleep(gap)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        request_queue_size = 128

    srv = Server(("127.0.0.1", args.port), Handler)
    print(f"LISTEN {srv.server_address[1]}", flush=True)
    srv.serve_forever()


def replay(args):
    rows = load(args.file)
    name = os.path.basename(args.file)
    host_port = args.url.split("://", 1)[1].rstrip("/")
    host, port = host_port.rsplit(":", 1)
    totals = {"errors": 0, "mismatched": 0, "body_bytes": 0, "request_bytes": 0}
    lock = threading.Lock()
    first_error = []

    def lane(k):
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        for i in range(k, len(rows), args.concurrency):
            row = rows[i]
            req = dict(row["request"])
            req["model"] = args.model
            req["replay_key"] = f"{name}#{i}"
            data = json.dumps(req).encode()
            try:
                conn.request("POST", row["path"], body=data, headers={
                    "Authorization": f"Bearer {args.token}", "Content-Type": "application/json"})
                resp = conn.getresponse()
                got = resp.read()
                status = resp.status
            except Exception as e:  # count, reconnect, go on
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=120)
                with lock:
                    totals["errors"] += 1
                    if not first_error: first_error.append(f"row {i}: {e!r}")
                continue
            with lock:
                totals["request_bytes"] += len(data)
                totals["body_bytes"] += len(got)
                if status != row["status"]:
                    totals["errors"] += 1
                    if not first_error: first_error.append(f"row {i}: status {status}: {got[:200]!r}")
                elif got != row["response"].encode():
                    totals["mismatched"] += 1
                    if not first_error: first_error.append(f"row {i}: body differs ({len(got)} vs {len(row['response'].encode())} bytes)")
        conn.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=lane, args=(k,)) for k in range(args.concurrency)]
    for t in threads: t.start()
    for t in threads: t.join()
    secs = time.monotonic() - t0
    if first_error:
        print(f"first problem: {first_error[0]}", file=sys.stderr)
    print(f"REPLAY ok rows={len(rows)} errors={totals['errors']} mismatched={totals['mismatched']} "
          f"body_bytes={totals['body_bytes']} request_bytes={totals['request_bytes']} seconds={secs:.3f}", flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--model", required=True)
    s.add_argument("--file", action="append", required=True)
    s.add_argument("--gap-ms", type=float, default=1.0)
    s.add_argument("--port", type=int, default=0)
    r = sub.add_parser("replay")
    r.add_argument("--url", required=True)
    r.add_argument("--token", required=True)
    r.add_argument("--model", required=True)
    r.add_argument("--file", required=True)
    r.add_argument("--concurrency", type=int, default=8)
    a = p.parse_args()
    serve(a) if a.cmd == "serve" else replay(a)


if __name__ == "__main__":
    main()
