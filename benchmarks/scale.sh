#!/usr/bin/env bash
# Scale benchmark: what a fleet of N workers costs one `toki hub`. Writes the "Scale" section of
# docs/benchmarks.md (other sections are kept).
#
#   benchmarks/scale.sh                 # N = 100, 1000, 10000
#   FLEETS="100 1000" SKIP_BUILD=1 benchmarks/scale.sh
#
# For each N, a fresh hub (release build, temp data dir) and `toki-bench fleet`: N simulated
# original-style workers in one process (one WebSocket + smux v1 session each, register +
# models_sync, a heartbeat with hardware_info every 15 s, pongs, a small JSON answer per request).
# Measured from /proc of the hub process:
#   registration time (all N registered), RSS per session, idle CPU over one heartbeat period,
#   hub CPU per small chat request and requests/s (toki-bench http, concurrency 8),
#   /v1/models latency (concurrency 1), RSS 30 s after every worker left.
# Environment: FLEETS, DURATION (seconds of load, default 5), IDLE (seconds, default 15),
#              SETTLE (seconds after departure, default 30), OUT, SKIP_BUILD=1, KEEP=1,
#              BINDIR (use binaries from there, e.g. .build/debug for a smoke test).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FLEETS="${FLEETS:-100 1000 10000}"
DURATION="${DURATION:-5}"
IDLE="${IDLE:-15}"
SETTLE="${SETTLE:-30}"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"
SCRATCH="$ROOT/.build-bench"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/toki-scale.XXXXXX")"
source "$ROOT/benchmarks/lib.sh"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "== building toki, toki-bench (release, $SCRATCH)" >&2
    for product in toki toki-bench; do swift build -c release --scratch-path "$SCRATCH" --product "$product" >&2; done
fi
BINDIR="${BINDIR:-$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)}"
TOKI="$BINDIR/toki"
BENCH="$BINDIR/toki-bench"
# Both the hub and the fleet hold one descriptor per worker.
ulimit -n "$(ulimit -Hn)"
TCK="$(getconf CLK_TCK)"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# Live heap bytes (glibc's count of allocations not freed) from the hub's /admin/runtime.
heap_bytes() {
    python3 -c 'import json, sys, urllib.request
r = urllib.request.Request(sys.argv[1] + "/admin/runtime", headers={"Authorization": "Bearer " + sys.argv[2]})
print(json.load(urllib.request.urlopen(r, timeout=30))["heap_in_use_bytes"])' "http://127.0.0.1:$1" "$2"
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

RESULTS="$WORK/results.txt"
: >"$RESULTS"
START=$(date +%s)
for N in $FLEETS; do
    echo "== fleet of $N workers" >&2
    dir="$WORK/hub-$N"; mkdir -p "$dir"
    token="$("$TOKI" token create --data-dir "$dir" --user fleet 2>>"$dir/err")"
    "$TOKI" hub --listen 127.0.0.1:0 --data-dir "$dir" --log-level warning >"$dir/out" 2>>"$dir/err" &
    hub=$!; PIDS+=("$hub")
    port="$(wait_line "$dir/out" '^LISTEN ' 30 | sed 's/.*://')"
    admin="$(grep -o 'sk-toki-[A-Za-z0-9_-]*' "$dir/out" "$dir/err" | head -1 | sed 's/.*://')"
    sleep 1
    rss0="$(rss_kib "$hub")"
    heap0="$(heap_bytes "$port" "$admin")"

    mkfifo "$dir/fleet.in"
    "$BENCH" fleet --hub "ws://127.0.0.1:$port/api/tokilake/connect" --token "$token" --workers "$N" \
        <"$dir/fleet.in" >"$dir/fleet.out" 2>"$dir/fleet.err" &
    fleet=$!; PIDS+=("$fleet")
    exec 9>"$dir/fleet.in"   # held open: closing it tells the fleet to leave
    reg="$(wait_line "$dir/fleet.out" '^REGISTERED ' 600 | sed 's/.*seconds=//')"
    sleep 3
    rss1="$(rss_kib "$hub")"

    t0="$(ticks "$hub")"; sleep "$IDLE"; t1="$(ticks "$hub")"
    idle_pct="$(python3 -c "print(f'{($t1 - $t0) / $TCK / $IDLE * 100:.1f}')")"

    body='{"model":"fleet-model","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'
    t0="$(ticks "$hub")"; w0="$(date +%s.%N)"
    load="$("$BENCH" http --url "http://127.0.0.1:$port/v1/chat/completions" --token "$token" --concurrency 8 \
        --duration "$DURATION" --warmup 1 --body "$body" 2>"$dir/load.err" | grep '^RESULT' | tail -1 || true)"
    t1="$(ticks "$hub")"; w1="$(date +%s.%N)"
    load_seconds="$(python3 -c "print(f'{$w1 - $w0:.3f}')")"
    models="$("$BENCH" http --url "http://127.0.0.1:$port/v1/models" --token "$token" --get --concurrency 1 \
        --duration 2 --warmup 0 2>"$dir/models.err" | grep '^RESULT' | tail -1 || true)"

    exec 9>&-
    wait_line "$dir/fleet.out" '^LEFT ' 60 >/dev/null || true
    kill -KILL "$fleet" 2>/dev/null || true
    wait "$fleet" 2>/dev/null || true
    sleep "$SETTLE"
    rss2="$(rss_kib "$hub")"
    heap2="$(heap_bytes "$port" "$admin")"
    fds="$(ls /proc/"$hub"/fd | wc -l)"
    kill -TERM "$hub"; wait "$hub" 2>/dev/null || true
    echo "$N reg=$reg rss0=$rss0 rss1=$rss1 rss2=$rss2 heap0=$heap0 heap2=$heap2 idle_pct=$idle_pct cpu_ticks=$((t1 - t0)) load_seconds=$load_seconds fds_after=$fds LOAD $load MODELS $models" >>"$RESULTS"
    tail -1 "$RESULTS" >&2
