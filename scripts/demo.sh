#!/usr/bin/env bash
# The main job: build Tidepool, start a local cluster (one master, two storage nodes) on
# loopback, replay a request trace with shared prefixes against it with progress on screen,
# then run the throughput/latency benchmark, and print a summary.
#   DEMO_SPEEDUP (default 20), DEMO_REQUESTS (default 1500), NODE_SIZE (default 512MB)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "install Rust (rustup) first" >&2; exit 1; }
source scripts/lib/cluster.sh

SPEEDUP=${DEMO_SPEEDUP:-20}
# The read-lease TTL is divided by the replay speed-up, as a 1x engine would hold 10 s.
TTL=$((10000 / SPEEDUP))
"$BIN" master --rpc_address=127.0.0.1 --rpc_port=0 --metrics_host=127.0.0.1 --metrics_port=0 \
  --enable_http_metadata_server --http_metadata_server_host=127.0.0.1 --http_metadata_server_port=0 \
  --default_kv_lease_ttl="$TTL" >"$WORK/master.out" 2>"$WORK/master.err" &
pids+=($!)
READY=$(wait_ready "$WORK/master.out")
RPC=$(field "$READY" rpc)
METRICS=$(field "$READY" metrics)
META=$(field "$READY" metadata)
echo "master     rpc $RPC   metadata http://$META/metadata"
echo "dashboard  http://$METRICS/   (metrics: http://$METRICS/metrics)"
for i in 1 2; do
  "$BIN" node --host=127.0.0.1 --master_server_address="$RPC" --metadata_server="http://$META/metadata" \
    --global_segment_size="${NODE_SIZE:-512MB}" >"$WORK/node$i.out" 2>"$WORK/node$i.err" &
  pids+=($!)
  echo "node $i     $(wait_ready "$WORK/node$i.out")"
done

echo
echo "== replay: synthetic FAST'25 trace, ${DEMO_REQUESTS:-1500} requests at ${SPEEDUP}x, 256 KiB blocks"
"$BIN" replay --master "$RPC" --trace data/traces/synthetic_trace.jsonl \
  --speedup "$SPEEDUP" --limit "${DEMO_REQUESTS:-1500}" --block-size 256KiB

echo
echo "== bench: batch put/get throughput and single-op latency (pure client over TCP/shm)"
"$BIN" bench --master "$RPC" --total 128MiB --sizes 4KiB,64KiB,1MiB,8MiB --latency-ops 1000

echo
echo "== master summary"
python3 -c "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())" "http://$METRICS/metrics/summary" || true

if [ -t 0 ] && [ -z "${DEMO_NO_HOLD:-}" ]; then
  echo
  read -r -p "cluster still running: dashboard at http://$METRICS/ — press Enter to stop " _ || true
fi
