//! The voice alert channel (issue 15) through the real core, with real peers on loopback: a
//! sipp UAS is the officer's phone that sosdesk calls; the test is its media — it decodes the
//! RTP the phone received (the alert spoken by espeak-ng, compared with what sosdesk's own
//! prompt sounds like) and presses 1 as RFC 4733 events; another phone presses 1 by SIP INFO;
//! a phone that never presses 1 is hung up after the bound and the next tier is alerted.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rtp_types::{RtpPacket, RtpPacketBuilder};
use sosdesk::api::client::ApiClient;
use sosdesk::events::{CallEvent, CallEventKind};
use sosdesk::media::Codec;

use crate::notifications::notified;
use crate::support::dnsmasq::{start_dns, DnsRecord};
use crate::support::lab::{free_port, Lab};
use crate::support::receivers::HttpReceiver;

/// The lab with `channels` added to policy us-hq and `tables` appended.
fn with_channels(channels: &str, tables: String) -> impl FnOnce(String) -> String {
    let channels = channels.to_string();
    move |c: String| {
        let c = c.replacen("name = \"us-hq\"\n", &format!("name = \"us-hq\"\n{channels}\n"), 1);
        format!("{c}\n{tables}\n")
    }
}

/// A 911 (or 933) call from the HQ site that the provider answers and the caller hangs up.
fn call(lab: &Lab, number: &str) {
    let provider = lab.uas("provider", "provider_answer.xml", "127.0.0.1", lab.ports.primary, &[]);
    let caller = lab.uac(
        "caller",
        "caller_hangs_up.xml",
        "127.0.0.1",
        &["-set", "hold_ms", "100", "-s", number, "-set", "name", "Alice Example", "-set", "from_user", "+14255550123"],
    );
    caller.wait().assert_ok();
    provider.wait().assert_ok();
}

/// The phone's media, played by the test: learns sosdesk's RTP address from the sipp scenario
/// (`rtp <ip> <port>`), keeps every G.711 sample it hears, and — when told — presses 1 as RFC
/// 4733 telephone events (payload type 101, as `media_provider.xml` answers) once it has heard
/// `press_after` packets.
struct PhoneMedia {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<i16>>>,
}

impl PhoneMedia {
    fn start(press_after: Option<usize>) -> PhoneMedia {
        PhoneMedia::start_spoofed(press_after, None)
    }

    /// As [`PhoneMedia::start`], and after `spoof_after` packets someone else — another
    /// address (127.0.0.2), another SSRC — sends sosdesk a 1 as RFC 4733 events.
    fn start_spoofed(press_after: Option<usize>, spoof_after: Option<usize>) -> PhoneMedia {
        let spoofer = UdpSocket::bind("127.0.0.2:0").unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let port = sock.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut heard, mut packets, mut sosdesk) = (Vec::new(), 0usize, None::<SocketAddr>);
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                if let Some(ctl) = std::str::from_utf8(&buf[..n]).ok().and_then(|t| t.trim().strip_prefix("rtp ")) {
                    sosdesk = ctl.replace(' ', ":").parse().ok();
                    continue;
                }
                let Ok(p) = RtpPacket::parse(&buf[..n]) else { continue };
                if p.payload_type() == 0 {
                    Codec::Pcmu.decode_into(p.payload(), &mut heard);
                    packets += 1;
                }
                if spoof_after == Some(packets) {
                    send_1(&spoofer, sosdesk.unwrap_or(from), 0x0bad, 7_777);
                }
                if press_after == Some(packets) {
                    press_1(&sock, sosdesk.unwrap_or(from));
                }
            }
            heard
        });
        PhoneMedia { port, stop, thread: Some(thread) }
    }

    fn finish(mut self) -> Vec<i16> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Digit 1 as a phone sends it (RFC 4733 §2.5.1): a start packet (marker), an update, and
/// the end packet three times, all with the event's start as timestamp.
fn press_1(sock: &UdpSocket, to: SocketAddr) {
    send_1(sock, to, 0x0fe1, 123_456);
}

