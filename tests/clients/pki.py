#!/usr/bin/env python3
"""A throw-away PKI for the SIP-over-TLS runs, made with the openssl CLI in the test's work dir:
a test CA and sosdesk's server certificate (SAN IP:127.0.0.1), and an unrelated CA nothing is
signed with (what a client that checks the server's certificate must refuse).

The same recipe as tests/it/support/pki.rs (what rustls takes): X.509 v3, EC P-256 keys in
PKCS#8 PEM (`openssl genpkey`), `basicConstraints CA:TRUE` + `keyCertSign` on the CA, `CA:FALSE`,
`digitalSignature`, EKU serverAuth and a subjectAltName on the leaf, issued by `openssl ca` whose
`-startdate` backdates the validity by a day (OpenSSL 3.0's `req -x509`/`x509 -req` cannot).

The server certificate also carries `DNS:127.0.0.1` next to `IP:127.0.0.1`: linphonec's TLS,
mbedTLS 2.28 (Debian 12), compares the host it connects to with the text of the subjectAltName
entries (the CN only when there is none), so an iPAddress entry never matches: with IP:127.0.0.1
alone, whatever the CN, linphonec refuses the certificate ("flags=[CN-mismatch]"). OpenSSL and
rustls match the IP entry.

    tests/clients/pki.py DIR      # makes DIR/ca.pem, DIR/server.pem, DIR/server.key, DIR/other-ca.pem
"""
import datetime
import os
import subprocess
import sys


def _openssl(d, *args):
    r = subprocess.run(["openssl"] + list(args), cwd=d, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("openssl %s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr.strip()))


def _ca(d, name, cn, san, start, end):
    db = name + "-db"
    os.makedirs(os.path.join(d, db), exist_ok=True)
    open(os.path.join(d, db, "index.txt"), "w").close()
    with open(os.path.join(d, db, "serial"), "w") as f:
        f.write("1000\n")
    with open(os.path.join(d, name + ".cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = this_ca\n"
                "[this_ca]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}\nserial = {db}/serial\n"
                "default_md = sha256\npolicy = policy_any\nunique_subject = no\ncopy_extensions = none\n"
                "[policy_any]\ncommonName = supplied\n"
                "[v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
                "subjectKeyIdentifier = hash\n"
                "[v3_server]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n"
                "extendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = {san}\n"
                "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n".format(db=db, san=san))
    _key_and_request(d, name, cn)
    _sign(d, name, ["-selfsign", "-keyfile", name + ".key"], name, "v3_ca", start, end)


def _key_and_request(d, who, cn):
    _openssl(d, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", who + ".key")
    _openssl(d, "req", "-new", "-key", who + ".key", "-subj", "/CN=" + cn, "-out", who + ".csr")


def _sign(d, ca, signer, who, extensions, start, end):
    _openssl(d, "ca", "-batch", "-notext", "-config", ca + ".cnf", *signer, "-in", who + ".csr",
             "-out", who + ".pem", "-extensions", extensions, "-startdate", start, "-enddate", end)


def make(d):
    """Make the PKI in d; return {ca, cert, key, other_ca} (absolute paths)."""
    d = os.path.abspath(d)
    os.makedirs(d, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    fmt = "%Y%m%d%H%M%SZ"  # GeneralizedTime, what `openssl ca -startdate/-enddate` takes
    start, end = (now - datetime.timedelta(days=1)).strftime(fmt), (now + datetime.timedelta(days=30)).strftime(fmt)
    san = "IP:127.0.0.1,DNS:127.0.0.1"
    _ca(d, "ca", "sosdesk clients test CA", san, start, end)
    _key_and_request(d, "server", "127.0.0.1")
    _sign(d, "ca", ["-cert", "ca.pem", "-keyfile", "ca.key"], "server", "v3_server", start, end)
    _ca(d, "other-ca", "unrelated test CA", san, start, end)
    return {"ca": os.path.join(d, "ca.pem"), "cert": os.path.join(d, "server.pem"),
            "key": os.path.join(d, "server.key"), "other_ca": os.path.join(d, "other-ca.pem")}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    for k, v in make(sys.argv[1]).items():
        print(k, v)
