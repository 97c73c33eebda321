//! Alert channels beyond SIP (issue 15): what is configured (`[[channel]]`, a policy's
//! `channels` and `escalation`, `[alerts]`), what each channel says (`text.rs`), and the
//! signatures of webhooks and acknowledgement links (`sign.rs`).
//!
//! Sans-I/O and below `config`: the config embeds these types, and `crate::reach` (the I/O
//! shell that sends, retries and escalates) and the API's acknowledgement link use them. A new
//! kind of channel (a voice call) is a new [`ChannelConfig`] variant, its text here and its
//! sender in `reach`.

pub mod sign;
pub mod text;

use std::path::PathBuf;

use serde::Deserialize;

/// A secret of the config (SMTP password, webhook URL with its token, HMAC key): never printed,
/// not even in a debug log, never audited.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// `[alerts]`: what every channel shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Where people reach the core's API (`https://sosdesk.example.org:8443`): the base of the
    /// acknowledgement links in emails, SMS and chat messages. Without it, no links are sent.
    pub public_url: Option<String>,
    /// The HMAC key of acknowledgement links (at least 32 characters). Default: a random key
    /// generated at the first start and kept beside the audit store (`<store>.ack-key`).
    pub ack_key: Option<Secret>,
    /// How long an acknowledgement link works (s).
    #[serde(default = "default_ack_valid_s")]
    pub ack_valid_s: u64,
    /// One attempt (SMTP session, HTTP request) that has not finished in this many s has failed.
    #[serde(default = "default_attempt_timeout_s")]
    pub attempt_timeout_s: u64,
    /// A failed delivery is retried with backoff (1, 2, 4 … 30 s apart) for this long (s).
    #[serde(default = "default_retry_for_s")]
    pub retry_for_s: u64,
}

fn default_ack_valid_s() -> u64 {
    3600
}
fn default_attempt_timeout_s() -> u64 {
    15
}
fn default_retry_for_s() -> u64 {
    300
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            public_url: None,
            ack_key: None,
            ack_valid_s: default_ack_valid_s(),
            attempt_timeout_s: default_attempt_timeout_s(),
            retry_for_s: default_retry_for_s(),
        }
    }
}

/// `[[channel]]`: a way to reach people, named so policies can list it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ChannelConfig {
    Email(EmailChannel),
    Webhook(WebhookChannel),
    Sms(SmsChannel),
    Voice(VoiceChannel),
}

impl ChannelConfig {
    pub fn name(&self) -> &str {
        match self {
            ChannelConfig::Email(c) => &c.name,
            ChannelConfig::Webhook(c) => &c.name,
            ChannelConfig::Sms(c) => &c.name,
            ChannelConfig::Voice(c) => &c.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Email(_) => "email",
            ChannelConfig::Webhook(_) => "webhook",
            ChannelConfig::Sms(_) => "sms",
            ChannelConfig::Voice(_) => "voice",
        }
    }

    /// Who this channel reaches, one delivery (and one acknowledgement link) each, as audited:
    /// `mailto:…`, `sms:…`, or a webhook's scheme, host and port (its path may hold a token);
    /// a voice call's `sip:`/`sips:` URI, or `tel:<number>` called through its route.
    pub fn targets(&self) -> Vec<String> {
        match self {
            ChannelConfig::Voice(c) => c.to.iter().map(|t| VoiceChannel::target(t)).collect(),
            ChannelConfig::Email(c) => c.to.iter().map(|t| format!("mailto:{t}")).collect(),
            ChannelConfig::Sms(c) => c.to.iter().map(|t| format!("sms:{t}")).collect(),
            ChannelConfig::Webhook(c) => vec![c.origin()],
        }
    }
}

/// How an SMTP session is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// Plain connection upgraded by STARTTLS (RFC 3207), required (port 587).
    Starttls,
    /// TLS from the first byte (RFC 8314, port 465).
    Implicit,
    /// No TLS: only to a relay on this machine (loopback), as credentials and alerts travel.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailChannel {
    pub name: String,
    /// The SMTP server's host name (checked against its certificate) or IP address.
    pub server: String,
    /// Default: 587 for STARTTLS, 465 for implicit TLS, 25 without TLS.
    pub port: Option<u16>,
    pub tls: SmtpTls,
    /// SMTP AUTH (PLAIN or LOGIN, over TLS only).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The CA (PEM) trusted for the server's certificate, besides the system's.
    pub tls_ca: Option<PathBuf>,
    /// `sosdesk <sosdesk@example.org>`
    pub from: String,
    pub to: Vec<String>,
}

