//! The Compose CLI seam. Compose stays the owner of container lifecycle and
//! of the compose file format: clusterup asks it for the normalized model
//! and to recreate one service at a time.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::at_once::Places;
use crate::exit::usage;
/// Names Compose looks for, in its own order of preference.
pub const COMPOSE_FILE_NAMES: [&str; 4] = ["compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"];

/// The stack as Compose understands it after interpolation, `extends`,
/// `include`, profiles and merges.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ComposeModel {
    pub project: String,
    pub services: BTreeMap<String, ComposeService>,
    /// Top-level `networks`, `volumes`, `secrets` and `configs`, by section
    /// and name.
    pub top_level: BTreeMap<String, BTreeMap<String, Value>>,
}

pub const TOP_LEVEL_SECTIONS: [&str; 4] = ["networks", "volumes", "secrets", "configs"];

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ComposeService {
    pub image: Option<String>,
    /// Built from source by compose, so no registry holds it.
    pub build: bool,
    pub depends_on: Vec<String>,
    /// The whole normalized service, for field-by-field comparison.
    pub raw: Value,
}

impl ComposeModel {
    /// The image a service runs: its `image:`, or for a built service
    /// without one the name Compose builds it under.
    pub fn image_of(&self, name: &str, svc: &ComposeService) -> String {
        svc.image.clone().unwrap_or_else(|| format!("{}-{name}", self.project))
    }

    pub fn from_json(json: &Value) -> Result<ComposeModel> {
        let project =
            json.get("name").and_then(Value::as_str).context("compose config has no project name")?.to_string();
        let mut services = BTreeMap::new();
        if let Some(map) = json.get("services").and_then(Value::as_object) {
            for (name, svc) in map {
                check_service_name(name)?;
                let depends_on = match svc.get("depends_on") {
                    Some(Value::Object(m)) => m.keys().cloned().collect(),
                    Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
                    _ => Vec::new(),
                };
                services.insert(
                    name.clone(),
                    ComposeService {
                        image: svc.get("image").and_then(Value::as_str).map(String::from),
                        build: svc.get("build").is_some(),
                        depends_on,
                        raw: svc.clone(),
                    },
                );
            }
        }
        let top_level = TOP_LEVEL_SECTIONS
            .iter()
            .map(|section| {
                let entries = json
                    .get(*section)
                    .and_then(Value::as_object)
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                (section.to_string(), entries)
            })
            .collect();
        Ok(ComposeModel { project, services, top_level })
    }
}

/// Service names reach compose's command line: one that starts with `-`
/// would be read as an option (`--force-recreate` recreated services
/// outside the plan), one with control characters garbles terminals.
fn check_service_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        return Ok(());
    }
    Err(usage(format!(
        "service name {:?} is refused: a service name holds only letters, digits, '.', '_' and '-', \
         and does not start with '-'; rename it in the compose file (nothing was changed)",
        crate::redact::terminal_safe(name)
    )))
}

/// Compose writes absolute paths (bind mounts, env files, build contexts)
/// into the model. A model read from another directory (a commit exported
/// for comparison) is moved to the directory it will be deployed from, so
/// only real differences remain.
pub fn relocate(value: &mut Value, from: &Path, to: &Path) {
    let (from, to) = (from.to_string_lossy(), to.to_string_lossy());
    relocate_str(value, from.trim_end_matches('/'), to.trim_end_matches('/'));
}

fn relocate_str(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(s) => {
            if let Some(rest) = s.strip_prefix(from)
                && (rest.is_empty() || rest.starts_with('/'))
            {
                *s = format!("{to}{rest}");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| relocate_str(v, from, to)),
        Value::Object(map) => map.values_mut().for_each(|v| relocate_str(v, from, to)),
        _ => {}
    }
}

