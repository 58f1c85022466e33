#!/usr/bin/env bash
# Relay benchmark (issue 8): what each `toki relay-only` hop adds to a request, and how many bytes
# the root <-> relay link carries with and without LZ4 on recorded traffic. Writes the "Relay
# hops" section of docs/benchmarks.md (other sections are kept).
#
#   benchmarks/relay.sh
#   ROUNDS=9 DURATION=5 SKIP_BUILD=1 benchmarks/relay.sh
#
# Part 1, latency (all on 127.0.0.1, stopped by pid on exit). One toki-stub-backend (stub-model,
# answers at once) behind four chains, each with its own root `toki hub` (temp data dir):
#   direct  hub-d  <- toki worker
#   1 hop   hub-1  <- relay r1a            <- toki worker
#   2 hops  hub-2  <- relay r2a <- relay r2b <- toki worker
#   1 hop, no LZ4  hub-n <- relay r1n --no-lz4 <- toki worker
# (relays: `toki relay-only`, LZ4 on their upstream link as by default; workers: `toki worker`,
# no --lz4, as by default), plus the stub called directly as a reference. `toki-bench http`
# (keep-alive, closed loop) runs interleaved rounds, the order rotating from round to round:
#   plain-c1   small non-streamed chat request, concurrency 1
#   stream-c1  "stream":true,"stub_chunks":20, concurrency 1 (time to first byte, total)
# CPU of hub, relays and worker from /proc/PID/stat around each run.
#
# Part 2, bytes on the root <-> relay link. One root hub; two chains on it, each behind its own
# relay and worker and its own recorded-traffic backend (benchmarks/relay-replay.py serve):
#   lz4  root <- relay (LZ4 offered, the default) <- toki worker <- replay backend (model replay-lz4)
#   raw  root <- relay --no-lz4                   <- toki worker <- replay backend (model replay-raw)
# benchmarks/relay-replay.py replay sends every recorded request of traffic-chat.jsonl and of
# traffic-embeddings.jsonl to the root (8 in flight) and checks each body against the recording;
# the backend answers with the recorded bytes, SSE event by event, GAP_MS apart. Bytes are the TCP
# payload bytes of the relay's one connection to the root port (tcpi_bytes_acked sent,
# tcpi_bytes_received received, from `ss -tip`, before/after), i.e. WebSocket frames as on the
# wire; the worker's connection to its relay (no LZ4) is measured the same way.
# Environment: ROUNDS (default 5), DURATION seconds per measurement (default 3), WARMUP (1),
#              REPLAY_ROUNDS (default 3), GAP_MS (1), OUT (docs/benchmarks.md), SKIP_BUILD=1,
#              KEEP=1 keeps the work directory (logs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-3}"
WARMUP="${WARMUP:-1}"
REPLAY_ROUNDS="${REPLAY_ROUNDS:-3}"
GAP_MS="${GAP_MS:-1}"
OUT="${OUT:-$ROOT/docs/benchmarks.md}"
DATA="${DATA:-$ROOT/../shared/data}"
SCRATCH="$ROOT/.build-bench"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/toki-relay.XXXXXX")"
source "$ROOT/benchmarks/lib.sh"
REPLAY="$ROOT/benchmarks/relay-replay.py"
CHAT="$DATA/traffic-chat.jsonl"
EMB="$DATA/traffic-embeddings.jsonl"
[[ -r "$CHAT" && -r "$EMB" ]] || { echo "recorded traffic not found in $DATA (set DATA)" >&2; exit 1; }

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    echo "== building toki, toki-stub-backend, toki-bench (release, $SCRATCH)" >&2
    for product in toki toki-stub-backend toki-bench; do
        swift build -c release --scratch-path "$SCRATCH" --product "$product" >&2
    done
fi
BINDIR="$(swift build -c release --scratch-path "$SCRATCH" --show-bin-path)"
TOKI="$BINDIR/toki"
STUB="$BINDIR/toki-stub-backend"
BENCH="$BINDIR/toki-bench"
TCK="$(getconf CLK_TCK)"