impl EmailChannel {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::None => 25,
        })
    }
}

/// What a webhook's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookFormat {
    /// The `CallEvent` as JSON (docs/desk-api.md), signed (docs/channels.md).
    #[default]
    Json,
    /// Slack incoming webhook (`text` in mrkdwn).
    Slack,
    /// Microsoft Teams (incoming webhook / Workflows): an Adaptive Card.
    Teams,
    /// Mattermost incoming webhook (`text` in Markdown).
    Mattermost,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    pub name: String,
    /// `https://…` (plain `http://` only to loopback). A secret: chat services put a token in it.
    pub url: Secret,
    #[serde(default)]
    pub format: WebhookFormat,
    /// The HMAC-SHA256 key of the `X-Sosdesk-Signature` header (required for `json`).
    pub secret: Option<Secret>,
    /// The CA (PEM) trusted for the receiver's certificate, besides the system's.
    pub tls_ca: Option<PathBuf>,
}

impl WebhookChannel {
    /// `https://host:port`: what is audited and logged of the URL.
    pub fn origin(&self) -> String {
        Url::parse(&self.url.0).map(|u| u.origin()).unwrap_or_else(|_| "webhook".into())
    }
}

/// How an SMS gateway takes its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmsEncoding {
    /// `application/x-www-form-urlencoded` (in the query string for GET).
    #[default]
    Form,
    /// A JSON object (POST only).
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Post,
    Get,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsChannel {
    pub name: String,
    /// The gateway's URL (`https://…`; plain `http://` only to loopback). A secret: gateways
    /// often take their key in it.
    pub url: Secret,
    #[serde(default)]
    pub method: HttpMethod,
    #[serde(default)]
    pub encoding: SmsEncoding,
    /// The request's fields: each value may hold `{to}` (the number) and `{text}` (the alert),
    /// e.g. `{ To = "{to}", Body = "{text}", From = "+14255550100" }`.
    pub fields: std::collections::BTreeMap<String, String>,
    /// The `Authorization` header's value (`Bearer …`, `Basic …`), if the gateway wants one.
    pub auth_header: Option<Secret>,
    pub tls_ca: Option<PathBuf>,
    /// The mobile numbers, E.164 (`+14255550123`).
    pub to: Vec<String>,
}

/// `kind = "voice"`: sosdesk calls (SIP) and speaks the alert until the callee presses 1.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceChannel {
    pub name: String,
    /// Whom to call: `sip:`/`sips:` URIs (called directly, RFC 3263 by A/AAAA of the host),
    /// or numbers (`+14255550199`, `2100`) called through `route`.
    pub to: Vec<String>,
    /// The `[[route]]` numbers are called through (its address, transport, TLS and digest
    /// credentials); needed when `to` lists a number.
    pub route: Option<String>,
    /// How long the phone may ring before the attempt counts as "no answer" (s).
    #[serde(default = "default_ring_s")]
    pub ring_s: u64,
    /// How many times the alert is spoken before sosdesk hangs up unacknowledged.
    #[serde(default = "default_repeats")]
    pub repeats: u32,
    /// The longest an answered call lasts (s), however many repeats are left.
    #[serde(default = "default_max_s")]
    pub max_s: u64,
    /// The espeak-ng voice (`espeak-ng --voices`): `en-us`, `en`, `fr`, `de` …
    #[serde(default = "default_voice")]
    pub voice: String,
}

fn default_ring_s() -> u64 {
    30
}
fn default_repeats() -> u32 {
    3
}
fn default_max_s() -> u64 {
    120
}
fn default_voice() -> String {
    "en-us".into()
}

impl VoiceChannel {
    /// A `to` entry as audited (and as who acknowledges): the URI, or `tel:<number>`.
    pub fn target(to: &str) -> String {
        if is_sip_uri(to) {
            to.to_string()
        } else {
            format!("tel:{to}")
        }
    }
}

fn is_sip_uri(s: &str) -> bool {
    let l = s.get(..5).unwrap_or(s).to_ascii_lowercase();
    l.starts_with("sip:") || l.starts_with("sips:")
}

/// One tier of a policy's escalation: `{ after_s = 60, channels = ["oncall-sms"] }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationTier {
    /// Seconds after the call was detected; the tier is alerted unless someone has acknowledged.
    pub after_s: u64,
    pub channels: Vec<String>,
}

/// The longest wait of a tier (a day): beyond, an `Instant` could overflow, and nobody means it.
pub const MAX_AFTER_S: u64 = 86_400;

