#!/usr/bin/env python3
"""baresip 1.0.0 (Debian bookworm's baresip-core) as a headless, scripted SIP desk.

Config (write_config): SIP on 127.0.0.1:PORT (UDP and TCP; TLS on PORT+1), the account as a desk
of sosdesk (over UDP; or over TLS, given a CA file: OPENSSL_CNF says how the server's certificate
is checked), no sound card (the aubridge "echo" device is microphone and speaker at once, so RTP
flows both ways), commands over ctrl_tcp on CTRL_PORT.

Driving: ctrl_tcp takes netstrings `LEN:{"command":"dial","params":"911","token":"t"},` and
sends back responses and events (REGISTER_OK, CALL_ESTABLISHED, CALL_CLOSED, ...) on the same
connection. A received MESSAGE is no event: the menu module prints it on stdout as
`sip:FROM: "TEXT"`, the text's further lines following (text/plain bodies only; anything else is
answered 415 with `Accept: text/plain`). Registration: wait for the stdout line
`All 1 useragent registered successfully` (REGISTER_OK usually fires before ctrl_tcp is connected).

Alone, for a look at a sosdesk on 127.0.0.1:5060 (examples/lab.toml):
  tests/clients/baresip.py /tmp/bs 5062 5065 desk1 lobby-desk-secret 127.0.0.1:5060 [CA.pem]
(with CA.pem: over TLS, the registrar being sosdesk's `[sip] tls` address) and type baresip's own
commands (/dial 911, /hangup, /quit) on stdin.
"""
import json
import os
import re
import socket
import sys
import threading
import time

from peer import Peer


def write_config(d, sip_port, ctrl_port, user, password, registrar, rtp_ports, cafile=None, regint=600):
    """cafile: the account over TLS (`transport=tls` to registrar), trusting only the CAs in this
    PEM file — and checking the server's certificate against them (see OPENSSL_CNF)."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config"), "w") as f:
        f.write("""poll_method		epoll
