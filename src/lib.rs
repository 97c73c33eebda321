//! sosdesk: the routing core of an enterprise emergency-calling system.
//!
//! See ARCHITECTURE.md for a map of the modules and how a call flows through them.

pub mod access;
pub mod api;
pub mod audit;
pub mod channels;
pub mod clock;
pub mod config;
pub mod core_handle;
pub mod db;
pub mod dns;
pub mod events;
pub mod intake;
pub mod location;
pub mod media;
pub mod notify;
pub mod policy;
pub mod reach;
pub mod registrar;
pub mod routing;
pub mod server;
pub mod shared;
pub mod sip;
pub(crate) mod time;
pub mod transport;
pub mod watchdog;
