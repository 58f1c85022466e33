#!/usr/bin/env bash
# The issues' yardstick: the shared bench tools (../shared/bench: `stubllm` as the backend,
# `loadgen` as the closed-loop client), direct vs through toki vs through the original-style Go
# pair, in one interleaved run. Writes the "Yardstick" section of docs/benchmarks.md.
#
#   benchmarks/yardstick.sh            # builds what it needs; ~6 min with the defaults
#
# Contenders (all on 127.0.0.1, stopped by pid on exit):
#   direct  stubllm itself;
#   toki    `toki hub` (temp data dir) + `toki worker`;
#   go      `gopeer tokilake` (the original standalone Tokilake's hub and API) + `gopeer tokiame`;
#   before  hub + worker of BASELINE=/path/to/an/older/toki (before/after columns), if given.
# Cases (loadgen, keep-alive, every body read to its end; a stream must end with [DONE]):
#   plain-c1     small non-streamed chat, concurrency 1       (added latency)
#   plain-c16    the same at concurrency 16                   (requests/s)
#   stream-c1    streamed chat (8 chunks), concurrency 1      (added time to first byte)
#   stream-c512  512 concurrent streams, 20 chunks 20 ms apart (stalls: a stream's total time)
# CPU per request of hub and worker from /proc (utime+stime over the run / requests).
# Environment: ROUNDS (3), N1 (2000 requests at c1), N16 (8000), NS (1000 streams at c1),
#   N512 (2048 streams at c512), OUT, SKIP_BUILD=1, GO=0, BASELINE, BASELINE_LABEL, KEEP=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS="${ROUNDS:-3}"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"
SCRATCH="$ROOT/.build-bench"
TOOLS="$SCRATCH/tools"
BENCHSRC="${BENCHSRC:-$ROOT/../shared/bench}"
WITH_GO="${GO:-1}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/toki-yardstick.XXXXXX")"
source "$ROOT/benchmarks/lib.sh"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "== building toki (release, $SCRATCH)" >&2
    swift build -c release --scratch-path "$SCRATCH" --product toki >&2
fi
for tool in stubllm loadgen; do
    [[ -x "$TOOLS/$tool" && "${SKIP_BUILD:-0}" == 1 ]] || OUT="$TOOLS" bash "$BENCHSRC/$tool/build.sh" >&2
done
TOKI="$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)/toki"
GOPEER="$SCRATCH/gopeer"
if [[ "$WITH_GO" == 1 && ( "${SKIP_BUILD:-0}" != 1 || ! -x "$GOPEER" ) ]]; then
    bash "$ROOT/Tests/Interop/build-gopeer.sh" "$GOPEER" >&2 || { echo "== gopeer unavailable: no Go pair" >&2; WITH_GO=0; }
fi
MODEL=stub-chat

echo "== starting stubllm, hubs and workers" >&2
"$TOOLS/stubllm" --listen 127.0.0.1:0 >"$WORK/stub.out" 2>"$WORK/stub.err" &
PIDS+=($!)
STUB_PORT="$(wait_line "$WORK/stub.out" '^LISTENING ' 20 | awk '{print $2}' | sed 's/.*://')"

# wait_model URL TOKEN: until $MODEL is listed on URL/v1/models.
wait_model() {
    local i
    for ((i = 0; i < 600; i++)); do
        curl -fsS -H "Authorization: Bearer $2" "$1/v1/models" 2>/dev/null | grep -q "\"$MODEL\"" && return 0
        sleep 0.05
    done
    echo "$MODEL never listed on $1" >&2
    return 1
}

