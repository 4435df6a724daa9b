//! classify: what changed (diff, registry digests, compose hashes) and
//! what runs → a Plan: ordered steps, what needs approval, what puts data
//! at risk. Pure: no engine, no clock, no files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::diff::{self, ModelDiff, Presence, ServiceDiff};
use super::ignore::Ignore;
use super::observation::{Observation, ServiceObservation};
use crate::reference::Reference;
use crate::seams::compose::{ComposeModel, ComposeService};
use crate::settings::Policy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    None,
    Image,
    Structural,
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Same reference, new digest in the registry: pull and recreate.
    Image,
    /// A service new in the compose files.
    Create,
    /// Its configuration changed (or something it shares did).
    Recreate,
    /// Gone from the compose files: its containers go, its volumes stay.
    Remove,
    /// Built here, and the commit changed what it is built from: build,
    /// then recreate.
    Rebuild,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Change {
    pub service: String,
    pub kind: ChangeKind,
    /// The image reference the service runs after the change (before, for
    /// a removal).
    pub image: Option<String>,
    /// image: the digest running now; recreate: the old reference when it
    /// changed.
    pub from: Option<String>,
    /// image: the registry's digest; recreate/create: the new reference.
    pub to: Option<String>,
    /// Whether the image is pulled before any container is touched.
    #[serde(default)]
    pub pull: bool,
    /// Whether the image is built before any container is touched.
    #[serde(default)]
    pub build: bool,
    /// Recreate even where Compose's config hash sees no change.
    #[serde(default)]
    pub force: bool,
    /// A rollback: the local image id to put back under `image` first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_image: Option<String>,
    /// A removal that is half of a rename: the service's new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_to: Option<String>,
    /// Why: changed fields, shared networks, renames, new digests.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// image: what the new image says of itself (its OCI labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_image: Option<ImageInfo>,
    /// image: a move to a new version tag (`follow:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_update: Option<TagUpdate>,
    /// image: younger than its service's `min_age`; `apply --auto` waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
}

/// A newer version tag a service follows (`follow: patch|minor|major`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TagUpdate {
    pub service: String,
    pub from: String,
    pub to: String,
    pub bump: crate::settings::Bump,
}

impl TagUpdate {
    pub fn describe(&self) -> String {
        let bump = serde_json::to_value(self.bump).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        format!("{}: new tag {} -> {} ({bump})", self.service, self.from, self.to)
    }
}

/// A new image that `apply --auto` leaves alone until `ready_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Waiting {
    /// The service's `min_age`, as configured (`3d`).
    pub min_age: String,
    /// When clusterup first saw this image.
    #[schemars(with = "String")]
    pub first_seen: jiff::Timestamp,
    /// When it is old enough: `min_age` after it was first seen, and after
    /// it was built.
    #[schemars(with = "String")]
    pub ready_at: jiff::Timestamp,
    /// How long is left, for people (`2d 3h`).
    pub left: String,
}

impl Waiting {
    /// None: old enough at `now`.
    pub fn gate(
        min_age: std::time::Duration,
        first_seen: jiff::Timestamp,
        created: Option<jiff::Timestamp>,
        now: jiff::Timestamp,
    ) -> Option<Waiting> {
        let age = jiff::SignedDuration::try_from(min_age).ok()?;
        let since = created.map_or(first_seen, |c| c.max(first_seen));
        let ready_at = since.checked_add(age).ok()?;
        (ready_at > now).then(|| Waiting {
            min_age: roughly(age),
            first_seen,
            ready_at,
            left: roughly(ready_at.duration_since(now)),
        })
    }

    pub fn describe(&self, service: &str) -> String {
        format!("{service}: the new image waits for min_age {} ({} left)", self.min_age, self.left)
    }
}

/// The two largest units: `2d 3h`, `5h 10m`, `40s`.
fn roughly(d: jiff::SignedDuration) -> String {
    let mut secs = d.as_secs().max(0);
    let mut parts = Vec::new();
    for (size, unit) in [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")] {
        let count = secs / size;
        secs %= size;
        if count > 0 {
            parts.push(format!("{count}{unit}"));
        }
        if !parts.is_empty() && (parts.len() == 2 || unit != "d" && count == 0) {
            break;
        }
    }
    if parts.is_empty() { "0s".into() } else { parts.join(" ") }
}

/// The OCI labels of an image's config (`org.opencontainers.image.*`),
/// read from the registry without pulling.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ImageInfo {
    pub version: Option<String>,
    pub revision: Option<String>,
    pub source: Option<String>,
    /// The GitHub release of `version`, when `source` is a GitHub
    /// repository.
    pub release_notes: Option<String>,
}

impl ImageInfo {
    pub fn is_empty(&self) -> bool {
        self.version.is_none() && self.revision.is_none() && self.source.is_none()
    }

    /// `version 1.4.3, revision abc1234, source https://...`
    pub fn describe(&self) -> String {
        let revision = self.revision.as_deref().map(|r| r.get(..12).unwrap_or(r));
        let parts: Vec<String> =
            [("version", self.version.as_deref()), ("revision", revision), ("source", self.source.as_deref())]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
                .chain(self.release_notes.as_ref().map(|n| format!("release notes {n}")))
                .collect();
        parts.join(", ")
    }
}

/// The commits a git stack's plan brings, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CommitLog {
    /// How many commits there are in all (more than `commits` when capped).
    pub total: usize,
    pub commits: Vec<CommitInfo>,
    /// The forge's compare view, when the remote is GitHub, GitLab or Gitea.
    pub compare_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CommitInfo {
    /// The short id.
    pub id: String,
    pub subject: String,
    pub author: String,
    pub url: Option<String>,
}

impl CommitLog {
    /// `3 new commits (compare: URL)`, one line per commit, `and N more`.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "{} new {}{}",
            self.total,
            if self.total == 1 { "commit" } else { "commits" },
            self.compare_url.as_ref().map(|u| format!(" (compare: {u})")).unwrap_or_default()
        )];
        out.extend(self.commits.iter().map(|c| format!("  {} {} ({})", c.id, c.subject, c.author)));
        if self.total > self.commits.len() {
            out.push(format!("  and {} more", self.total - self.commits.len()));
        }
        out
    }
}

impl Change {
    /// A change of `kind` to `service`, running `image` afterwards, with
    /// nothing else said yet.
    pub fn new(service: &str, kind: ChangeKind, image: Option<String>) -> Change {
        Change {
            service: service.to_string(),
            kind,
            image,
            from: None,
            to: None,
            pull: false,
            build: false,
            force: false,
            restore_image: None,
            renamed_to: None,
            reasons: Vec::new(),
            new_image: None,
            tag_update: None,
            waiting: None,
        }
    }

