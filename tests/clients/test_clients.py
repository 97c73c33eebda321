#!/usr/bin/env python3
"""sosdesk with ordinary SIP clients (baresip, linphonec) as security desks — see README.md.

For each client, against a private sosdesk (the lab config on free loopback ports, a temp store),
a sipp provider and caller, with tcpdump watching loopback:
  a. registers as desk1: the client says so, sosdesk's registrar lists the binding, and the 200
     to the client's REGISTER has Via received/rport;
  c. a 911 call comes in (sipp): the client shows the notification text; the audit says it was
     delivered (baresip: after the 415 and the text/plain re-send); linphonec's IMDN got 200;
  d. desk1 (listen-only) joins that call: dials conf-<call id> with its ordinary sendrecv offer,
     gets 200 with a=sendonly, and RTP flows from sosdesk to the client's media port;
  b. the client places a 911 call: it reaches the sipp provider, is answered, and the audit
     store has it.
(c and d come before b so that c sees sosdesk's first alert to that client, with the fallback.)

baresip-tls and linphonec-tls: the same client over SIP over TLS, against a sosdesk with a TLS
listener whose certificate a test CA made here (pki.py) signed:
  0. the client, trusting only another CA, refuses sosdesk's certificate (so it does check it);
  a. registers over TLS: sosdesk logs the registration from a tls: peer, and that connection is
     TLS records from its first byte (a ClientHello, a ServerHello back);
  c. receives the alert of a 911 call (sipp) on that connection: printed, audited delivered; no
     byte of the alert in clear on the wire, no cleartext SIP to or from the client at all;
  b. places a 911 call over TLS: answered by the sipp provider; sosdesk's API says the call came
     from that tls: connection.

baresip-tls-reconnect: baresip's TLS connection is destroyed (ss -K) just before a 911 call; its
alert must reach baresip once it has registered again, on its new connection (about 32 s: the
shortest re-REGISTER sosdesk grants is 30 s).

Usage: test_clients.py [baresip] [linphonec] [baresip-tls] [linphonec-tls] [baresip-tls-reconnect]
       (default: all five)
Env: SOSDESK_BIN (required),
SOSDESK_CLIENTS_KEEP=1 keeps the work dir on success (it is always kept on failure).
Every wait is on a condition with a deadline; every process started is stopped on exit.
"""
import base64
import csv
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import baresip  # noqa: E402
import linphone  # noqa: E402
import pki  # noqa: E402
from peer import ANSI, die_with_parent  # noqa: E402
from sipcap import Capture, is_rtp, tls_records  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SIPP_DIR = os.path.join(REPO, "tests", "sipp")
DESK_USER, DESK_PASS = "desk1", "lobby-desk-secret"   # examples/lab.toml: talk = false
ALERT_TEXT = "EMERGENCY CALL to 911"  # the first line of sosdesk's alert (docs/notifications.md)
HOLD_MS = 12000  # how long the sipp caller of c/d stays on the call after it is answered
TLS_HOLD_MS = 1500  # the same in the TLS runs (no d: the caller need not wait for a join)
KINDS = ["baresip", "linphonec", "baresip-tls", "linphonec-tls", "baresip-tls-reconnect"]
# Runs only when named (none at present).
EXTRA = []
BLOCK = 200      # ports per client run

# Every process this script started, stopped on exit whatever happens.
PROCS = []


def stop_all():
    for p in reversed(PROCS):
        try:
            if hasattr(p, "stop"):
                p.stop()
            elif p.poll() is None:
                p.terminate()
                try:
                    p.wait(3)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        except Exception:
            pass
    PROCS.clear()


def on_signal(signum, _frame):
    print("clients: stopped by signal %d; everything started is stopped, the work dir is kept" % signum,
          flush=True)
    stop_all()
    sys.exit(128 + signum)


class Failed(Exception):
    pass


# --- waiting -------------------------------------------------------------------------------

def until(fn, timeout, what, every=0.2):
    """fn() until it returns something truthy; AssertionError naming `what` after timeout s."""
    end = time.time() + timeout
    last_err = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # e.g. a CLI that failed this once
            last_err = e
        if time.time() > end:
            raise AssertionError("%s: not within %g s%s" % (what, timeout,
                                                            " (last error: %s)" % last_err if last_err else ""))
        time.sleep(every)  # a poll interval, not synchronisation: the loop waits on fn()


def udp_bound(port):
    """Whether something listens on UDP 127.0.0.1:port (or 0.0.0.0:port)."""
    want = ":%04X" % port
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            local = line.split()[1]
            if local.endswith(want) and local.split(":")[0] in ("0100007F", "00000000"):
                return True
    return False


