//! The voice alert channel (issue 15): sosdesk calls a phone — a `sip:`/`sips:` URI, or a
//! number through one of the routes — and speaks the alert until the callee presses 1, which
//! acknowledges the emergency call as that callee, or hangs up.
//!
//! Why here, in `reach`, and not in the routing engine: the engine is the emergency B2BUA,
//! sans-I/O, and nothing may sit on a call's path. A voice alert is one more delivery of an
//! alert — started by the `detected` event the engine broadcasts after the call's bytes are out,
//! retried and audited like an email — so it lives with the other senders, as a UAC of its own:
//! its own socket and client transactions (`sip::client`, the driver the desk app uses), its own
//! RTP socket, its own dialog (`sip::dialog`). What it reuses is sans-I/O and below it: SDP and
//! G.711 (`media`), RFC 4733 and INFO digits (`media::dtmf`), the synthesiser's WAV at 8 kHz
//! (`media::speech`), the prompt text (`channels::text::voice`). The acknowledgement goes in
//! through `CoreHandle::annotate`, like a desk's, so it is audited, broadcast to every desk
//! (their alarm stops) and stops the escalation — the data still flows one way.
//!
//! Speech is synthesised by espeak-ng (`--stdin`: the text, which holds caller-controlled
//! strings, is written to its standard input — no shell, no argument a caller could turn into
//! an option), bounded in time, while the INVITE is already ringing the phone; if it fails, the
//! call still happens with an alert tone, and the failure is logged and in the audited outcome.

