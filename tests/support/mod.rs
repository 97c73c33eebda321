pub mod xmllint;
pub mod lab;
