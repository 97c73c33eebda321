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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use roxmltree::Node;

use super::pidf::{self, build_pidf_lo, PidfError, PidfLoInput};
use super::{format_mac, parse_mac, DeviceAttachment, Erl, Locator, Mac, MatchKind, PortIdSubtype};

/// The HELD media type (RFC 5985 §11.3), for requests and responses alike.
pub const MEDIA_TYPE: &str = "application/held+xml";

/// The Content-Type of every HELD response: RFC 5985 §5 says the charset parameter "MUST be
/// included", and HELD messages are UTF-8.
pub const CONTENT_TYPE: &str = "application/held+xml;charset=utf-8";

/// Largest request body read. A `locationRequest` with a full device identity is well under
/// 2 KiB; anything near this is not a HELD client.
pub const MAX_BODY: usize = 64 * 1024;

/// Most `<ip>` identifiers read from one request (a device may have IPv4 and several IPv6
/// addresses; each is one wiremap lookup).
const MAX_IPS: usize = 8;

/// LLDP chassis and port IDs are 1-255 octets (IEEE 802.1AB §8.5.2.3, §8.5.3.3).
const MAX_LLDP_ID: usize = 255;

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
}

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

    /// The cache of locations served, per device.
    pub fn cache(&self) -> &HeldCache {
        &self.cache
    }

    /// Answers one HELD request body, without any HTTP: what [`router`] sends back with
    /// status 200. `source` is the request's source address (the device, when the request
    /// carries no device identity); `now` stamps the PIDF-LO and `at` the cache entry.
    pub fn respond(&self, body: &[u8], source: Option<IpAddr>, now: DateTime<Utc>, at: Instant) -> HeldReply {
        match self.answer(body, source, now, at) {
            Ok((xml, kind)) => HeldReply { xml, outcome: Ok(kind) },
            Err(fault) => HeldReply { xml: error_document(fault.code, &fault.message), outcome: Err(fault.code) },
        }
    }

    fn answer(
        &self,
        body: &[u8],
        source: Option<IpAddr>,
        now: DateTime<Utc>,
        at: Instant,
    ) -> Result<(String, MatchKind), Fault> {
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
        Ok((location_response(&pidf_doc), kind))
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
}

/// The last location HELD served per device, keyed by IP address and by MAC address, so the
/// routing core can use "the location that device last obtained over HELD"
/// ([`super::LocationSource::HeldCached`]) when a call arrives without one.
///
/// Bounded: past its capacity the entry written longest ago is dropped. Cloning shares the cache.
/// Entries are recorded only under identifiers that named the device (the source address of a
/// request without device identity, or the `<ip>`/`<mac>` a request carried), never under a
/// third party's address.
#[derive(Clone)]
pub struct HeldCache {
    inner: Arc<Mutex<CacheInner>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CacheKey {
    Ip(IpAddr),
    Mac(Mac),
}

struct CacheEntry {
    erl: Arc<Erl>,
    at: Instant,
    /// Write order: ties in `at` are broken by it, and the eviction queue is checked against it.
    seq: u64,
}

struct CacheInner {
    map: HashMap<CacheKey, CacheEntry>,
    /// Keys in write order, with the write's `seq`; an item whose `seq` no longer matches the
    /// map is stale (the key was written again) and skipped.
    order: VecDeque<(CacheKey, u64)>,
    next_seq: u64,
    capacity: usize,
}

impl HeldCache {
    /// Entries kept by [`HeldCache::default`]: one IP and one MAC per device for ~32,000 devices,
    /// a few MB.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    /// A cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> HeldCache {
        let capacity = capacity.max(1);
        HeldCache {
            inner: Arc::new(Mutex::new(CacheInner {
                map: HashMap::with_capacity(capacity.min(4096)),
                order: VecDeque::new(),
                next_seq: 0,
                capacity,
            })),
        }
    }

    /// Remembers `erl` as served at `at` to the device with `device`'s IP and MAC (other fields
    /// are not keys: an access point or switch port is shared by many devices).
    pub fn record(&self, device: &DeviceAttachment, erl: Arc<Erl>, at: Instant) {
        let mut inner = self.lock();
        for key in keys(device) {
            inner.insert(key, erl.clone(), at);
        }
    }

    /// The location last served to the device with `device`'s MAC or IP, and when; the most
    /// recent of the two when both are known (the device may have moved and asked by IP only).
    pub fn last_for(&self, device: &DeviceAttachment) -> Option<(Arc<Erl>, Instant)> {
        let inner = self.lock();
        keys(device).filter_map(|k| inner.map.get(&k)).max_by_key(|e| e.seq).map(|e| (e.erl.clone(), e.at))
    }

    /// Number of entries (IP and MAC keys counted separately).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, CacheInner> {
        // Nothing under this lock can leave the map inconsistent, so a panic elsewhere while it
        // was held is no reason to stop serving locations.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for HeldCache {
    fn default() -> Self {
        HeldCache::new(HeldCache::DEFAULT_CAPACITY)
    }
}

impl fmt::Debug for HeldCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("HeldCache").field("len", &inner.map.len()).field("capacity", &inner.capacity).finish()
    }
}