# wait_model HUB_PORT TOKEN MODEL: until MODEL is listed on the hub's /v1/models.
wait_model() {
    local port="$1" token="$2" model="$3" i
    for ((i = 0; i < 600; i++)); do
        if curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/models" 2>/dev/null | grep -q "\"$model\""; then
            return 0
        fi
        sleep 0.05
    done
    echo "$model never listed on hub :$port" >&2
    return 1
}

# start_hub NAME: a hub on a free port; sets HUB_PORT, HUB_PID, TOKEN.
start_hub() {
    local name="$1"
    mkdir -p "$WORK/$name"
    TOKEN="$("$TOKI" token create --data-dir "$WORK/$name" --user bench 2>>"$WORK/$name.err")"
    "$TOKI" hub --listen 127.0.0.1:0 --data-dir "$WORK/$name" >"$WORK/$name.out" 2>>"$WORK/$name.err" &
    PIDS+=($!)
    HUB_PID=$!
    HUB_PORT="$(wait_line "$WORK/$name.out" '^LISTEN ' 30 | sed 's/.*://')"
}

# start_relay NAME PARENT_PORT TOKEN [--no-lz4]: sets RELAY_PORT, RELAY_PID.
start_relay() {
    local name="$1" parent="$2" token="$3"; shift 3
    "$TOKI" relay-only --upstream "http://127.0.0.1:$parent" --token "$token" --listen 127.0.0.1:0 \
        --node-id "$name" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    RELAY_PID=$!
    RELAY_PORT="$(wait_line "$WORK/$name.out" '^LISTEN ' 30 | sed 's/.*://')"
}

# start_worker NAME PARENT_PORT TOKEN BACKEND_PORT: sets WORKER_PID.
start_worker() {
    local name="$1" parent="$2" token="$3" backend="$4"
    "$TOKI" worker --hub "http://127.0.0.1:$parent" --token "$token" --backend "http://127.0.0.1:$backend" \
        --namespace "bench-$name" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
    WORKER_PID=$!
}

echo "== part 1: stub backend, four chains" >&2
"$STUB" --port 0 --models stub-model >"$WORK/stub.out" 2>"$WORK/stub.err" &
PIDS+=($!)
STUB_PID=$!
STUB_PORT="$(wait_line "$WORK/stub.out" '^LISTEN ' 20 | awk '{print $2}')"

start_hub hub-d; D_PORT=$HUB_PORT; D_TOKEN=$TOKEN; D_HUB=$HUB_PID
start_worker worker-d "$D_PORT" "$D_TOKEN" "$STUB_PORT"; D_WORKER=$WORKER_PID
wait_model "$D_PORT" "$D_TOKEN" stub-model

start_hub hub-1; H1_PORT=$HUB_PORT; H1_TOKEN=$TOKEN; H1_HUB=$HUB_PID
start_relay r1a "$H1_PORT" "$H1_TOKEN"; H1_RA=$RELAY_PID
start_worker worker-1 "$RELAY_PORT" "$H1_TOKEN" "$STUB_PORT"; H1_WORKER=$WORKER_PID
wait_model "$H1_PORT" "$H1_TOKEN" stub-model

start_hub hub-2; H2_PORT=$HUB_PORT; H2_TOKEN=$TOKEN; H2_HUB=$HUB_PID
start_relay r2a "$H2_PORT" "$H2_TOKEN"; H2_RA=$RELAY_PID
start_relay r2b "$RELAY_PORT" "$H2_TOKEN"; H2_RB=$RELAY_PID
start_worker worker-2 "$RELAY_PORT" "$H2_TOKEN" "$STUB_PORT"; H2_WORKER=$WORKER_PID
wait_model "$H2_PORT" "$H2_TOKEN" stub-model

start_hub hub-n; HN_PORT=$HUB_PORT; HN_TOKEN=$TOKEN; HN_HUB=$HUB_PID
start_relay r1n "$HN_PORT" "$HN_TOKEN" --no-lz4; HN_RA=$RELAY_PID
start_worker worker-n "$RELAY_PORT" "$HN_TOKEN" "$STUB_PORT"; HN_WORKER=$WORKER_PID
wait_model "$HN_PORT" "$HN_TOKEN" stub-model
echo "== stub :$STUB_PORT, direct hub :$D_PORT, 1-hop hub :$H1_PORT, 2-hop hub :$H2_PORT, 1-hop no-LZ4 hub :$HN_PORT" >&2

