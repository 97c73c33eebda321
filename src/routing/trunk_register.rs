//! Trunk registration (issue 13): a provider that wants sosdesk registered before it takes its
//! calls (`register = true` on the route) gets a REGISTER (RFC 3261 §10.2) with the route's
//! digest credentials, refreshed before it expires, and retried with backoff while it fails.
//! Sans-I/O: the engine sends what this module builds and hands back the answers and time.
//! An emergency call never waits for a registration: a route is tried whatever its registration
//! says (the provider decides); the state is shown with the route's health.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::sip::digest;
use crate::sip::transaction::{ClientKey, Peer};
use crate::sip::Message;

/// The waits between failed attempts (then the last, again and again).
const BACKOFF: [Duration; 4] =
    [Duration::from_secs(5), Duration::from_secs(15), Duration::from_secs(30), Duration::from_secs(60)];
/// How long a REGISTER may go unanswered before it counts as failed.
const ANSWER_WITHIN: Duration = Duration::from_secs(8);

pub struct TrunkRegistration {
    pub route: usize,
    peer: Peer,
    /// `sip:DOMAIN` (the Request-URI) and `sip:USER@DOMAIN` (To and From).
    registrar: String,
    aor: String,
    user: String,
    password: String,
    realm: Option<String>,
    expires: u32,
    call_id: String,
    from_tag: String,
    cseq: u32,
    next_at: Instant,
    waiting: Option<(ClientKey, Instant, Message)>,
    /// The waiting REGISTER answers a challenge already: another challenge is a refusal.
    answered_challenge: bool,
    failures: usize,
    /// What an admin reads: `registered until …`, `failing: 403 Forbidden`, `registering`.
    pub state: String,
    pub registered_until: Option<DateTime<Utc>>,
}

/// What the engine must do after an answer or a timeout.
pub enum Step {
    Nothing,
    /// Send this REGISTER now (an answer to a challenge).
    Send(Message),
}

