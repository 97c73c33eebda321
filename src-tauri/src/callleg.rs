//! The desk's own leg in an emergency call: the officer's Listen / Talk / Mute / Leave.
//!
//! The leg is a SIP dialog to the call's conference address, `sip:conf-<call id>@<core>`, with
//! the desk account's digest credentials — exactly the path a desk on another machine or a desk
//! phone takes (docs/media.md), so the core decides and audits every join the same way. Listen
//! offers `a=recvonly`, Talk `a=sendrecv`; switching is a re-INVITE, which the core checks again.
//!
//! The audio: RTP from the core is decoded into a [`LiveBuffer`] that the audio device plays; a
//! level meter reports what arrives, so an officer (and a test) can see the call is heard even
//! where no speaker is attached. In Talk, microphone frames are encoded and sent every 20 ms;
//! Mute stops sending (and releases the microphone). A missing device never ends the leg.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtp_types::{RtpPacket, RtpPacketBuilder};
use sosdesk::media::{AudioSdp, Codec, Direction, LocalSdp};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::audio::{level_dbfs, LiveBuffer, Microphone};
use crate::model::LegMode;
use crate::sipua::{CallDialog, CoreSip, Credentials};

/// How often the level meter is reported to the UI.
const LEVEL_EVERY: Duration = Duration::from_millis(250);

/// What the officer asks of a running leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegCommand {
    Mode(LegMode),
    Mute(bool),
    Leave,
}

/// What the leg reports, on its own task (the desk turns it into `desk:leg` for the UI).
#[derive(Debug, Clone, PartialEq)]
pub enum LegUpdate {
    /// The core accepted the leg (or a switch of mode).
    Connected {
        mode: LegMode,
    },
    /// A switch of mode was refused; the leg stays as it was.
    ModeRefused {
        wanted: LegMode,
        reason: String,
    },
    Muted(bool),
    /// Loudness of what arrived from the call in the last interval (dBFS), and packets seen.
    Level {
        dbfs: f32,
        packets: u64,
    },
    /// The microphone is capturing, or why it is not.
    Microphone(Result<(), String>),
    /// The leg is over: the officer left, or the core ended it (the call ended).
    Ended {
        reason: String,
    },
    /// The join failed (refused, no answer): the reason in the officer's words.
    Failed {
        reason: String,
    },
}

pub type Reporter = Arc<dyn Fn(LegUpdate) + Send + Sync>;

/// Everything a join needs.
pub struct JoinRequest {
    /// The core's SIP: where and over which transport.
    pub core: CoreSip,
    pub call_id: String,
    /// The officer's desk account (from the config's `[[desk]]`).
    pub desk_name: String,
    pub credentials: Credentials,
    pub mode: LegMode,
}

/// Starts the leg; returns the channel for the officer's commands. The task ends when the leg
/// does, after a last [`LegUpdate::Ended`] or [`LegUpdate::Failed`].
pub fn spawn(req: JoinRequest, audio: Arc<Mutex<LiveBuffer>>, report: Reporter) -> mpsc::Sender<LegCommand> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let report2 = report.clone();
        if let Err(reason) = run(req, audio, rx, report).await {
            report2(LegUpdate::Failed { reason });
        }
    });
    tx
}

fn direction(mode: LegMode) -> Direction {
    match mode {
        LegMode::Listen => Direction::RecvOnly,
        LegMode::Talk => Direction::SendRecv,
    }
}

/// Where to send and in which codec, from the core's answer.
fn media_of(answer: &sosdesk::sip::Message) -> Result<(SocketAddr, Codec, u8), String> {
    let body = sosdesk::sip::body::sdp_of(answer).ok_or("the core's answer has no SDP")?;
    let sdp = AudioSdp::parse(&body).map_err(|e| format!("the core's SDP answer is unusable: {e}"))?;
    let remote = sdp.remote().ok_or("the core's SDP answer has no RTP address")?;
    let (codec, pt) = sdp.pick(Some(Codec::Pcmu));
    Ok((remote, codec, pt))
}

