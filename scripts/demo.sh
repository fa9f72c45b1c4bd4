#!/usr/bin/env bash
# Builds Tidepool in release mode and runs the transfer-engine benchmark between two engines
# (TCP, then same-host shared memory), printing throughput and latency. Grows into the full
# local-cluster demo (master + two nodes + trace replay) as the store lands.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -p tidepool-transfer --example transfer_bench
