//! The stream transports (RFC 3261 §18.3): TCP and TLS connections, accepted on the listeners
//! and opened to peers, each framed by Content-Length into the intake lanes, with the writes
//! the engine sends. Connections sosdesk opens are kept and reused, and kept alive with RFC 5626
//! CRLF pings: a provider connection that died is noticed and closed before an emergency call
//! needs it (the next request opens a new one).

pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::core_handle::{NetInput, Opened};
use crate::intake::{Inbound, Lanes};
use crate::sip::parse::{StreamFramer, StreamItem};
use crate::sip::transaction::{Peer, Transport};

pub use tls::TlsSetup;

/// How long an outgoing TCP connection may take to open. A receiver whose firewall drops the
/// SYN instead of refusing it would otherwise hold its requests for the kernel's two minutes of
/// SYN retries; after this the engine hears `SendFailed` (a route fails over, a notification
/// MESSAGE goes over UDP) while the attempt's own timer (2 s by default) is still running.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A TLS handshake (two round trips and the certificate checks) that takes longer fails the
/// same way; an accepted one that stalls is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// RFC 5626 §4.4.1: a pong that has not come this long after a ping means the flow is dead.
const PONG_WAIT: Duration = Duration::from_secs(10);

/// What every connection task needs: where messages go, the engine's channel, TLS, keepalive.
#[derive(Clone)]
pub(crate) struct StreamIo {
    pub lanes: Lanes,
    /// Where `Closed` and `SendFailed` go: the engine task's inputs, served after the urgent
    /// lane, so that what was read on a connection is handled before its close (a 200 a
    /// provider sent just before closing still answers the call).
    pub net_tx: mpsc::UnboundedSender<NetInput>,
    /// Where `Opened` goes: served before anything else, so that a request's connection is
    /// known before its response goes out.
    pub opened_tx: mpsc::UnboundedSender<Opened>,
    pub tls: Arc<TlsSetup>,
    /// The idle time after which a connection sosdesk opened is pinged (none: never).
    pub keepalive: Option<Duration>,
}

/// Accept TCP (`tls` none) or TLS connections until `stop`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    io: StreamIo,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let io = io.clone();
                    match &tls {
                        None => {
                            tokio::spawn(connection(stream, Peer { transport: Transport::Tcp, addr }, io, false));
                        }
                        // Each handshake in its own task: one that stalls holds up no other.
                        Some(acceptor) => {
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(tls)) => connection(tls, Peer { transport: Transport::Tls, addr }, io, false).await,
                                    // A client without an acceptable certificate (mutual TLS) ends here.
                                    Ok(Err(e)) => tracing::info!(%addr, error = %e, "SIP TLS handshake refused"),
                                    Err(_) => tracing::info!(%addr, "SIP TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: log, keep accepting.
                    tracing::warn!(error = %e, "SIP accept failed");
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

/// Open a TCP or TLS connection to `peer` and serve it; the engine hears `Opened` (and sends
/// what it queued) or `SendFailed`.
pub(crate) async fn connect(peer: Peer, io: StreamIo) {
    let tcp = match tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(peer.addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "TCP connect failed");
            let _ = io.net_tx.send(NetInput::SendFailed(peer));
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, ms = TCP_CONNECT_TIMEOUT.as_millis() as u64, "TCP connect timed out");
            let _ = io.net_tx.send(NetInput::SendFailed(peer));
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    if peer.transport != Transport::Tls {
        return connection(tcp, peer, io, true).await;
    }
    let client = io.tls.client_for(peer.addr);
    let started = Instant::now();
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, client.connector().connect(client.name.clone(), tcp)).await {
        Ok(Ok(stream)) => {
            // Rare (connections are kept), and what an admin checks first: who, and how long.
            let (_, session) = stream.get_ref();
            let version = session.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
            let handshake_us = started.elapsed().as_micros() as u64;
            tracing::info!(%peer, server_name = ?client.name, %version, handshake_us, "TLS connection open");
            connection(stream, peer, io, true).await
        }
        Ok(Err(e)) => {
            // The admin's first question: an unknown issuer, a name that does not match, a
            // refused client certificate — rustls says which.
            tracing::warn!(%peer, server_name = ?client.name, error = %e, "TLS handshake failed");
            let _ = io.net_tx.send(NetInput::SendFailed(peer));
        }
        Err(_) => {
            tracing::warn!(%peer, "TLS handshake timed out");
            let _ = io.net_tx.send(NetInput::SendFailed(peer));
        }
    }
}