use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use rtp_types::{RtpPacket, RtpPacketBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Dns;
use crate::channels::VoiceChannel;
use crate::config::Config;
use crate::core_handle::CoreHandle;
use crate::events::{CallEvent, CallEventKind};
use crate::media::dtmf::{digit_of_info, DtmfReceiver};
use crate::media::{speech, AudioSdp, Codec, Direction, LocalSdp, FRAME};
use crate::sip::client::{Client, ClientError, Event, Outgoing};
use crate::sip::dialog::Dialog;
use crate::sip::flow::Flow;
use crate::sip::rfc3263::{Host, SipTarget};
use crate::sip::transaction::{Peer, Timers, Transport};
use crate::sip::{ids, Message};

/// The `desk` of an acknowledgement by a voice call (its `by` is the callee).
pub const VOICE_DESK: &str = "voice call";
/// The most espeak-ng may take to speak the alert into a file.
const SYNTH_WITHIN: Duration = Duration::from_secs(10);
/// Silence between two repetitions of the alert (samples, 1 s).
const GAP: usize = 8000;
/// A target of the callee (RFC 3263) that answers nothing to the INVITE, not even 100 Trying,
/// within this (the INVITE sent four times by Timer A) is given up for the next one (§4.3):
/// waiting for Timer B (32 s) would spend the whole ringing time on a dead host. Over UDP an
/// ICMP port unreachable is not seen (the socket is not connected), so silence is the sign.
const SILENT_TARGET: Duration = Duration::from_secs(4);
/// How long a BYE, or the INVITE's answer after a CANCEL, is waited for.
const HANGUP_WITHIN: Duration = Duration::from_secs(4);
/// The most resolving the target and connecting to it (TCP, TLS) may take.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);
/// The most resolving the dialog's next hop (the answer's Contact or first Record-Route) may
/// take.
const HOP_WITHIN: Duration = Duration::from_secs(3);
/// The most recording an acknowledgement through the core may take.
const ANNOTATE_WITHIN: Duration = Duration::from_secs(5);
/// The telephone-event payload type sosdesk offers ([`LocalSdp::offer`]): some phones send
/// with the offerer's number rather than their answer's.
const OFFERED_TELEPHONE_EVENT: u8 = 101;

/// The most one voice call may take, from its start to its return, given its channel: every
/// bound of [`call`] added up (connecting, ringing, the CANCEL's wait, the speech it waits
/// for, speaking, recording a 1, the BYE's wait). The delivery's outer timeout must be longer
/// still, so that it never drops an answered call without its BYE.
pub(super) fn bound(v: &VoiceChannel) -> Duration {
    CONNECT_WITHIN
        + Duration::from_secs(v.ring_s)
        + HANGUP_WITHIN
        + HOP_WITHIN
        + SYNTH_WITHIN
        + Duration::from_secs(v.max_s)
        + ANNOTATE_WITHIN
        + HANGUP_WITHIN
}
/// The command that speaks (Debian package `espeak-ng`).
const ESPEAK: &str = "espeak-ng";

/// Where one callee is called, and how.
struct Destination {
    request_uri: String,
    target: SipTarget,
    /// The name the peer's certificate must carry (RFC 5922 §7.2).
    tls_name: String,
    tls_ca: Option<PathBuf>,
    tls_identity: Option<(PathBuf, PathBuf)>,
    /// A route's digest credentials: user, password, realm.
    auth: Option<(String, String, Option<String>)>,
}

/// `target` as audited: a `sip:`/`sips:` URI, or `tel:<number>` through the channel's route.
fn destination(cfg: &Config, v: &VoiceChannel, target: &str) -> Result<Destination, String> {
    if let Some(number) = target.strip_prefix("tel:") {
        let name = v.route.as_deref().ok_or("a number without a route")?;
        let r = cfg.routes.iter().find(|r| r.name == name).ok_or_else(|| format!("no route {name:?}"))?;
        let t = r.target();
        let domain = r.domain.clone().unwrap_or_else(|| t.host_port_str());
        let user_phone = if number.starts_with('+') { ";user=phone" } else { "" };
        Ok(Destination {
            request_uri: format!("sip:{number}@{domain}{user_phone}"),
            tls_name: r.domain.clone().unwrap_or_else(|| t.host_str()),
            target: t,
            tls_ca: r.tls_ca.as_ref().map(|p| cfg.path(p)),
            tls_identity: r.tls_cert.as_ref().zip(r.tls_key.as_ref()).map(|(c, k)| (cfg.path(c), cfg.path(k))),
            auth: r
                .username
                .clone()
                .zip(r.password.as_ref().map(|p| p.0.clone()))
                .map(|(u, p)| (u, p, r.realm.clone())),
        })
    } else {
        let t = SipTarget::parse(target)?;
        Ok(Destination {
            request_uri: target.to_string(),
            tls_name: t.host_str(),
            target: t,
            tls_ca: cfg.sip.tls_ca.as_ref().map(|p| cfg.path(p)),
            tls_identity: None,
            auth: None,
        })
    }
}

/// How the call travels, for the audit: `SIP UDP 127.0.0.1:5099`, `SIP pbx.example.org (RFC 3263)`,
/// `SIP via route provider`.
pub(super) fn transport(v: &VoiceChannel, target: &str) -> String {
    match (target.strip_prefix("tel:"), &v.route) {
        (Some(_), Some(route)) => format!("SIP via route {route}"),
        _ => match SipTarget::parse(target) {
            // A name without port or transport: DNS chooses them (RFC 3263 §4.1).
            Ok(t) if matches!(t.host, Host::Name(_)) && t.port.is_none() && t.transport.is_none() => {
                format!("SIP {} (RFC 3263)", t.host_str())
            }
            Ok(t) => format!("SIP {} {}", t.default_transport().as_str(), t.host_port_str()),
            Err(_) => "SIP".into(),
        },
    }
}

/// Where the callee is called, in the order to try (RFC 3263 §4): an IP literal as it is; a
/// name through the core's resolver (`crate::dns`: the `[dns] servers`, else the system's) —
/// NAPTR, then SRV, then A/AAAA, the transport chosen by DNS when the URI fixes none (§4.1), the
/// port by SRV; a port given means A/AAAA only (§4.2). Bounded by the resolver's own timeout.
async fn targets(dns: &Dns, t: &SipTarget) -> Result<Vec<Peer>, String> {
    if let Some(peer) = t.literal() {
        return Ok(vec![peer]);
    }
    let resolver = dns.as_ref().map_err(|e| format!("cannot resolve {}: no DNS resolver ({e})", t.host_str()))?;
    let found = resolver.resolve(t).await.map_err(|e| format!("cannot resolve {}: {e}", t.host_str()))?;
    Ok(found.peers)
}

/// Where the dialog's next hop points: a Contact or Record-Route the callee chose, resolved as
/// the callee was (RFC 3261 §12.2.1.1 sends an in-dialog request per §8.1.2, that is RFC 3263):
/// an IP literal as it is, a name through the core's resolver (its `[dns] servers`, as for the
/// callee; a port given means A/AAAA only, §4.2), the first target on the call's transport.
async fn hop_address(dns: &Dns, t: &SipTarget, transport: Transport) -> Result<Peer, String> {
    let peers = targets(dns, t).await?;
    peers
        .into_iter()
        .find(|p| p.transport == transport)
        .ok_or_else(|| format!("{} has no {} target", t.host_str(), transport.as_str()))
}

/// Whether requests inside the dialog can go to `hop` on the call's transport: over UDP the
/// hop must be UDP too (a `;transport=tcp` or `sips:` Contact would need a connection the call
/// does not have).
fn usable_hop(hop: Result<SipTarget, String>, transport: Transport) -> Result<SipTarget, String> {
    let hop = hop?;
    match hop.default_transport() {
        t if t == transport => Ok(hop),
        t => Err(format!("{hop} is reached over {}, the call is over {}", t.as_str(), transport.as_str())),
    }
}

/// Where the ACK of the 2xx and every request inside the dialog are sent (RFC 3261 §13.2.2.4,
/// §12.2.1.1, §8.1.2): the dialog's next hop — the first route, else the answer's Contact —
/// resolved as the callee was ([`hop_address`]), within [`HOP_WITHIN`]. A phone behind a proxy, or one
/// answering from another socket, gets its ACK and BYE there. Over TCP/TLS they go on the
/// INVITE's connection (the client's flow sends nowhere else). A hop that cannot be used falls
/// back to where the INVITE went, and says why in the log.
async fn dialog_hop(dns: &Dns, dialog: &Dialog, transport: Transport, call: &str) -> SocketAddr {
    let fallback = dialog.peer.addr;
    if transport != Transport::Udp {
        return fallback;
    }
    let resolved = match usable_hop(dialog.next_hop(), transport) {
        Ok(hop) => tokio::time::timeout(HOP_WITHIN, hop_address(dns, &hop, transport))
            .await
            .unwrap_or_else(|_| Err(format!("{hop} not resolved within {} s", HOP_WITHIN.as_secs())))
            .map(|p| p.addr),
        Err(e) => Err(e),
    };
    resolved.unwrap_or_else(|e| {
        tracing::warn!(%call, error = %e, to = %fallback, "voice alert: the dialog's next hop cannot be used; ACK and BYE go where the INVITE went");
        fallback
    })
}

/// The address this machine sends from towards `to` (no packet is sent: a connected UDP
/// socket only asks the routing table).
fn local_ip_towards(to: SocketAddr) -> Result<IpAddr, String> {
    let any: SocketAddr =
        if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let s = std::net::UdpSocket::bind(any).map_err(|e| e.to_string())?;
    s.connect(to).map_err(|e| format!("no route to {to}: {e}"))?;
    Ok(s.local_addr().map_err(|e| e.to_string())?.ip())
}

/// Client transactions towards `peer` over its transport.
async fn connect(dest: &Destination, peer: Peer) -> Result<Client, String> {
    match peer.transport {
        Transport::Udp => {
            let sock = UdpSocket::bind((local_ip_towards(peer.addr)?, 0)).await.map_err(|e| e.to_string())?;
            Client::new(sock, Timers::default()).map_err(|e| e.to_string())
        }
        Transport::Tcp => {
            let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(peer.addr))
                .await
                .map_err(|_| format!("no TCP connection to {} within 5 s", peer.addr))?
                .map_err(|e| format!("cannot connect to {}: {e}", peer.addr))?;
            let local = tcp.local_addr().map_err(|e| e.to_string())?;
            Ok(Client::over_flow(Flow::new(tcp, local, peer.addr, None), Transport::Tcp, Timers::default()))
        }
        Transport::Tls => {
            let identity = dest.tls_identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
            let tls = crate::transport::tls::TlsClient::towards(&dest.tls_name, dest.tls_ca.as_deref(), identity)?;
            let stream = tls.connect(peer.addr).await?;
            let local = stream.get_ref().0.local_addr().map_err(|e| e.to_string())?;
            Ok(Client::over_flow(Flow::new(stream, local, peer.addr, None), Transport::Tls, Timers::default()))
        }
    }
}

