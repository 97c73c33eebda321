//! The engine task's TCP and TLS connections: one per peer, opened on first use and reused (RFC
//! 3261 §18.1.1), whoever opened it; what waits for a connection being opened; and the peers
//! whose connection has closed, so that a response still finds its way (§18.2.2).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::sip::transaction::{Peer, Transmit};
use crate::transport::{self, StreamIo};

/// Closed connections remembered for their responses; beyond, the older half is forgotten
/// (a response for one of those then goes the old way, to the closed connection's port).
const CLOSED_KEPT: usize = 4096;
/// Beyond this many peers with bytes waiting, those waiting longer than [`STALE_WAIT`] are
/// dropped: no connection is opened or announced that late.
const WAITING_KEPT: usize = 1024;
const STALE_WAIT: Duration = Duration::from_secs(64);

#[derive(Default)]
pub(super) struct Streams {
    /// The open connection to each peer (its writer, and its id: a later connection to the same
    /// peer may announce itself before the earlier one's close).
    open: HashMap<Peer, (mpsc::UnboundedSender<Bytes>, u64)>,
    /// Bytes for a connection not open yet, and when the first of them was queued: one being
    /// opened by us, or one a peer opened whose `Opened` the engine task has not handled yet
    /// (a request on it can come first, through the urgent lane).
    waiting: HashMap<Peer, (Instant, Vec<Bytes>)>,
    /// Peers whose connection has closed, and when.
    closed: HashMap<Peer, Instant>,
}

impl Streams {
    /// A connection is open: what waited for it is sent, unless it waited longer than
    /// `given_up_after` (the requests have been given up: the call went to the next route, and
    /// a provider would ring twice).
    pub(super) fn opened(&mut self, peer: Peer, tx: mpsc::UnboundedSender<Bytes>, id: u64, given_up_after: Duration) {
        if let Some((since, queued)) = self.waiting.remove(&peer) {
            if since.elapsed() <= given_up_after {
                for b in queued {
                    let _ = tx.send(b);
                }
            } else {
                tracing::warn!(%peer, "connection opened too late: what waited for it was given up, not sent");
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

    /// Send `t` over its peer's connection, opening one if needed.
    pub(super) fn send(&mut self, t: Transmit, io: &StreamIo) {
        let mut peer = t.peer;
        if self.write(peer, &t.bytes) {
            return;
        }
        match t.reconnect {
            // A response whose request's connection has closed goes where the request's Via
            // says (§18.2.2), not to the closed connection's port, which nobody listens on.
            Some(addr) if self.closed.contains_key(&peer) => {
                tracing::info!(from = %peer, to = %addr, "the request's connection has closed: its response goes to the address of its Via (RFC 3261 §18.2.2)");
                peer = Peer { transport: peer.transport, addr };
                if self.write(peer, &t.bytes) {
                    return;
                }
            }
            // A response on a connection whose `Opened` is still on its way: it waits for it
            // (connecting to the peer's port would reach nobody).
            Some(_) => {
                if self.waiting.len() >= WAITING_KEPT {
                    // One whose `Opened` never came (its close was forgotten beyond CLOSED_KEPT).
                    self.waiting.retain(|_, (since, _)| since.elapsed() < STALE_WAIT);
                }
                self.waiting.entry(peer).or_insert_with(|| (Instant::now(), Vec::new())).1.push(t.bytes);
                return;
            }
            None => {}
        }
        match self.waiting.get_mut(&peer) {
            Some((_, q)) => q.push(t.bytes),
            None => {
                self.waiting.insert(peer, (Instant::now(), vec![t.bytes]));
                tokio::spawn(transport::connect(peer, io.clone()));
            }
        }
    }

    /// Write on the open connection to `peer`, if there is one that still takes bytes.
    fn write(&mut self, peer: Peer, bytes: &Bytes) -> bool {
        let Some((tx, _)) = self.open.get(&peer) else { return false };
        if tx.send(bytes.clone()).is_ok() {
            return true;
        }
        // Its task has ended; its `Closed` is on the way.
        self.open.remove(&peer);
        self.remember_closed(peer);
        false
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
            s.opened(peer(port), tx, port as u64, Duration::from_secs(2));
            assert!(s.closed(peer(port), port as u64));
        }
        assert!(s.closed.len() <= CLOSED_KEPT, "{}", s.closed.len());
        let last = peer(CLOSED_KEPT as u16 + 9);
        assert!(s.is_closed(&last));
        let (tx, _rx) = mpsc::unbounded_channel();
        s.opened(last, tx, 1, Duration::from_secs(2));
        assert!(!s.is_closed(&last));
        // A close of an older connection to the same peer leaves the newer one open.
        assert!(!s.closed(last, 0));
        assert!(s.open.contains_key(&last));
    }
}
