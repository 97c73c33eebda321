//! HMAC-SHA256 signatures: of webhook deliveries (so a receiver knows sosdesk sent this body,
//! now) and of acknowledgement links (so only a link sosdesk sent acknowledges, for its call,
//! as its recipient, until it expires). docs/channels.md tells a receiver how to verify.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header with the Unix time (s) the delivery was signed at.
pub const TIMESTAMP_HEADER: &str = "X-Sosdesk-Timestamp";
/// The header with `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "X-Sosdesk-Signature";
/// How far a receiver should accept a timestamp from its own clock (s): an older delivery is
/// a replay (docs/channels.md).
pub const REPLAY_WINDOW_S: i64 = 300;

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length (RFC 2104 §2): this never fails.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// The value of [`SIGNATURE_HEADER`] for `body` sent at `timestamp`.
pub fn webhook_signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    format!("v1={}", hex::encode(m.finalize().into_bytes()))
}

/// What a receiver does (and the tests): the signature matches and the timestamp is within
/// [`REPLAY_WINDOW_S`] of `now`.
pub fn verify_webhook(secret: &[u8], timestamp: &str, signature: &str, body: &[u8], now: i64) -> bool {
    let Ok(ts) = timestamp.trim().parse::<i64>() else { return false };
    if (now - ts).abs() > REPLAY_WINDOW_S {
        return false;
    }
    let Some(hex_sig) = signature.trim().strip_prefix("v1=") else { return false };
    let Ok(sig) = hex::decode(hex_sig) else { return false };
    let mut m = mac(secret);
    m.update(timestamp.trim().as_bytes());
    m.update(b".");
    m.update(body);
    m.verify_slice(&sig).is_ok() // constant time
}

/// What an acknowledgement link says, once its signature is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckClaim {
    pub call_id: String,
    /// Whom the link was sent to (`mailto:…`, `sms:…`, a webhook's origin): who acknowledges.
    pub target: String,
    /// Unix time (s) after which the link no longer works.
    pub expires: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("this link is not one sosdesk sent (or it was cut short)")]
    Invalid,
    #[error("this link has expired")]
    Expired,
}

const ACK_VERSION: &str = "ack1";

/// The token in an acknowledgement link: `base64url(claim) "." base64url(HMAC)`, URL-safe.
pub fn ack_token(key: &[u8], claim: &AckClaim) -> String {
    let payload = format!("{ACK_VERSION}\n{}\n{}\n{}", claim.call_id, claim.target, claim.expires);
    let mut m = mac(key);
    m.update(payload.as_bytes());
    format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
}

/// Checks a token's signature, then its expiry at `now` (Unix s). Anything else (too long, not
/// base64, not four lines) is [`AckError::Invalid`], never a panic.
pub fn verify_ack(key: &[u8], token: &str, now: i64) -> Result<AckClaim, AckError> {
    if token.len() > 2048 {
        return Err(AckError::Invalid);
    }
    let (payload_b64, sig_b64) = token.split_once('.').ok_or(AckError::Invalid)?;
    let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| AckError::Invalid)?;
    let sig = URL_SAFE_NO_PAD.decode(sig_b64).map_err(|_| AckError::Invalid)?;
    let mut m = mac(key);
    m.update(&payload);
    m.verify_slice(&sig).map_err(|_| AckError::Invalid)?;
    let text = String::from_utf8(payload).map_err(|_| AckError::Invalid)?;
    let parts: Vec<&str> = text.split('\n').collect();
    let [ACK_VERSION, call_id, target, expires] = parts[..] else { return Err(AckError::Invalid) };
    let expires = expires.parse::<i64>().map_err(|_| AckError::Invalid)?;
    if now > expires {
        return Err(AckError::Expired);
    }
    Ok(AckClaim { call_id: call_id.to_string(), target: target.to_string(), expires })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signature_matches_an_independent_hmac_and_refuses_replays_and_changes() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut m = mac(b"Jefe");
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let sig = webhook_signature(b"Jefe", 1_700_000_000, b"{\"a\":1}");
        assert!(verify_webhook(b"Jefe", "1700000000", &sig, b"{\"a\":1}", 1_700_000_100));
        assert!(!verify_webhook(b"Jefe", "1700000000", &sig, b"{\"a\":2}", 1_700_000_100), "body changed");
        assert!(!verify_webhook(b"Jefe", "1700000001", &sig, b"{\"a\":1}", 1_700_000_100), "timestamp changed");
        assert!(!verify_webhook(b"other", "1700000000", &sig, b"{\"a\":1}", 1_700_000_100), "other key");
        assert!(!verify_webhook(b"Jefe", "1700000000", &sig, b"{\"a\":1}", 1_700_000_301), "a replay");
        assert!(!verify_webhook(b"Jefe", "x", "v1=zz", b"", 0));
    }

    #[test]
    fn ack_tokens_verify_expire_and_refuse_tampering() {
        let claim = AckClaim { call_id: "c-1".into(), target: "mailto:sec@example.org".into(), expires: 1000 };
        let t = ack_token(b"k".repeat(32).as_slice(), &claim);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{t}");
        assert_eq!(verify_ack(&b"k".repeat(32), &t, 999), Ok(claim.clone()));
        assert_eq!(verify_ack(&b"k".repeat(32), &t, 1001), Err(AckError::Expired));
        assert_eq!(verify_ack(&b"j".repeat(32), &t, 999), Err(AckError::Invalid));
        let other = ack_token(&b"k".repeat(32), &AckClaim { call_id: "c-2".into(), ..claim });
        let forged = format!("{}.{}", other.split('.').next().unwrap(), t.split('.').nth(1).unwrap());
        assert_eq!(verify_ack(&b"k".repeat(32), &forged, 999), Err(AckError::Invalid));
        for junk in ["", ".", "a.b", "!!!.###", &"a".repeat(5000)] {
            assert_eq!(verify_ack(&b"k".repeat(32), junk, 0), Err(AckError::Invalid), "{junk}");
        }
    }
}
