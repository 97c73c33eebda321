//! Received SIP, emergency first: the lanes between the sockets and the engine task.
//!
//! Datagrams are read by a task of their own, as fast as they arrive, so the kernel's receive
//! buffer never overflows while the engine is busy (an overflowing buffer drops whatever comes
//! next, emergency INVITEs included). Each message is parsed and triaged at once
//! ([`crate::routing::triage`]) into the urgent lane (unbounded, served first) or the ordinary
//! lane (bounded). The engine task serves urgent work first, answers ordinary requests with
//! 503 + Retry-After when their lane is backed up ([`SHED_AT`]), and when the ordinary lane is
//! full a datagram is dropped unread and counted. Nothing in this path ever drops, delays
//! behind junk, or rate-limits an emergency INVITE.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::routing::triage::{Lane, Triage};
use crate::sip::parse::{parse_datagram, Rejection, MAX_MESSAGE};
use crate::sip::transaction::{Peer, Transport};
use crate::sip::Message;

/// Ordinary messages that may wait; beyond, datagrams are dropped unread (and counted).
pub const ORDINARY_CAPACITY: usize = 8_192;
/// Ordinary requests waiting beyond this are answered 503 + Retry-After instead of handled:
/// a few milliseconds of the engine's work.
pub const SHED_AT: usize = 256;
/// Asked of the kernel for the UDP socket's receive buffer: a burst the intake task has not
/// read yet waits there rather than being dropped.
const RECEIVE_BUFFER: usize = 8 << 20;

/// A message read from the network, for the engine.
#[derive(Debug)]
pub(crate) enum Inbound {
    Message(Message, Peer),
    Rejected(Rejection, Peer),
}

/// The sending side of the lanes: cheap to clone (the UDP intake and every TCP connection).
#[derive(Clone)]
pub(crate) struct Lanes {
    triage: Arc<Triage>,
    urgent: mpsc::UnboundedSender<Inbound>,
    ordinary: mpsc::Sender<Inbound>,
    dropped: Arc<AtomicU64>,
}

/// The engine task's side of the lanes.
pub(crate) struct LaneReceivers {
    pub urgent: mpsc::UnboundedReceiver<Inbound>,
    pub ordinary: mpsc::Receiver<Inbound>,
    dropped: Arc<AtomicU64>,
}

impl LaneReceivers {
    /// Ordinary datagrams dropped unread since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Whether ordinary requests are waiting beyond [`SHED_AT`].
    pub fn behind(&self) -> bool {
        self.ordinary.len() > SHED_AT
    }
}

pub(crate) fn lanes(triage: Triage) -> (Lanes, LaneReceivers) {
    let (urgent_tx, urgent) = mpsc::unbounded_channel();
    let (ordinary_tx, ordinary) = mpsc::channel(ORDINARY_CAPACITY);
    let dropped = Arc::new(AtomicU64::new(0));
    let lanes = Lanes { triage: Arc::new(triage), urgent: urgent_tx, ordinary: ordinary_tx, dropped: dropped.clone() };
    (lanes, LaneReceivers { urgent, ordinary, dropped })
}

impl Lanes {
    fn lane(&self, inbound: &Inbound) -> Lane {
        match inbound {
            Inbound::Message(m, _) => self.triage.lane(m),
            Inbound::Rejected(..) => Lane::Ordinary,
        }
    }

    /// For datagrams: never waits. A full ordinary lane drops the message (counted): the sender
    /// retransmits, and an emergency INVITE never goes this way.
    pub fn offer(&self, inbound: Inbound) {
        match self.lane(&inbound) {
            Lane::Urgent => {
                let _ = self.urgent.send(inbound);
            }
            Lane::Ordinary => {
                if let Err(mpsc::error::TrySendError::Full(_)) = self.ordinary.try_send(inbound) {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// For a stream: waits for room in the ordinary lane, so TCP's flow control slows down a
    /// connection that sends faster than the core serves.
    pub async fn send(&self, inbound: Inbound) {
        match self.lane(&inbound) {
            Lane::Urgent => {
                let _ = self.urgent.send(inbound);
            }
            Lane::Ordinary => {
                let _ = self.ordinary.send(inbound).await;
            }
        }
    }
}

/// Reads the UDP socket until stopped: parse, triage, into a lane.
pub(crate) async fn udp_intake(sock: Arc<UdpSocket>, lanes: Lanes, mut stop: watch::Receiver<bool>) {
    if let Err(e) = socket2::SockRef::from(sock.as_ref()).set_recv_buffer_size(RECEIVE_BUFFER) {
        tracing::warn!(error = %e, "cannot enlarge the UDP receive buffer: bursts may be dropped by the kernel");
    }
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, from) = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP port-unreachable surfaces as a receive error on some systems: not fatal.
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive error");
                    continue;
                }
            },
        };
        let data = &buf[..n];
        // RFC 5626 §4.4.1 CRLF keep-alives and stray whitespace are not SIP messages.
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let peer = Peer { transport: Transport::Udp, addr: from };
        lanes.offer(match parse_datagram(data) {
            Ok(m) => Inbound::Message(m, peer),
            Err(rej) => Inbound::Rejected(rej, peer),
        });
    }
}
