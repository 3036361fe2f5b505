#!/usr/bin/env bash
# `make bench`: authenticated GETs through portcullis (memory store, Redis, Redis Cluster; 1 to
# 100 000 sessions in the store) against the same nginx upstream hit directly, through nginx
# proxy_pass and through oauth2-proxy (when installed), all measured with wrk in one run on
# loopback, beside a bare Pingora passthrough (examples/bare_passthrough.rs, the floor portcullis's
# own work sits on). Ingress auth rows: the same sessions asked about on portcullis's auth port as
# ingress-nginx asks (X-Original-URL), directly and through a real nginx auth_request in front of
# the upstream. Records numbers; asserts nothing. Results go to target/bench/results.md and stdout.
#
# Knobs: BENCH_DURATION (10s), BENCH_CONNECTIONS (32), BENCH_THREADS (portcullis worker
# threads, 1), BENCH_SCALE_THREADS (the thread count compared with 1 thread; every core), BENCH_SESSIONS ("1 1000 10000 100000"),
# BENCH_PACED_RATE (the fixed rate whose p99 is compared with direct's, 5000 req/s), BENCH_PROFILE=1 (perf record the
# portcullis process during the Redis api row into target/bench/perf.data), OAUTH2_PROXY
# (path to an oauth2-proxy binary; default .tools/bin/oauth2-proxy when present),
# BENCH_ONLY=machine (only the machine-client rows beside the memory-store session row), BENCH_ONLY=paced
# (only the interleaved rounds: paced latency and the CPU ratios to bare Pingora and nginx proxy_pass; BENCH_PACED_ROUNDS
# of BENCH_PACED_DURATION, 9 of 5s), BENCH_ONLY=instructions (only the callgrind rows,
# BENCH_INSTRUCTIONS_DURATION, 5s), VEGETA (path to vegeta; default .tools/bin/vegeta).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${PORTCULLIS_BIN:-$root/target/release/portcullis}
seeder=${SEEDER_BIN:-$root/target/release/examples/seed_sessions}
bare=${BARE_BIN:-$root/target/release/examples/bare_passthrough}
oauth2_proxy=${OAUTH2_PROXY:-$root/.tools/bin/oauth2-proxy}
vegeta=${VEGETA:-$root/.tools/bin/vegeta}
duration=${BENCH_DURATION:-10s}
connections=${BENCH_CONNECTIONS:-32}
session_counts=${BENCH_SESSIONS:-1 1000 10000 100000}
paced_rate=${BENCH_PACED_RATE:-5000}
paced_rounds=${BENCH_PACED_ROUNDS:-9}
paced_duration=${BENCH_PACED_DURATION:-5s}
instructions_duration=${BENCH_INSTRUCTIONS_DURATION:-5s}
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

# Ports below 55536, so a Cluster node's bus port could follow the port + 10000 rule too.
free_port() { python3 -c 'import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if p < 55536: print(p); break'; }
wait_for_line() {
  for _ in $(seq 1 300); do
    if line=$(grep -m1 "^$2 " "$1" 2>/dev/null); then echo "${line#"$2 "}"; return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $2" >&2; return 1
}
wait_http() {
  for _ in $(seq 1 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "timed out waiting for $1" >&2; return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
upstream_accepts() { curl -s "http://127.0.0.1:$status_port/" | awk 'NR == 3 {print $1}'; }
header_value() { grep -i "^$2:" "$1" | head -1 | sed 's/^[^:]*: //' | tr -d '\r'; }

redis_port=$(free_port); nginx_port=$(free_port); nginx_proxy_port=$(free_port); status_port=$(free_port)
o2p_port=$(free_port)
cluster_ports=($(free_port) $(free_port) $(free_port))

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
pids+=($!)
for p in "${cluster_ports[@]}"; do
  mkdir -p "$work/cluster-$p"
  redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$work/cluster-$p" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-port $((p + 10000)) >/dev/null &
  pids+=($!)
done

# Two nginx processes, so the proxy_pass baseline's CPU is its own: the upstream (also serving
# the direct row) and the proxy in front of it.
nginx_conf() { # name servers...
  local name=$1; shift
  mkdir -p "$work/$name"
  cat >"$work/$name.conf" <<NGINX
worker_processes 1;
pid $work/$name/nginx.pid;
error_log $work/$name/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/$name; proxy_temp_path $work/$name; fastcgi_temp_path $work/$name;
  uwsgi_temp_path $work/$name; scgi_temp_path $work/$name;
  keepalive_requests 1000000;
  $*
}
NGINX
  nginx -c "$work/$name.conf" -g 'daemon off;' &
  pids+=($!)
}
# stub_status counts accepted connections: the new upstream connections each row opens.
nginx_conf upstream "server { listen 127.0.0.1:$nginx_port; location / { default_type application/json; return 200 '{\"ok\":true}'; } }
  server { listen 127.0.0.1:$status_port; location / { stub_status; } }"
nginx_master=$!
# The baseline for a proxy hop: nginx proxy_pass with upstream keep-alive, injecting a header.
nginx_conf proxy "upstream origin { server 127.0.0.1:$nginx_port; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_proxy_port;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Authorization \"Bearer static-benchmark-token\";
    }
  }"
nginx_proxy_master=$!
wait_http "http://127.0.0.1:$nginx_port/"

for _ in $(seq 1 100); do redis-cli -p "${cluster_ports[0]}" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli --cluster create "${cluster_ports[@]/#/127.0.0.1:}" --cluster-yes >/dev/null
for _ in $(seq 1 300); do
  redis-cli -p "${cluster_ports[0]}" cluster info | grep -q 'cluster_state:ok' && break
  sleep 0.1
done

