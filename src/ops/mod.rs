//! A plan's inputs, gathered: the stack's compose models old and new (from
//! the files, a git commit, or a kept copy), what runs (`observe`) and the
//! registries' digests (`fetch`), handed to the pure planner in `plan`.
//! `apply` carries the plan out.

pub mod fetch;
pub mod model_cache;
pub mod observe;
pub mod pull_requests;
mod seen;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use git2::Oid;

use crate::apply::execute::Files;
use crate::apply::files::{DirectoryFiles, GitDeploy};
use crate::apply::snapshot;
use crate::exit::usage;
use crate::labels::ServicePolicy;
use crate::plan::classify::{
    self, Baseline, Change, ChangeKind, CommitInfo, CommitLog, ImageInfo, Inputs, Plan, ServiceState, TagUpdate,
    Waiting,
};
use crate::plan::diff;
use crate::plan::observation::Observation;
use crate::plan::tags::{self, Bump};
use crate::seams::Seams;
use crate::seams::compose::{Compose, ComposeModel, ComposeService};
use crate::seams::engine::Engine;
use crate::seams::git::{Changed, GitSource, Repo, short};
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
    /// The compose model came from the last run's cache: Compose was not
    /// asked (nor told the stack's secrets to keep out of output).
    pub cached_model: bool,
    /// Services with `build:`, and the name their image is built under.
    pub built: BTreeMap<String, String>,
}

