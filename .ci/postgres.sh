#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the store tests and prints ONE line on stdout:
#   SWITCHBOARD_TEST_POSTGRES_URL=postgres://switchboard@127.0.0.1:PORT/switchboard_test
# so that a CI script can do:  eval "export $(bash .ci/postgres.sh)"
# Everything else goes to stderr. Stop it with:  bash .ci/postgres-stop.sh
# (it reads SWITCHBOARD_TEST_POSTGRES_URL, or takes the URL as its argument).
#
# Needs the Debian postgresql packages (apt-get install postgresql): initdb and pg_ctl from
# /usr/lib/postgresql/*/bin. Runs as the current user, or as `postgres` when root (the
# server refuses to run as root). Binds 127.0.0.1 on a free port with trust auth: for tests
# only.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

bindir=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
        bindir=$d
        break
    fi
done
if [ -z "$bindir" ]; then
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        bindir=$(dirname "$(command -v initdb)")
    else
        log "no PostgreSQL server binaries (install with: apt-get install postgresql)"
        exit 1
    fi
fi

as_server_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    log "running as root but there is no 'postgres' user to run the server as"
    exit 1
fi

free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return
    fi
    local port
    for _ in $(seq 1 200); do
        port=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    log "found no free port"
    exit 1
}

tmp_root=${TMPDIR:-/tmp}
dir=$(mktemp -d "$tmp_root/switchboard-pg.XXXXXX")
chmod 755 "$dir"
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
fi

as_server_user "$bindir/initdb" -D "$dir/data" -U switchboard --auth=trust \
    --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1 || {
    log "initdb failed:"; cat "$dir/initdb.log" >&2; exit 1;
}
mkdir -p "$dir/socket"
[ "$(id -u)" = 0 ] && chown postgres: "$dir/socket"

# The port is only reserved until the server binds it: retry a few times on a race.
started=""
for _ in 1 2 3 4 5; do
    port=$(free_port)
    if as_server_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/socket -c fsync=off \
            -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >&2; then
        started=1
        break
    fi
    log "start on port $port failed, retrying"
done
if [ -z "$started" ]; then
    log "could not start PostgreSQL; server log:"
    cat "$dir/server.log" >&2 || true
    exit 1
fi

# Remember where it lives, by port, for postgres-stop.sh.
echo "$dir" >"$tmp_root/switchboard-pg-$port.dir"

as_server_user "$bindir/createdb" -h 127.0.0.1 -p "$port" -U switchboard switchboard_test >&2

log "PostgreSQL ($bindir) running on 127.0.0.1:$port, data in $dir"
echo "SWITCHBOARD_TEST_POSTGRES_URL=postgres://switchboard@127.0.0.1:$port/switchboard_test"
