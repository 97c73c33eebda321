//! HTTP Digest authentication for SIP (RFC 3261 §22.4, RFC 2617 §3.2 with qop=auth, MD5 — what
//! every SIP client and sipp speak). sosdesk is the server: it challenges with a nonce it can
//! check without keeping state (a timestamp and a keyed hash of it and the client's address),
//! verifies the response against the desk accounts of the config, and remembers the nonce count
//! of every answer it accepted, so that none is accepted twice (RFC 2617 §3.2.2's replay check).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use md5::{Digest as _, Md5};
use sha2::Sha256;

/// How long a nonce is good for; an older one gets a fresh challenge with `stale=true`.
const NONCE_LIFETIME: Duration = Duration::from_secs(300);

/// Past this many remembered nonces, the expired ones are forgotten. Only answers with the right
/// password are remembered, so nobody without one can grow the table.
const SWEEP_AT: usize = 1024;

/// Why a request's credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No Authorization header for this realm: challenge (401).
    Missing,
    /// The nonce is ours but too old: challenge again with `stale=true` (401).
    Stale,
    /// Unknown user, wrong password, a nonce we never issued, or a malformed header (403).
    Invalid(String),
}

fn md5_hex(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The parameters of a `Digest` credentials header value (RFC 2617 §3.2.2).
pub fn parse_params(value: &str) -> Option<HashMap<String, String>> {
    let rest = value.trim();
    let (scheme, rest) = rest.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut out = HashMap::new();
    let mut s = rest.trim_start();
    while !s.is_empty() {
        let (name, after) = s.split_once('=')?;
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (val, remaining) = if let Some(q) = after.strip_prefix('"') {
            // quoted-string: up to the next unescaped quote.
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &q[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(name, val);
        s = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

/// The server side: issues and checks nonces for one realm.
pub struct DigestServer {
    realm: String,
    key: [u8; 32],
    /// Each nonce that proved a password, with when it was issued and the highest nonce count
    /// accepted with it (`u32::MAX` once a no-qop answer, which has no count, used it).
    used: HashMap<String, (u64, u32)>,
    /// The table's size that triggers the next sweep: twice what the last one left (at least
    /// [`SWEEP_AT`]), so sweeping stays linear overall however many nonces are live.
    sweep_at: usize,
}

impl DigestServer {
    pub fn new(realm: &str) -> DigestServer {
        DigestServer { realm: realm.to_string(), key: rand::random(), used: HashMap::new(), sweep_at: SWEEP_AT }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A nonce for `client`, issued at `secs`: the time, a random salt, and a keyed hash of
    /// time, salt and address. Bound to the address, a nonce (and an answer captured on the
    /// network) is worth nothing from anywhere else, and packets with a spoofed source cannot
    /// present one that counts. The salt makes every challenge's nonce new, so two clients
    /// behind one address, challenged in the same second, never share a nonce count.
    fn nonce_at(&self, secs: u64, salt: u32, client: IpAddr) -> String {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(secs.to_be_bytes());
        h.update(salt.to_be_bytes());
        match client.to_canonical() {
            IpAddr::V4(a) => h.update(a.octets()),
            IpAddr::V6(a) => h.update(a.octets()),
        }
        format!("{secs:x}.{salt:08x}.{}", hex::encode(&h.finalize()[..12]))
    }

    /// When `nonce` was issued, if this server issued it to `client`.
    fn issued(&self, nonce: &str, client: IpAddr) -> Option<u64> {
        let mut parts = nonce.splitn(3, '.');
        let secs = u64::from_str_radix(parts.next()?, 16).ok()?;
        let salt = u32::from_str_radix(parts.next()?, 16).ok()?;
        (self.nonce_at(secs, salt, client) == nonce).then_some(secs)
    }

    /// The user name the request's credentials for this realm claim (for the audit log).
    pub fn claimed_user(&self, authorization: &[String]) -> String {
        self.ours(authorization).and_then(|p| p.get("username").cloned()).unwrap_or_default()
    }

    fn ours(&self, authorization: &[String]) -> Option<HashMap<String, String>> {
        authorization.iter().filter_map(|v| parse_params(v)).find(|p| p.get("realm").is_some_and(|r| *r == self.realm))
    }

    /// A `WWW-Authenticate` value (RFC 2617 §3.2.1) for a request from `client` at `now`.
    pub fn challenge(&self, stale: bool, client: IpAddr, now: DateTime<Utc>) -> String {
        let now = unix_secs(now);
        let opaque = hex::encode(&Sha256::digest(self.realm.as_bytes())[..8]);
        format!(
            "Digest realm=\"{}\", nonce=\"{}\", opaque=\"{opaque}\", algorithm=MD5, qop=\"auth\"{}",
            self.realm,
            self.nonce_at(now, rand::random(), client),
            if stale { ", stale=true" } else { "" }
        )
    }

    /// Check the `Authorization` values of a request to `request_uri` from `client`. `password`
    /// looks a user up. Returns the user name the credentials prove. An answer is accepted once:
    /// the same one again (captured and replayed with a spoofed source, say a `Contact: *`
    /// removal) is `Stale`, so an honest client simply answers a fresh challenge.
    pub fn verify<'a>(
        &mut self,
        authorization: &[String],
        method: &str,
        request_uri: &str,
        client: IpAddr,
        now: DateTime<Utc>,
        password: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<String, AuthFailure> {
        let creds = self.ours(authorization);
        // Credentials for another realm or scheme are not ours to judge (RFC 2617 §3.2.2; RFC 4475
        // §3.3.8's regaut01): challenge, as if there were none.
        let Some(p) = creds else {
            return Err(AuthFailure::Missing);
        };
        let field = |n: &str| p.get(n).map(String::as_str).unwrap_or("");
        let (user, nonce, uri, response) = (field("username"), field("nonce"), field("uri"), field("response"));
        if user.is_empty() || nonce.is_empty() || response.is_empty() {
            return Err(AuthFailure::Invalid("incomplete credentials".into()));
        }
        if let Some(alg) = p.get("algorithm") {
            if !alg.eq_ignore_ascii_case("MD5") {
                return Err(AuthFailure::Invalid(format!("algorithm {alg} is not supported")));
            }
        }
        // The nonce must be one we issued to this address (its keyed hash matches) and recent.
        // One that is not — forged, from another server, or issued to another address (a
        // client that moved, or a spoofed packet) — proves nothing and counts for nothing: the
        // client is challenged afresh (stale, RFC 2617 §3.2.1), without an audited failure.
        let Some(secs) = self.issued(nonce, client) else {
            return Err(AuthFailure::Stale);
        };
        // RFC 2617 §3.2.2.5: the credentials are for this Request-URI, so an answer captured for
        // one call's conference cannot open another's. Compared as URIs (scheme, user, host,
        // port), not as text: clients differ in parameters and case.
        if !same_resource(uri, request_uri) {
            return Err(AuthFailure::Invalid(format!("credentials for another URI ({uri:?})")));
        }
        let Some(pass) = password(user) else {
            return Err(AuthFailure::Invalid(format!("unknown user {user:?}")));
        };
        let ha1 = md5_hex(&[user, &self.realm, pass]);
        let ha2 = md5_hex(&[method, uri]);
        let expected = match p.get("qop").map(String::as_str) {
            Some("auth") => md5_hex(&[&ha1, nonce, field("nc"), field("cnonce"), "auth", &ha2]),
            None => md5_hex(&[&ha1, nonce, &ha2]),
            Some(q) => return Err(AuthFailure::Invalid(format!("qop {q} is not supported"))),
        };
        if !constant_time_eq(expected.as_bytes(), response.to_ascii_lowercase().as_bytes()) {
            return Err(AuthFailure::Invalid(format!("wrong password for {user:?}")));
        }
        if unix_secs(now).saturating_sub(secs) > NONCE_LIFETIME.as_secs() {
            return Err(AuthFailure::Stale);
        }
        // RFC 2617 §3.2.2: the client counts the requests it answers with one nonce (nc), and
        // "the server can detect request replays" by refusing a count it has seen. Without qop
        // there is no count: the nonce is good for one request.
        let count = match p.get("qop") {
            // Exactly 8 hex digits (RFC 2617 §3.2.2's nc-value).
            Some(_) => match u32::from_str_radix(field("nc"), 16) {
                Ok(n) if field("nc").len() == 8 && n > 0 && n < u32::MAX => n,
                _ => {
                    return Err(AuthFailure::Invalid(format!("nonce count {:?} is not 00000001-fffffffe", field("nc"))))
                }
            },
            None => u32::MAX,
        };
        if self.used.get(nonce).is_some_and(|&(_, highest)| count <= highest) {
            tracing::warn!(user, %client, nc = field("nc"), "digest answer replayed (nonce count already used): challenged afresh");
            return Err(AuthFailure::Stale);
        }
        if self.used.len() >= self.sweep_at {
            self.used.retain(|_, (issued, _)| unix_secs(now).saturating_sub(*issued) <= NONCE_LIFETIME.as_secs());
            self.sweep_at = (self.used.len() * 2).max(SWEEP_AT);
        }
        self.used.insert(nonce.to_string(), (secs, count));
        Ok(user.to_string())
    }
}

/// Whether two URIs name the same resource: scheme, user part, host (any case) and port.
fn same_resource(a: &str, b: &str) -> bool {
    match (super::uri::Uri::parse(a), super::uri::Uri::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.scheme == b.scheme
                && a.user == b.user
                && a.host.eq_ignore_ascii_case(&b.host)
                && a.port == b.port
                && a.opaque == b.opaque
        }
        _ => a == b,
    }
}

/// Compare secrets without a timing side channel on where they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A digest algorithm a client can answer with (RFC 2617's MD5, RFC 8760's SHA-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// From a challenge's `algorithm` (absent: MD5, RFC 2617 §3.2.1); `None`: one sosdesk does
    /// not answer (the `-sess` variants, SHA-512-256).
    fn of(challenge: &HashMap<String, String>) -> Option<Algorithm> {
        match challenge.get("algorithm").map(|a| a.trim().to_ascii_uppercase()).as_deref() {
            None | Some("MD5") => Some(Algorithm::Md5),
            Some("SHA-256") => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn hex(self, parts: &[&str]) -> String {
        match self {
            Algorithm::Md5 => md5_hex(parts),
            Algorithm::Sha256 => {
                use sha2::Digest as _;
                let mut h = sha2::Sha256::new();
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        h.update(b":");
                    }
                    h.update(p.as_bytes());
                }
                hex::encode(h.finalize())
            }
        }
    }
}

/// The client side: the `Authorization` value answering a challenge (used by the desk app's
/// conference leg, the routes to providers and tests). `None`: not a digest challenge this
/// client can answer.
pub fn answer(challenge: &str, method: &str, uri: &str, user: &str, password: &str) -> Option<String> {
    let c = parse_params(challenge)?;
    let alg = Algorithm::of(&c)?;
    let realm = c.get("realm")?;
    let nonce = c.get("nonce")?;
    let ha1 = alg.hex(&[user, realm, password]);
    let ha2 = alg.hex(&[method, uri]);
    let qop_auth = c.get("qop").is_some_and(|q| q.split(',').any(|x| x.trim() == "auth"));
    let opaque = c.get("opaque").map(|o| format!(", opaque=\"{o}\"")).unwrap_or_default();
    let algorithm = alg.name();
    if qop_auth {
        let cnonce = hex::encode(rand::random::<[u8; 8]>());
        let nc = "00000001";
        let response = alg.hex(&[&ha1, nonce, nc, &cnonce, "auth", &ha2]);
        Some(format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm={algorithm}, cnonce=\"{cnonce}\", qop=auth, nc={nc}{opaque}"
        ))
    } else {
        let response = alg.hex(&[&ha1, nonce, &ha2]);
        Some(format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm={algorithm}{opaque}"
        ))
    }
}

/// The answer to the best of several challenges (a server may offer one per algorithm, RFC
/// 8760 §2.4): SHA-256 where offered, else MD5; only challenges of `realm` when one is given.
pub fn answer_best(
    challenges: &[String],
    method: &str,
    uri: &str,
    user: &str,
    password: &str,
    realm: Option<&str>,
) -> Option<String> {
    let usable = |c: &&String| {
        parse_params(c).is_some_and(|p| {
            Algorithm::of(&p).is_some() && realm.is_none_or(|r| p.get("realm").is_some_and(|got| got == r))
        })
    };
    let strongest = challenges
        .iter()
        .filter(usable)
        .max_by_key(|c| parse_params(c).and_then(|p| Algorithm::of(&p)) == Some(Algorithm::Sha256))?;
    answer(strongest, method, uri, user, password)
}

/// Seconds since the Unix epoch (negative times, which no clock here gives, count as 0).
fn unix_secs(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example_response() {
        // RFC 2617 §3.5: Mufasa / Circle Of Life.
        let ha1 = md5_hex(&["Mufasa", "testrealm@host.com", "Circle Of Life"]);
        let ha2 = md5_hex(&["GET", "/dir/index.html"]);
        let r = md5_hex(&[&ha1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001", "0a4f113b", "auth", &ha2]);
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc7616_sha256_example_and_the_strongest_challenge_is_answered() {
        // RFC 7616 §3.9.1: Mufasa / Circle of Life, SHA-256, qop=auth.
        let alg = Algorithm::Sha256;
        let ha1 = alg.hex(&["Mufasa", "http-auth@example.org", "Circle of Life"]);
        let ha2 = alg.hex(&["GET", "/dir/index.html"]);
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let r = alg.hex(&[&ha1, nonce, "00000001", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "auth", &ha2]);
        assert_eq!(r, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");

        let md5 = "Digest realm=\"provider\", nonce=\"n1\", qop=\"auth\"".to_string();
        let sha = "Digest realm=\"provider\", nonce=\"n2\", qop=\"auth\", algorithm=SHA-256".to_string();
        let sess = "Digest realm=\"provider\", nonce=\"n3\", algorithm=MD5-sess".to_string();
        let uri = "sip:911@provider.example;user=phone";
        let best = answer_best(&[md5.clone(), sha.clone()], "INVITE", uri, "trunk", "pw", None).unwrap();
        assert!(best.contains("algorithm=SHA-256") && best.contains("nonce=\"n2\""), "{best}");
        let only_md5 = answer_best(&[sess.clone(), md5.clone()], "INVITE", uri, "trunk", "pw", None).unwrap();
        assert!(only_md5.contains("algorithm=MD5,") && only_md5.contains("nonce=\"n1\""), "{only_md5}");
        assert_eq!(answer_best(&[sess], "INVITE", uri, "trunk", "pw", None), None);
        assert_eq!(answer_best(std::slice::from_ref(&md5), "INVITE", uri, "trunk", "pw", Some("other")), None);
        assert!(answer_best(&[md5], "INVITE", uri, "trunk", "pw", Some("provider")).is_some());
        // What the server side checks, for SHA-256 too: the response is over the same fields.
        let p = parse_params(&best).unwrap();
        let ha1 = alg.hex(&["trunk", "provider", "pw"]);
        let ha2 = alg.hex(&["INVITE", uri]);
        let want = alg.hex(&[&ha1, "n2", &p["nc"], &p["cnonce"], "auth", &ha2]);
        assert_eq!(p["response"], want);
    }

    #[test]
    fn challenge_answer_verify_and_failures() {
        let mut s = DigestServer::new("sosdesk");
        let pw = |u: &str| (u == "desk1").then_some("correct horse");
        let (ip, elsewhere): (IpAddr, IpAddr) = ([192, 0, 2, 7].into(), [192, 0, 2, 8].into());
        let uri = "sip:conf-x@127.0.0.1";
        let ch = s.challenge(false, ip, Utc::now());
        let good = answer(&ch, "INVITE", uri, "desk1", "correct horse").unwrap();
        assert_eq!(s.verify(std::slice::from_ref(&good), "INVITE", uri, ip, Utc::now(), pw), Ok("desk1".into()));
        assert_eq!(s.claimed_user(std::slice::from_ref(&good)), "desk1");
        assert_eq!(s.verify(&[], "INVITE", uri, ip, Utc::now(), pw), Err(AuthFailure::Missing));
        let wrong = answer(&ch, "INVITE", uri, "desk1", "battery staple").unwrap();
        assert!(
            matches!(s.verify(&[wrong], "INVITE", uri, ip, Utc::now(), pw), Err(AuthFailure::Invalid(r)) if r.contains("wrong password"))
        );
        let unknown = answer(&ch, "INVITE", uri, "mallory", "x").unwrap();
        assert!(matches!(s.verify(&[unknown], "INVITE", uri, ip, Utc::now(), pw), Err(AuthFailure::Invalid(_))));
        // A nonce from another server (or forged) proves nothing: a fresh challenge, not a failure.
        let other = DigestServer::new("sosdesk").challenge(false, ip, Utc::now());
        let forged = answer(&other, "INVITE", uri, "desk1", "correct horse").unwrap();
        assert_eq!(s.verify(&[forged], "INVITE", uri, ip, Utc::now(), pw), Err(AuthFailure::Stale));
        // The same answer from another address (captured and replayed, or spoofed): the same.
        assert_eq!(
            s.verify(std::slice::from_ref(&good), "INVITE", uri, elsewhere, Utc::now(), pw),
            Err(AuthFailure::Stale)
        );
        // Replayed for another call's conference, or another method: refused.
        let other_call = s.verify(std::slice::from_ref(&good), "INVITE", "sip:conf-y@127.0.0.1", ip, Utc::now(), pw);
        assert!(matches!(other_call, Err(AuthFailure::Invalid(r)) if r.contains("another URI")));
        assert!(matches!(s.verify(&[good], "BYE", uri, ip, Utc::now(), pw), Err(AuthFailure::Invalid(_))));
        // An old nonce is stale.
        let old = format!("Digest realm=\"sosdesk\", nonce=\"{}\", qop=\"auth\"", s.nonce_at(1000, 7, ip));
        let stale = answer(&old, "INVITE", "sip:c", "desk1", "correct horse").unwrap();
        assert_eq!(s.verify(&[stale], "INVITE", "sip:c", ip, Utc::now(), pw), Err(AuthFailure::Stale));
    }

    /// `answer` with its nonce count set to `nc`.
    fn answer_nc(challenge: &str, uri: &str, nc: u32) -> String {
        let c = parse_params(challenge).unwrap();
        let ha1 = md5_hex(&["desk1", "sosdesk", "correct horse"]);
        let ha2 = md5_hex(&["REGISTER", uri]);
        let nc = format!("{nc:08x}");
        let response = md5_hex(&[&ha1, &c["nonce"], &nc, "c0ffee", "auth", &ha2]);
        format!(
            "Digest username=\"desk1\", realm=\"sosdesk\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", cnonce=\"c0ffee\", qop=auth, nc={nc}",
            c["nonce"]
        )
    }

    #[test]
    fn an_answer_is_accepted_once_and_the_nonce_count_must_grow() {
        let mut s = DigestServer::new("sosdesk");
        let pw = |u: &str| (u == "desk1").then_some("correct horse");
        let ip: IpAddr = [192, 0, 2, 7].into();
        let uri = "sip:127.0.0.1";
        let ch = s.challenge(false, ip, Utc::now());
        let first = answer_nc(&ch, uri, 1);
        assert_eq!(s.verify(std::slice::from_ref(&first), "REGISTER", uri, ip, Utc::now(), pw), Ok("desk1".into()));
        // The same answer again (a captured REGISTER replayed with the desk's address as its
        // source): challenged afresh, not accepted, not counted as a wrong password.
        assert_eq!(
            s.verify(std::slice::from_ref(&first), "REGISTER", uri, ip, Utc::now(), pw),
            Err(AuthFailure::Stale)
        );
        // The client's next request with the same nonce counts on: accepted; going back is not.
        assert_eq!(s.verify(&[answer_nc(&ch, uri, 3)], "REGISTER", uri, ip, Utc::now(), pw), Ok("desk1".into()));
        assert_eq!(s.verify(&[answer_nc(&ch, uri, 2)], "REGISTER", uri, ip, Utc::now(), pw), Err(AuthFailure::Stale));
        assert!(matches!(
            s.verify(&[answer_nc(&ch, uri, 0)], "REGISTER", uri, ip, Utc::now(), pw),
            Err(AuthFailure::Invalid(r)) if r.contains("nonce count")
        ));
        // Another challenge, in the same second to the same address (a second client behind
        // it), has a nonce of its own: its count starts afresh.
        let again = s.challenge(false, ip, Utc::now());
        assert_ne!(parse_params(&again).unwrap()["nonce"], parse_params(&ch).unwrap()["nonce"]);
        assert_eq!(s.verify(&[answer_nc(&again, uri, 1)], "REGISTER", uri, ip, Utc::now(), pw), Ok("desk1".into()));
        // Without qop (RFC 2069 clients) there is no count: a nonce proves one request.
        let no_qop = format!("Digest realm=\"sosdesk\", nonce=\"{}\"", s.nonce_at(now_secs() - 1, 7, ip));
        let once = answer(&no_qop, "REGISTER", uri, "desk1", "correct horse").unwrap();
        assert_eq!(s.verify(std::slice::from_ref(&once), "REGISTER", uri, ip, Utc::now(), pw), Ok("desk1".into()));
        assert_eq!(s.verify(&[once], "REGISTER", uri, ip, Utc::now(), pw), Err(AuthFailure::Stale));
        // A wrong password leaves nothing behind to fill the table with.
        let before = s.used.len();
        let wrong = answer(&s.challenge(false, ip, Utc::now()), "REGISTER", uri, "desk1", "battery staple").unwrap();
        assert!(matches!(s.verify(&[wrong], "REGISTER", uri, ip, Utc::now(), pw), Err(AuthFailure::Invalid(_))));
        assert_eq!(s.used.len(), before);
    }

    fn now_secs() -> u64 {
        unix_secs(Utc::now())
    }

    #[test]
    fn expired_nonces_are_forgotten() {
        let mut s = DigestServer::new("sosdesk");
        let pw = |u: &str| (u == "desk1").then_some("correct horse");
        let ip: IpAddr = [192, 0, 2, 7].into();
        let expired = now_secs() - NONCE_LIFETIME.as_secs() - 10;
        for i in 0..SWEEP_AT as u64 {
            s.used.insert(s.nonce_at(expired - i, 7, ip), (expired - i, 1));
        }
        let ch = s.challenge(false, ip, Utc::now());
        assert_eq!(
            s.verify(&[answer_nc(&ch, "sip:h", 1)], "REGISTER", "sip:h", ip, Utc::now(), pw),
            Ok("desk1".into())
        );
        assert_eq!(s.used.len(), 1, "only the live nonce is remembered");
    }

    #[test]
    fn parses_quoted_escaped_and_bare_values() {
        let p = parse_params(r#"Digest username="a\"b", realm="r", nc=00000001, qop=auth"#).unwrap();
        assert_eq!(p["username"], "a\"b");
        assert_eq!(p["nc"], "00000001");
        assert_eq!(p["qop"], "auth");
        assert!(parse_params("Basic abc").is_none());
    }
}
