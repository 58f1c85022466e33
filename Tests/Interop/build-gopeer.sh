#!/usr/bin/env bash
# Build the Go interop test peer (Tests/Interop/gopeer) offline, in GOPATH mode, against
# the Debian packages golang-go, golang-github-xtaci-smux-dev and
# golang-github-gorilla-websocket-dev (sources under /usr/share/gocode/src).
#
# usage: Tests/Interop/build-gopeer.sh [OUTPUT]   (default: Tests/Interop/gopeer/gopeer)
# Works from any cwd; idempotent (Go's build cache makes a rebuild cheap; the binary is
# replaced atomically). Prints the absolute path of the binary on success.
#
# Environment: GO (go binary, default: go), GOPEER_GOCODE (default /usr/share/gocode),
# GOCACHE (default: $TMPDIR/toki-gopeer-gocache).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/gopeer"
out="${1:-$src/gopeer}"
case "$out" in
  /*) ;;
  *) out="$PWD/$out" ;;
esac

die() {
  echo "build-gopeer: error: $*" >&2
  exit 1
}

go_bin="${GO:-go}"
if ! command -v "$go_bin" >/dev/null 2>&1; then
  for cand in /usr/lib/go/bin/go /usr/lib/go-1.19/bin/go; do
    if [ -x "$cand" ]; then go_bin="$cand"; break; fi
  done
fi
command -v "$go_bin" >/dev/null 2>&1 ||
  die "Go toolchain not found (install it with: apt-get install golang-go)"

gocode="${GOPEER_GOCODE:-/usr/share/gocode}"
missing=()
[ -f "$gocode/src/github.com/xtaci/smux/session.go" ] ||
  missing+=("golang-github-xtaci-smux-dev ($gocode/src/github.com/xtaci/smux)")
[ -f "$gocode/src/github.com/gorilla/websocket/conn.go" ] ||
  missing+=("golang-github-gorilla-websocket-dev ($gocode/src/github.com/gorilla/websocket)")
if [ "${#missing[@]}" -gt 0 ]; then
  die "missing Go packages: ${missing[*]}
  install with: apt-get install golang-github-xtaci-smux-dev golang-github-gorilla-websocket-dev"
fi
[ -f "$src/main.go" ] || die "sources not found in $src"

tmpbase="${TMPDIR:-/tmp}"
# A private, empty first GOPATH entry keeps anything from being written to $gocode;
# imports resolve from $gocode/src. Modules, the proxy and the checksum database are off.
gopath_tmp="$tmpbase/toki-gopeer-gopath"
mkdir -p "$gopath_tmp/src" "${GOCACHE:-$tmpbase/toki-gopeer-gocache}"

mkdir -p "$(dirname "$out")"
tmp_out="$out.tmp.$$"
trap 'rm -f "$tmp_out"' EXIT

(
  cd "$src"
  env -u GOFLAGS -u GOROOT \
    GO111MODULE=off \
    GOPATH="$gopath_tmp:$gocode" \
    GOCACHE="${GOCACHE:-$tmpbase/toki-gopeer-gocache}" \
    GOPROXY=off GOSUMDB=off GOTOOLCHAIN=local GOWORK=off \
    CGO_ENABLED=0 \
    "$go_bin" build -trimpath -o "$tmp_out" .
) || die "go build failed (GOPATH mode, GO111MODULE=off, GOPATH=$gopath_tmp:$gocode)"

mv -f "$tmp_out" "$out"
trap - EXIT
echo "$out"
