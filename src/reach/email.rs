//! Email alerts: one SMTP session per recipient and attempt (lettre on tokio and rustls/ring),
//! STARTTLS required or implicit TLS, SMTP AUTH when configured. The message is
//! `multipart/alternative`: the plain text and the HTML (escaped) of `channels::text`.

use std::path::Path;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::channels::{text, EmailChannel, SmtpTls};
use crate::events::CallEvent;

/// The message to `to` (one address of the channel).
pub fn message(ch: &EmailChannel, to: &str, ev: &CallEvent, ack_url: Option<&str>) -> Result<Message, String> {
    let from: Mailbox = ch.from.parse().map_err(|e| format!("from {:?}: {e}", ch.from))?;
    let to: Mailbox = to.parse().map_err(|e| format!("to {to:?}: {e}"))?;
    let builder = Message::builder().from(from).to(to).subject(text::subject(ev));
    // RFC 2156 / common clients: shown as urgent (a test call or an admin's announcement is not).
    let urgent = !ev.test_call && !text::is_announcement(ev);
    let builder = if urgent { builder.header(Importance::High) } else { builder };
    builder
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(text::plain(ev, ack_url)))
                .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(text::html(ev, ack_url))),
        )
        .map_err(|e| e.to_string())
}

/// Sends `msg` through the channel's server; `Ok` with the server's acceptance (`250 …`).
pub async fn send(ch: &EmailChannel, tls_ca: Option<&Path>, msg: Message, timeout: Duration) -> Result<String, String> {
    let tls = |host: &str| -> Result<TlsParameters, String> {
        let mut b = TlsParameters::builder(host.to_string());
        if let Some(p) = tls_ca {
            let pem = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            b = b.add_root_certificate(Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", p.display()))?);
        }
        b.build_rustls().map_err(|e| format!("TLS: {e}"))
    };
    let host = ch.server.trim_matches(['[', ']']);
    let mode = match ch.tls {
        SmtpTls::Starttls => Tls::Required(tls(host)?),
        SmtpTls::Implicit => Tls::Wrapper(tls(host)?),
        SmtpTls::None => Tls::None,
    };
    let mut b =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(ch.port()).tls(mode).timeout(Some(timeout));
    if let (Some(user), Some(pass)) = (&ch.username, &ch.password) {
        b = b.credentials(Credentials::new(user.clone(), pass.0.clone()));
    }
    let transport = b.build();
    // lettre's errors carry the server's replies and I/O errors, never the credentials.
    let reply = transport.send(msg).await.map_err(|e| e.to_string())?;
    Ok(format!("{} {}", reply.code(), reply.first_line().unwrap_or_default()))
}

/// `Importance: high` (RFC 2156 §5.3): mail clients flag the alert.
#[derive(Clone)]
struct Importance(&'static str);

#[allow(non_upper_case_globals)]
impl Importance {
    const High: Importance = Importance("high");
}

impl lettre::message::header::Header for Importance {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Importance")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(if s.eq_ignore_ascii_case("high") { Importance::High } else { Importance("normal") })
    }
    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), self.0.to_string())
    }
}
