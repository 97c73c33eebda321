//! The one TOML config file (documented key by key in docs/config.md; `examples/lab.toml` runs).
//!
//! Loading is two steps: serde reads the file (unknown keys are refused, so a typo never passes
//! silently), then [`Config::validate`] checks what serde cannot — references between sections,
//! addresses, dial strings — and names the file, the key and the reason.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use crate::db::Location;
use crate::location::Erl;

mod validate;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    pub store: StoreConfig,
    #[serde(default)]
    pub dns: DnsConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    #[serde(default, rename = "pstn_usage")]
    pub pstn_usages: Vec<PstnUsageConfig>,
    #[serde(default, rename = "policy")]
    pub policies: Vec<PolicyConfig>,
    #[serde(default, rename = "site")]
    pub sites: Vec<SiteConfig>,
    /// The Location Information Service (wiremap, HELD, MSAG validation).
    #[serde(default)]
    pub lis: LisConfig,
    /// Media anchoring, recording (issue 5).
    #[serde(default)]
    pub media: MediaConfig,
    /// Security desk accounts: who may join a call's conference, register (desks and ordinary
    /// SIP clients) and use the HTTP API.
    #[serde(default, rename = "desk")]
    pub desks: Vec<DeskAccountConfig>,
    /// Named groups of desk accounts: a notification URI `sip:<group>@<core>` reaches every
    /// registered contact of every member.
    #[serde(default, rename = "notification_group")]
    pub notification_groups: Vec<NotificationGroupConfig>,
    /// How the emergency notification IM is delivered.
    #[serde(default)]
    pub notification: NotificationConfig,
    /// The HTTP API for desks on other machines (history, audit, acknowledgements, live events).
    #[serde(default)]
    pub api: ApiConfig,
    /// Alert channels beyond SIP (email, webhooks, SMS; docs/channels.md), listed by policies.
    #[serde(default, rename = "channel")]
    pub channels: Vec<crate::channels::ChannelConfig>,
    /// What every channel shares: acknowledgement links, timeouts, retries.
    #[serde(default)]
    pub alerts: crate::channels::AlertsConfig,
    /// Switches polled over SNMP for switch-port discovery (docs/discovery.md).
    #[serde(default, rename = "switch")]
    pub switches: Vec<SwitchConfig>,
    /// Policy for callers from no configured site.
    pub default_policy: String,
    /// Set by [`Config::load`]: the file it came from (relative store paths resolve against it).
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// UDP listen address, e.g. "127.0.0.1:5060".
    pub udp: Option<SocketAddr>,
    /// TCP listen address.
    pub tcp: Option<SocketAddr>,
    /// TLS listen address (RFC 3261 §26.2.1; usually port 5061), with `tls_cert` and `tls_key`.
    pub tls: Option<SocketAddr>,
    /// The listener's certificate chain and private key (PEM files).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: only clients with a certificate issued by one of these CAs (PEM) connect.
    pub tls_client_ca: Option<PathBuf>,
    /// The CAs trusted for TLS connections sosdesk opens to notification targets and callback
    /// addresses (a route names its own `tls_ca`); default: the system's.
    pub tls_ca: Option<PathBuf>,
    /// RFC 5626 §4.4.1 keepalive: a CRLFCRLF ping on every TCP or TLS connection sosdesk opened
    /// that has been silent this long (seconds; 0: none), so a NAT or firewall keeps the flow
    /// open and a dead provider connection is noticed before the next emergency call needs it.
    #[serde(default = "default_keepalive_s")]
    pub keepalive_s: u64,
    /// Host (name or address) sosdesk puts in its Via, Contact and From; default: the listen IP.
    pub public_host: Option<String>,
    /// RFC 3261 T1 in milliseconds (retransmission base); default 500.
    #[serde(default = "default_t1")]
    pub t1_ms: u64,
}

/// The longest interval a `*_ms` key takes: an hour (route and attempt timeouts, the LIS refresh).
const MAX_INTERVAL_MS: u64 = 3_600_000;
/// The longest ELIN callback window: a week, in minutes.
const MAX_ELIN_MINUTES: f64 = 10_080.0;
/// The longest a notification, or an emergency call whose every route failed, is retried: a day.
const MAX_RETRY_FOR_S: u64 = 86_400;

fn default_t1() -> u64 {
    500
}

fn default_keepalive_s() -> u64 {
    30
}

/// Name resolution for routes given by name (RFC 3263).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// DNS servers to ask ("192.0.2.53", "127.0.0.1:5353"); default: the system's
    /// (/etc/resolv.conf).
    #[serde(default)]
    pub servers: Vec<DnsServer>,
}

/// A DNS server: an address, port 53 unless given.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct DnsServer(pub SocketAddr);

