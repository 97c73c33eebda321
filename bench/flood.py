#!/usr/bin/env python3
"""Junk flood for bench/flood.sh: a mix of what anyone on the network can send sosdesk, from many
source addresses on loopback, at a steady rate.

  flood.py HOST PORT RATE SECONDS SOURCES

Mix (per 20 datagrams): 8 ordinary INVITEs (answered 404), 4 REGISTERs with made-up digest
credentials, 3 OPTIONS, 3 MESSAGEs, 2 malformed datagrams. Every request has its own Call-ID and
branch, so none is absorbed as a retransmission. Sources are 127.0.1.1 … 127.0.1.SOURCES.
Prints what it sent and the rate it achieved.
"""
import socket
import sys
import time

host, port, rate, seconds, nsources = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
dst = (host, port)
socks = []
for i in range(nsources):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((f"127.0.1.{1 + i % 250}", 0))
    s.setblocking(False)
    socks.append(s)

HEAD = ("{m} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bKf{n}\r\nMax-Forwards: 70\r\n"
        "From: <sip:junk{n}@{src}>;tag=f{n}\r\nTo: <{ruri}>\r\nCall-ID: flood-{n}@{src}\r\nCSeq: 1 {m}\r\n")
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def message(kind, n, src):
    if kind == "invite":
        h = HEAD.format(m="INVITE", ruri=f"sip:2065551{n % 1000:03d}@{host}", src=src, n=n)
        return (h + f"Contact: <sip:junk@{src}>\r\nContent-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n" + SDP)
    if kind == "register":
        h = HEAD.format(m="REGISTER", ruri=f"sip:{host}", src=src, n=n)
        auth = (f'Digest username="desk{n % 7}", realm="sosdesk", nonce="{n:032x}", uri="sip:{host}", '
                f'response="{n:032x}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c{n}"')
        return h + f"Contact: <sip:junk@{src}>\r\nAuthorization: {auth}\r\nContent-Length: 0\r\n\r\n"
    if kind == "options":
        return HEAD.format(m="OPTIONS", ruri=f"sip:{host}", src=src, n=n) + "Content-Length: 0\r\n\r\n"
    if kind == "message":
        body = f"junk {n}"
        h = HEAD.format(m="MESSAGE", ruri=f"sip:desk@{host}", src=src, n=n)
        return h + f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    return f"INVITE sip:x SIP/2.0\r\nVia: nonsense {n}\r\n\r\n"


MIX = ["invite"] * 8 + ["register"] * 4 + ["options"] * 3 + ["message"] * 3 + ["malformed"] * 2
srcs = [s.getsockname()[0] + ":" + str(s.getsockname()[1]) for s in socks]
total = int(rate * seconds)
start = time.monotonic()
sent = dropped = 0
batch = 50
n = 0
while n < total:
    for _ in range(min(batch, total - n)):
        i = n % len(socks)
        data = message(MIX[n % len(MIX)], n, srcs[i]).encode()
        try:
            socks[i].sendto(data, dst)
            sent += 1
        except BlockingIOError:
            dropped += 1
        n += 1
    ahead = start + n / rate - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
took = time.monotonic() - start
print(f"flood_sent={sent} flood_not_sent={dropped} flood_rate_achieved={sent / took:.0f}")
