//! User-entered locations: the civic address a remote (nomadic) user enters for the calls they
//! make off the organisation's mapped network — the dispatchable location the RAY BAUM'S Act
//! asks for non-fixed devices (47 CFR §9.16(b)(3)(ii): the user's manual entry is an accepted
//! source when the network cannot locate the device), as Teams, Zoom and Cisco ER collect it.
//!
//! A user-entered location is trusted less than anything measured: it is used for the user's
//! calls only when nothing on the network located the device (docs/location.md gives the
//! order), and only while the device is still on the network it was entered from — a call from
//! another network falls back as if there were none, and says that a stale one exists, until the
//! user confirms it again (which validates it again). Every call that uses one is marked
//! "user-entered — verify with the caller" ([`VERIFY_NOTE`]) and its PIDF-LO's `<method>` is
//! `Manual` (RFC 4119 §2.2.3, IANA "Method Tokens").
//!
//! This module is the rule (who the owner is, when an entry is current) and the in-memory book
//! the core reads on a call's path; `store/user_locations.rs` keeps the rows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::unlocated::subnet_of;
use super::validate::{missing_required, Validation, Validator};
use super::{format_mac, parse_mac, DeviceAttachment, Erl};

/// Shown on every alert of a call located by a user's entry, and first among its location's
/// warnings (the desk shows them).
pub const VERIFY_NOTE: &str = "user-entered — verify with the caller";

/// How a call's location notes begin when the caller has a user-entered location that could not
/// be used because the device's network changed.
pub const STALE_NOTE: &str = "a user-entered location exists but is stale";

/// Longest owner accepted (a SIP user part or telephone number is far shorter).
const MAX_OWNER: usize = 128;

/// The network identifiers seen when a location was entered or confirmed. A call whose device
/// shows other ones is on another network: the entry is stale.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSeen {
    /// The device's address (for a call: any of its addresses must be in this one's /24 or /64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// The device's MAC, `0A-23-CD-16-AA-2E`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The BSSID of the Wi-Fi access point it was associated with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bssid: Option<String>,
}

impl NetworkSeen {
    /// The subnet a call must come from (`None` when no address was seen).
    pub fn subnet(&self) -> Option<String> {
        self.ip.map(subnet_of)
    }

    /// Normalises the MAC and BSSID spellings; `Err` names the one that is not a MAC.
    pub fn normalised(self) -> Result<NetworkSeen, String> {
        let mac = |what: &str, v: Option<String>| match v.filter(|s| !s.trim().is_empty()) {
            None => Ok(None),
            Some(s) => {
                parse_mac(s.trim()).map(|m| Some(format_mac(&m))).ok_or(format!("{what} {s:?} is not a MAC address"))
            }
        };
        Ok(NetworkSeen {
            ip: self.ip.map(|ip| ip.to_canonical()),
            mac: mac("mac", self.mac)?,
            bssid: mac("bssid", self.bssid)?,
        })
    }

    /// `198.51.100.7 (198.51.100.0/24), MAC …, BSSID …`, or `no network`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(ip) = self.ip {
            parts.push(format!("{ip} ({})", subnet_of(ip)));
        }
        if let Some(m) = &self.mac {
            parts.push(format!("MAC {m}"));
        }
        if let Some(b) = &self.bssid {
            parts.push(format!("BSSID {b}"));
        }
        if parts.is_empty() {
            "no network".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Whether `ip` is in space many networks reuse, so that the same /24 or /64 does not show the
/// same network: RFC 1918 private, RFC 6598 shared (CGNAT, 100.64.0.0/10), link-local
/// (169.254/16, fe80::/10), IPv6 unique-local (fc00::/7), unspecified. Loopback counts as unique
/// (global) — only for the tests, whose devices all are 127.x; no real phone calls from loopback.
pub fn is_non_unique(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || v4.is_link_local() || v4.is_unspecified() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// One user's entered location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserLocation {
    /// Whose calls it is for: the caller as calls show it ([`owner_key`]).
    pub owner: String,
    pub erl: Erl,
    pub network: NetworkSeen,
    /// Who entered it: `user alice`, `desk lobby`, `cli`, `sip-publish alice`.
    pub entered_by: String,
    pub entered_at: DateTime<Utc>,
    /// When it was last entered or confirmed (and validated).
    pub confirmed_at: DateTime<Utc>,
}

/// Whether an entry may be used for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Current,
    /// The device is on another network (why, for the call's notes).
    Stale(String),
}

