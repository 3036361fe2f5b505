#!/usr/bin/env bash
# `make bench-pack`: the benchmark's rows as a self-contained pack for a lent multi-core box that
# has bash and coreutils and nothing of ours (see deploy/bench/pack-run.sh for the rows). Every
# binary travels with every library `ldd` names, the dynamic loader and libc included, and is
# started on the box as `lib/ld-linux-x86-64.so.2 --inhibit-cache --library-path lib bin/X`, so
# the box's own glibc (if any) plays no part. A static busybox (Debian's busybox-static) stands
# in for awk, taskset and unxz there; files over 1 MiB are xz-compressed and unpacked on the box.
#
# Needs the release binaries (`cargo build --release --bin portcullis --example seed_sessions
# --example bare_passthrough`) and nginx, wrk, redis-server and openssl on this machine.
# Overrides: PORTCULLIS_BIN, SEEDER_BIN, BARE_BIN, OAUTH2_PROXY (default .tools/bin/oauth2-proxy,
# bundled when present), VEGETA (default .tools/bin/vegeta, bundled when present), NGINX_BIN, WRK_BIN, REDIS_BIN, OPENSSL_BIN.
# Writes target/bench/pack/ (usable as it is) and target/bench/pack.tar (at most 64 MiB).
# On the box: `tar xf pack.tar && bash pack/pack-run.sh` (results in pack/results.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
portcullis=${PORTCULLIS_BIN:-$root/target/release/portcullis}
seeder=${SEEDER_BIN:-$root/target/release/examples/seed_sessions}
bare=${BARE_BIN:-$root/target/release/examples/bare_passthrough}
oauth2_proxy=${OAUTH2_PROXY:-$root/.tools/bin/oauth2-proxy}
vegeta=${VEGETA:-$root/.tools/bin/vegeta}
out_dir=$root/target/bench
pack=$out_dir/pack
tarball=$out_dir/pack.tar
max_bytes=$((64 * 1024 * 1024))

for b in "$portcullis" "$seeder" "$bare"; do
  [ -x "$b" ] || { echo "missing $b: cargo build --release --bin portcullis --example seed_sessions --example bare_passthrough" >&2; exit 1; }
done
tool() { # name override
  local path=${2:-$(command -v "$1" || true)}
  [ -n "$path" ] && [ -x "$path" ] || { echo "missing $1 (apt-get install nginx-light wrk redis-server openssl)" >&2; exit 1; }
  echo "$path"
}
nginx=$(tool nginx "${NGINX_BIN:-}")
wrk=$(tool wrk "${WRK_BIN:-}")
redis=$(tool redis-server "${REDIS_BIN:-}")
openssl=$(tool openssl "${OPENSSL_BIN:-}")

# The static busybox: awk, taskset and unxz on a box that may have none of them.
if ! dpkg -s busybox-static >/dev/null 2>&1; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  echo "installing: busybox-static" >&2
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends busybox-static >/dev/null; } ||
    echo "busybox-static is not installable: the pack goes uncompressed and the box needs its own awk (and taskset to pin)" >&2
fi
busybox=
if dpkg -s busybox-static >/dev/null 2>&1 && [ -x /bin/busybox ]; then busybox=/bin/busybox; fi

rm -rf "$pack" "$tarball"
mkdir -p "$pack/bin" "$pack/lib" "$pack/op"

