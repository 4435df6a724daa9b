//! What clusterup learnt of the registries (`<state dir>/seen.json`): when
//! it first saw each new image, for `min_age` (the clock starts at the
//! first sight of a digest or a new tag; pushing the same digest again
//! does not restart it), and which digest each fixed tag names.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

const FILE: &str = "seen.json";
/// Images seen longer ago than this are forgotten; one seen again starts
/// afresh, which only makes it wait longer.
const FORGET_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 365);

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    /// `repository@digest` or a tagged reference → first seen.
    first: BTreeMap<String, jiff::Timestamp>,
    /// Fixed tags (`repository:autonomy-<sha>`) → the digest they name:
    /// asked once, since they do not move.
    #[serde(default)]
    fixed: BTreeMap<String, String>,
    /// Something was learnt that the file does not hold yet.
    #[serde(skip)]
    learnt: bool,
}

impl Seen {
    pub fn load(state_dir: &Path) -> Seen {
        std::fs::read(state_dir.join(FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// When `key` was first seen; now, if never before.
    pub fn first_seen(&mut self, key: &str, now: jiff::Timestamp) -> jiff::Timestamp {
        *self.first.entry(key.to_string()).or_insert_with(|| {
            self.learnt = true;
            now
        })
    }

    pub fn fixed(&self, reference: &str) -> Option<&str> {
        self.fixed.get(reference).map(String::as_str)
    }

    pub fn remember_fixed(&mut self, reference: String, digest: String) {
        self.fixed.insert(reference, digest);
        self.learnt = true;
    }

    /// Writes what was learnt (nothing new: nothing written).
    pub fn save(&mut self, state_dir: &Path, now: jiff::Timestamp) -> Result<()> {
        if !self.learnt {
            return Ok(());
        }
        self.first.retain(|_, t| now.duration_since(*t) < FORGET_AFTER);
        crate::state::StateDir::open(state_dir)?;
        crate::files::write_atomic(&state_dir.join(FILE), &serde_json::to_vec_pretty(self).expect("plain data"))
    }
}
