//! A config file, any text: what `sosdesk check-config` accepts, `sosdesk serve` can start and
//! route with. Loading never panics; a config that loads (`Config::from_toml`, the check-config
//! path) gives the core what it needs at start-up without failing (the HELD host, the RTP range
//! and an address to advertise for it, as `server::Core::start` computes them), compiles into the
//! engine (`Engine::new`), and an emergency INVITE — each number of the policy of each site's
//! callers and of a caller in no site — goes out to one of the policy's routes, without a panic
//! as the routes time out, the ELIN window ends and the notifications are retried.
#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use sosdesk::clock::Now;
use sosdesk::config::Config;
use sosdesk::location::held::HeldState;
use sosdesk::location::{DeviceAttachment, Erl, Locator, MatchKind};
use sosdesk::policy::Policies;
use sosdesk::routing::{Engine, LocalEndpoint, Output};
use sosdesk::sip::parse::parse_datagram;
use sosdesk::sip::transaction::{Peer, Transport};

struct Nowhere;

impl Locator for Nowhere {
    fn locate(&self, _: &DeviceAttachment) -> Option<(Arc<Erl>, MatchKind)> {
        None
    }
}

/// The host the core writes in Via and Contact and serves HELD under, as `Core::start` takes
/// it: `sip.public_host`, else the IP of the address it listens on (IPv6 in brackets).
fn core_host(cfg: &Config) -> String {
    if let Some(h) = &cfg.sip.public_host {
        return h.clone();
    }
    match cfg.sip.udp.or(cfg.sip.tcp).map(|a| a.ip()).unwrap_or([127, 0, 0, 1].into()) {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// The address written into SDP for the RTP ports, as `server::rtp_ports` takes it.
fn rtp_advertised(cfg: &Config) -> IpAddr {
    let bind = cfg.media.bind.or(cfg.sip.udp.or(cfg.sip.tcp).map(|a| a.ip())).unwrap_or([127, 0, 0, 1].into());
    let public = cfg.sip.public_host.as_deref().and_then(|h| h.trim_matches(['[', ']']).parse().ok());
    cfg.media.address.or(public).unwrap_or(bind)
}

fn invite(to: &str, from: SocketAddr, n: usize) -> sosdesk::sip::Message {
    let ip = from.ip();
    let host = if ip.is_ipv6() { format!("[{ip}]") } else { ip.to_string() };
    let sdp = format!(
        "v=0\r\no=- 1 1 IN {} {ip}\r\ns=-\r\nc=IN {} {ip}\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n",
        if ip.is_ipv6() { "IP6" } else { "IP4" },
        if ip.is_ipv6() { "IP6" } else { "IP4" },
    );
    let raw = format!(
        "INVITE sip:{to}@sosdesk SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{};branch=z9hG4bKc{n}\r\n\
From: \"Caller\" <sip:1001@{host}>;tag=ct{n}\r\nTo: <sip:{to}@sosdesk>\r\nCall-ID: call-{n}\r\nCSeq: 1 INVITE\r\n\
Max-Forwards: 70\r\nContact: <sip:1001@{host}:{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        from.port(),
        from.port(),
        sdp.len()
    );
    parse_datagram(raw.as_bytes()).expect("the test INVITE parses")
}

/// Where every name resolves in this target (it has no DNS server).
const RESOLVED: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 53)), 5060);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = Config::from_toml(text, Path::new("/etc/sosdesk/fuzz.toml")) else { return };

    // What `Core::start` derives from the config before it serves.
    let host = core_host(&cfg);
    if cfg.lis.held.is_some() {
        if let Err(e) = HeldState::new(Arc::new(Nowhere), &host) {
            panic!("check-config accepted a config whose HELD endpoint cannot start: {e}");
        }
    }
    if cfg.media.anchor {
        assert!(cfg.media.port_range().is_some(), "check-config accepted a bad media.rtp_ports");
        let advertised = rtp_advertised(&cfg);
        assert!(!advertised.is_unspecified(), "check-config accepted RTP advertised at {advertised}: serve refuses it");
    }

    let local = LocalEndpoint { host, udp: cfg.sip.udp, tcp: cfg.sip.tcp, tls: cfg.sip.tls };
    let t0 = Now::read();
    let mut engine = Engine::new(&cfg, local, t0);
    if cfg.media.anchor {
        engine.anchor_media();
    }
    for name in engine.names_to_resolve() {
        let peer = Peer { transport: name.default_transport(), addr: RESOLVED };
        engine.on_resolved(&name, Ok(vec![peer]), t0);
    }
    let policies = Policies::from_config(&cfg);

    // Callers: one in each site (the address of each subnet), and two in none.
    let mut callers: Vec<IpAddr> = cfg
        .sites
        .iter()
        .flat_map(|s| s.subnets.iter().filter_map(|n| n.parse::<IpNet>().ok()).map(|n| n.addr()))
        .collect();
    callers.extend(["203.0.113.7".parse::<IpAddr>().unwrap(), "2001:db8::7".parse().unwrap()]);
    let mut tried = HashSet::new();
    let mut n = 0;
    for ip in callers {
        let (policy, _) = policies.select(ip);
        // A route by name goes where the I/O shell's DNS would have said (`RESOLVED`).
        let routes: Vec<SocketAddr> = policy
            .routes
            .iter()
            .chain(&policy.no_location_routes)
            .map(|&r| policies.routes[r].target().literal().map_or(RESOLVED, |p| p.addr))
            .collect();
        let numbers: Vec<String> = policy
            .numbers
            .iter()
            .flat_map(|num| std::iter::once(&num.dial_string).chain(&num.masks))
            .cloned()
            .collect();
        for number in numbers {
            if !tried.insert((policy.name.clone(), number.clone())) || n >= 24 {
                continue;
            }
            n += 1;
            let from = SocketAddr::new(ip, 5062);
            for _ in 0..engine.rtp_ports_wanted() {
                let s = UdpSocket::bind("127.0.0.1:0").expect("a loopback UDP port");
                let a = s.local_addr().unwrap();
                engine.add_rtp_port(s, a);
            }
            engine.handle_message(invite(&number, from, n), Peer { transport: Transport::Udp, addr: from }, t0);
            let mut routed = false;
            while let Some(o) = engine.poll_output() {
                if let Output::Transmit(t) = o {
                    let m = parse_datagram(&t.bytes).expect("sosdesk sends valid SIP");
                    if m.is_request() && m.method() == "INVITE" && routes.contains(&t.peer.addr) {
                        assert_ne!(t.peer.addr.port(), 0, "check-config accepted a route to port 0");
                        routed = true;
                    }
                }
            }
            assert!(routed, "policy {:?}: an emergency call to {number} from {ip} was not routed", policy.name);
        }
    }
    // Then every timer: routes time out, the ELIN window ends, notifications are retried.
    let waits = [
        Duration::from_millis(cfg.routing.route_timeout_ms),
        Duration::from_millis(cfg.notification.attempt_timeout_ms),
        Duration::from_secs(cfg.notification.retry_for_s),
        Duration::from_secs_f64(cfg.routing.elin_callback_minutes * 60.0),
    ];
    let mut now = t0;
    for w in waits {
        for _ in 0..4 {
            now = now + w + Duration::from_millis(1);
            engine.handle_timeout(now);
            while engine.poll_output().is_some() {}
        }
    }
});
