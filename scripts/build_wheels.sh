#!/usr/bin/env bash
# Builds the two Python wheels into target-wheels/: `tidepool` (native binding plus the
# `tidepool` binary as package data) and `tidepool-mooncake` (pure Python, the `mooncake`
# package). Usage: scripts/build_wheels.sh [PYTHON]  (PYTHON must have maturin; default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(realpath -s "${1:-.venv/bin/python}")"
OUT="$PWD/target-wheels"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"

# One release build of the binary; maturin's release build of the binding reuses its deps.
cargo build --release -p tidepool -q
mkdir -p python/tidepool/src/tidepool/bin "$OUT"
install -m 0755 "$TARGET/release/tidepool" python/tidepool/src/tidepool/bin/tidepool
rm -f "$OUT"/tidepool-*.whl "$OUT"/tidepool_mooncake-*.whl
# setuptools reuses build/ between runs; a stale copy could put removed files in the wheel.
rm -rf python/tidepool-mooncake/build
(cd python/tidepool && "$PY" -m maturin build --release --quiet -i "$PY" --out "$OUT")
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$OUT" python/tidepool-mooncake 2>/dev/null \
  || "$PY" -m pip wheel --quiet --no-deps -w "$OUT" python/tidepool-mooncake
ls "$OUT"
