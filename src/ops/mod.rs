//! A plan's inputs, gathered: the stack's compose models old and new (from
//! the files, a git commit, or a kept copy), what runs (`observe`) and the
//! registries' digests (`fetch`), handed to the pure planner in `plan`.
//! `apply` carries the plan out.

pub mod fetch;
pub mod observe;

use anyhow::{Context, Result, anyhow};
use git2::Oid;

use crate::apply::execute::Files;
use crate::apply::files::{DirectoryFiles, GitDeploy};
use crate::apply::snapshot;
use crate::exit::usage;
use crate::plan::classify::{self, Baseline, Inputs, Plan};
use crate::plan::diff;
use crate::plan::observation::Observation;
use crate::seams::compose::{Compose, ComposeCli, ComposeModel};
use crate::seams::engine::Engine;
use crate::seams::git::{GitRepo, short};
use crate::settings::StackSettings;
use crate::state::Revision;

/// The stack's plan as of now, with what was observed to make it (the
/// backup stage needs the image ids) and the git state to deploy it.
pub struct Checked {
    pub plan: Plan,
    pub observation: Observation,
    /// Unified diff of the stack's files, secrets redacted (git stacks, and
    /// a directory stack's rollback to kept files).
    pub file_diff: String,
    pub git: Option<GitDeploy>,
    /// Directory stacks: the copies of the files to deploy and go back to.
    pub directory: Option<DirectoryFiles>,
    /// Per service: health and hook settings from configuration and labels.
    pub policies: std::collections::BTreeMap<String, crate::labels::ServicePolicy>,
}

