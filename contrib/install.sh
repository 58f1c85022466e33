#!/usr/bin/env bash
# Builds toki (release) and installs it with its systemd units and shell completions.
#   sudo bash contrib/install.sh            # then: systemctl enable --now toki-hub
# PREFIX (default /usr/local) and DESTDIR are honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="${PREFIX:-/usr/local}"
DESTDIR="${DESTDIR:-}"
bash contrib/setup.sh
swift build -c release --product toki
bin="$(swift build -c release --show-bin-path)/toki"
install -D -m 0755 "$bin" "$DESTDIR$PREFIX/bin/toki"
install -D -m 0644 systemd/toki-hub.service "$DESTDIR/etc/systemd/system/toki-hub.service"
install -D -m 0644 systemd/toki-worker@.service "$DESTDIR/etc/systemd/system/toki-worker@.service"
install -D -m 0644 systemd/toki-relay.service "$DESTDIR/etc/systemd/system/toki-relay.service"
install -d -m 0755 "$DESTDIR/etc/toki"
[ -e "$DESTDIR/etc/toki/worker-example.json" ] || install -m 0600 contrib/tokiame.json.example "$DESTDIR/etc/toki/worker-example.json"
"$bin" --generate-completion-script bash | install -D -m 0644 /dev/stdin "$DESTDIR/usr/share/bash-completion/completions/toki"
"$bin" --generate-completion-script zsh | install -D -m 0644 /dev/stdin "$DESTDIR/usr/share/zsh/vendor-completions/_toki"
if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null; then systemctl daemon-reload || true; fi
echo "installed $PREFIX/bin/toki; start the hub with: systemctl enable --now toki-hub"
