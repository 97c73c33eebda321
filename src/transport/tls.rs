//! TLS for SIP (RFC 3261 §26.2.1, RFC 5630) with rustls (ring provider): the listener's
//! acceptor (with client certificates required when `sip.tls_client_ca` is set) and the client
//! side of every connection sosdesk opens — a route's own CAs, client certificate and server
//! name, or the `sip.tls_ca` / system CAs for notification targets and callbacks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::Config;

/// How long [`TlsClient::connect`] may take, connect and handshake together.
pub const CONNECT_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Where Debian (and most distributions) keep the system's trusted CAs as one PEM file.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A certificate chain from a PEM file. Errors name the file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// A private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The system's CAs; none (every handshake then fails, and says why) where there is no bundle.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    if let Ok(iter) = CertificateDer::pem_file_iter(SYSTEM_CA_BUNDLE) {
        roots.add_parsable_certificates(iter.flatten());
    }
    roots
}

/// The client side of HTTPS and SMTP alerts (`crate::reach`): the system's CAs, and `extra_ca`'s
/// (a PEM file) when given.
pub fn alert_client(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = system_roots();
    if let Some(p) = extra_ca {
        for cert in load_certs(p)? {
            roots.add(cert).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    client_config(roots, None)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(roots: RootCertStore, identity: Option<(&Path, &Path)>) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| format!("{}: {e}", cert.display()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The server's acceptor: its certificate chain and key; with `client_ca`, a client must show a
/// certificate issued by one of those CAs or the handshake fails (mutual TLS).
pub fn acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<TlsAcceptor, String> {
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider())
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| format!("certificate and key: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How sosdesk opens a TLS connection to one peer: whom it trusts and the name the peer's
/// certificate must carry (RFC 5922 §7.2: the host of the URI, not where DNS led).
#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

impl TlsClient {
    /// The client side towards one server (a remote desk towards its core): trusting `ca`
    /// (PEM), else the system's CAs; showing `identity` (certificate, key) where the server asks
    /// for one (mutual TLS); the server's certificate must carry `name` (RFC 5922 §7.2).
    pub fn towards(name: &str, ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<TlsClient, String> {
        let roots = match ca {
            Some(p) => load_roots(p)?,
            None => system_roots(),
        };
        let config = client_config(roots, identity)?;
        let bare = name.trim_start_matches('[').trim_end_matches(']').to_string();
        let name = ServerName::try_from(bare).map_err(|e| format!("{name:?}: {e}"))?;
        Ok(TlsClient { config, name })
    }

    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.config.clone())
    }

    /// A TLS connection to `addr`, its certificate checked for this client's name, within
    /// [`CONNECT_WITHIN`] (a dead or half-open server must not hang a desk's registration);
    /// errors say which step failed.
    pub async fn connect(
        &self,
        addr: SocketAddr,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let open = async {
            let tcp =
                tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("cannot connect to {addr}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            self.connector().connect(self.name.clone(), tcp).await.map_err(|e| format!("TLS with {addr} failed: {e}"))
        };
        tokio::time::timeout(CONNECT_WITHIN, open)
            .await
            .map_err(|_| format!("no TLS connection to {addr} within {} s", CONNECT_WITHIN.as_secs()))?
    }
}

/// Names peers gave for themselves, kept at most (see [`TlsSetup::note_peer_name`]).
const PEER_NAMES_KEPT: usize = 4096;

/// Everything TLS the core needs, built once from the config (`check-config` builds it too, so
/// a wrong file is found before a start).
pub struct TlsSetup {
    pub acceptor: Option<TlsAcceptor>,
    /// Per route with `transport = "tls"` (by route index): its client side.
    routes: Vec<Option<(Arc<ClientConfig>, String)>>,
    /// The route each address belongs to (its literal address, or what its name resolved to).
    route_of: RwLock<HashMap<SocketAddr, usize>>,
    /// The name each other address was resolved from (a notification URI's or callback's host):
    /// the certificate must carry that name (RFC 5922 §7.2).
    name_of: RwLock<HashMap<SocketAddr, String>>,
    /// The name a peer gave for itself (its Via, Contact or Record-Route) where it is reached
    /// again at the address its connection came from (`sip::transaction::Reconnect`). Kept
    /// apart from `name_of`, which wins: what callers write can never displace or crowd out
    /// the names of the config's targets.
    peer_names: RwLock<HashMap<SocketAddr, String>>,
    /// Anyone else (notification targets, callbacks, a PBX's listener): `sip.tls_ca` or the
    /// system's CAs; presents `sip.tls_cert` when there is one that may serve a client.
    default_client: Arc<ClientConfig>,
    presents_identity: bool,
}

impl TlsSetup {
    pub fn from_config(cfg: &Config) -> Result<TlsSetup, String> {
        let acceptor = match (&cfg.sip.tls, &cfg.sip.tls_cert, &cfg.sip.tls_key) {
            (Some(_), Some(cert), Some(key)) => Some(
                acceptor(
                    &cfg.path(cert),
                    &cfg.path(key),
                    cfg.sip.tls_client_ca.as_ref().map(|p| cfg.path(p)).as_deref(),
                )
                .map_err(|e| format!("sip.tls: {e}"))?,
            ),
            _ => None,
        };
        let default_roots = match &cfg.sip.tls_ca {
            Some(p) => load_roots(&cfg.path(p)).map_err(|e| format!("sip.tls_ca: {e}"))?,
            None => system_roots(),
        };
        // The listener's own certificate is sosdesk's identity towards anyone else too: a PBX's
        // listener, a notification target or a callback's address may ask for mutual TLS (as a
        // Skype for Business Mediation Server or a Teams SBC does), and a SIP server presents the
        // certificate it serves with (hence clientAuth besides serverAuth in its key usage).
        let identity = match (&cfg.sip.tls_cert, &cfg.sip.tls_key) {
            (Some(cert), Some(key)) => {
                let (cert, key) = (cfg.path(cert), cfg.path(key));
                let leaf = load_certs(&cert).map_err(|e| format!("sip.tls_cert: {e}"))?;
                if leaf.first().is_some_and(|c| may_authenticate_a_client(c)) {
                    Some((cert, key))
                } else {
                    // Presented anyway, it would turn away a peer that asks for a client
                    // certificate only optionally but checks what it gets.
                    tracing::warn!(cert = %cert.display(), "sip.tls_cert is for servers only (its extended key usage lacks clientAuth): sosdesk presents no client certificate on the TLS connections it opens, and a peer that requires one refuses them");
                    None
                }
            }
            _ => None,
        };
        let presents_identity = identity.is_some();
        let identity = identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let default_client =
            client_config(default_roots, identity).map_err(|e| format!("sip.tls_ca, sip.tls_cert: {e}"))?;
        let mut routes = Vec::new();
        let mut route_of = HashMap::new();
        for (i, r) in cfg.routes.iter().enumerate() {
            if !r.may_use_tls() {
                routes.push(None);
                continue;
            }
            let roots = match &r.tls_ca {
                Some(p) => load_roots(&cfg.path(p)).map_err(|e| format!("route {}: tls_ca: {e}", r.name))?,
                None => system_roots(),
            };
            let (cert, key) = (r.tls_cert.as_ref().map(|p| cfg.path(p)), r.tls_key.as_ref().map(|p| cfg.path(p)));
            let identity = cert.as_deref().zip(key.as_deref());
            let config = client_config(roots, identity).map_err(|e| format!("route {}: tls_cert: {e}", r.name))?;
            let target = r.target();
            let name = server_name_of(r.domain.as_deref(), &target.host_str());
            ServerName::try_from(name.clone()).map_err(|e| format!("route {}: {name:?}: {e}", r.name))?;
            routes.push(Some((config, name)));
            if let Some(peer) = target.literal() {
                route_of.insert(peer.addr, i);
            }
        }
        Ok(TlsSetup {
            acceptor,
            routes,
            route_of: RwLock::new(route_of),
            name_of: RwLock::default(),
            peer_names: RwLock::default(),
            default_client,
            presents_identity,
        })
    }

    /// A resolved address of route `route` (RFC 3263): its connections use the route's TLS.
    pub fn note_route_address(&self, addr: SocketAddr, route: usize) {
        if self.routes.get(route).is_some_and(Option::is_some) {
            self.route_of.write().unwrap_or_else(|e| e.into_inner()).insert(addr, route);
        }
    }

    /// An address a name (not a route's) resolved to: its connections check that name.
    pub fn note_name_address(&self, addr: SocketAddr, name: &str) {
        let mut names = self.name_of.write().unwrap_or_else(|e| e.into_inner());
        if names.len() < 4096 {
            names.insert(addr, name.to_string());
        }
    }

    /// The name a peer gave for itself, for its certificate at `addr`, where sosdesk connects
    /// to it again (RFC 5922 §7.2). Bounded: beyond [`PEER_NAMES_KEPT`] addresses the table
    /// starts anew (a name lost that way, under a flood of them, makes a later connection to
    /// its peer check the address instead, and fail visibly).
    pub fn note_peer_name(&self, addr: SocketAddr, name: &str) {
        let mut names = self.peer_names.write().unwrap_or_else(|e| e.into_inner());
        if names.len() >= PEER_NAMES_KEPT && !names.contains_key(&addr) {
            names.clear();
        }
        names.insert(addr, name.to_string());
    }

    /// Whether connections to anyone but a route present `sip.tls_cert`.
    pub fn presents_client_certificate(&self) -> bool {
        self.presents_identity
    }

    /// How to open a TLS connection to `addr`.
    pub fn client_for(&self, addr: SocketAddr) -> TlsClient {
        let route = self.route_of.read().unwrap_or_else(|e| e.into_inner()).get(&addr).copied();
        if let Some((config, name)) = route.and_then(|i| self.routes.get(i)).and_then(Option::as_ref) {
            if let Ok(name) = ServerName::try_from(name.clone()) {
                return TlsClient { config: config.clone(), name };
            }
        }
        let named = self.name_of.read().unwrap_or_else(|e| e.into_inner()).get(&addr).cloned();
        let named = named.or_else(|| self.peer_names.read().unwrap_or_else(|e| e.into_inner()).get(&addr).cloned());
        let name = named.and_then(|n| ServerName::try_from(n).ok()).unwrap_or(ServerName::IpAddress(addr.ip().into()));
        TlsClient { config: self.default_client.clone(), name }
    }
}

/// Whether a certificate may authenticate a TLS client (RFC 5280 §4.2.1.12): it has no extended
/// key usage (any use), or its list holds clientAuth or anyExtendedKeyUsage. Told from the DER by
/// the object identifiers' encodings, which occur nowhere else in a certificate by accident.
fn may_authenticate_a_client(cert: &[u8]) -> bool {
    const EXT_KEY_USAGE: &[u8] = &[0x06, 0x03, 0x55, 0x1d, 0x25]; // 2.5.29.37
    const CLIENT_AUTH: &[u8] = &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02]; // 1.3.6.1.5.5.7.3.2
    const ANY_USAGE: &[u8] = &[0x06, 0x04, 0x55, 0x1d, 0x25, 0x00]; // 2.5.29.37.0
    let has = |oid: &[u8]| cert.windows(oid.len()).any(|w| w == oid);
    !has(EXT_KEY_USAGE) || has(CLIENT_AUTH) || has(ANY_USAGE)
}

/// The name a route's certificate must carry: its `domain` (without a port), else the host of
/// its address (RFC 5922 §4: the domain the admin asked for, not where DNS led).
fn server_name_of(domain: Option<&str>, host: &str) -> String {
    match domain {
        Some(d) => {
            let host = match d.strip_prefix('[') {
                Some(rest) => rest.split(']').next().unwrap_or(rest),
                None => d.rsplit_once(':').map(|(h, _)| h).unwrap_or(d),
            };
            host.to_string()
        }
        None => host.trim_start_matches('[').trim_end_matches(']').to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_a_peer_gives_never_displaces_a_configured_targets_and_stays_bounded() {
        let cfg = Config::from_toml(include_str!("../../examples/lab.toml"), Path::new("lab.toml")).unwrap();
        let tls = TlsSetup::from_config(&cfg).unwrap();
        let (target, pbx) = ("192.0.2.7:5061".parse().unwrap(), "192.0.2.8:5061".parse().unwrap());
        let name_at = |a| format!("{:?}", tls.client_for(a).name);
        assert_eq!(name_at(pbx), "IpAddress(V4(Ipv4Addr([192, 0, 2, 8])))");
        tls.note_name_address(target, "desk.example");
        tls.note_peer_name(target, "attacker.example");
        tls.note_peer_name(pbx, "medsrv.contoso.example");
        assert_eq!(name_at(target), "DnsName(\"desk.example\")");
        assert_eq!(name_at(pbx), "DnsName(\"medsrv.contoso.example\")");
        for port in 0..PEER_NAMES_KEPT as u16 + 1 {
            tls.note_peer_name(SocketAddr::from(([198, 51, 100, 1], port)), "flood.example");
        }
        assert!(tls.peer_names.read().unwrap().len() <= PEER_NAMES_KEPT);
        assert_eq!(name_at(target), "DnsName(\"desk.example\")", "the config's names are kept apart");
    }

    #[test]
    fn a_routes_certificate_must_name_its_domain_without_the_port_else_its_address() {
        let ip = "192.0.2.7";
        assert_eq!(server_name_of(Some("sbc.provider.example:5061"), ip), "sbc.provider.example");
        assert_eq!(server_name_of(Some("sbc.provider.example"), ip), "sbc.provider.example");
        assert_eq!(server_name_of(Some("[2001:db8::1]:5061"), ip), "2001:db8::1");
        assert_eq!(server_name_of(None, ip), "192.0.2.7");
        assert_eq!(server_name_of(None, "[2001:db8::1]"), "2001:db8::1");
        assert_eq!(server_name_of(None, "sbc.provider.example"), "sbc.provider.example");
    }
}
