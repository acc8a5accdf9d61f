#!/usr/bin/env bash
# Start the shared benchmark Kamailio (../../shared/bench/kamailio/kamailio.cfg,
# stateful proxy with tm, usrloc in memory, 2 workers) on a loopback port of
# our choosing, with its own work dir and control socket, so that it runs
# beside other jobs. Prints the main PID.
# usage: kamailio/start.sh MODE PORT WORK_DIR [UAS_URI]
#   MODE plain        : no authentication (the shared harness's call setup)
#        auth         : digest auth on REGISTER (WITH_AUTH, users of gen_users.py)
#        invite_auth  : auth on REGISTER and proxy auth (407) on initial INVITEs,
#                       From user = authenticated user, like Switchboard; the
#                       only change to the shared config is that block
#   UAS_URI: where INVITEs for user "uas" go when it has no registration
# env KAM_RTPE_NG=HOST:PORT: anchor media through rtpengine (the shared
#   config's WITH_RTPENGINE, its ng socket moved to HOST:PORT)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../common.sh" >/dev/null
MODE=$1; PORT=$2; W=$3; UAS=${4:-}
CHILDREN=${KAM_CHILDREN:-2}
mkdir -p "$W/db"
# control socket in the work dir; optional INVITE authentication block
sed -e "s#unix:/tmp/kamailio_bench_ctl#unix:$W/ctl#" \
    -e "s#udp:127.0.0.1:2223#udp:${KAM_RTPE_NG:-127.0.0.1:2223}#" \
    -e '/^\tif (is_method("INVITE")) {$/{
i\
#!ifdef WITH_INVITE_AUTH\
\tif (is_method("INVITE")) {\
\t\tif (!pv_proxy_authenticate("$fd", "$sht(subs=>$fU)", "0")) {\
\t\t\tproxy_challenge("$fd", "0");\
\t\t\texit;\
\t\t}\
\t\tconsume_credentials();\
\t}\
#!endif
}' "$SHARED_BENCH/kamailio/kamailio.cfg" > "$W/kamailio.cfg"
DEFS=(-A "DBURL=\"text://$W/db\"")
if [ "$MODE" != plain ]; then
  DEFS+=(-A WITH_AUTH)
  python3 "$SHARED_BENCH/tools/gen_users.py" "${USERS:-10000}" --htable "$W/db/subscriber_ht"
  n=$(( $(wc -l < "$W/db/subscriber_ht") ))
  echo "$n:uas:0:0:uas:0" >> "$W/db/subscriber_ht"
  printf 'table_name(string) table_version(int)\nsubscriber_ht:2\n' > "$W/db/version"
fi
[ "$MODE" = invite_auth ] && DEFS+=(-A WITH_INVITE_AUTH)
[ -n "${KAM_RTPE_NG:-}" ] && DEFS+=(-A WITH_RTPENGINE)
[ -n "$UAS" ] && DEFS+=(-A "UAS_TARGET=\"$UAS\"")
kamailio -DD -E -f "$W/kamailio.cfg" -L /usr/lib/x86_64-linux-gnu/kamailio/modules \
  -l "udp:127.0.0.1:$PORT" -n "$CHILDREN" -m 512 -M 16 -Y "$W" \
  "${DEFS[@]}" >"$W/kamailio.log" 2>&1 &
PID=$!
for _ in $(seq 1 30); do
  sleep 0.2
  kill -0 "$PID" 2>/dev/null || { tail -20 "$W/kamailio.log" >&2; exit 1; }
  grep -q "INFO: <core>.*main.c.*\|listening on" "$W/kamailio.log" 2>/dev/null && break
done
sleep 1
kill -0 "$PID" 2>/dev/null || { tail -20 "$W/kamailio.log" >&2; exit 1; }
echo "$PID"
