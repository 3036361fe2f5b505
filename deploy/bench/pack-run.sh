#!/usr/bin/env bash
# The benchmark rows on a lent multi-core box, from the pack deploy/bench/pack.sh builds: run as
# `bash pack/pack-run.sh` (bash and coreutils are all it takes of the box). Every binary runs
# from the pack through its own loader and libraries; awk, taskset and unxz come from the
# pack's static busybox. No OP: a small nginx serves discovery and the JWKS as static files (and
# oauth2-proxy's login: /authorize redirects straight back, /token returns a signed ID token);
# the seeder writes the sessions straight into Redis.
#
# Rows (BENCH_DURATION each, after a BENCH_WARMUP): the upstream nginx direct; nginx proxy_pass
# with 1 and 4 workers; the bare Pingora passthrough per-thread with 1 and 4 threads and
# work-stealing with 4, and per-thread with portcullis's upstream timeouts; portcullis `public`
# and authenticated `api` (Redis, BENCH_SESSIONS sessions, warmed until the session cache hits)
# with `threads: 1` and `threads: 4`; oauth2-proxy
# (Redis sessions, GOMAXPROCS=4) when packed. Then p99 at a paced BENCH_PACED_RATE req/s.
# Columns: req/s, p50, p99, the proxy's CPU µs per request (utime+stime from /proc/PID/stat over
# the row ÷ requests), RSS, new upstream connections (the upstream nginx's stub_status accepts).
#
# Pinning (taskset, with 10 or more usable CPUs): the proxy on the first 1 or 4, the upstream
# nginx (2 workers) on the next 2, Redis on 1, the OP and seeder on 1, wrk on up to 8 of the rest
# (16 CPUs: 0-3 / 4-5 / 6 / 7 / 8-15, wrk -t8). Fewer CPUs: nothing pinned, wrk -t(CPUs/2).
#
# Knobs: BENCH_DURATION (10s), BENCH_WARMUP (1s), BENCH_CONNECTIONS (256), BENCH_SESSIONS
# (10000), BENCH_PACED_RATE (5000), BENCH_PIN (1/0; default by CPU count), BENCH_WRK_THREADS,
# BENCH_KEEP=1 (keep the work directory with every process's log).
set -uo pipefail
pack=$(cd "$(dirname "$0")" && pwd)
duration=${BENCH_DURATION:-10s}
warmup=${BENCH_WARMUP:-1s}
connections=${BENCH_CONNECTIONS:-256}
sessions=${BENCH_SESSIONS:-10000}
paced_rate=${BENCH_PACED_RATE:-5000}
results=$pack/results.md

say() { echo "pack-run [${SECONDS}s]: $*" >&2; }
die() { say "$*"; exit 1; }

