#!/usr/bin/env bash
# Side-by-side: runs the shared harness (run_baseline.py, which drives mc_store_bench.py on a
# fresh master + storage node per run) against Tidepool's `mooncake.store` (venv .venv, built by
# scripts/build_wheels.sh) and against the PyPI Mooncake (venv .mcvenv) on this machine, one after
# the other, then prints Tidepool/Mooncake ratios. Results: out/compare/{tidepool,mooncake}.json
# and out/compare/ratios.md.
#
#   scripts/compare_mooncake.sh [--tests sizes] [--reps 3] [other run_baseline.py flags]
#
# Env: BENCH_DIR (default ../shared/bench next to the repo), SKIP_BUILD=1 to reuse .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BENCH="${BENCH_DIR:-$(realpath -m "$ROOT/../shared/bench")}"
OUT="$ROOT/out/compare"
mkdir -p "$OUT"
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--tests sizes --reps 3)

# Tidepool: both wheels in .venv (its bin/ holds the mooncake_master console script).
if [ "${SKIP_BUILD:-0}" != 1 ] || [ ! -x .venv/bin/python ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q maturin pytest
  scripts/build_wheels.sh .venv/bin/python
  .venv/bin/python -m pip install -q --force-reinstall --no-deps target-wheels/*.whl
fi

# Mooncake 0.3.13.post1 from PyPI in its own venv (never beside tidepool-mooncake).
if [ ! -x .mcvenv/bin/mooncake_master ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq libibverbs1 libnuma1 libcurl4 >/dev/null 2>&1 || true
  fi
  python3 -m venv .mcvenv
  .mcvenv/bin/python -m pip install -q mooncake-transfer-engine-non-cuda==0.3.13.post1
fi

export MC_TCP_BIND_ADDRESS=127.0.0.1
# run_baseline.py starts `mooncake_master` from the interpreter's bin/ first on PATH: Tidepool's
# console script (which execs `tidepool master`) in .venv, Mooncake's own in .mcvenv.
(cd "$BENCH" && BENCH_LOGDIR="$OUT" "$ROOT/.venv/bin/python" run_baseline.py --module mooncake.store \
  --out "$OUT/tidepool.json" "${ARGS[@]}")
(cd "$BENCH" && BENCH_LOGDIR="$OUT" "$ROOT/.mcvenv/bin/python" run_baseline.py --module mooncake.store \
  --out "$OUT/mooncake.json" "${ARGS[@]}")

python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
tp = json.load(open(os.path.join(out, "tidepool.json")))
mc = json.load(open(os.path.join(out, "mooncake.json")))
lines = ["# Tidepool vs Mooncake (same machine, same run)", "",
         "Ratio = Tidepool / Mooncake for throughput (higher is better) and for latency (lower is better).", ""]
if "sizes" in tp and "sizes" in mc:
    t, m = tp["sizes"]["median"], mc["sizes"]["median"]
    keys = ["put_GBps", "get_GBps", "warmup_put_GBps", "put_p50_us", "get_p50_us", "exist64_us"]
    lines += ["| size | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for size in t:
        if size not in m:
            continue
        cells = []
        for k in keys:
            a, b = t[size].get(k), m[size].get(k)
            cells.append(f"{a} / {b} = **{a / b:.2f}x**" if a and b else "-")
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
text = "\n".join(lines) + "\n"
open(os.path.join(out, "ratios.md"), "w").write(text)
print(text)
PY