impl UserLocation {
    /// The entry against one view of the device: stale as soon as any identifier known both then
    /// and now differs — another access point, another device, another /24 or /64.
    pub fn standing(&self, device: &DeviceAttachment) -> Standing {
        let seen = &self.network;
        if let (Some(was), Some(now)) = (&seen.bssid, device.bssid.map(|b| format_mac(&b))) {
            if *was != now {
                return Standing::Stale(format!("the Wi-Fi access point changed ({was} then, {now} now)"));
            }
        }
        if let (Some(was), Some(now)) = (&seen.mac, device.mac.map(|m| format_mac(&m))) {
            if *was != now {
                return Standing::Stale(format!("another device (MAC {was} then, {now} now)"));
            }
        }
        match (seen.ip, device.ip) {
            (Some(was), Some(now)) if subnet_of(was) != subnet_of(now) => Standing::Stale(format!(
                "the network changed ({} when entered, {} now)",
                subnet_of(was),
                subnet_of(now)
            )),
            // A private, shared (CGNAT) or link-local subnet is the same in every home and hotel:
            // it proves the same network only with the same device (MAC) or access point (BSSID).
            (Some(was), Some(_)) if is_non_unique(was) => {
                let same = |then: &Option<String>, now: Option<String>| then.is_some() && *then == now;
                if same(&seen.mac, device.mac.map(|m| format_mac(&m)))
                    || same(&seen.bssid, device.bssid.map(|b| format_mac(&b)))
                {
                    Standing::Current
                } else {
                    Standing::Stale(format!(
                        "{} is a private address, the same in many networks: without the same MAC or access point it does not show the same network",
                        subnet_of(was)
                    ))
                }
            }
            (Some(_), Some(_)) => Standing::Current,
            (None, _) => Standing::Stale("no network was recorded when it was entered".into()),
            (_, None) => Standing::Stale("the device's network is not known".into()),
        }
    }

    /// The entry for a call showing several addresses: current when any of them is on the
    /// entry's network (the phone's own address and its NAT's differ); else the first reason.
    pub fn standing_for_ips(&self, ips: &[IpAddr]) -> Standing {
        let mut first = None;
        for ip in ips {
            match self.standing(&DeviceAttachment { ip: Some(*ip), ..Default::default() }) {
                Standing::Current => return Standing::Current,
                stale => {
                    first.get_or_insert(stale);
                }
            }
        }
        first.unwrap_or(Standing::Stale("the device's network is not known".into()))
    }
}

/// The owner as calls name the caller: a number or SIP user part as the INVITE's
/// P-Asserted-Identity or From carries it (`sip:`/`sips:`/`tel:`, host and parameters dropped;
/// `-.()` removed, as `Uri::number` does). `Err` says why it is not one.
pub fn owner_key(text: &str) -> Result<String, String> {
    let t = text.trim();
    let t = ["sip:", "sips:", "tel:"]
        .iter()
        .find_map(|s| t.get(..s.len()).filter(|p| p.eq_ignore_ascii_case(s)).map(|_| &t[s.len()..]))
        .unwrap_or(t);
    let t = t.split(['@', ';']).next().unwrap_or("");
    let key: String = t.chars().filter(|c| !"-.()".contains(*c)).collect();
    if key.is_empty() {
        return Err("the owner is empty (a SIP user name or telephone number)".into());
    }
    if key.len() > MAX_OWNER {
        return Err(format!("the owner is longer than {MAX_OWNER} characters"));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control() || "/?#%\"<>\\".contains(c)) {
        return Err(format!("the owner {key:?} has characters a SIP user part or number cannot have"));
    }
    Ok(key)
}

/// Whether an entered address may be kept: the validator's verdict (the MSAG, `lis.msag`), or,
/// without one, the elements a dispatchable address needs. `Err` holds every reason.
pub fn validate_entry(erl: &Erl, validator: Option<&dyn Validator>) -> Result<(), Vec<String>> {
    if erl.civic.is_empty() {
        return Err(vec!["no civic address was given".into()]);
    }
    let verdict = match validator {
        Some(v) => v.validate(&erl.civic),
        None => match missing_required(&erl.civic) {
            m if m.is_empty() => Validation::Valid,
            m => Validation::Invalid { reasons: m.into_iter().map(|m| format!("missing {m}")).collect() },
        },
    };
    match verdict {
        Validation::Valid => Ok(()),
        Validation::Invalid { reasons } => Err(reasons),
    }
}