# --- The pack's own tools -------------------------------------------------------------------
bb=
if [ -x "$pack/bin/busybox" ]; then bb=$pack/bin/busybox; fi
for f in "$pack"/bin/*.xz "$pack"/lib/*.xz; do
  [ -e "$f" ] || continue
  [ -n "$bb" ] || die "$f is compressed and the pack has no busybox to unxz it"
  "$bb" unxz -f "$f" || die "cannot unxz $f"
done
chmod 755 "$pack"/bin/* 2>/dev/null
if [ -n "$bb" ]; then
  awk() { "$bb" awk "$@"; }
  taskset=("$bb" taskset)
else
  command -v awk >/dev/null || die "no busybox in the pack and no awk on this machine"
  taskset=(taskset)
fi
ld=("$pack/lib/ld-linux-x86-64.so.2" --inhibit-cache --library-path "$pack/lib")

# CMD: the command line that runs the pack's binary $2, pinned to CPUs $1 (none: "").
cmdline() {
  CMD=()
  if [ "$pin" = 1 ] && [ -n "$1" ]; then CMD+=("${taskset[@]}" -c "$1"); fi
  if [ -e "$pack/bin/.static-$2" ]; then CMD+=("$pack/bin/$2"); else CMD+=("${ld[@]}" "$pack/bin/$2"); fi
}
px() { cmdline "$1" "$2"; shift 2; "${CMD[@]}" "$@"; } # cpus binary args...: in the foreground

# --- CPUs -----------------------------------------------------------------------------------
cpus=()
while IFS=: read -r key value; do
  [ "$key" = Cpus_allowed_list ] || continue
  IFS=, read -ra ranges <<<"${value//[[:space:]]/}"
  for r in "${ranges[@]}"; do
    if [ "${r#*-}" != "$r" ]; then for ((c = ${r%-*}; c <= ${r#*-}; c++)); do cpus+=("$c"); done; else cpus+=("$r"); fi
  done
done </proc/self/status
ncpu=${#cpus[@]}
[ "$ncpu" -gt 0 ] || { ncpu=$(nproc); for ((c = 0; c < ncpu; c++)); do cpus+=("$c"); done; }
pin=${BENCH_PIN:-$([ "$ncpu" -ge 10 ] && echo 1 || echo 0)}
if [ "$pin" = 1 ] && ! "${taskset[@]}" -c "${cpus[0]}" true 2>/dev/null; then say "taskset does not work here; nothing pinned"; pin=0; fi
join() { local IFS=,; echo "$*"; }
if [ "$pin" = 1 ]; then
  proxy_cpus=("${cpus[@]:0:4}")
  upstream_cpus=$(join "${cpus[@]:4:2}")
  redis_cpus=${cpus[6]}
  aux_cpus=${cpus[7]}
  wrk_list=("${cpus[@]:8:8}")
  wrk_cpus=$(join "${wrk_list[@]}")
  wrk_threads=${BENCH_WRK_THREADS:-${#wrk_list[@]}}
else
  proxy_cpus=("" "" "" "")
  upstream_cpus= redis_cpus= aux_cpus= wrk_cpus=
  wrk_threads=${BENCH_WRK_THREADS:-$((ncpu / 2 > 8 ? 8 : (ncpu / 2 < 1 ? 1 : ncpu / 2)))}
fi
proxy_on() { [ "$pin" = 1 ] && join "${proxy_cpus[@]:0:$1}"; } # the proxy's CPUs for N threads

# --- Processes ------------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/pack-run.XXXXXX")
pids=()
# /proc/PID/stat from field 3 (state) on, into the array `stat` (field N is ${stat[N-3]}).
read_stat() { local s; read -r s 2>/dev/null <"/proc/$1/stat" || return 1; s=${s##*) }; read -ra stat <<<"$s"; }
alive() { read_stat "$1" && [ "${stat[0]}" != Z ]; }
workers() { # pid: its child processes (nginx's workers)
  local f p
  for f in /proc/[0-9]*/stat; do
    p=${f#/proc/}; p=${p%/stat}
    read_stat "$p" && [ "${stat[1]}" = "$1" ] && echo "$p"
  done
  return 0
}
stop() { # pid...: $sig (TERM), then KILL what is still there after 3 s (children included)
  local p all=() i
  for p in "$@"; do all+=("$p" $(workers "$p")); done
  for p in "${all[@]}"; do kill -"${sig:-TERM}" "$p" 2>/dev/null; done
  for i in $(seq 1 30); do
    for p in "${all[@]}"; do alive "$p" && break; p=; done
    [ -z "$p" ] && break
    sleep 0.1
  done
  for p in "${all[@]}"; do alive "$p" && kill -9 "$p" 2>/dev/null; done
  for p in "$@"; do wait "$p" 2>/dev/null; done
  return 0
}
cleanup() {
  [ "${#pids[@]}" -eq 0 ] || stop "${pids[@]}"
  if [ "${BENCH_KEEP:-0}" = 1 ]; then say "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
launch() { # name cpus binary args...: in the background, output in $work/name.log; sets LAUNCHED
  local name=$1
  cmdline "$2" "$3"
  shift 3
  "${CMD[@]}" "$@" >"$work/$name.log" 2>&1 &
  LAUNCHED=$!
  pids+=("$LAUNCHED")
}

# Free ports: unused in /proc/net/tcp{,6}, below the usual ephemeral range.
declare -A taken=()
for f in /proc/net/tcp /proc/net/tcp6; do
  [ -r "$f" ] || continue
  while read -r _ local _; do [ "$local" = local_address ] || taken[$((16#${local##*:}))]=1; done <"$f"
done
port() { # variable
  local candidate
  for _ in $(seq 1 1000); do
    candidate=$((20000 + RANDOM % 12000))
    [ -z "${taken[$candidate]:-}" ] && { taken[$candidate]=1; printf -v "$1" %s "$candidate"; return 0; }
  done
  die "no free port found"
}

# HTTP/1.0 over bash's /dev/tcp (no curl on the box): the whole response, empty on failure.
# The body ends at Content-Length when there is one (a server may keep the connection open).
http_get() { # port path [header-line...]
  local port=$1 path=$2 extra="" h
  shift 2
  for h in "$@"; do extra+="$h"$'\r\n'; done
  timeout 5 "$BASH" -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n%s\r\n" "$2" "$1" "$3" >&3
    len=
    while IFS= read -r l <&3; do
      printf "%s\n" "$l"
      l=${l%$'"'\r'"'}
      [ -n "$l" ] || break
      case ${l,,} in content-length:*) len=${l#*:}; len=${len// /} ;; esac
    done
    if [ -n "$len" ]; then head -c "$len" <&3; else cat <&3; fi' _ "$port" "$path" "$extra" 2>/dev/null
}
http_status() { local l; l=$(http_get "$@" | head -1); l=${l%$'\r'}; l=${l#* }; echo "${l%% *}"; }
body() { local l; while IFS= read -r l; do [ -n "${l%$'\r'}" ] || break; done; cat; }
header() { # name: its first value in a response on stdin
  tr -d '\r' | awk -v h="$1" 'BEGIN {h = tolower(h) ":"} /^$/ {exit}
    tolower(substr($0, 1, length(h))) == h {sub(/^[^:]*: */, ""); print; exit}'
}
port_open() { timeout 1 "$BASH" -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }
redis_up() {
  timeout 1 "$BASH" -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1; printf "PING\r\n" >&3; read -r l <&3
    case $l in +PONG*) exit 0 ;; esac; exit 1' _ "$1" 2>/dev/null
}
wait_for() { # seconds what pid|- command...: polls until the command succeeds (or pid exits)
  local deadline=$((SECONDS + $1)) what=$2 pid=$3
  shift 3
  until "$@"; do
    [ "$pid" = - ] || alive "$pid" || { say "$what exited"; return 1; }
    [ "$SECONDS" -lt "$deadline" ] || { say "timed out waiting for $what"; return 1; }
    sleep 0.1
  done
}
http_200() { [ "$(http_status "$@")" = 200 ]; }

cpu_sum() { local p t=0; for p in "$@"; do read_stat "$p" && t=$((t + stat[11] + stat[12])); done; echo "$t"; } # utime+stime, ticks
rss_mib() { # pid...: VmRSS summed, MiB
  local p k v t=0
  for p in "$@"; do
    while read -r k v _; do [ "$k" = VmRSS: ] && t=$((t + v)); done <"/proc/$p/status" 2>/dev/null
  done
  awk -v t="$t" 'BEGIN {printf "%.1f", t / 1024}'
}
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
secs() { local d=$1; case $d in *ms) echo 0 ;; *s) echo "${d%s}" ;; *m) echo $((${d%m} * 60)) ;; *) echo "$d" ;; esac; }

# --- Services -------------------------------------------------------------------------------
port up_port; port status_port; port op_port; port redis_port
issuer="http://127.0.0.1:$op_port"
user_line=$([ "$(id -u)" = 0 ] && echo "user root root;")
nginx_start() { # name workers cpus servers
  local name=$1 workers=$2 cpus=$3
  mkdir -p "$work/$name"
  cat >"$work/$name.conf" <<NGINX
worker_processes $workers;
$user_line
pid $work/$name/nginx.pid;
error_log $work/$name/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/$name; proxy_temp_path $work/$name; fastcgi_temp_path $work/$name;
  uwsgi_temp_path $work/$name; scgi_temp_path $work/$name;
  keepalive_requests 1000000;
  $4
}
NGINX
  launch "$name" "$cpus" nginx -p "$work/$name/" -c "$work/$name.conf" -g 'daemon off;'
}
# The upstream: serves the direct row and every proxy's; stub_status counts its accepts.
nginx_start upstream 2 "$upstream_cpus" "server { listen 127.0.0.1:$up_port reuseport; location / { default_type application/json; return 200 '{\"ok\":true}'; } }
  server { listen 127.0.0.1:$status_port; location / { stub_status; } }"
