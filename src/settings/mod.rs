//! Configuration file and command line resolved once into one
//! `StackSettings` per stack, before any pipeline stage runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use crate::exit::usage;
use crate::redact::SecretUrl;
use crate::seams::worktree::{Discovered, Upstream};

pub const DEFAULT_CONFIG: &str = "/etc/clusterup/clusterup.yaml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/clusterup";

pub use crate::seams::compose::COMPOSE_FILE_NAMES;

#[derive(Debug, Clone, PartialEq)]
pub struct StackSettings {
    /// The stack's name in clusterup: journal, lock and backups are kept
    /// under it.
    pub name: String,
    /// The compose project directory. For a git stack, `path` inside
    /// clusterup's checkout of the repository.
    pub directory: PathBuf,
    /// Relative to `directory`. Empty: Compose's own default file.
    pub compose_files: Vec<PathBuf>,
    /// Empty: the project name Compose derives itself (`name:` in the file,
    /// `COMPOSE_PROJECT_NAME`, or the directory), so clusterup finds stacks
    /// that people started with a bare `docker compose up`.
    pub project: Option<String>,
    pub health: HealthSettings,
    pub skip: BTreeSet<String>,
    pub state_dir: PathBuf,
    pub git: Option<GitSource>,
    pub policy: Policy,
    /// How many revisions' rollback images stay tagged.
    pub keep_images: usize,
    /// When `apply --auto` may act; empty: any time.
    pub windows: Vec<crate::window::Window>,
    /// A new image is applied by `apply --auto` only this long after
    /// clusterup first saw it (and after it was built); services may say
    /// otherwise.
    pub min_age: Option<Duration>,
    /// node_exporter textfile metrics, written after each run (global).
    pub metrics_file: Option<PathBuf>,
    pub services: BTreeMap<String, ServiceOverrides>,
    pub hooks: Hooks,
    pub hook_timeout: Duration,
    /// Watchtower's `--label-enable`: only services labelled enable=true.
    pub label_enable: bool,
    /// Watchtower's `--scope`: only services with this scope label.
    pub scope: Option<String>,
    pub notify: Vec<NotifyTarget>,
    /// git stacks: new version tags proposed as pull requests.
    pub pull_requests: Option<PullRequests>,
    pub timeouts: Timeouts,
    pub volumes: VolumeBackups,
}

/// Where and how long volume snapshots are kept; which services opt in
/// is per service (`ServicePolicy::backup_volumes`).
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeBackups {
    /// Every service opts in unless it says otherwise.
    pub all: bool,
    /// Snapshots go to `<dir>/rev-<N>/`.
    pub dir: PathBuf,
    /// How many revisions' snapshots are kept.
    pub keep: usize,
}

impl VolumeBackups {
    fn new(state_dir: &Path, keep: usize) -> VolumeBackups {
        VolumeBackups { all: false, dir: state_dir.join("volumes"), keep }
    }
}

impl StackSettings {
    /// Where this stack's compose files are, for `Open::compose`.
    pub fn compose_spec(&self) -> crate::seams::compose::ComposeSpec {
        crate::seams::compose::ComposeSpec {
            directory: self.directory.clone(),
            files: self.compose_files.clone(),
            project: self.project.clone(),
            timeout: self.timeouts.compose,
            build_timeout: self.timeouts.build,
        }
    }
}

/// Bounds on every external call without one of its own (git has
/// `git.timeout`, hooks `hooks.timeout`, health `health.timeout`): a peer
/// that accepts and never answers ends the call, not the run's progress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// One request to the Docker engine (a pull's progress stream aside).
    pub engine: Duration,
    /// One registry manifest or token request.
    pub registry: Duration,
    /// One notification delivery.
    pub notify: Duration,
    /// One `docker-credential-*` helper call.
    pub credential_helper: Duration,
    /// One `docker compose` call (reading the model, recreating a service).
    pub compose: Duration,
    /// One `docker compose build` of the services a revision rebuilds.
    pub build: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            engine: Duration::from_secs(120),
            registry: Duration::from_secs(20),
            notify: Duration::from_secs(10),
            credential_helper: Duration::from_secs(10),
            compose: Duration::from_secs(600),
            build: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutsEntry {
    #[serde(default, deserialize_with = "duration")]
    engine: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    registry: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    notify: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    credential_helper: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    compose: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    build: Option<Duration>,
}

impl TimeoutsEntry {
    fn resolve(&self) -> std::result::Result<Timeouts, String> {
        let d = Timeouts::default();
        let t = Timeouts {
            engine: self.engine.unwrap_or(d.engine),
            registry: self.registry.unwrap_or(d.registry),
            notify: self.notify.unwrap_or(d.notify),
            credential_helper: self.credential_helper.unwrap_or(d.credential_helper),
            compose: self.compose.unwrap_or(d.compose),
            build: self.build.unwrap_or(d.build),
        };
        // The engine client counts whole seconds: less would be no time.
        if t.engine < Duration::from_secs(1) {
            return Err("timeouts.engine: at least 1s".into());
        }
        let zero = [t.registry, t.notify, t.credential_helper, t.compose, t.build].iter().any(Duration::is_zero);
        if zero {
            return Err("timeouts: a timeout of 0 would fail every call; give a duration such as \"10s\"".into());
        }
        Ok(t)
    }
}

pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

pub const DEFAULT_KEEP_IMAGES: usize = 3;

