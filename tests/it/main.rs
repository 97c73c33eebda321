//! The integration tests, one test binary: each file here is a module (`cargo test --test it
//! <module>::` runs one of them). One binary instead of one per file because each test binary
//! links the whole `sosdesk` library and its dependencies again: on the 2-core build machine this
//! cut `cargo test --no-run` after an edit of the library (BENCHMARKS.md, "Test build").
//!
//! The modules' tests run on the same threads of one process, so they share its state: ports come
//! from `support::lab::free_port` (one counter for the whole binary) or from the kernel (port 0),
//! never fixed; nothing here changes the process's environment or working directory.

mod support;

mod api;
mod architecture;
mod audit_store;
mod channels;
mod cli;
mod crash;
mod desk_events;
mod discovery;
mod emergency_calls;
mod floor_plans;
mod ha;
mod held;
mod lis_calls;
mod lis_import;
mod lis_validate;
mod media_calls;
mod notifications;
mod pidf_lo;
mod provider_dns;
mod provider_tls;
mod reload;
mod route_health;
mod service;
mod sip_torture_parse;
mod site_maps;
mod test_peers;
mod torture_wire;
mod two_nodes;
mod unlocated;
mod user_locations;
mod voice_channel;
mod wiremap;