impl TryFrom<String> for DnsServer {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(DnsServer(a));
        }
        s.trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .map(|ip| DnsServer(SocketAddr::new(ip, 53)))
            .map_err(|_| format!("{s:?} is not an IP address with an optional port"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file of the audit log and the LIS (created on first start); relative to the config
    /// file. Give this or `url`.
    pub path: Option<PathBuf>,
    /// `postgres://USER:PASS@HOST[:PORT]/DB`: a PostgreSQL database, which several core nodes
    /// may share (issue 14); or `sqlite:PATH`, the same as `path`. The password is never shown.
    /// A `Secret`: the URL carries the database password, and a `{:?}` of the config must not.
    pub url: Option<Secret>,
    /// This core's name on the audit rows it writes (several nodes share one PostgreSQL log).
    /// Default: the machine's host name with a PostgreSQL store, none with SQLite.
    pub node: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// A route that has sent no response at all within this time is abandoned and the next
    /// one tried (seconds, not Timer B's 32 s).
    #[serde(default = "default_route_timeout")]
    pub route_timeout_ms: u64,
    /// How long an ELIN → caller mapping is kept for PSAP callbacks, in minutes.
    #[serde(default = "default_elin_minutes")]
    pub elin_callback_minutes: f64,
    /// Where a callback to an ELIN goes when no live mapping exists (e.g. the security desk).
    pub callback_fallback: Option<String>,
    /// When every route of a call's plan has failed, the caller is held (182 Queued) and the
    /// whole plan tried again, with backoff, while a new round can start within this many
    /// seconds of the call's first attempt. `0`: the caller gets 503 as soon as every route
    /// failed once.
    #[serde(default = "default_route_retry_s")]
    pub retry_for_s: u64,
    /// Every route is asked OPTIONS this often (seconds); a route that fails two in a row is
    /// down and tried last for new calls until it answers two in a row again. `0`: off.
    #[serde(default = "default_health_interval_s")]
    pub health_interval_s: u64,
}

fn default_health_interval_s() -> u64 {
    30
}

fn default_route_timeout() -> u64 {
    3000
}
fn default_elin_minutes() -> f64 {
    180.0
}
fn default_route_retry_s() -> u64 {
    60
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            route_timeout_ms: default_route_timeout(),
            elin_callback_minutes: default_elin_minutes(),
            callback_fallback: None,
            retry_for_s: default_route_retry_s(),
            health_interval_s: default_health_interval_s(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LisConfig {
    /// HTTP listen address of the HELD endpoint (RFC 5985), e.g. "127.0.0.1:8080"; none: off.
    pub held: Option<SocketAddr>,
    /// A local MSAG extract (CSV: community,street,low,high,parity) for `sosdesk lis validate`;
    /// relative to the config file.
    pub msag: Option<PathBuf>,
    /// How often the running core looks for imported wiremap changes, in ms.
    #[serde(default = "default_refresh")]
    pub refresh_ms: u64,
    /// Subnets of the servers allowed to ask HELD about *other* devices (a call server, a
    /// PBX). Everyone else may only ask about the address it asks from (RFC 5985 §9.3: the
    /// LIS decides who may learn whose location). Default: nobody.
    #[serde(default)]
    pub held_requesters: Vec<ipnet::IpNet>,
    /// Who is sent a SIP MESSAGE when a network element (subnet, switch, access point) is first
    /// seen unlocated (`sosdesk lis unlocated`): URIs as in a policy's `notification_uris`.
    /// Every desk is told in any case.
    #[serde(default)]
    pub unlocated_notification_uris: Vec<String>,
    /// Alert channels (`[[channel]]` names: email, webhook, SMS) that are told too, once per
    /// new element; no escalation and no acknowledgement: it is a task for an admin.
    #[serde(default)]
    pub unlocated_channels: Vec<String>,
    /// Remote users' accounts (`[[lis.users]]`): each may enter and confirm the location of its
    /// own calls — through the API, or by SIP PUBLISH from the phone — and nobody else's
    /// (docs/location.md). Desk accounts may set anyone's.
    #[serde(default)]
    pub users: Vec<LisUserConfig>,
}

/// A remote user who may enter the location of its own calls.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LisUserConfig {
    pub username: String,
    pub password: String,
    /// Whose calls the location is for: the caller's number or SIP user part as its calls'
    /// P-Asserted-Identity or From show it. Default: the username.
    #[serde(default)]
    pub owner: Option<String>,
}

impl LisUserConfig {
    /// The owner key its entries are kept under (`location::user_entered::owner_key`).
    pub fn owner_key(&self) -> String {
        crate::location::user_entered::owner_key(self.owner.as_deref().unwrap_or(&self.username)).unwrap_or_default()
    }
}

impl std::fmt::Debug for LisUserConfig {
    // Never print a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LisUserConfig")
            .field("username", &self.username)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

fn default_refresh() -> u64 {
    2000
}

impl Default for LisConfig {
    fn default() -> Self {
        LisConfig {
            held: None,
            msag: None,
            refresh_ms: default_refresh(),
            held_requesters: Vec::new(),
            unlocated_notification_uris: Vec::new(),
            unlocated_channels: Vec::new(),
            users: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Put sosdesk in the RTP path of emergency calls (needed to conference a desk in and to
    /// record). Off: SDP passes through untouched.
    #[serde(default = "default_true")]
    pub anchor: bool,
    /// Address the RTP sockets bind to; default: the SIP listen address.
    pub bind: Option<std::net::IpAddr>,
    /// Address written into SDP; default: `bind` (or `sip.public_host` when that is an IP).
    pub address: Option<std::net::IpAddr>,
    /// RTP port range, "first-last" (even ports are used).
    #[serde(default = "default_rtp_ports")]
    pub rtp_ports: String,
    /// Record every anchored emergency call (WAV, caller left, far end and desks right).
    #[serde(default = "default_true")]
    pub record: bool,
    /// Folder of the recordings; relative to the config file. Default: `recordings` beside
    /// the audit store.
    pub recordings: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}
fn default_rtp_ports() -> String {
    "16384-32767".into()
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            anchor: true,
            bind: None,
            address: None,
            rtp_ports: default_rtp_ports(),
            record: true,
            recordings: None,
        }
    }
}

impl MediaConfig {
    /// The port range as numbers (validated by [`Config::validate`]).
    pub fn port_range(&self) -> Option<(u16, u16)> {
        let (a, b) = self.rtp_ports.split_once('-')?;
        let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
        (a >= 1024 && a < b).then_some((a, b))
    }
}

/// A security desk's SIP account (digest credentials, RFC 3261 §22).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeskAccountConfig {
    /// Shown in the audit log and to the other desks, e.g. "Lobby desk".
    pub name: String,
    pub username: String,
    pub password: String,
    /// May this desk talk in a call (where the policy allows two-way)? Default: yes.
    #[serde(default = "default_true")]
    pub talk: bool,
}

impl std::fmt::Debug for DeskAccountConfig {
    // Never print a password, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeskAccountConfig")
            .field("name", &self.name)
            .field("username", &self.username)
            .field("talk", &self.talk)
            .finish_non_exhaustive()
    }
}

/// A named set of desk accounts that one notification URI reaches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationGroupConfig {
    /// The user part of the group's URI: `security` is `sip:security@<sip.public_host>`.
    pub name: String,
    /// Desk account usernames.
    pub members: Vec<String>,
}

/// Delivery of the notification IM (SIP MESSAGE, RFC 3428).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationConfig {
    /// An attempt with no final response within this many ms counts as failed (and is retried).
    #[serde(default = "default_notify_attempt_ms")]
    pub attempt_timeout_ms: u64,
    /// A failed delivery is retried, with backoff (1, 2, 4 … 30 s apart), for this long.
    #[serde(default = "default_notify_retry_s")]
    pub retry_for_s: u64,
}

fn default_notify_attempt_ms() -> u64 {
    2000
}
fn default_notify_retry_s() -> u64 {
    300
}

impl Default for NotificationConfig {
    fn default() -> Self {
        NotificationConfig { attempt_timeout_ms: default_notify_attempt_ms(), retry_for_s: default_notify_retry_s() }
    }
}

