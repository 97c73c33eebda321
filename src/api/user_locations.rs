//! User-entered locations over the API (docs/api.md, docs/location.md):
//!
//! * `GET /api/v1/lis/user-locations` — every entry (a desk account), or the caller's own (a
//!   `[[lis.users]]` account);
//! * `PUT /api/v1/lis/user-locations/{owner}` — enter or confirm: `{"address": {…civic…},
//!   "ip", "mac", "bssid"}` (the network identifiers; `ip` defaults to the request's source
//!   address), validated, 200 with the entry kept, 422 with the validator's reasons;
//! * `POST /api/v1/lis/user-locations/{owner}/confirm` — the same address again, from the
//!   device's current network (validated again);
//! * `DELETE /api/v1/lis/user-locations/{owner}`.
//!
//! Every kept change (entered, confirmed, cleared) is a `user-location-changed` audit record
//! with the account and the client's address; a refused one is not a change and is not.
//!
//! Who may write whose: a desk account (the organisation's officers and admins) anyone's; a
//! remote user's account only its own owner's (403 otherwise). Credentials as for every other
//! write (HTTP Basic through the wrong-credentials guard).

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use super::{tls, ApiState};
use crate::events::CallEvent;
use crate::location::user_entered::{owner_key, Change, EntryError, NetworkSeen, UserLocation, UserLocations};
use crate::location::Erl;

/// Who proved itself on a user-location request (put in the extensions by the API's guard).
#[derive(Debug, Clone)]
pub(super) enum Writer {
    /// A desk account: may read and write anyone's.
    Desk(String),
    /// A `[[lis.users]]` account: its own owner's only.
    User { username: String, owner: String },
}

impl Writer {
    fn may(&self, owner: &str) -> bool {
        match self {
            Writer::Desk(_) => true,
            Writer::User { owner: own, .. } => own == owner,
        }
    }

    fn name(&self) -> String {
        match self {
            Writer::Desk(u) => format!("desk {u}"),
            Writer::User { username, .. } => format!("user {username}"),
        }
    }
}

/// `PUT` and `POST …/confirm` bodies.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryRequest {
    /// The civic address (RFC 5139 element names, as in the config's ERLs); required by `PUT`,
    /// left out to confirm the kept one.
    #[serde(default)]
    pub address: Option<Erl>,
    /// The device's address; default: the address the request came from.
    #[serde(default)]
    pub ip: Option<IpAddr>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub bssid: Option<String>,
}

/// The answer of a refused entry.
#[derive(Debug, Serialize)]
struct Refusal {
    error: String,
    reasons: Vec<String>,
}

fn refuse(status: StatusCode, error: impl Into<String>, reasons: Vec<String>) -> Response {
    (status, Json(Refusal { error: error.into(), reasons })).into_response()
}

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/lis/user-locations", get(list))
        .route("/api/v1/lis/user-locations/{owner}", get(one).put(enter).delete(clear))
        .route("/api/v1/lis/user-locations/{owner}/confirm", post(confirm))
}

/// A refusal without reasons, small enough to pass around before it becomes the response.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        refuse(self.0, self.1, vec![])
    }
}

fn service(state: &ApiState) -> Result<&UserLocations, Refused> {
    state
        .core
        .user_locations
        .as_ref()
        .ok_or_else(|| Refused(StatusCode::SERVICE_UNAVAILABLE, "no location store".into()))
}

/// The owner of the path, if the writer may touch it.
fn owner_for(writer: &Writer, owner: &str) -> Result<String, Refused> {
    let owner = owner_key(owner).map_err(|why| Refused(StatusCode::BAD_REQUEST, why))?;
    if !writer.may(&owner) {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            format!("{} may enter only its own location, not {owner:?}'s", writer.name()),
        ));
    }
    Ok(owner)
}

async fn list(State(state): State<ApiState>, Extension(writer): Extension<Writer>) -> Response {
    let users = match service(&state) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    match users.store.user_locations().await {
        Ok(all) => {
            Json(all.into_iter().filter(|u| writer.may(&u.owner)).collect::<Vec<UserLocation>>()).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the user-entered locations");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "the location store cannot be read", vec![])
        }
    }
}

async fn one(
    State(state): State<ApiState>,
    Extension(writer): Extension<Writer>,
    Path(owner): Path<String>,
) -> Response {
    let (users, owner) = match service(&state).and_then(|u| Ok((u, owner_for(&writer, &owner)?))) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    match users.book.get(&owner) {
        Some(entry) => Json(entry).into_response(),
        None => refuse(StatusCode::NOT_FOUND, format!("no user-entered location for {owner:?}"), vec![]),
    }
}