fn keys(device: &DeviceAttachment) -> impl Iterator<Item = CacheKey> {
    let mac = device.mac.map(CacheKey::Mac);
    let ip = device.ip.map(|ip| CacheKey::Ip(ip.to_canonical()));
    mac.into_iter().chain(ip)
}

impl CacheInner {
    fn insert(&mut self, key: CacheKey, erl: Arc<Erl>, at: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.map.insert(key, CacheEntry { erl, at, seq });
        self.order.push_back((key, seq));
        while self.map.len() > self.capacity {
            let Some((old, old_seq)) = self.order.pop_front() else { break };
            if self.map.get(&old).is_some_and(|e| e.seq == old_seq) {
                self.map.remove(&old);
            }
        }
        // Rewrites of the same keys leave stale queue items behind; drop them once they
        // outnumber the live ones, so the queue stays O(capacity).
        if self.order.len() > 2 * self.capacity + 16 {
            let map = &self.map;
            self.order.retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
        }
    }
}

// ------------------------------------------------------------------------------------------
// HTTP (RFC 5985 §8)
// ------------------------------------------------------------------------------------------

/// The HELD endpoint: `POST /held` and `POST /`.
///
/// Serve it with connect info so requests without device identity can be answered by source
/// address: `router(state).into_make_service_with_connect_info::<SocketAddr>()` (as [`serve`]
/// does). Behind a proxy every device would look like the proxy: HELD is served directly.
pub fn router(state: HeldState) -> Router {
    let endpoint = post(held_endpoint).fallback(method_not_allowed);
    Router::new()
        .route("/", endpoint.clone())
        .route("/held", endpoint)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves HELD on `listener` until `shutdown` completes, then finishes the requests in flight.
pub async fn serve<F>(listener: tokio::net::TcpListener, state: HeldState, shutdown: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, router(state).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

async fn held_endpoint(State(state): State<HeldState>, request: Request) -> Response {
    let source = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ci| ci.0.ip().to_canonical());
    if let Some(refusal) = check_headers(request.headers()) {
        return refusal;
    }
    let body = match Bytes::from_request(request, &state).await {
        Ok(body) => body,
        // 413 past DefaultBodyLimit, 400 when the body could not be read.
        Err(rejection) => return plain(rejection.status(), &rejection.body_text()),
    };
    let reply = state.respond(&body, source, Utc::now(), Instant::now());
    match reply.outcome {
        Ok(kind) => tracing::debug!(?source, ?kind, "HELD: location served"),
        Err(code) => tracing::debug!(?source, %code, "HELD: error answered"),
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)),
            (header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE)),
        ],
        reply.xml,
    )
        .into_response()
}

/// RFC 5985 §8: "the CacheControl header SHOULD be set to disable caching of any PIDF-LO
/// document" — no-store also keeps it out of intermediaries' disks.
const NO_STORE: &str = "no-store";

/// The RFC 5985 §8 header rules, before the body is read.
fn check_headers(headers: &HeaderMap) -> Option<Response> {
    // §8: "the LIS SHOULD return a 412 (precondition failed)" for If-* headers.
    if let Some(name) = headers.keys().find(|n| n.as_str().starts_with("if-")) {
        return Some(plain(
            StatusCode::PRECONDITION_FAILED,
            &format!("HELD requests are not conditional; {name} is not supported (RFC 5985 section 8)."),
        ));
    }
    // §8: Content-Type and Accept MUST be application/held+xml, and otherwise "the LIS SHOULD
    // fail the request, returning a 406 (not acceptable) response". RFC 5985 names 406 here, not
    // the 415 HTTP would use for a Content-Type; a HELD client is written to RFC 5985.
    // application/xml and text/xml are let through: the document is recognised by its namespace,
    // and NG9-1-1 test suites (tamu-edu/ng911-dev TD_LIS_001) send application/xml.
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(media_type);
    if !content_type.as_deref().is_some_and(|t| matches!(t, MEDIA_TYPE | "application/xml" | "text/xml")) {
        return Some(plain(
            StatusCode::NOT_ACCEPTABLE,
            "A HELD request is an application/held+xml body (RFC 5985 section 8).",
        ));
    }
    // A declared length over the limit is refused before any of the body is read; a chunked body
    // is cut off by DefaultBodyLimit instead.
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Some(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("A HELD request body is at most {MAX_BODY} bytes."),
        ));
    }
    let mut accepts = headers.get_all(header::ACCEPT).iter().peekable();
    if accepts.peek().is_some() && !accepts.any(|v| v.to_str().is_ok_and(accepts_held)) {
        return Some(plain(
            StatusCode::NOT_ACCEPTABLE,
            "HELD responses are application/held+xml, which this request's Accept excludes (RFC 5985 section 8).",
        ));
    }
    None
}

/// `application/held+xml; charset=utf-8` → `application/held+xml`.
fn media_type(value: &str) -> String {
    value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Whether an Accept header value admits a HELD response (RFC 9110 §12.5.1 media ranges; a
/// range with q=0 is a refusal).
fn accepts_held(value: &str) -> bool {
    value.split(',').any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            (p.starts_with("q=") || p.starts_with("Q=")) && p[2..].trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
        });
        !refused && matches!(media.as_str(), MEDIA_TYPE | "application/*" | "*/*" | "application/xml" | "text/xml")
    })
}

