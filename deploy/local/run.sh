#!/usr/bin/env bash
# Runs the service pair locally: makes sure Postgres and Redis answer, builds,
# starts registration (which migrates the database) and then authcode,
# each serving its own Prometheus metrics, creates a demo app and API key,
# and prints how to make a first call. Ctrl-C (or SIGTERM) stops both
# services.
#
# Environment: PROFILE (debug, the default, or release), REGISTRATION_ADDR
# (127.0.0.1:50052), ADMIN_ADDR (registration's private AdminService
# listener, 127.0.0.1:50053), AUTHCODE_ADDR (127.0.0.1:50051),
# AUTHCODE_METRICS_ADDR (127.0.0.1:9091), REGISTRATION_METRICS_ADDR
# (127.0.0.1:9092), DEVICELINK_ADMIN_TOKEN (the quickstart operator's token,
# random when unset), AUTH_CODE_RECORD_KEY (the code records' seal key,
# random when unset), DATABASE_URL and REDIS_URL (see ensure-stores.sh).
#
# The first calls it prints use `buf curl` (deploy/gateway/install-tools.sh
# installs buf), with grpcurl as the alternative.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

log() { echo "devicelink: $*" >&2; }
fail() {
  log "error: $*"
  exit 1
}

# shellcheck source=deploy/local/ensure-stores.sh
source deploy/local/ensure-stores.sh

profile=${PROFILE:-debug}
case $profile in
  debug | dev) cargo_profile=dev target_subdir=debug ;;
  *) cargo_profile=$profile target_subdir=$profile ;;
esac
bin="${CARGO_TARGET_DIR:-$repo/target}/$target_subdir"

registration_addr=${REGISTRATION_ADDR:-127.0.0.1:50052}
admin_addr=${ADMIN_ADDR:-127.0.0.1:50053}
authcode_addr=${AUTHCODE_ADDR:-127.0.0.1:50051}
# Each service serves its own metrics: one METRICS_ADDR for both would
# make the second fail to start on the port clash.
authcode_metrics_addr=${AUTHCODE_METRICS_ADDR:-127.0.0.1:9091}
registration_metrics_addr=${REGISTRATION_METRICS_ADDR:-127.0.0.1:9092}
unset METRICS_ADDR
if [[ -z ${DEVICELINK_ADMIN_TOKEN:-} ]]; then
  DEVICELINK_ADMIN_TOKEN=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
fi
# devicelinkctl reads the token from the environment, so it never shows in `ps`.
export DEVICELINK_ADMIN_TOKEN
# The key both services seal and check code records with (README, "Code
# records"); random per run unless given, so codes do not outlive a restart.
if [[ -z ${AUTH_CODE_RECORD_KEY:-} ]]; then
  AUTH_CODE_RECORD_KEY=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
fi
export AUTH_CODE_RECORD_KEY
# AdminService is served only on registration's own admin listener, never on
# its public one.
export ADMIN_LISTEN_ADDR=$admin_addr
export DEVICELINK_ADMIN_ADDR="http://$admin_addr"

log "building ($profile)"
cargo build --bins --profile "$cargo_profile"

# True when something accepts TCP connections at host:port.
listening() {
  # shellcheck disable=SC2016 # expanded by the inner bash, from its own $1
  timeout 1 bash -c ': <"/dev/tcp/${1%:*}/${1##*:}"' listening "$1" 2>/dev/null
}

for addr in "$registration_addr" "$admin_addr" "$authcode_addr" \
  "$authcode_metrics_addr" "$registration_metrics_addr"; do
  if listening "$addr"; then
    fail "$addr is already in use (another run.sh?); stop it, or set REGISTRATION_ADDR / ADMIN_ADDR / AUTHCODE_ADDR / *_METRICS_ADDR"
  fi
done