impl TrunkRegistration {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        route: usize,
        peer: Peer,
        domain: &str,
        user: &str,
        password: &str,
        realm: Option<&str>,
        expires: u32,
        call_id: String,
        now: Instant,
    ) -> TrunkRegistration {
        TrunkRegistration {
            route,
            peer,
            registrar: format!("sip:{domain}"),
            aor: format!("sip:{user}@{domain}"),
            user: user.to_string(),
            password: password.to_string(),
            realm: realm.map(str::to_string),
            expires,
            call_id,
            from_tag: crate::sip::ids::new_tag(),
            cseq: 0,
            next_at: now,
            waiting: None,
            answered_challenge: false,
            failures: 0,
            state: "registering".into(),
            registered_until: None,
        }
    }

    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// The registrar's address changed (the route's name resolved anew).
    pub fn set_peer(&mut self, peer: Peer) {
        self.peer = peer;
    }

    /// When this registration next needs the engine.
    pub fn next_timeout(&self) -> Instant {
        self.waiting.as_ref().map(|(_, sent, _)| *sent + ANSWER_WITHIN).unwrap_or(self.next_at)
    }

    pub fn owns(&self, key: &str) -> bool {
        self.waiting.as_ref().is_some_and(|(k, _, _)| k == key)
    }

    /// A REGISTER is due (`via` and `contact` are sosdesk's): the message to send, then
    /// [`TrunkRegistration::sent`] with its transaction.
    pub fn due(&mut self, now: Instant, via: String, contact: &str) -> Option<Message> {
        if self.waiting.is_some() || now < self.next_at {
            return None;
        }
        self.answered_challenge = false;
        Some(self.build(via, contact, None))
    }

    fn build(&mut self, via: String, contact: &str, credentials: Option<(&str, String)>) -> Message {
        self.cseq += 1;
        let mut m = Message::request("REGISTER", &self.registrar);
        m.push("Via", via);
        m.push("Max-Forwards", "70");
        m.push("From", format!("<{}>;tag={}", self.aor, self.from_tag));
        m.push("To", format!("<{}>", self.aor));
        m.push("Call-ID", self.call_id.clone());
        m.push("CSeq", format!("{} REGISTER", self.cseq));
        m.push("Contact", contact.to_string());
        m.push("Expires", self.expires.to_string());
        if let Some((header, value)) = credentials {
            m.push(header, value);
        }
        m
    }

    pub fn sent(&mut self, key: ClientKey, msg: Message, now: Instant) {
        self.waiting = Some((key, now, msg));
    }

    /// A final response to the waiting REGISTER. `via` is a fresh Via for an answer to a
    /// challenge.
    pub fn on_response(&mut self, msg: &Message, via: String, now: Instant, wall: DateTime<Utc>) -> Step {
        let status = msg.status().unwrap_or(0);
        if status < 200 {
            return Step::Nothing;
        }
        let Some((_, _, sent)) = self.waiting.take() else { return Step::Nothing };
        let reason = match &msg.start {
            crate::sip::StartLine::Response { reason, .. } if !reason.is_empty() => reason.as_str(),
            _ => crate::sip::reason_phrase(status),
        };
        match status {
            200..=299 => {
                // The expiry the registrar granted our contact (RFC 3261 §10.2.4), else its
                // Expires, else what we asked.
                let granted = granted_expires(msg).unwrap_or(self.expires).max(1);
                self.failures = 0;
                let until = wall + chrono::Duration::seconds(granted.into());
                self.registered_until = Some(until);
                self.state = format!("registered until {}", until.format("%Y-%m-%d %H:%M:%S UTC"));
                // Refreshed before it lapses: at half the interval for short ones, else a
                // minute before.
                let refresh = if granted <= 120 { granted / 2 } else { granted - 60 };
                self.next_at = now + Duration::from_secs(refresh.max(1).into());
                Step::Nothing
            }
            401 | 407 if !self.answered_challenge => {
                let (challenge, answer) = if status == 401 {
                    ("WWW-Authenticate", "Authorization")
                } else {
                    ("Proxy-Authenticate", "Proxy-Authorization")
                };
                let challenges: Vec<String> = msg.headers_named(challenge).map(str::to_string).collect();
                let registrar = self.registrar.clone();
                let answered = digest::answer_best(
                    &challenges,
                    "REGISTER",
                    &registrar,
                    &self.user,
                    &self.password,
                    self.realm.as_deref(),
                );
                match answered {
                    Some(credentials) => {
                        self.answered_challenge = true;
                        let contact = sent.header("Contact").unwrap_or_default().to_string();
                        Step::Send(self.build(via, &contact, Some((answer, credentials))))
                    }
                    None => {
                        self.fail(format!("{status} {reason}: no digest challenge sosdesk can answer"), now);
                        Step::Nothing
                    }
                }
            }
            _ => {
                let again = if self.answered_challenge { " (the credentials were refused)" } else { "" };
                self.fail(format!("{status} {reason}{again}"), now);
                Step::Nothing
            }
        }
    }

    /// The waiting REGISTER had no answer in time (or could not be sent): returns its
    /// transaction, to abandon.
    pub fn on_timeout(&mut self, now: Instant) -> Option<ClientKey> {
        let (key, sent, _) = self.waiting.as_ref()?;
        if now < *sent + ANSWER_WITHIN {
            return None;
        }
        let key = key.clone();
        self.waiting = None;
        self.fail(format!("no answer within {} s", ANSWER_WITHIN.as_secs()), now);
        Some(key)
    }

    pub fn on_unreachable(&mut self, now: Instant) -> Option<ClientKey> {
        let (key, _, _) = self.waiting.take()?;
        self.fail("unreachable".into(), now);
        Some(key)
    }

    fn fail(&mut self, why: String, now: Instant) {
        let wait = BACKOFF[self.failures.min(BACKOFF.len() - 1)];
        self.failures += 1;
        self.state = format!("failing: {why}; next try in {} s", wait.as_secs());
        self.next_at = now + wait;
        tracing::warn!(registrar = %self.registrar, aor = %self.aor, "trunk registration {}", self.state);
    }
}