async fn method_not_allowed() -> Response {
    let mut response = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "This is a HELD location server; it answers POST requests only (RFC 5985 section 8).",
    );
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

async fn not_found() -> Response {
    // RFC 5985 §8 suggests a generic 404 for what is not the HELD URI.
    plain(StatusCode::NOT_FOUND, "Not found.")
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE)),
        ],
        format!("{text}\n"),
    )
        .into_response()
}

// ------------------------------------------------------------------------------------------
// Documents
// ------------------------------------------------------------------------------------------

const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// RFC 5985 §6.6: the PIDF-LO goes into the `locationResponse` (the schema's `##other` slot), and
/// no `locationUriSet` precedes it: sosdesk does not serve location by reference.
fn location_response(pidf_doc: &str) -> String {
    let presence = match pidf_doc.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or(pidf_doc, |(_, after)| after.trim_start()),
        None => pidf_doc,
    };
    let mut out = String::with_capacity(presence.len() + 160);
    out.push_str(XML_DECL);
    out.push_str("<locationResponse xmlns=\"");
    out.push_str(ns::HELD);
    out.push_str("\">\n");
    out.push_str(presence);
    if !presence.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("</locationResponse>\n");
    out
}

/// RFC 5985 §5.3 / §6.3 / §6.4: an `error` with its `code` and one `message` in English.
fn error_document(code: ErrorCode, message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 200);
    out.push_str(XML_DECL);
    out.push_str("<error xmlns=\"");
    out.push_str(ns::HELD);
    out.push_str("\" code=\"");
    out.push_str(code.as_str());
    out.push_str("\">\n  <message xml:lang=\"en\">");
    // The message is an xs:token and may quote what the requester sent: collapse and escape.
    pidf::escape_into(&mut out, &pidf::collapse_ws(message), false);
    out.push_str("</message>\n</error>\n");
    out
}

// ------------------------------------------------------------------------------------------
// Parsing a locationRequest
// ------------------------------------------------------------------------------------------

/// A HELD error about to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fault {
    code: ErrorCode,
    message: String,
}

impl Fault {
    fn new(code: ErrorCode, message: impl Into<String>) -> Fault {
        Fault { code, message: message.into() }
    }

    fn xml(message: impl Into<String>) -> Fault {
        Fault::new(ErrorCode::XmlError, message)
    }

    fn identifier(message: impl Into<String>) -> Fault {
        Fault::new(ErrorCode::BadIdentifier, message)
    }
}

/// RFC 5985 §6.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseTime {
    EmergencyRouting,
    EmergencyDispatch,
    Millis(u64),
}

/// RFC 5985 §6.2 location types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LiType {
    Civic,
    Geodetic,
    LocationUri,
}

impl LiType {
    fn as_str(self) -> &'static str {
        match self {
            LiType::Civic => "civic",
            LiType::Geodetic => "geodetic",
            LiType::LocationUri => "locationURI",
        }
    }
}

/// The `locationType` of a request; no types means "any" (§6.2: the default when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Requested {
    types: Vec<LiType>,
    /// §6.2.1; always false with "any" ("as if the exact attribute were set to false").
    exact: bool,
}

/// What a request's `<device>` elements said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Identity {
    ips: Vec<IpAddr>,
    mac: Option<Mac>,
    bssid: Option<Mac>,
    chassis_id: Option<String>,
    port_id: Option<String>,
    port_subtype: Option<PortIdSubtype>,
}

impl Identity {
    fn is_empty(&self) -> bool {
        *self == Identity::default()
    }

