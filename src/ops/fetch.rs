//! fetch: the registry's current digest for each reference, without pulling.

use std::collections::BTreeMap;

use crate::seams::engine::Engine;

/// A lookup that fails is kept as its message (naming the registry), so one
/// unreachable registry does not hide the state of the other services.
pub fn fetch(engine: &dyn Engine, references: &[String]) -> BTreeMap<String, Result<String, String>> {
    let results = engine.registry_digests(references);
    references.iter().cloned().zip(results.into_iter().map(|r| r.map_err(|e| format!("{e:#}")))).collect()
}
