pub mod lab;
pub mod xmllint;
