//! The core's HTTP API for desks on other machines (docs/api.md): who the desk is, the live
//! event stream, history and a call's audited events, and acknowledgements.
//!
//! Every request carries a desk account's credentials (HTTP Basic, RFC 7617; use TLS — `api.tls_cert`
//! and `api.tls_key` — anywhere but loopback). Wrong credentials are refused with 401, audited,
//! and count towards the same per-address block as SIP ([`crate::access`]); a refused request
//! learns nothing about calls. Passwords are compared in constant time and never logged.

pub mod ack_link;
pub mod client;
pub mod tls;
mod user_locations;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::access::{Gate, SharedGuard};
use crate::audit::{AuditRecord, AuditWriter, CallOutcome, CallSummary, ChainCheck, HistoryQuery};
use crate::config::{AcknowledgeMode, ConferenceMode, Config, DeskAccountConfig};
use crate::core_handle::CoreHandle;
use crate::events::{CallEvent, Caller};
use crate::sip::digest::constant_time_eq;

/// What `GET /api/v1/desk` tells a desk about itself and the core.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct DeskInfo {
    /// The account's display name ("Control room") and username.
    pub name: String,
    pub username: String,
    /// May this account talk in a call (where the policy allows two-way)?
    pub talk: bool,
    /// The core's SIP host and ports: where to REGISTER and send conference INVITEs.
    pub sip_host: String,
    pub sip_udp: Option<u16>,
    pub sip_tcp: Option<u16>,
    /// The core's SIP TLS port, when it listens for TLS.
    #[serde(default)]
    pub sip_tls: Option<u16>,
    pub policies: Vec<PolicyInfo>,
    /// The number for a test call (933 in the lab), if a policy has one.
    pub test_number: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
pub struct PolicyInfo {
    pub name: String,
    /// Desks may talk in this policy's calls.
    pub two_way: bool,
    /// `any`: one acknowledgement clears every desk; `each`: every desk acknowledges.
    pub acknowledge: AcknowledgeMode,
    /// The routes its calls may take, in order (`Config::policy_routes`): with the routes'
    /// health, a desk tells whether this policy's calls can get through.
    #[serde(default)]
    pub routes: Vec<String>,
}

/// `POST /api/v1/calls/{id}/acknowledge`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcknowledgeRequest {
    pub officer: String,
}

/// `GET /api/v1/calls/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallDetailResponse {
    pub summary: Option<CallSummary>,
    pub events: Vec<AuditRecord>,
    /// The whole audit log's hash chain, checked for this answer when asked (`?chain=true`:
    /// it reads every row, so a desk's catch-up does not ask).
    pub chain: Option<ChainCheck>,
}

/// `GET /api/v1/calls/{id}` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallParams {
    #[serde(default)]
    pub chain: bool,
}

/// `GET /api/v1/history` parameters (all optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryParams {
    pub text: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub outcome: Option<CallOutcome>,
    #[serde(default)]
    pub exclude_tests: bool,
    pub limit: Option<u32>,
}

#[derive(Clone)]
struct ApiState {
    core: CoreHandle,
    audit: AuditWriter,
    /// The running config: its desk accounts and policies, swapped whole by a reload.
    config: tokio::sync::watch::Receiver<Arc<Config>>,
    guard: SharedGuard,
}

/// The account a request proved (put in the request's extensions by [`authenticate`]).
#[derive(Clone)]
struct Authenticated(DeskAccountConfig);

pub fn router(
    config: tokio::sync::watch::Receiver<Arc<Config>>,
    core: CoreHandle,
    audit: AuditWriter,
    guard: SharedGuard,
) -> Router {
    let state = ApiState { core, audit, config, guard };
    Router::new()
        .route("/api/v1/desk", get(desk))
        .route("/api/v1/events", get(events))
        .route("/api/v1/routes", get(routes))
        .route("/api/v1/history", get(history))
        .route("/api/v1/history.csv", get(history_csv))
        .route("/api/v1/rejections", get(rejections))
        .route("/api/v1/lis/unlocated", get(unlocated))
        .route("/api/v1/lis/switches", get(switches))
        .route("/api/v1/floor-plans/{plan}", get(floor_plan))
        .route("/api/v1/status", get(status))
        .route("/api/v1/calls/{id}", get(call))
        .route("/api/v1/calls/{id}/acknowledge", post(acknowledge))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .merge(
            user_locations::routes().layer(middleware::from_fn_with_state(state.clone(), authenticate_location_writer)),
        )
        // After the layer: without credentials, for load balancers and monitoring. It says
        // only whether the core works, nothing of any call.
        .route("/api/v1/health", get(health))
        .with_state(state)
}

