//! Operations on a stack's revisions, shared by the commands: run one
//! revision (journal, backup, execute, reject on failure, prune), recover
//! an interrupted one, and the crash points the recovery tests use.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::labels::ServicePolicy;
use crate::output::Printer;
use crate::pipeline::classify::{ChangeKind, Plan};
use crate::pipeline::execute::{Execution, Executor, Files};
use crate::pipeline::health::{Check, wait_healthy};
use crate::pipeline::observe::Observation;
use crate::pipeline::{DirectoryFiles, GitDeploy, Outcome, backup, snapshot};
use crate::reference::Reference;
use crate::seams::compose::{Compose, ComposeCli};
use crate::seams::engine::{ContainerInfo, Engine};
use crate::seams::git::GitRepo;
use crate::settings::StackSettings;
use crate::state::{Ending, Rejection, Revision, StateDir, Trigger, now};

static STOP: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> = std::sync::OnceLock::new();

/// SIGTERM (systemd stopping the unit) and SIGINT (Ctrl-C) ask the run to
/// stop: the change in progress finishes or is rolled back, then the run
/// ends. A second signal ends it at once; the next run recovers.
pub fn install_signal_handlers() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = STOP.get_or_init(Default::default).clone();
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(())
}

pub fn stop_requested() -> bool {
    STOP.get().is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
}

/// Stops the process dead at a named point when `CLUSTERUP_CRASH_AT` names
/// it: the recovery tests' stand-in for SIGKILL, OOM or power loss.
/// `CLUSTERUP_TERM_AT` sends the process SIGTERM there instead, to test
/// the graceful stop at each point.
pub fn crash_point(name: &str) {
    if std::env::var("CLUSTERUP_CRASH_AT").is_ok_and(|at| at == name) {
        std::process::abort();
    }
    if std::env::var("CLUSTERUP_TERM_AT").is_ok_and(|at| at == name) {
        // SAFETY: raise has no preconditions; the handler only sets a flag.
        unsafe { libc::raise(libc::SIGTERM) };
    }
}

pub struct Ctx<'a> {
    pub engine: &'a dyn Engine,
    pub stack: &'a StackSettings,
    pub state: &'a StateDir,
    pub printer: &'a Printer,
}

