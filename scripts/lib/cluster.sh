# Shared by demo.sh and bench.sh: build the release binary, track child processes, wait for a
# server's READY line. Source it after `cd` to the repository root.
cargo build --release -q -p tidepool
BIN=${CARGO_TARGET_DIR:-target}/release/tidepool
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# wait_ready FILE: prints the first READY line of FILE once it appears (30 s at most).
wait_ready() {
  for _ in $(seq 1 600); do
    if grep -q '^READY' "$1" 2>/dev/null; then grep -m1 '^READY' "$1"; return 0; fi
    sleep 0.05
  done
  echo "process did not start; log:" >&2; cat "$1" "${1%.out}.err" >&2 2>/dev/null; exit 1
}

# field LINE KEY: the value of KEY= on a READY line.
field() { sed -n "s/.*$2=\([^ ]*\).*/\1/p" <<<"$1"; }