declare -A URL TOKEN HUB_PID WORKER_PID
# start_toki NAME BINARY: `toki hub` + `toki worker` of BINARY.
start_toki() {
    local name="$1" bin="$2" port
    mkdir -p "$WORK/$name"
    TOKEN[$name]="$("$bin" token create --data-dir "$WORK/$name" --user bench 2>>"$WORK/$name.err")"
    "$bin" hub --listen 127.0.0.1:0 --data-dir "$WORK/$name" >"$WORK/$name-hub.out" 2>>"$WORK/$name.err" &
    PIDS+=($!); HUB_PID[$name]=$!
    port="$(wait_line "$WORK/$name-hub.out" '^LISTEN ' 30 | sed 's/.*://')"
    URL[$name]="http://127.0.0.1:$port"
    "$bin" worker --hub "${URL[$name]}" --token "${TOKEN[$name]}" --backend "http://127.0.0.1:$STUB_PORT" \
        --namespace "bench-$name" >"$WORK/$name-worker.out" 2>"$WORK/$name-worker.err" &
    PIDS+=($!); WORKER_PID[$name]=$!
    wait_model "${URL[$name]}" "${TOKEN[$name]}"
}

URL[direct]="http://127.0.0.1:$STUB_PORT"; TOKEN[direct]=""
CONTENDERS="direct"
start_toki toki "$TOKI"
CONTENDERS="$CONTENDERS toki"
if [[ -n "${BASELINE:-}" ]]; then
    start_toki before "$BASELINE"
    CONTENDERS="$CONTENDERS before"
fi
if [[ "$WITH_GO" == 1 ]]; then
    TOKEN[go]="sk-yardstick"
    "$GOPEER" tokilake --token "${TOKEN[go]}" >"$WORK/go-hub.out" 2>"$WORK/go-hub.err" &
    PIDS+=($!); HUB_PID[go]=$!
    tunnel="$(wait_line "$WORK/go-hub.out" '^LISTEN ' 20 | awk '{print $2}')"
    URL[go]="http://$(wait_line "$WORK/go-hub.out" '^API ' 20 | awk '{print $2}')"
    "$GOPEER" tokiame --gateway-url "ws://$tunnel/api/tokilake/connect" --token "${TOKEN[go]}" --namespace bench-go \
        --models "$MODEL" --backend "http://127.0.0.1:$STUB_PORT" --timeout 0 >"$WORK/go-worker.out" 2>"$WORK/go-worker.err" &
    PIDS+=($!); WORKER_PID[go]=$!
    if wait_model "${URL[go]}" "${TOKEN[go]}"; then CONTENDERS="$CONTENDERS go"; fi
fi
echo "== contenders: $CONTENDERS" >&2

# case: name concurrency stream
CASES=("plain-c1 1 0" "plain-c16 16 0" "stream-c1 1 1" "stream-c512 512 1")
RESULTS="$WORK/results.txt"
: >"$RESULTS"
ticks() { [[ -n "${1:-}" && -r "/proc/$1/stat" ]] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }

measure() {
    local case="$1" conc="$2" stream="$3" who="$4" round="$5" n args line h0 w0 h1 w1
    case "$case" in
        plain-c1) n="${N1:-2000}" ;; plain-c16) n="${N16:-8000}" ;; stream-c1) n="${NS:-1000}" ;; stream-c512) n="${N512:-2048}" ;;
    esac
    args=(--url "${URL[$who]}/v1/chat/completions" --model "$MODEL" --concurrency "$conc" --requests "$n"
          --warmup "$((conc * 2 > 200 ? conc * 2 : 200))" --quiet --label "$who")
    [[ -n "${TOKEN[$who]}" ]] && args+=(--token "${TOKEN[$who]}")
    [[ "$stream" == 1 ]] && args+=(--stream)
    [[ "$case" == stream-c512 ]] && args+=(--header "X-Stub-Chunks: 20" --header "X-Stub-Delay-Ms: 20")
    h0="$(ticks "${HUB_PID[$who]:-}")"; w0="$(ticks "${WORKER_PID[$who]:-}")"
    line="$("$TOOLS/loadgen" "${args[@]}" 2>"$WORK/last.err" | grep '^LOADGEN' | tail -1 || true)"
    h1="$(ticks "${HUB_PID[$who]:-}")"; w1="$(ticks "${WORKER_PID[$who]:-}")"
    [[ -n "$line" ]] || line="LOADGEN fail: $(head -c 300 "$WORK/last.err" | tr '\n' ' ')"
    # CPU over the run including the warm-up requests.
    line="$line warmup=$((conc * 2 > 200 ? conc * 2 : 200)) hub_ticks=$((h1 - h0)) worker_ticks=$((w1 - w0))"
    echo "$case $who $round $line" >>"$RESULTS"
    printf '   %-11s %-6s round %s: %s\n' "$case" "$who" "$round" "$(echo "$line" | grep -oE '(rps|p50_ms|p99_ms|ttfb_p50_ms|errors)=[^ ]+' | tr '\n' ' ')" >&2
}

