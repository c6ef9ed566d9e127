#!/usr/bin/env bash
# Measures the service over loopback HTTP against a pgbench baseline run on
# the same PostgreSQL in the same run, and prints every figure with its
# ratio to the baseline at the same client count.
#
# Usage: scripts/bench.sh [nepxy-bench arguments...]
#   scripts/bench.sh
#       every mix at 1, 4, 16 and 64 clients, then payouts at half the
#       target rate at 64 clients; about 6 minutes
#   scripts/bench.sh --clients 16 --mixes payouts-many,payouts-one
#   BENCH_SANDBOX=1 scripts/bench.sh --clients 16 --mixes payouts-many --requests 1000 --wait-final
#
# Without arguments the driver runs with --half-load; with arguments, they
# replace that default (see target/release/nepxy-bench --help).
#
# Builds the release binaries, uses the PostgreSQL server of DATABASE_URL
# (or starts the private cluster with scripts/pg.sh when DATABASE_URL is
# unset, and stops it at exit only if this script started it), creates two
# empty databases, nepxy_bench_<time> for the service and
# nepxy_bench_<time>_baseline for pgbench, starts nepxy-api on
# 127.0.0.1:$BENCH_PORT (default 18001) and runs nepxy-bench against it.
# Everything it started is stopped on exit, and both databases are dropped
# unless BENCH_KEEP_DATABASE=1. The driver is stopped after
# BENCH_TIMEOUT_SECONDS (default 900) if it has not finished by then.
#
# With BENCH_SANDBOX=1 the provider sandbox runs beside the service on
# 127.0.0.1:$BENCH_SANDBOX_PORT (default 18002) and the service's dispatcher
# sends every payout to it, so --wait-final measures payouts from request to
# final status. The sandbox's callbacks then settle payouts too, so leave
# the webhooks mix out of such runs.
#
# The result table is also written to target/bench/report-<time>.md, and
# the service's log to target/bench/server.log. BENCH_SERVICE_LOG sets the
# service's RUST_LOG (default warn); warn,sqlx::query=debug logs every SQL
# statement, to count round trips per request.

set -euo pipefail

REPO_ROOT=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

BENCH_PORT=${BENCH_PORT:-18001}
BENCH_SANDBOX_PORT=${BENCH_SANDBOX_PORT:-18002}
BENCH_TIMEOUT_SECONDS=${BENCH_TIMEOUT_SECONDS:-900}
server_pid=
sandbox_pid=
started_cluster=0
server_url=
databases=()

cleanup() {
    local status=$?
    for pid in $server_pid $sandbox_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${BENCH_KEEP_DATABASE:-0} != 1 ]]; then
        for database in "${databases[@]}"; do
            psql "$server_url" -qc "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true
        done
    fi
    if [[ $started_cluster == 1 ]]; then
        scripts/pg.sh stop || true
    fi
    exit "$status"
}
trap cleanup EXIT

random_hex() {
    head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'
}

packages=(-p nepxy-api -p nepxy-bench)
if [[ ${BENCH_SANDBOX:-0} == 1 ]]; then
    packages+=(-p nepxy-tests)
fi
cargo build --release --locked --bins "${packages[@]}"

if [[ -z ${DATABASE_URL:-} ]]; then
    if [[ $(scripts/pg.sh status 2>/dev/null) != running ]]; then
        started_cluster=1
    fi
    server_url=$(scripts/pg.sh start | tail -n 1)
else
    server_url=$DATABASE_URL
fi

# pgbench and psql of the server's major version when installed, else the
# newest installed; NEPXY_PG_BIN overrides both.
server_major=$(($(psql "$server_url" -Atc 'SHOW server_version_num') / 10000))
if [[ -n ${NEPXY_PG_BIN:-} ]]; then
    pg_bin=$NEPXY_PG_BIN
elif [[ -x /usr/lib/postgresql/$server_major/bin/pgbench ]]; then
    pg_bin=/usr/lib/postgresql/$server_major/bin
else
    pg_bin=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/pgbench' \
        -printf '%h\n' 2>/dev/null | sort -V | tail -n 1)
fi
if [[ -z $pg_bin || ! -x $pg_bin/pgbench ]]; then
    echo "bench.sh: pgbench not found; install the postgresql package or set NEPXY_PG_BIN" >&2
    exit 1
