//! Switch-port discovery (issue 16) through the running core and a simulated switch: snmpsim
//! answering from a real Cisco Catalyst 3750's walk, with a phone learnt on one of its ports.
//! The wiremap maps two ports of that switch (by its LLDP chassis ID) to two rooms; the phone
//! says nothing of where it is plugged in, yet its HELD request (by MAC) and its emergency call
//! (by IP, through the switch's ARP table) get its port's room. The phone moves; the next poll
//! records the move and locates it by the new port. The switch goes silent: the status says
//! so, and the last table is kept.

use crate::support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use sosdesk::location::discovery::Discovery;
use support::lab::Lab;
use support::snmpsim::{cisco_3750_rows, Snmpsim};

/// The phone's MAC, and as BRIDGE-MIB indexes it (one arc per octet).
const PHONE_MAC: &str = "00-0D-4B-30-72-DF";
const PHONE_ARCS: &str = "0.13.75.48.114.223";

/// The 3750's walk, plus what the test needs on top (tests/fixtures/snmp/README.md): the LLDP
/// local system (the chassis ID is the switch's own bridge address from the walk), the phone in
/// the forwarding table on `bridge_port`, its IP 127.0.0.7 in the ARP table of VLAN 60, and an
/// LLDP-MED phone announcing itself on Fa3/0/16.
fn switch_rows(bridge_port: u32) -> Vec<String> {
    let mut rows = cisco_3750_rows();
    rows.extend([
        "1.0.8802.1.1.2.1.3.1.0|2|4".to_string(),
        "1.0.8802.1.1.2.1.3.2.0|4x|0016c7026e80".to_string(),
        "1.0.8802.1.1.2.1.3.3.0|4|Profiler3750".to_string(),
        format!("1.3.6.1.2.1.17.4.3.1.1.{PHONE_ARCS}|4x|000d4b3072df"),
        format!("1.3.6.1.2.1.17.4.3.1.2.{PHONE_ARCS}|2|{bridge_port}"),
        format!("1.3.6.1.2.1.17.4.3.1.3.{PHONE_ARCS}|2|3"),
        "1.3.6.1.2.1.4.22.1.2.60.127.0.0.7|4x|000d4b3072df".to_string(),
        "1.0.8802.1.1.2.1.4.1.1.4.0.126.1|2|4".to_string(),
        "1.0.8802.1.1.2.1.4.1.1.5.0.126.1|4x|000d4b3072e0".to_string(),
        "1.0.8802.1.1.2.1.4.1.1.9.0.126.1|4|SEP000D4B3072E0".to_string(),
    ]);
    rows
}

/// Bridge ports of the walk (dot1dBasePortIfIndex): 124 is ifIndex 11014 `Fa3/0/14`, 130 is
/// 11020 `Fa3/0/20`.
const ON_PORT_14: u32 = 124;
const ON_PORT_20: u32 = 130;

fn held_by_mac(lab: &Lab) -> String {
    let port = lab.core.as_ref().unwrap().held.expect("HELD is on in the lab").port();
    let resp = support::lab::post_held(
        port,
        &format!(
            r#"<locationRequest xmlns="urn:ietf:params:xml:ns:geopriv:held" responseTime="emergencyRouting">
  <locationType exact="false">civic</locationType>
  <device xmlns="urn:ietf:params:xml:ns:geopriv:held:id"><mac>{PHONE_MAC}</mac></device>
</locationRequest>"#
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    resp
}

fn poll(lab: &Lab, discovery: &Discovery) -> sosdesk::location::discovery::PollReport {
    lab.rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), discovery.poll_now()).await })
        .expect("a poll within 60 s")
        .expect("the discovery task runs")
}