/// What a plan leads to.
pub enum Goal<'a> {
    /// The branch head and the registries' current digests.
    Latest,
    /// A recorded revision: its commit and the image ids it ran.
    Revision(&'a Revision),
    /// A commit of the branch (by prefix) instead of its head: a fleet
    /// rollout deploys what was checked on the first host.
    Commit(&'a str),
}

pub fn check(engine: &dyn Engine, stack: &StackSettings) -> Result<Checked> {
    plan(engine, stack, Goal::Latest)
}

pub fn plan(engine: &dyn Engine, stack: &StackSettings, goal: Goal) -> Result<Checked> {
    let compose = stack.compose();
    let mut file_diff = String::new();
    let mut changed_files = Vec::new();
    let (model, old_model, hashes, git) = match &stack.git {
        None => {
            match goal {
                Goal::Latest => {
                    let (model, hashes) = compose.model_and_hashes()?;
                    (model, None, Some(hashes), None)
                }
                Goal::Revision(r) => {
                    let model = compose.model()?;
                    match &r.files {
                        Some(id) => {
                            let tree = snapshot::tree(&stack.state_dir, id);
                            let target = stack.compose().in_copy(&tree, &stack.directory).named(&model.project);
                            let new = target.model().with_context(|| {
                                format!("reading revision {}'s files, kept in {}", r.id, tree.display())
                            })?;
                            file_diff = files_diff(&target, &stack.directory, &tree);
                            changed_files = snapshot::differing(&stack.state_dir, id, &stack.directory)?;
                            (new, Some(model), None, None)
                        }
                        // Revisions from before copies were kept: images only.
                        None => (model.clone(), Some(model), None, None),
                    }
                }
                Goal::Commit(_) => {
                    return Err(usage("--expect-revision names a git commit; this stack has no git source"));
                }
            }
        }
        Some(source) => {
            let repo = GitRepo::open(&stack.state_dir.join("git"), source)?;
            let old = repo.head();
            let new = match goal {
                Goal::Latest => repo.fetch()?,
                Goal::Commit(prefix) => {
                    let head = repo.fetch()?;
                    let commit = repo.resolve(prefix)?;
                    if !repo.descends_from(head, commit)? {
                        return Err(anyhow!(
                            "commit {prefix} is not on branch {} of {}; nothing was changed",
                            source.branch,
                            source.url
                        ));
                    }
                    commit
                }
                Goal::Revision(r) => r
                    .plan
                    .commit
                    .as_deref()
                    .and_then(|c| Oid::from_str(c).ok())
                    .or(old)
                    .ok_or_else(|| anyhow!("revision {} records no commit", r.id))?,
            };
            if matches!(goal, Goal::Latest | Goal::Commit(_)) {
                repo.preflight(new)?;
            }
            if let (Some(old), Goal::Latest | Goal::Commit(_)) = (old, &goal)
                && !repo.descends_from(new, old)?
            {
                return Err(anyhow!(
                    "branch {} of {} no longer contains the deployed commit {} (history was rewritten or force-pushed); \
                     nothing was changed. Inspect the branch; to deploy it anyway, remove {} so clusterup starts afresh",
                    source.branch,
                    source.url,
                    short(old),
                    stack.state_dir.join("git").display()
                ));
            }
            crate::files::private_dir(&stack.state_dir)
                .with_context(|| format!("creating the state dir {}", stack.state_dir.display()))?;
            let incoming = tempfile::Builder::new()
                .prefix("incoming-")
                .tempdir_in(&stack.state_dir)
                .context("creating a scratch directory in the state dir")?;
            repo.export(new, incoming.path())?;
            // An untracked `.env` in the checkout is the host's own (ports,
            // secrets): the new commit is read with it, as it will run.
            let new_dir = incoming.path().join(&source.path);
            let local_env = stack.directory.join(".env");
            if local_env.is_file() && !new_dir.join(".env").exists() {
                std::fs::copy(&local_env, new_dir.join(".env")).context("reading the checkout's .env")?;
            }
            let old_model: Option<ComposeModel> = match old {
                Some(_) => Some(compose.model().context("reading the deployed commit's compose model")?),
                None => None,
            };
            let mut new_compose = stack.compose().in_copy(incoming.path(), &source.checkout);
            // An operator's directory names the project (as `docker compose
            // up` there did); the scratch copy must not.
            if let (None, Some(deployed)) = (&stack.project, &old_model) {
                new_compose = new_compose.named(&deployed.project);
            }
            let model = new_compose.model().map_err(|e| {
                let cause = e.to_string().replace(&incoming.path().display().to_string(), "");
                usage(format!("commit {} of {}: {cause}", short(new), source.url))
            })?;
            if old.is_some() {
                file_diff = files_diff(&new_compose, &stack.directory, &new_dir);
            }
            if let Some(old) = old {
                changed_files = repo.changed_files(old, new)?;
            }
            (model, old_model, None, Some(GitDeploy { repo, new, old }))
        }
    };
    let references: Vec<String> = model.services.values().filter_map(|s| s.image.clone()).collect();
    let observation = observe::observe(engine, &model.project, &references, false)?;
    let labels = crate::labels::resolve(stack, &model).map_err(|e| usage(format!("stack {}: {e}", stack.name)))?;
    let skip = labels.skip;
    if let Some(unknown) = stack.skip.iter().chain(stack.services.keys()).find(|s| !model.services.contains_key(*s)) {
        return Err(usage(format!(
            "stack {}: `services.{unknown}.skip` names no service of the compose files (services: {})",
            stack.name,
            model.services.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let target_images = match goal {
        Goal::Revision(r) => Some(&r.images),
        Goal::Latest | Goal::Commit(_) => None,
    };
    let remote = match target_images {
        Some(_) => Default::default(),
        None => fetch::fetch(engine, &classify::registry_lookups(&model, &observation, &skip)),
    };
    let gone = match &hashes {
        Some(_) => removed_by_hand(&compose, &model, &observation)?,
        None => Default::default(),
    };
    let baseline = match (&hashes, &old_model, &git) {
        (Some(hashes), _, _) => Baseline::Running { hashes, gone: &gone },
        (None, Some(old), _) => Baseline::Deployed(old),
        _ => Baseline::Nothing,
    };
    let on_disk = match (&stack.git, old_model.as_ref().or(hashes.as_ref().map(|_| &model))) {
        (None, Some(current)) => {
            Some(snapshot::take(&stack.state_dir, &stack.directory, &compose.compose_files(), current)?)
        }
        _ => None,
    };
    let plan = classify::classify(&Inputs {
        stack: &stack.name,
        new: &model,
        baseline,
        observation: &observation,
        skip: &skip,
        remote: &remote,
        policy: stack.policy,
        commit: git.as_ref().map(|g| g.new.to_string()),
        deployed_commit: git.as_ref().and_then(|g| g.old.map(|o| o.to_string())),
        changed_files: &changed_files,
        target_images,
    });
    let directory = match on_disk {
        Some(on_disk) => {
            // Files that match what runs are the ones to come back to.
            let before = if hashes.is_some() && !plan.changes.iter().any(|c| c.is_structural()) {
                snapshot::set_good(&stack.state_dir, &on_disk)?;
                Some(on_disk.clone())
            } else {
                snapshot::good(&stack.state_dir)
            };
            let deploy = match goal {
                Goal::Revision(r) => r.files.clone(),
                Goal::Latest | Goal::Commit(_) => None,
            };
            Some(DirectoryFiles {
                state_dir: stack.state_dir.clone(),
                directory: stack.directory.clone(),
                on_disk,
                deploy,
                before,
            })
        }
        None => None,
    };
    Ok(Checked { plan, observation, file_diff, git, directory, policies: labels.policies })
}

impl Checked {
    /// What an apply of `plan` moves on disk: the git checkout when the
    /// commit moves; a directory stack's files when the plan changes
    /// structure (an image update leaves a pending edit alone).
    pub fn files_for(&self, plan: &Plan) -> Option<&dyn Files> {
        if let Some(git) = self.git.as_ref().filter(|_| plan.moves_commit()) {
            return Some(git);
        }
        let structural = plan.changes.iter().any(|c| c.is_structural());
        self.directory.as_ref().filter(|d| structural || d.deploy.is_some()).map(|d| d as &dyn Files)
    }
}

/// Unified diffs of the compose files and `.env` between two directories.
fn files_diff(compose: &ComposeCli, before: &std::path::Path, after: &std::path::Path) -> String {
    let mut out = String::new();
    for file in compose.source_files() {
        let read = |dir: &std::path::Path| std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
        let (old, new) = (read(before), read(after));
        if old != new {
            out.push_str(&diff::text_diff(&file.display().to_string(), &old, &new));
        }
    }
    out
}

/// Services of the project running now that the files do not define under
/// any profile: removed by hand. Asked of Compose only when some service
/// runs that the active profiles leave out.
fn removed_by_hand(
    compose: &ComposeCli,
    model: &ComposeModel,
    observation: &Observation,
) -> Result<std::collections::BTreeSet<String>> {
    let mut gone: std::collections::BTreeSet<String> =
        observation.services.keys().filter(|s| !model.services.contains_key(*s)).cloned().collect();
    if !gone.is_empty() {
        let defined = compose.all_services()?;
        gone.retain(|s| !defined.contains(s));
    }
    Ok(gone)
}