pub use crate::seams::git::GitSource;

mod targets;
#[cfg(test)]
pub use targets::resolve as resolve_entry;
pub use targets::{Auth, Channel, Email, Event, MatrixAuth, NotifyEntry, NotifyTarget, Tls, Token};

/// Every entry of a `notify:` list (at `key`), resolved; an error names
/// the entry.
fn resolve_notify(entries: &[NotifyEntry], key: &str) -> std::result::Result<Vec<NotifyTarget>, String> {
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        out.extend(targets::resolve(entry).map_err(|m| format!("{key}[{i}]: {m}"))?);
    }
    Ok(out)
}

pub const DEFAULT_GIT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// What `apply --auto` may do without a person. Changes that put data at
/// risk are never applied unattended, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default = "yes")]
    pub images: bool,
    #[serde(default)]
    pub structural: bool,
    /// A built service whose sources changed in the commit: build and
    /// recreate, as an image update (what "rebuild + Watchtower" did).
    #[serde(default = "yes")]
    pub rebuild: bool,
}

fn yes() -> bool {
    true
}

impl Default for Policy {
    fn default() -> Self {
        Policy { images: true, structural: false, rebuild: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthSettings {
    /// How long a recreated service may take to become healthy.
    pub timeout: Duration,
    /// How long it must then stay healthy with no restart.
    pub stability: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings { timeout: Duration::from_secs(120), stability: Duration::from_secs(10) }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    state_dir: Option<PathBuf>,
    metrics_file: Option<PathBuf>,
    #[serde(default)]
    notify: Vec<NotifyEntry>,
    #[serde(default)]
    timeouts: TimeoutsEntry,
    #[serde(default)]
    stacks: Vec<StackEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StackEntry {
    name: String,
    directory: Option<PathBuf>,
    git: Option<GitEntry>,
    #[serde(default)]
    auto: Policy,
    keep_images: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    min_age: Option<Duration>,
    #[serde(default, deserialize_with = "windows")]
    window: Vec<crate::window::Window>,
    #[serde(default)]
    compose_files: Vec<PathBuf>,
    project: Option<String>,
    #[serde(default)]
    health: HealthEntry,
    #[serde(default)]
    services: BTreeMap<String, ServiceEntry>,
    #[serde(default)]
    hooks: HooksEntry,
    #[serde(default)]
    label_enable: bool,
    scope: Option<String>,
    notify: Option<Vec<NotifyEntry>>,
    #[serde(default)]
    backup_volumes: bool,
    backup_dir: Option<PathBuf>,
    keep_volume_snapshots: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GitEntry {
    url: Option<String>,
    branch: Option<String>,
    #[serde(default)]
    in_place: bool,
    #[serde(default)]
    path: PathBuf,
    #[serde(default)]
    submodules: bool,
    ssh_key: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    idle_timeout: Option<Duration>,
    pull_requests: Option<PullRequestsEntry>,
}

/// `git.pull_requests`: clusterup proposes new version tags as pull
/// requests on the stack's GitHub repository.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequestsEntry {
    /// owner/name; default: from `url` when it is GitHub's.
    repo: Option<String>,
    api_url: Option<String>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
}

/// Where and how pull requests are opened.
#[derive(Debug, Clone, PartialEq)]
pub struct PullRequests {
    pub repo: String,
    pub api: SecretUrl,
    pub token: Token,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthEntry {
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    stability: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceEntry {
    #[serde(default)]
    skip: bool,
    health_url: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    health_timeout: Option<Duration>,
    pre_update: Option<String>,
    post_update: Option<String>,
    strategy: Option<Strategy>,
    strategy_fallback: Option<Strategy>,
    #[serde(default, deserialize_with = "duration")]
    min_age: Option<Duration>,
    #[serde(default, deserialize_with = "follow")]
    follow: Option<Follow>,
    #[serde(default, deserialize_with = "windows")]
    window: Vec<crate::window::Window>,
    backup_volumes: Option<bool>,
    pre_backup: Option<String>,
    #[serde(default)]
    backup_binds: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HooksEntry {
    pre_update: Option<String>,
    post_update: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
}

/// Commands run around an update (on the host for configured hooks, in the
/// container for `clusterup.pre-update`/`post-update` labels).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hooks {
    pub pre_update: Option<String>,
    pub post_update: Option<String>,
    /// A service's: makes its data consistent (a database dump) so its
    /// volumes are copied while it runs, instead of stopped.
    pub pre_backup: Option<String>,
}

/// How a service's container is replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Strategy {
    /// Stop the old container, then start the new one (Compose's way).
    #[default]
    StopFirst,
    /// Start the new container beside the old one and retire the old one
    /// once the new one is healthy: no downtime.
    StartFirst,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Strategy, String> {
        match s.trim() {
            "stop-first" => Ok(Strategy::StopFirst),
            "start-first" => Ok(Strategy::StartFirst),
            other => Err(format!("unknown strategy {other:?}; use stop-first or start-first")),
        }
    }
}

/// One spelling for the configuration and the labels.
impl TryFrom<String> for Strategy {
    type Error = String;
    fn try_from(s: String) -> Result<Strategy, String> {
        s.parse()
    }
}

/// How far `follow:` lets a tag move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Bump {
    Patch,
    Minor,
    Major,
}

impl std::str::FromStr for Bump {
    type Err = String;
    fn from_str(s: &str) -> Result<Bump, String> {
        match s.trim() {
            "patch" => Ok(Bump::Patch),
            "minor" => Ok(Bump::Minor),
            "major" => Ok(Bump::Major),
            other => Err(format!("follow: {other:?} is not patch, minor or major")),
        }
    }
}

/// `follow:` of a service: new version tags up to `level`, among those
/// `include` patterns match (all if none) and no `exclude` pattern does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Follow {
    pub level: Bump,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// `follow: minor`, or the map with patterns.
fn follow<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Follow>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Level(Bump),
        Full(Follow),
    }
    Ok(Some(match Entry::deserialize(d)? {
        Entry::Level(level) => Follow { level, include: Vec::new(), exclude: Vec::new() },
        Entry::Full(f) => f,
    }))
}

/// Per-service settings from the configuration; labels add to them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceOverrides {
    pub health_url: Option<String>,
    pub health_timeout: Option<Duration>,
    pub hooks: Hooks,
    pub strategy: Option<Strategy>,
    /// What to do instead where `strategy` cannot work; None: refuse.
    pub strategy_fallback: Option<Strategy>,
    pub min_age: Option<Duration>,
    pub follow: Option<Follow>,
    /// When `apply --auto` may change this service (within the stack's).
    pub windows: Vec<crate::window::Window>,
    pub backup_volumes: Option<bool>,
    /// Bind mounts (host paths) copied with the volumes.
    pub backup_binds: Vec<PathBuf>,
}

fn windows<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<crate::window::Window>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let texts = match OneOrMany::deserialize(d)? {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(ts) => ts,
    };
    texts.iter().map(|t| t.parse().map_err(serde::de::Error::custom)).collect()
}

pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?} ({e}); write e.g. \"90s\" or \"2m\"")))
}

/// What the command line says about where settings come from.
pub struct Sources<'a> {
    pub config: Option<&'a Path>,
    pub state_dir: Option<&'a Path>,
    pub stack: Option<&'a str>,
    pub cwd: &'a Path,
}

pub fn resolve(src: &Sources) -> Result<Vec<StackSettings>> {
    let explicit = src.config.is_some();
    let config_path = src.config.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let stacks = match std::fs::File::open(&config_path) {
        Ok(file) => {
            // Judged and read through one open file: a swap between the two
            // cannot slip another file in.
            let meta = file.metadata().map_err(|e| usage(format!("reading {}: {e}", config_path.display())))?;
            refuse_writable_by_others(&config_path, Some(&meta), "configuration file")?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut &file, &mut text)
                .map_err(|e| usage(format!("reading configuration file {}: {e}", config_path.display())))?;
            let stacks = from_config(&config_path, &text, src.state_dir)?;
            check_hook_scripts(&stacks)?;
            stacks
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            vec![from_directory(src.cwd, src.state_dir)?]
        }
        Err(e) => {
            return Err(usage(format!("reading configuration file {}: {e}", config_path.display())));
        }
    };
    select(stacks, src.stack)
}

fn select(stacks: Vec<StackSettings>, wanted: Option<&str>) -> Result<Vec<StackSettings>> {
    let Some(wanted) = wanted else {
        return Ok(stacks);
    };
    let names: Vec<String> = stacks.iter().map(|s| s.name.clone()).collect();
    let chosen: Vec<StackSettings> = stacks.into_iter().filter(|s| s.name == wanted).collect();
    if chosen.is_empty() {
        return Err(usage(format!(
            "no stack named {wanted:?}; known stacks: {}",
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        )));
    }
    Ok(chosen)
}