/// A policy's tiers in order of time: its `channels` at once, then its `escalation`.
pub fn tiers(channels: &[String], escalation: &[EscalationTier]) -> Vec<EscalationTier> {
    let mut t = Vec::new();
    if !channels.is_empty() {
        t.push(EscalationTier { after_s: 0, channels: channels.to_vec() });
    }
    t.extend(escalation.iter().cloned());
    t.sort_by_key(|t| t.after_s);
    t
}

/// A URL taken apart as far as the senders need (http and https only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// Without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("must start with https:// or http://".into());
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err("needs a host (and no user:password@)".into());
        }
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or("an IPv6 host without its closing bracket")?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| format!("port {p:?} is not a number"))?,
            None if https => 443,
            None => 80,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("needs a host".into());
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("has a space or control character in its path".into());
        }
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
        Ok(Url { https, host: host.to_string(), port, path })
    }

    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// `https://host:port`, for logs and the audit (no path: it may hold a token).
    pub fn origin(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{}://{host}:{}", if self.https { "https" } else { "http" }, self.port)
    }

    /// The Host header.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        match (self.https, self.port) {
            (true, 443) | (false, 80) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

/// A URL a sender will use: http(s), and plain http only to loopback (alerts and credentials
/// must not cross a network in clear).
fn check_url(url: &str) -> Result<Url, String> {
    let u = Url::parse(url)?;
    if !u.https && !u.is_loopback() {
        return Err("use https:// (plain http:// only to this machine)".into());
    }
    Ok(u)
}

