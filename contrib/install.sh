#!/usr/bin/env bash
# Installs toki with its systemd units, example configs and shell completions (bash, zsh, fish);
# with --uninstall removes exactly those again. Idempotent: running it twice changes nothing.
#   sudo bash contrib/install.sh                 # builds a release binary, installs it
#   sudo TOKI_BIN=path/to/toki bash contrib/install.sh   # installs an already-built binary
#   sudo bash contrib/install.sh --uninstall     # keeps /etc/toki and the hub's database
# PREFIX (default /usr/local) and DESTDIR (a staging root, e.g. for packaging) are honoured.
# Your own files in /etc/toki are never overwritten.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-/usr/local}"
DESTDIR="${DESTDIR:-}"
DESTDIR="${DESTDIR%/}"
mode=install
case "${1:-}" in
  "") ;;
  --uninstall) mode=uninstall ;;
  -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--uninstall]" >&2; exit 2 ;;
esac

units=(toki-hub.service toki-relay.service toki-worker@.service)
unitdir="$DESTDIR/etc/systemd/system"
bindir="$DESTDIR$PREFIX/bin"
sharedir="$DESTDIR$PREFIX/share"
files=(
  "$bindir/toki"
  "$sharedir/bash-completion/completions/toki"
  "$sharedir/zsh/site-functions/_toki"
  "$sharedir/fish/vendor_completions.d/toki.fish"
  "$sharedir/doc/toki/operations.md"
)
# systemctl only for the live system, never for a staging root.
live() { [ -z "$DESTDIR" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; }

if [ "$mode" = uninstall ]; then
  if live; then
    systemctl disable --now toki-hub.service toki-relay.service 'toki-worker@*.service' 2>/dev/null || true
  fi
  for unit in "${units[@]}"; do rm -f "$unitdir/$unit"; done
  rm -f "${files[@]}"
  rm -rf "$sharedir/doc/toki" "$sharedir/toki"
  if live; then systemctl daemon-reload || true; fi
  echo "removed toki from $DESTDIR$PREFIX and its units; kept /etc/toki and /var/lib/private/toki-hub (the database)"
  exit 0
fi

if [ -n "${TOKI_BIN:-}" ]; then
  bin="$TOKI_BIN"
  [ -x "$bin" ] || { echo "TOKI_BIN=$bin is not an executable" >&2; exit 1; }
else
  bash contrib/setup.sh
  swift build -c release --product toki
  bin="$(swift build -c release --show-bin-path)/toki"
fi

install -D -m 0755 "$bin" "$bindir/toki"
# The units name /usr/local/bin/toki; another PREFIX gets its own path written in.
for unit in "${units[@]}"; do
  sed "s#/usr/local/bin/toki#$PREFIX/bin/toki#g; s#/usr/local/share/doc/toki#$PREFIX/share/doc/toki#g" "systemd/$unit" \
    | install -D -m 0644 /dev/stdin "$unitdir/$unit"
done
install -d -m 0755 "$DESTDIR/etc/toki"
# Examples: always the current ones under share/, and a copy in /etc/toki only where none is.
shopt -s nullglob
for example in contrib/toki-*.toml contrib/tokiame.json.example; do
  install -D -m 0644 "$example" "$sharedir/toki/examples/$(basename "$example")"
done
for example in contrib/toki-*.toml; do
  target="$DESTDIR/etc/toki/$(basename "$example" .toml | sed 's/^toki-//').toml.example"
  [ -e "$target" ] || install -m 0600 "$example" "$target"
done
shopt -u nullglob
install -D -m 0644 docs/operations.md "$sharedir/doc/toki/operations.md"
"$bin" --generate-completion-script bash | install -D -m 0644 /dev/stdin "$sharedir/bash-completion/completions/toki"
"$bin" --generate-completion-script zsh | install -D -m 0644 /dev/stdin "$sharedir/zsh/site-functions/_toki"
"$bin" --generate-completion-script fish | install -D -m 0644 /dev/stdin "$sharedir/fish/vendor_completions.d/toki.fish"
if live; then systemctl daemon-reload || true; fi
echo "installed $PREFIX/bin/toki${DESTDIR:+ under $DESTDIR}; start the hub with: systemctl enable --now toki-hub"
