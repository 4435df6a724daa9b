//! The time, for pauses and windows. `CLUSTERUP_NOW` (RFC 3339) replaces
//! the clock, so tests can stand inside or outside a window.

use anyhow::{Context, Result};
use jiff::Timestamp;

pub fn now() -> Result<Timestamp> {
    match std::env::var("CLUSTERUP_NOW") {
        Ok(text) => text.parse().with_context(|| format!("CLUSTERUP_NOW={text:?} is not an RFC 3339 time")),
        Err(_) => Ok(Timestamp::now()),
    }
}
