//! The update pipeline, one module per stage, each from plain data to
//! plain data:
//!
//! observe → fetch → classify → backup → execute (→ health-check, rollback)
//!
//! This module strings the stages together for the commands.

pub mod backup;
pub mod classify;
pub mod execute;
pub mod fetch;
pub mod health;
pub mod observe;

use serde::{Deserialize, Serialize};

use anyhow::Result;

use crate::seams::compose::Compose;
use crate::seams::engine::Engine;
use crate::settings::StackSettings;
use classify::Plan;
use observe::Observation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    UpToDate,
    Applied,
    /// A service did not become healthy; every service changed in this
    /// revision runs its previous image again.
    RolledBack,
    /// The rollback failed too: a human is needed.
    RollbackFailed,
    /// Failed before any container was touched (e.g. a pull failed).
    Failed,
}

/// The stack's plan as of now, plus what was observed to make it (the
/// backup stage needs the image ids).
pub struct Checked {
    pub plan: Plan,
    pub observation: Observation,
}

pub fn check(engine: &dyn Engine, compose: &dyn Compose, stack: &StackSettings) -> Result<Checked> {
    let model = compose.model()?;
    let observation = observe::observe(engine, &model.project)?;
    let lookups = classify::registry_lookups(&model, &observation, &stack.skip);
    let remote = fetch::fetch(engine, &lookups);
    let plan = classify::classify(&stack.name, &model, &observation, &stack.skip, &remote);
    Ok(Checked { plan, observation })
}