pub fn from_config(path: &Path, text: &str, state_dir: Option<&Path>) -> Result<Vec<StackSettings>> {
    let bad = |msg: String| usage(format!("configuration file {}: {msg}", path.display()));
    let file: ConfigFile = serde_yaml::from_str(text).map_err(|e| bad(e.to_string()))?;
    if file.stacks.is_empty() {
        return Err(bad("no stacks configured; add a `stacks:` list with at least one entry".into()));
    }
    let base = path.parent().unwrap_or(Path::new("/"));
    let notify = resolve_notify(&file.notify, "notify").map_err(bad)?;
    let timeouts = file.timeouts.resolve().map_err(bad)?;
    let root = state_dir.map(Path::to_path_buf).or(file.state_dir).unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, entry) in file.stacks.into_iter().enumerate() {
        check_name(&entry.name).map_err(|m| bad(format!("stacks[{i}].name: {m}")))?;
        if !seen.insert(entry.name.clone()) {
            return Err(bad(format!("stacks[{i}]: stack {:?} is configured twice", entry.name)));
        }
        let state_dir = root.join(&entry.name);
        let at = |key: &str| format!("stacks[{i}].{key}");
        let stack_notify = match &entry.notify {
            Some(entries) => Some(resolve_notify(entries, &at("notify")).map_err(bad)?),
            None => None,
        };
        let pull_requests = match entry.git.as_ref().and_then(|g| Some((g.url.as_deref(), g.pull_requests.clone()?))) {
            Some((url, p)) => {
                let from_url = url
                    .and_then(crate::seams::git::forge)
                    .filter(|f| f.is_github())
                    .map(|f| f.base().trim_start_matches("https://github.com/").to_string());
                let repo = p.repo.or(from_url).ok_or_else(|| {
                    bad(format!(
                        "{}: `repo` (owner/name) is required when `url` is not on github.com",
                        at("git.pull_requests")
                    ))
                })?;
                let api = SecretUrl::public(p.api_url.as_deref().unwrap_or("https://api.github.com"));
                if api.scheme() != Some("https") && !crate::redact::is_loopback_host(api.host()) {
                    return Err(bad(format!("{}: {api} is not https", at("git.pull_requests.api_url"))));
                }
                let token = match (p.token_file, p.token_env) {
                    (Some(file), _) => Token::File(base.join(file)),
                    (None, var) => Token::Env(var.unwrap_or_else(|| "GITHUB_TOKEN".into())),
                };
                Some(PullRequests { repo, api, token })
            }
            None => None,
        };
        let (directory, git) = match entry.git {
            Some(g) => {
                if escapes(&g.path) {
                    return Err(bad(format!(
                        "{}: {:?} must be a relative path inside the repository",
                        at("git.path"),
                        g.path
                    )));
                }
                if [g.timeout, g.idle_timeout].iter().flatten().any(Duration::is_zero) {
                    return Err(bad(format!("{}: a timeout of 0 would fail every fetch", at("git"))));
                }
                let timeout = g.timeout.unwrap_or(DEFAULT_GIT_TIMEOUT);
                let idle_timeout = g.idle_timeout.unwrap_or(DEFAULT_GIT_IDLE_TIMEOUT);
                let directory = entry.directory.as_ref().map(|d| base.join(d));
                if g.in_place {
                    let Some(directory) = directory else {
                        return Err(bad(format!(
                            "{}: an in-place git stack needs `directory`, the stack's directory inside the checkout",
                            at("directory")
                        )));
                    };
                    if g.url.is_some() || g.ssh_key.is_some() || g.insecure || !g.path.as_os_str().is_empty() {
                        return Err(bad(format!(
                            "{}: an in-place stack fetches with the checkout's own remote and credentials; \
                             `url`, `path`, `ssh_key` and `insecure` do not apply (drop them)",
                            at("git")
                        )));
                    }
                    let found = crate::seams::worktree::discover(&directory)
                        .map_err(|e| bad(format!("{}: {e:#}", at("directory"))))?
                        .ok_or_else(|| {
                            bad(format!("{}: {} is not inside a git work tree", at("directory"), directory.display()))
                        })?;
                    let source = in_place_source(found, g.branch, timeout, idle_timeout);
                    (directory, Some(source))
                } else {
                    let Some(url) = g.url else {
                        return Err(bad(format!(
                            "{}: missing; name the repository, or set `in_place: true` to follow the checkout at `directory`",
                            at("git.url")
                        )));
                    };
                    let checkout = directory.unwrap_or_else(|| state_dir.join("checkout"));
                    let branch = g.branch.unwrap_or_else(|| "main".to_string());
                    // A `directory` that already holds a clone of the
                    // repository is the operator's: adopted, moved in place.
                    let adopted = crate::seams::worktree::remote_for(&checkout, &url, &state_dir.join("git"))
                        .map_err(|e| bad(format!("{}: {e:#}", at("directory"))))?;
                    let source = GitSource {
                        url: SecretUrl::git(&url),
                        insecure: g.insecure,
                        timeout,
                        idle_timeout,
                        branch,
                        submodules: g.submodules,
                        ssh_key: g.ssh_key.map(|k| base.join(k)),
                        checkout: checkout.clone(),
                        path: g.path.clone(),
                        in_place: adopted,
                    };
                    (checkout.join(&g.path), Some(source))
                }
            }
            None => match &entry.directory {
                Some(d) => (base.join(d), None),
                None => {
                    return Err(bad(format!(
                        "{}: missing; a stack needs a `directory` or a `git` source",
                        at("directory")
                    )));
                }
            },
        };
        if let Some(f) = entry.compose_files.iter().find(|f| escapes(f)) {
            return Err(bad(format!(
                "{}: {:?} must be a relative path inside the stack directory",
                at("compose_files"),
                f
            )));
        }
        let defaults = HealthSettings::default();
        let keep_images = entry.keep_images.unwrap_or(DEFAULT_KEEP_IMAGES);
        let mut volumes = VolumeBackups::new(&state_dir, entry.keep_volume_snapshots.unwrap_or(keep_images).max(1));
        volumes.all = entry.backup_volumes;
        if let Some(d) = &entry.backup_dir {
            // A directory several stacks may share: each has its own below.
            volumes.dir = base.join(d).join(&entry.name);
        }
        let project_dir = directory.clone();
        out.push(StackSettings {
            state_dir,
            compose_files: entry.compose_files,
            directory,
            // clusterup's own checkout directory says nothing about the
            // project: name it after the stack unless told otherwise. An
            // operator's directory keeps the name `docker compose` gives.
            project: entry
                .project
                .or_else(|| git.as_ref().filter(|g| g.in_place.is_none()).map(|_| entry.name.clone())),
            git,
            policy: entry.auto,
            keep_images,
            windows: entry.window,
            min_age: entry.min_age,
            metrics_file: file.metrics_file.clone(),
            health: HealthSettings {
                timeout: entry.health.timeout.unwrap_or(defaults.timeout),
                stability: entry.health.stability.unwrap_or(defaults.stability),
            },
            skip: entry.services.iter().filter(|(_, s)| s.skip).map(|(n, _)| n.clone()).collect(),
            services: entry
                .services
                .into_iter()
                .map(|(n, s)| {
                    let hooks =
                        Hooks { pre_update: s.pre_update, post_update: s.post_update, pre_backup: s.pre_backup };
                    let overrides = ServiceOverrides {
                        health_url: s.health_url,
                        health_timeout: s.health_timeout,
                        hooks,
                        strategy: s.strategy,
                        strategy_fallback: s.strategy_fallback,
                        min_age: s.min_age,
                        follow: s.follow,
                        windows: s.window,
                        backup_volumes: s.backup_volumes,
                        backup_binds: s.backup_binds.iter().map(|b| project_dir.join(b)).collect(),
                    };
                    (n, overrides)
                })
                .collect(),
            hooks: Hooks { pre_update: entry.hooks.pre_update, post_update: entry.hooks.post_update, pre_backup: None },
            hook_timeout: entry.hooks.timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT),
            label_enable: entry.label_enable,
            scope: entry.scope,
            notify: stack_notify.unwrap_or_else(|| notify.clone()),
            pull_requests,
            timeouts,
            volumes,
            name: entry.name,
        });
    }
    Ok(out)
}

