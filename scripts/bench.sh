#!/usr/bin/env bash
# Measures payout commands per second over loopback HTTP.
#
# Usage: scripts/bench.sh [nepxy-bench arguments...]
#   e.g. scripts/bench.sh --clients 16 --requests 4000 --wallets many
#
# Builds the release binaries, starts the private PostgreSQL cluster (unless
# DATABASE_URL is set), creates an empty database for this run, starts
# nepxy-api on 127.0.0.1:$BENCH_PORT (default 18001) and runs nepxy-bench
# against it. Everything it started is stopped on exit.

set -euo pipefail

REPO_ROOT=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

BENCH_PORT=${BENCH_PORT:-18001}
server_pid=
started_cluster=0

cleanup() {
    local status=$?
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ $started_cluster == 1 ]]; then
        scripts/pg.sh stop || true
    fi
    exit "$status"
}
trap cleanup EXIT

cargo build --release --locked --bins -p nepxy-api -p nepxy-bench

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
log_file="$REPO_ROOT/target/bench-server.log"
DATABASE_URL=$bench_url \
    JWT_SECRET=$(head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n') \
    PORT=$BENCH_PORT \
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
