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

Usage: test_clients.py [baresip] [linphonec]   (default both). Env: SOSDESK_BIN (required),
SOSDESK_CLIENTS_KEEP=1 keeps the work dir on success (it is always kept on failure).
Every wait is on a condition with a deadline; every process started is stopped on exit.
"""
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import baresip  # noqa: E402
import linphone  # noqa: E402
from peer import die_with_parent  # noqa: E402
from sipcap import Capture, is_rtp  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SIPP_DIR = os.path.join(REPO, "tests", "sipp")
DESK_USER, DESK_PASS = "desk1", "lobby-desk-secret"   # examples/lab.toml: talk = false
ALERT_TEXT = "EMERGENCY CALL to 911"  # the first line of sosdesk's alert (docs/notifications.md)
HOLD_MS = 12000  # how long the sipp caller of c/d stays on the call after it is answered
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

    def __init__(self, work, base, binary):
        self.work, self.base, self.bin = work, base, binary
        os.makedirs(work, exist_ok=True)
        self.core = ("127.0.0.1", base)
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
    """What the checks need of a client: start registered, its ports, how it dials."""

    def __init__(self, kind, lab):
        self.kind, self.lab, b = kind, lab, lab.base
        self.dir = os.path.join(lab.work, kind)
        self.log = os.path.join(lab.work, kind + ".log")
        registrar = "127.0.0.1:%d" % b
        if kind == "baresip":
            self.sip_port, ctrl = b + 60, b + 65
            baresip.write_config(self.dir, self.sip_port, ctrl, DESK_USER, DESK_PASS, registrar,
                                 "%d-%d" % (b + 150, b + 169))
            self.peer = baresip.Baresip(self.dir, ctrl, log=self.log)
        else:
            self.sip_port = b + 70
            linphone.write_config(self.dir, self.sip_port, b + 170, DESK_USER, DESK_PASS, registrar)
            self.peer = linphone.Linphonec(self.dir, log=self.log)
        PROCS.append(self.peer)

    def target(self, user):
        """What to dial: baresip completes a bare user to its account's domain (sosdesk)."""
        return user if self.kind == "baresip" else "sip:%s@127.0.0.1:%d" % (user, self.lab.base)


# --- the checks ------------------------------------------------------------------------------

def for_client(kind, base, binary, work, results):
    lab = Lab(os.path.join(work, kind), base, binary)
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
            out = ["FAIL [%s] %s (%.1f s)" % (kind, name, dt), "  " + msg.replace("\n", "\n  ")]
            c = state["client"]
            if c:
                out += ["  -- %s output (last lines; all of it in %s):" % (kind, c.log),
                        "    " + c.peer.tail(25).replace("\n", "\n    ")]
            out += ["  -- sosdesk log (last lines; all of it in %s):" % os.path.join(lab.work, "sosdesk.log"),
                    "    " + tail(os.path.join(lab.work, "sosdesk.log"), 15).replace("\n", "\n    ")]
            if cap.proc:
                out += ["  -- SIP on the wire (last messages, headers; all of it in %s):" % cap.pcap_path,
                        "    " + cap.dump(headers_only=True, last=8).replace("\n", "\n    ")]
            print("\n".join(out), flush=True)
            results.append((kind, name, False, dt))
            raise Failed()
        dt = time.time() - t0
        print("PASS [%s] %s (%.1f s)" % (kind, name, dt), flush=True)
        results.append((kind, name, True, dt))

    ctx = {}

    def start():
        cap.start()
        PROCS.append(cap)
        lab.start()
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

    def c_notification():
        c = state["client"]
        prov, ppre = lab.sipp("provider-c", "provider_answer.xml",
                              ["-p", str(lab.provider_port), "-mp", str(base + 80)], 40)
        state["sipp"] = [(prov, ppre, "the provider of the incoming 911 call")]
        until(lambda: udp_bound(lab.provider_port), 5, "sipp provider listening on %d" % lab.provider_port, 0.05)
        caller, cpre = lab.sipp("caller-c", "caller_hangs_up.xml",
                                ["%s:%d" % lab.core, "-s", "911", "-p", str(lab.caller_port),
                                 "-mp", str(base + 90), "-set", "hold_ms", str(HOLD_MS)], 40)
        state["sipp"].append((caller, cpre, "the sipp caller of 911"))
        # the call in sosdesk's history: a new call from the sipp caller, answered
        call = until(lambda: next((h for h in lab.history() if h["caller_number"] == "+15555550100"
                                   and h.get("answered_at")), None), 10, "the sipp 911 call answered in history")
        ctx["call"] = cid = call["call_id"]
        # the client prints the alert of this call
        end = time.time() + 15
        while True:
            text = c.peer.wait_message(r"EMERGENCY CALL", max(0.1, end - time.time()))
            if "Call: %s" % cid in text:
                break
        if ALERT_TEXT not in text:
            raise AssertionError("the alert %s printed lacks %r:\n%s" % (kind, ALERT_TEXT, text))
        # the audit: delivered to desk1's contact
        want = [r"\(desk1\): delivered on attempt \d+"]
        if kind == "baresip":
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

    try:
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
    kinds = argv or ["baresip", "linphonec"]
    for k in kinds:
        if k not in ("baresip", "linphonec"):
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