# One OP for every proxy; the origins of all portcullis runs and of oauth2-proxy are registered.
portcullis_ports=($(free_port) $(free_port) $(free_port) $(free_port))
admin_ports=($(free_port) $(free_port) $(free_port) $(free_port))
auth_ports=($(free_port) $(free_port) $(free_port) $(free_port))
redirects="http://127.0.0.1:$o2p_port/oauth2/callback"
for p in "${portcullis_ports[@]}"; do redirects="$redirects,http://127.0.0.1:$p/bff/callback"; done
cd "$root/tests/fixtures/op"
MACHINE_CLIENT=1 OP_PORT=0 REDIRECT_URIS="$redirects" AT_TTL=3600 EXIT_ON_STDIN_CLOSE=0 node op.mjs >"$work/op.out" 2>/dev/null &
pids+=($!)
issuer=$(wait_for_line "$work/op.out" OP_READY)
cd "$root"

# Follows a login from the proxy's start URL through the OP's forms until the OP redirects back
# to `callback_prefix`; prints that callback URL. Cookies go to the jar `$3`.
login_via_op() { # start_url callback_prefix jar
  local url=$1 prefix=$2 jar=$3 page loc form
  curl -s -o /dev/null -c "$jar" -b "$jar" -D "$work/h" "$url"
  url=$(header_value "$work/h" location)
  for _ in $(seq 1 10); do
    case $url in "$prefix"*) echo "$url"; return 0 ;; esac
    page=$(curl -s -c "$jar" -b "$jar" -D "$work/h" "$url")
    loc=$(header_value "$work/h" location)
    if [ -z "$loc" ]; then
      if grep -q 'value="login"' <<<"$page"; then form='prompt=login&login=bench&password=x'; else form='prompt=consent'; fi
      curl -s -c "$jar" -b "$jar" -D "$work/h" -o /dev/null -d "$form" "$url"
      loc=$(header_value "$work/h" location)
    fi
    case $loc in http*) url=$loc ;; *) url="$issuer$loc" ;; esac
  done
  echo "login did not come back to $prefix" >&2; return 1
}

# Logs in to portcullis at `origin` the way a browser does; prints the session's Cookie value.
portcullis_login() { # origin
  local jar=$work/jar.$RANDOM callback
  callback=$(login_via_op "$1/bff/login?returnTo=/" "$1/bff/callback" "$jar")
  curl -s -o /dev/null -b "$jar" -D "$work/h2" "$callback"
  grep -i '^set-cookie: __Host-portcullis=' "$work/h2" | sed 's/^[^:]*: //; s/;.*//'
}

: >"$work/table"
# wrk's Lua script spreads requests over every cookie in a file (one session per line), in
# order, starting after the `offset`-th (so successive runs carry on where the last stopped).
cat >"$work/cookies.lua" <<'LUA'
local cookies, n, i = {}, 0, 0
init = function(args)
  for line in io.lines(args[1]) do n = n + 1; cookies[n] = line end
  i = tonumber(args[2] or "0") % n
end
-- A headers table given to wrk.format replaces wrk's own (-H), so they are copied in.
request = function()
  i = i % n + 1
  local headers = { ["Cookie"] = cookies[i], ["X-CSRF"] = "1" }
  for k, v in pairs(wrk.headers) do headers[k] = headers[k] or v end
  return wrk.format(nil, nil, headers)
end
LUA
# The floors (direct, nginx proxy_pass, bare Pingora) get the request the api rows send: a
# cookie of the session cookie's name and length and `X-CSRF`, so a ratio to a floor compares
# the same bytes in and out, not a smaller request.
printf '__Host-portcullis=%s\n' "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')" >"$work/floor.cookies"

run_wrk() { # name pid url cookie-file|- [header...]
  local name=$1 pid=$2 url=$3 cookies=$4; shift 4
  local args=()
  for h in "$@"; do args+=(-H "$h"); done
  [ "$cookies" = - ] || args+=(-s "$work/cookies.lua")
  local before after accepts_before accepts_after hits_before=0 misses_before=0 hits=-
  accepts_before=$(upstream_accepts)
  [ "$pid" = - ] || before=$(cpu_ticks "$pid")
  case $name in "portcullis api"*|"portcullis auth"*|"nginx auth_request"*)
    hits_before=$(cache_events hit); misses_before=$(cache_events miss) ;;
  esac
  if [ "$cookies" = - ]; then
    wrk -t1 -c"$connections" -d"$duration" --latency "${args[@]}" "$url" >"$work/row.wrk"
  else
    wrk -t1 -c"$connections" -d"$duration" --latency "${args[@]}" "$url" -- "$cookies" >"$work/row.wrk"
  fi
  accepts_after=$(upstream_accepts)
  local rps p50 p99 reqs non2xx cpu_us=- rss=- conns
  rps=$(awk '/^Requests\/sec/ {print $2}' "$work/row.wrk")
  reqs=$(awk '/requests in/ {print $1}' "$work/row.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$work/row.wrk")
  p99=$(awk '$1=="99%" {print $2}' "$work/row.wrk")
  non2xx=$(awk '/Non-2xx/ {print $4}' "$work/row.wrk")
  # The stub_status request itself is one accepted connection.
  conns=$((accepts_after - accepts_before - 1))
  if [ "$pid" != - ]; then
    after=$(cpu_ticks "$pid")
    cpu_us=$(awk -v t=$((after - before)) -v n="$reqs" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    rss=$(rss_mib "$pid")
  fi
  case $name in "portcullis api"*|"portcullis auth"*|"nginx auth_request"*)
    hits=$(awk -v h=$(($(cache_events hit) - hits_before)) -v m=$(($(cache_events miss) - misses_before)) \
      'BEGIN {printf "%.1f %%", h + m ? 100 * h / (h + m) : 0}') ;;
  esac
  printf '| %-46s | %9s | %8s | %8s | %8s | %6s | %8s | %8s | %6s |\n' \
    "$name" "$rps" "$p50" "$p99" "$cpu_us" "$rss" "$conns" "$hits" "${non2xx:-0}" >>"$work/table"
  echo "$rps" >"$work/$(tr ' /()' '____' <<<"$name").rps"
  echo "$cpu_us" >"$work/$(tr ' /()' '____' <<<"$name").cpu"
  echo "$name: $rps req/s, $cpu_us µs CPU/req" >&2
}
rps_of() { cat "$work/$(tr ' /()' '____' <<<"$1").rps"; }
cpu_of() { cat "$work/$(tr ' /()' '____' <<<"$1").cpu"; }

