#!/usr/bin/env bash
# Build Switchboard (release), run memory.sh, register.sh and calls.sh against
# it, then the same scripts against Kamailio (Debian package, the shared
# harness's config: stateful proxy with tm, 2 workers), all on 127.0.0.1 and
# free ports, and print every SUMMARY line. Raw output: $OUT (bench/results/..).
#   Switchboard: memory, register (digest auth), calls auth (INVITE auth: 407)
#   Kamailio   : memory + register with WITH_AUTH; calls noauth with the shared
#                config (no INVITE auth); calls auth with the same config plus
#                proxy auth on INVITE (kamailio/start.sh invite_auth)
# usage: run_all.sh [switchboard|kamailio|both]   (default both)
# env: RUNS (2: fixed-rate runs), RAMP_RUNS (1: ramps), STEP_SECS (10), FIXED_SECS (20), TARGET_CPS (1000),
#      NO_BUILD=1, LOAD_MAX (1.0: wait, up to LOAD_WAIT=600 s, until the
#      1-minute load average is below it), REG_START_RATE (2000),
#      CALL_START_RATE (500). Quick look: RUNS=1 STEP_SECS=5 FIXED_SECS=5
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd); ROOT=$(dirname "$HERE")
WHICH=${1:-both}
export RAMP_RUNS=${RAMP_RUNS:-1} RUNS=${RUNS:-2} STEP_SECS=${STEP_SECS:-10} FIXED_SECS=${FIXED_SECS:-20} TARGET_CPS=${TARGET_CPS:-1000}
OUT=${OUT:-$HERE/results/run_all-$(date +%Y%m%d-%H%M%S)}; mkdir -p "$OUT"
RESULTS=$OUT/common source "$HERE/common.sh"
set +e
TMP=$(mktemp -d /tmp/sb-bench.XXXXXX)
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do stop_pid "$p"; done; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_load() {
  local max=${LOAD_MAX:-1.0} waited=0 l
  while :; do
    l=$(cut -d' ' -f1 /proc/loadavg)
    awk -v l="$l" -v m="$max" 'BEGIN{exit !(l < m)}' && break
    [ "$waited" -ge "${LOAD_WAIT:-600}" ] && { echo "# load still $l after ${waited}s: running anyway"; break; }
    [ "$waited" = 0 ] && echo "# load $l >= $max: waiting (up to ${LOAD_WAIT:-600}s)"
    sleep 10; waited=$((waited + 10))
  done
  echo "# load: $(uptime)"
}

run() {  # run NAME cmd... : tee its output to $OUT/NAME.log
  local name=$1; shift
  echo "## $name: $*"
  RESULTS=$OUT/$name "$@" 2>&1 | tee "$OUT/$name.log"
}

{
echo "# run_all $(date -u +%Y-%m-%dT%H:%MZ) host=$(hostname) cpus=$(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# kernel $(uname -r); $(sipp -v 2>/dev/null | grep -o 'SIPp v[0-9.]*' | head -1); kamailio $(kamailio -v 2>/dev/null | head -1 | awk '{print $3}')"
echo "# RAMP_RUNS=$RAMP_RUNS RUNS=$RUNS STEP_SECS=$STEP_SECS FIXED_SECS=$FIXED_SECS TARGET_CPS=$TARGET_CPS"
} | tee "$OUT/header.txt"

if [ "$WHICH" != kamailio ]; then
  if [ "${NO_BUILD:-0}" != 1 ]; then
    echo "## cargo build --release"
    (cd "$ROOT" && cargo build --release 2>&1 | tail -3) || { echo "build failed"; exit 1; }
  fi
  BIN=$ROOT/target/release/switchboard
  echo "# $("$BIN" --version)  commit $(git -C "$ROOT" rev-parse --short HEAD)" | tee -a "$OUT/header.txt"
  wait_load
  # memory first, on a fresh server with no registrations
  sb_start "$BIN" "$TMP/sb1"; PIDS+=("$SB_PID")
  run sb_memory "$HERE/memory.sh" "$SB_SIP" "$SB_PID"
  stop_pid "$SB_PID"
  sb_start "$BIN" "$TMP/sb2"; PIDS+=("$SB_PID")
  wait_load
  SERVER_PID=$SB_PID START_RATE=${REG_START_RATE:-2000} run sb_register "$HERE/register.sh" "$SB_SIP"
  wait_load
  SERVER_PID=$SB_PID START_RATE=${CALL_START_RATE:-500} run sb_calls_auth "$HERE/calls.sh" "$SB_SIP" auth
  curl -s "http://$SB_HTTP/metrics" | grep -v '^#' > "$OUT/sb_metrics.txt"
  stop_pid "$SB_PID"
fi

if [ "$WHICH" != switchboard ]; then
  kam() {  # kam MODE -> starts Kamailio on a free port: KPID, KT
    local port; port=$(free_ports 1)
    KPID=$("$HERE/kamailio/start.sh" "$1" "$port" "$TMP/kam-$1-$port") || { echo "kamailio failed"; return 1; }
    PIDS+=("$KPID"); KT=127.0.0.1:$port
  }
  wait_load
  kam auth && {
    run kam_memory "$HERE/memory.sh" "$KT" "$KPID"
    stop_pid "$KPID"; }
  kam auth && {
    wait_load
    SERVER_PID=$KPID START_RATE=${REG_START_RATE:-2000} run kam_register "$HERE/register.sh" "$KT"
    stop_pid "$KPID"; }
  kam plain && {
    wait_load
    SERVER_PID=$KPID START_RATE=${CALL_START_RATE:-500} run kam_calls_noauth "$HERE/calls.sh" "$KT" noauth
    stop_pid "$KPID"; }
  kam invite_auth && {
    wait_load
    SERVER_PID=$KPID START_RATE=${CALL_START_RATE:-500} run kam_calls_auth "$HERE/calls.sh" "$KT" auth
    stop_pid "$KPID"; }
fi

echo
echo "==== SUMMARY lines ($OUT) ===="
for f in sb_memory sb_register sb_calls_auth kam_memory kam_register kam_calls_noauth kam_calls_auth; do
  [ -f "$OUT/$f.log" ] || continue
  grep '^SUMMARY' "$OUT/$f.log" | awk '!seen[$0]++' | sed "s/^/$f: /"
done | tee "$OUT/summary.txt"