    /// One wiremap query per IP address (or one without), each with every other identifier.
    fn attachments(&self) -> Vec<DeviceAttachment> {
        let base = DeviceAttachment {
            ip: None,
            mac: self.mac,
            bssid: self.bssid,
            chassis_id: self.chassis_id.clone(),
            port_id: self.port_id.clone(),
            port_subtype: self.port_subtype,
        };
        if self.ips.is_empty() {
            return vec![base];
        }
        self.ips.iter().map(|ip| DeviceAttachment { ip: Some(*ip), ..base.clone() }).collect()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        for ip in &self.ips {
            parts.push(format!("IP address {ip}"));
        }
        if let Some(m) = &self.mac {
            parts.push(format!("MAC address {}", format_mac(m)));
        }
        if let Some(b) = &self.bssid {
            parts.push(format!("BSSID {}", format_mac(b)));
        }
        if let Some(c) = &self.chassis_id {
            parts.push(format!("switch chassis {}", pidf::quote(c)));
        }
        if let Some(p) = &self.port_id {
            parts.push(format!("port {}", pidf::quote(p)));
        }
        parts.join(", ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LocationRequest {
    response_time: Option<ResponseTime>,
    requested: Requested,
    /// `None` without a `<device>` (or with only empty ones): the device is the source address.
    identity: Option<Identity>,
}

/// RFC 6155 identifiers sosdesk does not locate by. Ignoring one would be worse than refusing:
/// the answer would be for whatever the remaining identifiers (or none) point at.
const RFC6155_UNSUPPORTED: [&str; 13] = [
    "udpport", "tcpport", "sctpport", "dccpport", "nai", "uri", "fqdn", "duid", "msisdn", "imsi", "imei", "min", "mdn",
];

/// Reads a `locationRequest` with the same guards as a caller's PIDF-LO (UTF-8 only, no DTD,
/// nesting depth checked before roxmltree recurses, node count capped).
///
/// RFC 5985 §5.1: "The LIS MUST ignore any part of a location request message that it does not
/// understand, except the document element" — unknown attributes and elements are skipped; the
/// parts it does understand must be valid.
fn parse_request(body: &[u8]) -> Result<LocationRequest, Fault> {
    let text = pidf::decode(body).map_err(xml_fault)?;
    if text.trim().is_empty() {
        return Err(Fault::xml(
            "The request has no body; a HELD request is a locationRequest document (RFC 5985 §5.1).",
        ));
    }
    let doc = pidf::parse_xml(text).map_err(xml_fault)?;
    let root = doc.root_element();
    if ns_of(root) != ns::HELD || root.tag_name().name() != "locationRequest" {
        return Err(Fault::new(
            ErrorCode::UnsupportedMessage,
            format!(
                "The document element {} is not supported; this LIS answers locationRequest in namespace {} (RFC 5985 §5.1).",
                element_name(root),
                ns::HELD
            ),
        ));
    }

    let response_time = root.attribute("responseTime").map(parse_response_time).transpose()?;
    let mut requested: Option<Requested> = None;
    let mut identity = Identity::default();
    for child in root.children().filter(Node::is_element) {
        match (ns_of(child), child.tag_name().name()) {
            (ns::HELD, "locationType") => {
                if requested.is_some() {
                    return Err(Fault::xml("The request has more than one locationType (RFC 5985 §7 allows one)."));
                }
                requested = Some(parse_location_type(child)?);
            }
            (ns::HELD_ID, "device") => parse_device(child, &mut identity)?,
            _ => {}
        }
    }
    if identity.port_id.is_some() && identity.chassis_id.is_none() {
        return Err(Fault::identifier("A switch port identifier needs the switch's chassis identifier with it."));
    }
    Ok(LocationRequest {
        response_time,
        requested: requested.unwrap_or_default(),
        identity: (!identity.is_empty()).then_some(identity),
    })
}

fn xml_fault(e: PidfError) -> Fault {
    Fault::xml(match e {
        PidfError::NotUtf8 { offset } => {
            format!("The request is not UTF-8 (invalid byte sequence at byte {offset}); HELD messages are UTF-8 (RFC 5985 §5).")
        }
        PidfError::NotWellFormed(msg) => {
            format!("The request is refused by the XML parser (it must be well-formed and have no DTD): {msg}")
        }
        PidfError::TooDeep { limit } => format!("The request nests elements more than {limit} levels deep."),
        other => other.to_string(),
    })
}

/// RFC 5985 §6.1 / §7 `responseTimeType`: a purpose or a non-negative number of milliseconds.
fn parse_response_time(value: &str) -> Result<ResponseTime, Fault> {
    let v = value.trim();
    match v {
        "emergencyRouting" => return Ok(ResponseTime::EmergencyRouting),
        "emergencyDispatch" => return Ok(ResponseTime::EmergencyDispatch),
        _ => {}
    }
    let digits = v.strip_prefix('+').unwrap_or(v);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // xs:nonNegativeInteger is unbounded; beyond u64 it is "wait forever" all the same.
        return Ok(ResponseTime::Millis(digits.parse().unwrap_or(u64::MAX)));
    }
    Err(Fault::xml(format!(
        "responseTime \"{}\" is neither emergencyRouting, emergencyDispatch nor a number of milliseconds (RFC 5985 §6.1).",
        pidf::quote(value)
    )))
}

/// RFC 5985 §6.2 / §7 `locationTypeType`: "any", or a list of civic / geodetic / locationURI,
/// with the optional `exact` boolean.
fn parse_location_type(node: Node) -> Result<Requested, Fault> {
    let exact = match node.attribute("exact").map(str::trim) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(Fault::xml(format!(
                "locationType exact=\"{}\" is not a boolean (RFC 5985 §6.2.1).",
                pidf::quote(other)
            )))
        }
    };
    let text =
        text_only(node).ok_or_else(|| Fault::xml("locationType holds elements; it is a list of location types."))?;
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    if tokens == ["any"] {
        // §6.2.1: exact is ignored with "any".
        return Ok(Requested { types: Vec::new(), exact: false });
    }
    if tokens.is_empty() {
        return Err(Fault::xml("locationType is empty; it is \"any\" or a list of civic, geodetic and locationURI."));
    }
    let mut types = Vec::new();
    for t in tokens {
        let ty = match t {
            "civic" => LiType::Civic,
            "geodetic" => LiType::Geodetic,
            "locationURI" => LiType::LocationUri,
            _ => {
                return Err(Fault::xml(format!(
                    "locationType \"{}\" is not \"any\" or a list of civic, geodetic and locationURI (RFC 5985 §6.2).",
                    pidf::quote(t)
                )))
            }
        };
        if !types.contains(&ty) {
            types.push(ty);
        }
    }
    Ok(Requested { types, exact })
}

