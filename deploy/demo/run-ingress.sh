#!/usr/bin/env bash
# The ingress auth mode on this machine: nginx configured as ingress-nginx configures itself for
# auth-url/auth-signin/auth-response-headers (deploy/demo/ingress-nginx/), portcullis as its auth
# service (memory store, one session for both demo hosts through session.cookie_domain), the
# oidc-provider fixture as the identity provider and the demo SPA + API as the application.
# Everything listens on loopback only; Ctrl-C stops all four.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${PORTCULLIS_BIN:-$root/target/debug/portcullis}
nginx_bin=${NGINX_BIN:-/usr/sbin/nginx}
port=${DEMO_PORT:-4480}                  # nginx: the only port the browser talks to
listen_port=${DEMO_LISTEN_PORT:-4490}    # portcullis: /bff/* behind nginx
admin_port=${DEMO_ADMIN_PORT:-4481}
auth_port=${DEMO_AUTH_PORT:-4482}        # portcullis: the auth endpoint nginx asks
domain=example.localhost
app="http://app.$domain:$port"
other="http://other.$domain:$port"
# shellcheck source=deploy/demo/lib.sh
source "$root/deploy/demo/lib.sh"

cd "$root/tests/fixtures/op"
OP_PORT=0 REDIRECT_URIS="$app/bff/callback,$other/bff/callback" \
  POST_LOGOUT_REDIRECT_URIS="$app/bff/logout/callback,$other/bff/logout/callback" AT_TTL=60 \
  node op.mjs >"$work/op.out" 2>"$work/op.log" &
pids+=($!)
cd "$root/deploy/demo"
PORT=0 node upstream.mjs >"$work/upstream.out" 2>"$work/upstream.log" &
pids+=($!)
issuer=$(wait_for_line "$work/op.out" OP_READY)
upstream_port=$(wait_for_line "$work/upstream.out" UPSTREAM_READY)

printf 's3c:r+t/=%%\n' >"$work/client-secret"
cat >"$work/portcullis.yaml" <<YAML
listen: "127.0.0.1:$listen_port"
admin_listen: "127.0.0.1:$admin_port"
public_url: "$app"
oidc:
  issuer: "$issuer"
  client_id: "portcullis"
  client_secret_file: "$work/client-secret"
session:
  store: memory
  cookie_domain: "$domain"
routes: []
ingress_auth:
  enabled: true
  listen: "127.0.0.1:$auth_port"
  controller: nginx
  trusted_ingress: ["127.0.0.1/32"]
  hosts:
    - host: "app.$domain"
      paths:
        - { path: "/api/", kind: api }
        - { path: "/public/", kind: public }
        - { path: "/", kind: page }
    - host: "other.$domain"
      paths:
        - { path: "/api/", kind: api }
        - { path: "/", kind: page }
YAML
"$bin" check --config "$work/portcullis.yaml" >/dev/null

# nginx: the templates the tests use, one server file per host.
mkdir -p "$work/nginx/servers"
sed -e "s#@@PREFIX@@#$work/nginx#g; s#@@MODULES@@#/usr/lib/nginx/modules#g; s#@@HTTP_SNIPPET@@##" \
    -e "s#@@PORT@@#$port#g; s#@@AUTH@@#127.0.0.1:$auth_port#g" \
    "$root/deploy/demo/ingress-nginx/nginx.conf.in" >"$work/nginx/nginx.conf"
for host in "app.$domain" "other.$domain"; do
  sed -e "s#@@HOST@@#$host#g; s#@@PORT@@#$port#g; s#@@BFF@@#127.0.0.1:$listen_port#g; s#@@SERVER_SNIPPET@@##" \
      -e "s#@@PAGE@@#127.0.0.1:$upstream_port#g; s#@@API@@#127.0.0.1:$upstream_port#g" \
      "$root/deploy/demo/ingress-nginx/server.conf.in" >"$work/nginx/servers/$host.conf"
done
"$nginx_bin" -t -q -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log"

"$bin" serve --config "$work/portcullis.yaml" &
pids+=($!)
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
pids+=($!)

cat <<MSG

  portcullis demo: ingress auth mode behind nginx (as ingress-nginx configures it)
  -------------------------------------------------------------------------------
  Open        $app/
              (Chromium and Firefox resolve *.localhost to this machine by themselves)
  Then        $other/   -- the same session (session.cookie_domain: $domain)
  Sign in as  any name (e.g. alice), any password, then "Continue" on the consent page
  Auth port   http://127.0.0.1:$auth_port/bff/auth  (only nginx may call it: trusted_ingress)
  Admin       http://127.0.0.1:$admin_port/metrics  /readyz  /healthz
  Configs     $work/portcullis.yaml  $work/nginx/
  Stop        Ctrl-C

MSG
wait -n "${pids[@]}"