START=$(date +%s)
DURATION="n/a" WARMUP="n/a" run_rounds
END=$(date +%s)
source "$ROOT/benchmarks/machine.sh"
[[ -f "$OUT" ]] || : >"$OUT"
python3 - "$RESULTS" "$OUT" <<PY
import collections, re, statistics, sys
results, out = sys.argv[1:3]
R = collections.defaultdict(dict)
for line in open(results):
    case, who, rnd, rest = line.split(" ", 3)
    kv = dict(re.findall(r"(\w+)=(\S+)", rest))
    R[(case, who)][int(rnd)] = kv
tck = $(getconf CLK_TCK)
contenders = "$CONTENDERS".split()
label = {"direct": "direct (stubllm)", "toki": "toki hub + toki worker",
         "before": "toki hub + toki worker, baseline ${BASELINE_LABEL:-}", "go": "original-style Go pair (gopeer tokilake + tokiame)"}
def med(case, who, key, f=float):
    vals = [f(kv[key]) for kv in R[(case, who)].values() if key in kv]
    return statistics.median(vals) if vals else None
def added(case, who, key):
    d = [float(kv[key]) - float(R[(case, "direct")][r][key]) for r, kv in R[(case, who)].items()
         if key in kv and r in R[(case, "direct")] and key in R[(case, "direct")][r]]
    return statistics.median(d) if d else None
def ratio(case, who, key):
    d = [float(kv[key]) / float(R[(case, "direct")][r][key]) for r, kv in R[(case, who)].items()
         if key in kv and r in R[(case, "direct")] and float(R[(case, "direct")][r].get(key, 0)) > 0]
    return statistics.median(d) if d else None
def cpu(case, who, proc):
    vals = []
    for kv in R[(case, who)].values():
        if f"{proc}_ticks" in kv and "requests" in kv:
            total = int(kv["requests"]) + int(kv.get("warmup", 0))
            vals.append(int(kv[f"{proc}_ticks"]) / tck * 1e6 / total)
    return statistics.median(vals) if vals else None