    /// `image web (version 1.4.3, source ...)`, as a message says it.
    pub fn describe(&self) -> String {
        let what = serde_json::to_value(self.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        match self.new_image.as_ref().filter(|i| !i.is_empty()) {
            Some(info) => format!("{what} {} ({})", self.service, info.describe()),
            None => format!("{what} {}", self.service),
        }
    }

    /// A running service built again and recreated; `image` is the name
    /// it is built under.
    pub fn rebuild(service: &str, image: String, reasons: Vec<String>) -> Change {
        Change { build: true, force: true, reasons, ..Change::new(service, ChangeKind::Rebuild, Some(image)) }
    }

    /// A change that also builds its image first. The image's name is
    /// known so that a rollback can put the old image back under it.
    pub fn build_too(&mut self, image: String) {
        self.build = true;
        self.image.get_or_insert(image);
    }

    pub fn is_structural(&self) -> bool {
        !matches!(self.kind, ChangeKind::Image | ChangeKind::Rebuild)
    }

    /// Whether it comes from the new files (or commit) and cannot be made
    /// without them: all but a registry's new digest and a rollback's
    /// restored image. A tag changed in git is one.
    pub fn needs_files(&self) -> bool {
        self.is_structural() || self.build || (self.restore_image.is_none() && !self.is_digest_update())
    }

    /// Same reference, new digest: the tag moves, and moves back on
    /// rollback.
    pub fn is_digest_update(&self) -> bool {
        self.kind == ChangeKind::Image
            && self.restore_image.is_none()
            && self.to.as_deref().is_some_and(|t| t.starts_with("sha256:"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    UpToDate,
    UpdateAvailable,
    /// `image: name@sha256:...` never changes by itself.
    Pinned,
    /// Built locally (compose `build:` or never pulled): no registry has it.
    LocalBuild,
    RegistryError,
    /// Stopped on purpose, or a finished one-shot job: left alone.
    Stopped,
    /// In the compose file but not created.
    NotCreated,
    /// `skip: true` in the configuration.
    Skipped,
}

impl ServiceState {
    pub fn describe(self) -> &'static str {
        match self {
            ServiceState::UpToDate => "up to date",
            ServiceState::UpdateAvailable => "update available",
            ServiceState::Pinned => "pinned by digest",
            ServiceState::LocalBuild => "local build, not in any registry",
            ServiceState::RegistryError => "registry error",
            ServiceState::Stopped => "stopped, left alone",
            ServiceState::NotCreated => "not created",
            ServiceState::Skipped => "skipped by configuration",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServiceReport {
    pub service: String,
    pub image: Option<String>,
    pub running_digest: Option<String>,
    /// For a mutable tag (`autonomy-latest`): the fixed tag of the same
    /// family that names the running digest (`autonomy-3f2c1a9b0d4e`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_tag: Option<String>,
    pub available_digest: Option<String>,
    pub state: ServiceState,
    /// The registry's error, when `state` is `registry_error`.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Plan {
    pub stack: String,
    pub project: String,
    pub kind: PlanKind,
    /// The commit this plan deploys, and the one deployed now (git stacks).
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub deployed_commit: Option<String>,
    /// The commits from `deployed_commit` to `commit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commits: Option<CommitLog>,
    /// Newer version tags the services follow. A directory stack's are
    /// among `changes` too (clusterup edits its `image:` line); a git
    /// stack's are for a person to commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag_updates: Vec<TagUpdate>,
    /// In the order they will be applied: dependencies first, removals
    /// last.
    pub changes: Vec<Change>,
    pub services: Vec<ServiceReport>,
    #[serde(default)]
    pub diff: ModelDiff,
    /// Changes that could lose data; never applied by `apply --auto`.
    #[serde(default)]
    pub data_risks: Vec<String>,
    /// Why `apply --auto` would not apply this plan (empty: it would).
    #[serde(default)]
    pub needs_approval: Vec<String>,
}

impl Plan {
    #[cfg(test)]
    pub fn empty(stack: &str) -> Plan {
        Plan {
            stack: stack.into(),
            project: stack.into(),
            kind: PlanKind::None,
            commit: None,
            deployed_commit: None,
            commits: None,
            tag_updates: vec![],
            changes: vec![],
            services: vec![],
            diff: ModelDiff::default(),
            data_risks: vec![],
            needs_approval: vec![],
        }
    }

    /// Stays on the deployed files (commit): every change that needs the
    /// new ones waits with them.
    pub fn keep_deployed_files(&mut self) {
        self.changes.retain(|c| !c.needs_files());
        self.commit = self.deployed_commit.clone();
        self.commits = None;
    }

    /// Whether applying the plan checks out another commit.
    pub fn moves_commit(&self) -> bool {
        self.commit.is_some() && self.commit != self.deployed_commit
    }

    pub fn registry_errors(&self) -> impl Iterator<Item = &ServiceReport> {
        self.services.iter().filter(|s| s.state == ServiceState::RegistryError)
    }
}

/// What the new model is compared with.
pub enum Baseline<'a> {
    /// A directory stack: the files are taken to be what runs, except for
    /// services whose container carries another Compose config hash than
    /// the files give (`hashes`: service → hash from `docker compose config
    /// --hash`), and services running that the files no longer define
    /// under any profile (`gone`).
    Running { hashes: &'a BTreeMap<String, String>, gone: &'a BTreeSet<String> },
    /// A git stack: the model of the deployed commit.
    Deployed(&'a ComposeModel),
    /// A git stack clusterup has not deployed yet.
    Nothing,
}

pub struct Inputs<'a> {
    pub stack: &'a str,
    pub new: &'a ComposeModel,
    pub baseline: Baseline<'a>,
    pub observation: &'a Observation,
    pub skip: &'a BTreeSet<String>,
    pub remote: &'a BTreeMap<String, Result<String, String>>,
    pub policy: Policy,
    pub commit: Option<String>,
    pub deployed_commit: Option<String>,
    /// Files the new commit changed (git stacks), as deployed paths.
    pub changed_files: &'a [std::path::PathBuf],
    /// Submodules the new commit moved (as deployed paths), and how.
    pub moved_submodules: &'a [(PathBuf, String)],
    /// The ignore files of build contexts that have one, by path.
    pub dockerignore: &'a BTreeMap<PathBuf, String>,
    /// A rollback: the image id each service must run (instead of asking
    /// registries).
    pub target_images: Option<&'a BTreeMap<String, String>>,
}

/// What can be said of a service before asking any registry.
enum Precheck {
    Final(ServiceState),
    /// `running`: the digest the container runs under this reference;
    /// None when it runs an image from another repository (the reference
    /// was changed in the files).
    AskRegistry {
        reference: String,
        running: Option<String>,
    },
}

fn precheck(svc: &ComposeService, observed: Option<&ServiceObservation>, skip: bool) -> Precheck {
    let Some(image) = svc.image.as_deref() else {
        return Precheck::Final(ServiceState::LocalBuild);
    };
    if skip {
        return Precheck::Final(ServiceState::Skipped);
    }
    let reference = Reference::parse(image);
    if reference.is_pinned() {
        return Precheck::Final(ServiceState::Pinned);
    }
    let Some(observed) = observed.filter(|o| !o.containers.is_empty()) else {
        return Precheck::Final(ServiceState::NotCreated);
    };
    if !has_running(observed) {
        return Precheck::Final(ServiceState::Stopped);
    }
    if svc.build {
        return Precheck::Final(ServiceState::LocalBuild);
    }
    let (repo_digests, repo_tags) =
        observed.image.as_ref().map(|i| (i.repo_digests.as_slice(), i.repo_tags.as_slice())).unwrap_or_default();
    if let Some(digest) = repo_digests.iter().find_map(|d| reference.digest_in(d)) {
        return Precheck::AskRegistry { reference: image.to_string(), running: Some(digest.to_string()) };
    }
    // An image that never came from (or went to) this repository, and
    // carries this name here, was built or loaded here: replacing it with
    // the registry's would lose it. One that came from another repository
    // and is not known by this name runs because the files named another
    // image before: the new reference is the registry's to answer.
    let named_here = repo_tags.iter().any(|t| Reference::parse(t) == reference);
    if repo_digests.is_empty() || named_here {
        return Precheck::Final(ServiceState::LocalBuild);
    }
    Precheck::AskRegistry { reference: image.to_string(), running: None }
}

/// The references whose registry digest the plan needs, each once.
pub fn registry_lookups(model: &ComposeModel, observation: &Observation, skip: &BTreeSet<String>) -> Vec<String> {
    let mut refs = BTreeSet::new();
    for (name, svc) in &model.services {
        if let Precheck::AskRegistry { reference, .. } =
            precheck(svc, observation.services.get(name), skip.contains(name))
        {
            refs.insert(reference);
        }
    }
    refs.into_iter().collect()
}

pub fn classify(inputs: &Inputs) -> Plan {
    let (services, changes) = image_states(inputs);
    let mut plan = Builder { inputs, changes, removals: Vec::new(), data_risks: Vec::new() };
    let (old, model_diff) = match &inputs.baseline {
        Baseline::Running { hashes, gone } => {
            plan.against_running(hashes, gone);
            (None, ModelDiff::default())
        }
        Baseline::Nothing => {
            plan.first_deploy();
            (None, ModelDiff::default())
        }
        Baseline::Deployed(old) => {
            let model_diff = diff::diff(old, inputs.new);
            plan.against_deployed(old, &model_diff);
            (Some(*old), model_diff)
        }
    };
    plan.add_dependants();
    let data_risks = std::mem::take(&mut plan.data_risks);
    let mut ordered = plan.ordered(old);
    if let Some(target) = inputs.target_images {
        for c in ordered.iter_mut().filter(|c| matches!(c.kind, ChangeKind::Create | ChangeKind::Recreate)) {
            c.restore_image = target.get(&c.service).cloned();
            c.pull &= c.restore_image.is_none();
        }
    }
    let needs_approval = approvals(&ordered, inputs.policy, &data_risks).into_iter().map(Approval::describe).collect();
    Plan {
        stack: inputs.stack.to_string(),
        project: inputs.new.project.clone(),
        kind: kind_of(&ordered),
        commit: inputs.commit.clone(),
        deployed_commit: inputs.deployed_commit.clone(),
        commits: None,
        tag_updates: Vec::new(),
        changes: ordered,
        services,
        diff: model_diff,
        data_risks,
        needs_approval,
    }
}

/// Why `apply --auto` would hold a plan back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    Images,
    Structural,
    Rebuild,
    DataAtRisk,
}

impl Approval {
    pub fn describe(self) -> String {
        match self {
            Approval::Images => "image updates need approval (auto.images is false)",
            Approval::Structural => "structural changes need approval (auto.structural is false)",
            Approval::Rebuild => "rebuilds need approval (auto.rebuild is false)",
            Approval::DataAtRisk => {
                "data at risk: never applied by --auto; run `clusterup apply` and confirm, or pass --accept-data-risk"
            }
        }
        .to_string()
    }
}

fn approvals(changes: &[Change], policy: Policy, data_risks: &[String]) -> Vec<Approval> {
    let images = changes.iter().any(|c| c.kind == ChangeKind::Image);
    let structural = changes.iter().any(Change::is_structural);
    let mut out = Vec::new();
    if images && !policy.images {
        out.push(Approval::Images);
    }
    if structural && !policy.structural {
        out.push(Approval::Structural);
    }
    if changes.iter().any(|c| c.kind == ChangeKind::Rebuild) && !policy.rebuild {
        out.push(Approval::Rebuild);
    }
    if !data_risks.is_empty() {
        out.push(Approval::DataAtRisk);
    }
    out
}

/// A plan being made: the changes per service so far, the removals, and
/// what puts data at risk.
struct Builder<'a> {
    inputs: &'a Inputs<'a>,
    changes: BTreeMap<String, Change>,
    removals: Vec<Change>,
    data_risks: Vec<String>,
}

impl Builder<'_> {
    fn running(&self, name: &str) -> bool {
        self.inputs.observation.services.get(name).is_some_and(has_running)
    }

    /// Recreates a running, not skipped service, for `reason`; an image
    /// update of it becomes a recreate that keeps the new digest.
    fn recreate(&mut self, name: &str, reason: String, force: bool) {
        if self.inputs.skip.contains(name) || !self.running(name) {
            return;
        }
        let svc = &self.inputs.new.services[name];
        let entry = self
            .changes
            .entry(name.to_string())
            .or_insert_with(|| Change::new(name, ChangeKind::Recreate, svc.image.clone()));
        if entry.kind == ChangeKind::Image {
            entry.reasons.push(format!("new digest {}", entry.to.as_deref().unwrap_or("?")));
            entry.kind = ChangeKind::Recreate;
        }
        entry.reasons.push(reason);
        entry.force |= force;
    }

    /// A directory stack: drifted config hashes, services with no
    /// container (created), services gone from the files (removed).
    fn against_running(&mut self, hashes: &BTreeMap<String, String>, gone: &BTreeSet<String>) {
        let Inputs { new, observation, skip, .. } = self.inputs;
        for (name, hash) in hashes {
            let differs = observation
                .services
                .get(name)
                .is_some_and(|o| o.containers.iter().any(|c| c.config_hash.as_deref().is_some_and(|h| h != hash)));
            if differs && new.services.contains_key(name) {
                self.recreate(name, "configuration differs from the running container".to_string(), false);
            }
        }
        // A service in the files with no container at all (added by hand)
        // is created, as `docker compose up -d` would; one that was
        // stopped keeps its container and stays stopped.
        for (name, svc) in &new.services {
            if !observation.services.contains_key(name) && !skip.contains(name) {
                let why = "in the compose files, with no container".to_string();
                self.changes.insert(name.clone(), create(name, svc, observation, Some(why)));
            }
        }
        // Removed from the files by hand: its containers go, as
        // `up --remove-orphans` would, its volumes stay.
        let gone: Vec<&String> = gone.iter().filter(|n| !skip.contains(*n) && self.running(n)).collect();
        for name in gone {
            let observed = &observation.services[name];
            let anonymous: BTreeSet<String> = observed.containers.iter().flat_map(|c| c.anonymous_volumes()).collect();
            self.data_risks.extend(anonymous_risk(name, &anonymous.into_iter().collect::<Vec<_>>()));
            let image = observed.image.as_ref().and_then(|i| i.repo_tags.first().cloned());
            let why = "no longer in the compose files".to_string();
            self.removals.push(remove(name, &ComposeService { image, ..Default::default() }, Some(why)));
        }
    }

    /// A git stack clusterup has not deployed yet.
    fn first_deploy(&mut self) {
        let Inputs { new, observation, skip, .. } = self.inputs;
        for name in new.services.keys() {
            if observation.services.contains_key(name) {
                let why = "first deploy from git (Compose recreates it only if its configuration differs)";
                self.recreate(name, why.to_string(), false);
            } else if !skip.contains(name) {
                self.changes.insert(name.clone(), create(name, &new.services[name], observation, None));
            }
        }
    }

    /// A git stack: what the new commit changes against the deployed one.
    fn against_deployed(&mut self, old: &ComposeModel, model_diff: &ModelDiff) {
        for d in &model_diff.services {
            self.service_diff(old, d);
        }
        // Compose's hash does not see file contents: a changed
        // bind-mounted file, config or secret redeploys its services
        // (a submodule that moved, when its files are unknown, counts
        // for every file in it).
        let Inputs { new, changed_files, .. } = self.inputs;
        for (name, svc) in &new.services {
            let touched = diff::file_inputs(svc, new)
                .into_iter()
                .find(|input| changed_files.iter().any(|f| f.starts_with(input) || input.starts_with(f)));
            if let Some(file) = touched {
                self.recreate(name, format!("{} changed", file.display()), true);
            }
        }
        self.rebuilds(old);
        for t in &model_diff.top_level {
            self.top_level(old, model_diff, t);
        }
    }

    /// Built services whose sources the commit changed (or whose build
    /// section it did): built before anything is touched, then recreated.
    /// One that changes in other ways too stays a structural change.
    fn rebuilds(&mut self, old: &ComposeModel) {
        let Inputs { new, changed_files, skip, dockerignore, moved_submodules, .. } = self.inputs;
        for (name, svc) in new.services.iter().filter(|(name, svc)| svc.build && !skip.contains(*name)) {
            let inputs = diff::build_inputs(svc);
            let ignore_files = inputs.ignore_files();
            let ignore = ignore_files.iter().find_map(|f| dockerignore.get(f)).map(|t| Ignore::parse(t));
            // What the builder never sees does not count; the Dockerfile
            // and the ignore files themselves always do.
            let unseen = |f: &PathBuf| {
                let relative = inputs.context.as_ref().and_then(|c| f.strip_prefix(c).ok());
                Some(f) != inputs.dockerfile.as_ref()
                    && !ignore_files.contains(f)
                    && relative.is_some_and(|r| ignore.as_ref().is_some_and(|i| i.ignores(r)))
            };
            let input = |f: &PathBuf| inputs.all().any(|i| f.starts_with(i)) || ignore_files.contains(f);
            // A modified file is its delta's old and new path.
            let causes: BTreeSet<&PathBuf> = changed_files.iter().filter(|f| input(f) && !unseen(f)).collect();
            let causes: Vec<&PathBuf> = causes.into_iter().collect();
            let build_changed = old.services.get(name).is_some_and(|o| o.raw.get("build") != svc.raw.get("build"));
            if causes.is_empty() && !build_changed {
                continue;
            }
            let image = new.image_of(name, svc);
            if let Some(change) = self.changes.get_mut(name) {
                change.build_too(image);
                continue;
            }
            if !self.running(name) {
                continue;
            }
            let reasons = std::iter::once(changed_paths(&causes, inputs.context.as_ref()))
                .chain(
                    moved_submodules
                        .iter()
                        .filter(|(sub, _)| causes.iter().any(|c| c.starts_with(sub)))
                        .map(|(sub, range)| format!("submodule {} moved {range}", sub.display())),
                )
                .collect();
            self.changes.insert(name.clone(), Change::rebuild(name, image, reasons));
        }
    }

    fn service_diff(&mut self, old: &ComposeModel, d: &ServiceDiff) {
        let Inputs { new, observation, skip, .. } = self.inputs;
        match d {
            ServiceDiff::Added { service } if !skip.contains(service) => {
                self.changes.insert(service.clone(), create(service, &new.services[service], observation, None));
            }
            ServiceDiff::Removed { service } if !skip.contains(service) => {
                self.data_risks.extend(anonymous_risk(service, &diff::anonymous_volumes(&old.services[service])));
                self.removals.push(remove(service, &old.services[service], None));
            }
            ServiceDiff::Renamed { from, to, data } => {
                if !diff::anonymous_volumes(&old.services[from]).is_empty() {
                    self.data_risks.push(format!("renaming service {from} to {to}: {data}"));
                }
                let why = format!("renamed from {from} ({data})");
                self.changes.insert(to.clone(), create(to, &new.services[to], observation, Some(why)));
                let mut removal = remove(from, &old.services[from], Some(format!("renamed to {to}")));
                removal.renamed_to = Some(to.clone());
                self.removals.push(removal);
            }
            ServiceDiff::Changed { service, fields } => self.changed_fields(old, service, fields),
            _ => {}
        }
    }

    fn changed_fields(&mut self, old: &ComposeModel, service: &str, fields: &[diff::FieldChange]) {
        let Inputs { new, skip, .. } = self.inputs;
        let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        let (old_ref, new_ref) = (&old.services[service].image, &new.services[service].image);
        if names == ["image"] && !new.services[service].build && !skip.contains(service) && self.running(service) {
            // Only the reference moved (a new tag): an image update, under
            // the image policy.
            let why =
                format!("image {} -> {}", old_ref.as_deref().unwrap_or("none"), new_ref.as_deref().unwrap_or("none"));
            let change = Change {
                from: old_ref.clone(),
                to: new_ref.clone(),
                pull: true,
                reasons: vec![why],
                ..Change::new(service, ChangeKind::Image, new_ref.clone())
            };
            self.changes.insert(service.to_string(), change);
            return;
        }
        self.recreate(service, format!("changed: {}", names.join(", ")), false);
        if names.contains(&"image")
            && let Some(c) = self.changes.get_mut(service)
        {
            c.from = old_ref.clone();
            c.to = new_ref.clone();
            c.pull = !new.services[service].build;
        }
    }

    /// A network, volume, config or secret that changed: its users are
    /// recreated; a volume's change may put data at risk.
    fn top_level(&mut self, old: &ComposeModel, model_diff: &ModelDiff, t: &diff::TopLevelChange) {
        if t.section == "volumes" {
            self.volume_risk(old, model_diff, t);
        }
        if t.change == Presence::Added {
            return;
        }
        let new = self.inputs.new;
        for (name, svc) in &new.services {
            let uses = match t.section.as_str() {
                "networks" => diff::networks(svc).contains(&t.name),
                "volumes" => diff::named_volumes(svc).contains(&t.name),
                section => diff::sources(svc, section).contains(&t.name),
            };
            if uses {
                self.recreate(name, format!("uses {} {}, which changed", singular(&t.section), t.name), false);
            }
        }
    }

    fn volume_risk(&mut self, old: &ComposeModel, model_diff: &ModelDiff, t: &diff::TopLevelChange) {
        let new = self.inputs.new;
        match t.change {
            // Compose drops unused volumes from its model: only a service
            // that stays but stops mounting it loses data.
            Presence::Removed => {
                let kept: Vec<&String> = old
                    .services
                    .iter()
                    .filter(|(_, s)| diff::named_volumes(s).contains(&t.name))
                    .map(|(n, _)| renamed_to(model_diff, n).unwrap_or(n))
                    .filter(|n| new.services.contains_key(*n))
                    .collect();
                if let Some(service) = kept.first() {
                    self.data_risks.push(format!(
                        "named volume {} is removed from the compose files while service {service} stays: \
                         its data stays in the volume, but the service no longer sees it",
                        t.name
                    ));
                }
            }
            Presence::Changed => self.data_risks.push(format!(
                "named volume {}'s driver or options changed: Compose would recreate it and its data would be lost",
                t.name
            )),
            Presence::Added => {}
        }
    }

    /// A container joined to another's network namespace or volumes loses
    /// them when that one is recreated: recreate it too, after.
    fn add_dependants(&mut self) {
        loop {
            let recreated: BTreeSet<String> = self.changes.keys().cloned().collect();
            let dependants: Vec<(String, String)> = self
                .inputs
                .new
                .services
                .iter()
                .filter(|(name, _)| !recreated.contains(*name))
                .flat_map(|(name, svc)| {
                    diff::attached_to(svc).into_iter().filter(|t| recreated.contains(t)).map(move |t| (name.clone(), t))
                })
                .collect();
            let before = self.changes.len();
            for (name, target) in dependants {
                self.recreate(&name, format!("shares the network or volumes of {target}"), true);
            }
            if self.changes.len() == before {
                break;
            }
        }
    }

    /// Dependencies first, removals last (in reverse dependency order),
    /// except that a renamed service's old one goes just before its new
    /// one comes: it may hold a fixed port or container name.
    fn ordered(mut self, old: Option<&ComposeModel>) -> Vec<Change> {
        let mut ordered: Vec<Change> =
            dependency_order(self.inputs.new).into_iter().filter_map(|n| self.changes.remove(&n)).collect();
        if let Some(old) = old {
            let order = dependency_order(old);
            self.removals.sort_by_key(|c| std::cmp::Reverse(order.iter().position(|n| *n == c.service)));
        }
        for removal in self.removals {
            match removal.renamed_to.as_ref().and_then(|to| ordered.iter().position(|c| &c.service == to)) {
                Some(i) => ordered.insert(i, removal),
                None => ordered.push(removal),
            }
        }
        ordered
    }
}

/// The part of `plan` that `apply --auto` may apply under `policy`, and
/// why the rest was held back. Structural changes held back keep the
/// deployed files (and commit) too.
pub fn unattended(plan: &Plan, policy: Policy, accept_data_risk: bool) -> (Plan, Vec<String>) {
    let structural_ok = policy.structural && (plan.data_risks.is_empty() || accept_data_risk);
    let allowed = |c: &Change| match c.kind {
        ChangeKind::Image => policy.images,
        ChangeKind::Rebuild => policy.rebuild,
        _ => structural_ok,
    };
    // Held-back structural changes keep the deployed files, and with them
    // every change that needs the new ones (a tag changed in git).
    let files_held = plan.changes.iter().any(|c| c.is_structural()) && !structural_ok;
    let mut out = plan.clone();
    out.changes.retain(allowed);
    if files_held {
        out.keep_deployed_files();
    }
    out.kind = kind_of(&out.changes);
    let held_back = if out.changes.len() < plan.changes.len() || out.commit != plan.commit {
        let data_risk = Approval::DataAtRisk.describe();
        plan.needs_approval.iter().filter(|r| !(accept_data_risk && **r == data_risk)).cloned().collect()
    } else {
        Vec::new()
    };
    out.needs_approval = held_back.clone();
    (out, held_back)
}

/// `apply --rebuild`: the `asked` services (every built one when none is
/// named) are built again and recreated, on top of what `plan` does.
pub fn ask_rebuild(
    plan: &mut Plan,
    asked: &[String],
    built: &BTreeMap<String, String>,
    observation: &Observation,
) -> Result<(), String> {
    let names: Vec<&String> = if asked.is_empty() { built.keys().collect() } else { asked.iter().collect() };
    if names.is_empty() {
        return Err("--rebuild: no service has a `build:` section".to_string());
    }
    for name in names {
        let Some(image) = built.get(name) else {
            let known: Vec<&str> = built.keys().map(String::as_str).collect();
            return Err(format!("--rebuild {name}: not a built service (built: {})", known.join(", ")));
        };
        if let Some(change) = plan.changes.iter_mut().find(|c| &c.service == name) {
            change.build_too(image.clone());
            continue;
        }
        if !observation.services.get(name).is_some_and(has_running) {
            return Err(format!(
                "--rebuild {name}: it is not running; start it first (clusterup never starts a stopped service)"
            ));
        }
        plan.changes.push(Change::rebuild(name, image.clone(), vec!["asked for (--rebuild)".to_string()]));
    }
    plan.kind = kind_of(&plan.changes);
    Ok(())
}

/// "src/app.py, src/util.py and 3 more changed", relative to the build
/// context where inside it.
fn changed_paths(paths: &[&PathBuf], context: Option<&PathBuf>) -> String {
    const SHOWN: usize = 3;
    let shown: Vec<String> = paths
        .iter()
        .take(SHOWN)
        .map(|p| {
            let inside = context.and_then(|c| p.strip_prefix(c).ok()).filter(|r| !r.as_os_str().is_empty());
            inside.unwrap_or(p).display().to_string()
        })
        .collect();
    match paths.len() {
        0 => "its build section changed".to_string(),
        n if n > SHOWN => format!("{} and {} more changed", shown.join(", "), n - SHOWN),
        _ => format!("{} changed", shown.join(", ")),
    }
}

pub fn kind_of(changes: &[Change]) -> PlanKind {
    // A rebuild goes as an image update does: a new image, same service.
    let images = changes.iter().any(|c| matches!(c.kind, ChangeKind::Image | ChangeKind::Rebuild));
    let structural = changes.iter().any(Change::is_structural);
    match (images, structural) {
        (false, false) => PlanKind::None,
        (true, false) => PlanKind::Image,
        (false, true) => PlanKind::Structural,
        (true, true) => PlanKind::Mixed,
    }
}

/// A rollback compares what runs with the image ids the target revision
/// ran: any difference is put back from the local image kept by tag.
fn restore_states(
    inputs: &Inputs,
    target: &BTreeMap<String, String>,
) -> (Vec<ServiceReport>, BTreeMap<String, Change>) {
    let mut services = Vec::new();
    let mut changed = BTreeMap::new();
    for (name, svc) in &inputs.new.services {
        let running = inputs.observation.services.get(name).and_then(|o| o.containers.iter().find(|c| c.is_running()));
        let mut state = ServiceState::UpToDate;
        if let (Some(c), Some(want), Some(image)) = (running, target.get(name), &svc.image)
            && c.image_id != *want
            && !inputs.skip.contains(name)
        {
            state = ServiceState::UpdateAvailable;
            changed.insert(
                name.clone(),
                Change {
                    from: Some(c.image_id.clone()),
                    to: Some(want.clone()),
                    restore_image: Some(want.clone()),
                    reasons: vec!["the image the target revision ran".to_string()],
                    ..Change::new(name, ChangeKind::Image, Some(image.clone()))
                },
            );
        }
        services.push(ServiceReport {
            service: name.clone(),
            image: svc.image.clone(),
            running_digest: None,
            running_tag: None,
            available_digest: None,
            state,
            detail: None,
        });
    }
    (services, changed)
}

fn anonymous_risk(service: &str, anonymous: &[String]) -> Option<String> {
    (!anonymous.is_empty()).then(|| {
        format!(
            "removing service {service} leaves its anonymous volumes ({}) behind, detached from any container",
            anonymous.join(", ")
        )
    })
}

fn has_running(o: &ServiceObservation) -> bool {
    o.containers.iter().any(|c| c.is_running() || c.state == "restarting")
}

fn renamed_to<'a>(d: &'a ModelDiff, service: &str) -> Option<&'a String> {
    d.services.iter().find_map(|s| match s {
        ServiceDiff::Renamed { from, to, .. } if from == service => Some(to),
        _ => None,
    })
}

