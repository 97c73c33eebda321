#!/usr/bin/env python3
"""A slow TCP peer: sends a SIP request one byte per send, ~100 µs apart, to a running sosdesk,
so that (nearly) every read the core makes holds one byte. Measures what framing costs the core
per byte (BENCHMARKS.md, "TCP framing"); read the core's CPU from /proc before and after.

  python3 bench/tcp-trickle.py HOST:PORT head   # 65 KB of header lines that never end (under the 64 KiB limit)
  python3 bench/tcp-trickle.py HOST:PORT body   # a 59 KB header section, then a 65,000-byte body
Traffic goes only to the address given (use the lab's 127.0.0.1:5060)."""
import socket
import sys
import time

host, port = sys.argv[1].rsplit(":", 1)
what = sys.argv[2]
s = socket.create_connection((host, int(port)))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
head = b"INVITE sip:911@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKtrickle\r\n"
filler = b"X-Filler: " + b"a" * 70 + b"\r\n"
if what == "body":
    while len(head) < 59_000:
        head += filler
    head += b"Content-Length: 65000\r\n\r\n"
    s.sendall(head)
    data = b"b" * 65_000
else:
    while len(head) < 65_000:
        head += filler
    data = head
t = time.time()
try:
    for i in range(len(data)):
        s.send(data[i : i + 1])
        time.sleep(0.0001)
except OSError as e:  # the core closes a connection whose header section grows too large
    print(f"connection closed after {i} bytes: {e}")
print(f"sent {len(data)} bytes one per send in {time.time() - t:.1f} s")
s.close()
