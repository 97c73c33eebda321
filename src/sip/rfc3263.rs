//! Locating SIP servers (RFC 3263), the parts that need no network: what a configured target
//! names (`host`, `host:port`, a `sip:`/`sips:` URI), which transports and SRV names its NAPTR
//! records lead to (§4.1), the SRV queries to make without NAPTR, and the order of SRV targets
//! (RFC 2782: priority, then weighted random). `crate::dns` asks the questions.

use std::net::{IpAddr, SocketAddr};

use super::transaction::{Peer, Transport};
use super::Uri;

/// A host as configured: an address, or a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Where a route, a callback or a notification URI points, as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SipTarget {
    pub host: Host,
    pub port: Option<u16>,
    /// Fixed by a `transport=` parameter, `sips:`, or the route's `transport` key; else chosen
    /// by DNS (NAPTR) or the defaults (§4.1).
    pub transport: Option<Transport>,
    /// `sips:`: TLS on every hop (RFC 5630), and only `SIPS+D2T` / `_sips._tcp` are looked up.
    pub sips: bool,
}

impl SipTarget {
    /// `192.0.2.4:5060`, `[2001:db8::4]:5061`, `sbc.example`, `sbc.example:5061`,
    /// `sip:sbc.example;transport=tcp`, `sips:sbc.example`.
    pub fn parse(s: &str) -> Result<SipTarget, String> {
        let s = s.trim();
        if let Ok(a) = s.parse::<SocketAddr>() {
            // Port 0 is nowhere to send to (the config fuzz target found a route to it accepted).
            if a.port() == 0 {
                return Err(format!("{s:?}: port 0"));
            }
            return Ok(SipTarget { host: Host::Ip(a.ip()), port: Some(a.port()), transport: None, sips: false });
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("sip:") || lower.starts_with("sips:") {
            super::target::check_bare_uri(s)?;
            let u = Uri::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
            let sips = u.scheme.eq_ignore_ascii_case("sips");
            let transport = match u.param("transport").map(|t| t.to_ascii_lowercase()) {
                None => sips.then_some(Transport::Tls),
                Some(t) if t == "udp" && !sips => Some(Transport::Udp),
                Some(t) if t == "tcp" => Some(if sips { Transport::Tls } else { Transport::Tcp }),
                Some(t) if t == "tls" => Some(Transport::Tls),
                Some(t) => return Err(format!("{s:?}: transport {t:?} is not udp, tcp or tls")),
            };
            let mut t = SipTarget::host_port(&u.host, u.port)?;
            t.transport = transport;
            t.sips = sips;
            return Ok(t);
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                (h, Some(p.parse::<u16>().map_err(|_| format!("{s:?}: the port is not a number from 1 to 65535"))?))
            }
            _ => (s, None),
        };
        SipTarget::host_port(host, port)
    }

    fn host_port(host: &str, port: Option<u16>) -> Result<SipTarget, String> {
        if port == Some(0) {
            return Err(format!("{host:?}: port 0"));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(SipTarget { host: Host::Ip(ip), port, transport: None, sips: false });
        }
        if !is_dns_name(bare) {
            return Err(format!("{host:?} is not an IP address or a DNS name"));
        }
        Ok(SipTarget {
            host: Host::Name(bare.trim_end_matches('.').to_ascii_lowercase()),
            port,
            transport: None,
            sips: false,
        })
    }

    /// The transport when DNS does not choose it (§4.1: UDP for `sip:`, TLS for `sips:`).
    pub fn default_transport(&self) -> Transport {
        self.transport.unwrap_or(if self.sips { Transport::Tls } else { Transport::Udp })
    }

    /// The default port of a transport (RFC 3261 §19.1.2).
    pub fn default_port(t: Transport) -> u16 {
        if t == Transport::Tls {
            5061
        } else {
            5060
        }
    }

    /// An IP literal: where to send, no DNS.
    pub fn literal(&self) -> Option<Peer> {
        let Host::Ip(ip) = self.host else { return None };
        let t = self.default_transport();
        Some(Peer { transport: t, addr: SocketAddr::new(ip, self.port.unwrap_or(Self::default_port(t))) })
    }

    /// The host as a URI writes it (IPv6 in brackets).
    pub fn host_str(&self) -> String {
        match &self.host {
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
            Host::Ip(ip) => ip.to_string(),
            Host::Name(n) => n.clone(),
        }
    }