/// What the book says of a caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    Current(UserLocation),
    Stale(UserLocation, String),
}

/// Every user-entered location, in memory, for the call path (read under a lock held for a
/// map look-up; replaced whole when the store's table changes, updated in place by this node's
/// writes). Cheap to clone.
#[derive(Clone, Default)]
pub struct UserLocationBook {
    entries: Arc<RwLock<HashMap<String, UserLocation>>>,
}

impl UserLocationBook {
    pub fn replace_all(&self, all: Vec<UserLocation>) {
        let map = all.into_iter().map(|u| (u.owner.clone(), u)).collect();
        if let Ok(mut e) = self.entries.write() {
            *e = map;
        }
    }

    pub fn put(&self, entry: UserLocation) {
        if let Ok(mut e) = self.entries.write() {
            e.insert(entry.owner.clone(), entry);
        }
    }

    pub fn remove(&self, owner: &str) {
        if let Ok(mut e) = self.entries.write() {
            e.remove(owner);
        }
    }

    pub fn get(&self, owner: &str) -> Option<UserLocation> {
        self.entries.read().ok()?.get(owner).cloned()
    }

    /// The caller's entry and whether it may be used for a call from these addresses.
    pub fn lookup(&self, owner: &str, ips: &[IpAddr]) -> Option<Found> {
        let entry = self.get(owner)?;
        Some(match entry.standing_for_ips(ips) {
            Standing::Current => Found::Current(entry),
            Standing::Stale(why) => Found::Stale(entry, why),
        })
    }

    /// For HELD, which knows a device and not its user: the entry last confirmed from exactly
    /// this address (and, when both are known, this MAC and access point). A private, CGNAT or
    /// link-local address alone never matches ([`UserLocation::standing`]); the caller passes
    /// only the address it saw the request come from, never one a request names.
    pub fn for_device(&self, device: &DeviceAttachment) -> Option<UserLocation> {
        let ip = device.ip?.to_canonical();
        let entries = self.entries.read().ok()?;
        entries
            .values()
            .filter(|u| u.network.ip == Some(ip) && u.standing(device) == Standing::Current)
            .max_by_key(|u| u.confirmed_at)
            .cloned()
    }
}

/// What a kept change did to a user's location (the `change` of its audit record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Entered,
    Confirmed,
    Cleared,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Entered => "entered",
            Change::Confirmed => "confirmed",
            Change::Cleared => "cleared",
        }
    }
}

/// Why an entry was not kept.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The owner or a network identifier is not one (the request's fault).
    #[error("{0}")]
    Malformed(String),
    /// The validator refused the address: every reason.
    #[error("the address is not valid: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error(transparent)]
    Store(#[from] super::store::LisError),
}

/// Entering, confirming and clearing user-entered locations: validated, kept in the store, and
/// put in the book the calls read at once (the API, SIP PUBLISH and the CLI go through this).
#[derive(Clone)]
pub struct UserLocations {
    pub store: super::store::LisStore,
    pub book: UserLocationBook,
    /// The MSAG (`lis.msag`); without one, the required elements are checked.
    pub validator: Option<Arc<dyn Validator>>,
}

/// A SIP publication of a user-entered location (RFC 3903): the entity-tag it gets when kept, and
/// the one its request names (`SIP-If-Match`: a refresh, modify or removal of that publication).
/// The tag is kept with the entry in the store, for every node.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub if_match: Option<String>,
    pub etag: String,
}

impl UserLocations {
    /// Validates and keeps `erl` as `owner`'s location, seen on `network`. Entering the same
    /// owner again is the confirmation: validated again, the new network recorded. Says whether
    /// it was [`Change::Confirmed`] (the address the book held, again) or [`Change::Entered`]:
    /// the book must be loaded ([`Self::refresh`]) for that to be right.
    pub async fn enter(
        &self,
        owner: &str,
        erl: Erl,
        network: NetworkSeen,
        entered_by: &str,
        now: DateTime<Utc>,
    ) -> Result<(UserLocation, Change), EntryError> {
        match self.keep(owner, erl, network, entered_by, now, None).await? {
            Some(kept) => Ok(kept),
            // Only a publication's modify can find nothing to write.
            None => Err(EntryError::Malformed("nothing was written".into())),
        }
    }

