//! The engine task's TCP and TLS connections: one per peer, opened on first use and reused (RFC
//! 3261 §18.1.1), whoever opened it; what waits for a connection being opened; and the peers
//! whose connection has closed, so that a response still finds its way (§18.2.2).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::sip::transaction::{Peer, Transmit};

/// Closed connections remembered for their responses; beyond, the older half is forgotten (a
/// response for one of those then waits for an `Opened` that does not come, and is dropped
/// with the stale waits, below: lost as it was before §18.2.2 was followed).
const CLOSED_KEPT: usize = 4096;
/// Beyond this many peers with bytes waiting, those waiting longer than [`STALE_WAIT`] are
/// dropped: no connection is opened or announced that late.
const WAITING_KEPT: usize = 1024;
const STALE_WAIT: Duration = Duration::from_secs(64);

/// Bytes waiting for a connection.
struct Queued {
    bytes: Bytes,
    at: Instant,
    /// A call's INVITE on a route: given up by the engine once it has waited longer than the
    /// route's timeout (the call went on), or once its connection closed (the engine fails the
    /// call over then): never sent late. Everything else (responses, BYE, ACK, CANCEL) goes out
    /// however late its connection opens.
    initial_invite: bool,
    response: bool,
}

enum Written {
    Sent,
    /// Its task has ended: the connection is closing.
    Dead,
    NoConnection,
}

#[derive(Default)]
pub(super) struct Streams {
    /// The open connection to each peer (its writer, and its id: a later connection to the same
    /// peer may announce itself before the earlier one's close).
    open: HashMap<Peer, (mpsc::UnboundedSender<Bytes>, u64)>,
    /// Bytes for a connection not open yet: one being opened by us; one a peer opened whose
    /// `Opened` the engine task has not handled yet (a request on it can come first, through
    /// the urgent lane); or the next one, once the `Closed` of a connection whose task has
    /// ended is handled (not before: the engine must hear of that close first).
    waiting: HashMap<Peer, Vec<Queued>>,
    /// Peers whose connection has closed, and when.
    closed: HashMap<Peer, Instant>,
}

impl Streams {
    /// A connection is open: what waited for it is sent, but for a call's INVITE that waited
    /// longer than `given_up_after` (the route's timeout: the call went on, and a provider
    /// would ring twice).
    pub(super) fn opened(
        &mut self,
        peer: Peer,
        tx: mpsc::UnboundedSender<Bytes>,
        id: u64,
        given_up_after: Duration,
        now: Instant,
    ) {
        for q in self.waiting.remove(&peer).unwrap_or_default() {
            if q.initial_invite && now.saturating_duration_since(q.at) > given_up_after {
                tracing::warn!(%peer, "connection opened too late: an INVITE that waited for it was given up, not sent");
                continue;
            }
            let _ = tx.send(q.bytes);
        }
        self.closed.remove(&peer);
        self.open.insert(peer, (tx, id));
    }

    /// The connection `id` to `peer` closed: `Some(current)` if it was the peer's current one
    /// (a later connection may have replaced it), with, in `current`, the peer to open a new
    /// connection to when requests wait for one (the caller opens it once the engine has
    /// handled the close). A call's INVITE waiting there is dropped: the engine fails its call
    /// over as it handles the close.
    pub(super) fn closed(&mut self, peer: Peer, id: u64) -> Option<Option<Peer>> {
        if self.open.get(&peer).is_none_or(|(_, open)| *open != id) {
            return None;
        }
        self.open.remove(&peer);
        self.remember_closed(peer);
        let Some(queued) = self.waiting.get_mut(&peer) else { return Some(None) };
        queued.retain(|q| !q.initial_invite);
        if queued.is_empty() {
            self.waiting.remove(&peer);
            return Some(None);
        }
        Some(Some(peer))
    }

