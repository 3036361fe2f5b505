# Shared by the demo scripts (run.sh, run-ingress.sh): a scratch directory and the children
# started into `pids`, both cleaned up on exit or Ctrl-C, and a wait for a child's ready line.
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Reads "<PREFIX> <value>" from a child's stdout file, waiting up to 30 s.
wait_for_line() {
  local file=$1 prefix=$2
  for _ in $(seq 1 300); do
    if line=$(grep -m1 "^$prefix " "$file" 2>/dev/null); then
      echo "${line#"$prefix "}"
      return 0
    fi
    sleep 0.1
  done
  echo "timed out waiting for $prefix in $file" >&2
  return 1
}
