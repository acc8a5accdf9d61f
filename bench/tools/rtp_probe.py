#!/usr/bin/env python3
"""Timestamped RTP probe: added latency of a media relay.

The probe owns three UDP sockets on 127.0.0.1:
  A     the media address of the probe call's caller (its SDP, set by SIPp
        -key probe_a in scenarios/uac_probe.xml);
  E     the echo: the media address of the probe call's callee (SDP of
        scenarios/uas_probe.xml, -key probe_e); every datagram E receives is
        sent straight back to its source;
  D     the direct sender.
Once the relay's address for the caller leg is known (SIPp logs the c=/m= of
the 200 OK to --sdp-log as "SBMEDIA <ip> <port>"), every --interval the probe
sends one RTP packet (PT --pt, 160-byte payload starting with the send time in
ns) from A to the relay, which forwards it to the callee leg (E), which echoes
it back through the relay to A: the "relayed" round trip, two passes through
the relay; and at the same moment one packet from D to E, echoed straight
back to D: the "direct" round trip (same sockets, same Python loop, same
machine load, no relay). Everything runs in one select() loop.
Output (one line, key=value): samples, lost packets each way, round-trip
p50/p99/max of both paths in microseconds, and the added latency
added_p50_us = relayed p50 - direct p50 (likewise p99), plus the per-pass
figure (half of it: one trip through the relay).
usage: rtp_probe.py --a-port A --e-port E --d-port D --sdp-log FILE
                    [--seconds 15] [--interval 0.02] [--pt 8] [--wait 40]
"""
import argparse
import os
import re
import select
import socket
import struct
import sys
import time


def pct(v, p):
    if not v:
        return float('nan')
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--a-port', type=int, required=True)
    ap.add_argument('--e-port', type=int, required=True)
    ap.add_argument('--d-port', type=int, required=True)
    ap.add_argument('--sdp-log', required=True)
    ap.add_argument('--seconds', type=float, default=15)
    ap.add_argument('--interval', type=float, default=0.02)
    ap.add_argument('--pt', type=int, default=8)
    ap.add_argument('--wait', type=float, default=40)
    a = ap.parse_args()

    def sock(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(('127.0.0.1', port))
        s.setblocking(False)
        return s
    A, E, D = sock(a.a_port), sock(a.e_port), sock(a.d_port)
    e_addr = ('127.0.0.1', a.e_port)

    relay = None
    deadline = time.monotonic() + a.wait
    while relay is None:
        # echo even while waiting (the relay may already send to E)
        r, _, _ = select.select([E, A, D], [], [], 0.05)
        for s in r:
            try:
                data, src = s.recvfrom(2048)
            except BlockingIOError:
                continue
            if s is E:
                E.sendto(data, src)
        if os.path.exists(a.sdp_log):
            m = re.search(r'SBMEDIA (\d+\.\d+\.\d+\.\d+) (\d+)', open(a.sdp_log, errors='replace').read())
            if m:
                relay = (m.group(1), int(m.group(2)))
        if time.monotonic() > deadline:
            print('probe error=no_relay_address_in_%s' % a.sdp_log)
            return 1

    ssrc_r, ssrc_d = 0x11111111, 0x22222222
    rtt_r, rtt_d = [], []
    sent = 0
    seq = 0
    t_end = time.monotonic() + a.seconds
    nxt = time.monotonic()
    pad = b'\xd5' * 152

    def pkt(ssrc):
        return struct.pack('!BBHII', 0x80, a.pt, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) \
            + struct.pack('!Q', time.perf_counter_ns()) + pad
    drain_until = None
    while True:
        now = time.monotonic()
        if drain_until is None and now >= t_end:
            drain_until = now + 0.5
        if drain_until is not None and now >= drain_until:
            break
        if drain_until is None and now >= nxt:
            A.sendto(pkt(ssrc_r), relay)
            D.sendto(pkt(ssrc_d), e_addr)
            seq += 1
            sent += 1
            nxt += a.interval
        timeout = max(0.0, min(nxt, drain_until or nxt) - time.monotonic())
        r, _, _ = select.select([E, A, D], [], [], timeout)
        for s in r:
            while True:
                try:
                    data, src = s.recvfrom(2048)
                except BlockingIOError:
                    break
                t = time.perf_counter_ns()
                if s is E:
                    E.sendto(data, src)
                elif len(data) >= 20:
                    (t0,) = struct.unpack('!Q', data[12:20])
                    (rtt_r if s is A else rtt_d).append((t - t0) / 1000.0)
    r50, r99, d50, d99 = pct(rtt_r, 50), pct(rtt_r, 99), pct(rtt_d, 50), pct(rtt_d, 99)
    print('probe relay=%s:%d sent=%d relayed_back=%d direct_back=%d '
          'rtt_relayed_us p50=%.0f p99=%.0f max=%.0f rtt_direct_us p50=%.0f p99=%.0f max=%.0f '
          'added_rtt_p50_us=%.0f added_rtt_p99_us=%.0f added_per_pass_p50_us=%.0f added_per_pass_p99_us=%.0f'
          % (relay[0], relay[1], sent, len(rtt_r), len(rtt_d),
             r50, r99, max(rtt_r or [0]), d50, d99, max(rtt_d or [0]),
             r50 - d50, r99 - d99, (r50 - d50) / 2, (r99 - d99) / 2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
