#!/usr/bin/env bash
# Runs the workspace tests against PostgreSQL.
#
# Usage: scripts/test.sh [cargo test arguments...]
#
# With DATABASE_URL set (and not empty), the tests use that database and this
# script starts nothing. Otherwise it starts the private cluster with
# scripts/pg.sh and exports its URL as DATABASE_URL. It stops the cluster on
# exit only if the cluster was not already running before.
#
# NOTE: when two runs share the cluster, the run that started it stops it on
# exit, even if the other run is still testing. Start it first with
# `scripts/pg.sh start` to run several test commands at once.

set -euo pipefail

REPO_ROOT=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
readonly PG_SCRIPT="$REPO_ROOT/scripts/pg.sh"

cd "$REPO_ROOT"

stop_cluster() {
    local status=$?
    if ! "$PG_SCRIPT" stop; then
        printf 'test.sh: warning: failed to stop the PostgreSQL cluster. Run scripts/pg.sh stop\n' >&2
    fi
    exit "$status"
}

if [[ -z ${DATABASE_URL:-} ]]; then
    if [[ $("$PG_SCRIPT" status 2>/dev/null) != running ]]; then
        trap stop_cluster EXIT
        # Exit through the EXIT trap with the usual status for the signal.
        trap 'exit 130' INT
        trap 'exit 143' TERM
    fi

    # pg.sh prints progress on stderr and the URL as the last line of stdout.
    # Test data need not survive a machine crash; see NEPXY_PG_FSYNC in pg.sh.
    start_output=$(NEPXY_PG_FSYNC=${NEPXY_PG_FSYNC:-off} "$PG_SCRIPT" start)
    DATABASE_URL=${start_output##*$'\n'}
    export DATABASE_URL
    printf 'test.sh: running tests against %s\n' "$DATABASE_URL" >&2
else
    # The URL may contain a password, so it is not printed.
    printf 'test.sh: running tests against DATABASE_URL from the environment\n' >&2
fi

# Each end-to-end test creates its own database; drop the ones that earlier
# runs left behind. The template is kept, since it is rebuilt only when the
# migrations change.
stale_databases=$(psql "$DATABASE_URL" -Atc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'nepxy\_test\_%'" 2>/dev/null || true)
for database in $stale_databases; do
    psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$database\"" >/dev/null 2>&1 ||
        printf 'test.sh: warning: could not drop stale database %s\n' "$database" >&2
done

# The end-to-end tests start the real binaries from target/debug.
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
