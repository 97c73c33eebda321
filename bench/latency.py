#!/usr/bin/env python3
"""INVITE in -> INVITE out, and INVITE in -> notification MESSAGE out, from a loopback pcap
(tcpdump -i lo).

Matches each caller INVITE (to sosdesk's port) with the outbound INVITE (to the provider's port)
by the From user, which the load scenario makes unique per call and sosdesk presents as the
callback number; and with the notification MESSAGE (to the notification receiver's port) by the
caller number in its CallEvent part. Timestamps are the kernel's capture times: nothing inside
sosdesk measures itself. Usage: latency.py FILE.pcap SOSDESK_PORT PROVIDER_PORT [NOTIFY_PORT]
                                    [--tls-hop TLS_PORT] [--in-order]
--in-order: the outbound INVITEs do not carry the caller's number (an ELIN gateway is sent the
location's ELIN instead), so each caller INVITE is paired with the outbound INVITE of the same
rank in time (first copies only; outbound ones told apart by Call-ID); the line says how many
pairs, and "n/a" when the counts differ.

--tls-hop TLS_PORT: the provider is reached through a TLS hop (sosdesk -> TLS_PORT over TLS, then
on to PROVIDER_PORT over UDP, as in bench/tls-route.sh) and the capture also holds the TCP
segments to TLS_PORT. Their content is encrypted, so the INVITEs are told by size: the TCP stream
is cut into TLS records, and every record of at least 1,000 bytes is taken for one INVITE (ACKs,
BYEs, OPTIONS and keep-alives are smaller; a reliable transport never retransmits), paired with the
caller INVITEs in order of arrival (the engine sends in the order it receives). The line then
also gives sosdesk's own hop (INVITE in -> the INVITE's TLS record leaves), with the number of
pairs that break causality (record before the INVITE in, or after the INVITE reached the
provider), which says whether the pairing held; "n/a" when the counts differ.
"""
import re
import struct
import sys

CALL_ID = re.compile(rb"\r\n(?:Call-ID|i):\s*([^\r\n]+)", re.I)
FROM_USER = re.compile(rb"\r\nFrom:[^\r\n]*<sip:([^@>;]+)@", re.I)
# The CallEvent JSON part of the MESSAGE: {"caller":{"number":"b17",...
CALLER_NUMBER = re.compile(rb'"caller":\{"number":"([^"]+)"')


def packets(path, tcp_port=None):
    """(timestamp, destination port, UDP payload); with tcp_port, TCP segments to that port
    too, as (timestamp, -1, TCP payload)."""
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
            if proto == 6 and tcp_port is not None and len(l4) >= 20:
                if struct.unpack(">H", l4[2:4])[0] == tcp_port:
                    payload = l4[(l4[12] >> 4) * 4:]
                    if payload:
                        sport, seq = struct.unpack(">HI", l4[0:2] + l4[4:8])
                        yield ts, -1, (sport, seq, payload)
                continue
            if proto != 17 or len(l4) < 8:
                continue
            dport = struct.unpack(">H", l4[2:4])[0]
            yield ts, dport, l4[8:]


def percentiles(lat):
    lat = sorted(lat)

    def pct(p):
        return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))]

    return pct(50), pct(90), pct(99), lat[-1]


