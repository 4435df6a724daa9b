//! A stack's revisions: run one (journal, back up, execute, reject its
//! target on failure, prune old backups), shared by apply and rollback.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::backup;
use super::execute::{Execution, Executor, Files};
use super::snapshot;
use super::volumes::{self, Restore, Snapshots, WithRestore};
use crate::labels::ServicePolicy;
use crate::output::Printer;
use crate::plan::classify::Plan;
use crate::plan::observation::Observation;
use crate::seams::Seams;
use crate::seams::compose::Compose;
use crate::settings::StackSettings;
use crate::signals::crash_point;
use crate::state::{Ending, Outcome, Rejection, Revision, StateDir, Trigger};

/// A stack held for a run: its state dir, the lock on it, and its
/// Compose. The revision context borrows from it.
pub struct Session {
    pub state: StateDir,
    _lock: crate::state::StackLock,
    compose: Box<dyn Compose>,
}

impl Session {
    pub fn open(seams: &Seams, stack: &StackSettings) -> Result<Session> {
        let state = StateDir::open(&stack.state_dir)?;
        let lock = state.lock(&stack.name)?;
        Ok(Session { state, _lock: lock, compose: seams.open.compose(&stack.compose_spec()) })
    }

    pub fn ctx<'a>(&'a self, seams: &Seams<'a>, stack: &'a StackSettings, printer: &'a Printer) -> Ctx<'a> {
        Ctx { seams: *seams, compose: self.compose.as_ref(), stack, state: &self.state, printer }
    }
}

/// What a revision runs against: the seams the command was given, and
/// the stack's Compose.
pub struct Ctx<'a> {
    pub seams: Seams<'a>,
    pub compose: &'a dyn Compose,
    pub stack: &'a StackSettings,
    pub state: &'a StateDir,
    pub printer: &'a Printer,
}

