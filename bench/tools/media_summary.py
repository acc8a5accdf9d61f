#!/usr/bin/env python3
"""Summarise media.sh's per-run lines (lines.log): one SUMMARY line per side
and load, a side-by-side table of the relayed loads, and the transcoded
calls' CPU per call.

GEN=loadgen lines carry the probe's net round trip (kernel stamps, the
callee's turnaround subtracted). With a `direct` line (no relay) for the same
call count, in the same lines.log or in the lines.log(s) named by the
DIRECT_LINES environment variable (space-separated), a relay's added latency
per pass = (relayed net RTT - direct net RTT) / 2, at p50 and at p99.

usage: media_summary.py lines.log"""
import os
import re
import sys


def read_lines(path, into):
    for line in open(path):
        parts = line.split()
        if len(parts) < 3 or line.startswith('#'):
            continue
        side, label = parts[0], parts[1]
        into[(side, label)] = dict(re.findall(r'(\w+)=(\S+)', line))


runs = {}
read_lines(sys.argv[1], runs)
# direct baselines by call count: this file's own first, then DIRECT_LINES
direct = {}
for path in os.environ.get('DIRECT_LINES', '').split():
    extra = {}
    read_lines(path, extra)
    direct.update({kv.get('calls'): kv for (side, _), kv in extra.items() if side == 'direct'})
direct.update({kv.get('calls'): kv for (side, _), kv in runs.items() if side == 'direct'})


def g(kv, k, default='na'):
    return kv.get(k, default).rstrip('%')


def num(kv, k):
    try:
        return float(kv.get(k, ''))
    except ValueError:
        return None


def add_over_direct(kv):
    """Sets added_rtt_{p50,p99}_us = relayed - direct net RTT and added_per_pass_* = half
    of it, when a direct line for the same call count exists."""
    d = direct.get(kv.get('calls'))
    if d is None:
        return
    for q in ('p50', 'p99'):
        r, b = num(kv, 'relayed_net_rtt_%s_us' % q), num(d, 'relayed_net_rtt_%s_us' % q)
        if r is not None and b is not None:
            kv['added_rtt_%s_us' % q] = '%.0f' % (r - b)
            kv['added_per_pass_%s_us' % q] = '%.0f' % ((r - b) / 2)


for (side, label), kv in runs.items():
    if kv.get('gen') == 'loadgen' and side != 'direct':
        add_over_direct(kv)


