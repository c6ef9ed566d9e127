#!/usr/bin/env bash
# Starts nepxy-api with a database and drives the demo scenario through it.
#
# Usage: scripts/run.sh [--exit] [--keep-database] [--scenario FILE]
#
#   1. Builds the workspace binaries with `cargo build --locked --bins`.
#   2. Without DATABASE_URL, starts the private PostgreSQL cluster
#      (scripts/pg.sh) and creates a fresh database nepxy_demo_<time>_<pid>,
#      which is dropped on exit. With DATABASE_URL, uses that database as it
#      is. It must have no admin yet, because the scenario creates the first
#      admin through POST /v1/admin/bootstrap.
#   3. Starts target/debug/nepxy-provider-sandbox on 127.0.0.1:$SANDBOX_PORT,
#      which plays TMoney, Thunes and MTN MoMo and sends their callbacks.
#   4. Starts target/debug/nepxy-api with APP_ENV=dev on $BIND_ADDRESS:$PORT
#      (127.0.0.1 unless BIND_ADDRESS is set, so the demo service with its
#      fresh admin is not reachable from other hosts), its
#      providers pointed at the sandbox, and writes its log to
#      target/run/<time>-<pid>/nepxy-api.log.
#   5. Runs target/debug/nepxy-scenario against http://127.0.0.1:$PORT; the
#      payouts go to the sandbox and come back by webhook as succeeded or
#      failed.
#   6. Keeps the service running until Ctrl-C. Then it stops the service,
#      drops the demo database and stops the cluster if this script started
#      it.
#
# Options:
#   --exit            Stop everything after the scenario and exit with its
#                     status. SCENARIO_EXIT=1 does the same.
#   --keep-database   Keep the demo database on exit (its name is printed).
#   --scenario FILE   Scenario file (default examples/scenario.json).
#
# Environment:
#   PORT                    Port of the service (default 8001).
#   SANDBOX_PORT            Port of the provider sandbox (default 18090).
#   DATABASE_URL            Use this database instead of the private cluster.
#   NEPXY_PG_PORT           Port of the private cluster (default 55432).
#   JWT_SECRET              Token signing key. A random one is generated when
#                           unset, and it is never printed.
#   BOOTSTRAP_ADMIN_SECRET  X-Bootstrap-Secret value that creates the first
#                           admin. Also generated when unset, never printed.
#   LOG_FORMAT              text (default) or json, passed to the service.
#
# The admin's and the client's POST /v1/auth/token bodies, with their
# secrets, are written to target/run/<time>-<pid>/ (mode 0600) so that the curl
# commands printed at the end work.
#
# NOTE: when another run shares the private cluster, the run that started it
# stops it on exit, even if the other run still uses it. Start it first with
# `scripts/pg.sh start` to avoid that.

set -euo pipefail

REPO_ROOT=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
readonly PG_SCRIPT="$REPO_ROOT/scripts/pg.sh"
readonly API_BIN="$REPO_ROOT/target/debug/nepxy-api"
readonly SCENARIO_BIN="$REPO_ROOT/target/debug/nepxy-scenario"
readonly SANDBOX_BIN="$REPO_ROOT/target/debug/nepxy-provider-sandbox"
# Maximum time for the service to accept connections, which includes its own
# wait of up to 30 s for the database and the migrations of a new database.
readonly SERVICE_START_TIMEOUT_SECONDS=60
# Maximum time for the service to finish requests in flight after SIGTERM.
readonly SERVICE_STOP_TIMEOUT_SECONDS=15

EXIT_AFTER_SCENARIO=0
[[ ${SCENARIO_EXIT:-} == 1 ]] && EXIT_AFTER_SCENARIO=1
KEEP_DATABASE=0
SCENARIO_FILE="$REPO_ROOT/examples/scenario.json"
PORT=${PORT:-8001}
BIND_ADDRESS=${BIND_ADDRESS:-127.0.0.1}
SANDBOX_PORT=${SANDBOX_PORT:-18090}
SANDBOX_PID=""

# State read by the cleanup on exit.
SERVICE_PID=""
STARTED_CLUSTER=0
DEMO_DATABASE=""
RUN_DIR=""
LOG_FILE=""