def free_block(count):
    """A base port with `count` ports free for both UDP and TCP on 127.0.0.1, below the ephemeral
    range: there no other program's outgoing sockets land in the block (and in the capture)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError):
        low = 32768
    bases = list(range(10000, low - count, count))
    random.shuffle(bases)
    for base in bases:
        socks, ok = [], True
        try:
            for p in range(base, base + count):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind(("127.0.0.1", p))
        except OSError:
            ok = False
        finally:
            for s in socks:
                s.close()
        if ok:
            return base
    raise RuntimeError("no block of %d free loopback ports in 10000-%d" % (count, low))


def tail(path, n=25):
    try:
        with open(path, errors="replace") as f:
            return re.sub(r"\x1b\[[0-9;]*m", "", "".join(f.readlines()[-n:])).rstrip()
    except OSError:
        return "(no %s)" % path


# --- a small SIP UAC: OPTIONS ping and the registrar's binding list ----------------------------

def sip_request(core, method, extra, cseq=1, call_id=None, timeout=3):
    """Send one request over UDP to core (host, port); return (response text, local port)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    lp = s.getsockname()[1]
    call_id = call_id or "%016x@clients-test" % random.getrandbits(64)
    ruri = "sip:%s:%d" % core
    msg = ("%s %s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%016x;rport\r\n"
           "Max-Forwards: 70\r\n%sCall-ID: %s\r\nCSeq: %d %s\r\nContent-Length: 0\r\n\r\n"
           % (method, ruri, lp, random.getrandbits(64), extra, call_id, cseq, method))
    end = time.time() + timeout
    try:
        s.sendto(msg.encode(), core)
        t1 = 0.5
        while time.time() < end:
            s.settimeout(min(t1, max(0.01, end - time.time())))
            try:
                data, _ = s.recvfrom(65535)
            except socket.timeout:
                s.sendto(msg.encode(), core)  # retransmit (RFC 3261 §17.1.2.2)
                t1 = min(2 * t1, 4)
                continue
            text = data.decode("utf-8", "replace")
            if text.startswith("SIP/2.0 ") and int(text.split(" ", 2)[1]) >= 200:
                return text, call_id
        raise AssertionError("no final response to %s from %s:%d" % (method, core[0], core[1]))
    finally:
        s.close()


def options_ok(core):
    text, _ = sip_request(core, "OPTIONS", "From: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:%s:%d>\r\n" % core,
                          timeout=1)
    return text.startswith("SIP/2.0 200")


def registrar_bindings(core, user, password):
    """The Contact list sosdesk's registrar returns for a REGISTER without Contact (RFC 3261
    §10.2.3), with the account's digest credentials (RFC 2617, MD5, qop=auth)."""
    hdrs = "From: <sip:{u}@127.0.0.1>;tag=q{t}\r\nTo: <sip:{u}@127.0.0.1>\r\n".format(
        u=user, t=random.getrandbits(32))
    text, cid = sip_request(core, "REGISTER", hdrs)
    if not text.startswith("SIP/2.0 401"):
        raise AssertionError("binding query: expected 401, got %s" % text.split("\r\n")[0])
    chal = re.search(r"^WWW-Authenticate:\s*Digest\s+(.*)$", text, re.M | re.I).group(1)
    p = dict(re.findall(r'(\w+)="?([^",]*)"?', chal))
    ruri = "sip:%s:%d" % core
    md5 = lambda x: hashlib.md5(x.encode()).hexdigest()
    ha1, ha2 = md5("%s:%s:%s" % (user, p["realm"], password)), md5("REGISTER:%s" % ruri)
    cnonce, nc = "%08x" % random.getrandbits(32), "00000001"
    resp = md5("%s:%s:%s:%s:auth:%s" % (ha1, p["nonce"], nc, cnonce, ha2))
    auth = ('Authorization: Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", '
            'algorithm=MD5, qop=auth, nc=%s, cnonce="%s"%s\r\n'
            % (user, p["realm"], p["nonce"], ruri, resp, nc, cnonce,
               ', opaque="%s"' % p["opaque"] if "opaque" in p else ""))
    text, _ = sip_request(core, "REGISTER", hdrs + auth, cseq=2, call_id=cid)
    if not text.startswith("SIP/2.0 200"):
        raise AssertionError("binding query: expected 200, got %s" % text.split("\r\n")[0])
    contacts = []
    for line in text.split("\r\n\r\n")[0].split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() in ("contact", "m"):
            contacts += [c.strip() for c in re.split(r",(?=\s*<)", value) if c.strip()]
    return contacts


# --- the lab -------------------------------------------------------------------------------

