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

use bytes::Bytes;
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
    triage: TriageSwitch,
    urgent: mpsc::UnboundedSender<Inbound>,
    ordinary: mpsc::Sender<Inbound>,
    dropped: Arc<AtomicU64>,
}

/// The triage every sender reads, swapped whole by a reload (`Core::reload`): a message is triaged
/// by the config before or after it, never half of each.
pub(crate) type TriageSwitch = Arc<std::sync::RwLock<Arc<Triage>>>;

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
    let triage = Arc::new(std::sync::RwLock::new(Arc::new(triage)));
    let lanes = Lanes { triage, urgent: urgent_tx, ordinary: ordinary_tx, dropped: dropped.clone() };
    (lanes, LaneReceivers { urgent, ordinary, dropped })
}

impl Lanes {
    /// Where a reload puts the new config's triage.
    pub fn triage_switch(&self) -> TriageSwitch {
        self.triage.clone()
    }

    fn lane(&self, inbound: &Inbound) -> Lane {
        match inbound {
            // The lock is held for one read of the pointer; a poisoned one still holds a triage.
            Inbound::Message(m, _) => self.triage.read().unwrap_or_else(|e| e.into_inner()).clone().lane(m),
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

    /// For a stream: never waits either, so an emergency INVITE is never held up behind the
    /// junk before it on the same connection (a PBX's trunk carries both). When the ordinary
    /// lane is full, a request is answered 503 + Retry-After at once on its own connection
    /// (`reply`) rather than dropped: over TCP it would not be retransmitted.
    pub fn offer_stream(&self, inbound: Inbound, reply: impl FnOnce(Bytes)) {
        match self.lane(&inbound) {
            Lane::Urgent => {
                let _ = self.urgent.send(inbound);
            }
            Lane::Ordinary => {
                if let Err(mpsc::error::TrySendError::Full(refused)) = self.ordinary.try_send(inbound) {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    if let Inbound::Message(msg, _) = refused {
                        if msg.is_request() && msg.method() != "ACK" {
                            let tag = crate::sip::ids::new_tag();
                            let mut r = msg.response(503, "Service Unavailable", Some(&tag));
                            r.push("Retry-After", "10");
                            reply(Bytes::from(r.to_bytes()));
                        }
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn lanes_of_the_lab() -> (Lanes, LaneReceivers) {
        let cfg = Config::from_toml(include_str!("../examples/lab.toml"), std::path::Path::new("lab.toml")).unwrap();
        lanes(Triage::new(&cfg))
    }

    fn request(ruri: &str, n: usize) -> Inbound {
        let raw = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5062;branch=z9hG4bK{n}\r\nFrom: <sip:a@127.0.0.1>;tag=f\r\n\
To: <{ruri}>\r\nCall-ID: c{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        let peer = Peer { transport: Transport::Tcp, addr: "127.0.0.1:5062".parse().unwrap() };
        Inbound::Message(parse_datagram(raw.as_bytes()).unwrap(), peer)
    }

    #[test]
    fn a_full_ordinary_lane_never_holds_up_an_emergency_invite_on_the_same_stream() {
        let (lanes, mut rx) = lanes_of_the_lab();
        let mut replies = Vec::new();
        for n in 0..ORDINARY_CAPACITY + 3 {
            lanes.offer_stream(request("sip:4255550000@127.0.0.1", n), |b| replies.push(b));
        }
        // The three beyond the lane's bound were answered 503 at once, on their connection.
        assert_eq!(replies.len(), 3);
        let text = String::from_utf8_lossy(&replies[0]).into_owned();
        assert!(
            text.starts_with("SIP/2.0 503 Service Unavailable\r\n") && text.contains("Retry-After: 10\r\n"),
            "{text}"
        );
        assert!(text.contains(";tag="), "a final response carries a To tag: {text}");
        assert_eq!(rx.take_dropped(), 3);
        assert!(rx.behind());
        // The emergency INVITE behind them is in the urgent lane at once.
        lanes.offer_stream(request("sip:911@127.0.0.1", 99_999), |_| panic!("never refused"));
        assert!(
            matches!(rx.urgent.try_recv(), Ok(Inbound::Message(m, _)) if m.request_uri() == Some("sip:911@127.0.0.1"))
        );
    }

    #[test]
    fn datagrams_beyond_the_bound_are_dropped_and_counted_never_an_emergency_one() {
        let (lanes, mut rx) = lanes_of_the_lab();
        for n in 0..ORDINARY_CAPACITY + 5 {
            lanes.offer(request("sip:4255550000@127.0.0.1", n));
        }
        assert_eq!(rx.take_dropped(), 5);
        assert_eq!(rx.take_dropped(), 0, "counted once");
        for n in 0..10_000 {
            lanes.offer(request("sip:911@127.0.0.1", n));
        }
        let mut urgent = 0;
        while rx.urgent.try_recv().is_ok() {
            urgent += 1;
        }
        assert_eq!(urgent, 10_000, "the urgent lane has no bound");
    }
}
