#!/usr/bin/env python3
"""Summarise media.sh's per-run lines (lines.log): one SUMMARY line per side
and load, a side-by-side table of the relayed loads, and the transcoded
calls' CPU per call. usage: media_summary.py lines.log"""
import re
import sys

runs = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) < 3:
        continue
    side, label = parts[0], parts[1]
    kv = dict(re.findall(r'(\w+)=(\S+)', line))
    runs[(side, label)] = kv


def g(kv, k, default='na'):
    return kv.get(k, default).rstrip('%')


for (side, label), kv in runs.items():
    if label.startswith('relay-') and kv.get('gen') == 'loadgen':
        # sb-loadgen on both ends: the round trip through the relay (two passes plus the
        # callee's turnaround, nothing subtracted) and loss end to end by sequence.
        print('SUMMARY media_%s gen=loadgen calls=%s ok=%s failed=%s cpu_relay=%s%% cpu_per_100_calls=%s%% '
              'cpu_sip=%s%% pps_relayed=%s loss_pct=%s e2e_loss_pct=%s relay_sock_drops=%s '
              'relayed_rtt_us p50=%s p99=%s cpu_loadgen_caller=%s%% cpu_loadgen_callee=%s%% cpu_machine=%s%%' % (
                  side, g(kv, 'calls'), g(kv, 'ok'), g(kv, 'failed'), g(kv, 'cpu_relay'),
                  g(kv, 'cpu_relay_per_100_calls'), g(kv, 'cpu_sip'), g(kv, 'pps_relayed'),
                  g(kv, 'loss_pct'), g(kv, 'e2e_loss_pct'), g(kv, 'relay_sock_drops'),
                  g(kv, 'relayed_rtt_p50_us'), g(kv, 'relayed_rtt_p99_us'), g(kv, 'cpu_uac'),
                  g(kv, 'cpu_uas'), g(kv, 'cpu_machine')))
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
    print('| calls | side | pps relayed | CPU % (relay process) | CPU % per 100 calls | loss % | kernel drops | added p50/p99 per pass (us) | added p50/p99 RTT (us) |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for l in loads:
        for side in ('switchboard', 'rtpengine'):
            kv = runs.get((side, l))
            if not kv:
                continue
            print('| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s |' % (
                l.split('-')[1], side, g(kv, 'pps_relayed'), g(kv, 'cpu_relay'),
                g(kv, 'cpu_relay_per_100_calls'), g(kv, 'loss_pct'), g(kv, 'relay_sock_drops'),
                g(kv, 'added_per_pass_p50_us'), g(kv, 'added_per_pass_p99_us'),
                g(kv, 'added_rtt_p50_us'), g(kv, 'added_rtt_p99_us')))