    /// `host[:port]`, for the Request-URI of requests to this target.
    pub fn host_port_str(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host_str()),
            None => self.host_str(),
        }
    }
}

impl std::fmt::Display for SipTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", if self.sips { "sips" } else { "sip" }, self.host_port_str())?;
        match self.transport {
            Some(t) if !(self.sips && t == Transport::Tls) => {
                write!(f, ";transport={}", t.as_str().to_ascii_lowercase())
            }
            _ => Ok(()),
        }
    }
}

/// A DNS name as RFC 1035 §2.3.1 allows it (letters, digits, hyphens, dots; underscores too,
/// as SRV owner names use them).
fn is_dns_name(s: &str) -> bool {
    let s = s.trim_end_matches('.');
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && s.chars().any(|c| c.is_ascii_alphabetic())
}

/// A NAPTR record as it matters here (RFC 3403).
#[derive(Debug, Clone)]
pub struct Naptr {
    pub order: u16,
    pub preference: u16,
    pub flags: String,
    pub service: String,
    pub replacement: String,
}

/// §4.1: the NAPTR records whose service we speak, best first, as (transport, SRV name). For a
/// `sips:` target only `SIPS+D2T`; a fixed transport keeps only its own service.
pub fn naptr_choices(records: &[Naptr], target: &SipTarget) -> Vec<(Transport, String)> {
    let mut usable: Vec<&Naptr> = records
        .iter()
        .filter(|r| r.flags.eq_ignore_ascii_case("s") && !r.replacement.is_empty() && r.replacement != ".")
        .collect();
    usable.sort_by_key(|r| (r.order, r.preference));
    usable
        .into_iter()
        .filter_map(|r| {
            let t = match r.service.to_ascii_uppercase().as_str() {
                "SIP+D2U" if !target.sips => Transport::Udp,
                "SIP+D2T" if !target.sips => Transport::Tcp,
                "SIPS+D2T" => Transport::Tls,
                _ => return None,
            };
            if target.transport.is_some_and(|fixed| fixed != t) {
                return None;
            }
            Some((t, r.replacement.trim_end_matches('.').to_string()))
        })
        .collect()
}

/// §4.1 without NAPTR records (or §4.2 with a fixed transport): the SRV names to query, in
/// our order of preference: TLS, then TCP, then UDP (an emergency INVITE with a PIDF-LO is
/// larger than a UDP datagram should be, RFC 3261 §18.1.1).
pub fn srv_queries(domain: &str, target: &SipTarget) -> Vec<(Transport, String)> {
    let all = [
        (Transport::Tls, format!("_sips._tcp.{domain}")),
        (Transport::Tcp, format!("_sip._tcp.{domain}")),
        (Transport::Udp, format!("_sip._udp.{domain}")),
    ];
    all.into_iter()
        .filter(|(t, _)| match target.transport {
            Some(fixed) => *t == fixed,
            None => !target.sips || *t == Transport::Tls,
        })
        .collect()
}

