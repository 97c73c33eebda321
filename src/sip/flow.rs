//! A user agent's one connection to its server (a "flow", RFC 5626 §3): the desk app's TLS
//! connection to the core. Requests, responses and the server's own requests all travel on it
//! (RFC 3261 §18: responses return on the connection the request came on; the core sends a
//! registered desk's MESSAGEs back on the registration's flow).
//!
//! One task owns the stream: it frames what arrives (Content-Length, RFC 3261 §18.3), writes
//! what [`Flow::send`] queues, answers the server's CRLFCRLF keepalive with CRLF, and sends its
//! own keepalive every `keepalive` (RFC 5626 §4.4.1). A server that answered a ping once and
//! then stays silent past [`PONG_WAIT`] is gone (a NAT binding or the machine lost): the flow
//! ends, so the user agent reconnects and registers again instead of waiting for TCP's own
//! timeout of many minutes.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::parse::{StreamFramer, StreamItem};
use super::Message;

/// How long a pong may take (RFC 5626 §4.4.1: "at least 10 seconds").
pub const PONG_WAIT: Duration = Duration::from_secs(10);

/// Messages waiting to be read before the flow stops reading (the user agent is busy).
const INBOUND_QUEUE: usize = 64;

/// The user agent's end of one connection.
pub struct Flow {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    out: mpsc::UnboundedSender<Bytes>,
    inbound: mpsc::Receiver<Result<Message, String>>,
    /// Why the flow ended, once it has.
    ended: Option<String>,
}

impl Flow {
    /// Takes over `stream` (connected from `local` to `peer`; TLS already negotiated).
    pub fn new<S>(stream: S, local: SocketAddr, peer: SocketAddr, keepalive: Option<Duration>) -> Flow
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (out, out_rx) = mpsc::unbounded_channel();
        let (in_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        tokio::spawn(run(stream, peer, keepalive, out_rx, in_tx));
        Flow { local, peer, out, inbound, ended: None }
    }

    /// Queues bytes for the connection (in order; never blocks). An error once the flow ended.
    pub fn send(&self, bytes: Bytes) -> io::Result<()> {
        self.out.send(bytes).map_err(|_| self.closed())
    }

    /// The next message from the server. Cancel-safe. An error once the connection is gone,
    /// saying why; every later call errs too.
    pub async fn recv(&mut self) -> io::Result<Message> {
        if self.ended.is_none() {
            match self.inbound.recv().await {
                Some(Ok(m)) => return Ok(m),
                Some(Err(why)) => self.ended = Some(why),
                None => self.ended = Some("the connection closed".into()),
            }
        }
        Err(self.closed())
    }

    fn closed(&self) -> io::Error {
        let why = self.ended.as_deref().unwrap_or("the connection closed");
        io::Error::new(io::ErrorKind::ConnectionAborted, format!("{why} ({})", self.peer))
    }
}

/// A read error in words: TLS 1.3 tells a client that the server refused its certificate only
/// with the first read after the handshake (an alert), which an admin must read as such.
fn read_error(e: &io::Error) -> String {
    use rustls::AlertDescription as A;
    let alert = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).and_then(|r| match r {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    });
    match alert {
        Some(A::CertificateRequired) => "the server requires a client certificate (mutual TLS)".into(),
        Some(A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::UnsupportedCertificate) => {
            format!("the server refused this client's certificate ({e})")
        }
        Some(A::CertificateExpired) => "the server refused this client's certificate: expired".into(),
        Some(A::CertificateRevoked) => "the server refused this client's certificate: revoked".into(),
        _ => e.to_string(),
    }
}

