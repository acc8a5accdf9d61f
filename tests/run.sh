#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with Rust (the README's test command).
# Installs what it needs with apt when missing (tests/deps.sh: libopus-dev, SIPp, baresip,
# PostgreSQL; needs root for that), starts a throwaway PostgreSQL on a free
# port for the storage tests unless SWITCHBOARD_TEST_POSTGRES_URL is already set, and
# runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash tests/deps.sh

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
