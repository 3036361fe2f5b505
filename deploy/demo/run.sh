#!/usr/bin/env bash
# Runs portcullis end to end on this machine: the oidc-provider fixture as the identity
# provider, the demo SPA + API as the upstream, and portcullis with the embedded memory store.
# Everything listens on loopback only; Ctrl-C stops all three.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${PORTCULLIS_BIN:-$root/target/debug/portcullis}
port=${DEMO_PORT:-4480}
admin_port=${DEMO_ADMIN_PORT:-4481}
origin="http://127.0.0.1:$port"
# shellcheck source=deploy/demo/lib.sh
source "$root/deploy/demo/lib.sh"

cd "$root/tests/fixtures/op"
OP_PORT=0 REDIRECT_URIS="$origin/bff/callback" POST_LOGOUT_REDIRECT_URIS="$origin/bff/logout/callback" AT_TTL=60 \
  node op.mjs >"$work/op.out" 2>"$work/op.log" &
pids+=($!)
cd "$root/deploy/demo"
PORT=0 node upstream.mjs >"$work/upstream.out" 2>"$work/upstream.log" &
pids+=($!)
issuer=$(wait_for_line "$work/op.out" OP_READY)
upstream_port=$(wait_for_line "$work/upstream.out" UPSTREAM_READY)

printf 's3c:r+t/=%%\n' >"$work/client-secret"
cat >"$work/portcullis.yaml" <<YAML
listen: "127.0.0.1:$port"
admin_listen: "127.0.0.1:$admin_port"
public_url: "$origin"
oidc:
  issuer: "$issuer"
  client_id: "portcullis"
  client_secret_file: "$work/client-secret"
session:
  store: memory
routes:
  - { path: "/api/", upstream: "http://127.0.0.1:$upstream_port", kind: api }
  - { path: "/public/", upstream: "http://127.0.0.1:$upstream_port", kind: public }
  - { path: "/", upstream: "http://127.0.0.1:$upstream_port", kind: page }
YAML

cat <<MSG

  portcullis demo
  ---------------
  Open        $origin/
  Sign in as  any name (e.g. alice), any password, then "Continue" on the consent page
  Admin       http://127.0.0.1:$admin_port/metrics  /readyz  /healthz
  Config      $work/portcullis.yaml
  Stop        Ctrl-C

MSG
"$bin" serve --config "$work/portcullis.yaml" &
pids+=($!)
wait "${pids[-1]}"