class Lab:
    """A private sosdesk for one client: examples/lab.toml moved to ports base..base+199."""

    def __init__(self, work, base, binary, tls=None):
        """tls: pki.make()'s files: sosdesk also listens for SIP over TLS, on base + 1."""
        self.work, self.base, self.bin = work, base, binary
        os.makedirs(work, exist_ok=True)
        self.core = ("127.0.0.1", base)
        self.tls_port = base + 1 if tls else None
        self.api_url = "http://127.0.0.1:%d" % (base + 41)
        self.provider_port = base + 10
        self.caller_port = base + 50
        self.store = os.path.join(work, "lab.db")
        self.config = os.path.join(work, "lab.toml")
        b = base
        moves = {5060: b, 5070: b + 10, 5071: b + 11, 5080: b + 20, 5090: b + 30, 8080: b + 40, 8443: b + 41}
        with open(os.path.join(REPO, "examples", "lab.toml")) as f:
            text = f.read()
        text = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: "127.0.0.1:%d" % moves.get(int(m.group(1)), int(m.group(1))),
                      text)
        subs = [('"20000-20999"', '"%d-%d"' % (b + 100, b + 149)),
                ('path = "../sosdesk-lab.db"', 'path = "%s"' % self.store),
                ('msag = "msag.csv"', 'msag = "%s"' % os.path.join(REPO, "examples", "msag.csv")),
                # The lab's security desk phone is not here: the alert goes to the registered desks.
                ('notification_uris = ["sip:security-desk@127.0.0.1:%d", "sip:security@127.0.0.1"]' % (b + 30),
                 'notification_uris = ["sip:security@127.0.0.1"]')]
        if tls:
            subs.append(('# tls = "127.0.0.1:5061"\n# tls_cert = "sosdesk.crt"\n# tls_key = "sosdesk.key"\n',
                         'tls = "127.0.0.1:%d"\ntls_cert = "%s"\ntls_key = "%s"\n'
                         % (self.tls_port, tls["cert"], tls["key"])))
        missed = [old for old, _ in subs if old not in text]
        # d needs desk1 to be the listen-only account
        if not re.search(r'username = "%s"\s*\npassword = "%s"\s*\ntalk = false' % (DESK_USER, DESK_PASS), text):
            missed.append("[[desk]] %s with talk = false" % DESK_USER)
        for old, new in subs:
            text = text.replace(old, new)
        missed += [p for p in re.findall(r"^[^#\n]*127\.0\.0\.1:(\d+)", text, re.M) if not b <= int(p) < b + BLOCK]
        if missed:
            raise RuntimeError("examples/lab.toml changed: %s not found or not moved; update Lab in %s"
                               % (missed, __file__))
        with open(self.config, "w") as f:
            f.write(text)
        self.proc = None

    def start(self):
        self.log = os.path.join(self.work, "sosdesk.log")
        self.proc = subprocess.Popen([self.bin, "serve", "--config", self.config],
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     preexec_fn=die_with_parent)
        PROCS.append(self.proc)

        def up():
            if self.proc.poll() is not None:
                raise Failed("sosdesk exited (%s):\n%s" % (self.proc.returncode, tail(self.log)))
            return udp_bound(self.base) and options_ok(self.core)
        until(up, 15, "sosdesk answering OPTIONS on %s:%d" % self.core, every=0.1)
        if self.tls_port:
            until(lambda: self.log_search(r"core started .*tls=Some\(127\.0\.0\.1:%d\)" % self.tls_port), 5,
                  "sosdesk's TLS listener on %d (its log line 'core started … tls=…')" % self.tls_port, 0.05)

    def log_search(self, regex):
        """The first match of regex in sosdesk's log so far (colours removed), or None."""
        with open(self.log, errors="replace") as f:
            return re.search(regex, ANSI.sub("", f.read()), re.M)

    def api(self, path):
        """GET the HTTP API (docs/api.md) as desk1: the JSON answer."""
        req = urllib.request.Request(self.api_url + path)
        creds = base64.b64encode(("%s:%s" % (DESK_USER, DESK_PASS)).encode()).decode()
        req.add_header("Authorization", "Basic " + creds)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: finishes recordings, flushes the audit log
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args):
        r = subprocess.run([self.bin] + list(args) + ["--store", self.store], capture_output=True, text=True,
                           timeout=20)
        if r.returncode != 0:
            raise AssertionError("sosdesk %s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr.strip()))
        return r.stdout

    def history(self):
        return json.loads(self.cli("history", "--json"))

    def audit(self, call_id=None):
        rows = list(csv.DictReader(io.StringIO(self.cli("audit", "export", "--csv"))))
        return [r for r in rows if call_id is None or r["call_id"] == call_id]

    def sipp(self, name, scenario, args, timeout_s=30):
        """Start sipp; return (process, its files' prefix)."""
        pre = os.path.join(self.work, name)
        argv = (["sipp", "-sf", os.path.join(SIPP_DIR, scenario)] + args +
                ["-i", "127.0.0.1", "-m", "1", "-timeout", str(timeout_s), "-timeout_error", "-nostdin",
                 "-trace_msg", "-message_file", pre + ".msg", "-trace_err", "-error_file", pre + ".err"])
        p = subprocess.Popen(argv, stdout=open(pre + ".log", "w"), stderr=subprocess.STDOUT,
                             preexec_fn=die_with_parent)
        PROCS.append(p)
        return p, pre

    def wait_sipp(self, p, pre, timeout, what):
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s (sipp %s) still running after %g s; its last messages:\n%s"
                                 % (what, os.path.basename(pre), timeout, tail(pre + ".msg", 30)))
        if rc != 0:
            raise AssertionError("%s (sipp %s) failed, exit %d:\n%s\n%s" % (
                what, os.path.basename(pre), rc, tail(pre + ".err", 10), tail(pre + ".msg", 30)))


