//! Is this call an emergency call for this caller's policy? Finds the dialled number in the
//! Request-URI and normalises it to the policy's emergency dial string.

use crate::policy::Policy;
use crate::sip::Uri;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// As dialled (e.g. "9911").
    pub dialed: String,
    /// What goes out to the provider (e.g. "911").
    pub normalized: String,
    pub test: bool,
}

/// Recognises the number in `sip:`/`sips:` URIs (with or without `;user=phone`, RFC 3261
/// §19.1.6), `tel:` URIs (RFC 3966, visual separators ignored) and `urn:service:sos` with its
/// sub-services (RFC 5031 §4.2), which map to the policy's first non-test dial string.
pub fn classify(request_uri: &str, policy: &Policy) -> Option<Classified> {
    let uri = Uri::parse(request_uri).ok()?;
    if uri.scheme == "urn" {
        let service = uri.opaque.to_ascii_lowercase();
        let is_sos = service == "service:sos" || service.starts_with("service:sos.");
        if !is_sos {
            return None;
        }
        let n = policy.numbers.iter().find(|n| !n.test)?;
        return Some(Classified { dialed: uri.opaque.clone(), normalized: n.dial_string.clone(), test: false });
    }
    let dialed = uri.number()?;
    for n in &policy.numbers {
        if dialed == n.dial_string || n.masks.contains(&dialed) {
            return Some(Classified { dialed, normalized: n.dial_string.clone(), test: n.test });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::EmergencyNumber;

    fn policy() -> Policy {
        Policy {
            notify: Vec::new(),
            acknowledge: Default::default(),
            name: "p".into(),
            numbers: vec![
                EmergencyNumber { dial_string: "911".into(), masks: vec!["9911".into()], test: false },
                EmergencyNumber { dial_string: "933".into(), masks: vec![], test: true },
                EmergencyNumber { dial_string: "999".into(), masks: vec!["112".into()], test: false },
            ],
            routes: vec![],
            no_location_routes: vec![],
            default_erl: None,
            conference_uri: None,
            conference_mode: Default::default(),
        }
    }

    #[test]
    fn recognises_every_uri_form() {
        let p = policy();
        let cases = [
            ("sip:911@10.0.0.1", "911", "911", false),
            ("sips:911@sbc.example.com;user=phone", "911", "911", false),
            ("sip:9911@10.0.0.1:5060;transport=tcp", "9911", "911", false),
            ("tel:9-1-1", "911", "911", false),
            ("tel:911;phone-context=+1", "911", "911", false),
            ("sip:112@pbx", "112", "999", false),
            ("sip:933@pbx", "933", "933", true),
            ("sip:%39%31%31@pbx", "911", "911", false),
            ("urn:service:sos", "service:sos", "911", false),
            ("urn:service:sos.fire", "service:sos.fire", "911", false),
        ];
        for (uri, dialed, normalized, test) in cases {
            let c = classify(uri, &p).unwrap_or_else(|| panic!("{uri} not recognised"));
            assert_eq!((c.dialed.as_str(), c.normalized.as_str(), c.test), (dialed, normalized, test), "{uri}");
        }
    }

    #[test]
    fn ordinary_numbers_are_not_emergency_calls() {
        let p = policy();
        for uri in
            ["sip:9112@pbx", "sip:alice@pbx", "tel:+14255550100", "urn:service:counseling", "sip:91@pbx", "mailto:x@y"]
        {
            assert_eq!(classify(uri, &p), None, "{uri}");
        }
    }
}
