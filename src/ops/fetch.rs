//! fetch: the registry's current digest for each reference, without pulling.

use std::collections::BTreeMap;
use std::path::Path;

use crate::seams::engine::Engine;

/// Digests by reference; a lookup that fails is kept as its message.
pub type Digests = BTreeMap<String, Result<String, String>>;

/// The references the last run asked the registries about.
const LAST_LOOKUPS: &str = "registry-lookups.json";

/// A lookup that fails is kept as its message (naming the registry), so one
/// unreachable registry does not hide the state of the other services.
pub fn fetch(engine: &dyn Engine, references: &[String]) -> Digests {
    let results = engine.registry_digests(references);
    references.iter().cloned().zip(results.into_iter().map(|r| r.map_err(|e| format!("{e:#}")))).collect()
}

/// The digests of `lookups`: those `early` already holds (asked while
/// the engine was being observed), the others asked now.
pub fn complete(engine: &dyn Engine, lookups: &[String], mut early: Digests) -> Digests {
    let missing: Vec<String> = lookups.iter().filter(|r| !early.contains_key(*r)).cloned().collect();
    let mut out: Digests = lookups.iter().filter_map(|r| Some((r.clone(), early.remove(r)?))).collect();
    out.extend(fetch(engine, &missing));
    out
}

/// What the last run of this stack asked the registries about: worth
/// asking again at once when the compose files have not changed since.
pub fn last_lookups(state_dir: &Path) -> Vec<String> {
    let read = std::fs::read(state_dir.join(LAST_LOOKUPS)).ok();
    read.and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
}

/// Remembers `lookups` for the next run; the file is rewritten only when
/// they change. A failure costs the next run time, nothing else.
pub fn remember_lookups(state_dir: &Path, lookups: &[String], last: &[String]) {
    if lookups != last && state_dir.is_dir() {
        let _ = serde_json::to_vec(lookups)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| crate::files::write_atomic(&state_dir.join(LAST_LOOKUPS), &bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seams::fake::fake;

    #[test]
    fn what_was_asked_early_serves_and_only_the_rest_is_asked() {
        let engine = fake("new-a", "new-b");
        let early: Digests = [
            ("r/a:latest".to_string(), Ok("sha256:early".to_string())),
            ("r/gone:latest".to_string(), Ok("sha256:stale".to_string())),
        ]
        .into();
        let lookups = ["r/a:latest".to_string(), "r/b:latest".to_string()];
        let got = complete(&engine, &lookups, early);
        assert_eq!(got.keys().collect::<Vec<_>>(), ["r/a:latest", "r/b:latest"], "only what this plan asks for");
        assert_eq!(got["r/a:latest"], Ok("sha256:early".to_string()), "not asked twice");
        assert_eq!(got["r/b:latest"], Ok("new-b".to_string()), "asked now");

        let tmp = tempfile::tempdir().unwrap();
        assert!(last_lookups(tmp.path()).is_empty());
        remember_lookups(tmp.path(), &lookups, &[]);
        assert_eq!(last_lookups(tmp.path()), lookups);
    }
}
