#!/usr/bin/env bash
# Media benchmark (issue 3): N concurrent calls with 20 ms G.711 RTP in both
# directions through the relay, Switchboard and/or rtpengine (userspace,
# driven by Kamailio), plus the CPU cost of PCMU<->Opus transcoded calls.
#
# Per load (N in CALLS):
#   - callers: SIPp, scenarios/uac_call_auth_rtp.xml.in (INVITE digest auth as
#     calls.sh, offer PCMA only), N calls started over RAMP_SECS, each playing a
#     MEDIA_SECS-long pcap of 20 ms PCMA packets (tools/gen_rtp_pcap.py) and
#     hanging up 1 s after it ends; callee: SIPp with the shared
#     uas_call_rtp.xml (answers PCMA) and -rtp_echo (every packet back to its
#     source). So each call carries 50 packets/s each way through the relay.
#   - measurement window: WINDOW_SECS from RAMP_SECS+2 s on (all N calls
#     established and sending, no call setup/teardown): CPU ticks of the relay
#     process (Switchboard; rtpengine), of Kamailio, of the SIPp caller and
#     callee, and per-socket kernel drops (/proc/net/udp) in the relay's port
#     range at the end of the window.
#   - packets: relay counters over the whole run (Switchboard /metrics
#     switchboard_rtp_packets_{received,sent}_total, added when a call ends;
#     rtpengine CLI "Total relayed packets"), against the expected
#     2 x N x packets-per-pcap (+ the probe's); loss = 1 - relayed/expected.
#   - latency: tools/rtp_probe.py during the window: one extra call (user
#     1009999 calls user 1009999, whose registered UAS answers with the probe's
#     echo socket as media address), timestamped RTP through the relay and
#     straight to the same echo, added = relayed RTT - direct RTT (p50, p99).
# Transcoding (Switchboard only, TRANSCODE counts): callers offer PCMU only,
# the callee (scenarios/uas_call_opus.xml) answers opus/48000/2 only and
# echoes, so Switchboard decodes/encodes both ways; server CPU over TC_SECS.
#
# GEN=loadgen: the relayed runs use sb-loadgen (bench/loadgen) on both ends
# instead of SIPp: `sb-loadgen answer` REGISTERs as uas from its own port,
# answers every INVITE on a socket per call and echoes its RTP; `sb-loadgen
# call` places the N calls (digest auth, PCMA, a 440 Hz tone every 20 ms on a
# socket per call, one thread for all) and hangs each up MEDIA_SECS after its
# 200. Every 50th packet is a latency probe (a marker in its payload, which
# the relay forwards untouched while it rewrites the RTP header), so the
# caller measures the round trip through the relay twice (caller -> relay ->
# callee -> relay -> caller) and end-to-end loss by sequence. Two figures:
# relayed_rtt_* = userspace send to userspace receive (both generators'
# scheduling included, nothing subtracted); relayed_net_rtt_* = TWAMP style
# (RFC 5357): kernel receive stamps (SO_TIMESTAMPNS) at both ends, the callee
# writes its turnaround (its kernel's receipt to its echo) into the probe and
# the caller subtracts it, so what is left is the network: the sends, the
# loopback, and the relay's two passes (with its own scheduling).
# No rtp_probe.py in these runs. Transcoded runs keep SIPp (the callee must
# answer Opus).
# direct (GEN=loadgen only): the same N calls from `sb-loadgen call` straight
# to `sb-loadgen answer` (INVITEs to the answerer's own SIP port, no REGISTER,
# no auth, no relay): the baseline. Added latency per pass through a relay =
# (relayed net RTT - direct net RTT) / 2 at p50 and p99, printed by
# tools/media_summary.py when a direct line with the same call count is in the
# same lines.log (or in DIRECT_LINES=another lines.log).
#
# usage: media.sh [switchboard|rtpengine|both|direct|all]   (default both)
#   both = switchboard then rtpengine; all = direct, switchboard, rtpengine
# env: CALLS ("100 250 500"), MEDIA_SECS (30), RAMP_SECS (10), WINDOW_SECS (15),
#      TRANSCODE ("1 20"), TC_SECS (20), RTP_RANGE (12000-14999: relay ports,
#      below the ephemeral range that free_ports draws from),
#      RTPE_THREADS (2), PERF=1 (perf record the relay over each window),
#      TE=1 (callers offer and callees answer telephone-event/8000 as well:
#      Switchboard then runs no in-band DTMF detection on the relayed legs),
#      ECHO_BUF (bytes: -rtp_buffsize of the callee's echo socket; unset = the
#      kernel default 208 KB, which overflows at ~500 calls), GEN (sipp|loadgen),
#      NO_BUILD=1,
#      SB_EXTRA_ARGS (more `switchboard serve` flags, e.g. "--media-threads 0"),
#      PIN=1 (GEN=loadgen only: the relay's threads on CPU 0, both generators on CPU 1),
#      RTPE_SCHED ("POLICY [PRIORITY]", e.g. "rr 10": rtpengine's --scheduling/--priority;
#      unset = its default), DIRECT_LINES (for the summary: a lines.log with direct lines),
#      LOAD_MAX (1.0), LOAD_WAIT (600), OUT
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd); ROOT=$(dirname "$HERE")
WHICH=${1:-both}
CALLS=${CALLS:-100 250 500}; MEDIA_SECS=${MEDIA_SECS:-30}; RAMP_SECS=${RAMP_SECS:-10}
WINDOW_SECS=${WINDOW_SECS:-15}; TRANSCODE=${TRANSCODE:-1 20}; TC_SECS=${TC_SECS:-20}
RTP_RANGE=${RTP_RANGE:-12000-14999}; RTP_LO=${RTP_RANGE%-*}; RTP_HI=${RTP_RANGE#*-}
GEN=${GEN:-sipp}; LOADGEN=$ROOT/target/release/sb-loadgen
case $WHICH in switchboard|rtpengine|both|direct|all) ;;
  *) echo "usage: media.sh [switchboard|rtpengine|both|direct|all]" >&2; exit 2 ;; esac