    /// [`Self::enter`] for a SIP PUBLISH with a body: the entry gets the publication's tag;
    /// `None` (nothing kept) when it modifies a publication whose tag is no longer the entry's.
    pub async fn publish(
        &self,
        owner: &str,
        erl: Erl,
        network: NetworkSeen,
        entered_by: &str,
        now: DateTime<Utc>,
        publication: &Publication,
    ) -> Result<Option<(UserLocation, Change)>, EntryError> {
        self.keep(owner, erl, network, entered_by, now, Some(publication)).await
    }

    /// A publication's refresh: `false` when no entry has the tag `if_match` (a refresh records
    /// nothing else: the phone sends it by itself, from wherever it is).
    pub async fn refresh_publication(&self, owner: &str, if_match: &str, etag: &str) -> Result<bool, EntryError> {
        let owner = owner_key(owner).map_err(EntryError::Malformed)?;
        Ok(self.store.refresh_publication(&owner, if_match, etag).await?)
    }

    /// A publication's removal: `false` when no entry has the tag `if_match`.
    pub async fn clear_publication(&self, owner: &str, if_match: &str) -> Result<bool, EntryError> {
        let owner = owner_key(owner).map_err(EntryError::Malformed)?;
        let removed = self.store.clear_publication(&owner, if_match).await?;
        if removed {
            self.book.remove(&owner);
        }
        Ok(removed)
    }

    /// [`Self::enter`] and [`Self::publish`]: validated, written (with the publication's tag,
    /// when one), put in the book; `None` when a publication's modify found another tag.
    async fn keep(
        &self,
        owner: &str,
        erl: Erl,
        network: NetworkSeen,
        entered_by: &str,
        now: DateTime<Utc>,
        publication: Option<&Publication>,
    ) -> Result<Option<(UserLocation, Change)>, EntryError> {
        let owner = owner_key(owner).map_err(EntryError::Malformed)?;
        let network = network.normalised().map_err(EntryError::Malformed)?;
        validate_entry(&erl, self.validator.as_deref()).map_err(EntryError::Invalid)?;
        // Validated now, by the rule in force: say so on the ERL the call carries.
        // The ELINs sent to the PSAP and floor-plan pins are the organisation's, never a user's.
        let erl = Erl { validated: true, elins: Vec::new(), floor_plan: None, ..erl };
        let kept = self.book.get(&owner);
        let entered_at = kept.as_ref().map(|e| e.entered_at).unwrap_or(now);
        // The same address again is the user confirming it (from wherever they are now);
        // another one is a new entry (what the audit record says).
        let change = match kept {
            Some(k) if k.erl == erl => Change::Confirmed,
            _ => Change::Entered,
        };
        let entry =
            UserLocation { owner, erl, network, entered_by: entered_by.to_string(), entered_at, confirmed_at: now };
        if !self.store.set_user_location(&entry, publication).await? {
            return Ok(None);
        }
        self.book.put(entry.clone());
        Ok(Some((entry, change)))
    }

    /// Removes `owner`'s location; `false` when there was none.
    pub async fn clear(&self, owner: &str) -> Result<bool, EntryError> {
        let owner = owner_key(owner).map_err(EntryError::Malformed)?;
        let removed = self.store.clear_user_location(&owner).await?;
        self.book.remove(&owner);
        Ok(removed)
    }

