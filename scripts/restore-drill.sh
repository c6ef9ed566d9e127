#!/usr/bin/env bash
# Restore drill: dumps a ledger database, restores the dump into a fresh
# database, checks the history and the books there, starts the service on the
# copy and checks key endpoints.
#
# Usage: SOURCE_URL=postgres://... scripts/restore-drill.sh [--keep]
#
#   SOURCE_URL   database to dump (read-only access is enough).
#   TARGET_URL   server URL whose database name is replaced by a fresh
#                nepxy_restore_<time>; defaults to the private cluster of
#                scripts/pg.sh, started if needed.
#   DRILL_PORT   port of the service started on the copy (default 18201).
#   --keep       keep the restored database and the dump afterwards.
#
# The service on the copy runs with DISPATCHER=off, NOTIFICATIONS=off and no
# provider variables, so restored payouts never reach a provider or a client.
# Needs pg_dump and pg_restore of at least the source server's major version,
# curl, sha256sum, and the binaries in target/debug (cargo build --bins).

set -euo pipefail

REPO_ROOT=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

KEEP=0
[[ ${1:-} == --keep ]] && KEEP=1
: "${SOURCE_URL:?set SOURCE_URL to the database to dump}"
DRILL_PORT=${DRILL_PORT:-18201}
readonly API_BIN="$REPO_ROOT/target/debug/nepxy-api"
readonly REPLAY_BIN="$REPO_ROOT/target/debug/nepxy-replay"
for binary in "$API_BIN" "$REPLAY_BIN"; do
    [[ -x $binary ]] || { echo "restore-drill: $binary is missing; run cargo build --bins" >&2; exit 2; }
done

step() { printf 'drill: %s\n' "$*"; }
fail() { printf 'drill: FAIL %s\n' "$*" >&2; exit 1; }

work_dir=$(mktemp -d)
service_pid=
restored_url=
restored_name=
cleanup() {
    local status=$?
    [[ -n $service_pid ]] && kill "$service_pid" 2>/dev/null && wait "$service_pid" 2>/dev/null
    if ((KEEP == 0)); then
        [[ -n $restored_name ]] && psql "$TARGET_URL" -qc "DROP DATABASE IF EXISTS $restored_name WITH (FORCE)" >/dev/null 2>&1
        rm -rf -- "$work_dir"
    else
        step "kept database $restored_name and dump $work_dir/ledger.dump"
    fi
    exit "$status"
}
trap cleanup EXIT

if [[ -z ${TARGET_URL:-} ]]; then
    TARGET_URL=$(scripts/pg.sh start | tail -n 1)
fi

step "dumping the source database"
pg_dump --format=custom --no-owner --dbname "$SOURCE_URL" --file "$work_dir/ledger.dump" ||
    fail "pg_dump failed"

restored_name="nepxy_restore_$(date +%s)_$$"
restored_url="${TARGET_URL%/*}/$restored_name"
step "restoring into $restored_name"
psql "$TARGET_URL" -qc "CREATE DATABASE $restored_name" >/dev/null || fail "could not create $restored_name"
pg_restore --no-owner --exit-on-error --dbname "$restored_url" "$work_dir/ledger.dump" ||
    fail "pg_restore failed"

step "verifying hash chains, checkpoints and the books"
DATABASE_URL=$restored_url "$REPLAY_BIN" verify || fail "nepxy-replay verify found a problem"
step "rebuilding the read models and comparing them"
DATABASE_URL=$restored_url "$REPLAY_BIN" rebuild --verify || fail "rebuilt read models differ from the restored ones"

# nepxy-api listens on every interface (0.0.0.0); the checks below use
# 127.0.0.1, and the port should stay closed to other hosts.
step "starting nepxy-api on the copy, port $DRILL_PORT"
env -u MOMO_BASE_URL -u MOMO_API_USER -u MOMO_API_KEY -u MOMO_SUBSCRIPTION_KEY \
    -u MOMO_TARGET_ENVIRONMENT -u MOMO_CALLBACK_BASE_URL \
    -u THUNES_BASE_URL -u THUNES_API_KEY -u THUNES_API_SECRET -u THUNES_PAYER_ID -u THUNES_CALLBACK_URL \
    -u TMONEY_BASE_URL -u TMONEY_API_KEY \
    DATABASE_URL="$restored_url" PORT="$DRILL_PORT" APP_ENV=dev DISPATCHER=off NOTIFICATIONS=off \
    JWT_SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" \
    "$API_BIN" >"$work_dir/nepxy-api.log" 2>&1 &
service_pid=$!
base="http://127.0.0.1:$DRILL_PORT"
for _ in $(seq 1 150); do
    curl -sf "$base/health" >/dev/null && break
    kill -0 "$service_pid" 2>/dev/null || fail "nepxy-api exited; see $work_dir/nepxy-api.log"
    sleep 0.2
done
health=$(curl -sf "$base/health") || fail "/health does not answer 200"
step "health: $health"

# An auditor for the drill, written straight into the copy: the copy already
# has an admin, so the bootstrap route is closed.
auditor_id=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n' | sed -E 's/(.{8})(.{4})(.{4})(.{4})(.{12})/\1-\2-\3-\4-\5/')
auditor_secret="drill_$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
secret_hash=$(printf '%s' "$auditor_secret" | sha256sum | cut -d' ' -f1)
psql "$restored_url" -qc "INSERT INTO clients (client_id, name, role, secret_hash) \
    VALUES ('$auditor_id', 'restore drill', 'auditor', decode('$secret_hash', 'hex'))" >/dev/null ||
    fail "could not create the drill auditor"
token=$(curl -sf -X POST "$base/v1/auth/token" -H 'content-type: application/json' \
    -d "{\"grant_type\":\"client_credentials\",\"client_id\":\"$auditor_id\",\"client_secret\":\"$auditor_secret\"}" |
    sed -E 's/.*"access_token":"([^"]+)".*/\1/') || fail "token request failed"

payouts=$(curl -sf "$base/v1/payouts?limit=200" -H "authorization: Bearer $token") || fail "GET /v1/payouts failed"
restored_payouts=$(printf '%s' "$payouts" | grep -o '"id":' | wc -l)
source_payouts=$(psql "$restored_url" -Atc "SELECT count(*) FROM payouts")
step "payouts listed: $restored_payouts (read model holds $source_payouts)"
events=$(curl -sf "$base/v1/audit/events?limit=1" -H "authorization: Bearer $token") || fail "GET /v1/audit/events failed"
printf '%s' "$events" | grep -q '"items":\[{' || fail "the audit feed is empty"
step "audit feed answers"
step "restore drill passed"
