#!/usr/bin/env bash
# Resident memory per 10,000 registrations: REGISTER (digest auth, shared
# reg_auth.xml) each of USERS (10000) distinct bench users once, at MEM_RATE/s
# (default 2000), and compare the server's memory before and after:
#   rss  : VmRSS (/proc/PID/status) summed over the server's process tree
#   pss  : Pss (/proc/PID/smaps_rollup) summed over the tree; equals RSS for a
#          single-process server, and counts shared memory once for a
#          multi-process one (Kamailio's usrloc lives in shared memory)
# measured right after the last 200 ("now") and again after MEM_SETTLE s
# (default 35: > 32 s, the UDP non-INVITE server transaction's Timer J, so
# finished transactions are gone and only the bindings remain: "settled").
# Freed heap is not returned to the OS, so "now" and "settled" both include
# the peak of live transactions (2 per registration, held 32 s by Timer J).
# Figures are scaled to per 10,000 successful registrations.
# Run it against a freshly started server: users already registered would
# only refresh their bindings.
# usage: memory.sh HOST:PORT SERVER_PID
# env: USERS, MEM_RATE, MEM_SETTLE, RESULTS
source "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || die "usage: $0 HOST:PORT SERVER_PID"
parse_target "$1"; SPID=$2
kill -0 "$SPID" 2>/dev/null || die "no process $SPID"
python3 "$TOOLS/gen_users.py" "$USERS" --csv "$RESULTS/users.csv"
rss_tree() { local p s=0 v; for p in $(pid_tree "$1"); do v=$(rss_kb "$p" 2>/dev/null); s=$((s + ${v:-0})); done; echo "$s"; }
echo "# memory target=$THOST:$TPORT pid=$SPID users=$USERS rate=${MEM_RATE:-2000} results=$RESULTS"
echo "# load: $(uptime)"
sleep 1
r0=$(rss_tree "$SPID"); p0=$(pss_kb "$SPID")
d=$RESULTS/memory; mkdir -p "$d"
( cd "$d" && timeout -k 10 $(( USERS / ${MEM_RATE:-2000} + 60 )) sipp "$THOST:$TPORT" -i "$LOCAL_IP" -p 0 \
    -sf "$SCEN/reg_auth.xml" -inf "$RESULTS/users.csv" -r "${MEM_RATE:-2000}" -m "$USERS" \
    -nostdin -trace_stat -stf stat.csv -fd 1 -trace_err -error_file errors.log \
    -default_behaviors all,-bye >sipp.out 2>&1 ) || true
st=$(python3 "$TOOLS/sippstat.py" "$d/stat.csv" "$USERS" 2>/dev/null || echo "ok=0 failed=0")
ok=$(field ok "$st"); failed=$(field failed "$st")
sleep 1
r1=$(rss_tree "$SPID"); p1=$(pss_kb "$SPID")
sleep "${MEM_SETTLE:-35}"
r2=$(rss_tree "$SPID"); p2=$(pss_kb "$SPID")
# refresh pass (MEM_REFRESH=1, default): the same users REGISTER again; the
# bindings are only refreshed, so growth here would be a leak, not bindings
rf=""
if [ "${MEM_REFRESH:-1}" = 1 ]; then
  ( cd "$d" && timeout -k 10 $(( USERS / ${MEM_RATE:-2000} + 60 )) sipp "$THOST:$TPORT" -i "$LOCAL_IP" -p 0 \
      -sf "$SCEN/reg_auth.xml" -inf "$RESULTS/users.csv" -r "${MEM_RATE:-2000}" -m "$USERS" \
      -nostdin -trace_stat -stf stat2.csv -fd 1 -trace_err -error_file errors2.log \
      -default_behaviors all,-bye >sipp2.out 2>&1 ) || true
  st2=$(python3 "$TOOLS/sippstat.py" "$d/stat2.csv" "$USERS" 2>/dev/null || echo "ok=0 failed=0")
  sleep 1
  r3=$(rss_tree "$SPID"); p3=$(pss_kb "$SPID")
  rf=" refresh_ok=$(field ok "$st2") refresh_failed=$(field failed "$st2") rss_growth_on_refresh_mb=$(awk -v a="$r2" -v b="$r3" 'BEGIN{printf "%.1f", (b - a) / 1024}')"
  echo "  refresh $st2 rss_kb=$r3 pss_kb=$p3"
fi
per10k() { awk -v a="$1" -v b="$2" -v n="${ok:-0}" 'BEGIN{ if (n > 0) printf "%.1f", (b - a) / 1024 * 10000 / n; else print "na" }'; }
echo "  memory regs_ok=$ok regs_failed=$failed rss_kb before=$r0 now=$r1 settled=$r2 pss_kb before=$p0 now=$p1 settled=$p2"
echo "SUMMARY memory_per_10k_regs target=$THOST:$TPORT regs_ok=$ok failed=$failed rss_before_mb=$(awk -v a="$r0" 'BEGIN{printf "%.1f", a/1024}') rss_delta_mb_now=$(per10k "$r0" "$r1") rss_delta_mb_settled=$(per10k "$r0" "$r2") pss_delta_mb_now=$(per10k "$p0" "$p1") pss_delta_mb_settled=$(per10k "$p0" "$p2") (MiB per 10,000 registrations)$rf"
