#!/usr/bin/env bash
# Side-by-side trace replay: runs the shared harness's replay.py against Tidepool's
# `mooncake.store` (.venv, from scripts/build_wheels.sh) and the PyPI Mooncake (.mcvenv), one
# after the other on fresh masters with the same flags, and keeps both JSON results.
#   scripts/compare_replay.sh TRACE SPEEDUP CAP_BLOCKS [extra master flags...]
# e.g. scripts/compare_replay.sh ../shared/traces/synthetic_trace.jsonl 10 4000
#      scripts/compare_replay.sh ../shared/traces/synthetic_trace.jsonl 10 4000 \
#        --eviction_high_watermark_ratio=0.98 --eviction_ratio=0.02
# The master's read-lease TTL is 10 s divided by the speed-up. Results: out/replay/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BENCH="${BENCH_DIR:-$(realpath -m "$ROOT/../shared/bench")}"
TRACE=$(realpath "$1"); SPEEDUP=$2; CAP=$3; shift 3
OBJ=${OBJ:-262144}
TTL=$(python3 -c "print(int(10000 / $SPEEDUP))")
TAG=$(basename "$TRACE" .jsonl)-${SPEEDUP}x-${CAP}
if [ $# -gt 0 ]; then TAG=$TAG-tuned; fi
OUT="$ROOT/out/replay"
mkdir -p "$OUT"
export MC_TCP_BIND_ADDRESS=127.0.0.1
for impl in tidepool:.venv mooncake:.mcvenv; do
  name=${impl%%:*}; venv=$ROOT/${impl#*:}
  "$venv/bin/mooncake_master" --rpc_port=50091 --rpc_address=127.0.0.1 \
    --enable_http_metadata_server=true --http_metadata_server_port=8099 \
    --http_metadata_server_host=127.0.0.1 --metrics_port=9099 --metrics_host=127.0.0.1 \
    --default_kv_lease_ttl="$TTL" "$@" >"$OUT/$name-$TAG-master.log" 2>&1 &
  mp=$!
  sleep 2
  "$venv/bin/python" "$BENCH/replay.py" "$TRACE" --backend mooncake.store \
    --master 127.0.0.1:50091 --metadata http://127.0.0.1:8099/metadata \
    --segment $((CAP * OBJ)) --capacity-blocks "$CAP" --object-size "$OBJ" \
    --speedup "$SPEEDUP" --workers 4 --json "$OUT/$name-$TAG.json" >"$OUT/$name-$TAG.txt" 2>&1 || true
  kill $mp 2>/dev/null || true; wait $mp 2>/dev/null || true
  python3 - "$OUT/$name-$TAG.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
keys = ["requests", "block_hit", "predicted_block_hit_lru_batch", "put_failures", "get_failures", "wall_s"]
print(sys.argv[2], {k: round(r[k], 4) if isinstance(r[k], float) else r[k] for k in keys if k in r},
      "put p99 ms", r["lat_ms"].get("req_t_put", {}).get("p99"))
PY
done
