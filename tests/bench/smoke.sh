#!/usr/bin/env bash
# CI's check that devicelink-bench works: a debug build, a few requests per
# scenario at concurrency 1 and 4, 1,000 users, no chart. Well under a
# minute; exits non-zero when any scenario had an error. Not a measurement.
#
#   tests/bench/smoke.sh [devicelink-bench options]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

# shellcheck source=deploy/local/ensure-stores.sh
source deploy/local/ensure-stores.sh

cargo build --bins -p devicelink-authcode -p devicelink-registration
bin="${CARGO_TARGET_DIR:-$repo/target}/debug"
exec cargo run -p devicelink-e2e --bin devicelink-bench -- --smoke --bin-dir "$bin" "$@"