pub trait Compose {
    fn model(&self) -> Result<ComposeModel>;
    /// The config hash Compose would label each service's container with:
    /// which services `up` would recreate, asked without side effects.
    fn hashes(&self) -> Result<BTreeMap<String, String>>;
    /// Recreates one service if its container differs from the model (or
    /// its image id from the local tag), touching nothing else.
    /// `force`: recreate even if Compose sees no change (a bind-mounted
    /// file changed, or the container it shares a namespace with did).
    fn up(&self, project: &str, service: &str, force: bool) -> Result<()>;
    /// Creates (without starting) containers of `service` from the current
    /// model up to `replicas`, leaving the existing ones as they are.
    fn scale_up(&self, project: &str, service: &str, replicas: usize) -> Result<()>;
    /// Builds the images of `services` from the files as they are now,
    /// with the engine's builder, touching no container; each line of the
    /// build's log goes to `progress` as it comes.
    fn build(&self, project: &str, services: &[String], progress: &mut dyn FnMut(&str)) -> Result<()>;

    /// `model` and `hashes`, read at the same time.
    fn model_and_hashes(&self) -> Result<(ComposeModel, BTreeMap<String, String>)> {
        Ok((self.model()?, self.hashes()?))
    }

    /// Every service the files define, under any profile.
    fn all_services(&self) -> Result<Vec<String>>;

    /// The compose files alone, relative to the directory.
    fn compose_files(&self) -> Vec<PathBuf>;

    /// The files that define the stack, for a text diff: the compose files
    /// and `.env`, relative to the directory.
    fn source_files(&self) -> Vec<PathBuf> {
        let mut files = self.compose_files();
        files.push(PathBuf::from(".env"));
        files
    }

    /// The same compose files in `copy`, a copy of the tree at `root` (a
    /// commit exported for comparison, a kept copy), read as if deployed
    /// from `root`, under `project` (None: this one's): a path that leaves
    /// the stack directory (`../shared/app.conf`) maps back as well as one
    /// inside it.
    fn in_copy(&self, copy: &Path, root: &Path, project: Option<&str>) -> Box<dyn Compose>;
    /// A key for what `model_and_hashes` gives now: the same key, the same
    /// answer. None when that cannot be told (then Compose is asked).
    fn cache_key(&self) -> Option<String> {
        None
    }
}

/// Where a stack's compose files are, and how long one Compose call may
/// take: what `Open::compose` turns into a `Compose`.
#[derive(Debug, Clone)]
pub struct ComposeSpec {
    pub directory: PathBuf,
    /// Empty: Compose's default file names.
    pub files: Vec<PathBuf>,
    /// None: the name Compose derives.
    pub project: Option<String>,
    pub timeout: std::time::Duration,
    /// One `docker compose build`, which may compile for far longer than
    /// any other Compose call takes.
    pub build_timeout: std::time::Duration,
}

pub struct ComposeCli {
    directory: PathBuf,
    files: Vec<PathBuf>,
    project: Option<String>,
    /// A model read in a copy (from) is moved to where it will be
    /// deployed from (to).
    relocation: Option<(PathBuf, PathBuf)>,
    timeout: std::time::Duration,
    build_timeout: std::time::Duration,
}

impl ComposeCli {
    pub fn new(spec: &ComposeSpec) -> ComposeCli {
        ComposeCli {
            directory: spec.directory.clone(),
            files: spec.files.clone(),
            project: spec.project.clone(),
            relocation: None,
            timeout: spec.timeout,
            build_timeout: spec.build_timeout,
        }
    }

    fn command(&self, project: Option<&str>) -> Command {
        let mut cmd = self.bare_command(project);
        for f in &self.files {
            cmd.arg("--file").arg(f);
        }
        cmd
    }

