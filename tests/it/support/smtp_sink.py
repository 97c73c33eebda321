"""A real SMTP server for the email-channel tests (aiosmtpd, Debian python3-aiosmtpd):
STARTTLS offered and required (RFC 3207) with the test PKI's certificate; every message
received is written to OUT_DIR as JSON (envelope, decoded subject, text and HTML parts, whether
it came over TLS), named <n>.json and renamed into place so a reader never sees half a file.

usage: smtp_sink.py PORT CERT KEY OUT_DIR   (writes OUT_DIR/ready once it listens)
"""
import email
import email.policy
import json
import os
import signal
import ssl
import sys

from aiosmtpd.controller import Controller


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
            "tls": session.ssl is not None,
        }
        tmp = os.path.join(self.out, f".{self.n}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.out, f"{self.n}.json"))
        return "250 Message accepted for delivery"


def main():
    port, cert, key, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True)
    controller.start()
    open(os.path.join(out, "ready"), "w").close()
    signal.pause()  # the test kills it


if __name__ == "__main__":
    main()