#[test]
fn a_phone_on_a_simulated_switch_port_is_located_by_it_and_its_move_is_recorded() {
    let mut sim = Snmpsim::start(&switch_rows(ON_PORT_14), &[]);
    let mut lab = Lab::start_with(|c| {
        format!(
            "{c}\n[[switch]]\nname = \"hq-3750\"\naddress = \"127.0.0.1:{}\"\ncommunity = \"public\"\ninterval_min = 60\n",
            sim.port
        )
    });
    // The wiremap: two ports of the switch, by the chassis ID its LLDP announces.
    let csv = lab.dir.path().join("ports.csv");
    std::fs::write(
        &csv,
        "ChassisID,PortIDSubType,PortID,Description,Location,CompanyName,HouseNumber,HouseNumberSuffix,PreDirectional,StreetName,StreetSuffix,PostDirectional,City,State,PostalCode,Country\n\
00-16-C7-02-6E-80,,Fa3/0/14,Desk 314,Room 314,Litware,1234,,,163rd,Ave,NE,Redmond,WA,98052,US\n\
00-16-C7-02-6E-80,,Fa3/0/20,Desk 320,Room 320,Litware,1234,,,163rd,Ave,NE,Redmond,WA,98052,US\n",
    )
    .unwrap();
    let out = lab.cli_store(&["lis", "import", csv.to_str().unwrap(), "--kind", "ports"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let wiremap = lab.core.as_ref().unwrap().wiremap().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while wiremap.load().is_empty() {
        assert!(Instant::now() < deadline, "the core did not load the import");
        std::thread::sleep(Duration::from_millis(20));
    }
    let discovery = lab.core.as_ref().unwrap().discovery().expect("switches are configured").clone();

    // A poll: the switch answers, the phones are learnt where the switch has them.
    let report = poll(&lab, &discovery);
    let s = &report.switches[0];
    assert_eq!((s.name.as_str(), s.state, s.snmp), ("hq-3750", "ok", "v2c"), "{report:?}\n{}", sim.log());
    assert_eq!(s.chassis, ["00-16-C7-02-6E-80", "Profiler3750"]);
    // The walk's own uplink entry, the phone, and the LLDP-MED phone.
    assert_eq!(s.macs, 3, "{report:?}");
    let table = discovery.table().load();
    let phone = sosdesk::location::parse_mac(PHONE_MAC).unwrap();
    let place = &table.places(&phone)[0];
    assert_eq!((place.port.as_str(), place.if_index, place.switch.as_str()), ("Fa3/0/14", Some(11014), "hq-3750"));
    assert_eq!(table.mac_of("127.0.0.7".parse().unwrap()), Some(phone));

    // HELD by MAC: the port's room, though the phone named no switch or port.
    let answer = held_by_mac(&lab);
    assert!(answer.contains("<ca:LOC>Room 314</ca:LOC>"), "{answer}");

    // An emergency call from the phone's address (127.0.0.7: no site, no subnet in the
    // wiremap): the switch's ARP table gives its MAC, the MAC its port.
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("phone", "caller_hangs_up.xml", "127.0.0.7", &["-s", "911", "-set", "hold_ms", "50"]).wait().assert_ok();
    let p = provider.wait();
    p.assert_ok();
    let invite = p.received_request("INVITE");
    assert!(invite.contains("<ca:LOC>Room 314</ca:LOC>"), "{invite}");

    // The phone moves to Fa3/0/20; the switch's data changes under the running simulator.
    sim.write(&switch_rows(ON_PORT_20));
    let report = poll(&lab, &discovery);
    assert_eq!(report.moves.len(), 1, "{report:?}\n{}", sim.log());
    let m = &report.moves[0];
    assert_eq!(m.mac, phone);
    assert_eq!(
        (m.from.as_str(), m.to.as_str()),
        ("switch hq-3750 (00-16-C7-02-6E-80) port Fa3/0/14", "switch hq-3750 (00-16-C7-02-6E-80) port Fa3/0/20")
    );
    let answer = held_by_mac(&lab);
    assert!(answer.contains("<ca:LOC>Room 320</ca:LOC>"), "{answer}");

    // `sosdesk lis discover` polls the same switch on its own and shows each MAC's ERL.
    let out = lab.cli(&["lis", "discover", "--config", lab.config_path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = listed["macs"].as_array().unwrap().iter().find(|m| m["mac"] == PHONE_MAC).expect("the phone is listed");
    assert_eq!((row["port"].as_str(), row["erl"].as_str()), (Some("Fa3/0/20"), Some("Room 320")), "{listed:#}");
    let lldp = listed["macs"].as_array().unwrap().iter().find(|m| m["via"] == "lldp").expect("the LLDP-MED phone");
    assert_eq!((lldp["port"].as_str(), lldp["neighbour"].as_str()), (Some("Fa3/0/16"), Some("SEP000D4B3072E0")));

    // The switch goes silent: the poll fails, visibly; the phone stays where it was found.
    sim.stop();
    let report = poll(&lab, &discovery);
    let s = &report.switches[0];
    assert_eq!(s.state, "failing", "{report:?}");
    assert!(s.error.as_deref().is_some_and(|e| e.contains("timeout")), "{report:?}");
    assert!(s.last_success.is_some() && s.macs == 3);
    assert!(held_by_mac(&lab).contains("<ca:LOC>Room 320</ca:LOC>"));
    assert!(!format!("{report:?}").contains("public"), "the community never shows");
    // The API shows every desk and monitor the same.
    let mut api = std::net::TcpStream::connect(("127.0.0.1", lab.ports.api)).unwrap();
    let auth = sosdesk::api::encode_base64(b"desk1:lobby-desk-secret");
    write!(
        api,
        "GET /api/v1/lis/switches HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    api.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200") && raw.contains("\"state\":\"failing\""), "{raw}");
    assert!(!raw.contains("public"), "{raw}");

    // The move is in the audit log, once, and never the community.
    lab.stop();
    let out = lab.cli_store(&["audit", "export", "--csv"]);
    let csv = String::from_utf8_lossy(&out.stdout);
    let moved: Vec<&str> = csv.lines().filter(|l| l.contains(",device-moved,")).collect();
    assert_eq!(moved.len(), 1, "{csv}");
    assert!(moved[0].contains(PHONE_MAC) && moved[0].contains("port Fa3/0/20"), "{}", moved[0]);
    lab.assert_audit_verifies();
}

/// SNMP v3 (RFC 3414 USM, HMAC-SHA-256 of RFC 7860) against the simulator: the right user
/// reads the switch; a wrong password is refused, and the error names no secret.
#[test]
fn a_switch_is_polled_over_snmpv3_and_a_wrong_password_is_a_visible_failure() {
    use sosdesk::location::discovery::{poll_once, AuthProtocol, Credentials, SwitchTarget};
    let sim = Snmpsim::start(
        &switch_rows(ON_PORT_14),
        &["--v3-user=sosdesk", "--v3-auth-key=auth-pa55word", "--v3-auth-proto=SHA256"],
    );
    let target = |password: &str| SwitchTarget {
        name: "hq-3750".into(),
        address: format!("127.0.0.1:{}", sim.port),
        credentials: Credentials::V3 {
            user: "sosdesk".into(),
            auth: Some((AuthProtocol::Sha256, password.into())),
            privacy: None,
            // snmpsim serves a data file under the context named after it.
            context: "public".into(),
        },
        interval: Duration::from_secs(3600),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (discovery, report) = rt.block_on(poll_once(&[target("auth-pa55word"), target("wrong-pa55word")]));
    let (good, bad) = (&report.switches[0], &report.switches[1]);
    assert_eq!((good.state, good.snmp, good.macs), ("ok", "v3", 3), "{report:?}\n{}", sim.log());
    let phone = sosdesk::location::parse_mac(PHONE_MAC).unwrap();
    assert_eq!(discovery.table().load().places(&phone)[0].port, "Fa3/0/14");
    assert_eq!(bad.state, "failing", "{report:?}");
    let error = bad.error.clone().unwrap_or_default();
    assert!(!error.is_empty() && !error.contains("pa55"), "{error}");
}

/// SNMP v3 with privacy (RFC 3826 AES-128 over RFC 7860 HMAC-SHA-256) against net-snmp's
/// agent, which serves the simulated switch under a context as a Cisco serves its per-VLAN
/// bridge tables: the phone is located by its port through an encrypted session; a wrong
/// privacy password, or none, reads nothing and is a visible failure that names no secret.
#[test]
fn a_switch_is_polled_over_snmpv3_with_aes_privacy_through_net_snmp() {
    use sosdesk::location::discovery::{poll_once, AuthProtocol, Credentials, PrivProtocol, SwitchTarget};
    use support::snmpd::{self, Snmpd};
    let sim = Snmpsim::start(&switch_rows(ON_PORT_14), &[]);
    let agent = Snmpd::start_proxy_to(sim.port);
    let target = |privacy: Option<&str>| SwitchTarget {
        name: "hq-3750".into(),
        address: format!("127.0.0.1:{}", agent.port),
        credentials: Credentials::V3 {
            user: snmpd::USER.into(),
            auth: Some((AuthProtocol::Sha256, snmpd::AUTH_PASSWORD.into())),
            privacy: privacy.map(|p| (PrivProtocol::Aes128, p.to_string())),
            context: snmpd::CONTEXT.into(),
        },
        interval: Duration::from_secs(3600),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (discovery, report) = rt.block_on(poll_once(&[
        target(Some(snmpd::PRIV_PASSWORD)),
        target(Some("wrong-priv-pa55word")),
        target(None),
    ]));
    let good = &report.switches[0];
    assert_eq!((good.state, good.snmp, good.macs), ("ok", "v3", 3), "{report:?}\n{}", agent.log());
    let phone = sosdesk::location::parse_mac(PHONE_MAC).unwrap();
    assert_eq!(discovery.table().load().places(&phone)[0].port, "Fa3/0/14");
    for bad in &report.switches[1..] {
        assert_eq!(bad.state, "failing", "{report:?}");
        let error = bad.error.clone().unwrap_or_default();
        assert!(!error.is_empty() && !error.contains("pa55"), "{error}");
    }
}
