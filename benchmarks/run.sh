#!/usr/bin/env bash
# Tunnel throughput and chat-replay wire-size benchmark: ONE command, writes docs/benchmarks.md.
#
#   benchmarks/run.sh            # from anywhere; RUNS=3 (default) repetitions of every case
#
# Builds toki-bench (release, scratch path .build-bench) and the Go reference peer, then runs,
# interleaved so that machine noise hits every contender alike:
#   - Swift↔Swift (toki-bench tunnel: Hummingbird listener + NIO client over loopback WebSocket),
#     smux v1 plain, v1 LZ4, v2 plain;
#   - Go↔Go (gopeer bench-pair: xtaci/smux 1.5.16 + gorilla/websocket), smux v1 and v2;
#   - raw loopback TCP (gopeer tcp-pair: one TCP connection per stream);
# each with 1×512 MiB, 16×32 MiB and 256×2 MiB in sink mode (TCP: 8× the bytes, it is faster),
# then the chat replay (toki-bench chat-replay) with and without LZ4.
# Environment: RUNS (default 5), OUT (default docs/benchmarks.md), SKIP_BUILD=1, CASES (e.g. "1:268435456 16:16777216").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNS="${RUNS:-5}"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"
SCRATCH="$ROOT/.build-bench"
CHAT="${CHAT:-$ROOT/../shared/data/traffic-chat.jsonl}"
CASES="${CASES:-1:536870912 16:33554432 256:2097152}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/toki-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "== building toki-bench (release) and gopeer" >&2
    swift build -c release --scratch-path "$SCRATCH" --product toki-bench >&2
fi
BIN="$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)/toki-bench"
GOPEER="$SCRATCH/gopeer"
if [[ "${SKIP_BUILD:-0}" != 1 || ! -x "$GOPEER" ]]; then
    bash "$ROOT/Tests/Interop/build-gopeer.sh" "$GOPEER" >&2
fi

RESULTS="$WORK/results.tsv"   # contender  streams  bytes  run  mbps|fail
: >"$RESULTS"

# run CONTENDER STREAMS BYTES RUN -- command...
run() {
    local who="$1" streams="$2" bytes="$3" rep="$4"
    shift 5
    local line
    line="$("$@" 2>"$WORK/last.err" | grep '^RESULT' | tail -1 || true)"
    local mbps
    mbps="$(sed -n 's/.*RESULT ok .*mbps=\([0-9.]*\).*/\1/p' <<<"$line")"
    [[ -n "$mbps" ]] || { mbps=fail; echo "   $who streams=$streams FAILED: $line $(head -c 300 "$WORK/last.err")" >&2; }
    printf '%s\t%s\t%s\t%s\t%s\n' "$who" "$streams" "$bytes" "$rep" "$mbps" >>"$RESULTS"
    printf '   %-16s streams=%-4s run %s: %s Mbit/s\n' "$who" "$streams" "$rep" "$mbps" >&2
}

START=$(date +%s)
echo "== throughput (sink mode, $RUNS runs per case, interleaved)" >&2
for rep in $(seq 1 "$RUNS"); do
    for case in $CASES; do
        n="${case%%:*}"
        b="${case##*:}"
        run swift-v1       "$n" "$b" "$rep" -- "$BIN" tunnel --streams "$n" --bytes "$b" --version 1
        run go-v1          "$n" "$b" "$rep" -- "$GOPEER" bench-pair --smux-version 1 --streams "$n" --bytes "$b" --mode sink
        run swift-v1-lz4   "$n" "$b" "$rep" -- "$BIN" tunnel --streams "$n" --bytes "$b" --version 1 --lz4
        run swift-v2       "$n" "$b" "$rep" -- "$BIN" tunnel --streams "$n" --bytes "$b" --version 2
        run go-v2          "$n" "$b" "$rep" -- "$GOPEER" bench-pair --smux-version 2 --streams "$n" --bytes "$b" --mode sink
        run tcp            "$n" "$((b * 8))" "$rep" -- "$GOPEER" tcp-pair --streams "$n" --bytes "$((b * 8))" --mode sink
    done
done

echo "== chat replay ($CHAT, 8 streams)" >&2
CHATRES="$WORK/chat.txt"
: >"$CHATRES"
for rep in $(seq 1 "$RUNS"); do
    for framing in lines raw; do
        for lz in "" "--lz4"; do
            line="$("$BIN" chat-replay --file "$CHAT" --streams 8 --framing "$framing" $lz 2>&1 | grep '^RESULT' | tail -1 || true)"
            echo "$line" >>"$CHATRES"
            echo "   $line" >&2
        done
    done
