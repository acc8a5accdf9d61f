#!/usr/bin/env bash
# Conference benchmark (issue 4, item 5): rooms of ROOM_SIZE (10) G.711
# participants at 20 ms, adding rooms step by step until the mixers miss
# deadlines. Target: 1,000 mixed participants on the 2-core machine with no
# missed deadline.
#
# Per step (ROOMS rooms => ROOMS x ROOM_SIZE participants), on a fresh server:
#   - callers (GEN=loadgen, the default): one sb-loadgen process (bench/loadgen,
#     one thread: epoll + a 1 ms timerfd, one RTP socket per participant) places
#     the calls at N/RAMP_SECS per second, call k dialling room 800 + k / ROOM_SIZE,
#     INVITE with digest auth (users 1000000+i / pw<i>) offering PCMA only, then
#     sends a 440 Hz PCMA tone every 20 ms (paced over 20 slots of 1 ms) until it
#     hangs up HOLD seconds after its 200. Every participant talks all the time:
#     no shared encodes, the mixer's worst case. It reads each participant's
#     mix-minus: loss by sequence, jitter, inter-arrival times, and its own send
#     lag, and prints a SUMMARY line (loadgen.out).
#     GEN=sipp: the former caller, one SIPp (scenarios/uac_call_auth_rtp.xml.in)
#     playing a pcap per call (tools/gen_rtp_pcap.py); SIPp's thread per stream
#     takes the whole machine at ~1,000 participants, so it cannot measure that.
#   - window: WINDOW_SECS once /metrics shows every participant mixed:
#     deadline misses (switchboard_conference_deadline_misses_total) and
#     mixing ticks over the window, server CPU (all threads, /proc ticks),
#     machine CPU, load generator CPU, UDP receive-buffer drops machine-wide.
#   - participants per core = participants / (server CPU % / 100).
# Stops after the first step with a missed deadline (or failed calls), unless
# KEEP_GOING=1.
#
# usage: conference.sh
# env: ROOMS ("10 25 50 75 100 125 150"), ROOM_SIZE (10), WINDOW_SECS (15),
#      RAMP_SECS (10), RTP_RANGE (12000-15999), GEN (loadgen|sipp), NO_BUILD=1,
#      LOAD_MAX (1.0), LOAD_WAIT (600), KEEP_GOING=1, OUT
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd); ROOT=$(dirname "$HERE")
ROOMS=${ROOMS:-10 25 50 75 100 125 150}; ROOM_SIZE=${ROOM_SIZE:-10}
WINDOW_SECS=${WINDOW_SECS:-15}; RAMP_SECS=${RAMP_SECS:-10}
RTP_RANGE=${RTP_RANGE:-12000-15999}; GEN=${GEN:-loadgen}
OUT=${OUT:-$HERE/results/conference-$(date +%Y%m%d-%H%M%S)}; mkdir -p "$OUT"
RESULTS=$OUT/common source "$HERE/common.sh"
set +e
TMP=$(mktemp -d /tmp/sb-conf.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && stop_pid "$p"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${NO_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && nice -n 10 cargo build --release -q -p switchboard -p switchboard-loadgen) || die "build failed"
fi
BIN=$ROOT/target/release/switchboard; LOADGEN=$ROOT/target/release/sb-loadgen
[ -x "$BIN" ] || die "no $BIN"
[ "$GEN" = sipp ] || [ -x "$LOADGEN" ] || die "no $LOADGEN"

# Enough media for ramp + the wait for everyone mixed (<= RAMP_SECS + 20) + settling + window + slack:
# the first call hangs up HOLD s after its 200, after the window whatever the wait took.
MEDIA_SECS=$(( RAMP_SECS + WINDOW_SECS + 25 )); HOLD=$(( RAMP_SECS + 20 + 2 + WINDOW_SECS + 3 ))
python3 "$HERE/tools/gen_rtp_pcap.py" "$OUT/pcma20.pcap" --seconds "$MEDIA_SECS" --codec pcma >/dev/null
sed -e 's|@PT@|8|g' -e 's|@CODEC@|PCMA|g' -e 's|@MPORT@|[media_port]|g' \
    -e "s|@PLAY@|  <nop><action><exec play_pcap_audio=\"$OUT/pcma20.pcap\"/></action></nop>|" \
    -e 's|\[service\]|[field3]|g' \
    "$HERE/scenarios/uac_call_auth_rtp.xml.in" > "$OUT/uac_room.xml"

sb_metric() { curl -s "http://$SB_HTTP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
cpu_pct() { awk -v t="$1" -v s="$2" -v hz="$CLK_TCK" 'BEGIN{ if (s <= 0) s = 1; printf "%.1f", 100 * t / hz / s }'; }

echo "# conference benchmark: rooms of $ROOM_SIZE G.711 (PCMA) participants, 20 ms; $(nproc) cores; $(uname -r)"
echo "# every participant talks (440 Hz tone); callers: $GEN; window ${WINDOW_SECS}s once all are mixed"
echo "# switchboard $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . ':!bench' || echo ' +uncommitted changes'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for rooms in $ROOMS; do
  n=$(( rooms * ROOM_SIZE ))
  d=$OUT/rooms-$rooms; mkdir -p "$d"
  wait_load
  load_before=$(cut -d' ' -f1 /proc/loadavg)
  USERS=$n SB_SERVE_ARGS="${SB_EXTRA_ARGS:-} --rtp-ports $RTP_RANGE --conference-rooms 800-$(( 800 + rooms - 1 )) --rtp-timeout 30" \
    sb_start "$BIN" "$d/server"
  PIDS+=("$SB_PID"); SERVER_PID=$SB_PID
  # Injection file: user, password, auth, room (ROOM_SIZE consecutive calls per room).
  python3 - "$n" "$ROOM_SIZE" > "$d/users.csv" <<'PY'
import sys
n, size = int(sys.argv[1]), int(sys.argv[2])
print("SEQUENTIAL")
for i in range(n):
    print("%d;pw%d;[authentication username=%d password=pw%d];%d" % (1000000 + i, i, 1000000 + i, i, 800 + i // size))
PY
  rate=$(awk -v n="$n" -v r="$RAMP_SECS" 'BEGIN{x = n / r; if (x < 1) x = 1; printf "%g", x}')
  if [ "$GEN" = sipp ]; then
    read -r uac_media < <(free_ports 1)
    ( cd "$d" && timeout -k 10 $(( MEDIA_SECS + 60 )) \
        sipp "$SB_SIP" -sf "$OUT/uac_room.xml" -inf "$d/users.csv" -i 127.0.0.1 -p 0 -mi 127.0.0.1 -mp "$uac_media" \
          -r "$rate" -m "$n" -l "$n" -d $(( MEDIA_SECS * 1000 )) -nostdin \
          -default_behaviors all,-abortunexp -recv_timeout 32000 \
          -trace_stat -stf stat.csv -fd 1 -trace_err -error_file errors.log >sipp.out 2>&1 ) &
    uac_job=$!
  else
    # import.csv (written by sb_start): the numbered users, then "uas"; call i uses line i.
    timeout -k 10 $(( RAMP_SECS + HOLD + 120 )) "$LOADGEN" call --server "$SB_SIP" --calls "$n" --rate "$rate" \
      --hold "$HOLD" --to 800 --group-size "$ROOM_SIZE" --users-file "$d/server/import.csv" --codec pcma \
      --label "rooms=$rooms" --progress >"$d/loadgen.out" 2>"$d/loadgen.err" &
    uac_job=$!
  fi
  # Wait (bounded) until every participant is mixed.
  mixed=0
  for _ in $(seq 1 $(( (RAMP_SECS + 20) * 5 ))); do
    mixed=$(sb_metric switchboard_conference_participants); mixed=${mixed:-0}
    [ "$mixed" -ge "$n" ] && break
    sleep 0.2
  done
  sleep 2  # jitter buffers fill, join tones end
  if [ "$GEN" = sipp ]; then uac_sipp=$(pgrep -n -f "^sipp .*-mp $uac_media " || true)
  else uac_sipp=$(pgrep -n -P "$uac_job" -x sb-loadgen || true); [ -n "$uac_sipp" ] || uac_sipp=$uac_job; fi
  m0=$(sb_metric switchboard_conference_deadline_misses_total); t0=$(sb_metric switchboard_conference_ticks_total)
  k0=$(ticks "$SB_PID"); a0=$( [ -n "$uac_sipp" ] && ticks "$uac_sipp" || echo 0)
  all0=$(awk '/^cpu /{print $2+$3+$4+$7+$8; exit}' /proc/stat); drops0=$(udp_rcvbuf_errors)
  steal0=$(awk '/^cpu /{print $9; exit}' /proc/stat)
  w0=$(date +%s.%N)
  sleep "$WINDOW_SECS"
  w1=$(date +%s.%N)
  m1=$(sb_metric switchboard_conference_deadline_misses_total); t1=$(sb_metric switchboard_conference_ticks_total)
  k1=$(ticks "$SB_PID"); a1=$( [ -n "$uac_sipp" ] && ticks "$uac_sipp" || echo 0)
  all1=$(awk '/^cpu /{print $2+$3+$4+$7+$8; exit}' /proc/stat); drops1=$(udp_rcvbuf_errors)
  steal1=$(awk '/^cpu /{print $9; exit}' /proc/stat)
  mixed_end=$(sb_metric switchboard_conference_participants)
  wall=$(awk -v a="$w0" -v b="$w1" 'BEGIN{printf "%.2f", b - a}')
  server_cpu=$(cpu_pct $((k1 - k0)) "$wall"); sipp_cpu=$(cpu_pct $((a1 - a0)) "$wall")
  machine_cpu=$(cpu_pct $((all1 - all0)) "$wall"); steal_cpu=$(cpu_pct $((steal1 - steal0)) "$wall")
  misses=$(( ${m1:-0} - ${m0:-0} )); ticks_w=$(( ${t1:-0} - ${t0:-0} ))
  per_core=$(awk -v n="$mixed_end" -v c="$server_cpu" 'BEGIN{ if (c > 0) printf "%.0f", n * 100 / c; else print "na" }')
  if [ "$GEN" = sipp ]; then
    # End this step's SIPp (found above by its own media port).
    [ -n "$uac_sipp" ] && kill "$uac_sipp" 2>/dev/null; wait "$uac_job" 2>/dev/null
    gen_line=""
  else
    # The load generator hangs up by itself (HOLD s after each 200) and prints its SUMMARY.
    wait "$uac_job" 2>/dev/null
    s=$(grep '^SUMMARY' "$d/loadgen.out" | tail -1)
    gen_line=" | loadgen: $(echo "$s" | sed -e 's/^SUMMARY loadgen label=[^ ]* //')"
  fi
  stop_pid "$SB_PID"
  LINE="rooms=$rooms participants=$n mixed=$mixed_end window_s=$wall ticks=$ticks_w deadline_misses=$misses cpu_server=${server_cpu}% participants_per_core=$per_core cpu_${GEN}=${sipp_cpu}% cpu_machine=${machine_cpu}% cpu_steal=${steal_cpu}% udp_drops=$((drops1 - drops0)) load_before=$load_before$gen_line"
  echo "$LINE" | tee -a "$OUT/summary.txt"
  if [ "${KEEP_GOING:-0}" != 1 ] && { [ "$misses" -gt 0 ] || [ "${mixed_end:-0}" -lt "$n" ]; }; then
    echo "# stopping: deadlines missed or participants not all mixed at $rooms rooms"
    break
  fi
done
echo "# results in $OUT"