async fn enter(
    State(state): State<ApiState>,
    Extension(writer): Extension<Writer>,
    ConnectInfo(peer): ConnectInfo<tls::ApiPeer>,
    Path(owner): Path<String>,
    body: Result<Json<EntryRequest>, JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => {
            return refuse(StatusCode::BAD_REQUEST, format!("the body is not an entry: {}", e.body_text()), vec![])
        }
    };
    let Some(address) = body.address.clone() else {
        return refuse(StatusCode::BAD_REQUEST, "no address: give {\"address\": {\"country\": …}}", vec![]);
    };
    keep(&state, &writer, peer.0, &owner, address, body).await
}

async fn confirm(
    State(state): State<ApiState>,
    Extension(writer): Extension<Writer>,
    ConnectInfo(peer): ConnectInfo<tls::ApiPeer>,
    Path(owner): Path<String>,
    body: Result<Json<EntryRequest>, JsonRejection>,
) -> Response {
    // No body (or an empty one) confirms the kept address from where the request comes.
    let body = match body {
        Ok(Json(b)) => b,
        Err(JsonRejection::MissingJsonContentType(_)) => EntryRequest::default(),
        Err(e) => {
            return refuse(StatusCode::BAD_REQUEST, format!("the body is not an entry: {}", e.body_text()), vec![])
        }
    };
    let (users, key) = match service(&state).and_then(|u| Ok((u, owner_for(&writer, &owner)?))) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let Some(kept) = users.book.get(&key) else {
        return refuse(StatusCode::NOT_FOUND, format!("no user-entered location for {key:?} to confirm"), vec![]);
    };
    let address = body.address.clone().unwrap_or(kept.erl);
    keep(&state, &writer, peer.0, &owner, address, body).await
}

async fn keep(
    state: &ApiState,
    writer: &Writer,
    source: SocketAddr,
    owner: &str,
    address: Erl,
    body: EntryRequest,
) -> Response {
    let (users, owner) = match service(state).and_then(|u| Ok((u, owner_for(writer, owner)?))) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let network = NetworkSeen { ip: Some(body.ip.unwrap_or(source.ip())), mac: body.mac, bssid: body.bssid };
    match users.enter(&owner, address, network, &writer.name(), chrono::Utc::now()).await {
        Ok((entry, change)) => {
            tracing::info!(owner = %entry.owner, by = %entry.entered_by, network = %entry.network.describe(), "user-entered location kept");
            let ev = CallEvent::user_location_changed(
                change,
                &entry.owner,
                Some(&entry),
                &entry.entered_by,
                "api",
                format!("tcp:{source}"),
                entry.confirmed_at,
            );
            state.audit.record(ev);
            Json(entry).into_response()
        }
        Err(EntryError::Malformed(why)) => refuse(StatusCode::BAD_REQUEST, why, vec![]),
        Err(EntryError::Invalid(reasons)) => {
            tracing::info!(%owner, ?reasons, "user-entered location refused by the validator");
            refuse(StatusCode::UNPROCESSABLE_ENTITY, "the address is not valid", reasons)
        }
        Err(EntryError::Store(e)) => {
            tracing::error!(error = %e, "cannot keep a user-entered location");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "the location store cannot be written", vec![])
        }
    }
}

async fn clear(
    State(state): State<ApiState>,
    Extension(writer): Extension<Writer>,
    ConnectInfo(peer): ConnectInfo<tls::ApiPeer>,
    Path(owner): Path<String>,
) -> Response {
    let (users, owner) = match service(&state).and_then(|u| Ok((u, owner_for(&writer, &owner)?))) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    match users.clear(&owner).await {
        Ok(true) => {
            tracing::info!(%owner, by = %writer.name(), "user-entered location cleared");
            let ev = CallEvent::user_location_changed(
                Change::Cleared,
                &owner,
                None,
                &writer.name(),
                "api",
                format!("tcp:{}", peer.0),
                chrono::Utc::now(),
            );
            state.audit.record(ev);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => refuse(StatusCode::NOT_FOUND, format!("no user-entered location for {owner:?}"), vec![]),
        Err(e) => {
            tracing::error!(error = %e, "cannot clear a user-entered location");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "the location store cannot be written", vec![])
        }
    }
}
