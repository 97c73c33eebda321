//! The error a Tauri command rejects with: a machine-readable `kind` (what the UI may act on)
//! and the `message` the officer reads. Its TypeScript twin is `ui/src/bindings/DeskError.ts`;
//! the UI shows `message` as it is (`errorText` in `ui/src/api.ts`).

use serde::Serialize;
use ts_rs::TS;

use crate::sipua::Refused;

/// Why a desk command did not do what was asked. Serialised as
/// `{ "kind": "no-such-call", "call_id": "…", "message": "no call … on the board" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DeskError {
    /// No core to ask: not running, not reached yet (remote desk), or it stopped.
    #[error("{message}")]
    NotConnected { message: String },
    /// The core answered, and refused: the SIP or HTTP status and its reason.
    #[error("{message}")]
    Refused { status: u16, reason: String, message: String },
    /// No such call (on the board, or in the audit log).
    #[error("{message}")]
    NoSuchCall { call_id: String, message: String },
    /// This desk's leg in a call does not allow it (already in a call, not in one).
    #[error("{message}")]
    Leg { message: String },
    /// The SIP exchange with the core failed without an answer (no answer in time, socket).
    #[error("{message}")]
    Sip { message: String },
    /// The audio output, or a recording that cannot be played here.
    #[error("{message}")]
    Audio { message: String },
    /// The audit store (or the remote core's history) could not answer.
    #[error("{message}")]
    Store { message: String },
    /// The config is invalid or lacks something the command needs; or the core could not start.
    #[error("{message}")]
    Config { message: String },
    /// What the officer entered cannot be used (a date that is not YYYY-MM-DD, a card that may
    /// not be dismissed yet).
    #[error("{message}")]
    Invalid { message: String },
    /// A file could not be written (the settings, an export).
    #[error("{message}")]
    File { message: String },
    /// Something in the desk itself failed (a task that did not finish).
    #[error("{message}")]
    Internal { message: String },
}

impl DeskError {
    /// The text the officer reads.
    pub fn message(&self) -> &str {
        match self {
            DeskError::NotConnected { message }
            | DeskError::Refused { message, .. }
            | DeskError::NoSuchCall { message, .. }
            | DeskError::Leg { message }
            | DeskError::Sip { message }
            | DeskError::Audio { message }
            | DeskError::Store { message }
            | DeskError::Config { message }
            | DeskError::Invalid { message }
            | DeskError::File { message }
            | DeskError::Internal { message } => message,
        }
    }

    pub fn not_connected(m: impl Into<String>) -> DeskError {
        DeskError::NotConnected { message: m.into() }
    }
    pub fn leg(m: impl Into<String>) -> DeskError {
        DeskError::Leg { message: m.into() }
    }
    pub fn audio(m: impl Into<String>) -> DeskError {
        DeskError::Audio { message: m.into() }
    }
    pub fn store(m: impl Into<String>) -> DeskError {
        DeskError::Store { message: m.into() }
    }
    pub fn config(m: impl Into<String>) -> DeskError {
        DeskError::Config { message: m.into() }
    }
    pub fn invalid(m: impl Into<String>) -> DeskError {
        DeskError::Invalid { message: m.into() }
    }
    pub fn file(m: impl Into<String>) -> DeskError {
        DeskError::File { message: m.into() }
    }
    pub fn internal(m: impl Into<String>) -> DeskError {
        DeskError::Internal { message: m.into() }
    }

    /// `call_id` is not on the board.
    pub fn not_on_board(call_id: &str) -> DeskError {
        DeskError::NoSuchCall { call_id: call_id.to_string(), message: format!("no call {call_id} on the board") }
    }

    /// `call_id` is not in the audit log.
    pub fn not_in_log(call_id: &str) -> DeskError {
        DeskError::NoSuchCall { call_id: call_id.to_string(), message: format!("no call {call_id} in the audit log") }
    }

    /// A SIP transaction with the core that did not succeed, in the words `message` gives it: a
    /// refusal with its status, or a failure without one.
    pub fn sip(refused: &Refused, message: String) -> DeskError {
        if refused.status == 0 {
            DeskError::Sip { message }
        } else {
            DeskError::Refused { status: refused.status, reason: refused.reason.clone(), message }
        }
    }

    /// A request to a remote core's API that failed, with `message` for the officer.
    pub fn api(e: &sosdesk::api::client::ClientError, message: String) -> DeskError {
        use sosdesk::api::client::ClientError as E;
        match e {
            E::Unauthorized(_) => DeskError::Refused { status: 401, reason: "Unauthorized".into(), message },
            E::Blocked => DeskError::Refused { status: 429, reason: "Too Many Requests".into(), message },
            E::Status(status, reason) => DeskError::Refused { status: *status, reason: reason.clone(), message },
            E::Address(..) | E::Tls(_) => DeskError::Config { message },
            E::Connect(..) | E::Body(_) | E::Timeout(_) => DeskError::NotConnected { message },
        }
    }

    /// The embedded core's answer to an annotation (an acknowledgement).
    pub fn annotate(e: &sosdesk::server::AnnotateError) -> DeskError {
        use sosdesk::server::AnnotateError as E;
        let message = e.to_string();
        match e {
            E::UnknownCall(call_id) => DeskError::NoSuchCall { call_id: call_id.clone(), message },
            E::Store(_) => DeskError::Store { message },
            E::Stopped => DeskError::NotConnected { message },
        }
    }
}

impl From<sosdesk::api::client::ClientError> for DeskError {
    fn from(e: sosdesk::api::client::ClientError) -> DeskError {
        let message = e.to_string();
        DeskError::api(&e, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialised_with_its_kind_and_the_officers_text() {
        let e = DeskError::not_on_board("c1");
        assert_eq!(e.to_string(), "no call c1 on the board");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"kind": "no-such-call", "call_id": "c1", "message": "no call c1 on the board"})
        );
        let r = DeskError::sip(&Refused { status: 403, reason: "Forbidden".into() }, "test call 933: 403".into());
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"kind": "refused", "status": 403, "reason": "Forbidden", "message": "test call 933: 403"})
        );
        let t = DeskError::sip(&Refused { status: 0, reason: "no answer".into() }, "no answer".into());
        assert_eq!(serde_json::to_value(&t).unwrap()["kind"], "sip");
        assert_eq!(DeskError::not_connected("x").message(), "x");
    }
}
