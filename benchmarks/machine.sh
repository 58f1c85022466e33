# Sourced by the benchmark scripts: facts about the machine and the build, for the report.
# Needs ROOT (the repository). Sets CPU, MEM, COMMIT, DIRTY, SWIFTV, LOAD.
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
MEM="$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -qv '^??' && echo ' (with uncommitted changes)' || true)"
SWIFTV="$(swift --version 2>/dev/null | head -1)"
LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