pids=()
# shellcheck disable=SC2317 # run by the EXIT trap
stop_services() {
  trap - EXIT INT TERM
  ((${#pids[@]})) || return 0
  log "stopping the services"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  # They drain in-flight calls first; give them a while, then insist.
  local tries
  for ((tries = 0; tries < 150; tries++)); do
    kill -0 "${pids[@]}" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts "$2" with LISTEN_ADDR=$1 and METRICS_ADDR=$3, and waits until it
# accepts connections.
# As the container images run the services (deploy/docker): no transparent
# huge pages for mimalloc's memory, which doubled the services' RSS.
export MIMALLOC_ALLOW_THP=${MIMALLOC_ALLOW_THP:-0}

start_service() {
  local addr=$1 name=$2 metrics_addr=$3 tries
  log "starting $name on $addr (metrics on $metrics_addr)"
  LISTEN_ADDR=$addr METRICS_ADDR=$metrics_addr "$bin/$name" &
  pids+=("$!")
  for ((tries = 0; tries < 120; tries++)); do
    listening "$addr" && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || fail "$name exited during start-up; see its output above"
    sleep 0.5
  done
  fail "$name does not accept connections on $addr after 60s"
}

# registration first: it owns the schema and migrates it on start.
start_service "$registration_addr" registration-service "$registration_metrics_addr"
# The admin listener is bound with the public one, before either serves.
listening "$admin_addr" || fail "registration does not serve AdminService on $admin_addr"
start_service "$authcode_addr" authcode-service "$authcode_metrics_addr"

ctl="$bin/devicelinkctl"
app_id=$("$ctl" create-app demo)
key_output=$("$ctl" create-key "$app_id")
api_key=${key_output%%$'\n'*}

ctl_shown=${ctl#"$repo/"}
# buf as deploy/gateway/install-tools.sh installs it, else one on PATH.
buf=${DEVICELINK_BUF_BIN:-${DEVICELINK_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/devicelink/gateway-tools}/bin/buf}
if [[ ! -x $buf ]] && command -v buf >/dev/null 2>&1; then
  buf=$(command -v buf)
fi
if [[ -x $buf ]]; then
  buf_note="buf is at $buf"
else
  buf_note="no buf yet: deploy/gateway/install-tools.sh installs it and prints its path"
fi
cat <<EOF

devicelink is running (Ctrl-C stops both services)

  authcode       $authcode_addr   AuthCodeService
  registration   $registration_addr   RegistrationService (public)
  admin          $admin_addr   AdminService (private: operators only)
  metrics        http://$authcode_metrics_addr/metrics   (authcode)
                 http://$registration_metrics_addr/metrics   (registration)
  admin token    $DEVICELINK_ADMIN_TOKEN   (operator "admin")
  demo app id    $app_id
  demo API key   $api_key

A first call, from another shell in $repo, with buf curl (server reflection
gives it the schema; $buf_note):

  BUF=$buf

the customer's backend mints a code

  "\$BUF" curl --protocol grpc --http2-prior-knowledge \\
    -H "authorization: Bearer $api_key" -d '{"external_id":"user-1"}' \\
    http://$authcode_addr/devicelink.v1.AuthCodeService/MintAuthCode

then the app redeems it (set CODE to the authCode it returned)

  "\$BUF" curl --protocol grpc --http2-prior-knowledge \\
    -d '{"auth_code":"'"\$CODE"'","app_id":"$app_id",
         "app":{"app_version":"1.0.0","sdk_version":"1.0.0","bundle_id":"com.example.app"},
         "device":{"device_id":"device-1","platform":"PLATFORM_IOS","form_factor":"FORM_FACTOR_PHONE",
                   "model":"iPhone15,2","os_version":"17.1"}}' \\
    http://$registration_addr/devicelink.v1.RegistrationService/CreateUser

and the operator looks at the result, on the admin listener (devicelinkctl's
default address; the public one answers UNIMPLEMENTED to AdminService)

  export DEVICELINK_ADMIN_ADDR=$DEVICELINK_ADMIN_ADDR DEVICELINK_ADMIN_TOKEN=$DEVICELINK_ADMIN_TOKEN
  $ctl_shown get-user $app_id user-1
  $ctl_shown list-keys $app_id
  $ctl_shown help

With grpcurl instead, if you have it (every listener serves reflection),
the same two calls:

  grpcurl -plaintext -H "authorization: Bearer $api_key" -d '{"external_id":"user-1"}' \\
    $authcode_addr devicelink.v1.AuthCodeService/MintAuthCode
  grpcurl -plaintext -d '{"auth_code":"'"\$CODE"'","app_id":"$app_id",
         "app":{"app_version":"1.0.0","sdk_version":"1.0.0","bundle_id":"com.example.app"},
         "device":{"device_id":"device-1","platform":"PLATFORM_IOS","form_factor":"FORM_FACTOR_PHONE",
                   "model":"iPhone15,2","os_version":"17.1"}}' \\
    $registration_addr devicelink.v1.RegistrationService/CreateUser

Each service's metrics: curl -s http://$registration_metrics_addr/metrics. The
alerts, the dashboard and the SLOs are in deploy/observability/, what to do
when an alert fires in deploy/RUNBOOK.md.

EOF

# Until Ctrl-C, SIGTERM, or a service stopping on its own.
status=0
wait -n "${pids[@]}" || status=$?
fail "a service stopped by itself (status $status); stopping the other"
