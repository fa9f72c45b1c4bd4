#!/usr/bin/env bash
# Builds the two Python wheels into target-wheels/: `tidepool` (native binding plus the
# `tidepool` binary as package data) and `tidepool-mooncake` (pure Python, the `mooncake`
# package). Usage: scripts/build_wheels.sh [PYTHON]  (PYTHON must have maturin; default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(realpath -s "${1:-.venv/bin/python}")"
OUT="$PWD/target-wheels"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"

# W16: the wheel must install on manylinux_2_28 hosts (RHEL 8 and newer), older than this
# builder's glibc. With zig (`pip install ziglang cargo-zigbuild`, which scripts/test.sh does)
# both the binding and the bundled binary link against glibc 2.28; without it the build is
# native and the wheel carries this host's glibc tag (a warning says so).
GLIBC="${TIDEPOOL_WHEEL_GLIBC:-2.28}"
PYBIN="$(dirname "$PY")"
if [ "$GLIBC" != native ] && "$PY" -m ziglang version >/dev/null 2>&1 \
  && [ -x "$PYBIN/cargo-zigbuild" ]; then
  export PATH="$PYBIN:$PATH"
  TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
  # Its own target dir: maturin's zig wrappers set other compiler variables, and sharing one
  # dir would make each build invalidate the other's dependencies.
  CARGO_TARGET_DIR="$TARGET/zig-bin" cargo zigbuild --release -p tidepool -q --target "$TRIPLE.$GLIBC"
  BIN="$TARGET/zig-bin/$TRIPLE/release/tidepool"
  MATURIN_ARGS=(--zig --target "$TRIPLE" --compatibility "manylinux_${GLIBC/./_}")
else
  [ "$GLIBC" = native ] || echo "build_wheels: zig not found, building for this host's glibc" >&2
  cargo build --release -p tidepool -q
  BIN="$TARGET/release/tidepool"
  MATURIN_ARGS=()
fi
mkdir -p python/tidepool/src/tidepool/bin "$OUT"
install -m 0755 "$BIN" python/tidepool/src/tidepool/bin/tidepool
rm -f "$OUT"/tidepool-*.whl "$OUT"/tidepool_mooncake-*.whl
# setuptools reuses build/ between runs; a stale copy could put removed files in the wheel.
rm -rf python/tidepool-mooncake/build
(cd python/tidepool && "$PY" -m maturin build --release --quiet -i "$PY" "${MATURIN_ARGS[@]}" --out "$OUT")
if [ "${#MATURIN_ARGS[@]}" -gt 0 ]; then
  # The tag is only a claim: check the newest glibc symbol the binary really needs.
  need="$(objdump -T "$BIN" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)"
  if [ "$(printf '%s\n%s\n' "$need" "$GLIBC" | sort -V | tail -1)" != "$GLIBC" ]; then
    echo "build_wheels: bundled binary needs glibc $need > $GLIBC" >&2
    exit 1
  fi
  ls "$OUT"/tidepool-*-manylinux_${GLIBC/./_}_*.whl >/dev/null
fi
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$OUT" python/tidepool-mooncake 2>/dev/null \
  || "$PY" -m pip wheel --quiet --no-deps -w "$OUT" python/tidepool-mooncake
ls "$OUT"