/// The core's HTTP API (docs/api.md). Off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// e.g. "0.0.0.0:8443".
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain and private key: with both, the API speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// Who must acknowledge an alert before the desks fall silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, ts_rs::TS)]
#[serde(rename_all = "kebab-case")]
pub enum AcknowledgeMode {
    /// The first acknowledgement, from any desk, clears the alert on every desk.
    #[default]
    Any,
    /// Every desk acknowledges for itself; the others see who already did.
    Each,
}

/// How a desk takes part in a call (Skype for Business ConferenceMode OneWay / TwoWay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConferenceMode {
    /// Listen only: the desk hears caller and operator and is not heard.
    #[default]
    OneWay,
    /// A full party: the desk may talk.
    TwoWay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteKindConfig {
    /// A SIP trunk to an E9-1-1 service provider: PIDF-LO by value, callback number in PAI.
    SipTrunk,
    /// An ELIN gateway: the ERL's ELIN replaces the calling number.
    ElinGateway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportConfig {
    Udp,
    Tcp,
    Tls,
}

// PartialEq: a reload keeps an unchanged route (its index, health and registration).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    pub kind: RouteKindConfig,
    /// Where the INVITE is sent: "192.0.2.10:5060", or a name resolved by RFC 3263
    /// ("sbc.provider.example", "sbc.provider.example:5061", "sips:provider.example",
    /// "sip:provider.example;transport=tcp").
    pub address: RouteAddress,
    /// Fixes the transport (else `sips:`/`transport=` in the address, else NAPTR for a name
    /// without a port, else UDP).
    pub transport: Option<TransportConfig>,
    /// Host for the Request-URI and To (the provider's domain); default: the address.
    pub domain: Option<String>,
    /// Digest credentials for a provider that challenges the INVITE (401/407, RFC 3261 §22.2).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Answer only challenges of this realm (default: the provider's, whatever it is).
    pub realm: Option<String>,
    /// Register with the provider (RFC 3261 §10) as `username@domain`, refreshed before it
    /// expires: for providers that take calls only from a registered trunk.
    #[serde(default)]
    pub register: bool,
    /// The registration's expiry asked for, in seconds (default 3600).
    pub expires: Option<u32>,
    /// `transport = "tls"`: the CAs trusted for the provider's certificate (PEM; default: the
    /// system's). The certificate must name the route's host (`domain`, else the address).
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for a provider that asks for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// A switch polled for switch-port discovery (docs/discovery.md): SNMP v2c with `community`,
/// or v3 with `user` (and `auth_*`, `priv_*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// Shown in logs, the audit and `sosdesk lis discover`; default: the address.
    pub name: Option<String>,
    /// `host`, `host:port`, `[IPv6]:port`; port 161 when not given.
    pub address: String,
    pub community: Option<Secret>,
    pub user: Option<String>,
    pub auth_protocol: Option<crate::location::discovery::AuthProtocol>,
    pub auth_password: Option<Secret>,
    pub priv_protocol: Option<crate::location::discovery::PrivProtocol>,
    pub priv_password: Option<Secret>,
    /// SNMP v3 contextName (RFC 3411 §3.3.1); default: the default context.
    pub context: Option<String>,
    /// Minutes between polls.
    #[serde(default = "default_interval_min")]
    pub interval_min: u32,
}

fn default_interval_min() -> u32 {
    15
}

impl SwitchConfig {
    /// `address` with the port made explicit (161 when not given); `None` when it is no
    /// host[:port].
    pub fn host_port(&self) -> Option<String> {
        let a = self.address.trim();
        if let Ok(ip) = a.parse::<std::net::IpAddr>() {
            return Some(SocketAddr::new(ip, 161).to_string());
        }
        if let Ok(sa) = a.parse::<SocketAddr>() {
            return Some(sa.to_string());
        }
        let (host, port) = match a.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p != 0)?),
            None => (a, 161),
        };
        crate::location::held::is_host(host).then(|| format!("{host}:{port}"))
    }

    /// What the poller needs (call once the config is validated).
    pub fn target(&self) -> crate::location::discovery::SwitchTarget {
        use crate::location::discovery::{Credentials, SwitchTarget};
        let address = self.host_port().unwrap_or_else(|| self.address.clone());
        let credentials = match (&self.community, &self.user) {
            (Some(c), _) => Credentials::V2c { community: c.0.clone() },
            (None, user) => Credentials::V3 {
                user: user.clone().unwrap_or_default(),
                auth: self.auth_protocol.zip(self.auth_password.as_ref().map(|p| p.0.clone())),
                privacy: self.priv_protocol.zip(self.priv_password.as_ref().map(|p| p.0.clone())),
                context: self.context.clone().unwrap_or_default(),
            },
        };
        SwitchTarget {
            name: self.name.clone().unwrap_or_else(|| address.clone()),
            address,
            credentials,
            interval: std::time::Duration::from_secs(u64::from(self.interval_min) * 60),
        }
    }
}

/// A password from the config: never printed, not even in a debug log.
pub use crate::channels::Secret;

/// A route's `address`, parsed when the config is read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct RouteAddress(pub crate::sip::rfc3263::SipTarget);

impl TryFrom<String> for RouteAddress {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        crate::sip::rfc3263::SipTarget::parse(&s).map(RouteAddress)
    }
}

impl RouteConfig {
    /// Where the route points, its `transport` key applied.
    pub fn target(&self) -> crate::sip::rfc3263::SipTarget {
        use crate::sip::transaction::Transport;
        let mut t = self.address.0.clone();
        if let Some(fixed) = self.transport {
            t.transport = Some(match fixed {
                TransportConfig::Udp => Transport::Udp,
                TransportConfig::Tcp => Transport::Tcp,
                TransportConfig::Tls => Transport::Tls,
            });
        }
        t
    }

