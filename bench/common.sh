# Helpers for the Switchboard benchmark scripts. Source it; do not run it.
# It sources the shared SIPp harness (../../shared/bench/lib.sh, or
# $SHARED_BENCH/lib.sh): run_step, find_max, ticks, median_spread, field, ...
# and adds free-port picking, user files and server start/stop helpers.
SB_BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SB_ROOT=$(dirname "$SB_BENCH")
SHARED_BENCH=${SHARED_BENCH:-$(cd "$SB_ROOT/../shared/bench" 2>/dev/null && pwd || echo /work/shared/bench)}
[ -f "$SHARED_BENCH/lib.sh" ] || { echo "error: shared harness not found (set SHARED_BENCH)" >&2; exit 1; }
RESULTS=${RESULTS:-$SB_BENCH/results/$(date +%Y%m%d-%H%M%S)-$$}
# shellcheck source=/dev/null
source "$SHARED_BENCH/lib.sh"
SB_SCEN=$SB_BENCH/scenarios
USERS=${USERS:-10000}

# free_ports N -> N distinct loopback ports, each free for UDP and TCP now,
# with port+2 free too (SIPp binds its media port and media port + 2).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
n, out, seen = int(sys.argv[1]), [], set()
def free(p):
    try:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET, kind); s.bind(('127.0.0.1', p)); s.close()
        return True
    except OSError:
        return False
while len(out) < n:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]; s.close()
    if p + 2 < 65536 and not ({p, p + 1, p + 2} & seen) and all(free(q) for q in (p, p + 1, p + 2)):
        out.append(p); seen |= {p, p + 1, p + 2}
print(' '.join(map(str, out)))
PY
}

# users_files DIR: DIR/users.csv (SIPp injection, the shared generator's
# users 1000000+i / pw<i>) and DIR/import.csv (switchboard user import, the
# same users plus the callee "uas" / "uas").
users_files() {
  python3 "$TOOLS/gen_users.py" "$USERS" --csv "$1/users.csv"
  { python3 - "$USERS" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print('%d,pw%d' % (1000000 + i, i))
PY
    echo "uas,uas"; } > "$1/import.csv"
}

# rss_kb PID -> VmRSS of PID in kB
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }

# pss_kb PID -> proportional set size of PID and its descendants, in kB
# (shared pages split between the processes that map them: for a
# multi-process server such as Kamailio this is its real footprint)
pss_kb() {
  local p sum=0 v
  for p in $(pid_tree "$1"); do
    v=$(awk '/^Pss:/{print $2; exit}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}

# register_callee HOST PORT UAS_PORT: REGISTER user "uas" (password "uas")
# with Contact sip:uas@LOCAL_IP:UAS_PORT, sent FROM UAS_PORT (Switchboard keeps
# the source address of a registration, so it must be the UAS's own port).
# Run it before the UAS binds the port. Non-fatal.
register_callee() {
  if timeout 15 sipp "$1:$2" -sf "$SCEN/reg_one.xml" -s uas \
       -key contact_uri "sip:uas@$LOCAL_IP:$3" -au uas -ap uas \
       -i "$LOCAL_IP" -p "$3" -m 1 -nostdin -timeout 10s \
       >"$RESULTS/reg_callee.out" 2>&1; then
    echo "# registered callee sip:uas@$LOCAL_IP:$3 at $1:$2 (from port $3)"
  else
    echo "# note: REGISTER of the callee was not accepted (static routing assumed)"
  fi
}

# sb_start BIN DATA_DIR: import the bench users into a fresh data directory and
# start `switchboard serve` on free loopback ports (log level SWITCHBOARD_LOG,
# default warn: info logs every call; extra `serve` arguments in SB_SERVE_ARGS,
# e.g. "--rtp-ports 46000-48999"). Sets SB_PID, SB_SIP (host:port), SB_HTTP.
sb_start() {
  local bin=$1 dir=$2 sip http
  mkdir -p "$dir"
  users_files "$dir"
  "$bin" --data-dir "$dir" --domain bench.local user import "$dir/import.csv" >"$dir/import.log" 2>&1 \
    || { tail "$dir/import.log" >&2; die "user import failed"; }
  read -r sip http < <(free_ports 2)
  SWITCHBOARD_LOG=${SWITCHBOARD_LOG:-warn} "$bin" --data-dir "$dir" --domain bench.local serve \
    --sip-listen "127.0.0.1:$sip" --http-listen "127.0.0.1:$http" ${SB_SERVE_ARGS:-} >"$dir/server.log" 2>&1 &
  SB_PID=$!; SB_SIP=127.0.0.1:$sip; SB_HTTP=127.0.0.1:$http
  local i
  for i in $(seq 1 100); do
    curl -sf "http://$SB_HTTP/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$SB_PID" 2>/dev/null || break
    sleep 0.1
  done
  tail "$dir/server.log" >&2; die "switchboard did not become healthy"
}

# stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL
stop_pid() {
  local p=${1:-} i
  [ -n "$p" ] || return 0
  kill "$p" 2>/dev/null || return 0
  for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$p" 2>/dev/null || true
}

# Every load step (the shared run_step) also reports the server CPU seconds it
# used per 1,000 completed calls/registrations: cpu_s_per_1k (process tree of
# SERVER_PID, all threads, from /proc ticks over the whole SIPp run).
eval "$(declare -f run_step | sed '1s/^run_step/shared_run_step/')"
run_step() {
  local k0=0 k1=0 okc per=na
  [ -n "$SERVER_PID" ] && k0=$(ticks $SERVER_PID)
  shared_run_step "$@"
  if [ -n "$SERVER_PID" ]; then
    k1=$(ticks $SERVER_PID)
    okc=$(field ok "$STEP_LINE")
    per=$(awk -v t=$((k1 - k0)) -v n="${okc:-0}" -v hz="$CLK_TCK" \
      'BEGIN{ if (n > 0) printf "%.3f", 1000 * t / hz / n; else print "na" }')
  fi
  STEP_LINE="$STEP_LINE cpu_s_per_1k=$per"
}

# wait_load: wait (up to LOAD_WAIT=600 s) until the 1-minute load average is
# below LOAD_MAX (1.0); the machine is shared.
wait_load() {
  local max=${LOAD_MAX:-1.0} waited=0 l
  while :; do
    l=$(cut -d' ' -f1 /proc/loadavg)
    awk -v l="$l" -v m="$max" 'BEGIN{exit !(l < m)}' && break
    [ "$waited" -ge "${LOAD_WAIT:-600}" ] && { echo "# load still $l after ${waited}s: running anyway"; break; }
    [ "$waited" = 0 ] && echo "# load $l >= $max: waiting (up to ${LOAD_WAIT:-600}s)"
    sleep 5; waited=$((waited + 5))
  done
  echo "# load: $(uptime)"
}
