#!/usr/bin/env bash
# Calls per second through the server (INVITE/200/ACK/BYE, no media), failure
# counts, and server CPU seconds per 1,000 calls.
# usage: calls.sh HOST:PORT [auth|noauth]
#   auth   (default): the caller authenticates: INVITE, 407, ACK, INVITE with
#          Proxy-Authorization, [100] [180] 200, ACK, BYE, 200
#          (scenarios/uac_call_auth.xml; callers are the USERS bench users
#          1000000+i / pw<i>, From user = authenticated user). Switchboard
#          requires this.
#   noauth : the shared harness's uac_call.xml (no challenge): what the shared
#          Kamailio config handles.
#   The callee is user "uas" (password "uas"), REGISTERed from the SIPp UAS's
#   own port before it starts (a free port), answering with 180, 200.
# Two measurements, RUNS times each (default 3):
#   1. fixed rate: TARGET_CPS (default 1000) for FIXED_SECS (default 30) s:
#      failed calls, retransmissions, setup p99, CPU s per 1,000 calls
#   2. ramp (RAMP=1, default): the shared harness's find_max: the highest rate
#      with < 0.1 % failed calls and >= 95 % of the offered rate generated,
#      plus the stricter "clean" maximum (retrans <= 1 %, p99 <= 100 ms)
# env: RAMP_RUNS (ramp repetitions, default RUNS), SERVER_PID (needed for CPU figures), RUNS, TARGET_CPS, FIXED_SECS, RAMP,
#      STEP_SECS (15), START_RATE (500), FACTOR (1.5), BISECT (2), CALL_MS (0),
#      MAX_TRY, USERS (10000), RESULTS
source "$(dirname "$0")/common.sh"
[ $# -ge 1 ] || die "usage: $0 HOST:PORT [auth|noauth]"
parse_target "$1"; MODE=${2:-auth}
CALL_MS=${CALL_MS:-0}; TARGET_CPS=${TARGET_CPS:-1000}; FIXED_SECS=${FIXED_SECS:-30}
read -r UAS_PORT UAS_MEDIA UAC_MEDIA < <(free_ports 3)
case "$MODE" in
  auth) python3 "$TOOLS/gen_users.py" "$USERS" --csv "$RESULTS/users.csv"
        UAC=(-sf "$SB_SCEN/uac_call_auth.xml" -inf "$RESULTS/users.csv") ;;
  noauth) UAC=(-sf "$SCEN/uac_call.xml") ;;
  *) die "mode must be auth or noauth" ;;
esac
UAC+=(-s uas -p 0 -d "$CALL_MS" -l 15000 -default_behaviors all,-abortunexp -mp "$UAC_MEDIA")
HOLD_S=$(( CALL_MS / 1000 + 1 ))
trap stop_uas EXIT
register_callee "$THOST" "$TPORT" "$UAS_PORT"
start_uas "$SCEN/uas_call.xml" "$UAS_PORT" -mp "$UAS_MEDIA"
echo "# calls_$MODE target=$THOST:$TPORT uas=$LOCAL_IP:$UAS_PORT call_ms=$CALL_MS runs=$RUNS target_cps=$TARGET_CPS fixed_secs=$FIXED_SECS step_secs=$STEP_SECS server_pid=${SERVER_PID:-none} results=$RESULTS"
echo "# load: $(uptime)"

fails=(); oks=(); per=(); p99=(); retr=(); gens=(); cpus=()
for ((run = 1; run <= RUNS; run++)); do
  run_step "fixed_$MODE" "$TARGET_CPS" $(( TARGET_CPS * FIXED_SECS )) "${UAC[@]}"
  echo "  fixed $MODE $STEP_LINE" | tee -a "$RESULTS/fixed.log"
  fails+=("$(field failed "$STEP_LINE")"); oks+=("$(field ok "$STEP_LINE")")
  per+=("$(field cpu_s_per_1k "$STEP_LINE")"); p99+=("$(field rt1_p99_ms "$STEP_LINE")")
  retr+=("$(field retrans "$STEP_LINE")"); gens+=("$(field gen_rate "$STEP_LINE")")
  cpus+=("$(field cpu_server "$STEP_LINE" | tr -d %)")
done
nf=$(printf '%s\n' "${fails[@]}" | awk '{s += $1} END{print s + 0}')
FIXED_SUMMARY="SUMMARY calls_${MODE}_at_${TARGET_CPS}cps target=$THOST:$TPORT calls_per_run=$(( TARGET_CPS * FIXED_SECS )) failed_total=$nf failed=[${fails[*]}] ok=[${oks[*]}] gen_rate=[${gens[*]}] retrans=[${retr[*]}] setup_p99_ms=[${p99[*]}] server_cpu=[${cpus[*]}]% cpu_s_per_1000_calls $(median_spread "${per[@]}") runs=$RUNS"
echo "$FIXED_SUMMARY"

if [ "${RAMP:-1}" = 1 ]; then
  maxes=(); lines=()
  for ((run = 1; run <= ${RAMP_RUNS:-$RUNS}; run++)); do
    find_max "calls_$MODE" "${START_RATE:-500}" "${FACTOR:-1.5}" "${BISECT:-2}" "${UAC[@]}"
    echo "run $run: calls_$MODE max_cps=$MAX_RATE at: $MAX_LINE"
    maxes+=("$MAX_RATE"); lines+=("$MAX_LINE")
  done
  c=(); k=(); u=(); r=()
  for l in "${lines[@]}"; do
    c+=("$(field cpu_server "$l" | tr -d %)"); k+=("$(field cpu_s_per_1k "$l")")
    u+=("$(field cpu_uac "$l" | tr -d %)"); r+=("$(field rt1_p99_ms "$l")")
  done
  echo "$FIXED_SUMMARY"
  echo "SUMMARY calls_$MODE target=$THOST:$TPORT call_ms=$CALL_MS max_cps $(median_spread "${maxes[@]}") runs=${RAMP_RUNS:-$RUNS} [${maxes[*]}] server_cpu_at_max=[${c[*]}]% cpu_s_per_1000_calls_at_max=[${k[*]}] uac_cpu=[${u[*]}]% setup_p99_ms=[${r[*]}] (<0.1% failed, >=95% of offered rate generated)"
  echo "SUMMARY calls_${MODE}_clean target=$THOST:$TPORT $(clean_summary)"
fi
