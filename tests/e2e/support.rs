//! A hermetic stack per test: its own compose project, repositories in the
//! test registry, state dir, Docker CLI config and temp dir, all removed
//! on drop (pass or fail). The test bed itself (engine, Compose v2,
//! registries, fixture images) is brought up by scripts/test.sh; when it
//! is missing the tests fail saying so, never skip.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use tempfile::TempDir;

pub struct Bed {
    pub registry: String,
    pub auth_registry: String,
    pub auth_user: String,
    pub auth_password: String,
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

pub fn bed() -> &'static Bed {
    static BED: OnceLock<Bed> = OnceLock::new();
    BED.get_or_init(|| {
        let bed = Bed {
            registry: env_or("CLUSTERUP_TEST_REGISTRY", "127.0.0.1:5550"),
            auth_registry: env_or("CLUSTERUP_TEST_AUTH_REGISTRY", "127.0.0.1:5551"),
            auth_user: env_or("CLUSTERUP_TEST_AUTH_USER", "clusterup-test"),
            auth_password: env_or("CLUSTERUP_TEST_AUTH_PASSWORD", "Ex4mple-Passw0rd-not-secret"),
        };
        let need = |ok: bool, what: &str| {
            assert!(ok, "test bed incomplete: {what}. Run scripts/test.sh, which sets it up.");
        };
        need(docker(&["info"]).status.success(), "no Docker engine answers `docker info`");
        need(docker(&["compose", "version"]).status.success(), "`docker compose` (v2) is missing");
        need(
            docker(&[
                "image",
                "inspect",
                "clusterup-fixture/web:v1",
                "clusterup-fixture/web:v2",
                "clusterup-fixture/web:bad",
                "clusterup-fixture/web:crash",
                "clusterup-fixture/web:slow",
            ])
            .status
            .success(),
            "fixture images clusterup-fixture/web:{v1,v2,bad,crash,slow} are missing",
        );
        for r in [&bed.registry, &bed.auth_registry] {
            need(std::net::TcpStream::connect(r.as_str()).is_ok(), &format!("no registry on {r}"));
        }
        bed
    })
}

pub fn docker(args: &[&str]) -> Output {
    let _bridge = matches!(args.first(), Some(&"run" | &"build")).then(on_default_bridge);
    Command::new("docker").args(args).stdin(Stdio::null()).output().expect("running docker")
}

/// dockerd 20.10 deletes docker0, the default bridge, for a moment while
/// another engine starts, restarts or stops (`scripts/lib/private-dockerd.sh`
/// puts it back): a `docker run` or `docker build` on the main engine
/// holds this shared, a private engine's start, restart or stop holds it
/// alone, so the two never meet.
static DEFAULT_BRIDGE: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn on_default_bridge() -> std::sync::RwLockReadGuard<'static, ()> {
    DEFAULT_BRIDGE.read().unwrap_or_else(|e| e.into_inner())
}

