//! Issue 5 end to end: anchored emergency calls with real sipp signalling and real RTP.
//!
//! sipp is caller, provider and desk for SIP; each party's audio is a test socket (see
//! `support::rtp`) sending its own tone — caller 500 Hz, operator 1100 Hz, desk 1700 Hz — and
//! keeping what it hears, decoded. Who hears whom is then measured, not assumed.

use crate::support;

use std::time::Instant;

use sosdesk::events::{CallEvent, CallEventKind};
use sosdesk::media::wav::{hash_file, read_stereo};
use sosdesk::media::Codec;
use support::lab::Lab;
use support::rtp::{tone_level, Party};

const CALLER_HZ: f64 = 500.0;
const OPERATOR_HZ: f64 = 1100.0;
const DESK_HZ: f64 = 1700.0;

fn kinds(events: &[CallEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

/// The provider (PCMA only: the caller offered PCMU first, so sosdesk transcodes) and the
/// caller; returns once the call is answered, with its id.
struct Call {
    caller: support::lab::Sipp,
    provider: support::lab::Sipp,
    caller_media: Party,
    operator_media: Party,
    call_id: String,
}

/// The emergency operator: sipp answers on the primary route (PCMA only), the test socket
/// plays and hears its audio.
fn operator(lab: &Lab) -> (support::lab::Sipp, Party) {
    let media = Party::start(Some(OPERATOR_HZ), Codec::Pcma);
    let provider = lab.uas(
        "provider",
        "media_provider.xml",
        "127.0.0.1",
        lab.ports.primary,
        &["-set", "mport", &media.port.to_string(), "-set", "pt", "8", "-set", "codec", "PCMA"],
    );
    (provider, media)
}

fn place_call(lab: &mut Lab, seen: &mut Vec<CallEvent>, from_ip: &str, caller_sdp_ip: &str, hold_ms: u32) -> Call {
    place_call_with(lab, seen, "media_caller.xml", from_ip, caller_sdp_ip, hold_ms)
}

fn place_call_with(
    lab: &mut Lab,
    seen: &mut Vec<CallEvent>,
    scenario: &str,
    from_ip: &str,
    caller_sdp_ip: &str,
    hold_ms: u32,
) -> Call {
    let (provider, operator_media) = operator(lab);
    let caller_media = Party::start(Some(CALLER_HZ), Codec::Pcmu);
    let caller = lab.uac(
        "caller",
        scenario,
        from_ip,
        &[
            "-s",
            if from_ip == "127.0.0.3" { "999" } else { "911" },
            "-set",
            "mip",
            caller_sdp_ip,
            "-set",
            "mport",
            &caller_media.port.to_string(),
            "-set",
            "hold_ms",
            &hold_ms.to_string(),
        ],
    );
    let answered = lab.wait_for(seen, "answered", |e| e.kind == CallEventKind::Answered);
    Call { caller, provider, caller_media, operator_media, call_id: answered.call_id }
}

/// A sipp desk's arguments. `-auth_uri`: sipp's digest `uri` is host:port by default, and
/// sosdesk checks it is the Request-URI (RFC 2617 §3.2.2.5), as a real SIP client sends it.
fn desk_args<'a>(
    core: u16,
    call_id: &'a str,
    user: &'a str,
    pass: &'a str,
    port: &'a str,
    dir: &'a str,
    hold: &'a str,
) -> Vec<String> {
    [
        "-s",
        &format!("conf-{call_id}"),
        "-auth_uri",
        &format!("conf-{call_id}@127.0.0.1:{core}"),
        "-au",
        user,
        "-ap",
        pass,
        "-set",
        "mport",
        port,
        "-set",
        "dir",
        dir,
        "-set",
        "hold_ms",
        hold,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn sipp_args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_listening_desk_hears_caller_and_operator_and_nobody_hears_it() {
    let mut lab = Lab::start_anchored(|c| c);
    let mut seen = Vec::new();
    // The caller's SDP names a TEST-NET address it cannot be reached at (a phone behind NAT):
    // it hears anything only because sosdesk answers where its RTP really comes from.
    let call = place_call(&mut lab, &mut seen, "127.0.0.1", "192.0.2.99", 5000);

    // The lobby desk's account may only listen. It joins as every ordinary SIP client offers,
    // a=sendrecv (issue 13): it is answered a=sendonly (it only receives), and the tone its test
    // socket sends anyway must reach no one.
    let desk_media = Party::start(Some(DESK_HZ), Codec::Pcma);
    let port = desk_media.port.to_string();
    let listen = desk_args(lab.ports.sip, &call.call_id, "desk1", "lobby-desk-secret", &port, "sendrecv", "2500");
    let desk = lab.uac("desk", "desk_join.xml", "127.0.0.1", &sipp_args(&listen));
    let desk = desk.wait();
    desk.assert_ok();
    let joined = desk.received().into_iter().find(|m| m.starts_with("SIP/2.0 200") && m.contains(" INVITE\r\n"));
    let joined = joined.expect("the join's 200");
    let answer = support::lab::body_of(&joined);
    assert!(answer.contains("a=sendonly\r\n") && !answer.contains("sendrecv"), "{answer}");
    call.caller.wait().assert_ok();
    call.provider.wait().assert_ok();
    let (caller, operator, desk) = (call.caller_media.finish(), call.operator_media.finish(), desk_media.finish());

    let report = |h: &support::rtp::Heard| {
        format!(
            "sent {} got {} packets, levels {:.0}/{:.0}/{:.0}",
            h.sent,
            h.packets.len(),
            h.level(CALLER_HZ, None),
            h.level(OPERATOR_HZ, None),
            h.level(DESK_HZ, None)
        )
    };
    eprintln!("caller: {}\noperator: {}\ndesk: {}", report(&caller), report(&operator), report(&desk));
    assert!(operator.hears(CALLER_HZ), "operator hears the caller (PCMU → PCMA)");
    assert!(caller.hears(OPERATOR_HZ), "the caller behind NAT hears the operator");
    assert!(desk.hears(CALLER_HZ) && desk.hears(OPERATOR_HZ), "the desk hears both");
    assert!(operator.silent_on(DESK_HZ), "a listening desk is not heard: {}", operator.level(DESK_HZ, None));
    assert!(caller.silent_on(DESK_HZ), "a listening desk is not heard: {}", caller.level(DESK_HZ, None));

    lab.stop();
    let events = lab.audit_events();
    let k = kinds(&events);
    assert!(
        k.iter().position(|x| *x == "desk-joined") < k.iter().position(|x| *x == "desk-left")
            && k.last() == Some(&"recorded"),
        "{k:?}"
    );
    assert!(!events.iter().any(|e| matches!(&e.kind, CallEventKind::DeskJoinRefused { status: 403, .. })));
    assert!(events.iter().any(|e| matches!(&e.kind,
        CallEventKind::DeskJoined { desk, mode, auto: false } if desk == "Lobby desk" && mode == "listen")));

    // The recording: the caller on the left, the operator on the right, never the desk; its
    // hash is the file's.
    let Some(CallEventKind::Recorded { path, sha256, duration_ms }) = events.last().map(|e| e.kind.clone()) else {
        unreachable!()
    };
    assert_eq!(hash_file(path.as_ref()).unwrap(), sha256);
    assert!(duration_ms > 3000, "{duration_ms} ms recorded");
    let (left, right) = read_stereo(path.as_ref()).unwrap();
    let loudest = |s: &[i16], hz| s.chunks(1600).map(|c| tone_level(c, hz)).fold(0.0, f64::max);
    assert!(loudest(&left, CALLER_HZ) > 2000.0 && loudest(&left, OPERATOR_HZ) < 80.0);
    assert!(loudest(&right, OPERATOR_HZ) > 2000.0 && loudest(&right, CALLER_HZ) < 80.0);
    assert!(loudest(&left, DESK_HZ) < 80.0 && loudest(&right, DESK_HZ) < 80.0);
    lab.assert_audit_verifies();
}

#[test]
fn a_late_offer_call_gets_sosdesk_offer_and_its_answer_in_the_ack_carries_the_media() {
    let mut lab = Lab::start_anchored(|c| c);
    let mut seen = Vec::new();
    let call = place_call_with(&mut lab, &mut seen, "media_caller_late_offer.xml", "127.0.0.1", "127.0.0.1", 2000);
    let caller_run = call.caller.wait();
    caller_run.assert_ok();
    call.provider.wait().assert_ok();
    let (caller, operator) = (call.caller_media.finish(), call.operator_media.finish());
    assert!(operator.hears(CALLER_HZ) && caller.hears(OPERATOR_HZ), "media flows both ways after the ACK's answer");
    let ok = caller_run.received().into_iter().find(|m| m.starts_with("SIP/2.0 200") && m.contains("INVITE")).unwrap();
    let offer = support::lab::body_of(&ok);
    assert!(
        offer.contains("o=sosdesk ") && offer.contains("RTP/AVP 8 0 101"),
        "sosdesk's offer, the far end's law first:\n{offer}"
    );
}

/// sipp's own RTP engine as the caller (`rtp_stream`, a looped µ-law file): its audio reaches
/// the operator through the anchor and is in the recording's caller channel.
#[test]
fn a_caller_streaming_with_sipp_rtp_stream_is_heard_by_the_operator_and_recorded() {
    let mut lab = Lab::start_anchored(|c| c);
    let mut seen = Vec::new();
    // One second of the caller's tone: a whole number of cycles, so the loop has no seam.
    let tone: Vec<i16> =
        (0..8000).map(|i| (8000.0 * (std::f64::consts::TAU * CALLER_HZ * i as f64 / 8000.0).sin()) as i16).collect();
    let mut ulaw = Vec::new();
    Codec::Pcmu.encode_into(&tone, &mut ulaw);
    std::fs::write(lab.dir.path().join("caller_tone.ulaw"), ulaw).unwrap();
    let (provider, operator_media) = operator(&lab);
    let caller = lab.uac(
        "caller",
        "media_caller_stream.xml",
        "127.0.0.1",
        &["-s", "911", "-set", "name", "Stream Caller", "-set", "hold_ms", "3000"],
    );
    lab.wait_for(&mut seen, "answered", |e| e.kind == CallEventKind::Answered);
    caller.wait().assert_ok();
    provider.wait().assert_ok();
    let operator = operator_media.finish();
    assert!(
        operator.hears(CALLER_HZ),
        "sipp's streamed audio reaches the operator: {}",
        operator.level(CALLER_HZ, None)
    );

    lab.stop();
    let events = lab.audit_events();
    let Some(CallEventKind::Recorded { path, .. }) = events.last().map(|e| e.kind.clone()) else {
        panic!("no recording: {:?}", kinds(&events))
    };
    let (left, right) = read_stereo(path.as_ref()).unwrap();
    let loudest = |s: &[i16], hz| s.chunks(1600).map(|c| tone_level(c, hz)).fold(0.0, f64::max);
    assert!(loudest(&left, CALLER_HZ) > 2000.0, "the caller's stream is in the left channel");
    assert!(loudest(&right, OPERATOR_HZ) > 2000.0, "the operator is in the right channel");
    lab.assert_audit_verifies();
}

#[test]
fn an_anchored_re_invite_is_answered_by_sosdesk_and_never_reaches_the_operator() {
    let mut lab = Lab::start_anchored(|c| c);
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    let caller = lab.uac("caller", "caller_reinvite.xml", "127.0.0.1", &["-s", "911"]).wait();
    caller.assert_ok();
    let p = provider.wait();
    p.assert_ok();
    let invites = p.received().into_iter().filter(|m| m.starts_with("INVITE ")).count();
    assert_eq!(invites, 1, "each leg is its own session: the re-INVITE stays on the caller's leg");
    // The answer is sosdesk's, one version after its first answer (RFC 3264 §8).
    let answer_o = caller.logged("reinvite.answer_o").unwrap();
    assert!(answer_o.starts_with("sosdesk ") && answer_o.split_whitespace().nth(2) == Some("2"), "{answer_o}");
    lab.stop();
    lab.assert_audit_verifies();
}

#[test]
fn a_talking_desk_is_heard_and_stays_with_the_operator_after_the_caller_hangs_up() {
    let mut lab = Lab::start_anchored(|c| c);
    let mut seen = Vec::new();
    let call = place_call(&mut lab, &mut seen, "127.0.0.1", "127.0.0.1", 2500);
    let desk_media = Party::start(Some(DESK_HZ), Codec::Pcma);
    let port = desk_media.port.to_string();
    let args = desk_args(lab.ports.sip, &call.call_id, "desk2", "control-room-secret", &port, "sendrecv", "5000");
    let desk = lab.uac("desk", "desk_join.xml", "127.0.0.1", &sipp_args(&args));
    call.caller.wait().assert_ok();
    let caller_gone = Instant::now();
    lab.wait_for(&mut seen, "party-left", |e| matches!(e.kind, CallEventKind::PartyLeft { .. }));
    desk.wait().assert_ok();
    call.provider.wait().assert_ok();
    let (caller, operator, desk) = (call.caller_media.finish(), call.operator_media.finish(), desk_media.finish());

    assert!(caller.hears(DESK_HZ) && operator.hears(DESK_HZ), "a talking desk reaches caller and operator");
    assert!(desk.hears(CALLER_HZ) && desk.hears(OPERATOR_HZ));
    assert!(operator.hears_after(DESK_HZ, caller_gone), "desk and operator still talk after the caller left");
    assert!(desk.hears_after(OPERATOR_HZ, caller_gone));

    lab.stop();
    let events = lab.audit_events();
    let k = kinds(&events);
    let at = |name: &str| k.iter().position(|x| *x == name).unwrap_or_else(|| panic!("no {name}: {k:?}"));
    assert!(at("answered") < at("desk-joined") && at("desk-joined") < at("party-left"), "{k:?}");
    assert!(at("party-left") < at("desk-left") && at("desk-left") < at("ended"), "{k:?}");
    assert!(events.iter().any(|e| matches!(&e.kind, CallEventKind::Ended { by, .. } if by == "desk")), "{k:?}");
    assert!(events.iter().any(|e| matches!(&e.kind, CallEventKind::DeskJoined { mode, .. } if mode == "talk")));
    assert_eq!(k.last(), Some(&"recorded"));
    lab.assert_audit_verifies();
}

#[test]
fn joins_without_credentials_with_wrong_ones_or_to_no_call_are_refused_and_talk_in_a_listen_only_policy_listens() {
    let mut lab = Lab::start_anchored(|c| c);
    let mut seen = Vec::new();
    // 127.0.0.3 is the London site: its policy lets desks listen only.
    let call = place_call(&mut lab, &mut seen, "127.0.0.3", "127.0.0.3", 4000);
    let port = "40000".to_string();
    let run = |lab: &Lab, name: &str, scenario: &str, args: Vec<String>| {
        let r = lab.uac(name, scenario, "127.0.0.1", &sipp_args(&args)).wait();
        r.assert_ok();
        r.received().iter().rfind(|m| m.starts_with("SIP/2.0 4")).cloned().unwrap_or_default()
    };
    let noauth = run(
        &lab,
        "noauth",
        "desk_unauthenticated.xml",
        desk_args(lab.ports.sip, &call.call_id, "", "", &port, "recvonly", "0"),
    );
    assert!(
        noauth.starts_with("SIP/2.0 401") && noauth.contains("WWW-Authenticate: Digest realm=\"sosdesk\""),
        "{noauth}"
    );
    let wrong = run(
        &lab,
        "wrong",
        "desk_refused.xml",
        desk_args(lab.ports.sip, &call.call_id, "desk2", "not-the-password", &port, "recvonly", "0"),
    );
    assert!(wrong.starts_with("SIP/2.0 403"), "{wrong}");
    // A desk that may talk, in a call whose policy lets desks only listen: it joins, listening.
    let talk = lab
        .uac(
            "talk",
            "desk_join.xml",
            "127.0.0.1",
            &sipp_args(&desk_args(
                lab.ports.sip,
                &call.call_id,
                "desk2",
                "control-room-secret",
                &port,
                "sendrecv",
                "0",
            )),
        )
        .wait();
    talk.assert_ok();
    let joined = talk.received().into_iter().find(|m| m.starts_with("SIP/2.0 200") && m.contains(" INVITE\r\n"));
    assert!(support::lab::body_of(&joined.expect("the join's 200")).contains("a=sendonly\r\n"));
    let nocall = run(
        &lab,
        "nocall",
        "desk_refused.xml",
        desk_args(lab.ports.sip, "0123456789abcdef", "desk2", "control-room-secret", &port, "recvonly", "0"),
    );
    assert!(nocall.starts_with("SIP/2.0 404"), "{nocall}");
    call.caller.wait().assert_ok();
    call.provider.wait().assert_ok();
    drop((call.caller_media.finish(), call.operator_media.finish()));

    lab.stop();
    let events = lab.audit_events();
    let refusals: Vec<(u16, String)> = events
        .iter()
        .filter(|e| e.call_id == call.call_id)
        .filter_map(|e| match &e.kind {
            CallEventKind::DeskJoinRefused { desk, status, .. } => Some((*status, desk.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        refusals,
        [(401, String::new()), (401, String::new()), (403, "desk2".into()), (401, String::new())],
        "every refusal is in the call's audit trail (the 401s are the challenges)"
    );
    let joins: Vec<_> = events.iter().filter(|e| matches!(e.kind, CallEventKind::DeskJoined { .. })).collect();
    assert!(
        matches!(&joins[..], [e] if matches!(&e.kind, CallEventKind::DeskJoined { desk, mode, .. } if desk == "Control room" && mode == "listen")),
        "{joins:?}"
    );
    assert!(events.iter().any(|e| matches!(&e.kind,
        CallEventKind::Rejected { status: 404, reason } if reason.contains("Control room") && reason.contains("no active call"))));
    lab.assert_audit_verifies();
}

#[test]
fn the_policy_conference_uri_is_called_when_the_call_is_routed() {
    // The HQ policy calls the security desk's phone into every call, two-way.
    let mut lab = Lab::start_anchored(|c| {
        let port =
            c.split("sip:security-desk@127.0.0.1:").nth(1).and_then(|r| r.split('"').next()).unwrap().to_string();
        c.replacen(
            "conference_mode = \"two-way\"",
            &format!("conference_mode = \"two-way\"\nconference_uri = \"sip:security@127.0.0.1:{port}\""),
            1,
        )
    });
    let desk_media = Party::start(Some(DESK_HZ), Codec::Pcmu);
    // The desk phone stays 4 s; the caller hangs up after 2 s: desk and operator stay connected
    // until the desk phone hangs up too.
    let desk = lab.uas(
        "desk-phone",
        "desk_phone.xml",
        "127.0.0.1",
        lab.ports.fallback,
        &[
            "-set",
            "mport",
            &desk_media.port.to_string(),
            "-set",
            "pt",
            "0",
            "-set",
            "codec",
            "PCMU",
            "-set",
            "hold_ms",
            "4000",
        ],
    );
    let mut seen = Vec::new();
    let call = place_call(&mut lab, &mut seen, "127.0.0.1", "127.0.0.1", 2000);
    lab.wait_for(&mut seen, "desk-joined", |e| matches!(e.kind, CallEventKind::DeskJoined { .. }));
    call.caller.wait().assert_ok();
    call.provider.wait().assert_ok();
    let desk_run = desk.wait();
    desk_run.assert_ok();
    let invite = desk_run.received_request("INVITE");
    assert!(
        invite.contains("Priority: emergency") && invite.contains("Subject: emergency call from +15555550123"),
        "{invite}"
    );
    let (caller, operator, desk) = (call.caller_media.finish(), call.operator_media.finish(), desk_media.finish());
    assert!(desk.hears(CALLER_HZ) && desk.hears(OPERATOR_HZ));
    assert!(caller.hears(DESK_HZ) && operator.hears(DESK_HZ), "two-way: the called desk is heard");

    lab.stop();
    let events = lab.audit_events();
    assert!(events.iter().any(|e| matches!(&e.kind,
        CallEventKind::DeskJoined { desk, mode, auto: true } if desk.starts_with("sip:security@") && mode == "talk")));
    let k = kinds(&events);
    assert!(k.ends_with(&["party-left", "desk-left", "ended", "recorded"]), "{k:?}");
}

#[test]
fn the_tone_meter_measures_a_tone_and_ignores_another() {
    let s: Vec<i16> = (0..1600)
        .map(|i| ((i as f64) * 2.0 * std::f64::consts::PI * 500.0 / 8000.0).sin() * 8000.0)
        .map(|x| x as i16)
        .collect();
    assert!((support::rtp::tone_level(&s, 500.0) - 8000.0).abs() < 200.0);
    assert!(support::rtp::tone_level(&s, 1700.0) < 50.0);
}

/// Issue 13: a phone that uses session timers (RFC 4028) is neither refused (`Require: timer`
/// was a 420) nor left without its interval: the 200 takes up `Session-Expires` with the phone
/// as refresher, and its refreshes (an UPDATE without SDP, a re-INVITE) are answered by sosdesk
/// without reaching the provider, whose leg stays as it was.
#[test]
fn a_caller_with_session_timers_is_answered_and_its_refreshes_are_taken() {
    let mut lab = Lab::start_anchored(|c| c);
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    let caller = lab.uac("caller", "caller_session_timer.xml", "127.0.0.1", &["-s", "911"]).wait();
    caller.assert_ok();
    let provider = provider.wait();
    provider.assert_ok();
    let answers: Vec<String> = caller.received().into_iter().filter(|m| m.starts_with("SIP/2.0 200")).collect();
    for a in &answers[..3] {
        assert!(a.contains("\r\nSession-Expires: 1800;refresher=uac\r\n"), "{a}");
        assert!(a.contains("\r\nRequire: timer\r\n"), "{a}");
    }
    // The refreshes stayed between the phone and sosdesk.
    let at_provider: Vec<String> = provider.received().into_iter().filter(|m| !m.starts_with("SIP/2.0")).collect();
    let methods: Vec<&str> = at_provider.iter().map(|m| m.split(' ').next().unwrap_or("")).collect();
    assert_eq!(methods, ["INVITE", "ACK", "BYE"], "{at_provider:?}");
    lab.stop();
    let k = kinds(&lab.audit_events());
    assert!(k.contains(&"answered") && k.contains(&"ended") && !k.contains(&"failed"), "{k:?}");
}
