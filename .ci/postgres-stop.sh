#!/usr/bin/env bash
# Stops a server started by .ci/postgres.sh and deletes its files. Takes the URL as $1 or
# from SWITCHBOARD_TEST_POSTGRES_URL. Safe to call from a trap, and twice.
set -uo pipefail

url=${1:-${SWITCHBOARD_TEST_POSTGRES_URL:-}}
if [ -z "$url" ]; then
    echo "postgres-stop.sh: no URL given and SWITCHBOARD_TEST_POSTGRES_URL is unset" >&2
    exit 0
fi
port=$(printf '%s\n' "$url" | sed -n 's#^postgres\(ql\)\{0,1\}://[^/]*:\([0-9][0-9]*\)/.*#\2#p')
tmp_root=${TMPDIR:-/tmp}
state="$tmp_root/switchboard-pg-$port.dir"
if [ -z "$port" ] || [ ! -f "$state" ]; then
    echo "postgres-stop.sh: no server started by postgres.sh for $url" >&2
    exit 0
fi
dir=$(cat "$state")
case "$dir" in
    "$tmp_root"/switchboard-pg.*) ;;
    *) echo "postgres-stop.sh: unexpected data dir $dir, not touching it" >&2; exit 1 ;;
esac

pg_ctl=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/pg_ctl" ] && { pg_ctl="$d/pg_ctl"; break; }
done
[ -z "$pg_ctl" ] && pg_ctl=$(command -v pg_ctl || true)

if [ -n "$pg_ctl" ] && [ -d "$dir/data" ]; then
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
    else
        "$pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
    fi
fi
rm -rf "$dir" "$state"
