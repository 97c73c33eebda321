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
    /// A response is sent however late its connection opens; a request that waited beyond the
    /// route timeout has been given up (the call went elsewhere) and is dropped.
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
    /// Bytes for a connection not open yet, and when the first of them was queued: one being
    /// opened by us, or one a peer opened whose `Opened` the engine task has not handled yet
    /// (a request on it can come first, through the urgent lane).
    waiting: HashMap<Peer, (Instant, Vec<Queued>)>,
    /// Peers whose connection has closed, and when.
    closed: HashMap<Peer, Instant>,
}

impl Streams {
    /// A connection is open: what waited for it is sent — requests only if they waited no
    /// longer than `given_up_after` (beyond, they have been given up: the call went to the next
    /// route, and a provider would ring twice).
    pub(super) fn opened(
        &mut self,
        peer: Peer,
        tx: mpsc::UnboundedSender<Bytes>,
        id: u64,
        given_up_after: Duration,
        now: Instant,
    ) {
        if let Some((since, queued)) = self.waiting.remove(&peer) {
            let late = now.saturating_duration_since(since) > given_up_after;
            if late && queued.iter().any(|q| !q.response) {
                tracing::warn!(%peer, "connection opened too late: the requests that waited for it were given up, not sent");
            }
            for q in queued.into_iter().filter(|q| q.response || !late) {
                let _ = tx.send(q.bytes);
            }
        }
        self.closed.remove(&peer);
        self.open.insert(peer, (tx, id));
    }

    /// The connection `id` to `peer` closed. Whether it was the peer's current one (a later
    /// connection may have replaced it).
    pub(super) fn closed(&mut self, peer: Peer, id: u64) -> bool {
        let current = self.open.get(&peer).is_some_and(|(_, open)| *open == id);
        if current {
            self.open.remove(&peer);
            self.remember_closed(peer);
        }
        current
    }

    /// A connection we were opening could not be: what waited for it is dropped (the engine
    /// fails over what it was for).
    pub(super) fn open_failed(&mut self, peer: Peer) {
        self.waiting.remove(&peer);
    }

    /// Send `t` over its peer's connection. Returns the peer to open a connection to, when one
    /// is needed (the caller starts `transport::connect`; `t` waits for it).
    #[must_use]
    pub(super) fn send(&mut self, t: Transmit) -> Option<Peer> {
        let mut peer = t.peer;
        let response = t.reconnect.is_some();
        let dead = match self.write(peer, &t.bytes) {
            Written::Sent => return None,
            Written::Dead => true,
            Written::NoConnection => false,
        };
        match t.reconnect {
            // A response whose request's connection has closed (or is closing: its task has
            // ended, its `Closed` is on the way) goes where the request's Via says (§18.2.2),
            // not to the closed connection's port, which nobody listens on.
            Some(addr) if dead || self.closed.contains_key(&peer) => {
                tracing::info!(from = %peer, to = %addr, "the request's connection has closed: its response goes to the address of its Via (RFC 3261 §18.2.2)");
                peer = Peer { transport: peer.transport, addr };
                if let Written::Sent = self.write(peer, &t.bytes) {
                    return None;
                }
            }
            // A response on a connection whose `Opened` is still on its way: it waits for it
            // (connecting to the peer's port would reach nobody).
            Some(_) => {
                if self.waiting.len() >= WAITING_KEPT {
                    // One whose `Opened` never came (its close was forgotten beyond CLOSED_KEPT).
                    self.waiting.retain(|_, (since, _)| since.elapsed() < STALE_WAIT);
                }
                let queued = Queued { bytes: t.bytes, response };
                self.waiting.entry(peer).or_insert_with(|| (Instant::now(), Vec::new())).1.push(queued);
                return None;
            }
            None => {}
        }
        let queued = Queued { bytes: t.bytes, response };
        match self.waiting.get_mut(&peer) {
            Some((_, q)) => {
                q.push(queued);
                None
            }
            None => {
                self.waiting.insert(peer, (Instant::now(), vec![queued]));
                Some(peer)
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

    #[cfg(test)]
    fn is_closed(&self, peer: &Peer) -> bool {
        self.closed.contains_key(peer)
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

    #[test]
    fn the_closed_are_remembered_within_a_bound_and_forgotten_when_they_open_again() {
        let mut s = Streams::default();
        for port in 0..CLOSED_KEPT as u16 + 10 {
            let (tx, _rx) = mpsc::unbounded_channel();
            s.opened(peer(port), tx, port as u64, Duration::from_secs(2), Instant::now());
            assert!(s.closed(peer(port), port as u64));
        }
        assert!(s.closed.len() <= CLOSED_KEPT, "{}", s.closed.len());
        let last = peer(CLOSED_KEPT as u16 + 9);
        assert!(s.is_closed(&last));
        let (tx, _rx) = mpsc::unbounded_channel();
        s.opened(last, tx, 1, Duration::from_secs(2), Instant::now());
        assert!(!s.is_closed(&last));
        // A close of an older connection to the same peer leaves the newer one open.
        assert!(!s.closed(last, 0));
        assert!(s.open.contains_key(&last));
    }

    #[tokio::test]
    async fn a_response_handled_before_its_connections_opened_waits_for_it_and_one_after_its_close_reconnects() {
        let mut s = Streams::default();
        let pbx = peer(40_000);
        let via = SocketAddr::from(([127, 0, 0, 1], 5062));
        let response = |text: &'static str| Transmit {
            peer: pbx,
            bytes: Bytes::from_static(text.as_bytes()),
            reconnect: Some(via),
        };
        // The request came on a connection the engine task has not heard of yet: no connection
        // is opened to the caller's port (nobody listens there), the responses wait for it.
        assert_eq!(s.send(response("100")), None);
        assert_eq!(s.send(response("180")), None);
        let (tx, mut rx) = mpsc::unbounded_channel();
        s.opened(pbx, tx, 7, Duration::from_secs(2), Instant::now());
        assert_eq!(rx.recv().await.unwrap(), "100");
        assert_eq!(rx.recv().await.unwrap(), "180");
        assert_eq!(s.send(response("200")), None);
        assert_eq!(rx.recv().await.unwrap(), "200", "on the connection, once open");
        // Once it has closed, a response goes to its Via's address (§18.2.2): a connection there.
        assert!(s.closed(pbx, 7));
        assert_eq!(s.send(response("BYE's 200")), Some(Peer { transport: Transport::Tcp, addr: via }));
        // A request to a peer without a connection opens one to that peer.
        let provider = peer(5070);
        let request = |text: &'static str| Transmit {
            peer: provider,
            bytes: Bytes::from_static(text.as_bytes()),
            reconnect: None,
        };
        assert_eq!(s.send(request("INVITE")), Some(provider));
        // Opened after the route timeout: the INVITE was given up (the call went elsewhere) and
        // is not sent; a response waiting with it is.
        assert_eq!(s.send(Transmit { reconnect: Some(via), ..request("BYE's 200") }), None);
        let (tx, mut rx) = mpsc::unbounded_channel();
        s.opened(provider, tx, 8, Duration::from_secs(2), Instant::now() + Duration::from_secs(3));
        assert_eq!(rx.recv().await.unwrap(), "BYE's 200");
        assert!(rx.try_recv().is_err(), "the given-up INVITE is not sent");
    }
}
