//! The API's client side: what a desk on another machine uses to talk to the core (and what the
//! tests use). One HTTP/1.1 connection per request, over TCP or TLS (rustls with the ring
//! provider; the core's CA from a PEM file, else the system's CA bundle), HTTP Basic
//! credentials, JSON bodies, and the server-sent event stream of `GET /api/v1/events`.
//!
//! A connection per request keeps the client stateless: a desk asks rarely (desk info,
//! catch-up, an acknowledgement, a history search) and holds one long-lived event stream.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{encode_base64, CallDetailResponse, DeskInfo, HistoryParams};
use crate::audit::CallSummary;
use crate::events::CallEvent;

/// Connecting (TCP and TLS handshake) must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole request, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The core sends a keep-alive comment every 15 s; nothing for this long means the stream (or
/// the network under it) is dead, even when TCP has not noticed.
pub const STREAM_SILENCE: Duration = Duration::from_secs(40);

/// Where the system keeps its CA bundle (Debian/Ubuntu, Fedora/RHEL, Alpine/BSD).
const SYSTEM_CA_BUNDLES: &[&str] =
    &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("invalid API address {0:?}: {1}")]
    Address(String, String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot reach the core's API at {0}: {1}")]
    Connect(String, String),
    #[error("the core refused the credentials of account {0:?} (401)")]
    Unauthorized(String),
    #[error("the core refuses this machine for a while after too many wrong credentials (429)")]
    Blocked,
    #[error("{0} from the core: {1}")]
    Status(u16, String),
    #[error("the core's answer could not be read: {0}")]
    Body(String),
    #[error("no answer from the core within {0} s")]
    Timeout(u64),
}

/// The core's API at one address, with one desk account's credentials.
#[derive(Clone)]
pub struct ApiClient {
    /// `https://core.example.org:8443`, as configured (for messages).
    base: String,
    host: String,
    port: u16,
    /// The Host header: host, plus the port when it is not the scheme's default.
    authority: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    username: String,
    /// `Basic …`: the only place the password is kept.
    authorization: String,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient").field("base", &self.base).field("username", &self.username).finish_non_exhaustive()
    }
}