sip_listen		127.0.0.1:{sip_port}
# the address its SDP names: without it, the default interface's (eth0). "lo" fails (no device).
net_interface		127.0.0.1
call_local_timeout	120
call_max_calls		4
# no sound card: the aubridge device "echo" is microphone and speaker, so what is received is
# sent back (RTP both ways, 20 ms). ausine is 48 kHz only and fails with G.711; aufile ends the
# call when its file ends. The ringer is a bridge device nobody reads.
audio_source		aubridge,echo
audio_player		aubridge,echo
audio_alert		aubridge,alert
ausrc_format		s16
auplay_format		s16
auenc_format		s16
audec_format		s16
audio_buffer		20-160
rtp_ports		{rtp_ports}
rtcp_mux		no
jitter_buffer_delay	5-10
rtp_stats		no
module_path		/usr/lib/baresip/modules
module			stdio.so
module			g711.so
module			aubridge.so
module_tmp		uuid.so
module_tmp		account.so
module_app		contact.so
# menu: dial/accept/hangup/quit, and the printing of received MESSAGEs
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:{ctrl_port}
statmode_default	off
""".format(sip_port=sip_port, ctrl_port=ctrl_port, rtp_ports=rtp_ports))
        if cafile:
            f.write("sip_cafile\t\t%s\n" % cafile)
    if cafile:
        with open(os.path.join(d, "openssl.cnf"), "w") as f:
            f.write(OPENSSL_CNF)
    elif os.path.exists(os.path.join(d, "openssl.cnf")):
        os.remove(os.path.join(d, "openssl.cnf"))
    # answermode=manual: an incoming call raises CALL_INCOMING and waits (not used by the tests);
    # regint: re-REGISTER interval; mwi=no: no SUBSCRIBE for voicemail.
    with open(os.path.join(d, "accounts"), "w") as f:
        f.write("<sip:%s@%s;transport=%s>;auth_pass=%s;answermode=manual;regint=%d;"
                "audio_codecs=pcmu,pcma;mwi=no\n" % (user, registrar, "tls" if cafile else "udp", password, regint))
    open(os.path.join(d, "contacts"), "w").close()


# baresip 1.0.0 has no setting that makes it check the server's certificate: `sip_cafile` only
# loads CAs into libre 1.1.0's OpenSSL context, which stays SSL_VERIFY_NONE for the connections
# it opens, and nothing reads the verification result or sets a host name (`sip_verify_server`
# and `sip_trans_def` came with baresip 1.1.0). OpenSSL itself can be told, for every context a
# program makes: its config's `system_default` section (SSL_CONF_cmd(3)) with `VerifyMode =
# Peer` makes each handshake fail unless the server's chain leads to a CA of `sip_cafile`
# ("tls: connect: error", sosdesk sees the alert UnknownCA). The chain only: no name is checked
# (OpenSSL's config has no command for the host).
OPENSSL_CNF = """openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
VerifyMode = Peer
"""


class Baresip(Peer):
    name = "baresip"

    def __init__(self, confdir, ctrl_port, log=None):
        env = None
        cnf = os.path.join(os.path.abspath(confdir), "openssl.cnf")
        if os.path.exists(cnf):  # over TLS (write_config with cafile)
            env = dict(os.environ, OPENSSL_CONF=cnf)
        super().__init__(["baresip", "-f", confdir], env=env, log=log)
        self.events, self.responses, self.ev_i = [], [], 0
        deadline = time.time() + 10
        while True:  # ctrl_tcp listens a moment after start: connect until it does
            try:
                self.sock = socket.create_connection(("127.0.0.1", ctrl_port), timeout=1)
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise AssertionError("baresip: ctrl_tcp not reachable on port %d; it said:\n%s"
                                         % (ctrl_port, self.tail(15)))
                time.sleep(0.05)
        self.sock.settimeout(None)
        threading.Thread(target=self._read_ctrl, daemon=True).start()

    def _read_ctrl(self):
        buf = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while True:  # netstring: LEN ":" JSON ","
                m = re.match(rb"(\d+):", buf)
                if not m or len(buf) < m.end() + int(m.group(1)) + 1:
                    break
                n = int(m.group(1))
                obj = json.loads(buf[m.end():m.end() + n])
                buf = buf[m.end() + n + 1:]
                self.note("CTL " + json.dumps(obj))
                with self.cond:
                    (self.events if obj.get("event") else self.responses).append(obj)
                    self.cond.notify_all()

    def cmd(self, command, timeout=5):
        """Run a command (`dial 911`, `hangup`, ...) and return its response."""
        name, _, params = command.partition(" ")
        msg = {"command": name, "token": "t%f" % time.time()}
        if params:
            msg["params"] = params
        data = json.dumps(msg).encode()
        self.note("CMD " + command)
        with self.cond:
            n = len(self.responses)
        self.sock.sendall(b"%d:%s," % (len(data), data))
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.responses) > n, timeout):
                raise AssertionError("baresip: no response to %r within %g s" % (command, timeout))
            return self.responses[n]

    def wait_event(self, etype, timeout=10):
        """The next event of this type after the last one waited for."""
        end = time.time() + timeout
        with self.cond:
            while True:
                for i in range(self.ev_i, len(self.events)):
                    if self.events[i].get("type") == etype:
                        self.ev_i = i + 1
                        return self.events[i]
                left = end - time.time()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError("baresip: no %s event within %g s (events so far: %s)"
                                         % (etype, timeout, [e.get("type") for e in self.events][-10:]))
                self.cond.wait(min(left, 0.5))

    # --- the steps the tests use ---------------------------------------------------------

    def wait_registered(self, timeout=10):
        self.wait_line(r"useragents? registered successfully", timeout, "the registration (200 to REGISTER)")

    def dial(self, target):
        """`dial 911` completes to sip:911@<registrar>;transport=udp (=tls for a TLS account: it
        appends the account's transport, also to a full URI that has one already)."""
        self.cmd("dial " + target)

    def wait_established(self, timeout=15):
        return self.wait_event("CALL_ESTABLISHED", timeout)

    def hangup(self, timeout=10):
        self.cmd("hangup")
        return self.wait_event("CALL_CLOSED", timeout)

    def wait_message(self, regex, timeout=10):
        """Text of the next received MESSAGE whose first line matches regex (all its lines)."""
        m = self.wait_line(r'^(sips?:\S+): "(%s.*)$' % regex, timeout, "a MESSAGE /%s/ printed" % regex)
        text = m.group(2)
        i = self.line_i
        while not text.endswith('"'):  # the text's further lines, up to the closing quote
            more = self.lines_after(i, 1)
            if not more:
                break
            text += "\n" + more[0]
            i += 1
        return text[:-1] if text.endswith('"') else text

    def quit_command(self):
        try:
            self.cmd("quit", timeout=1)
        except Exception:
            pass


if __name__ == "__main__":
    if len(sys.argv) < 7:
        print(__doc__)
        sys.exit(2)
    d, port, ctrl, user, pw, reg = sys.argv[1:7]
    ca = os.path.abspath(sys.argv[7]) if len(sys.argv) > 7 else None
    write_config(d, int(port), int(ctrl), user, pw, reg, "10000-10999", cafile=ca)
    if ca:
        os.environ["OPENSSL_CONF"] = os.path.join(os.path.abspath(d), "openssl.cnf")
    os.execvp("baresip", ["baresip", "-f", d])
