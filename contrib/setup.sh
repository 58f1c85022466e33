#!/usr/bin/env bash
# Installs what building and testing toki needs on Debian 12: the C libraries it links
# (liblz4, libsqlite3, libcrypto), the Go reference peer's packages for the interop tests, the
# openssl CLI (the TLS test makes its certificates with it), nginx (contrib/nginx/check.sh) and
# promtool for the Prometheus config check.
# Idempotent; uses sudo when not root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
PKGS=(liblz4-dev libsqlite3-dev libssl-dev pkg-config curl openssl nginx-light
      golang-go golang-github-xtaci-smux-dev golang-github-gorilla-websocket-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing: ${missing[*]}" >&2
  $SUDO apt-get update -q >&2
  $SUDO apt-get install -y -q "${missing[@]}" >&2
fi
# promtool checks contrib/prometheus/ in CI: Debian's prometheus package (the daemon is not
# started by this script), installed only when promtool is missing.
if ! command -v promtool >/dev/null; then
  echo "[setup] installing: prometheus (for promtool)" >&2
  $SUDO apt-get update -q >&2
  $SUDO apt-get install -y -q --no-install-recommends prometheus >&2
fi
if ! command -v swift >/dev/null; then
  echo "[setup] swift is not on PATH (toki needs Swift 6.2 or newer)" >&2
  exit 1
fi
echo "[setup] ok" >&2
