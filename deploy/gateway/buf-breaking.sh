#!/usr/bin/env bash
# `buf breaking`: proto/ as it is against the contract as it was, the last
# release tag (`git describe --tags`), else the previous commit (on CI's
# checkout of main, main before the change being merged). A field renamed,
# renumbered or removed, or its type changed, fails (buf's FILE rules, the
# default of proto/buf.yaml).
#
# A shallow clone (depth 1) has no previous commit: one more is fetched
# (`git fetch --deepen=1`); where that fails, the check fails and says why.
# Uses DEVICELINK_BUF_BIN (deploy/gateway/install-tools.sh), sourcing the
# installer when it is unset.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { echo "devicelink: $*" >&2; }
fail() {
  echo "devicelink: error: $*" >&2
  exit 1
}

if [[ -z ${DEVICELINK_BUF_BIN:-} ]]; then
  # shellcheck source=deploy/gateway/install-tools.sh
  source deploy/gateway/install-tools.sh
fi

against=$(git describe --tags --abbrev=0 2>/dev/null || true)
against=${against:-HEAD~1}
if ! git rev-parse --verify --quiet "$against^{commit}" >/dev/null &&
  [[ $(git rev-parse --is-shallow-repository) == true ]]; then
  log "buf breaking: a shallow clone: fetching the commit before HEAD"
  git fetch --quiet --deepen=1 ||
    fail "this is a shallow clone and 'git fetch --deepen=1' failed: buf breaking needs the commit before HEAD (clone with a depth of 2 or more)"
fi
if ! git rev-parse --verify --quiet "$against^{commit}" >/dev/null; then
  log "buf breaking: no release tag and no commit before HEAD: nothing to compare with"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log "buf breaking: proto/ against $against ($(git rev-parse --short "$against^{commit}"))"
git archive "$against" proto | tar -x -C "$tmp"
if [[ ! -f $tmp/proto/buf.yaml ]]; then
  log "buf breaking: $against has no proto/buf.yaml: nothing to compare with"
  exit 0
fi
(cd proto && "$DEVICELINK_BUF_BIN" breaking --against "$tmp/proto") ||
  fail "proto/ breaks the contract of $against (see above). Keep the old field (or reserve its number and name) and add a new one"
