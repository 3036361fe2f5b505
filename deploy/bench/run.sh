#!/usr/bin/env bash
# `make bench`: an authenticated GET through portcullis (redis store) against the same nginx
# upstream hit directly and through nginx proxy_pass, measured with wrk in one run on loopback.
# Records numbers; asserts nothing. Results go to target/bench/results.md and stdout.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${PORTCULLIS_BIN:-$root/target/release/portcullis}
duration=${BENCH_DURATION:-10s}
connections=${BENCH_CONNECTIONS:-32}
out_dir=$root/target/bench
mkdir -p "$out_dir"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for_line() {
  for _ in $(seq 1 300); do
    if line=$(grep -m1 "^$2 " "$1" 2>/dev/null); then echo "${line#"$2 "}"; return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $2" >&2; return 1
}
wait_http() {
  for _ in $(seq 1 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "timed out waiting for $1" >&2; return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

redis_port=$(free_port); nginx_port=$(free_port); nginx_proxy_port=$(free_port); port=$(free_port); admin_port=$(free_port)
origin="http://127.0.0.1:$port"

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
pids+=($!)

mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$nginx_port; location / { default_type application/json; return 200 '{"ok":true}'; } }
  # The baseline for a proxy hop: nginx proxy_pass with upstream keep-alive, injecting a header.
  upstream origin { server 127.0.0.1:$nginx_port; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_proxy_port;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer static-benchmark-token";
    }
  }
}
NGINX
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)

cd "$root/tests/fixtures/op"
OP_PORT=0 REDIRECT_URIS="$origin/bff/callback" AT_TTL=3600 EXIT_ON_STDIN_CLOSE=0 node op.mjs >"$work/op.out" 2>/dev/null &
pids+=($!)
issuer=$(wait_for_line "$work/op.out" OP_READY)
cd "$root"

cat >"$work/portcullis.yaml" <<YAML
listen: "127.0.0.1:$port"
admin_listen: "127.0.0.1:$admin_port"
public_url: "$origin"
oidc:
  issuer: "$issuer"
  client_id: "portcullis"
  client_secret: "s3c:r+t/=%"
session:
  store: redis
  redis_url: "redis://127.0.0.1:$redis_port"
routes:
  - { path: "/api/", upstream: "http://127.0.0.1:$nginx_port", kind: api }
  - { path: "/public/", upstream: "http://127.0.0.1:$nginx_port", kind: public }
server:
  threads: ${BENCH_THREADS:-1}
log:
  level: warn
YAML
"$bin" serve --config "$work/portcullis.yaml" 2>"$work/portcullis.log" &
ppid=$!
pids+=($ppid)
wait_http "http://127.0.0.1:$admin_port/readyz"
wait_http "http://127.0.0.1:$nginx_port/"

# Log in the way a browser does: /bff/login → the OP's forms → /bff/callback.
login_started=$(date +%s%N)
curl -s -o /dev/null -D "$work/h1" "$origin/bff/login?returnTo=/"
txn=$(grep -i '^set-cookie' "$work/h1" | sed 's/^[^:]*: //; s/;.*//')
url=$(grep -i '^location' "$work/h1" | sed 's/^[^:]*: //' | tr -d '\r')
jar=$work/op.jar
for _ in $(seq 1 10); do
  case $url in "$origin"/*) break ;; esac
  page=$(curl -s -c "$jar" -b "$jar" -D "$work/h" "$url")
  loc=$(grep -i '^location' "$work/h" | sed 's/^[^:]*: //' | tr -d '\r' || true)
  if [ -z "$loc" ]; then
    if grep -q 'value="login"' <<<"$page"; then form='prompt=login&login=bench&password=x'; else form='prompt=consent'; fi
    curl -s -c "$jar" -b "$jar" -D "$work/h" -o /dev/null -d "$form" "$url"
    loc=$(grep -i '^location' "$work/h" | sed 's/^[^:]*: //' | tr -d '\r')
  fi
  case $loc in http*) url=$loc ;; *) url="$issuer$loc" ;; esac
done
curl -s -o /dev/null -D "$work/h2" -b "$txn" "$url"
login_ms=$(( ($(date +%s%N) - login_started) / 1000000 ))
session=$(grep -i '^set-cookie: __Host-portcullis=' "$work/h2" | sed 's/^[^:]*: //; s/;.*//')
[ -n "$session" ] || { echo "login failed" >&2; exit 1; }
status=$(curl -s -o /dev/null -w '%{http_code}' -b "$session" -H 'X-CSRF: 1' "$origin/api/bench")
[ "$status" = 200 ] || { echo "authenticated GET answered $status" >&2; exit 1; }