upstream_pid=$LAUNCHED

# The static OP: discovery and JWKS as files; oauth2-proxy's /authorize and /token.
port o2p_port
mkdir -p "$work/op-docs/.well-known"
cat >"$work/op-docs/.well-known/openid-configuration" <<JSON
{"issuer":"$issuer","authorization_endpoint":"$issuer/authorize","token_endpoint":"$issuer/token",
 "userinfo_endpoint":"$issuer/userinfo","jwks_uri":"$issuer/jwks","response_types_supported":["code"],
 "subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"],
 "code_challenge_methods_supported":["S256"],"grant_types_supported":["authorization_code","refresh_token"],
 "token_endpoint_auth_methods_supported":["client_secret_basic","client_secret_post"],
 "scopes_supported":["openid","email","profile"]}
JSON
cp "$pack/op/jwks.json" "$work/op-docs/jwks"
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
claims="{\"iss\":\"$issuer\",\"sub\":\"bench-user\",\"aud\":\"bench\",\"email\":\"bench@example.com\",\"email_verified\":true,\"iat\":$((now - 60)),\"exp\":$((now + 86400))}"
jwt_input="$(printf '{"alg":"RS256","kid":"bench","typ":"JWT"}' | b64url).$(printf %s "$claims" | b64url)"
signature=$(printf %s "$jwt_input" | OPENSSL_CONF=/dev/null px "" openssl dgst -sha256 -sign "$pack/op/key.pem" -binary | b64url)
id_token="$jwt_input.$signature"
nginx_start op 1 "$aux_cpus" "server {
    listen 127.0.0.1:$op_port;
    root $work/op-docs;
    default_type application/json;
    location = /authorize { return 302 'http://127.0.0.1:$o2p_port/oauth2/callback?code=bench-code&state=\$arg_state'; }
    location = /token { return 200 '{\"access_token\":\"bench-access-token\",\"token_type\":\"Bearer\",\"expires_in\":86400,\"id_token\":\"$id_token\"}'; }
    location = /userinfo { return 200 '$claims'; }
  }"