# --- the clients under test ------------------------------------------------------------------

class Client:
    """What the checks need of a client: start registered, its ports, how it dials.

    ca: over TLS to sosdesk's TLS listener, trusting only that CA file. second: another instance
    beside the first (its own dir and ports)."""

    def __init__(self, kind, lab, ca=None, second=False, regint=600):
        self.kind, self.lab, self.tls, b = kind, lab, bool(ca), lab.base
        name = kind + ("-2" if second else "")
        self.dir = os.path.join(lab.work, name)
        self.log = os.path.join(lab.work, name + ".log")
        registrar = "127.0.0.1:%d" % (lab.tls_port if ca else b)
        n = 2 if second else 0
        if kind == "baresip":
            self.sip_port, ctrl = b + 60 + n, b + 65 + n // 2
            rtp = "%d-%d" % (b + 180, b + 189) if second else "%d-%d" % (b + 150, b + 169)
            baresip.write_config(self.dir, self.sip_port, ctrl, DESK_USER, DESK_PASS, registrar, rtp, cafile=ca,
                                 regint=regint)
            self.peer = baresip.Baresip(self.dir, ctrl, log=self.log)
        else:
            self.sip_port = b + 70 + n
            linphone.write_config(self.dir, self.sip_port, b + 170 + 2 * n, DESK_USER, DESK_PASS, registrar,
                                  root_ca=ca)
            self.peer = linphone.Linphonec(self.dir, log=self.log)
        # its own SIP ports: UDP and TCP, and (both clients) TLS on the next
        self.ports = {self.sip_port, self.sip_port + 1}
        PROCS.append(self.peer)

    def target(self, user):
        """What to dial: baresip completes a bare user to its account's domain (sosdesk) and
        transport; linphonec is given sosdesk's address, over TLS its TLS listener's."""
        if self.kind == "baresip":
            return user
        if self.tls:
            return "sip:%s@127.0.0.1:%d;transport=tls" % (user, self.lab.tls_port)
        return "sip:%s@127.0.0.1:%d" % (user, self.lab.base)


# --- the checks ------------------------------------------------------------------------------