/// The alert as 8 kHz speech: espeak-ng's WAV on its standard output, within [`SYNTH_WITHIN`].
pub async fn synthesize(text: &str, voice: &str) -> Result<Vec<i16>, String> {
    let run = async {
        let mut child = tokio::process::Command::new(ESPEAK)
            .args(["--stdout", "--stdin", "-v", voice])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {ESPEAK}: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        let mut stderr = child.stderr.take().ok_or("no stderr")?;
        let text = text.to_string();
        let write = async move {
            let r = stdin.write_all(text.as_bytes()).await;
            drop(stdin);
            r
        };
        let (mut wav, mut err) = (Vec::new(), Vec::new());
        let (w, r, e) = tokio::join!(write, stdout.read_to_end(&mut wav), stderr.read_to_end(&mut err));
        w.and(r).and(e).map_err(|e| format!("{ESPEAK}: {e}"))?;
        let status = child.wait().await.map_err(|e| format!("{ESPEAK}: {e}"))?;
        if !status.success() {
            let why = String::from_utf8_lossy(&err).trim().chars().take(200).collect::<String>();
            return Err(format!("{ESPEAK} failed ({status}): {why}"));
        }
        let (rate, pcm) = speech::wav_pcm(&wav).map_err(|e| format!("{ESPEAK}: {e}"))?;
        let pcm = speech::to_8k(rate, &pcm);
        if pcm.is_empty() {
            return Err(format!("{ESPEAK} produced no audio"));
        }
        Ok(pcm)
    };
    tokio::time::timeout(SYNTH_WITHIN, run)
        .await
        .unwrap_or_else(|_| Err(format!("{ESPEAK} did not finish within {} s", SYNTH_WITHIN.as_secs())))
}

/// What sosdesk answers to a request from the callee that ends nothing (OPTIONS, UPDATE, a
/// re-INVITE: the session goes on as it was, RFC 3261 §14.2 lets the UAS refuse a change).
fn answer_to(msg: &Message) -> Message {
    match msg.method() {
        "INVITE" => msg.response(488, "Not Acceptable Here", None),
        "OPTIONS" | "UPDATE" | "INFO" | "BYE" | "NOTIFY" => msg.response(200, "OK", None),
        _ => msg.response(405, "Method Not Allowed", None),
    }
}

/// The dialog as the callee's requests must name it (RFC 3261 §12.2.2): its Call-ID, the
/// callee's tag (their From) and ours (their To) — and, over UDP, from one of the dialog's
/// hosts: where the INVITE went, or its next hop (the answer's Contact or first route, where
/// the ACK and BYE go). A spoofer off the path knows neither the Call-ID nor the tags, and one
/// on another host does not send from those addresses.
struct DialogId {
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    transport: Transport,
    hosts: [IpAddr; 2],
}

impl DialogId {
    fn of(dialog: &Dialog, local_tag: &str, hop: SocketAddr) -> DialogId {
        DialogId {
            call_id: dialog.call_id.clone(),
            local_tag: local_tag.to_string(),
            remote_tag: dialog.remote_tag.clone(),
            transport: dialog.peer.transport,
            hosts: [dialog.peer.addr.ip(), hop.ip()],
        }
    }

    /// Whether `msg`, received from `from`, is a request inside this dialog.
    fn holds(&self, msg: &Message, from: SocketAddr) -> bool {
        (self.transport != Transport::Udp || self.hosts.contains(&from.ip()))
            && msg.call_id() == Some(self.call_id.as_str())
            && msg.to_tag().as_deref() == Some(self.local_tag.as_str())
            && self.remote_tag.is_some()
            && msg.from_tag() == self.remote_tag
    }

    /// What sosdesk answers to a request: [`answer_to`] inside the dialog, 481 outside it.
    fn answer(&self, msg: &Message, from: SocketAddr) -> Message {
        if self.holds(msg, from) {
            answer_to(msg)
        } else {
            msg.response(481, "Call/Transaction Does Not Exist", None)
        }
    }
}

