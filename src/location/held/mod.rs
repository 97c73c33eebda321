//! HELD: the endpoint devices ask for their own location (HTTP-Enabled Location Delivery,
//! RFC 5985), with device identity (RFC 6155) and sosdesk's network-attachment identifiers.
//!
//! A device POSTs a `locationRequest`; the LIS looks the device up through a [`Locator`] (the
//! wiremap) and answers with a `locationResponse` carrying a PIDF-LO by value, or with a HELD
//! `error` document. What the device is:
//!
//! * with no device identity, the request's source address (RFC 5985 §5.1: "the source IP address
//!   of the location request message as the primary source of identity");
//! * with an RFC 6155 `<device>` (namespace [`ns::HELD_ID`]): its `<ip v="4|6">` and `<mac>`
//!   identifiers, plus sosdesk's attachment identifiers in the same `<device>` (below). When a
//!   device identity is given the source address is *not* added to it: a third party (a call
//!   server) asking about a phone must get the phone's location, never its own.
//!
//! ## Network attachment: a sosdesk extension
//!
//! RFC 6155 has no identifier for the Wi-Fi access point a device is associated with or the
//! switch port it is plugged into, which is what an enterprise wiremap is keyed on (as in Skype for
//! Business). Its `<device>` holds identifiers from any namespace (`xs:any ##any` in its §6
//! schema), so sosdesk accepts these there, in the namespace [`ns::ATTACHMENT`]:
//!
//! ```xml
//! <device xmlns="urn:ietf:params:xml:ns:geopriv:held:id"
//!         xmlns:att="urn:x-sosdesk:params:xml:ns:held:attachment">
//!   <mac>00-0d-4b-30-72-df</mac>
//!   <att:bssid>00-11-22-33-44-55</att:bssid>
//!   <att:chassis>0B-23-CD-16-AA-BB</att:chassis>
//!   <att:port subtype="LocallyAssigned">Gi1/0/7</att:port>
//! </device>
//! ```
//!
//! Its schema is `tests/fixtures/held/xsd/sosdesk-held-attachment.xsd`; docs/held.md describes it
//! for client writers.
//!
//! ## Errors and HTTP status codes
//!
//! HELD errors are application-level and travel in a 200 response (RFC 5985 §6.3: "HELD error
//! messages MUST be carried by a 200 OK"; §8: every locationResponse and error is 2xx). Only what
//! never becomes a HELD exchange gets an HTTP error, with a `text/plain` body: a method other than
//! POST (405), another path (404), a conditional request (412, §8), a Content-Type or Accept that
//! is not HELD (406, as §8 says), a body over [`MAX_BODY`] (413).
//!
//! Codes used (RFC 5985 §6.3 and the RFC 6155 registration; the IANA registry has no
//! `badRequest`): `xmlError` for a body that is not UTF-8, not well-formed, uses a DTD, nests too
//! deep or breaks the schema in a part the LIS understands; `unsupportedMessage` for any document
//! element other than `locationRequest` (§5.1 MUST); `badIdentifier` for a device identifier that
//! is malformed, not supported, or not accepted from this requester; `cannotProvideLiType` when
//! `exact="true"` asks for geodetic or location-URI information (sosdesk has civic ERLs and serves
//! location by value only); `locationUnknown` when the wiremap has no location for the device;
//! `generalLisError` when the server cannot see the request's source address.
//!
//! The parts: `protocol` reads a `locationRequest` and writes the `locationResponse` or `error`
//! documents, `http` is the axum endpoint around [`HeldState::respond`], and `cache` remembers the
//! last location served per device ([`HeldCache`]).

mod cache;
mod http;
mod protocol;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use super::pidf::{build_pidf_lo, PidfLoInput};
use super::user_entered::UserLocationBook;
use super::{DeviceAttachment, LocationSource, Locator, MatchKind};
pub use cache::HeldCache;
pub use http::{router, serve};
use protocol::{error_document, location_response, parse_request, Fault, Identity, LiType};

/// The HELD media type (RFC 5985 §11.3), for requests and responses alike.
pub const MEDIA_TYPE: &str = "application/held+xml";

