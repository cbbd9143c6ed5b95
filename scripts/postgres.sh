#!/usr/bin/env bash
# A private PostgreSQL cluster for the tests: its own data directory under /tmp, its own free port on
# 127.0.0.1, no system service, gone when the tests are.
#
# Sourced by scripts/test.sh:
#
#   . scripts/postgres.sh
#   pg_private_start          # exports COOKIE_STORE_TEST_PG (and _PG_CTL, see below)
#   trap pg_private_stop EXIT
#
# or run by hand:
#
#   eval "$(bash scripts/postgres.sh start)"   # prints the export lines
#   bash scripts/postgres.sh stop "$COOKIE_STORE_TEST_PG_DIR"
#
# What it exports:
#   COOKIE_STORE_TEST_PG      postgres://postgres@127.0.0.1:PORT/postgres (trust auth, loopback only)
#   COOKIE_STORE_TEST_PG_DIR  the scratch directory (data, log, socket, the pg_ctl wrapper)
#   COOKIE_STORE_TEST_PG_CTL  a wrapper running this cluster's pg_ctl as its owner, for the tests that
#                             crash and restart the server (`$COOKIE_STORE_TEST_PG_CTL stop -m immediate`)
#
# PostgreSQL binaries come from PATH or /usr/lib/postgresql/*/bin (Debian keeps them there, off PATH);
# when there are none, the Debian package `postgresql` is installed with apt-get (root only), with its
# default cluster and service creation switched off, since we only want the binaries. initdb refuses
# to run as root, so as root the cluster belongs to the `postgres` user (created by that package) and
# every pg_ctl call goes through runuser.

# shellcheck source=scripts/ports.sh
. "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

pg_log() { printf 'scripts/postgres.sh: %s\n' "$*" >&2; }

# The directory holding initdb and pg_ctl, newest version first; empty when there is none.
pg_bindir() {
    local initdb
    if initdb="$(command -v initdb 2>/dev/null)" && [[ -x "$(dirname "$initdb")/pg_ctl" ]]; then
        dirname "$initdb"
        return 0
    fi
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4 -V -r); do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done
    return 1
}

# Install the PostgreSQL server binaries with apt-get, without the cluster and service the Debian
# package would otherwise create and start.
pg_install() {
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        pg_log "PostgreSQL is not installed and I cannot install it (needs root and apt-get):"
        pg_log "install the Debian package 'postgresql' (or put initdb and pg_ctl on PATH) and run again"
        return 1
    fi
    pg_log "installing PostgreSQL (apt-get install postgresql)"
    # postgresql-common reads this before creating the default cluster "main": we want none. Only
    # for the install: removed again afterwards, like the policy below.
    local no_main=/etc/postgresql-common/createcluster.d/cookie-store-tests.conf
    mkdir -p "$(dirname "$no_main")"
    printf 'create_main_cluster = false\n' >"$no_main"
    # Refuse service starts during the install (invoke-rc.d honours policy-rc.d); only when nobody
    # else put one there, and removed again afterwards.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    local rc=0
    { apt-get update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; } || rc=$?
    if ((own_policy)); then rm -f "$policy"; fi
    rm -f "$no_main"
    if ((rc != 0)); then
        pg_log "apt-get install postgresql failed (exit $rc)"
        return 1
    fi
    pg_log "PostgreSQL installed in $(pg_bindir || echo '?')"
}

# Start the private cluster and export its URL. A no-op when COOKIE_STORE_TEST_PG is already set
# (a cluster of the caller's, e.g. a CI service): that one is used as it is.
pg_private_start() {
    if [[ -n "${COOKIE_STORE_TEST_PG:-}" ]]; then
        pg_log "using the PostgreSQL at COOKIE_STORE_TEST_PG (not starting one)"
        return 0
    fi
    local bindir
    if ! bindir="$(pg_bindir)"; then
        pg_install || return 1
        bindir="$(pg_bindir)" || { pg_log "no initdb found after installing"; return 1; }
    fi
    local as=()
    if [[ "$(id -u)" == 0 ]]; then
        if ! id postgres >/dev/null 2>&1; then
            pg_log "running as root but there is no 'postgres' user to own the cluster (initdb refuses root)"
            return 1
        fi
        as=(runuser -u postgres --)
    fi
    local dir
    dir="$(mktemp -d /tmp/cookie-store-pg.XXXXXX)" || return 1
    chmod 755 "$dir"
    mkdir -m 700 "$dir/data"
    if ((${#as[@]})); then chown postgres: "$dir/data" "$dir"; fi
    if ! "${as[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
        >"$dir/initdb.log" 2>&1; then
        pg_log "initdb failed:"
        cat "$dir/initdb.log" >&2
        rm -rf "$dir"
        return 1
    fi
    local port attempt=0
    while :; do
        attempt=$((attempt + 1))
        port="$(free_port)" || { pg_log "no free port found"; rm -rf "$dir"; return 1; }
        # The wrapper the crash tests use: this cluster's pg_ctl, as its owner, with its settings.
        cat >"$dir/pg_ctl.sh" <<EOF
#!/usr/bin/env bash
exec ${as[*]} "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \\
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=300" "\$@"
EOF
        chmod 755 "$dir/pg_ctl.sh"
        if "$dir/pg_ctl.sh" start >/dev/null 2>&1; then
            break
        fi
        if ((attempt >= 5)); then
            pg_log "pg_ctl start failed; server log:"
            tail -n 20 "$dir/server.log" >&2 2>/dev/null || true
            rm -rf "$dir"
            return 1
        fi
    done
    export COOKIE_STORE_TEST_PG="postgres://postgres@127.0.0.1:$port/postgres"
    export COOKIE_STORE_TEST_PG_DIR="$dir"
    export COOKIE_STORE_TEST_PG_CTL="$dir/pg_ctl.sh"
    PG_PRIVATE_DIR="$dir"
    pg_log "PostgreSQL $("$bindir/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)"
}

# Stop the cluster pg_private_start started (whatever state the tests left it in) and remove its
# directory. Safe to call twice, or when nothing was started.
pg_private_stop() {
    local dir="${1:-${PG_PRIVATE_DIR:-}}"
    [[ -n "$dir" && -d "$dir" ]] || return 0
    if [[ -x "$dir/pg_ctl.sh" ]]; then
        "$dir/pg_ctl.sh" stop -m fast >/dev/null 2>&1 || "$dir/pg_ctl.sh" stop -m immediate >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    PG_PRIVATE_DIR=""
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    case "${1:-}" in
    start)
        unset COOKIE_STORE_TEST_PG
        pg_private_start
        printf 'export COOKIE_STORE_TEST_PG=%q COOKIE_STORE_TEST_PG_DIR=%q COOKIE_STORE_TEST_PG_CTL=%q\n' \
            "$COOKIE_STORE_TEST_PG" "$COOKIE_STORE_TEST_PG_DIR" "$COOKIE_STORE_TEST_PG_CTL"
        ;;
    stop)
        pg_private_stop "${2:?usage: postgres.sh stop DIR}"
        ;;
    *)
        printf 'usage: %s start | stop DIR\n' "$0" >&2
        exit 2
        ;;
    esac
fi
