//! One poll of one switch over SNMP: a walk of each object of [`mibs::OBJECTS`] (GETBULK, RFC
//! 3416 §4.2.3), SNMP v2c with a community or v3 with a USM user (RFC 3414: authentication,
//! and privacy — RFC 3826 AES).
//!
//! The SNMP crate is `async-snmp`: walks over tokio UDP with request timeouts and retries,
//! request IDs matched (a late answer to an earlier request is not taken for the next one),
//! and v3 USM with every authentication (MD5 to SHA-512, RFC 7860) and privacy (DES, AES)
//! protocol switches use. Compared with it, `snmp2` 0.5 has no timeout or retry of its own and
//! fails on a stale reply, `csnmp` 0.6 has no v3, `snmp` 0.2 is unmaintained since 2017, and
//! `rasn-snmp` is message types without a client.
//!
//! Secrets (the community, the v3 passwords) are never in `Debug` output, logs or errors.

use std::fmt;
use std::time::{Duration, Instant};

use async_snmp::{Auth, Client, Retry, UsmConfig};

use super::mibs::{self, Walks};

/// A `[[switch]]` of the config, as the poller needs it.
#[derive(Clone)]
pub struct SwitchTarget {
    /// The config's `name`, else the address.
    pub name: String,
    /// `host:port` (port 161 when the config gave none).
    pub address: String,
    pub credentials: Credentials,
    pub interval: Duration,
}

impl fmt::Debug for SwitchTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwitchTarget")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("credentials", &self.credentials)
            .field("interval", &self.interval)
            .finish()
    }
}

/// How sosdesk authenticates to a switch.
#[derive(Clone)]
pub enum Credentials {
    /// SNMP v2c (RFC 1901) with this community.
    V2c { community: String },
    /// SNMP v3 with a USM user (RFC 3414): noAuthNoPriv without `auth`, authNoPriv without
    /// `privacy`.
    V3 {
        user: String,
        auth: Option<(AuthProtocol, String)>,
        privacy: Option<(PrivProtocol, String)>,
        /// The contextName of every request (RFC 3411 §3.3.1; empty: the default context).
        /// Some agents keep each VLAN's bridge table in a context of its own.
        context: String,
    },
}

impl fmt::Debug for Credentials {
    // Never a community or password, not even in a debug log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::V2c { .. } => f.write_str("V2c { community: <hidden> }"),
            Credentials::V3 { user, auth, privacy, context } => write!(
                f,
                "V3 {{ user: {user:?}, auth: {:?}, privacy: {:?}, context: {context:?} }}",
                auth.as_ref().map(|(p, _)| p),
                privacy.as_ref().map(|(p, _)| p)
            ),
        }
    }
}

/// USM authentication protocols (RFC 3414, RFC 7860), as the config names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthProtocol {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// USM privacy protocols: RFC 3826 AES-128, and AES-192/256 with the key extension of
/// draft-blumenthal-aes-usm (net-snmp's `AES192`/`AES256`) or of
/// draft-reeder-snmpv3-usm-3desede (Cisco's, net-snmp's `AES192C`/`AES256C`). Not DES: its
/// 56-bit key is broken, and the crate would need its salt state kept on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrivProtocol {
    Aes128,
    Aes192,
    Aes256,
    Aes192Cisco,
    Aes256Cisco,
}

