#!/usr/bin/env python3
"""linphonec 5.1 (Debian bookworm's linphone-cli) as a headless, scripted SIP desk, over stdin/stdout.

Config (write_config): DIR/linphonerc and DIR/home (its $HOME: the chat database lives there;
without [storage] uri it fails with "Unable to open linphone database"). SIP on 127.0.0.1:PORT,
UDP and TCP (TLS on PORT+1 when the account is over TLS); RTP on 127.0.0.1:RTP_PORT; the account
as a desk of sosdesk, over UDP, or over TLS with the server's certificate checked (its TLS is
mbedTLS 2.28, which matches the host against the certificate's dNSName entries only, so a
certificate for 127.0.0.1 needs DNS:127.0.0.1 besides IP:127.0.0.1: see pki.py).

linphonec prints call states and received chat messages, one line each:
  Call 1 to sip:911@... ringing.   Call 1 with sip:911@... connected.
  Media streams established with sip:... for call 1 (audio).   Call 1 with ... ended (No error).
  Message received from sip:sosdesk@127.0.0.1: EMERGENCY CALL to 911   (further lines follow)
It prints nothing when it registers: poll `status register` ("registered, identity=..."). With
no sound card, the command `soundcard use files` is needed first (there is no config key).

Alone, for a look at a sosdesk on 127.0.0.1:5060 (examples/lab.toml):
  tests/clients/linphone.py /tmp/lp 5064 desk1 lobby-desk-secret 127.0.0.1:5060 [CA.pem]
(with CA.pem: over TLS, the registrar being sosdesk's `[sip] tls` address)
then type `soundcard use files`, `status register`, `call sip:911@127.0.0.1:5060`, `terminate`.
"""
import os
import re
import sys

from peer import Peer

PROMPT = re.compile(r"^(linphonec> )+")


def write_config(d, sip_port, rtp_port, user, password, registrar, root_ca=None):
    """root_ca: the account over TLS (`transport=tls` to registrar; linphonec's own TLS port is
    SIP_PORT+1), trusting only the CAs of this PEM file; the server's certificate is checked
    against them and must name the registrar's host (verify_server_certs, verify_server_cn)."""
    os.makedirs(os.path.join(d, "home", ".local", "share", "linphone"), exist_ok=True)
    host = registrar.split(":")[0]
    tls = ("sip_tls_port=%d\nroot_ca=%s\nverify_server_certs=1\nverify_server_cn=1"
           % (sip_port + 1, os.path.abspath(root_ca))) if root_ca else "sip_tls_port=-1"
    with open(os.path.join(d, "linphonerc"), "w") as f:
        f.write("""[sip]
bind_address=127.0.0.1
sip_port={sip_port}
sip_tcp_port={sip_port}
{tls}
default_proxy=0
register_only_when_network_is_up=0
ping_with_options=0
use_ipv6=0
[rtp]
bind_address=127.0.0.1
audio_rtp_port={rtp_port}
audio_rtcp_mux=0
[net]
nat_policy_ref=
firewall_policy=0
[misc]
max_calls=4
[storage]
uri={d}/home/.local/share/linphone/linphone.db
[video]
enabled=0
capture=0
display=0
[sound]
echocancellation=0
[proxy_0]
reg_proxy=<sip:{registrar};transport={transport}>
reg_identity=<sip:{user}@{host}>
reg_expires=600
reg_sendregister=1
publish=0
dial_escape_plus=0
[auth_info_0]
username={user}
passwd={password}
realm=sosdesk
""".format(sip_port=sip_port, rtp_port=rtp_port, d=os.path.abspath(d), registrar=registrar,
           user=user, host=host, password=password, tls=tls, transport="tls" if root_ca else "udp"))


class Linphonec(Peer):
    name = "linphonec"

    def __init__(self, confdir, log=None):
        env = dict(os.environ, HOME=os.path.join(os.path.abspath(confdir), "home"))
        super().__init__(["linphonec", "-c", os.path.join(confdir, "linphonerc")], env=env, log=log)
        self.cmd("soundcard use files")
        self.wait_line(r"^Using wav files instead of soundcard", 10, "'soundcard use files' taken")

    def clean(self, line):
        return PROMPT.sub("", super().clean(line))

    def cmd(self, line):
        self.note(">>> " + line)
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def poll(self, command, regex, timeout=10, every=0.25, what=None):
        """Send command every `every` s until it prints a line matching regex."""
        import time
        end = time.time() + timeout
        while True:
            self.cmd(command)
            try:
                return self.wait_line(regex, every)
            except AssertionError:
                if time.time() > end or self.proc.poll() is not None:
                    raise AssertionError("linphonec: %r never printed /%s/ within %g s (%s)"
                                         % (command, regex, timeout, what or ""))

    # --- the steps the tests use ---------------------------------------------------------

    def wait_registered(self, timeout=10):
        self.poll("status register", r"^registered, identity=", timeout, what="the registration")

    def dial(self, uri):
        self.cmd("call " + uri)

    def wait_established(self, timeout=15):
        return self.wait_line(r"^Call \d+ with .* connected\.", timeout, "the call connected")

    def hangup(self, timeout=10):
        self.cmd("terminate all")
        return self.wait_line(r"^Call \d+ with .* ended", timeout, "the call ended")

    def wait_message(self, regex, timeout=10):
        """Text of the next received chat message whose first line matches regex (all its lines:
        the lines after it up to the next line linphonec prints of its own)."""
        m = self.wait_line(r"^Message received from (\S+): (%s.*)$" % regex, timeout,
                           "a MESSAGE /%s/ printed" % regex)
        text, i = [m.group(2)], self.line_i
        # sosdesk's alert ends with its "Call: <id>" line; stop there
        while not text[-1].startswith("Call: "):
            more = self.lines_after(i, 1)
            if not more:
                break
            text.append(more[0])
            i += 1
        return "\n".join(text)

    def quit_command(self):
        self.cmd("quit")


if __name__ == "__main__":
    if len(sys.argv) < 6:
        print(__doc__)
        sys.exit(2)
    d, port, user, pw, reg = sys.argv[1:6]
    write_config(d, int(port), int(port) * 2 % 60000 + 2000, user, pw, reg,
                 root_ca=sys.argv[6] if len(sys.argv) > 6 else None)
    os.environ["HOME"] = os.path.join(os.path.abspath(d), "home")
    os.execvp("linphonec", ["linphonec", "-c", os.path.join(d, "linphonerc")])
