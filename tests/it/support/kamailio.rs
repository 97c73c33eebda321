//! A real Kamailio (Debian packages `kamailio` and `kamailio-tls-modules`, 5.6) as the TLS SBC of
//! the SIP-over-TLS tests. sipp (Debian) has no TLS, so Kamailio stands between TLS and UDP:
//!
//! * a provider's SBC: sosdesk --TLS--> Kamailio --UDP--> sipp UAS (`udp_to`);
//! * a PBX's SBC: sipp UAC --UDP--> Kamailio --TLS--> sosdesk (`tls_to`).
//!
//! Routing (the generated `kamailio-<udp_port>.cfg`, see [`config`]):
//! * a new request that came over TLS is relayed statefully (tm) to `udp_to` over UDP, one that
//!   came over UDP to `tls_to` over TLS; with `record_route` (double Record-Route, one per
//!   transport) so that ACK, BYE and re-INVITEs of the dialog come back through Kamailio and
//!   `loose_route` sends them on over the right transport; responses follow the Vias;
//! * when the Request-URI names Kamailio itself (`sip:911@127.0.0.1:<tls_port>`), its host and
//!   port are rewritten to the next hop's (and its `transport` parameter dropped), as an SBC
//!   does; a Request-URI naming anyone else (a DNS name) is relayed unchanged;
//! * an out-of-dialog OPTIONS without a user part (a keep-alive to the SBC, also the readiness
//!   probe here) is answered 200 by Kamailio itself; OPTIONS with a user part are relayed;
//! * with no next hop for that direction (`udp_to`/`tls_to` None) the answer is 503;
//! * tm's `fr_timer` is 5 s instead of 30 s: a silent next hop gets a 408 from Kamailio in 5 s.
//!
//! TLS (the generated `tls-<udp_port>.cfg`): as server the test PKI's server certificate; with
//! `require_client_cert` the client must present a certificate signed by the test CA, or the
//! handshake is refused. With TLS 1.3 a client only learns that on its first read (its side of
//! the handshake is over before the server checks the certificate: alert "certificate required"
//! or "unknown CA" then). As client (towards `tls_to`) Kamailio verifies the server's chain
//! against the test CA (names are moot: the PKI's server certificate names 127.0.0.1 too) and
//! presents the test client certificate (CN=sosdesk-test); it sends no SNI.
//!
//! Kamailio runs in the foreground (`-DD`: no daemon, but its worker processes, which TLS needs),
//! logs to `kamailio-<udp_port>.log` in the test's folder (`-E`), keeps its runtime files there
//! (`-Y`) and writes nothing else. It is stopped on drop (see [`Kamailio::stop`]).

#![allow(dead_code)]

use std::fs::File;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pki::TestPki;

#[derive(Clone, Debug)]
pub struct SbcOptions {
    /// Kamailio listens on udp:127.0.0.1:udp_port ...
    pub udp_port: u16,
    /// ... and tls:127.0.0.1:tls_port.
    pub tls_port: u16,
    /// TLS server side: refuse a client without a certificate signed by the test CA.
    pub require_client_cert: bool,
    /// Where requests that came over UDP go, over TLS (sosdesk's TLS listener).
    pub tls_to: Option<SocketAddr>,
    /// Where requests that came over TLS go, over UDP (a sipp UAS).
    pub udp_to: Option<SocketAddr>,
}

pub struct Kamailio {
    child: Option<Child>,
    log: PathBuf,
    pub udp: SocketAddr,
    pub tls: SocketAddr,
    /// Whether `tls` is listened on (not by a config of UDP only, [`start_with_config`]).
    has_tls: bool,
}

/// How long Kamailio may take to answer on both ports. It takes about 0.1 s here; the bound
/// is for a loaded CI machine.
const START_WITHIN: Duration = Duration::from_secs(10);

/// An SBC on free ports relaying UDP → `tls_to` and TLS → `udp_to`.
pub fn start_sbc_on_free_ports(
    dir: &Path,
    pki: &TestPki,
    require_client_cert: bool,
    tls_to: Option<SocketAddr>,
    udp_to: Option<SocketAddr>,
) -> Kamailio {
    let (udp_port, tls_port) = (super::lab::free_port(), super::lab::free_port());
    start_sbc(dir, pki, SbcOptions { udp_port, tls_port, require_client_cert, tls_to, udp_to })
}

