//! Emergency calls through the real core, with sipp as caller, provider and ELIN gateway.
//! Each test checks what crossed the wire (sipp's message trace), what was broadcast to desks,
//! and what the audit log holds (through the `sosdesk` CLI), and that the audit chain verifies.

use crate::support;

use sosdesk::events::{CallEventKind, RouteKind};
use sosdesk::location::LocationSource;
use support::lab::{header_of, pidf_part, Lab, SippRun};
use support::xmllint::validate_pidf_lo;

const HOLD: &[&str] = &["-set", "hold_ms", "100"];

fn args<'a>(a: &[&'a str]) -> Vec<&'a str> {
    let mut v = HOLD.to_vec();
    v.extend_from_slice(a);
    v
}

fn kinds(events: &[sosdesk::events::CallEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

#[test]
fn call_911_without_caller_location_carries_the_site_erl_as_valid_pidf_lo() {
    let mut lab = Lab::start();
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    let caller = lab.uac(
        "caller",
        "caller_hangs_up.xml",
        "127.0.0.1",
        &args(&["-s", "911", "-set", "name", "Alice Example", "-set", "from_user", "1001"]),
    );
    caller.wait().assert_ok();
    let p = provider.wait();
    p.assert_ok();

    let invite = p.received_request("INVITE");
    assert!(
        invite.starts_with(&format!("INVITE sip:911@127.0.0.1:{};user=phone SIP/2.0\r\n", lab.ports.primary)),
        "{invite}"
    );
    // RFC 6442: location by value, referenced by cid, routing allowed.
    let geo = header_of(&invite, "Geolocation").expect("Geolocation header");
    let cid = geo.trim_start_matches("<cid:").trim_end_matches('>');
    assert!(invite.contains(&format!("Content-ID: <{cid}>")), "Geolocation cid must name the PIDF-LO part");
    assert_eq!(header_of(&invite, "Geolocation-Routing").as_deref(), Some("yes"));
    assert!(header_of(&invite, "Content-Type").unwrap().starts_with("multipart/mixed;boundary="));
    // Callback number in P-Asserted-Identity; the display name carried along.
    assert_eq!(header_of(&invite, "P-Asserted-Identity").unwrap(), "\"Alice Example\" <sip:1001@127.0.0.1;user=phone>");
    assert_eq!(header_of(&invite, "Priority").as_deref(), Some("emergency"));
    // The SDP offer went through with the location.
    assert!(invite.contains("Content-Type: application/sdp\r\n\r\nv=0"), "{invite}");

    let pidf = pidf_part(&invite);
    validate_pidf_lo(&pidf).unwrap_or_else(|e| panic!("generated PIDF-LO does not validate: {e}\n{pidf}"));
    for text in [
        "<ca:country>US</ca:country>",
        "<ca:RD>Microsoft Way</ca:RD>",
        "<ca:HNO>1</ca:HNO>",
        "<ca:FLR>2</ca:FLR>",
        "<ca:ROOM>210</ca:ROOM>",
        "<ca:A3>Redmond</ca:A3>",
    ] {
        assert!(pidf.contains(text), "PIDF-LO lacks {text}:\n{pidf}");
    }

    let broadcast = lab.broadcast_events();
    assert_eq!(kinds(&broadcast), ["detected", "routed", "ringing", "answered", "ended"]);
    lab.stop();
    let events = lab.audit_events();
    assert_eq!(kinds(&events), ["detected", "routed", "ringing", "answered", "ended"]);
    let first = &events[0];
    assert_eq!((first.dialed.as_str(), first.normalized.as_str(), first.test_call), ("911", "911", false));
    assert_eq!(first.caller.number, "1001");
    assert_eq!(first.caller.display_name.as_deref(), Some("Alice Example"));
    assert_eq!(first.location.source, LocationSource::SiteDefault);
    assert_eq!(first.location.erl.as_ref().unwrap().civic.room.as_deref(), Some("210"));
    assert_eq!(events[1].route.as_ref().unwrap().name, "provider-primary");
    assert!(matches!(&events[4].kind, CallEventKind::Ended { by, .. } if by == "caller"));
    lab.assert_audit_verifies();

    let out = lab.cli_store(&["history", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("history --json");
    assert_eq!(v[0]["dialed"], "911");
    assert_eq!(v[0]["caller_name"], "Alice Example");
    assert_eq!(v[0]["route"], "provider-primary");
    assert_eq!(v[0]["outcome"], "ended");
    assert!(v[0]["location"].as_str().unwrap().contains("Room 210"));
}

#[test]
fn caller_pidf_lo_is_forwarded_as_sent_and_preferred() {
    let mut lab = Lab::start();
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    let caller = lab.uac("caller", "caller_pidf.xml", "127.0.0.1", &args(&["-s", "911"]));
    let c = caller.wait();
    c.assert_ok();
    let p = provider.wait();
    p.assert_ok();
    let sent = c.sent().into_iter().find(|m| m.starts_with("INVITE ")).unwrap();
    let received = p.received_request("INVITE");
    // The caller's PIDF-LO bytes arrive unchanged (only the cid is sosdesk's own).
    assert_eq!(pidf_part(&received), pidf_part(&sent));
    assert_eq!(p.logged("invite.civic").as_deref(), Some("HNO:4 RD:Pidf STS:Lane FLR:7 ROOM:701 A3:Testville"));
    lab.stop();
    let events = lab.audit_events();
    assert_eq!(events[0].location.source, LocationSource::ClientPidfLo);
    let civic = &events[0].location.erl.as_ref().unwrap().civic;
    assert_eq!(
        (civic.hno.as_deref(), civic.flr.as_deref(), civic.room.as_deref()),
        (Some("4"), Some("7"), Some("701"))
    );
    lab.assert_audit_verifies();
}

#[test]
fn dial_mask_9911_goes_out_as_911() {
    let mut lab = Lab::start();
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &args(&["-s", "9911"])).wait().assert_ok();
    let p = provider.wait();
    p.assert_ok();
    assert_eq!(p.logged("invite.ruri"), Some(format!("sip:911@127.0.0.1:{};user=phone", lab.ports.primary)));
    lab.stop();
    let ev = &lab.audit_events()[0];
    assert_eq!((ev.dialed.as_str(), ev.normalized.as_str()), ("9911", "911"));
    lab.assert_audit_verifies();
}

#[test]
fn uk_999_and_112_from_the_london_site() {
    for (dialed, name) in [("999", "c999"), ("112", "c112")] {
        let mut lab = Lab::start();
        let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
        lab.uac(name, "caller_hangs_up.xml", "127.0.0.3", &args(&["-s", dialed])).wait().assert_ok();
        let p = provider.wait();
        p.assert_ok();
        assert_eq!(p.logged("invite.ruri"), Some(format!("sip:999@127.0.0.1:{};user=phone", lab.ports.primary)));
        let pidf = pidf_part(&p.received_request("INVITE"));
        assert!(pidf.contains("<ca:country>GB</ca:country>") && pidf.contains("<ca:RD>Strand</ca:RD>"), "{pidf}");
        validate_pidf_lo(&pidf).unwrap();
        lab.stop();
        let ev = &lab.audit_events()[0];
        assert_eq!(
            (ev.policy.as_str(), ev.site.as_deref(), ev.normalized.as_str()),
            ("uk-london", Some("london"), "999")
        );
        lab.assert_audit_verifies();
    }
}

#[test]
fn test_call_933_is_routed_and_marked_as_a_test() {
    let mut lab = Lab::start();
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &args(&["-s", "933"])).wait().assert_ok();
    let p = provider.wait();
    p.assert_ok();
    assert_eq!(p.logged("invite.ruri"), Some(format!("sip:933@127.0.0.1:{};user=phone", lab.ports.primary)));
    lab.stop();
    let events = lab.audit_events();
    assert!(events.iter().all(|e| e.test_call), "every event of a 933 call is marked as a test");
    let out = lab.cli_store(&["history"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(test)"));
    lab.assert_audit_verifies();
}

#[test]
fn every_uri_form_of_an_emergency_number_is_recognised() {
    let mut lab = Lab::start();
    let sip = lab.ports.sip;
    let forms = [
        "tel:911".to_string(),
        "tel:9-1-1;phone-context=+1".to_string(),
        format!("sip:911@127.0.0.1:{sip};user=phone"),
        format!("sips:911@127.0.0.1:{sip}"),
        "urn:service:sos".to_string(),
        "urn:service:sos.fire".to_string(),
    ];
    for (i, ruri) in forms.iter().enumerate() {
        let provider = lab.uas(&format!("p{i}"), "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
        lab.uac(&format!("c{i}"), "caller_uri.xml", "127.0.0.1", &args(&["-set", "ruri", ruri])).wait().assert_ok();
        let p = provider.wait();
        p.assert_ok();
        assert_eq!(
            p.logged("invite.ruri"),
            Some(format!("sip:911@127.0.0.1:{};user=phone", lab.ports.primary)),
            "for {ruri}"
        );
    }
    lab.stop();
    let detected: Vec<String> =
        lab.audit_events().into_iter().filter(|e| e.kind.name() == "detected").map(|e| e.dialed).collect();
    assert_eq!(detected.len(), forms.len());
    lab.assert_audit_verifies();
}

#[test]
fn caller_with_no_location_goes_to_the_ecrc_route_without_geolocation() {
    let mut lab = Lab::start();
    // 127.0.0.2 is in no site: default policy, no ERL → the ECRC (secondary provider).
    let ecrc = lab.uas("ecrc", "provider_answer.xml", "127.0.0.1", lab.ports.secondary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.2", &args(&["-s", "911"])).wait().assert_ok();
    let p = ecrc.wait();
    p.assert_ok();
    let invite = p.received_request("INVITE");
    assert_eq!(header_of(&invite, "Geolocation"), None);
    assert_eq!(header_of(&invite, "Content-Type").as_deref(), Some("application/sdp"));
    lab.stop();
    let events = lab.audit_events();
    assert_eq!(events[0].location.source, LocationSource::None);
    assert_eq!(events[1].route.as_ref().unwrap().name, "provider-secondary");
    lab.assert_audit_verifies();
}

#[test]
fn non_emergency_call_gets_404_and_is_counted_in_a_refusal_record() {
    let mut lab = Lab::start();
    let c = lab.uac("caller", "caller_expect_failure.xml", "127.0.0.1", &["-s", "4255550123"]).wait();
    c.assert_ok();
    let resp = c.received().into_iter().find(|m| m.starts_with("SIP/2.0 4")).expect("a final response");
    assert!(resp.starts_with("SIP/2.0 404 Not Found\r\n"), "{resp}");
    assert!(resp.contains("Warning: 399 sosdesk \"not an emergency number"), "{resp}");
    lab.stop();
    // One refusal record for the source, not a call: the history stays empty.
    let events = lab.audit_events();
    assert_eq!(kinds(&events), ["refused"]);
    let CallEventKind::Refused { source, count, reasons, samples, .. } = &events[0].kind else { unreachable!() };
    assert_eq!((source.as_str(), *count), ("127.0.0.1", 1));
    assert_eq!(reasons.get("INVITE 404 not an emergency number"), Some(&1), "{reasons:?}");
    assert!(samples[0].starts_with("INVITE sip:4255550123@"), "{samples:?}");
    let history = lab.cli_store(&["history", "--json"]);
    assert_eq!(String::from_utf8_lossy(&history.stdout).trim(), "[]");
    let rejections = lab.cli_store(&["rejections"]);
    let text = String::from_utf8_lossy(&rejections.stdout);
    assert!(text.contains("127.0.0.1") && text.contains("1 × INVITE 404 not an emergency number"), "{text}");
    lab.assert_audit_verifies();
}

#[test]
fn failover_when_the_primary_returns_503() {
    let mut lab = Lab::start();
    let primary = lab.uas("primary", "provider_reject_503.xml", "127.0.0.1", lab.ports.primary, &[]);
    let secondary = lab.uas("secondary", "provider_answer.xml", "127.0.0.1", lab.ports.secondary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &args(&["-s", "911"])).wait().assert_ok();
    let p1 = primary.wait();
    p1.assert_ok();
    // The transaction ACKed the 503 (RFC 3261 §17.1.1.3).
    assert!(p1.received().iter().any(|m| m.starts_with("ACK ")), "503 must be ACKed");
    let p2 = secondary.wait();
    p2.assert_ok();
    validate_pidf_lo(&pidf_part(&p2.received_request("INVITE"))).unwrap();
    lab.stop();
    let events = lab.audit_events();
    assert_eq!(kinds(&events), ["detected", "routed", "route-failed", "routed", "ringing", "answered", "ended"]);
    assert!(matches!(&events[2].kind, CallEventKind::RouteFailed { reason } if reason.starts_with("503")));
    assert_eq!(events[3].route.as_ref().unwrap().name, "provider-secondary");
    assert_eq!(events[3].route.as_ref().unwrap().attempt, 1);
    lab.assert_audit_verifies();
}

#[test]
fn failover_when_the_primary_never_answers() {
    let mut lab = Lab::start_with(|c| c.replace("route_timeout_ms = 2000", "route_timeout_ms = 300"));
    let primary = lab.uas("primary", "provider_silent.xml", "127.0.0.1", lab.ports.primary, &[]);
    let secondary = lab.uas("secondary", "provider_answer.xml", "127.0.0.1", lab.ports.secondary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &args(&["-s", "911"])).wait().assert_ok();
    secondary.wait().assert_ok();
    let p1 = primary.kill();
    assert!(p1.received().iter().any(|m| m.starts_with("INVITE ")), "the primary was tried first");
    lab.stop();
    let events = lab.audit_events();
    assert_eq!(kinds(&events)[..4], ["detected", "routed", "route-failed", "routed"]);
    assert!(
        matches!(&events[2].kind, CallEventKind::RouteFailed { reason } if reason == "no response within 300 ms"),
        "{:?}",
        events[2].kind
    );
    lab.assert_audit_verifies();
}

#[test]
fn every_route_failing_gives_the_caller_503_and_is_audited() {
    // No retry window: the caller gets 503 as soon as every route has failed once.
    let mut lab = Lab::start_with(|c| c.replace("retry_for_s = 60", "retry_for_s = 0"));
    let primary = lab.uas("primary", "provider_reject_503.xml", "127.0.0.1", lab.ports.primary, &[]);
    let secondary = lab.uas("secondary", "provider_reject_503.xml", "127.0.0.1", lab.ports.secondary, &[]);
    let c = lab.uac("caller", "caller_expect_failure.xml", "127.0.0.1", &["-s", "911"]).wait();
    c.assert_ok();
    assert!(c.received().iter().any(|m| m.starts_with("SIP/2.0 503 ")));
    primary.wait().assert_ok();
    secondary.wait().assert_ok();
    lab.stop();
    let events = lab.audit_events();
    assert_eq!(kinds(&events), ["detected", "routed", "route-failed", "routed", "route-failed", "failed"]);
    lab.assert_audit_verifies();
}

/// The status codes of the responses a sipp caller received, in order.
fn statuses(run: &support::lab::SippRun) -> Vec<u16> {
    run.received().iter().filter_map(|m| m.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()).collect()
}

#[test]
fn a_route_that_comes_back_while_every_route_is_retried_carries_the_call() {
    // Round 1: the primary answers 503, the secondary is not there (no answer in 500 ms).
    let mut lab = Lab::start_with(|c| {
        c.replace("route_timeout_ms = 2000", "route_timeout_ms = 500").replace("retry_for_s = 60", "retry_for_s = 30")
    });
    let rejecting = lab.uas("primary-503", "provider_reject_503.xml", "127.0.0.1", lab.ports.primary, &[]);
    let caller = lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &args(&["-s", "911"]));
    let mut seen = Vec::new();
    let retrying = lab.wait_for(&mut seen, "retrying", |e| e.kind.name() == "retrying");
    assert_eq!(retrying.kind, CallEventKind::Retrying { round: 2, next_in_ms: 1000 });
    rejecting.wait().assert_ok();
    // The primary is back (a new provider process on its port) for a later round.
    let answering = lab.uas("primary", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    let c = caller.wait();
    c.assert_ok();
    let p = answering.wait();
    p.assert_ok();
    validate_pidf_lo(&pidf_part(&p.received_request("INVITE"))).unwrap();
    // The caller was held with one 182 Queued, then got the route's 180 and 200: no 503.
    let st = statuses(&c);
    assert_eq!(st.iter().filter(|s| **s == 182).count(), 1, "{st:?}");
    assert!(st.ends_with(&[180, 200]) || st.ends_with(&[180, 200, 200]), "{st:?}");
    assert!(!st.contains(&503), "{st:?}");
    lab.stop();
    let events = lab.audit_events();
    let k = kinds(&events);
    assert_eq!(k[..6], ["detected", "routed", "route-failed", "routed", "route-failed", "retrying"], "{k:?}");
    assert_eq!(k[k.len() - 4..], ["routed", "ringing", "answered", "ended"], "{k:?}");
    // Every attempt is audited, numbered on across rounds.
    let routed: Vec<_> = events.iter().filter(|e| e.kind.name() == "routed").collect();
    let attempts: Vec<u32> = routed.iter().map(|e| e.route.as_ref().unwrap().attempt).collect();
    assert_eq!(attempts, (0..attempts.len() as u32).collect::<Vec<_>>());
    let carried = routed.last().unwrap().route.as_ref().unwrap();
    assert_eq!(carried.name, "provider-primary");
    assert!(carried.attempt >= 2, "carried by a retry round: {carried:?}");
    lab.assert_audit_verifies();
    let out = lab.cli_store(&["history", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("history --json");
    assert_eq!(v[0]["outcome"], "ended");
    assert!(v[0]["answered_at"].is_string());
}

#[test]
fn routes_failing_for_the_whole_retry_window_give_the_caller_182_then_503() {
    // Rounds start at 0, 1 and 3 s (the 2 s backoff cut short to the window's end), so each
    // provider is called three times.
    let mut lab = Lab::start_with(|c| c.replace("retry_for_s = 60", "retry_for_s = 3"));
    let primary = lab.uas("primary", "provider_reject_503.xml", "127.0.0.1", lab.ports.primary, &["-m", "3"]);
    let secondary = lab.uas("secondary", "provider_reject_503.xml", "127.0.0.1", lab.ports.secondary, &["-m", "3"]);
    let started = std::time::Instant::now();
    let c = lab.uac("caller", "caller_expect_failure.xml", "127.0.0.1", &["-s", "911"]).wait();
    let took = started.elapsed();
    c.assert_ok();
    assert_eq!(c.logged("final.status").as_deref(), Some("503"));
    assert_eq!(statuses(&c).into_iter().filter(|s| *s != 100).collect::<Vec<_>>(), [182, 503]);
    assert!(took >= std::time::Duration::from_secs(3), "given up only when the window was over ({took:?})");
    for p in [primary.wait(), secondary.wait()] {
        p.assert_ok();
        assert_eq!(p.received().iter().filter(|m| m.starts_with("INVITE ")).count(), 3, "{}", p.name);
    }
    lab.stop();
    let events = lab.audit_events();
    let round = ["routed", "route-failed", "routed", "route-failed"];
    let mut expected = vec!["detected"];
    for r in 0..3 {
        expected.extend(round);
        expected.push(if r < 2 { "retrying" } else { "failed" });
    }
    assert_eq!(kinds(&events), expected);
    let waits: Vec<(u32, u64)> = events
        .iter()
        .filter_map(|e| match e.kind {
            CallEventKind::Retrying { round, next_in_ms } => Some((round, next_in_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(waits[0], (2, 1000));
    assert!(waits[1].0 == 3 && waits[1].1 < 2000, "the last wait is cut short: {waits:?}");
    assert!(
        matches!(&events.last().unwrap().kind, CallEventKind::Failed { status: 503, reason } if reason.contains("3 rounds")),
        "{:?}",
        events.last().unwrap().kind
    );
    lab.assert_audit_verifies();
    let out = lab.cli_store(&["history", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("history --json");
    assert_eq!(v[0]["outcome"], "failed");
}

#[test]
fn far_end_hangs_up_and_the_caller_gets_bye() {
    let mut lab = Lab::start();
    let provider = lab.uas("provider", "provider_answer_then_bye.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_receives_bye.xml", "127.0.0.1", &["-s", "911"]).wait().assert_ok();
    provider.wait().assert_ok();
    lab.stop();
    let events = lab.audit_events();
    assert!(matches!(&events.last().unwrap().kind, CallEventKind::Ended { by, .. } if by == "far-end"));
    lab.assert_audit_verifies();
}

#[test]
fn cancel_before_answer_reaches_the_provider() {
    let mut lab = Lab::start();
    let provider = lab.uas("provider", "provider_ringing_then_cancel.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_cancel.xml", "127.0.0.1", &["-s", "911"]).wait().assert_ok();
    let p = provider.wait();
    p.assert_ok();
    assert!(p.received().iter().any(|m| m.starts_with("CANCEL ")));
    lab.stop();
    let events = lab.audit_events();
    assert_eq!(kinds(&events), ["detected", "routed", "ringing", "ended"]);
    assert!(matches!(&events[3].kind, CallEventKind::Ended { by, .. } if by == "cancel"));
    lab.assert_audit_verifies();
}

#[test]
fn re_invite_is_relayed_both_ways() {
    let mut lab = Lab::start();
    let provider = lab.uas("provider", "provider_reinvite.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_reinvite.xml", "127.0.0.1", &["-s", "911"]).wait().assert_ok();
    let p = provider.wait();
    p.assert_ok();
    let invites: Vec<_> = p.received().into_iter().filter(|m| m.starts_with("INVITE ")).collect();
    assert_eq!(invites.len(), 2, "initial INVITE and the relayed re-INVITE");
    assert!(header_of(&invites[1], "To").unwrap().contains("tag="), "the re-INVITE is inside the dialog");
    lab.stop();
    lab.assert_audit_verifies();
}

#[test]
fn a_call_over_tcp() {
    let mut lab = Lab::start();
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &args(&["-s", "911", "-t", "t1"])).wait().assert_ok();
    let p = provider.wait();
    p.assert_ok();
    validate_pidf_lo(&pidf_part(&p.received_request("INVITE"))).unwrap();
    lab.stop();
    let events = lab.audit_events();
    assert!(events[0].caller.source.starts_with("tcp:127.0.0.1:"), "{}", events[0].caller.source);
    lab.assert_audit_verifies();
}

/// A warehouse caller (127.0.0.4: the site routes through the ELIN gateway first), number 2002,
/// calls 911 with sipp's `extra(its port)`; returns that port (its Contact's) and the gateway's
/// run.
fn call_through_the_elin_gateway(lab: &Lab, extra: impl for<'a> Fn(&'a str) -> Vec<&'a str>) -> (u16, SippRun) {
    let gw = lab.uas("gw", "elin_gateway.xml", "127.0.0.1", lab.ports.elin, &[]);
    let caller_port = support::lab::free_port();
    let cp = caller_port.to_string();
    let mut a = args(&["-s", "911", "-set", "from_user", "2002"]);
    a.extend(extra(&cp));
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.4", &a).wait().assert_ok();
    let g = gw.wait();
    g.assert_ok();
    (caller_port, g)
}

#[test]
fn elin_gateway_gets_the_elin_and_a_callback_reaches_the_caller() {
    let mut lab = Lab::start();
    let (caller_port, g) = call_through_the_elin_gateway(&lab, |cp| vec!["-p", cp]);
    assert_eq!(g.logged("invite.from_user").as_deref(), Some("4255550199"), "the ELIN replaces the calling number");
    assert_eq!(g.logged("invite.pai_user").as_deref(), Some("4255550199"));

    // The PSAP calls the ELIN back: it reaches the original caller's address.
    let callee = lab.uas("callee", "callee_answer.xml", "127.0.0.4", caller_port, &[]);
    let gw_ip = "127.0.0.1";
    lab.uac("psap", "psap_callback.xml", gw_ip, &["-s", "4255550199"]).wait().assert_ok();
    let c = callee.wait();
    c.assert_ok();
    assert!(c.received_request("INVITE").starts_with(&format!("INVITE sip:2002@127.0.0.4:{caller_port} SIP/2.0")));
    lab.stop();
    let events = lab.audit_events();
    let cb = events.iter().find(|e| e.kind.name() == "callback").expect("callback event");
    assert!(matches!(&cb.kind, CallEventKind::Callback { elin, to_original: true, .. } if elin == "4255550199"));
    let routed = events.iter().find(|e| e.kind.name() == "routed").unwrap();
    assert_eq!(routed.route.as_ref().unwrap().kind, RouteKind::ElinGateway);
    assert_eq!(routed.route.as_ref().unwrap().presented_number, "4255550199");
    lab.assert_audit_verifies();
}

/// A caller over TCP (a PBX connects from an ephemeral port, and closes the connection when
/// its call is over) goes out through the ELIN gateway; the PSAP's callback opens a new
/// connection to the caller's Contact, not one to the closed connection's ephemeral port.
#[test]
fn an_elin_callback_reaches_a_tcp_caller_whose_connection_has_closed_at_its_contact() {
    let mut lab = Lab::start();
    let (caller_port, _) =
        call_through_the_elin_gateway(&lab, |cp| vec!["-set", "contact_port", cp, "-t", "tn", "-max_socket", "64"]);
    // sipp has exited: its connection is closed. sosdesk has heard so once its own end is
    // gone (it closes it after telling the engine).
    support::lab::wait_no_connection(lab.ports.sip, "127.0.0.4");

    let callee = lab.uas("callee", "callee_answer.xml", "127.0.0.4", caller_port, &["-t", "t1"]);
    lab.uac("psap", "psap_callback.xml", "127.0.0.1", &["-s", "4255550199"]).wait().assert_ok();
    let cb = callee.wait();
    cb.assert_ok();
    assert!(
        cb.received_request("INVITE").starts_with(&format!("INVITE sip:2002@127.0.0.4:{caller_port} SIP/2.0")),
        "{}",
        cb.received_request("INVITE")
    );
    assert!(cb.received_request("INVITE").contains("Via: SIP/2.0/TCP "), "{}", cb.received_request("INVITE"));
    lab.stop();
    let events = lab.audit_events();
    assert!(events.iter().any(|e| matches!(&e.kind, CallEventKind::Callback { to_original: true, .. })));
    lab.assert_audit_verifies();
}

#[test]
fn elin_callback_after_the_window_goes_to_the_fallback() {
    // A zero-minute window: the mapping is already expired when the callback comes.
    let mut lab = Lab::start_with(|c| c.replace("elin_callback_minutes = 180", "elin_callback_minutes = 0"));
    let gw = lab.uas("gw", "elin_gateway.xml", "127.0.0.1", lab.ports.elin, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.4", &args(&["-s", "911"])).wait().assert_ok();
    gw.wait().assert_ok();
    let desk = lab.uas("desk", "callee_answer.xml", "127.0.0.1", lab.ports.fallback, &[]);
    lab.uac("psap", "psap_callback.xml", "127.0.0.1", &["-s", "4255550199"]).wait().assert_ok();
    let d = desk.wait();
    d.assert_ok();
    assert!(d
        .received_request("INVITE")
        .starts_with(&format!("INVITE sip:security-desk@127.0.0.1:{} SIP/2.0", lab.ports.fallback)));
    lab.stop();
    let events = lab.audit_events();
    let cb = events.iter().find(|e| e.kind.name() == "callback").expect("callback event");
    assert!(matches!(&cb.kind, CallEventKind::Callback { to_original: false, .. }));
    lab.assert_audit_verifies();
}

/// The lab with digest credentials on the primary route (issue 13).
fn with_trunk_credentials(password: &str) -> impl FnOnce(String) -> String + '_ {
    move |c: String| {
        // The primary route's `domain` line (its port already moved by the lab).
        let marker = "     # host of the Request-URI and To\n";
        assert!(c.contains(marker), "the lab's primary route changed");
        c.replace(marker, &format!("\nusername = \"trunk1\"\npassword = \"{password}\"\n"))
    }
}

/// Issue 13: a provider that authenticates the trunk challenges the INVITE; sosdesk answers
/// at once with the route's digest credentials (next CSeq, same Call-ID) and the call goes
/// through on the same route.
#[test]
fn a_provider_that_challenges_the_invite_gets_the_routes_credentials() {
    let mut lab = Lab::start_with(with_trunk_credentials("trunk-secret"));
    let provider = lab.uas("provider", "provider_challenge.xml", "127.0.0.1", lab.ports.primary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &args(&["-s", "911"])).wait().assert_ok();
    let p = provider.wait();
    p.assert_ok();
    assert_eq!(p.logged("auth.valid").as_deref(), Some("1"), "the provider's digest check");
    assert_eq!(p.logged("auth.username").as_deref(), Some("trunk1"));
    assert_eq!(p.logged("auth.cseq").as_deref(), Some("2"));
    let invites: Vec<String> = p.received().into_iter().filter(|m| m.starts_with("INVITE ")).collect();
    assert_eq!(invites.len(), 2);
    let call_id = |m: &str| support::lab::header_of(m, "Call-ID");
    assert_eq!(call_id(&invites[0]), call_id(&invites[1]), "the same call, asked again");
    let auth = support::lab::header_of(&invites[1], "Authorization").unwrap();
    assert!(auth.contains("realm=\"provider.example\"") && auth.contains("qop=auth"), "{auth}");
    assert!(!auth.contains("trunk-secret"), "the password never goes on the wire: {auth}");
    // The ACK of the 200 carries the answered INVITE's CSeq (RFC 3261 §13.2.2.4), not 1.
    let acks: Vec<String> = p.received().into_iter().filter(|m| m.starts_with("ACK ")).collect();
    assert_eq!(acks.len(), 2, "the challenge's and the answer's: {acks:?}");
    assert!(acks[0].contains("\r\nCSeq: 1 ACK\r\n") && acks[1].contains("\r\nCSeq: 2 ACK\r\n"), "{acks:?}");
    lab.stop();
    let events = lab.audit_events();
    let k = kinds(&events);
    assert_eq!(k, ["detected", "routed", "ringing", "answered", "ended"], "one attempt, no failover: {k:?}");
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains("trunk-secret"), "no password in the audit");
}

/// Issue 13: a second challenge means the credentials are wrong: the route fails at once and
/// the call goes to the next route.
#[test]
fn a_second_challenge_fails_the_route_and_the_call_goes_to_the_next() {
    let mut lab = Lab::start_with(with_trunk_credentials("not-the-secret"));
    let provider = lab.uas("provider", "provider_challenge.xml", "127.0.0.1", lab.ports.primary, &[]);
    let secondary = lab.uas("secondary", "provider_answer.xml", "127.0.0.1", lab.ports.secondary, &[]);
    lab.uac("caller", "caller_hangs_up.xml", "127.0.0.1", &args(&["-s", "911"])).wait().assert_ok();
    let p = provider.wait();
    p.assert_ok();
    assert_eq!(p.logged("auth.valid").as_deref(), Some("0"));
    secondary.wait().assert_ok();
    lab.stop();
    let events = lab.audit_events();
    let failed: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            CallEventKind::RouteFailed { reason } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("401 Unauthorized again: the provider refused the route's credentials"), "{failed:?}");
    let k = kinds(&events);
    assert_eq!(k[k.len() - 3..], ["ringing", "answered", "ended"], "{k:?}");
}
