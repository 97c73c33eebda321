//! A phone providing its user-entered location: SIP PUBLISH (RFC 3903) of a presence document
//! (event package `presence`, RFC 3856) that is a PIDF-LO (RFC 4119 §2: a location object is a
//! presence document with a `<geopriv>` status; RFC 5139 civic address). The phone's user, not
//! the network, says where it is: docs/location.md says why PUBLISH and what a phone sends.
//!
//! * digest (RFC 3261 §22) against the `[[lis.users]]` accounts (each for its own owner: the
//!   Request-URI's user, the presentity, RFC 3903 §6 step 2) and the desk accounts (anyone's);
//! * an initial PUBLISH or a modify (RFC 3903 §4.1, §4.4) carries the address: it is validated
//!   and kept with the network it came from — the user confirming it; a refresh (`SIP-If-Match`,
//!   no body, §4.3) only extends the publication: the phone sends it by itself, wherever it is,
//!   so it records no network and an entry stale on the phone's new network stays stale;
//!   `Expires: 0` with the entity-tag (§4.5) clears it; without one it is refused (400);
//! * the entity-tag is kept with the entry in the store: the engine makes each new tag (§6 step
//!   7) and hands it to the shell with the request's `SIP-If-Match`, and the store's write must
//!   find that tag on the owner's entry, or the answer is 412 (§6 step 4) and the phone publishes
//!   its body again. In the store, so that a refresh may reach any node: a 412 from a node that
//!   did not know the tag would make the phone send its body, which counts as the user confirming
//!   the address from wherever the phone is — a stale entry made current;
//! * the shell validates and writes the store ([`Output::EnterUserLocation`]) and hands the
//!   answer back ([`Engine::on_user_location_kept`]): 200 with `SIP-ETag` and `Expires` (§11.3)
//!   once it is kept; a refused address gets 488 with a Warning naming each reason. A kept
//!   entry or removal is audited by the shell (`user-location-changed`, with the PUBLISH's
//!   source); a refresh changes nothing and is not.

use std::time::Instant;

use super::{Engine, Output};
use crate::location::user_entered::{is_non_unique, owner_key, NetworkSeen};
use crate::location::Erl;
use crate::sip::digest::AuthFailure;
use crate::sip::transaction::{Peer, ServerKey};
use crate::sip::{ids, reason_phrase, Message, Uri};

/// PUBLISHes waiting for the store's answer at most (beyond: 503, try again).
const MAX_PENDING: usize = 256;

/// The expiry granted (RFC 3903 §6 step 5: the ESC chooses; the entry itself stays kept until
/// the network changes, cleared or replaced — the publication's expiry only asks the phone to
/// refresh, which is a confirmation).
const GRANTED_EXPIRES_S: u32 = 3600;

/// What the shell is asked to do with a PUBLISH.
#[derive(Debug, Clone, PartialEq)]
pub enum UserLocationChange {
    /// Validate and keep, seen on `network` (a PUBLISH with a body: the user confirming).
    Enter {
        erl: Box<Erl>,
        network: NetworkSeen,
    },
    /// A refresh (no body): only check there is still a kept entry; its network is unchanged.
    Refresh,
    Clear,
}

/// [`Output::EnterUserLocation`]: one PUBLISH to carry out, answered with
/// [`Engine::on_user_location_kept`] under `key`.
#[derive(Debug, Clone, PartialEq)]
pub struct UserLocationRequest {
    pub key: ServerKey,
    pub owner: String,
    pub entered_by: String,
    /// Where the PUBLISH came from (`udp:198.51.100.7:5060`), for the change's audit record.
    pub source: String,
    pub change: UserLocationChange,
    /// The request's `SIP-If-Match` (§4.3–4.5): the publication it refreshes, modifies or
    /// removes; the store's current tag must be this one, or the answer is 412.
    pub if_match: Option<String>,
    /// The entity-tag the publication gets when kept (§6 step 7: a new one each time).
    pub etag: String,
}

/// The shell's answer: kept (or cleared), or refused with a status and the reasons.
pub type UserLocationAnswer = Result<(), (u16, String)>;

