//! In-place git stacks: the host people already have, a clone of the
//! team's repository with a submodule, its stack started by hand with
//! `docker compose up -d`, kept current until now by
//! `git pull && git submodule update && down && up` (issue 14).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{Run, Stack, docker, image_id};

/// The host and its upstream: `ops.git` holds the stack in `<name>/` and
/// the submodule `shared` (from `shared.git`); `ops-work` and
/// `shared-work` are where the team commits; `operation` is the host's
/// clone. git runs with a global config of the test's own: file://
/// submodules are refused by default since git 2.38.
struct Host {
    stack: Stack,
    gitconfig: PathBuf,
    upstream: PathBuf,
    ops_work: PathBuf,
    shared_work: PathBuf,
    clone: PathBuf,
    base: String,
}

impl Host {
    fn git(&self, dir: &Path, args: &[&str]) -> String {
        git(&self.gitconfig, dir, args)
    }

    /// Writes the stack's compose file in the team's clone, commits and
    /// pushes; the new upstream commit.
    fn push_compose(&self, yaml: &str, message: &str) -> String {
        std::fs::write(self.ops_work.join(&self.stack.name).join("compose.yaml"), yaml).unwrap();
        self.commit_and_push(message)
    }

    fn commit_and_push(&self, message: &str) -> String {
        self.git(&self.ops_work, &["add", "-A"]);
        self.git(&self.ops_work, &["commit", "-q", "-m", message]);
        self.git(&self.ops_work, &["push", "-q", "origin", "HEAD:embody-alpha"]);
        self.git(&self.ops_work, &["rev-parse", "HEAD"])
    }

    fn compose(&self, web_tag: &str, web_env: &str, worker: bool) -> String {
        let base = &self.base;
        let mut yaml = format!(
            "services:\n  web:\n    image: {base}/web:{web_tag}\n    environment:\n      MODE: {web_env}\n  \
             api:\n    image: {base}/api:latest\n    volumes:\n      - ../shared/conf/greeting.txt:/www/greeting.txt:ro\n"
        );
        if worker {
            yaml.push_str(&format!("  worker:\n    image: {base}/worker:latest\n"));
        }
        yaml
    }

    /// A configuration for the clone: short health waits, structural
    /// changes unattended.
    fn configure(&self) {
        std::fs::write(
            self.stack.config_path(),
            format!(
                "stacks:\n  - name: {}\n    directory: {}\n    git: {{in_place: true}}\n    auto: {{structural: true}}\n    \
                 health: {{timeout: 30s, stability: 1s}}\n",
                self.stack.name,
                self.stack.dir.display()
            ),
        )
        .unwrap();
    }

    fn head(&self) -> String {
        self.git(&self.clone, &["rev-parse", "HEAD"])
    }