/// The Content-Type of every HELD response: RFC 5985 §5 says the charset parameter "MUST be
/// included", and HELD messages are UTF-8.
pub const CONTENT_TYPE: &str = "application/held+xml;charset=utf-8";

/// Largest request body read. A `locationRequest` with a full device identity is well under
/// 2 KiB; anything near this is not a HELD client.
pub const MAX_BODY: usize = 64 * 1024;

/// XML namespaces of HELD messages.
pub mod ns {
    /// RFC 5985 §7: `locationRequest`, `locationResponse`, `error`.
    pub const HELD: &str = "urn:ietf:params:xml:ns:geopriv:held";
    /// RFC 6155 §6: `<device>` and its identifiers.
    pub const HELD_ID: &str = "urn:ietf:params:xml:ns:geopriv:held:id";
    /// sosdesk's network-attachment identifiers inside an RFC 6155 `<device>`: `<bssid>`,
    /// `<chassis>`, `<port subtype>` (module documentation; docs/held.md). Not registered
    /// anywhere: an `x-` URN, private to sosdesk.
    pub const ATTACHMENT: &str = "urn:x-sosdesk:params:xml:ns:held:attachment";
}

/// The error codes of the IANA "HELD Error Codes" registry: RFC 5985 §6.3 and RFC 6155's
/// `badIdentifier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request was badly formed other than in its XML.
    RequestError,
    /// The XML was badly formed or invalid.
    XmlError,
    /// An unspecified error at the LIS.
    GeneralLisError,
    /// The LIS could not determine the device's location (it may ask again later).
    LocationUnknown,
    /// The document element is not a supported request.
    UnsupportedMessage,
    /// Not answered within the request's `responseTime`.
    Timeout,
    /// `exact="true"` asked for a location type the LIS cannot provide.
    CannotProvideLiType,
    /// The device is outside the network the LIS serves; it must not ask again.
    NotLocatable,
    /// RFC 6155: a device identifier was not supported, badly formatted, or not one the
    /// requester may ask about.
    BadIdentifier,
}

impl ErrorCode {
    /// The registered token, as in the `code` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::RequestError => "requestError",
            ErrorCode::XmlError => "xmlError",
            ErrorCode::GeneralLisError => "generalLisError",
            ErrorCode::LocationUnknown => "locationUnknown",
            ErrorCode::UnsupportedMessage => "unsupportedMessage",
            ErrorCode::Timeout => "timeout",
            ErrorCode::CannotProvideLiType => "cannotProvideLiType",
            ErrorCode::NotLocatable => "notLocatable",
            ErrorCode::BadIdentifier => "badIdentifier",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host name given to [`HeldState::new`] is not a DNS name or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HELD host name {0:?} is not a DNS name or an IP address literal")]
pub struct InvalidHost(pub String);

// ------------------------------------------------------------------------------------------
// State and cache
// ------------------------------------------------------------------------------------------

/// Everything the HELD endpoint needs. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct HeldState {
    locator: Arc<dyn Locator>,
    host: String,
    provided_by: Option<String>,
    cache: HeldCache,
    identity_requesters: Option<Arc<[IpNet]>>,
    /// Told how every request was located (the unlocated report, `location::unlocated`).
    sightings: Option<SightingSink>,
    /// User-entered locations, served to a device the wiremap cannot locate from the address it
    /// entered its location from (`location::user_entered`).
    user_entered: Option<UserLocationBook>,
}

/// Where the HELD endpoint hands its sightings (the server records them).
pub type SightingSink = Arc<dyn Fn(crate::location::unlocated::Sighting) + Send + Sync>;

impl HeldState {
    /// `host` is the LIS's DNS name (or IP literal): the domain of the pseudonymous presentity
    /// (`pres:<random>@host`) in every PIDF-LO served.
    pub fn new(locator: Arc<dyn Locator>, host: &str) -> Result<HeldState, InvalidHost> {
        if !is_host(host) {
            return Err(InvalidHost(host.to_string()));
        }
        Ok(HeldState {
            locator,
            host: host.to_string(),
            provided_by: None,
            cache: HeldCache::default(),
            identity_requesters: None,
            sightings: None,
            user_entered: None,
        })
    }

