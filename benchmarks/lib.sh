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
