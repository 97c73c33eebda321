//! The I/O around a [`MediaSession`]: one tokio task per anchored call owns the session, the
//! legs' UDP sockets (each read by a small task of its own) and the 20 ms clock, and writes the
//! recording. The engine talks to it with [`MediaCommand`]s; RTP ports come from [`RtpPorts`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::mixer::LegId;
use super::session::{LegParams, MediaSession, Role};
use super::wav::{Recording, WavWriter};

/// The RTP port range sosdesk binds its legs in (even ports, RFC 3550 §11: RTCP would be the odd
/// one above), and the address it writes into SDP.
pub struct RtpPorts {
    bind: IpAddr,
    advertise: IpAddr,
    first: u16,
    last: u16,
    next: AtomicU32,
}

/// How many ports one `open` tries at most. Ports are handed out round the range, so the ones
/// ahead of the cursor are the longest taken: the likeliest free again. Trying the whole range
/// when it is full (every port still held by live calls) cost 500 failed binds per leg, and
/// under overload that turned a burst into a collapse the core did not recover from (routing
/// fell to ~200 calls/s: the wire benchmark, BENCHMARKS.md). A call without a port is still
/// routed; its media passes through.
pub const MAX_PROBES: u32 = 32;

impl RtpPorts {
    pub fn new(bind: IpAddr, advertise: IpAddr, first: u16, last: u16) -> RtpPorts {
        let first = first + (first % 2);
        RtpPorts { bind, advertise, first, last: last.max(first), next: AtomicU32::new(0) }
    }

    /// Bind the next free even port of the range (skipping ones in use, at most [`MAX_PROBES`]
    /// of them). Returns the socket and the address to put in SDP.
    pub fn open(&self) -> io::Result<(StdUdpSocket, SocketAddr)> {
        let slots = ((self.last - self.first) / 2 + 1) as u32;
        let mut last_err = None;
        for _ in 0..slots.min(MAX_PROBES) {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % slots;
            let port = self.first + (n * 2) as u16;
            match StdUdpSocket::bind(SocketAddr::new(self.bind, port)) {
                Ok(sock) => {
                    sock.set_nonblocking(true)?;
                    return Ok((sock, SocketAddr::new(self.advertise, port)));
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("empty RTP port range")))
    }
}

/// What the engine asks of a call's media task.
#[derive(Debug)]
pub enum MediaCommand {
    AddLeg { leg: LegId, role: Role, params: LegParams, socket: StdUdpSocket },
    UpdateLeg { leg: LegId, params: LegParams },
    RemoveLeg { leg: LegId },
    Close,
}

/// How a recording ended (reported once, when the media task stops).
pub type RecordingReport = Result<Recording, String>;

/// Start the media task of one call. `record_dir`: where its recording goes (none: not
/// recorded). The task ends on [`MediaCommand::Close`] (or when the sender is dropped) and
/// returns how its recording ended.
pub fn spawn(
    call_ref: String,
    record_dir: Option<PathBuf>,
) -> (mpsc::UnboundedSender<MediaCommand>, tokio::task::JoinHandle<Option<RecordingReport>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(call_ref, record_dir, rx));
    (tx, task)
}

struct LegIo {
    socket: Arc<UdpSocket>,
    reader: tokio::task::JoinHandle<()>,
}

/// Datagrams waiting for a call's task: about 2 s of a 3-party conference.
const PACKET_QUEUE: usize = 256;
/// Datagrams handled per wake-up before the clock and commands are looked at again.
const PACKET_BATCH: usize = 32;

