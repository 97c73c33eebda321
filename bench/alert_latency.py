#!/usr/bin/env python3
"""INVITE in -> email accepted, webhook received, voice INVITE sent (bench/alert-latency.sh).

Runs the receivers (an SMTP server, an HTTP webhook receiver, a SIP phone answering 486), the
core, a sipp provider and a sipp caller; tcpdump gives each caller INVITE's arrival (kernel
time), the receivers stamp each alert's arrival with the same wall clock. Prints p50/p99/max in
ms per channel and how many of the calls each channel reached.
"""
import argparse
import asyncio
import email
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

here = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(here))
import latency  # noqa: E402  (the pcap reader of the other benchmarks)

ap = argparse.ArgumentParser()
ap.add_argument("--bin", required=True)
ap.add_argument("--calls", type=int, default=200)
ap.add_argument("--rate", type=int, default=5)
ap.add_argument("--port-base", type=int, default=27900)
a = ap.parse_args()

B = a.port_base
SOS, PROV, API, HELD, SMTP, HOOK, PHONE, CALLER = B, B + 10, B + 20, B + 21, B + 30, B + 31, B + 40, B + 50
arrivals = {"email": {}, "webhook": {}, "voice": {}}
lock = threading.Lock()


def arrived(channel, key, t=None):
    t = t or time.time()
    with lock:
        arrivals[channel].setdefault(key, t)


async def smtp(reader, writer):
    """Just enough SMTP (RFC 5321) for one message per session: the time is taken when the
    message is accepted (before the 250 after DATA is written)."""
    writer.write(b"220 bench ESMTP\r\n")
    while True:
        line = await reader.readline()
        if not line:
            break
        verb = line[:4].upper()
        if verb == b"EHLO" or verb == b"HELO":
            writer.write(b"250 bench\r\n")
        elif verb == b"DATA":
            writer.write(b"354 go on\r\n")
            data = await reader.readuntil(b"\r\n.\r\n")
            t = time.time()
            # The text part may be quoted-printable or base64: read it as a mail reader would.
            msg = email.message_from_bytes(data[:-5].replace(b"\r\n..", b"\r\n."))
            text = b"".join(p.get_payload(decode=True) or b"" for p in msg.walk() if not p.is_multipart())
            m = re.search(rb"Callback number: (b\d+)", text)
            if m:
                arrived("email", m.group(1).decode(), t)
            writer.write(b"250 2.0.0 accepted\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 bye\r\n")
            await writer.drain()
            break
        else:
            writer.write(b"250 ok\r\n")
        await writer.drain()
    writer.close()


async def hook(reader, writer):
    """One HTTP/1.1 request per connection: stamped once its body is in."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        body = await reader.readexactly(n)
        arrived("webhook", json.loads(body)["caller"]["number"])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
    except Exception as e:  # a bad request is the core's bug: say so, go on
        print(f"webhook receiver: {e}", file=sys.stderr)
    writer.close()


def phone():
    """The called phone: stamps each INVITE (by the caller's name in its Subject) and answers
    486 Busy Here, so each voice delivery is one attempt."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", PHONE))
    while True:
        msg, peer = s.recvfrom(65535)
        if not msg.startswith(b"INVITE "):
            continue
        m = re.search(rb"\r\nSubject: [^\r\n]*Bench (\d+)", msg)
        if m:
            arrived("voice", "b" + m.group(1).decode())
        head = msg.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        keep = [h for h in head[1:] if h.split(b":", 1)[0].lower() in (b"via", b"from", b"call-id", b"cseq")]
        to = [h for h in head[1:] if h.lower().startswith(b"to:")][0] + b";tag=busy"
        resp = b"\r\n".join([b"SIP/2.0 486 Busy Here", *keep, to, b"Content-Length: 0", b"", b""])
        s.sendto(resp, peer)


def serve_receivers():
    loop = asyncio.new_event_loop()
    loop.run_until_complete(asyncio.start_server(smtp, "127.0.0.1", SMTP))
    loop.run_until_complete(asyncio.start_server(hook, "127.0.0.1", HOOK))
    loop.run_forever()


threading.Thread(target=serve_receivers, daemon=True).start()
threading.Thread(target=phone, daemon=True).start()

work = pathlib.Path(tempfile.mkdtemp())
cfg = subprocess.run(
    [sys.executable, str(here / "lab-config.py"), "--sip-port", str(SOS), "--store", str(work / "audit.db"),
     "--api-port", str(API), "--held-port", str(HELD), "--rtp-ports", f"{B + 100}-{B + 199}", "--no-notify",
     "--route-address", f"127.0.0.1:{PROV}"],
    check=True, capture_output=True, text=True).stdout
cfg = cfg.replace('name = "us-hq"\n', 'name = "us-hq"\nchannels = ["email", "hook", "phone"]\n', 1)
cfg += f"""
[alerts]
retry_for_s = 0

[[channel]]
name = "email"
kind = "email"
server = "127.0.0.1"
port = {SMTP}
tls = "none"
from = "sosdesk@example.org"
to = ["security@example.org"]

[[channel]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{HOOK}/h"
secret = "bench-webhook-secret-0123"

[[channel]]
name = "phone"
kind = "voice"
to = ["sip:officer@127.0.0.1:{PHONE}"]
"""
(work / "bench.toml").write_text(cfg)

procs = []
try:
    pcap = work / "in.pcap"
    tlog = open(work / "tcpdump.log", "w")
    procs.append(subprocess.Popen(["tcpdump", "-i", "lo", "-nn", "-B", "65536", "-w", str(pcap),
                                   f"udp and dst port {SOS}"], stdout=tlog, stderr=tlog))
    clog = open(work / "core.log", "w")
    procs.append(subprocess.Popen([a.bin, "serve", "--config", str(work / "bench.toml")], stdout=clog, stderr=clog,
                                  env={**os.environ, "SOSDESK_LOG": "warn"}))
    procs.append(subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(PROV), "-nostdin"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.time() + 20
    while time.time() < deadline:
        ready = "serving" in (work / "core.log").read_text() and "listening" in (work / "tcpdump.log").read_text()
        if ready:
            break
        time.sleep(0.05)
    else:
        sys.exit("the core or tcpdump did not start:\n" + (work / "core.log").read_text())
    subprocess.run(["sipp", "-sf", str(here / "caller.xml"), f"127.0.0.1:{SOS}", "-i", "127.0.0.1",
                    "-p", str(CALLER), "-r", str(a.rate), "-m", str(a.calls), "-timeout", str(a.calls // a.rate + 60),
                    "-nostdin"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline and any(len(v) < a.calls for v in arrivals.values()):
        time.sleep(0.1)
    time.sleep(0.5)
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()

invite_in = {}
for ts, port, payload in latency.packets(str(pcap)):
    if port == SOS and payload.startswith(b"INVITE "):
        m = latency.FROM_USER.search(payload)
        if m:
            invite_in.setdefault(m.group(1).decode(), ts)


def pct(xs, p):
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


print(f"calls {a.calls} at {a.rate}/s; INVITEs captured {len(invite_in)}")
for ch, label in (("email", "email accepted by the SMTP server"), ("webhook", "webhook received"),
                  ("voice", "voice call's INVITE sent")):
    ms = sorted((t - invite_in[k]) * 1000 for k, t in arrivals[ch].items() if k in invite_in)
    if not ms:
        print(f"INVITE in -> {label}: none arrived")
        continue
    print(f"INVITE in -> {label}: n={len(ms)} p50={pct(ms, 50):.1f} ms p99={pct(ms, 99):.1f} ms max={ms[-1]:.1f} ms")