/// One connection: frames messages by Content-Length (RFC 3261 §18.3) and writes what the
/// engine sends. A framing error answers (when it can) and closes the connection. `opened`: we
/// opened it, so we keep it alive (RFC 5626 §4.4.1: the flow's initiator pings).
async fn connection<S>(stream: S, peer: Peer, io: StreamIo, opened: bool)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Bytes>();
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if io.opened_tx.send(Opened { peer, tx: out_tx.clone(), id }).is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(b) = out_rx.recv().await {
            if b.is_empty() {
                break; // close request
            }
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let keepalive = io.keepalive.filter(|_| opened);
    // A peer that closes a connection we opened before saying anything refused us (TLS 1.3
    // completes the client's side of the handshake before the server checks the client's
    // certificate): what waits there fails now, not at its timeout.
    let mut heard_anything = false;
    let mut ping_sent: Option<Instant> = None;
    // Whether the peer has answered a ping (then a missing pong means the flow is dead).
    let mut answers_pings = false;
    let mut last_heard = Instant::now();
    let mut buf = BytesMut::with_capacity(8192);
    let mut framer = StreamFramer::default();
    'read: loop {
        let wake = keepalive.map(|every| match ping_sent {
            Some(at) => at + PONG_WAIT,
            None => last_heard + every,
        });
        tokio::select! {
            // Cancel-safe: a read that loses the race has taken no bytes.
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    last_heard = Instant::now();
                    answers_pings |= ping_sent.take().is_some();
                    heard_anything = true;
                }
            },
            _ = sleep_until(wake) => {
                // No pong. RFC 5626 §4.4.1 expects one only of a peer that does keepalives: one
                // that has answered before is gone; one that never did is left open (a provider
                // that ignores pings keeps its connection, and its calls).
                if ping_sent.take().is_some() {
                    if answers_pings {
                        tracing::warn!(%peer, "no keepalive pong (RFC 5626): closing the connection");
                        let _ = out_tx.send(Bytes::new());
                        break 'read;
                    }
                    last_heard = Instant::now();
                    continue;
                }
                let _ = out_tx.send(Bytes::from_static(b"\r\n\r\n"));
                ping_sent = Some(Instant::now());
                continue;
            }
        }
        loop {
            match framer.next(&mut buf) {
                StreamItem::Message(m) => io.lanes.offer_stream(Inbound::Message(m, peer), |b| {
                    let _ = out_tx.send(b);
                }),
                StreamItem::Invalid(rej) => io.lanes.offer_stream(Inbound::Rejected(rej, peer), |_| {}),
                StreamItem::Ping => {
                    let _ = out_tx.send(Bytes::from_static(b"\r\n"));
                }
                StreamItem::Fatal(rej) => {
                    tracing::info!(%peer, reason = %rej.reason, "closing the connection after a framing error");
                    if let Some(reply) = rej.reply {
                        let _ = out_tx.send(Bytes::from(reply.to_bytes()));
                    }
                    let _ = out_tx.send(Bytes::new());
                    break 'read;
                }
                StreamItem::Incomplete => break,
            }
        }
    }
    let refused = opened && !heard_anything;
    if refused {
        tracing::warn!(%peer, "the peer closed the connection without a word");
    }
    let _ = io.net_tx.send(NetInput::Closed { peer, id, refused, accepted: !opened });
    drop(out_tx);
    let _ = writer.await;
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
