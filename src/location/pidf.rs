//! PIDF-LO (RFC 4119, RFC 5139, RFC 5491): build and tolerant parse. (Being written.)
