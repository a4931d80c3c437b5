#!/usr/bin/env bash
# Prints the path of a promtool, installing one when none is found:
#
#   promtool=$(deploy/observability/install-promtool.sh)
#
# Looks, in order, at $DEVICELINK_PROMTOOL_BIN, `promtool` on PATH, and a copy
# installed here before. Otherwise it downloads Debian's `prometheus` package
# with `apt-get download` and unpacks promtool alone out of it (dpkg-deb -x):
# installing the package itself would also install and start a Prometheus
# server, which nothing here wants. The copy lives in
# ~/.cache/devicelink/observability-tools (DEVICELINK_TOOLS_DIR overrides
# it), so a second run costs nothing. Progress goes to stderr, the path alone
# to stdout.
set -euo pipefail

log() { echo "devicelink: $*" >&2; }
fail() {
  log "error: $*"
  exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

if [[ -n ${DEVICELINK_PROMTOOL_BIN:-} ]]; then
  [[ -x $DEVICELINK_PROMTOOL_BIN ]] || fail "DEVICELINK_PROMTOOL_BIN=$DEVICELINK_PROMTOOL_BIN is not executable"
  echo "$DEVICELINK_PROMTOOL_BIN"
  exit 0
fi
if have promtool; then
  command -v promtool
  exit 0
fi

tools_dir=${DEVICELINK_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/devicelink/observability-tools}
promtool=$tools_dir/promtool
if [[ -x $promtool ]] && "$promtool" --version >/dev/null 2>&1; then
  echo "$promtool"
  exit 0
fi

have apt-get || fail "no promtool on PATH and no apt-get to fetch Debian's prometheus package: install promtool yourself and set DEVICELINK_PROMTOOL_BIN"
have dpkg-deb || fail "dpkg-deb is missing"
work=$(mktemp -d)
chmod 0755 "$work" # apt-get download runs as _apt where it can
trap 'rm -rf "$work"' EXIT
log "promtool: downloading Debian's prometheus package (apt-get download)"
if ! (cd "$work" && apt-get download -q prometheus >&2); then
  # A fresh machine may have no package lists yet.
  log "promtool: apt-get download failed; refreshing the package lists"
  if [[ $EUID -eq 0 ]]; then
    apt-get update -q >&2 || fail "apt-get update failed"
  elif have sudo; then
    sudo apt-get update -q >&2 || fail "apt-get update failed"
  else
    fail "apt-get download prometheus failed, and apt-get update needs root or sudo"
  fi
  (cd "$work" && apt-get download -q prometheus >&2) || fail "apt-get download prometheus failed"
fi
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
[[ -x $work/root/usr/bin/promtool ]] || fail "the prometheus package holds no usr/bin/promtool"
mkdir -p "$tools_dir"
install -m 0755 "$work/root/usr/bin/promtool" "$promtool.new"
mv "$promtool.new" "$promtool"
log "promtool: $("$promtool" --version 2>&1 | head -n 1) at $promtool"
echo "$promtool"