for (side, label), kv in runs.items():
    if side == 'direct':
        # sb-loadgen straight to sb-loadgen: the baseline of the net round trip
        print('SUMMARY media_direct gen=loadgen calls=%s ok=%s failed=%s e2e_loss_pct=%s '
              'net_rtt_us p50=%s p99=%s p999=%s reflector_turnaround_us p50=%s p99=%s '
              'rtt_us p50=%s p99=%s cpu_loadgen_caller=%s%% cpu_loadgen_callee=%s%% cpu_machine=%s%%' % (
                  g(kv, 'calls'), g(kv, 'ok'), g(kv, 'failed'), g(kv, 'e2e_loss_pct'),
                  g(kv, 'relayed_net_rtt_p50_us'), g(kv, 'relayed_net_rtt_p99_us'),
                  g(kv, 'relayed_net_rtt_p999_us'), g(kv, 'reflector_turnaround_p50_us'),
                  g(kv, 'reflector_turnaround_p99_us'), g(kv, 'relayed_rtt_p50_us'),
                  g(kv, 'relayed_rtt_p99_us'), g(kv, 'cpu_uac'), g(kv, 'cpu_uas'), g(kv, 'cpu_machine')))
    elif label.startswith('relay-') and kv.get('gen') == 'loadgen':
        # sb-loadgen on both ends: the round trip through the relay (two passes plus the
        # callee's turnaround, nothing subtracted) and loss end to end by sequence.
        print('SUMMARY media_%s gen=loadgen calls=%s ok=%s failed=%s cpu_relay=%s%% cpu_per_100_calls=%s%% '
              'cpu_sip=%s%% pps_relayed=%s loss_pct=%s e2e_loss_pct=%s relay_sock_drops=%s '
              'relayed_rtt_us p50=%s p99=%s relayed_net_rtt_us p50=%s p99=%s p999=%s '
              'added_per_pass_us p50=%s p99=%s%s '
              'cpu_loadgen_caller=%s%% cpu_loadgen_callee=%s%% cpu_machine=%s%%' % (
                  side, g(kv, 'calls'), g(kv, 'ok'), g(kv, 'failed'), g(kv, 'cpu_relay'),
                  g(kv, 'cpu_relay_per_100_calls'), g(kv, 'cpu_sip'), g(kv, 'pps_relayed'),
                  g(kv, 'loss_pct'), g(kv, 'e2e_loss_pct'), g(kv, 'relay_sock_drops'),
                  g(kv, 'relayed_rtt_p50_us'), g(kv, 'relayed_rtt_p99_us'),
                  g(kv, 'relayed_net_rtt_p50_us'), g(kv, 'relayed_net_rtt_p99_us'),
                  g(kv, 'relayed_net_rtt_p999_us'), g(kv, 'added_per_pass_p50_us'),
                  g(kv, 'added_per_pass_p99_us'),
                  '' if kv.get('added_per_pass_p50_us') else ' (no direct line for %s calls)' % g(kv, 'calls'),
                  g(kv, 'cpu_uac'), g(kv, 'cpu_uas'), g(kv, 'cpu_machine')))
    elif label.startswith('relay-'):
        print('SUMMARY media_%s calls=%s ok=%s failed=%s cpu_relay=%s%% cpu_per_100_calls=%s%% '
              'cpu_sip=%s%% pps_relayed=%s loss_pct=%s relay_sock_drops=%s '
              'added_per_pass_us p50=%s p99=%s added_rtt_us p50=%s p99=%s probe_back=%s/%s' % (
                  side, g(kv, 'calls'), g(kv, 'ok'), g(kv, 'failed'), g(kv, 'cpu_relay'),
                  g(kv, 'cpu_relay_per_100_calls'), g(kv, 'cpu_sip'), g(kv, 'pps_relayed'),
                  g(kv, 'loss_pct'), g(kv, 'relay_sock_drops'), g(kv, 'added_per_pass_p50_us'),
                  g(kv, 'added_per_pass_p99_us'), g(kv, 'added_rtt_p50_us'), g(kv, 'added_rtt_p99_us'),
                  g(kv, 'relayed_back'), g(kv, 'sent')))
    elif label.startswith('transcode-'):
        print('SUMMARY media_%s_transcode_pcmu_opus calls=%s ok=%s cpu_server=%s%% cpu_per_call=%s%% '
              'loss_pct=%s' % (side, g(kv, 'calls'), g(kv, 'ok'), g(kv, 'cpu_relay'),
                               g(kv, 'cpu_relay_per_call'), g(kv, 'loss_pct')))

loads = sorted({l for (_, l) in runs if l.startswith('relay-')}, key=lambda l: int(l.split('-')[1]))
if loads:
    print()
    # GEN=loadgen: "net RTT" is the probe's kernel-stamped round trip minus the callee's
    # turnaround; "added per pass" is (relayed - direct net RTT) / 2 for loadgen lines
    print('| calls | side | pps relayed | CPU % (relay process) | CPU % per 100 calls | loss % | kernel drops | added p50/p99 per pass (us) | added p50/p99 RTT (us) | net RTT p50/p99 (us) |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for l in loads:
        for side in ('direct', 'switchboard', 'rtpengine'):
            kv = runs.get((side, l))
            if not kv:
                continue
            print('| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s / %s |' % (
                l.split('-')[1], side, g(kv, 'pps_relayed'), g(kv, 'cpu_relay'),
                g(kv, 'cpu_relay_per_100_calls'), g(kv, 'loss_pct'), g(kv, 'relay_sock_drops'),
                g(kv, 'added_per_pass_p50_us'), g(kv, 'added_per_pass_p99_us'),
                g(kv, 'added_rtt_p50_us'), g(kv, 'added_rtt_p99_us'),
                g(kv, 'relayed_net_rtt_p50_us'), g(kv, 'relayed_net_rtt_p99_us')))
