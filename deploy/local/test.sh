#!/usr/bin/env bash
# Runs every test against real Postgres and Redis, starting them first when
# needed. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/../.."

# shellcheck source=deploy/local/ensure-stores.sh
source deploy/local/ensure-stores.sh

# A Redis Cluster on 127.0.0.1:7100-7105 for tests/tests/redis_cluster.rs,
# made once and reused by later runs while healthy.
# shellcheck source=deploy/local/ensure-redis-cluster.sh
source deploy/local/ensure-redis-cluster.sh

# pgbouncer, for tests/tests/pgbouncer.rs (which starts its own).
# shellcheck source=deploy/local/ensure-pgbouncer.sh
source deploy/local/ensure-pgbouncer.sh

# The tests create one database per test: the role must be allowed to.
export DEVICELINK_TEST_DATABASE_URL="$DATABASE_URL"
export DEVICELINK_TEST_REDIS_URL="$REDIS_URL"
# Pinned Envoy and schemathesis for tests/tests/rest_gateway.rs and
# schemathesis.rs (and buf, for deploy/gateway/check.sh).
# shellcheck source=deploy/gateway/install-tools.sh
source deploy/gateway/install-tools.sh
exec cargo test --workspace "$@"