    /// Compose without the stack's files (`command` adds them).
    fn bare_command(&self, project: Option<&str>) -> Command {
        let mut cmd = match plugin() {
            Some(path) => Command::new(path),
            None => {
                let mut docker = Command::new("docker");
                docker.arg("compose");
                docker
            }
        };
        if let Some(p) = project.or(self.project.as_deref()) {
            cmd.args(["--project-name", p]);
        }
        // Compose may ask questions (e.g. "Recreate volume (data will be
        // lost)?"); no one must ever answer yes on its behalf. Its own
        // process group keeps a terminal's Ctrl-C from killing it halfway
        // through a recreate: clusterup decides when to stop.
        cmd.current_dir(&self.directory).stdin(Stdio::null()).process_group(0);
        cmd
    }

    /// Runs one compose command within the stack's compose timeout.
    fn run(&self, cmd: Command, what: &str) -> Result<Output> {
        self.run_with(cmd, None, what)
    }

    fn run_with(&self, cmd: Command, input: Option<&[u8]>, what: &str) -> Result<Output> {
        self.run_watching_with(cmd, input, what, &mut |_| {})
    }

    fn run_watching_with(
        &self,
        cmd: Command,
        input: Option<&[u8]>,
        what: &str,
        watch: &mut dyn FnMut(&str),
    ) -> Result<Output> {
        self.run_within(cmd, input, what, watch, (self.timeout, "timeouts.compose"))
    }

    /// `bound`: how long the call may take, and the key that sets it.
    fn run_within(
        &self,
        mut cmd: Command,
        input: Option<&[u8]>,
        what: &str,
        watch: &mut dyn FnMut(&str),
        bound: (std::time::Duration, &str),
    ) -> Result<Output> {
        let _place = RUNNING.take("compose");
        let (timeout, key) = bound;
        let done = super::process::run_watching(&mut cmd, input, timeout, usize::MAX, watch).map_err(|e| match e {
            super::process::Failure::Spawn(e) => {
                anyhow::Error::new(e).context(format!("{what}: running `docker compose`; is the Docker CLI installed?"))
            }
            timed_out => anyhow::anyhow!("{what}: `docker compose` {timed_out} ({key})"),
        })?;
        Ok(Output { status: done.status, stdout: done.stdout, stderr: done.stderr })
    }

    fn up_with(&self, project: &str, service: &str, options: &[&str]) -> Result<()> {
        let mut cmd = self.command(Some(project));
        // `--`: whatever the name, it is never read as an option.
        cmd.args(["up", "--no-deps", "--pull", "never", "--quiet-pull"]).args(options).arg("--").arg(service);
        let out = self.run(cmd, "recreating a service")?;
        if !out.status.success() {
            bail!("docker compose up {service} failed: {}", stderr_of(&out));
        }
        Ok(())
    }

    fn hash_command(&self) -> Command {
        let mut cmd = self.command(None);
        cmd.args(["config", "--hash", "*"]);
        cmd
    }

    /// Up to Compose 2.40 at least, `config --hash` leaves `env_file`
    /// unread while `up` labels containers with the hash of the service
    /// with its env files merged in (docker/compose#14001): a service with
    /// an env file would never look in step. Such a project's hashes are
    /// taken of its resolved model, which has the files merged in.
    fn reads_env_files(&self) -> bool {
        let env: Vec<_> = std::env::vars_os().collect();
        super::compose_inputs::inputs(&self.directory, &self.files, &env).is_none_or(|i| i.env_files)
    }

    fn hashes_of(&self, resolved: &Value) -> Result<BTreeMap<String, String>> {
        // The resolved model alone: with the stack's files too, Compose
        // would merge the two and double every list.
        let mut cmd = self.bare_command(None);
        cmd.args(["--file", "-", "--project-directory"]).arg(&self.directory).args(["config", "--hash", "*"]);
        parse_hashes(self.run_with(cmd, Some(resolved.to_string().as_bytes()), "reading compose config hashes")?)
    }