    /// Whether the route may use TLS (fixed to it, or a name whose NAPTR may choose it).
    pub fn may_use_tls(&self) -> bool {
        use crate::sip::transaction::Transport;
        let t = self.target();
        match t.transport {
            Some(fixed) => fixed == Transport::Tls,
            None => matches!(t.host, crate::sip::rfc3263::Host::Name(_)) && t.port.is_none(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PstnUsageConfig {
    pub name: String,
    /// Route names, tried in this order.
    pub routes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    /// The PSTN usage (ordered routes) for emergency calls with a location.
    pub pstn_usage: String,
    /// The PSTN usage for calls without any location (the ECRC). Also the last resort when
    /// every route of `pstn_usage` failed. Default: `pstn_usage`.
    pub no_location_pstn_usage: Option<String>,
    /// Emergency numbers of this policy (Skype for Business EmergencyDialString / DialMask).
    #[serde(rename = "number")]
    pub numbers: Vec<EmergencyNumberConfig>,
    /// ERL used when neither the caller nor the caller's site supplies a location.
    pub default_erl: Option<Erl>,
    /// Called and conferenced in the moment an emergency call is routed (Skype for Business
    /// ConferenceUri), e.g. "sip:security@192.0.2.20:5060". The host must be an IP address.
    pub conference_uri: Option<String>,
    /// What a desk may do in this policy's calls: listen only, or talk (ConferenceMode).
    #[serde(default)]
    pub conference_mode: ConferenceMode,
    /// Who gets the emergency notification IM (Skype for Business NotificationUri): SIP URIs
    /// of clients elsewhere (`sip:guard@192.0.2.30:5060`, IP host), or of a desk account or
    /// notification group at this core (`sip:security@<sip.public_host>`, no port).
    #[serde(default)]
    pub notification_uris: Vec<String>,
    /// One acknowledgement clears every desk (`any`), or each desk acknowledges (`each`).
    #[serde(default)]
    pub acknowledge: AcknowledgeMode,
    /// `[[channel]]` names alerted the moment an emergency call is detected.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Channels alerted later unless someone has acknowledged by then:
    /// `[{ after_s = 60, channels = ["oncall-sms"] }]` (docs/channels.md).
    #[serde(default)]
    pub escalation: Vec<crate::channels::EscalationTier>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyNumberConfig {
    /// The number sent to the provider (e.g. "911").
    pub dial_string: String,
    /// Other numbers that mean the same and go out as `dial_string` (e.g. "9911").
    #[serde(default)]
    pub masks: Vec<String>,
    /// A test number (e.g. "933"): routed, but marked as a test and never an alarm.
    #[serde(default)]
    pub test: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub name: String,
    /// Caller source subnets that belong to this site (IPv4 or IPv6 CIDR).
    pub subnets: Vec<String>,
    pub policy: String,
    /// The site's Emergency Response Location.
    pub erl: Option<Erl>,
}

/// A config error: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: key `{}`: {}", self.file.display(), self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The line (from 1) of byte `offset` of `text`. Counted in bytes: a parser's offset may fall
/// inside a multi-byte character (found by the config fuzz target: slicing the text there
/// panicked check-config).
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: String::new(),
            reason: format!("cannot read the file: {e}"),
        })?;
        Config::from_toml(&text, path)
    }

    /// What a reload cannot apply (`Core::reload`): the settings of sockets, the store and the
    /// engine's timers, which `new` changes from `self`; they take effect at the next restart.
    /// Compared by their debug form, which names every field (a secret prints the same either
    /// way: a changed TLS or store password alone is not seen).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let differ = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let timers = |c: &Config| {
            let r = &c.routing;
            (r.route_timeout_ms, r.retry_for_s, r.health_interval_s, r.elin_callback_minutes.to_bits())
        };
        // The remote users' accounts and the unlocated channels follow a reload (the engine, the API
        // and the alert channels take each new config).
        let lis = |c: &Config| LisConfig { users: Vec::new(), unlocated_channels: Vec::new(), ..c.lis.clone() };
        let mut changed = Vec::new();
        for (name, a, b) in [
            ("[sip]", &self.sip as &dyn std::fmt::Debug, &new.sip as &dyn std::fmt::Debug),
            ("[store]", &self.store_location(), &new.store_location()),
            ("[dns]", &self.dns, &new.dns),
            ("[routing] timers", &timers(self), &timers(new)),
            ("[lis]", &lis(self), &lis(new)),
            ("[media]", &self.media, &new.media),
            ("[notification]", &self.notification, &new.notification),
            ("[api]", &self.api, &new.api),
            // Polled by a task started with the core (the channels' other settings follow a
            // reload: `reach::run` takes each new config).
            ("[[switch]]", &self.switches, &new.switches),
        ] {
            if differ(a, b) {
                changed.push(name);
            }
        }
        // Compared, never printed: the links' key is made once at start.
        if self.alerts.ack_key.as_ref().map(|k| &k.0) != new.alerts.ack_key.as_ref().map(|k| &k.0) {
            changed.push("[alerts] ack_key");
        }
        changed
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            // toml's message names the line, the column and usually the key.
            let reason = e.message().to_string();
            let key = match e.span() {
                Some(span) => {
                    let line = line_of(text, span.start);
                    format!("line {line}")
                }
                None => String::new(),
            };
            ConfigError { file: path.to_path_buf(), key, reason }
        })?;
        cfg.source = path.to_path_buf();
        cfg.validate()?;
        Ok(cfg)
    }

    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError { file: self.source.clone(), key: key.into(), reason: reason.into() }
    }

    /// The store: `[store] path` or `url`, a relative SQLite path taken from the config file's
    /// folder. `validate` has checked that exactly one is given and that the URL parses.
    pub fn store_location(&self) -> Location {
        match (&self.store.path, self.store.url.as_ref().map(|u| Location::parse_url(&u.0))) {
            (_, Some(Ok(Location::Sqlite(p)))) => Location::Sqlite(self.relative(&p)),
            (_, Some(Ok(pg))) => pg,
            (Some(p), _) => Location::Sqlite(self.relative(p)),
            // Refused by validate; a name that cannot be opened rather than a panic.
            (None, _) => Location::Sqlite(self.relative(Path::new("sosdesk.db"))),
        }
    }

    /// Whether several nodes may share the store (PostgreSQL): what one node keeps locally, the
    /// others do not see.
    pub fn store_is_shared(&self) -> bool {
        matches!(self.store_location(), Location::Postgres(_))
    }

    /// The SQLite file of the store, by which the core's local files are placed (the crash
    /// journal beside it, recordings in its folder). With a PostgreSQL store these local files
    /// go beside the config file, named after `sosdesk.db`.
    pub fn store_path(&self) -> PathBuf {
        match self.store_location() {
            Location::Sqlite(p) => p,
            Location::Postgres(_) => self.relative(Path::new("sosdesk.db")),
        }
    }

    /// The name this core writes on its audit rows (`[store] node`; with PostgreSQL, where
    /// several nodes share the log, the host name by default).
    pub fn node_name(&self) -> Option<String> {
        if let Some(n) = &self.store.node {
            return Some(n.clone());
        }
        if self.store_location().backend() == crate::db::Backend::Sqlite {
            return None;
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
    }

    /// The crash journal's folder, beside the audit store (`audit::journal`).
    pub fn journal_path(&self) -> PathBuf {
        self.store_path().with_extension("journal")
    }

    /// Where call recordings go.
    pub fn recordings_path(&self) -> PathBuf {
        match &self.media.recordings {
            Some(p) => self.relative(p),
            None => self.store_path().parent().unwrap_or(Path::new(".")).join("recordings"),
        }
    }

    /// The host the core is known by (`sip.public_host`, else its listen IP): a notification URI
    /// with this host and no port is one of the core's own users or groups.
    pub fn core_host(&self) -> String {
        if let Some(h) = &self.sip.public_host {
            return h.clone();
        }
        match self.sip.udp.or(self.sip.tcp).or(self.sip.tls).map(|a| a.ip()) {
            Some(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
            Some(ip) => ip.to_string(),
            None => "127.0.0.1".into(),
        }
    }

    /// Where the RTP ports of anchored calls are bound (`media.bind`, else the SIP listen
    /// address), and the address written into SDP for them (`media.address`, else
    /// `sip.public_host` when it is an IP address, else the bind address).
    pub(crate) fn rtp_addresses(&self) -> (std::net::IpAddr, std::net::IpAddr) {
        let bind = self
            .media
            .bind
            .or(self.sip.udp.or(self.sip.tcp).or(self.sip.tls).map(|a| a.ip()))
            .unwrap_or([127, 0, 0, 1].into());
        let public = self.sip.public_host.as_deref().and_then(|h| h.trim_matches(['[', ']']).parse().ok());
        (bind, self.media.address.or(public).unwrap_or(bind))
    }

    /// The ports the core's SIP listens on.
    pub fn core_ports(&self) -> Vec<u16> {
        self.sip.udp.iter().chain(self.sip.tcp.iter()).chain(self.sip.tls.iter()).map(|a| a.port()).collect()
    }

    /// The API's TLS files, relative paths taken from the config file's folder.
    pub fn api_tls_paths(&self) -> Option<(PathBuf, PathBuf)> {
        Some((self.relative(self.api.tls_cert.as_ref()?), self.relative(self.api.tls_key.as_ref()?)))
    }

    /// A path from the config (a TLS file), relative ones taken from the config file's folder.
    pub fn path(&self, p: &Path) -> PathBuf {
        self.relative(p)
    }

    /// The MSAG extract's path, if one is configured.
    pub fn msag_path(&self) -> Option<PathBuf> {
        self.lis.msag.as_ref().map(|p| self.relative(p))
    }

    fn relative(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.source.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    /// Every route a policy's calls may take, by name, in the order tried: its PSTN usage's,
    /// then those of its no-location usage (its last resort). A desk reads from this whether a
    /// policy's calls can still get through.
    pub fn policy_routes(&self, policy: &PolicyConfig) -> Vec<String> {
        let usage = |name: &str| self.pstn_usages.iter().find(|u| u.name == name).map(|u| u.routes.clone());
        let mut routes = usage(&policy.pstn_usage).unwrap_or_default();
        for r in policy.no_location_pstn_usage.as_deref().and_then(usage).unwrap_or_default() {
            if !routes.contains(&r) {
                routes.push(r);
            }
        }
        routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
default_policy = "hq"
[sip]
udp = "127.0.0.1:5060"
[store]
path = "audit.db"
[[route]]
name = "p1"
kind = "sip-trunk"
address = "127.0.0.1:5070"
[[pstn_usage]]
name = "e"
routes = ["p1"]
[[policy]]
name = "hq"
pstn_usage = "e"
[[policy.number]]
dial_string = "911"
masks = ["9911"]
"#;

    #[test]
    fn good_config_loads() {
        let c = Config::from_toml(GOOD, Path::new("/etc/sosdesk/x.toml")).unwrap();
        assert_eq!(c.store_path(), PathBuf::from("/etc/sosdesk/audit.db"));
        assert_eq!(c.routing.route_timeout_ms, 3000);
        assert_eq!(c.routing.retry_for_s, 60, "emergency calls are retried for a minute by default");
        for bound in [0, 86_400] {
            let text = GOOD.replace("[store]", &format!("[routing]\nretry_for_s = {bound}\n[store]"));
            assert_eq!(Config::from_toml(&text, Path::new("x.toml")).unwrap().routing.retry_for_s, bound);
        }
    }

    #[test]
    fn a_syntax_error_inside_a_multi_byte_character_is_reported_by_line() {
        // The config fuzz target's finding: toml reported an offset inside `├`, and the line
        // count sliced the text there (a panic in check-config instead of an error).
        assert_eq!(line_of("a\n├─b", 3), 2);
        assert_eq!(line_of("", 10), 1);
        let text = include_str!("../../fuzz/corpus/config/finding-span-inside-a-multibyte-character");
        let err = Config::from_toml(text, Path::new("x.toml")).unwrap_err();
        assert!(err.key.starts_with("line "), "{err}");
    }

    #[test]
    fn route_credentials_come_in_pairs_and_never_show() {
        let with = |extra: &str| {
            GOOD.replace("address = \"127.0.0.1:5070\"\n", &format!("address = \"127.0.0.1:5070\"\n{extra}"))
        };
        let ok = Config::from_toml(
            &with("username = \"trunk1\"\npassword = \"s3cret-pw\"\nrealm = \"provider\"\n"),
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(ok.routes[0].username.as_deref(), Some("trunk1"));
        assert!(!format!("{:?}", ok.routes).contains("s3cret-pw"), "{:?}", ok.routes);
        let err = |extra: &str| Config::from_toml(&with(extra), Path::new("x.toml")).unwrap_err().key;
        assert_eq!(err("username = \"trunk1\"\n"), "route[0].password");
        assert_eq!(err("password = \"pw\"\n"), "route[0].username");
        assert_eq!(err("realm = \"provider\"\n"), "route[0].realm");
        assert_eq!(err("username = \"\"\npassword = \"pw\"\n"), "route[0].username");
        assert_eq!(err("username = \"t\"\npassword = \"a\\\"b\"\n"), "route[0].password");
    }

    #[test]
    fn media_desks_and_conference_keys_are_checked() {
        let c = Config::from_toml(GOOD, Path::new("/etc/sosdesk/x.toml")).unwrap();
        assert!(c.media.anchor && c.media.record);
        assert_eq!(c.media.port_range(), Some((16384, 32767)));
        assert_eq!(c.recordings_path(), PathBuf::from("/etc/sosdesk/recordings"));
        let err = |edit: &str| Config::from_toml(&format!("{GOOD}{edit}"), Path::new("x.toml")).unwrap_err();
        assert_eq!(err("[media]\nrtp_ports = \"30000-20000\"\n").key, "media.rtp_ports");
        assert_eq!(err("[media]\nrtp_ports = \"80-90\"\n").key, "media.rtp_ports");
        let desk = "[[desk]]\nname = \"D\"\nusername = \"d1\"\npassword = \"long-enough\"\n";
        assert!(Config::from_toml(&format!("{GOOD}{desk}"), Path::new("x.toml")).is_ok());
        assert_eq!(err(&desk.replace("long-enough", "short")).key, "desk[0].password");
        assert_eq!(err(&desk.replace("\"d1\"", "\"d:1\"")).key, "desk[0].username");
        assert_eq!(err(&format!("{desk}{desk}")).key, "desk[1].username");
        // The password never shows in debug output.
        let c = Config::from_toml(&format!("{GOOD}{desk}"), Path::new("x.toml")).unwrap();
        assert!(!format!("{:?}", c.desks).contains("long-enough"));
        let conf =
            |uri: &str| GOOD.replace("pstn_usage = \"e\"", &format!("pstn_usage = \"e\"\nconference_uri = \"{uri}\""));
        let e = Config::from_toml(&conf("sip:desk@desk.example"), Path::new("x.toml")).unwrap_err();
        assert_eq!(e.key, "policy[0].conference_uri");
        let ok = conf("sip:desk@192.0.2.7:5060");
        assert!(Config::from_toml(&ok, Path::new("x.toml")).is_ok());
        let e = Config::from_toml(&format!("{ok}[media]\nanchor = false\n"), Path::new("x.toml")).unwrap_err();
        assert!(e.reason.contains("media.anchor"), "{e}");
    }

    #[test]
    fn switches_need_an_address_and_one_way_to_authenticate_and_never_show_a_secret() {
        let sw = |body: &str| format!("{GOOD}[[switch]]\n{body}\n");
        let ok = |body: &str| Config::from_toml(&sw(body), Path::new("x.toml")).unwrap();
        let err = |body: &str| Config::from_toml(&sw(body), Path::new("x.toml")).unwrap_err().key;
        let c = ok("address = \"10.0.0.2\"\ncommunity = \"c0mm-s3cret\"");
        let t = c.switches[0].target();
        assert_eq!((t.name.as_str(), t.address.as_str(), t.interval.as_secs()), ("10.0.0.2:161", "10.0.0.2:161", 900));
        assert!(!format!("{:?} {t:?}", c.switches).contains("s3cret"));
        let v3 = "name = \"sw-hq-1\"\naddress = \"[2001:db8::2]:1161\"\nuser = \"sosdesk\"\nauth_protocol = \"sha256\"\nauth_password = \"auth-pa55word\"\npriv_protocol = \"aes128\"\npriv_password = \"priv-pa55word\"\ninterval_min = 5";
        let c = ok(v3);
        let t = c.switches[0].target();
        assert_eq!((t.name.as_str(), t.address.as_str()), ("sw-hq-1", "[2001:db8::2]:1161"));
        assert!(!format!("{:?} {t:?}", c.switches).contains("pa55"));
        assert_eq!(
            ok("address = \"sw1.example:1161\"\ncommunity = \"x\"").switches[0].target().address,
            "sw1.example:1161"
        );
        assert_eq!(err("address = \"sw 1\"\ncommunity = \"x\""), "switch[0].address");
        assert_eq!(err("address = \"10.0.0.2\""), "switch[0].community");
        assert_eq!(err("address = \"10.0.0.2\"\ncommunity = \"x\"\nuser = \"u\""), "switch[0].community");
        assert_eq!(err(&v3.replace("auth-pa55word", "short")), "switch[0].auth_password");
        assert_eq!(err(&v3.replace("priv_password = \"priv-pa55word\"\n", "")), "switch[0].priv_password");
        assert_eq!(err(&v3.replace("interval_min = 5", "interval_min = 0")), "switch[0].interval_min");
        assert_eq!(err(&v3.replace("aes128", "rot13")).split(' ').next(), Some("line"));
        let twice = format!(
            "{}[[switch]]\naddress = \"10.0.0.2\"\ncommunity = \"x\"\n",
            sw("address = \"10.0.0.2\"\ncommunity = \"y\"")
        );
        assert_eq!(Config::from_toml(&twice, Path::new("x.toml")).unwrap_err().key, "switch[1].name");
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let bad = GOOD.replace("routes = [\"p1\"]", "routes = [\"nope\"]");
        let e = Config::from_toml(&bad, Path::new("x.toml")).unwrap_err();
        assert_eq!(e.key, "pstn_usage[0].routes[0]");
        assert!(e.to_string().starts_with("x.toml: key `pstn_usage[0].routes[0]`: no route named \"nope\""), "{e}");

        let bad = GOOD.replace("masks = [\"9911\"]", "masks = [\"9-911\"]");
        let e = Config::from_toml(&bad, Path::new("x.toml")).unwrap_err();
        assert_eq!(e.key, "policy[0].number[0].masks[0]");

        let bad = GOOD.replace("[store]", "[store]\npth = 1");
        let e = Config::from_toml(&bad, Path::new("x.toml")).unwrap_err();
        assert!(e.reason.contains("unknown field `pth`"), "{e}");
        // toml points at the table that holds the unknown key.
        assert_eq!(e.key, "line 6");

        // A name is resolved by RFC 3263; one DNS cannot hold is refused.
        let named = GOOD.replace("address = \"127.0.0.1:5070\"", "address = \"sips:sbc.provider.example\"");
        assert!(Config::from_toml(&named, Path::new("x.toml")).is_ok());
        let bad = GOOD.replace("address = \"127.0.0.1:5070\"", "address = \"sbc..provider\"");
        assert!(Config::from_toml(&bad, Path::new("x.toml")).is_err());
    }

    /// `[store]`: a SQLite `path` or `url`, or a PostgreSQL `url` (issue 14); one of them, a URL
    /// that parses, and its password in no error and no display of the location.
    #[test]
    fn store_is_a_sqlite_path_or_a_url() {
        let with = |lines: &str| GOOD.replace("path = \"audit.db\"", lines);
        let load = |lines: &str| Config::from_toml(&with(lines), Path::new("/etc/sosdesk/x.toml"));
        let c = load("url = \"sqlite:data/s.db\"").unwrap();
        assert_eq!(c.store_location(), Location::Sqlite(PathBuf::from("/etc/sosdesk/data/s.db")));
        assert_eq!(c.node_name(), None, "a SQLite store names no node unless told");
        let c = load("url = \"postgres://sos:hunter2secret@db.example:5433/sosdesk\"\nnode = \"core-a\"").unwrap();
        assert_eq!(c.store_location().backend(), crate::db::Backend::Postgres);
        assert_eq!(c.store_location().to_string(), "postgres://sos@db.example:5433/sosdesk");
        assert_eq!(c.node_name().as_deref(), Some("core-a"));
        // Local files of a PostgreSQL node go beside the config file.
        assert_eq!(c.journal_path(), PathBuf::from("/etc/sosdesk/sosdesk.journal"));
        for (lines, key) in [
            ("path = \"a.db\"\nurl = \"sqlite:b.db\"", "store.url"),
            ("node = \"x\"", "store"),
            ("url = \"postgres://sos:hunter2secret@db.example:5433\"", "store.url"),
            ("url = \"postgres://sos:hunter2secret@db.example:99999/d\"", "store.url"),
            ("url = \"mysql://sos:hunter2secret@db.example/d\"", "store.url"),
            ("url = \"postgres://sos:hunter2secret@db.example/d\"\nnode = \"\"", "store.node"),
        ] {
            let e = load(lines).unwrap_err();
            assert_eq!(e.key, key, "{lines}: {e}");
            assert!(!e.to_string().contains("hunter2secret"), "the password leaked: {e}");
        }
    }

    /// What `check-config` accepts, `serve` and the first call must take: the fuzzer's findings
    /// (issue 19) refused with their key.
    #[test]
    fn values_that_would_choke_serve_or_a_call_are_refused() {
        let refused = |edit: &dyn Fn(&str) -> String, key: &str| {
            let e = Config::from_toml(&edit(GOOD), Path::new("x.toml")).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        };
        // A window beyond what the clock can add panicked the engine on the first ELIN call.
        refused(
            &|g| g.replace("[store]", "[routing]\nelin_callback_minutes = 2e17\n[store]"),
            "routing.elin_callback_minutes",
        );
        refused(
            &|g| g.replace("[store]", "[routing]\nelin_callback_minutes = nan\n[store]"),
            "routing.elin_callback_minutes",
        );
        refused(
            &|g| g.replace("[store]", "[routing]\nroute_timeout_ms = 9223372036854775807\n[store]"),
            "routing.route_timeout_ms",
        );
        refused(
            &|g| g.replace("[store]", "[routing]\nretry_for_s = 9223372036854775807\n[store]"),
            "routing.retry_for_s",
        );
        refused(&|g| g.replace("[store]", "[routing]\nretry_for_s = 86401\n[store]"), "routing.retry_for_s");
        refused(
            &|g| g.replace("[store]", "[notification]\nattempt_timeout_ms = 9223372036854775807\n[store]"),
            "notification.attempt_timeout_ms",
        );
        refused(
            &|g| g.replace("[store]", "[notification]\nretry_for_s = 9223372036854775807\n[store]"),
            "notification.retry_for_s",
        );
        refused(&|g| g.replace("[store]", "[lis]\nrefresh_ms = 9223372036854775807\n[store]"), "lis.refresh_ms");
        // A space inside <…> went out as a malformed Request-Line: an alert never delivered.
        refused(
            &|g| {
                g.replace(
                    "pstn_usage = \"e\"",
                    "pstn_usage = \"e\"\nnotification_uris = [\"<sip:desk@127.0.0.1:5090 >\"]",
                )
            },
            "policy[0].notification_uris[0]",
        );
        refused(
            &|g| g.replace("[store]", "[routing]\ncallback_fallback = \"sip:desk@127.0.0.1 \"\n[store]"),
            "routing.callback_fallback",
        );
        // An IPv6 host must be bracketed where it goes into URIs (HELD refused it at start).
        refused(
            &|g| g.replace("udp = \"127.0.0.1:5060\"", "udp = \"127.0.0.1:5060\"\npublic_host = \"::1\""),
            "sip.public_host",
        );
        // The edges themselves are taken.
        let ok = GOOD.replace("[store]", "[routing]\nelin_callback_minutes = 10080\n[store]");
        assert!(Config::from_toml(&ok, Path::new("x.toml")).is_ok());
        let ok = GOOD.replace("udp = \"127.0.0.1:5060\"", "udp = \"[::1]:5060\"\npublic_host = \"[::1]\"");
        assert!(Config::from_toml(&ok, Path::new("x.toml")).is_ok());
    }

    /// Found with the config fuzz target (issue 19): check-config took a core on 0.0.0.0 with
    /// media anchored and nowhere to advertise RTP, which `serve` then refused to start.
    #[test]
    fn anchored_media_needs_an_address_parties_can_send_to() {
        let any = GOOD.replace("udp = \"127.0.0.1:5060\"", "udp = \"0.0.0.0:5060\"");
        let e = Config::from_toml(&any, Path::new("x.toml")).unwrap_err();
        assert_eq!(e.key, "media.address", "{e}");
        let e = Config::from_toml(&format!("{GOOD}[media]\nbind = \"::\"\n"), Path::new("x.toml")).unwrap_err();
        assert_eq!(e.key, "media.address", "{e}");
        for ok in [
            format!("{any}[media]\naddress = \"192.0.2.10\"\n"),
            any.replace("udp = \"0.0.0.0:5060\"", "udp = \"0.0.0.0:5060\"\npublic_host = \"192.0.2.10\""),
            format!("{any}[media]\nanchor = false\n"),
        ] {
            assert!(Config::from_toml(&ok, Path::new("x.toml")).is_ok(), "{ok}");
        }
    }

    /// A floor plan is the location store's (`lis floorplan set`): a site's ERL in the config has
    /// none to point at, and saying so beats ignoring the key.
    #[test]
    fn a_config_erl_has_no_floor_plan() {
        let site =
            "[[site]]\nname = \"s\"\nsubnets = [\"10.0.0.0/8\"]\npolicy = \"hq\"\n[site.erl]\ncountry = \"US\"\n\
                    rd = \"Main\"\nfloor_plan = { plan = \"ab\", x = 0.5, y = 0.5 }\n";
        let e = Config::from_toml(&format!("{GOOD}{site}"), Path::new("x.toml")).unwrap_err();
        assert_eq!(e.key, "site[0].erl.floor_plan", "{e}");
        assert!(e.reason.contains("sosdesk lis floorplan set"), "{e}");
    }

    /// Found with the config fuzz target (issue 19): an ELIN that is also an emergency number (of
    /// any policy) made every emergency call to that number an ELIN callback, which never reached
    /// a PSAP; and a policy's default ERL had its ELINs not checked.
    #[test]
    fn an_elin_is_never_an_emergency_number() {
        let site = "[[site]]\nname = \"s\"\nsubnets = [\"10.0.0.0/8\"]\npolicy = \"hq\"\n[site.erl]\ncountry = \"US\"\nrd = \"Main\"\n";
        let with_site = |elins: &str| format!("{GOOD}{site}elins = {elins}\n");
        for (elins, key) in
            [("[\"911\"]", "site[0].erl.elins[0]"), ("[\"4255550100\", \"+9911\"]", "site[0].erl.elins[1]")]
        {
            let e = Config::from_toml(&with_site(elins), Path::new("x.toml")).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.reason.contains("emergency number of policy \"hq\""), "{e}");
        }
        assert!(Config::from_toml(&with_site("[\"4255550100\"]"), Path::new("x.toml")).is_ok());
        let default_erl = |elins: &str| {
            GOOD.replace(
                "[[policy.number]]",
                &format!("[policy.default_erl]\ncountry = \"US\"\nrd = \"Main\"\nelins = {elins}\n[[policy.number]]"),
            )
        };
        for bad in ["[\"9911\"]", "[\"42-55\"]"] {
            let e = Config::from_toml(&default_erl(bad), Path::new("x.toml")).unwrap_err();
            assert_eq!(e.key, "policy[0].default_erl.elins[0]", "{e}");
        }
        assert!(Config::from_toml(&default_erl("[\"4255550100\"]"), Path::new("x.toml")).is_ok());
    }

    /// Found by the config fuzz target (issue 19): a route's `domain` went into the Request-URI
    /// unchecked, and `domain = "127.0>0.1:5070"` sent every call on the route with a
    /// Request-URI that no provider would take.
    #[test]
    fn a_route_domain_is_a_host_with_an_optional_port() {
        let with = |d: &str| {
            GOOD.replace("address = \"127.0.0.1:5070\"", &format!("address = \"127.0.0.1:5070\"\ndomain = {d:?}"))
        };
        for bad in [
            "127.0>0.1:5070",
            "provider.example.com ",
            "a b",
            "[::1",
            "::1",
            "x:port",
            "x:+5070",
            "x;transport=tcp",
            "",
        ] {
            let e = Config::from_toml(&with(bad), Path::new("x.toml")).unwrap_err();
            assert_eq!(e.key, "route[0].domain", "{bad:?}: {e}");
        }
        for good in ["provider.example.com", "127.0.0.1:5070", "[2001:db8::1]:5060", "[::1]", "e911-1.example"] {
            assert!(Config::from_toml(&with(good), Path::new("x.toml")).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn alert_channels_and_escalation_load_and_mistakes_are_named() {
        let channels = r#"
[alerts]
public_url = "https://sosdesk.example.org:8443"
[[channel]]
name = "mail"
kind = "email"
server = "smtp.example.org"
tls = "starttls"
username = "sosdesk"
password = "smtp-secret"
from = "sosdesk <sosdesk@example.org>"
to = ["security@example.org"]
[[channel]]
name = "slack"
kind = "webhook"
format = "slack"
url = "https://hooks.slack.com/services/T/B/x"
[[channel]]
name = "sms"
kind = "sms"
url = "https://sms.example.org/send"
to = ["+14255550199"]
fields = { to = "{to}", text = "{text}" }
"#;
        let with = |policy: &str, extra: &str| {
            let t = GOOD.replace("pstn_usage = \"e\"\n", &format!("pstn_usage = \"e\"\n{policy}\n"));
            format!("{t}{channels}{extra}")
        };
        let use_them = "channels = [\"mail\", \"slack\"]\nescalation = [{ after_s = 60, channels = [\"sms\"] }]";
        let c = Config::from_toml(&with(use_them, ""), Path::new("x.toml")).unwrap();
        let tiers = crate::channels::tiers(&c.policies[0].channels, &c.policies[0].escalation);
        assert_eq!(tiers.iter().map(|t| t.after_s).collect::<Vec<_>>(), [0, 60]);
        assert!(!format!("{c:?}").contains("smtp-secret"), "a secret in a debug print");
        let refused = |text: String, key: &str| {
            let e = Config::from_toml(&text, Path::new("x.toml")).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        };
        refused(with("channels = [\"pager\"]", ""), "policy[0].channels[0]");
        refused(with("", "[lis]\nunlocated_channels = [\"mail\", \"pager\"]\n"), "lis.unlocated_channels[1]");
        assert!(Config::from_toml(&with("", "[lis]\nunlocated_channels = [\"mail\"]\n"), Path::new("x.toml")).is_ok());
        let phone = "[[channel]]\nname = \"phone\"\nkind = \"voice\"\nto = [\"sip:netops@192.0.2.5\"]\n";
        refused(with("", &format!("[lis]\nunlocated_channels = [\"phone\"]\n{phone}")), "lis.unlocated_channels[0]");
        refused(
            with("escalation = [{ after_s = 99999999, channels = [\"sms\"] }]", ""),
            "policy[0].escalation[0].after_s",
        );
        refused(with("", "[[channel]]\nname = \"mail\"\nkind = \"sms\"\nurl = \"https://x/\"\nto = [\"+1\"]\nfields = { t = \"{text}\" }\n"), "channel[3].name");
        refused(with("", "[[channel]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"http://example.org/h\"\nsecret = \"0123456789abcdef\"\n"), "channel[3].url");
        refused(
            with("", "[[channel]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"https://example.org/h\"\n"),
            "channel[3].secret",
        );
        refused(with("", "[[channel]]\nname = \"m\"\nkind = \"email\"\nserver = \"mx.example.org\"\ntls = \"none\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n"), "channel[3].tls");
        refused(with("", "[[channel]]\nname = \"s\"\nkind = \"sms\"\nurl = \"https://x/\"\nto = [\"555-0199\"]\nfields = { t = \"{text}\" }\n"), "channel[3].to[0]");
        refused(with("", "[[channel]]\nname = \"s\"\nkind = \"sms\"\nurl = \"https://x/\"\nto = [\"+1555\"]\nfields = { t = \"{to}\" }\n"), "channel[3].fields");
    }
}
