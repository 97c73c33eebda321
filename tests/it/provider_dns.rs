//! Routes given by name (RFC 3263, issue 13) against a real DNS server on loopback (dnsmasq):
//! NAPTR → SRV → A for the provider's domain, every SRV target of the route tried before the
//! next route, the answers cached (a call needs no query; the DNS server may go away), and a
//! name that does not resolve failing the route over at once.

use crate::support;

use sosdesk::events::CallEventKind;
use support::dnsmasq::{start_dns, DnsRecord};
use support::lab::{free_port, Lab};

/// The lab's primary route pointed at `address` instead of its IP literal, with no fixed
/// transport (so NAPTR may choose), and the DNS server the core asks.
fn primary_by_name(config: String, address: &str, dns_port: u16) -> String {
    let start = config.find("name = \"provider-primary\"").expect("the lab's primary route");
    let (head, tail) = config.split_at(start);
    let addr_line = tail.find("address = ").unwrap();
    let addr_end = addr_line + tail[addr_line..].find('\n').unwrap();
    let tail = format!("{}address = \"{address}\"{}", &tail[..addr_line], &tail[addr_end..]);
    let tail = tail.replacen("transport = \"udp\"\n", "", 1);
    format!("{head}{tail}").replacen("[store]", &format!("[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n\n[store]"), 1)
}

fn kinds(events: &[sosdesk::events::CallEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

#[test]
fn a_provider_found_by_naptr_and_srv_fails_over_between_its_servers_and_the_answer_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let (sbc1, sbc2) = (free_port(), free_port());
    let a = |name: &str, ip: [u8; 4]| DnsRecord::A { name: name.into(), ip: ip.into() };
    let records = [
        DnsRecord::Naptr {
            name: "provider.test".into(),
            order: 10,
            preference: 10,
            flags: "S".into(),
            service: "SIP+D2U".into(),
            regexp: String::new(),
            replacement: "_sip._udp.provider.test".into(),
        },
        DnsRecord::Srv {
            name: "_sip._udp.provider.test".into(),
            target: "sbc1.provider.test".into(),
            port: sbc1,
            priority: 10,
            weight: 0,
        },
        DnsRecord::Srv {
            name: "_sip._udp.provider.test".into(),
            target: "sbc2.provider.test".into(),
            port: sbc2,
            priority: 20,
            weight: 0,
        },
        a("sbc1.provider.test", [127, 0, 0, 1]),
        a("sbc2.provider.test", [127, 0, 0, 2]),
    ];
    let dns_port = free_port();
    let mut dns = start_dns(dir.path(), dns_port, &records, 300);
    let mut lab = Lab::start_with(|c| primary_by_name(c, "provider.test", dns_port));
    // Resolved while the core started: NAPTR, then the SRV it named, then each target's address.
    let asked = dns.queries();
    for (qtype, name) in [("NAPTR", "provider.test"), ("SRV", "_sip._udp.provider.test"), ("A", "sbc1.provider.test")] {
        assert!(asked.iter().any(|(t, n)| t == qtype && n == name), "{qtype} {name} not asked: {asked:?}");
    }

    // The first server (priority 10) is in trouble (503): the second (priority 20) of the same
    // route takes the call, before the lab's secondary route is ever tried.
    let first = lab.uas("sbc1", "provider_reject_503.xml", "127.0.0.1", sbc1, &[]);
    let second = lab.uas("sbc2", "provider_answer.xml", "127.0.0.2", sbc2, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911"]).wait().assert_ok();
    first.wait().assert_ok();
    second.wait().assert_ok();

    // What an admin checks before going live: how the config's names resolve now.
    let out = lab.cli(&["resolve", "--config", lab.config_path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.starts_with(&format!("sip:provider.test: udp:127.0.0.1:{sbc1}, udp:127.0.0.2:{sbc2} (for ")),
        "{text}"
    );

    // Cached: the DNS server goes away and the next call still reaches the provider, with no
    // query of its own.
    let asked_before = dns.queries().len();
    dns.stop();
    let again = lab.uas("sbc1-again", "provider_answer.xml", "127.0.0.1", sbc1, &[]);
    lab.uac("caller-2", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911"]).wait().assert_ok();
    again.wait().assert_ok();
    assert_eq!(dns.queries().len(), asked_before, "a call made no DNS query");

    lab.stop();
    let events = lab.audit_events();
    let first_call: Vec<_> = events.iter().filter(|e| e.call_id == events[0].call_id).cloned().collect();
    assert_eq!(kinds(&first_call), ["detected", "routed", "route-failed", "routed", "ringing", "answered", "ended"]);
    let routes: Vec<(String, String)> = first_call
        .iter()
        .filter(|e| e.kind.name() == "routed")
        .map(|e| e.route.as_ref().map(|r| (r.name.clone(), r.target.clone())).unwrap())
        .collect();
    assert_eq!(
        routes,
        [
            ("provider-primary".to_string(), format!("udp:127.0.0.1:{sbc1}")),
            ("provider-primary".to_string(), format!("udp:127.0.0.2:{sbc2}")),
        ]
    );
    lab.assert_audit_verifies();
}

#[test]
fn a_provider_name_that_does_not_resolve_fails_over_at_once_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let dns_port = free_port();
    // The DNS server knows nothing: NXDOMAIN for the provider's name.
    let _dns = start_dns(dir.path(), dns_port, &[], 300);
    let mut lab = Lab::start_with(|c| primary_by_name(c, "sips:missing.provider.test", dns_port));
    let secondary = lab.uas("secondary", "provider_answer.xml", "127.0.0.1", lab.ports.secondary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &["-s", "911"]).wait().assert_ok();
    secondary.wait().assert_ok();
    lab.stop();
    let events = lab.audit_events();
    assert_eq!(kinds(&events)[..3], ["detected", "route-failed", "routed"]);
    let CallEventKind::RouteFailed { reason } = &events[1].kind else { unreachable!() };
    assert!(reason.starts_with("route provider-primary: sips:missing.provider.test did not resolve"), "{reason}");
    assert_eq!(events[2].route.as_ref().unwrap().name, "provider-secondary");
    let out = lab.cli(&["resolve", "--config", lab.config_path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.starts_with("sips:missing.provider.test: FAILED after "), "{text}");
}