/// How an answered call ended.
enum Ended {
    Acknowledged(&'static str),
    AcknowledgedElsewhere,
    HungUpByCallee,
    Unacknowledged,
    Lost(String),
}

/// Why one target of the callee was not reached: nothing heard from it (moving on to the
/// next target, RFC 3263 §4.3), or a failure that ends the attempt (busy, refused, no answer).
enum Failed {
    Unreached(String),
    Over(String),
}

/// One voice call to `target` (as audited); `Ok` with what happened once the callee answered
/// (acknowledged or not), `Err` when the call was not answered (busy, no answer, refused, a
/// network failure, a name that does not resolve): the delivery retries it.
///
/// The callee's targets (RFC 3263) are tried in order (§4.3): one that cannot be connected to,
/// or that answers nothing at all to the INVITE — not even 100 Trying — within [`SILENT_TARGET`]
/// (or Timer B, for the last), is given up for the next. Ringing is bounded once for them all
/// (`ring_s` from the first INVITE), so that [`bound`] holds whatever the number of targets.
pub(super) async fn call(
    cfg: &Config,
    core: &CoreHandle,
    dns: &Dns,
    v: &VoiceChannel,
    target: &str,
    ev: &CallEvent,
    mut acked: watch::Receiver<bool>,
) -> Result<String, String> {
    // The speech is made while the phone rings: the INVITE does not wait for it.
    let (text, voice) = (crate::channels::text::voice(ev), v.voice.clone());
    let mut synth = tokio::spawn(async move { synthesize(&text, &voice).await });
    let dest = destination(cfg, v, target)?;
    let connect_until = Instant::now() + CONNECT_WITHIN;
    let peers = tokio::time::timeout_at(connect_until, targets(dns, &dest.target))
        .await
        .map_err(|_| format!("cannot reach {target} within {} s", CONNECT_WITHIN.as_secs()))??;
    let mut ring_until = None;
    let mut failures = Vec::new();
    for (i, &peer) in peers.iter().enumerate() {
        let more = i + 1 < peers.len();
        // The first target within CONNECT_WITHIN; the next ones within the ringing time left.
        let client = match tokio::time::timeout_at(ring_until.unwrap_or(connect_until), connect(&dest, peer)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                tracing::warn!(call = %ev.call_id, %target, %peer, error = %e, more, "voice alert: a target of the callee cannot be reached");
                failures.push(e);
                continue;
            }
            Err(_) if ring_until.is_none() => {
                failures.push(format!("cannot reach {target} within {} s", CONNECT_WITHIN.as_secs()));
                break;
            }
            Err(_) => {
                failures.push(format!("no time left to connect to {peer}"));
                break;
            }
        };
        let ring_until = *ring_until.get_or_insert_with(|| Instant::now() + Duration::from_secs(v.ring_s));
        let tried = attempt(core, dns, v, target, ev, &dest, peer, client, ring_until, more, &mut synth, &mut acked);
        match tried.await {
            Ok(outcome) => return Ok(outcome),
            Err(Failed::Over(e)) => return Err(e),
            Err(Failed::Unreached(e)) => {
                tracing::warn!(call = %ev.call_id, %target, %peer, error = %e, more, "voice alert: a target of the callee did not answer");
                failures.push(e);
            }
        }
    }
    Err(failures.join("; "))
}

