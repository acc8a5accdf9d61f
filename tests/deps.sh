#!/usr/bin/env bash
# Installs with apt what building and testing Switchboard needs when it is missing:
# libopus-dev + pkg-config (the Opus codec links the system libopus; see
# pbx/media/src/codec/opus.rs), and the real peers of the end-to-end suites: SIPp
# (sip-tester), baresip and PostgreSQL, and dumpcap (wireshark-common: what a re-INVITEd
# phone hears is decoded from RTP captured on lo). Needs root only when something must be
# installed.
set -euo pipefail

have_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }
have_opus() { command -v pkg-config >/dev/null && pkg-config --exists opus; }

if command -v sipp >/dev/null && command -v baresip >/dev/null && command -v dumpcap >/dev/null \
    && have_initdb && have_opus; then
    exit 0
fi
echo "=== installing libopus-dev pkg-config sip-tester baresip-core postgresql wireshark-common"
if [ "$(id -u)" != 0 ]; then
    echo "error: build or test dependencies are missing; run as root so apt-get can install them" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends libopus-dev pkg-config sip-tester baresip-core postgresql \
    wireshark-common
