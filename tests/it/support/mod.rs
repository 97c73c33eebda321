pub mod dnsmasq;
pub mod kamailio;
pub mod lab;
pub mod pki;
pub mod rtp;
pub mod snmpsim;
pub mod xmllint;