op_pid=$LAUNCHED

launch redis "$redis_cpus" redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work"
redis_pid=$LAUNCHED
wait_for 10 "the upstream nginx" "$upstream_pid" port_open "$up_port" || die "$(cat "$work/upstream.log" "$work/upstream/error.log" 2>/dev/null)"
wait_for 10 "the OP nginx" "$op_pid" http_200 "$op_port" /.well-known/openid-configuration || die "$(cat "$work/op.log" "$work/op/error.log" 2>/dev/null)"
wait_for 10 "redis" "$redis_pid" redis_up "$redis_port" || die "$(cat "$work/redis.log")"
upstream_workers=($(workers "$upstream_pid"))

# --- wrk ------------------------------------------------------------------------------------
# cookies.lua spreads requests over every cookie in a file (one session per line), in order,
# starting after the offset-th; paced*.lua wait an interval (ms) between a connection's requests.
cookie_lua='local cookies, n, i = {}, 0, 0
local function load_cookies(args)
  for line in io.lines(args[1]) do n = n + 1; cookies[n] = line end
  i = tonumber(args[2] or "0") % n
end
request = function()
  i = i % n + 1
  return wrk.format(nil, nil, { ["Cookie"] = cookies[i], ["X-CSRF"] = "1" })
end'
printf '%s\ninit = function(args) load_cookies(args) end\n' "$cookie_lua" >"$work/cookies.lua"
printf '%s\nlocal interval = 0\ninit = function(args) load_cookies(args); interval = tonumber(args[3]) end\ndelay = function() return interval end\n' "$cookie_lua" >"$work/paced-cookies.lua"
printf 'local interval = 0\ninit = function(args) interval = tonumber(args[1]) end\ndelay = function() return interval end\n' >"$work/paced.lua"
# The floors (nginx direct, nginx proxy_pass, bare Pingora) get the request the api rows send: a
# cookie of the session cookie's name and length and X-CSRF, so a ratio compares the same bytes.
printf '__Host-portcullis=%s\n' "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')" >"$work/floor.cookies"

