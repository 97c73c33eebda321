//! What several core nodes on one store share besides the audit log (issue 14, item 3): the
//! ELIN callback mappings ([`callbacks`]) and every node's events ([`events`]). Each is I/O for
//! the shell (`crate::server`): the engine only asks and is answered (sans-I/O).

pub mod callbacks;
pub mod events;