/// The call through one target of the callee, `peer`, on `client`.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    core: &CoreHandle,
    dns: &Dns,
    v: &VoiceChannel,
    target: &str,
    ev: &CallEvent,
    dest: &Destination,
    peer: Peer,
    mut client: Client,
    ring_until: Instant,
    more: bool,
    synth: &mut tokio::task::JoinHandle<Result<Vec<i16>, String>>,
    acked: &mut watch::Receiver<bool>,
) -> Result<String, Failed> {
    let local = client.local_addr();
    let rtp =
        UdpSocket::bind((local.ip(), 0)).await.map_err(|e| Failed::Over(format!("cannot bind an RTP port: {e}")))?;
    let rtp_addr = rtp.local_addr().map_err(|e| Failed::Over(e.to_string()))?;
    let tp = client.transport();
    let host = |a: SocketAddr| if a.is_ipv6() { format!("[{}]:{}", a.ip(), a.port()) } else { a.to_string() };
    let via = || format!("SIP/2.0/{} {};branch={};rport", tp.as_str(), host(local), ids::new_branch());
    let contact = format!("<sip:sosdesk@{};transport={}>", host(local), tp.as_str().to_ascii_lowercase());
    let local_tag = ids::new_tag();
    let mut dialog = Dialog::outbound(
        ids::new_call_id(&local.ip().to_string()),
        format!("\"sosdesk alert\" <sip:sosdesk@{}>;tag={local_tag}", host(local)),
        format!("<{}>", dest.request_uri),
        dest.request_uri.clone(),
        peer,
    );
    let offer = LocalSdp::new(rtp_addr).offer(Codec::Pcmu, Direction::SendRecv);
    let subject: String = crate::channels::text::subject(ev).chars().filter(|c| !c.is_control()).collect();
    let invite_of = |dialog: &mut Dialog, cseq: Option<u32>, authorization: Option<(&str, String)>| {
        let mut m = dialog.request("INVITE", cseq, via());
        m.push("Contact", contact.clone());
        m.push("Subject", subject.clone());
        m.push("Allow", "INVITE, ACK, CANCEL, BYE, INFO, OPTIONS, UPDATE");
        m.push("Accept", "application/sdp, application/dtmf-relay, application/dtmf");
        if let Some((name, value)) = authorization {
            m.push(name, value);
        }
        m.push("Content-Type", "application/sdp");
        m.body = offer.clone();
        m
    };
    let mut invite = invite_of(&mut dialog, Some(1), None);
    let mut challenged = false;
    // Whether a provisional response came: without one, no CANCEL may be sent (§9.1).
    let mut provisional = false;
    // Whether this target answered anything: a silent one is given up for the next (§4.3).
    let heard = AtomicBool::new(false);
    let answer = loop {
        let key = client
            .send_request(&invite, peer.addr)
            .await
            .map_err(|e| Failed::Unreached(format!("cannot send the INVITE to {peer}: {e}")))?;
        tracing::info!(call = %ev.call_id, %target, %peer, "voice alert: INVITE sent");
        let silent_until = Instant::now() + SILENT_TARGET;
        let ringing = client.final_response(&key, |e| during_ringing(e, &mut dialog, &mut provisional, &heard));
        let got = tokio::select! {
            r = ringing => Some(r),
            _ = tokio::time::sleep_until(ring_until) => None,
            // Nothing at all from this target, and another one is left: that one is tried.
            _ = async {
                tokio::time::sleep_until(silent_until).await;
                if heard.load(Relaxed) { std::future::pending::<()>().await }
            }, if more => {
                client.abandon(&key);
                return Err(Failed::Unreached(format!("nothing from {peer} within {} s", SILENT_TARGET.as_secs())));
            }
            // (A dispatcher gone — the core stopping — acknowledges nothing: ring on.)
            _ = async { if acked.wait_for(|a| *a).await.is_err() { std::future::pending::<()>().await } } => None,
        };
        let resp = match got {
            None => {
                let why = if *acked.borrow() {
                    "acknowledged elsewhere while ringing".to_string()
                } else {
                    format!("no answer within {} s", v.ring_s)
                };
                if !provisional {
                    // Nothing heard from the callee: no CANCEL (§9.1), the INVITE is given up.
                    client.abandon(&key);
                } else if let Some(ok) = cancel(&mut client, &invite, &key, peer.addr).await {
                    // Answered as the CANCEL crossed it: hang up at once.
                    dialog.learn_remote_tag(&ok);
                    dialog.confirm(&ok);
                    let hop = dialog_hop(dns, &dialog, tp, &ev.call_id).await;
                    let ack = dialog.request("ACK", Some(invite.cseq().map_or(1, |c| c.0)), via());
                    let _ = client.send_stateless(&ack, hop).await;
                    hang_up(&mut client, &mut dialog, &local_tag, via(), hop).await;
                }
                return if *acked.borrow() { Ok(format!("{why}: cancelled")) } else { Err(Failed::Over(why)) };
            }
            // Timer B, or the socket failed: the next target, if nothing came from this one.
            Some(Err(e)) => {
                let why = match e {
                    ClientError::Timeout => format!("no response from {peer}"),
                    e => format!("{peer}: {e}"),
                };
                return Err(if heard.load(Relaxed) { Failed::Over(why) } else { Failed::Unreached(why) });
            }
            Some(Ok(resp)) => {
                heard.store(true, Relaxed);
                resp
            }
        };
        let status = resp.status().unwrap_or(0);
        match (status, &dest.auth) {
            (200..=299, _) => break resp,
            (401 | 407, Some((user, password, realm))) if !challenged => {
                challenged = true;
                let (ask, answer) = if status == 401 {
                    ("WWW-Authenticate", "Authorization")
                } else {
                    ("Proxy-Authenticate", "Proxy-Authorization")
                };
                let challenges = resp.header_values(ask);
                let value = crate::sip::digest::answer_best(
                    &challenges,
                    "INVITE",
                    &dest.request_uri,
                    user,
                    password,
                    realm.as_deref(),
                )
                .ok_or_else(|| Failed::Over(format!("{status}: a challenge sosdesk cannot answer")))?;
                invite = invite_of(&mut dialog, None, Some((answer, value)));
            }
            (486 | 600 | 603, _) => return Err(Failed::Over(format!("busy ({status} {})", reason(&resp)))),
            (408 | 480 | 487, _) => return Err(Failed::Over(format!("no answer ({status} {})", reason(&resp)))),
            _ => return Err(Failed::Over(format!("refused ({status} {})", reason(&resp)))),
        }
    };
    dialog.learn_remote_tag(&answer);
    dialog.confirm(&answer);
    // From here on, requests go to the dialog's next hop, not necessarily where the INVITE went.
    let hop = dialog_hop(dns, &dialog, tp, &ev.call_id).await;
    let invite_cseq = invite.cseq().map_or(1, |c| c.0);
    let ack = dialog.request("ACK", Some(invite_cseq), via());
    client.send_stateless(&ack, hop).await.map_err(|e| Failed::Over(format!("cannot send the ACK to {hop}: {e}")))?;
    let sdp = match AudioSdp::parse(&answer.body) {
        Ok(s) if s.remote().is_some() => s,
        Ok(_) => {
            hang_up(&mut client, &mut dialog, &local_tag, via(), hop).await;
            return Err(Failed::Over("answered without an address for audio".into()));
        }
        Err(e) => {
            hang_up(&mut client, &mut dialog, &local_tag, via(), hop).await;
            return Err(Failed::Over(format!("answered without usable audio: {e}")));
        }
    };
    let (codec, pt) = sdp.pick(Some(Codec::Pcmu));
    // (The synthesiser is bounded by SYNTH_WITHIN itself; bounded here too, whatever it does.)
    let synthesized = tokio::time::timeout(SYNTH_WITHIN, synth)
        .await
        .unwrap_or_else(|_| Ok(Err(format!("{ESPEAK} did not finish within {} s", SYNTH_WITHIN.as_secs()))));
    let (audio, speech_failed) = match synthesized.unwrap_or_else(|e| Err(format!("speech task: {e}"))) {
        Ok(pcm) => (pcm, None),
        Err(e) => {
            tracing::error!(call = %ev.call_id, %target, error = %e, "voice alert: no speech, the alert tone is played instead");
            ((0..5).flat_map(|_| speech::alert_tone()).collect(), Some(e))
        }
    };
    let mut program = Vec::with_capacity((audio.len() + GAP) * v.repeats as usize);
    for _ in 0..v.repeats {
        program.extend_from_slice(&audio);
        program.extend(std::iter::repeat_n(0i16, GAP));
    }
    let (ended, played) = speak(
        &mut client,
        (&ack, hop),
        &DialogId::of(&dialog, &local_tag, hop),
        &rtp,
        sdp.remote().expect("checked"),
        (codec, pt, sdp.telephone_event),
        &program,
        Instant::now() + Duration::from_secs(v.max_s),
        acked,
    )
    .await;
    let times = played.div_ceil(audio.len() + GAP).max(1);
    let mut outcome = format!("answered ({}), alert spoken {times}x", codec.name());
    match &ended {
        Ended::Acknowledged(how) => {
            outcome.push_str(&format!("; acknowledged by pressing 1 ({how})"));
            if !*acked.borrow() {
                let kind = CallEventKind::Acknowledged { by: target.to_string(), desk: VOICE_DESK.into() };
                let recorded = tokio::time::timeout(ANNOTATE_WITHIN, core.annotate(&ev.call_id, kind))
                    .await
                    .map_err(|_| format!("no answer from the core within {} s", ANNOTATE_WITHIN.as_secs()))
                    .and_then(|r| r.map_err(|e| e.to_string()));
                if let Err(e) = recorded {
                    tracing::error!(call = %ev.call_id, error = %e, "a voice acknowledgement could not be recorded");
                    outcome.push_str(&format!(" — not recorded: {e}"));
                }
            }
        }
        Ended::AcknowledgedElsewhere => outcome.push_str("; acknowledged elsewhere: hung up"),
        Ended::HungUpByCallee => outcome.push_str("; the callee hung up without pressing 1"),
        Ended::Unacknowledged => outcome.push_str("; not acknowledged: hung up"),
        Ended::Lost(e) => outcome.push_str(&format!("; the call was lost ({e})")),
    }
    if !matches!(ended, Ended::HungUpByCallee | Ended::Lost(_)) {
        hang_up(&mut client, &mut dialog, &local_tag, via(), hop).await;
    }
    if let Some(e) = speech_failed {
        outcome.push_str(&format!("; speech failed ({e}): the alert tone was played instead"));
    }
    Ok(outcome)
}