    /// `docker compose config --format json`, as Compose prints it.
    fn resolved_model(&self) -> Result<Value> {
        self.register_env_files();
        let mut cmd = self.command(None);
        cmd.args(["config", "--format", "json"]);
        let out = self.run(cmd, "reading the compose model")?;
        if !out.status.success() {
            require_v2()?;
            return Err(usage(format!(
                "invalid compose configuration in {} (nothing was changed): {}",
                self.describe_files(),
                stderr_of(&out)
            )));
        }
        let json: Value = serde_json::from_slice(&out.stdout).context("reading `docker compose config` output")?;
        register_environment(&json);
        Ok(json)
    }

    fn model_of(&self, mut json: Value) -> Result<ComposeModel> {
        if let Some((from, to)) = &self.relocation {
            relocate(&mut json, from, to);
        }
        ComposeModel::from_json(&json)
    }

    fn describe_files(&self) -> String {
        let names: Vec<String> =
            self.compose_files().into_iter().map(|f| self.directory.join(f).display().to_string()).collect();
        if names.is_empty() { format!("the compose file in {}", self.directory.display()) } else { names.join(", ") }
    }
}

/// How many Compose processes run at once in this process: each is a Go
/// program of about 50 MB resident, and stacks checked at once would
/// otherwise start two each.
const COMPOSE_AT_ONCE: usize = 4;

/// Compose runs under way in this process; each one's wait is bounded by
/// timeouts.compose, so a wait for a place is too.
static RUNNING: Places = Places::new(COMPOSE_AT_ONCE);

/// The Compose v2 plugin binary, where the Docker CLI would find it. Run
/// directly it behaves as under `docker compose`, without the CLI's own
/// start-up and its plugin metadata query: two Go programs fewer to start
/// per call, which is most of what a no-op run costs.
fn plugin() -> Option<&'static Path> {
    static PLUGIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    PLUGIN
        .get_or_init(|| {
            let user = std::env::var_os("DOCKER_CONFIG")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
            let system = [
                "/usr/local/lib/docker/cli-plugins",
                "/usr/local/libexec/docker/cli-plugins",
                "/usr/lib/docker/cli-plugins",
                "/usr/libexec/docker/cli-plugins",
            ];
            user.map(|u| u.join("cli-plugins"))
                .into_iter()
                .chain(system.iter().map(PathBuf::from))
                .map(|dir| dir.join("docker-compose"))
                .find(|p| p.is_file())
        })
        .as_deref()
}

fn parse_hashes(out: Output) -> Result<BTreeMap<String, String>> {
    if !out.status.success() {
        bail!("docker compose config --hash failed: {}", stderr_of(&out));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(s, h)| (s.to_string(), h.trim().to_string()))
        .collect())
}

/// How much of a failed build's log an error shows: its cause is at the end.
const BUILD_LINES_SHOWN: usize = 20;

/// What Compose said on failure, without the environment's values.
fn stderr_of(out: &Output) -> String {
    crate::redact::external(String::from_utf8_lossy(&out.stderr).trim())
}

/// A failing `docker compose` may simply be Compose v1 or none at all; say
/// so rather than pass on a confusing message.
fn require_v2() -> Result<()> {
    let succeeds = |program: &str, args: &[&str]| {
        let bound = std::time::Duration::from_secs(30);
        super::process::run(Command::new(program).args(args), None, bound, 4096).is_ok_and(|o| o.status.success())
    };
    if succeeds("docker", &["compose", "version", "--short"]) {
        return Ok(());
    }
    let found = if succeeds("docker-compose", &["version"]) {
        "only docker-compose v1 (Python), which names and recreates containers differently, is installed"
    } else {
        "`docker compose` is not available"
    };
    Err(usage(format!(
        "clusterup needs Docker Compose v2, but {found}; install the docker-compose-plugin package \
         (or the compose binary as ~/.docker/cli-plugins/docker-compose)"
    )))
}

