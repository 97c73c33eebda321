//! A real SNMP v3 agent with privacy for the discovery tests: net-snmp's `snmpd` (Debian package
//! `snmpd`) on 127.0.0.1:<port>, holding one USM user with SHA-256 authentication and AES-128
//! privacy (RFC 7860, RFC 3826), and proxying the context `switch` to a simulated switch
//! ([`super::snmpsim::Snmpsim`], SNMP v2c). The discovery client then reads the real Catalyst
//! walk through net-snmp's own USM implementation: the way a Cisco switch serves its per-VLAN
//! bridge tables under a context, and a check of privacy against the agent most devices embed
//! (snmpsim 0.4.5's AES answers do not decode: docs/discovery.md).
//!
//! net-snmp answers its own host's MIBs in the default context; only the proxied context
//! carries the switch, so the test polls with `context = "switch"`.

#![allow(dead_code)]

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "sosdesk";
pub const AUTH_PASSWORD: &str = "auth-pa55word";
pub const PRIV_PASSWORD: &str = "priv-pa55word";
pub const CONTEXT: &str = "switch";

pub struct Snmpd {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

const START_WITHIN: Duration = Duration::from_secs(20);

impl Snmpd {
    /// Start snmpd in the foreground with a configuration of its own (no system file, no MIB
    /// modules' persistent state outside its folder), proxying context `switch` to the v2c agent
    /// on 127.0.0.1:`switch_port` (community `public`); returns once it listens.
    pub fn start_proxy_to(switch_port: u16) -> Snmpd {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = super::lab::free_port();
        let conf = dir.path().join("snmpd.conf");
        std::fs::write(
            &conf,
            format!(
                "createUser {USER} SHA-256 \"{AUTH_PASSWORD}\" AES \"{PRIV_PASSWORD}\"\n\
                 group switchreaders usm {USER}\n\
                 view all included .1\n\
                 # priv: the user is refused without encryption; prefix \"\": every context\n\
                 access switchreaders \"\" usm priv prefix all none none\n\
                 proxy -Cn {CONTEXT} -v 2c -c public 127.0.0.1:{switch_port} .1.3.6.1\n\
                 # LLDP-MIB (IEEE 802.1AB) lives under iso.0.8802\n\
                 proxy -Cn {CONTEXT} -v 2c -c public 127.0.0.1:{switch_port} .1.0.8802\n"
            ),
        )
        .unwrap();
        let log = File::create(dir.path().join("snmpd.log")).unwrap();
        let child = Command::new("snmpd")
            // -f foreground, -C no other configuration file, -Le log to stderr.
            .args(["-f", "-C", "-Le", "-c"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.path().join("snmpd.pid"))
            .arg(format!("udp:127.0.0.1:{port}"))
            .env("SNMP_PERSISTENT_DIR", dir.path())
            .env("SNMPCONFPATH", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start snmpd (Debian package snmpd; test.sh installs it): {e}"));
        let mut agent = Snmpd { child: Some(child), port, dir };
        agent.wait_listening();
        agent
    }

    /// Listening once its UDP port is bound (read from /proc/net, which does not touch the port).
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_WITHIN;
        loop {
            if super::lab::is_listening("127.0.0.1", self.port, false) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("snmpd exited ({status}) before listening:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "snmpd did not listen within {START_WITHIN:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("snmpd.log")).unwrap_or_default()
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