fi

run_id=$(date +%Y%m%d%H%M%S)
database="nepxy_bench_$run_id"
baseline_database="${database}_baseline"
for name in "$database" "$baseline_database"; do
    psql "$server_url" -qc "CREATE DATABASE $name" >/dev/null
    databases+=("$name")
done
bench_url="${server_url%/*}/$database"
baseline_url="${server_url%/*}/$baseline_database"
echo "bench.sh: databases $database and $baseline_database" >&2

BOOTSTRAP_ADMIN_SECRET=$(random_hex 24)
TMONEY_WEBHOOK_SECRET=$(random_hex 32)
THUNES_WEBHOOK_SECRET="whsec_$(head -c 32 /dev/urandom | base64 -w0)"
export BOOTSTRAP_ADMIN_SECRET TMONEY_WEBHOOK_SECRET THUNES_WEBHOOK_SECRET

mkdir -p target/bench
base_url="http://127.0.0.1:$BENCH_PORT"
if [[ ${BENCH_SANDBOX:-0} == 1 ]]; then
    sandbox_url="http://127.0.0.1:$BENCH_SANDBOX_PORT"
    MOMO_CALLBACK_SECRET=$(random_hex 32)
    export MOMO_CALLBACK_SECRET
    RUST_LOG=warn target/release/nepxy-provider-sandbox --port "$BENCH_SANDBOX_PORT" \
        --callback-base-url "$base_url" >target/bench/sandbox.log 2>&1 &
    sandbox_pid=$!
    export MOMO_BASE_URL=$sandbox_url MOMO_API_USER=bench MOMO_API_KEY=bench \
        MOMO_SUBSCRIPTION_KEY=bench MOMO_TARGET_ENVIRONMENT=sandbox MOMO_CALLBACK_BASE_URL=$base_url
    export THUNES_BASE_URL=$sandbox_url THUNES_API_KEY=bench THUNES_API_SECRET=bench \
        THUNES_PAYER_ID=9999 THUNES_CALLBACK_URL=$base_url/v1/webhooks/thunes
    export TMONEY_BASE_URL=$sandbox_url TMONEY_API_KEY=bench
fi
log_file="$REPO_ROOT/target/bench/server.log"
# The load driver sends thousands of requests per second from 127.0.0.1, so
# the rate limits are off to measure the service itself.
DATABASE_URL=$bench_url \
    JWT_SECRET=$(random_hex 48) \
    PORT=$BENCH_PORT \
    RATE_LIMIT_PER_IP_PER_MINUTE=0 \
    RATE_LIMIT_PER_TOKEN_PER_MINUTE=0 \
    RATE_LIMIT_WEBHOOKS_PER_IP_PER_MINUTE=0 \
    ACCESS_TOKEN_TTL_SECONDS=3600 \
    RUST_LOG=${BENCH_SERVICE_LOG:-warn} \
    target/release/nepxy-api >"$log_file" 2>&1 &
server_pid=$!

for _ in $(seq 1 100); do
    if curl -sf "$base_url/health" >/dev/null; then
        break
    fi
    sleep 0.1
done
curl -sf "$base_url/health" >/dev/null || {
    echo "bench.sh: nepxy-api did not become healthy; see $log_file" >&2
    exit 1
}

setting() {
    psql "$bench_url" -Atc "SHOW $1"
}
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "postgres: $(setting server_version), fsync=$(setting fsync), synchronous_commit=$(setting synchronous_commit), shared_buffers=$(setting shared_buffers), max_connections=$(setting max_connections)"
echo "pgbench: $("$pg_bin/pgbench" --version)"
echo "nepxy-api: DATABASE_MAX_CONNECTIONS=${DATABASE_MAX_CONNECTIONS:-32 (default)}"

if (($# == 0)); then
    set -- --half-load
fi
timeout --signal=INT "$BENCH_TIMEOUT_SECONDS" target/release/nepxy-bench \
    --base-url "$base_url" \
    --service-pid "$server_pid" \
    --pg-bin "$pg_bin" \
    --baseline-url "$baseline_url" \
    --baseline-scripts "$REPO_ROOT/bench/pgbench" \
    --work-dir "$REPO_ROOT/target/bench" \
    --report "$REPO_ROOT/target/bench/report-$run_id.md" \
    "$@"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