/// One RFC 6155 `<device>`: its identifiers are merged into `identity` (a request may split them
/// over several; contradicting values are refused rather than guessed between).
fn parse_device(device: Node, identity: &mut Identity) -> Result<(), Fault> {
    for el in device.children().filter(Node::is_element) {
        let name = el.tag_name().name();
        let value = text_only(el).ok_or_else(|| {
            Fault::identifier(format!("The identifier {} holds elements; it holds text.", element_name(el)))
        })?;
        // Every identifier type is an xs:token (or derived from one): surrounding whitespace is
        // not part of the value.
        let value = value.trim();
        match (ns_of(el), name) {
            (ns::HELD_ID, "ip") => {
                let ip = parse_ip(el.attribute("v"), value)?;
                if !identity.ips.contains(&ip) {
                    if identity.ips.len() == MAX_IPS {
                        return Err(Fault::identifier(format!("The request names more than {MAX_IPS} IP addresses.")));
                    }
                    identity.ips.push(ip);
                }
            }
            (ns::HELD_ID, "mac") => {
                let mac = parse_mac(value).ok_or_else(|| {
                    Fault::identifier(format!(
                        "mac \"{}\" is not a 48-bit MAC address such as 00-0d-4b-30-72-df (RFC 6155; EUI-64 is not supported).",
                        pidf::quote(value)
                    ))
                })?;
                set_once(&mut identity.mac, mac, "MAC addresses")?;
            }
            (ns::HELD_ID, other) => {
                let known = RFC6155_UNSUPPORTED.contains(&other);
                return Err(Fault::identifier(format!(
                    "{} identifier {} is not supported by this LIS; it locates devices by ip, mac, and sosdesk's bssid, chassis and port.",
                    if known { "The RFC 6155" } else { "The" },
                    element_name(el)
                )));
            }
            (ns::ATTACHMENT, "bssid") => {
                let bssid = parse_mac(value).ok_or_else(|| {
                    Fault::identifier(format!(
                        "bssid \"{}\" is not a 48-bit MAC address such as 00-11-22-33-44-55.",
                        pidf::quote(value)
                    ))
                })?;
                set_once(&mut identity.bssid, bssid, "BSSIDs")?;
            }
            (ns::ATTACHMENT, "chassis") => {
                // The LIS stores a MAC-address chassis ID as 0B-23-CD-16-AA-BB; anything else as
                // collapsed text.
                let chassis = match parse_mac(value) {
                    Some(m) => format_mac(&m),
                    None => lldp_id(value, "chassis")?,
                };
                set_once(&mut identity.chassis_id, chassis, "switch chassis identifiers")?;
            }
            (ns::ATTACHMENT, "port") => {
                let port = lldp_id(value, "port")?;
                let subtype = el.attribute("subtype").map(parse_port_subtype).transpose()?;
                set_once(&mut identity.port_id, port, "switch ports")?;
                if let Some(s) = subtype {
                    set_once(&mut identity.port_subtype, s, "port ID subtypes")?;
                }
            }
            _ => {
                return Err(Fault::identifier(format!(
                    "The identifier {} is not supported by this LIS; it locates devices by ip, mac, and sosdesk's bssid, chassis and port.",
                    element_name(el)
                )))
            }
        }
    }
    Ok(())
}

/// RFC 6155 `<ip v="4">192.0.2.1</ip>`: `v` is the IP version, and the text an address of it.
fn parse_ip(version: Option<&str>, value: &str) -> Result<IpAddr, Fault> {
    let bad = |what: &str| Fault::identifier(format!("ip \"{}\" {what} (RFC 6155).", pidf::quote(value)));
    match version.map(str::trim) {
        Some("4") => value.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| bad("is not an IPv4 address")),
        // An IPv4-mapped IPv6 address is the IPv4 device the wiremap knows.
        Some("6") => {
            value.parse::<Ipv6Addr>().map(|a| IpAddr::V6(a).to_canonical()).map_err(|_| bad("is not an IPv6 address"))
        }
        Some(v) => Err(bad(&format!("has IP version \"{}\"; only 4 and 6 are supported", pidf::quote(v)))),
        None => Err(bad("has no v attribute giving its IP version")),
    }
}

fn parse_port_subtype(value: &str) -> Result<PortIdSubtype, Fault> {
    // IEEE 802.1AB port ID subtype numbers, or the Skype for Business names.
    match value.trim() {
        "1" => Ok(PortIdSubtype::InterfaceAlias),
        "5" => Ok(PortIdSubtype::InterfaceName),
        "7" => Ok(PortIdSubtype::LocallyAssigned),
        v => PortIdSubtype::parse(v).ok_or_else(|| {
            Fault::identifier(format!(
                "port subtype \"{}\" is not LocallyAssigned (7), InterfaceAlias (1) or InterfaceName (5).",
                pidf::quote(value)
            ))
        }),
    }
}

