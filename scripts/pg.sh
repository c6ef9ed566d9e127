#!/usr/bin/env bash
# Manages a private PostgreSQL cluster for development and tests.
#
# Usage: scripts/pg.sh start|stop|status|url|psql [psql arguments...]
#
#   start   Create the cluster on first use, start it and create the `nepxy`
#           database. Prints DATABASE_URL as the last line of stdout.
#   stop    Stop the cluster (fast shutdown). Succeeds if it is not running.
#   status  Print `running` or `stopped`. Both exit with status 0.
#   url     Print DATABASE_URL.
#   psql    Run psql against the `nepxy` database with the given arguments.
#
# Environment:
#   NEPXY_PG_PORT  TCP port on 127.0.0.1 (default 55432).
#   NEPXY_PG_FSYNC on (default) or off, applied at start. scripts/test.sh
#                  starts the cluster with off, because test data need not
#                  survive a machine crash. With fsync on, every DROP DATABASE
#                  waits for a checkpoint that syncs the files of hundreds of
#                  test databases (37 s seen here).
#   NEPXY_PG_BIN   Directory with the PostgreSQL programs (initdb, pg_ctl,
#                  postgres, pg_isready, psql, createdb). The default is the
#                  newest /usr/lib/postgresql/*/bin, then the directory of
#                  pg_ctl on PATH.
#
# The cluster's superuser role is `nepxy` with trust authentication, and the
# server listens on 127.0.0.1 and a Unix socket only. Trust means that every
# local user of this machine can connect as superuser over TCP, so use the
# cluster for development and CI only.
#
# Data lives in target/pg/ inside the repository: data/ is the cluster,
# postgres.log is the server log and the Unix socket is created in target/pg/.
# initdb and postgres do not run as root, so when this script runs as root it
# runs them as the `postgres` user. The data goes to /tmp/nepxy-pg-<hash>
# instead, with <hash> derived from the repository path, when the cluster
# owner cannot reach or write the repository (for example a clone under /root
# when running as root), or when the socket path would be longer than the
# Unix limit of 107 bytes. `cargo clean` does not remove that directory.
#
# Linux only: it uses runuser or setpriv, flock, sha256sum and timeout.

set -euo pipefail

readonly DEFAULT_PORT=55432
readonly DB_NAME=nepxy
readonly DB_SUPERUSER=nepxy
# Maximum time for the server to accept connections after pg_ctl start.
readonly START_TIMEOUT_SECONDS=30
# Maximum time to wait for a concurrent start or stop of the same cluster.
readonly LOCK_TIMEOUT_SECONDS=120
# Unix-domain socket paths are limited to 107 bytes on Linux (sun_path is 108
# bytes including the terminating NUL, see unix(7)).
readonly MAX_SOCKET_PATH_BYTES=107

REPO_ROOT=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT

# Connection settings from the caller's environment would override the
# explicit host, port and user that this script passes to the client tools.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS

PORT=${NEPXY_PG_PORT:-$DEFAULT_PORT}
FSYNC=${NEPXY_PG_FSYNC:-on}
PG_BIN=""
BASE_DIR=""
DATA_DIR=""
LOG_FILE=""
LOCK_FD=""

log() {
    printf 'pg.sh: %s\n' "$*" >&2
}

die() {
    printf 'pg.sh: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat >&2 <<'EOF'
Usage: scripts/pg.sh start|stop|status|url|psql [psql arguments...]

  start   create (once) and start the private cluster, print DATABASE_URL
  stop    stop the cluster if it is running
  status  print "running" or "stopped"
  url     print DATABASE_URL
  psql    run psql against the nepxy database with the given arguments

Environment: NEPXY_PG_PORT (TCP port on 127.0.0.1, default 55432),
NEPXY_PG_FSYNC (on or off, default on),
NEPXY_PG_BIN (directory with the PostgreSQL server binaries).
EOF
}

