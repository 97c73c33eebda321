//! Where an emergency caller is, in one order (issue 3 §6, RFC 6442 §3; docs/location.md): the
//! caller's own PIDF-LO (kept as sent), else the Location Information Service by the device's
//! addresses — the wiremap, then what the device last obtained over HELD — else the caller's
//! user-entered location while the device is on the network it was entered from, else the site's
//! ERL, else the policy's default ERL, else nothing (the call goes to the ECRC). Measured beats
//! entered: a device on a mapped network is located by the wiremap whatever its user entered.
//! When sosdesk found the ERL itself, it builds the PIDF-LO that goes to the PSAP.
//!
//! No SIP here: the caller's side (routing) takes the PIDF-LO and the addresses out of the
//! INVITE; this module only decides.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::pidf::{build_pidf_lo, parse_pidf_lo, PidfLoInput};
use super::sitemap::SharedSiteMaps;
use super::user_entered::{Found, UserLocationBook, STALE_NOTE, VERIFY_NOTE};
use super::{DeviceAttachment, Erl, LastKnownLocation, LocationSnapshot, LocationSource, Locator};

/// Where a device's location is looked up when a call brings no PIDF-LO of its own.
#[derive(Clone, Default)]
pub struct Locators {
    /// The wiremap index of the Location Information Service.
    pub wiremap: Option<Arc<dyn Locator>>,
    /// What each device last obtained over HELD.
    pub held: Option<Arc<dyn LastKnownLocation>>,
    /// What users entered for their calls off the mapped network.
    pub user: Option<UserLocationBook>,
    /// The site maps a geodetic location is drawn on (`location::sitemap`).
    pub site_maps: Option<SharedSiteMaps>,
}

/// What the call shows of where it comes from.
pub struct CallerSide<'a> {
    /// The PIDF-LO of the caller's INVITE (the one its `Geolocation` references).
    pub pidf: Option<&'a Bytes>,
    /// The device's addresses, most telling first (SDP connection address, Contact, Via, source).
    pub device_ips: &'a [IpAddr],
    /// Problems already found in the INVITE's body; they go with the location to the desk.
    pub warnings: Vec<String>,
    /// The ERL of the caller's site (by subnet), and the policy's default.
    pub site_erl: Option<&'a Erl>,
    pub default_erl: Option<&'a Erl>,
    /// The PIDF-LO's entity when sosdesk builds it (`sip:<caller>@<core>`).
    pub entity: &'a str,
    /// The caller as its user-entered location is kept (`user_entered::owner_key` of the
    /// caller's number or user part); empty when the call does not say.
    pub owner: &'a str,
}

/// The location of a call and the PIDF-LO sent with it (none when there is no location).
pub struct Resolved {
    pub location: LocationSnapshot,
    pub pidf: Option<Bytes>,
}

/// Locate a call, in the order above. `now` stamps a PIDF-LO that sosdesk builds.
pub fn resolve(caller: CallerSide<'_>, locators: &Locators, now: DateTime<Utc>) -> Resolved {
    let CallerSide { pidf, device_ips, mut warnings, site_erl, default_erl, entity, owner } = caller;
    if let Some(raw) = pidf {
        match parse_pidf_lo(raw) {
            Ok(mut location) => {
                location.warnings.splice(0..0, warnings);
                // The point on the smallest site map that has it, for the desk to draw.
                location.site_map = match (&location.geo, &locators.site_maps) {
                    (Some(g), Some(maps)) => maps.place(g),
                    _ => None,
                };
                return Resolved { location, pidf: Some(raw.clone()) };
            }
            Err(e) => warnings.push(format!("caller's PIDF-LO not usable: {e}")),
        }
    }
    let location = locate_device(device_ips, locators, &mut warnings)
        .or_else(|| user_entered(owner, device_ips, locators, &mut warnings))
        .unwrap_or_else(|| {
            let (erl, method) = match (site_erl, default_erl) {
                (Some(e), _) => (Some(e.clone()), Some("Wiremap")),
                (None, Some(e)) => (Some(e.clone()), Some("Manual")),
                (None, None) => (None, None),
            };
            LocationSnapshot {
                source: if erl.is_some() { LocationSource::SiteDefault } else { LocationSource::None },
                erl,
                geo: None,
                site_map: None,
                method: method.map(str::to_string),
                warnings,
            }
        });
    let pidf = location.erl.as_ref().map(|erl| {
        Bytes::from(build_pidf_lo(&PidfLoInput {
            entity,
            device_id: None,
            erl,
            geo: None,
            method: location.method.as_deref().unwrap_or("Manual"),
            provided_by: None,
            timestamp: now,
        }))
    });
    Resolved { location, pidf }
}