def main():
    args = sys.argv[1:]
    tls_port = None
    if "--tls-hop" in args:
        i = args.index("--tls-hop")
        tls_port = int(args[i + 1])
        del args[i : i + 2]
    in_order = "--in-order" in args
    if in_order:
        args.remove("--in-order")
    path, sos, prov = args[0], int(args[1]), int(args[2])
    notify = int(args[3]) if len(args) > 3 else None
    t_in, t_out, t_msg = {}, {}, {}
    tls_records = []
    streams = {}  # source port -> [next sequence number, unparsed bytes]
    tls_broken = False
    for ts, dport, payload in packets(path, tls_port):
        if dport == -1:
            # The TCP stream cut into TLS records (5-byte header: type, version, length); a
            # record is complete when the segment with its last byte leaves. Several records may
            # share a segment, and one may span segments.
            sport, seq, data = payload
            st = streams.setdefault(sport, [seq, b""])
            ahead = (seq - st[0]) % 2**32
            if ahead > 2**31:  # starts before what we have: a retransmission, keep what is new
                skip = 2**32 - ahead
                if skip >= len(data):
                    continue
                data, seq = data[skip:], st[0]
            elif ahead:  # a gap: the capture lost a segment, records can no longer be told
                tls_broken = True
                st[1] = b""
            st[0] = (seq + len(data)) % 2**32
            st[1] += data
            while len(st[1]) >= 5:
                if st[1][0] not in (20, 21, 22, 23) or st[1][1] != 3:
                    tls_broken = True
                    st[1] = b""
                    break
                size = 5 + struct.unpack(">H", st[1][3:5])[0]
                if len(st[1]) < size:
                    break
                if size >= 1000:
                    tls_records.append(ts)
                st[1] = st[1][size:]
            continue
        if notify is not None and dport == notify and payload.startswith(b"MESSAGE "):
            m = CALLER_NUMBER.search(payload)
            if m:
                # First attempt only: a retry is not a new notification.
                t_msg.setdefault(m.group(1), ts)
            continue
        if not payload.startswith(b"INVITE "):
            continue
        m = FROM_USER.search(payload)
        if not m:
            continue
        user = m.group(1)
        if in_order and dport == prov:
            cid = CALL_ID.search(payload)
            user = cid.group(1) if cid else user
        # First copy only: a retransmission is not a new call.
        if dport == sos:
            t_in.setdefault(user, ts)
        elif dport == prov:
            t_out.setdefault(user, ts)
    if in_order:
        ins, outs = sorted(t_in.values()), sorted(t_out.values())
        if len(ins) != len(outs):
            print(f"calls=n/a ({len(ins)} caller INVITEs, {len(outs)} outbound: --in-order cannot pair them)")
            return
        t_in = {i: t for i, t in enumerate(ins)}
        t_out = {i: t for i, t in enumerate(outs)}
    lat = [(t_out[u] - t_in[u]) * 1000 for u in t_in if u in t_out]
    if not lat:
        print("calls=0")
        return
    span = max(t_out.values()) - min(t_in.values())
    p50, p90, p99, top = percentiles(lat)
    line = (
        f"calls_in={len(t_in)} routed={len(lat)} routed_per_s={len(lat) / span if span > 0 else 0:.0f} "
        f"p50_ms={p50:.3f} p90_ms={p90:.3f} p99_ms={p99:.3f} max_ms={top:.3f}"
    )
    if notify is not None:
        msg = [(t_msg[u] - t_in[u]) * 1000 for u in t_in if u in t_msg]
        if msg:
            p50, p90, p99, top = percentiles(msg)
            line += (f" | notified={len(msg)} msg_p50_ms={p50:.3f} msg_p90_ms={p90:.3f} "
                     f"msg_p99_ms={p99:.3f} msg_max_ms={top:.3f}")
        else:
            line += " | notified=0"
    if tls_port is not None:
        ins = sorted((ts, u) for u, ts in t_in.items())
        if tls_broken or len(tls_records) != len(ins):
            line += (f" | tls_hop=n/a ({len(tls_records)} large TLS records for {len(ins)} INVITEs"
                     f"{', stream not parsed whole' if tls_broken else ''})")
        else:
            hop, broken = [], 0
            for (ts_in, user), ts_rec in zip(ins, sorted(tls_records)):
                if ts_rec < ts_in or (user in t_out and ts_rec > t_out[user]):
                    broken += 1
                hop.append((ts_rec - ts_in) * 1000)
            p50, p90, p99, top = percentiles(hop)
            line += (f" | sosdesk_hop_p50_ms={p50:.3f} p90_ms={p90:.3f} p99_ms={p99:.3f} max_ms={top:.3f}"
                     f" (pairs={len(hop)} out_of_order={broken})")
    print(line)


if __name__ == "__main__":
    main()
