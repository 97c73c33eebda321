//! A small async driver for client transactions over one tokio [`UdpSocket`] or one connection
//! to the server (a [`Flow`], e.g. TLS): the I/O half of the sans-I/O [`Transactions`] layer,
//! for a user agent that sends requests and answers what the peer sends it statelessly (the
//! desk app's calls into the core and its registration).
//!
//! Every retransmission and timeout is the transaction layer's (Timer A/B for INVITE, E/F for
//! others, §17.1.1.2 and §17.1.2.2; the ACK of a non-2xx final, §17.1.1.3): the driver only
//! sends what [`Transactions::poll_transmit`] gives it, sleeps until
//! [`Transactions::next_timeout`], and reads the socket meanwhile.
//!
//! [`Client::next`] yields one [`Event`] at a time (provisional and final responses, timeouts,
//! requests from the peer); [`Client::final_response`] waits for one transaction's final response
//! and hands everything else to the caller. ACKs for a 2xx and answers to the peer's requests go
//! out with [`Client::send_stateless`].

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::flow::Flow;
use super::parse::parse_datagram;
use super::transaction::{ClientEvent, ClientKey, Peer, Timers, Transactions, Transmit, Transport};
use super::Message;

/// What arrives from the network or the timers.
#[derive(Debug)]
pub enum Event {
    /// A response in one of our transactions, provisional or final. An INVITE's 2xx that is
    /// retransmitted comes again with `retransmission: true` (its ACK is to be sent again,
    /// §13.2.2.4).
    Response { key: ClientKey, msg: Message, retransmission: bool },
    /// Timer B (INVITE) or Timer F (others) fired: no final response within 64·T1.
    Timeout { key: ClientKey },
    /// A request from the network, for the caller to answer (statelessly).
    Request { msg: Message, from: SocketAddr },
    /// A response that matches no transaction (e.g. a 2xx retransmitted after the INVITE
    /// transaction was forgotten).
    Stray { msg: Message, from: SocketAddr },
}

/// Why [`Client::final_response`] returned without a final response.
#[derive(Debug)]
pub enum ClientError {
    /// Timer B/F: nothing final within 64·T1.
    Timeout,
    /// The caller ended the wait (its handler returned [`ControlFlow::Break`]).
    Interrupted,
    /// The socket failed.
    Io(io::Error),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Timeout => f.write_str("no final response within 64*T1"),
            ClientError::Interrupted => f.write_str("the wait was interrupted"),
            ClientError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> ClientError {
        ClientError::Io(e)
    }
}

/// A message to send without a transaction, and where.
pub type Outgoing = (Message, SocketAddr);

/// Where the messages go: any address over UDP, or the one server at the flow's other end.
enum Link {
    Udp(UdpSocket),
    /// Reliable (no retransmissions, RFC 3261 §17.1.1.2); everything goes to, and comes from,
    /// the flow's peer.
    Flow(Flow, Transport),
}

/// Client transactions over one UDP socket or one connection.
pub struct Client {
    link: Link,
    local: SocketAddr,
    timers: Timers,
    tx: Transactions,
    /// A transmit taken from the layer and not yet sent: kept here so that a caller that drops
    /// [`Client::next`] in a `select!` loses nothing.
    unsent: Option<Transmit>,
    /// Events produced together (several timers due at once) and not yet returned.
    ready: VecDeque<Event>,
    buf: Vec<u8>,
}

impl Client {
    pub fn new(sock: UdpSocket, timers: Timers) -> io::Result<Client> {
        let local = sock.local_addr()?;
        Ok(Client::with_link(Link::Udp(sock), local, timers))
    }

    /// Client transactions on `flow`, a connection over `transport` (TCP or TLS).
    pub fn over_flow(flow: Flow, transport: Transport, timers: Timers) -> Client {
        let local = flow.local;
        Client::with_link(Link::Flow(flow, transport), local, timers)
    }

    fn with_link(link: Link, local: SocketAddr, timers: Timers) -> Client {
        Client {
            link,
            local,
            timers,
            tx: Transactions::new(timers),
            unsent: None,
            ready: VecDeque::new(),
            buf: vec![0u8; 65_535],
        }
    }

    /// The transport requests go over (what a Via names).
    pub fn transport(&self) -> Transport {
        match &self.link {
            Link::Udp(_) => Transport::Udp,
            Link::Flow(_, t) => *t,
        }
    }