    /// A connection we were opening could not be: what waited for it is dropped. Whether a
    /// request was among it (then the engine fails over what it was for; a response sent back
    /// to a caller's Via that nobody listens on is no reason to).
    pub(super) fn open_failed(&mut self, peer: Peer) -> bool {
        self.waiting.remove(&peer).unwrap_or_default().iter().any(|q| !q.response)
    }

    /// Send `t` over its peer's connection. Returns the peer to open a connection to, when one
    /// is needed (the caller starts `transport::connect`; `t` waits for it).
    #[must_use]
    pub(super) fn send(&mut self, t: Transmit) -> Option<Peer> {
        let mut peer = t.peer;
        let dead = match self.write(peer, &t.bytes) {
            Written::Sent => return None,
            Written::Dead => true,
            Written::NoConnection => false,
        };
        let queued = Queued {
            bytes: t.bytes,
            at: Instant::now(),
            initial_invite: t.initial_invite,
            response: t.reconnect.is_some(),
        };
        match t.reconnect {
            // A response whose request's connection has closed (or is closing: its task has
            // ended, its `Closed` is on the way) goes where the request's Via says (§18.2.2),
            // not to the closed connection's port, which nobody listens on.
            Some(r) if dead || self.closed.contains_key(&peer) => {
                tracing::info!(from = %peer, to = %r.peer, name = ?r.name, "the request's connection has closed: its response goes to the address of its Via (RFC 3261 §18.2.2)");
                peer = r.peer;
                match self.write(peer, &queued.bytes) {
                    Written::Sent => return None,
                    Written::Dead => return self.wait(peer, queued, false),
                    Written::NoConnection => {}
                }
            }
            // A response on a connection whose `Opened` is still on its way: it waits for it
            // (connecting to the peer's port would reach nobody).
            Some(_) => return self.wait(peer, queued, false),
            // A request on a connection whose task has ended: it waits for the engine to hear
            // of the close; the next connection is opened then (`closed`).
            None if dead => return self.wait(peer, queued, false),
            None => {}
        }
        self.wait(peer, queued, true)
    }

    /// Queue `q` for `peer`. Returns the peer to connect to if `connect` and nothing was
    /// waiting there yet (else a connection is on its way already, or will be opened later).
    fn wait(&mut self, peer: Peer, q: Queued, connect: bool) -> Option<Peer> {
        if self.waiting.len() >= WAITING_KEPT {
            // Those whose `Opened` never came (a close forgotten beyond CLOSED_KEPT).
            self.waiting.retain(|_, queued| queued.iter().any(|q| q.at.elapsed() < STALE_WAIT));
        }
        match self.waiting.get_mut(&peer) {
            Some(queued) => {
                queued.push(q);
                None
            }
            None => {
                self.waiting.insert(peer, vec![q]);
                connect.then_some(peer)
            }
        }
    }

    /// Write on the open connection to `peer`. A connection whose task has ended stays listed
    /// until its `Closed` (which then tells the engine, see [`Streams::closed`]).
    fn write(&self, peer: Peer, bytes: &Bytes) -> Written {
        match self.open.get(&peer) {
            None => Written::NoConnection,
            Some((tx, _)) if tx.send(bytes.clone()).is_ok() => Written::Sent,
            Some(_) => Written::Dead,
        }
    }

