#!/usr/bin/env bash
# Runs devicelink-bench in a release build against the local stores.
#
#   tests/bench/run.sh [devicelink-bench options]    e.g. --service-threads 1
#   tests/bench/run.sh --soak [--duration 30m]       the soak: steady mixed flow,
#                                                    figures every minute (soak.csv,
#                                                    soak.json, soak.png)
#
# Makes sure Postgres and Redis answer (deploy/local/ensure-stores.sh sets
# DATABASE_URL and REDIS_URL), installs h2load (Debian's nghttp2-client)
# when it is missing, for the reference rows that show whether the
# benchmark's own client was the limit, builds the services and the
# benchmark once in release, makes sure a Python with matplotlib is at hand
# for the chart (installing tests/bench/requirements.txt into a cache venv
# when needed), and runs the benchmark with the given options. The table goes to stdout;
# results.json, chart.png and the processes' logs to target/bench/.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

log() { echo "devicelink-bench: $*" >&2; }

# --help first, before the stores and the release build: the usage text the
# binary prints (USAGE in tests/src/bench/cli.rs, plain text between its
# quotes), or the binary's own when that text cannot be read.
for arg in "$@"; do
  if [[ $arg == --help || $arg == -h ]]; then
    usage=$(awk '/^pub const USAGE: &str = "\\$/ { on = 1; next } on && /^";$/ { exit } on { print }' \
      tests/src/bench/cli.rs)
    if [[ -n $usage ]]; then
      printf '%s\n' "$usage"
      exit 0
    fi
    exec cargo run --quiet -p devicelink-e2e --bin devicelink-bench -- --help
  fi
done

# shellcheck source=deploy/local/ensure-stores.sh
source deploy/local/ensure-stores.sh

# h2load, as the stores are installed: apt-get, as root or through sudo.
# Without it the run goes on, without the reference rows.
if ! command -v h2load >/dev/null 2>&1; then
  as_root=()
  [[ $EUID -eq 0 ]] || as_root=(sudo)
  if command -v apt-get >/dev/null 2>&1 && { [[ $EUID -eq 0 ]] || command -v sudo >/dev/null 2>&1; }; then
    log "installing h2load (apt-get install nghttp2-client)"
    if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nghttp2-client >&2; then
      "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 &&
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nghttp2-client >&2 ||
        log "WARNING: could not install nghttp2-client; no h2load reference rows"
    fi
  else
    log "WARNING: h2load missing and no apt-get (or root): no reference rows"
  fi
fi

log "building release binaries"
cargo build --release --bins -p devicelink-authcode -p devicelink-registration -p devicelink-e2e >&2
bin="${CARGO_TARGET_DIR:-$repo/target}/release"

# A Python that can import matplotlib: BENCH_PYTHON, else python3 as it is,
# else a venv under the user's cache with the pinned requirements.
requirements="$repo/tests/bench/requirements.txt"
has_matplotlib() { "$1" -c 'import matplotlib' >/dev/null 2>&1; }
python=${BENCH_PYTHON:-python3}
if ! has_matplotlib "$python"; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/devicelink-bench/venv"
  if ! has_matplotlib "$venv/bin/python"; then
    log "installing matplotlib into $venv"
    if python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q -r "$requirements" >&2; then
      :
    else
      log "no venv; trying pip install --user"
      python3 -m pip install -q --user -r "$requirements" >&2 || true
    fi
  fi
  if has_matplotlib "$venv/bin/python"; then
    python="$venv/bin/python"
  elif ! has_matplotlib "$python"; then
    log "WARNING: no Python with matplotlib; the chart will be missing"
  fi
fi

exec "$bin/devicelink-bench" --bin-dir "$bin" --python "$python" "$@"
