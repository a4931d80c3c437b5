#!/usr/bin/env bash
# Makes sure Postgres and Redis are reachable, and exports DATABASE_URL and
# REDIS_URL for them.
#
# - DATABASE_URL / REDIS_URL already set and answering: used as they are.
# - Otherwise the local Debian packages are installed when missing, started
#   when stopped, and a `devicelink` role (password `devicelink`, may create
#   databases) with a `devicelink` database is created when missing.
#
# Sourced by run.sh and test.sh; run directly, it prints the two URLs.
# Works as root (Postgres itself runs as the `postgres` user) or with sudo.

set -euo pipefail

say() { echo "devicelink: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    say "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  say "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_until() { # seconds description command...
  local seconds=$1 description=$2
  shift 2
  for _ in $(seq $((seconds * 4))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  say "gave up waiting for $description after ${seconds}s"
  return 1
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

ensure_postgres() {
  if [ -n "${DATABASE_URL:-}" ] && command -v psql >/dev/null \
     && psql "$DATABASE_URL" -tAc 'SELECT 1' >/dev/null 2>&1; then
    say "using Postgres from DATABASE_URL"
    return
  fi
  if [ -n "${DATABASE_URL:-}" ]; then
    say "DATABASE_URL is set but does not answer; falling back to a local Postgres"
  fi
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt_install postgresql
  fi
  local version port status
  if ! pg_lsclusters -h 2>/dev/null | grep -q .; then
    version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
    say "creating Postgres cluster $version/main"
    as_root pg_createcluster "$version" main >/dev/null
  fi
  read -r version _ port status _ < <(pg_lsclusters -h | head -n 1)
  if [ "$status" != "online" ]; then
    say "starting Postgres $version/main on port $port"
    as_root pg_ctlcluster "$version" main start
  fi
  wait_until 30 "Postgres" pg_isready -q -h 127.0.0.1 -p "$port"
  as_postgres psql -q -p "$port" -v ON_ERROR_STOP=1 <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'devicelink') THEN
    CREATE ROLE devicelink LOGIN CREATEDB PASSWORD 'devicelink';
  END IF;
END
$$;
SQL
  if ! as_postgres psql -p "$port" -tAc "SELECT 1 FROM pg_database WHERE datname = 'devicelink'" | grep -q 1; then
    as_postgres createdb -p "$port" -O devicelink devicelink
  fi
  export DATABASE_URL="postgres://devicelink:devicelink@127.0.0.1:$port/devicelink"
  say "Postgres ready at 127.0.0.1:$port"
}

ensure_redis() {
  if [ -n "${REDIS_URL:-}" ] && command -v redis-cli >/dev/null \
     && [ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" = "PONG" ]; then
    say "using Redis from REDIS_URL"
    return
  fi
  if ! command -v redis-server >/dev/null; then
    apt_install redis-server
  fi
  if [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" != "PONG" ]; then
    say "starting Redis on 127.0.0.1:6379"
    redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no >/dev/null
  fi
  wait_until 30 "Redis" redis-cli -h 127.0.0.1 -p 6379 ping
  export REDIS_URL="redis://127.0.0.1:6379/0"
  say "Redis ready at 127.0.0.1:6379"
}

ensure_postgres
ensure_redis

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "DATABASE_URL=$DATABASE_URL"
  echo "REDIS_URL=$REDIS_URL"
fi
