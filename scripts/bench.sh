#!/usr/bin/env bash
# Measures payout commands per second over loopback HTTP.
#
# Usage: scripts/bench.sh [nepxy-bench arguments...]
#   e.g. scripts/bench.sh --clients 16 --requests 4000 --wallets many
#   BENCH_SANDBOX=1 scripts/bench.sh --clients 16 --requests 1000 --wait-final
#
# With BENCH_SANDBOX=1 the provider sandbox runs beside the service on
# 127.0.0.1:$BENCH_SANDBOX_PORT (default 18002) and the service's dispatcher
# sends every payout to it, so --wait-final measures payouts from request to
# final status.
#
# Builds the release binaries, starts the private PostgreSQL cluster (unless
# DATABASE_URL is set), creates an empty database for this run, starts
# nepxy-api on 127.0.0.1:$BENCH_PORT (default 18001) and runs nepxy-bench
# against it. Everything it started is stopped on exit.

set -euo pipefail

REPO_ROOT=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

BENCH_PORT=${BENCH_PORT:-18001}
BENCH_SANDBOX_PORT=${BENCH_SANDBOX_PORT:-18002}
server_pid=
sandbox_pid=
started_cluster=0

cleanup() {
    local status=$?
    for pid in $server_pid $sandbox_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $started_cluster == 1 ]]; then
        scripts/pg.sh stop || true
    fi
    exit "$status"
}
trap cleanup EXIT

cargo build --release --locked --bins -p nepxy-api -p nepxy-bench -p nepxy-tests

if [[ -z ${DATABASE_URL:-} ]]; then
    if [[ $(scripts/pg.sh status 2>/dev/null) != running ]]; then
        started_cluster=1
    fi
    server_url=$(scripts/pg.sh start | tail -n 1)
else
    server_url=$DATABASE_URL
fi

database="nepxy_bench_$(date +%s)"
psql "$server_url" -qc "CREATE DATABASE $database" >/dev/null
bench_url="${server_url%/*}/$database"
echo "bench.sh: database $database" >&2

BOOTSTRAP_ADMIN_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export BOOTSTRAP_ADMIN_SECRET

if [[ ${BENCH_SANDBOX:-0} == 1 ]]; then
    sandbox_url="http://127.0.0.1:$BENCH_SANDBOX_PORT"
    base_url="http://127.0.0.1:$BENCH_PORT"
    TMONEY_WEBHOOK_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    THUNES_WEBHOOK_SECRET="whsec_$(head -c 32 /dev/urandom | base64 -w0)"
    MOMO_CALLBACK_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    export TMONEY_WEBHOOK_SECRET THUNES_WEBHOOK_SECRET MOMO_CALLBACK_SECRET
    RUST_LOG=warn target/release/nepxy-provider-sandbox --port "$BENCH_SANDBOX_PORT" \
        --callback-base-url "$base_url" >"$REPO_ROOT/target/bench-sandbox.log" 2>&1 &
    sandbox_pid=$!
    export MOMO_BASE_URL=$sandbox_url MOMO_API_USER=bench MOMO_API_KEY=bench \
        MOMO_SUBSCRIPTION_KEY=bench MOMO_TARGET_ENVIRONMENT=sandbox MOMO_CALLBACK_BASE_URL=$base_url
    export THUNES_BASE_URL=$sandbox_url THUNES_API_KEY=bench THUNES_API_SECRET=bench \
        THUNES_PAYER_ID=9999 THUNES_CALLBACK_URL=$base_url/v1/webhooks/thunes
    export TMONEY_BASE_URL=$sandbox_url TMONEY_API_KEY=bench
fi
log_file="$REPO_ROOT/target/bench-server.log"
# The load driver sends thousands of requests per second from 127.0.0.1, so
# the rate limits are off to measure the service itself.
DATABASE_URL=$bench_url \
    JWT_SECRET=$(head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n') \
    PORT=$BENCH_PORT \
    RATE_LIMIT_PER_IP_PER_MINUTE=0 \
    RATE_LIMIT_PER_TOKEN_PER_MINUTE=0 \
    RATE_LIMIT_WEBHOOKS_PER_IP_PER_MINUTE=0 \
    RUST_LOG=warn \
    target/release/nepxy-api >"$log_file" 2>&1 &
server_pid=$!

for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:$BENCH_PORT/health" >/dev/null; then
        break
    fi
    sleep 0.1
done
curl -sf "http://127.0.0.1:$BENCH_PORT/health" >/dev/null || {
    echo "bench.sh: nepxy-api did not become healthy; see $log_file" >&2
    exit 1
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
echo "postgres: $(psql "$bench_url" -Atc 'SHOW server_version'), fsync=$(psql "$bench_url" -Atc 'SHOW fsync')"
target/release/nepxy-bench --base-url "http://127.0.0.1:$BENCH_PORT" --service-pid "$server_pid" "$@"