impl Ctx<'_> {
    pub(super) fn executor<'a>(&'a self, policies: &'a BTreeMap<String, ServicePolicy>) -> Executor<'a> {
        Executor {
            engine: self.seams.engine,
            signals: self.seams.signals,
            compose: self.compose,
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
        self.seams
            .engine
            .containers(project)
            .map(|cs| cs.into_iter().filter(|c| c.is_running()).map(|c| (c.service, c.image_id)).collect())
            .unwrap_or_default()
    }

    /// The volume snapshots `plan` calls for (services that opted in and
    /// that it changes). Err inside: they do not fit; the revision waits.
    pub fn snapshots_for(
        &self,
        plan: &Plan,
        observation: &Observation,
        policies: &BTreeMap<String, ServicePolicy>,
    ) -> Result<Result<Snapshots, String>> {
        let snapshots = volumes::select(self.seams.engine, plan, observation, policies)?;
        for note in &snapshots.not_copied {
            self.printer.warn(note);
        }
        if snapshots.is_empty() {
            return Ok(Ok(snapshots));
        }
        Ok(volumes::check_space(&snapshots, &self.stack.volumes.dir).map(|()| snapshots))
    }

    /// Journals, backs up and executes `plan` as revision N; a failure
    /// rejects its target so no unattended run tries it again. `data`: the
    /// volumes to copy first, and a restore prepared for this revision.
    pub fn run_revision(
        &self,
        plan: &Plan,
        observation: &Observation,
        policies: &BTreeMap<String, ServicePolicy>,
        files: Option<&dyn Files>,
        trigger: Trigger,
        data: (&Snapshots, Option<&Restore>),
    ) -> Result<(u64, Execution)> {
        let (snapshots, restore) = data;
        let id = self.state.next_revision_id()?;
        if let Some(r) = restore
            && r.by != id
        {
            anyhow::bail!("the restore was prepared for revision {}, not {id}", r.by);
        }
        let backups = backup::backups_for(plan, observation, id);
        let (files_deployed, files_before) = files.map(Files::copies).unwrap_or_default();
        let revision = Revision {
            id,
            trigger,
            started: self.seams.clock.stamp(),
            finished: None,
            plan: plan.clone(),
            services: backups.clone(),
            outcome: None,
            error: None,
            images: BTreeMap::new(),
            files: files_deployed,
            files_before,
            restore: restore.cloned(),
        };
        self.state.begin(&revision).context("journaling the revision before acting")?;
        crash_point("journaled");
        for b in &backups {
            self.printer.detail(format!("keeping the image {} runs now as {}", b.service, b.backup_tag));
        }
        let with_restore = restore.map(|restore| WithRestore::new(files, restore, self.seams.engine));
        let files = with_restore.as_ref().map(|w| w as &dyn Files).or(files);
        let execution = match self.copy_volumes(snapshots, id) {
            Err(e) => Execution::failed(format!("{e:#}; nothing was changed")),
            Ok(()) => match backup::keep_images(self.seams.engine, &backups) {
                Ok(()) => self.executor(policies).execute(plan, &backups, files),
                Err(e) => {
                    Execution::failed(format!("keeping the current images for rollback: {e:#}; nothing was changed"))
                }
            },
        };
        crash_point("executed");
        if let Some(r) = restore {
            // Undone (or not begun) by the execution itself unless it
            // applied; what it could not put back is left for a person.
            let settled = if execution.outcome == Outcome::Applied { r.commit() } else { r.discard_staging() };
            if let Err(e) = settled {
                self.printer.warn(format!("tidying up after the volume restore: {e:#}"));
            }
            for aside in r.left_aside() {
                self.printer
                    .warn(format!("the content a volume had before the restore is kept in {}", aside.display()));
            }
        }
        if execution.outcome == Outcome::RolledBack
            && let Some(note) = files.and_then(Files::kept_note)
        {
            self.printer.step(note);
        }
        self.finish(&revision, &execution, true)?;
        Ok((id, execution))
    }

    fn copy_volumes(&self, snapshots: &Snapshots, id: u64) -> Result<()> {
        if snapshots.is_empty() {
            return Ok(());
        }
        let taker = volumes::Taker {
            engine: self.seams.engine,
            printer: self.printer,
            stack: &self.stack.name,
            dir: &self.stack.volumes.dir,
            hook_timeout: self.stack.hook_timeout,
        };
        let manifest = taker.take(snapshots, id, self.seams.clock.stamp()).context("taking volume snapshots")?;
        self.printer.step(format!(
            "volume snapshots of revision {id} are in {}: {}",
            volumes::revision_dir(&self.stack.volumes.dir, id).display(),
            manifest.describe()
        ));
        crash_point("snapshot");
        Ok(())
    }

    /// `reject`: a revision that failed on its merits is not retried
    /// unattended; one that was merely interrupted is.
    pub(super) fn finish(&self, revision: &Revision, execution: &Execution, reject: bool) -> Result<()> {
        let images = self.snapshot(&revision.plan.project);
        let ending = Ending {
            finished: self.seams.clock.stamp(),
            outcome: execution.outcome,
            error: execution.error.clone(),
            after: execution.after.clone(),
            images,
        };
        self.state
            .end(revision.id, ending)
            .with_context(|| format!("journaling the end of revision {}", revision.id))?;
        // A run stopped by a signal says nothing about its target.
        if reject
            && !self.seams.signals.stop_requested()
            && matches!(execution.outcome, Outcome::RolledBack | Outcome::RollbackFailed)
        {
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
        if execution.outcome == Outcome::Applied
            && let Err(e) = volumes::prune(&self.stack.volumes.dir, self.stack.volumes.keep, Some(revision.id))
        {
            self.printer.step(format!("pruning old volume snapshots: {e:#}"));
        }
        Ok(())
    }

    /// Marks `revision`'s target (its commit, if it moved, and its image
    /// digests) as not to be applied unattended again.
    pub fn reject(&self, revision: &Revision, why: &str) -> Result<()> {
        let moved = revision.plan.moves_commit();
        let rejection = Rejection {
            revision: revision.id,
            time: self.seams.clock.stamp(),
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
        for tag in self.seams.engine.tags_under(&prefix)? {
            let rev = tag.rsplit_once(':').map(|(_, t)| t.to_string()).unwrap_or_default();
            if !keep.contains(&rev) {
                self.seams.engine.untag(&tag)?;
            }
        }
        Ok(())
    }
}
