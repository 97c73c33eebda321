//! Routing: classify (is it an emergency call?), locate, route (ordered routes with failover,
//! SIP trunk or ELIN gateway), and the B2BUA that carries the call.

pub mod body;
pub mod classify;
pub mod elin;
pub mod engine;
pub mod health;
pub mod refused;
pub mod triage;
pub mod trunk_register;

pub use engine::{
    ElinClaim, Engine, LocalEndpoint, Locators, MediaAction, Output, SharedElin, SharedRegistration,
    UserLocationAnswer, UserLocationChange, UserLocationRequest,
};
