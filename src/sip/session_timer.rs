//! Session timers (RFC 4028) as a UAS that lets the other side refresh: sosdesk takes
//! `Require: timer`, and when a request asks for a session interval (`Session-Expires`) from a
//! party that supports the extension, its 2xx confirms the interval with that party as the
//! refresher (RFC 4028 §9). The refresh itself (a re-INVITE or UPDATE inside the dialog) is
//! answered like any re-offer. sosdesk never ends a call because a refresh did not come: an
//! emergency call is not torn down by a timer (RFC 4028 §10 says SHOULD, not MUST).

use super::message::Message;

/// The option tags sosdesk supports (RFC 3261 §20.37).
pub const SUPPORTED: &str = "timer";

/// The option tags of a `Require` (or `Supported`) header that sosdesk does not support, as a
/// header value for `Unsupported` (RFC 3261 §8.2.2.3); `None` when it supports them all.
pub fn unsupported(require: &str) -> Option<String> {
    let missing: Vec<&str> =
        require.split(',').map(str::trim).filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("timer")).collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// The headers of a 2xx to `request` (an INVITE or UPDATE, initial or a refresh) that take up
/// the session interval it asks for: `Session-Expires` with the requester as the refresher
/// (`uac`) and `Require: timer`. Nothing when it asks for none, does not support the extension,
/// or names sosdesk the refresher (then there is no session timer, RFC 4028 §7.2, §9).
pub fn answer_headers(request: &Message) -> Vec<(&'static str, String)> {
    let Some(se) = request.header("Session-Expires") else { return Vec::new() };
    let mut parts = se.split(';');
    let Some(delta) = parts.next().and_then(|d| d.trim().parse::<u32>().ok()).filter(|d| *d > 0) else {
        return Vec::new();
    };
    let named = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("refresher").then(|| v.trim().to_ascii_lowercase())
    });
    let supports = ["Supported", "Require"]
        .iter()
        .flat_map(|h| request.headers_named(h))
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("timer")));
    if !supports {
        return Vec::new();
    }
    // sosdesk does not send refreshes itself: a request that names it the refresher (`uas`) gets
    // no session timer (a 2xx without Session-Expires: none, §7.2), rather than one that would
    // make the other side end the call when no refresh comes (§10).
    if named.as_deref() == Some("uas") {
        return Vec::new();
    }
    vec![("Require", "timer".to_string()), ("Session-Expires", format!("{delta};refresher=uac"))]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Message {
        let mut m = Message::request("INVITE", "sip:911@192.0.2.1");
        for (k, v) in headers {
            m.push(k, *v);
        }
        m
    }

    #[test]
    fn a_session_interval_is_taken_up_with_its_refresher() {
        let r = request(&[("Supported", "replaces, timer"), ("Session-Expires", "1800")]);
        assert_eq!(
            answer_headers(&r),
            [("Require", "timer".to_string()), ("Session-Expires", "1800;refresher=uac".to_string())]
        );
        // sosdesk named the refresher: it sends no refreshes, so it takes up no timer.
        let r = request(&[("Supported", "timer"), ("Session-Expires", "90;refresher=uas"), ("Min-SE", "90")]);
        assert!(answer_headers(&r).is_empty());
        // A refresh that requires it.
        let r = request(&[("Require", "timer"), ("Session-Expires", "600;Refresher=UAC")]);
        assert_eq!(answer_headers(&r)[1].1, "600;refresher=uac");
        // The compact form (x) parses to the full name, so it is found either way.
        let parsed = crate::sip::parse::parse_datagram(
            b"UPDATE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\n\
Call-ID: c\r\nCSeq: 2 UPDATE\r\nk: timer\r\nx: 300\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(answer_headers(&parsed)[1].1, "300;refresher=uac");
    }

    #[test]
    fn no_timer_without_an_interval_or_without_support() {
        assert!(answer_headers(&request(&[("Supported", "timer")])).is_empty());
        // A proxy put the interval in, the caller does not support it: no session timer.
        assert!(answer_headers(&request(&[("Session-Expires", "1800")])).is_empty());
        assert!(answer_headers(&request(&[("Supported", "timer"), ("Session-Expires", "soon")])).is_empty());
        assert!(answer_headers(&request(&[("Supported", "timer"), ("Session-Expires", "0")])).is_empty());
    }

    #[test]
    fn require_timer_is_supported_and_other_tags_are_not() {
        assert_eq!(unsupported("timer"), None);
        assert_eq!(unsupported(" Timer "), None);
        assert_eq!(unsupported("timer, 100rel"), Some("100rel".into()));
        assert_eq!(unsupported("nosuchextension"), Some("nosuchextension".into()));
        assert_eq!(unsupported(""), None);
    }
}
