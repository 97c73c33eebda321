pub mod lab;
pub mod rtp;
pub mod xmllint;