    fn peer(&self, to: SocketAddr) -> Peer {
        match &self.link {
            Link::Udp(_) => Peer { transport: Transport::Udp, addr: to },
            Link::Flow(f, t) => Peer { transport: *t, addr: f.peer },
        }
    }

    /// Sends `bytes` to `to` (on a flow: to its peer, whatever `to` says).
    async fn send_to(&self, bytes: &[u8], to: SocketAddr) -> io::Result<()> {
        match &self.link {
            Link::Udp(sock) => sock.send_to(bytes, to).await.map(|_| ()),
            Link::Flow(f, _) => f.send(bytes::Bytes::copy_from_slice(bytes)),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// How long a transaction waits for its final response before [`Event::Timeout`] (64·T1).
    pub fn transaction_timeout(&self) -> Duration {
        self.timers.t1 * 64
    }

    /// Starts a client transaction for `req` (its top Via carries a fresh branch) towards `to`
    /// and sends it. A failed first send ends the transaction.
    pub async fn send_request(&mut self, req: &Message, to: SocketAddr) -> io::Result<ClientKey> {
        let key = self.tx.send_request(req, self.peer(to), Instant::now());
        if let Err(e) = self.flush().await {
            self.tx.abandon(&key);
            return Err(e);
        }
        Ok(key)
    }

    /// Sends a message outside any transaction: the ACK for a 2xx (§13.2.2.4, §17.1.1.3), or a
    /// response to a request from the network.
    pub async fn send_stateless(&mut self, msg: &Message, to: SocketAddr) -> io::Result<()> {
        self.flush().await?;
        self.send_to(&msg.to_bytes(), to).await
    }

    /// Stops retransmitting a transaction and forgets it.
    pub fn abandon(&mut self, key: &str) {
        self.tx.abandon(key);
    }

    /// Sends what the transaction layer has queued. A retransmission that cannot be sent is
    /// dropped (the next one, or Timer B/F, follows); the error is returned.
    async fn flush(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        loop {
            let Some(t) = self.unsent.take().or_else(|| self.tx.poll_transmit()) else { return result };
            // Cancel-safe: the transmit stays in `unsent` until the send has completed.
            let bytes = t.bytes.clone();
            let addr = t.peer.addr;
            self.unsent = Some(t);
            let sent = self.send_to(&bytes, addr).await;
            self.unsent = None;
            if let Err(e) = sent {
                tracing::debug!(%addr, error = %e, "SIP send failed");
                result = Err(e);
            }
        }
    }

    /// The next event: a response or timeout of our transactions, or a request from the network.
    /// Retransmissions are sent meanwhile. Cancel-safe (usable as a `select!` branch).
    pub async fn next(&mut self) -> io::Result<Event> {
        loop {
            let _ = self.flush().await;
            if let Some(ev) = self.ready.pop_front() {
                return Ok(ev);
            }
            let wake = self.tx.next_timeout();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                got = receive(&mut self.link, &mut self.buf) => {
                    let (msg, from) = match got {
                        Ok(Some(r)) => r,
                        Ok(None) => continue,
                        Err(e) => return Err(e),
                    };
                    if msg.is_request() {
                        return Ok(Event::Request { msg, from });
                    }
                    match self.tx.on_response(msg, Instant::now()) {
                        Ok(Some(ClientEvent::Response { key, msg, retransmission })) => {
                            return Ok(Event::Response { key, msg, retransmission })
                        }
                        Ok(Some(ClientEvent::Timeout { key })) => return Ok(Event::Timeout { key }),
                        // Absorbed (a retransmitted final; its ACK is re-sent by the next flush).
                        Ok(None) => {}
                        Err(msg) => return Ok(Event::Stray { msg, from }),
                    }
                }
                _ = sleep => {
                    for ev in self.tx.handle_timeout(Instant::now()) {
                        self.ready.push_back(match ev {
                            ClientEvent::Timeout { key } => Event::Timeout { key },
                            ClientEvent::Response { key, msg, retransmission } => Event::Response { key, msg, retransmission },
                        });
                    }
                }
            }
        }
    }

    /// Waits for the final response of transaction `key`. Every other event (its provisional
    /// responses, other transactions' responses, requests from the network) goes to `other`,
    /// which may return a message to send (an answer, an ACK) and may end the wait with
    /// [`ControlFlow::Break`] ([`ClientError::Interrupted`]; the transaction is abandoned).
    pub async fn final_response(
        &mut self,
        key: &str,
        mut other: impl FnMut(Event) -> ControlFlow<Option<Outgoing>, Option<Outgoing>>,
    ) -> Result<Message, ClientError> {
        loop {
            let ev = match self.next().await {
                Ok(ev) => ev,
                Err(e) => {
                    self.tx.abandon(key);
                    return Err(e.into());
                }
            };
            match ev {
                Event::Response { key: k, msg, retransmission: false }
                    if k == key && msg.status().is_some_and(|s| s >= 200) =>
                {
                    return Ok(msg)
                }
                Event::Timeout { key: k } if k == key => return Err(ClientError::Timeout),
                ev => {
                    let (send, stop) = match other(ev) {
                        ControlFlow::Continue(send) => (send, false),
                        ControlFlow::Break(send) => (send, true),
                    };
                    if let Some((msg, to)) = send {
                        let _ = self.send_stateless(&msg, to).await;
                    }
                    if stop {
                        self.tx.abandon(key);
                        return Err(ClientError::Interrupted);
                    }
                }
            }
        }
    }
}

/// The next message from the link, and whence; `None` for what is skipped (an unparsable
/// datagram, an ICMP error). Cancel-safe.
async fn receive(link: &mut Link, buf: &mut [u8]) -> io::Result<Option<(Message, SocketAddr)>> {
    match link {
        Link::Udp(sock) => {
            let (n, from) = match sock.recv_from(buf).await {
                Ok(r) => r,
                // An ICMP error from an earlier send: the peer is not there (yet); the
                // transaction's timers decide.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) => {
                    tracing::debug!(error = %e, "SIP socket: ICMP error");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            Ok(parse_datagram(&buf[..n]).ok().map(|m| (m, from)))
        }
        Link::Flow(flow, _) => {
            let peer = flow.peer;
            flow.recv().await.map(|m| Some((m, peer)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::ids::new_branch;

    fn timers(t1_ms: u64, t2_ms: u64) -> Timers {
        Timers { t1: Duration::from_millis(t1_ms), t2: Duration::from_millis(t2_ms), t4: Duration::from_millis(t2_ms) }
    }

    async fn pair(t: Timers) -> (Client, UdpSocket) {
        let client = Client::new(UdpSocket::bind("127.0.0.1:0").await.unwrap(), t).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (client, peer)
    }

    /// A complete request from `from` to `to` (a new branch).
    fn request_between(method: &str, cseq: u32, from: SocketAddr, to: SocketAddr) -> Message {
        let mut m = Message::request(method, &format!("sip:peer@{to}"));
        m.push("Via", format!("SIP/2.0/UDP {from};branch={}", new_branch()));
        m.push("Max-Forwards", "70");
        m.push("From", format!("<sip:ua@{from}>;tag=a1"));
        m.push("To", format!("<sip:peer@{to}>"));
        m.push("Call-ID", "driver-test");
        m.push("CSeq", format!("{cseq} {}", if method == "ACK" { "ACK" } else { method }));
        m
    }

    fn request(method: &str, client: &Client, to: SocketAddr) -> Message {
        request_between(method, 1, client.local_addr(), to)
    }

    /// A test that waits on the network is failed, not hung, if what it waits for never comes.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f).await.expect("the test did not finish within 20 s")
    }

    async fn recv(sock: &UdpSocket) -> (Message, SocketAddr) {
        let mut buf = vec![0u8; 65_535];
        let (n, from) = sock.recv_from(&mut buf).await.unwrap();
        (parse_datagram(&buf[..n]).unwrap(), from)
    }

    #[tokio::test]
    async fn a_lost_request_is_retransmitted_and_the_answer_to_the_copy_returned() {
        within(a_lost_request_is_retransmitted_and_the_answer_to_the_copy_returned_()).await
    }

    async fn a_lost_request_is_retransmitted_and_the_answer_to_the_copy_returned_() {
        let (mut client, peer) = pair(timers(10, 40)).await;
        let to = peer.local_addr().unwrap();
        let req = request("REGISTER", &client, to);
        let answered = tokio::spawn(async move {
            let (first, _) = recv(&peer).await; // dropped: "lost on the way"
            let (copy, from) = recv(&peer).await;
            assert_eq!(first.to_bytes(), copy.to_bytes(), "a retransmission is the same request");
            peer.send_to(&copy.response(200, "OK", Some("p1")).to_bytes(), from).await.unwrap();
        });
        let key = client.send_request(&req, to).await.unwrap();
        let resp = client.final_response(&key, |ev| panic!("unexpected {ev:?}")).await.unwrap();
        assert_eq!(resp.status(), Some(200));
        answered.await.unwrap();
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_after_64_t1() {
        within(a_silent_peer_times_out_after_64_t1_()).await
    }

    async fn a_silent_peer_times_out_after_64_t1_() {
        let t = timers(5, 20);
        let (mut client, peer) = pair(t).await;
        let to = peer.local_addr().unwrap();
        let started = Instant::now();
        let key = client.send_request(&request("INVITE", &client, to), to).await.unwrap();
        let r = client.final_response(&key, |ev| panic!("unexpected {ev:?}")).await;
        assert!(matches!(r, Err(ClientError::Timeout)), "{r:?}");
        assert!(started.elapsed() >= t.t1 * 64, "Timer B fired early: {:?}", started.elapsed());
        // Timer A doubling from T1 (5, 10, 20, 40, 80, 160 ms: all before 320 ms) plus the
        // original: seven copies reached the peer.
        let mut buf = vec![0u8; 65_535];
        let mut copies = 0;
        while peer.try_recv_from(&mut buf).is_ok() {
            copies += 1;
        }
        assert_eq!(copies, 7);
    }

    #[tokio::test]
    async fn provisional_responses_and_requests_reach_the_caller_during_the_wait() {
        within(provisional_responses_and_requests_reach_the_caller_during_the_wait_()).await
    }

    async fn provisional_responses_and_requests_reach_the_caller_during_the_wait_() {
        let (mut client, peer) = pair(timers(5_000, 10_000)).await;
        let to = peer.local_addr().unwrap();
        let invite = request("INVITE", &client, to);
        let key = client.send_request(&invite, to).await.unwrap();
        let (got, from) = recv(&peer).await;
        peer.send_to(&got.response(180, "Ringing", Some("p1")).to_bytes(), from).await.unwrap();
        let options = request_between("OPTIONS", 7, to, from);
        peer.send_to(&options.to_bytes(), from).await.unwrap();
        let remote = tokio::spawn(async move {
            let (answer, _) = recv(&peer).await;
            assert_eq!(answer.status(), Some(200), "the caller's answer to the OPTIONS was sent");
            peer.send_to(&got.response(200, "OK", Some("p1")).to_bytes(), from).await.unwrap();
            let (ack, _) = recv(&peer).await;
            assert_eq!(ack.method(), "ACK");
        });
        let mut seen = Vec::new();
        let ok = client
            .final_response(&key, |ev| match ev {
                Event::Response { msg, .. } => {
                    seen.push(msg.status().unwrap_or(0).to_string());
                    ControlFlow::Continue(None)
                }
                Event::Request { msg, from } => {
                    seen.push(msg.method().to_string());
                    ControlFlow::Continue(Some((msg.response(200, "OK", None), from)))
                }
                other => panic!("unexpected {other:?}"),
            })
            .await
            .unwrap();
        assert_eq!(ok.status(), Some(200));
        assert_eq!(seen, ["180", "OPTIONS"]);
        let ack = request_between("ACK", 1, client.local_addr(), to);
        client.send_stateless(&ack, to).await.unwrap();
        remote.await.unwrap();
    }

    #[tokio::test]
    async fn a_request_can_end_the_wait() {
        within(a_request_can_end_the_wait_()).await
    }

    async fn a_request_can_end_the_wait_() {
        let (mut client, peer) = pair(timers(5_000, 10_000)).await;
        let to = peer.local_addr().unwrap();
        let key = client.send_request(&request("INVITE", &client, to), to).await.unwrap();
        let (_, from) = recv(&peer).await;
        let bye = request_between("BYE", 2, to, from);
        peer.send_to(&bye.to_bytes(), from).await.unwrap();
        let r = client
            .final_response(&key, |ev| match ev {
                Event::Request { msg, from } => ControlFlow::Break(Some((msg.response(200, "OK", None), from))),
                other => panic!("unexpected {other:?}"),
            })
            .await;
        assert!(matches!(r, Err(ClientError::Interrupted)), "{r:?}");
        let (answer, _) = recv(&peer).await;
        assert_eq!(answer.status(), Some(200));
    }
}