impl Engine {
    pub(super) fn on_publish(&mut self, key: ServerKey, msg: Message, peer: Peer, now: Instant) {
        if !self.pass_guard(&key, &msg, peer, "PUBLISH", now) {
            return;
        }
        // RFC 3903 §6 step 3: the event package must be one this ESC takes.
        let event = msg.header("Event").map(|e| e.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        if event.as_deref() != Some("presence") {
            self.refuse(
                &key,
                &msg,
                peer,
                489,
                "only Event: presence (a PIDF-LO) is taken",
                &[("Allow-Events", "presence".into())],
            );
            return;
        }
        let auth: Vec<String> = msg.headers_named("Authorization").map(String::from).collect();
        let (desks, users) = (&self.accounts.desks.accounts, &self.accounts.lis_users);
        let ruri = msg.request_uri().unwrap_or("").to_string();
        let verified = self.accounts.desks.digest.verify(&auth, "PUBLISH", &ruri, peer.addr.ip(), self.now.wall, |u| {
            users
                .iter()
                .find(|a| a.username == u)
                .map(|a| a.password.as_str())
                .or_else(|| desks.iter().find(|a| a.username == u).map(|a| a.password.as_str()))
        });
        let user = match verified {
            Ok(user) => user,
            Err(AuthFailure::Missing) | Err(AuthFailure::Stale) => {
                let stale = matches!(verified, Err(AuthFailure::Stale));
                let challenge = self.accounts.desks.digest.challenge(stale, peer.addr.ip(), self.now.wall);
                self.refuse(&key, &msg, peer, 401, "credentials required", &[("WWW-Authenticate", challenge)]);
                return;
            }
            Err(AuthFailure::Invalid(why)) => {
                self.refuse(&key, &msg, peer, 403, "bad credentials", &[]);
                self.tally_refused(&msg, peer, 403, &format!("bad credentials: {why}"));
                self.credentials_failed(peer, now);
                return;
            }
        };
        self.credentials_ok(peer);
        // The presentity is the Request-URI (RFC 3903 §4): whose location this is.
        let Some(owner) = Uri::parse(&ruri).ok().and_then(|u| u.number()).and_then(|n| owner_key(&n).ok()) else {
            self.refuse(&key, &msg, peer, 404, "the Request-URI names no user", &[]);
            return;
        };
        let own = self.accounts.lis_users.iter().find(|u| u.username == user).map(|u| u.owner_key());
        if own.as_ref().is_some_and(|own| *own != owner) {
            self.refuse(&key, &msg, peer, 403, "a user may publish only its own location", &[]);
            self.tally_refused(&msg, peer, 403, &format!("{user:?} published for {owner:?}"));
            return;
        }
        let entered_by = match own {
            Some(_) => format!("sip-publish user {user}"),
            None => format!("sip-publish desk {user}"),
        };
        let expires = msg.header("Expires").and_then(|e| e.trim().parse::<u32>().ok());
        let if_match = msg.header("SIP-If-Match").map(|t| t.trim().to_string());
        // RFC 3903 §6 step 4 (a SIP-If-Match that is not the publication's entity-tag: 412) is
        // the store's to check, where the tag is kept for every node.
        let change = if expires == Some(0) {
            // §4.5: removal is a refresh with Expires 0 — it names the publication's entity-tag.
            if if_match.is_none() {
                self.refuse(&key, &msg, peer, 400, "removal (Expires: 0) needs the publication's SIP-If-Match", &[]);
                return;
            }
            UserLocationChange::Clear
        } else if msg.body.is_empty() && if_match.is_some() {
            UserLocationChange::Refresh
        } else {
            // The first address that can show a network (a phone's own private address behind its
            // home NAT is the same in every home: its NAT's public one is recorded instead).
            let ips = Self::device_addresses(&msg, None, peer);
            let ip = ips.iter().find(|ip| !is_non_unique(**ip)).or(ips.first()).copied();
            let network = NetworkSeen { ip, mac: None, bssid: None };
            match self.published_address(&msg) {
                Ok(erl) => UserLocationChange::Enter { erl: Box::new(erl), network },
                Err(why) => {
                    self.refuse(&key, &msg, peer, 400, &why, &[]);
                    return;
                }
            }
        };
        if self.accounts.pending_publish.len() >= MAX_PENDING {
            self.refuse(&key, &msg, peer, 503, "busy: publish again shortly", &[("Retry-After", "5".into())]);
            return;
        }
        let clear = change == UserLocationChange::Clear;
        let etag = ids::new_tag();
        self.accounts.pending_publish.insert(key.clone(), (msg, etag.clone(), clear));
        let source = peer.to_string();
        self.out.store_io.push_back(Output::EnterUserLocation(UserLocationRequest {
            key,
            owner,
            entered_by,
            source,
            change,
            if_match,
            etag,
        }));
    }

    /// The address a PUBLISH with a body carries (a refresh, §4.3, is handled before).
    fn published_address(&self, msg: &Message) -> Result<Erl, String> {
        if msg.body.is_empty() {
            // §6 step 4: an initial PUBLISH without a body is refused (400).
            return Err("an initial PUBLISH must carry a PIDF-LO (application/pidf+xml)".into());
        }
        // RFC 3903 §6 step 4 / RFC 3856 §5: the presence body type; a PIDF-LO is one (RFC 4119 §2).
        if msg.content_type().as_deref() != Some("application/pidf+xml") {
            return Err("the body is not application/pidf+xml (a PIDF-LO, RFC 4119)".into());
        }
        let location =
            crate::location::pidf::parse_pidf_lo(&msg.body).map_err(|e| format!("the PIDF-LO is not usable: {e}"))?;
        match location.erl.filter(|e| !e.civic.is_empty()) {
            Some(erl) => Ok(Erl { validated: false, elins: Vec::new(), floor_plan: None, ..erl }),
            None => Err("the PIDF-LO has no civic address (RFC 5139): a dispatchable location is civic".into()),
        }
    }

    /// The shell's answer to [`Output::EnterUserLocation`]: the PUBLISH answered.
    pub fn on_user_location_kept(&mut self, key: &str, answer: UserLocationAnswer, now: crate::clock::Now) {
        self.tick(now);
        let Some((msg, etag, clear)) = self.accounts.pending_publish.remove(key) else { return };
        match answer {
            Ok(()) if clear => {
                let mut r = msg.response(200, "OK", Some(&ids::new_tag()));
                r.push("Expires", "0".to_string());
                self.tx.respond(key, &r, self.now.mono);
            }
            Ok(()) => {
                let mut r = msg.response(200, "OK", Some(&ids::new_tag()));
                // §11.3: the entity-tag the store now keeps for the owner's next refresh (a new
                // one each time, §6 step 7); §11.3/§6 step 5: its expiry.
                r.push("SIP-ETag", etag);
                let asked = msg.header("Expires").and_then(|e| e.trim().parse::<u32>().ok());
                r.push("Expires", asked.unwrap_or(GRANTED_EXPIRES_S).min(GRANTED_EXPIRES_S).to_string());
                self.tx.respond(key, &r, self.now.mono);
            }
            Err((status, why)) => {
                let mut r = msg.response(status, reason_phrase(status), Some(&ids::new_tag()));
                r.push("Warning", format!("399 sosdesk \"{}\"", why.replace(['"', '\\'], "'")));
                self.tx.respond(key, &r, self.now.mono);
            }
        }
    }
}