fmt = lambda v, unit="", d=3: "–" if v is None else f"{v:,.{d}f}{unit}"
L = []
L.append("<!-- yardstick:begin (generated by benchmarks/yardstick.sh; do not edit by hand) -->")
L.append("## Yardstick: the shared bench tools (stubllm + loadgen)")
L.append("")
L.append("Generated by \`benchmarks/yardstick.sh\`: the issues' yardstick. \`stubllm\` (../shared/bench) is the backend; \`loadgen\` (closed loop, keep-alive, every body read to its end, a stream counts only if it ends with \`[DONE]\`) calls it directly, through \`toki hub\` + \`toki worker\`, and through the original-style Go pair (\`gopeer tokilake\`, the standalone Tokilake's hub and API, + \`gopeer tokiame\`), interleaved round by round on one machine. Ratios and differences are taken within a round, then the median over rounds.")
L.append("")
L.append("| | |\n|---|---|")
L.append(f"| date | $(date -u '+%Y-%m-%d %H:%M UTC') |")
L.append(f"| commit | $COMMIT$DIRTY |")
L.append(f"| machine | $(nproc) CPUs ($CPU), $MEM, Linux $(uname -r); load average at the end: $LOAD |")
L.append(f"| method | $ROUNDS rounds; requests per run: c1 ${N1:-2000}, c16 ${N16:-8000}, streamed c1 ${NS:-1000}, c512 ${N512:-2048}; $((END - START)) s of benchmarking |")
L.append("")
L.append("| case | path | p50 | p99 | added p50 | added p99 | first byte p50 | added first byte p50 | requests/s | ratio to direct | errors | hub CPU/req | worker CPU/req |")
L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for case in ["plain-c1", "plain-c16", "stream-c1", "stream-c512"]:
    for who in contenders:
        if not R[(case, who)]: continue
        direct = who == "direct"
        errs = sum(int(kv.get("errors", 0)) for kv in R[(case, who)].values())
        L.append(f"| {case} | {label[who]} | {fmt(med(case, who, 'p50_ms'), ' ms')} | {fmt(med(case, who, 'p99_ms'), ' ms')} | "
                 f"{'' if direct else fmt(added(case, who, 'p50_ms'), ' ms')} | {'' if direct else fmt(added(case, who, 'p99_ms'), ' ms')} | "
                 f"{fmt(med(case, who, 'ttfb_p50_ms'), ' ms')} | {'' if direct else fmt(added(case, who, 'ttfb_p50_ms'), ' ms')} | "
                 f"{fmt(med(case, who, 'rps'), '', 0)} | {'1' if direct else fmt(ratio(case, who, 'rps'), '×', 3)} | {errs} | "
                 f"{'–' if direct else fmt(cpu(case, who, 'hub'), ' µs', 0)} | {'–' if direct else fmt(cpu(case, who, 'worker'), ' µs', 0)} |")
L.append("")
L.append("CPU per request: the processes' CPU over the whole run divided by its requests, warm-up included. The 512-stream case shows stalls as a stream's total time (20 events 20 ms apart: 400 ms at best); loadgen does not time gaps between events.")
L.append("")
def verdict(who):
    a50, a99, r16, t50 = added("plain-c1", who, "p50_ms"), added("plain-c1", who, "p99_ms"), ratio("plain-c16", who, "rps"), added("stream-c1", who, "ttfb_p50_ms")
    s512 = ratio("stream-c512", who, "p99_ms")
    cpu16 = cpu("plain-c16", who, "hub")
    ok = lambda v, lim, le=True: "–" if v is None else ("met" if (v <= lim if le else v >= lim) else "**NOT met**")
    return (f"- {label[who]}: added p50 {fmt(a50, ' ms')} ({ok(a50, 0.25)}), added p99 {fmt(a99, ' ms')} ({ok(a99, 1.0)}), "
            f"requests/s at c16 {fmt(r16, '×')} of direct ({ok(r16, 0.5, False)}), added first byte p50 {fmt(t50, ' ms')} ({ok(t50, 0.3)}), "
            f"hub CPU per small request at c16 {fmt(cpu16, ' µs', 0)} ({ok(cpu16, 100)}), 512 streams' p99 total {fmt(s512, '×')} of direct ({ok(s512, 2.0)})")
L.append("Targets (issue 11): added p50 ≤ 0.25 ms and p99 ≤ 1 ms at concurrency 1; ≥ 0.5× direct requests/s at 16; added first byte ≤ 0.3 ms; hub CPU ≤ 100 µs per small request; 512 streams without stalls (p99 within 2× of direct).")
L.append("")
for who in contenders:
    if who != "direct": L.append(verdict(who))
L.append("")
L.append("Reproduce: \`benchmarks/yardstick.sh\` (\`SKIP_BUILD=1\`, \`ROUNDS\`, \`BASELINE=/path/to/older/toki BASELINE_LABEL=abc1234\`, \`GO=0\`).")
L.append("<!-- yardstick:end -->")
section = "\n".join(L) + "\n"
text = open(out).read()
b, e = "<!-- yardstick:begin", "<!-- yardstick:end -->"
if b in text and e in text:
    text = text[:text.index(b)] + section + text[text.index(e) + len(e):].lstrip("\n")
else:
    text = text.rstrip("\n") + "\n\n" + section
open(out, "w").write(text)
print(section)
PY