    fn remember_closed(&mut self, peer: Peer) {
        if self.closed.len() >= CLOSED_KEPT {
            let mut ages: Vec<Instant> = self.closed.values().copied().collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            self.closed.retain(|_, at| *at > cut);
        }
        self.closed.insert(peer, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::Transport;
    use std::net::SocketAddr;

    fn peer(port: u16) -> Peer {
        Peer { transport: Transport::Tcp, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    fn transmit(to: Peer, text: &'static str) -> Transmit {
        Transmit {
            peer: to,
            bytes: Bytes::from_static(text.as_bytes()),
            reconnect: None,
            initial_invite: text.starts_with("INVITE"),
        }
    }

    fn open(s: &mut Streams, p: Peer, id: u64) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        s.opened(p, tx, id, Duration::from_secs(2), Instant::now());
        rx
    }

    fn received(rx: &mut mpsc::UnboundedReceiver<Bytes>) -> Vec<Bytes> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn the_closed_are_remembered_within_a_bound_and_forgotten_when_they_open_again() {
        let mut s = Streams::default();
        for port in 0..CLOSED_KEPT as u16 + 10 {
            let _rx = open(&mut s, peer(port), port as u64);
            assert_eq!(s.closed(peer(port), port as u64), Some(None));
        }
        assert!(s.closed.len() <= CLOSED_KEPT, "{}", s.closed.len());
        let last = peer(CLOSED_KEPT as u16 + 9);
        assert!(s.closed.contains_key(&last));
        let _rx = open(&mut s, last, 1);
        assert!(!s.closed.contains_key(&last));
        // A close of an older connection to the same peer leaves the newer one open.
        assert_eq!(s.closed(last, 0), None);
        assert!(s.open.contains_key(&last));
    }

    #[test]
    fn a_response_handled_before_its_connections_opened_waits_for_it_and_one_after_its_close_reconnects() {
        let mut s = Streams::default();
        let pbx = peer(40_000);
        let via = SocketAddr::from(([127, 0, 0, 1], 5062));
        let response = |text| Transmit {
            reconnect: Some(crate::sip::transaction::Reconnect {
                peer: Peer { transport: Transport::Tcp, addr: via },
                name: None,
            }),
            ..transmit(pbx, text)
        };
        // The request came on a connection the engine task has not heard of yet: no connection
        // is opened to the caller's port (nobody listens there), the responses wait for it.
        assert_eq!(s.send(response("100")), None);
        assert_eq!(s.send(response("180")), None);
        let mut rx = open(&mut s, pbx, 7);
        assert_eq!(received(&mut rx), ["100", "180"]);
        assert_eq!(s.send(response("200")), None);
        assert_eq!(received(&mut rx), ["200"], "on the connection, once open");
        // Once it has closed, a response goes to its Via's address (§18.2.2): a connection there.
        assert_eq!(s.closed(pbx, 7), Some(None));
        assert_eq!(s.send(response("BYE's 200")), Some(Peer { transport: Transport::Tcp, addr: via }));
        // A failed connection there holds no request: nothing for the engine to fail over.
        assert!(!s.open_failed(Peer { transport: Transport::Tcp, addr: via }));
    }

    #[test]
    fn a_late_connection_carries_all_but_the_invites_the_route_timer_gave_up() {
        let mut s = Streams::default();
        let provider = peer(5070);
        assert_eq!(s.send(transmit(provider, "INVITE")), Some(provider));
        assert_eq!(s.send(transmit(provider, "CANCEL")), None, "the connection is on its way");
        let (tx, mut rx) = mpsc::unbounded_channel();
        s.opened(provider, tx, 8, Duration::from_secs(2), Instant::now() + Duration::from_secs(3));
        assert_eq!(received(&mut rx), ["CANCEL"], "the INVITE was given up by its route timer");
    }

    #[test]
    fn a_request_that_finds_its_connection_closing_waits_for_the_engine_to_hear_of_the_close() {
        let mut s = Streams::default();
        let provider = peer(5070);
        let rx = open(&mut s, provider, 1);
        drop(rx); // the connection's task has ended; its `Closed` is on the way
                  // No new connection yet: its `Opened` could overtake the old one's `Closed`, and the
                  // engine would never hear that the calls ringing there lost their connection.
        assert_eq!(s.send(transmit(provider, "INVITE")), None);
        assert_eq!(s.send(transmit(provider, "BYE")), None);
        // The close: the INVITE goes (the engine fails its call over), the BYE waits for the
        // connection opened now.
        assert_eq!(s.closed(provider, 1), Some(Some(provider)));
        let mut rx = open(&mut s, provider, 2);
        assert_eq!(received(&mut rx), ["BYE"]);
    }
}