/// The caller's user-entered location, when the device is still on the network it was entered
/// from; a stale one is only said (the call falls back as if there were none).
fn user_entered(
    owner: &str,
    ips: &[IpAddr],
    locators: &Locators,
    warnings: &mut Vec<String>,
) -> Option<LocationSnapshot> {
    let book = locators.user.as_ref().filter(|_| !owner.is_empty())?;
    match book.lookup(owner, ips)? {
        Found::Current(entry) => {
            tracing::debug!(owner, "caller located by its user-entered location");
            let mut notes = vec![VERIFY_NOTE.to_string()];
            notes.append(warnings);
            Some(LocationSnapshot {
                source: LocationSource::Manual,
                erl: Some(entry.erl),
                site_map: None,
                geo: None,
                // RFC 4119 §2.2.3 / IANA Method Tokens: "Manual" — entered by hand.
                method: Some("Manual".into()),
                warnings: notes,
            })
        }
        Found::Stale(entry, why) => {
            warnings.push(format!(
                "{STALE_NOTE}: {why}; not used until it is confirmed again (entered {} by {})",
                entry.confirmed_at.format("%Y-%m-%d %H:%M UTC"),
                entry.entered_by
            ));
            None
        }
    }
}

/// The Location Information Service's answer for the device's addresses: the wiremap first
/// (every address), then the HELD cache (every address).
fn locate_device(ips: &[IpAddr], locators: &Locators, warnings: &mut Vec<String>) -> Option<LocationSnapshot> {
    let snapshot = |source, erl: Arc<Erl>, warnings: &mut Vec<String>| LocationSnapshot {
        source,
        site_map: None,
        erl: Some((*erl).clone()),
        geo: None,
        method: Some("Wiremap".into()),
        warnings: std::mem::take(warnings),
    };
    let device = |ip: &IpAddr| DeviceAttachment { ip: Some(*ip), ..Default::default() };
    if let Some(wiremap) = &locators.wiremap {
        for ip in ips {
            if let Some((erl, matched)) = wiremap.locate(&device(ip)) {
                tracing::debug!(%ip, ?matched, "device located by the wiremap");
                return Some(snapshot(LocationSource::Wiremap, erl, warnings));
            }
        }
    }
    if let Some(held) = &locators.held {
        for ip in ips {
            if let Some(erl) = held.last_known(&device(ip)) {
                tracing::debug!(%ip, "device located by its last HELD answer");
                return Some(snapshot(LocationSource::HeldCached, erl, warnings));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::sitemap::{Bounds, SiteMap, SiteMaps};
    use crate::location::GeoPoint;

    fn caller(pidf: Option<&Bytes>) -> CallerSide<'_> {
        CallerSide {
            pidf,
            device_ips: &[],
            warnings: Vec::new(),
            site_erl: None,
            default_erl: None,
            entity: "sip:caller@core",
            owner: "",
        }
    }

    #[test]
    fn a_geodetic_pidf_lo_is_placed_on_a_site_map_that_has_the_point() {
        let geo = GeoPoint { latitude: 47.645, longitude: -122.13, altitude_m: None, radius_m: Some(30.0) };
        let pidf = Bytes::from(build_pidf_lo(&PidfLoInput {
            entity: "pres:caller@example.com",
            device_id: None,
            erl: &Erl::default(),
            geo: Some(geo),
            method: "GPS",
            provided_by: None,
            timestamp: Utc::now(),
        }));
        let maps = SharedSiteMaps::default();
        let locators = Locators { site_maps: Some(maps.clone()), ..Locators::default() };
        // No map yet: the location as sent, no pin.
        let r = resolve(caller(Some(&pidf)), &locators, Utc::now());
        assert_eq!((r.location.geo.is_some(), r.location.site_map), (true, None));

        let campus = Bounds::new(47.65, 47.64, -122.14, -122.12).unwrap();
        maps.replace(SiteMaps::new(vec![SiteMap { name: "HQ".into(), plan: "a".repeat(64), bounds: campus }]));
        let pin = resolve(caller(Some(&pidf)), &locators, Utc::now()).location.site_map.expect("a pin");
        assert_eq!(pin.map, "HQ");
        assert!((pin.x - 0.5).abs() < 1e-9 && pin.radius_x.is_some_and(|r| r > 0.0), "{pin:?}");

        // A location without a point (here: none at all) gets no pin whatever the maps.
        assert_eq!(resolve(caller(None), &locators, Utc::now()).location.site_map, None);
    }
}
