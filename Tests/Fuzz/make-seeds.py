#!/usr/bin/env python3
"""Writes the seed corpora in Tests/Fuzz/Corpus/<target>/ (run from anywhere; deterministic).

Sources: the Go smux vectors (Tests/TokiMuxTests/Vectors/smux-vectors.json), the control and
data lines of the tunnel protocol (../shared/spec/tunnel-protocol.md, docs/protocol.md) and
real chat bodies (../shared/data/traffic-chat.jsonl, when present). Each seed is laid out the
way its target reads its input (see the header comment of each target's main.swift); the
helpers below mirror FuzzInput (Sources/FuzzSupport/FuzzSupport.swift).
"""
import base64
import hashlib
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(HERE, "Corpus")
SHARED = os.path.join(ROOT, "..", "shared")


# FuzzInput.int(in: lo...hi): one byte when the range is narrower than 256, two below 65536,
# else four (little-endian).
def choose(lo, hi, value):
    assert lo <= value <= hi
    raw = value - lo
    width = hi - lo
    return bytes([raw]) if width < 256 else struct.pack("<H", raw) if width < 65536 else struct.pack("<I", raw)


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v)


def split_plan(sizes):
    return bytes([len(sizes)] + [s - 1 for s in sizes])


class Writer:
    def __init__(self, target):
        self.dir = os.path.join(CORPUS, target)
        os.makedirs(self.dir, exist_ok=True)
        # Rewrites its own seeds; keeps the minimised reproducers of findings ("regression-*").
        for name in os.listdir(self.dir):
            if not name.startswith("regression-"):
                os.remove(os.path.join(self.dir, name))

    def add(self, name, data):
        if isinstance(data, str):
            data = data.encode()
        digest = hashlib.sha1(data).hexdigest()[:8]
        with open(os.path.join(self.dir, f"{name}-{digest}"), "wb") as f:
            f.write(data)


def smux_header(ver, cmd, length, sid):
    return struct.pack("<BBHI", ver, cmd, length, sid)


SYN, FIN, PSH, NOP, UPD = range(5)


def vectors():
    with open(os.path.join(ROOT, "Tests", "TokiMuxTests", "Vectors", "smux-vectors.json")) as f:
        for v in json.load(f):
            if "frames_hex" in v:
                yield v["name"], b"".join(bytes.fromhex(h.replace(" ", "")) for h in v["frames_hex"])


def smux_frame_seeds():
    w = Writer("FuzzSmuxFrame")
    plans = [[], [1], [3, 5, 8], [8, 1], [13]]
    for i, (name, stream) in enumerate(vectors()):
        version = stream[0] if stream else 1
        cfg = bytes([1 if version == 2 else 0])
        w.add(name, cfg + u16(0) + split_plan(plans[i % len(plans)]) + stream)
    # A longer mixed v2 sequence, and a PSH over a small maxPayload.
    mixed = (smux_header(2, SYN, 0, 3) + smux_header(2, PSH, 5, 3) + b"hello"
             + smux_header(2, UPD, 8, 3) + u32(5) + u32(65536) + smux_header(2, NOP, 0, 0)
             + smux_header(2, FIN, 0, 3))
    w.add("v2-mixed", b"\x01" + u16(0) + split_plan([2, 9]) + mixed)
    w.add("v1-psh-over-limit", b"\x00" + u16(4) + split_plan([]) + smux_header(1, PSH, 5, 3) + b"hello")


