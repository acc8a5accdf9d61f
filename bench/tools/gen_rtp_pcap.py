#!/usr/bin/env python3
"""Write a pcap of one G.711 RTP stream for SIPp's play_pcap_audio.

20 ms packets (160-byte payloads, timestamp +160, one packet every 20 ms in
the capture timestamps), a 440 Hz tone at -12 dBFS encoded as PCMU or PCMA.
Frames are Ethernet/IPv4/UDP/RTP (SIPp reads the UDP payload and replays it
with the capture's timing; addresses and ports are replaced by SIPp).
Pure stdlib, so the repository carries the generator, not a binary.

usage: gen_rtp_pcap.py OUT.pcap [--seconds 30] [--codec pcmu|pcma]
"""
import argparse
import math
import struct


def lin2ulaw(s):
    BIAS, CLIP = 0x84, 32635
    sign = 0x80 if s < 0 else 0
    s = min(abs(s), CLIP) + BIAS
    exp = 7
    mask = 0x4000
    while exp > 0 and not (s & mask):
        exp -= 1
        mask >>= 1
    mant = (s >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF


def lin2alaw(s):
    sign = 0x80 if s >= 0 else 0
    s = min(abs(s), 32767) >> 3
    if s < 32:
        v = s >> 1
    else:
        exp = 1
        while s >= 64 and exp < 7:
            s >>= 1
            exp += 1
        v = (exp << 4) | ((s >> 1) & 0x0F)
    return (v | sign) ^ 0x55


def checksum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('out')
    ap.add_argument('--seconds', type=float, default=30)
    ap.add_argument('--codec', choices=('pcmu', 'pcma'), default='pcmu')
    a = ap.parse_args()
    enc, pt = (lin2ulaw, 0) if a.codec == 'pcmu' else (lin2alaw, 8)
    amp = 32767 * 10 ** (-12 / 20)
    n_pkts = int(round(a.seconds / 0.020))
    src, dst = bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])
    ssrc = 0x5B0A2D01
    with open(a.out, 'wb') as f:
        f.write(struct.pack('<IHHiIII', 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i in range(n_pkts):
            payload = bytes(enc(int(amp * math.sin(2 * math.pi * 440 * (i * 160 + k) / 8000)))
                            for k in range(160))
            rtp = struct.pack('!BBHII', 0x80, pt | (0x80 if i == 0 else 0),
                              i & 0xFFFF, (i * 160) & 0xFFFFFFFF, ssrc) + payload
            udp = struct.pack('!HHHH', 16000, 6000, 8 + len(rtp), 0) + rtp
            ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), i & 0xFFFF, 0x4000, 64, 17, 0, src, dst)
            ip = ip[:10] + struct.pack('!H', checksum(ip)) + ip[12:]
            eth = b'\0' * 12 + b'\x08\x00' + ip + udp
            t_us = i * 20000
            f.write(struct.pack('<IIII', t_us // 1000000, t_us % 1000000, len(eth), len(eth)))
            f.write(eth)


if __name__ == '__main__':
    main()