    /// Re-reads the table into the book when its generation moved (other nodes, the CLI).
    pub async fn refresh(&self, known: Option<i64>) -> Option<i64> {
        let generation = match self.store.user_locations_generation().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the user-location generation; keeping the current ones");
                return known;
            }
        };
        if known == Some(generation) {
            return known;
        }
        match self.store.user_locations().await {
            Ok(all) => {
                tracing::info!(entries = all.len(), generation, "user-entered locations loaded");
                self.book.replace_all(all);
                Some(generation)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load the user-entered locations; keeping the current ones");
                known
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::validate::MsagValidator;
    use crate::location::CivicAddress;

    fn entry(ip: &str) -> UserLocation {
        let at = Utc::now();
        UserLocation {
            owner: "alice".into(),
            erl: Erl::default(),
            network: NetworkSeen { ip: Some(ip.parse().unwrap()), mac: None, bssid: Some("00-11-22-33-44-55".into()) },
            entered_by: "user alice".into(),
            entered_at: at,
            confirmed_at: at,
        }
    }

    #[test]
    fn an_entry_is_current_only_on_the_network_it_was_entered_from() {
        let e = entry("198.51.100.7");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(e.standing_for_ips(&[ip("198.51.100.200")]), Standing::Current);
        assert_eq!(e.standing_for_ips(&[ip("10.0.0.5"), ip("198.51.100.9")]), Standing::Current);
        let Standing::Stale(why) = e.standing_for_ips(&[ip("203.0.113.5")]) else { panic!("current") };
        assert!(why.contains("198.51.100.0/24") && why.contains("203.0.113.0/24"), "{why}");
        let other_ap = DeviceAttachment {
            ip: Some(ip("198.51.100.7")),
            bssid: parse_mac("00-11-22-33-44-66"),
            ..Default::default()
        };
        assert!(matches!(e.standing(&other_ap), Standing::Stale(w) if w.contains("access point")));
    }

    #[test]
    fn a_private_subnet_alone_does_not_show_the_same_network() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let mut e = entry("192.168.1.20");
        e.network = NetworkSeen { ip: ip("192.168.1.20"), mac: Some("0A-23-CD-16-AA-2E".into()), bssid: None };
        // The same 192.168.1.0/24 elsewhere (a hotel), no MAC or BSSID known: stale.
        let bare = DeviceAttachment { ip: ip("192.168.1.33"), ..Default::default() };
        assert!(matches!(e.standing(&bare), Standing::Stale(w) if w.contains("private")), "{:?}", e.standing(&bare));
        assert!(matches!(e.standing_for_ips(&[ip("192.168.1.20").unwrap()]), Standing::Stale(_)));
        // With the device's MAC: current.
        let same_device = DeviceAttachment { mac: parse_mac("0A-23-CD-16-AA-2E"), ..bare.clone() };
        assert_eq!(e.standing(&same_device), Standing::Current);
        // CGNAT, link-local and ULA likewise; a global /24 (and the tests' loopback) is current.
        for (was, now) in [("100.64.3.4", "100.64.3.9"), ("169.254.1.1", "169.254.1.2"), ("fd00::1", "fd00::2")] {
            e.network = NetworkSeen { ip: ip(was), ..Default::default() };
            let d = DeviceAttachment { ip: ip(now), ..Default::default() };
            assert!(matches!(e.standing(&d), Standing::Stale(_)), "{was}");
        }
        for (was, now) in [("198.51.100.7", "198.51.100.9"), ("127.0.0.6", "127.0.0.6")] {
            e.network = NetworkSeen { ip: ip(was), ..Default::default() };
            let d = DeviceAttachment { ip: ip(now), ..Default::default() };
            assert_eq!(e.standing(&d), Standing::Current, "{was}");
        }
        // HELD: a user's private address alone is nobody's location.
        let book = UserLocationBook::default();
        e.network = NetworkSeen { ip: ip("192.168.1.20"), mac: Some("0A-23-CD-16-AA-2E".into()), bssid: None };
        book.put(e);
        assert!(book.for_device(&DeviceAttachment { ip: ip("192.168.1.20"), ..Default::default() }).is_none());
        let with_mac =
            DeviceAttachment { ip: ip("192.168.1.20"), mac: parse_mac("0A-23-CD-16-AA-2E"), ..Default::default() };
        assert!(book.for_device(&with_mac).is_some());
    }

    #[test]
    fn owners_are_named_as_calls_name_callers() {
        assert_eq!(owner_key("sip:+1-555-0100@example.com;user=phone").unwrap(), "+15550100");
        assert_eq!(owner_key(" alice ").unwrap(), "alice");
        assert_eq!(owner_key("tel:+1(555)0100").unwrap(), "+15550100");
        assert!(owner_key("").is_err());
        assert!(owner_key("a b").is_err());
    }

    #[test]
    fn an_entry_is_validated_by_the_msag_when_there_is_one() {
        let civic = CivicAddress {
            country: Some("US".into()),
            a1: Some("WA".into()),
            a3: Some("Redmond".into()),
            rd: Some("Main".into()),
            sts: Some("St".into()),
            hno: Some("999".into()),
            ..Default::default()
        };
        let erl = Erl { civic, ..Default::default() };
        assert_eq!(validate_entry(&erl, None), Ok(()));
        let msag = MsagValidator::parse("community,street,low,high,parity\nREDMOND,MAIN ST,1,99,both\n", "m").unwrap();
        let reasons = validate_entry(&erl, Some(&msag)).unwrap_err();
        assert!(reasons.iter().any(|r| r.contains("999")), "{reasons:?}");
        assert!(validate_entry(&Erl::default(), Some(&msag)).is_err());
    }
}