/// HTTP Basic credentials (RFC 7617 §2): `Basic base64(user:password)`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Basic") {
        return None;
    }
    let raw = decode_base64(b64.trim())?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// Standard base64 (RFC 4648 §4). Decoding takes it with or without its padding, as clients
/// differ.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    BASE64.decode(s).ok()
}

/// Standard base64 with padding (the client side: the desk app and tests).
pub fn encode_base64(data: &[u8]) -> String {
    BASE64.encode(data)
}

fn unauthorized(reason: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"sosdesk\", charset=\"UTF-8\"")],
        format!("{reason}\n"),
    )
        .into_response()
}

async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    authenticate_as(state, request, next, false).await
}

/// The user-location routes: a desk account (anyone's) or a `[[lis.users]]` account (its own).
async fn authenticate_location_writer(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    authenticate_as(state, request, next, true).await
}

/// Checks the request's Basic credentials against the desk accounts (and, with `lis_users`, the
/// remote users' accounts); the proved account goes in the request's extensions.
async fn authenticate_as(state: ApiState, mut request: Request, next: Next, lis_users: bool) -> Response {
    let peer = request.extensions().get::<ConnectInfo<tls::ApiPeer>>().map(|c| c.0 .0);
    let ip = peer.map(|p| p.ip().to_canonical()).unwrap_or([0, 0, 0, 0].into());
    let now = Instant::now();
    let gate = state.guard.lock().map(|mut g| g.gate(ip, now)).unwrap_or(Gate::Check);
    if let Gate::Blocked { audit } = gate {
        let reason = format!("API request refused: too many wrong credentials from {ip}");
        if audit {
            state.audit_refusal(
                &request,
                peer,
                "",
                429,
                format!("{reason}; further attempts are refused unaudited for a while"),
            );
        }
        return (StatusCode::TOO_MANY_REQUESTS, format!("{reason}\n")).into_response();
    }
    let Some((user, pass)) = basic_credentials(request.headers()) else {
        // No credentials at all is the client asking how to log in: not a failure to count.
        return unauthorized("credentials required");
    };
    let config = state.config.borrow().clone();
    let desk = config.desks.iter().find(|a| a.username == user);
    let lis_user = config.lis.users.iter().find(|u| lis_users && u.username == user);
    let password = desk.map(|a| &a.password).or(lis_user.map(|u| &u.password));
    let ok = password.is_some_and(|p| constant_time_eq(p.as_bytes(), pass.as_bytes()));
    if !ok {
        let why = if password.is_none() { "unknown user" } else { "wrong password" };
        state.audit_refusal(&request, peer, &user, 401, format!("API request by {user:?} refused: {why}"));
        if let Ok(mut g) = state.guard.lock() {
            g.failed(ip, now);
        }
        return unauthorized("wrong credentials");
    }
    if let Ok(mut g) = state.guard.lock() {
        g.succeeded(ip);
    }
    match (desk, lis_user) {
        (Some(account), _) => {
            request.extensions_mut().insert(Authenticated(account.clone()));
            request.extensions_mut().insert(user_locations::Writer::Desk(account.username.clone()));
        }
        (None, Some(u)) => {
            request
                .extensions_mut()
                .insert(user_locations::Writer::User { username: u.username.clone(), owner: u.owner_key() });
        }
        (None, None) => return unauthorized("wrong credentials"),
    }
    next.run(request).await
}

