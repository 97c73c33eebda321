//! A throw-away PKI for the SIP-over-TLS tests, made with the `openssl` CLI (Debian package
//! `openssl`, installed by `test.sh`): a test CA with a server and a client certificate, and a
//! second, unrelated CA with its own client certificate for "wrong CA" tests.
//!
//! The certificates are what rustls (webpki) and Kamailio (OpenSSL) both insist on: X.509 v3,
//! `basicConstraints CA:TRUE` and `keyCertSign` on the CAs, `CA:FALSE`, `digitalSignature` and an
//! extended key usage on the leaves, a subjectAltName on the server (webpki ignores the CN).
//! Keys are EC P-256, PEM, PKCS#8 (`openssl genpkey`), which rustls's PEM reader and OpenSSL
//! both load. Validity starts a day in the past so that a clock a little behind, or a
//! certificate made in the same second the test uses it, is not "not yet valid".
//!
//! `openssl req -x509` / `x509 -req` (OpenSSL 3.0, Debian 12) cannot set the start date, so the
//! certificates are issued by `openssl ca`, whose `-startdate` can; it needs a tiny CA database,
//! kept in `<dir>/<ca>-db`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestPki {
    pub dir: PathBuf,
    /// The test CA: trust anchor of both sides.
    pub ca_cert: PathBuf,
    /// Signed by `ca_cert`; SAN: `DNS:<each name given>`, `IP:127.0.0.1`; EKU serverAuth and
    /// clientAuth (so the same identity can also be presented as a TLS client).
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// As `server_cert`, with EKU serverAuth only (as public CAs now issue them): no client
    /// certificate.
    pub server_only_cert: PathBuf,
    pub server_only_key: PathBuf,
    /// Signed by `ca_cert`; CN=sosdesk-test, EKU clientAuth.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// An unrelated CA (different name and key): nothing signed by it may be accepted.
    pub other_ca_cert: PathBuf,
    /// Signed by `other_ca_cert`, with the same subject (CN=sosdesk-test) as `client_cert`, so
    /// only the issuer tells them apart.
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
}

/// Make the PKI in `dir` (created if missing). Panics with openssl's own words if a step fails.
pub fn make_pki(dir: &Path, server_dns_names: &[&str]) -> TestPki {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    for name in server_dns_names {
        // The names go into an openssl config line; anything else than a host name would
        // break it in ways openssl reports badly.
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-._*".contains(c)),
            "not a DNS name for a certificate: {name:?}"
        );
    }
    // chrono is already a dependency of the crate; GeneralizedTime (YYYYMMDDHHMMSSZ) is what
    // `openssl ca -startdate/-enddate` accepts besides UTCTime.
    let now = chrono::Utc::now();
    let start = (now - chrono::Duration::days(1)).format("%Y%m%d%H%M%SZ").to_string();
    let end = (now + chrono::Duration::days(3650)).format("%Y%m%d%H%M%SZ").to_string();
    let mut san: Vec<String> = server_dns_names.iter().map(|n| format!("DNS:{n}")).collect();
    san.push("IP:127.0.0.1".into());
    let san = san.join(",");

    let ca = Ca::new(dir, "ca", "sosdesk test CA", &san, &start, &end);
    ca.issue("server", server_dns_names.first().copied().unwrap_or("sosdesk-test-server"), "v3_server");
    ca.issue("server-only", "sosdesk-test-server-only", "v3_server_only");
    ca.issue("client", "sosdesk-test", "v3_client");
    let other = Ca::new(dir, "other-ca", "unrelated test CA", &san, &start, &end);
    other.issue("other-client", "sosdesk-test", "v3_client");

    let f = |name: &str| dir.join(name);
    TestPki {
        dir: dir.to_path_buf(),
        ca_cert: f("ca.pem"),
        server_cert: f("server.pem"),
        server_key: f("server.key"),
        server_only_cert: f("server-only.pem"),
        server_only_key: f("server-only.key"),
        client_cert: f("client.pem"),
        client_key: f("client.key"),
        other_ca_cert: f("other-ca.pem"),
        other_client_cert: f("other-client.pem"),
        other_client_key: f("other-client.key"),
    }
}

/// One CA: its key and self-signed certificate (`<name>.key`, `<name>.pem`), and the
/// `openssl ca` config and database that issue the leaves.
struct Ca<'a> {
    dir: &'a Path,
    name: &'a str,
    config: String,
    start: &'a str,
    end: &'a str,
}

impl<'a> Ca<'a> {
    fn new(dir: &'a Path, name: &'a str, cn: &str, san: &str, start: &'a str, end: &'a str) -> Ca<'a> {
        let db = format!("{name}-db");
        std::fs::create_dir_all(dir.join(&db)).unwrap();
        std::fs::write(dir.join(&db).join("index.txt"), "").unwrap();
        // Serials only need to be unique per issuer (RFC 5280): one database per CA does that.
        std::fs::write(dir.join(&db).join("serial"), "1000\n").unwrap();
        // Paths in the config are relative: openssl runs with `dir` as its working directory.
        let config = format!(
            "[ca]\ndefault_ca = this_ca\n\
             [this_ca]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}\nserial = {db}/serial\n\
             default_md = sha256\npolicy = policy_any\nunique_subject = no\ncopy_extensions = none\n\
             [policy_any]\ncommonName = supplied\n\
             [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n\
             [v3_server]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
             extendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = {san}\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n\
             [v3_server_only]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
             extendedKeyUsage = serverAuth\nsubjectAltName = {san}\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n\
             [v3_client]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
             extendedKeyUsage = clientAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
        );
        let config_file = format!("{name}.cnf");
        std::fs::write(dir.join(&config_file), config).unwrap();
        let ca = Ca { dir, name, config: config_file, start, end };
        ca.key_and_request(name, cn);
        let key = format!("{name}.key");
        ca.sign(&["-selfsign", "-keyfile", &key], name, "v3_ca");
        ca
    }

    /// `<leaf>.key` and `<leaf>.pem`, signed by this CA with the config section `extensions`.
    fn issue(&self, leaf: &str, cn: &str, extensions: &str) {
        self.key_and_request(leaf, cn);
        let (cert, key) = (format!("{}.pem", self.name), format!("{}.key", self.name));
        self.sign(&["-cert", &cert, "-keyfile", &key], leaf, extensions);
    }

    fn key_and_request(&self, who: &str, cn: &str) {
        let key = format!("{who}.key");
        self.openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &key]);
        let (subject, csr) = (format!("/CN={cn}"), format!("{who}.csr"));
        self.openssl(&["req", "-new", "-key", &key, "-subj", &subject, "-out", &csr]);
    }

    /// `<who>.pem` from `<who>.csr`, with the validity dates `openssl req` cannot set.
    fn sign(&self, signer: &[&str], who: &str, extensions: &str) {
        let (csr, out) = (format!("{who}.csr"), format!("{who}.pem"));
        let mut args = vec!["ca", "-batch", "-notext", "-config", &self.config];
        args.extend_from_slice(signer);
        args.extend_from_slice(&["-in", &csr, "-out", &out, "-extensions", extensions]);
        args.extend_from_slice(&["-startdate", self.start, "-enddate", self.end]);
        self.openssl(&args);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .current_dir(self.dir)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl (Debian package openssl; test.sh installs it): {e}"));
        assert!(
            out.status.success(),
            "openssl {} failed ({}) in {}:\n{}",
            args.join(" "),
            out.status,
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
