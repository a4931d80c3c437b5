#!/usr/bin/env bash
# Makes sure a Redis Cluster of 3 masters and 3 replicas answers on
# 127.0.0.1:7100-7105, for tests/tests/redis_cluster.rs, and sets
# DEVICELINK_TEST_REDIS_CLUSTER_URLS to its seed nodes.
#
#   source deploy/local/ensure-redis-cluster.sh   # exports the variable
#   deploy/local/ensure-redis-cluster.sh          # prints the seed nodes
#
# Idempotent, and the way a test repairs the cluster after killing a node:
#   - a healthy cluster (every node up, state ok, 3 masters each with a
#     replica) is used as it is;
#   - nodes that are down are restarted from their nodes.conf: they rejoin,
#     a former master as a replica of the one promoted in its place;
#   - anything else (no cluster yet, a half-made one) is torn down and
#     created again.
# Nodes keep nothing on disk but nodes.conf (no RDB, no AOF), in
# ${TMPDIR:-/tmp}/devicelink-redis-cluster. cluster-node-timeout is 1 s, so
# that a test's failover takes seconds, not the 15 s of Redis's default.
# redis-server (Debian's 7.0 has cluster and TLS built in) is installed with
# apt-get when missing, as deploy/local/ensure-stores.sh does.

_devicelink_ensure_redis_cluster() (
  set -euo pipefail

  local -r host=127.0.0.1 first_port=7100 node_count=6 node_timeout_ms=1000
  local -r dir="${TMPDIR:-/tmp}/devicelink-redis-cluster"
  local -r wait_seconds=30

  log() { echo "devicelink: redis cluster: $*" >&2; }
  fail() {
    echo "devicelink: redis cluster: error: $*" >&2
    exit 1
  }
  have() { command -v "$1" >/dev/null 2>&1; }
  ports() { seq "$first_port" $((first_port + node_count - 1)); }
  cli() {
    local port=$1
    shift
    timeout 5 redis-cli -h "$host" -p "$port" "$@" 2>/dev/null
  }
  answers() { [[ $(cli "$1" ping) == PONG ]]; }
  info_field() { cli "$1" cluster info | tr -d '\r' | awk -F: -v key="$2" '$1 == key { print $2 }'; }
  # Every node answers and sees the whole cluster: state ok, 6 nodes,
  # 3 masters serving slots, none marked failed.
  healthy() {
    local port masters
    for port in $(ports); do
      answers "$port" || return 1
      [[ $(info_field "$port" cluster_state) == ok ]] || return 1
      [[ $(info_field "$port" cluster_known_nodes) == "$node_count" ]] || return 1
      [[ $(info_field "$port" cluster_size) == 3 ]] || return 1
    done
    # Field 3 holds the flags, e.g. "myself,master" or "slave,fail".
    masters=$(cli "$first_port" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ { n++ } END { print n + 0 }')
    [[ $masters == 3 ]] || return 1
    [[ $(cli "$first_port" cluster nodes | awk '$3 ~ /fail/ { n++ } END { print n + 0 }') == 0 ]]
  }
  wait_until() {
    local attempt
    for ((attempt = 0; attempt < wait_seconds * 2; attempt++)); do
      "$@" && return 0
      sleep 0.5
    done
    return 1
  }
  start_node() {
    local port=$1
    mkdir -p "$dir/$port"
    redis-server --bind "$host" --port "$port" --daemonize yes \
      --dir "$dir/$port" --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout "$node_timeout_ms" --save '' --appendonly no \
      --pidfile "$dir/$port/redis.pid" --logfile "$dir/$port/redis.log" </dev/null >/dev/null ||
      fail "redis-server on port $port did not start (see $dir/$port/redis.log)"
  }
  stop_all() {
    local port
    for port in $(ports); do
      if answers "$port"; then
        cli "$port" shutdown nosave >/dev/null || true
      fi
    done
    for port in $(ports); do
      wait_until bash -c "! timeout 2 redis-cli -h $host -p $port ping >/dev/null 2>&1" ||
        fail "the node on port $port does not stop"
    done
  }
  create() {
    log "creating a cluster of 3 masters and 3 replicas on $host:$first_port-$((first_port + node_count - 1)) (in $dir)"
    stop_all
    rm -rf "$dir"
    local port
    local -a nodes=()
    for port in $(ports); do
      start_node "$port"
      nodes+=("$host:$port")
    done
    for port in $(ports); do
      wait_until answers "$port" || fail "the node on port $port does not answer"
    done
    timeout 60 redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 ||
      fail "redis-cli --cluster create failed (see $dir/create.log)"
  }

  if ! have redis-server || ! have redis-cli; then
    have apt-get || fail "redis-server not found: install it (Debian: apt-get install redis-server)"
    local sudo=()
    [[ $EUID -eq 0 ]] || sudo=(sudo)
    log "installing redis-server (apt-get)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >&2 ||
      fail "could not install redis-server"
  fi

  if healthy; then
    log "ready (reused)"
  else
    local port restarted=no
    if [[ -f $dir/$first_port/nodes.conf ]]; then
      for port in $(ports); do
        if ! answers "$port" && [[ -f $dir/$port/nodes.conf ]]; then
          log "restarting the node on port $port"
          start_node "$port"
          restarted=yes
        fi
      done
    fi
    if [[ $restarted == yes ]] && wait_until healthy; then
      log "ready (repaired)"
    else
      create
      wait_until healthy || fail "the new cluster is not healthy after ${wait_seconds}s (see $dir/*/redis.log)"
      log "ready (created)"
    fi
  fi
  local -a urls=()
  for port in $(ports); do
    urls+=("redis://$host:$port")
  done
  (
    IFS=,
    echo "${urls[*]}"
  )
)

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  _devicelink_ensure_redis_cluster
else
  DEVICELINK_TEST_REDIS_CLUSTER_URLS=$(_devicelink_ensure_redis_cluster)
  export DEVICELINK_TEST_REDIS_CLUSTER_URLS
fi
