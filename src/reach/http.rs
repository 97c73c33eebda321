//! Webhooks and SMS gateways: one HTTP/1.1 request per attempt over hyper (the HTTP stack
//! already built for the API), TLS with rustls/ring and the system's CAs (plus a channel's
//! `tls_ca`). What a webhook and an SMS gateway are sent is built here from `channels::text`.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::channels::sign::{webhook_signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::channels::{text, HttpMethod, SmsChannel, SmsEncoding, Url, WebhookChannel, WebhookFormat};
use crate::events::CallEvent;

/// The header carrying a webhook delivery's acknowledgement link (`json` format).
pub const ACK_URL_HEADER: &str = "X-Sosdesk-Ack-Url";

/// One request to send.
pub struct HttpRequest {
    pub method: HttpMethod,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub tls_ca: Option<PathBuf>,
}

/// The request of one webhook delivery, signed at `now_unix`.
pub fn webhook_request(
    ch: &WebhookChannel,
    ev: &CallEvent,
    ack_url: Option<&str>,
    now_unix: i64,
    tls_ca: Option<PathBuf>,
) -> Result<HttpRequest, String> {
    let url = Url::parse(&ch.url.0)?;
    let body = match ch.format {
        WebhookFormat::Json => serde_json::to_vec(ev),
        WebhookFormat::Slack => serde_json::to_vec(&text::slack(ev, ack_url)),
        WebhookFormat::Teams => serde_json::to_vec(&text::teams(ev, ack_url)),
        WebhookFormat::Mattermost => serde_json::to_vec(&text::mattermost(ev, ack_url)),
    }
    .map_err(|e| e.to_string())?;
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    if let Some(secret) = &ch.secret {
        headers.push((TIMESTAMP_HEADER.into(), now_unix.to_string()));
        headers.push((SIGNATURE_HEADER.into(), webhook_signature(secret.0.as_bytes(), now_unix, &body)));
    }
    if let (WebhookFormat::Json, Some(u)) = (ch.format, ack_url) {
        headers.push((ACK_URL_HEADER.into(), u.to_string()));
    }
    Ok(HttpRequest { method: HttpMethod::Post, url, headers, body, tls_ca })
}

/// The request that sends `number` the alert through an SMS gateway: the channel's `fields`
/// with `{to}` and `{text}` filled in, as a form (a GET's query string) or a JSON object.
pub fn sms_request(
    ch: &SmsChannel,
    number: &str,
    ev: &CallEvent,
    ack_url: Option<&str>,
    tls_ca: Option<PathBuf>,
) -> Result<HttpRequest, String> {
    let mut url = Url::parse(&ch.url.0)?;
    let sms = text::sms(ev, ack_url);
    let fields: std::collections::BTreeMap<&str, String> =
        ch.fields.iter().map(|(k, v)| (k.as_str(), v.replace("{to}", number).replace("{text}", &sms))).collect();
    let mut headers = Vec::new();
    if let Some(auth) = &ch.auth_header {
        headers.push(("Authorization".to_string(), auth.0.clone()));
    }
    let body = match (ch.method, ch.encoding) {
        (HttpMethod::Get, _) => {
            let q = serde_urlencoded::to_string(&fields).map_err(|e| e.to_string())?;
            url.path.push(if url.path.contains('?') { '&' } else { '?' });
            url.path.push_str(&q);
            Vec::new()
        }
        (HttpMethod::Post, SmsEncoding::Form) => {
            headers.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
            serde_urlencoded::to_string(&fields).map_err(|e| e.to_string())?.into_bytes()
        }
        (HttpMethod::Post, SmsEncoding::Json) => {
            headers.push(("Content-Type".into(), "application/json".into()));
            serde_json::to_vec(&fields).map_err(|e| e.to_string())?
        }
    };
    Ok(HttpRequest { method: ch.method, url, headers, body, tls_ca })
}