/// What a plan leads to.
#[derive(Clone, Copy)]
pub enum Goal<'a> {
    /// The branch head and the registries' current digests.
    Latest,
    /// A recorded revision: its commit and the image ids it ran.
    Revision(&'a Revision),
    /// A commit of the branch (by prefix) instead of its head: a fleet
    /// rollout deploys what was checked on the first host.
    Commit(&'a str),
}

pub fn check(seams: &Seams, stack: &StackSettings) -> Result<Checked> {
    plan(seams, stack, Goal::Latest)
}

/// The plan to `goal`, from the cached compose model where it still holds.
pub fn plan(seams: &Seams, stack: &StackSettings, goal: Goal) -> Result<Checked> {
    plan_with(seams, stack, goal, true)
}

/// The plan to `goal`, Compose asked whatever the cache holds: before a
/// plan is carried out, so Compose knows the stack's secrets to scrub.
pub fn plan_fresh(seams: &Seams, stack: &StackSettings, goal: Goal) -> Result<Checked> {
    plan_with(seams, stack, goal, false)
}

fn plan_with(seams: &Seams, stack: &StackSettings, goal: Goal, use_cache: bool) -> Result<Checked> {
    // The registries are asked what the last run asked while the files are
    // read and the engine observed: each lookup a round trip, and what the
    // files no longer name is simply not used.
    let last_lookups = match goal {
        Goal::Revision(_) => Vec::new(),
        Goal::Latest | Goal::Commit(_) => fetch::last_lookups(&stack.state_dir),
    };
    std::thread::scope(|scope| {
        let early = scope.spawn(|| fetch::fetch(seams.engine, &last_lookups));
        plan_asking(seams, stack, goal, use_cache, &last_lookups, early)
    })
}

fn plan_asking(
    seams: &Seams,
    stack: &StackSettings,
    goal: Goal,
    use_cache: bool,
    last_lookups: &[String],
    early: std::thread::ScopedJoinHandle<fetch::Digests>,
) -> Result<Checked> {
    let compose = seams.open.compose(&stack.compose_spec());
    let Models { new: model, old: old_model, hashes, git, file_diff, changed, cached_model } = match &stack.git {
        None => directory_models(stack, compose.as_ref(), &goal, use_cache)?,
        Some(source) => git_models(seams, stack, source, compose.as_ref(), &goal)?,
    };
    let references: Vec<String> = model.services.values().filter_map(|s| s.image.clone()).collect();
    let target_images = match goal {
        Goal::Revision(r) => Some(&r.images),
        Goal::Latest | Goal::Commit(_) => None,
    };
    let observation = observe::observe(seams.engine, &model.project, &references, false)?;
    let early = early.join().unwrap_or_default();
    let mut labels = crate::labels::resolve(stack, &model).map_err(|e| usage(format!("stack {}: {e}", stack.name)))?;
    labels.policies.extend(gone_policies(stack, &model, &observation));
    let skip = labels.skip;
    if let Some(unknown) = stack.skip.iter().chain(stack.services.keys()).find(|s| !model.services.contains_key(*s)) {
        return Err(usage(format!(
            "stack {}: `services.{unknown}.skip` names no service of the compose files (services: {})",
            stack.name,
            model.services.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let remote = match target_images {
        Some(_) => Default::default(),
        None => {
            let lookups = classify::registry_lookups(&model, &observation, &skip);
            fetch::remember_lookups(&stack.state_dir, &lookups, last_lookups);
            fetch::complete(seams.engine, &lookups, early)
        }
    };
    let gone = match &hashes {
        Some(_) => removed_by_hand(compose.as_ref(), &model, &observation)?,
        None => Default::default(),
    };
    let baseline = match (&hashes, &old_model) {
        (Some(hashes), _) => Baseline::Running { hashes, gone: &gone },
        (None, Some(old)) => Baseline::Deployed(old),
        (None, None) => Baseline::Nothing,
    };
    let on_disk = match (&stack.git, old_model.as_ref().or(hashes.as_ref().map(|_| &model))) {
        (None, Some(current)) => {
            Some(snapshot::take(&stack.state_dir, &stack.directory, &compose.compose_files(), current)?)
        }
        _ => None,
    };
    // The deployed ignore files: a commit that changes one changes a file
    // of its context, which rebuilds whatever it says.
    let dockerignore: BTreeMap<PathBuf, String> = model
        .services
        .values()
        .flat_map(|svc| crate::plan::diff::build_inputs(svc).ignore_files())
        .filter_map(|file| Some((file.clone(), std::fs::read_to_string(&file).ok()?)))
        .collect();
    let mut plan = classify::classify(&Inputs {
        stack: &stack.name,
        new: &model,
        baseline,
        observation: &observation,
        skip: &skip,
        remote: &remote,
        policy: stack.policy,
        commit: git.as_ref().map(|g| g.new.to_string()),
        deployed_commit: git.as_ref().and_then(|g| g.old.map(|o| o.to_string())),
        changed_files: &changed.files,
        moved_submodules: &changed.submodules,
        dockerignore: &dockerignore,
        target_images,
    });
    let now = seams.clock.now()?;
    let mut seen = seen::Seen::load(&stack.state_dir);
    // The edited compose files a directory stack's new tags deploy.
    let mut tag_edits = Vec::new();
    // A rollback goes to what a revision ran: no new tag replaces that.
    if target_images.is_none() {
        let compose_files = compose.compose_files();
        let mut files =
            on_disk.as_deref().map(|on_disk| TagFiles { on_disk, compose_files: &compose_files, edits: Vec::new() });
        follow_tags(seams.engine, stack, &labels.policies, files.as_mut(), &mut plan);
        tag_edits = files.map(|f| f.edits).unwrap_or_default();
        fixed_tags(seams.engine, &mut seen, &mut plan);
    }
    new_images(seams.engine, &mut seen, now, &labels.policies, &mut plan);
    seen.save(&stack.state_dir, now).context("recording what the registries showed")?;
    if let (Some(GitDeploy { repo, new, old: Some(old) }), Some(source)) = (&git, &stack.git)
        && new != old
    {
        plan.commits = Some(commit_log(repo.as_ref(), source, *old, *new)?);
    }
    let directory = match on_disk {
        Some(on_disk) => Some(directory_files(stack, on_disk, tag_edits, hashes.is_some(), &plan, &goal)?),
        None => None,
    };
    let built =
        model.services.iter().filter(|(_, s)| s.build).map(|(n, s)| (n.clone(), model.image_of(n, s))).collect();
    Ok(Checked { plan, observation, file_diff, git, directory, policies: labels.policies, cached_model, built })
}

/// A directory stack's copies around `plan`: `on_disk` (the files now),
/// the copy to deploy (a rollback's), and the one to come back to.
/// `to_files`: the plan compares what runs with the files on disk.
fn directory_files(
    stack: &StackSettings,
    on_disk: String,
    tag_edits: Vec<(PathBuf, String)>,
    to_files: bool,
    plan: &Plan,
    goal: &Goal,
) -> Result<DirectoryFiles> {
    // Files that match what runs are the ones to come back to.
    let before = if to_files && !plan.changes.iter().any(|c| c.is_structural()) {
        snapshot::set_good(&stack.state_dir, &on_disk)?;
        Some(on_disk.clone())
    } else {
        snapshot::good(&stack.state_dir)
    };
    let deploy = match goal {
        Goal::Revision(r) => r.files.clone(),
        Goal::Latest | Goal::Commit(_) if tag_edits.is_empty() => None,
        Goal::Latest | Goal::Commit(_) => Some(snapshot::edited(&stack.state_dir, &on_disk, &tag_edits)?),
    };
    Ok(DirectoryFiles {
        state_dir: stack.state_dir.clone(),
        directory: stack.directory.clone(),
        on_disk,
        deploy,
        tag_edits: !tag_edits.is_empty(),
        before,
    })
}

/// The compose models a plan compares, and where they came from.
struct Models {
    /// What the plan deploys.
    new: ComposeModel,
    /// What was deployed, read from its files (git, a rollback to kept
    /// files); None when the running containers are the baseline.
    old: Option<ComposeModel>,
    /// A directory stack going to its own files: the config hash Compose
    /// gives each service, compared with the containers'.
    hashes: Option<BTreeMap<String, String>>,
    git: Option<GitDeploy>,
    file_diff: String,
    changed: Changed,
    cached_model: bool,
}

/// A directory stack: its files as they are, or a revision's kept copy.
fn directory_models(stack: &StackSettings, compose: &dyn Compose, goal: &Goal, use_cache: bool) -> Result<Models> {
    let none = |new, old, hashes| Models {
        new,
        old,
        hashes,
        git: None,
        file_diff: String::new(),
        changed: Changed::default(),
        cached_model: false,
    };
    match goal {
        Goal::Latest => {
            let (model, hashes, cached_model) = model_cache::model_and_hashes(compose, &stack.state_dir, use_cache)?;
            Ok(Models { cached_model, ..none(model, None, Some(hashes)) })
        }
        Goal::Revision(r) => {
            let model = compose.model()?;
            let Some(id) = &r.files else {
                // Revisions from before copies were kept: images only.
                return Ok(none(model.clone(), Some(model), None));
            };
            let tree = snapshot::tree(&stack.state_dir, id);
            let target = compose.in_copy(&tree, &stack.directory, Some(&model.project));
            let new = target
                .model()
                .with_context(|| format!("reading revision {}'s files, kept in {}", r.id, tree.display()))?;
            Ok(Models {
                file_diff: files_diff(target.as_ref(), &stack.directory, &tree),
                changed: Changed {
                    files: snapshot::differing(&stack.state_dir, id, &stack.directory)?,
                    submodules: Vec::new(),
                },
                ..none(new, Some(model), None)
            })
        }
        Goal::Commit(_) => Err(usage("--expect-revision names a git commit; this stack has no git source")),
    }
}

/// A git stack: the commit to deploy, read from a scratch copy (the
/// checkout stays at the deployed commit until an apply moves it).
fn git_models(
    seams: &Seams,
    stack: &StackSettings,
    source: &GitSource,
    compose: &dyn Compose,
    goal: &Goal,
) -> Result<Models> {
    let repo = seams.open.repo(&stack.state_dir.join("git"), source)?;
    let old = repo.head();
    let new = commit_to_deploy(repo.as_ref(), source, goal, old)?;
    if let (Some(old), Goal::Latest | Goal::Commit(_)) = (old, goal)
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
    // An operator's directory names the project (as `docker compose
    // up` there did); the scratch copy must not.
    let project = match (&stack.project, &old_model) {
        (None, Some(deployed)) => Some(deployed.project.as_str()),
        _ => None,
    };
    let new_compose = compose.in_copy(incoming.path(), &source.checkout, project);
    let model = new_compose.model().map_err(|e| {
        let cause = e.to_string().replace(&incoming.path().display().to_string(), "");
        usage(format!("commit {} of {}: {cause}", short(new), source.url))
    })?;
    let (file_diff, changed) = match old {
        Some(old) => (files_diff(new_compose.as_ref(), &stack.directory, &new_dir), repo.changed_files(old, new)?),
        None => (String::new(), Changed::default()),
    };
    let git = Some(GitDeploy { repo, new, old });
    Ok(Models { new: model, old: old_model, hashes: None, git, file_diff, changed, cached_model: false })
}

/// A directory stack's compose files (in copy `on_disk`) as its tag
/// moves edit them.
struct TagFiles<'a> {
    on_disk: &'a str,
    compose_files: &'a [PathBuf],
    /// Each edited file, relative to the stack directory, and its text.
    edits: Vec<(PathBuf, String)>,
}

/// `files.edits` with `change`'s `image:` line moved to its new tag: the
/// smallest edit, comments and formatting kept. Err: why no compose file
/// takes it (`edits` unchanged).
fn edit_image_line(stack: &StackSettings, files: &mut TagFiles, change: &Change) -> std::result::Result<(), String> {
    let (Some(old), Some(new)) = (change.from.as_deref(), change.to.as_deref()) else { return Ok(()) };
    let tree = snapshot::tree(&stack.state_dir, files.on_disk);
    let edits = &mut files.edits;
    let mut why = None;
    for file in files.compose_files {
        let rel = file.strip_prefix(&stack.directory).unwrap_or(file).to_path_buf();
        let text = match edits.iter().find(|(p, _)| *p == rel) {
            Some((_, t)) => t.clone(),
            None => std::fs::read_to_string(tree.join(&rel)).unwrap_or_default(),
        };
        match tags::rewrite_image(&text, &change.service, old, new) {
            Ok(text) => {
                edits.retain(|(p, _)| *p != rel);
                edits.push((rel, text));
                return Ok(());
            }
            Err(e) => why = Some(e),
        }
    }
    Err(why.unwrap_or_else(|| "no compose file".into()))
}

/// Newer version tags for the services that `follow:` them. A directory
/// stack gets a change (its `image:` line is edited, inside the revision);
/// a git stack is never edited on the host: the tag is reported for a
/// person to commit. A tag without an image for this host's platform is
/// not offered (the service's report says why).
fn follow_tags(
    engine: &dyn Engine,
    stack: &StackSettings,
    policies: &BTreeMap<String, ServicePolicy>,
    mut files: Option<&mut TagFiles>,
    plan: &mut Plan,
) {
    let mut listed: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    let running: Vec<(String, String)> = plan
        .services
        .iter()
        .filter(|s| matches!(s.state, ServiceState::UpToDate | ServiceState::UpdateAvailable))
        .filter_map(|s| Some((s.service.clone(), s.image.clone()?)))
        .collect();
    for (service, image) in running {
        let Some(follow) = policies.get(&service).and_then(|p| p.follow.as_ref()) else { continue };
        let Some((repository, tag)) = crate::reference::split_tag(&image) else { continue };
        let tags = listed.entry(repository.to_string()).or_insert_with(|| engine.registry_tags(&image).ok());
        let Some(tags) = tags else { continue };
        let Some((to, bump)) = tags::newest(tag, tags, follow.level, &follow.include, &follow.exclude) else {
            continue;
        };
        let reference = format!("{repository}:{to}");
        if let Err(e) = engine.image_config(&reference, &to) {
            if let Some(report) = plan.services.iter_mut().find(|s| s.service == service) {
                report.detail = Some(format!("tag {to} not offered: {e:#}"));
            }
            continue;
        }
        let update = TagUpdate { service: service.clone(), from: tag.to_string(), to: to.clone(), bump };
        plan.tag_updates.push(update.clone());
        let Some(files) = files.as_deref_mut() else { continue };
        let change = Change {
            from: Some(image.clone()),
            to: Some(reference.clone()),
            pull: true,
            reasons: vec![format!("new tag {tag} -> {to}")],
            tag_update: Some(update),
            ..Change::new(&service, ChangeKind::Image, Some(reference))
        };
        if let Err(e) = edit_image_line(stack, files, &change) {
            if let Some(report) = plan.services.iter_mut().find(|s| s.service == service) {
                report.detail = Some(format!("tag {to} available; clusterup cannot edit the image line: {e}"));
            }
            continue;
        }
        plan.changes.retain(|c| c.service != service);
        plan.changes.push(change);
        if bump == Bump::Major {
            plan.needs_approval.push(format!("{service}: a new major version ({tag} -> {to})"));
        }
    }
    plan.kind = classify::kind_of(&plan.changes);
}

/// How many fixed tags one run asks the registry about; the rest wait for
/// the next run (each is asked once: they are kept).
const FIXED_TAG_LOOKUPS: usize = 100;

/// For each service on a moving tag (`autonomy-latest`), the fixed tag of
/// its family (`autonomy-<sha>`) that names the running digest: what CI
/// pushed beside it, and a name for `rollback --to`.
fn fixed_tags(engine: &dyn Engine, seen: &mut seen::Seen, plan: &mut Plan) {
    let mut asked = 0;
    for report in plan.services.iter_mut() {
        let (Some(image), Some(running)) = (report.image.as_deref(), report.running_digest.as_deref()) else {
            continue;
        };
        let Some((repository, tag)) = crate::reference::split_tag(image) else { continue };
        let Some(family) = tags::family(tag) else { continue };
        let Ok(listed) = engine.registry_tags(image) else { continue };
        let members: Vec<String> =
            listed.iter().filter(|t| tags::is_fixed_member(family, t)).map(|t| format!("{repository}:{t}")).collect();
        let unknown: Vec<String> = members
            .iter()
            .filter(|r| seen.fixed(r).is_none())
            .take(FIXED_TAG_LOOKUPS.saturating_sub(asked))
            .cloned()
            .collect();
        asked += unknown.len();
        for (reference, digest) in unknown.iter().zip(engine.registry_digests(&unknown)) {
            if let Ok(digest) = digest {
                seen.remember_fixed(reference.clone(), digest);
            }
        }
        report.running_tag = members
            .iter()
            .filter(|r| seen.fixed(r) == Some(running))
            .min()
            .and_then(|r| r.strip_prefix(&format!("{repository}:")))
            .map(String::from);
    }
}

/// What each new image says of itself (its OCI labels; a registry that
/// does not tell is no error, the labels only inform), and whether it is
/// old enough for its service's `min_age`.
fn new_images(
    engine: &dyn Engine,
    seen: &mut seen::Seen,
    now: jiff::Timestamp,
    policies: &BTreeMap<String, ServicePolicy>,
    plan: &mut Plan,
) {
    for change in plan.changes.iter_mut().filter(|c| c.kind == ChangeKind::Image && c.restore_image.is_none()) {
        let (Some(image), Some(to)) = (&change.image, &change.to) else { continue };
        // A new digest behind the same tag, or a new tag (its manifest).
        let (reference, target, key) = match to.strip_prefix("sha256:") {
            Some(_) => {
                let repository = crate::reference::split_tag(image).map_or(image.as_str(), |(r, _)| r);
                (image.clone(), to.clone(), format!("{repository}@{to}"))
            }
            None => {
                (to.clone(), crate::reference::Reference::parse(to).tag.unwrap_or_else(|| "latest".into()), to.clone())
            }
        };
        let config = engine.image_config(&reference, &target).ok();
        if let Some(config) = &config {
            let label = |name: &str| config.labels.get(&format!("org.opencontainers.image.{name}")).cloned();
            let mut info = ImageInfo {
                version: label("version"),
                revision: label("revision"),
                source: label("source"),
                release_notes: None,
            };
            if let (Some(forge), Some(version)) =
                (info.source.as_deref().and_then(crate::seams::git::forge), &info.version)
                && forge.is_github()
                && tags::is_version(version)
            {
                info.release_notes = Some(format!("{}/releases/tag/{version}", forge.base()));
            }
            change.new_image = Some(info).filter(|i| !i.is_empty());
        }
        let first_seen = seen.first_seen(&key, now);
        if let Some(min_age) = policies.get(&change.service).and_then(|p| p.min_age) {
            change.waiting = Waiting::gate(min_age, first_seen, config.and_then(|c| c.created), now);
        }
    }
}

/// How many commits a message lists; the rest are counted.
const COMMITS_SHOWN: usize = 10;

/// What `old..new` brings, with links where the remote is a known forge.
fn commit_log(repo: &dyn Repo, source: &GitSource, old: Oid, new: Oid) -> Result<CommitLog> {
    let (total, entries) = repo.log(old, new, COMMITS_SHOWN)?;
    let forge = crate::seams::git::forge(source.url.expose());
    let commits = entries
        .into_iter()
        .map(|e| CommitInfo {
            id: short(e.id),
            subject: e.subject,
            author: e.author,
            url: forge.as_ref().map(|f| f.commit(&e.id.to_string())),
        })
        .collect();
    let compare_url = forge.map(|f| f.compare(&old.to_string(), &new.to_string()));
    Ok(CommitLog { total, commits, compare_url })
}

/// The commit `goal` names: the branch head (fetched), a fleet's commit
/// on the branch, or the one a revision recorded. A new commit must be
/// one the work tree may move to.
fn commit_to_deploy(repo: &dyn Repo, source: &GitSource, goal: &Goal, deployed: Option<Oid>) -> Result<Oid> {
    let new = match *goal {
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
        Goal::Revision(r) => {
            let recorded = r.plan.commit.as_deref().and_then(|c| Oid::from_str(c).ok());
            return recorded.or(deployed).ok_or_else(|| anyhow!("revision {} records no commit", r.id));
        }
    };
    repo.preflight(new)?;
    Ok(new)
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
        // Files with new tags go only with those tag moves.
        let tags_moving = plan.changes.iter().any(|c| c.tag_update.is_some());
        self.directory
            .as_ref()
            .filter(|d| structural || d.deploy.is_some() && (!d.tag_edits || tags_moving))
            .map(|d| d as &dyn Files)
    }
}

/// Unified diffs of the compose files and `.env` between two directories.
fn files_diff(compose: &dyn Compose, before: &std::path::Path, after: &std::path::Path) -> String {
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
    compose: &dyn Compose,
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

/// `plan` against the shared fakes: Compose reads `compose.json`, the
/// engine is in memory, git is real on a local remote. No daemon.
/// How services gone from the compose files are handled on their way out
/// (a volume snapshot before their removal): their containers' labels
/// still say it. A label that cannot be read is no reason to stop here.
fn gone_policies(
    stack: &StackSettings,
    model: &ComposeModel,
    observation: &Observation,
) -> BTreeMap<String, ServicePolicy> {
    let services: BTreeMap<String, ComposeService> = observation
        .services
        .iter()
        .filter(|(name, _)| !model.services.contains_key(*name))
        .filter_map(|(name, o)| {
            let labels = &o.containers.first()?.labels;
            Some((name.clone(), ComposeService { raw: serde_json::json!({ "labels": labels }), ..Default::default() }))
        })
        .collect();
    if services.is_empty() {
        return BTreeMap::new();
    }
    let gone = ComposeModel { project: model.project.clone(), services, top_level: BTreeMap::new() };
    crate::labels::resolve(stack, &gone).map(|r| r.policies).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::plan::classify::ChangeKind;
    use crate::seams::Open;
    use crate::seams::fake::{Fake, FakeOpen, fake, git, seams};

    const MODEL: &str = r#"{"name": "p", "services": {"a": {"image": "r/a:latest"}, "b": {"image": "r/b:latest"}}}"#;

    fn kinds(checked: &Checked) -> Vec<(String, ChangeKind)> {
        checked.plan.changes.iter().map(|c| (c.service.clone(), c.kind)).collect()
    }

    /// A directory stack in `tmp/p` defined by `model`, state in `tmp/state`.
    fn directory(tmp: &Path, model: &str) -> StackSettings {
        let dir = tmp.join("p");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("compose.yaml"), "services: {}\n").unwrap();
        std::fs::write(dir.join("compose.json"), model).unwrap();
        crate::settings::from_directory(&dir, Some(&tmp.join("state"))).unwrap()
    }

    /// The engine runs what `stack`'s files define now.
    fn running_as_defined(f: &mut Fake, stack: &StackSettings) {
        f.hashes = FakeOpen.compose(&stack.compose_spec()).hashes().unwrap();
    }

    #[test]
    fn a_directory_stack_in_step_with_its_files_plans_only_new_digests_and_keeps_its_files_as_good() {
        let tmp = tempfile::tempdir().unwrap();
        let stack = directory(tmp.path(), MODEL);
        let mut f = fake("new-a", "old-b");
        running_as_defined(&mut f, &stack);
        let checked = plan(&seams(&f), &stack, Goal::Latest).unwrap();
        assert_eq!(kinds(&checked), [("a".into(), ChangeKind::Image)]);
        assert_eq!(checked.plan.changes[0].to.as_deref(), Some("new-a"));
        let files = checked.directory.as_ref().expect("a directory stack's files are kept");
        assert_eq!(files.before.as_deref(), Some(files.on_disk.as_str()), "files matching what runs are the good copy");
        assert!(checked.files_for(&checked.plan).is_none(), "an image update moves no files");
        assert!(checked.git.is_none());
    }

    #[test]
    fn a_hand_edited_directory_recreates_the_edited_service_and_removes_the_dropped_one() {
        let tmp = tempfile::tempdir().unwrap();
        let stack = directory(tmp.path(), MODEL);
        let mut f = fake("old-a", "old-b");
        running_as_defined(&mut f, &stack);
        f.running.lock().unwrap().insert("c".into(), "old-c".into());
        let edited = MODEL
            .replace(r#""b": {"image": "r/b:latest"}"#, r#""b": {"image": "r/b:latest", "environment": {"X": "1"}}"#);
        std::fs::write(stack.directory.join("compose.json"), edited).unwrap();
        let checked = plan(&seams(&f), &stack, Goal::Latest).unwrap();
        assert_eq!(kinds(&checked), [("b".into(), ChangeKind::Recreate), ("c".into(), ChangeKind::Remove)]);
        let files = checked.directory.as_ref().unwrap();
        assert_eq!(files.before, None, "the edited files never matched what runs");
        assert!(checked.files_for(&checked.plan).is_some(), "a structural change moves the files");
    }

    #[test]
    fn a_cached_model_plans_as_compose_would_and_keeps_no_secret() {
        let tmp = tempfile::tempdir().unwrap();
        let model = MODEL.replace(
            r#""a": {"image": "r/a:latest"}"#,
            r#""a": {"image": "r/a:latest", "environment": {"TOKEN": "CanaryEnv"}, "command": ["run", "--key=CanaryCommand"],
                "labels": {"clusterup.strategy": "start-first", "traefik.auth": "CanaryLabel"}}"#,
        );
        let stack = directory(tmp.path(), &model);
        let mut f = fake("new-a", "old-b");
        running_as_defined(&mut f, &stack);
        let first = plan(&seams(&f), &stack, Goal::Latest).unwrap();
        let again = plan(&seams(&f), &stack, Goal::Latest).unwrap();
        assert!(!first.cached_model && again.cached_model, "nothing changed: the second plan is from the cache");
        let json = |c: &Checked| crate::commands::to_value(&c.plan);
        assert_eq!(json(&again), json(&first));
        assert_eq!(format!("{:?}", again.policies), format!("{:?}", first.policies), "labels clusterup reads are kept");
        let kept = String::from_utf8(std::fs::read(stack.state_dir.join("compose-model.json")).unwrap()).unwrap();
        assert!(kept.contains("start-first"), "{kept}");
        for canary in ["CanaryEnv", "CanaryCommand", "CanaryLabel"] {
            assert!(!kept.contains(canary), "{canary} kept in the state directory: {kept}");
        }

        let edited = model.replace(r#""b": {"image": "r/b:latest"}"#, r#""b": {"image": "r/b:latest", "init": true}"#);
        std::fs::write(stack.directory.join("compose.json"), edited).unwrap();
        let after_edit = plan(&seams(&f), &stack, Goal::Latest).unwrap();
        assert!(!after_edit.cached_model);
        assert_eq!(kinds(&after_edit), [("a".into(), ChangeKind::Image), ("b".into(), ChangeKind::Recreate)]);
        assert!(!plan_fresh(&seams(&f), &stack, Goal::Latest).unwrap().cached_model, "a fresh plan asks Compose");
    }

    #[test]
    fn a_directory_stack_has_no_commit_to_expect() {
        let tmp = tempfile::tempdir().unwrap();
        let stack = directory(tmp.path(), MODEL);
        let f = fake("old-a", "old-b");
        let err = plan(&seams(&f), &stack, Goal::Commit("abc123")).err().unwrap();
        assert_eq!(crate::exit::status_of(&err), crate::exit::ExitStatus::Usage, "{err:#}");
    }

    /// A remote whose branch main holds `stack/compose.json` = `model`, and
    /// a git stack following it whose clone has deployed that commit.
    fn deployed_git_stack(tmp: &Path, model: &str) -> (StackSettings, std::path::PathBuf) {
        let (bare, work) = (tmp.join("remote.git"), tmp.join("work"));
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "--bare", "-q"]);
        git(tmp, &["clone", "-q", bare.to_str().unwrap(), "work"]);
        commit(&work, model, "one");
        let checkout = tmp.join("checkout");
        let source = GitSource {
            url: crate::redact::SecretUrl::git(&format!("file://{}", bare.display())),
            insecure: false,
            timeout: crate::settings::DEFAULT_GIT_TIMEOUT,
            idle_timeout: crate::settings::DEFAULT_GIT_IDLE_TIMEOUT,
            branch: "main".into(),
            path: "stack".into(),
            submodules: false,
            ssh_key: None,
            checkout: checkout.clone(),
            in_place: None,
        };
        let mut stack = directory(tmp, model);
        let repo = FakeOpen.repo(&stack.state_dir.join("git"), &source).unwrap();
        repo.checkout(repo.fetch().unwrap()).unwrap();
        stack.directory = checkout.join("stack");
        stack.git = Some(source);
        (stack, work)
    }

    fn commit(work: &Path, model: &str, message: &str) {
        std::fs::create_dir_all(work.join("stack")).unwrap();
        std::fs::write(work.join("stack/compose.yaml"), "services: {}\n").unwrap();
        std::fs::write(work.join("stack/compose.json"), model).unwrap();
        git(work, &["add", "."]);
        git(work, &["commit", "-qm", message]);
        git(work, &["push", "-qf", "origin", "HEAD:main"]);
    }

    fn head(work: &Path) -> String {
        let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).current_dir(work).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn a_new_commit_is_read_from_a_scratch_copy_and_the_checkout_stays_deployed() {
        let tmp = tempfile::tempdir().unwrap();
        let (stack, work) = deployed_git_stack(tmp.path(), MODEL);
        let deployed = head(&work);
        let edited = MODEL.replace(r#""b": {"image": "r/b:latest"}"#, r#""b": {"image": "r/b:2"}"#);
        commit(&work, &edited, "two");
        let f = fake("old-a", "old-b");
        let checked = plan(&seams(&f), &stack, Goal::Latest).unwrap();
        assert_eq!(kinds(&checked), [("b".into(), ChangeKind::Image)], "{:?}", checked.plan.changes);
        assert_eq!(checked.plan.commit, Some(head(&work)));
        assert_eq!(checked.plan.deployed_commit, Some(deployed.clone()));
        assert!(checked.file_diff.contains("+") && checked.file_diff.contains("r/b:2"), "{}", checked.file_diff);
        assert!(checked.files_for(&checked.plan).is_some(), "the commit moves with the change");
        let on_disk = std::fs::read_to_string(stack.directory.join("compose.json")).unwrap();
        assert_eq!(on_disk, MODEL, "check leaves the deployed files in place");

        let err = plan(&seams(&f), &stack, Goal::Commit(&deployed[..1].repeat(12))).err().unwrap();
        assert!(format!("{err:#}").contains("is not in"), "{err:#}");
    }

    #[test]
    fn a_rewritten_branch_is_refused_naming_the_deployed_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let (stack, work) = deployed_git_stack(tmp.path(), MODEL);
        let deployed = head(&work);
        git(&work, &["commit", "-q", "--amend", "-m", "rewritten"]);
        git(&work, &["push", "-qf", "origin", "HEAD:main"]);
        let f = fake("old-a", "old-b");
        let err = plan(&seams(&f), &stack, Goal::Latest).err().unwrap();
        let text = format!("{err:#}");
        assert!(text.contains("no longer contains the deployed commit") && text.contains(&deployed[..7]), "{text}");
    }
}
