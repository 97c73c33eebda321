//! The HELD endpoint over HTTP (RFC 5985 §8): `POST /held` and `POST /`, the header rules
//! (conditional requests, Content-Type and Accept, body size) and the plain-text answers to what
//! never becomes a HELD exchange. The HELD answer itself is [`HeldState::respond`].

use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::Utc;

use super::{HeldState, CONTENT_TYPE, MAX_BODY, MEDIA_TYPE};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