fn reason(resp: &Message) -> String {
    crate::sip::message::reason_phrase(resp.status().unwrap_or(0)).to_string()
}

/// While the phone rings: the callee's tag from its provisional responses; its requests
/// answered.
fn during_ringing(
    e: Event,
    dialog: &mut Dialog,
    provisional: &mut bool,
    heard: &AtomicBool,
) -> ControlFlow<Option<Outgoing>, Option<Outgoing>> {
    match e {
        Event::Response { msg, .. } => {
            heard.store(true, Relaxed);
            if msg.status().is_some_and(|s| (100..200).contains(&s)) {
                *provisional = true;
            }
            if msg.status().is_some_and(|s| s > 100) {
                dialog.learn_remote_tag(&msg);
            }
            ControlFlow::Continue(None)
        }
        Event::Request { msg, from } if msg.method() != "ACK" => {
            ControlFlow::Continue(Some((msg.response(481, "Call/Transaction Does Not Exist", None), from)))
        }
        _ => ControlFlow::Continue(None),
    }
}

/// CANCELs a ringing INVITE (RFC 3261 §9.1: its Via, Request-URI, Call-ID, From, To and CSeq
/// number) and waits a little for the INVITE's final response; the 2xx when it was answered all
/// the same.
async fn cancel(client: &mut Client, invite: &Message, key: &str, to: SocketAddr) -> Option<Message> {
    let mut c = Message::request("CANCEL", invite.request_uri().unwrap_or_default());
    for h in ["Via", "Max-Forwards", "From", "To", "Call-ID"] {
        c.push(h, invite.header(h).unwrap_or_default());
    }
    c.push("CSeq", format!("{} CANCEL", invite.cseq().map_or(1, |c| c.0)));
    if client.send_request(&c, to).await.is_err() {
        client.abandon(key);
        return None;
    }
    let final_ = tokio::time::timeout(HANGUP_WITHIN, client.final_response(key, |_| ControlFlow::Continue(None))).await;
    match final_ {
        Ok(Ok(r)) if r.status().is_some_and(|s| (200..300).contains(&s)) => Some(r),
        Ok(_) => None,
        Err(_) => {
            client.abandon(key);
            None
        }
    }
}