/// Digit 1 as RFC 4733 events from `sock`, with `ssrc` and `ts` as the event's timestamp.
fn send_1(sock: &UdpSocket, to: SocketAddr, ssrc: u32, ts: u32) {
    for (i, (end, duration)) in
        [(false, 160u16), (false, 320), (true, 480), (true, 480), (true, 480)].iter().enumerate()
    {
        let d = duration.to_be_bytes();
        let payload = [1u8, if *end { 0x80 | 10 } else { 10 }, d[0], d[1]];
        let packet = RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(101)
            .marker_bit(i == 0)
            .sequence_number(1000 + i as u16)
            .timestamp(ts)
            .ssrc(ssrc)
            .payload(payload.as_slice())
            .write_vec_unchecked();
        sock.send_to(&packet, to).unwrap();
    }
}

/// The alert of `detected` as sosdesk speaks it, through G.711 as the phone hears it.
fn expected_speech(detected: &CallEvent) -> Vec<i16> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pcm =
        rt.block_on(sosdesk::reach::voice::synthesize(&sosdesk::channels::text::voice(detected), "en-us")).unwrap();
    let (mut bytes, mut back) = (Vec::new(), Vec::new());
    Codec::Pcmu.encode_into(&pcm, &mut bytes);
    Codec::Pcmu.decode_into(&bytes, &mut back);
    back
}

/// The phone heard speech, not silence nor a tone: energy, many levels, pauses between words —
/// and it is sosdesk's alert as synthesised for this call (`detected`), sample for sample.
fn assert_heard_the_alert(heard: &[i16], detected: &CallEvent) {
    assert!(heard.len() >= 8000, "the phone heard {} samples", heard.len());
    let frames: Vec<f64> = heard
        .chunks(160)
        .map(|f| (f.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / f.len() as f64).sqrt())
        .collect();
    let loud = frames.iter().filter(|&&rms| rms > 300.0).count();
    assert!(loud * 10 > frames.len(), "mostly silence: {loud} of {} frames with sound", frames.len());
    let levels: std::collections::HashSet<i16> = heard.iter().copied().collect();
    assert!(levels.len() > 100, "{} distinct levels: not speech", levels.len());
    let want = expected_speech(detected);
    let n = heard.len().min(want.len()).min(16_000);
    assert!(heard[..n] == want[..n], "the phone did not hear the alert of this call");
}

fn detected(events: &[CallEvent]) -> CallEvent {
    events.iter().find(|e| matches!(e.kind, CallEventKind::Detected)).expect("detected").clone()
}

/// The voice channel's acknowledgement, once the core has recorded it.
fn acknowledgement(lab: &mut Lab) -> CallEvent {
    lab.wait_for(&mut Vec::new(), "acknowledged", |e| matches!(e.kind, CallEventKind::Acknowledged { .. }))
}

/// The audit log once the voice attempt's outcome is in it (the lab stopped, so all is written).
fn audit_after_delivery(lab: &mut Lab) -> Vec<CallEvent> {
    lab.wait_for(&mut Vec::new(), "the attempt audited", |e| matches!(e.kind, CallEventKind::Notified { .. }));
    lab.stop();
    lab.audit_events()
}

/// The first voice attempt in `audit` was accepted and acknowledged by a 1 sent `how`.
fn assert_acknowledged_by(audit: &[CallEvent], how: &str) {
    let n = notified(audit);
    assert!(n[0].1 && n[0].2.contains(&format!("acknowledged by pressing 1 ({how})")), "{n:#?}");
}

fn voice_channel(phone_port: u16, extra: &str) -> String {
    format!(
        r#"
[[channel]]
name = "officer-phone"
kind = "voice"
to = ["sip:officer@127.0.0.1:{phone_port}"]
{extra}
"#
    )
}

