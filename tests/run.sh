#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with Rust (the README's test command).
# Installs the real peers the end-to-end suites drive (SIPp, baresip, PostgreSQL) with apt
# when they are missing (needs root for that), starts a throwaway PostgreSQL on a free
# port for the storage tests unless SWITCHBOARD_TEST_POSTGRES_URL is already set, and
# runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

have_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

if ! command -v sipp >/dev/null || ! command -v baresip >/dev/null || ! have_initdb; then
    echo "=== installing sip-tester baresip-core postgresql"
    if [ "$(id -u)" != 0 ]; then
        echo "error: sipp, baresip or PostgreSQL is missing; run as root so apt-get can install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends sip-tester baresip-core postgresql
fi

if [ -z "${SWITCHBOARD_TEST_POSTGRES_URL:-}" ]; then
    echo "=== starting a throwaway PostgreSQL"
    pg_env=$(bash .ci/postgres.sh)
    export "${pg_env?}"
    echo "${pg_env}"
    stop_postgres() { bash .ci/postgres-stop.sh "$SWITCHBOARD_TEST_POSTGRES_URL" || true; }
    trap stop_postgres EXIT
fi

echo "=== cargo test --workspace"
# Plain cargo test (cargo-nextest may be missing on a fresh machine). The end-to-end tests
# pick their own ports and temporary directories, so they run in parallel.
cargo test --workspace "$@"