fn singular(section: &str) -> &str {
    section.strip_suffix('s').unwrap_or(section)
}

fn create(name: &str, svc: &ComposeService, observation: &Observation, reason: Option<String>) -> Change {
    let local = svc.image.as_ref().is_some_and(|i| observation.local_images.contains(i));
    Change {
        to: svc.image.clone(),
        pull: svc.image.is_some() && !svc.build && !local,
        // Built before any container is touched, from the sources now.
        build: svc.build,
        reasons: reason.into_iter().collect(),
        ..Change::new(name, ChangeKind::Create, svc.image.clone())
    }
}

fn remove(name: &str, svc: &ComposeService, reason: Option<String>) -> Change {
    Change {
        from: svc.image.clone(),
        reasons: reason.into_iter().collect(),
        ..Change::new(name, ChangeKind::Remove, svc.image.clone())
    }
}

/// Per service: its image state (asking the registry's answers), and the
/// image-only changes.
fn image_states(inputs: &Inputs) -> (Vec<ServiceReport>, BTreeMap<String, Change>) {
    if let Some(target) = inputs.target_images {
        return restore_states(inputs, target);
    }
    let mut services = Vec::new();
    let mut changed = BTreeMap::new();
    for (name, svc) in &inputs.new.services {
        let mut report = ServiceReport {
            service: name.clone(),
            image: svc.image.clone(),
            running_digest: None,
            running_tag: None,
            available_digest: None,
            state: ServiceState::UpToDate,
            detail: None,
        };
        match precheck(svc, inputs.observation.services.get(name), inputs.skip.contains(name)) {
            Precheck::Final(state) => report.state = state,
            Precheck::AskRegistry { reference, running } => {
                report.running_digest = running.clone();
                match inputs.remote.get(&reference) {
                    Some(Ok(available)) => {
                        report.available_digest = Some(available.clone());
                        if running.as_ref() == Some(available) {
                            report.state = ServiceState::UpToDate;
                        } else {
                            report.state = ServiceState::UpdateAvailable;
                            changed.insert(
                                name.clone(),
                                Change {
                                    from: running,
                                    to: Some(available.clone()),
                                    pull: true,
                                    ..Change::new(name, ChangeKind::Image, Some(reference))
                                },
                            );
                        }
                    }
                    Some(Err(e)) => {
                        report.state = ServiceState::RegistryError;
                        report.detail = Some(e.clone());
                    }
                    None => {
                        report.state = ServiceState::RegistryError;
                        report.detail = Some("registry was not asked".to_string());
                    }
                }
            }
        }
        services.push(report);
    }
    (services, changed)
}

