//! SIP: the message model, parsing and framing, transactions and transports.
//!
//! Everything SIP-specific the rest of sosdesk needs goes through this module. It is written
//! for sosdesk rather than wrapping a third-party stack; ARCHITECTURE.md records the measurements
//! behind that choice.

pub mod body;
pub mod client;
pub mod dialog;
pub mod digest;
pub mod flow;
pub mod ids;
pub mod message;
pub mod parse;
pub mod rfc3263;
pub mod session_timer;
pub mod target;
pub mod transaction;
pub mod uri;

pub use message::{reason_phrase, split_comma_list, Header, Message, StartLine, Via};
pub use uri::{NameAddr, Uri};