pub fn start_sbc(dir: &Path, pki: &TestPki, opts: SbcOptions) -> Kamailio {
    let name = format!("kamailio-{}", opts.udp_port);
    // Files named by the UDP port: two SBCs (a provider's and a PBX's) may share a test folder.
    let cfg = dir.join(format!("{name}.cfg"));
    let tls_cfg = dir.join(format!("tls-{}.cfg", opts.udp_port));
    let run_dir = dir.join(format!("{name}.run"));
    let log = dir.join(format!("{name}.log"));
    std::fs::create_dir_all(&run_dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", run_dir.display()));
    std::fs::write(&tls_cfg, tls_config(pki, opts.require_client_cert)).unwrap();
    std::fs::write(&cfg, config(&opts, &tls_cfg)).unwrap();

    let ip = [127, 0, 0, 1];
    let tls = SocketAddr::from((ip, opts.tls_port));
    spawn(dir, &cfg, &run_dir, &log, SocketAddr::from((ip, opts.udp_port)), Some(tls))
}

/// Kamailio with a config of the caller's (the HA example's, tests/it/ha.rs) listening on `udp`
/// only; its log is `<name>.log` in `dir`.
pub fn start_with_config(dir: &Path, cfg: &Path, name: &str, udp: SocketAddr) -> Kamailio {
    let run_dir = dir.join(format!("{name}.run"));
    std::fs::create_dir_all(&run_dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", run_dir.display()));
    spawn(dir, cfg, &run_dir, &dir.join(format!("{name}.log")), udp, None)
}

fn spawn(dir: &Path, cfg: &Path, run_dir: &Path, log: &Path, udp: SocketAddr, tls: Option<SocketAddr>) -> Kamailio {
    // /usr/sbin is not on every user's PATH.
    let bin = if Path::new("/usr/sbin/kamailio").exists() { "/usr/sbin/kamailio" } else { "kamailio" };
    let out = File::create(log).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-f").arg(cfg);
    // -DD: stay in the foreground but fork the workers (-D alone would serve UDP only).
    // -E: log to stderr (our file). -Y: runtime dir. -w: working dir (core files).
    // -m/-M: shared/private memory in MB, modest so that several instances fit.
    cmd.args(["-DD", "-E", "-m", "32", "-M", "8", "-Y"]).arg(run_dir).arg("-w").arg(dir);
    cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
    // Same process group as the tests: a Ctrl-C of `cargo test` stops Kamailio too.
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot start kamailio (Debian packages kamailio, kamailio-tls-modules; test.sh installs them): {e}")
    });
    let mut k =
        Kamailio { child: Some(child), log: log.to_path_buf(), udp, tls: tls.unwrap_or(udp), has_tls: tls.is_some() };
    if let Err(why) = k.wait_ready() {
        k.stop();
        panic!("kamailio {} {why}; its log:\n{}", cfg.display(), k.log());
    }
    k
}

impl Kamailio {
    /// Kamailio's log so far (its stderr: startup, TLS errors, one line per request and reply).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stop Kamailio and all its workers, and reap it. Idempotent.
    ///
    /// SIGTERM to the main process, which stops and reaps its workers itself (in about 15 ms
    /// here). Only if it is still there after 5 s: SIGKILL to its workers, then to it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if matches!(child.try_wait(), Ok(None)) {
            // Not reaped yet, so the id is still this process's.
            signal("-TERM", child.id());
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if matches!(child.try_wait(), Ok(None)) {
                // Its children while it lives (and so not reaped by anyone else): the workers.
                for worker in children_of(child.id()) {
                    signal("-KILL", worker);
                }
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }

    /// UDP: an OPTIONS answered by Kamailio itself (so its workers run, not just its sockets);
    /// TLS: a TCP connection accepted. Polled against a deadline, not slept for.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_WITHIN;
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let local = sock.local_addr().unwrap();
        let mut buf = [0u8; 4096];
        for n in 0.. {
            self.check_running()?;
            if Instant::now() > deadline {
                return Err(format!("did not answer an OPTIONS on udp {} within {START_WITHIN:?}", self.udp));
            }
            let probe = format!(
                "OPTIONS sip:{udp} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-ready-{n};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=ready\r\nTo: <sip:{udp}>\r\n\
                 Call-ID: ready-{n}-{pid}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                udp = self.udp,
                pid = std::process::id()
            );
            // Sending to a port nobody has bound yet may fail (ICMP unreachable): try again.
            let _ = sock.send_to(probe.as_bytes(), self.udp);
            if let Ok((len, from)) = sock.recv_from(&mut buf) {
                if from == self.udp && buf[..len].starts_with(b"SIP/2.0 ") {
                    break;
                }
            }
        }
        while self.has_tls {
            self.check_running()?;
            if TcpStream::connect_timeout(&self.tls, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("did not accept a connection on tls {} within {START_WITHIN:?}", self.tls));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn check_running(&mut self) -> Result<(), String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(status))) => Err(format!("exited ({status})")),
            Some(Err(e)) => Err(format!("cannot be waited for: {e}")),
            None => Err("was stopped".into()),
        }
    }
}

