//! The one clock: for pauses, windows and every time the journal and the
//! state files record. Commands get it from `seams::Seams`; the system
//! clock honours `CLUSTERUP_NOW` (RFC 3339), so the end-to-end tests can
//! stand inside or outside a window.

use anyhow::{Context, Result};
use jiff::Timestamp;

pub trait Clock: Sync {
    fn now(&self) -> Result<Timestamp>;

    /// Now, to the second, for a record (an unreadable time, which the
    /// commands that decide by it report, falls back to the real clock).
    /// Cut, not rounded: a record never says a run happened later than it
    /// did (metrics compared with the time they are read were a second
    /// ahead half the time).
    fn stamp(&self) -> Timestamp {
        let now = self.now().unwrap_or_else(|_| Timestamp::now());
        let second = jiff::TimestampRound::new().smallest(jiff::Unit::Second).mode(jiff::RoundMode::Trunc);
        now.round(second).unwrap_or(now)
    }
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Result<Timestamp> {
        match std::env::var("CLUSTERUP_NOW") {
            Ok(text) => text.parse().with_context(|| format!("CLUSTERUP_NOW={text:?} is not an RFC 3339 time")),
            Err(_) => Ok(Timestamp::now()),
        }
    }
}
