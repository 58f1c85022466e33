# Sourced by the benchmark scripts: the work directory, stopping what they started, and waiting
# for a line in a log. Needs WORK (a temporary directory); fills PIDS with what to stop.
PIDS=()

# Stops every pid in PIDS (TERM, then KILL), then removes WORK unless KEEP=1.
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${KEEP:-0}" == 1 ]]; then echo "== logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_line FILE REGEX SECONDS: prints the first line of FILE matching REGEX.
wait_line() {
    local file="$1" re="$2" limit="$3" i line
    for ((i = 0; i < limit * 20; i++)); do
        line="$(grep -m1 -E "$re" "$file" 2>/dev/null || true)"
        if [[ -n "$line" ]]; then echo "$line"; return 0; fi
        sleep 0.05
    done
    echo "timeout waiting for /$re/ in $file:" >&2
    tail -20 "$file" >&2 || true
    return 1
}

# Interleaved rounds: ROUNDS times, every case of CASES ("name concurrency stream") for every
# contender of CONTENDERS, the order of the contenders rotating from round to round, each
# measured by the caller's `measure CASE CONCURRENCY STREAM WHO ROUND`.
run_rounds() {
    echo "== $ROUNDS rounds × ${#CASES[@]} cases × ($CONTENDERS), ${DURATION}s each after ${WARMUP}s warm-up" >&2
    local -a who
    read -r -a who <<<"$CONTENDERS"
    local round spec case conc stream k n=${#who[@]}
    for round in $(seq 1 "$ROUNDS"); do
        for spec in "${CASES[@]}"; do
            read -r case conc stream <<<"$spec"
            for ((k = 0; k < n; k++)); do
                measure "$case" "$conc" "$stream" "${who[$(((k + round - 1) % n))]}" "$round"
            done
        done
    done
}
