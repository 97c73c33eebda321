//! Digest credentials (RFC 2617 `Authorization` values), any text, one value per input line, to
//! a server that issued a challenge (the token `NONCE` in the input is replaced by a nonce it
//! issued, so the fuzzer reaches past the nonce check): parsing and verifying never panic, and a
//! value that verifies names a desk account with its right password. Then the property the desks
//! rely on: the client's answer (`digest::answer`) to the server's challenge verifies, once, for
//! any user name and URI that a header can carry, and a wrong password never does.
#![no_main]

use std::net::IpAddr;

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use sosdesk::sip::digest::{answer, parse_params, AuthFailure, DigestServer};

const USERS: [(&str, &str); 2] = [("desk1", "lobby-desk-secret"), ("desk2", "control-room-secret")];

fn password(u: &str) -> Option<&'static str> {
    USERS.iter().find(|(n, _)| *n == u).map(|(_, p)| *p)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let client: IpAddr = [192, 0, 2, 7].into();
    let mut server = DigestServer::new("sosdesk");
    let challenge = server.challenge(false, client, now);
    let nonce = parse_params(&challenge).and_then(|p| p.get("nonce").cloned()).expect("our challenge has a nonce");

    let mut lines = text.lines();
    let method = lines.next().unwrap_or("INVITE").to_string();
    let uri = lines.next().unwrap_or("sip:conf-x@127.0.0.1").to_string();
    let values: Vec<String> = lines.map(|l| l.replace("NONCE", &nonce)).collect();
    for v in &values {
        let _ = parse_params(v);
        let _ = answer(v, &method, &uri, "desk1", "pw");
    }
    let _ = server.claimed_user(&values);
    if let Ok(user) = server.verify(&values, &method, &uri, client, now, password) {
        assert!(password(&user).is_some(), "{user:?} verified but is no account");
    }

    // The client side against the server: any method and URI a request line can carry.
    if method.is_empty() || uri.is_empty() || method.contains(['"', '\\', ' ']) || uri.contains(['"', '\\', ' ']) {
        return;
    }
    let mut server = DigestServer::new("sosdesk");
    let challenge = server.challenge(false, client, now);
    let (user, pass) = USERS[data.len() % USERS.len()];
    let wrong = answer(&challenge, &method, &uri, user, "wrong password").expect("an answer");
    assert!(matches!(server.verify(&[wrong], &method, &uri, client, now, password), Err(AuthFailure::Invalid(_))));
    let good = answer(&challenge, &method, &uri, user, pass).expect("an answer");
    assert_eq!(server.verify(std::slice::from_ref(&good), &method, &uri, client, now, password), Ok(user.to_string()));
    assert_eq!(
        server.verify(&[good], &method, &uri, client, now, password),
        Err(AuthFailure::Stale),
        "replay accepted"
    );
});