    fn clusterup(&self, args: &[&str]) -> Run {
        let out = self
            .stack
            .clusterup_command(&self.stack.dir, args)
            .env("GIT_CONFIG_GLOBAL", &self.gitconfig)
            .output()
            .expect("running clusterup");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    fn served(&self, service: &str, path: &str) -> String {
        let id = self.stack.container_id(service);
        let out = docker(&["exec", &id, "/bin/cat", path]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn git(gitconfig: &Path, dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", gitconfig)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .output()
        .expect("running git");
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The host as the old scripts left it: cloned with its submodule, the
/// stack up by hand at web 1.0.
fn host(test: &str) -> Host {
    let mut stack = Stack::new(test);
    let base = stack.image("x").trim_end_matches("/x:latest").to_string();
    for (fixture, reference) in [
        ("v1", format!("{base}/web:1.0")),
        ("v2", format!("{base}/web:1.1")),
        ("bad", format!("{base}/web:broken")),
        ("v1", format!("{base}/api:latest")),
        ("v1", format!("{base}/worker:latest")),
    ] {
        stack.publish(fixture, &reference);
    }
    let root = stack.scratch("host");
    let gitconfig = root.join("gitconfig");
    std::fs::write(
        &gitconfig,
        "[user]\n\tname = team\n\temail = team@example.com\n[protocol \"file\"]\n\tallow = always\n[init]\n\tdefaultBranch = embody-alpha\n",
    )
    .unwrap();
    let g = |dir: &Path, args: &[&str]| git(&gitconfig, dir, args);
    let (upstream, shared) = (root.join("ops.git"), root.join("shared.git"));
    for bare in [&upstream, &shared] {
        std::fs::create_dir_all(bare).unwrap();
        g(bare, &["init", "-q", "--bare"]);
    }
    g(&root, &["clone", "-q", shared.to_str().unwrap(), "shared-work"]);
    let shared_work = root.join("shared-work");
    std::fs::create_dir_all(shared_work.join("conf")).unwrap();
    std::fs::write(shared_work.join("conf/greeting.txt"), "hello 1\n").unwrap();
    g(&shared_work, &["add", "-A"]);
    g(&shared_work, &["commit", "-q", "-m", "greeting"]);
    g(&shared_work, &["push", "-q", "origin", "HEAD:embody-alpha"]);

    g(&root, &["clone", "-q", upstream.to_str().unwrap(), "ops-work"]);
    let ops_work = root.join("ops-work");
    g(&ops_work, &["submodule", "add", "-q", "-b", "embody-alpha", shared.to_str().unwrap(), "shared"]);
    std::fs::create_dir_all(ops_work.join(&stack.name)).unwrap();
    let clone = root.join("operation");
    stack.dir = clone.join(&stack.name);
    let gitconfig = gitconfig.clone();
    let host = Host { stack, gitconfig, upstream, ops_work, shared_work, clone, base };
    host.push_compose(&host.compose("1.0", "a", false), "the stack");
    let upstream = host.upstream.to_str().unwrap();
    host.git(&root, &["clone", "-q", "--recurse-submodules", "-b", "embody-alpha", upstream, "operation"]);
    host.stack.up();
    host
}

#[test]
fn a_clone_with_a_submodule_is_followed_in_place() {
    let host = host("inplace");
    let web_image = |tag: &str| image_id(&format!("{}/web:{tag}", host.base));
    let run = host.clusterup(&["check", "--only"]);
    assert_eq!(run.code, 0, "nothing new upstream: {run:?}");

    // (a) An image tag change, zero configuration.
    let a = host.push_compose(&host.compose("1.1", "a", false), "web 1.1");
    let run = host.clusterup(&["check", "--only", "--json"]);
    assert_eq!(run.code, 100, "the upstream commit is seen: {run:?}");
    let plan = run.json();
    assert_eq!(plan["commit"], a.as_str(), "{run:?}");
    assert_eq!(plan["kind"], "image", "{run:?}");
    let changed: Vec<&str> =
        plan["changes"].as_array().unwrap().iter().map(|c| c["service"].as_str().unwrap()).collect();
    assert_eq!(changed, ["web"], "{run:?}");
    let api = host.stack.container_id("api");
    // Files git does not track (data, notes) neither block the move nor go.
    std::fs::create_dir_all(host.stack.dir.join("data")).unwrap();
    std::fs::write(host.stack.dir.join("data/db.sqlite"), "rows").unwrap();
    std::fs::write(host.stack.dir.join("NOTES.txt"), "ops notes").unwrap();
    let run = host.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read_to_string(host.stack.dir.join("data/db.sqlite")).unwrap(), "rows");
    assert_eq!(std::fs::read_to_string(host.stack.dir.join("NOTES.txt")).unwrap(), "ops notes");
    assert_eq!(host.head(), a, "the work tree is at the upstream commit");
    assert_eq!(host.stack.running_image("web"), web_image("1.1"));
    assert_eq!(host.stack.container_id("api"), api, "api was not touched");

    // From here on a configuration, for short health waits and structural
    // changes unattended.
    host.configure();

    // (b) A new service and an environment change.
    let b = host.push_compose(&host.compose("1.1", "b", true), "worker, mode b");
    let run = host.clusterup(&["check", "--only"]);
    assert_eq!(run.code, 100, "{run:?}");
    assert!(
        run.stdout.contains("-      MODE:") && run.stdout.contains("+      MODE:"),
        "the diff shows the change: {run:?}"
    );
    let run = host.clusterup(&["check", "--only", "--json"]);
    let plan = run.json();
    let mut changes: Vec<(String, String)> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["kind"].as_str().unwrap().to_string(), c["service"].as_str().unwrap().to_string()))
        .collect();
    changes.sort();
    assert_eq!(changes, [("create".into(), "worker".into()), ("recreate".into(), "web".into())], "{run:?}");
    let run = host.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(host.head(), b);
    assert_eq!(host.stack.health("worker"), "running/healthy");
    assert!(host.stack.env("web").contains("MODE=b"), "{}", host.stack.env("web"));
    assert_eq!(host.stack.container_id("api"), api, "api was not touched");

    // (c) A file inside the submodule that api bind-mounts.
    std::fs::write(host.shared_work.join("conf/greeting.txt"), "hello 2\n").unwrap();
    host.git(&host.shared_work, &["commit", "-q", "-am", "greeting 2"]);
    host.git(&host.shared_work, &["push", "-q", "origin", "HEAD:embody-alpha"]);
    host.git(&host.ops_work, &["submodule", "update", "-q", "--remote", "shared"]);
    let c = host.commit_and_push("shared: greeting 2");
    let web = host.stack.container_id("web");
    let run = host.clusterup(&["check", "--only", "--json"]);
    assert_eq!(run.code, 100, "{run:?}");
    let plan = run.json();
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{run:?}");
    assert_eq!((changes[0]["kind"].as_str(), changes[0]["service"].as_str()), (Some("recreate"), Some("api")));
    assert!(changes[0]["reasons"].to_string().contains("greeting.txt"), "{run:?}");
    let run = host.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(host.head(), c);
    assert_eq!(std::fs::read_to_string(host.clone.join("shared/conf/greeting.txt")).unwrap(), "hello 2\n");
    assert_eq!(host.served("api", "/www/greeting.txt"), "hello 2");
    assert_eq!(host.stack.container_id("web"), web, "web was not touched");

    // (d) A change that fails health: rolled back, work tree included,
    // and not tried again unattended.
    host.push_compose(&host.compose("broken", "c", true), "web broken");
    let run = host.clusterup(&["check", "--only", "--json"]);
    assert_eq!((run.code, run.json()["kind"].as_str()), (100, Some("structural")), "{run:?}");
    assert!(run.json()["file_diff"].as_str().unwrap_or("").contains("web:broken"), "{run:?}");
    let run = host.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("rolled back"), "{run:?}");
    assert_eq!(host.head(), c, "the work tree is back at the deployed commit");
    assert!(host.git(&host.clone, &["status", "--porcelain", "--untracked-files=no"]).is_empty());
    assert_eq!(host.stack.running_image("web"), web_image("1.1"));
    assert_eq!(host.stack.health("web"), "running/healthy");
    assert!(host.stack.env("web").contains("MODE=b"));
    let run = host.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 4, "the rejected commit is held back: {run:?}");
    assert!(run.all().contains("rejected"), "{run:?}");
    assert_eq!(host.head(), c);
    assert_eq!(host.stack.running_image("web"), web_image("1.1"));
}