/// Checks the channels and the policies' use of them: `Err((key, reason))`, which the config
/// turns into its file, key and reason. `policies`: (channels, escalation) of each, in order.
pub fn validate(
    alerts: &AlertsConfig,
    channels: &[ChannelConfig],
    policies: &[(&[String], &[EscalationTier])],
    routes: &[&str],
) -> Result<(), (String, String)> {
    let err = |k: String, r: String| Err((k, r));
    if let Some(u) = &alerts.public_url {
        Url::parse(u).map_err(|e| ("alerts.public_url".to_string(), format!("{u:?} {e}")))?;
    }
    if alerts.ack_key.as_ref().is_some_and(|k| k.0.len() < 32) {
        return err("alerts.ack_key".into(), "must be at least 32 characters".into());
    }
    if !(60..=7 * 86_400).contains(&alerts.ack_valid_s) {
        return err("alerts.ack_valid_s".into(), "must be between 60 and 604800".into());
    }
    if !(1..=300).contains(&alerts.attempt_timeout_s) {
        return err("alerts.attempt_timeout_s".into(), "must be between 1 and 300".into());
    }
    if alerts.retry_for_s > MAX_AFTER_S {
        return err("alerts.retry_for_s".into(), format!("must be between 0 and {MAX_AFTER_S}"));
    }
    let mut names = std::collections::HashSet::new();
    for (i, c) in channels.iter().enumerate() {
        let k = |f: &str| format!("channel[{i}].{f}");
        let name = c.name();
        if name.trim().is_empty() {
            return err(k("name"), "must not be empty".into());
        }
        if !names.insert(name) {
            return err(k("name"), format!("channel {name:?} is defined twice"));
        }
        match c {
            ChannelConfig::Email(e) => {
                if e.to.is_empty() {
                    return err(k("to"), "lists nobody".into());
                }
                for (j, to) in e.to.iter().enumerate() {
                    if to.parse::<mailbox::Mailbox>().is_err() {
                        return err(format!("channel[{i}].to[{j}]"), format!("{to:?} is not an email address"));
                    }
                }
                if e.from.parse::<mailbox::Mailbox>().is_err() {
                    return err(k("from"), format!("{:?} is not an email address", e.from));
                }
                if e.server.trim().is_empty() || e.server.contains([' ', '/', ':']) && !e.server.starts_with('[') {
                    return err(k("server"), format!("{:?} is not a host name or IP address", e.server));
                }
                let loopback = e.server == "localhost"
                    || e.server.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                if e.tls == SmtpTls::None && !loopback {
                    return err(k("tls"), "\"none\" only to a relay on this machine (loopback)".into());
                }
                if e.username.is_some() != e.password.is_some() {
                    return err(k("username"), "`username` and `password` go together".into());
                }
            }
            ChannelConfig::Webhook(w) => {
                check_url(&w.url.0).map_err(|e| (k("url"), e))?;
                if w.format == WebhookFormat::Json && w.secret.is_none() {
                    return err(
                        k("secret"),
                        "a `json` webhook needs a secret: its receiver verifies the signature".into(),
                    );
                }
                if w.secret.as_ref().is_some_and(|s| s.0.len() < 16) {
                    return err(k("secret"), "must be at least 16 characters".into());
                }
            }
            ChannelConfig::Sms(s) => {
                check_url(&s.url.0).map_err(|e| (k("url"), e))?;
                if s.to.is_empty() {
                    return err(k("to"), "lists no number".into());
                }
                for (j, to) in s.to.iter().enumerate() {
                    let digits = to.strip_prefix('+').unwrap_or(to);
                    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                        return err(
                            format!("channel[{i}].to[{j}]"),
                            format!("{to:?} is not a number (E.164: +14255550123)"),
                        );
                    }
                }
                if !s.fields.values().any(|v| v.contains("{text}")) {
                    return err(k("fields"), "no field holds {text}: the gateway would send nothing".into());
                }
                if s.method == HttpMethod::Get && s.encoding == SmsEncoding::Json {
                    return err(k("encoding"), "\"json\" needs method POST".into());
                }
            }
            ChannelConfig::Voice(v) => {
                if v.to.is_empty() {
                    return err(k("to"), "lists nobody to call".into());
                }
                for (j, to) in v.to.iter().enumerate() {
                    let key = format!("channel[{i}].to[{j}]");
                    if is_sip_uri(to) {
                        crate::sip::target::check_target_uri(to).map_err(|e| (key, e))?;
                    } else {
                        let digits = to.strip_prefix('+').unwrap_or(to);
                        if digits.is_empty()
                            || digits.len() > 15
                            || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
                        {
                            return err(key, format!("{to:?} is neither a sip:/sips: URI nor a number"));
                        }
                        match &v.route {
                            None => {
                                return err(
                                    k("route"),
                                    format!("{to:?} is a number: name the [[route]] to call it through"),
                                )
                            }
                            Some(r) if !routes.contains(&r.as_str()) => {
                                return err(k("route"), format!("no [[route]] named {r:?}"))
                            }
                            Some(_) => {}
                        }
                    }
                }
                if !(5..=300).contains(&v.ring_s) {
                    return err(k("ring_s"), "must be between 5 and 300".into());
                }
                if !(1..=20).contains(&v.repeats) {
                    return err(k("repeats"), "must be between 1 and 20".into());
                }
                if !(10..=900).contains(&v.max_s) {
                    return err(k("max_s"), "must be between 10 and 900".into());
                }
                // Handed to espeak-ng as one argument, never through a shell; still only the
                // characters voice names have.
                if v.voice.is_empty()
                    || v.voice.len() > 40
                    || !v.voice.chars().all(|c| c.is_ascii_alphanumeric() || "-_+/".contains(c))
                    || v.voice.starts_with('-')
                {
                    return err(k("voice"), format!("{:?} is not an espeak-ng voice name (en-us, fr, de …)", v.voice));
                }
            }
        }
    }
    for (i, (chans, escalation)) in policies.iter().enumerate() {
        let known = |key: String, list: &[String]| -> Result<(), (String, String)> {
            for (j, n) in list.iter().enumerate() {
                if !names.contains(n.as_str()) {
                    return Err((format!("{key}[{j}]"), format!("no [[channel]] named {n:?}")));
                }
            }
            Ok(())
        };
        known(format!("policy[{i}].channels"), chans)?;
        for (t, tier) in escalation.iter().enumerate() {
            known(format!("policy[{i}].escalation[{t}].channels"), &tier.channels)?;
            if tier.after_s > MAX_AFTER_S {
                return err(format!("policy[{i}].escalation[{t}].after_s"), format!("must be at most {MAX_AFTER_S}"));
            }
            if tier.channels.is_empty() {
                return err(format!("policy[{i}].escalation[{t}].channels"), "lists no channel".into());
            }
        }
    }
    Ok(())
}

