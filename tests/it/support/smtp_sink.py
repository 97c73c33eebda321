"""A real SMTP server for the email-channel tests (aiosmtpd, Debian python3-aiosmtpd):
STARTTLS offered and required (RFC 3207), or TLS from the first byte (RFC 8314), with the test
PKI's certificate; with USER and PASSWORD, SMTP AUTH required (over TLS). Every message received
is written to OUT_DIR as JSON (envelope, decoded subject, text and HTML parts, whether it came
over TLS, who authenticated), named <n>.json and renamed into place so a reader never sees half
a file.

usage: smtp_sink.py PORT CERT KEY OUT_DIR starttls|implicit [USER PASSWORD]
(writes OUT_DIR/ready once it listens)
"""
import email
import email.policy
import json
import os
import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Sink:
    def __init__(self, out):
        self.out = out
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = {}
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                parts[part.get_content_type()] = part.get_content()
        self.n += 1
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(msg["subject"]),
            "importance": msg.get("importance"),
            "text": parts.get("text/plain", ""),
            "html": parts.get("text/html", ""),
            # STARTTLS sets session.ssl; implicit TLS shows in the transport.
            "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
            "login": session.auth_data.decode() if isinstance(session.auth_data, bytes) else None,
        }
        tmp = os.path.join(self.out, f".{self.n}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.out, f"{self.n}.json"))
        return "250 Message accepted for delivery"


def main():
    port, cert, key, out, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    kwargs = {}
    if len(sys.argv) > 7:
        user, password = sys.argv[6].encode(), sys.argv[7].encode()

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login == user and auth_data.password == password
            return AuthResult(success=ok, auth_data=auth_data.login if ok else None)

        # aiosmtpd counts only STARTTLS as TLS for auth_require_tls: over implicit TLS it would
        # hide AUTH, though the whole session is encrypted.
        kwargs = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": mode != "implicit"}
    if mode == "implicit":
        kwargs["ssl_context"] = ctx
    else:
        kwargs["tls_context"] = ctx
        kwargs["require_starttls"] = True
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    open(os.path.join(out, "ready"), "w").close()
    signal.pause()  # the test kills it


if __name__ == "__main__":
    main()
