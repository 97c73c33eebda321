//! The acknowledgement link of email, SMS and chat alerts (`/ack/{token}`, docs/channels.md):
//! no account needed — the signed token is the credential, for one call, one recipient, until it
//! expires. `GET` shows the alert and a button; only `POST` acknowledges, so a mail system's link
//! scanner that fetches every link does not. A link acknowledges once: a second use is refused,
//! even after a restart (the audit log already holds its acknowledgement). The acknowledgement
//! is audited with who (the link's recipient) and pushed to every desk like a desk's, and stops
//! the escalation (`crate::reach`). Several nodes on one store: the link's claim in the store
//! (`crate::shared::ack_links`) lets one node acknowledge it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::channels::sign::{verify_ack, AckClaim, AckError};
use crate::channels::text::{html, html_escape};
use crate::core_handle::{AnnotateError, CoreHandle};
use crate::events::CallEventKind;
use crate::shared::ack_links;

/// The `desk` of an acknowledgement by link (its `by` is the recipient).
pub const LINK_DESK: &str = "acknowledgement link";

#[derive(Clone)]
struct LinkState {
    core: CoreHandle,
    key: Arc<[u8]>,
    /// Links used in this run (token → its expiry), so two POSTs racing are one
    /// acknowledgement; held across the check of the audit log and the acknowledgement.
    used: Arc<tokio::sync::Mutex<HashMap<String, i64>>>,
}

pub fn router(core: CoreHandle, key: Arc<[u8]>) -> Router {
    let state = LinkState { core, key, used: Default::default() };
    Router::new().route("/ack/{token}", get(show).post(acknowledge)).with_state(state)
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">\
         <title>{t}</title></head><body><h1>{t}</h1>{body}</body></html>",
        t = html_escape(title)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

fn refused(e: AckError) -> Response {
    let status = match e {
        AckError::Invalid => StatusCode::NOT_FOUND,
        AckError::Expired => StatusCode::GONE,
    };
    page(status, "Cannot acknowledge", &format!("<p>{}.</p>", html_escape(&e.to_string())))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Whether the call's audit record already holds this recipient's acknowledgement by link.
async fn already_used(core: &CoreHandle, claim: &AckClaim) -> Result<bool, String> {
    let events = core.store.call_events(&claim.call_id).await.map_err(|e| e.to_string())?;
    Ok(events.iter().any(|r| {
        matches!(&r.event.kind, CallEventKind::Acknowledged { by, desk } if *by == claim.target && desk == LINK_DESK)
    }))
}

/// The confirmation page: the whole alert and a button that POSTs.
async fn show(State(s): State<LinkState>, Path(token): Path<String>) -> Response {
    let claim = match verify_ack(&s.key, &token, now()) {
        Ok(c) => c,
        Err(e) => return refused(e),
    };
    let alert = match s.core.store.call_events(&claim.call_id).await {
        Ok(events) => events.first().map(|r| html(&r.event, None)).unwrap_or_default(),
        Err(_) => String::new(),
    };
    // The alert's own document, inside ours: its body only.
    let alert = alert
        .split_once("<body>")
        .and_then(|(_, b)| b.rsplit_once("</body>"))
        .map(|(b, _)| b.to_string())
        .unwrap_or_default();
    page(
        StatusCode::OK,
        "Acknowledge the emergency alert",
        &format!(
            "{alert}<form method=\"post\"><p>Acknowledge as <b>{who}</b>: every desk is told and the escalation stops.</p>\
             <button type=\"submit\">Acknowledge</button></form>",
            who = html_escape(&claim.target)
        ),
    )
}

async fn acknowledge(State(s): State<LinkState>, Path(token): Path<String>) -> Response {
    let claim = match verify_ack(&s.key, &token, now()) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %e, "acknowledgement link refused");
            return refused(e);
        }
    };
    let mut used = s.used.lock().await;
    let t = now();
    used.retain(|_, expires| *expires >= t);
    let seen = match used.contains_key(&token) {
        true => Ok(true),
        false => already_used(&s.core, &claim).await,
    };
    match seen {
        Ok(false) => {}
        Ok(true) => {
            return page(StatusCode::GONE, "Already acknowledged", "<p>This link has already been used.</p>");
        }
        Err(e) => {
            tracing::error!(error = %e, "acknowledgement link: the audit log cannot be read");
            return page(StatusCode::SERVICE_UNAVAILABLE, "Try again", "<p>The audit log cannot be read.</p>");
        }
    }
    // Across nodes: the store lets one node's claim of the link through (the lock above
    // serialises this node's own POSTs; the audit check, links used before the table existed).
    let db = s.core.store.database();
    match ack_links::claim(db, s.core.store.node(), &token, &claim.call_id, claim.expires).await {
        Ok(true) => {}
        Ok(false) => {
            used.insert(token, claim.expires);
            return page(StatusCode::GONE, "Already acknowledged", "<p>This link has already been used.</p>");
        }
        Err(e) => {
            tracing::error!(error = %e, "acknowledgement link: the store cannot be written");
            return page(StatusCode::SERVICE_UNAVAILABLE, "Try again", "<p>The store cannot be written.</p>");
        }
    }
    let acknowledged = s.core.acknowledge_at(&claim.call_id, &claim.target, LINK_DESK).await;
    if acknowledged.is_err() {
        if let Err(e) = ack_links::unclaim(db, &token).await {
            tracing::error!(error = %e, "acknowledgement link: its claim could not be given back; the link stays used");
        }
    }
    match acknowledged {
        Ok(_) => {
            used.insert(token, claim.expires);
            tracing::info!(call = %claim.call_id, by = %claim.target, "acknowledged by link");
            page(StatusCode::OK, "Acknowledged", "<p>Thank you. Every desk has been told; the escalation stops.</p>")
        }
        Err(AnnotateError::UnknownCall(_)) => refused(AckError::Invalid),
        Err(e) => {
            page(StatusCode::SERVICE_UNAVAILABLE, "Try again", &format!("<p>{}</p>", html_escape(&e.to_string())))
        }
    }
}
