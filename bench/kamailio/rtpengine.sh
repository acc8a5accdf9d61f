#!/usr/bin/env bash
# Start rtpengine (Debian rtpengine-daemon) in userspace only (--table=-1: no
# kernel forwarding module) on loopback, with ports of our choosing so that it
# runs beside other jobs. Prints the PID; log in WORK_DIR/rtpengine.log.
# usage: kamailio/rtpengine.sh NG_PORT CLI_PORT PORT_MIN PORT_MAX WORK_DIR [THREADS]
#   THREADS: --num-threads (default 2, the shared harness's run_rtpengine.sh)
# env: RTPE_SCHED="POLICY [PRIORITY]" (e.g. "rr 10"): its threads' scheduling,
#   --scheduling=POLICY (default|none|fifo|rr|other|batch|idle) --priority=PRIORITY;
#   unset = rtpengine's default (no flags). fifo/rr need CAP_SYS_NICE.
set -euo pipefail
NG=$1; CLI=$2; PMIN=$3; PMAX=$4; W=$5; TH=${6:-2}
SCHED=()
if [ -n "${RTPE_SCHED:-}" ]; then
  read -r policy prio extra <<<"$RTPE_SCHED"
  [ -z "${extra:-}" ] || { echo "RTPE_SCHED: \"POLICY [PRIORITY]\", got \"$RTPE_SCHED\"" >&2; exit 1; }
  SCHED=(--scheduling="$policy")
  [ -n "${prio:-}" ] && SCHED+=(--priority="$prio")
fi
mkdir -p "$W"
rtpengine --config-file=none --table=-1 --interface=127.0.0.1 \
  --listen-ng="127.0.0.1:$NG" --listen-cli="127.0.0.1:$CLI" \
  --foreground --log-stderr --log-level=4 --port-min="$PMIN" --port-max="$PMAX" \
  --num-threads="$TH" --delete-delay=0 "${SCHED[@]}" >"$W/rtpengine.log" 2>&1 &
PID=$!
sleep 1
kill -0 "$PID" 2>/dev/null || { tail "$W/rtpengine.log" >&2; exit 1; }
echo "$PID"