class SessionScript:
    """Builds a FuzzSmuxSession input: configuration, then operations."""

    def __init__(self, version=1, max_receive_buffer=4096, max_stream_buffer=1024, accept_backlog=4,
                 max_frame_size=1024, max_receive_frame_size=65535, batch_extra=0, max_outbound=8192,
                 initial_peer_window=262144, client=False, max_streams=8):
        self.version = version
        self.max_receive_frame_size = max_receive_frame_size
        self.data = bytearray()
        self.data += bytes([1 if version == 2 else 0])
        self.data += choose(1, 65536, max_receive_buffer)
        self.data += choose(1, max_receive_buffer, min(max_stream_buffer, max_receive_buffer))
        self.data += choose(1, 8, accept_backlog)
        self.data += choose(1, 65535, max_frame_size)
        self.data += choose(1, 65535, max_receive_frame_size)
        self.data += choose(0, 255, batch_extra)
        self.data += choose(1, 65536, max_outbound)
        self.data += u32(initial_peer_window)
        self.data += bytes([1 if client else 0])
        self.data += choose(1, 16, max_streams)

    def raw(self, message):
        self.data += bytes([0]) + choose(0, 512, len(message)) + message
        return self

    def frame(self, cmd, sid, fill=0, length=0, consumed=0, window=0):
        self.data += bytes([1, cmd, sid])
        if cmd == PSH:
            self.data += bytes([fill]) + choose(0, min(4096, self.max_receive_frame_size), length)
        elif cmd == UPD:
            self.data += u32(consumed) + u32(window)
        return self

    def op(self, code, *args):
        self.data += bytes([code]) + b"".join(args)
        return self

    def accept(self):
        return self.op(3)

    def read(self, pick=0):
        return self.op(4, bytes([pick]))

    def write(self, pick, count):
        return self.op(6, bytes([pick]), choose(0, 70000, count))

    def close_write(self, pick=0):
        return self.op(7, bytes([pick]))

    def close(self, pick=0):
        return self.op(8, bytes([pick]))

    def open(self):
        return self.op(9)

    def take(self):
        return self.op(10)

    def keepalive(self):
        return self.op(11)


def smux_session_seeds():
    w = Writer("FuzzSmuxSession")
    # The Go vectors' frames as peer messages (version by the first byte).
    for name, stream in vectors():
        s = SessionScript(version=2 if stream and stream[0] == 2 else 1)
        s.raw(stream).accept().accept().read().read().read().write(0, 10).take()
        w.add("vector-" + name, bytes(s.data))
    for version in (1, 2):
        v = f"v{version}"
        # A request/response exchange on a peer-opened stream.
        s = SessionScript(version=version)
        s.frame(SYN, 3).frame(PSH, 3, fill=0x61, length=300).frame(FIN, 3)
        s.accept().read().read().read().write(0, 2000).close_write().take().take().close().take()
        w.add(f"{v}-exchange", bytes(s.data))
        # The receive budget filling up, then drained by reads.
        s = SessionScript(version=version, max_receive_buffer=1000)
        s.frame(SYN, 3).accept()
        for _ in range(4):
            s.frame(PSH, 3, fill=0x42, length=400)
        s.read().read().read().frame(PSH, 3, fill=0x43, length=400).read().read().take()
        w.add(f"{v}-budget", bytes(s.data))
        # Streams this side opens, writes larger than the queue, keepalive.
        s = SessionScript(version=version, client=version == 1, max_outbound=3000, max_frame_size=700)
        s.open().open().write(0, 5000).write(1, 100).take().take().write(0, 5000).keepalive().take().close(1).take()
        w.add(f"{v}-open-write", bytes(s.data))
        # Accept backlog and the stream limit.
        s = SessionScript(version=version, accept_backlog=2, max_streams=3)
        for sid in (3, 5, 7, 9):
            s.frame(SYN, sid)
        s.accept().accept().accept().frame(SYN, 11).accept()
        w.add(f"{v}-backlog", bytes(s.data))
    # Version 2 windows: initial window, UPD that releases, UPD that shrinks.
    s = SessionScript(version=2, initial_peer_window=3000, max_outbound=65536, max_frame_size=1000)
    s.open().write(0, 5000).take().take().frame(UPD, 2, consumed=3000, window=4000).write(0, 5000).take()
    s.frame(UPD, 2, consumed=1000, window=100).write(0, 100).take()
    w.add("v2-windows", bytes(s.data))
    # Reads that emit UPDs.
    s = SessionScript(version=2, max_stream_buffer=512)
    s.frame(SYN, 3).accept().frame(PSH, 3, fill=1, length=100).read().take()
    s.frame(PSH, 3, fill=2, length=300).frame(PSH, 3, fill=3, length=300).read().read().take()
    w.add("v2-upd-on-read", bytes(s.data))
    # The peer opening ids of this side's parity, and re-opening a closed id.
    s = SessionScript(version=1, client=True)
    s.frame(SYN, 3).frame(PSH, 3, fill=7, length=50).open().accept().read().take()
    w.add("v1-peer-uses-our-parity", bytes(s.data))
    s = SessionScript(version=1)
    s.frame(SYN, 3).accept().write(0, 10).close().frame(SYN, 3).accept().read().take()
    w.add("v1-reopen-closed-id", bytes(s.data))


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


