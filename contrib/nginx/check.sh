#!/usr/bin/env bash
# Checks contrib/nginx/toki-hub.conf with `nginx -t`: a throw-away self-signed certificate stands
# in for Let's Encrypt's, and the file is included in a minimal main configuration. Needs nginx
# and openssl; changes nothing outside a temporary directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v nginx >/dev/null || { echo "nginx is not installed (apt-get install nginx)" >&2; exit 2; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=hub.example.com \
  -keyout "$tmp/privkey.pem" -out "$tmp/fullchain.pem" 2>/dev/null
sed -e "s#/etc/letsencrypt/live/hub.example.com#$tmp#g" "$here/toki-hub.conf" > "$tmp/toki-hub.conf"
cat > "$tmp/nginx.conf" <<CONF
pid $tmp/nginx.pid;
error_log $tmp/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $tmp/body;
    proxy_temp_path $tmp/proxy;
    include $tmp/toki-hub.conf;
}
CONF
nginx -t -q -p "$tmp" -c "$tmp/nginx.conf"
echo "contrib/nginx/toki-hub.conf: ok"
