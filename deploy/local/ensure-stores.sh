#!/usr/bin/env bash
# Makes sure Postgres and Redis answer, and sets DATABASE_URL and REDIS_URL.
#
#   source deploy/local/ensure-stores.sh   # exports the two URLs
#   deploy/local/ensure-stores.sh          # prints them (passwords masked)
#
# A DATABASE_URL or REDIS_URL already in the environment is used as is when
# it answers. Otherwise the local stores are used, installed with apt-get and
# started when needed (which takes root or sudo; nothing else does):
#   - Postgres: the newest `main` cluster (created if there is none), with a
#     role and a database both named `devicelink`. The role's password is
#     `devicelink`: a local development credential, never a real one.
#   - Redis on 127.0.0.1:6379, started without persistence if it is down.
# Runs twice as safely as once: what exists is left as it is.
#
# The work happens in a subshell under `set -euo pipefail`, so sourcing this
# file leaves the caller's shell options alone. Source it as a plain command:
# inside `if` or `||`, bash would ignore errors in it.

_devicelink_ensure_stores() (
  set -euo pipefail

  local -r pg_cluster=main pg_role=devicelink pg_password=devicelink pg_database=devicelink
  local -r redis_host=127.0.0.1 redis_port=6379
  local -r wait_seconds=30
  local apt_updated=no

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
  # From `/`, which the postgres user can read, unlike root's home.
  as_postgres() (
    cd /
    if [[ $EUID -eq 0 ]]; then
      runuser -u postgres -- "$@"
    else
      as_root -u postgres -- "$@"
    fi
  )
  apt_install() {
    have apt-get || fail "apt-get not found: install $1 yourself, or set the URL variables to your own servers"
    if [[ $apt_updated == no ]]; then
      log "apt-get update"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || fail "apt-get update failed"
      apt_updated=yes
    fi
    log "installing $1 (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" || fail "could not install $1"
  }
  can_log_in() { PGCONNECT_TIMEOUT=5 psql -X -q -A -t -d "$1" -c 'SELECT 1' >/dev/null; }
  # Calls "$@" every half second until it succeeds, at most $wait_seconds.
  wait_until() {
    local attempt
    for ((attempt = 0; attempt < wait_seconds * 2; attempt++)); do
      "$@" && return 0
      sleep 0.5
    done
    return 1
  }

  # Sets database_url.
  ensure_postgres() {
    if [[ -n ${DATABASE_URL:-} ]]; then
      if ! have pg_isready; then
        log "postgres: using DATABASE_URL from the environment (pg_isready missing: not checked)"
        database_url=$DATABASE_URL
      elif pg_isready -q -t 5 -d "$DATABASE_URL"; then
        log "postgres: using DATABASE_URL from the environment"
        database_url=$DATABASE_URL
      else
        log "postgres: DATABASE_URL is set but does not answer; using the local Postgres instead"
      fi
    fi

    if [[ -z $database_url ]]; then
      if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
        apt_install postgresql
      fi
      have pg_lsclusters || fail "pg_lsclusters not found: is this Debian's postgresql-common?"

      # The newest version's `main` cluster, else the newest cluster there is.
      local clusters cluster version name port status
      clusters=$(pg_lsclusters --no-header | sort -k1,1V)
      cluster=$(awk -v name="$pg_cluster" '$2 == name' <<<"$clusters" | tail -n 1)
      [[ -n $cluster ]] || cluster=$(tail -n 1 <<<"$clusters")
      if [[ -z $cluster ]]; then
        version=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | cut -d/ -f5 | sort -V | tail -n 1)
        log "postgres: creating cluster $version/$pg_cluster"
        as_root pg_createcluster "$version" "$pg_cluster" >/dev/null || fail "pg_createcluster $version $pg_cluster failed"
        cluster=$(pg_lsclusters --no-header | awk -v version="$version" -v name="$pg_cluster" '$1 == version && $2 == name')
        [[ -n $cluster ]] || fail "cluster $version/$pg_cluster does not show in pg_lsclusters"
      fi
      read -r version name port status _ <<<"$cluster"

      if [[ $status != online* ]]; then
        log "postgres: starting cluster $version/$name"
        # pg_ctlcluster runs the server as the cluster's owner, so root may
        # call it; with systemd it hands over to postgresql@$version-$name.
        as_root pg_ctlcluster "$version" "$name" start || fail "pg_ctlcluster $version $name start failed (see /var/log/postgresql/)"
      fi
      wait_until pg_isready -q -t 2 -h 127.0.0.1 -p "$port" ||
        fail "postgres $version/$name does not answer on 127.0.0.1:$port after ${wait_seconds}s (see /var/log/postgresql/)"

      # A working login is all that matters; only without one are the role
      # and the database looked at, which takes the postgres user.
      database_url="postgres://$pg_role:$pg_password@127.0.0.1:$port/$pg_database"
      if ! can_log_in "$database_url" 2>/dev/null; then
        local -a psql=(psql -X -q -A -t -v ON_ERROR_STOP=1 -p "$port" -d postgres)
        if [[ -z $(as_postgres "${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$pg_role'") ]]; then
          log "postgres: creating role $pg_role"
          as_postgres "${psql[@]}" -c "CREATE ROLE $pg_role LOGIN CREATEDB PASSWORD '$pg_password'" ||
            fail "could not create role $pg_role"
        fi
        if [[ -z $(as_postgres "${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$pg_database'") ]]; then
          log "postgres: creating database $pg_database"
          as_postgres "${psql[@]}" -c "CREATE DATABASE $pg_database OWNER $pg_role" ||
            fail "could not create database $pg_database"
        fi
        can_log_in "$database_url" ||
          fail "cannot log in as $pg_role on 127.0.0.1:$port; if the role predates this script, reset it with: ALTER ROLE $pg_role LOGIN CREATEDB PASSWORD '$pg_password'"
      fi
      log "postgres: ready on 127.0.0.1:$port (cluster $version/$name, database $pg_database)"
    fi
  }

  # Sets redis_url.
  ensure_redis() {
    if [[ -n ${REDIS_URL:-} ]]; then
      if ! have redis-cli; then
        log "redis: using REDIS_URL from the environment (redis-cli missing: not checked)"
        redis_url=$REDIS_URL
      elif [[ $(timeout 5 redis-cli --no-auth-warning -u "$REDIS_URL" ping 2>/dev/null) == PONG ]]; then
        log "redis: using REDIS_URL from the environment"
        redis_url=$REDIS_URL
      else
        log "redis: REDIS_URL is set but does not answer PING; using the local Redis instead"
      fi
    fi

    if [[ -z $redis_url ]]; then
      if ! have redis-server || ! have redis-cli; then
        apt_install redis-server
      fi
      local_redis_answers() {
        [[ $(timeout 2 redis-cli -h "$redis_host" -p "$redis_port" ping 2>/dev/null) == PONG ]]
      }
      if ! local_redis_answers; then
        local redis_log="${TMPDIR:-/tmp}/devicelink-redis-$redis_port.log"
        log "redis: starting redis-server on $redis_host:$redis_port (no persistence; log: $redis_log)"
        redis-server --bind "$redis_host" --port "$redis_port" --daemonize yes \
          --save '' --appendonly no --logfile "$redis_log" </dev/null >/dev/null ||
          fail "redis-server did not start (see $redis_log)"
      fi
      wait_until local_redis_answers ||
        fail "redis does not answer on $redis_host:$redis_port after ${wait_seconds}s"
      redis_url="redis://$redis_host:$redis_port/0"
      log "redis: ready on $redis_host:$redis_port"
    fi
  }

  local database_url="" redis_url=""
  # All they print goes to stderr, so stdout carries the two URLs alone. Bash
  # keeps the real stdout close-on-exec meanwhile: the servers started here
  # do not hold it open (which would keep a `$(...)` caller waiting forever).
  ensure_postgres >&2
  ensure_redis >&2
  printf '%s\n%s\n' "$database_url" "$redis_url"
)

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  # Run directly: print the URLs, hiding any password but the local one.
  set -euo pipefail
  urls=$(_devicelink_ensure_stores)
  mask() {
    if [[ $1 == postgres://devicelink:devicelink@127.0.0.1:* ]]; then
      echo "$1"
    else
      sed -E 's#^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:)[^@/]*@#\1***@#' <<<"$1"
    fi
  }
  echo "DATABASE_URL=$(mask "${urls%%$'\n'*}")"
  echo "REDIS_URL=$(mask "${urls#*$'\n'}")"
  exit 0
fi

# Sourced: export the URLs into the caller's shell.
_devicelink_urls=$(_devicelink_ensure_stores)
_devicelink_status=$?
unset -f _devicelink_ensure_stores
if [[ $_devicelink_status -eq 0 ]]; then
  export DATABASE_URL="${_devicelink_urls%%$'\n'*}"
  export REDIS_URL="${_devicelink_urls#*$'\n'}"
fi
unset _devicelink_urls
if [[ $_devicelink_status -ne 0 ]]; then
  unset _devicelink_status
  return 1
fi
unset _devicelink_status