libdir=
add_binary() { # name path
  local name=$1 path=$2 lib
  cp -L "$path" "$pack/bin/$name"
  chmod 755 "$pack/bin/$name"
  if ! ldd "$path" >/dev/null 2>&1 || ldd "$path" 2>&1 | grep -q 'statically linked'; then
    touch "$pack/bin/.static-$name" # runs as it is (a CGO_ENABLED=0 Go program, busybox)
    return
  fi
  # `ldd` lists the whole closure: `name => /path (addr)` and the loader as `/path (addr)`.
  for lib in $(ldd "$path" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    cp -L "$lib" "$pack/lib/$(basename "$lib")"
    case $lib in */libc.so.6) libdir=$(dirname "$lib") ;; esac
  done
}
add_binary portcullis "$portcullis"
add_binary seed_sessions "$seeder"
add_binary bare_passthrough "$bare"
add_binary nginx "$nginx"
add_binary wrk "$wrk"
add_binary redis-server "$redis" # Redis picks its mode from argv[0]: the copy keeps this name
add_binary openssl "$openssl"    # signs oauth2-proxy's ID token for the box's issuer URL
if [ -x "$vegeta" ]; then
  add_binary vegeta "$vegeta" # the paced rows' open-loop load
else
  echo "vegeta not bundled ($vegeta missing; make .tools/bin/vegeta): the paced rows fall back to wrk" >&2
fi
if [ -x "$oauth2_proxy" ]; then
  add_binary oauth2-proxy "$oauth2_proxy"
else
  echo "oauth2-proxy not bundled ($oauth2_proxy missing; make .tools/bin/oauth2-proxy)" >&2
fi
[ -z "$busybox" ] || add_binary busybox "$busybox"
# nginx started as root looks its user up through NSS, which dlopens these (from lib/ too).
for nss in libnss_files.so.2 libnss_compat.so.2; do
  [ ! -e "$libdir/$nss" ] || cp -L "$libdir/$nss" "$pack/lib/$nss"
done
[ -e "$pack/lib/ld-linux-x86-64.so.2" ] || { echo "no ld-linux-x86-64.so.2 among the libraries" >&2; exit 1; }

# The static OP's signing key and its JWKS (RS256, kid "bench"). pack-run.sh writes the discovery
# document and signs oauth2-proxy's ID token on the box, where the issuer's port is known.
"$openssl" genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pack/op/key.pem" 2>/dev/null
"$openssl" rsa -in "$pack/op/key.pem" -noout -modulus | python3 -c '
import base64, json, sys
n = bytes.fromhex(sys.stdin.read().strip().split("=", 1)[1])
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "bench",
                            "n": b64(n), "e": b64((65537).to_bytes(3, "big"))}]}))' >"$pack/op/jwks.json"

cp "$root/deploy/bench/pack-run.sh" "$pack/pack-run.sh"
chmod 755 "$pack/pack-run.sh"
{
  echo "portcullis $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown), packed $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -n)"
  echo "glibc: $(ldd --version | head -1)"
  echo "nginx: $("$nginx" -v 2>&1)"
  echo "redis: $("$redis" --version)"
  echo "wrk: $("$wrk" -v 2>&1 | head -1)"
  echo "openssl: $("$openssl" version)"
  [ ! -x "$oauth2_proxy" ] || echo "oauth2-proxy: $("$oauth2_proxy" --version 2>&1 | head -1)"
  [ ! -x "$vegeta" ] || echo "vegeta: $("$vegeta" -version 2>&1 | head -1)"
  [ -z "$busybox" ] || echo "busybox: $("$busybox" 2>&1 | head -1)"
} >"$pack/MANIFEST"

# xz everything over 1 MiB except busybox itself (it does the unxz). CRC32, one block: what
# busybox's decoder takes.
if [ -n "$busybox" ]; then
  find "$pack/bin" "$pack/lib" -type f -size +1M ! -name busybox -print0 |
    xargs -0 -r -n1 -P2 xz -6 -T1 --check=crc32
fi

tar -cf "$tarball" -C "$out_dir" pack
size=$(stat -c %s "$tarball")
if [ "$size" -gt "$max_bytes" ]; then
  echo "$tarball is $((size / 1024 / 1024)) MiB, over the box's 64 MiB" >&2
  exit 1
fi
echo "$tarball: $(awk -v s="$size" 'BEGIN {printf "%.1f", s / 1048576}') MiB ($(ls "$pack/bin" | sed 's/\.xz$//' | tr '\n' ' '))"