impl ApiClient {
    /// `base` is `http://host:port` or `https://host:port` (IPv6 in brackets). For HTTPS the
    /// server's certificate is checked against `ca_cert` (PEM) when given, else the system's CAs.
    /// Plain `http://` only to a loopback address: Basic credentials travel in every request.
    pub fn new(base: &str, username: &str, password: &str, ca_cert: Option<&Path>) -> Result<ApiClient, ClientError> {
        // An address with credentials in it ("https://user:pw@host") is refused, and never echoed.
        let shown = match base.split_once('@') {
            Some((_, host)) => format!("…@{host}"),
            None => base.to_string(),
        };
        let bad = |why: &str| ClientError::Address(shown.clone(), why.to_string());
        let (tls, rest) = if let Some(r) = base.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = base.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("it must start with http:// or https://"));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad("give only scheme, host and port, e.g. https://core.example.org:8443"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("the port is not a number"))?;
        let port = port.unwrap_or(if tls { 443 } else { 80 });
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !tls && !loopback {
            return Err(bad(
                "use https:// (plain http:// only to this machine: the password travels in every request)",
            ));
        }
        let tls = if tls {
            let name =
                ServerName::try_from(host.clone()).map_err(|_| bad("the host is not a valid TLS server name"))?;
            Some((connector(ca_cert)?, name))
        } else {
            None
        };
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_string(),
            host: host.clone(),
            port,
            authority: authority.to_string(),
            tls,
            username: username.to_string(),
            authorization: format!("Basic {}", encode_base64(format!("{username}:{password}").as_bytes())),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The API's host as configured (brackets removed from IPv6), e.g. to reach the core's SIP
    /// when it advertises no usable host of its own.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub async fn desk_info(&self) -> Result<DeskInfo, ClientError> {
        self.get_json("/api/v1/desk").await
    }

    /// Each route's live health (`GET /api/v1/routes`).
    pub async fn routes(&self) -> Result<Vec<crate::routing::health::RouteHealthReport>, ClientError> {
        self.get_json("/api/v1/routes").await
    }

    pub async fn history(&self, params: &HistoryParams) -> Result<Vec<CallSummary>, ClientError> {
        self.get_json(&format!("/api/v1/history?{}", query_string(params)?)).await
    }

    pub async fn history_csv(&self, params: &HistoryParams) -> Result<Bytes, ClientError> {
        let (status, body) =
            self.send(Method::GET, &format!("/api/v1/history.csv?{}", query_string(params)?), None).await?;
        self.check(status, &body)?;
        Ok(body)
    }

    /// A call's summary and audited events.
    pub async fn call(&self, call_id: &str) -> Result<CallDetailResponse, ClientError> {
        self.get_json(&format!("/api/v1/calls/{}", path_segment(call_id))).await
    }

    /// [`call`](Self::call) with the core's check of the whole audit log's hash chain.
    pub async fn call_checked(&self, call_id: &str) -> Result<CallDetailResponse, ClientError> {
        self.get_json(&format!("/api/v1/calls/{}?chain=true", path_segment(call_id))).await
    }

    /// A floor plan's image (`GET /api/v1/floor-plans/{plan}`): its media type and bytes. The
    /// caller still shows it only where it cannot run anything (the desk: an `<img>`).
    pub async fn floor_plan(&self, plan: &str) -> Result<(String, Bytes), ClientError> {
        let mut sender = self.connect().await?;
        let req = self.request(
            Method::GET,
            &format!("/api/v1/floor-plans/{}", path_segment(plan)),
            None,
            "image/png, image/svg+xml",
        )?;
        let work = async {
            let resp =
                sender.send_request(req).await.map_err(|e| ClientError::Connect(self.base.clone(), e.to_string()))?;
            let status = resp.status();
            let media_type =
                resp.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            Ok::<_, ClientError>((status, media_type, collect(resp.into_body()).await?))
        };
        let (status, media_type, body) = tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT.as_secs()))??;
        self.check(status, &body)?;
        Ok((media_type, body))
    }

    /// Records the acknowledgement of `officer` at this account's desk; returns the audited event.
    pub async fn acknowledge(&self, call_id: &str, officer: &str) -> Result<CallEvent, ClientError> {
        let body = serde_json::to_vec(&super::AcknowledgeRequest { officer: officer.to_string() })
            .map_err(|e| ClientError::Body(e.to_string()))?;
        let path = format!("/api/v1/calls/{}/acknowledge", path_segment(call_id));
        let (status, body) = self.send(Method::POST, &path, Some(body)).await?;
        self.check(status, &body)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Body(e.to_string()))
    }

    /// Opens the live event stream. Events from the moment the core answers; older ones come from
    /// [`history`](Self::history) and [`call`](Self::call).
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let mut sender = self.connect().await?;
        let req = self.request(Method::GET, "/api/v1/events", None, "text/event-stream")?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT.as_secs()))?
            .map_err(|e| ClientError::Connect(self.base.clone(), e.to_string()))?;
        let status = resp.status();
        if status != StatusCode::OK {
            let body = collect(resp.into_body()).await.unwrap_or_default();
            self.check(status, &body)?;
            return Err(ClientError::Status(status.as_u16(), "no event stream".into()));
        }
        Ok(EventStream { body: resp.into_body(), buf: Vec::new(), _sender: sender })
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (status, body) = self.send(Method::GET, path, None).await?;
        self.check(status, &body)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Body(e.to_string()))
    }

    fn check(&self, status: StatusCode, body: &[u8]) -> Result<(), ClientError> {
        match status.as_u16() {
            200..=299 => Ok(()),
            401 => Err(ClientError::Unauthorized(self.username.clone())),
            429 => Err(ClientError::Blocked),
            s => Err(ClientError::Status(s, String::from_utf8_lossy(body).trim().chars().take(300).collect())),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let work = async {
            let mut sender = self.connect().await?;
            let req = self.request(method, path, body, "application/json")?;
            let resp =
                sender.send_request(req).await.map_err(|e| ClientError::Connect(self.base.clone(), e.to_string()))?;
            let status = resp.status();
            Ok((status, collect(resp.into_body()).await?))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT.as_secs()))?
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        accept: &str,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::AUTHORIZATION, &self.authorization)
            .header(hyper::header::ACCEPT, accept);
        if body.is_some() {
            b = b.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        b.body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Address(self.base.clone(), e.to_string()))
    }

    /// A new connection (TCP, then TLS for https) with its HTTP/1.1 handshake done; the
    /// connection is driven by a task of its own until the sender is dropped.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let failed = |e: String| ClientError::Connect(self.base.clone(), e);
        let timeout = |_| ClientError::Timeout(CONNECT_TIMEOUT.as_secs());
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(timeout)?
            .map_err(|e| failed(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                tokio::spawn(conn);
                Ok(sender)
            }
            Some((connector, name)) => {
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(timeout)?
                    .map_err(|e| failed(format!("TLS: {e}")))?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                tokio::spawn(conn);
                Ok(sender)
            }
        }
    }
}

