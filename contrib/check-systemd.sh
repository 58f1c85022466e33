#!/usr/bin/env bash
# CI: installs toki into a temporary root (twice: it must be idempotent), checks the installed
# units with `systemd-analyze verify` and their exposure with `systemd-analyze security`
# (at most 2.0 each), then uninstalls and checks nothing of it is left.
#   bash contrib/check-systemd.sh path/to/toki
# Works offline in a container: no running systemd is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$(realpath "${1:?usage: $0 path/to/toki}")"
if ! command -v systemd-analyze >/dev/null; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  echo "[systemd] installing systemd (for systemd-analyze)" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends systemd >&2
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
listing() { (cd "$root" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

DESTDIR="$root" TOKI_BIN="$bin" bash contrib/install.sh >/dev/null
first="$(listing)"
DESTDIR="$root" TOKI_BIN="$bin" bash contrib/install.sh >/dev/null
[ "$first" = "$(listing)" ] || { echo "[systemd] a second install changed files" >&2; diff <(echo "$first") <(listing) >&2; exit 1; }
for f in usr/local/bin/toki usr/local/share/fish/vendor_completions.d/toki.fish usr/local/share/bash-completion/completions/toki \
         usr/local/share/zsh/site-functions/_toki etc/systemd/system/toki-hub.service etc/systemd/system/toki-worker@.service; do
  [ -s "$root/$f" ] || { echo "[systemd] not installed: /$f" >&2; exit 1; }
done

# verify resolves the units' dependencies (sysinit.target …) under --root: give it the distro's.
mkdir -p "$root/usr/lib/systemd"
cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
out="$(systemd-analyze verify --root="$root" toki-hub.service toki-relay.service toki-worker@example.service 2>&1)" || true
if [ -n "$out" ]; then echo "[systemd] systemd-analyze verify:" >&2; echo "$out" >&2; exit 1; fi
for unit in toki-hub.service toki-relay.service toki-worker@.service; do
  exposure="$(systemd-analyze --offline=yes security "$root/etc/systemd/system/$unit" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
  echo "[systemd] $unit: exposure $exposure" >&2
  awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 2.0) }' || { echo "[systemd] $unit: exposure above 2.0" >&2; exit 1; }
done
rm -rf "$root/usr/lib/systemd"

DESTDIR="$root" bash contrib/install.sh --uninstall >/dev/null
# /etc/toki is kept on purpose (the operator's configs).
left="$(cd "$root" && find . -type f -not -path "./etc/toki/*")"
[ -z "$left" ] || { echo "[systemd] left after --uninstall:" >&2; echo "$left" >&2; exit 1; }
echo "[systemd] install, verify, security, uninstall: ok" >&2