/// `kill SIG PID`: the kill(1) command, as the tests have no libc binding.
fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// The child processes of `pid` (Linux: /proc/PID/task/TID/children).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The tls module's file: `[server:default]` for the TLS port, `[client:default]` for the
/// connections Kamailio opens towards `tls_to` (without it Kamailio 5.6 would use built-in
/// client defaults: no certificate to present, nothing to verify the server with).
fn tls_config(pki: &TestPki, require_client_cert: bool) -> String {
    let p = |p: &Path| p.display().to_string();
    let verify = if require_client_cert { "yes" } else { "no" };
    format!(
        "[server:default]\n\
         method = TLSv1.2+\n\
         certificate = {server_cert}\n\
         private_key = {server_key}\n\
         ca_list = {ca}\n\
         verify_certificate = {verify}\n\
         require_certificate = {verify}\n\
         \n\
         [client:default]\n\
         method = TLSv1.2+\n\
         certificate = {client_cert}\n\
         private_key = {client_key}\n\
         ca_list = {ca}\n\
         verify_certificate = yes\n\
         require_certificate = yes\n",
        server_cert = p(&pki.server_cert),
        server_key = p(&pki.server_key),
        client_cert = p(&pki.client_cert),
        client_key = p(&pki.client_key),
        ca = p(&pki.ca_cert),
    )
}

/// The routing script (see the module's comment).
fn config(opts: &SbcOptions, tls_cfg: &Path) -> String {
    // Each direction's next hop: rewrite a Request-URI that names Kamailio itself, then send to
    // $du over the other transport; or 503 when the test gave no next hop.
    let hop = |to: Option<SocketAddr>, transport: &str, missing: &str| match to {
        Some(a) => format!(
            "if (uri == myself) {{ $rd = \"{ip}\"; $rp = {port}; uri_param_rm(\"transport\"); }}\n        \
             $du = \"sip:{a};transport={transport}\";",
            ip = a.ip(),
            port = a.port()
        ),
        None => format!("sl_send_reply(\"503\", \"No next hop ({missing} not set)\"); exit;"),
    };
    format!(
        r#"#!KAMAILIO
# A TLS <-> UDP SBC for sosdesk's tests (tests/it/support/kamailio.rs).
debug=2
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
enable_tls=yes
# Next hops are IP addresses: no DNS, ever (dnsmasq tests must only see sosdesk's queries).
dns=no
rev_dns=no
dns_try_naptr=no
use_dns_failover=off
listen=udp:127.0.0.1:{udp_port}
listen=tls:127.0.0.1:{tls_port}

# tm before sl and rr: they bind to it when they initialise.
loadmodule "tls.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"

modparam("tls", "config", "{tls_cfg}")
# A silent next hop gets a 408 after 5 s rather than 30.
modparam("tm", "fr_timer", 5000)
# Two Record-Routes when the transport changes (the default, said here because the in-dialog
# routing depends on it): each side then routes back to the interface it knows.
modparam("rr", "enable_double_rr", 1)

request_route {{
    xlog("L_INFO", "sbc: request $rm $ru from $pr:$si:$sp\n");
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        # In dialog: our Record-Routes come back as Route headers; loose_route consumes them
        # and the request goes on to the Request-URI (the other side's Contact).
        if (loose_route()) {{
            route(RELAY);
        }}
        # An ACK of a non-2xx final response belongs to the INVITE transaction: tm absorbs or
        # forwards it.
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                route(RELAY);
            }}
            exit;
        }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            route(RELAY);
        }}
        exit;
    }}
    if (is_method("OPTIONS") && $rU == $null) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    record_route();
    if ($pr == "tls") {{
        {to_udp}
    }} else {{
        {to_tls}
    }}
    route(RELAY);
}}

route[RELAY] {{
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}

reply_route {{
    xlog("L_INFO", "sbc: reply $rs $rr ($rm) from $pr:$si:$sp\n");
}}
"#,
        udp_port = opts.udp_port,
        tls_port = opts.tls_port,
        tls_cfg = tls_cfg.display(),
        to_udp = hop(opts.udp_to, "udp", "udp_to"),
        to_tls = hop(opts.tls_to, "tls", "tls_to"),
    )
}