    /// Share this cache (e.g. with the routing core) instead of a private one.
    pub fn with_cache(mut self, cache: HeldCache) -> HeldState {
        self.cache = cache;
        self
    }

    /// NENA Company ID of the location provider, sent as the PIDF-LO `<provided-by>` (see
    /// [`PidfLoInput::provided_by`]).
    pub fn with_provided_by(mut self, company_id: &str) -> HeldState {
        self.provided_by = Some(company_id.to_string());
        self
    }

    /// Accept RFC 6155 device identity only from requesters in these networks (call servers,
    /// the organisation's own subnets). Others may still ask for their own location by source
    /// address, or name only their own address in `<ip>`; any other identifier from them gets
    /// `badIdentifier` ("not one for which the requester was authorized"). Without this, any
    /// requester may name any device, as a Skype for Business LIS allowed.
    pub fn with_identity_requesters(mut self, networks: Vec<IpNet>) -> HeldState {
        self.identity_requesters = Some(networks.into());
        self
    }

    /// Tell `sink` how every request was located (by the wiremap, or not at all).
    pub fn with_sightings(mut self, sink: SightingSink) -> HeldState {
        self.sightings = Some(sink);
        self
    }

    /// Serve these user-entered locations when the wiremap has no answer.
    pub fn with_user_locations(mut self, book: UserLocationBook) -> HeldState {
        self.user_entered = Some(book);
        self
    }

    /// The cache of locations served, per device.
    pub fn cache(&self) -> &HeldCache {
        &self.cache
    }

    /// Answers one HELD request body, without any HTTP: what [`router`] sends back with
    /// status 200. `source` is the request's source address (the device, when the request
    /// carries no device identity); `now` stamps the PIDF-LO and `at` the cache entry.
    pub fn respond(&self, body: &[u8], source: Option<IpAddr>, now: DateTime<Utc>, at: Instant) -> HeldReply {
        match self.answer(body, source, now, at) {
            Ok((xml, kind, user_entered)) => HeldReply { xml, outcome: Ok(kind), user_entered },
            Err(fault) => HeldReply {
                xml: error_document(fault.code, &fault.message),
                outcome: Err(fault.code),
                user_entered: false,
            },
        }
    }