/// Compose echoes values in its errors (`invalid hostPort: hunter2`):
/// every value of the stack's environment is kept out of them.
fn register_environment(json: &Value) {
    for svc in json.get("services").and_then(Value::as_object).into_iter().flat_map(|m| m.values()) {
        let env = svc.get("environment").and_then(Value::as_object);
        let args = svc.get("build").and_then(|b| b.get("args")).and_then(Value::as_object);
        for value in env.into_iter().chain(args).flat_map(|m| m.values()) {
            if let Some(v) = value.as_str() {
                crate::redact::register_env_value(v);
            }
        }
    }
}

impl ComposeCli {
    /// The values Compose may quote when it fails: `.env` and every
    /// `env_file` the compose files name, known before Compose runs.
    fn register_env_files(&self) {
        crate::redact::register_env_file(&self.directory.join(".env"));
        for file in self.compose_files() {
            for env_file in super::compose_inputs::env_file_entries(&self.directory.join(&file)) {
                crate::redact::register_env_file(&self.directory.join(env_file));
            }
        }
    }
}

impl Compose for ComposeCli {
    fn model(&self) -> Result<ComposeModel> {
        self.model_of(self.resolved_model()?)
    }

    fn hashes(&self) -> Result<BTreeMap<String, String>> {
        if self.reads_env_files() {
            return self.hashes_of(&self.resolved_model()?);
        }
        parse_hashes(self.run(self.hash_command(), "reading compose config hashes")?)
    }

    fn up(&self, project: &str, service: &str, force: bool) -> Result<()> {
        self.up_with(project, service, if force { &["--detach", "--force-recreate"] } else { &["--detach"] })
    }