impl Ctx<'_> {
    fn executor<'a>(&'a self, compose: &'a ComposeCli, policies: &'a BTreeMap<String, ServicePolicy>) -> Executor<'a> {
        Executor {
            engine: self.engine,
            compose,
            printer: self.printer,
            health: self.stack.health,
            stack: &self.stack.name,
            policies,
            hooks: &self.stack.hooks,
            hook_timeout: self.stack.hook_timeout,
        }
    }

    /// Every running service's image id now.
    fn snapshot(&self, project: &str) -> BTreeMap<String, String> {
        self.engine
            .containers(project)
            .map(|cs| cs.into_iter().filter(|c| c.is_running()).map(|c| (c.service, c.image_id)).collect())
            .unwrap_or_default()
    }

    /// Journals, backs up and executes `plan` as revision N; a failure
    /// rejects its target so no unattended run tries it again.
    pub fn run_revision(
        &self,
        plan: &Plan,
        observation: &Observation,
        policies: &BTreeMap<String, ServicePolicy>,
        files: Option<&dyn Files>,
        trigger: Trigger,
    ) -> Result<(u64, Execution)> {
        let id = self.state.next_revision_id()?;
        let backups = backup::backups_for(plan, observation, id);
        let (files_deployed, files_before) = files.map(Files::copies).unwrap_or_default();
        let revision = Revision {
            id,
            trigger,
            started: now(),
            finished: None,
            plan: plan.clone(),
            services: backups.clone(),
            outcome: None,
            error: None,
            images: BTreeMap::new(),
            files: files_deployed,
            files_before,
        };
        self.state.begin(&revision).context("journaling the revision before acting")?;
        crash_point("journaled");
        for b in &backups {
            self.printer.detail(format!("keeping the image {} runs now as {}", b.service, b.backup_tag));
        }
        let compose = ComposeCli::new(self.stack);
        let execution = match backup::keep_images(self.engine, &backups) {
            Ok(()) => self.executor(&compose, policies).execute(plan, &backups, files),
            Err(e) => Execution::failed(format!("keeping the current images for rollback: {e:#}; nothing was changed")),
        };
        if execution.outcome == Outcome::RolledBack
            && let Some(note) = files.and_then(Files::kept_note)
        {
            self.printer.step(note);
        }
        self.finish(&revision, &execution, true)?;
        Ok((id, execution))
    }

    /// `reject`: a revision that failed on its merits is not retried
    /// unattended; one that was merely interrupted is.
    fn finish(&self, revision: &Revision, execution: &Execution, reject: bool) -> Result<()> {
        let images = self.snapshot(&revision.plan.project);
        let ending = Ending {
            outcome: execution.outcome,
            error: execution.error.clone(),
            after: execution.after.clone(),
            images,
        };
        self.state
            .end(revision.id, ending)
            .with_context(|| format!("journaling the end of revision {}", revision.id))?;
        // A run stopped by a signal says nothing about its target.
        if reject && !stop_requested() && matches!(execution.outcome, Outcome::RolledBack | Outcome::RollbackFailed) {
            self.reject(revision, "it failed and was rolled back")?;
        }
        if execution.outcome == Outcome::Applied
            && let Some(files) = &revision.files
        {
            snapshot::set_good(&self.stack.state_dir, files)?;
        }
        if execution.outcome == Outcome::Applied
            && let Err(e) = self.prune()
        {
            self.printer.step(format!("pruning old rollback images: {e:#}"));
        }
        Ok(())
    }

    /// Marks `revision`'s target (its commit, if it moved, and its image
    /// digests) as not to be applied unattended again.
    pub fn reject(&self, revision: &Revision, why: &str) -> Result<()> {
        let moved = revision.plan.moves_commit();
        let rejection = Rejection {
            revision: revision.id,
            time: now(),
            commit: if moved { revision.plan.commit.clone() } else { None },
            digests: revision.target_digests(),
            reason: format!("revision {}: {why}", revision.id),
        };
        if rejection.commit.is_none() && rejection.digests.is_empty() {
            return Ok(());
        }
        self.state.reject(rejection)
    }

    /// Keeps the rollback images of the last `keep_images` revisions and
    /// untags older ones. Only `clusterup/<stack>/...` tags are touched; an
    /// image a container still uses keeps its tag.
    pub fn prune(&self) -> Result<()> {
        let revisions = self.state.revisions()?;
        let kept = || revisions.iter().rev().take(self.stack.keep_images);
        let keep: Vec<String> = kept().map(|r| format!("rev-{}", r.id)).collect();
        let copies = kept().flat_map(|r| [r.files.clone(), r.files_before.clone()]).flatten().collect();
        snapshot::prune(&self.stack.state_dir, &copies)?;
        let prefix = backup::backup_prefix(&self.stack.name);
        for tag in self.engine.tags_under(&prefix)? {
            let rev = tag.rsplit_once(':').map(|(_, t)| t.to_string()).unwrap_or_default();
            if !keep.contains(&rev) {
                self.engine.untag(&tag)?;
            }
        }
        Ok(())
    }

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
                let repo = GitRepo::open(&self.stack.state_dir.join("git"), source)?;
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
                before: last.files_before.clone(),
            }),
            _ => None,
        };
        let compose = ComposeCli::new(self.stack);
        let execution = if self.target_reached(plan, git.as_ref(), &compose)? {
            self.printer.step(format!("revision {} had reached its target; completing it", last.id));
            Execution { outcome: Outcome::Applied, error: None, after: Vec::new(), skipped: Vec::new() }
        } else {
            let files = git.as_ref().map(|g| g as &dyn Files).or(directory.as_ref().map(|d| d as &dyn Files));
            let error = format!("revision {} was interrupted before it finished", last.id);
            self.executor(&compose, &BTreeMap::new()).restore(plan, &last.services, files, error)
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
        let containers = self.engine.containers(project)?;
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
            self.engine.remove_container(&c.id)?;
        }
        Ok(())
    }

    /// Whether Docker's DNS gives out the container under its service's
    /// name in every network that has names at all (the default bridge
    /// has none).
    fn named_by_service(&self, c: &ContainerInfo) -> Result<bool> {
        let aliases = self.engine.network_aliases(&c.id)?;
        Ok(aliases.values().all(|a| a.is_empty() || a.contains(&c.service)))
    }

    fn target_reached(&self, plan: &Plan, git: Option<&GitDeploy>, compose: &dyn Compose) -> Result<bool> {
        if let Some(g) = git
            && g.repo.head() != Some(g.new)
        {
            return Ok(false);
        }
        let containers = self.engine.containers(&plan.project)?;
        let hashes = compose.hashes().unwrap_or_default();
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
                    let Some(info) = self.engine.image(image)? else { return Ok(false) };
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
                interruptible: false,
                ignore: &[],
            };
            let healthy = wait_healthy(self.engine, &plan.project, &change.service, expected.as_deref(), &check);
            if healthy.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