    fn answer(
        &self,
        body: &[u8],
        source: Option<IpAddr>,
        now: DateTime<Utc>,
        at: Instant,
    ) -> Result<(String, MatchKind, bool), Fault> {
        let request = parse_request(body)?;
        tracing::debug!(response_time = ?request.response_time, requested = ?request.requested, "HELD locationRequest");

        // RFC 5985 §6.2.1: with exact="true" the LIS MUST return the requested types only, or
        // an error. sosdesk has civic ERLs and does not serve location by reference (no
        // locationUriSet), so anything but civic cannot be honoured. Without exact, civic by
        // value is the allowed alternative (§6.2 "soft-failover").
        if request.requested.exact {
            let missing: Vec<&str> =
                request.requested.types.iter().filter(|t| **t != LiType::Civic).map(|t| t.as_str()).collect();
            if !missing.is_empty() {
                return Err(Fault::new(
                    ErrorCode::CannotProvideLiType,
                    format!(
                        "This LIS provides civic locations by value only; it cannot provide {} (RFC 5985 §6.2.1, exact=\"true\").",
                        missing.join(" or ")
                    ),
                ));
            }
        }

        let (attachments, described) = match &request.identity {
            Some(identity) => {
                if !self.identity_allowed(identity, source) {
                    return Err(Fault::new(
                        ErrorCode::BadIdentifier,
                        "This LIS accepts device identifiers only from authorized requesters; ask without a device element for your own location (RFC 6155).",
                    ));
                }
                (identity.attachments(), identity.describe())
            }
            None => match source {
                Some(ip) => {
                    let ip = ip.to_canonical();
                    (vec![DeviceAttachment { ip: Some(ip), ..DeviceAttachment::default() }], format!("IP address {ip}"))
                }
                None => {
                    tracing::warn!("HELD: no source address for a request without device identity (router served without connect info?)");
                    return Err(Fault::new(
                        ErrorCode::GeneralLisError,
                        "The LIS cannot see the address this request came from.",
                    ));
                }
            },
        };

        // Each attachment differs only in its IP (a device with several addresses); the best
        // match in wiremap precedence wins, the first on a tie.
        let found = attachments
            .iter()
            .filter_map(|a| self.locator.locate(a))
            .filter(|(erl, _)| !erl.civic.is_empty())
            .min_by_key(|(_, kind)| *kind);
        // Measured first; a user's entry only for a device the wiremap cannot place, and only
        // from the very address it was entered or confirmed from (docs/location.md) — the
        // address this request came from, never one the request names (a device element or a
        // header can name anyone's), and never a private one alone (`UserLocation::standing`).
        let entered = match (&found, &self.user_entered, source) {
            (None, Some(book), Some(ip)) => {
                book.for_device(&DeviceAttachment { ip: Some(ip.to_canonical()), ..DeviceAttachment::default() })
            }
            _ => None,
        };
        if let (Some(sink), Some(device)) = (&self.sightings, attachments.first()) {
            let source = match (&found, &entered) {
                (Some(_), _) => LocationSource::Wiremap,
                (None, Some(_)) => LocationSource::Manual,
                (None, None) => LocationSource::None,
            };
            sink(crate::location::unlocated::Sighting {
                at: now,
                asked: crate::location::unlocated::Asked::Held,
                device: device.clone(),
                source,
            });
        }
        if let (None, Some(entry)) = (&found, entered) {
            // Not cached: the HELD cache is what the network measured, and a call falls back to
            // it before any user entry.
            let entity = format!("pres:{:032x}@{}", rand::random::<u128>(), self.host);
            let pidf_doc = build_pidf_lo(&PidfLoInput {
                entity: &entity,
                device_id: None,
                erl: &entry.erl,
                geo: None,
                // RFC 4119 §2.2.3: entered by hand (IANA Method Tokens "Manual").
                method: "Manual",
                provided_by: self.provided_by.as_deref(),
                timestamp: now,
            });
            return Ok((location_response(&pidf_doc), MatchKind::Subnet, true));
        }
        let Some((erl, kind)) = found else {
            return Err(Fault::new(
                ErrorCode::LocationUnknown,
                format!("No location is known for the device with {described}."),
            ));
        };

        for a in &attachments {
            self.cache.record(a, erl.clone(), at);
        }

        // RFC 5985 §6.6: no means of identifying the device in the PIDF-LO: a unique, unlinked
        // presentity and no deviceID (so build_pidf_lo writes a <tuple>, as §10's examples do).
        let entity = format!("pres:{:032x}@{}", rand::random::<u128>(), self.host);
        let pidf_doc = build_pidf_lo(&PidfLoInput {
            entity: &entity,
            device_id: None,
            erl: &erl,
            geo: None,
            method: "Wiremap",
            provided_by: self.provided_by.as_deref(),
            timestamp: now,
        });
        Ok((location_response(&pidf_doc), kind, false))
    }

    fn identity_allowed(&self, identity: &Identity, source: Option<IpAddr>) -> bool {
        let Some(networks) = &self.identity_requesters else { return true };
        let Some(source) = source.map(|s| s.to_canonical()) else { return false };
        if networks.iter().any(|n| n.contains(&source)) {
            return true;
        }
        // A device that names only its own address is asking about itself (RFC 5985 §9.3).
        identity.ips.iter().all(|ip| *ip == source)
            && identity.mac.is_none()
            && identity.bssid.is_none()
            && identity.chassis_id.is_none()
            && identity.port_id.is_none()
    }
}

/// One HELD answer: the document and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldReply {
    /// A `locationResponse` or an `error` document (send as [`CONTENT_TYPE`], status 200).
    pub xml: String,
    /// How the device was found, or the HELD error code sent.
    pub outcome: Result<MatchKind, ErrorCode>,
    /// The location served is the one the device's user entered (matched by the device's address;
    /// `outcome` then says `Subnet`), not one the wiremap measured.
    pub user_entered: bool,
}

/// A DNS name (RFC 1123 labels) or an IP literal (IPv6 in brackets), as a URI host.
/// A host as a URI carries it (RFC 3986 §3.2.2): a name, an IPv4 address or `[IPv6]`.
pub fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// What the unit tests of the parts share: request documents and ERLs.
#[cfg(test)]
mod test_support {
    use std::sync::Arc;