PLAIN_BODY='{"model":"stub-model","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":16}'
STREAM_BODY='{"model":"stub-model","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":16,"stream":true,"stub_chunks":20}'
CASES=("plain-c1 1 0" "stream-c1 1 1")
CONTENDERS="stub direct hop1 hop2 hop1n"
RESULTS="$WORK/results.txt"   # case contender round RESULT-line cpu…
: >"$RESULTS"

ticks() { [[ -n "$1" && -r "/proc/$1/stat" ]] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }

measure() {
    local case="$1" conc="$2" stream="$3" who="$4" round="$5" url token="" line procs pid
    # procs: role=pid pairs whose CPU is sampled around the run.
    case "$who" in
        stub) url="http://127.0.0.1:$STUB_PORT"; procs="stub=$STUB_PID" ;;
        direct) url="http://127.0.0.1:$D_PORT"; token="$D_TOKEN"; procs="hub=$D_HUB worker=$D_WORKER stub=$STUB_PID" ;;
        hop1) url="http://127.0.0.1:$H1_PORT"; token="$H1_TOKEN"; procs="hub=$H1_HUB relayA=$H1_RA worker=$H1_WORKER stub=$STUB_PID" ;;
        hop1n) url="http://127.0.0.1:$HN_PORT"; token="$HN_TOKEN"; procs="hub=$HN_HUB relayA=$HN_RA worker=$HN_WORKER stub=$STUB_PID" ;;
        hop2) url="http://127.0.0.1:$H2_PORT"; token="$H2_TOKEN"; procs="hub=$H2_HUB relayA=$H2_RA relayB=$H2_RB worker=$H2_WORKER stub=$STUB_PID" ;;
    esac
    local args=(http --url "$url/v1/chat/completions" --concurrency "$conc" --duration "$DURATION" --warmup "$WARMUP")
    [[ -n "$token" ]] && args+=(--token "$token")
    if [[ "$stream" == 1 ]]; then args+=(--stream --body "$STREAM_BODY"); else args+=(--body "$PLAIN_BODY"); fi
    local before=() after=() p
    for p in $procs; do before+=("$(ticks "${p#*=}")"); done
    local t0 t1
    t0="$(date +%s.%N)"
    line="$("$BENCH" "${args[@]}" 2>"$WORK/last.err" | grep '^RESULT' | tail -1 || true)"
    t1="$(date +%s.%N)"
    for p in $procs; do after+=("$(ticks "${p#*=}")"); done
    [[ -n "$line" ]] || line="RESULT fail no output: $(head -c 300 "$WORK/last.err" | tr '\n' ' ')"
    local i=0 cpu=""
    for p in $procs; do
        cpu="$cpu ${p%%=*}_ticks=$((after[i] - before[i]))"; i=$((i + 1))
    done
    line="$line$cpu wall_s=$(python3 -c "print(f'{$t1 - $t0:.3f}')")"
    echo "$case $who $round $line" >>"$RESULTS"
    printf '   %-10s %-7s round %s: %s\n' "$case" "$who" "$round" "${line#RESULT }" >&2
}

START=$(date +%s)
run_rounds
MID=$(date +%s)

echo "== part 2: recorded traffic through root <- relay (LZ4 / no LZ4) <- worker" >&2
for name in lz4 raw; do
    python3 "$REPLAY" serve --model "replay-$name" --file "$CHAT" --file "$EMB" --gap-ms "$GAP_MS" \
        >"$WORK/replay-$name.out" 2>"$WORK/replay-$name.err" &
    PIDS+=($!)
    declare "BACK_${name}=$(wait_line "$WORK/replay-$name.out" '^LISTEN ' 30 | awk '{print $2}')"
done
start_hub hub-r; R_PORT=$HUB_PORT; R_TOKEN=$TOKEN; R_HUB=$HUB_PID
start_relay rr-lz4 "$R_PORT" "$R_TOKEN"; RL_PID=$RELAY_PID; RL_PORT=$RELAY_PORT
start_worker worker-lz4 "$RL_PORT" "$R_TOKEN" "$BACK_lz4"; WL_PID=$WORKER_PID
start_relay rr-raw "$R_PORT" "$R_TOKEN" --no-lz4; RR_PID=$RELAY_PID; RR_PORT=$RELAY_PORT
start_worker worker-raw "$RR_PORT" "$R_TOKEN" "$BACK_raw"; WR_PID=$WORKER_PID
wait_model "$R_PORT" "$R_TOKEN" replay-lz4
wait_model "$R_PORT" "$R_TOKEN" replay-raw
grep -h 'lz4' "$WORK"/rr-*.err | tail -4 >&2 || true

# link_bytes PID PEER_PORT: "sent received" TCP payload bytes of PID's connections to PEER_PORT.
link_bytes() {
    ss -tinpH state established "( dport = :$2 )" 2>/dev/null | python3 -c '
import re, sys
pid, sent, recv, found, take = sys.argv[1], 0, 0, 0, False
for line in sys.stdin:
    if not line[:1].isspace():
        take = f"pid={pid}," in line
        if take and "bytes_" not in line: continue
    if take:
        a = re.search(r"bytes_acked:(\d+)", line); r = re.search(r"bytes_received:(\d+)", line)
        if a or r:
            sent += int(a.group(1)) if a else 0; recv += int(r.group(1)) if r else 0; found += 1
            take = False
print(sent, recv, found)' "$1"
}

REPLAYS="$WORK/replays.txt"
: >"$REPLAYS"
replay_once() {
    local corpus="$1" file="$2" link="$3" round="$4" relay worker rport line
    if [[ "$link" == lz4 ]]; then relay=$RL_PID; worker=$WL_PID; rport=$RL_PORT; else relay=$RR_PID; worker=$WR_PID; rport=$RR_PORT; fi
    local up0 wk0 up1 wk1 c0 c1
    up0="$(link_bytes "$relay" "$R_PORT")"; wk0="$(link_bytes "$worker" "$rport")"; c0="$(ticks "$relay")"
    line="$(python3 "$REPLAY" replay --url "http://127.0.0.1:$R_PORT" --token "$R_TOKEN" --model "replay-$link" \
        --file "$file" --concurrency 8 2>"$WORK/replay-last.err" | grep '^REPLAY' || echo "REPLAY fail $(head -c 300 "$WORK/replay-last.err" | tr '\n' ' ')")"
    sleep 0.3   # the last acks
    up1="$(link_bytes "$relay" "$R_PORT")"; wk1="$(link_bytes "$worker" "$rport")"; c1="$(ticks "$relay")"
    line="$line $(python3 -c "
u0, u1, w0, w1 = '$up0'.split(), '$up1'.split(), '$wk0'.split(), '$wk1'.split()
print(f'up_sent={int(u1[0]) - int(u0[0])} up_recv={int(u1[1]) - int(u0[1])} up_conns={u1[2]} '
      f'wk_sent={int(w1[0]) - int(w0[0])} wk_recv={int(w1[1]) - int(w0[1])} wk_conns={w1[2]} relay_ticks={$c1 - $c0}')")"
    echo "$corpus $link $round $line" >>"$REPLAYS"
    grep -h 'first problem' "$WORK/replay-last.err" >&2 || true
    printf '   %-10s %-4s round %s: %s\n' "$corpus" "$link" "$round" "${line#REPLAY }" >&2
}
LINKS=(lz4 raw)
for round in $(seq 1 "$REPLAY_ROUNDS"); do
    for spec in "chat $CHAT" "embeddings $EMB"; do
        read -r corpus file <<<"$spec"
        for ((k = 0; k < 2; k++)); do replay_once "$corpus" "$file" "${LINKS[$(((k + round - 1) % 2))]}" "$round"; done
    done
done
END=$(date +%s)
RELAY_ERRS="$(cat "$WORK"/r1a.err "$WORK"/r2a.err "$WORK"/r2b.err "$WORK"/rr-lz4.err "$WORK"/rr-raw.err 2>/dev/null | grep -ciE 'error|warning|fail' || true)"
grep -hiE 'error|warning|fail' "$WORK"/r1a.err "$WORK"/r2a.err "$WORK"/r2b.err "$WORK"/rr-lz4.err "$WORK"/rr-raw.err 2>/dev/null | head -5 >&2 || true

source "$ROOT/benchmarks/machine.sh"
mkdir -p "$(dirname "$OUT")"
[[ -f "$OUT" ]] || : >"$OUT"
python3 - "$RESULTS" "$REPLAYS" "$OUT" <<PY
import collections, re, statistics, sys
results, replays, out = sys.argv[1:4]
TCK = $TCK
R = collections.defaultdict(dict)
fails = collections.Counter()
for line in open(results):
    case, who, rnd, rest = line.rstrip("\n").split(" ", 3)
    if not rest.startswith("RESULT ok"):
        fails[(case, who)] += 1
        continue
    R[(case, who)][int(rnd)] = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", rest)}
who_all = "$CONTENDERS".split()
label = {"stub": "stub, called directly (reference)", "direct": "root hub <- worker",
         "hop1": "root hub <- relay <- worker", "hop2": "root hub <- relay <- relay <- worker",
         "hop1n": "root hub <- relay (--no-lz4) <- worker"}

def med(case, who, key):
    xs = [kv[key] for kv in R[(case, who)].values() if key in kv]
    return statistics.median(xs) if xs else None
def paired(case, a, b, key, scale=1.0):
    """median over rounds of (a - b) / scale, same round."""
    xs = [(kv[key] - R[(case, b)][r][key]) / scale for r, kv in R[(case, a)].items() if r in R[(case, b)] and key in kv]
    return statistics.median(xs) if xs else None
def us(x): return "–" if x is None else (f"{x:,.0f} µs" if abs(x) >= 1000 else f"{x:,.1f} µs")
def ms(x): return "–" if x is None else f"{x / 1000:.3f} ms"
def errs(case, who):
    e = sum(int(kv.get("errors", 0)) for kv in R[(case, who)].values())
    f = fails[(case, who)]
    return f"{e}" + (f" ({f} failed runs)" if f else "")
def per_req(case, who, key):
    xs = []
    for kv in R[(case, who)].values():
        n = kv.get("rps", 0) * kv.get("wall_s", 0)
        if n > 0 and key in kv: xs.append(kv[key] / TCK / n * 1e6)
    return statistics.median(xs) if xs else None

L = ["<!-- relay:begin (generated by benchmarks/relay.sh; do not edit by hand) -->", "## Relay hops\n",
     "Generated by \`benchmarks/relay.sh\` (issue 8). **Latency:** one \`toki-stub-backend\` (answers at once) behind "
     "four chains, each with its own root \`toki hub\`: the worker (\`toki worker\`, no \`--lz4\`) connected to the root "
     "directly, behind one \`toki relay-only\`, behind two (relays with LZ4 on their upstream link, the default); "
     "\`toki-bench http\` (keep-alive, closed loop, concurrency 1) calls the root hub. A fourth chain has one relay with "
     "\`--no-lz4\` (to see what LZ4 costs on the hop). All processes share the machine's CPUs.\n",
     "| | |\n|---|---|",
     f"| date | $(date -u '+%Y-%m-%d %H:%M UTC') |",
     f"| commit | $COMMIT$DIRTY |",
     f"| machine | $(nproc) CPUs ($CPU), $MEM, $(uname -sr); load average at the end: $LOAD |",
     f"| toolchain | $SWIFTV; release builds (.build-bench) |",
     f"| method | latency: $ROUNDS rounds, per round each case runs every contender once, order rotating, ${DURATION} s measured after ${WARMUP} s warm-up; "
     f"bytes: $REPLAY_ROUNDS rounds per corpus, LZ4/no-LZ4 order rotating; shared, noisy machine |",
     f"| duration | $((MID - START)) s latency + $((END - MID)) s replay |", "",
     "Values are medians over the rounds. *Added by this hop* = median over rounds of (this chain − the chain one hop "
     "shorter) in the same round; for the direct chain it is what hub + worker add over the stub.\n"]

prev = {"direct": "stub", "hop1": "direct", "hop2": "hop1", "hop1n": "direct"}
L += ["### Small non-streamed chat request, concurrency 1\n",
      "| path | p50 | p90 | p99 | added p50 by this hop | added p99 by this hop | requests/s | errors |",
      "|---|---|---|---|---|---|---|---|"]
c = "plain-c1"
for w in who_all:
    a50 = us(paired(c, w, prev[w], "p50_us")) if w in prev else ""
    a99 = us(paired(c, w, prev[w], "p99_us")) if w in prev else ""
    L.append(f"| {label[w]} | {us(med(c, w, 'p50_us'))} | {us(med(c, w, 'p90_us'))} | {us(med(c, w, 'p99_us'))} | {a50} | {a99} | {med(c, w, 'rps') or 0:,.0f} | {errs(c, w)} |")
L.append("")
L += ["### Streamed request (20 SSE events + [DONE]), concurrency 1\n",
      "| path | TTFB p50 | TTFB p99 | added TTFB p50 by this hop | total p50 | total p99 | added total p50 by this hop | errors |",
      "|---|---|---|---|---|---|---|---|"]
c = "stream-c1"
for w in who_all:
    a = lambda k: us(paired(c, w, prev[w], k)) if w in prev else ""
    L.append(f"| {label[w]} | {us(med(c, w, 'ttfb_p50_us'))} | {us(med(c, w, 'ttfb_p99_us'))} | {a('ttfb_p50_us')} | "
             f"{us(med(c, w, 'p50_us'))} | {us(med(c, w, 'p99_us'))} | {a('p50_us')} | {errs(c, w)} |")
L.append("")
L += ["### CPU per request (from /proc/PID/stat, utime+stime over the run incl. warm-up, divided by its requests)\n",
      "| case | path | root hub | relay next to the root | relay next to the worker | worker | stub |",
      "|---|---|---|---|---|---|---|"]
for c in ("plain-c1", "stream-c1"):
    for w in who_all:
        cell = lambda k: "–" if per_req(c, w, k) is None else us(per_req(c, w, k))
        ra = cell("relayA_ticks")
        rb = cell("relayB_ticks") if w == "hop2" else ("(same relay)" if w in ("hop1", "hop1n") else "–")
        L.append(f"| {c} | {label[w]} | {cell('hub_ticks')} | {ra} | {rb} | {cell('worker_ticks')} | {cell('stub_ticks')} |")
L.append("")
L.append("CPU is counted in clock ticks of 1/%d s, so at a few hundred requests per run a figure is good to ±10 %%." % TCK)
L.append("")

hop1 = paired("plain-c1", "hop1", "direct", "p50_us")
hop2 = paired("plain-c1", "hop2", "hop1", "p50_us")
both = paired("plain-c1", "hop2", "direct", "p50_us", 2.0)
t1 = paired("stream-c1", "hop1", "direct", "ttfb_p50_us")
t2 = paired("stream-c1", "hop2", "direct", "ttfb_p50_us", 2.0)
ok = lambda v: "–" if v is None else ("met" if v <= 150 else "**NOT met**")
L.append("### Verdict on latency (target from the issue: ≤ 0.15 ms added p50 per hop)\n")
L.append(f"- first hop (1 relay − direct): added p50 {ms(hop1)} ({ok(hop1)}); second hop (2 relays − 1 relay): {ms(hop2)} ({ok(hop2)}); "
         f"per hop over two hops ((2 relays − direct) / 2): {ms(both)} ({ok(both)}).")
L.append(f"- streamed TTFB p50 added: first hop {ms(t1)}, per hop over two hops {ms(t2)}.")
n1 = paired("plain-c1", "hop1n", "direct", "p50_us")
hw = paired("plain-c1", "direct", "stub", "p50_us")
L.append(f"- one relay without LZ4 on its upstream link: added p50 {ms(n1)} ({ok(n1)}). For scale: root hub + worker add "
         f"{ms(hw)} over the stub on this machine, so one relay hop costs {'–' if not hw or hop1 is None else f'{hop1 / hw:.2f}×'} "
         f"what the hub + worker pair costs.")
L.append("")

# Part 2
P = collections.defaultdict(list)
for line in open(replays):
    corpus, link, rnd, rest = line.rstrip("\n").split(" ", 3)
    kv = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", rest)}
    kv["ok"] = rest.startswith("REPLAY ok")
    P[(corpus, link)].append(kv)
def pm(corpus, link, key):
    xs = [kv[key] for kv in P[(corpus, link)] if kv["ok"] and key in kv]
    return statistics.median(xs) if xs else None
def b(x): return "–" if x is None else f"{x:,.0f}"
L += ["### Bytes on the root <-> relay link, recorded traffic (LZ4 on vs off)\n",
      "One root hub with two chains, root <- relay <- \`toki worker\` <- recorded-traffic backend: one relay with LZ4 offered "
      "on its upstream link (the default), one with \`--no-lz4\`. \`benchmarks/relay-replay.py\` sends every recorded request of "
      "\`traffic-chat.jsonl\` (240 calls, 3 in 4 streamed) or \`traffic-embeddings.jsonl\` (40 calls) to the root, 8 in flight, "
      "and checks every body against the recording; the backend answers with the recorded bytes, SSE event by event, "
      "$GAP_MS ms apart. Bytes are the TCP payload of the relay's connection to the root (kernel counters tcpi_bytes_acked / "
      "tcpi_bytes_received via \`ss -ti\`, before/after each replay: WebSocket frames exactly as sent, TCP/IP headers not "
      "counted); *worker → relay* is the worker's own link (no LZ4) measured the same way. Medians over the rounds.\n",
      "| corpus | link | body bytes to the client | relay → root | root → relay | LZ4 on / off (relay → root) | relay → root / body bytes | worker → relay | relay CPU per call | replay time | errors / bodies differing |",
      "|---|---|---|---|---|---|---|---|---|---|---|"]
ratios = {}
for corpus in ("chat", "embeddings"):
    off = pm(corpus, "raw", "up_sent")
    for link in ("raw", "lz4"):
        sent = pm(corpus, link, "up_sent"); body = pm(corpus, link, "body_bytes")
        rows = pm(corpus, link, "rows")
        ratio = "" if link == "raw" or not off or sent is None else f"**{sent / off:.3f}** (1/{off / sent:.1f})"
        if link == "lz4" and off and sent: ratios[corpus] = sent / off
        cpu = pm(corpus, link, "relay_ticks")
        cpu_s = "–" if cpu is None or not rows else us(cpu / TCK / rows * 1e6)
        secs = "–" if pm(corpus, link, "seconds") is None else f"{pm(corpus, link, 'seconds'):.2f} s"
        e = sum(int(kv.get("errors", 0)) for kv in P[(corpus, link)]) + sum(1 for kv in P[(corpus, link)] if not kv["ok"])
        m = sum(int(kv.get("mismatched", 0)) for kv in P[(corpus, link)])
        L.append(f"| {corpus} | {'LZ4' if link == 'lz4' else 'no LZ4 (--no-lz4)'} | {b(body)} | {b(sent)} | {b(pm(corpus, link, 'up_recv'))} | {ratio} | "
                 f"{'–' if not sent or not body else f'{sent / body:.3f}'} | {b(pm(corpus, link, 'wk_sent'))} | {cpu_s} | "
                 f"{secs} | {e} / {m} |")
L.append("")
r = ratios.get("chat")
L.append("### Verdict on bytes (target from the issue: an LZ4 link carries ≤ 1/8 of the uncompressed bytes on the chat replay)\n")
L.append(f"- chat: relay → root with LZ4 = {'–' if r is None else f'{r:.3f} (1/{1 / r:.1f})'} of the bytes without: "
         f"{'–' if r is None else ('met' if r <= 0.125 else '**NOT met**')}.")
if "embeddings" in ratios:
    L.append(f"- embeddings (no target; float JSON compresses little): {ratios['embeddings']:.3f} (1/{1 / ratios['embeddings']:.1f}).")
L.append(f"- lines with error/warning/fail in the relays' logs: $RELAY_ERRS.")
L.append("")
L.append("Reproduce:\n")
L.append("\`\`\`\nbenchmarks/relay.sh                                   # builds, ~4 min of benchmarking\n"
         "ROUNDS=9 DURATION=5 SKIP_BUILD=1 benchmarks/relay.sh\n"
         "KEEP=1 SKIP_BUILD=1 benchmarks/relay.sh                 # keeps the logs of hubs, relays, workers\n\`\`\`")
L.append("<!-- relay:end -->")
section = "\n".join(L) + "\n"
text = open(out).read()
m = re.search(r"<!-- relay:begin.*?<!-- relay:end -->\n?", text, re.S)
text = (text[:m.start()] + section + text[m.end():]) if m else (text.rstrip("\n") + "\n\n" + section)
open(out, "w").write(text)
print(section)
PY
echo "== wrote the relay section of $OUT" >&2