/// Email addresses checked when the config is read (the SMTP crate checks them again when it
/// sends): `local@domain` or `Name <local@domain>`.
mod mailbox {
    pub struct Mailbox;
    impl std::str::FromStr for Mailbox {
        type Err = ();
        fn from_str(s: &str) -> Result<Mailbox, ()> {
            let addr = match (s.rfind('<'), s.ends_with('>')) {
                (Some(i), true) => &s[i + 1..s.len() - 1],
                (None, false) => s,
                _ => return Err(()),
            };
            let (local, domain) = addr.rsplit_once('@').ok_or(())?;
            let ok = |p: &str| {
                !p.is_empty() && !p.chars().any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c))
            };
            if ok(local) && ok(domain) && !local.contains('@') {
                Ok(Mailbox)
            } else {
                Err(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart_and_their_secrets_never_shown() {
        let u = Url::parse("https://hooks.slack.com/services/T0/B0/XXXXsecret").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "hooks.slack.com", 443, "/services/T0/B0/XXXXsecret")
        );
        assert_eq!(u.origin(), "https://hooks.slack.com:443");
        assert_eq!(u.authority(), "hooks.slack.com");
        let u = Url::parse("http://[::1]:8080?key=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str(), u.authority()),
            ("::1", 8080, "/?key=1", "[::1]:8080".into())
        );
        assert!(u.is_loopback());
        for bad in ["ftp://x", "https://", "https://u:p@host/", "https://host:x/", "https://host/a b"] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
        assert!(check_url("http://example.org/hook").is_err(), "plain http only to loopback");
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "<hidden>");
    }

    #[test]
    fn tiers_put_the_policy_channels_first_then_escalation_in_time_order() {
        let t = tiers(
            &["mail".into()],
            &[
                EscalationTier { after_s: 120, channels: vec!["c".into()] },
                EscalationTier { after_s: 60, channels: vec!["b".into()] },
            ],
        );
        assert_eq!(t.iter().map(|t| t.after_s).collect::<Vec<_>>(), [0, 60, 120]);
        assert_eq!(t[0].channels, ["mail"]);
    }

    #[test]
    fn voice_channels_are_checked() {
        let voice = |to: &[&str], route: Option<&str>, extra: &str| -> Result<(), (String, String)> {
            let mut text = format!("name = \"phone\"\nkind = \"voice\"\nto = {to:?}\n{extra}\n");
            if let Some(r) = route {
                text.push_str(&format!("route = \"{r}\"\n"));
            }
            let c: ChannelConfig = toml::from_str(&text).map_err(|e| ("parse".to_string(), e.to_string()))?;
            validate(&AlertsConfig::default(), &[c], &[], &["provider"])
        };
        assert_eq!(voice(&["sip:officer@192.0.2.5", "sips:desk@pbx.example.org"], None, ""), Ok(()));
        assert_eq!(
            voice(&["+14255550199", "2100"], Some("provider"), "ring_s = 20\nrepeats = 5\nvoice = \"fr\""),
            Ok(())
        );
        let key = |r: Result<(), (String, String)>| r.unwrap_err().0;
        assert_eq!(key(voice(&["+14255550199"], None, "")), "channel[0].route", "a number needs a route");
        assert_eq!(key(voice(&["+14255550199"], Some("nope"), "")), "channel[0].route");
        assert_eq!(key(voice(&["mailto:x@y"], None, "")), "channel[0].to[0]");
        assert_eq!(key(voice(&["sip:a b@host"], None, "")), "channel[0].to[0]");
        assert_eq!(key(voice(&[], None, "")), "channel[0].to");
        assert_eq!(key(voice(&["sip:a@192.0.2.5"], None, "repeats = 0")), "channel[0].repeats");
        assert_eq!(key(voice(&["sip:a@192.0.2.5"], None, "ring_s = 1000")), "channel[0].ring_s");
        assert_eq!(key(voice(&["sip:a@192.0.2.5"], None, "max_s = 5")), "channel[0].max_s");
        assert_eq!(key(voice(&["sip:a@192.0.2.5"], None, "voice = \"--stdout\"")), "channel[0].voice");
        assert_eq!(key(voice(&["sip:a@192.0.2.5"], None, "voice = \"en us\"")), "channel[0].voice");
        assert_eq!(key(voice(&["sip:a@192.0.2.5"], None, "pin = 1")), "parse", "unknown keys are refused");
        let c: ChannelConfig =
            toml::from_str("name = \"p\"\nkind = \"voice\"\nto = [\"+1555\", \"sip:a@b\"]\nroute = \"r\"").unwrap();
        assert_eq!(c.targets(), ["tel:+1555", "sip:a@b"]);
    }

    #[test]
    fn email_addresses_are_checked() {
        for ok in ["a@b.example", "Security <sec@example.org>"] {
            assert!(ok.parse::<mailbox::Mailbox>().is_ok(), "{ok}");
        }
        for bad in ["", "nobody", "a@", "@b", "a b@c", "x <a@b", "a@b@c"] {
            assert!(bad.parse::<mailbox::Mailbox>().is_err(), "{bad}");
        }
    }
}