/// The `expires` a 2xx to a REGISTER gives: the largest of its Contacts' `expires`, else its
/// `Expires` header (sosdesk registers one contact).
fn granted_expires(msg: &Message) -> Option<u32> {
    let from_contacts = msg
        .header_values("Contact")
        .iter()
        .filter_map(|c| {
            c.split(';').skip(1).find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim().eq_ignore_ascii_case("expires").then(|| v.trim().parse::<u32>().ok()).flatten()
            })
        })
        .max();
    from_contacts.or_else(|| msg.header("Expires").and_then(|e| e.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::Transport;

    fn reg(now: Instant) -> TrunkRegistration {
        let peer = Peer { transport: Transport::Udp, addr: ([127, 0, 0, 1], 5070).into() };
        TrunkRegistration::new(0, peer, "provider.example", "trunk1", "pw", None, 600, "reg-1".into(), now)
    }

    #[test]
    fn registers_answers_one_challenge_and_refreshes_before_expiry() {
        let t0 = Instant::now();
        let wall = Utc::now();
        let mut r = reg(t0);
        let first =
            r.due(t0, "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1".into(), "<sip:sosdesk@127.0.0.1:5060>").unwrap();
        assert_eq!(first.request_uri(), Some("sip:provider.example"));
        assert_eq!(first.header("To"), Some("<sip:trunk1@provider.example>"));
        assert_eq!(first.header("Expires"), Some("600"));
        r.sent("k1".into(), first.clone(), t0);
        assert!(r.due(t0, String::new(), "").is_none(), "one at a time");
        let mut challenge = first.response(401, "Unauthorized", Some("p1"));
        challenge.push("WWW-Authenticate", "Digest realm=\"provider.example\", nonce=\"n1\", qop=\"auth\"");
        let Step::Send(second) =
            r.on_response(&challenge, "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK2".into(), t0, wall)
        else {
            panic!("no answer to the challenge")
        };
        assert_eq!(second.header("CSeq"), Some("2 REGISTER"));
        assert_eq!(second.call_id(), Some("reg-1"));
        let auth = second.header("Authorization").unwrap();
        assert!(auth.contains("username=\"trunk1\"") && auth.contains("uri=\"sip:provider.example\""), "{auth}");
        r.sent("k2".into(), second.clone(), t0);
        let mut ok = second.response(200, "OK", Some("p1"));
        ok.push("Contact", "<sip:sosdesk@127.0.0.1:5060>;expires=120");
        assert!(matches!(r.on_response(&ok, String::new(), t0, wall), Step::Nothing));
        assert!(r.state.starts_with("registered until "), "{}", r.state);
        assert_eq!(r.next_timeout(), t0 + Duration::from_secs(60), "refreshed at half of a short grant");
    }

    #[test]
    fn a_second_challenge_or_silence_fails_with_backoff() {
        let t0 = Instant::now();
        let wall = Utc::now();
        let mut r = reg(t0);
        let first = r.due(t0, "v".into(), "<sip:c>").unwrap();
        r.sent("k1".into(), first.clone(), t0);
        let mut challenge = first.response(407, "Proxy Authentication Required", Some("p1"));
        challenge.push("Proxy-Authenticate", "Digest realm=\"p\", nonce=\"n1\"");
        let Step::Send(second) = r.on_response(&challenge, "v".into(), t0, wall) else { panic!() };
        assert!(second.header("Proxy-Authorization").is_some());
        r.sent("k2".into(), second, t0);
        assert!(matches!(r.on_response(&challenge, "v".into(), t0, wall), Step::Nothing));
        assert_eq!(
            r.state,
            "failing: 407 Proxy Authentication Required (the credentials were refused); next try in 5 s"
        );
        // Then silence: the next backoff.
        let t1 = t0 + Duration::from_secs(5);
        let third = r.due(t1, "v".into(), "<sip:c>").unwrap();
        r.sent("k3".into(), third, t1);
        assert_eq!(r.on_timeout(t1 + ANSWER_WITHIN), Some("k3".to_string()));
        assert_eq!(r.state, "failing: no answer within 8 s; next try in 15 s");
    }
}
