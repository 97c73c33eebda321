//! TLS handshake cost of a route, with sosdesk's own client side (`TlsSetup`: the route's CAs,
//! client certificate and server name, rustls with the ring provider): N connections to the
//! route's address, each handshake timed, and this thread's CPU time for all of them.
//! Used by bench/tls-handshake.sh (against Kamailio's TLS port); not a test.
//!
//!   cargo run --release --example tls_handshake -- CONFIG N fresh|reuse [ROUTE]
//!
//! `fresh`: a new client config (an empty session cache) for each connection: every handshake
//! is a full one, as a core's first connection after a start. `reuse`: one config for all, as a
//! running core's reconnections (rustls resumes a session when the server issued a ticket).
//! Everything runs on one thread (a current-thread runtime), so the thread's CPU time
//! (/proc/thread-self/schedstat, ns) from connect() to the end of the handshake is the client's
//! cost of a connection: TCP connect and TLS handshake. After it, one OPTIONS over the
//! connection (timed apart: a round trip on an open connection) and the close.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sosdesk::config::Config;
use sosdesk::transport::TlsSetup;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn thread_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("/proc/thread-self/schedstat");
    s.split_whitespace().next().and_then(|f| f.parse().ok()).expect("schedstat's first field")
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: tls_handshake CONFIG N fresh|reuse [ROUTE]");
        std::process::exit(2);
    }
    let cfg = Config::load(&PathBuf::from(&args[1])).unwrap_or_else(|e| panic!("{e}"));
    let n: usize = args[2].parse().expect("N");
    let fresh = match args[3].as_str() {
        "fresh" => true,
        "reuse" => false,
        other => panic!("fresh or reuse, not {other:?}"),
    };
    let route_name = args.get(4).map(String::as_str).unwrap_or("provider-primary");
    let route = cfg.routes.iter().find(|r| r.name == route_name).expect("no such route");
    let addr: SocketAddr = route.target().literal().expect("the route's address is an IP literal").addr;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let shared = TlsSetup::from_config(&cfg).unwrap();
        let mut times = Vec::with_capacity(n);
        let mut options_rtt = Vec::with_capacity(n);
        let (mut full, mut full_hrr, mut resumed) = (0, 0, 0);
        let mut cpu = 0u64;
        let mut version = String::new();
        for i in 0..n {
            // Building the config (reading the CA and the client key) is a start's work, not
            // the handshake's: outside the timing.
            let fresh_setup;
            let setup: &TlsSetup = if fresh {
                fresh_setup = TlsSetup::from_config(&cfg).unwrap();
                &fresh_setup
            } else {
                &shared
            };
            let client = setup.client_for(addr);
            let cpu0 = thread_cpu_ns();
            let started = Instant::now();
            let tcp = TcpStream::connect(addr).await.expect("connect");
            tcp.set_nodelay(true).unwrap();
            let mut stream = client.connector().connect(client.name.clone(), tcp).await.expect("handshake");
            times.push(started.elapsed());
            cpu += thread_cpu_ns() - cpu0;
            let (_, session) = stream.get_ref();
            version = format!("{:?}", session.protocol_version().unwrap());
            match session.handshake_kind() {
                Some(rustls::HandshakeKind::Resumed) => resumed += 1,
                Some(rustls::HandshakeKind::FullWithHelloRetryRequest) => full_hrr += 1,
                _ => full += 1,
            }
            // One OPTIONS over the connection (Kamailio answers it itself): reading the answer
            // also reads the session tickets a TLS 1.3 server sends after the handshake, as a
            // core's connection does; then close_notify and the TCP close.
            let local = stream.get_ref().0.local_addr().unwrap();
            let options = format!(
                "OPTIONS sip:{name} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-hs-{i};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:bench@{local}>;tag=hs\r\nTo: <sip:{name}>\r\n\
                 Call-ID: hs-{i}-{pid}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                name = route.domain.as_deref().unwrap_or("127.0.0.1"),
                pid = std::process::id(),
            );
            let asked = Instant::now();
            stream.write_all(options.as_bytes()).await.expect("send OPTIONS");
            let mut answer = Vec::new();
            let mut buf = [0u8; 4096];
            while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                let got = stream.read(&mut buf).await.expect("read the answer");
                assert!(got > 0, "the server closed the connection");
                answer.extend_from_slice(&buf[..got]);
            }
            assert!(answer.starts_with(b"SIP/2.0 200"), "{}", String::from_utf8_lossy(&answer));
            options_rtt.push(asked.elapsed());
            let _ = stream.shutdown().await;
            drop(stream);
        }
        times.sort();
        options_rtt.sort();
        println!(
            "mode={} connections={n} version={version} full={full} full_after_retry_request={full_hrr} resumed={resumed} \
             p50_us={:.0} p90_us={:.0} p99_us={:.0} max_us={:.0} client_cpu_per_handshake_us={:.0} options_rtt_p50_us={:.0}",
            if fresh { "fresh" } else { "reuse" },
            pct(&times, 50.0),
            pct(&times, 90.0),
            pct(&times, 99.0),
            times.last().unwrap().as_secs_f64() * 1e6,
            cpu as f64 / n as f64 / 1000.0,
            pct(&options_rtt, 50.0),
        );
    });
}
