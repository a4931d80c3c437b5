#!/usr/bin/env bash
# Makes sure pgbouncer is installed, for the tests that run the services
# behind it (tests/tests/pgbouncer.rs starts its own, on a free port, in
# transaction pooling mode). Installed with apt-get when missing, which
# takes root or sudo; nothing is started here.
#
#   source deploy/local/ensure-pgbouncer.sh
#
# Sourced by deploy/local/test.sh. The work happens in a subshell under
# `set -euo pipefail`, so sourcing it leaves the caller's shell options
# alone.

_devicelink_ensure_pgbouncer() (
  set -euo pipefail
  log() { echo "devicelink: $*"; }
  fail() {
    echo "devicelink: error: $*"
    exit 1
  }
  have() { command -v "$1" >/dev/null 2>&1; }
  as_root() {
    if [[ $EUID -eq 0 ]]; then
      "$@"
    elif have sudo; then
      sudo "$@"
    else
      fail "this step needs root or sudo: $*"
    fi
  }

  if have pgbouncer || [[ -x /usr/sbin/pgbouncer ]]; then
    return 0
  fi
  have apt-get || fail "apt-get not found: install pgbouncer yourself"
  log "installing pgbouncer (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || fail "apt-get update failed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer ||
    fail "could not install pgbouncer"
)

_devicelink_ensure_pgbouncer