/// The connection's task: until the peer closes, a read or write fails, a pong is missing, or
/// the [`Flow`] is dropped.
async fn run<S>(
    stream: S,
    peer: SocketAddr,
    keepalive: Option<Duration>,
    mut out_rx: mpsc::UnboundedReceiver<Bytes>,
    in_tx: mpsc::Sender<Result<Message, String>>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(8192);
    let mut framer = StreamFramer::default();
    let mut ping_sent: Option<Instant> = None;
    let mut answers_pings = false;
    let mut last_heard = Instant::now();
    let why: String = 'flow: loop {
        let wake = keepalive.map(|every| match ping_sent {
            Some(at) => at + PONG_WAIT,
            None => last_heard + every,
        });
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // Cancel-safe: a read that loses the race has taken no bytes.
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => break "the server closed the connection".into(),
                Err(e) => break format!("the connection failed: {}", read_error(&e)),
                Ok(_) => {
                    last_heard = Instant::now();
                    answers_pings |= ping_sent.take().is_some();
                }
            },
            queued = out_rx.recv() => match queued {
                Some(bytes) => {
                    if let Err(e) = wr.write_all(&bytes).await {
                        break format!("sending failed: {e}");
                    }
                    continue;
                }
                // The user agent dropped its end.
                None => break "closed by the desk".into(),
            },
            _ = sleep => {
                if ping_sent.take().is_some() {
                    if answers_pings {
                        break format!("no keepalive answer within {} s (RFC 5626)", PONG_WAIT.as_secs());
                    }
                    // A server that never answers pings is not judged by them.
                    last_heard = Instant::now();
                    continue;
                }
                if let Err(e) = wr.write_all(b"\r\n\r\n").await {
                    break format!("sending failed: {e}");
                }
                ping_sent = Some(Instant::now());
                continue;
            }
        }
        loop {
            match framer.next(&mut buf) {
                StreamItem::Message(m) => {
                    if in_tx.send(Ok(m)).await.is_err() {
                        break 'flow "closed by the desk".into();
                    }
                }
                StreamItem::Ping => {
                    if let Err(e) = wr.write_all(b"\r\n").await {
                        break 'flow format!("sending failed: {e}");
                    }
                }
                StreamItem::Invalid(rej) => {
                    tracing::debug!(%peer, reason = %rej.reason, "an invalid SIP message on the connection");
                    if let Some(reply) = rej.reply {
                        let _ = wr.write_all(&reply.to_bytes()).await;
                    }
                }
                // Framing can no longer be trusted (RFC 4475 §3.1.2.3).
                StreamItem::Fatal(rej) => break 'flow format!("a framing error from the server: {}", rej.reason),
                StreamItem::Incomplete => break,
            }
        }
    };
    tracing::info!(%peer, reason = %why, "SIP connection ended");
    let _ = wr.shutdown().await;
    let _ = in_tx.send(Err(why)).await;
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::*;
    use crate::sip::client::{Client, Event};
    use crate::sip::ids::new_branch;
    use crate::sip::transaction::{Timers, Transport};
    use tokio::io::DuplexStream;

    const LOCAL: &str = "127.0.0.1:40000";
    const SERVER: &str = "127.0.0.1:5061";

    fn client(end: DuplexStream, keepalive: Option<Duration>) -> Client {
        let flow = Flow::new(end, LOCAL.parse().unwrap(), SERVER.parse().unwrap(), keepalive);
        // Short: the transaction layer's timers run on the real clock (Timer B is 64·T1).
        let ms = Duration::from_millis;
        Client::over_flow(flow, Transport::Tls, Timers { t1: ms(10), t2: ms(40), t4: ms(40) })
    }

    fn request(method: &str, from: &str, to: &str) -> Message {
        let mut m = Message::request(method, &format!("sip:x@{to}"));
        m.push("Via", format!("SIP/2.0/TLS {from};branch={}", new_branch()));
        m.push("From", format!("<sip:a@{from}>;tag=1"));
        m.push("To", format!("<sip:x@{to}>"));
        m.push("Call-ID", format!("flow-{method}"));
        m.push("CSeq", format!("1 {method}"));
        m
    }

    /// The server's end: reads whole messages (and keepalives) as the core's transport does.
    struct Server {
        end: DuplexStream,
        buf: BytesMut,
        framer: StreamFramer,
    }

    impl Server {
        fn new(end: DuplexStream) -> Server {
            Server { end, buf: BytesMut::new(), framer: StreamFramer::default() }
        }

        async fn next(&mut self) -> StreamItem {
            loop {
                match self.framer.next(&mut self.buf) {
                    StreamItem::Incomplete => {
                        assert!(self.end.read_buf(&mut self.buf).await.unwrap() > 0, "the client closed");
                    }
                    item => return item,
                }
            }
        }

        async fn message(&mut self) -> Message {
            match self.next().await {
                StreamItem::Message(m) => m,
                _ => panic!("not a message"),
            }
        }
    }

    #[tokio::test]
    async fn requests_go_once_and_the_servers_requests_come_back_on_the_connection() {
        let (mine, theirs) = tokio::io::duplex(64 * 1024);
        let mut client = client(mine, None);
        let mut server = Server::new(theirs);
        let register = request("REGISTER", LOCAL, SERVER);
        let key = client.send_request(&register, "192.0.2.1:9".parse().unwrap()).await.unwrap();
        let got = server.message().await;
        assert_eq!(got.method(), "REGISTER");
        // The core's MESSAGE first, then the answer, on the same connection.
        let message = request("MESSAGE", SERVER, LOCAL);
        server.end.write_all(&message.to_bytes()).await.unwrap();
        server.end.write_all(&got.response(200, "OK", Some("s1")).to_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let ok = client
            .final_response(&key, |ev| match ev {
                Event::Request { msg, from } => {
                    seen.push((msg.method().to_string(), from));
                    ControlFlow::Continue(Some((msg.response(200, "OK", None), from)))
                }
                other => panic!("unexpected {other:?}"),
            })
            .await
            .unwrap();
        assert_eq!(ok.status(), Some(200));
        assert_eq!(seen, [("MESSAGE".to_string(), SERVER.parse().unwrap())]);
        let answer = server.message().await;
        assert_eq!((answer.status(), answer.call_id()), (Some(200), Some("flow-MESSAGE")));
        // Reliable: no retransmission however long (RFC 3261 §17.1.2.2, Timer E is UDP's).
        let invite = request("INVITE", LOCAL, SERVER);
        let key = client.send_request(&invite, SERVER.parse().unwrap()).await.unwrap();
        assert_eq!(server.message().await.method(), "INVITE");
        let timed_out = client.final_response(&key, |ev| panic!("unexpected {ev:?}")).await;
        assert!(timed_out.is_err(), "Timer B still applies");
        server.end.write_all(b"x").await.unwrap();
        drop(client);
        let mut rest = Vec::new();
        server.end.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing was sent again: {}", String::from_utf8_lossy(&rest));
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_stops_answering_keepalives_ends_the_flow() {
        let (mine, theirs) = tokio::io::duplex(64 * 1024);
        let every = Duration::from_secs(30);
        let mut client = client(mine, Some(every));
        let mut server = Server::new(theirs);
        let started = Instant::now();
        let serve = tokio::spawn(async move {
            // The first ping is answered (RFC 5626 §4.4.1), the second is not.
            assert!(matches!(server.next().await, StreamItem::Ping));
            server.end.write_all(b"\r\n").await.unwrap();
            assert!(matches!(server.next().await, StreamItem::Ping));
            server
        });
        let e = client.next().await.unwrap_err();
        assert!(e.to_string().contains("no keepalive answer"), "{e}");
        assert!(started.elapsed() >= every * 2 + PONG_WAIT, "{:?}", started.elapsed());
        let _server = serve.await.unwrap();
        assert!(client.next().await.is_err(), "an ended flow stays ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_pings_is_not_judged_by_them_and_a_close_ends_the_flow() {
        let (mine, theirs) = tokio::io::duplex(64 * 1024);
        let mut client = client(mine, Some(Duration::from_secs(30)));
        let mut server = Server::new(theirs);
        for _ in 0..3 {
            assert!(matches!(server.next().await, StreamItem::Ping));
        }
        drop(server);
        let e = client.next().await.unwrap_err();
        assert!(e.to_string().contains("closed the connection"), "{e}");
    }

    #[tokio::test]
    async fn the_servers_ping_is_answered() {
        let (mine, theirs) = tokio::io::duplex(64 * 1024);
        let _client = client(mine, None);
        let mut server = Server::new(theirs);
        server.end.write_all(b"\r\n\r\n").await.unwrap();
        let mut pong = [0u8; 2];
        server.end.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"\r\n");
    }
}