/// Every service after the services it depends on; ties broken by name so
/// plans are stable. Members of a dependency cycle (Compose refuses those)
/// come last, by name.
pub fn dependency_order(model: &ComposeModel) -> Vec<String> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    loop {
        let ready: Vec<&str> = model
            .services
            .iter()
            .filter(|(name, _)| !done.contains(name.as_str()))
            .filter(|(_, svc)| {
                svc.depends_on.iter().all(|d| done.contains(d.as_str()) || !model.services.contains_key(d))
            })
            .map(|(name, _)| name.as_str())
            .collect();
        if ready.is_empty() {
            break;
        }
        for name in ready {
            done.insert(name);
            order.push(name.to_string());
        }
    }
    order.extend(model.services.keys().filter(|n| !done.contains(n.as_str())).cloned());
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_age_counts_from_first_sight_and_from_the_build() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let w = Waiting::gate(3 * day, t("2026-12-01T00:00:00Z"), None, t("2026-12-02T21:00:00Z")).unwrap();
        assert_eq!((w.min_age.as_str(), w.left.as_str()), ("3d", "1d 3h"));
        assert!(Waiting::gate(3 * day, t("2026-12-01T00:00:00Z"), None, t("2026-12-04T00:00:00Z")).is_none());
        let built_later =
            Waiting::gate(day, t("2026-12-01T00:00:00Z"), Some(t("2026-12-03T00:00:00Z")), t("2026-12-03T12:00:00Z"));
        assert_eq!(built_later.unwrap().left, "12h", "not before the build plus the age");
    }
    use crate::seams::engine::{ContainerInfo, ImageInfo};

    const REPO: &str = "127.0.0.1:5000/t/web";

    fn service(image: Option<&str>, depends_on: &[&str]) -> ComposeService {
        ComposeService {
            image: image.map(String::from),
            build: false,
            depends_on: depends_on.iter().map(|s| s.to_string()).collect(),
            raw: serde_json::json!({"image": image, "depends_on": depends_on}),
        }
    }

    /// A plan for a directory stack with nothing but image changes.
    fn image_plan(
        model: &ComposeModel,
        observation: &Observation,
        skip: &BTreeSet<String>,
        remote: &BTreeMap<String, Result<String, String>>,
    ) -> Plan {
        classify(&Inputs {
            stack: "s",
            new: model,
            baseline: Baseline::Running { hashes: &BTreeMap::new(), gone: &BTreeSet::new() },
            observation,
            skip,
            remote,
            policy: Policy::default(),
            commit: None,
            deployed_commit: None,
            changed_files: &[],
            dockerignore: &BTreeMap::new(),
            moved_submodules: &[],
            target_images: None,
        })
    }

    fn running(state: &str, repo_digests: &[&str]) -> ServiceObservation {
        ServiceObservation {
            containers: vec![ContainerInfo {
                id: "c1".into(),
                name: "p-web-1".into(),
                service: "web".into(),
                state: state.into(),
                health: None,
                restart_count: 0,
                image_id: "sha256:img".into(),
                config_hash: None,
                started_at: None,
                mounts: vec![],
                labels: Default::default(),
            }],
            image: Some(ImageInfo {
                id: "sha256:img".into(),
                repo_digests: repo_digests.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
        }
    }

    fn tagged(mut observed: ServiceObservation, tag: &str) -> ServiceObservation {
        if let Some(image) = observed.image.as_mut() {
            image.repo_tags.push(tag.to_string());
        }
        observed
    }

    #[test]
    fn service_states() {
        let image = format!("{REPO}:latest");
        let img = Some(image.as_str());
        let digest_a = format!("{REPO}@sha256:aaa");
        // name, service, observed, skipped, registry answer, state, changes?
        #[rustfmt::skip]
        let cases = vec![
            ("same digest", service(img, &[]), Some(running("running", &[&digest_a])), false, Some(Ok("sha256:aaa")), ServiceState::UpToDate, false,),
            ("new digest", service(img, &[]), Some(running("running", &[&digest_a])), false, Some(Ok("sha256:bbb")), ServiceState::UpdateAvailable, true,),
            ("pinned", service(Some("r/x@sha256:abc"), &[]), Some(running("running", &[&digest_a])), false, None, ServiceState::Pinned, false,),
            ("never pulled", service(img, &[]), Some(running("running", &[])), false, Some(Ok("sha256:bbb")), ServiceState::LocalBuild, false,),
            ("compose build", ComposeService { build: true, ..service(img, &[]) }, Some(running("running", &[&digest_a])), false, Some(Ok("sha256:bbb")), ServiceState::LocalBuild, false,),
            ("no image at all", service(None, &[]), Some(running("running", &[])), false, None, ServiceState::LocalBuild, false),
            ("stopped on purpose", service(img, &[]), Some(running("exited", &[&digest_a])), false, Some(Ok("sha256:bbb")), ServiceState::Stopped, false,),
            ("skipped", service(img, &[]), Some(running("running", &[&digest_a])), true, Some(Ok("sha256:bbb")), ServiceState::Skipped, false,),
            ("registry down", service(img, &[]), Some(running("running", &[&digest_a])), false, Some(Err("registry 127.0.0.1:5000: refused")), ServiceState::RegistryError, false,),
            ("another repository, the reference changed, registry down", service(img, &[]), Some(running("running", &["other/web@sha256:aaa"])), false, Some(Err("registry 127.0.0.1:5000: refused")), ServiceState::RegistryError, false,),
            ("another repository, the reference changed", service(img, &[]), Some(running("running", &["other/web@sha256:aaa"])), false, Some(Ok("sha256:bbb")), ServiceState::UpdateAvailable, true,),
            ("another repository, tagged here under this name", service(img, &[]), Some(tagged(running("running", &["other/web@sha256:aaa"]), &image)), false, None, ServiceState::LocalBuild, false,),
        ];
        for (name, svc, observed, skipped, answer, want, want_change) in cases {
            let model = ComposeModel {
                project: "p".into(),
                services: BTreeMap::from([("web".to_string(), svc)]),
                ..Default::default()
            };
            let observation = Observation {
                services: observed.into_iter().map(|o| ("web".to_string(), o)).collect(),
                ..Default::default()
            };
            let skip = if skipped { BTreeSet::from(["web".to_string()]) } else { BTreeSet::new() };
            let lookups = registry_lookups(&model, &observation, &skip);
            let remote: BTreeMap<String, Result<String, String>> = lookups
                .iter()
                .map(|r| {
                    (
                        r.clone(),
                        answer.expect("asked the registry unexpectedly").map(String::from).map_err(String::from),
                    )
                })
                .collect();
            let plan = image_plan(&model, &observation, &skip, &remote);
            assert_eq!(plan.services[0].state, want, "{}", name);
            assert_eq!(plan.changes.len(), usize::from(want_change), "{}", name);
            assert_eq!(plan.kind, if want_change { PlanKind::Image } else { PlanKind::None }, "{}", name);
            if want == ServiceState::RegistryError {
                assert!(plan.services[0].detail.as_deref().unwrap().contains("127.0.0.1:5000"));
            }
        }
    }

    /// Issue 14 (part): in a directory stack a service added to the files
    /// is created, under the structural policy; a stopped one is left.
    #[test]
    fn a_service_with_no_container_is_created_in_a_directory_stack() {
        let img = Some("127.0.0.1:5000/t/web:latest");
        let model = ComposeModel {
            project: "p".into(),
            services: BTreeMap::from([
                ("web".to_string(), service(img, &[])),
                ("added".to_string(), service(img, &["web"])),
                ("stopped".to_string(), service(img, &[])),
            ]),
            ..Default::default()
        };
        let observation = Observation {
            services: BTreeMap::from([
                ("web".to_string(), running("running", &["127.0.0.1:5000/t/web@sha256:aaa"])),
                ("stopped".to_string(), running("exited", &["127.0.0.1:5000/t/web@sha256:aaa"])),
            ]),
            ..Default::default()
        };
        let remote = BTreeMap::from([("127.0.0.1:5000/t/web:latest".to_string(), Ok("sha256:aaa".to_string()))]);
        let plan = image_plan(&model, &observation, &BTreeSet::new(), &remote);
        assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
        assert_eq!((plan.changes[0].service.as_str(), plan.changes[0].kind), ("added", ChangeKind::Create));
        assert!(plan.changes[0].pull, "an image not here is pulled first");
        assert_eq!(plan.kind, PlanKind::Structural);
        assert!(plan.needs_approval.iter().any(|r| r.contains("structural")), "{:?}", plan.needs_approval);
        let skipped = image_plan(&model, &observation, &BTreeSet::from(["added".to_string()]), &remote);
        assert!(skipped.changes.is_empty(), "a skipped service is never created");
    }

    #[test]
    fn changes_come_in_dependency_order_through_unchanged_services() {
        let img = Some("127.0.0.1:5000/t/web:latest");
        let model = ComposeModel {
            project: "p".into(),
            services: BTreeMap::from([
                ("a-front".to_string(), service(img, &["m-api"])),
                ("m-api".to_string(), service(Some("other:1"), &["z-db"])),
                ("z-db".to_string(), service(img, &[])),
            ]),
            ..Default::default()
        };
        let obs = running("running", &["127.0.0.1:5000/t/web@sha256:aaa", "other@sha256:ooo"]);
        let observation = Observation {
            services: ["a-front", "m-api", "z-db"].iter().map(|s| (s.to_string(), obs.clone())).collect(),
            ..Default::default()
        };
        let remote = BTreeMap::from([
            ("127.0.0.1:5000/t/web:latest".to_string(), Ok("sha256:bbb".to_string())),
            ("other:1".to_string(), Ok("sha256:ooo".to_string())),
        ]);
        let plan = image_plan(&model, &observation, &BTreeSet::new(), &remote);
        let order: Vec<&str> = plan.changes.iter().map(|c| c.service.as_str()).collect();
        assert_eq!(order, ["z-db", "a-front"]);
    }

    #[test]
    fn cycles_do_not_lose_services() {
        let model = ComposeModel {
            project: "p".into(),
            services: BTreeMap::from([
                ("a".to_string(), service(None, &["b"])),
                ("b".to_string(), service(None, &["a"])),
                ("c".to_string(), service(None, &["gone"])),
            ]),
            ..Default::default()
        };
        assert_eq!(dependency_order(&model), ["c", "a", "b"]);
    }

    fn json_model(services: serde_json::Value, top: serde_json::Value) -> ComposeModel {
        let mut json = top;
        json["name"] = "p".into();
        json["services"] = services;
        ComposeModel::from_json(&json).unwrap()
    }

    fn up(names: &[&str]) -> Observation {
        Observation {
            services: names.iter().map(|n| (n.to_string(), running("running", &[]))).collect(),
            ..Default::default()
        }
    }

    fn structural(old: &ComposeModel, new: &ComposeModel, observation: &Observation, policy: Policy) -> Plan {
        classify(&Inputs {
            stack: "s",
            new,
            baseline: Baseline::Deployed(old),
            observation,
            skip: &BTreeSet::new(),
            remote: &BTreeMap::new(),
            policy,
            commit: Some("new".into()),
            deployed_commit: Some("old".into()),
            changed_files: &[],
            dockerignore: &BTreeMap::new(),
            moved_submodules: &[],
            target_images: None,
        })
    }

    fn steps(plan: &Plan) -> Vec<(ChangeKind, &str)> {
        plan.changes.iter().map(|c| (c.kind, c.service.as_str())).collect()
    }

    use serde_json::json;

    #[test]
    fn structural_plan_orders_creates_recreates_then_removals() {
        let old = json_model(
            json!({"web": {"build": {}, "environment": {"A": "1"}, "depends_on": {"api": {}}}, "api": {"build": {}}, "old": {"build": {}}}),
            json!({}),
        );
        let new = json_model(
            json!({"web": {"build": {}, "environment": {"A": "2"}, "depends_on": {"api": {}}}, "api": {"build": {}}, "cache": {"image": "redis"}}),
            json!({}),
        );
        let plan = structural(&old, &new, &up(&["web", "api", "old"]), Policy::default());
        assert_eq!(
            steps(&plan),
            [(ChangeKind::Create, "cache"), (ChangeKind::Recreate, "web"), (ChangeKind::Remove, "old")]
        );
        assert_eq!(plan.kind, PlanKind::Structural);
        assert!(plan.changes[1].reasons[0].contains("environment"));
        assert_eq!(plan.needs_approval.len(), 1, "default policy: structural needs approval");
        assert!(plan.data_risks.is_empty());
        let (auto, held) = unattended(&plan, Policy::default(), false);
        assert!(auto.changes.is_empty() && !held.is_empty());
        assert_eq!(auto.commit.as_deref(), Some("old"), "held back structural changes keep the deployed files");
        let (auto, held) = unattended(&plan, Policy { images: true, structural: true, rebuild: true }, false);
        assert_eq!(auto.changes.len(), 3);
        assert!(held.is_empty());
    }

    /// A changed secret recreates the services that use it, not one that
    /// mounts another secret at a path named like it.
    #[test]
    fn a_changed_secret_recreates_its_users_only() {
        let services = |v: &str| {
            json!({
                "app": {"image": "a:1", "secrets": [{"source": "token", "target": "token"}]},
                "other": {"image": "o:1", "secrets": [{"source": "cert", "target": "token"}], "labels": {"x": v}}
            })
        };
        let secrets = |token: &str| json!({"secrets": {"token": {"file": token}, "cert": {"file": "/s/cert"}}});
        let old = json_model(services("1"), secrets("/s/token-1"));
        let new = json_model(services("1"), secrets("/s/token-2"));
        let plan = structural(&old, &new, &up(&["app", "other"]), Policy::default());
        assert_eq!(steps(&plan), [(ChangeKind::Recreate, "app")]);
    }

    /// A tag changed in git is an image update, but it comes with the
    /// commit: when the commit's structural changes are held back, so is
    /// it (applied from the old files it would fail, and be tried again
    /// on every unattended run).
    #[test]
    fn a_tag_changed_with_a_held_back_structural_change_waits_with_it() {
        let old = json_model(
            json!({"web": {"image": "r/web:1"}, "api": {"image": "r/api:1", "environment": {"A": "1"}}}),
            json!({}),
        );
        let new = json_model(
            json!({"web": {"image": "r/web:2"}, "api": {"image": "r/api:1", "environment": {"A": "2"}}}),
            json!({}),
        );
        let plan = structural(&old, &new, &up(&["web", "api"]), Policy::default());
        assert_eq!(steps(&plan), [(ChangeKind::Recreate, "api"), (ChangeKind::Image, "web")]);
        let (auto, held) = unattended(&plan, Policy::default(), false);
        assert!(auto.changes.is_empty(), "{:?}", auto.changes);
        assert_eq!(auto.commit.as_deref(), Some("old"));
        assert!(!held.is_empty());
        let tag_only = json_model(
            json!({"web": {"image": "r/web:2"}, "api": {"image": "r/api:1", "environment": {"A": "1"}}}),
            json!({}),
        );
        let (auto, held) =
            unattended(&structural(&old, &tag_only, &up(&["web", "api"]), Policy::default()), Policy::default(), false);
        assert_eq!(steps(&auto), [(ChangeKind::Image, "web")], "alone, a tag change is an image update");
        assert!(held.is_empty() && auto.moves_commit());
    }

    #[test]
    fn a_named_volume_whose_driver_options_change_puts_data_at_risk() {
        let services = json!({"db": {"image": "d:1", "volumes": [{"type": "volume", "source": "v", "target": "/v"}]}});
        let old = json_model(services.clone(), json!({"volumes": {"v": {"name": "p_v"}}}));
        let new = json_model(
            services,
            json!({"volumes": {"v": {"name": "p_v", "driver_opts": {"type": "tmpfs", "device": "tmpfs"}}}}),
        );
        let all = Policy { images: true, structural: true, rebuild: true };
        let plan = structural(&old, &new, &up(&["db"]), all);
        assert_eq!(plan.data_risks.len(), 1, "{plan:?}");
        assert!(plan.data_risks[0].contains("named volume v's driver or options changed"), "{:?}", plan.data_risks);
        let (auto, held) = unattended(&plan, all, false);
        assert!(auto.changes.is_empty() && !held.is_empty(), "never unattended");
    }

    #[test]
    fn data_at_risk_is_never_unattended() {
        let anon = json!([{"type": "volume", "target": "/data"}]);
        let named = json!([{"type": "volume", "source": "v", "target": "/v"}]);
        let old = json_model(
            json!({"api": {"image": "a:1", "volumes": anon}, "keeper": {"image": "k:1", "volumes": named}}),
            json!({"volumes": {"v": {"name": "p_v"}}}),
        );
        let new =
            json_model(json!({"backend": {"image": "a:1", "volumes": anon}, "keeper": {"image": "k:1"}}), json!({}));
        let all = Policy { images: true, structural: true, rebuild: true };
        let plan = structural(&old, &new, &up(&["api", "keeper"]), all);
        assert_eq!(
            steps(&plan),
            [(ChangeKind::Remove, "api"), (ChangeKind::Create, "backend"), (ChangeKind::Recreate, "keeper")],
            "a rename removes just before it creates"
        );
        assert_eq!(plan.data_risks.len(), 2, "{:?}", plan.data_risks);
        assert!(plan.data_risks.iter().any(|r| r.contains("renaming service api to backend")));
        assert!(plan.data_risks.iter().any(|r| r.contains("named volume v is removed") && r.contains("keeper")));
        let (auto, held) = unattended(&plan, all, false);
        assert!(auto.changes.is_empty() && !held.is_empty());
        let (auto, _) = unattended(&plan, all, true);
        assert_eq!(auto.changes.len(), 3, "--accept-data-risk lets it through");
    }

    #[test]
    fn shared_networks_volumes_and_namespaces_pull_dependants_along() {
        let old = json_model(
            json!({
                "web": {"image": "w:1", "networks": {"front": null}},
                "side": {"image": "s:1", "network_mode": "service:web"},
                "files": {"image": "f:1", "volumes_from": ["web"]},
                "db": {"image": "d:1", "networks": {"back": null}},
                "other": {"image": "o:1"}
            }),
            json!({"networks": {"front": {"name": "p_front"}, "back": {"name": "p_back"}}}),
        );
        let new = json_model(
            json!({
                "web": {"image": "w:2", "networks": {"front": null}},
                "side": {"image": "s:1", "network_mode": "service:web"},
                "files": {"image": "f:1", "volumes_from": ["web"]},
                "db": {"image": "d:1", "networks": {"back": null}},
                "other": {"image": "o:1"}
            }),
            json!({"networks": {"front": {"name": "p_front"}, "back": {"name": "p_back", "internal": true}}}),
        );
        let plan = structural(&old, &new, &up(&["web", "side", "files", "db", "other"]), Policy::default());
        let got = steps(&plan);
        assert!(got.contains(&(ChangeKind::Image, "web")), "a new tag alone is an image change: {got:?}");
        assert!(got.contains(&(ChangeKind::Recreate, "side")), "{got:?}");
        for follower in ["side", "files"] {
            let change = plan.changes.iter().find(|c| c.service == follower);
            assert!(change.is_some_and(|c| c.kind == ChangeKind::Recreate && c.force), "{follower}: {got:?}");
        }
        assert!(got.contains(&(ChangeKind::Recreate, "db")), "{got:?}");
        assert!(!got.iter().any(|(_, s)| *s == "other"), "{got:?}");
        assert_eq!(plan.kind, PlanKind::Mixed);
    }

    #[test]
    fn stopped_and_skipped_services_are_left_alone() {
        let old = json_model(
            json!({"job": {"image": "j:1", "command": ["a"]}, "web": {"image": "w:1", "command": ["a"]}}),
            json!({}),
        );
        let new = json_model(
            json!({"job": {"image": "j:1", "command": ["b"]}, "web": {"image": "w:1", "command": ["b"]}}),
            json!({}),
        );
        let mut observation = up(&["web"]);
        observation.services.insert("job".into(), running("exited", &[]));
        let plan = structural(&old, &new, &observation, Policy::default());
        assert_eq!(steps(&plan), [(ChangeKind::Recreate, "web")]);
    }

    #[test]
    fn a_directory_stack_recreates_what_compose_hashes_say_drifted() {
        let model = json_model(json!({"web": {"image": "w:1"}, "db": {"image": "d:1"}}), json!({}));
        let mut observation = up(&["web", "db"]);
        for (svc, hash) in [("web", "h-old"), ("db", "h-db")] {
            observation.services.get_mut(svc).unwrap().containers[0].config_hash = Some(hash.into());
        }
        let hashes = BTreeMap::from([("web".to_string(), "h-new".to_string()), ("db".to_string(), "h-db".to_string())]);
        let plan = directory_plan(&model, &observation, &hashes, &BTreeSet::new(), &BTreeSet::new());
        assert_eq!(steps(&plan), [(ChangeKind::Recreate, "web")]);
    }

    fn directory_plan(
        model: &ComposeModel,
        observation: &Observation,
        hashes: &BTreeMap<String, String>,
        gone: &BTreeSet<String>,
        skip: &BTreeSet<String>,
    ) -> Plan {
        classify(&Inputs {
            stack: "s",
            new: model,
            baseline: Baseline::Running { hashes, gone },
            observation,
            skip,
            remote: &BTreeMap::new(),
            policy: Policy::default(),
            commit: None,
            deployed_commit: None,
            changed_files: &[],
            dockerignore: &BTreeMap::new(),
            moved_submodules: &[],
            target_images: None,
        })
    }

    /// Issue 14, part 2: a service removed from the files by hand is
    /// removed; its anonymous volumes put data at risk, and a stopped or
    /// skipped one is left as it is.
    #[test]
    fn a_directory_stack_removes_what_the_files_no_longer_define() {
        let model = json_model(json!({"web": {"image": "w:1"}}), json!({}));
        let mut observation = up(&["web", "old", "cache", "idle", "kept"]);
        observation.services.get_mut("cache").unwrap().containers[0].mounts = vec![crate::seams::engine::Mount {
            kind: "volume".into(),
            name: "a".repeat(64),
            destination: "/cache".into(),
            ..Default::default()
        }];
        observation.services.get_mut("idle").unwrap().containers[0].state = "exited".into();
        let gone: BTreeSet<String> = ["old", "cache", "idle", "kept"].map(String::from).into();
        let plan = directory_plan(&model, &observation, &BTreeMap::new(), &gone, &BTreeSet::from(["kept".to_string()]));
        assert_eq!(steps(&plan), [(ChangeKind::Remove, "cache"), (ChangeKind::Remove, "old")]);
        assert_eq!(plan.data_risks.len(), 1, "{:?}", plan.data_risks);
        assert!(plan.data_risks[0].contains("cache") && plan.data_risks[0].contains("/cache"));
        assert_eq!(plan.kind, PlanKind::Structural);
    }

    #[test]
    fn a_first_git_deploy_creates_what_is_missing() {
        let model = json_model(json!({"web": {"image": "w:1"}, "new": {"image": "n:1"}}), json!({}));
        let plan = classify(&Inputs {
            stack: "s",
            new: &model,
            baseline: Baseline::Nothing,
            observation: &up(&["web"]),
            skip: &BTreeSet::new(),
            remote: &BTreeMap::new(),
            policy: Policy::default(),
            commit: Some("c".into()),
            deployed_commit: None,
            changed_files: &[],
            dockerignore: &BTreeMap::new(),
            moved_submodules: &[],
            target_images: None,
        });
        assert_eq!(steps(&plan), [(ChangeKind::Create, "new"), (ChangeKind::Recreate, "web")]);
    }

    #[test]
    fn changed_bind_mounted_files_and_configs_force_a_recreate() {
        let model = json_model(
            json!({
                "web": {"image": "w", "volumes": [{"type": "bind", "source": "/srv/s/site", "target": "/www"}]},
                "api": {"image": "a", "configs": [{"source": "cfg"}]},
                "db": {"image": "d", "volumes": [{"type": "bind", "source": "/srv/s/db.conf", "target": "/etc/db.conf"}]}
            }),
            json!({"configs": {"cfg": {"file": "/srv/s/api.yaml"}}}),
        );
        let changed = [std::path::PathBuf::from("/srv/s/site/index.html"), std::path::PathBuf::from("/srv/s/api.yaml")];
        let plan = classify(&Inputs {
            stack: "s",
            new: &model,
            baseline: Baseline::Deployed(&model),
            observation: &up(&["web", "api", "db"]),
            skip: &BTreeSet::new(),
            remote: &BTreeMap::new(),
            policy: Policy::default(),
            commit: Some("new".into()),
            deployed_commit: Some("old".into()),
            changed_files: &changed,
            dockerignore: &BTreeMap::new(),
            moved_submodules: &[],
            target_images: None,
        });
        assert_eq!(steps(&plan), [(ChangeKind::Recreate, "api"), (ChangeKind::Recreate, "web")]);
        assert!(plan.changes.iter().all(|c| c.force));
    }
}

#[cfg(test)]
mod rebuild_tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn model(app_build: serde_json::Value) -> ComposeModel {
        ComposeModel::from_json(&json!({
            "name": "p",
            "services": {
                "app": {"build": app_build},
                "worker": {"build": {"context": "/srv/s/worker", "dockerfile": "/srv/s/docker/worker.Dockerfile"}},
                "web": {"image": "r/web:1"}
            }
        }))
        .unwrap()
    }

    fn running() -> Observation {
        let service = |image: &str| ServiceObservation {
            containers: vec![crate::seams::engine::ContainerInfo {
                id: "c".into(),
                name: "n".into(),
                service: String::new(),
                state: "running".into(),
                health: None,
                restart_count: 0,
                image_id: image.into(),
                config_hash: None,
                started_at: None,
                mounts: vec![],
                labels: Default::default(),
            }],
            image: None,
        };
        Observation {
            services: [("app", "sha256:app"), ("worker", "sha256:worker"), ("web", "sha256:web")]
                .into_iter()
                .map(|(s, i)| (s.to_string(), service(i)))
                .collect(),
            ..Default::default()
        }
    }

    fn plan_for(old: &ComposeModel, new: &ComposeModel, changed: &[&str], policy: Policy) -> Plan {
        plan_seeing(old, new, changed, policy, &BTreeMap::new(), &[])
    }

    fn plan_seeing(
        old: &ComposeModel,
        new: &ComposeModel,
        changed: &[&str],
        policy: Policy,
        dockerignore: &BTreeMap<PathBuf, String>,
        moved_submodules: &[(PathBuf, String)],
    ) -> Plan {
        let changed: Vec<PathBuf> = changed.iter().map(PathBuf::from).collect();
        classify(&Inputs {
            stack: "s",
            new,
            baseline: Baseline::Deployed(old),
            observation: &running(),
            skip: &BTreeSet::new(),
            remote: &BTreeMap::new(),
            policy,
            commit: Some("new".into()),
            deployed_commit: Some("old".into()),
            changed_files: &changed,
            dockerignore,
            moved_submodules,
            target_images: None,
        })
    }

    #[test]
    fn a_commit_touching_a_build_context_rebuilds_only_that_service() {
        let m = model(json!({"context": "/srv/s/app", "dockerfile": "Dockerfile"}));
        let plan = plan_for(
            &m,
            &m,
            &["/srv/s/app/src/main.py", "/srv/s/README.md", "/srv/s/app/src/main.py"],
            Policy::default(),
        );
        assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
        let c = &plan.changes[0];
        assert_eq!((c.kind, c.service.as_str(), c.build, c.force), (ChangeKind::Rebuild, "app", true, true));
        assert_eq!(c.image.as_deref(), Some("p-app"), "Compose's name for a built image");
        assert_eq!(c.reasons, ["src/main.py changed"]);
        assert!(!c.is_structural() && c.needs_files());
        assert_eq!(plan.kind, PlanKind::Image);
        assert!(plan.needs_approval.is_empty(), "applied unattended by default");

        let readme = plan_for(&m, &m, &["/srv/s/README.md", "/srv/s/application.txt"], Policy::default());
        assert!(readme.changes.is_empty(), "outside every context: {:?}", readme.changes);

        let dockerfile = plan_for(&m, &m, &["/srv/s/docker/worker.Dockerfile"], Policy::default());
        assert_eq!(dockerfile.changes.iter().map(|c| c.service.as_str()).collect::<Vec<_>>(), ["worker"]);
        assert_eq!(dockerfile.changes[0].reasons, ["/srv/s/docker/worker.Dockerfile changed"]);

        let many: Vec<String> = (0..5).map(|i| format!("/srv/s/app/f{i}.py")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let plan = plan_for(&m, &m, &many, Policy::default());
        assert_eq!(plan.changes[0].reasons, ["f0.py, f1.py, f2.py and 2 more changed"]);
    }

    #[test]
    fn a_submodule_that_moved_inside_a_context_names_its_commit_range() {
        let m = model(json!({"context": "/srv/s"}));
        let moved =
            [(PathBuf::from("/srv/s/lib"), "1111111..2222222".to_string()), (PathBuf::from("/srv/x"), "3..4".into())];
        let plan = plan_seeing(&m, &m, &["/srv/s/lib/util.py"], Policy::default(), &BTreeMap::new(), &moved);
        let app = plan.changes.iter().find(|c| c.service == "app").unwrap();
        assert_eq!(app.reasons, ["lib/util.py changed", "submodule /srv/s/lib moved 1111111..2222222"]);
    }

    #[test]
    fn what_the_dockerignore_leaves_out_rebuilds_nothing_but_the_dockerfile_and_the_ignore_file_do() {
        let m = model(json!({"context": "/srv/s/app", "dockerfile": "Dockerfile"}));
        let ignores: BTreeMap<PathBuf, String> =
            [("/srv/s/app/.dockerignore".into(), "*.md\ndocs\nDockerfile\n".into())].into();
        let plan = |changed: &[&str]| plan_seeing(&m, &m, changed, Policy::default(), &ignores, &[]);
        assert!(plan(&["/srv/s/app/README.md", "/srv/s/app/docs/a/b.txt"]).changes.is_empty());
        for counts in ["/srv/s/app/src/x.py", "/srv/s/app/.dockerignore", "/srv/s/app/Dockerfile"] {
            assert_eq!(plan(&[counts]).changes.len(), 1, "{counts} rebuilds");
        }

        // The Dockerfile's own ignore file comes first, wherever it lives.
        let m = model(json!({"context": "/srv/s/app", "dockerfile": "/srv/s/docker/app.Dockerfile"}));
        let ignores: BTreeMap<PathBuf, String> = [
            ("/srv/s/docker/app.Dockerfile.dockerignore".into(), "tests\n".into()),
            ("/srv/s/app/.dockerignore".into(), "src\n".into()),
        ]
        .into();
        let plan = |changed: &[&str]| plan_seeing(&m, &m, changed, Policy::default(), &ignores, &[]);
        assert!(plan(&["/srv/s/app/tests/t.py"]).changes.is_empty(), "left out by the Dockerfile's own");
        for counts in ["/srv/s/app/src/x.py", "/srv/s/docker/app.Dockerfile.dockerignore"] {
            assert_eq!(plan(&[counts]).changes.len(), 1, "{counts} rebuilds");
        }
    }

    #[test]
    fn an_added_built_service_is_built_before_anything_is_touched() {
        let old = ComposeModel::from_json(&json!({"name": "p", "services": {"web": {"image": "r/web:1"}}})).unwrap();
        let new = model(json!({"context": "/srv/s/app"}));
        let plan = plan_for(&old, &new, &[], Policy::default());
        let added: Vec<(&str, bool)> = plan
            .changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Create)
            .map(|c| (c.service.as_str(), c.build))
            .collect();
        assert_eq!(added, [("app", true), ("worker", true)]);
    }

    #[test]
    fn a_rebuild_asked_for_names_built_running_services_only() {
        let m = model(json!({"context": "/srv/s/app"}));
        let built: BTreeMap<String, String> =
            [("app", "p-app"), ("worker", "p-worker")].map(|(a, b)| (a.into(), b.into())).into();
        let mut plan = plan_for(&m, &m, &[], Policy::default());
        ask_rebuild(&mut plan, &[], &built, &running()).unwrap();
        assert_eq!(steps(&plan), [(ChangeKind::Rebuild, "app"), (ChangeKind::Rebuild, "worker")], "every built one");
        assert!(plan.changes.iter().all(|c| c.build && c.force));
        assert_eq!(plan.kind, PlanKind::Image);

        let mut plan = plan_for(&m, &m, &[], Policy::default());
        let err = ask_rebuild(&mut plan, &["web".into()], &built, &running()).unwrap_err();
        assert!(err.contains("not a built service (built: app, worker)"), "{err}");
        let err = ask_rebuild(&mut plan, &[], &BTreeMap::new(), &running()).unwrap_err();
        assert!(err.contains("no service has a `build:` section"), "{err}");
        let stopped = Observation::default();
        let err = ask_rebuild(&mut plan, &["app".into()], &built, &stopped).unwrap_err();
        assert!(err.contains("not running"), "{err}");

        let mut plan = plan_for(&m, &m, &["/srv/s/app/x"], Policy::default());
        ask_rebuild(&mut plan, &["app".into()], &built, &running()).unwrap();
        assert_eq!(steps(&plan), [(ChangeKind::Rebuild, "app")], "one change, not two");
    }

    fn steps(plan: &Plan) -> Vec<(ChangeKind, &str)> {
        plan.changes.iter().map(|c| (c.kind, c.service.as_str())).collect()
    }

    #[test]
    fn a_rebuild_follows_its_policy_line_and_a_changed_definition_the_structural_rule() {
        let m = model(json!({"context": "/srv/s/app"}));
        let held = Policy { rebuild: false, ..Policy::default() };
        let plan = plan_for(&m, &m, &["/srv/s/app/x"], held);
        assert_eq!(plan.needs_approval, [Approval::Rebuild.describe()]);
        let (auto, _) = unattended(&plan, held, false);
        assert!(auto.changes.is_empty());
        let (auto, _) = unattended(&plan, Policy::default(), false);
        assert_eq!(auto.changes.len(), 1);

        let args = model(json!({"context": "/srv/s/app", "args": {"V": "2"}}));
        let plan = plan_for(&m, &args, &[], Policy::default());
        let c = &plan.changes[0];
        assert_eq!((c.kind, c.build), (ChangeKind::Recreate, true), "{c:?}");
        assert_eq!(c.image.as_deref(), Some("p-app"), "put back on rollback");
        assert!(c.is_structural());
        let (auto, held) = unattended(&plan, Policy::default(), false);
        assert!(auto.changes.is_empty() && !held.is_empty(), "auto.structural is false by default");
    }
}