/// Sends BYE to `to`, the dialog's next hop, and waits a little for its answer.
async fn hang_up(client: &mut Client, dialog: &mut Dialog, local_tag: &str, via: String, to: SocketAddr) {
    let bye = dialog.request("BYE", None, via);
    let id = DialogId::of(dialog, local_tag, to);
    if let Ok(key) = client.send_request(&bye, to).await {
        let answered = client.final_response(&key, |e| match e {
            Event::Request { msg, from } if msg.method() != "ACK" => {
                ControlFlow::Continue(Some((id.answer(&msg, from), from)))
            }
            _ => ControlFlow::Continue(None),
        });
        if tokio::time::timeout(HANGUP_WITHIN, answered).await.is_err() {
            client.abandon(&key);
        }
    }
}

/// Plays `program` (20 ms RTP packets, paced by the clock) to `to` until its end or `until`,
/// listening for digit 1 (RFC 4733 on `rtp`, INFO on `client`), the callee's BYE and an
/// acknowledgement from elsewhere. Returns how it ended and the samples played.
#[allow(clippy::too_many_arguments)]
async fn speak(
    client: &mut Client,
    (ack, sip_peer): (&Message, SocketAddr),
    dialog: &DialogId,
    rtp: &UdpSocket,
    to: SocketAddr,
    (codec, pt, telephone_event): (Codec, u8, Option<u8>),
    program: &[i16],
    until: Instant,
    acked: &mut watch::Receiver<bool>,
) -> (Ended, usize) {
    let (mut seq, mut ts, ssrc) = (rand::random::<u16>(), rand::random::<u32>(), rand::random::<u32>());
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut digits = DtmfReceiver::new();
    let mut buf = vec![0u8; 2048];
    let mut payload = Vec::with_capacity(FRAME);
    let mut frame = [0i16; FRAME];
    let mut played = 0usize;
    let mut follow_acks = true;
    // The callee's stream: the first SSRC heard from the answer's address.
    let mut their_ssrc = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if played >= program.len() || Instant::now() >= until {
                    return (Ended::Unacknowledged, played);
                }
                let part = &program[played..(played + FRAME).min(program.len())];
                frame.fill(0);
                frame[..part.len()].copy_from_slice(part);
                payload.clear();
                codec.encode_into(&frame, &mut payload);
                let packet = RtpPacketBuilder::<&[u8], &[u8]>::new()
                    .payload_type(pt)
                    .marker_bit(played == 0)
                    .sequence_number(seq)
                    .timestamp(ts)
                    .ssrc(ssrc)
                    .payload(payload.as_slice())
                    .write_vec_unchecked();
                // A lost packet is a gap in the speech, not a reason to stop.
                let _ = rtp.send_to(&packet, to).await;
                (seq, ts) = (seq.wrapping_add(1), ts.wrapping_add(FRAME as u32));
                played += FRAME;
            }
            got = rtp.recv_from(&mut buf) => {
                // Only the callee's media (the answer's address) may press 1.
                let Ok((n, from)) = got else { continue };
                if from.ip() != to.ip() {
                    continue;
                }
                let Ok(p) = RtpPacket::parse(&buf[..n]) else { continue };
                if *their_ssrc.get_or_insert(p.ssrc()) != p.ssrc() {
                    continue;
                }
                let event = Some(p.payload_type()) == telephone_event
                    || (p.payload_type() == OFFERED_TELEPHONE_EVENT && p.payload_type() != pt);
                if event && digits.on_packet(p.timestamp(), p.payload()) == Some('1') {
                    return (Ended::Acknowledged("RFC 4733 DTMF"), played);
                }
            }
            got = client.next() => match got {
                Ok(Event::Request { msg, from }) => {
                    if msg.method() == "ACK" {
                        continue;
                    }
                    let _ = client.send_stateless(&dialog.answer(&msg, from), from).await;
                    if !dialog.holds(&msg, from) {
                        tracing::warn!(method = msg.method(), %from, "voice alert: a request outside the call's dialog refused (481)");
                        continue;
                    }
                    match msg.method() {
                        "BYE" => return (Ended::HungUpByCallee, played),
                        "INFO" if digit_of_info(&msg.content_type().unwrap_or_default(), &msg.body) == Some('1') => {
                            return (Ended::Acknowledged("SIP INFO"), played);
                        }
                        _ => {}
                    }
                }
                // The 2xx again (our ACK was lost): the ACK again (RFC 3261 §13.2.2.4).
                Ok(Event::Response { msg, .. } | Event::Stray { msg, .. })
                    if msg.cseq().is_some_and(|c| c.1 == "INVITE") && msg.status().is_some_and(|s| (200..300).contains(&s)) =>
                {
                    let _ = client.send_stateless(ack, sip_peer).await;
                }
                Ok(_) => {}
                Err(e) => return (Ended::Lost(e.to_string()), played),
            },
            acknowledged = async { acked.wait_for(|a| *a).await.is_ok() }, if follow_acks => {
                if acknowledged {
                    return (Ended::AcknowledgedElsewhere, played);
                }
                // The dispatcher has gone (the core is stopping): play on to the end.
                follow_acks = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse::parse_datagram;

    fn info(call_id: &str, from_tag: &str, to_tag: Option<&str>) -> Message {
        let to = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let raw = format!(
            "INFO sip:sosdesk@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKx\r\n\
             Max-Forwards: 70\r\nFrom: <sip:officer@10.0.0.9>;tag={from_tag}\r\n\
             To: <sip:sosdesk@127.0.0.1>{to}\r\nCall-ID: {call_id}\r\nCSeq: 2 INFO\r\n\
             Content-Type: application/dtmf-relay\r\nContent-Length: 10\r\n\r\nSignal=1\r\n"
        );
        parse_datagram(raw.as_bytes()).unwrap()
    }

    fn dialog(transport: Transport) -> DialogId {
        DialogId {
            call_id: "abc@127.0.0.1".into(),
            local_tag: "ours".into(),
            remote_tag: Some("theirs".into()),
            transport,
            // Where the INVITE went; the answer's Contact on another host (10.0.0.10).
            hosts: ["10.0.0.9".parse().unwrap(), "10.0.0.10".parse().unwrap()],
        }
    }

    #[test]
    fn only_requests_of_the_dialog_from_its_peer_are_answered_others_get_481() {
        let d = dialog(Transport::Udp);
        let peer: SocketAddr = "10.0.0.9:5060".parse().unwrap();
        let good = info("abc@127.0.0.1", "theirs", Some("ours"));
        assert!(d.holds(&good, peer));
        assert_eq!(d.answer(&good, peer).status(), Some(200));
        // (Another port of the peer's host: the same peer, e.g. a phone's other socket.)
        assert!(d.holds(&good, "10.0.0.9:5062".parse().unwrap()));
        for (why, msg, from) in [
            ("another Call-ID", info("other@127.0.0.1", "theirs", Some("ours")), peer),
            ("another From tag", info("abc@127.0.0.1", "spoofed", Some("ours")), peer),
            ("another To tag", info("abc@127.0.0.1", "theirs", Some("spoofed")), peer),
            ("no To tag", info("abc@127.0.0.1", "theirs", None), peer),
            ("from another host over UDP", good.clone(), "10.0.0.66:5060".parse().unwrap()),
        ] {
            assert!(!d.holds(&msg, from), "{why}: held");
            assert_eq!(d.answer(&msg, from).status(), Some(481), "{why}");
        }
        // The dialog's next hop (the answer's Contact, where the BYE goes) is the peer too.
        assert!(d.holds(&good, "10.0.0.10:5072".parse().unwrap()));
        // Over TCP/TLS the connection is the peer: the source address is not compared.
        assert!(dialog(Transport::Tls).holds(&good, "10.0.0.66:5060".parse().unwrap()));
        // Before the callee's tag is known, nothing is inside the dialog.
        let early = DialogId { remote_tag: None, ..dialog(Transport::Udp) };
        assert!(!early.holds(&good, peer));
    }

    /// The dialog after a 2xx with these Contact / Record-Route lines, its INVITE sent to
    /// 10.0.0.9:5060 over `transport`.
    fn answered(transport: Transport, extra: &str) -> Dialog {
        let mut d = Dialog::outbound(
            "abc@127.0.0.1".into(),
            "<sip:sosdesk@127.0.0.1:5070>;tag=ours".into(),
            "<sip:officer@10.0.0.9>".into(),
            "sip:officer@10.0.0.9".into(),
            Peer { transport, addr: "10.0.0.9:5060".parse().unwrap() },
        );
        let raw = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa\r\n\
             From: <sip:sosdesk@127.0.0.1:5070>;tag=ours\r\nTo: <sip:officer@10.0.0.9>;tag=theirs\r\n\
             Call-ID: abc@127.0.0.1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        let ok = parse_datagram(raw.as_bytes()).unwrap();
        d.learn_remote_tag(&ok);
        d.confirm(&ok);
        d
    }

    #[tokio::test]
    async fn ack_and_bye_go_to_the_dialogs_next_hop_and_fall_back_to_the_invites_address() {
        // No resolver: a name is not resolved, and the requests go where the INVITE went
        // (a name through a real DNS server: tests/it/voice_channel.rs).
        let no_dns: Dns = Err("no resolver in this test".into());
        let no_dns = &no_dns;
        let hop = |d: Dialog| async move { dialog_hop(no_dns, &d, d.peer.transport, "c").await.to_string() };
        for (why, extra, want) in [
            ("a Contact on another port", "Contact: <sip:officer@10.0.0.9:5072>\r\n", "10.0.0.9:5072"),
            ("a Contact on another host", "Contact: <sip:officer@10.0.0.10;transport=udp>\r\n", "10.0.0.10:5060"),
            ("an IPv6 Contact", "Contact: <sip:officer@[2001:db8::5]:5070>\r\n", "[2001:db8::5]:5070"),
            (
                "a loose route",
                "Contact: <sip:officer@10.0.0.10>\r\nRecord-Route: <sip:10.0.0.1:5080;lr>\r\n",
                "10.0.0.1:5080",
            ),
            ("a strict route", "Contact: <sip:officer@10.0.0.10>\r\nRecord-Route: <sip:10.0.0.2>\r\n", "10.0.0.2:5060"),
            // Nowhere sosdesk can send to over UDP: where the INVITE went.
            ("a tel: Contact", "Contact: <tel:+14255550100>\r\n", "10.0.0.9:5060"),
            ("a TCP Contact", "Contact: <sip:officer@10.0.0.10;transport=tcp>\r\n", "10.0.0.9:5060"),
            ("a sips: Contact", "Contact: <sips:officer@10.0.0.10>\r\n", "10.0.0.9:5060"),
            ("a name that does not resolve", "Contact: <sip:officer@no-such-host.invalid>\r\n", "10.0.0.9:5060"),
            ("no Contact", "", "10.0.0.9:5060"),
        ] {
            assert_eq!(hop(answered(Transport::Udp, extra)).await, want, "{why}");
        }
        // Over TCP the requests stay on the INVITE's connection.
        let tcp = answered(Transport::Tcp, "Contact: <sip:officer@10.0.0.10:5072;transport=tcp>\r\n");
        assert_eq!(hop(tcp).await, "10.0.0.9:5060");
    }
}
