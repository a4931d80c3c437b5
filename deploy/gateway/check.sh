#!/usr/bin/env bash
# The REST gateway's static checks, with the pinned tools of
# install-tools.sh (installed first when missing):
#   1. `buf lint` of proto/ (proto/buf.yaml: STANDARD, vendored google/ aside),
#      and `buf breaking` against the last release tag, or else the previous
#      commit (deploy/gateway/buf-breaking.sh): a renamed or renumbered field
#      fails here
#   2. Envoy's own validation of deploy/envoy/envoy.yaml, with the real
#      descriptor set
#   3. the committed OpenAPI document is what the protos give, byte for byte
#      (the same check runs in `cargo test --workspace` as a unit test of
#      devicelink-openapi)
#   4. the committed OpenAPI document is valid OpenAPI 3.0
# The end-to-end tests through Envoy are tests/tests/rest_gateway.rs and
# tests/tests/schemathesis.rs, run by `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { echo "devicelink: $*" >&2; }
fail() {
  echo "devicelink: error: $*" >&2
  exit 1
}

# shellcheck source=deploy/gateway/install-tools.sh
source deploy/gateway/install-tools.sh

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

log "check: buf lint proto/"
(cd proto && "$DEVICELINK_BUF_BIN" lint) || fail "buf lint found problems in proto/ (see above)"

# A renamed, renumbered or removed field fails here.
deploy/gateway/buf-breaking.sh

log "check: envoy --mode validate deploy/envoy/envoy.yaml"
cargo run --quiet -p devicelink-shared --bin devicelink-descriptor -- "$tmp/devicelink.pb"
sed "s#proto_descriptor: /etc/envoy/devicelink.pb#proto_descriptor: $tmp/devicelink.pb#" \
  deploy/envoy/envoy.yaml >"$tmp/envoy.yaml"
grep -q "proto_descriptor: $tmp/devicelink.pb" "$tmp/envoy.yaml" ||
  fail "deploy/envoy/envoy.yaml no longer reads /etc/envoy/devicelink.pb"
# Both transcoders (the public and the admin listener's) read it.
if grep -q "/etc/envoy/devicelink.pb" "$tmp/envoy.yaml"; then
  fail "deploy/envoy/envoy.yaml reads /etc/envoy/devicelink.pb in a form other than 'proto_descriptor: /etc/envoy/devicelink.pb'"
fi
"$DEVICELINK_ENVOY_BIN" --mode validate --disable-hot-restart --log-level warn \
  --config-path "$tmp/envoy.yaml" >"$tmp/validate.log" 2>&1 || {
  cat "$tmp/validate.log" >&2
  fail "Envoy refuses deploy/envoy/envoy.yaml"
}

log "check: deploy/openapi/devicelink.openapi.json matches proto/"
cargo run --quiet -p devicelink-e2e --bin devicelink-openapi -- "$tmp/devicelink.openapi.json"
diff -u deploy/openapi/devicelink.openapi.json "$tmp/devicelink.openapi.json" >&2 ||
  fail "the OpenAPI document is out of date; regenerate it with:
  cargo run -p devicelink-e2e --bin devicelink-openapi -- deploy/openapi/devicelink.openapi.json"

log "check: deploy/openapi/devicelink.openapi.json is valid OpenAPI"
"$DEVICELINK_OPENAPI_VALIDATOR_BIN" deploy/openapi/devicelink.openapi.json >&2 ||
  fail "the OpenAPI document is not valid OpenAPI"

log "check: gateway checks passed"
