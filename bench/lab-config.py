#!/usr/bin/env python3
"""examples/lab.toml for a benchmark: its own ports, audit file and RTP range (so that several
cores can run side by side), and the primary route pointed elsewhere. Writes the config to stdout.

  lab-config.py --sip-port P --store FILE --api-port P --held-port P --rtp-ports A-B
                [--no-notify] [--health-interval S] [--dns-server IP:PORT]
                [--route-address A] [--route-transport udp|tcp|tls] [--route-domain D]
                [--tls-ca F] [--tls-cert F --tls-key F]

--route-address etc. replace the lines of the lab's `provider-primary` route (an option not given
leaves the lab's line; --route-transport none drops the line, so DNS may choose).
"""
import argparse
import pathlib
import re

here = pathlib.Path(__file__).resolve().parent
ap = argparse.ArgumentParser()
ap.add_argument("--lab", default=str(here.parent / "examples" / "lab.toml"))
ap.add_argument("--sip-port", type=int, required=True)
ap.add_argument("--store", required=True)
ap.add_argument("--api-port", type=int, required=True)
ap.add_argument("--held-port", type=int, required=True)
ap.add_argument("--rtp-ports", required=True)
ap.add_argument("--no-notify", action="store_true")
ap.add_argument("--health-interval", type=int)
ap.add_argument("--dns-server")
ap.add_argument("--route-address")
ap.add_argument("--route-transport")
ap.add_argument("--route-domain")
ap.add_argument("--tls-ca")
ap.add_argument("--tls-cert")
ap.add_argument("--tls-key")
a = ap.parse_args()

text = pathlib.Path(a.lab).read_text()


def sub(pattern, repl, count=1):
    global text
    new, n = re.subn(pattern, repl, text, count=count, flags=re.M)
    if n == 0:
        raise SystemExit(f"lab-config.py: {pattern!r} not found in {a.lab}")
    text = new


sub(r'^udp = "127\.0\.0\.1:5060"$', f'udp = "127.0.0.1:{a.sip_port}"')
sub(r'^tcp = "127\.0\.0\.1:5060"$', f'tcp = "127.0.0.1:{a.sip_port}"')
sub(r'^path = "\.\./sosdesk-lab\.db"$', f'path = "{a.store}"')
sub(r'^listen = "127\.0\.0\.1:8443"$', f'listen = "127.0.0.1:{a.api_port}"')
sub(r'^held = "127\.0\.0\.1:8080"$', f'held = "127.0.0.1:{a.held_port}"')
sub(r'^rtp_ports = "20000-20999"$', f'rtp_ports = "{a.rtp_ports}"')
# The lab's msag.csv is relative to the lab's folder; the config is written elsewhere.
sub(r'^msag = "msag\.csv"$', f'msag = "{here.parent / "examples" / "msag.csv"}"')
if a.no_notify:
    sub(r"^notification_uris = .*\n", "", count=0)
if a.health_interval is not None:
    sub(r"^health_interval_s = \d+$", f"health_interval_s = {a.health_interval}")
if a.dns_server:
    sub(r"^\[store\]$", f'[dns]\nservers = ["{a.dns_server}"]\n\n[store]')

# The primary route's block: from its name to the next [[route]].
start = text.index('name = "provider-primary"')
end = start + text[start:].index("[[route]]")
block = text[start:end].rstrip("\n").split("\n")
keys = {
    "address": a.route_address,
    "transport": a.route_transport,
    "domain": a.route_domain,
    "tls_ca": a.tls_ca,
    "tls_cert": a.tls_cert,
    "tls_key": a.tls_key,
}
lines = [l for l in block if not any(keys[k] is not None and l.startswith(k + " ") for k in keys)]
for k, v in keys.items():
    if v is not None and v != "none":
        lines.append(f'{k} = "{v}"')
text = text[:start] + "\n".join(lines) + "\n\n" + text[end:]
# The lab's other peers (secondary provider 5071, ELIN gateway 5080, security desk 5090): moved
# beside --sip-port, so that probes and callbacks never reach someone else's lab on this machine.
text = re.sub(r"127\.0\.0\.1:50([6-9]\d)\b", lambda m: f"127.0.0.1:{a.sip_port + int(m.group(1)) - 60}", text)
print(text, end="")