async fn run(
    req: JoinRequest,
    audio: Arc<Mutex<LiveBuffer>>,
    mut commands: mpsc::Receiver<LegCommand>,
    report: Reporter,
) -> Result<(), String> {
    let uri = format!("sip:conf-{}@{}", req.call_id, req.core.addr());
    let mut dialog =
        CallDialog::new(&req.core, &req.desk_name, &req.credentials.username, uri, Some(req.credentials.clone()))
            .await?;
    // RTP on the address the core reaches this machine at (the dialog's), not loopback: the SDP
    // names it, and a core on another machine sends the call audio there.
    let rtp = UdpSocket::bind(SocketAddr::new(dialog.local.ip(), 0))
        .await
        .map_err(|e| format!("cannot open an RTP socket: {e}"))?;
    let rtp_addr = rtp.local_addr().map_err(|e| e.to_string())?;
    let mut local = LocalSdp::new(rtp_addr);
    let subject = [("Subject", format!("security desk {} joins the emergency call", req.desk_name))];
    let answer = dialog
        .invite(local.offer(Codec::Pcmu, direction(req.mode)), &subject)
        .await
        .map_err(|r| format!("the core refused the join: {r}"))?;
    let (mut remote, mut codec, mut pt) = media_of(&answer)?;
    let mut mode = req.mode;
    let mut muted = false;
    report(LegUpdate::Connected { mode });

    let (mic_tx, mut mic_rx) = mpsc::channel::<Vec<i16>>(4);
    let mut mic: Option<Microphone> = None;
    let open_mic = |report: &Reporter| -> Option<Microphone> {
        let r = report.clone();
        match Microphone::open(mic_tx.clone(), move |e| r(LegUpdate::Microphone(Err(e)))) {
            Ok(m) => {
                report(LegUpdate::Microphone(Ok(())));
                Some(m)
            }
            Err(e) => {
                report(LegUpdate::Microphone(Err(format!("cannot start the microphone thread: {e}"))));
                None
            }
        }
    };
    if mode == LegMode::Talk {
        mic = open_mic(&report);
    }

    let ssrc: u32 = rand::random();
    let mut seq: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let mut marker = true;
    let mut rtp_buf = vec![0u8; 2048];
    let mut pcm = Vec::with_capacity(crate::audio::FRAME);
    let mut heard: Vec<i16> = Vec::with_capacity(2048);
    let mut packets: u64 = 0;
    let mut out = Vec::with_capacity(crate::audio::FRAME);
    let mut send_tick = tokio::time::interval(Duration::from_millis(20));
    send_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut level_tick = tokio::time::interval(LEVEL_EVERY);
    level_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let reason = loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None | Some(LegCommand::Leave) => {
                    mic = None;
                    let _ = dialog.bye().await;
                    break "you left the call".to_string();
                }
                Some(LegCommand::Mute(m)) => {
                    muted = m;
                    // Muted means the microphone is off, not just unheard.
                    mic = if muted || mode == LegMode::Listen { None } else { mic.or_else(|| open_mic(&report)) };
                    marker = true;
                    report(LegUpdate::Muted(muted));
                }
                Some(LegCommand::Mode(wanted)) if wanted != mode => {
                    match dialog.invite(local.offer(codec, direction(wanted)), &[]).await {
                        Ok(answer) => {
                            match media_of(&answer) {
                                Ok(m) => (remote, codec, pt) = m,
                                Err(e) => tracing::warn!(error = %e, "re-INVITE answer without usable SDP; keeping the media"),
                            }
                            mode = wanted;
                            mic = if mode == LegMode::Talk && !muted { mic.or_else(|| open_mic(&report)) } else { None };
                            marker = true;
                            report(LegUpdate::Connected { mode });
                        }
                        Err(r) => report(LegUpdate::ModeRefused { wanted, reason: r.to_string() }),
                    }
                }
                Some(LegCommand::Mode(_)) => {}
            },
            got = dialog.recv() => {
                let ev = got.map_err(|e| format!("SIP socket failed: {e}"))?;
                if dialog.on_event(ev).await {
                    break "the call ended".to_string();
                }
            },
            got = rtp.recv_from(&mut rtp_buf) => {
                // Only the core's media address (its answer) is played: nobody else on the
                // network can put audio in the officer's headset.
                let Ok((n, from)) = got else { continue };
                if from.ip() != remote.ip() {
                    continue;
                }
                let Ok(pkt) = RtpPacket::parse(&rtp_buf[..n]) else { continue };
                // The core sends the codec it answered; G.711 static types are also taken as
                // they are (RFC 3551), whatever was negotiated.
                let rx_codec = match pkt.payload_type() {
                    p if p == pt => codec,
                    0 => Codec::Pcmu,
                    8 => Codec::Pcma,
                    _ => continue, // telephone-event and anything else: nothing to play
                };
                pcm.clear();
                rx_codec.decode_into(pkt.payload(), &mut pcm);
                audio.lock().unwrap_or_else(|p| p.into_inner()).push(&pcm);
                if heard.len() < 8000 {
                    heard.extend_from_slice(&pcm);
                }
                packets += 1;
            },
            _ = send_tick.tick() => {
                // RTP leaves on the network's 20 ms clock, one frame per tick, whatever pace the
                // microphone delivers at (devices drift; some deliver in bursts).
                let frame = mic_rx.try_recv().ok();
                if mode != LegMode::Talk || muted {
                    continue;
                }
                let Some(frame) = frame else {
                    // A gap: the timestamp still moves on, and the next packet is marked.
                    ts = ts.wrapping_add(crate::audio::FRAME as u32);
                    marker = true;
                    continue;
                };
                out.clear();
                codec.encode_into(&frame, &mut out);
                let bytes = RtpPacketBuilder::<&[u8], &[u8]>::new()
                    .payload_type(pt)
                    .marker_bit(std::mem::take(&mut marker))
                    .sequence_number(seq)
                    .timestamp(ts)
                    .ssrc(ssrc)
                    .payload(out.as_slice())
                    .write_vec_unchecked();
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(frame.len() as u32);
                let _ = rtp.send_to(&bytes, remote).await;
            },
            _ = level_tick.tick() => {
                report(LegUpdate::Level { dbfs: level_dbfs(&heard), packets });
                heard.clear();
            },
        }
    };
    drop(mic);
    report(LegUpdate::Ended { reason });
    Ok(())
}