done
END=$(date +%s)

CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
MEM="$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -qv '^??' && echo ' (with uncommitted changes)' || true)"
SWIFTV="$(swift --version 2>/dev/null | head -1)"
GOV="$(go version 2>/dev/null || echo unknown)"

mkdir -p "$(dirname "$OUT")"
python3 - "$RESULTS" "$CHATRES" "$OUT" <<PY
import statistics, sys, re, collections
results, chatres, out = sys.argv[1:4]
data = collections.defaultdict(list)
fails = collections.Counter()
for line in open(results):
    who, streams, size, rep, mbps = line.rstrip("\n").split("\t")
    if mbps == "fail":
        fails[(who, int(streams))] += 1
    else:
        data[(who, int(streams))].append(float(mbps) / 8)  # MB/s (10^6 bytes per second)
cases = [(int(c.split(":")[0]), int(c.split(":")[1])) for c in "$CASES".split()]
who_all = ["swift-v1", "swift-v1-lz4", "go-v1", "swift-v2", "go-v2", "tcp"]
def med(k): return statistics.median(data[k]) if data[k] else None
def best(k): return max(data[k]) if data[k] else None
def cell(k):
    if not data[k]: return "fail"
    s = f"{med(k):,.0f} ({best(k):,.0f})"
    if fails[k]: s += f" [{fails[k]} failed]"
    return s
def ratio(a, b, f):
    x, y = f(a), f(b)
    return f"{x / y:.2f}×" if x and y else "–"
def mib(b): return f"{b // 1048576} MiB" if b >= 1048576 else f"{b} B"

L = []
L.append("# Tunnel benchmarks\n")
L.append("Generated by \`benchmarks/run.sh\`; do not edit by hand.\n")
L.append("| | |\n|---|---|")
L.append(f"| date | $(date -u '+%Y-%m-%d %H:%M UTC') |")
L.append(f"| commit | $COMMIT$DIRTY |")
L.append(f"| machine | $(nproc) CPUs ($CPU), $MEM, $(uname -sr) |")
L.append(f"| toolchains | $SWIFTV; $GOV |")
L.append(f"| runs | $RUNS per case, contenders interleaved; shared machine (other builds running), so expect noise |")
L.append(f"| duration | $((END - START)) s of benchmarking |")
L.append("")
L.append("## Loopback throughput (sink mode)\n")
L.append("MB/s of payload in one direction (10⁶ bytes/s), **median (best)** of the runs. "
         "Swift = \`toki-bench tunnel\` (Hummingbird WebSocket listener + NIO WebSocket client, toki's "
         "smux, one process); Go = \`gopeer bench-pair\` (gorilla/websocket + xtaci/smux 1.5.16, one "
         "process); TCP = \`gopeer tcp-pair\` (one loopback TCP connection per stream, no WebSocket, no "
         "smux, 8× the bytes so that a run lasts long enough). Ratios are median/median, then best/best. "
         "Caveat for the LZ4 column: the probe payload repeats every 256 bytes, so LZ4 squeezes it ~250×; it "
         "measures the codec path, not what LZ4 does to real traffic (see the chat replay for that).\n")
L.append("| streams × bytes | Swift v1 | Swift v1 LZ4 | Go v1 | Swift v2 | Go v2 | raw TCP | Swift/Go v1 | Swift/Go v2 | Swift v1/TCP | Swift LZ4/Swift v1 |")
L.append("|---|---|---|---|---|---|---|---|---|---|---|")
for n, b in cases:
    k = lambda w: (w, n)
    L.append(f"| {n} × {mib(b)} | " + " | ".join(cell(k(w)) for w in who_all) + " | "
             + f"{ratio(k('swift-v1'), k('go-v1'), med)} / {ratio(k('swift-v1'), k('go-v1'), best)} | "
             + f"{ratio(k('swift-v2'), k('go-v2'), med)} / {ratio(k('swift-v2'), k('go-v2'), best)} | "
             + f"{ratio(k('swift-v1'), k('tcp'), med)} / {ratio(k('swift-v1'), k('tcp'), best)} | "
             + f"{ratio(k('swift-v1-lz4'), k('swift-v1'), med)} |")