LZ4_LIMITS = [0, 1, 100, 4096, 65536, 65537, 70000, 131072, 300000]


def lz4_plain_literal(data, limit):
    return b"\x01" + choose(0, min(limit, 4096), len(data)) + data


def lz4_plain_run(n, period, seed, limit):
    return b"\x00" + choose(0, min(limit, 70000), n) + choose(1, 16, period) + bytes([seed])


def lz4_link_seeds():
    w = Writer("FuzzLZ4Link")
    sse = b'data: {"choices":[{"delta":{"content":"Bread"},"index":0}],"object":"chat.completion.chunk"}\n\n'
    for li in (3, 4, 7, 8):
        limit = LZ4_LIMITS[li]
        mode = bytes([0, li])
        # Stored message, then compressed messages made against the history.
        s = mode + b"\x01" + b"\x02" + lz4_plain_literal(sse, 70000)
        s += b"\x02\x00" + lz4_plain_literal(sse, 70000) + choose(1, 8, 1) + b"\x03"
        s += b"\x03\x00" + lz4_plain_literal(sse * 3, 70000) + choose(1, 8, 1) + b"\x03"
        w.add(f"hostile-history-{limit}", s)
        # Raw messages: flags only, a compressed header with a bad size, unknown flags, RESET.
        raw = mode
        for message in (b"", b"\x02", b"\x01\x80\x80\x80\x80\x10", b"\x01\x00", b"\x04abc", b"\x00plain",
                        b"\x03" + varint(5) + b"\x50hello"):
            raw += b"\x00" + choose(0, 4096, len(message)) + message
        w.add(f"hostile-raw-{limit}", raw)
        # A large run crossing the 64 KiB history and the window, damaged and wrong-size blocks.
        s = mode + b"\x01\x00" + lz4_plain_run(69000, 7, 3, 70000)
        s += b"\x02\x00" + lz4_plain_run(70000, 13, 9, 70000) + choose(1, 8, 2) + b"\x01" + u16(40) + b"\x55"
        s += b"\x02\x01" + lz4_plain_literal(sse, 70000) + choose(1, 8, 1) + b"\x00" + choose(-3, 3, 2)
        w.add(f"hostile-large-{limit}", s)
        # Round trip: batches, copies, releases and RESET messages.
        rt = bytes([1, li]) + choose(1, 16, 1)
        rt += b"\x03" + lz4_plain_literal(sse, limit) + b"\x03" + lz4_plain_literal(sse * 2, limit)
        rt += b"\x02" + lz4_plain_literal(sse, limit) + lz4_plain_literal(sse[:40], limit)
        rt += b"\x00\x01" + b"\x03" + lz4_plain_literal(sse, limit) + b"\x01"
        rt += b"\x04" + lz4_plain_run(min(limit, 69000), 5, 1, limit) + b"\x05" + lz4_plain_run(min(limit, 30000), 3, 2, limit)
        w.add(f"roundtrip-{limit}", rt)