run_wrk() { # name url [header...]
  local name=$1 url=$2; shift 2
  local args=()
  for h in "$@"; do args+=(-H "$h"); done
  local before after
  before=$(cpu_ticks "$ppid")
  wrk -t1 -c"$connections" -d"$duration" --latency "${args[@]}" "$url" >"$work/$name.wrk"
  after=$(cpu_ticks "$ppid")
  local rps p50 p99 reqs
  rps=$(awk '/^Requests\/sec/ {print $2}' "$work/$name.wrk")
  reqs=$(awk '/requests in/ {print $1}' "$work/$name.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$work/$name.wrk")
  p99=$(awk '$1=="99%" {print $2}' "$work/$name.wrk")
  local hz; hz=$(getconf CLK_TCK)
  local cpu_us="-"
  case $name in direct | nginx*) ;; *) cpu_us=$(awk -v t=$((after - before)) -v n="$reqs" -v hz="$hz" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}') ;; esac
  printf '| %-28s | %10s | %8s | %8s | %10s |\n' "$name" "$rps" "$p50" "$p99" "$cpu_us" >>"$work/table"
  echo "$rps" >"$work/$name.rps"
}

: >"$work/table"
run_wrk direct "http://127.0.0.1:$nginx_port/api/bench"
run_wrk "nginx proxy_pass" "http://127.0.0.1:$nginx_proxy_port/api/bench"
run_wrk "portcullis public" "$origin/public/bench"
run_wrk "portcullis api (redis)" "$origin/api/bench" "Cookie: $session" "X-CSRF: 1"
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$ppid/status")
ratio=$(awk -v a="$(cat "$work/portcullis api (redis).rps")" -v d="$(cat "$work/direct.rps")" 'BEGIN {printf "%.2f", a / d}')
ratio_nginx=$(awk -v a="$(cat "$work/portcullis api (redis).rps")" -v d="$(cat "$work/nginx proxy_pass.rps")" 'BEGIN {printf "%.2f", a / d}')
ratio_public=$(awk -v a="$(cat "$work/portcullis api (redis).rps")" -v d="$(cat "$work/portcullis public.rps")" 'BEGIN {printf "%.2f", a / d}')
non2xx=$(grep -h "Non-2xx" "$work"/*.wrk || true)

{
  echo "# portcullis benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t1 -c$connections -d$duration, portcullis threads ${BENCH_THREADS:-1})"
  echo
  echo "| target                       |      req/s |      p50 |      p99 | CPU µs/req |"
  echo "|------------------------------|-----------:|---------:|---------:|-----------:|"
  cat "$work/table"
  echo
  echo "- authenticated api / direct upstream: **$ratio**"
  echo "- authenticated api / public route:    **$ratio_public**"
  echo "- authenticated api / nginx proxy_pass:  **$ratio_nginx**"
  echo "- portcullis RSS after the runs: $((rss_kb / 1024)) MiB"
  echo "- one login round trip (curl through the OP's forms, OP time included): ${login_ms} ms"
  [ -z "$non2xx" ] || echo "- non-2xx responses: $non2xx"
} | tee "$out_dir/results.md"