impl Credentials {
    fn auth(&self) -> Result<Auth, String> {
        use async_snmp::{AuthProtocol as A, PrivProtocol as P};
        match self {
            Credentials::V2c { community } => Ok(Auth::v2c(community.as_str())),
            Credentials::V3 { user, auth, privacy, context } => {
                let usm = UsmConfig::new(bytes::Bytes::copy_from_slice(user.as_bytes()))
                    .context_name(bytes::Bytes::copy_from_slice(context.as_bytes()));
                let a = |p: &AuthProtocol| match p {
                    AuthProtocol::Md5 => A::Md5,
                    AuthProtocol::Sha1 => A::Sha1,
                    AuthProtocol::Sha224 => A::Sha224,
                    AuthProtocol::Sha256 => A::Sha256,
                    AuthProtocol::Sha384 => A::Sha384,
                    AuthProtocol::Sha512 => A::Sha512,
                };
                let p = |p: &PrivProtocol| match p {
                    PrivProtocol::Aes128 => P::Aes128,
                    PrivProtocol::Aes192 => P::Aes192Blumenthal,
                    PrivProtocol::Aes256 => P::Aes256Blumenthal,
                    PrivProtocol::Aes192Cisco => P::Aes192Reeder,
                    PrivProtocol::Aes256Cisco => P::Aes256Reeder,
                };
                // The crate's errors name protocols and lengths, never the password.
                let usm = match (auth, privacy) {
                    (None, None) => usm,
                    (Some((ap, apw)), None) => usm.auth(a(ap), apw.as_bytes()).map_err(|e| e.to_string())?,
                    (Some((ap, apw)), Some((pp, ppw))) => {
                        usm.auth_priv(a(ap), apw.as_bytes(), p(pp), ppw.as_bytes()).map_err(|e| e.to_string())?
                    }
                    (None, Some(_)) => return Err("SNMPv3 privacy needs authentication".into()),
                };
                Ok(Auth::from(usm))
            }
        }
    }
}

/// How long one request waits for its answer, and how often it is sent again: a switch that
/// does not answer fails its poll in about 6 s, not a minute.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const RETRIES: u32 = 2;
/// A whole poll's bound (a 48-port switch takes well under a second; a huge uplink table more).
pub const POLL_WITHIN: Duration = Duration::from_secs(120);
/// Rows asked per GETBULK: most answers still fit one 1,472-byte UDP datagram.
const MAX_REPETITIONS: u32 = 25;

/// Walk every object of [`mibs::OBJECTS`] on `target`. The first failure (no answer, an
/// authentication error) fails the poll: what was read so far is not a whole picture.
pub async fn walk_switch(target: &SwitchTarget) -> Result<(Walks, Duration), String> {
    let started = Instant::now();
    let walked = tokio::time::timeout(POLL_WITHIN, walk_all(target)).await;
    match walked {
        Ok(Ok(walks)) => Ok((walks, started.elapsed())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no complete answer within {} s", POLL_WITHIN.as_secs())),
    }
}

async fn walk_all(target: &SwitchTarget) -> Result<Walks, String> {
    let retry = Retry::fixed(RETRIES, Duration::ZERO).map_err(|e| e.to_string())?;
    let client = Client::builder(target.address.as_str(), target.credentials.auth()?)
        .request_timeout(REQUEST_TIMEOUT)
        .retry(retry)
        .connect()
        .await
        .map_err(|e| format!("cannot reach {}: {e}", target.address))?;
    let mut walks = Walks::default();
    for object in mibs::OBJECTS {
        // Q-BRIDGE-MIB describes the same entries as BRIDGE-MIB on a switch that fills both.
        if matches!(object.name, "dot1qTpFdbPort" | "dot1qTpFdbStatus") && walks.has(mibs::FDB_PORT) {
            continue;
        }
        let oid = async_snmp::Oid::from_slice(object.oid);
        let rows = client
            .bulk_walk(oid, MAX_REPETITIONS)
            .map_err(|e| format!("{}: {e}", object.name))?
            .collect()
            .await
            .map_err(|e| format!("{} from {}: {e}", object.name, target.address))?;
        walks.add(*object, rows);
    }
    Ok(walks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let v2 = SwitchTarget {
            name: "sw".into(),
            address: "127.0.0.1:161".into(),
            credentials: Credentials::V2c { community: "c0mmunity-s3cret".into() },
            interval: Duration::from_secs(60),
        };
        let v3 = Credentials::V3 {
            user: "sosdesk".into(),
            auth: Some((AuthProtocol::Sha256, "auth-pa55word".into())),
            privacy: Some((PrivProtocol::Aes128, "priv-pa55word".into())),
            context: String::new(),
        };
        let shown = format!("{v2:?} {v3:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("pa55"), "{shown}");
        assert!(shown.contains("Sha256") && shown.contains("sosdesk"), "{shown}");
        // A bad v3 configuration is an error naming no secret.
        let bad = Credentials::V3 {
            user: "u".into(),
            auth: Some((AuthProtocol::Sha1, "pw-7x".into())),
            privacy: None,
            context: String::new(),
        };
        let e = bad.auth().map(|_| ()).unwrap_err();
        assert!(!e.contains("pw-7x") && e.contains("8 octets"), "{e}");
    }
}
