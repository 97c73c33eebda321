pub mod dnsmasq;
pub mod kamailio;
pub mod lab;
pub mod pki;
pub mod receivers;
pub mod rtp;
pub mod xmllint;