impl ApiState {
    /// A refused API request, audited as a record of its own (like a refused SIP request).
    fn audit_refusal(&self, request: &Request, peer: Option<SocketAddr>, user: &str, status: u16, reason: String) {
        tracing::info!(?peer, user, status, %reason, "API request refused");
        let caller = Caller {
            number: String::new(),
            display_name: None,
            uri: if user.is_empty() { String::new() } else { format!("api user {user}") },
            source: peer.map(|p| format!("tcp:{p}")).unwrap_or_default(),
        };
        let ev = CallEvent::refusal(
            caller,
            format!("{} {}", request.method(), request.uri().path()),
            status,
            reason,
            chrono::Utc::now(),
        );
        self.audit.record(ev.clone());
        self.core.publish(ev);
    }
}

/// Whether the core works: the engine answered the watchdog's last probe (`crate::watchdog`)
/// and the audit writer is committing. 200 `ok` or `degraded` (the audit log is failing: calls
/// still route), 503 `stalled` (the engine routes nothing) or `starting`.
async fn health(State(state): State<ApiState>) -> Response {
    let engine = state.core.health.lock().map(|h| h.clone()).unwrap_or_default();
    let audit = state.audit.health();
    let (code, status) = if engine.stalled {
        (StatusCode::SERVICE_UNAVAILABLE, "stalled")
    } else if engine.answered_at.is_none() {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    } else if audit.retrying > 0 {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    let body = serde_json::json!({
        "status": status,
        "engine": { "answered_at": engine.answered_at, "answer_ms": engine.answer_ms, "stalled": engine.stalled },
        "audit": { "committed": audit.committed, "failing": audit.retrying > 0 },
    });
    (code, Json(body)).into_response()
}

/// What the core holds (authenticated): the engine's calls, transactions and timers at the
/// watchdog's last probe, the runtime's tasks, the audit writer.
async fn status(State(state): State<ApiState>) -> Response {
    let engine = state.core.health.lock().map(|h| h.clone()).unwrap_or_default();
    Json(serde_json::json!({ "engine": engine, "audit": state.audit.health() })).into_response()
}

/// Each route's live health: state (`up`, `down`, `unknown`), since when, the last probe's
/// outcome and round-trip time (`routing.health_interval_s`).
async fn routes(State(state): State<ApiState>) -> Response {
    match state.core.routes().await {
        Some(r) => Json(r).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "the engine did not answer").into_response(),
    }
}

/// What a desk is told of the core (its own account's fields are filled in by [`desk`]).
fn desk_info(cfg: &Config, core: &CoreHandle) -> DeskInfo {
    DeskInfo {
        name: String::new(),
        username: String::new(),
        talk: false,
        sip_host: core.local.host.clone(),
        sip_udp: core.local.udp.map(|a| a.port()),
        sip_tcp: core.local.tcp.map(|a| a.port()),
        sip_tls: core.local.tls.map(|a| a.port()),
        policies: cfg
            .policies
            .iter()
            .map(|p| PolicyInfo {
                name: p.name.clone(),
                two_way: p.conference_mode == ConferenceMode::TwoWay,
                acknowledge: p.acknowledge,
                routes: cfg.policy_routes(p),
            })
            .collect(),
        test_number: cfg.policies.iter().flat_map(|p| &p.numbers).find(|n| n.test).map(|n| n.dial_string.clone()),
    }
}

async fn desk(State(state): State<ApiState>, Extension(Authenticated(a)): Extension<Authenticated>) -> Json<DeskInfo> {
    let mut info = desk_info(&state.config.borrow(), &state.core);
    info.name = a.name;
    info.username = a.username;
    info.talk = a.talk;
    Json(info)
}

