//! The one clock: for pauses, windows and every time the journal and the
//! state files record. `CLUSTERUP_NOW` (RFC 3339) replaces it, so tests
//! can stand inside or outside a window.

use anyhow::{Context, Result};
use jiff::Timestamp;

pub fn now() -> Result<Timestamp> {
    match std::env::var("CLUSTERUP_NOW") {
        Ok(text) => text.parse().with_context(|| format!("CLUSTERUP_NOW={text:?} is not an RFC 3339 time")),
        Err(_) => Ok(Timestamp::now()),
    }
}

/// Now, to the second, for a record (an unreadable CLUSTERUP_NOW, which
/// the commands that use it report, falls back to the real clock).
pub fn stamp() -> Timestamp {
    let now = now().unwrap_or_else(|_| Timestamp::now());
    now.round(jiff::Unit::Second).unwrap_or(now)
}