def control_lines():
    uuid = "5b0c2f9e-8d3a-4c1e-9f6b-2a7d1e3c4b5a"
    hw = {"hostname": "gpu-01", "goos": "linux", "goarch": "amd64", "num_cpu": 32,
          "default_backend_type": "openai", "control_plane_backend": "openai",
          "model_target_summaries": {"m-a": {"url": "http://127.0.0.1:11434", "mapped_name": "llama3.2",
                                             "backend_type": "ollama", "has_api_keys": True, "header_count": 1}},
          "load": 0.75, "gpus": [{"name": "L4", "memory_mib": 23034}], "note": None}
    ack = {"message": "register_ok", "namespace": "ns1", "worker_id": 12, "channel_id": 345}
    return {
        "register": {"type": "register", "request_id": f"ns1:register:{uuid}",
                     "register": {"namespace": "ns1", "node_name": "gpu-01", "group": "default",
                                  "models": ["m-a", "m-b"], "hardware_info": hw, "backend_type": "openai"}},
        "ack-register": {"type": "ack", "request_id": f"ns1:register:{uuid}", "ack": ack},
        "models-sync": {"type": "models_sync", "request_id": f"ns1:models:{uuid}",
                        "models_sync": {"group": "default", "models": ["m-a"], "hardware_info": hw, "backend_type": "mixed"}},
        "heartbeat": {"type": "heartbeat", "request_id": f"ns1:heartbeat:{uuid}",
                      "heartbeat": {"node_name": "gpu-01", "hardware_info": hw, "current_models": ["m-a", "m-b"]}},
        "heartbeat-status": {"type": "heartbeat", "request_id": "h1", "heartbeat": {"status": 2}},
        "ack-heartbeat": {"type": "ack", "request_id": f"ns1:heartbeat:{uuid}", "ack": {"message": "heartbeat_ok"}},
        "cancel": {"type": "cancel_request", "request_id": "ns1:cancel:1732700000000000000",
                   "cancel_request": {"target_request_id": f"ns1:relay:{uuid}", "reason": "client_disconnected"}},
        "ack-cancel": {"type": "ack", "request_id": "ns1:cancel:1732700000000000000", "ack": {"message": "cancel_noop", "namespace": "ns1"}},
        "auth": {"type": "auth", "request_id": f"ns1:auth:{uuid}", "auth": {"token": "sk-abc"}},
        "ack-bare": {"type": "ack"},
        "error": {"type": "error", "request_id": f"ns1:register:{uuid}",
                  "error": {"code": "namespace_not_owned", "message": "namespace ns1 belongs to another user <&>"}},
    }


def control_line_seeds():
    w = Writer("FuzzControlLine")
    for name, msg in control_lines().items():
        w.add(name, json.dumps(msg, separators=(",", ":")))
    w.add("spaced", ' { "type" : "heartbeat" , "heartbeat" : { "node_name" : "n\\u2028" } }\r\n')
    w.add("unicode", json.dumps({"type": "register", "register": {"namespace": "café", "models": ["模型", "\U0001F600"]}},
                                ensure_ascii=False))
    w.add("numbers", '{"type":"register","register":{"namespace":"n","hardware_info":{"a":1e300,"b":-0.5,"c":9007199254740993,"d":1.0,"e":[true,false,null]}}}')


