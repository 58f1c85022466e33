#!/usr/bin/env bash
# Builds toki's fuzz targets (libFuzzer + AddressSanitizer, release) and runs each one for
# N seconds over a copy of its seed corpus. Fails on any crash, leak, timeout or OOM.
#
#   bash Tests/Fuzz/run.sh [seconds-per-target] [target...]     (default: 20 s, every target)
#
# Environment: FUZZ_WORK=DIR keeps the grown corpora and artifacts there (default: a fresh
# temporary directory); FUZZ_JOBS_NICE=N runs the fuzzers under `nice -n N` (default 10).
# New corpus files never go into the repository: the seeds are copied first.
set -euo pipefail
cd "$(dirname "$0")"
export SWIFT_BACKTRACE=enable=no  # libFuzzer reports crashes; the backtracer would only add delay

SECS=${1:-20}
shift || true
ALL_TARGETS=(FuzzSmuxFrame FuzzSmuxSession FuzzLZ4Link FuzzLineFramer FuzzControlLine FuzzDataLine FuzzJSONReader FuzzBodyInspector FuzzResponseHead)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
NICE=${FUZZ_JOBS_NICE:-10}

# Options per target: a dictionary and the largest input.
options() {
  case "$1" in
    FuzzSmuxFrame|FuzzSmuxSession) echo "-dict=Dictionaries/smux.dict -max_len=4096" ;;
    FuzzLZ4Link) echo "-max_len=8192" ;;
    FuzzLineFramer|FuzzControlLine|FuzzDataLine|FuzzJSONReader|FuzzResponseHead) echo "-dict=Dictionaries/json.dict -max_len=4096" ;;
    FuzzBodyInspector) echo "-dict=Dictionaries/body.dict -max_len=8192" ;;
    *) echo "unknown fuzz target $1" >&2; return 1 ;;
  esac
}

echo "[fuzz] building (release, -sanitize=fuzzer,address)"
start=$(date +%s)
for t in "${TARGETS[@]}"; do options "$t" >/dev/null; done
swift build -c release -Xswiftc -sanitize=fuzzer,address 2>&1 \
  | grep -v "Cannot export local symbol '__asan_extra_spill_area'" | tail -n 5
BIN=$(swift build -c release -Xswiftc -sanitize=fuzzer,address --show-bin-path)
echo "[fuzz] build took $(( $(date +%s) - start )) s"

WORK=${FUZZ_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/toki-fuzz.XXXXXX")}
echo "[fuzz] work directory: $WORK; $SECS s per target"
failed=0
passed=0
summary=()
for t in "${TARGETS[@]}"; do
  dir="$WORK/$t"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp -n Corpus/"$t"/* "$dir/corpus/" 2>/dev/null || true
  log="$dir/fuzz.log"
  set +e
  # shellcheck disable=SC2046
  nice -n "$NICE" "$BIN/$t" "$dir/corpus" $(options "$t") \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
  artifacts=$(find "$dir/artifacts" -type f | wc -l)
  if [ "$rc" -eq 0 ] && [ "$artifacts" -eq 0 ]; then
    result=ok
    passed=$((passed + 1))
  else
    result="FAILED (exit $rc)"
    failed=$((failed + 1))
    echo "[fuzz] $t FAILED; end of its log ($log):"
    grep -v '^#[0-9]' "$log" | tail -n 40
    for a in "$dir"/artifacts/*; do
      [ -f "$a" ] || continue
      echo "[fuzz] reproducer $a (base64): $(base64 -w0 "$a" | head -c 4000)"
      echo "[fuzz] rerun: $BIN/$t $a"
    done
  fi
  row=$(printf '%-18s execs %-10s exec/s %-7s cov %-6s ft %-6s corpus %-10s %s' "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result")
  echo "[fuzz] $row"
  summary+=("$row")
done

echo "[fuzz] summary ($SECS s per target):"
printf '  %s\n' "${summary[@]}"
[ "$failed" -eq 0 ] || echo "[fuzz] see the reproducers above; docs/fuzzing.md says how to minimise and fix"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