pub fn moving_default_bridge() -> std::sync::RwLockWriteGuard<'static, ()> {
    DEFAULT_BRIDGE.write().unwrap_or_else(|e| e.into_inner())
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn image_id(reference: &str) -> String {
    docker_ok(&["image", "inspect", "-f", "{{.Id}}", reference])
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Runs `cmd` to its end.
    pub fn of(mut cmd: Command) -> Run {
        let out = cmd.output().expect("running clusterup");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }

    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

pub struct Stack {
    pub name: String,
    pub dir: PathBuf,
    pub state: PathBuf,
    pub docker_config: PathBuf,
    root: TempDir,
    tags: Vec<String>,
    registry_process: Option<Child>,
    /// Another engine than the shared one, for compose and clusterup.
    pub docker_host: Option<String>,
}

impl Stack {
    pub fn new(test: &str) -> Stack {
        let bed = bed();
        let name = format!("cu-{test}-{}", std::process::id());
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let docker_config = root.path().join("docker-config");
        std::fs::create_dir_all(&docker_config).unwrap();
        let stack = Stack {
            state: root.path().join("state"),
            name,
            dir,
            docker_config,
            root,
            tags: Vec::new(),
            registry_process: None,
            docker_host: None,
        };
        stack.write_docker_config(&bed.auth_password);
        stack
    }

    /// One service `web` from `image`, running v1, with v2 already pushed
    /// to the registry: an update is pending.
    pub fn web_update_pending(test: &str, image: impl Fn(&Stack) -> String) -> (Stack, String) {
        let (mut stack, web) = Stack::web_running(test, image);
        stack.publish("v2", &web);
        (stack, web)
    }

    /// `web` and `other` (which depends on web) from this stack's
    /// repositories, running v1; then `next` is pushed for both.
    pub fn two_services_pushed(test: &str, next: &str, extra_config: &str) -> Stack {
        let mut stack = Stack::new(test);
        let (web, other) = (stack.image("web"), stack.image("other"));
        stack.publish("v1", &web);
        stack.publish("v1", &other);
        stack.write_compose(&format!(
            "services:\n  web:\n    image: {web}\n  other:\n    image: {other}\n    depends_on: [web]\n"
        ));
        stack.write_config(extra_config);
        stack.up();
        stack.publish(next, &web);
        stack.publish(next, &other);
        stack
    }

    /// One service `web` from `image`, running v1, with nothing pending;
    /// returns the stack and web's reference.
    pub fn web_running(test: &str, image: impl Fn(&Stack) -> String) -> (Stack, String) {
        let mut stack = Stack::new(test);
        let web = image(&stack);
        stack.publish("v1", &web);
        stack.write_compose(&format!("services:\n  web:\n    image: {web}\n"));
        stack.write_config("");
        stack.up();
        (stack, web)
    }

    /// `web` running v1 from a registry of the test's own (to be stopped
    /// or broken at will); returns the stack and web's reference.
    pub fn web_from_own_registry(test: &str) -> (Stack, String) {
        let mut stack = Stack::new(test);
        let registry = stack.start_own_registry();
        let web = format!("{registry}/{}/web:latest", stack.name);
        stack.publish("v1", &web);
        stack.write_compose(&format!("services:\n  web:\n    image: {web}\n"));
        stack.write_config("");
        stack.up();
        (stack, web)
    }

    /// The outcome of each revision in the journal, oldest first.
    pub fn outcomes(&self) -> Vec<String> {
        let run = self.clusterup(&["rollback", "--list", "--json"]);
        let mut revs: Vec<(u64, String)> = run.json()["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].as_u64().unwrap(), r["outcome"].as_str().unwrap_or("unfinished").to_string()))
            .collect();
        revs.sort();
        revs.into_iter().map(|(_, o)| o).collect()
    }

    /// A reference in the shared test registry, private to this test.
    pub fn image(&self, service: &str) -> String {
        format!("{}/{}/{service}:latest", bed().registry, self.name)
    }

    pub fn auth_image(&self, service: &str) -> String {
        format!("{}/{}/{service}:latest", bed().auth_registry, self.name)
    }

    /// This test's Docker CLI config, holding the auth registry's password.
    pub fn write_docker_config(&self, password: &str) {
        let bed = bed();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", bed.auth_user));
        let json = format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, bed.auth_registry);
        std::fs::write(self.docker_config.join("config.json"), json).unwrap();
    }

    /// Pushes a fixture image (v1, v2, bad) to the registry as `reference`.
    /// The host's own tag is left where it was, as on a real host where a
    /// new image appears in the registry and nowhere else.
    pub fn publish(&mut self, fixture: &str, reference: &str) {
        let previous = docker(&["image", "inspect", "-f", "{{.Id}}", reference]);
        docker_ok(&["tag", &format!("clusterup-fixture/web:{fixture}"), reference]);
        if !self.tags.iter().any(|t| t == reference) {
            self.tags.push(reference.to_string());
        }
        let config = self.docker_config.to_string_lossy().to_string();
        docker_ok(&["--config", &config, "push", "-q", reference]);
        if previous.status.success() {
            docker_ok(&["tag", String::from_utf8_lossy(&previous.stdout).trim(), reference]);
        }
    }

    /// Tags a fixture under a local name only: a "locally built" image.
    pub fn tag_local(&mut self, fixture: &str, reference: &str) {
        docker_ok(&["tag", &format!("clusterup-fixture/web:{fixture}"), reference]);
        self.tags.push(reference.to_string());
    }

    pub fn write_compose(&self, yaml: &str) {
        std::fs::write(self.dir.join("compose.yaml"), yaml).unwrap();
    }

    /// A configuration naming this one stack; `extra` is appended to the
    /// stack entry (indented by the caller).
    pub fn write_config(&self, extra: &str) -> PathBuf {
        let path = self.root.path().join("clusterup.yaml");
        let text = format!(
            "stacks:\n  - name: {}\n    directory: {}\n    health:\n      timeout: 30s\n      stability: 1s\n{extra}",
            self.name,
            self.dir.display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.path().join("clusterup.yaml")
    }

    pub fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(["compose", "--project-name", &self.name])
            .args(args)
            .current_dir(&self.dir)
            .env("DOCKER_CONFIG", &self.docker_config)
            .envs(self.docker_host.iter().map(|h| ("DOCKER_HOST", h)))
            .stdin(Stdio::null())
            .output()
            .expect("running docker compose")
    }

    pub fn up(&self) {
        let out = self.compose(&["up", "--detach", "--wait", "--pull", "never"]);
        assert!(out.status.success(), "compose up failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs clusterup with this stack's configuration (when written) and
    /// state dir, and a clean environment.
    pub fn clusterup(&self, args: &[&str]) -> Run {
        self.clusterup_in(&self.dir, args)
    }

    pub fn clusterup_in(&self, cwd: &Path, args: &[&str]) -> Run {
        Run::of(self.clusterup_command(cwd, args))
    }

    /// Runs clusterup with its clock standing at `now` (RFC 3339).
    pub fn clusterup_at(&self, now: &str, args: &[&str]) -> Run {
        let mut cmd = self.clusterup_command(&self.dir, args);
        cmd.env("CLUSTERUP_NOW", now);
        Run::of(cmd)
    }

    pub fn clusterup_command(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clusterup"));
        cmd.args(args)
            .current_dir(cwd)
            .env_remove("CLUSTERUP_CONFIG")
            .env("CLUSTERUP_STATE_DIR", &self.state)
            .env("DOCKER_CONFIG", &self.docker_config)
            .envs(self.docker_host.iter().map(|h| ("DOCKER_HOST", h)))
            .stdin(Stdio::null());
        if self.config_path().exists() {
            cmd.env("CLUSTERUP_CONFIG", self.config_path());
        }
        cmd
    }

    fn inspect(&self, service: &str, format: &str) -> String {
        let id = self.container_id(service);
        docker_ok(&["inspect", "-f", format, &id])
    }

    pub fn container_id(&self, service: &str) -> String {
        let out = self.compose(&["ps", "--all", "--quiet", service]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!id.is_empty() && !id.contains('\n'), "expected one container for {service}, got {id:?}");
        id
    }

    /// The image the service runs, or None while Compose is mid-recreate
    /// (two containers) or before it exists.
    pub fn try_running_image(&self, service: &str) -> Option<String> {
        let out = self.compose(&["ps", "--all", "--quiet", service]);
        let ids = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if ids.is_empty() || ids.contains('\n') {
            return None;
        }
        let out = docker(&["inspect", "-f", "{{.Image}}", &ids]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn running_image(&self, service: &str) -> String {
        self.inspect(service, "{{.Image}}")
    }

    pub fn health(&self, service: &str) -> String {
        self.inspect(service, "{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}")
    }

    pub fn journal(&self) -> String {
        std::fs::read_to_string(self.state.join(&self.name).join("journal.jsonl")).unwrap_or_default()
    }

    /// A registry of this test's own on a free port, to be stopped at will.
    pub fn start_own_registry(&mut self) -> String {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let dir = self.root.path().join("own-registry");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.yml");
        let mut f = std::fs::File::create(&config).unwrap();
        writeln!(f, "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {addr}}}", dir.join("data").display()).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry (scripts/test.sh installs it)");
        self.registry_process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "own registry did not start on {addr}");
            std::thread::sleep(Duration::from_millis(100));
        }
        addr
    }

    /// Where the test's own registry keeps blobs (`sha256:…` → its dir).
    pub fn own_registry_blob(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.root.path().join("own-registry/data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex)
    }

    /// A directory under this test's temp dir, for mounts.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn stop_own_registry(&mut self) {
        if let Some(mut child) = self.registry_process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A bare repository as the stack's git remote, and a working clone where
/// the test commits and pushes.
pub struct Remote {
    pub bare: PathBuf,
    pub work: PathBuf,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running git");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Remote {
    /// Writes `stack/compose.yaml`, commits and pushes; returns the commit.
    pub fn commit_compose(&self, yaml: &str, message: &str) -> String {
        self.commit_files(&[("compose.yaml", yaml)], message)
    }

    /// Writes files under `stack/`, commits and pushes; returns the commit.
    pub fn commit_files(&self, files: &[(&str, &str)], message: &str) -> String {
        for (name, text) in files {
            let path = self.work.join("stack").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", message]);
        git(&self.work, &["push", "-q", "--force", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    /// Replaces the branch's whole history with one unrelated commit.
    pub fn rewrite_history(&self, yaml: &str) {
        git(&self.work, &["checkout", "-q", "--orphan", "rewritten"]);
        self.commit_compose(yaml, "rewritten");
    }
}

impl Stack {
    pub fn remote(&self) -> Remote {
        let bare = self.root.path().join("remote.git");
        let work = self.root.path().join("work");
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "-q", "--bare"]);
        git(self.root.path(), &["clone", "-q", bare.to_str().unwrap(), "work"]);
        Remote { bare, work }
    }

    /// A configuration for this stack deployed from `remote`, structural
    /// changes allowed unattended unless `extra` says otherwise.
    pub fn write_git_config(&self, remote: &Remote, extra: &str) -> PathBuf {
        let path = self.config_path();
        let text = format!(
            "stacks:\n  - name: {}\n    git: {{url: 'file://{}', branch: main, path: stack}}\n    health: {{timeout: 30s, stability: 1s}}\n{extra}",
            self.name,
            remote.bare.display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The directory clusterup deploys a git stack from.
    pub fn checkout(&self) -> PathBuf {
        self.state.join(&self.name).join("checkout").join("stack")
    }

    pub fn volume_file(&self, volume: &str, file: &str) -> Option<String> {
        let out = docker(&[
            "run",
            "--rm",
            "-v",
            &format!("{}_{volume}:/v", self.name),
            "clusterup-fixture/web:v1",
            "/bin/cat",
            &format!("/v/{file}"),
        ]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn exec(&self, service: &str, script: &str) {
        let id = self.container_id(service);
        docker_ok(&["exec", &id, "/bin/sh", "-c", script]);
    }

    /// The service container's environment, one `KEY=value` a line.
    pub fn env(&self, service: &str) -> String {
        self.inspect(service, "{{range .Config.Env}}{{println .}}{{end}}")
    }

    pub fn has_container(&self, service: &str) -> bool {
        let out = self.compose(&["ps", "--all", "--quiet", service]);
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }
}

/// GET http://127.0.0.1:port/path, the body if it answered 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.lines().next().is_some_and(|l| l.contains(" 200 ")).then(|| body.trim().to_string())
}

/// A TCP peer that accepts and never answers: what every bound is for.
pub fn silent_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(8).collect();
        std::thread::sleep(Duration::from_secs(120));
        drop(held);
    });
    port
}

/// A port no one listens on, for a service or registry a test starts
/// later. Taken below the kernel's ephemeral range (32768 and up), where
/// nothing else is handed ports behind the test's back (a port from
/// `bind(0)` is released before use and may go to another test's
/// connection meanwhile), from a block of this process's own, each once.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 50) as u16 * 200;
    for _ in 0..200 {
        let port = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 200;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {base}..{}", base + 200)
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop_own_registry();
        let _ = self.compose(&["down", "--volumes", "--remove-orphans", "--timeout", "1"]);
        // Git stacks have no compose file here: remove by project label.
        let label = format!("label=com.docker.compose.project={}", self.name);
        for kind in ["container", "volume", "network"] {
            let all = if kind == "container" { "-aq" } else { "-q" };
            let ids = docker(&[kind, "ls", all, "--filter", &label]);
            for id in String::from_utf8_lossy(&ids.stdout).lines() {
                let _ = docker(&[kind, "rm", "-f", id]);
            }
        }
        let backups =
            docker(&["images", "--format", "{{.Repository}}:{{.Tag}}", &format!("clusterup/{}/*", self.name)]);
        // Images Compose built for the project's services.
        let built = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}", &format!("{}-*", self.name)]);
        let mut tags = self.tags.clone();
        tags.extend(String::from_utf8_lossy(&backups.stdout).lines().map(String::from));
        tags.extend(String::from_utf8_lossy(&built.stdout).lines().map(String::from));
        // Pushes and pulls leave `repo@digest` references on the shared
        // fixture images; drop this test's.
        let digests = docker(&["images", "--digests", "--format", "{{.Repository}}@{{.Digest}}"]);
        let mine = format!("/{}/", self.name);
        tags.extend(String::from_utf8_lossy(&digests.stdout).lines().filter(|l| l.contains(&mine)).map(String::from));
        for tag in tags {
            let _ = docker(&["image", "rm", "--no-prune", &tag]);
        }
    }
}

/// Every file under `dir` (directories named in `skip` left out) with its
/// bytes; a file that cannot be read fails the test, so a scan for
/// secrets never passes by skipping one.
pub fn files_under(dir: &Path, skip: &[&str]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap_or_default().to_string_lossy().to_string();
            if path.is_dir() {
                if !skip.contains(&name.as_str()) {
                    dirs.push(path);
                }
            } else {
                let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                out.push((path, bytes));
            }
        }
    }
    out
}

/// Compares each file with the text it should hold; with
/// `CLUSTERUP_BLESS=1`, writes them instead.
pub fn golden(files: Vec<(PathBuf, String)>, what: &str) {
    let bless = std::env::var("CLUSTERUP_BLESS").is_ok_and(|v| v == "1");
    let mut differ = Vec::new();
    for (path, text) in files {
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if want != text {
            differ.push(format!("{}:\n--- want\n{want}\n--- got\n{text}", path.display()));
        }
    }
    assert!(differ.is_empty(), "{what} (CLUSTERUP_BLESS=1 to accept):\n{}", differ.join("\n"));
}