OUT=${OUT:-$HERE/results/media-$(date +%Y%m%d-%H%M%S)}; mkdir -p "$OUT"
RESULTS=$OUT/common source "$HERE/common.sh"
set +e
[ $(( MEDIA_SECS )) -ge $(( RAMP_SECS + 3 + WINDOW_SECS )) ] || die "MEDIA_SECS must be >= RAMP_SECS + WINDOW_SECS + 3"
TMP=$(mktemp -d /tmp/sb-media.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && stop_pid "$p"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- inputs: pcaps, scenario variants, users --------------------------------
PKTS=$(( MEDIA_SECS * 50 ))
python3 "$HERE/tools/gen_rtp_pcap.py" "$OUT/pcma20.pcap" --seconds "$MEDIA_SECS" --codec pcma
python3 "$HERE/tools/gen_rtp_pcap.py" "$OUT/pcmu20.pcap" --seconds "$MEDIA_SECS" --codec pcmu
scen() {  # scen OUT PT CODEC MPORT PCAP|none
  local play=""
  [ "$5" != none ] && play="  <nop><action><exec play_pcap_audio=\"$5\"/></action></nop>"
  sed -e "s|@PT@|$2|g" -e "s|@CODEC@|$3|g" -e "s|@MPORT@|$4|g" -e "s|@PLAY@|$play|" \
    "$HERE/scenarios/uac_call_auth_rtp.xml.in" > "$1"
}
scen "$OUT/uac_load.xml" 8 PCMA '[media_port]' "$OUT/pcma20.pcap"
LOAD_UAS=$SCEN/uas_call_rtp.xml
if [ "${TE:-0}" = 1 ]; then  # offer and answer telephone-event/8000 too
  sed -i -e 's|^      m=audio \[media_port\] RTP/AVP 8$|      m=audio [media_port] RTP/AVP 8 101|' \
    -e 's|^      a=rtpmap:8 PCMA/8000$|      a=rtpmap:8 PCMA/8000\n      a=rtpmap:101 telephone-event/8000\n      a=fmtp:101 0-16|' "$OUT/uac_load.xml"
  grep -q telephone-event "$OUT/uac_load.xml" || die "TE=1: could not add telephone-event to the offer"
  LOAD_UAS=$HERE/scenarios/uas_call_rtp_te.xml
fi
scen "$OUT/uac_tc.xml" 0 PCMU '[media_port]' "$OUT/pcmu20.pcap"
scen "$OUT/uac_probe.xml" 8 PCMA '[probe_a]' none
python3 "$TOOLS/gen_users.py" "$USERS" --csv "$OUT/users.csv"
# the same users for sb-loadgen (user,password per line)
awk -F';' 'NR > 1 { print $1 "," $2 }' "$OUT/users.csv" > "$OUT/lg_users.csv"

# --- helpers -----------------------------------------------------------------
sipp_bg() {  # sipp_bg LOGNAME sipp-args... -> BG_PID (SIPp -bg)
  local log=$OUT/$1.out; shift
  sipp "$@" -nostdin -bg >"$log" 2>&1 || true
  BG_PID=$(sed -n 's/.*PID=\[\([0-9]*\)\].*/\1/p' "$log" | head -1)
  [ -n "$BG_PID" ] && kill -0 "$BG_PID" 2>/dev/null || { cat "$log" >&2; BG_PID=; return 1; }
  PIDS+=("$BG_PID")
}
register() {  # register TARGET USER PASS PORT: REGISTER USER@127.0.0.1:PORT from PORT
  timeout 15 sipp "$1" -sf "$SCEN/reg_one.xml" -s "$2" -key contact_uri "sip:$2@127.0.0.1:$4" \
    -au "$2" -ap "$3" -i 127.0.0.1 -p "$4" -m 1 -nostdin -timeout 10s >"$OUT/reg-$2-$4.out" 2>&1 \
    || echo "# note: REGISTER of $2 from port $4 failed"
}
relay_drops() {  # PID... -> "drops sockets": kernel receive drops (/proc/net/udp)
  # summed over the UDP sockets the given processes hold open now
  local p
  for p in $(pid_tree "$@"); do ls -l "/proc/$p/fd" 2>/dev/null; done \
    | sed -n 's/.*socket:\[\([0-9]*\)\]$/\1/p' | sort -u > "$TMP/inodes"
  awk 'NR == FNR { want[$1] = 1; next } FNR > 1 && ($10 in want) { s += $NF; n++ }
    END { printf "%d %d", s, n }' "$TMP/inodes" /proc/net/udp
}
sb_metric() { curl -s "http://$SB_HTTP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
relay_counts() {  # -> "received sent" (Switchboard) or "relayed relayed" (rtpengine)
  if [ "$SIDE" = direct ]; then echo "0 0"
  elif [ "$SIDE" = switchboard ]; then
    echo "$(sb_metric switchboard_rtp_packets_received_total) $(sb_metric switchboard_rtp_packets_sent_total)"
  else
    local r; read -r r _ < <(python3 "$TOOLS/rtpe_relayed.py" "127.0.0.1:$RTPE_CLI" || echo na na); echo "$r $r"
  fi
}
cur_sessions() {
  if [ "$SIDE" = direct ]; then echo na
  elif [ "$SIDE" = switchboard ]; then sb_metric switchboard_media_sessions
  else python3 "$TOOLS/rtpe_relayed.py" "127.0.0.1:$RTPE_CLI" | awk '{print $2}'; fi
}
cpu_pct() { awk -v t="$1" -v s="$2" -v hz="$CLK_TCK" 'BEGIN{ if (s <= 0) s = 1; printf "%.1f", 100 * t / hz / s }'; }

# one_run LABEL N UAS_SCENARIO UAC_SCENARIO PROBE(1/0) WINDOW_START WINDOW_SECS
one_run() {
  local label=$1 n=$2 uas_sf=$3 uac_sf=$4 probe=$5 wstart=$6 wsecs=$7
  local d=$OUT/$SIDE-$label; mkdir -p "$d"
  wait_load
  local uas_port=$UAS_PORT puas_port=$PUAS_PORT uas_media uac_media puas_media pa pe pd pm
  read -r uas_media uac_media puas_media pa pe pd pm < <(free_ports 7)
  register "$TARGET" uas uas "$uas_port"
  sipp_bg "$SIDE-$label-uas" -sf "$uas_sf" -i 127.0.0.1 -p "$uas_port" -mi 127.0.0.1 -mp "$uas_media" \
    -rtp_echo ${ECHO_BUF:+-rtp_buffsize "$ECHO_BUF"} -trace_err -error_file "$d/uas-errors.log" || { echo "uas failed"; return 1; }
  local uas_pid=$BG_PID puas_pid=""
  if [ "$probe" = 1 ]; then
    register "$TARGET" 1009999 pw9999 "$puas_port"
    sipp_bg "$SIDE-$label-puas" -sf "$HERE/scenarios/uas_probe.xml" -i 127.0.0.1 -p "$puas_port" \
      -mi 127.0.0.1 -mp "$puas_media" -key probe_e "$pe" && puas_pid=$BG_PID
  fi
  sleep 0.5
  local c0 c1 drops0 drops1
  read -r c0 c1 < <(relay_counts)
  drops0=$(udp_rcvbuf_errors)
  local rate; rate=$(awk -v n="$n" -v r="$RAMP_SECS" 'BEGIN{x = n / r; if (x < 1) x = 1; printf "%g", x}')
  ( cd "$d" && /usr/bin/time -f "%U %S %e" -o time.txt timeout -k 10 $(( MEDIA_SECS + RAMP_SECS + 90 )) \
      sipp "$TARGET" -sf "$uac_sf" -inf "$OUT/users.csv" -s uas -i 127.0.0.1 -p 0 -mi 127.0.0.1 -mp "$uac_media" \
        -r "$rate" -m "$n" -l "$n" -d $(( MEDIA_SECS * 1000 + 1000 )) -nostdin \
        -default_behaviors all,-abortunexp -recv_timeout 32000 \
        -trace_stat -stf stat.csv -fd 1 -trace_err -error_file errors.log >sipp.out 2>&1 ) &
  local uac_job=$!
  local t_start; t_start=$(date +%s.%N)
  local probe_job="" probe_uac=""
  if [ "$probe" = 1 ] && [ -n "$puas_pid" ]; then
    sleep $(( wstart - 2 ))
    python3 "$HERE/tools/rtp_probe.py" --a-port "$pa" --e-port "$pe" --d-port "$pd" \
      --sdp-log "$d/probe-sipp.log" --seconds "$wsecs" --pt 8 >"$d/probe.txt" 2>&1 &
    probe_job=$!
    ( cd "$d" && timeout -k 5 $(( wsecs + 30 )) sipp "$TARGET" -sf "$OUT/uac_probe.xml" -inf "$OUT/users.csv" \
        -s 1009999 -key probe_a "$pa" -i 127.0.0.1 -p 0 -mp "$pm" -m 1 -d $(( (wsecs + 4) * 1000 )) \
        -nostdin -trace_logs -log_file "$d/probe-sipp.log" -default_behaviors all,-abortunexp \
        >probe-sipp.out 2>&1 ) &
    probe_uac=$!
    sleep 2
  else
    sleep "$wstart"
  fi
  # measurement window
  local uac_sipp; uac_sipp=$(pgrep -n -f "^sipp .*-mp $uac_media " || true)
  local r0 k0 a0 u0 w0 r1 k1 a1 u1 w1 sess
  r0=$(ticks $RELAY_PID); k0=$( [ -n "$SIP_PID" ] && ticks $SIP_PID || echo 0)
  a0=$( [ -n "$uac_sipp" ] && ticks "$uac_sipp" || echo 0); u0=$(ticks "$uas_pid")
  local all0; all0=$(awk '/^cpu /{print $2+$3+$4+$7+$8; exit}' /proc/stat)
  w0=$(date +%s.%N)
  # PERF=1: profile the relay process over the window (perf, cpu-clock, call graphs);
  # the profiler's own cost lands in the window: use such runs for the profile only
  [ "${PERF:-0}" = 1 ] && { perf record -q -e cpu-clock -g -p "$(echo $RELAY_PID | tr ' ' ,)" -o "$d/perf.data" \
      -- sleep "$wsecs" >"$d/perf.log" 2>&1 & }
  sleep "$wsecs"
  r1=$(ticks $RELAY_PID); k1=$( [ -n "$SIP_PID" ] && ticks $SIP_PID || echo 0)
  a1=$( [ -n "$uac_sipp" ] && ticks "$uac_sipp" || echo 0); u1=$(ticks "$uas_pid")
  local all1; all1=$(awk '/^cpu /{print $2+$3+$4+$7+$8; exit}' /proc/stat)
  w1=$(date +%s.%N)
  sess=$(cur_sessions)
  local sockdrops; sockdrops=$(relay_drops $RELAY_PID)
  local wall; wall=$(awk -v a="$w0" -v b="$w1" 'BEGIN{printf "%.2f", b - a}')
  wait "$uac_job"
  [ -n "$probe_job" ] && wait "$probe_job"
  [ -n "$probe_uac" ] && wait "$probe_uac"
  sleep 2
  read -r c0b c1b < <(relay_counts)
  drops1=$(udp_rcvbuf_errors)
  stop_pid "$uas_pid"; [ -n "$puas_pid" ] && stop_pid "$puas_pid"
  local st; st=$(python3 "$TOOLS/sippstat.py" "$d/stat.csv" "$n" 2>/dev/null || echo "ok=0 failed=0")
  local ok; ok=$(field ok "$st")
  local relay_cpu sip_cpu uac_cpu uas_cpu machine_cpu
  relay_cpu=$(cpu_pct $((r1 - r0)) "$wall"); sip_cpu=$(cpu_pct $((k1 - k0)) "$wall")
  uac_cpu=$(cpu_pct $((a1 - a0)) "$wall"); uas_cpu=$(cpu_pct $((u1 - u0)) "$wall")
  machine_cpu=$(cpu_pct $((all1 - all0)) "$wall")
  local probe_line probe_sent
  probe_line=$(cat "$d/probe.txt" 2>/dev/null | tail -1); probe_sent=$(field sent "$probe_line")
  local expected=$(( 2 * ${ok:-0} * PKTS + 2 * ${probe_sent:-0} ))
  local rin=$(( ${c0b:-0} - ${c0:-0} )) rout=$(( ${c1b:-0} - ${c1:-0} ))
  local loss; loss=$(awk -v e="$expected" -v o="$rout" 'BEGIN{ if (e > 0) printf "%.4f", 100 * (e - o) / e; else print "na" }')
  local per100; per100=$(awk -v c="$relay_cpu" -v n="$n" 'BEGIN{printf "%.1f", c * 100 / n}')
  local percall; percall=$(awk -v c="$relay_cpu" -v n="$n" 'BEGIN{printf "%.2f", c / n}')
  local pps; pps=$(awk -v o="$rout" -v s="$MEDIA_SECS" 'BEGIN{printf "%.0f", o / s}')
  LINE="$SIDE $label calls=$n ok=$ok failed=$(field failed "$st") sessions_in_window=$sess wall_s=$wall cpu_relay=${relay_cpu}% cpu_relay_per_100_calls=${per100}% cpu_relay_per_call=${percall}% cpu_sip=${sip_cpu}% cpu_uac=${uac_cpu}% cpu_uas=${uas_cpu}% cpu_machine=${machine_cpu}% relayed_in=$rin relayed_out=$rout expected=$expected loss_pct=$loss pps_relayed=$pps relay_sock_drops=${sockdrops% *} relay_sockets=${sockdrops#* } udp_drops_all=$((drops1 - drops0)) ${probe_line#probe }"
  echo "$LINE" | tee -a "$OUT/lines.log"
  sleep 4   # SIPp UAS timewait, rtpengine/Switchboard session teardown
}

# ctx_switches PID...: voluntary + involuntary context switches of all their threads so far
ctx_switches() {
  local p; for p in "$@"; do cat /proc/"$p"/task/*/status 2>/dev/null; done |
    awk '/^(non)?voluntary_ctxt_switches:/{s += $2} END{print s + 0}'
}

# TE=1 with GEN=loadgen: both ends offer/answer telephone-event (no in-band detection needed)
LG_TE=""; [ "${TE:-0}" = 1 ] && LG_TE="--telephone-event"

# one_run_loadgen LABEL N: a relayed run with sb-loadgen on both ends (GEN=loadgen);
# SIDE=direct: no relay (TARGET is the answerer's own SIP address, it registers nowhere)
one_run_loadgen() {
  local label=$1 n=$2
  local d=$OUT/$SIDE-$label; mkdir -p "$d"
  wait_load
  local load_before; load_before=$(cut -d' ' -f1 /proc/loadavg)
  local pin_gen=()
  if [ "${PIN:-0}" = 1 ]; then
    # The relay (all its threads, and Kamailio beside rtpengine) on CPU 0, both generators
    # on CPU 1: neither preempts the other, whichever relay runs.
    local p; for p in $RELAY_PID $SIP_PID; do taskset -a -cp 0 "$p" >/dev/null || die "taskset failed"; done
    pin_gen=(taskset -c 1)
  fi
  local ans_user=(--user uas --password uas)
  [ "$SIDE" = direct ] && ans_user=()
  "${pin_gen[@]}" "$LOADGEN" answer --server "$TARGET" --listen "127.0.0.1:$UAS_PORT" "${ans_user[@]}" \
    --max-calls $(( n + 10 )) --duration $(( MEDIA_SECS + RAMP_SECS + 120 )) $LG_TE >"$d/answer.out" 2>"$d/answer.err" &
  local ans_pid=$! i
  PIDS+=("$ans_pid")
  for i in $(seq 1 50); do grep -q '^READY\|^REGISTER_FAILED' "$d/answer.out" && break; sleep 0.2; done
  if [ "$SIDE" = direct ]; then grep -q '^READY' "$d/answer.out" || echo "# note: the answerer is not ready: $(cat "$d/answer.out")"
  else grep -q 'registered=uas' "$d/answer.out" || echo "# note: the answerer did not register: $(cat "$d/answer.out")"; fi
  sleep 0.5
  local c0 c1 drops0 drops1 c0b c1b
  read -r c0 c1 < <(relay_counts)
  drops0=$(udp_rcvbuf_errors)
  local rate; rate=$(awk -v n="$n" -v r="$RAMP_SECS" 'BEGIN{x = n / r; if (x < 1) x = 1; printf "%g", x}')
  "${pin_gen[@]}" "$LOADGEN" call --server "$TARGET" --calls "$n" --rate "$rate" --hold "$MEDIA_SECS" --to uas \
    --users-file "$OUT/lg_users.csv" --codec pcma --probe-every 50 --label "$SIDE-$label" $LG_TE \
    >"$d/loadgen.out" 2>"$d/loadgen.err" &
  local lg_pid=$!
  sleep $(( RAMP_SECS + 2 ))
  local r0 k0 a0 u0 r1 k1 a1 u1 w0 w1 all0 all1 sess
  r0=$(ticks $RELAY_PID); k0=$( [ -n "$SIP_PID" ] && ticks $SIP_PID || echo 0)
  a0=$(ticks "$lg_pid"); u0=$(ticks "$ans_pid")
  all0=$(awk '/^cpu /{print $2+$3+$4+$7+$8; exit}' /proc/stat)
  local cs0 cs1; cs0=$(ctx_switches $RELAY_PID)
  w0=$(date +%s.%N)
  [ "${PERF:-0}" = 1 ] && { perf record -q -e cpu-clock -g -p "$(echo $RELAY_PID | tr ' ' ,)" -o "$d/perf.data" \
      -- sleep "$WINDOW_SECS" >"$d/perf.log" 2>&1 & }
  sleep "$WINDOW_SECS"
  cs1=$(ctx_switches $RELAY_PID)
  r1=$(ticks $RELAY_PID); k1=$( [ -n "$SIP_PID" ] && ticks $SIP_PID || echo 0)
  a1=$(ticks "$lg_pid"); u1=$(ticks "$ans_pid")
  all1=$(awk '/^cpu /{print $2+$3+$4+$7+$8; exit}' /proc/stat)
  w1=$(date +%s.%N)
  sess=$(cur_sessions)
  local sockdrops; sockdrops=$(relay_drops $RELAY_PID)
  local wall; wall=$(awk -v a="$w0" -v b="$w1" 'BEGIN{printf "%.2f", b - a}')
  wait "$lg_pid"
  sleep 2
  read -r c0b c1b < <(relay_counts)
  drops1=$(udp_rcvbuf_errors)
  kill -TERM "$ans_pid" 2>/dev/null; wait "$ans_pid" 2>/dev/null
  local lg ans; lg=$(grep '^SUMMARY' "$d/loadgen.out" | tail -1); ans=$(grep '^SUMMARY' "$d/answer.out" | tail -1)
  local ok failed sent echoed e2e rtt50 rtt99
  ok=$(field established "$lg"); failed=$(field failed "$lg"); sent=$(field rtp_sent "$lg")
  echoed=$(field rtp_echoed "$ans"); e2e=$(field loss_pct "$lg")
  rtt50=$(echo "$lg" | sed -n 's/.*echo_rtt_ms p50=\([0-9.]*\).*/\1/p'); rtt99=$(echo "$lg" | sed -n 's/.*echo_rtt_ms p50=[0-9.]* p99=\([0-9.]*\).*/\1/p')
  # the kernel-stamped round trip minus the callee's turnaround (µs), and that turnaround
  local net50 net99 net999 ta50 ta99
  net50=$(echo "$lg" | sed -n 's/.* net_rtt_us p50=\([0-9]*\).*/\1/p'); net99=$(echo "$lg" | sed -n 's/.* net_rtt_us p50=[0-9]* p99=\([0-9]*\).*/\1/p')
  net999=$(echo "$lg" | sed -n 's/.* net_rtt_us p50=[0-9]* p99=[0-9]* p999=\([0-9]*\).*/\1/p')
  ta50=$(echo "$lg" | sed -n 's/.* reflector_turnaround_us p50=\([0-9]*\).*/\1/p'); ta99=$(echo "$lg" | sed -n 's/.* reflector_turnaround_us p50=[0-9]* p99=\([0-9]*\).*/\1/p')
  local relay_cpu sip_cpu uac_cpu uas_cpu machine_cpu
  relay_cpu=$(cpu_pct $((r1 - r0)) "$wall"); sip_cpu=$(cpu_pct $((k1 - k0)) "$wall")
  uac_cpu=$(cpu_pct $((a1 - a0)) "$wall"); uas_cpu=$(cpu_pct $((u1 - u0)) "$wall")
  machine_cpu=$(cpu_pct $((all1 - all0)) "$wall")
  # What the relay had to forward: every packet the caller sent plus every echo.
  local expected=$(( ${sent:-0} + ${echoed:-0} ))
  local rin=$(( ${c0b:-0} - ${c0:-0} )) rout=$(( ${c1b:-0} - ${c1:-0} ))
  local loss; loss=$(awk -v e="$expected" -v o="$rout" 'BEGIN{ if (e > 0) printf "%.4f", 100 * (e - o) / e; else print "na" }')
  local per100; per100=$(awk -v c="$relay_cpu" -v n="$n" 'BEGIN{printf "%.1f", c * 100 / n}')
  local percall; percall=$(awk -v c="$relay_cpu" -v n="$n" 'BEGIN{printf "%.2f", c / n}')
  local pps; pps=$(awk -v o="$rout" -v s="$MEDIA_SECS" 'BEGIN{printf "%.0f", o / s}')
  local us50 us99
  us50=$(awk -v m="${rtt50:-0}" 'BEGIN{printf "%.0f", m * 1000}'); us99=$(awk -v m="${rtt99:-0}" 'BEGIN{printf "%.0f", m * 1000}')
  if [ "$SIDE" = direct ]; then  # nothing relays: no relay loss, rate or CPU share
    loss=na; pps=na; per100=na; percall=na; sess=na
  fi
  LINE="$SIDE $label calls=$n ok=$ok failed=$failed sessions_in_window=$sess wall_s=$wall cpu_relay=${relay_cpu}% cpu_relay_per_100_calls=${per100}% cpu_relay_per_call=${percall}% cpu_sip=${sip_cpu}% cpu_uac=${uac_cpu}% cpu_uas=${uas_cpu}% cpu_machine=${machine_cpu}% relayed_in=$rin relayed_out=$rout expected=$expected loss_pct=$loss pps_relayed=$pps relay_sock_drops=${sockdrops% *} relay_sockets=${sockdrops#* } udp_drops_all=$((drops1 - drops0)) relay_ctx_switches_per_s=$(awk -v a="$cs0" -v b="$cs1" -v w="$wall" 'BEGIN{printf "%.0f", (b - a) / w}') gen=loadgen load_before=$load_before e2e_loss_pct=$e2e relayed_rtt_p50_us=$us50 relayed_rtt_p99_us=$us99 relayed_net_rtt_p50_us=${net50:-na} relayed_net_rtt_p99_us=${net99:-na} relayed_net_rtt_p999_us=${net999:-na} reflector_turnaround_p50_us=${ta50:-na} reflector_turnaround_p99_us=${ta99:-na}"
  echo "$LINE" | tee -a "$OUT/lines.log"
  echo "  loadgen: $lg" | tee -a "$OUT/lines-loadgen.log"
  echo "  answer: $ans" | tee -a "$OUT/lines-loadgen.log"
  sleep 4   # session teardown
}

# --- Switchboard ---------------------------------------------------------------
run_switchboard() {
  SIDE=switchboard
  read -r UAS_PORT PUAS_PORT < <(free_ports 2)   # callee contacts: the same for every run
  if [ "${NO_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && nice -n 19 cargo build --release -p switchboard -p switchboard-loadgen 2>&1 | tail -1) || die "build failed"
  fi
  local bin=$ROOT/target/release/switchboard
  echo "# $("$bin" --version) commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . ':!bench' || echo ' +uncommitted changes')" | tee -a "$OUT/header.txt"
  SB_SERVE_ARGS="--rtp-ports $RTP_RANGE ${SB_EXTRA_ARGS:-}" sb_start "$bin" "$TMP/sb"; PIDS+=("$SB_PID")
  TARGET=$SB_SIP; RELAY_PID=$SB_PID; SIP_PID=""
  local n
  for n in $CALLS; do
    if [ "$GEN" = loadgen ]; then one_run_loadgen "relay-$n" "$n"
    else one_run "relay-$n" "$n" "$LOAD_UAS" "$OUT/uac_load.xml" 1 $(( RAMP_SECS + 2 )) "$WINDOW_SECS"; fi
  done
  for n in $TRANSCODE; do
    local r=$(( n < 10 ? n : 10 ))
    RAMP_SECS=$(( (n + r - 1) / r )) one_run "transcode-$n" "$n" "$HERE/scenarios/uas_call_opus.xml" "$OUT/uac_tc.xml" 0 \
      $(( (n + r - 1) / r + 3 )) "$TC_SECS"
  done
  curl -s "http://$SB_HTTP/metrics" | grep -v '^#' > "$OUT/sb_metrics.txt"
  stop_pid "$SB_PID"
}

# --- rtpengine + Kamailio ----------------------------------------------------------
run_rtpengine() {
  SIDE=rtpengine
  read -r UAS_PORT PUAS_PORT < <(free_ports 2)
  local ng kport
  read -r ng RTPE_CLI kport < <(free_ports 3)
  RELAY_PID=$("$HERE/kamailio/rtpengine.sh" "$ng" "$RTPE_CLI" "$RTP_LO" "$RTP_HI" "$TMP/rtpe" "${RTPE_THREADS:-2}") \
    || { echo "rtpengine failed"; return 1; }
  PIDS+=("$RELAY_PID")
  SIP_PID=$(KAM_RTPE_NG=127.0.0.1:$ng "$HERE/kamailio/start.sh" invite_auth "$kport" "$TMP/kam") \
    || { echo "kamailio failed"; return 1; }
  PIDS+=("$SIP_PID")
  echo "# $(rtpengine --version 2>&1 | head -1) (userspace, --table=-1, ${RTPE_THREADS:-2} threads, RTPE_SCHED=${RTPE_SCHED:-default}); kamailio $(kamailio -v 2>/dev/null | head -1 | awk '{print $3}') invite_auth + WITH_RTPENGINE" | tee -a "$OUT/header.txt"
  TARGET=127.0.0.1:$kport
  local n
  for n in $CALLS; do
    if [ "$GEN" = loadgen ]; then one_run_loadgen "relay-$n" "$n"
    else one_run "relay-$n" "$n" "$LOAD_UAS" "$OUT/uac_load.xml" 1 $(( RAMP_SECS + 2 )) "$WINDOW_SECS"; fi
  done
  stop_pid "$SIP_PID"; stop_pid "$RELAY_PID"
}

# --- direct: sb-loadgen call straight to sb-loadgen answer, no relay -------------
run_direct() {
  SIDE=direct
  read -r UAS_PORT PUAS_PORT < <(free_ports 2)
  TARGET=127.0.0.1:$UAS_PORT; RELAY_PID=""; SIP_PID=""
  echo "# direct: sb-loadgen call -> sb-loadgen answer at $TARGET (no relay, no REGISTER, no auth)" | tee -a "$OUT/header.txt"
  local n
  for n in $CALLS; do one_run_loadgen "relay-$n" "$n"; done
}

case $WHICH in direct|all) [ "$GEN" = loadgen ] || die "$WHICH: the direct side needs GEN=loadgen" ;; esac
if [ "$GEN" = loadgen ] && [ "${NO_BUILD:-0}" != 1 ] && [ "$WHICH" != switchboard ] && [ "$WHICH" != both ] && [ "$WHICH" != all ]; then
  # run_switchboard builds both; the other sides need only the generator
  (cd "$ROOT" && nice -n 19 cargo build --release -p switchboard-loadgen 2>&1 | tail -1) || die "build failed"
fi
[ "$GEN" != loadgen ] || [ -x "$LOADGEN" ] || [ "$WHICH" = switchboard ] || [ "$WHICH" = both ] || [ "$WHICH" = all ] \
  || die "$LOADGEN missing (cargo build --release -p switchboard-loadgen)"

{
echo "# media $(date -u +%Y-%m-%dT%H:%MZ) host=$(hostname) cpus=$(nproc) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# kernel $(uname -r); $(sipp -v 2>/dev/null | grep -o 'SIPp v[0-9.]*' | head -1); GEN=$GEN WHICH=$WHICH PIN=${PIN:-0} RTPE_SCHED=${RTPE_SCHED:-default} SB_EXTRA_ARGS=${SB_EXTRA_ARGS:-none} TE=${TE:-0} ECHO_BUF=${ECHO_BUF:-default} CALLS=$CALLS MEDIA_SECS=$MEDIA_SECS RAMP_SECS=$RAMP_SECS WINDOW_SECS=$WINDOW_SECS TRANSCODE=$TRANSCODE TC_SECS=$TC_SECS ports=$RTP_RANGE"
} | tee "$OUT/header.txt"
case $WHICH in direct|all) run_direct ;; esac
case $WHICH in switchboard|both|all) run_switchboard ;; esac
case $WHICH in rtpengine|both|all) run_rtpengine ;; esac

echo
echo "==== media SUMMARY ($OUT) ===="
python3 "$HERE/tools/media_summary.py" "$OUT/lines.log" | tee "$OUT/summary.txt"