# Latency at a fixed rate, open loop: vegeta sends each request at its scheduled time (every
# 1/rate s), whatever the answers before it, so a slow answer shows in the percentiles instead of
# pausing the sender (wrk's closed loop would send less while the server is slow, and its
# connections drift into bursts). Prints "p50 p99 achieved-rate".
paced_latency() { # url rate [header...]
  local url=$1 rate=$2; shift 2
  local args=()
  for h in "$@"; do args+=(-header "$h"); done
  echo "GET $url" | "$vegeta" attack -rate="$rate/1s" -duration="$paced_duration" -http2=false "${args[@]}" \
    | "$vegeta" report -type=json >"$work/paced.json"
  python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
codes = r.get("status_codes") or {}
bad = sum(n for c, n in codes.items() if not c.startswith("2"))
l = r["latencies"]
print("%.0fus %.0fus %d%s" % (l["50th"] / 1e3, l["99th"] / 1e3, r["throughput"], " (%d non-2xx)" % bad if bad else ""))' "$work/paced.json"
}
paced_row() { # label url [header...]
  local label=$1; shift
  local p50 p99 achieved rest
  read -r p50 p99 achieved rest < <(paced_latency "$1" "$paced_rate" "${@:2}")
  echo "$p50 $p99" >>"$work/paced-$(tr ' /(),' '_____' <<<"$label")"
  echo "paced $label: p50 $p50, p99 $p99, $achieved req/s${rest:+ $rest}" >&2
}
# CPU µs per request of one wrk run (BENCH_PACED_DURATION) against `pid`, appended to `file`.
cpu_round() { # file pid url cookie-file|-
  local file=$1 pid=$2 url=$3 cookies=$4 args=(-t1 -c"$connections") before reqs
  [ "$cookies" = - ] || args+=(-s "$work/cookies.lua")
  before=$(cpu_ticks "$pid")
  if [ "$cookies" = - ]; then
    reqs=$(wrk "${args[@]}" -d"$paced_duration" "$url" | awk '/requests in/ {print $1}')
  else
    reqs=$(wrk "${args[@]}" -d"$paced_duration" "$url" -- "$cookies" | awk '/requests in/ {print $1}')
  fi
  awk -v t=$(($(cpu_ticks "$pid") - before)) -v n="$reqs" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {printf "%.1f\n", t / hz * 1e6 / n}' >>"$file"
}
median_of() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; } # the numbers on stdin
# On a 2-core machine shared by the load generator, the proxy and the upstream, the tail moves by a
# millisecond and CPU per request by ±20 % from one round to the next, so these are measured in
# BENCH_PACED_ROUNDS rounds, the targets interleaved within each (a disturbance hits all alike),
# and the median counts. Paced latency: the upstream direct, one nginx proxy_pass hop, one bare
# Pingora hop, and portcullis (Redis store, 1 session, cache hits); CPU per request at full load:
# nginx proxy_pass, the same bare Pingora, bare Pingora with the upstream timeouts portcullis sets
# (connect, read, pooled idle: Pingora arms a timer for each, the bare floor has none) and
# portcullis, portcullis's ratios to each taken round by round. Every target gets the same
# request: the session's cookie and X-CSRF.
paced_targets=(direct "nginx proxy_pass" "bare Pingora passthrough" "portcullis api, redis, 1 session")
interleaved_rows() {
  local bare_port bare_paced timed_port bare_timed same round
  bare_port=$(free_port)
  "$bare" "127.0.0.1:$bare_port" "127.0.0.1:$nginx_port" "${BENCH_THREADS:-1}" 1024 2>"$work/bare-paced.log" &
  bare_paced=$!
  pids+=($bare_paced)
  timed_port=$(free_port)
  "$bare" "127.0.0.1:$timed_port" "127.0.0.1:$nginx_port" "${BENCH_THREADS:-1}" 1024 per-thread timeouts \
    2>"$work/bare-timed.log" &
  bare_timed=$!
  pids+=($bare_timed)
  wait_http "http://127.0.0.1:$bare_port/api/bench"
  wait_http "http://127.0.0.1:$timed_port/api/bench"
  start_portcullis 1 "  store: redis
  redis_url: \"redis://127.0.0.1:$redis_port\""
  redis-cli -p "$redis_port" flushall >/dev/null
  "$seeder" "$work/portcullis-1.yaml" 1 >"$work/paced.cookies"
  wrk -t1 -c"$connections" -d2s -s "$work/cookies.lua" "$origin/api/bench" -- "$work/paced.cookies" >/dev/null
  same=("Cookie: $(head -1 "$work/paced.cookies")" "X-CSRF: 1")
  for round in $(seq 1 "$paced_rounds"); do
    paced_row direct "http://127.0.0.1:$nginx_port/api/bench" "${same[@]}"
    paced_row "nginx proxy_pass" "http://127.0.0.1:$nginx_proxy_port/api/bench" "${same[@]}"
    paced_row "bare Pingora passthrough" "http://127.0.0.1:$bare_port/api/bench" "${same[@]}"
    paced_row "portcullis api, redis, 1 session" "$origin/api/bench" "${same[@]}"
  done
  : >"$work/floor-ratios"
  : >"$work/timed-ratios"
  : >"$work/nginx-ratios"
  for round in $(seq 1 "$paced_rounds"); do
    : >"$work/floor-round"
    cpu_round "$work/floor-round" "$(pgrep -P "$nginx_proxy_master")" "http://127.0.0.1:$nginx_proxy_port/api/bench" "$work/paced.cookies"
    cpu_round "$work/floor-round" "$bare_paced" "http://127.0.0.1:$bare_port/api/bench" "$work/paced.cookies"
    cpu_round "$work/floor-round" "$bare_timed" "http://127.0.0.1:$timed_port/api/bench" "$work/paced.cookies"
    cpu_round "$work/floor-round" "$ppid" "$origin/api/bench" "$work/paced.cookies"
    awk 'NR == 2 {b = $1} NR == 4 {printf "%.2f\n", $1 / b}' "$work/floor-round" >>"$work/floor-ratios"
    awk 'NR == 3 {b = $1} NR == 4 {printf "%.2f\n", $1 / b}' "$work/floor-round" >>"$work/timed-ratios"
    awk 'NR == 1 {n = $1} NR == 4 {printf "%.2f\n", $1 / n}' "$work/floor-round" >>"$work/nginx-ratios"
  done
  stop_portcullis
  kill -9 "$bare_paced" "$bare_timed"; wait "$bare_paced" "$bare_timed" 2>/dev/null || true
}
# User-space instructions per request, counted by callgrind: unlike CPU time on a small machine
# shared with the load generator and the upstream, the count barely moves from one run to the
# next, so it shows what a change to the request path costs or saves. Kernel time (the
# syscalls, the same for both: two reads and two writes per proxied request) is not counted.
instructions_of() { # pid url cookie-file|- [header...]
  local pid=$1 url=$2 cookies=$3; shift 3
  local args=(-t1 -c8) script_args=() reqs before
  for h in "$@"; do args+=(-H "$h"); done
  [ "$cookies" = - ] || { args+=(-s "$work/cookies.lua"); script_args=(-- "$cookies"); }
  wrk "${args[@]}" -d2s "$url" "${script_args[@]}" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  before=$(ls "$work"/callgrind.* 2>/dev/null | wc -l)
  reqs=$(wrk "${args[@]}" -d"$instructions_duration" "$url" "${script_args[@]}" | awk '/requests in/ {print $1}')
  callgrind_control -d "$pid" >/dev/null 2>&1
  for _ in $(seq 1 100); do [ "$(ls "$work"/callgrind.* | wc -l)" -gt "$before" ] && break; sleep 0.1; done
  awk -v r="$reqs" '/^summary:/ {printf "%d", $2 / r}' "$(ls -t "$work"/callgrind.* | head -1)"
}
instructions_rows() {
  local callgrind=(valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$work/callgrind.%p")
  local port pid bare_ir timed_ir public_ir api_ir
  port=$(free_port)
  "${callgrind[@]}" "$bare" "127.0.0.1:$port" "127.0.0.1:$nginx_port" 1 1024 2>"$work/bare-callgrind.log" &
  pid=$!
  pids+=($pid)
  wait_http "http://127.0.0.1:$port/api/bench"
  bare_ir=$(instructions_of "$pid" "http://127.0.0.1:$port/api/bench" "$work/floor.cookies")
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  port=$(free_port)
  "${callgrind[@]}" "$bare" "127.0.0.1:$port" "127.0.0.1:$nginx_port" 1 1024 per-thread timeouts \
    2>"$work/bare-callgrind.log" &
  pid=$!
  pids+=($pid)
  wait_http "http://127.0.0.1:$port/api/bench"
  timed_ir=$(instructions_of "$pid" "http://127.0.0.1:$port/api/bench" "$work/floor.cookies")
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  bench_wrapper="${callgrind[*]}" start_portcullis 1 "  store: redis
  redis_url: \"redis://127.0.0.1:$redis_port\""
  redis-cli -p "$redis_port" flushall >/dev/null
  "$seeder" "$work/portcullis-1.yaml" 1 >"$work/instructions.cookies"
  public_ir=$(instructions_of "$ppid" "$origin/public/bench" -)
  api_ir=$(instructions_of "$ppid" "$origin/api/bench" "$work/instructions.cookies")
  stop_portcullis
  {
    echo "| user-space instructions per request (callgrind) | instructions | / bare Pingora |"
    echo "|------------------------------------------------|-------------:|---------------:|"
    printf '| %-46s | %12s | %14s |\n' "bare Pingora passthrough" "$bare_ir" "1.00"
    printf '| %-46s | %12s | %14s |\n' "bare Pingora, portcullis's upstream timeouts" "$timed_ir" "$(awk -v a="$timed_ir" -v b="$bare_ir" 'BEGIN {printf "%.2f", a / b}')"
    printf '| %-46s | %12s | %14s |\n' "portcullis public" "$public_ir" "$(awk -v a="$public_ir" -v b="$bare_ir" 'BEGIN {printf "%.2f", a / b}')"
    printf '| %-46s | %12s | %14s |\n' "portcullis api, redis, 1 session" "$api_ir" "$(awk -v a="$api_ir" -v b="$bare_ir" 'BEGIN {printf "%.2f", a / b}')"
  } >"$work/instructions"
}
# Median over the rounds of one column (1: p50, 2: p99), in µs.
paced_median() { # label column
  tr -d 'us' <"$work/paced-$(tr ' /(),' '_____' <<<"$1")" | awk -v c="$2" '{print $c}' | median_of
}
floor_line() {
  echo "- CPU per request, authenticated api (redis, 1 session) / bare Pingora passthrough, median of $paced_rounds interleaved rounds: **$(median_of <"$work/floor-ratios")** (rounds: $(paste -sd ' ' "$work/floor-ratios"))"
  echo "- CPU per request, authenticated api (redis, 1 session) / bare Pingora with portcullis's upstream timeouts, median of the same rounds: **$(median_of <"$work/timed-ratios")** (rounds: $(paste -sd ' ' "$work/timed-ratios"))"
  echo "- CPU per request, authenticated api (redis, 1 session) / nginx proxy_pass, median of the same rounds: **$(median_of <"$work/nginx-ratios")** (rounds: $(paste -sd ' ' "$work/nginx-ratios"))"
}
paced_table() {
  local t direct_p99
  direct_p99=$(paced_median direct 2)
  echo "| at a paced $paced_rate req/s (vegeta, open loop; median of $paced_rounds) | p50 µs | p99 µs | p99 − direct's |"
  echo "|------------------------------------------------|-------:|-------:|---------------:|"
  for t in "${paced_targets[@]}"; do
    printf '| %-46s | %6s | %6s | %14s |\n' "$t" "$(paced_median "$t" 1)" "$(paced_median "$t" 2)" \
      "$(awk -v a="$(paced_median "$t" 2)" -v b="$direct_p99" 'BEGIN {printf "%+d µs", a - b}')"
  done
}

start_portcullis() { # index store-yaml [threads]
  local i=$1 port=${portcullis_ports[$1]} admin=${admin_ports[$1]} threads=${3:-${BENCH_THREADS:-1}}
  auth_port=${auth_ports[$1]}
  cat >"$work/portcullis-$i.yaml" <<YAML
listen: "127.0.0.1:$port"
admin_listen: "127.0.0.1:$admin"
public_url: "http://127.0.0.1:$port"
oidc:
  issuer: "$issuer"
  client_id: "portcullis"
  client_secret: "s3c:r+t/=%"
${bench_oidc_extra:-}
session:
$2
  cache_max_entries: 100000
routes:
  - { path: "/api/", upstream: "http://127.0.0.1:$nginx_port", kind: api }
${bench_routes_extra:-}
  - { path: "/public/", upstream: "http://127.0.0.1:$nginx_port", kind: public }
${bench_top_extra:-}
server:
  threads: $threads
ingress_auth:
  enabled: true
  listen: "127.0.0.1:$auth_port"
  controller: nginx
  trusted_ingress: ["127.0.0.1"]
  hosts:
    - host: app.localhost
      paths:
        - { path: "/api/", kind: api }
log:
  level: warn
YAML
  ${bench_wrapper:-} "$bin" serve --config "$work/portcullis-$i.yaml" 2>"$work/portcullis-$i.log" &
  ppid=$!
  padmin=$admin
  pids+=($ppid)
  origin="http://127.0.0.1:$port"
  wait_http "http://127.0.0.1:$admin/readyz"
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "portcullis $i never became ready" >&2; return 1
}
stop_portcullis() { kill "$ppid"; wait "$ppid" 2>/dev/null || true; }
metric_sum() { # admin-port series-prefix
  curl -s "http://127.0.0.1:$1/metrics" | awk -v s="$2" 'index($0, s) == 1 {t += $2} END {printf "%.6f", t}'
}
cache_events() { # event
  curl -s "http://127.0.0.1:$padmin/metrics" | awk -v s="portcullis_session_cache_events_total{event=\"$1\"}" 'index($0, s) == 1 {print $2}'
}

# Machine clients: a service's own JWT access token (the OP's client-credentials grant, RFC 9068)
# on a machine_clients route, the same token on every request, so after the first its verdict
# comes from the cache: to compare with the session rows' cache hits.
machine_rows() {
  bench_routes_extra="  - { path: \"/machine/\", upstream: \"http://127.0.0.1:$nginx_port\", kind: api, machine_clients: { audiences: [\"https://api.test\"] } }"
  start_portcullis 0 "  store: memory"
  local token
  token=$(curl -s -u machine:machine-s3cret -d grant_type=client_credentials -d resource=https://api.test \
    -d scope=read "$issuer/token" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
  run_wrk "portcullis machine client, JWT, 1 token" "$ppid" "$origin/machine/bench" - "Authorization: Bearer $token"
  echo "machine-token cache: $(curl -s "http://127.0.0.1:$padmin/metrics" | grep '^portcullis_machine_token_cache_events_total' | tr '\n' ' ')" >&2
  stop_portcullis
  bench_routes_extra=
}

if [ "${BENCH_ONLY:-}" = machine ]; then
  start_portcullis 0 "  store: memory"
  portcullis_login "$origin" >"$work/one.cookies"
  run_wrk "portcullis api, memory store, 1 session" "$ppid" "$origin/api/bench" "$work/one.cookies"
  stop_portcullis
  machine_rows
  {
    echo "# portcullis machine-client rows ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t1 -c$connections -d$duration, portcullis threads ${BENCH_THREADS:-1})"
    echo
    echo "| target                                         |     req/s |      p50 |      p99 | CPU µs/req | RSS MiB | upstream conns | cache hits | non-2xx |"
    echo "|------------------------------------------------|----------:|---------:|---------:|-----------:|--------:|---------------:|-----------:|--------:|"
    cat "$work/table"
  } | tee "$out_dir/results-machine.md"
  exit 0
fi

if [ "${BENCH_ONLY:-}" = instructions ]; then
  instructions_rows
  { echo "# portcullis instructions per request ($(date -u +%Y-%m-%dT%H:%MZ), wrk -t1 -c8 -d$instructions_duration under callgrind)"
    echo; cat "$work/instructions"; } | tee "$out_dir/results-instructions.md"
  exit 0
fi
if [ "${BENCH_ONLY:-}" = paced ]; then
  wait_http "http://127.0.0.1:$nginx_proxy_port/"
  interleaved_rows
  { echo "# portcullis paced latency ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $paced_duration per round, portcullis threads ${BENCH_THREADS:-1})"
    echo; paced_table; echo; floor_line; } | tee "$out_dir/results-paced.md"
  exit 0
fi

wait_http "http://127.0.0.1:$nginx_proxy_port/"
run_wrk direct "$(pgrep -P "$nginx_master")" "http://127.0.0.1:$nginx_port/api/bench" "$work/floor.cookies"
run_wrk "nginx proxy_pass" "$(pgrep -P "$nginx_proxy_master")" "http://127.0.0.1:$nginx_proxy_port/api/bench" "$work/floor.cookies"

# The floor: Pingora forwarding to the same upstream with nothing of portcullis's on the path.
if [ -x "$bare" ]; then
  bare_port=$(free_port)
  "$bare" "127.0.0.1:$bare_port" "127.0.0.1:$nginx_port" "${BENCH_THREADS:-1}" 1024 2>"$work/bare.log" &
  bare_pid=$!
  pids+=($bare_pid)
  wait_http "http://127.0.0.1:$bare_port/api/bench"
  run_wrk "bare Pingora passthrough" "$bare_pid" "http://127.0.0.1:$bare_port/api/bench" "$work/floor.cookies"
  kill "$bare_pid"
else
  echo "bare Pingora passthrough not built ($bare); cargo build --release --example bare_passthrough"
fi

if [ -x "$oauth2_proxy" ]; then
  "$oauth2_proxy" --http-address="127.0.0.1:$o2p_port" --provider=oidc --oidc-issuer-url="$issuer" \
    --client-id=portcullis --client-secret='s3c:r+t/=%' --redirect-url="http://127.0.0.1:$o2p_port/oauth2/callback" \
    --upstream="http://127.0.0.1:$nginx_port/" --cookie-secret=0123456789abcdef0123456789abcdef \
    --cookie-secure=false --email-domain='*' --scope='openid email' --code-challenge-method=S256 \
    --session-store-type=redis --redis-connection-url="redis://127.0.0.1:$redis_port" \
    --set-authorization-header=true --pass-access-token=true --skip-provider-button=true \
    --request-logging=false --auth-logging=false --standard-logging=false >"$work/o2p.log" 2>&1 &
  o2p_pid=$!
  pids+=($o2p_pid)
  wait_http "http://127.0.0.1:$o2p_port/ping"
  jar=$work/o2p.jar
  callback=$(login_via_op "http://127.0.0.1:$o2p_port/oauth2/start?rd=/" "http://127.0.0.1:$o2p_port/oauth2/callback" "$jar")
  curl -s -o /dev/null -c "$jar" -b "$jar" "$callback"
  o2p_cookie=$(awk '$6 == "_oauth2_proxy" {print $6 "=" $7}' "$jar")
  status=$(curl -s -o /dev/null -w '%{http_code}' -b "$o2p_cookie" "http://127.0.0.1:$o2p_port/api/bench")
  if [ "$status" = 200 ]; then
    run_wrk "oauth2-proxy (redis sessions)" "$o2p_pid" "http://127.0.0.1:$o2p_port/api/bench" - "Cookie: $o2p_cookie"
  else
    echo "oauth2-proxy login failed ($status); row skipped" >&2
  fi
  kill "$o2p_pid"
else
  echo "oauth2-proxy not installed ($oauth2_proxy); run make bench-deps for its row" >&2
fi

# Memory store: idle RSS first, then logins (to time portcullis's own part), then load. A
# static route serves a 16 KiB hashed bundle from a build directory (read from disk, so from
# the page cache, on every request).
mkdir -p "$work/spa/assets"
head -c 16384 /dev/urandom >"$work/spa/assets/app-5KQHQWPF.js"
printf '<!doctype html><title>bench</title>\n' >"$work/spa/index.html"
bench_routes_extra="  - { path: \"/app/\", kind: static, root: \"$work/spa\" }"
start_portcullis 0 "  store: memory"
idle_rss=$(rss_mib "$ppid")
logins=${BENCH_LOGINS:-20}
for _ in $(seq 1 "$logins"); do session=$(portcullis_login "$origin"); done
bff_s=$(metric_sum "${admin_ports[0]}" 'portcullis_request_duration_seconds_sum{route_kind="bff"}')
op_s=$(metric_sum "${admin_ports[0]}" 'portcullis_op_request_duration_seconds_sum{call="token"}')
login_ms=$(awk -v b="$bff_s" -v o="$op_s" -v n="$logins" 'BEGIN {printf "%.2f", (b - o) * 1000 / n}')
op_ms=$(awk -v o="$op_s" -v n="$logins" 'BEGIN {printf "%.2f", o * 1000 / n}')
[ -n "$session" ] || { echo "login failed" >&2; exit 1; }
run_wrk "portcullis public" "$ppid" "$origin/public/bench" -
run_wrk "portcullis static file (16 KiB)" "$ppid" "$origin/app/assets/app-5KQHQWPF.js" -
echo "$session" >"$work/one.cookies"
run_wrk "portcullis api, memory store, 1 session" "$ppid" "$origin/api/bench" "$work/one.cookies"
stop_portcullis
bench_routes_extra=""

# DPoP (RFC 9449): one session with a DPoP-bound token; the same api request on a route that
# opts in (a fresh ES256 proof per upstream request) and on one that does not. The CPU
# difference between the two rows is what a proof adds.
bench_oidc_extra="  dpop: true"
bench_routes_extra="  - { path: \"/dpop/\", upstream: \"http://127.0.0.1:$nginx_port\", kind: api, dpop: true }"
start_portcullis 0 "  store: memory"
portcullis_login "$origin" >"$work/dpop.cookies"
run_wrk "portcullis api, DPoP session, plain route" "$ppid" "$origin/api/bench" "$work/dpop.cookies"
run_wrk "portcullis api, DPoP session, DPoP route" "$ppid" "$origin/dpop/bench" "$work/dpop.cookies"
stop_portcullis
bench_oidc_extra=; bench_routes_extra=
machine_rows

# Route policies and the identity assertion, one session (memory store): an `optional` page
# route asked anonymously and with the session, and an api route that also sends a signed
# identity assertion (signed once per session and host, then reused from the session cache).
node -e "process.stdout.write(require('node:crypto').generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }))" >"$work/assertion.pem"
bench_top_extra="identity_assertion:
  key_file: \"$work/assertion.pem\""
bench_routes_extra="  - { path: \"/maybe/\", upstream: \"http://127.0.0.1:$nginx_port\", kind: page, policy: optional }
  - { path: \"/asserted/\", upstream: \"http://127.0.0.1:$nginx_port\", kind: api, identity_assertion: true }"
start_portcullis 0 "  store: memory"
portcullis_login "$origin" >"$work/policy.cookies"
run_wrk "portcullis api, memory store, policy session" "$ppid" "$origin/api/bench" "$work/policy.cookies"
run_wrk "portcullis optional, anonymous" "$ppid" "$origin/maybe/bench" -
run_wrk "portcullis optional, 1 session" "$ppid" "$origin/maybe/bench" "$work/policy.cookies"
run_wrk "portcullis api + identity assertion" "$ppid" "$origin/asserted/bench" "$work/policy.cookies"
stop_portcullis
bench_top_extra=; bench_routes_extra=

# ingress-nginx's shape: nginx stays in the data path and asks portcullis per request
# (auth_request), copying the answer's Authorization to the upstream request. CPU is portcullis's.
ingress_row() {
  local ingress_port
  ingress_port=$(free_port)
  nginx_conf ingress "upstream origin { server 127.0.0.1:$nginx_port; keepalive 64; keepalive_requests 1000000; }
  upstream auth { server 127.0.0.1:$auth_port; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$ingress_port;
    location = /_external-auth {
      internal;
      proxy_pass http://auth/bff/auth;
      proxy_http_version 1.1;
      proxy_pass_request_body off;
      proxy_set_header Content-Length \"\";
      proxy_set_header Connection \"\";
      proxy_set_header X-Original-URL http://app.localhost\$request_uri;
      proxy_set_header X-Original-Method \$request_method;
    }
    location / {
      auth_request /_external-auth;
      auth_request_set \$auth_header \$upstream_http_authorization;
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Authorization \$auth_header;
    }
  }"
  local ingress_master=$!
  wait_http "http://127.0.0.1:$ingress_port/"
  run_wrk "nginx auth_request + portcullis, redis, 1 session" "$ppid" \
    "http://127.0.0.1:$ingress_port/api/bench" "$work/seeded.cookies"
  kill "$ingress_master"; wait "$ingress_master" 2>/dev/null || true
}

profile_row="portcullis api, redis, 1 session"
bench_store() { # index label store-yaml
  local i=$1 label=$2 n
  for n in $session_counts; do
    # Exactly n sessions in the store, and a fresh process: fred drops the invalidation a flush
    # sends (it has no keys), so a process kept across rows would hold the last row's sessions
    # in its cache beside this row's.
    for p in "$redis_port" "${cluster_ports[@]}"; do redis-cli -p "$p" flushall >/dev/null; done
    start_portcullis "$i" "$3"
    "$seeder" "$work/portcullis-$i.yaml" "$n" >"$work/seeded.cookies"
    local row="portcullis api, $label, $n session$([ "$n" = 1 ] || echo s)"
    # Warm up as a long-running process would be: until nearly every session is cached (a
    # session is cached from its second read on; the first extends its idle timeout).
    local offset=0 misses done_reqs
    for _ in $(seq 1 60); do
      misses=$(cache_events miss)
      wrk -t1 -c"$connections" -d2s -s "$work/cookies.lua" "$origin/api/bench" -- "$work/seeded.cookies" "$offset" >"$work/warm.wrk"
      done_reqs=$(awk '/requests in/ {print $1}' "$work/warm.wrk")
      offset=$((offset + done_reqs))
      [ $(( $(cache_events miss) - misses )) -le $((done_reqs / 100)) ] && [ "$offset" -ge "$n" ] && break
    done
    if [ "${BENCH_PROFILE:-0}" = 1 ] && [ "$row" = "$profile_row" ]; then
      perf record -e cpu-clock -F 999 -g -p "$ppid" -o "$out_dir/perf.data" -- sleep "${duration%s}" 2>/dev/null &
      perf_pid=$!
    fi
    run_wrk "$row" "$ppid" "$origin/api/bench" "$work/seeded.cookies"
    [ -z "${perf_pid:-}" ] || { wait "$perf_pid" || true; perf_pid=; }
    if [ "$label" = redis ]; then
      # The same sessions, asked about by an ingress controller instead of proxied.
      run_wrk "portcullis auth request, $label, $n session$([ "$n" = 1 ] || echo s)" "$ppid" \
        "http://127.0.0.1:$auth_port/bff/auth" "$work/seeded.cookies" \
        "X-Original-URL: http://app.localhost/api/bench" "X-Original-Method: GET"
    fi
    if [ "$label" = redis ] && [ "$n" = 1 ]; then
      ingress_row
    fi
    [ "$n" = 10000 ] && rss_10k=$(rss_mib "$ppid")
    stop_portcullis
  done
}
bench_store 1 redis "  store: redis
  redis_url: \"redis://127.0.0.1:$redis_port\""
bench_store 2 "redis cluster" "  store: redis
  redis_url: \"redis-cluster://127.0.0.1:${cluster_ports[0]},127.0.0.1:${cluster_ports[1]}\""

# More threads must not cost more per request: the same rows at 1 thread and at
# BENCH_SCALE_THREADS (default: every core), for the bare floor (as portcullis runs its threads,
# and on Pingora's work-stealing runtime for comparison) and for portcullis.
scale_threads=${BENCH_SCALE_THREADS:-$(nproc)}
for t in 1 "$scale_threads"; do
  if [ -x "$bare" ]; then
    for mode in per-thread work-stealing; do
      bare_port=$(free_port)
      "$bare" "127.0.0.1:$bare_port" "127.0.0.1:$nginx_port" "$t" 1024 "$mode" 2>"$work/bare.log" &
      scale_pid=$!
      pids+=($scale_pid)
      wait_http "http://127.0.0.1:$bare_port/api/bench"
      run_wrk "bare Pingora, $mode, threads $t" "$scale_pid" "http://127.0.0.1:$bare_port/api/bench" "$work/floor.cookies"
      # Nothing to drain: no graceful shutdown to wait for.
      kill -9 "$scale_pid"; wait "$scale_pid" 2>/dev/null || true
    done
  fi
  start_portcullis 3 "  store: redis
  redis_url: \"redis://127.0.0.1:$redis_port\"" "$t"
  redis-cli -p "$redis_port" flushall >/dev/null
  "$seeder" "$work/portcullis-3.yaml" 1 >"$work/scale.cookies"
  wrk -t1 -c"$connections" -d2s -s "$work/cookies.lua" "$origin/api/bench" -- "$work/scale.cookies" >/dev/null
  run_wrk "portcullis api, redis, threads $t" "$ppid" "$origin/api/bench" "$work/scale.cookies"
  stop_portcullis
done

[ -x "$vegeta" ] && [ -x "$bare" ] && interleaved_rows
command -v valgrind >/dev/null && [ -x "$bare" ] && instructions_rows
api_rps=$(rps_of "portcullis api, redis, 1 session")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
{
  echo "# portcullis benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t1 -c$connections -d$duration, portcullis threads ${BENCH_THREADS:-1})"
  echo
  echo "| target                                         |     req/s |      p50 |      p99 | CPU µs/req | RSS MiB | upstream conns | cache hits | non-2xx |"
  echo "|------------------------------------------------|----------:|---------:|---------:|-----------:|--------:|---------------:|-----------:|--------:|"
  cat "$work/table"
  echo
  if [ -x "$vegeta" ] && [ -x "$bare" ]; then paced_table; else echo "(paced latency: needs vegeta ($vegeta) and the bare passthrough)"; fi
  echo
  if [ -s "$work/instructions" ]; then cat "$work/instructions"; else echo "(instructions per request: needs valgrind and the bare passthrough)"; fi
  echo
  echo "- authenticated api (redis, 1 session) / public route: **$(ratio "$api_rps" "$(rps_of "portcullis public")")**"
  echo "- authenticated api (redis, 1 session) / nginx proxy_pass: **$(ratio "$api_rps" "$(rps_of "nginx proxy_pass")")**"
  echo "- authenticated api (redis, 1 session) / direct upstream: $(ratio "$api_rps" "$(rps_of direct)")"
  if [ -n "${bare_pid:-}" ]; then
    echo "- CPU per request, authenticated api (redis, 1 session) / bare Pingora passthrough, the rows above: $(ratio "$(cpu_of "portcullis api, redis, 1 session")" "$(cpu_of "bare Pingora passthrough")")"
  fi
  [ ! -s "$work/floor-ratios" ] || floor_line
  echo "- CPU per request, threads $scale_threads / threads 1: portcullis api **$(ratio "$(cpu_of "portcullis api, redis, threads $scale_threads")" "$(cpu_of "portcullis api, redis, threads 1")")**, bare Pingora per-thread $(ratio "$(cpu_of "bare Pingora, per-thread, threads $scale_threads")" "$(cpu_of "bare Pingora, per-thread, threads 1")"), bare Pingora work-stealing $(ratio "$(cpu_of "bare Pingora, work-stealing, threads $scale_threads")" "$(cpu_of "bare Pingora, work-stealing, threads 1")")"
  echo "- CPU per request, authenticated api (redis, 1 session) / nginx proxy_pass: **$(ratio "$(cpu_of "portcullis api, redis, 1 session")" "$(cpu_of "nginx proxy_pass")")**"
  echo "- CPU per request, auth request / proxied api request (redis, 1 session): **$(ratio "$(cpu_of "portcullis auth request, redis, 1 session")" "$(cpu_of "portcullis api, redis, 1 session")")**; the auth request's store round trips per request: see cache hits (a hit is none)"
  echo "- CPU per request, machine-client JWT (cached verdict) / api session (memory store, cache hit): **$(ratio "$(cpu_of "portcullis machine client, JWT, 1 token")" "$(cpu_of "portcullis api, memory store, 1 session")")**"
  echo "- DPoP proof per upstream request (ES256, ring): **$(awk -v a="$(cpu_of "portcullis api, DPoP session, DPoP route")" -v b="$(cpu_of "portcullis api, DPoP session, plain route")" 'BEGIN {printf "%.1f", a - b}') µs CPU** (DPoP route minus plain route, same session)"
  echo "- CPU per request, optional route / api route (memory store, same session): anonymous **$(ratio "$(cpu_of "portcullis optional, anonymous")" "$(cpu_of "portcullis api, memory store, policy session")")**, with the session **$(ratio "$(cpu_of "portcullis optional, 1 session")" "$(cpu_of "portcullis api, memory store, policy session")")**"
  echo "- identity assertion per request (memoised ES256 JWT): **$(awk -v a="$(cpu_of "portcullis api + identity assertion")" -v b="$(cpu_of "portcullis api, memory store, policy session")" 'BEGIN {printf "%.1f", a - b}') µs CPU** (assertion route minus plain api route, same session)"
  echo "- nginx auth_request + portcullis: nginx asks portcullis once per request; its row's CPU is portcullis's share"
  echo "- idle RSS (memory store, before any request): ${idle_rss} MiB; redis store with 10 000 sessions cached: ${rss_10k:-n/a} MiB"
  echo "- login round trip inside portcullis (/bff/login + /bff/callback minus the token call), mean of $logins: ${login_ms} ms (the OP's token endpoint: ${op_ms} ms)"
  echo "- CPU µs/req: the serving process's user + system time per request (for direct, the upstream nginx's own)"
  echo "- upstream conns: new connections the upstream accepted during the row (wrk's own for direct; wrk's plus nginx's for proxy_pass)"
} | tee "$out_dir/results.md"