L.append("")
L.append("Targets (issue): Swift↔Swift ≥ 1.2× Go↔Go, and ≥ 0.60× raw loopback TCP.\n")
for n, b in cases:
    sg = (med(("swift-v1", n)) or 0) / (med(("go-v1", n)) or 1)
    st = (med(("swift-v1", n)) or 0) / (med(("tcp", n)) or 1)
    L.append(f"- {n} stream(s): Swift/Go = {sg:.2f}× ({'met' if sg >= 1.2 else 'NOT met'}), "
             f"Swift/TCP = {st:.2f}× ({'met' if st >= 0.6 else 'NOT met'})")
L.append("")

# Chat replay
rows = collections.defaultdict(list)
for line in open(chatres):
    if not line.startswith("RESULT ok"): continue
    kv = dict(re.findall(r"(\w+)=([^ ]+)", line))
    rows[(kv["framing"], kv["lz4"])].append(kv)
L.append("## Chat replay: bytes on the wire (LZ4 on vs off)\n")
L.append("\`toki-bench chat-replay\`: the 240 recorded calls of \`traffic-chat.jsonl\` (10,561 SSE events, "
         "2.6 MB of bodies), one smux stream per call, 8 calls in flight, the worker waiting 1 ms between two "
         "events of a response. *lines* = what the worker sends: one TunnelResponse head line, one "
         "\`body_chunk\` line (base64) per SSE event, an \`eof\` line; *raw* = the SSE event bytes only. "
         "Wire bytes are counted per WebSocket message by a counting decorator on the session's "
         "\`MuxOutbound\` (TokiTunnel's \`TunnelMessageWriter\`, frame headers included), worker→hub direction. "
         "Median of the runs.\n")
L.append("| framing | raw body bytes | bytes written to streams | WS messages | wire, LZ4 off | wire, LZ4 on | LZ4 on / off | LZ4 wire / raw bodies |")
L.append("|---|---|---|---|---|---|---|---|")
chat_ok = {}
for framing in ("lines", "raw"):
    off, on = rows[(framing, "false")], rows[(framing, "true")]
    if not off or not on:
        L.append(f"| {framing} | fail | | | | | | |"); continue
    m = lambda rs, key: statistics.median(int(r[key]) for r in rs)
    wire_off, wire_on = m(off, "wire_bytes"), m(on, "wire_bytes")
    raw = int(on[0]["raw_bytes"])
    chat_ok[framing] = wire_on / wire_off
    L.append(f"| {framing} | {raw:,} | {int(on[0]['app_bytes']):,} | {m(on, 'messages'):,.0f} | {wire_off:,.0f} | {wire_on:,.0f} | "
             f"**{wire_on / wire_off:.3f}** (1/{wire_off / wire_on:.1f}) | {wire_on / raw:.3f} |")
L.append("")
for framing, r in chat_ok.items():
    L.append(f"- {framing}: LZ4 wire = 1/{1 / r:.1f} of the uncompressed wire bytes; target ≤ 1/8: {'met' if r <= 0.125 else 'NOT met'}")
L.append("")
L.append("## How to reproduce\n")
L.append("\`\`\`\nbenchmarks/run.sh                  # builds toki-bench (release, .build-bench) and gopeer, runs everything (~4-6 min)\n"
         "RUNS=5 benchmarks/run.sh           # more repetitions\n"
         "SKIP_BUILD=1 benchmarks/run.sh     # reuse the binaries\n\`\`\`\n")
L.append("Single cases:\n")
L.append("\`\`\`\n.build-bench/release/toki-bench tunnel --streams 16 --bytes 16777216 [--lz4] [--version 2]\n"
         ".build-bench/gopeer bench-pair --smux-version 1 --streams 16 --bytes 16777216 --mode sink\n"
         ".build-bench/gopeer tcp-pair --streams 16 --bytes 268435456 --mode sink\n"
         ".build-bench/release/toki-bench chat-replay --file ../shared/data/traffic-chat.jsonl --streams 8 --lz4 [--framing raw]\n\`\`\`")
open(out, "w").write("\n".join(L) + "\n")
PY
echo "== wrote $OUT" >&2
# Hub + worker latency versus direct calls (appends its own section to $OUT).
OUT="$OUT" bash "$ROOT/benchmarks/latency.sh" || echo "== benchmarks/latency.sh failed" >&2
cat "$OUT"