/// An in-place source for the checkout `found`: its branch's upstream,
/// or `branch` of the same remote. A detached HEAD or a branch without an
/// upstream leaves the branch empty; the fetch says so.
fn in_place_source(found: Discovered, branch: Option<String>, timeout: Duration, idle_timeout: Duration) -> GitSource {
    let upstream = found.upstream.unwrap_or_else(|| Upstream {
        remote: "origin".to_string(),
        url: String::new(),
        branch: String::new(),
    });
    GitSource {
        url: SecretUrl::git(&upstream.url),
        branch: branch.unwrap_or(upstream.branch),
        path: found.path,
        submodules: false,
        ssh_key: None,
        checkout: found.root,
        insecure: false,
        idle_timeout,
        timeout,
        in_place: Some(upstream.remote),
    }
}

/// Zero-configuration mode: a directory holding a compose file is a stack.
/// Inside a git work tree whose branch follows an upstream, it follows
/// that branch in place.
pub fn from_directory(dir: &Path, state_dir: Option<&Path>) -> Result<StackSettings> {
    if !COMPOSE_FILE_NAMES.iter().any(|f| dir.join(f).is_file()) {
        return Err(usage(format!(
            "no configuration file ({DEFAULT_CONFIG}) and no compose file in {}; \
             run clusterup in a directory with a compose.yaml, or pass --config FILE",
            dir.display()
        )));
    }
    let name = project_name_of(dir);
    if name.is_empty() {
        return Err(usage(format!("cannot derive a stack name from directory {}", dir.display())));
    }
    let found = crate::seams::worktree::discover(dir).map_err(|e| usage(format!("{e:#}")))?;
    let git = found
        .filter(|f| f.upstream.is_some())
        .map(|f| in_place_source(f, None, DEFAULT_GIT_TIMEOUT, DEFAULT_GIT_IDLE_TIMEOUT));
    let state_dir = state_dir.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)).join(&name);
    Ok(StackSettings {
        volumes: VolumeBackups::new(&state_dir, DEFAULT_KEEP_IMAGES),
        state_dir,
        name,
        directory: dir.to_path_buf(),
        compose_files: Vec::new(),
        project: None,
        health: HealthSettings::default(),
        skip: BTreeSet::new(),
        git,
        policy: Policy::default(),
        keep_images: DEFAULT_KEEP_IMAGES,
        windows: Vec::new(),
        min_age: None,
        metrics_file: None,
        services: BTreeMap::new(),
        hooks: Hooks::default(),
        hook_timeout: DEFAULT_HOOK_TIMEOUT,
        label_enable: false,
        scope: None,
        notify: Vec::new(),
        pull_requests: None,
        timeouts: Timeouts::default(),
    })
}

/// Compose's own normalisation of a directory name into a project name.
fn project_name_of(dir: &Path) -> String {
    let base = dir.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let kept: String = base.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    kept.trim_start_matches(['_', '-']).to_string()
}

/// The configuration names commands (hooks) that clusterup runs as root:
/// a file, or a directory above it, that another user may change is a
/// way to root for that user, and is refused. Root and the invoking user
/// are trusted; a sticky directory (`/tmp`) protects what is ours in it.
/// `opened`: the file's own metadata, from the descriptor it is read by.
fn refuse_writable_by_others(path: &Path, opened: Option<&std::fs::Metadata>, what: &str) -> Result<()> {
    use crate::trust::Untrusted;
    let real = std::fs::canonicalize(path).map_err(|e| usage(format!("{what} {}: {e}", path.display())))?;
    let me = crate::trust::me();
    // The directories of the file it resolves to, and of the path as given
    // (where a symlink to it lives).
    let given = path.ancestors().skip(1).filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf);
    let places: Vec<PathBuf> = real.ancestors().map(Path::to_path_buf).chain(given).collect();
    for (i, p) in places.iter().enumerate() {
        let meta = match (i, opened) {
            (0, Some(m)) => m.clone(),
            _ => std::fs::metadata(p).map_err(|e| usage(format!("{what} {}: {}: {e}", path.display(), p.display())))?,
        };
        let place = if i == 0 { format!("{what} {}", path.display()) } else { format!("directory {}", p.display()) };
        match crate::trust::judge(&meta, i > 0) {
            Some(Untrusted::Owner(owner)) => {
                return Err(usage(format!(
                    "{place} belongs to uid {owner}, and clusterup runs {what}'s hooks as uid {me}; \
                     only root or uid {me} may own it (chown {me} {})",
                    p.display()
                )));
            }
            Some(Untrusted::Writable(mode)) => {
                return Err(usage(format!(
                    "{place} is writable by other users (mode {mode:o}), and clusterup runs the hooks it names as \
                     uid {me}; fix it with: chmod go-w {}",
                    p.display()
                )));
            }
            None => {}
        }
    }
    Ok(())
}