#[test]
fn a_checkout_that_cannot_move_cleanly_stops_and_changes_nothing() {
    let host = host("inplacedirty");
    let compose = host.stack.dir.join("compose.yaml");
    let deployed = host.head();
    host.push_compose(&host.compose("1.1", "a", false), "web 1.1");

    let original = std::fs::read_to_string(&compose).unwrap();
    std::fs::write(&compose, format!("{original}# tuned by hand\n")).unwrap();
    let run = host.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("local changes") && run.stderr.contains("compose.yaml"), "{run:?}");
    assert_eq!(host.head(), deployed);
    assert!(std::fs::read_to_string(&compose).unwrap().ends_with("# tuned by hand\n"), "the edit is kept");
    std::fs::write(&compose, &original).unwrap();

    host.git(&host.clone, &["commit", "-q", "--allow-empty", "-m", "a local commit"]);
    let run = host.clusterup(&["check", "--only"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("diverged") && run.stderr.contains("a local commit"), "{run:?}");
    host.git(&host.clone, &["reset", "-q", "--hard", &deployed]);

    // Without a configuration a detached checkout follows nothing (it is
    // a directory stack); configured in place, it is refused.
    host.git(&host.clone, &["checkout", "-q", "--detach"]);
    let config = host.stack.config_path();
    std::fs::write(
        &config,
        format!(
            "stacks:\n  - name: {}\n    directory: {}\n    git: {{in_place: true}}\n",
            host.stack.name,
            host.stack.dir.display()
        ),
    )
    .unwrap();
    let run = host.clusterup(&["check", "--only"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("detached HEAD"), "{run:?}");
    assert_eq!(host.head(), deployed);
    assert!(docker(&["inspect", &host.stack.container_id("web")]).status.success());
}

#[test]
fn a_configured_directory_that_holds_the_clone_is_adopted() {
    let host = host("inplaceadopt");
    let config = host.stack.config_path();
    let write = |url: &str| {
        std::fs::write(
            &config,
            format!(
                "stacks:\n  - name: {}\n    directory: {}\n    git: {{url: '{url}', branch: embody-alpha, path: {}}}\n    \
                 health: {{timeout: 30s, stability: 1s}}\n",
                host.stack.name,
                host.clone.display(),
                host.stack.name
            ),
        )
        .unwrap()
    };
    write("file:///srv/git/another.git");
    let run = host.clusterup(&["check", "--only"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("another repository") && run.stderr.contains("origin"), "{run:?}");

    write(&format!("file://{}", host.upstream.display()));
    let run = host.clusterup(&["check", "--only"]);
    assert_eq!(run.code, 0, "the clone and its running stack are taken as they are: {run:?}");
    let a = host.push_compose(&host.compose("1.1", "a", false), "web 1.1");
    let run = host.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(host.head(), a, "the operator's clone moved in place");
    assert_eq!(host.stack.running_image("web"), image_id(&format!("{}/web:1.1", host.base)));
}

#[test]
fn a_submodule_bump_inside_a_build_context_rebuilds_its_service() {
    let host = host("inplacebuild");
    host.configure();
    let bump_shared = |file: &str, text: &str, message: &str| {
        std::fs::write(host.shared_work.join(file), text).unwrap();
        host.git(&host.shared_work, &["add", "-A"]);
        host.git(&host.shared_work, &["commit", "-q", "-m", message]);
        host.git(&host.shared_work, &["push", "-q", "origin", "HEAD:embody-alpha"]);
        host.git(&host.ops_work, &["submodule", "update", "-q", "--remote", "shared"]);
    };
    // `app` is built from the submodule: its Dockerfile and the greeting
    // it serves live there.
    bump_shared("app.Dockerfile", "FROM clusterup-fixture/web:v1\nCOPY conf/greeting.txt /www/version\n", "app");
    let app = "  app:\n    build: {context: ../shared, dockerfile: app.Dockerfile}\n";
    host.push_compose(&format!("{}{app}", host.compose("1.0", "a", false)), "app, built from shared");
    let run = host.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(host.served("app", "/www/version"), "hello 1");
    let web = host.stack.container_id("web");

    bump_shared("conf/greeting.txt", "hello 2\n", "greeting 2");
    host.commit_and_push("shared: greeting 2");
    let run = host.clusterup(&["check", "--only", "--json"]);
    assert_eq!(run.code, 100, "{run:?}");
    let plan = run.json();
    let app_change = plan["changes"].as_array().unwrap().iter().find(|c| c["service"] == "app").cloned();
    let app_change = app_change.unwrap_or_else(|| panic!("app is rebuilt: {run:?}"));
    assert_eq!(app_change["kind"], "rebuild", "{run:?}");
    assert!(app_change["reasons"].to_string().contains("greeting.txt"), "{run:?}");
    assert!(
        app_change["reasons"].to_string().contains("submodule ") && app_change["reasons"].to_string().contains(".."),
        "the submodule's commit range: {run:?}"
    );
    let run = host.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(host.served("app", "/www/version"), "hello 2", "built from the bumped submodule");
    assert_eq!(host.stack.container_id("web"), web, "web was not touched");
}