wrk_run() { # out duration url [wrk args...]: wrk with the row's threads and connections, time-boxed
  local out=$1 d=$2 url=$3
  shift 3
  local extra=() args=()
  # Everything after `--` goes to the script.
  while [ $# -gt 0 ] && [ "$1" != -- ]; do args+=("$1"); shift; done
  cmdline "$wrk_cpus" wrk
  timeout $(($(secs "$d") + 30)) "${CMD[@]}" -t"$wrk_threads" -c"$connections" -d"$d" --latency "${args[@]}" "$url" "$@" >"$out" 2>&1
}
metrics() { http_get "$1" /metrics | body; }
cache_events() { # admin-port event
  metrics "$1" | awk -v s="portcullis_session_cache_events_total{event=\"$2\"}" 'index($0, s) == 1 {print $2; f = 1} END {if (!f) print 0}'
}
upstream_accepts() { http_get "$status_port" / | body | awk 'NR == 3 {print $1}'; }

: >"$work/table"
failed=()
row_fail() { failed+=("$1"); printf '| %-42s | %-8s | %s |\n' "$1" "${2:--}" "failed: ${3//|//}" >>"$work/table"; say "$1: failed: $3"; }
# measure name cpus-label admin-port|- url script-args|- pids...: one row.
measure() {
  local name=$1 label=$2 admin=$3 url=$4 script=$5
  shift 5
  local procs=("$@") wrk_args=() hits0 misses0 hits=- a0 a1 t0 t1
  if [ "$script" != - ]; then wrk_args=(-s "$work/cookies.lua" -- "$script" 0); fi
  local w=${row_warmup:-$warmup}
  [ "$(secs "$w")" = 0 ] || wrk_run "$work/warm.wrk" "$w" "$url" "${wrk_args[@]}"
  a0=$(upstream_accepts)
  t0=$(cpu_sum "${procs[@]}")
  if [ "$admin" != - ]; then hits0=$(cache_events "$admin" hit); misses0=$(cache_events "$admin" miss); fi
  wrk_run "$work/row.wrk" "$duration" "$url" "${wrk_args[@]}"
  t1=$(cpu_sum "${procs[@]}")
  a1=$(upstream_accepts)
  local rps reqs p50 p99 non2xx sockerr cpu rss conns
  rps=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$work/row.wrk")
  reqs=$(awk '/requests in/ {print $1}' "$work/row.wrk")
  if [ -z "$rps" ] || [ -z "$reqs" ] || [ "$reqs" = 0 ]; then
    row_fail "$name" "$label" "wrk: $(tail -3 "$work/row.wrk" | tr '\n' ' ')"
    return 1
  fi
  p50=$(awk '$1 == "50%" {print $2}' "$work/row.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$work/row.wrk")
  non2xx=$(awk '/Non-2xx/ {print $4}' "$work/row.wrk")
  sockerr=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$work/row.wrk")
  cpu=$(awk -v t=$((t1 - t0)) -v n="$reqs" -v hz="$hz" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  rss=$(rss_mib "${procs[@]}")
  conns=$((a1 - a0 - 1)) # the second stub_status request is one
  if [ "$admin" != - ]; then
    hits=$(awk -v h=$(($(cache_events "$admin" hit) - hits0)) -v m=$(($(cache_events "$admin" miss) - misses0)) \
      'BEGIN {printf "%.1f %%", h + m ? 100 * h / (h + m) : 0}')
  fi
  printf '| %-42s | %-8s | %9s | %8s | %8s | %10s | %7s | %14s | %10s | %10s |\n' "$name" "${label:--}" "$rps" "$p50" "$p99" \
    "$cpu" "$rss" "$conns" "$hits" "${non2xx:-0}/${sockerr:-0}" >>"$work/table"
  say "$name: $rps req/s, p99 $p99, $cpu µs CPU/req"
}
: >"$work/paced"
# paced name url script|-: p50/p99 at paced_rate. With the pack's vegeta, open loop: each
# request leaves at its scheduled time whatever the answers before it (the first session of the
# script's file); without it, each wrk connection waits between its requests.
paced() {
  local name=$1 url=$2 script=$3
  shift 3
  if [ -e "$pack/bin/vegeta" ]; then paced_open "$name" "$url" "$script"; return; fi
  local interval args=() h
  interval=$(awk -v c="$connections" -v r="$paced_rate" 'BEGIN {printf "%d", c * 1000 / r + 0.5}')
  for h in "$@"; do args+=(-H "$h"); done
  if [ "$script" = - ]; then args+=(-s "$work/paced.lua" -- "$interval"); else args+=(-s "$work/paced-cookies.lua" -- "$script" 0 "$interval"); fi
  wrk_run "$work/paced.wrk" "$duration" "$url" "${args[@]}"
  local rps p50 p99
  rps=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$work/paced.wrk")
  p50=$(awk '$1 == "50%" {print $2}' "$work/paced.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$work/paced.wrk")
  printf '| %-42s | %9s | %8s | %8s |\n' "$name" "${rps:-failed}" "${p50:--}" "${p99:--}" >>"$work/paced"
  say "$name paced: $rps req/s, p99 $p99"
}

paced_open() { # name url script|-
  local name=$1 url=$2 script=$3 headers=() rps p50 p99
  [ "$script" = - ] || headers=(-header "Cookie: $(head -1 "$script")" -header "X-CSRF: 1")
  cmdline "$wrk_cpus" vegeta
  echo "GET $url" | timeout $(($(secs "$duration") + 30)) "${CMD[@]}" attack -rate="$paced_rate/1s" \
    -duration="$duration" -http2=false "${headers[@]}" >"$work/paced.bin" 2>"$work/paced.err"
  "${CMD[@]}" report -type=json <"$work/paced.bin" >"$work/paced.json" 2>>"$work/paced.err"
  json_number() { awk -v k="\"$1\":" 'match($0, k "[0-9.e+]+") {print substr($0, RSTART + length(k), RLENGTH - length(k))}' "$work/paced.json"; }
  rps=$(awk -v n="$(json_number throughput)" 'BEGIN {if (n != "") printf "%.0f", n}')
  p50=$(awk -v n="$(json_number 50th)" 'BEGIN {if (n != "") printf "%.0fus", n / 1000}')
  p99=$(awk -v n="$(json_number 99th)" 'BEGIN {if (n != "") printf "%.0fus", n / 1000}')
  printf '| %-42s | %9s | %8s | %8s |\n' "$name (open loop)" "${rps:-failed}" "${p50:--}" "${p99:--}" >>"$work/paced"
  say "$name paced (vegeta): $rps req/s, p99 $p99"
}

# --- Rows -----------------------------------------------------------------------------------
direct=http://127.0.0.1:$up_port/api/bench
measure "nginx direct (the upstream, 2 workers)" "$upstream_cpus" - "$direct" "$work/floor.cookies" "${upstream_workers[@]}"
paced "nginx direct" "$direct" "$work/floor.cookies"

for t in 1 4; do
  port p
  nginx_start "proxy-$t" "$t" "$(proxy_on "$t")" "upstream origin { server 127.0.0.1:$up_port; keepalive 256; }
  server {
    listen 127.0.0.1:$p reuseport;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Authorization \"Bearer static-benchmark-token\";
    }
  }"
  master=$LAUNCHED
  if wait_for 10 "nginx proxy_pass" "$master" http_200 "$p" /api/bench; then
    measure "nginx proxy_pass, $t worker$([ "$t" = 1 ] || echo s)" "$(proxy_on "$t")" - "http://127.0.0.1:$p/api/bench" "$work/floor.cookies" $(workers "$master")
    [ "$t" != 1 ] || paced "nginx proxy_pass, 1 worker" "http://127.0.0.1:$p/api/bench" "$work/floor.cookies"
  else
    row_fail "nginx proxy_pass, $t workers" "$(proxy_on "$t")" "$(tail -3 "$work/proxy-$t/error.log" 2>/dev/null)"
  fi
  stop "$master"
done

# "timeouts": the same passthrough with the upstream timeouts portcullis sets (connect, read,
# pooled idle), each of which Pingora arms a timer for.
for mode_threads in "per-thread 1" "per-thread 4" "work-stealing 4" "per-thread 1 timeouts" "per-thread 4 timeouts"; do
  set -- $mode_threads
  label="bare Pingora, $1, threads $2${3:+, upstream timeouts}"
  port p
  launch "bare-$1-$2${3:+-$3}" "$(proxy_on "$2")" bare_passthrough "127.0.0.1:$p" "127.0.0.1:$up_port" "$2" 1024 "$1" ${3:+"$3"}
  bare=$LAUNCHED
  if wait_for 10 "the bare passthrough" "$bare" http_200 "$p" /api/bench; then
    measure "$label" "$(proxy_on "$2")" - "http://127.0.0.1:$p/api/bench" "$work/floor.cookies" "$bare"
  else
    row_fail "$label" "$(proxy_on "$2")" "$(tail -3 "$work/bare-$1-$2${3:+-$3}.log")"
  fi
  sig=INT stop "$bare"
done

portcullis_yaml() { # file port admin threads
  cat >"$1" <<YAML
listen: "127.0.0.1:$2"
admin_listen: "127.0.0.1:$3"
public_url: "http://127.0.0.1:$2"
oidc:
  issuer: "$issuer"
  client_id: "portcullis"
  client_secret: "bench-secret"
session:
  store: redis
  redis_url: "redis://127.0.0.1:$redis_port"
  cache_max_entries: 100000
routes:
  - { path: "/api/", upstream: "http://127.0.0.1:$up_port", kind: api }
  - { path: "/public/", upstream: "http://127.0.0.1:$up_port", kind: public }
server:
  threads: $4
  upstream_keepalive_pool_size: 1024
log:
  level: warn
YAML
}
seeded=
libc_check=
for t in 1 4; do
  port p; port admin
  portcullis_yaml "$work/portcullis-$t.yaml" "$p" "$admin" "$t"
  label=$(proxy_on "$t")
  if [ -z "$seeded" ]; then
    if px "$aux_cpus" seed_sessions "$work/portcullis-$t.yaml" "$sessions" >"$work/sessions.cookies" 2>"$work/seed.log" &&
      [ "$(wc -l <"$work/sessions.cookies")" = "$sessions" ]; then
      seeded=$work/sessions.cookies
    else
      row_fail "portcullis (seeding $sessions sessions)" - "$(tail -3 "$work/seed.log")"
      break
    fi
  fi
  launch "portcullis-$t" "$label" portcullis serve --config "$work/portcullis-$t.yaml"
  pc=$LAUNCHED
  if ! wait_for 20 "portcullis threads $t" "$pc" http_200 "$admin" /readyz; then
    row_fail "portcullis, threads $t" "$label" "$(tail -3 "$work/portcullis-$t.log")"
    sig=INT stop "$pc"
    continue
  fi
  [ -n "$libc_check" ] || libc_check=$(awk '/libc\.so/ {print $6; exit}' "/proc/$pc/maps")
  measure "portcullis public, threads $t" "$label" - "http://127.0.0.1:$p/public/bench" - "$pc"
  # Warm up as a long-running process would be: until nearly every session is cached (a
  # session is cached from its second read on; the first extends its idle timeout).
  offset=0
  for _ in $(seq 1 30); do
    m0=$(cache_events "$admin" miss)
    wrk_run "$work/warm.wrk" 2s "http://127.0.0.1:$p/api/bench" -s "$work/cookies.lua" -- "$seeded" "$offset"
    n=$(awk '/requests in/ {print $1}' "$work/warm.wrk")
    [ -n "$n" ] || break
    offset=$((offset + n))
    [ $(($(cache_events "$admin" miss) - m0)) -le $((n / 100)) ] && [ "$offset" -ge "$sessions" ] && break
  done
  row_warmup=0s measure "portcullis api, redis, $sessions sessions, threads $t" "$label" "$admin" "http://127.0.0.1:$p/api/bench" "$seeded" "$pc"
  paced "portcullis api, threads $t" "http://127.0.0.1:$p/api/bench" "$seeded"
  sig=INT stop "$pc"
done

# oauth2-proxy: the login through the static OP, then its session cookie on every request.
if [ -e "$pack/bin/oauth2-proxy" ]; then
  label=$(proxy_on 4)
  export GOMAXPROCS=4
  launch oauth2-proxy "$label" oauth2-proxy --http-address="127.0.0.1:$o2p_port" --provider=oidc \
    --oidc-issuer-url="$issuer" --client-id=bench --client-secret=bench-secret \
    --redirect-url="http://127.0.0.1:$o2p_port/oauth2/callback" --upstream="http://127.0.0.1:$up_port/" \
    --cookie-secret=0123456789abcdef0123456789abcdef --cookie-secure=false --email-domain='*' \
    --scope='openid email' --code-challenge-method=S256 --session-store-type=redis \
    --redis-connection-url="redis://127.0.0.1:$redis_port" --set-authorization-header=true \
    --pass-access-token=true --skip-provider-button=true --request-logging=false \
    --auth-logging=false --standard-logging=false
  unset GOMAXPROCS
  o2p=$LAUNCHED
  o2p_cookie=
  if wait_for 20 "oauth2-proxy" "$o2p" http_200 "$o2p_port" /ping; then
    start=$(http_get "$o2p_port" "/oauth2/start?rd=%2F")
    csrf=$(printf %s "$start" | tr -d '\r' | awk 'tolower($1) == "set-cookie:" {sub(/;.*/, "", $2); printf "%s%s", sep, $2; sep = "; "}')
    authorize=$(printf %s "$start" | header location)
    callback=$(http_get "$op_port" "/${authorize#*://*/}" | header location)
    if [ -n "$callback" ]; then
      o2p_cookie=$(http_get "$o2p_port" "/${callback#*://*/}" "Cookie: $csrf" | tr -d '\r' |
        awk 'tolower($1) == "set-cookie:" && $2 !~ /csrf/ {
          # A cleared cookie has nothing after its =, and a session cookie may end in = (base64).
          sub(/;.*/, "", $2); i = index($2, "="); if (i > 0 && i < length($2)) {printf "%s%s", sep, $2; sep = "; "}
        }')
    fi
  fi
  if [ -n "$o2p_cookie" ] && http_200 "$o2p_port" /api/bench "Cookie: $o2p_cookie"; then
    echo "$o2p_cookie" >"$work/o2p.cookies" # one session on every request
    measure "oauth2-proxy, redis sessions, GOMAXPROCS=4" "$label" - "http://127.0.0.1:$o2p_port/api/bench" "$work/o2p.cookies" "$o2p"
    paced "oauth2-proxy" "http://127.0.0.1:$o2p_port/api/bench" "$work/o2p.cookies"
  else
    row_fail "oauth2-proxy, redis sessions, GOMAXPROCS=4" "$label" "login through the static OP failed: $(tail -2 "$work/oauth2-proxy.log" | tr '\n' ' ')"
  fi
  stop "$o2p"
fi

# --- Report ---------------------------------------------------------------------------------
{
  echo "# portcullis on the lent box ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "$(head -1 "$pack/MANIFEST"); $ncpu CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)."
  echo "CPU ${cpus[0]} shares its core with CPUs $(cat "/sys/devices/system/cpu/cpu${cpus[0]}/topology/thread_siblings_list" 2>/dev/null || echo ?) (SMT siblings)."
  echo "wrk -t$wrk_threads -c$connections -d$duration$([ "$pin" = 1 ] && echo " on CPUs $wrk_cpus; upstream nginx on $upstream_cpus, Redis on $redis_cpus" || echo ", nothing pinned"); a $warmup warm-up before each row."
  echo
  echo "| row                                        | CPUs     |     req/s |      p50 |      p99 | CPU µs/req | RSS MiB | new upstream conns | cache hits | non-2xx/sock err |"
  echo "|--------------------------------------------|----------|----------:|---------:|---------:|-----------:|--------:|---------------:|-----------:|-----------:|"
  cat "$work/table"
  echo
  if [ -e "$pack/bin/vegeta" ]; then
    echo "Paced at $paced_rate req/s (vegeta, open loop: each request leaves at its scheduled time):"
  else
    echo "Paced at $paced_rate req/s ($connections connections, each waiting between requests):"
  fi
  echo
  echo "| target                                     |     req/s |      p50 |      p99 |"
  echo "|--------------------------------------------|----------:|---------:|---------:|"
  cat "$work/paced"
  echo
  echo "- CPU µs/req: the serving process's user + system time over the row ÷ requests (nginx: its workers; direct: the upstream's own)"
  echo "- new upstream conns: connections the upstream nginx accepted during the row (direct: wrk's own); nginx proxy_pass keeps 256 idle upstream connections per worker, portcullis and the bare passthrough 1024 in all"
  echo "- binaries ran from the pack's lib/ (portcullis mapped ${libc_check:-?})"
  [ "${#failed[@]}" -eq 0 ] || echo "- failed rows: ${failed[*]}"
} | tee "$results"