/// One server-sent event (HTML Living Standard §9.2 "event stream": `event:` and `data:` lines,
/// an empty line ends the event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// The live stream of `GET /api/v1/events`.
pub struct EventStream {
    body: Incoming,
    buf: Vec<u8>,
    _sender: SendRequest<Full<Bytes>>,
}

impl EventStream {
    /// The next event; `Ok(None)` when the core closed the stream. Keep-alive comments are read
    /// and skipped; nothing at all for [`STREAM_SILENCE`] is an error (a dead connection).
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            if let Some(ev) = take_event(&mut self.buf) {
                if ev.event.is_empty() && ev.data.is_empty() {
                    continue;
                }
                return Ok(Some(ev));
            }
            if self.buf.len() > 4 << 20 {
                return Err(ClientError::Body("an event of over 4 MB".into()));
            }
            let frame = tokio::time::timeout(STREAM_SILENCE, self.body.frame())
                .await
                .map_err(|_| ClientError::Timeout(STREAM_SILENCE.as_secs()))?;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(ClientError::Body(e.to_string())),
                Some(Ok(f)) => {
                    if let Ok(mut data) = f.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
            }
        }
    }
}

/// Takes one complete event off the front of `buf`. Lines end in LF or CRLF (a lone CR, which
/// the standard also allows, is never sent by the core).
fn take_event(buf: &mut Vec<u8>) -> Option<SseEvent> {
    let mut start = 0;
    let mut lines = Vec::new();
    loop {
        let nl = buf[start..].iter().position(|b| *b == b'\n')? + start;
        let line = &buf[start..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start = nl + 1;
        if line.is_empty() {
            break;
        }
        lines.push(String::from_utf8_lossy(line).into_owned());
    }
    buf.drain(..start);
    let mut ev = SseEvent { event: String::new(), data: String::new() };
    let mut data = Vec::new();
    for line in &lines {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => ev.event = value.to_string(),
            "data" => data.push(value),
            _ => {}
        }
    }
    ev.data = data.join("\n");
    Some(ev)
}

/// An answer larger than this (a CSV export of a huge search) is refused rather than held.
const MAX_BODY: usize = 256 << 20;

async fn collect(body: Incoming) -> Result<Bytes, ClientError> {
    http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ClientError::Body(e.to_string()))
}

fn query_string(p: &HistoryParams) -> Result<String, ClientError> {
    serde_urlencoded::to_string(p).map_err(|e| ClientError::Body(e.to_string()))
}

