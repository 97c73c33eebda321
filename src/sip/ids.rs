//! Fresh identifiers: tags (RFC 3261 §19.3), branches (§8.1.1.7) and Call-IDs (§8.1.1.4).

use rand::Rng;

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        let b: u8 = rng.gen();
        s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
        s.push(char::from_digit((b & 0xf) as u32, 16).unwrap_or('0'));
    }
    s
}

/// A From/To tag: 64 random bits, enough to be globally unique (§19.3).
pub fn new_tag() -> String {
    random_hex(8)
}

/// A branch with the RFC 3261 magic cookie, unique per transaction.
pub fn new_branch() -> String {
    format!("z9hG4bK{}", random_hex(10))
}

/// A Call-ID: 128 random bits at our host.
pub fn new_call_id(host: &str) -> String {
    format!("{}@{}", random_hex(16), host)
}

/// sosdesk's own call identifier (what desks, the audit log and the CLI show).
pub fn new_call_ref() -> String {
    random_hex(8)
}
