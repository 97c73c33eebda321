//! Routing: classify (is it an emergency call?), locate, route (ordered routes with failover,
//! SIP trunk or ELIN gateway), and the B2BUA that carries the call.

pub mod b2bua;
pub mod body;
pub mod classify;
pub mod elin;

pub use b2bua::{Engine, LocalEndpoint, Locators, MediaAction, RtpPortSource};
