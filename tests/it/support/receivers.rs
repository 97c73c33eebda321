//! The receivers of the alert channels' tests, real and on loopback: an SMTP server (aiosmtpd,
//! Debian `python3-aiosmtpd`, STARTTLS required, `smtp_sink.py`) that writes each message it
//! accepts as JSON, and an HTTP/1.1 server in the test (webhooks, chat services, an SMS gateway)
//! that hands each request it receives to the test through a channel.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The Debian interpreter, which has `python3-aiosmtpd` (a pyenv or venv `python3` first on
/// PATH may not).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

pub struct SmtpSink {
    child: Child,
    pub port: u16,
    pub out: PathBuf,
}

impl SmtpSink {
    /// Starts the server on `port` with the certificate and key given, STARTTLS required;
    /// returns once it listens.
    pub fn start(dir: &Path, port: u16, cert: &Path, key: &Path) -> SmtpSink {
        SmtpSink::start_as(dir, "starttls", port, cert, key, None)
    }

    /// As [`start`](Self::start), with TLS `mode` (`starttls` or `implicit`), and SMTP AUTH
    /// required when `login` (user, password) is given.
    pub fn start_as(
        dir: &Path,
        mode: &str,
        port: u16,
        cert: &Path,
        key: &Path,
        login: Option<(&str, &str)>,
    ) -> SmtpSink {
        let ok = Command::new(python()).args(["-c", "import aiosmtpd"]).status().is_ok_and(|s| s.success());
        assert!(ok, "aiosmtpd is not installed: the email tests need a real SMTP server (Debian package python3-aiosmtpd; test.sh installs it)");
        let out = dir.join(format!("smtp-received-{port}"));
        std::fs::create_dir_all(&out).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/smtp_sink.py");
        let child = Command::new(python())
            .arg(script)
            .arg(port.to_string())
            .arg(cert)
            .arg(key)
            .arg(&out)
            .arg(mode)
            .args(login.map(|(u, p)| [u, p]).into_iter().flatten())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(out.join("log")).unwrap())
            .spawn()
            .expect("start the SMTP server");
        let sink = SmtpSink { child, port, out };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sink.out.join("ready").exists() {
            assert!(Instant::now() < deadline, "the SMTP server did not start: {}", sink.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        sink
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.out.join("log")).unwrap_or_default()
    }

    /// The messages received so far, in order of arrival.
    pub fn received(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(&self.out)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                let n = p.file_name()?.to_str()?.strip_suffix(".json")?.parse().ok()?;
                Some((n, p))
            })
            .collect();
        files.sort();
        files.iter().map(|(_, p)| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()).collect()
    }

    /// Waits (30 s at most) until `n` messages have arrived.
    pub fn wait_for(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{} of {n} emails arrived within 30 s", got.len());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP/1.1 server on 127.0.0.1 answering every request `200 ok`, run on `rt`.
pub struct HttpReceiver {
    pub port: u16,
    rx: tokio::sync::mpsc::UnboundedReceiver<Received>,
}

impl HttpReceiver {
    pub fn start(rt: &tokio::runtime::Runtime) -> HttpReceiver {
        HttpReceiver::answering(rt, Vec::new())
    }

    /// As [`start`](Self::start), the first requests answered with `statuses` in turn (a
    /// receiver that is busy at first), the rest `200`.
    pub fn answering(rt: &tokio::runtime::Runtime, statuses: Vec<u16>) -> HttpReceiver {
        let statuses = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(statuses)));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = std_listener.local_addr().unwrap().port();
        std_listener.set_nonblocking(true).unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let tx = tx.clone();
                let status = statuses.lock().unwrap().pop_front().unwrap_or(200);
                tokio::spawn(async move {
                    if let Some(req) = read_request(&mut conn).await {
                        let answer =
                            format!("HTTP/1.1 {status} X\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy");
                        let _ = conn.write_all(answer.as_bytes()).await;
                        let _ = tx.send(req);
                    }
                });
            }
        });
        HttpReceiver { port, rx }
    }

    /// The next request, within `within`; `None` when none came.
    pub fn next(&mut self, rt: &tokio::runtime::Runtime, within: Duration) -> Option<Received> {
        rt.block_on(async { tokio::time::timeout(within, self.rx.recv()).await.ok().flatten() })
    }

    /// The next request whose path starts with `prefix` (others are skipped), within 30 s.
    pub fn next_to(&mut self, rt: &tokio::runtime::Runtime, prefix: &str) -> Received {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.next(rt, left).unwrap_or_else(|| panic!("no request to {prefix} within 30 s"));
            if r.target.starts_with(prefix) {
                return r;
            }
        }
    }
}

async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received { method, target, headers, body })
}

/// A plain HTTP/1.1 request to 127.0.0.1:`port` (the core's API): (status, body).
pub fn http(method: &str, port: u16, target: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
