#!/usr/bin/env python3
"""INVITE in -> INVITE out latency from a loopback pcap (tcpdump -i lo).

Matches each caller INVITE (to sosdesk's port) with the outbound INVITE (to the provider's port)
by the From user, which the load scenario makes unique per call and sosdesk presents as the
callback number. Timestamps are the kernel's capture times: nothing inside sosdesk measures
itself. Usage: latency.py FILE.pcap SOSDESK_PORT PROVIDER_PORT
"""
import re
import struct
import sys

FROM_USER = re.compile(rb"\r\nFrom:[^\r\n]*<sip:([^@>;]+)@", re.I)


def packets(path):
    with open(path, "rb") as f:
        head = f.read(24)
        magic = struct.unpack("<I", head[:4])[0]
        endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        nanos = magic in (0xA1B23C4D, 0x4D3CB2A1)
        linktype = struct.unpack(endian + "I", head[20:24])[0]
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            sec, frac, incl, _ = struct.unpack(endian + "IIII", rec)
            data = f.read(incl)
            ts = sec + frac / (1e9 if nanos else 1e6)
            # Linux "cooked" capture (113, 276) or plain Ethernet (1) on lo.
            off = {1: 14, 113: 16, 276: 20, 0: 4}.get(linktype, 14)
            ip = data[off:]
            if not ip:
                continue
            if ip[0] >> 4 == 4:
                ihl = (ip[0] & 15) * 4
                proto = ip[9]
                l4 = ip[ihl:]
            elif ip[0] >> 4 == 6:
                proto = ip[6]
                l4 = ip[40:]
            else:
                continue
            if proto != 17 or len(l4) < 8:
                continue
            dport = struct.unpack(">H", l4[2:4])[0]
            yield ts, dport, l4[8:]


def main():
    path, sos, prov = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    t_in, t_out = {}, {}
    for ts, dport, payload in packets(path):
        if not payload.startswith(b"INVITE "):
            continue
        m = FROM_USER.search(payload)
        if not m:
            continue
        user = m.group(1)
        # First copy only: a retransmission is not a new call.
        if dport == sos:
            t_in.setdefault(user, ts)
        elif dport == prov:
            t_out.setdefault(user, ts)
    lat = sorted((t_out[u] - t_in[u]) * 1000 for u in t_in if u in t_out)
    if not lat:
        print("calls=0")
        return
    span = max(t_out.values()) - min(t_in.values())

    def pct(p):
        return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))]

    print(
        f"calls_in={len(t_in)} routed={len(lat)} routed_per_s={len(lat) / span if span > 0 else 0:.0f} "
        f"p50_ms={pct(50):.3f} p90_ms={pct(90):.3f} p99_ms={pct(99):.3f} max_ms={lat[-1]:.3f}"
    )


if __name__ == "__main__":
    main()