def data_line_seeds():
    w = Writer("FuzzDataLine")
    body = base64.b64encode(b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}').decode()
    w.add("request", json.dumps({"request_id": "ns1:relay:5b0c", "route_kind": "chat_completions", "method": "POST",
                                 "path": "/v1/chat/completions", "model": "m",
                                 "headers": {"Accept": "text/event-stream", "Content-Type": "application/json"},
                                 "is_stream": True, "body": body}, separators=(",", ":")))
    w.add("request-byte-array", '{"request_id":"r","route_kind":"embeddings","method":"POST","path":"/v1/embeddings","body":[123,125]}')
    w.add("request-get", '{"request_id":"r","route_kind":"videos_get","method":"GET","path":"/v1/videos/v1"}')
    w.add("head", '{"request_id":"ns1:relay:5b0c","status_code":200,"headers":{"Content-Type":"text/event-stream","X-Request-Id":"req-1"}}')
    w.add("head-no-headers", '{"request_id":"r","status_code":502}')
    chunk = base64.b64encode(b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n').decode()
    w.add("body-chunk", '{"request_id":"ns1:relay:5b0c","body_chunk":"%s"}' % chunk)
    w.add("body-chunk-unpadded", '{"request_id":"r","body_chunk":"aGk"}')
    w.add("body-chunk-crlf", '{"request_id":"r","body_chunk":"aGVs\\r\\nbG8="}')
    w.add("eof", '{"request_id":"ns1:relay:5b0c","eof":true}')
    w.add("eof-spaced", ' {"request_id": "r", "eof": true}\n')
    w.add("error", '{"request_id":"ns1:relay:5b0c","error":{"code":"read_local_response_failed","message":"unexpected EOF"}}')
    w.add("error-no-code", '{"request_id":"r","error":{"message":"boom"}}')
    w.add("mixed", '{"request_id":"r","status_code":200,"body_chunk":"AA==","eof":false}')


def line_framer_seeds():
    w = Writer("FuzzLineFramer")
    lines = [json.dumps(m, separators=(",", ":")) for m in control_lines().values()]
    stream = "\n".join(lines[:4]) + "\n"
    w.add("control-lines", choose(1, 300, 300) + split_plan([7, 64, 3]) + stream.encode())
    w.add("crlf-blank", choose(1, 300, 40) + split_plan([5]) + b"a\r\n\r\n  \n\t{\"x\":1} \n\nlast")
    w.add("too-long", choose(1, 300, 10) + split_plan([4, 4]) + b"short\n" + b"x" * 30 + b"\nnever")
    w.add("long-tail", choose(1, 300, 16) + split_plan([]) + b"ok\n" + b"y" * 20)
    w.add("exact-limit", choose(1, 300, 8) + split_plan([1]) + b"12345678\n 1234567 \n123456789")


def multipart(boundary, model):
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\nRIFF....WAVE\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n"
            f"--{boundary}--\r\n")


def body_inspector_seeds():
    w = Writer("FuzzBodyInspector")
    path = os.path.join(SHARED, "data", "traffic-chat.jsonl")
    bodies = []
    if os.path.exists(path):
        with open(path) as f:
            for i, line in enumerate(f):
                request = json.loads(line)["request"]
                if i % 40 == 0 or (request.get("stream_options") and len(bodies) < 8):
                    bodies.append(json.dumps(request))
                if len(bodies) >= 10:
                    break
    for i, body in enumerate(bodies):
        w.add(f"chat-{i}", b"\x00" + body.encode())
    w.add("embeddings", b"\x00" + b'{"model":"nomic-embed","input":["a","b"]}')
    w.add("stream-not-bool", b"\x00" + b'{"model":" m ","stream":"yes"}')
    w.add("blank-model", b"\x00" + b'{"model":" \\t"}')
    w.add("not-object", b"\x00" + b'["model"]')
    w.add("multipart", b"\x01" + b"multipart/form-data; boundary=XyZ\x00" + multipart("XyZ", "whisper-1").encode())
    w.add("multipart-quoted", b"\x01" + b'multipart/form-data; charset=utf-8; Boundary="a b"\x00' + multipart("a b", " tts-1 \r\n").encode())
    w.add("multipart-no-model", b"\x01" + b"multipart/form-data; boundary=q\x00--q\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nhi\r\n--q--")


if __name__ == "__main__":
    smux_frame_seeds()
    smux_session_seeds()
    lz4_link_seeds()
    control_line_seeds()
    data_line_seeds()
    line_framer_seeds()
    body_inspector_seeds()
    for target in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, target))
        size = sum(os.path.getsize(os.path.join(CORPUS, target, f)) for f in files)
        print(f"{target}: {len(files)} seeds, {size} bytes")