/// Sends `req`; `Ok` with the status line for a 2xx, else why not (status and the start of
/// the answer, or the connection's error). Bounded by the caller's timeout.
pub async fn send(req: HttpRequest) -> Result<String, String> {
    let url = &req.url;
    let tcp = TcpStream::connect((url.host.as_str(), url.port)).await.map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let method = match req.method {
        HttpMethod::Post => hyper::Method::POST,
        HttpMethod::Get => hyper::Method::GET,
    };
    let mut b = Request::builder()
        .method(method)
        .uri(&url.path)
        .header(hyper::header::HOST, url.authority())
        .header(hyper::header::USER_AGENT, "sosdesk");
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let request = b.body(Full::new(Bytes::from(req.body))).map_err(|e| format!("request: {e}"))?;
    let response = if url.https {
        let cfg = crate::transport::tls::alert_client(req.tls_ca.as_deref())?;
        let name = ServerName::try_from(url.host.clone()).map_err(|_| format!("{:?} is not a TLS name", url.host))?;
        let tls = TlsConnector::from(cfg).connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        exchange(TokioIo::new(tls), request).await?
    } else {
        exchange(TokioIo::new(tcp), request).await?
    };
    let (status, body) = response;
    if status.is_success() {
        Ok(format!("HTTP {}", status.as_u16()))
    } else {
        // The answer's text stays out of the audit and the warning: gateways echo the request,
        // and with it an API key or the acknowledgement link's token. At debug only, for an
        // admin chasing a refusal (Slack: `invalid_token`).
        let said: String =
            String::from_utf8_lossy(&body).chars().take(120).map(|c| if c.is_control() { ' ' } else { c }).collect();
        tracing::debug!(status = status.as_u16(), answer = %said.trim(), "alert receiver refused");
        Err(format!("HTTP {}", status.as_u16()))
    }
}

async fn exchange<T>(io: TokioIo<T>, request: Request<Full<Bytes>>) -> Result<(hyper::StatusCode, Bytes), String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let resp = sender.send_request(request).await.map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status();
    // A receiver's answer is read up to 64 kB: enough to say why, never a memory hog.
    let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::sign::verify_webhook;
    use crate::channels::text::tests::call;
    use crate::channels::{ChannelConfig, Secret};

    fn channel(toml_text: &str) -> ChannelConfig {
        #[derive(serde::Deserialize)]
        struct One {
            channel: ChannelConfig,
        }
        toml::from_str::<One>(toml_text).unwrap().channel
    }

    #[test]
    fn a_json_webhook_is_the_call_event_signed_with_its_link_beside() {
        let ChannelConfig::Webhook(w) = channel(
            "[channel]\nname = \"h\"\nkind = \"webhook\"\nurl = \"https://siem.example.org:8443/in?k=1\"\nsecret = \"0123456789abcdef\"\n",
        ) else {
            panic!()
        };
        let ev = call("Alice", false);
        let r = webhook_request(&w, &ev, Some("https://core/ack/t"), 1_700_000_000, None).unwrap();
        assert_eq!((r.url.host.as_str(), r.url.port, r.url.path.as_str()), ("siem.example.org", 8443, "/in?k=1"));
        let h = |n: &str| r.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(h("X-Sosdesk-Timestamp").as_deref(), Some("1700000000"));
        assert!(verify_webhook(
            b"0123456789abcdef",
            "1700000000",
            &h("X-Sosdesk-Signature").unwrap(),
            &r.body,
            1_700_000_001
        ));
        assert_eq!(h(ACK_URL_HEADER).as_deref(), Some("https://core/ack/t"));
        assert_eq!(serde_json::from_slice::<CallEvent>(&r.body).unwrap(), ev);
        let slack = WebhookChannel { format: WebhookFormat::Slack, secret: None, ..w };
        let r = webhook_request(&slack, &ev, None, 0, None).unwrap();
        assert!(r.headers.iter().all(|(k, _)| !k.starts_with("X-Sosdesk")), "no signature without a secret");
        assert!(serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["text"].is_string());
    }

    #[test]
    fn an_sms_gateway_gets_its_fields_by_get_form_or_json() {
        let ChannelConfig::Sms(mut s) = channel(
            "[channel]\nname = \"s\"\nkind = \"sms\"\nurl = \"https://gw.example.org/send?key=abc\"\nmethod = \"GET\"\nto = [\"+1555\"]\nfields = { to = \"{to}\", msg = \"{text}\" }\n",
        ) else {
            panic!()
        };
        let ev = call("Al & Bo", true);
        let r = sms_request(&s, "+1555", &ev, None, None).unwrap();
        assert!(r.body.is_empty() && r.method == HttpMethod::Get);
        assert!(r.url.path.starts_with("/send?key=abc&msg=TEST+CALL+933%3A+Al+%26+Bo+cb+"), "{}", r.url.path);
        assert!(r.url.path.ends_with("&to=%2B1555"), "{}", r.url.path);
        s.method = HttpMethod::Post;
        s.auth_header = Some(Secret("Bearer t".into()));
        let r = sms_request(&s, "+1555", &ev, None, None).unwrap();
        assert!(r.headers.contains(&("Authorization".into(), "Bearer t".into())));
        assert!(String::from_utf8(r.body).unwrap().starts_with("msg=TEST+CALL+933"));
        s.encoding = SmsEncoding::Json;
        let r = sms_request(&s, "+1555", &ev, None, None).unwrap();
        let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(j["to"], "+1555");
    }
}