async fn run(
    call_ref: String,
    record_dir: Option<PathBuf>,
    mut commands: mpsc::UnboundedReceiver<MediaCommand>,
) -> Option<RecordingReport> {
    let mut session = MediaSession::new(Instant::now(), record_dir.is_some());
    let mut writer: Option<Result<WavWriter, String>> = record_dir.map(|dir| {
        WavWriter::create(&dir, &call_ref).map_err(|e| format!("cannot create the recording in {}: {e}", dir.display()))
    });
    if let Some(Err(e)) = &writer {
        tracing::error!(call = %call_ref, "{e}");
    }
    // Bounded: a flood of datagrams is dropped at the socket reader (as a full socket buffer
    // would), never queued without limit ahead of the clock and the commands.
    let (pkt_tx, mut pkt_rx) = mpsc::channel::<(LegId, SocketAddr, Vec<u8>)>(PACKET_QUEUE);
    let mut legs: HashMap<LegId, LegIo> = HashMap::new();
    loop {
        let deadline = tokio::time::Instant::from_std(session.next_timeout());
        tokio::select! {
            // Commands (Close above all) and the 20 ms clock first: a stream of packets must not
            // starve the mix, the recording or the end of the call.
            biased;
            cmd = commands.recv() => match cmd {
                Some(MediaCommand::AddLeg { leg, role, params, socket }) => match UdpSocket::from_std(socket) {
                    Ok(sock) => {
                        let sock = Arc::new(sock);
                        let reader = tokio::spawn(read_leg(leg, sock.clone(), pkt_tx.clone()));
                        if let Some(old) = legs.insert(leg, LegIo { socket: sock, reader }) {
                            old.reader.abort();
                        }
                        session.add_leg(leg, role, params);
                    }
                    Err(e) => tracing::error!(call = %call_ref, leg, error = %e, "cannot use the RTP socket; leg has no media"),
                },
                Some(MediaCommand::UpdateLeg { leg, params }) => session.update_leg(leg, params),
                Some(MediaCommand::RemoveLeg { leg }) => {
                    session.remove_leg(leg);
                    if let Some(io) = legs.remove(&leg) {
                        io.reader.abort();
                    }
                }
                Some(MediaCommand::Close) | None => break,
            },
            _ = tokio::time::sleep_until(deadline) => session.on_timeout(Instant::now()),
            Some((leg, from, data)) = pkt_rx.recv() => {
                session.on_packet(leg, from, &data, Instant::now());
                // Take some more of what is already waiting before sending: fewer wake-ups, and a
                // bounded batch so the clock is checked again soon.
                for _ in 0..PACKET_BATCH {
                    let Ok((leg, from, data)) = pkt_rx.try_recv() else { break };
                    session.on_packet(leg, from, &data, Instant::now());
                }
            }
        }
        while let Some(d) = session.poll_transmit() {
            if let Some(io) = legs.get(&d.leg) {
                if let Err(e) = io.socket.try_send_to(&d.bytes, d.to) {
                    // A full buffer or an ICMP error: a lost packet, as on any network.
                    tracing::trace!(call = %call_ref, to = %d.to, error = %e, "RTP send failed");
                }
            }
        }
        // 640 bytes per 20 ms into a 64 KiB buffer: a write system call every two seconds or so,
        // small enough to do here; the final sync runs on the blocking pool.
        while let Some((left, right)) = session.poll_recording() {
            if let Some(Ok(w)) = &mut writer {
                if let Err(e) = w.write(&left, &right) {
                    tracing::error!(call = %call_ref, error = %e, "recording stopped");
                    writer = Some(Err(format!("recording stopped: {e}")));
                }
            }
        }
    }
    for (_, io) in legs.drain() {
        io.reader.abort();
    }
    tracing::debug!(call = %call_ref, stats = ?session.stats, "media closed");
    match writer {
        None => None,
        Some(Err(e)) => Some(Err(e)),
        Some(Ok(w)) => {
            // The final sync waits on the disk: a few at a time, so a slow disk makes
            // recordings queue here instead of growing the blocking pool by a thread per call
            // (a soak on a busy disk reached 180 threads, each with its own allocator cache).
            let _turn = FINISHING.acquire().await;
            let r = tokio::task::spawn_blocking(move || w.finish()).await;
            Some(match r {
                Ok(Ok(rec)) => Ok(rec),
                Ok(Err(e)) => Err(format!("cannot finish the recording: {e}")),
                Err(e) => Err(format!("cannot finish the recording: {e}")),
            })
        }
    }
}

/// Recordings finished (synced, renamed, hashed) at once, at most.
static FINISHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

async fn read_leg(leg: LegId, sock: Arc<UdpSocket>, tx: mpsc::Sender<(LegId, SocketAddr, Vec<u8>)>) {
    let mut buf = vec![0u8; 2048];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => match tx.try_send((leg, from, buf[..n].to_vec())) {
                Ok(()) => {}
                // The call's task is behind (a flood): this datagram is lost, as on a network.
                Err(mpsc::error::TrySendError::Full(_)) => tracing::trace!(leg, "RTP queue full; packet dropped"),
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            },
            // ICMP errors reported on the socket (a party not listening yet): keep reading.
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) => {
                tracing::trace!(leg, error = %e, "RTP receive error")
            }
            // Anything else would repeat at once: stop reading this leg rather than spin.
            Err(e) => {
                tracing::error!(leg, error = %e, "RTP socket failed; this leg receives no more media");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_range_fails_after_a_bounded_search_and_frees_are_found_again() {
        let lo: IpAddr = [127, 0, 0, 1].into();
        // Find a range of 2 * MAX_PROBES even ports that is free now.
        let slots = 2 * MAX_PROBES as u16;
        let ports = (0..200)
            .map(|i| 30_000 + i * 2 * slots)
            .map(|first| RtpPorts::new(lo, lo, first, first + 2 * (slots - 1)))
            .find(|p| (0..slots).all(|i| StdUdpSocket::bind(SocketAddr::new(lo, p.first + 2 * i)).is_ok()))
            .expect("a free port range");
        let mut held: Vec<_> = (0..slots).map(|_| ports.open().expect("a free port").0).collect();
        // Every port taken: refused without trying the whole range.
        assert!(ports.open().is_err());
        // Calls end and free their ports: each open searches on from where the last stopped, so
        // freed ports anywhere in the range are found within a round of the range.
        held.drain(..4);
        let opened = (0..slots as u32 / MAX_PROBES + 1).find_map(|_| ports.open().ok());
        let (sock, addr) = opened.expect("a freed port");
        assert_eq!(sock.local_addr().unwrap().port(), addr.port());
        assert_eq!(addr.port() % 2, 0);
    }
}