def for_client(run, base, binary, work, results):
    """One run: a client (`baresip`, `linphonec`) over UDP, or over TLS (`baresip-tls`, ...)."""
    kind, tls, reconnect = run.split("-")[0], "-tls" in run, run.endswith("-reconnect")
    certs = pki.make(os.path.join(work, run, "pki")) if tls else None
    lab = Lab(os.path.join(work, run), base, binary, tls=certs)
    # every packet of the lab's ports; the block's last port (unused) takes the capture's probe
    cap = Capture(os.path.join(lab.work, "cap.pcap"),
                  "host 127.0.0.1 and (udp or tcp) and portrange %d-%d" % (base, base + BLOCK - 1), base + BLOCK - 1)
    state = {"client": None, "sipp": []}

    def step(name, fn):
        t0 = time.time()
        try:
            fn()
        except Exception as e:
            dt = time.time() - t0
            msg = str(e) if isinstance(e, (AssertionError, Failed)) else traceback.format_exc()
            out = ["FAIL [%s] %s (%.1f s)" % (run, name, dt), "  " + msg.replace("\n", "\n  ")]
            c = state["client"]
            if c:
                out += ["  -- %s output (last lines; all of it in %s):" % (c.kind, c.log),
                        "    " + c.peer.tail(25).replace("\n", "\n    ")]
            out += ["  -- sosdesk log (last lines; all of it in %s):" % os.path.join(lab.work, "sosdesk.log"),
                    "    " + tail(os.path.join(lab.work, "sosdesk.log"), 15).replace("\n", "\n    ")]
            if cap.proc:
                out += ["  -- SIP on the wire (last messages, headers; all of it in %s):" % cap.pcap_path,
                        "    " + cap.dump(headers_only=True, last=8).replace("\n", "\n    ")]
            print("\n".join(out), flush=True)
            results.append((run, name, False, dt))
            raise Failed()
        dt = time.time() - t0
        print("PASS [%s] %s (%.1f s)" % (run, name, dt), flush=True)
        results.append((run, name, True, dt))

    ctx = {}

    def start():
        cap.start()
        PROCS.append(cap)
        lab.start()
        if not tls:
            state["client"] = Client(kind, lab)

    def a_register():
        c = state["client"]
        c.peer.wait_registered(10)
        port = c.sip_port
        # sosdesk's own view: its registrar lists the client's contact for desk1
        contacts = registrar_bindings(lab.core, DESK_USER, DESK_PASS)
        if not any(re.search(r"@127\.0\.0\.1:%d[;>]" % port, x) for x in contacts):
            raise AssertionError("sosdesk's registrar does not list the client's contact (port %d) for %s: %s"
                                 % (port, DESK_USER, contacts or "no bindings"))
        # the 200 to the client's REGISTER: Via received/rport (RFC 3261 §18.2.1, RFC 3581 §4)
        ok = cap.wait_sip(lambda m: m.is_response and m.status == 200 and m.cseq_method == "REGISTER"
                          and m.dst == ("127.0.0.1", port), 5, "200 to the client's REGISTER")
        via = ok.header("via")
        if not re.search(r";\s*received=127\.0\.0\.1\b", via) or not re.search(r";\s*rport=%d\b" % port, via):
            raise AssertionError("the 200 to REGISTER lacks received=127.0.0.1;rport=%d in its Via: %s\n%s"
                                 % (port, via, ok))

    def alert_of_incoming_call(hold_ms, within=15):
        """A sipp caller dials 911 (a sipp provider answers): the client prints that call's alert
        (within `within` s), and the audit has it delivered to desk1. Returns the call's id."""
        c = state["client"]
        prov, ppre = lab.sipp("provider-c", "provider_answer.xml",
                              ["-p", str(lab.provider_port), "-mp", str(base + 80)], 40)
        state["sipp"] = [(prov, ppre, "the provider of the incoming 911 call")]
        until(lambda: udp_bound(lab.provider_port), 5, "sipp provider listening on %d" % lab.provider_port, 0.05)
        caller, cpre = lab.sipp("caller-c", "caller_hangs_up.xml",
                                ["%s:%d" % lab.core, "-s", "911", "-p", str(lab.caller_port),
                                 "-mp", str(base + 90), "-set", "hold_ms", str(hold_ms)], 40)
        state["sipp"].append((caller, cpre, "the sipp caller of 911"))
        # the call in sosdesk's history: a new call from the sipp caller, answered
        call = until(lambda: next((h for h in lab.history() if h["caller_number"] == "+15555550100"
                                   and h.get("answered_at")), None), 10, "the sipp 911 call answered in history")
        ctx["call"] = cid = call["call_id"]
        # the client prints the alert of this call
        end = time.time() + within
        while True:
            text = c.peer.wait_message(r"EMERGENCY CALL", max(0.1, end - time.time()))
            if "Call: %s" % cid in text:
                break
        if ALERT_TEXT not in text:
            raise AssertionError("the alert %s printed lacks %r:\n%s" % (kind, ALERT_TEXT, text))
        # the audit: delivered to desk1's contact
        want = [r"\(desk1\): delivered on attempt \d+"]
        if kind == "baresip" and not reconnect:
            # baresip takes only text/plain: 415, then sosdesk's text/plain re-send, delivered
            want = [r"\(desk1\): attempt 1 .*failed: 415 .*Accept: text/plain.*re-sent at once as text/plain",
                    r"\(desk1\): delivered on attempt 2 as text/plain: 200"]

        def audited():
            details = [r["detail"] for r in lab.audit(cid) if r["kind"] == "notified"]
            return all(any(re.search(w, d) for d in details) for w in want) and details
        try:
            until(audited, 10, "the audit of call %s" % cid)
        except AssertionError:
            details = [r["detail"] for r in lab.audit(cid) if r["kind"] == "notified"]
            raise AssertionError("call %s's notified events do not match %s:\n%s" % (cid, want, "\n".join(details)))
        return cid

    def c_notification():
        c = state["client"]
        cid = alert_of_incoming_call(HOLD_MS)
        alert = cap.wait_sip(lambda m: m.method == "MESSAGE" and m.dst == ("127.0.0.1", c.sip_port)
                             and ("Call: %s" % cid) in m.text_body(), 3, "sosdesk's alert MESSAGE to the client")
        if kind == "baresip":
            r415 = cap.wait_sip(lambda m: m.is_response and m.call_id == alert.call_id and m.status == 415, 3,
                                "baresip's 415 to the alert")
            if "text/plain" not in (r415.header("accept") or ""):
                raise AssertionError("baresip's 415 has no Accept: text/plain:\n%s" % r415)
            cap.wait_sip(lambda m: m.method == "MESSAGE" and m.call_id == alert.call_id
                         and (m.header("content-type") or "").startswith("text/plain"), 3,
                         "the alert re-sent as text/plain")
        else:
            # linphonec sends a delivery receipt (RFC 5438 IMDN) sosdesk answers 200
            imdn = cap.wait_sip(lambda m: m.method == "MESSAGE" and m.dst == lab.core
                                and "imdn" in (m.header("content-type") or "")
                                and alert.call_id in m.text_body(), 5,
                                "linphonec's IMDN receipt for the alert (message-id %s)" % alert.call_id)
            r = cap.wait_sip(lambda m: m.is_response and m.call_id == imdn.call_id and m.cseq_method == "MESSAGE",
                             5, "sosdesk's response to the IMDN")
            if r.status != 200:
                raise AssertionError("sosdesk answered linphonec's IMDN %d, not 200:\n%s\n%s" % (r.status, imdn, r))

    def d_listen():
        c, cid = state["client"], ctx["call"]
        c.peer.dial(c.target("conf-" + cid))
        c.peer.wait_established(10)
        inv = cap.wait_sip(lambda m: m.method == "INVITE" and ("conf-" + cid) in m.ruri and m.dst == lab.core
                           and m.header("authorization") and m.body, 3, "the client's authenticated join INVITE")
        ok = cap.wait_sip(lambda m: m.is_response and m.call_id == inv.call_id and m.cseq_method == "INVITE"
                          and m.status == 200, 3, "sosdesk's 200 to the join")
        client_port, offered = inv.sdp_attr()
        core_port, answered = ok.sdp_attr()
        if offered != "sendrecv":
            raise AssertionError("the client offered %s, not sendrecv: this check needs an ordinary "
                                 "two-way offer\n%s" % (offered, inv))
        want = "sendonly"  # RFC 3264 §6.1: the answer to sendrecv from a desk that may only listen
        if answered != want:
            raise AssertionError("sosdesk answered a listen-only desk's sendrecv offer with %s, not %s:\n%s"
                                 % (answered, want, ok))
        # RTP from sosdesk's port of this leg to the client's media port: a second of packets
        cap.wait_udp_count(("127.0.0.1", core_port), ("127.0.0.1", client_port), 50, 10, is_rtp)
        until(lambda: any(r["kind"] == "desk-joined" and "listen" in r["detail"] for r in lab.audit(cid)), 5,
              "a desk-joined (listen) event in call %s's audit" % cid)
        c.peer.hangup()
        for p, pre, what in state["sipp"]:
            lab.wait_sipp(p, pre, HOLD_MS / 1000 + 10, what)

    def b_call():
        c = state["client"]
        prov, ppre = lab.sipp("provider-b", "provider_answer.xml",
                              ["-p", str(lab.provider_port), "-mp", str(base + 80)], 30)
        until(lambda: udp_bound(lab.provider_port), 5, "sipp provider listening on %d" % lab.provider_port, 0.05)
        before = {h["call_id"] for h in lab.history()}
        c.peer.dial(c.target("911"))
        c.peer.wait_established(15)
        c.peer.hangup()
        lab.wait_sipp(prov, ppre, 10, "the provider (answers the client's 911 call)")
        call = until(lambda: next((h for h in lab.history() if h["call_id"] not in before
                                   and h["outcome"] == "ended"), None), 10, "the client's 911 call ended in history")
        if call["dialed"] != "911" or not call.get("answered_at") or call["route"] != "provider-primary":
            raise AssertionError("the audit store's record of the call is not a 911 call answered by "
                                 "provider-primary:\n%s" % json.dumps(call, indent=1))
        ctx["b_call"] = call["call_id"]

    # --- over TLS ---------------------------------------------------------------------------
    # What can be seen of SIP over TLS from outside: sosdesk's own records (its log's and API's
    # `tls:` peers) and the shape of the bytes on the wire (TLS records, no cleartext).

    def tls_connection(port):
        """The client's connection from port to sosdesk's TLS port: TLS from its first byte both
        ways (a ClientHello, a ServerHello back), records only, and application data both ways."""
        up = (("127.0.0.1", port), ("127.0.0.1", lab.tls_port))
        down = (up[1], up[0])
        flows = cap.tcp_flows(lab.tls_port)
        for key, hello, who in ((up, 1, "client"), (down, 2, "sosdesk")):
            data = flows.get(key, b"")
            try:
                recs = tls_records(data)
            except ValueError as e:
                raise AssertionError("%s's side of the connection %s:%d -> %s:%d is not TLS: %s"
                                     % (who, key[0][0], key[0][1], key[1][0], key[1][1], e))
            if not recs or recs[0][0] != 22 or data[5:6] != bytes([hello]):
                raise AssertionError("%s's side of the connection from port %d does not begin with a TLS %s: %s"
                                     % (who, port, "ClientHello" if hello == 1 else "ServerHello", data[:16].hex(" ")))
            if not any(t == 23 for t, _ in recs):
                raise AssertionError("%s sent no TLS application data on the connection from port %d" % (who, port))

    def no_cleartext(c, words):
        """Nothing of `words` in any byte captured to or from sosdesk's TLS port, and no SIP message
        in clear to or from the client (its own SIP ports, its connection to sosdesk)."""
        for key, data in cap.tcp_flows(lab.tls_port).items():
            for w in words:
                if w.encode() in data:
                    raise AssertionError("%r in clear on the wire, %s:%d -> %s:%d" % (w, key[0][0], key[0][1],
                                                                                   key[1][0], key[1][1]))
        ports = c.ports | {ctx["flow"]}
        clear = cap.find_sip(lambda m: m.src[1] in ports or m.dst[1] in ports)
        if clear:
            raise AssertionError("SIP in clear between the client and sosdesk:\n%s" % "\n".join(map(str, clear[:3])))

    def tls_refuses_other_ca():
        # A second instance of the client that trusts only an unrelated CA: the handshake must fail
        # on the client's side (it sends an alert sosdesk logs), and nothing registers.
        w = state["client"] = Client(kind, lab, ca=certs["other_ca"], second=True)
        refused = r"SIP TLS handshake refused addr=127\.0\.0\.1:\d+ error=(received fatal alert: \w+)"
        registered = r'registered user="%s" peer=tls:' % DESK_USER
        try:
            until(lambda: lab.log_search(refused) or lab.log_search(registered), 10,
                  "sosdesk's log line 'SIP TLS handshake refused … received fatal alert' (the client refusing "
                  "the certificate)")
            contacts = registrar_bindings(lab.core, DESK_USER, DESK_PASS)
            if contacts or lab.log_search(registered):
                raise AssertionError("the client registered over TLS although it trusts only another CA: it does "
                                     "not check sosdesk's certificate; bindings: %s" % contacts)
        finally:
            w.peer.stop()
            state["client"] = None

    def tls_register():
        # the reconnect run: re-REGISTER every 30 s (sosdesk's shortest), so it comes within the wait
        c = state["client"] = Client(kind, lab, ca=certs["ca"], regint=30 if reconnect else 600)
        c.peer.wait_registered(10)
        contacts = registrar_bindings(lab.core, DESK_USER, DESK_PASS)
        if not any(re.search(r";transport=tls\b", x, re.I) for x in contacts):
            raise AssertionError("sosdesk's registrar lists no transport=tls contact for %s: %s"
                                 % (DESK_USER, contacts or "no bindings"))
        m = until(lambda: lab.log_search(r'registered user="%s" peer=tls:127\.0\.0\.1:(\d+) contacts=[1-9]'
                                         % DESK_USER), 5, "sosdesk's log line 'registered user=\"%s\" peer=tls:…'"
                  % DESK_USER)
        ctx["flow"] = port = int(m.group(1))
        # on the wire: that connection, TLS from its first byte
        cap.wait_tcp(lambda k, d: k == (("127.0.0.1", lab.tls_port), ("127.0.0.1", port))
                     and b"\x17\x03\x03" in d, 5, "sosdesk's TLS application data to port %d" % port)
        tls_connection(port)
        no_cleartext(c, ["REGISTER", "SIP/2.0", DESK_USER])

    def tls_notification():
        c = state["client"]
        down = (("127.0.0.1", lab.tls_port), ("127.0.0.1", ctx["flow"]))
        before = len(cap.tcp_flows(lab.tls_port).get(down, b""))
        cid = alert_of_incoming_call(TLS_HOLD_MS)
        # sosdesk says it sent the alert to the client's contact over TLS ...
        details = [r["detail"] for r in lab.audit(cid) if r["kind"] == "notified"]
        if not any(re.search(r"^sip:\S+;transport=tls ok: .*\(desk1\): delivered", d) for d in details):
            raise AssertionError("no audited delivery to a transport=tls contact:\n%s" % "\n".join(details))
        # ... and it went on the client's own connection: more ciphertext on it, no connection to
        # the client's TLS listener, nothing of it in clear anywhere
        sent = lambda: len(cap.tcp_flows(lab.tls_port).get(down, b"")) - before
        try:
            until(lambda: sent() >= len(ALERT_TEXT) + 300, 3, "the alert's bytes", 0.05)
        except AssertionError:
            raise AssertionError("sosdesk sent only %d bytes on the client's TLS connection (port %d) since the "
                                 "call came in: not the alert" % (sent(), ctx["flow"]))
        opened = cap.tcp_flows(c.sip_port + 1)
        if opened:
            raise AssertionError("a connection to the client's own TLS port %d: %s" % (c.sip_port + 1, list(opened)))
        tls_connection(ctx["flow"])
        no_cleartext(c, [ALERT_TEXT, "Call: %s" % cid, "Callback number", "MESSAGE"])
        for p, pre, what in state["sipp"]:
            lab.wait_sipp(p, pre, TLS_HOLD_MS / 1000 + 10, what)

    def tls_reconnect():
        # The desk's TLS connection breaks (the socket destroyed under both ends, as a NAT or a
        # network change does), the client does not notice until its next REGISTER, which opens a
        # new connection with the same Contact. An alert due meanwhile must reach it there once
        # it has registered again (its retries: 1, 2, 4, 8, 16, then 30 s apart).
        old = ctx["flow"]
        r = subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", ":%d" % old], capture_output=True, text=True)
        gone = lambda: ":%d " % old not in subprocess.run(["ss", "-tnH", "state", "established"], capture_output=True,
                                                          text=True).stdout
        until(gone, 2, "the connection from port %d destroyed (ss -K: %s; needs root and the kernel's "
                       "CONFIG_INET_DIAG_DESTROY)" % (old, (r.stderr or r.stdout).strip()), 0.05)
        cid = alert_of_incoming_call(TLS_HOLD_MS, within=50)
        new = lab.log_search(r'registered user="%s" peer=tls:127\.0\.0\.1:(?!%d\b)(\d+) contacts=[1-9]'
                             % (DESK_USER, old))
        if not new:
            raise AssertionError("the alert of call %s was delivered, but the client never registered again" % cid)
        for p, pre, what in state["sipp"]:
            lab.wait_sipp(p, pre, TLS_HOLD_MS / 1000 + 10, what)

    def tls_call():
        b_call()
        c, cid = state["client"], ctx["b_call"]
        # sosdesk's record of where the call came from: the client's TLS connection
        detected = [r["event"] for r in lab.api("/api/v1/calls/%s" % cid)["events"] if r["kind"] == "detected"]
        source = detected[0]["caller"]["source"] if detected else None
        want = "tls:127.0.0.1:%d" % ctx["flow"]
        if source != want:
            raise AssertionError("sosdesk's API says call %s came from %s, not %s (the client's TLS connection)"
                                 % (cid, source, want))
        tls_connection(ctx["flow"])
        no_cleartext(c, ["INVITE", "SIP/2.0", "sip:911@"])

    try:
        if reconnect:
            step("start sosdesk (with a TLS listener, a test CA's certificate) and the capture", start)
            step("a. registers as desk1 over TLS, re-REGISTER every 30 s", tls_register)
            step("r. its TLS connection breaks; the alert of a 911 call reaches it on the connection of its "
                 "next REGISTER", tls_reconnect)
            return True
        if tls:
            step("start sosdesk (with a TLS listener, a test CA's certificate) and the capture", start)
            step("0. trusting only another CA, the client refuses sosdesk's certificate (it checks it)",
                 tls_refuses_other_ca)
            step("a. registers as desk1 over TLS (sosdesk logs a tls: peer; TLS from the first byte)", tls_register)
            step("c. receives the alert of a 911 call on its TLS connection (printed, audited; none of it in clear)",
                 tls_notification)
            step("b. places a 911 call over TLS, answered by the provider (sosdesk: from the tls: connection)",
                 tls_call)
            return True
        step("start sosdesk, the capture and the client", start)
        step("a. registers as desk1 (registrar lists it; 200 Via received/rport)", a_register)
        step("c. receives the alert of a 911 call (EMERGENCY CALL to 911; audited delivered)", c_notification)
        step("d. listen-only desk joins conf-<call id> with sendrecv: 200 a=sendonly, RTP to it", d_listen)
        step("b. places a 911 call, answered by the provider, in the audit store", b_call)
        return True
    except Failed:
        return False
    finally:
        stop_all()


def main(argv):
    kinds = argv or KINDS
    for k in kinds:
        if k not in KINDS + EXTRA:
            print(__doc__)
            return 2
    binary = os.environ.get("SOSDESK_BIN")
    if not binary or not os.access(binary, os.X_OK):
        print("clients: SOSDESK_BIN=%r is not an executable sosdesk" % binary, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    work = tempfile.mkdtemp(prefix="sosdesk-clients-")
    t0, results, ok = time.time(), [], True
    try:
        base = free_block(BLOCK * len(kinds))
        for i, k in enumerate(kinds):
            ok = for_client(k, base + i * BLOCK, binary, work, results) and ok
    finally:
        stop_all()
    passed = sum(1 for r in results if r[2])
    print("clients: %d passed, %d failed, %.0f s (work dir %s)" % (passed, len(results) - passed,
                                                                  time.time() - t0, work))
    if ok and not os.environ.get("SOSDESK_CLIENTS_KEEP"):
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