/// Server-sent events (one `CallEvent` as JSON per `data:`), live from the moment of the
/// request. A desk connects this first, then catches up from `/history` and `/calls/{id}`;
/// events seen both ways are told apart by (call_id, seq). The core's own condition
/// (`event: core`, a [`CoreCondition`](crate::core_handle::CoreCondition): engine stalled, audit store failing) comes first and
/// again whenever it changes, so every desk shows it while calls still route.
async fn events(State(state): State<ApiState>) -> impl IntoResponse {
    let rx = state.core.subscribe();
    // Other nodes' events (several nodes on one PostgreSQL): committed before they are read,
    // so a desk's catch-up from the store and this stream leave no gap between them either.
    let others = state.core.subscribe_others();
    let mut condition = state.core.condition.clone();
    condition.mark_changed();
    // Events are broadcast before the audit writer commits them. One broadcast just before this
    // subscription would be missed by the stream and, if not yet written, by the desk's catch-up
    // from the store: so everything recorded so far is committed before the stream is answered
    // (bounded: a failing store must not hold the stream back; the events are retried there).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), state.audit.flush()).await;
    let stream = futures_util::stream::unfold(
        (rx, others, condition, true),
        |(mut rx, mut others, mut condition, mut watched)| async move {
            let event = tokio::select! {
                biased;
                changed = condition.changed(), if watched => match changed {
                    Ok(()) => {
                        let now = condition.borrow_and_update().clone();
                        Event::default().event("core").data(serde_json::to_string(&now).unwrap_or_default())
                    }
                    // The watchdog has ended (the core is stopping): no more to tell; the comment
                    // keeps the stream going until the events end too.
                    Err(_) => {
                        watched = false;
                        Event::default().comment("core condition no longer followed")
                    }
                },
                received = rx.recv() => match received {
                    Ok(ev) => Event::default().event("call-event").data(serde_json::to_string(&ev).unwrap_or_default()),
                    // The desk missed events: it is told, and catches up from the history.
                    Err(broadcast::error::RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                received = others.recv() => match received {
                    Ok(ev) => Event::default().event("call-event").data(serde_json::to_string(&ev).unwrap_or_default()),
                    Err(broadcast::error::RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            Some((Ok::<_, Infallible>(event), (rx, others, condition, watched)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

impl HistoryParams {
    fn query(self) -> HistoryQuery {
        HistoryQuery {
            text: self.text,
            from: self.from,
            until: self.until,
            outcome: self.outcome,
            exclude_tests: self.exclude_tests,
            limit: self.limit.unwrap_or(200).min(5000),
        }
    }
}

fn store_unavailable(e: impl std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, format!("audit store: {e}\n")).into_response()
}

async fn history(State(state): State<ApiState>, Query(p): Query<HistoryParams>) -> Response {
    match state.core.store.search(&p.query()).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => store_unavailable(e),
    }
}

#[derive(Debug, Deserialize)]
struct RejectionsParams {
    since: Option<chrono::DateTime<chrono::Utc>>,
    limit: Option<u32>,
}

/// The audit records of refused requests, newest first (`sosdesk rejections`).
async fn rejections(State(state): State<ApiState>, Query(p): Query<RejectionsParams>) -> Response {
    match state.core.store.refusals(p.since, p.limit.unwrap_or(200).min(5000)).await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => store_unavailable(e),
    }
}

/// `GET /api/v1/lis/unlocated[?since=…]`: the unlocated report (`sosdesk lis unlocated`).
async fn unlocated(State(state): State<ApiState>, Query(p): Query<RejectionsParams>) -> Response {
    let Some(lis) = &state.core.lis else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no location store\n").into_response();
    };
    match lis.unlocated_report(p.since).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the unlocated report");
            (StatusCode::SERVICE_UNAVAILABLE, "the location store cannot be read\n").into_response()
        }
    }
}

/// What a floor-plan image may do where it is opened: nothing. No script, no request of its own
/// (an SVG's external images, fonts, style sheets), no plugin, not framed by another site; styles
/// inside the SVG only. `sandbox` treats it as a unique origin even when opened directly.
pub const FLOOR_PLAN_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'none'";

/// `GET /api/v1/floor-plans/{plan}`: a floor plan's image (`plan` is its SHA-256, as the
/// `floor_plan` of an ERL on a call event names it). Checked again before it is served (a store
/// edited by hand, or by an older sosdesk, cannot slip a script through), with its own media type,
/// [`FLOOR_PLAN_CSP`] and `nosniff`.
async fn floor_plan(State(state): State<ApiState>, Path(plan): Path<String>) -> Response {
    let Some(lis) = &state.core.lis else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no location store\n").into_response();
    };
    if plan.len() != 64 || !plan.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return (StatusCode::NOT_FOUND, "no such floor plan (a plan is named by its lower-hex SHA-256)\n")
            .into_response();
    }
    let (media_type, bytes) = match lis.floor_plan_image(&plan).await {
        Ok(Some(found)) => found,
        Ok(None) => return (StatusCode::NOT_FOUND, "no such floor plan\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read a floor plan");
            return (StatusCode::SERVICE_UNAVAILABLE, "the location store cannot be read\n").into_response();
        }
    };
    match crate::location::floorplan::check_image(bytes) {
        Ok(img) if img.media_type == media_type && img.sha256 == plan => (
            [
                (header::CONTENT_TYPE, media_type.as_str()),
                (header::CONTENT_SECURITY_POLICY, FLOOR_PLAN_CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                // Named by its content: it never changes.
                (header::CACHE_CONTROL, "private, max-age=31536000, immutable"),
            ],
            img.bytes,
        )
            .into_response(),
        Ok(_) => {
            tracing::error!(plan, "a stored floor plan does not match its id or media type: not served");
            (StatusCode::UNPROCESSABLE_ENTITY, "this floor plan's stored image does not match its id\n").into_response()
        }
        Err(reason) => {
            tracing::error!(plan, %reason, "a stored floor plan fails the image check: not served");
            (StatusCode::UNPROCESSABLE_ENTITY, format!("this floor plan is not served: {reason}\n")).into_response()
        }
    }
}

/// `GET /api/v1/lis/switches`: each `[[switch]]` of switch-port discovery as the running core
/// last polled it (state, error, MACs learnt); `[]` without switches.
async fn switches(State(state): State<ApiState>) -> Response {
    let statuses = state.core.discovery.as_ref().map(|d| d.statuses()).unwrap_or_default();
    Json(statuses).into_response()
}

/// The audit rows of the calls a search finds, as the CSV export writes them
/// (`AuditStore::export_csv_matching`).
async fn history_csv(State(state): State<ApiState>, Query(p): Query<HistoryParams>) -> Response {
    let mut csv = Vec::new();
    match state.core.store.export_csv_matching(&mut csv, Some(&p.query())).await {
        Ok(()) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response(),
        Err(e) => store_unavailable(e),
    }
}

async fn call(State(state): State<ApiState>, Path(id): Path<String>, Query(p): Query<CallParams>) -> Response {
    let summary = state.core.store.call_summary(&id).await;
    let events = state.core.store.call_events(&id).await;
    match (summary, events) {
        (Ok(None), Ok(ev)) if ev.is_empty() => (StatusCode::NOT_FOUND, format!("no call {id}\n")).into_response(),
        (Ok(summary), Ok(events)) => {
            let chain = if p.chain { Some(state.core.store.chain_check().await) } else { None };
            Json(CallDetailResponse { summary, events, chain }).into_response()
        }
        (Err(e), _) | (_, Err(e)) => store_unavailable(e),
    }
}

async fn acknowledge(
    State(state): State<ApiState>,
    Extension(Authenticated(a)): Extension<Authenticated>,
    Path(id): Path<String>,
    Json(req): Json<AcknowledgeRequest>,
) -> Response {
    let officer = req.officer.trim();
    if officer.is_empty() || officer.len() > 200 {
        return (StatusCode::BAD_REQUEST, "officer: 1 to 200 characters\n").into_response();
    }
    match state.core.acknowledge_at(&id, officer, &a.name).await {
        Ok(ev) => Json(ev).into_response(),
        Err(crate::core_handle::AnnotateError::UnknownCall(_)) => {
            (StatusCode::NOT_FOUND, format!("no call {id}\n")).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_test_vectors() {
        // RFC 4648 §10.
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode_base64(plain.as_bytes()), coded);
            assert_eq!(decode_base64(coded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(decode_base64("Zm9v!"), None);
        assert_eq!(decode_base64("Z"), None);
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic ZGVzazE6cGE6c3M=".parse().unwrap());
        assert_eq!(basic_credentials(&h), Some(("desk1".into(), "pa:ss".into())), "a colon in the password stays");
        h.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(basic_credentials(&h), None);
    }
}