#[test]
fn a_voice_call_speaks_the_alert_and_dtmf_1_acknowledges_as_the_callee() {
    let phone_port = free_port();
    let mut lab = Lab::start_with(with_channels(r#"channels = ["officer-phone"]"#, voice_channel(phone_port, "")));
    // The desk's view: the API's event stream.
    let api =
        ApiClient::new(&format!("http://127.0.0.1:{}", lab.ports.api), "desk2", "control-room-secret", None).unwrap();
    let mut stream = lab.rt.block_on(api.events()).unwrap();
    // Press 1 after 2 s of the alert.
    let media = PhoneMedia::start(Some(100));
    let mport = media.port.to_string();
    let phone = lab.uas(
        "officer",
        "media_provider.xml",
        "127.0.0.1",
        phone_port,
        &["-set", "mport", &mport, "-set", "pt", "0", "-set", "codec", "PCMU"],
    );
    call(&lab, "911");
    let target = format!("sip:officer@127.0.0.1:{phone_port}");
    let ack = acknowledgement(&mut lab);
    assert_eq!(ack.kind, CallEventKind::Acknowledged { by: target.clone(), desk: "voice call".into() });
    // The desk hears of it on the API's stream (its alarm stops).
    let pushed = lab.rt.block_on(async {
        loop {
            let ev = stream.next().await.unwrap().expect("the stream goes on");
            if let Ok(ev) = serde_json::from_str::<CallEvent>(&ev.data) {
                if matches!(ev.kind, CallEventKind::Acknowledged { .. }) {
                    return ev;
                }
            }
        }
    });
    assert_eq!((pushed.call_id.as_str(), &pushed.kind), (ack.call_id.as_str(), &ack.kind));
    // sosdesk hung up after the 1 (the scenario passes on its BYE).
    let run = phone.wait();
    run.assert_ok();
    assert!(
        run.messages.contains("Subject: EMERGENCY CALL 911 — Alice Example — HQ, 2nd floor, room 210"),
        "{}",
        run.messages
    );
    let heard = media.finish();
    let audit = audit_after_delivery(&mut lab);
    assert_heard_the_alert(&heard, &detected(&audit));
    let n = notified(&audit);
    assert_eq!(n.len(), 1, "{n:#?}");
    let (to, ok, detail) = &n[0];
    assert_eq!((to, ok), (&target, &true));
    assert!(
        detail.starts_with(&format!("voice via officer-phone (SIP UDP 127.0.0.1:{phone_port}), tier 1, attempt 1: accepted (answered (PCMU), alert spoken 1x; acknowledged by pressing 1 (RFC 4733 DTMF))")),
        "{detail}"
    );
    let acks = audit.iter().filter(|e| matches!(e.kind, CallEventKind::Acknowledged { .. })).count();
    assert_eq!(acks, 1);
    lab.assert_audit_verifies();
}

#[test]
fn a_phone_without_rfc_4733_acknowledges_by_sip_info() {
    let phone_port = free_port();
    let mut lab = Lab::start_with(with_channels(r#"channels = ["officer-phone"]"#, voice_channel(phone_port, "")));
    let mport = free_port().to_string();
    let phone = lab.uas("officer", "voice_callee_info.xml", "127.0.0.1", phone_port, &["-set", "mport", &mport]);
    call(&lab, "911");
    let ack = acknowledgement(&mut lab);
    let target = format!("sip:officer@127.0.0.1:{phone_port}");
    assert_eq!(ack.kind, CallEventKind::Acknowledged { by: target, desk: "voice call".into() });
    phone.wait().assert_ok();
    let audit = audit_after_delivery(&mut lab);
    assert_acknowledged_by(&audit, "SIP INFO");
}

#[test]
fn a_test_call_nobody_acknowledges_says_test_is_hung_up_at_the_bound_and_the_next_tier_is_alerted() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut hooks = HttpReceiver::start(&rt);
    let phone_port = free_port();
    let tables = format!(
        r#"{}
[[channel]]
name = "second"
kind = "webhook"
url = "http://127.0.0.1:{}/second"
secret = "webhook-secret-0123456789"
"#,
        voice_channel(phone_port, "repeats = 1\nmax_s = 10"),
        hooks.port
    );
    let mut lab = Lab::start_with(with_channels(
        "channels = [\"officer-phone\"]\nescalation = [{ after_s = 12, channels = [\"second\"] }]",
        tables,
    ));
    let media = PhoneMedia::start(None);
    let mport = media.port.to_string();
    let phone = lab.uas(
        "officer",
        "media_provider.xml",
        "127.0.0.1",
        phone_port,
        &["-set", "mport", &mport, "-set", "pt", "0", "-set", "codec", "PCMU"],
    );
    call(&lab, "933");
    // Nobody presses 1: sosdesk hangs up at the bound (the scenario passes on its BYE) ...
    let run = phone.wait();
    run.assert_ok();
    assert!(run.messages.contains("Subject: TEST CALL 933 — Alice Example"), "{}", run.messages);
    let heard = media.finish();
    // ... and the next tier is alerted.
    let second = hooks.next_to(&rt, "/second");
    let ev: CallEvent = serde_json::from_slice(&second.body).unwrap();
    assert!(ev.test_call);
    lab.wait_for(
        &mut Vec::new(),
        "the voice attempt audited",
        |e| matches!(&e.kind, CallEventKind::Notified { uri, .. } if uri.starts_with("sip:officer")),
    );
    lab.stop();
    let audit = lab.audit_events();
    let detected = detected(&audit);
    assert!(sosdesk::channels::text::voice(&detected).starts_with("This is a test. Test call to 9 3 3."));
    // What the phone heard is that test prompt.
    assert_heard_the_alert(&heard, &detected);
    assert!(heard.len() <= 8000 * 11, "the call lasted past max_s: {} samples", heard.len());
    let n = notified(&audit);
    let voice = n.iter().find(|(to, ..)| to.starts_with("sip:officer")).expect("the voice attempt");
    assert!(voice.1 && voice.2.ends_with("alert spoken 1x; not acknowledged: hung up)"), "{n:#?}");
    assert!(!audit.iter().any(|e| matches!(e.kind, CallEventKind::Acknowledged { .. })));
}

#[test]
fn without_speech_the_call_still_happens_with_the_alert_tone_and_says_why() {
    let phone_port = free_port();
    // A voice espeak-ng does not have: synthesis fails, as it would with espeak-ng missing.
    let channel = voice_channel(phone_port, "voice = \"zz-nope\"");
    let mut lab = Lab::start_with(with_channels(r#"channels = ["officer-phone"]"#, channel));
    let media = PhoneMedia::start(Some(60));
    let mport = media.port.to_string();
    let phone = lab.uas(
        "officer",
        "media_provider.xml",
        "127.0.0.1",
        phone_port,
        &["-set", "mport", &mport, "-set", "pt", "0", "-set", "codec", "PCMU"],
    );
    call(&lab, "911");
    acknowledgement(&mut lab);
    phone.wait().assert_ok();
    let heard = media.finish();
    let audit = audit_after_delivery(&mut lab);
    // The phone heard the alert tone, sample for sample (through G.711).
    let (mut bytes, mut tone) = (Vec::new(), Vec::new());
    Codec::Pcmu.encode_into(&sosdesk::media::speech::alert_tone(), &mut bytes);
    Codec::Pcmu.decode_into(&bytes, &mut tone);
    let n = heard.len().min(8000);
    assert!(n >= 4000 && heard[..n] == tone[..n], "the phone did not hear the alert tone ({} samples)", heard.len());
    let n = notified(&audit);
    assert!(n[0].1 && n[0].2.contains("speech failed (espeak-ng failed"), "{n:#?}");
    assert!(n[0].2.contains("the alert tone was played instead"), "{n:#?}");
}

#[test]
fn a_dtmf_1_from_another_address_does_not_acknowledge_the_phones_own_1_does() {
    let phone_port = free_port();
    let mut lab = Lab::start_with(with_channels(r#"channels = ["officer-phone"]"#, voice_channel(phone_port, "")));
    // Someone else "presses 1" after 0.4 s of the alert; the phone presses 1 after 2 s.
    let media = PhoneMedia::start_spoofed(Some(100), Some(20));
    let mport = media.port.to_string();
    let phone = lab.uas(
        "officer",
        "media_provider.xml",
        "127.0.0.1",
        phone_port,
        &["-set", "mport", &mport, "-set", "pt", "0", "-set", "codec", "PCMU"],
    );
    call(&lab, "911");
    let ack = acknowledgement(&mut lab);
    let target = format!("sip:officer@127.0.0.1:{phone_port}");
    assert_eq!(ack.kind, CallEventKind::Acknowledged { by: target, desk: "voice call".into() });
    phone.wait().assert_ok();
    let heard = media.finish();
    // The call went on past the spoofed 1, to the phone's own (100 packets of 160 samples).
    assert!(heard.len() >= 100 * 160, "hung up after {} samples: the spoofed 1 acknowledged", heard.len());
    let audit = audit_after_delivery(&mut lab);
    assert_acknowledged_by(&audit, "RFC 4733 DTMF");
}

#[test]
fn an_info_outside_the_dialog_gets_481_and_acknowledges_nothing() {
    let phone_port = free_port();
    let mut lab = Lab::start_with(with_channels(r#"channels = ["officer-phone"]"#, voice_channel(phone_port, "")));
    let mport = free_port().to_string();
    // The scenario sends "1" by INFO with a wrong From tag, then a wrong To tag (each must get
    // 481), then from the dialog (200), and waits for the BYE.
    let phone =
        lab.uas("officer", "voice_callee_spoofed_info.xml", "127.0.0.1", phone_port, &["-set", "mport", &mport]);
    call(&lab, "911");
    let ack = acknowledgement(&mut lab);
    let target = format!("sip:officer@127.0.0.1:{phone_port}");
    assert_eq!(ack.kind, CallEventKind::Acknowledged { by: target, desk: "voice call".into() });
    phone.wait().assert_ok();
    let audit = audit_after_delivery(&mut lab);
    assert_acknowledged_by(&audit, "SIP INFO");
    assert_eq!(audit.iter().filter(|e| matches!(e.kind, CallEventKind::Acknowledged { .. })).count(), 1);
}

#[test]
fn a_phone_that_sends_dtmf_with_the_offered_payload_type_acknowledges() {
    let phone_port = free_port();
    let channel = voice_channel(phone_port, "max_s = 15");
    let mut lab = Lab::start_with(with_channels(r#"channels = ["officer-phone"]"#, channel));
    // Its answer says telephone-event is 96; it presses 1 with 101, the number sosdesk offered.
    let media = PhoneMedia::start(Some(50));
    let mport = media.port.to_string();
    let phone = lab.uas(
        "officer",
        "media_provider_te96.xml",
        "127.0.0.1",
        phone_port,
        &["-set", "mport", &mport, "-set", "pt", "0", "-set", "codec", "PCMU"],
    );
    call(&lab, "911");
    phone.wait().assert_ok();
    media.finish();
    let audit = audit_after_delivery(&mut lab);
    assert_acknowledged_by(&audit, "RFC 4733 DTMF");
    assert_eq!(audit.iter().filter(|e| matches!(e.kind, CallEventKind::Acknowledged { .. })).count(), 1);
}

/// The next SIP message on `sock` (within 30 s: a bound, not a synchronisation), with its
/// sender; `what` names what was awaited when nothing came.
fn next_sip(sock: &UdpSocket, what: &str) -> (sosdesk::sip::Message, SocketAddr) {
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 65_535];
    let (n, from) = sock
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("{what}: nothing came to {}: {e}", sock.local_addr().unwrap()));
    let msg = sosdesk::sip::parse::parse_datagram(&buf[..n])
        .unwrap_or_else(|e| panic!("{what}: not SIP ({e:?}): {}", String::from_utf8_lossy(&buf[..n])));
    (msg, from)
}

/// An INFO "Signal=1" inside the dialog the ACK `ack` names (the phone's side: From is the
/// ACK's To, To its From), from `sock`.
fn info_1(sock: &UdpSocket, ack: &sosdesk::sip::Message, to: SocketAddr, branch: &str) {
    let me = sock.local_addr().unwrap();
    let body = "Signal=1\r\nDuration=160\r\n";
    let raw = format!(
        "INFO sip:sosdesk@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{branch}\r\nMax-Forwards: 70\r\n\
         From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 INFO\r\nContact: <sip:officer@{me}>\r\n\
         Content-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{body}",
        ack.header("To").unwrap(),
        ack.header("From").unwrap(),
        ack.call_id().unwrap(),
        body.len()
    );
    sock.send_to(raw.as_bytes(), to).unwrap();
}

#[test]
fn the_ack_and_the_bye_go_to_the_answers_contact_and_the_phone_there_is_heard() {
    let phone_port = free_port();
    let lab = Lab::start_with(with_channels(r#"channels = ["officer-phone"]"#, voice_channel(phone_port, "")));
    the_dialog_goes_to_the_answers_contact(lab, phone_port, "127.0.0.2");
}

/// A Contact given by name is resolved as the callee is, through the core's DNS servers (RFC
/// 3261 §12.2.1.1 → §8.1.2 → RFC 3263; with a port, A/AAAA only, §4.2): the name is known to
/// the test's DNS server alone, so the system's resolver would send the ACK and the BYE where the
/// INVITE went, and the phone at its Contact would hear neither.
#[test]
fn a_contact_given_by_name_is_resolved_through_the_cores_dns_servers() {
    let dir = tempfile::tempdir().unwrap();
    let phone_port = free_port();
    let dns_port = free_port();
    let phone = DnsRecord::A { name: "phone.voice.test".into(), ip: [127, 0, 0, 2].into() };
    let dns = start_dns(dir.path(), dns_port, &[phone], 300);
    let with_dns =
        move |c: String| c.replacen("[store]", &format!("[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n\n[store]"), 1);
    let add_channel = with_channels(r#"channels = ["officer-phone"]"#, voice_channel(phone_port, ""));
    let lab = Lab::start_with(move |c| with_dns(add_channel(c)));
    the_dialog_goes_to_the_answers_contact(lab, phone_port, "phone.voice.test");
    assert!(dns.queries().contains(&("A".into(), "phone.voice.test".into())), "{:?}", dns.queries());
}

/// The phone at `phone_port` answers with `Contact: <sip:officer@chost:PORT>` (the socket the
/// test listens on, at 127.0.0.2, by address or by a name for it): the ACK, the phone's "1"
/// (from there, inside the dialog) and the BYE all go there; "1" from a third address is refused.
fn the_dialog_goes_to_the_answers_contact(mut lab: Lab, phone_port: u16, chost: &str) {
    // The phone's dialog socket: the Contact of its 200, another host and port than the INVITE's.
    let contact = UdpSocket::bind("127.0.0.2:0").unwrap();
    let cport = contact.local_addr().unwrap().port().to_string();
    // Someone else, on a third address, who learnt the dialog's Call-ID and tags.
    let spoofer = UdpSocket::bind("127.0.0.3:0").unwrap();
    let mport = free_port().to_string();
    let phone = lab.uas(
        "officer",
        "voice_callee_contact_elsewhere.xml",
        "127.0.0.1",
        phone_port,
        &["-set", "mport", &mport, "-set", "chost", chost, "-set", "cport", &cport],
    );
    call(&lab, "911");
    phone.wait().assert_ok();
    let contact_uri = format!("sip:officer@{chost}:{cport}");
    // The ACK of the 200 comes to the Contact, with the Contact as Request-URI (RFC 3261 §13.2.2.4).
    let (ack, sosdesk) = next_sip(&contact, "the ACK at the answer's Contact");
    assert_eq!((ack.method(), ack.request_uri()), ("ACK", Some(contact_uri.as_str())));
    assert_eq!(ack.cseq(), Some((1, "ACK")));
    // "1" from the third address: refused (481), it acknowledges nothing.
    info_1(&spoofer, &ack, sosdesk, "spoofed");
    let (refused, _) = next_sip(&spoofer, "the answer to the spoofed INFO");
    assert_eq!(refused.status(), Some(481));
    // "1" from the phone's Contact: inside the dialog.
    info_1(&contact, &ack, sosdesk, "phone");
    let (ok, _) = next_sip(&contact, "the answer to the phone's INFO");
    assert_eq!((ok.status(), ok.cseq()), (Some(200), Some((1, "INFO"))));
    // Then the BYE, to the Contact again (§12.2.1.1), in the dialog of the ACK.
    let (bye, from) = next_sip(&contact, "the BYE at the answer's Contact");
    assert_eq!((bye.method(), bye.request_uri()), ("BYE", Some(contact_uri.as_str())));
    assert_eq!((bye.call_id(), bye.header("To")), (ack.call_id(), ack.header("To")));
    contact.send_to(&bye.response(200, "OK", None).to_bytes(), from).unwrap();
    let acked = acknowledgement(&mut lab);
    let target = format!("sip:officer@127.0.0.1:{phone_port}");
    assert_eq!(acked.kind, CallEventKind::Acknowledged { by: target, desk: "voice call".into() });
    let audit = audit_after_delivery(&mut lab);
    assert_acknowledged_by(&audit, "SIP INFO");
    assert_eq!(audit.iter().filter(|e| matches!(e.kind, CallEventKind::Acknowledged { .. })).count(), 1);
}

/// The voice channel `officer-phone` calling `to`, the core asking the DNS server on `dns_port`.
fn with_voice_by_name(to: &str, dns_port: u16) -> impl FnOnce(String) -> String {
    let channel = format!("\n[[channel]]\nname = \"officer-phone\"\nkind = \"voice\"\nto = [\"{to}\"]\n");
    let add = with_channels(r#"channels = ["officer-phone"]"#, channel);
    move |c: String| add(c).replacen("[store]", &format!("[dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n\n[store]"), 1)
}

fn srv(name: &str, target: &str, port: u16, priority: u16) -> DnsRecord {
    DnsRecord::Srv { name: name.into(), target: target.into(), port, priority, weight: 0 }
}

fn a(name: &str) -> DnsRecord {
    DnsRecord::A { name: name.into(), ip: [127, 0, 0, 1].into() }
}

#[test]
fn a_callee_given_by_domain_is_found_by_srv_through_the_cores_dns_servers() {
    let dir = tempfile::tempdir().unwrap();
    let phone_port = free_port();
    // voice.test publishes its SIP server as SRV only (no NAPTR), on a port that is not 5060.
    let records = [srv("_sip._udp.voice.test", "pbx.voice.test", phone_port, 10), a("pbx.voice.test")];
    let dns_port = free_port();
    let dns = start_dns(dir.path(), dns_port, &records, 300);
    let mut lab = Lab::start_with(with_voice_by_name("sip:officer@voice.test", dns_port));
    let mport = free_port().to_string();
    let phone = lab.uas("officer", "voice_callee_info.xml", "127.0.0.1", phone_port, &["-set", "mport", &mport]);
    call(&lab, "911");
    // The phone got the INVITE, pressed 1 (SIP INFO) and got the BYE.
    let run = phone.wait();
    run.assert_ok();
    assert!(run.messages.contains("INVITE sip:officer@voice.test SIP/2.0"), "{}", run.messages);
    let ack = acknowledgement(&mut lab);
    assert_eq!(
        ack.kind,
        CallEventKind::Acknowledged { by: "sip:officer@voice.test".into(), desk: "voice call".into() }
    );
    let asked = dns.queries();
    for (qtype, name) in [("NAPTR", "voice.test"), ("SRV", "_sip._udp.voice.test"), ("A", "pbx.voice.test")] {
        assert!(asked.iter().any(|(t, n)| t == qtype && n == name), "{qtype} {name} not asked: {asked:?}");
    }
    let audit = audit_after_delivery(&mut lab);
    let n = notified(&audit);
    assert_eq!(n.len(), 1, "{n:#?}");
    let (to, ok, detail) = &n[0];
    assert_eq!((to.as_str(), ok), ("sip:officer@voice.test", &true));
    assert!(
        detail
            .starts_with("voice via officer-phone (SIP voice.test (RFC 3263)), tier 1, attempt 1: accepted (answered"),
        "{detail}"
    );
    assert!(detail.contains("acknowledged by pressing 1 (SIP INFO)"), "{detail}");
}

#[test]
fn a_silent_srv_target_is_given_up_for_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    // The first server (priority 10) takes the INVITE and says nothing; the second (priority 20)
    // is the phone.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let phone_port = free_port();
    let records = [
        srv("_sip._udp.voice.test", "dead.voice.test", silent.local_addr().unwrap().port(), 10),
        srv("_sip._udp.voice.test", "pbx.voice.test", phone_port, 20),
        a("dead.voice.test"),
        a("pbx.voice.test"),
    ];
    let dns_port = free_port();
    let _dns = start_dns(dir.path(), dns_port, &records, 300);
    let mut lab = Lab::start_with(with_voice_by_name("sip:officer@voice.test", dns_port));
    let mport = free_port().to_string();
    let phone = lab.uas("officer", "voice_callee_info.xml", "127.0.0.1", phone_port, &["-set", "mport", &mport]);
    call(&lab, "911");
    phone.wait().assert_ok();
    // The first target was tried first (its INVITE is in the socket's queue).
    let (invite, _) = next_sip(&silent, "the INVITE at the first SRV target");
    assert_eq!((invite.method(), invite.request_uri()), ("INVITE", Some("sip:officer@voice.test")));
    acknowledgement(&mut lab);
    let audit = audit_after_delivery(&mut lab);
    assert_acknowledged_by(&audit, "SIP INFO");
}

#[test]
fn a_callee_name_without_records_fails_the_delivery_with_the_resolvers_reason() {
    let dir = tempfile::tempdir().unwrap();
    let dns_port = free_port();
    // The DNS server knows nothing: NXDOMAIN for every name.
    let _dns = start_dns(dir.path(), dns_port, &[], 300);
    let mut lab = Lab::start_with(with_voice_by_name("sip:officer@nowhere.voice.test", dns_port));
    call(&lab, "911");
    let failed = lab
        .wait_for(&mut Vec::new(), "the failed attempt audited", |e| matches!(e.kind, CallEventKind::Notified { .. }));
    lab.stop();
    let n = notified(&[failed]);
    let (to, ok, detail) = &n[0];
    assert_eq!((to.as_str(), ok), ("sip:officer@nowhere.voice.test", &false));
    assert!(detail.contains("cannot resolve nowhere.voice.test: A/AAAA nowhere.voice.test: "), "{detail}");
}
