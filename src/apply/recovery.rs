//! Recovery: every run first finishes what a killed run left. If the
//! interrupted revision reached its target and is healthy it is completed;
//! otherwise the stack goes back to where the revision started.

use std::collections::BTreeMap;

use anyhow::Result;

use super::execute::{Execution, Files};
use super::files::{DirectoryFiles, GitDeploy};
use super::health::{Check, wait_healthy};
use super::revision::Ctx;
use super::volumes::{Progress, Restore, WithRestore};
use crate::plan::classify::{ChangeKind, Plan};
use crate::reference::Reference;
use crate::seams::engine::ContainerInfo;
use crate::state::Outcome;

impl Ctx<'_> {
    /// Every run first finishes what a killed run left: if the interrupted
    /// revision's target runs and is healthy it is completed, otherwise the
    /// stack goes back to where the revision started.
    pub fn recover(&self) -> Result<Option<(u64, Outcome)>> {
        let journal = self.state.journal()?;
        let Some(last) = journal.revisions.last().filter(|r| r.outcome.is_none()) else { return Ok(None) };
        self.printer.step(format!("revision {} was interrupted; recovering it first", last.id));
        let plan = &last.plan;
        self.remove_leftovers(&plan.project)?;
        let git = match &self.stack.git {
            Some(source) => {
                let repo = self.seams.open.repo(&self.stack.state_dir.join("git"), source)?;
                let oid = |c: &Option<String>| c.as_deref().and_then(|c| git2::Oid::from_str(c).ok());
                oid(&plan.commit).map(|new| GitDeploy { repo, new, old: oid(&plan.deployed_commit) })
            }
            None => None,
        };
        let directory = match (&self.stack.git, &last.files) {
            (None, Some(on_disk)) => Some(DirectoryFiles {
                state_dir: self.stack.state_dir.clone(),
                directory: self.stack.directory.clone(),
                on_disk: on_disk.clone(),
                deploy: None,
                tag_edits: false,
                before: last.files_before.clone(),
            }),
            _ => None,
        };
        let files = git.as_ref().map(|g| g as &dyn Files).or(directory.as_ref().map(|d| d as &dyn Files));
        let with_restore = last.restore.as_ref().map(|restore| WithRestore::new(files, restore, self.seams.engine));
        // A commit begun is finished; an undo begun, or a swap not
        // complete, goes back; a swap complete stands if the services do.
        let data = last.restore.as_ref().map(Restore::progress);
        let data_in_place = matches!(data, None | Some(Progress::Swapped | Progress::Committing));
        let reached = data_in_place && self.target_reached(plan, git.as_ref())?;
        if let Some(r) = &last.restore
            && (reached || data == Some(Progress::Committing))
        {
            r.commit()?;
        }
        let execution = if reached {
            self.printer.step(format!("revision {} had reached its target; completing it", last.id));
            Execution { outcome: Outcome::Applied, error: None, after: Vec::new(), skipped: Vec::new() }
        } else {
            let files = with_restore.as_ref().map(|w| w as &dyn Files).or(files);
            let error = format!("revision {} was interrupted before it finished", last.id);
            self.executor(&BTreeMap::new()).restore(plan, &last.services, files, error)
        };
        self.finish(last, &execution, false)?;
        let outcome = execution.outcome.describe();
        self.printer
            .human(format!("stack {}: recovered interrupted revision {}: {outcome}\n", self.stack.name, last.id));
        Ok(Some((last.id, execution.outcome)))
    }

    /// Compose renames a recreated container into place last; a recreate
    /// cut short leaves `<id12>_<name>` behind. A start-first update cut
    /// short leaves a container its service's name does not reach (the new
    /// one before it was healthy, or the old one on its way out) beside
    /// one it does: that one stays, whichever it is.
    fn remove_leftovers(&self, project: &str) -> Result<()> {
        let containers = self.seams.engine.containers(project)?;
        let running = |service: &str| containers.iter().filter(|c| c.service == service && c.is_running()).count();
        let mut named = BTreeMap::new();
        // Only a service running twice can be halfway through start-first.
        for c in containers.iter().filter(|c| c.is_running() && running(&c.service) > 1) {
            named.insert(c.id.as_str(), self.named_by_service(c)?);
        }
        for c in &containers {
            let renamed = c.name.len() > 13
                && c.name
                    .get(..13)
                    .is_some_and(|p| p.ends_with('_') && p[..12].chars().all(|ch| ch.is_ascii_hexdigit()));
            let unnamed = named.get(c.id.as_str()) == Some(&false)
                && containers.iter().any(|o| o.service == c.service && named.get(o.id.as_str()) == Some(&true));
            let why = match (renamed, unnamed) {
                (true, _) => "an interrupted recreate",
                (false, true) => "an interrupted start-first update",
                (false, false) => continue,
            };
            self.printer.step(format!("removing {} left by {why}", c.name));
            self.seams.engine.remove_container(&c.id)?;
        }
        Ok(())
    }

    /// Whether Docker's DNS gives out the container under its service's
    /// name in every network that has names at all (the default bridge
    /// has none).
    fn named_by_service(&self, c: &ContainerInfo) -> Result<bool> {
        let aliases = self.seams.engine.network_aliases(&c.id)?;
        Ok(aliases.values().all(|a| a.is_empty() || a.contains(&c.service)))
    }

    fn target_reached(&self, plan: &Plan, git: Option<&GitDeploy>) -> Result<bool> {
        if let Some(g) = git
            && g.repo.head() != Some(g.new)
        {
            return Ok(false);
        }
        let containers = self.seams.engine.containers(&plan.project)?;
        let hashes = self.compose.hashes().unwrap_or_default();
        for change in &plan.changes {
            let mine: Vec<_> = containers.iter().filter(|c| c.service == change.service).collect();
            if change.kind == ChangeKind::Remove {
                if !mine.is_empty() {
                    return Ok(false);
                }
                continue;
            }
            if mine.is_empty()
                || mine.iter().any(|c| c.config_hash.is_some() && c.config_hash != hashes.get(&change.service).cloned())
            {
                return Ok(false);
            }
            let expected = match (&change.image, &change.to) {
                (Some(image), Some(digest)) if change.is_digest_update() => {
                    let Some(info) = self.seams.engine.image(image)? else { return Ok(false) };
                    let reference = Reference::parse(image);
                    if !info.repo_digests.iter().any(|d| reference.digest_in(d) == Some(digest.as_str())) {
                        return Ok(false);
                    }
                    Some(info.id)
                }
                _ => None,
            };
            // A container still on the old image (a start-first update's
            // old one, say) settles it without waiting out the timeout.
            if expected.as_ref().is_some_and(|e| mine.iter().any(|c| &c.image_id != e)) {
                return Ok(false);
            }
            let check = Check {
                settings: self.stack.health,
                url: None,
                poll: std::time::Duration::from_millis(500),
                stop: None,
                ignore: &[],
            };
            let healthy = wait_healthy(self.seams.engine, &plan.project, &change.service, expected.as_deref(), &check);
            if healthy.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Printer;
    use crate::plan::classify::{Change, PlanKind};
    use crate::seams::fake::{Fake, fake};
    use crate::settings::{HealthSettings, StackSettings};
    use crate::state::{Revision, ServiceImages, StateDir, Trigger};
    use std::time::Duration;

    /// A directory stack whose revision 1 (recreating `a`) was journaled
    /// and never finished; `a` runs `running` now.
    fn interrupted(running: &str) -> (tempfile::TempDir, StackSettings, Fake) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("compose.yaml"), "services: {}\n").unwrap();
        let mut stack = crate::settings::from_directory(&dir, Some(&tmp.path().join("state"))).unwrap();
        stack.health = HealthSettings { timeout: Duration::from_millis(100), stability: Duration::ZERO };
        let f = fake("sha256:new-a", "sha256:new-b");
        f.running.lock().unwrap().insert("a".into(), running.into());
        let change = Change {
            reasons: vec!["changed: environment".into()],
            ..Change::new("a", ChangeKind::Recreate, Some("r/a:latest".into()))
        };
        let plan = Plan { kind: PlanKind::Structural, changes: vec![change], ..Plan::empty("p") };
        let before = ServiceImages {
            service: "a".into(),
            image: Some("r/a:latest".into()),
            before: "old-a".into(),
            backup_tag: "clusterup/p/a:rev-1".into(),
            after: None,
        };
        let revision = Revision {
            id: 1,
            trigger: Trigger::Auto,
            started: "2026-11-27T10:00:00Z".parse().unwrap(),
            finished: None,
            plan,
            services: vec![before],
            outcome: None,
            error: None,
            images: BTreeMap::new(),
            files: None,
            files_before: None,
            restore: None,
        };
        StateDir::open(&stack.state_dir).unwrap().begin(&revision).unwrap();
        (tmp, stack, f)
    }

    fn recover(stack: &StackSettings, f: &Fake) -> Option<(u64, Outcome)> {
        let state = StateDir::open(&stack.state_dir).unwrap();
        let printer = Printer::new(false, true, 0);
        let ctx = Ctx { seams: crate::seams::fake::seams(f), compose: f, stack, state: &state, printer: &printer };
        ctx.recover().unwrap()
    }

    #[test]
    fn a_revision_that_reached_its_target_is_completed_without_touching_anything() {
        let (_tmp, stack, f) = interrupted("new-a");
        assert_eq!(recover(&stack, &f), Some((1, Outcome::Applied)));
        assert!(!f.log.lock().unwrap().iter().any(|l| l.starts_with("up")), "{:?}", f.log.lock().unwrap());
        assert_eq!(recover(&stack, &f), None, "a finished revision is not recovered twice");
    }

    #[test]
    fn a_revision_short_of_its_target_is_rolled_back() {
        let (_tmp, stack, f) = interrupted("bad-a");
        assert_eq!(recover(&stack, &f), Some((1, Outcome::RolledBack)));
        assert_eq!(*f.log.lock().unwrap(), ["up a"]);
        assert_eq!(f.running.lock().unwrap()["a"], "old-a", "a runs what it ran before the revision");
        let journal = StateDir::open(&stack.state_dir).unwrap().journal().unwrap();
        assert!(journal.rejections.is_empty(), "an interrupted revision says nothing about its target");
    }

    #[test]
    fn a_failed_restore_is_reported_for_a_human() {
        let (_tmp, stack, mut f) = interrupted("bad-a");
        f.fail_up_of_image = Some("old-a".into());
        assert_eq!(recover(&stack, &f), Some((1, Outcome::RollbackFailed)));
    }
}
