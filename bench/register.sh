#!/usr/bin/env bash
# REGISTER throughput with digest auth: the highest registrations/s with
# < 0.1 % failures (and >= 95 % of the offered rate generated), by the shared
# harness's ramp (find_max) and the shared scenario reg_auth.xml: REGISTER,
# 401, REGISTER with MD5 digest, 200 (one registration = two transactions).
# Users: USERS (10000) bench users 1000000+i / pw<i>, cycled in order; the
# server must know them. Each step line adds cpu_s_per_1k: server CPU seconds
# per 1,000 registrations.
# usage: register.sh HOST:PORT
# env: RAMP_RUNS (ramp repetitions, default RUNS), SERVER_PID (CPU figures), RUNS (3), STEP_SECS (15), START_RATE (1000),
#      FACTOR (1.5), BISECT (2), MAX_TRY, USERS, RESULTS
source "$(dirname "$0")/common.sh"
[ $# -ge 1 ] || die "usage: $0 HOST:PORT"
parse_target "$1"
python3 "$TOOLS/gen_users.py" "$USERS" --csv "$RESULTS/users.csv"
echo "# register_auth target=$THOST:$TPORT runs=$RUNS step_secs=$STEP_SECS users=$USERS server_pid=${SERVER_PID:-none} results=$RESULTS"
echo "# load: $(uptime)"
maxes=(); lines=()
for ((run = 1; run <= ${RAMP_RUNS:-$RUNS}; run++)); do
  find_max reg_auth "${START_RATE:-1000}" "${FACTOR:-1.5}" "${BISECT:-2}" \
    -sf "$SCEN/reg_auth.xml" -inf "$RESULTS/users.csv" -p 0 -default_behaviors all,-bye
  echo "run $run: register_auth max_rate=$MAX_RATE/s at: $MAX_LINE"
  maxes+=("$MAX_RATE"); lines+=("$MAX_LINE")
done
c=(); k=(); u=()
for l in "${lines[@]}"; do
  c+=("$(field cpu_server "$l" | tr -d %)"); k+=("$(field cpu_s_per_1k "$l")")
  u+=("$(field cpu_uac "$l" | tr -d %)")
done
echo "SUMMARY register_auth target=$THOST:$TPORT max_regs_per_s $(median_spread "${maxes[@]}") runs=${RAMP_RUNS:-$RUNS} [${maxes[*]}] server_cpu_at_max=[${c[*]}]% cpu_s_per_1000_regs_at_max=[${k[*]}] uac_cpu_at_max=[${u[*]}]% (<0.1% failed, >=95% of offered rate generated)"
echo "SUMMARY register_auth_clean target=$THOST:$TPORT $(clean_summary)"
