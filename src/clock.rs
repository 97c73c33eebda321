//! Time as the sans-I/O cores see it: handed in with every input, never read by them.
//!
//! The engine, the transactions, the registrar, the notifier and a call's media session take a
//! [`Now`] (or its monotonic part) as an argument; only the I/O shells (`server`, the media
//! runner, the HTTP API) call [`Now::read`]. Tests drive a simulated clock by adding durations.

use std::ops::Add;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// One instant on both clocks: monotonic for timers, wall-clock for what people read
/// (event timestamps, the PIDF-LO's timestamp, a REGISTER's `Date`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: DateTime<Utc>,
}

impl Now {
    /// Read both clocks. For I/O shells only: nothing below them reads a clock.
    pub fn read() -> Now {
        Now { mono: Instant::now(), wall: Utc::now() }
    }
}

/// A simulated clock moves both parts together.
impl Add<Duration> for Now {
    type Output = Now;
    fn add(self, d: Duration) -> Now {
        Now { mono: self.mono + d, wall: self.wall + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_clocks_advance_together() {
        let t0 = Now::read();
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(t1.mono - t0.mono, Duration::from_millis(1500));
        assert_eq!((t1.wall - t0.wall).num_milliseconds(), 1500);
    }
}
