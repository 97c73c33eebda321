//! How sosdesk writes times into its store (SQLite or PostgreSQL, as text): one helper shared by the audit log and the
//! Location Information Service, so neither has to import the other (location sits below audit).

use chrono::{DateTime, SecondsFormat, Utc};

/// How times are stored: RFC 3339, UTC, nanoseconds, `Z`. Fixed width, so ordering the text orders
/// the times, and lossless for `DateTime<Utc>`.
pub(crate) fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}