    use super::ns;
    use crate::location::{CivicAddress, Erl};

    pub(super) const HELD_NS: &str = "urn:ietf:params:xml:ns:geopriv:held";

    pub(super) fn request(inner: &str) -> String {
        format!(r#"<locationRequest xmlns="{HELD_NS}">{inner}</locationRequest>"#)
    }

    pub(super) fn device(ids: &str) -> String {
        request(&format!(
            r#"<device xmlns="urn:ietf:params:xml:ns:geopriv:held:id" xmlns:att="{}">{ids}</device>"#,
            ns::ATTACHMENT
        ))
    }

    pub(super) fn erl(room: &str) -> Arc<Erl> {
        Arc::new(Erl {
            civic: CivicAddress { country: Some("US".into()), room: Some(room.into()), ..Default::default() },
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{device, erl, request};
    use super::*;
    use crate::location::Erl;

    struct OneRoom;
    impl Locator for OneRoom {
        fn locate(&self, d: &DeviceAttachment) -> Option<(Arc<Erl>, MatchKind)> {
            match (d.ip, d.mac) {
                (_, Some(_)) => Some((erl("mac"), MatchKind::Mac)),
                (Some(IpAddr::V4(a)), None) if a.octets()[0] == 10 => Some((erl("subnet"), MatchKind::Subnet)),
                (Some(IpAddr::V6(_)), None) => Some((Arc::new(Erl::default()), MatchKind::Subnet)),
                _ => None,
            }
        }
    }

    #[test]
    fn host_names() {
        for ok in ["lis.example.com", "localhost", "10.0.0.1", "[2001:db8::1]", "a-b.c1"] {
            assert!(is_host(ok), "{ok}");
        }
        for bad in ["", "lis example", "-a.com", "a..b", "2001:db8::1", "[x]", "a/b", "a@b", "é.com"] {
            assert!(!is_host(bad), "{bad}");
        }
    }

    #[test]
    fn respond_without_http() {
        let state = HeldState::new(Arc::new(OneRoom), "lis.example.com").unwrap();
        let now = DateTime::parse_from_rfc3339("2024-05-01T12:30:00Z").unwrap().with_timezone(&Utc);
        let src: IpAddr = "10.1.2.3".parse().unwrap();
        let at = Instant::now();
        let r = state.respond(request("").as_bytes(), Some(src), now, at);
        assert_eq!(r.outcome, Ok(MatchKind::Subnet));
        assert!(
            r.xml.contains("<ca:ROOM>subnet</ca:ROOM>")
                && r.xml.contains("<timestamp>2024-05-01T12:30:00Z</timestamp>")
        );
        assert!(
            !r.xml.contains("deviceID") && r.xml.contains("entity=\"pres:") && r.xml.contains("@lis.example.com\"")
        );
        assert_eq!(state.cache().last_for(&DeviceAttachment { ip: Some(src), ..Default::default() }).unwrap().1, at);

        // Unknown, an empty ERL, and no source address.
        let r = state.respond(request("").as_bytes(), Some("192.0.2.1".parse().unwrap()), now, at);
        assert_eq!(r.outcome, Err(ErrorCode::LocationUnknown));
        assert!(r.xml.contains("192.0.2.1"), "{}", r.xml);
        let r = state.respond(request("").as_bytes(), Some("2001:db8::1".parse().unwrap()), now, at);
        assert_eq!(r.outcome, Err(ErrorCode::LocationUnknown));
        assert_eq!(state.respond(request("").as_bytes(), None, now, at).outcome, Err(ErrorCode::GeneralLisError));

        // The best of several IPs in wiremap precedence, and identity wins over the source.
        let body = device(r#"<ip v="4">192.0.2.9</ip><mac>00-00-00-00-00-01</mac>"#);
        let r = state.respond(body.as_bytes(), Some(src), now, at);
        assert_eq!(r.outcome, Ok(MatchKind::Mac));
        assert!(state
            .cache()
            .last_for(&DeviceAttachment { ip: Some("192.0.2.9".parse().unwrap()), ..Default::default() })
            .is_some());

        // exact types.
        let civic = request(r#"<locationType exact="true">civic</locationType>"#);
        assert_eq!(state.respond(civic.as_bytes(), Some(src), now, at).outcome, Ok(MatchKind::Subnet));
        let geo = request(r#"<locationType exact="true">civic geodetic</locationType>"#);
        let r = state.respond(geo.as_bytes(), Some(src), now, at);
        assert_eq!(r.outcome, Err(ErrorCode::CannotProvideLiType));
        assert!(r.xml.contains("provide geodetic (RFC"), "{}", r.xml);
        let uri = request(r#"<locationType>locationURI</locationType>"#);
        assert_eq!(state.respond(uri.as_bytes(), Some(src), now, at).outcome, Ok(MatchKind::Subnet));
    }

    #[test]
    fn a_user_entry_only_for_the_global_address_the_request_came_from() {
        use crate::location::user_entered::{NetworkSeen, UserLocation, UserLocationBook};
        let book = UserLocationBook::default();
        let put = |owner: &str, ip: &str| {
            let mut erl = (*erl(owner)).clone();
            erl.civic.hno = Some("9100".into());
            book.put(UserLocation {
                owner: owner.into(),
                erl,
                network: NetworkSeen {
                    ip: Some(ip.parse().unwrap()),
                    mac: Some("0A-23-CD-16-AA-2E".into()),
                    bssid: None,
                },
                entered_by: "user x".into(),
                entered_at: Utc::now(),
                confirmed_at: Utc::now(),
            })
        };
        put("home", "192.168.1.20");
        put("global", "198.51.100.7");
        let state = HeldState::new(Arc::new(OneRoom), "lis.example.com")
            .unwrap()
            .with_identity_requesters(vec!["10.9.0.0/16".parse().unwrap()])
            .with_user_locations(book);
        let (now, at) = (Utc::now(), Instant::now());
        // Another device behind another 192.168.1.0/24 with the same address: nothing.
        let r = state.respond(request("").as_bytes(), Some("192.168.1.20".parse().unwrap()), now, at);
        assert_eq!((r.outcome, r.user_entered), (Err(ErrorCode::LocationUnknown), false));
        // An address a request names (even an authorized requester's): nothing.
        let named = device(r#"<ip v="4">198.51.100.7</ip>"#);
        let r = state.respond(named.as_bytes(), Some("10.9.8.7".parse().unwrap()), now, at);
        assert!(!r.user_entered && !r.xml.contains("9100"), "{}", r.xml);
        // The global address the request came from: the entry.
        let r = state.respond(request("").as_bytes(), Some("198.51.100.7".parse().unwrap()), now, at);
        assert!(r.user_entered && r.xml.contains("<gp:method>Manual</gp:method>"), "{}", r.xml);
    }

    #[test]
    fn identity_from_unlisted_requesters() {
        let state = HeldState::new(Arc::new(OneRoom), "lis.example.com")
            .unwrap()
            .with_identity_requesters(vec!["10.9.0.0/16".parse().unwrap()]);
        let now = Utc::now();
        let at = Instant::now();
        let by_mac = device(r#"<mac>00-00-00-00-00-01</mac>"#);
        let outsider: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(state.respond(by_mac.as_bytes(), Some(outsider), now, at).outcome, Err(ErrorCode::BadIdentifier));
        assert_eq!(
            state.respond(by_mac.as_bytes(), Some("10.9.8.7".parse().unwrap()), now, at).outcome,
            Ok(MatchKind::Mac)
        );
        // Naming only its own address is allowed; another address is not.
        let own = device(r#"<ip v="4">10.1.2.3</ip>"#);
        assert_eq!(state.respond(own.as_bytes(), Some(outsider), now, at).outcome, Ok(MatchKind::Subnet));
        let other = device(r#"<ip v="4">10.1.2.4</ip>"#);
        assert_eq!(state.respond(other.as_bytes(), Some(outsider), now, at).outcome, Err(ErrorCode::BadIdentifier));
        // Requests without identity are unaffected.
        assert_eq!(state.respond(request("").as_bytes(), Some(outsider), now, at).outcome, Ok(MatchKind::Subnet));
    }
}