log() {
    printf 'run.sh: %s\n' "$*" >&2
}

die() {
    printf 'run.sh: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

parse_args() {
    while (($# > 0)); do
        case $1 in
            --exit) EXIT_AFTER_SCENARIO=1 ;;
            --keep-database) KEEP_DATABASE=1 ;;
            --scenario)
                (($# >= 2)) || die "--scenario needs a file name"
                SCENARIO_FILE=$(realpath -- "$2") || die "scenario file $2 not found"
                shift
                ;;
            -h | --help)
                usage
                exit 0
                ;;
            *)
                die "unknown argument '$1'. Run scripts/run.sh --help for the options"
                ;;
        esac
        shift
    done
}

port_in_use() {
    local port=${1:-$PORT}
    # shellcheck disable=SC2016 # $1 expands in the inner bash.
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$port" 2>/dev/null
}

check_port() {
    if [[ ! $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
        die "PORT must be a number from 1 to 65535, got '$PORT'"
    fi
    if port_in_use; then
        die "port $PORT on 127.0.0.1 is already in use, maybe by another nepxy-api. Stop that process, or choose a free port, for example: PORT=8002 scripts/run.sh"
    fi
    if port_in_use "$SANDBOX_PORT"; then
        die "port $SANDBOX_PORT on 127.0.0.1 is already in use, maybe by another provider sandbox. Choose a free one, for example: SANDBOX_PORT=18091 scripts/run.sh"
    fi
}

# Starts the provider sandbox and points the service's provider variables at
# it. The webhook secrets are random, shared by the sandbox and the service.
start_sandbox() {
    local base_url="http://127.0.0.1:$PORT"
    local sandbox_url="http://127.0.0.1:$SANDBOX_PORT"
    TMONEY_WEBHOOK_SECRET=$(random_hex)
    THUNES_WEBHOOK_SECRET="whsec_$(head -c 32 /dev/urandom | base64 -w0)"
    MOMO_CALLBACK_SECRET=$(random_hex)
    export TMONEY_WEBHOOK_SECRET THUNES_WEBHOOK_SECRET MOMO_CALLBACK_SECRET

    log "starting nepxy-provider-sandbox on $sandbox_url, log in $RUN_DIR/sandbox.log"
    "$SANDBOX_BIN" --port "$SANDBOX_PORT" --callback-base-url "$base_url" \
        >>"$RUN_DIR/sandbox.log" 2>&1 &
    SANDBOX_PID=$!
    local deadline=$((SECONDS + SERVICE_START_TIMEOUT_SECONDS))
    until port_in_use "$SANDBOX_PORT"; do
        kill -0 "$SANDBOX_PID" 2>/dev/null ||
            die "nepxy-provider-sandbox exited before accepting connections. Check $RUN_DIR/sandbox.log"
        ((SECONDS < deadline)) ||
            die "nepxy-provider-sandbox did not accept connections within ${SERVICE_START_TIMEOUT_SECONDS}s"
        sleep 0.2
    done

    export MOMO_BASE_URL=$sandbox_url MOMO_API_USER=demo-user MOMO_API_KEY=demo-key \
        MOMO_SUBSCRIPTION_KEY=demo-subscription MOMO_TARGET_ENVIRONMENT=sandbox \
        MOMO_CALLBACK_BASE_URL=$base_url
    export THUNES_BASE_URL=$sandbox_url THUNES_API_KEY=demo-key THUNES_API_SECRET=demo-secret \
        THUNES_PAYER_ID=9999 THUNES_CALLBACK_URL=$base_url/v1/webhooks/thunes
    export TMONEY_BASE_URL=$sandbox_url TMONEY_API_KEY=demo-key

    # Operator tools (nepxy-replay) need the same database and secrets.
    (
        umask 077
        printf 'export DATABASE_URL=%q\nexport TMONEY_WEBHOOK_SECRET=%q\nexport THUNES_WEBHOOK_SECRET=%q\nexport MOMO_CALLBACK_SECRET=%q\n' \
            "$DATABASE_URL" "$TMONEY_WEBHOOK_SECRET" "$THUNES_WEBHOOK_SECRET" "$MOMO_CALLBACK_SECRET" \
            >"$RUN_DIR/demo.env"
    )
    log "operator settings for nepxy-replay in $RUN_DIR/demo.env (source it)"
}

# shellcheck disable=SC2317 # Runs from the EXIT trap.
stop_sandbox() {
    [[ -n $SANDBOX_PID ]] || return 0
    log "stopping nepxy-provider-sandbox (pid $SANDBOX_PID)"
    kill -TERM "$SANDBOX_PID" 2>/dev/null
    wait "$SANDBOX_PID" 2>/dev/null
    SANDBOX_PID=""
}

random_hex() {
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
}

# Starts the private cluster unless DATABASE_URL is set, and creates the demo
# database there. Sets and exports DATABASE_URL.
prepare_database() {
    if [[ -n ${DATABASE_URL:-} ]]; then
        # The URL may contain a password, so it is not printed.
        log "using DATABASE_URL from the environment"
        export DATABASE_URL
        return
    fi

    if [[ $("$PG_SCRIPT" status 2>/dev/null) != running ]]; then
        STARTED_CLUSTER=1
    fi
    # pg.sh prints progress on stderr and the URL as the last line of stdout.
    local start_output cluster_url
    start_output=$("$PG_SCRIPT" start)
    cluster_url=${start_output##*$'\n'}

    DEMO_DATABASE="nepxy_demo_$(date +%Y%m%d_%H%M%S)_$$"
    log "creating database $DEMO_DATABASE"
    "$PG_SCRIPT" psql -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $DEMO_DATABASE" ||
        die "failed to create database $DEMO_DATABASE. Check postgres.log next to the data directory that scripts/pg.sh status prints"
    # The cluster URL ends with the database name and has no query string.
    DATABASE_URL="${cluster_url%/*}/$DEMO_DATABASE"
    export DATABASE_URL
}

start_service() {
    log "starting nepxy-api on $BIND_ADDRESS:$PORT, log in $LOG_FILE"
    APP_ENV=dev PORT=$PORT BIND_ADDRESS=$BIND_ADDRESS "$API_BIN" >>"$LOG_FILE" 2>&1 &
    SERVICE_PID=$!

    local deadline=$((SECONDS + SERVICE_START_TIMEOUT_SECONDS))
    until port_in_use; do
        if ! kill -0 "$SERVICE_PID" 2>/dev/null; then
            local status=0
            wait "$SERVICE_PID" || status=$?
            SERVICE_PID=""
            show_log_tail
            die "nepxy-api exited with status $status before accepting connections. Check $LOG_FILE"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail
            die "nepxy-api did not accept connections on 127.0.0.1:$PORT within ${SERVICE_START_TIMEOUT_SECONDS}s. Check $LOG_FILE"
        fi
        sleep 0.2
    done
}

show_log_tail() {
    if [[ -r $LOG_FILE ]]; then
        log "last lines of $LOG_FILE:"
        tail -n 20 -- "$LOG_FILE" >&2
    fi
}

# shellcheck disable=SC2317 # Also runs from the EXIT trap.
stop_service() {
    [[ -n $SERVICE_PID ]] || return 0
    if kill -0 "$SERVICE_PID" 2>/dev/null; then
        log "stopping nepxy-api (pid $SERVICE_PID)"
        kill -TERM "$SERVICE_PID" 2>/dev/null
        local deadline=$((SECONDS + SERVICE_STOP_TIMEOUT_SECONDS))
        while kill -0 "$SERVICE_PID" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.2
        done
        if kill -0 "$SERVICE_PID" 2>/dev/null; then
            log "nepxy-api did not stop within ${SERVICE_STOP_TIMEOUT_SECONDS}s of SIGTERM, sending SIGKILL"
            kill -KILL "$SERVICE_PID" 2>/dev/null
        fi
    fi
    wait "$SERVICE_PID" 2>/dev/null
    SERVICE_PID=""
}

# shellcheck disable=SC2317 # Runs from the EXIT trap.
drop_demo_database() {
    [[ -n $DEMO_DATABASE ]] || return 0
    if ((KEEP_DATABASE)); then
        log "keeping database $DEMO_DATABASE (drop it with: scripts/pg.sh psql -c 'DROP DATABASE $DEMO_DATABASE')"
        return 0
    fi
    log "dropping database $DEMO_DATABASE"
    "$PG_SCRIPT" psql -X -q -c "DROP DATABASE IF EXISTS $DEMO_DATABASE WITH (FORCE)" ||
        log "warning: failed to drop database $DEMO_DATABASE. Drop it with: scripts/pg.sh psql -c 'DROP DATABASE $DEMO_DATABASE'"
}

# shellcheck disable=SC2317 # Runs from the EXIT trap.
cleanup() {
    local status=$?
    # Cleanup runs every step even when one fails, and a second Ctrl-C does
    # not interrupt it.
    set +e
    # PIPE too: with `run.sh | tee log`, Ctrl-C ends tee first, and the log
    # lines below must not end the cleanup.
    trap '' INT TERM PIPE
    stop_service
    stop_sandbox
    drop_demo_database
    if ((STARTED_CLUSTER)); then
        "$PG_SCRIPT" stop ||
            log "warning: failed to stop the PostgreSQL cluster. Run scripts/pg.sh stop"
    fi
    exit "$status"
}

print_next_steps() {
    local base_url=$1
    local client_request="$RUN_DIR/client-token-request.json"
    local admin_request="$RUN_DIR/admin-token-request.json"
    cat <<EOF

nepxy-api is running at $base_url (APP_ENV=dev, log in $LOG_FILE).
Press Ctrl-C to stop it.

Next steps:
  # Health of the service and its database
  curl -s $base_url/health

  # Access token of the demo client, valid for 15 minutes. The request body
  # with the client's secret is in $client_request
  # ($admin_request is the admin's).
  TOKEN=\$(curl -s -X POST $base_url/v1/auth/token \\
    -H 'content-type: application/json' -d @$client_request |
    sed -E 's/.*"access_token":"([^"]+)".*/\1/')

  # The client's payouts
  curl -s -H "authorization: Bearer \$TOKEN" $base_url/v1/payouts

  # A new payout. Run the same command again to see the idempotent replay
  curl -s -i -X POST $base_url/v1/payouts \\
    -H "authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
    -H 'idempotency-key: my-first-payout' \\
    -d '{"amount": 1000, "currency": "XOF", "provider": "tmoney", "recipient": {"msisdn": "+22890112233", "name": "Afi Mensah"}}'
EOF
}

main() {
    parse_args "$@"
    [[ -r $SCENARIO_FILE ]] || die "scenario file $SCENARIO_FILE not found. Pass one with --scenario FILE"
    check_port

    cd "$REPO_ROOT"
    log "building the workspace binaries"
    cargo build --locked --bins --workspace

    trap cleanup EXIT
    # Exit through the EXIT trap with the usual status for the signal.
    trap 'exit 130' INT
    trap 'exit 143' TERM

    RUN_DIR="$REPO_ROOT/target/run/$(date +%Y%m%d-%H%M%S)-$$"
    LOG_FILE="$RUN_DIR/nepxy-api.log"
    mkdir -p -- "$RUN_DIR"
    chmod 700 -- "$RUN_DIR"

    if [[ -z ${JWT_SECRET:-} ]]; then
        JWT_SECRET=$(random_hex)
    fi
    if [[ -z ${BOOTSTRAP_ADMIN_SECRET:-} ]]; then
        BOOTSTRAP_ADMIN_SECRET=$(random_hex)
    fi
    export JWT_SECRET BOOTSTRAP_ADMIN_SECRET

    prepare_database
    start_sandbox
    start_service

    local base_url="http://127.0.0.1:$PORT"
    log "running the scenario $SCENARIO_FILE against $base_url"
    local status=0
    "$SCENARIO_BIN" --base-url "$base_url" --scenario "$SCENARIO_FILE" \
        --credentials-dir "$RUN_DIR" || status=$?

    if ((status != 0)); then
        log "the scenario failed with status $status. The service log is $LOG_FILE"
        exit "$status"
    fi
    if ((EXIT_AFTER_SCENARIO)); then
        log "scenario passed"
        exit 0
    fi

    print_next_steps "$base_url"
    status=0
    wait "$SERVICE_PID" || status=$?
    SERVICE_PID=""
    show_log_tail
    die "nepxy-api exited on its own with status $status. Check $LOG_FILE"
}

main "$@"