done
END=$(date +%s)

source "$ROOT/benchmarks/machine.sh"
[[ -f "$OUT" ]] || : >"$OUT"
python3 - "$RESULTS" "$OUT" <<PY
import re, sys
results, out = sys.argv[1:3]
rows = []
for line in open(results):
    n = int(line.split()[0])
    head, _, rest = line.partition(" LOAD ")
    load, _, models = rest.partition(" MODELS ")
    kv = dict(re.findall(r"(\w+)=([0-9.]+)", head))
    lkv = dict(re.findall(r"(\w+)=([0-9.]+)", load)) if load.startswith("RESULT ok") else {}
    mkv = dict(re.findall(r"(\w+)=([0-9.]+)", models)) if models.startswith("RESULT ok") else {}
    requests = float(lkv.get("requests", 0)) or None
    cpu_s = float(kv["cpu_ticks"]) / $TCK
    cpu_ms = cpu_s * 1000 / requests if requests else None
    # The same net of the idle work (heartbeats) the hub did during the load window.
    idle_s = float(kv["idle_pct"]) / 100 * float(kv.get("load_seconds", 0))
    net_ms = max(cpu_s - idle_s, 0) * 1000 / requests if requests else None
    rows.append(dict(n=n, reg=float(kv["reg"]), per=(int(kv["rss1"]) - int(kv["rss0"])) / n,
                     idle=float(kv["idle_pct"]), cpu=cpu_ms, net=net_ms,
                     heap0=int(kv["heap0"]) / 1048576, heap2=int(kv["heap2"]) / 1048576, rps=float(lkv.get("rps", 0)),
                     m50=float(mkv["p50_us"]) if mkv else None, m99=float(mkv["p99_us"]) if mkv else None,
                     rss0=int(kv["rss0"]) / 1024, rss2=int(kv["rss2"]) / 1024, fds=int(kv["fds_after"])))
def f(v, fmt): return "–" if v is None else fmt.format(v)
L = ["<!-- scale:begin (generated by benchmarks/scale.sh; do not edit by hand) -->", "## Scale: one hub, N workers\n",
     "Generated by \`benchmarks/scale.sh\`: a fresh release \`toki hub\` per N and \`toki-bench fleet\` (N simulated "
     "original-style workers in one process: smux v1, register + models_sync, a heartbeat with hardware_info every "
     "15 s, pongs, a small JSON answer per request). Hub figures from /proc.\n",
     "| | |\n|---|---|",
     f"| date | $(date -u '+%Y-%m-%d %H:%M UTC') |", f"| commit | $COMMIT$DIRTY |",
     f"| machine | $(nproc) CPUs ($CPU), $MEM, $(uname -sr); load average at the end: $LOAD |",
     f"| method | idle CPU over ${IDLE} s; chat load ${DURATION} s at concurrency 8; RSS ${SETTLE} s after departure; {int($END - $START)} s in all |", "",
     "| workers | all registered in | hub RSS per session | idle hub CPU (heartbeats only) | hub CPU per small chat request (net of idle) | chat requests/s (c=8) | /v1/models p50 / p99 | hub live heap before → after all left | hub RSS before → after | descriptors after |",
     "|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    L.append(f"| {r['n']:,} | {r['reg']:.2f} s | {r['per']:.0f} KiB | {r['idle']:.1f} % of a core | {f(r['cpu'], '{:.2f} ms')} ({f(r['net'], '{:.2f} ms')}) | "
             f"{r['rps']:,.0f} | {f(r['m50'], '{:,.0f}')} / {f(r['m99'], '{:,.0f}')} µs | {r['heap0']:.1f} → {r['heap2']:.1f} MB | {r['rss0']:.1f} → {r['rss2']:.1f} MB | {r['fds']} |")
if len(rows) > 1 and rows[0]["cpu"] and rows[-1]["cpu"]:
    L.append("")
    L.append(f"Hub CPU per request at {rows[-1]['n']:,} workers = {rows[-1]['cpu'] / rows[0]['cpu']:.2f}× its value at {rows[0]['n']:,}, "
             f"{rows[-1]['net'] / rows[0]['net']:.2f}× net of the idle (heartbeat) work done meanwhile "
             "(target ≤ 1.2×); targets at 10,000: idle ≤ 10 % of a core, ≤ 40 KiB per idle session, live heap back within 5 MB after departure.")
L.append("")
L.append("Reproduce: \`benchmarks/scale.sh\` (\`FLEETS=\"100 1000\" SKIP_BUILD=1 benchmarks/scale.sh\` for a quick run).")
L.append("<!-- scale:end -->")
section = "\n".join(L) + "\n"
text = open(out).read()
m = re.search(r"<!-- scale:begin.*?<!-- scale:end -->\n?", text, re.S)
text = (text[:m.start()] + section + text[m.end():]) if m else (text.rstrip("\n") + "\n\n" + section)
open(out, "w").write(text)
print(section)
PY
echo "== wrote the scale section of $OUT" >&2
