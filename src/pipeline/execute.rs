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
        Execution {
            outcome: Outcome::Applied,
            error: None,
            after,
        }
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
        self.compose
            .up(project, &backup.service)
            .map_err(|e| format!("{e:#}"))?;
        self.printer
            .step(format!("waiting for {} to be healthy", backup.service));
        wait_healthy(
            self.engine,
            project,
            &backup.service,
            &new_id,
            self.health,
            POLL,
        )?;
        self.printer.step(format!("{} is healthy", backup.service));
        Ok(new_id)
    }

    fn roll_back(&self, project: &str, done: &[&ServiceImages], error: String) -> Execution {
        let mut failures = Vec::new();
        let mut after = Vec::new();
        for backup in done.iter().rev() {
            self.printer.step(format!(
                "restoring {} to {}",
                backup.service,
                short(&backup.before)
            ));
            match self.restore_one(project, backup) {
                Ok(()) => after.push((backup.service.clone(), backup.before.clone())),
                Err(e) => failures.push(format!("restoring {}: {e}", backup.service)),
            }
        }
        if failures.is_empty() {
            Execution {
                outcome: Outcome::RolledBack,
                error: Some(error),
                after,
            }
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
        self.engine
            .tag(&backup.before, repo, tag)
            .map_err(|e| format!("{e:#}"))?;
        self.compose
            .up(project, &backup.service)
            .map_err(|e| format!("{e:#}"))?;
        wait_healthy(
            self.engine,
            project,
            &backup.service,
            &backup.before,
            self.health,
            POLL,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::classify::{Change, ChangeKind, PlanKind};
    use crate::seams::compose::ComposeModel;
    use crate::seams::engine::{ContainerInfo, ImageInfo, PullProgress};
    use anyhow::{Result, bail};
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// A tiny engine + compose: tags map references to image ids, `up`
    /// recreates a service from its reference's current id, and an image
    /// id starting with "bad" is unhealthy.
    #[derive(Default)]
    struct Fake {
        tags: RefCell<BTreeMap<String, String>>,
        running: RefCell<BTreeMap<String, String>>,
        registry: BTreeMap<String, String>,
        images: BTreeMap<String, String>,
        fail_pull: bool,
        fail_up_of_image: Option<String>,
        log: RefCell<Vec<String>>,
    }

    impl Engine for Fake {
        fn containers(&self, _: &str) -> Result<Vec<ContainerInfo>> {
            Ok(self
                .running
                .borrow()
                .iter()
                .map(|(service, image)| ContainerInfo {
                    id: format!("{service}-{image}"),
                    name: format!("p-{service}-1"),
                    service: service.clone(),
                    state: "running".into(),
                    health: Some(
                        if image.starts_with("bad") {
                            "unhealthy"
                        } else {
                            "healthy"
                        }
                        .into(),
                    ),
                    restart_count: 0,
                    image_id: image.clone(),
                    started_at: None,
                })
                .collect())
        }
        fn image(&self, reference: &str) -> Result<Option<ImageInfo>> {
            Ok(self.tags.borrow().get(reference).map(|id| ImageInfo {
                id: id.clone(),
                repo_digests: vec![],
            }))
        }
        fn registry_digests(&self, _: &[String]) -> Vec<Result<String>> {
            unreachable!("execute never asks registries")
        }
        fn pull(&self, reference: &str, _: &mut dyn FnMut(&PullProgress)) -> Result<()> {
            self.log.borrow_mut().push(format!("pull {reference}"));
            if self.fail_pull {
                bail!("registry r: connection refused");
            }
            self.tags
                .borrow_mut()
                .insert(reference.into(), self.registry[reference].clone());
            Ok(())
        }
        fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<()> {
            self.log
                .borrow_mut()
                .push(format!("tag {image} {repo}:{tag}"));
            self.tags
                .borrow_mut()
                .insert(format!("{repo}:{tag}"), image.into());
            Ok(())
        }
    }

    impl Compose for Fake {
        fn model(&self) -> Result<ComposeModel> {
            unreachable!()
        }
        fn up(&self, _: &str, service: &str) -> Result<()> {
            self.log.borrow_mut().push(format!("up {service}"));
            let id = self.tags.borrow()[&self.images[service]].clone();
            if self.fail_up_of_image.as_deref() == Some(id.as_str()) {
                bail!("compose failed");
            }
            self.running.borrow_mut().insert(service.into(), id);
            Ok(())
        }
    }

    /// Services a and b, each `r/<svc>:latest`, running `old-<svc>`; the
    /// registry has `new_a` / `new_b`.
    fn fake(new_a: &str, new_b: &str) -> Fake {
        let mut f = Fake::default();
        for (svc, new) in [("a", new_a), ("b", new_b)] {
            let r = format!("r/{svc}:latest");
            f.tags.borrow_mut().insert(r.clone(), format!("old-{svc}"));
            f.running
                .borrow_mut()
                .insert(svc.into(), format!("old-{svc}"));
            f.registry.insert(r.clone(), new.into());
            f.images.insert(svc.into(), r);
        }
        f
    }

    fn run(f: &Fake) -> Execution {
        let changes: Vec<Change> = ["a", "b"]
            .iter()
            .map(|s| Change {
                service: s.to_string(),
                kind: ChangeKind::Image,
                image: format!("r/{s}:latest"),
                from: "d".into(),
                to: "d2".into(),
            })
            .collect();
        let backups: Vec<ServiceImages> = ["a", "b"]
            .iter()
            .map(|s| ServiceImages {
                service: s.to_string(),
                image: format!("r/{s}:latest"),
                before: format!("old-{s}"),
                backup_tag: format!("clusterup/p/{s}:rev-1"),
                after: None,
            })
            .collect();
        let plan = Plan {
            stack: "p".into(),
            project: "p".into(),
            kind: PlanKind::Image,
            changes,
            services: vec![],
        };
        let printer = Printer::new(false, true, 0);
        let health = HealthSettings {
            timeout: Duration::from_millis(50),
            stability: Duration::ZERO,
        };
        Executor {
            engine: f,
            compose: f,
            printer: &printer,
            health,
        }
        .execute(&plan, &backups)
    }

    #[test]
    fn all_healthy_is_applied_after_pulling_everything_first() {
        let f = fake("new-a", "new-b");
        let e = run(&f);
        assert_eq!(e.outcome, Outcome::Applied);
        assert_eq!(
            e.after,
            [
                ("a".to_string(), "new-a".to_string()),
                ("b".to_string(), "new-b".to_string())
            ]
        );
        assert_eq!(
            *f.log.borrow(),
            ["pull r/a:latest", "pull r/b:latest", "up a", "up b"]
        );
    }

    #[test]
    fn an_unhealthy_service_sends_every_changed_service_back() {
        let f = fake("new-a", "bad-b");
        let e = run(&f);
        assert_eq!(e.outcome, Outcome::RolledBack);
        assert!(e.error.unwrap().contains("service b"));
        assert_eq!(f.running.borrow()["a"], "old-a");
        assert_eq!(f.running.borrow()["b"], "old-b");
        assert_eq!(
            f.tags.borrow()["r/a:latest"],
            "old-a",
            "the tag points at the restored image"
        );
        let log = f.log.borrow();
        let tail: Vec<&str> = log[4..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "tag old-b r/b:latest",
                "up b",
                "tag old-a r/a:latest",
                "up a"
            ],
            "restored in reverse order"
        );
    }

    #[test]
    fn a_failed_pull_touches_no_container() {
        let f = Fake {
            fail_pull: true,
            ..fake("new-a", "new-b")
        };
        let e = run(&f);
        assert_eq!(e.outcome, Outcome::Failed);
        assert!(e.error.unwrap().contains("nothing was changed"));
        assert!(!f.log.borrow().iter().any(|l| l.starts_with("up")));
        assert_eq!(f.running.borrow()["a"], "old-a");
    }

    #[test]
    fn a_failed_restore_is_reported_as_rollback_failed() {
        let f = Fake {
            fail_up_of_image: Some("old-b".into()),
            ..fake("new-a", "bad-b")
        };
        let e = run(&f);
        assert_eq!(e.outcome, Outcome::RollbackFailed);
        let error = e.error.unwrap();
        assert!(
            error.contains("rollback failed") && error.contains("restoring b"),
            "{error}"
        );
        assert_eq!(
            f.running.borrow()["a"],
            "old-a",
            "the other services are still restored"
        );
    }
}
