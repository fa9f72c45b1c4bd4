#!/usr/bin/env bash
# Starts a fresh local cluster (one master, one storage node in another process) and runs
# `tidepool bench` against it as a pure client, so every byte crosses a transport.
#   ./scripts/bench.sh [tidepool bench options]   e.g. --no-shm, --sizes 1MiB, --meta-objects 1000000
#   NODE_SIZE (default 2GB); NICE (a prefix such as "nice -n -20" for all three processes)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/cluster.sh
${NICE:-} "$BIN" master --rpc_address=127.0.0.1 --rpc_port=0 --metrics_host=127.0.0.1 --metrics_port=0 \
  --enable_metric_reporting=false >"$WORK/master.out" 2>"$WORK/master.err" &
MASTER_PID=$!
pids+=("$MASTER_PID")
RPC=$(field "$(wait_ready "$WORK/master.out")" rpc)
${NICE:-} "$BIN" node --host=127.0.0.1 --master_server_address="$RPC" --metadata_server=P2PHANDSHAKE \
  --global_segment_size="${NODE_SIZE:-2GB}" >"$WORK/node.out" 2>"$WORK/node.err" &
pids+=($!)
wait_ready "$WORK/node.out" >/dev/null
${NICE:-} "$BIN" bench --master "$RPC" --master-pid "$MASTER_PID" "$@"