/// Host hooks whose command starts with a path run that file as root: it
/// gets the configuration's own trust check.
fn check_hook_scripts(stacks: &[StackSettings]) -> Result<()> {
    let hooks = stacks.iter().flat_map(|s| std::iter::once(&s.hooks).chain(s.services.values().map(|o| &o.hooks)));
    for command in hooks.flat_map(|h| [&h.pre_update, &h.post_update, &h.pre_backup]).flatten() {
        let program = command.split_whitespace().next().unwrap_or_default();
        if program.starts_with('/') && Path::new(program).exists() {
            refuse_writable_by_others(Path::new(program), None, "hook script")?;
        }
    }
    Ok(())
}

fn escapes(path: &Path) -> bool {
    path.is_absolute() || path.components().any(|c| matches!(c, std::path::Component::ParentDir))
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok { Ok(()) } else { Err(format!("{name:?} is not a valid stack name; use letters, digits, '-', '_' and '.'")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<StackSettings>> {
        from_config(Path::new("/etc/clusterup/clusterup.yaml"), text, None)
    }

    #[test]
    fn full_stack_entry_resolves_paths_and_defaults() {
        let stacks = parse(
            "stacks:\n  - name: web\n    directory: /srv/web\n    compose_files: [compose.yaml, prod.yaml]\n    health: {timeout: 30s}\n    services:\n      db: {skip: true}\n",
        )
        .unwrap();
        let s = &stacks[0];
        assert_eq!(s.directory, PathBuf::from("/srv/web"));
        assert_eq!(s.compose_files, vec![PathBuf::from("compose.yaml"), PathBuf::from("prod.yaml")]);
        assert_eq!(s.policy, Policy { images: true, structural: false, rebuild: true });
        assert!(s.git.is_none());
        assert_eq!(s.health.timeout, Duration::from_secs(30));
        assert_eq!(s.health.stability, HealthSettings::default().stability);
        assert!(s.skip.contains("db"));
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/clusterup/web"));
    }

    #[test]
    fn git_stacks_check_out_under_the_state_dir_by_default() {
        let stacks = parse(
            "stacks:\n  - name: shop\n    git: {url: 'file:///srv/git/shop.git', path: stacks/shop}\n    auto: {structural: true}\n",
        )
        .unwrap();
        let s = &stacks[0];
        let git = s.git.as_ref().unwrap();
        assert_eq!(git.branch, "main");
        assert_eq!(git.checkout, PathBuf::from("/var/lib/clusterup/shop/checkout"));
        assert_eq!(s.directory, PathBuf::from("/var/lib/clusterup/shop/checkout/stacks/shop"));
        assert_eq!(s.project.as_deref(), Some("shop"));
        assert_eq!(s.policy, Policy { images: true, structural: true, rebuild: true });
    }

    #[test]
    fn paths_escaping_the_repository_or_directory_are_refused() {
        for text in [
            "stacks:\n  - name: s\n    git: {url: u, path: ../etc}\n",
            "stacks:\n  - name: s\n    git: {url: u, path: /etc}\n",
            "stacks:\n  - name: s\n    directory: /srv\n    compose_files: [../x.yaml]\n",
            "stacks:\n  - name: s\n    compose_files: [x.yaml]\n",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn notification_urls_over_plain_http_need_an_opt_in_unless_local() {
        for ok in [
            "notify: [{type: webhook, url: 'http://127.0.0.1:9/x'}]\n",
            "notify: [{type: webhook, url: 'http://hooks.example/x', insecure: true}]\n",
            "notify: [{type: slack, url: 'https://hooks.slack.com/services/T/B/x'}]\n",
            "timeouts: {engine: 5s, registry: 3s, notify: 2s, credential_helper: 1s, compose: 1m}\n",
        ] {
            let stacks = parse(&format!("{ok}stacks:\n  - name: web\n    directory: /srv\n")).unwrap();
            assert_eq!(stacks.len(), 1, "{ok}");
        }
        let stacks = parse("timeouts: {registry: 3s}\nstacks:\n  - name: web\n    directory: /srv\n").unwrap();
        assert_eq!(stacks[0].timeouts.registry, Duration::from_secs(3));
        assert_eq!(stacks[0].timeouts.engine, Timeouts::default().engine);
    }

    #[test]
    fn relative_directory_is_relative_to_the_config_file() {
        let stacks = parse("stacks:\n  - name: web\n    directory: stacks/web\n").unwrap();
        assert_eq!(stacks[0].directory, PathBuf::from("/etc/clusterup/stacks/web"));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            ("stacks:\n  - name: web\n    directory: /srv\n    colour: red\n", "line 4", "colour"),
            ("stacks:\n  - name: web\n    directory: [1, 2]\n", "line 3", "directory"),
            (
                "stacks:\n  - name: web\n    directory: /srv\n    health: {timeout: soon}\n",
                "line 4",
                "invalid duration",
            ),
            ("stacks:\n\t- name: web\n", "line 2", ""),
            ("stacks:\n  - name: a/b\n    directory: /srv\n", "stacks[0].name", "not a valid stack name"),
            ("stacks: []\n", "no stacks", ""),
        ];
        for (text, want1, want2) in cases {
            let err = parse(text).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("/etc/clusterup/clusterup.yaml"), "{msg}");
            assert!(msg.contains(want1), "{text:?} gave {msg}");
            assert!(msg.contains(want2), "{text:?} gave {msg}");
            assert!(err.downcast_ref::<crate::exit::UsageError>().is_some());
        }
    }

    #[test]
    fn duplicate_stack_names_are_refused() {
        let err = parse("stacks:\n  - {name: a, directory: /x}\n  - {name: a, directory: /y}\n").unwrap_err();
        assert!(err.to_string().contains("configured twice"));
    }

    /// Issue 13, item 15: a configuration or hook script another user may
    /// change, directly or through a directory above it, is refused.
    #[test]
    fn configs_and_hook_scripts_others_can_change_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let set = |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("etc");
        std::fs::create_dir(&dir).unwrap();
        let config = dir.join("clusterup.yaml");
        let script = dir.join("pre.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        set(&script, 0o755);
        std::fs::write(
            &config,
            format!("stacks:\n  - name: a\n    directory: /srv\n    hooks: {{pre_update: {} now}}\n", script.display()),
        )
        .unwrap();
        set(&config, 0o600);
        let resolve_it = || {
            let src = Sources { config: Some(&config), state_dir: Some(tmp.path()), stack: None, cwd: tmp.path() };
            resolve(&src).map(|_| ()).map_err(|e| format!("{e:#}"))
        };
        assert_eq!(resolve_it(), Ok(()));
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            // Group root may write; another group may not.
            set(&config, 0o660);
            assert_eq!(resolve_it(), Ok(()));
            std::os::unix::fs::chown(&config, None, Some(65534)).unwrap();
        }
        for (path, mode, want) in [(&config, 0o660, "chmod go-w"), (&config, 0o606, "writable by other users")] {
            if mode == 0o660 && !root {
                continue;
            }
            set(path, mode);
            let err = resolve_it().unwrap_err();
            assert!(err.contains(want) && err.contains("clusterup.yaml"), "{err}");
            set(path, 0o600);
        }
        set(&dir, 0o777);
        let err = resolve_it().unwrap_err();
        assert!(err.contains(&format!("directory {}", dir.display())), "{err}");
        set(&dir, 0o755);
        set(&script, 0o777);
        let err = resolve_it().unwrap_err();
        assert!(err.contains("hook script") && err.contains("pre.sh"), "{err}");
        set(&script, 0o755);
        if root {
            std::os::unix::fs::chown(&config, Some(65534), None).unwrap();
            let err = resolve_it().unwrap_err();
            assert!(err.contains("belongs to uid 65534"), "{err}");
        }
    }

    #[test]
    fn project_name_follows_compose() {
        assert_eq!(project_name_of(Path::new("/srv/My.App_1")), "myapp_1");
        assert_eq!(project_name_of(Path::new("/srv/-x")), "x");
    }

    #[test]
    fn selecting_an_unknown_stack_lists_the_known_ones() {
        let stacks = parse("stacks:\n  - {name: a, directory: /x}\n").unwrap();
        let err = select(stacks, Some("b")).unwrap_err();
        assert!(err.to_string().contains("known stacks: a"));
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clusterup.yaml");
        let stacks = from_config(&path, &std::fs::read_to_string(&path).unwrap(), None).unwrap();
        assert_eq!(stacks.len(), 2);
        assert_eq!(stacks[0].windows.len(), 1);
        assert!(stacks[1].git.is_some());
    }

    /// Each bad configuration is refused with the file, where, and what is
    /// wrong or expected.
    #[test]
    fn malformed_configurations() {
        let head = "stacks:\n  - name: web\n    directory: /srv\n";
        let cases: Vec<(String, &str)> = vec![
            ("stacks: [\n".into(), "line"),
            ("stacks:\n  - name: web\n    directory: /srv\n  directory: /x\n".into(), "line"),
            ("stacks:\n\t- name: web\n".into(), "line 2"),
            ("stacks: {name: web}\n".into(), "expected a sequence"),
            ("stacks:\n  - name: web\n    directory: /srv\n    directory: /other\n".into(), "duplicate"),
            ("stacks:\n  - directory: /srv\n".into(), "missing field `name`"),
            ("stacks:\n  - name: web\n".into(), "needs a `directory` or a `git` source"),
            ("stacks:\n  - name: ''\n    directory: /srv\n".into(), "not a valid stack name"),
            ("stacks:\n  - name: ../etc\n    directory: /srv\n".into(), "not a valid stack name"),
            ("colour: blue\nstacks: []\n".into(), "unknown field `colour`"),
            (format!("{head}    colour: blue\n"), "unknown field `colour`"),
            (format!("{head}    health: {{timeout: soon}}\n"), "invalid duration"),
            (format!("{head}    health: {{timeout: 30}}\n"), "line 4"),
            (format!("{head}    health: {{stability: -1s}}\n"), "invalid duration"),
            (format!("{head}    health: {{timeout: 30s, retries: 3}}\n"), "unknown field `retries`"),
            (format!("{head}    compose_files: compose.yaml\n"), "line 4"),
            (format!("{head}    compose_files: [../../etc/compose.yaml]\n"), "inside the stack directory"),
            (format!("{head}    compose_files: [/etc/compose.yaml]\n"), "inside the stack directory"),
            ("stacks:\n  - name: web\n    git: {url: u, path: ../up}\n".into(), "inside the repository"),
            ("stacks:\n  - name: web\n    git: {branch: main}\n".into(), "git.url: missing"),
            ("stacks:\n  - name: web\n    git: {in_place: true}\n".into(), "needs `directory`"),
            (
                "stacks:\n  - name: web\n    directory: /srv\n    git: {in_place: true, url: u}\n".into(),
                "own remote and credentials",
            ),
            (
                "stacks:\n  - name: web\n    directory: /\n    git: {in_place: true}\n".into(),
                "not inside a git work tree",
            ),
            ("stacks:\n  - name: web\n    git: {url: u, depth: 1}\n".into(), "unknown field `depth`"),
            (format!("{head}    auto: {{images: maybe}}\n"), "line 4"),
            (format!("{head}    auto: {{everything: true}}\n"), "unknown field `everything`"),
            (format!("{head}    window: \"Mon-Fry 02:00-03:00\"\n"), "not a day"),
            (format!("{head}    window: \"Mon 2-3\"\n"), "not HH:MM"),
            (format!("{head}    window: [\"Mon 02:00-03:00 Mars/Base\"]\n"), "unknown time zone"),
            (format!("{head}    keep_images: many\n"), "line 4"),
            (format!("{head}    services: {{db: {{skip: yes please}}}}\n"), "line 4"),
            (format!("{head}    services: {{db: {{health_timeout: 1 fortnightish}}}}\n"), "invalid duration"),
            (format!("{head}    notify: [{{type: pager, url: x}}]\n"), "unknown variant `pager`"),
            (format!("{head}    notify: [{{type: github, repo: o/r, token: secret}}]\n"), "unknown field `token`"),
            (format!("{head}    hooks: {{pre_update: x, timeout: never}}\n"), "invalid duration"),
            // Issue 13, items 7 and 18: found when the file is read.
            (format!("{head}    notify: [{{type: webhook}}]\n"), "`url` is required"),
            (format!("{head}    notify: [{{type: slack, url: 'http://hooks.example/T/B/x'}}]\n"), "insecure: true"),
            (
                format!("{head}    notify: [{{type: github, repo: o/r, api_url: 'http://ghe.example/api'}}]\n"),
                "plain HTTP",
            ),
            (format!("{head}    notify: [{{type: github}}]\n"), "`repo`"),
            (
                format!("notify: [{{type: webhook, url: 'ftp://x'}}]\n{head}"),
                "notify[0]: ftp://x is not an http(s) URL",
            ),
            (format!("{head}    timeouts: {{engine: 1s}}\n"), "unknown field `timeouts`"),
            (format!("timeouts: {{engine: 500ms}}\n{head}"), "timeouts.engine: at least 1s"),
            (format!("timeouts: {{compose: 0s}}\n{head}"), "a timeout of 0"),
            (format!("{head}  - name: web\n    directory: /other\n"), "configured twice"),
        ];
        for (text, want) in cases {
            let err = match parse(&text) {
                Ok(_) => panic!("accepted: {text:?}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.starts_with("configuration file /etc/clusterup/clusterup.yaml: "), "{err}");
            assert!(err.contains(want), "{text:?}: wanted {want:?} in {err}");
        }
    }

    /// Zero configuration in a git checkout: a branch following an
    /// upstream is a git stack in place; no upstream, or a detached HEAD,
    /// leaves a plain directory stack.
    #[test]
    fn a_checkout_is_a_git_stack_only_on_a_branch_with_an_upstream() {
        use crate::seams::fake::git;
        let tmp = tempfile::tempdir().unwrap();
        let (bare, work) = (tmp.path().join("remote.git"), tmp.path().join("work"));
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "--bare", "-q"]);
        git(tmp.path(), &["init", "-q", "work"]);
        std::fs::create_dir_all(work.join("stack")).unwrap();
        std::fs::write(work.join("stack/compose.yaml"), "services: {}\n").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-qm", "one"]);
        let stack = || from_directory(&work.join("stack"), Some(tmp.path())).unwrap();
        assert!(stack().git.is_none(), "no upstream: a directory stack");

        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        git(&work, &["push", "-q", "-u", "origin", "HEAD:main"]);
        let source = stack().git.expect("a branch with an upstream: a git stack in place");
        assert_eq!(source.in_place.as_deref(), Some("origin"));
        assert_eq!(source.branch, "main");
        assert_eq!(source.path, PathBuf::from("stack"));

        git(&work, &["checkout", "-q", "--detach"]);
        assert!(stack().git.is_none(), "a detached HEAD: a directory stack");

        // A checkout another user owns is refused by git; clusterup says
        // so, and how to trust it.
        let chown = std::process::Command::new("chown").args(["-R", "4242"]).arg(&work).status().unwrap();
        assert!(chown.success());
        let Err(err) = from_directory(&work.join("stack"), Some(tmp.path())) else { panic!("not refused") };
        let err = err.to_string();
        assert!(err.contains("owned by") && err.contains("safe.directory"), "{err}");
    }
}