validate_port() {
    if [[ ! $PORT =~ ^[0-9]+$ ]] || ((10#$PORT < 1 || 10#$PORT > 65535)); then
        die "invalid NEPXY_PG_PORT '$PORT': expected a TCP port number from 1 to 65535"
    fi
    if [[ $FSYNC != on && $FSYNC != off ]]; then
        die "invalid NEPXY_PG_FSYNC '$FSYNC': expected on or off"
    fi
    PORT=$((10#$PORT))
}

database_url() {
    printf 'postgres://%s@127.0.0.1:%s/%s\n' "$DB_SUPERUSER" "$PORT" "$DB_NAME"
}

is_root() {
    [[ $(id -u) -eq 0 ]]
}

# Runs a command as the user that owns the cluster: `postgres` when this
# script runs as root, the current user otherwise. The command runs from /
# because the caller's working directory may be unreadable for `postgres`.
run_as_owner() {
    if ! is_root; then
        "$@"
        return
    fi
    if ! id -u postgres >/dev/null 2>&1; then
        die "user 'postgres' not found. initdb and postgres do not run as root, so create that user (the Debian package 'postgresql' does) or run this script as a non-root user"
    fi
    if command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u postgres -- "$@")
    elif command -v setpriv >/dev/null 2>&1; then
        (cd / && setpriv --reuid=postgres --regid=postgres --init-groups -- "$@")
    else
        die "neither runuser nor setpriv found, so the server cannot be run as user 'postgres'. Install util-linux or run this script as a non-root user"
    fi
}

owner_name() {
    if is_root; then
        echo postgres
    else
        id -un
    fi
}

# Prints the server binary directory that this script should use, or nothing.
locate_pg_bin() {
    if [[ -n ${NEPXY_PG_BIN:-} ]]; then
        printf '%s\n' "$NEPXY_PG_BIN"
        return
    fi

    local newest
    newest=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/pg_ctl' \
        -printf '%h\n' 2>/dev/null | sort -V | tail -n 1)
    if [[ -n $newest ]]; then
        printf '%s\n' "$newest"
        return
    fi

    local pg_ctl_path
    if pg_ctl_path=$(command -v pg_ctl 2>/dev/null) && [[ -x $(dirname -- "$pg_ctl_path")/initdb ]]; then
        dirname -- "$pg_ctl_path"
    fi
}

has_server_binaries() {
    local dir=$1
    local tool
    for tool in initdb pg_ctl postgres pg_isready psql createdb; do
        [[ -x $dir/$tool ]] || return 1
    done
}

# Installs Debian's `postgresql` package. Its post-install step may create
# and start the distribution's own cluster on port 5432. That cluster is left
# alone and never used.
install_postgresql() {
    if ! command -v apt-get >/dev/null 2>&1; then
        die "PostgreSQL server binaries (initdb, pg_ctl) not found and apt-get is not available. Install the PostgreSQL server and set NEPXY_PG_BIN to its bin directory"
    fi

    local -a sudo_prefix=()
    if ! is_root; then
        if ! command -v sudo >/dev/null 2>&1; then
            die "PostgreSQL server binaries not found, and installing them needs root but sudo is not available. Run: apt-get install -y postgresql"
        fi
        sudo_prefix=(sudo)
    fi

    log "PostgreSQL server binaries not found, installing the Debian package 'postgresql'"
    "${sudo_prefix[@]}" apt-get update ||
        die "apt-get update failed. Fix the package sources and retry, or install 'postgresql' yourself"
    "${sudo_prefix[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql ||
        die "apt-get install postgresql failed. Install it yourself and retry"
}

# Sets PG_BIN. With `install`, installs PostgreSQL when no binaries are found.
# Returns 1 when no binaries are found and `install` was not requested.
find_pg_bin() {
    local mode=${1:-}
    PG_BIN=$(locate_pg_bin)
    if [[ -z $PG_BIN && $mode == install ]]; then
        install_postgresql
        PG_BIN=$(locate_pg_bin)
    fi
    if [[ -z $PG_BIN ]]; then
        [[ $mode == install ]] && die "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin or on PATH. Install the PostgreSQL server and set NEPXY_PG_BIN to its bin directory"
        return 1
    fi
    if ! has_server_binaries "$PG_BIN"; then
        die "incomplete PostgreSQL installation in $PG_BIN: expected initdb, pg_ctl, postgres, pg_isready, psql and createdb. Set NEPXY_PG_BIN to a complete bin directory"
    fi
}

# Prefers the binaries of the major version that created the existing cluster,
# because a server cannot open a data directory of another major version.
match_pg_bin_to_cluster() {
    [[ -f $DATA_DIR/PG_VERSION ]] || return 0

    local cluster_version binary_version
    cluster_version=$(<"$DATA_DIR/PG_VERSION")
    if [[ -z ${NEPXY_PG_BIN:-} ]] && has_server_binaries "/usr/lib/postgresql/$cluster_version/bin"; then
        PG_BIN=/usr/lib/postgresql/$cluster_version/bin
    fi

    # `pg_ctl --version` prints for example "pg_ctl (PostgreSQL) 15.14 (Debian ...)".
    binary_version=$("$PG_BIN/pg_ctl" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')
    if [[ $binary_version != "$cluster_version" ]]; then
        die "the cluster in $DATA_DIR was created by PostgreSQL $cluster_version but $PG_BIN contains PostgreSQL $binary_version. Run 'scripts/pg.sh stop', delete $BASE_DIR and start again, or set NEPXY_PG_BIN to the version $cluster_version bin directory"
    fi
}

socket_path_fits() {
    local dir=$1
    local socket_path="$dir/.s.PGSQL.$PORT"
    ((${#socket_path} <= MAX_SOCKET_PATH_BYTES))
}

# Succeeds when the cluster owner can create and use target/pg in the
# repository. The check creates nothing, so that every subcommand picks the
# same directory.
repo_dir_usable() {
    local dir=$1
    socket_path_fits "$dir" || return 1

    if is_root; then
        id -u postgres >/dev/null 2>&1 || return 1
    fi

    local existing=$dir
    while [[ ! -e $existing ]]; do
        existing=$(dirname -- "$existing")
    done
    if is_root; then
        # Root creates the missing directories and hands target/pg to
        # `postgres`, which only needs to search the path down to it.
        run_as_owner test -d "$existing" -a -x "$existing" 2>/dev/null
    else
        [[ -d $existing && -w $existing && -x $existing ]]
    fi
}

fallback_dir() {
    local hash
    hash=$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-16)
    printf '/tmp/nepxy-pg-%s\n' "$hash"
}

# Sets BASE_DIR, DATA_DIR and LOG_FILE.
choose_dirs() {
    local repo_dir="$REPO_ROOT/target/pg"
    if repo_dir_usable "$repo_dir"; then
        BASE_DIR=$repo_dir
    else
        BASE_DIR=$(fallback_dir)
    fi
    DATA_DIR="$BASE_DIR/data"
    LOG_FILE="$BASE_DIR/postgres.log"
}

# Serializes start and stop of this cluster, so that two concurrent starts do
# not both run initdb or pg_ctl start. The lock is released when the script
# exits, so the server must not inherit LOCK_FD.
lock_base_dir() {
    local lock_file="$BASE_DIR/pg.sh.lock"
    exec {LOCK_FD}>>"$lock_file" || die "failed to open $lock_file"
    if ! flock -w "$LOCK_TIMEOUT_SECONDS" "$LOCK_FD"; then
        die "timed out after ${LOCK_TIMEOUT_SECONDS}s waiting for another scripts/pg.sh run on $BASE_DIR (lock file $lock_file)"
    fi
}

# Creates BASE_DIR with mode 0700 and the cluster owner in one rename, so that
# a concurrent run never finds it with the wrong owner.
create_base_dir() {
    local temp_dir
    temp_dir=$(mktemp -d -- "$BASE_DIR.XXXXXX") ||
        die "failed to create a temporary directory next to $BASE_DIR"
    if is_root && ! chown postgres: -- "$temp_dir"; then
        rmdir -- "$temp_dir"
        die "failed to change the owner of $temp_dir to postgres"
    fi

    # If a concurrent run created BASE_DIR first, rename(2) replaces it only
    # while it is still empty, and fails otherwise. Either way BASE_DIR is a
    # directory that one of the runs created with the right owner and mode.
    if ! mv -T -- "$temp_dir" "$BASE_DIR" 2>/dev/null; then
        rmdir -- "$temp_dir"
    fi
}

# Creates BASE_DIR if it is missing and checks that it is a directory owned by
# the cluster owner. A directory in /tmp could have been created by another
# user, so a symlink or a foreign owner is rejected.
prepare_base_dir() {
    local owner
    owner=$(owner_name)

    if [[ ! -e $BASE_DIR && ! -L $BASE_DIR ]]; then
        if [[ $BASE_DIR == "$REPO_ROOT"/* ]]; then
            mkdir -p -- "$(dirname -- "$BASE_DIR")" ||
                die "failed to create $(dirname -- "$BASE_DIR"). Check the permissions of the repository"
        fi
        create_base_dir
    fi

    if [[ -L $BASE_DIR || ! -d $BASE_DIR ]]; then
        die "$BASE_DIR is a symlink or not a directory. Delete it and run 'scripts/pg.sh start' again"
    fi
    local actual_owner
    actual_owner=$(stat -c %U -- "$BASE_DIR")
    if [[ $actual_owner != "$owner" ]]; then
        die "$BASE_DIR is owned by '$actual_owner' but the server runs as '$owner'. Delete it (or change its owner to '$owner') and run 'scripts/pg.sh start' again"
    fi
}

cluster_running() {
    [[ -n $PG_BIN && -f $DATA_DIR/postmaster.pid ]] || return 1
    run_as_owner "$PG_BIN/pg_ctl" status -D "$DATA_DIR" >/dev/null 2>&1
}

# Prints the port from the cluster's postmaster.pid (its fourth line).
running_port() {
    sed -n 4p "$DATA_DIR/postmaster.pid" 2>/dev/null
}

port_in_use() {
    # shellcheck disable=SC2016 # $1 expands in the inner bash.
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$PORT" 2>/dev/null
}

show_log_tail() {
    if [[ -r $LOG_FILE ]]; then
        log "last lines of $LOG_FILE:"
        tail -n 20 -- "$LOG_FILE" >&2
    fi
}

init_cluster() {
    if [[ -f $DATA_DIR/PG_VERSION ]]; then
        return
    fi
    if [[ -d $DATA_DIR ]] && [[ -n $(ls -A -- "$DATA_DIR") ]]; then
        die "$DATA_DIR exists and is not empty but contains no cluster (PG_VERSION is missing). Delete $DATA_DIR and run 'scripts/pg.sh start' again"
    fi

    log "creating cluster in $DATA_DIR"
    # The C locale keeps sorting identical on every machine and needs no
    # generated locales. UTF8 works with it because C accepts any encoding.
    run_as_owner "$PG_BIN/initdb" \
        --pgdata="$DATA_DIR" \
        --username="$DB_SUPERUSER" \
        --auth=trust \
        --encoding=UTF8 \
        --locale=C \
        >"$BASE_DIR/initdb.log" 2>&1 || {
        tail -n 20 -- "$BASE_DIR/initdb.log" >&2
        die "initdb failed (full output in $BASE_DIR/initdb.log). Delete $DATA_DIR and run 'scripts/pg.sh start' again"
    }
}

# Quotes a string for postgresql.conf, where backslash is an escape character.
conf_quote() {
    local value=${1//\\/\\\\}
    value=${value//\'/\'\'}
    printf "'%s'" "$value"
}

# Writes the server settings to nepxy.conf in the data directory and makes
# sure postgresql.conf includes it. The file is rewritten on every start so
# that the port and socket path follow NEPXY_PG_PORT and the data location.
write_server_conf() {
    local include_line="include_if_exists = 'nepxy.conf'"
    if ! grep -qxF -- "$include_line" "$DATA_DIR/postgresql.conf"; then
        printf '\n%s\n' "$include_line" |
            run_as_owner tee -a "$DATA_DIR/postgresql.conf" >/dev/null
    fi

    run_as_owner tee "$DATA_DIR/nepxy.conf" >/dev/null <<EOF
# Generated by scripts/pg.sh on every start. Put local changes in
# postgresql.conf after the include line instead.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = $(conf_quote "$BASE_DIR")
fsync = $FSYNC
max_connections = 200
EOF
}

# Waits until the server accepts connections on 127.0.0.1. The deadline
# argument is a value of bash's $SECONDS counter.
wait_until_ready() {
    local deadline=$1
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U "$DB_SUPERUSER" -d postgres; do
        if ((SECONDS >= deadline)); then
            show_log_tail
            die "timed out after ${START_TIMEOUT_SECONDS}s waiting for PostgreSQL on 127.0.0.1:$PORT. Check $LOG_FILE"
        fi
        sleep 0.5
    done
}

create_database() {
    local exists
    exists=$("$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$DB_SUPERUSER" -d postgres \
        -X -q -t -A -v ON_ERROR_STOP=1 \
        -c "select 1 from pg_database where datname = '$DB_NAME'") ||
        die "failed to query the database list on 127.0.0.1:$PORT. Check $LOG_FILE"
    if [[ $exists != 1 ]]; then
        log "creating database $DB_NAME"
        "$PG_BIN/createdb" -h 127.0.0.1 -p "$PORT" -U "$DB_SUPERUSER" "$DB_NAME" ||
            die "createdb $DB_NAME failed on 127.0.0.1:$PORT. Check $LOG_FILE"
    fi
}

cmd_start() {
    find_pg_bin install
    choose_dirs
    prepare_base_dir
    lock_base_dir
    match_pg_bin_to_cluster

    local deadline=$((SECONDS + START_TIMEOUT_SECONDS))
    if cluster_running; then
        local port
        port=$(running_port)
        if [[ $port != "$PORT" ]]; then
            die "the cluster in $DATA_DIR is already running on port $port, not $PORT. Run 'scripts/pg.sh stop' first, or set NEPXY_PG_PORT=$port"
        fi
        log "already running on 127.0.0.1:$PORT (data in $DATA_DIR)"
    else
        if port_in_use; then
            local what="another process"
            if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 3 ||
                [[ $? -eq 1 ]]; then
                what="a PostgreSQL server other than this checkout's cluster (for example the cluster of another checkout or the system cluster)"
            fi
            die "port $PORT on 127.0.0.1 is already in use by $what. Stop it, or set NEPXY_PG_PORT to a free port"
        fi

        init_cluster
        write_server_conf
        deadline=$((SECONDS + START_TIMEOUT_SECONDS))
        log "starting PostgreSQL on 127.0.0.1:$PORT (data in $DATA_DIR, log in $LOG_FILE)"
        # pg_ctl waits until the postmaster reports ready or exits, which
        # catches a server that fails at startup without waiting for the
        # full timeout.
        if ! run_as_owner "$PG_BIN/pg_ctl" start -D "$DATA_DIR" -l "$LOG_FILE" \
            -w -t "$START_TIMEOUT_SECONDS" >&2 {LOCK_FD}>&-; then
            show_log_tail
            die "PostgreSQL failed to start on 127.0.0.1:$PORT. Check $LOG_FILE"
        fi
    fi

    wait_until_ready "$deadline"
    create_database
    database_url
}

cmd_stop() {
    if ! find_pg_bin; then
        log "not running (no PostgreSQL binaries found)"
        return
    fi
    choose_dirs
    if [[ -d $BASE_DIR && ! -L $BASE_DIR ]]; then
        lock_base_dir
    fi
    if ! cluster_running; then
        log "not running (data in $DATA_DIR)"
        return
    fi
    log "stopping PostgreSQL (data in $DATA_DIR)"
    run_as_owner "$PG_BIN/pg_ctl" stop -D "$DATA_DIR" -m fast -w >&2 ||
        die "pg_ctl stop failed for $DATA_DIR. Check $LOG_FILE"
}

cmd_status() {
    if ! find_pg_bin; then
        echo stopped
        return
    fi
    choose_dirs
    if cluster_running; then
        log "port $(running_port), data in $DATA_DIR"
        echo running
    else
        echo stopped
    fi
}

cmd_psql() {
    if ! find_pg_bin; then
        die "PostgreSQL client binaries (psql) not found. Run 'scripts/pg.sh start' first, which installs PostgreSQL if needed"
    fi
    exec "$PG_BIN/psql" "$(database_url)" "$@"
}

main() {
    if (($# == 0)); then
        usage
        exit 2
    fi
    local command=$1
    shift
    if [[ $command == -h || $command == --help || $command == help ]]; then
        usage
        return
    fi
    validate_port

    case $command in
        start | stop | status | url)
            if (($# > 0)); then
                die "'$command' takes no arguments, got: $*"
            fi
            ;;
    esac

    case $command in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        url) database_url ;;
        psql) cmd_psql "$@" ;;
        *)
            usage
            die "unknown command '$command'"
            ;;
    esac
}

main "$@"