/// A call id as one path segment: everything but unreserved characters percent-encoded
/// (RFC 3986 §2.3), so an id with `/` or `?` cannot change the path.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `host:port`, `[v6]:port`, `host`, `[v6]` → host without brackets and the port if given.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), Some(p.parse().ok()?))),
        None => Some((authority.to_string(), None)),
    }
}

fn connector(ca_cert: Option<&Path>) -> Result<TlsConnector, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let files: Vec<&Path> = match ca_cert {
        Some(p) => vec![p],
        None => SYSTEM_CA_BUNDLES.iter().map(Path::new).filter(|p| p.is_file()).take(1).collect(),
    };
    for file in &files {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
            .map_err(|e| ClientError::Tls(format!("{}: {e}", file.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| ClientError::Tls(format!("{}: {e}", file.display())))?;
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 && ca_cert.is_some() {
            return Err(ClientError::Tls(format!("{}: no CA certificate in the file", file.display())));
        }
    }
    if roots.is_empty() {
        return Err(ClientError::Tls("no CA certificates: give the core's CA (ca_cert) for https".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(split_host_port("core:8443"), Some(("core".into(), Some(8443))));
        assert_eq!(split_host_port("[::1]:8443"), Some(("::1".into(), Some(8443))));
        assert_eq!(split_host_port("[::1]"), Some(("::1".into(), None)));
        assert_eq!(split_host_port("core"), Some(("core".into(), None)));
        assert_eq!(split_host_port("core:x"), None);
        let c = ApiClient::new("http://127.0.0.1:8443/", "desk1", "pw", None).unwrap();
        assert_eq!((c.host(), c.port, c.base()), ("127.0.0.1", 8443, "http://127.0.0.1:8443"));
        assert!(!format!("{c:?}").contains("pw"), "Debug never shows the credentials");
        assert!(matches!(ApiClient::new("ftp://x", "a", "b", None), Err(ClientError::Address(..))));
        assert!(matches!(ApiClient::new("http://x/api", "a", "b", None), Err(ClientError::Address(..))));
        let remote_http = ApiClient::new("http://192.0.2.7:8443", "a", "b", None).unwrap_err();
        assert!(remote_http.to_string().contains("use https://"), "{remote_http}");
        let with_password = ApiClient::new("https://desk1:secret@core:8443", "a", "b", None).unwrap_err();
        assert!(!with_password.to_string().contains("secret"), "{with_password}");
        assert!(ApiClient::new("http://localhost:8443", "a", "b", None).is_ok());
        let missing = ApiClient::new("https://x:1", "a", "b", Some(Path::new("/nonexistent/ca.pem")));
        assert!(matches!(missing, Err(ClientError::Tls(m)) if m.contains("/nonexistent/ca.pem")));
    }

    #[test]
    fn event_stream_framing() {
        let mut buf =
            b": keep-alive\n\nevent: call-event\ndata: {\"a\":1}\n\nevent: lagged\r\ndata: 3\r\n\r\nevent: part"
                .to_vec();
        assert_eq!(take_event(&mut buf), Some(SseEvent { event: String::new(), data: String::new() }));
        assert_eq!(take_event(&mut buf), Some(SseEvent { event: "call-event".into(), data: "{\"a\":1}".into() }));
        assert_eq!(take_event(&mut buf), Some(SseEvent { event: "lagged".into(), data: "3".into() }));
        assert_eq!(take_event(&mut buf), None, "an event without its blank line waits for more");
        assert_eq!(buf, b"event: part");
        let mut two = b"data: a\ndata: b\n\n".to_vec();
        assert_eq!(take_event(&mut two).unwrap().data, "a\nb");
    }

    #[test]
    fn call_ids_stay_one_path_segment() {
        assert_eq!(path_segment("a1b2-c.d_e~"), "a1b2-c.d_e~");
        assert_eq!(path_segment("x/../y?z"), "x%2F..%2Fy%3Fz");
    }
}
