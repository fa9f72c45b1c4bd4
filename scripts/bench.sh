#!/usr/bin/env bash
# Starts a fresh local cluster (one master, one storage node in another process) and runs
# `tidepool bench` against it as a pure client, so every byte crosses a transport.
#   ./scripts/bench.sh [tidepool bench options]        e.g. --no-shm, --sizes 1MiB, --meta-objects 1000000
#   NODE_SIZE (default 2GB)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p tidepool
BIN=${CARGO_TARGET_DIR:-target}/release/tidepool
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
wait_ready() {
  for _ in $(seq 1 600); do
    if grep -q '^READY' "$1" 2>/dev/null; then grep -m1 '^READY' "$1"; return 0; fi
    sleep 0.05
  done
  echo "process did not start" >&2; exit 1
}
${NICE:-} "$BIN" master --rpc_address=127.0.0.1 --rpc_port=0 --metrics_host=127.0.0.1 --metrics_port=0 \
  --enable_metric_reporting=false >"$WORK/master.out" 2>"$WORK/master.err" &
MASTER_PID=$!
pids+=("$MASTER_PID")
RPC=$(wait_ready "$WORK/master.out" | sed -n 's/.*rpc=\([^ ]*\).*/\1/p')
${NICE:-} "$BIN" node --host=127.0.0.1 --master_server_address="$RPC" --metadata_server=P2PHANDSHAKE \
  --global_segment_size="${NODE_SIZE:-2GB}" >"$WORK/node.out" 2>"$WORK/node.err" &
pids+=($!)
wait_ready "$WORK/node.out" >/dev/null
${NICE:-} "$BIN" bench --master "$RPC" --master-pid "$MASTER_PID" "$@"