    fn build(&self, project: &str, services: &[String], progress: &mut dyn FnMut(&str)) -> Result<()> {
        let mut cmd = self.command(Some(project));
        // One line per event, terminal or not: the display is clusterup's.
        cmd.args(["--progress", "plain", "build", "--"]).args(services);
        let out = self.run_within(cmd, None, "building images", progress, (self.build_timeout, "timeouts.build"))?;
        if !out.status.success() {
            // Compose prints the build's log on stdout, its verdict on stderr.
            let log = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(BUILD_LINES_SHOWN)..].join("\n");
            bail!("docker compose build {} failed:\n{}", services.join(" "), crate::redact::external(&tail));
        }
        Ok(())
    }

    fn scale_up(&self, project: &str, service: &str, replicas: usize) -> Result<()> {
        self.up_with(project, service, &["--no-start", "--no-recreate", "--scale", &format!("{service}={replicas}")])
    }

    fn model_and_hashes(&self) -> Result<(ComposeModel, BTreeMap<String, String>)> {
        if self.reads_env_files() {
            let resolved = self.resolved_model()?;
            let hashes = self.hashes_of(&resolved)?;
            return Ok((self.model_of(resolved)?, hashes));
        }
        // Two processes at once: each spends most of its time starting up.
        let (model, hashes) = std::thread::scope(|scope| {
            let hashes = scope.spawn(|| self.hashes());
            (self.model(), hashes.join())
        });
        let hashes = hashes.unwrap_or_else(|_| Err(anyhow::anyhow!("reading compose config hashes failed")));
        Ok((model?, hashes?))
    }

    fn all_services(&self) -> Result<Vec<String>> {
        let mut cmd = self.command(None);
        cmd.args(["--profile", "*", "config", "--services"]);
        let out = self.run(cmd, "listing the services of the compose files")?;
        if !out.status.success() {
            bail!("docker compose config --services failed for {}: {}", self.describe_files(), stderr_of(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
    }

    fn compose_files(&self) -> Vec<PathBuf> {
        if !self.files.is_empty() {
            return self.files.clone();
        }
        COMPOSE_FILE_NAMES.iter().map(PathBuf::from).find(|f| self.directory.join(f).is_file()).into_iter().collect()
    }

    fn cache_key(&self) -> Option<String> {
        if self.relocation.is_some() {
            return None;
        }
        let env: Vec<_> = std::env::vars_os().collect();
        super::compose_inputs::cache_key(plugin()?, &self.directory, &self.files, self.project.as_deref(), &env)
    }

    fn in_copy(&self, copy: &Path, root: &Path, project: Option<&str>) -> Box<dyn Compose> {
        let inside = self.directory.strip_prefix(root).unwrap_or(Path::new(""));
        Box::new(ComposeCli {
            directory: copy.join(inside),
            files: self.files.clone(),
            project: project.map(String::from).or_else(|| self.project.clone()),
            relocation: Some((copy.to_path_buf(), root.to_path_buf())),
            timeout: self.timeout,
            build_timeout: self.build_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_reads_images_builds_and_both_depends_on_forms() {
        let json: Value = serde_json::from_str(
            r#"{"name":"shop","services":{
                "web":{"image":"r/web:1","depends_on":{"db":{"condition":"service_started"}}},
                "db":{"image":"postgres:16"},
                "job":{"build":{"context":"."},"depends_on":["db"]}}}"#,
        )
        .unwrap();
        let m = ComposeModel::from_json(&json).unwrap();
        assert_eq!(m.project, "shop");
        assert_eq!(m.services["web"].depends_on, vec!["db"]);
        assert_eq!(m.services["job"].depends_on, vec!["db"]);
        assert!(m.services["job"].build && m.services["job"].image.is_none());
        assert_eq!(m.services["db"].image.as_deref(), Some("postgres:16"));
    }

    /// Values Compose may quote are known before Compose runs: `.env` and
    /// every `env_file` named, in any of its spellings.
    #[test]
    fn env_file_values_are_known_before_compose_runs() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write(
            "compose.yaml",
            "services:\n  a:\n    env_file: one.env\n  b:\n    env_file: [two.env, {path: three.env}]\n",
        );
        write(".env", "D=Dot-Env-Value\n");
        write("one.env", "A=One-Env-Value\n");
        write("two.env", "B=Two-Env-Value\n");
        write("three.env", "C=\"Three-Env-Value\"\n");
        let mut stack = crate::settings::from_directory(dir.path(), Some(dir.path())).unwrap();
        stack.project = Some("p".into());
        ComposeCli::new(&stack.compose_spec()).register_env_files();
        let said = "bad: Dot-Env-Value One-Env-Value Two-Env-Value Three-Env-Value";
        assert_eq!(crate::redact::external(said), "bad: <redacted> <redacted> <redacted> <redacted>");
    }

    #[test]
    fn at_most_four_compose_processes_run_at_once() {
        let now = std::sync::Mutex::new((0usize, 0usize));
        std::thread::scope(|scope| {
            for _ in 0..12 {
                scope.spawn(|| {
                    let _place = RUNNING.take("compose");
                    {
                        let mut n = now.lock().unwrap();
                        n.0 += 1;
                        n.1 = n.1.max(n.0);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    now.lock().unwrap().0 -= 1;
                });
            }
        });
        let most = now.lock().unwrap().1;
        assert!((2..=COMPOSE_AT_ONCE).contains(&most), "{most} at once");
    }

    /// Issue 13, item 13: a name that would read as an option is refused.
    #[test]
    fn service_names_that_are_options_are_refused() {
        for bad in ["--force-recreate", "-d", "", "web\u{1b}[2J", "a b", "web;rm"] {
            let json = serde_json::json!({"name": "p", "services": {bad: {"image": "w"}}});
            let err = ComposeModel::from_json(&json).err().unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(err.downcast_ref::<crate::exit::UsageError>().is_some(), "{err}");
            assert!(!err.to_string().contains('\u{1b}'), "{err}");
        }
        for good in ["web", "web-1", "web_1.x", "9lives", "_internal", ".hidden"] {
            let json = serde_json::json!({"name": "p", "services": {good: {"image": "w"}}});
            assert!(ComposeModel::from_json(&json).is_ok(), "{good}");
        }
    }
}