fn lldp_id(value: &str, what: &str) -> Result<String, Fault> {
    let v = pidf::collapse_ws(value);
    if v.is_empty() || v.len() > MAX_LLDP_ID {
        return Err(Fault::identifier(format!("The {what} identifier must be 1 to {MAX_LLDP_ID} characters.")));
    }
    Ok(v)
}

fn set_once<T: PartialEq>(slot: &mut Option<T>, value: T, what: &str) -> Result<(), Fault> {
    match slot {
        Some(existing) if *existing != value => {
            Err(Fault::identifier(format!("The request names two different {what} for one device.")))
        }
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// The text of an element with simple content, or `None` when it has child elements.
fn text_only(node: Node) -> Option<String> {
    let mut out = String::new();
    for child in node.children() {
        if child.is_element() {
            return None;
        }
        if child.is_text() {
            out.push_str(child.text().unwrap_or(""));
        }
    }
    Some(out)
}

fn ns_of<'a>(node: Node<'a, '_>) -> &'a str {
    node.tag_name().namespace().unwrap_or("")
}

/// `<name>` or `<name> in namespace urn:…`, bounded for quoting back.
fn element_name(node: Node) -> String {
    match ns_of(node) {
        "" => format!("<{}> in no namespace", pidf::quote(node.tag_name().name())),
        n => format!("<{}> in namespace {}", pidf::quote(node.tag_name().name()), pidf::quote(n)),
    }
}

/// A DNS name (RFC 1123 labels) or an IP literal (IPv6 in brackets), as a URI host.
fn is_host(host: &str) -> bool {
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

impl crate::location::LastKnownLocation for HeldCache {
    fn last_known(&self, device: &DeviceAttachment) -> Option<Arc<Erl>> {
        self.last_for(device).map(|(erl, _)| erl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::CivicAddress;

    const HELD_NS: &str = "urn:ietf:params:xml:ns:geopriv:held";

    fn request(inner: &str) -> String {
        format!(r#"<locationRequest xmlns="{HELD_NS}">{inner}</locationRequest>"#)
    }

    fn device(ids: &str) -> String {
        request(&format!(
            r#"<device xmlns="urn:ietf:params:xml:ns:geopriv:held:id" xmlns:att="{}">{ids}</device>"#,
            ns::ATTACHMENT
        ))
    }

    fn parse(xml: &str) -> Result<LocationRequest, Fault> {
        parse_request(xml.as_bytes())
    }

    fn code(xml: &str) -> ErrorCode {
        parse(xml).expect_err("should be refused").code
    }

    #[test]
    fn empty_request_asks_any_type_by_source_address() {
        let r = parse(&format!(r#"<?xml version="1.0"?><locationRequest xmlns="{HELD_NS}"/>"#)).unwrap();
        assert_eq!(r, LocationRequest { response_time: None, requested: Requested::default(), identity: None });
    }

    #[test]
    fn response_time_and_location_type() {
        let r = parse(&format!(
            r#"<held:locationRequest xmlns:held="{HELD_NS}" responseTime="emergencyRouting">
                 <held:locationType exact="true"> geodetic
                   civic civic locationURI </held:locationType></held:locationRequest>"#
        ))
        .unwrap();
        assert_eq!(r.response_time, Some(ResponseTime::EmergencyRouting));
        assert_eq!(
            r.requested,
            Requested { types: vec![LiType::Geodetic, LiType::Civic, LiType::LocationUri], exact: true }
        );
        let r = parse(&format!(r#"<locationRequest xmlns="{HELD_NS}" responseTime=" +0250 "/>"#)).unwrap();
        assert_eq!(r.response_time, Some(ResponseTime::Millis(250)));
        let huge = format!(r#"<locationRequest xmlns="{HELD_NS}" responseTime="99999999999999999999999"/>"#);
        assert_eq!(parse(&huge).unwrap().response_time, Some(ResponseTime::Millis(u64::MAX)));
        // "any" ignores exact (§6.2.1).
        let r = parse(&request(r#"<locationType exact="1">any</locationType>"#)).unwrap();
        assert_eq!(r.requested, Requested::default());

        for bad in [
            r#"<locationType>any civic</locationType>"#,
            r#"<locationType>   </locationType>"#,
            r#"<locationType>Civic</locationType>"#,
            r#"<locationType exact="yes">civic</locationType>"#,
            r#"<locationType><b/>civic</locationType>"#,
            r#"<locationType>civic</locationType><locationType>civic</locationType>"#,
        ] {
            assert_eq!(code(&request(bad)), ErrorCode::XmlError, "{bad}");
        }
        assert_eq!(code(&format!(r#"<locationRequest xmlns="{HELD_NS}" responseTime="-5"/>"#)), ErrorCode::XmlError);
    }

    #[test]
    fn unknown_parts_are_ignored_but_not_the_document_element() {
        let r = parse(&format!(
            r#"<locationRequest xmlns="{HELD_NS}" xmlns:x="urn:x" x:foo="1" bar="2"><x:ext><x:deep/></x:ext><unknownHeld/>
               <locationType>civic</locationType></locationRequest>"#
        ))
        .unwrap();
        assert_eq!(r.requested, Requested { types: vec![LiType::Civic], exact: false });
        for root in [
            "<locationRequest/>".to_string(),
            format!(r#"<locationResponse xmlns="{HELD_NS}"/>"#),
            format!(r#"<error xmlns="{HELD_NS}" code="x"/>"#),
            r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:a@b"/>"#.to_string(),
        ] {
            assert_eq!(code(&root), ErrorCode::UnsupportedMessage, "{root}");
        }
    }

    #[test]
    fn xml_guards_are_the_pidf_ones() {
        for bad in [
            &b""[..],
            b"   ",
            b"\xff\xfe<",
            b"<locationRequest",
            br#"<!DOCTYPE l [<!ENTITY a "a">]><locationRequest xmlns="urn:ietf:params:xml:ns:geopriv:held"/>"#,
        ] {
            assert_eq!(parse_request(bad).unwrap_err().code, ErrorCode::XmlError, "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = request(&format!("{}{}", "<x:a xmlns:x='urn:x'>".repeat(200), "</x:a>".repeat(200)));
        let e = parse(&deep).unwrap_err();
        assert_eq!(e.code, ErrorCode::XmlError);
        assert!(e.message.contains(&pidf::MAX_DEPTH.to_string()), "{}", e.message);
        // A BOM is fine.
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(request("").as_bytes());
        assert!(parse_request(&bom).is_ok());
    }

    #[test]
    fn device_identifiers() {
        let r = parse(&device(
            r#"<ip v="4"> 192.0.2.7 </ip><ip v="6">2001:db8::7</ip><ip v="6">::ffff:192.0.2.7</ip>
               <mac>00-0D-4b-30-72-df</mac><att:bssid>00:11:22:33:44:55</att:bssid>
               <att:chassis>0b23.cd16.aabb</att:chassis><att:port subtype="InterfaceName">Gi1/0/7</att:port>"#,
        ))
        .unwrap();
        let id = r.identity.unwrap();
        assert_eq!(id.ips, ["192.0.2.7".parse::<IpAddr>().unwrap(), "2001:db8::7".parse().unwrap()]);
        assert_eq!(id.mac, Some([0x00, 0x0d, 0x4b, 0x30, 0x72, 0xdf]));
        assert_eq!(id.bssid, Some([0x00, 0x11, 0x22, 0x33, 0x44, 0x55]));
        assert_eq!(id.chassis_id.as_deref(), Some("0B-23-CD-16-AA-BB"));
        assert_eq!(id.port_id.as_deref(), Some("Gi1/0/7"));
        assert_eq!(id.port_subtype, Some(PortIdSubtype::InterfaceName));
        let atts = id.attachments();
        assert_eq!(atts.len(), 2);
        assert!(atts.iter().all(|a| a.mac == id.mac && a.port_id == id.port_id));

        let r = parse(&device(r#"<att:chassis> switch 1 </att:chassis><att:port subtype="7">12</att:port>"#)).unwrap();
        let id = r.identity.unwrap();
        assert_eq!(
            (id.chassis_id.as_deref(), id.port_subtype),
            (Some("switch 1"), Some(PortIdSubtype::LocallyAssigned))
        );
        assert!(id.ips.is_empty());

        // An empty device is no identity: the source address is used.
        assert_eq!(parse(&device("")).unwrap().identity, None);
        // Several device elements merge; the same value twice is fine.
        let two = request(
            r#"<device xmlns="urn:ietf:params:xml:ns:geopriv:held:id"><mac>00-0d-4b-30-72-df</mac></device>
               <device xmlns="urn:ietf:params:xml:ns:geopriv:held:id"><mac>00:0d:4b:30:72:df</mac><ip v="4">10.0.0.1</ip></device>"#,
        );
        assert_eq!(parse(&two).unwrap().identity.unwrap().ips.len(), 1);
    }

    #[test]
    fn bad_identifiers() {
        for bad in [
            r#"<ip>192.0.2.7</ip>"#,
            r#"<ip v="6">192.0.2.7</ip>"#,
            r#"<ip v="4">2001:db8::1</ip>"#,
            r#"<ip v="5">192.0.2.7</ip>"#,
            r#"<ip v="4">192.0.2.300</ip>"#,
            r#"<ip v="6">fe80::1%eth0</ip>"#,
            r#"<mac>00-0d-4b-30-72</mac>"#,
            r#"<mac>00-0d-4b-30-72-df-00-01</mac>"#,
            r#"<mac>zz-0d-4b-30-72-df</mac>"#,
            r#"<mac>00-0d-4b-30-72-df</mac><mac>00-0d-4b-30-72-de</mac>"#,
            r#"<uri>sip:alice@example.com</uri>"#,
            r#"<udpport>5060</udpport>"#,
            r#"<imei>490154203237518</imei>"#,
            r#"<whatever>1</whatever>"#,
            r#"<x:serial xmlns:x="urn:x">1</x:serial>"#,
            r#"<att:bssid>not-a-mac</att:bssid>"#,
            r#"<att:port>Gi1/0/7</att:port>"#,
            r#"<att:chassis>   </att:chassis>"#,
            r#"<att:chassis>a</att:chassis><att:port subtype="MacAddress">1</att:port>"#,
            r#"<att:colour>red</att:colour>"#,
            r#"<mac><b/>00-0d-4b-30-72-df</mac>"#,
        ] {
            assert_eq!(code(&device(bad)), ErrorCode::BadIdentifier, "{bad}");
        }
        let many: String = (1..=9).map(|i| format!(r#"<ip v="4">10.0.0.{i}</ip>"#)).collect();
        assert_eq!(code(&device(&many)), ErrorCode::BadIdentifier);
        let long = format!("<att:chassis>{}</att:chassis>", "c".repeat(256));
        assert_eq!(code(&device(&long)), ErrorCode::BadIdentifier);
    }

    #[test]
    fn error_documents_escape_and_collapse() {
        let doc = error_document(ErrorCode::BadIdentifier, "mac \"<b>&\"\n  is   bad");
        assert_eq!(
            doc,
            format!(
                "{XML_DECL}<error xmlns=\"{HELD_NS}\" code=\"badIdentifier\">\n  <message xml:lang=\"en\">mac &quot;&lt;b&gt;&amp;&quot; is bad</message>\n</error>\n"
            )
        );
        assert!(roxmltree::Document::parse(&doc).is_ok());
    }

    #[test]
    fn location_response_wraps_the_presence_document() {
        let doc = location_response("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence/>\n");
        assert_eq!(
            doc,
            format!("{XML_DECL}<locationResponse xmlns=\"{HELD_NS}\">\n<presence/>\n</locationResponse>\n")
        );
        assert_eq!(
            location_response("<presence/>"),
            format!("{XML_DECL}<locationResponse xmlns=\"{HELD_NS}\">\n<presence/>\n</locationResponse>\n")
        );
    }

    #[test]
    fn accept_and_content_type() {
        assert_eq!(media_type("Application/HELD+XML ; charset=UTF-8"), MEDIA_TYPE);
        for ok in [
            "application/held+xml",
            "*/*",
            "application/*;q=0.5",
            "text/html, application/held+xml;q=0.1",
            "application/xml",
        ] {
            assert!(accepts_held(ok), "{ok}");
        }
        for no in ["text/html", "application/held+xml;q=0", "application/json, */*;q=0.0", ""] {
            assert!(!accepts_held(no), "{no}");
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

    fn erl(room: &str) -> Arc<Erl> {
        Arc::new(Erl {
            civic: CivicAddress { country: Some("US".into()), room: Some(room.into()), ..Default::default() },
            ..Default::default()
        })
    }

    #[test]
    fn cache_keeps_the_newest_per_device_and_evicts_the_oldest() {
        let cache = HeldCache::new(3);
        let t0 = Instant::now();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let mac = Some([1, 2, 3, 4, 5, 6]);
        let dev = DeviceAttachment { ip: ip("10.0.0.1"), mac, ..Default::default() };
        cache.record(&dev, erl("1"), t0);
        assert_eq!(cache.len(), 2);
        // The device moved and asked by address only: the newer IP entry wins over the MAC one.
        let t1 = t0 + std::time::Duration::from_secs(1);
        cache.record(&DeviceAttachment { ip: ip("10.0.0.1"), ..Default::default() }, erl("2"), t1);
        let (e, at) = cache.last_for(&dev).unwrap();
        assert_eq!((e.civic.room.as_deref(), at), (Some("2"), t1));
        let (e, _) = cache.last_for(&DeviceAttachment { mac, ..Default::default() }).unwrap();
        assert_eq!(e.civic.room.as_deref(), Some("1"));
        // IPv4-mapped IPv6 is the same key.
        assert!(cache.last_for(&DeviceAttachment { ip: ip("::ffff:10.0.0.1"), ..Default::default() }).is_some());
        // Only IP and MAC are keys.
        assert!(cache.last_for(&DeviceAttachment { bssid: mac, ..Default::default() }).is_none());

        // Capacity 3: the MAC entry (written first) goes, then 10.0.0.1 (rewritten second).
        cache.record(&DeviceAttachment { ip: ip("10.0.0.2"), ..Default::default() }, erl("3"), t1);
        cache.record(&DeviceAttachment { ip: ip("10.0.0.3"), ..Default::default() }, erl("4"), t1);
        assert_eq!(cache.len(), 3);
        assert!(cache.last_for(&DeviceAttachment { mac, ..Default::default() }).is_none());
        cache.record(&DeviceAttachment { ip: ip("10.0.0.4"), ..Default::default() }, erl("5"), t1);
        assert!(cache.last_for(&DeviceAttachment { ip: ip("10.0.0.1"), ..Default::default() }).is_none());
        assert_eq!(cache.len(), 3);

        // Rewriting one key over and over keeps the queue bounded.
        for _ in 0..1000 {
            cache.record(&DeviceAttachment { ip: ip("10.0.0.4"), ..Default::default() }, erl("6"), t1);
        }
        let inner = cache.lock();
        assert!(inner.order.len() <= 2 * inner.capacity + 16 + 1, "{}", inner.order.len());
        assert_eq!(inner.map.len(), 3);
    }

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