/// An SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// RFC 2782's order: lowest priority first; within a priority, a weighted random draw, again
/// and again among those left (`draw(n)` returns 0..n). A target of "." means "not here".
pub fn srv_order(mut records: Vec<Srv>, mut draw: impl FnMut(u32) -> u32) -> Vec<Srv> {
    records.retain(|r| r.target != "." && !r.target.is_empty());
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut i = 0;
    while i < records.len() {
        let p = records[i].priority;
        let end = records[i..].iter().position(|r| r.priority != p).map_or(records.len(), |n| i + n);
        // Zero weights first, as RFC 2782 asks, so they get a small chance when others exist.
        let mut group: Vec<Srv> = records[i..end].to_vec();
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = if total == 0 {
                0
            } else {
                let roll = draw(total + 1);
                let mut running = 0;
                group
                    .iter()
                    .position(|r| {
                        running += u32::from(r.weight);
                        running >= roll
                    })
                    .unwrap_or(group.len() - 1)
            };
            out.push(group.remove(pick));
        }
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> SipTarget {
        SipTarget::parse(s).unwrap()
    }

    #[test]
    fn targets_as_an_admin_writes_them() {
        let a = t("192.0.2.4:5070");
        assert_eq!(
            (a.literal().unwrap().to_string(), a.host_port_str()),
            ("udp:192.0.2.4:5070".into(), "192.0.2.4:5070".into())
        );
        assert_eq!(t("[2001:db8::4]:5061").literal().unwrap().addr.to_string(), "[2001:db8::4]:5061");
        let n = t("SBC.Provider.example.");
        assert_eq!((n.host, n.port, n.transport), (Host::Name("sbc.provider.example".into()), None, None));
        assert_eq!(t("sbc.provider.example:5061").port, Some(5061));
        let s = t("sips:sbc.provider.example");
        assert_eq!((s.sips, s.transport, s.default_transport()), (true, Some(Transport::Tls), Transport::Tls));
        assert_eq!(t("sip:sbc.provider.example;transport=tcp").transport, Some(Transport::Tcp));
        assert_eq!(t("sip:192.0.2.9;transport=tls").literal().unwrap().to_string(), "tls:192.0.2.9:5061");
        assert_eq!(t("sips:192.0.2.9").literal().unwrap().to_string(), "tls:192.0.2.9:5061");
        assert_eq!(t("sips:sbc.provider.example:5062").to_string(), "sips:sbc.provider.example:5062");
        for bad in [
            "",
            "sbc..example",
            "-sbc.example",
            "sbc.example:0",
            "sbc.example:99999",
            "sip:sbc.example;transport=sctp",
            "sbc example",
            "sips:x.example;transport=udp",
            "1.2.3",
        ] {
            assert!(SipTarget::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn naptr(order: u16, pref: u16, service: &str, repl: &str) -> Naptr {
        Naptr { order, preference: pref, flags: "s".into(), service: service.into(), replacement: repl.into() }
    }

    #[test]
    fn naptr_records_are_taken_by_order_then_preference_and_only_for_services_we_speak() {
        let recs = vec![
            naptr(20, 10, "SIP+D2U", "_sip._udp.provider.example."),
            naptr(10, 20, "SIP+D2T", "_sip._tcp.provider.example."),
            naptr(10, 10, "SIPS+D2T", "_sips._tcp.provider.example."),
            naptr(5, 10, "SIP+D2S", "_sip._sctp.provider.example."),
            Naptr { flags: "u".into(), ..naptr(1, 1, "SIP+D2T", "x.example.") },
        ];
        let sip = t("provider.example");
        assert_eq!(
            naptr_choices(&recs, &sip),
            vec![
                (Transport::Tls, "_sips._tcp.provider.example".to_string()),
                (Transport::Tcp, "_sip._tcp.provider.example".to_string()),
                (Transport::Udp, "_sip._udp.provider.example".to_string()),
            ]
        );
        assert_eq!(naptr_choices(&recs, &t("sips:provider.example")).len(), 1);
        assert_eq!(naptr_choices(&recs, &t("sip:provider.example;transport=udp"))[0].0, Transport::Udp);
    }

    #[test]
    fn without_naptr_the_srv_queries_follow_the_scheme_and_a_fixed_transport() {
        let q = |s: &str| srv_queries("provider.example", &t(s)).into_iter().map(|(_, n)| n).collect::<Vec<_>>();
        assert_eq!(
            q("provider.example"),
            ["_sips._tcp.provider.example", "_sip._tcp.provider.example", "_sip._udp.provider.example"]
        );
        assert_eq!(q("sips:provider.example"), ["_sips._tcp.provider.example"]);
        assert_eq!(q("sip:provider.example;transport=udp"), ["_sip._udp.provider.example"]);
    }

    fn srv(priority: u16, weight: u16, target: &str) -> Srv {
        Srv { priority, weight, port: 5060, target: target.into() }
    }

    #[test]
    fn srv_targets_go_by_priority_and_weight_decides_within_one() {
        let recs = vec![srv(20, 0, "c"), srv(10, 10, "a"), srv(10, 90, "b"), srv(30, 0, ".")];
        let names = |draws: Vec<u32>| {
            let mut d = draws.into_iter();
            srv_order(recs.clone(), |_| d.next().unwrap_or(0)).into_iter().map(|r| r.target).collect::<Vec<_>>()
        };
        // A roll within a's 10 of 100 picks a, above it b; priority 20 always after; "." never.
        assert_eq!(names(vec![5, 1]), ["a", "b", "c"]);
        assert_eq!(names(vec![50, 1]), ["b", "a", "c"]);
        // Over many draws, b (weight 90) comes first about nine times in ten.
        let mut rng = 12345u32;
        let mut b_first = 0;
        for _ in 0..1000 {
            let order = srv_order(recs.clone(), |n| {
                rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (rng >> 8) % n
            });
            b_first += u32::from(order[0].target == "b");
        }
        assert!((850..=950).contains(&b_first), "{b_first}");
    }
}
