pub mod dnsmasq;
pub mod kamailio;
pub mod lab;
pub mod pki;
pub mod postgres;
pub mod rtp;
pub mod store;
pub mod xmllint;
