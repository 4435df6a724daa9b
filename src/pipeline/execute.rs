//! execute: pull everything first, then recreate one service at a time in
//! dependency order through Compose, each gated on health. The first
//! service that fails sends every service changed so far back to its
//! previous image.

use std::time::Duration;

use super::Outcome;
use super::classify::Plan;
use super::health::{short, wait_healthy};
use crate::output::Printer;
use crate::reference::split_tag;
use crate::seams::compose::Compose;
use crate::seams::engine::Engine;
use crate::settings::HealthSettings;
use crate::state::ServiceImages;

const POLL: Duration = Duration::from_millis(500);

pub struct Execution {
    pub outcome: Outcome,
    pub error: Option<String>,
    /// (service, image id) each changed service runs at the end.
    pub after: Vec<(String, String)>,
}

pub struct Executor<'a> {
    pub engine: &'a dyn Engine,
    pub compose: &'a dyn Compose,
    pub printer: &'a Printer,
    pub health: HealthSettings,
}

impl Executor<'_> {
    pub fn execute(&self, plan: &Plan, backups: &[ServiceImages]) -> Execution {
        if let Err(e) = self.pull_all(plan) {
            return Execution {
                outcome: Outcome::Failed,
                error: Some(format!("{e}; nothing was changed")),
                after: Vec::new(),
            };
        }
        let mut done: Vec<&ServiceImages> = Vec::new();
        let mut after = Vec::new();
        for backup in backups {
            let result = self.update_one(&plan.project, backup);
            done.push(backup);
            match result {
                Ok(new_id) => after.push((backup.service.clone(), new_id)),
                Err(reason) => {
                    let error = format!("service {}: {reason}", backup.service);
                    self.printer.step(format!("{error}; rolling back"));
                    return self.roll_back(&plan.project, &done, error);
                }
            }
        }
        Execution { outcome: Outcome::Applied, error: None, after }
    }

    /// All pulls succeed before any container is touched, so a registry
    /// failure can never leave a service removed and not recreated.
    fn pull_all(&self, plan: &Plan) -> Result<(), String> {
        let mut images: Vec<&str> = plan.changes.iter().map(|c| c.image.as_str()).collect();
        images.dedup();
        for image in images {
            let mut display = self.printer.pull(image);
            let result = self.engine.pull(image, &mut |p| display.update(p));
            let summary = match &result {
                Ok(()) => format!("pulled {image}"),
                Err(e) => format!("pull of {image} failed: {e:#}"),
            };
            display.finish(self.printer, &summary);
            result.map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    }

    fn update_one(&self, project: &str, backup: &ServiceImages) -> Result<String, String> {
        let new_id = self
            .engine
            .image(&backup.image)
            .map_err(|e| format!("{e:#}"))?
            .ok_or_else(|| format!("image {} missing after the pull", backup.image))?
            .id;
        self.printer.step(format!(
            "recreating {} ({} -> {})",
            backup.service,
            short(&backup.before),
            short(&new_id)
        ));
        self.compose.up(project, &backup.service).map_err(|e| format!("{e:#}"))?;
        self.printer.step(format!("waiting for {} to be healthy", backup.service));
        wait_healthy(self.engine, project, &backup.service, &new_id, self.health, POLL)?;
        self.printer.step(format!("{} is healthy", backup.service));
        Ok(new_id)
    }

    fn roll_back(&self, project: &str, done: &[&ServiceImages], error: String) -> Execution {
        let mut failures = Vec::new();
        let mut after = Vec::new();
        for backup in done.iter().rev() {
            self.printer.step(format!("restoring {} to {}", backup.service, short(&backup.before)));
            match self.restore_one(project, backup) {
                Ok(()) => after.push((backup.service.clone(), backup.before.clone())),
                Err(e) => failures.push(format!("restoring {}: {e}", backup.service)),
            }
        }
        if failures.is_empty() {
            Execution { outcome: Outcome::RolledBack, error: Some(error), after }
        } else {
            Execution {
                outcome: Outcome::RollbackFailed,
                error: Some(format!("{error}; rollback failed: {}", failures.join("; "))),
                after,
            }
        }
    }

    /// Points the service's tag back at the image it ran before, so Compose
    /// sees the image changed and recreates from it.
    fn restore_one(&self, project: &str, backup: &ServiceImages) -> Result<(), String> {
        let (repo, tag) = split_tag(&backup.image).ok_or("a pinned image is never changed")?;
        self.engine.tag(&backup.before, repo, tag).map_err(|e| format!("{e:#}"))?;
        self.compose.up(project, &backup.service).map_err(|e| format!("{e:#}"))?;
        wait_healthy(self.engine, project, &backup.service, &backup.before, self.health, POLL)
    }
}
