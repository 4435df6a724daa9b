//! Faults injected against the real engine: the stack afterwards runs the
//! previous revision, healthy, and the journal tells the truth.

use std::process::{Command, Stdio};

use crate::support::{Stack, docker, image_id};

/// Mounts a tmpfs (root in the test's own temp dir), unmounted on drop.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, options: &str) -> Mount {
        let ok =
            Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(at).status().unwrap().success();
        assert!(ok, "mount -t tmpfs -o {options} failed: the fault tests need root and mount");
        Mount(at.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_registry_that_fails_mid_pull_changes_nothing() {
    let (stack, web) = Stack::web_from_own_registry("pullfault");
    let container = stack.container_id("web");

    // A new image this host has never seen, whose config blob the registry
    // then loses: the manifest answers, the pull fails halfway.
    let unique = format!("{}-unique:v3", stack.name);
    let dir = stack.scratch("build");
    std::fs::write(dir.join("Dockerfile"), format!("FROM clusterup-fixture/web:v2\nLABEL test={}\n", stack.name))
        .unwrap();
    let bridge = crate::support::on_default_bridge();
    let built = Command::new("docker")
        .args(["build", "-q", "-t", &unique])
        .arg(&dir)
        .env("DOCKER_BUILDKIT", "0")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    drop(bridge);
    assert!(built.success());
    let config_blob = image_id(&unique);
    assert!(docker(&["tag", &unique, &web]).status.success());
    assert!(docker(&["push", "-q", &web]).status.success());
    assert!(docker(&["tag", "clusterup-fixture/web:v1", &web]).status.success());
    assert!(docker(&["image", "rm", "--force", &config_blob]).status.success(), "the host forgets the new image");
    std::fs::remove_dir_all(stack.own_registry_blob(&config_blob)).unwrap();

    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let report = run.json();
    assert_eq!(report["outcome"], "failed");
    assert!(report["error"].as_str().unwrap().contains("nothing was changed"), "{run:?}");
    assert_eq!(stack.container_id("web"), container, "no container was touched");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
    assert!(stack.journal().contains(r#""outcome":"failed""#));
}

#[test]
fn ten_concurrent_runs_apply_once() {
    let (stack, _) = Stack::web_update_pending("ten", |s| s.image("web"));
    let children: Vec<_> = (0..10)
        .map(|_| {
            stack
                .clusterup_command(&stack.dir, &["apply", "--auto"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> =
        children.into_iter().map(|c| c.wait_with_output().unwrap().status.code().unwrap_or(-1)).collect();
    assert!(codes.iter().all(|c| *c == 0 || *c == 75), "{codes:?}");
    assert!(codes.contains(&75), "some runs met the lock: {codes:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    assert_eq!(stack.journal().matches(r#""event":"begin""#).count(), 1, "exactly one revision");
}

#[test]
fn a_read_only_state_dir_is_an_error_and_changes_nothing() {
    let (stack, _) = Stack::web_update_pending("rostate", |s| s.image("web"));
    let container = stack.container_id("web");
    let state = stack.state.join(&stack.name);
    std::fs::create_dir_all(&state).unwrap();
    let _ro = Mount::tmpfs(&state, "ro,mode=0700");
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 1, "failed, nothing changed: {run:?}");
    assert!(run.stderr.contains("Read-only file system"), "{run:?}");
    assert_eq!(stack.container_id("web"), container);
}

#[test]
fn a_full_disk_while_journaling_changes_nothing_and_recovers() {
    let (stack, _) = Stack::web_update_pending("diskfull", |s| s.image("web"));
    let container = stack.container_id("web");
    let state = stack.state.join(&stack.name);
    std::fs::create_dir_all(&state).unwrap();
    let mount = Mount::tmpfs(&state, "size=64k,mode=0700");
    std::fs::write(state.join("lock"), "0000").unwrap();
    // Fill every page that is left.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4096"])
        .arg(format!("of={}", state.join("filler").display()))
        .stderr(Stdio::null())
        .status();

    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("No space left"), "{run:?}");
    assert_eq!(stack.container_id("web"), container, "nothing was touched before the journal record was safe");

    std::fs::remove_file(state.join("filler")).unwrap();
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "with space again it applies: {run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    let run = stack.clusterup(&["rollback", "--list", "--json"]);
    assert_eq!(run.json()["revisions"].as_array().unwrap().len(), 1, "the failed write left no record behind");
    drop(mount);
}

/// web on v1 under `restart: always`, `next` pushed; stability 5s.
fn restart_always(test: &str, next: &str) -> Stack {
    let mut stack = Stack::new(test);
    let web = stack.image("web");
    stack.publish("v1", &web);
    stack.write_compose(&format!("services:\n  web:\n    image: {web}\n    restart: always\n"));
    stack.write_config("");
    let config = stack.config_path();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("stability: 1s", "stability: 6s")
        .replace("timeout: 30s", "timeout: 15s");
    std::fs::write(&config, text).unwrap();
    stack.up();
    stack.publish(next, &web);
    stack
}

#[test]
fn a_crash_loop_that_briefly_passes_its_health_check_is_rolled_back() {
    let stack = restart_always("crashloop", "crash");
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let report = run.json();
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("restarted") || error.contains("exited") || error.contains("restarting"), "{error}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
    assert_eq!(stack.health("web"), "running/healthy");
}

#[test]
fn a_health_check_that_never_finishes_times_out_and_rolls_back() {
    let stack = restart_always("slowhealth", "slow");
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.json()["error"].as_str().unwrap().contains("not healthy within 15s"), "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
    assert_eq!(stack.health("web"), "running/healthy");
}

/// SIGTERM at `stage` of an update of two services (at `recreated`: once
/// the first is recreated, before the second): the run ends on its own
/// with both on v1 and healthy, and the next run applies.
fn term_at(test: &str, stage: &str) {
    let stack = Stack::two_services_pushed(test, "v2", "");
    let out =
        stack.clusterup_command(&stack.dir, &["apply", "--auto"]).env("CLUSTERUP_TERM_AT", stage).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{stage}: {}", String::from_utf8_lossy(&out.stderr));
    for svc in ["web", "other"] {
        assert_eq!(stack.running_image(svc), image_id("clusterup-fixture/web:v1"), "{stage}: {svc}");
        assert_eq!(stack.health(svc), "running/healthy", "{stage}: {svc}");
    }
    let journal = stack.journal();
    assert!(
        journal.contains(r#""outcome":"rolled_back""#) || journal.contains(r#""outcome":"failed""#),
        "{stage}: {journal}"
    );
    assert!(!journal.contains(r#""event":"reject""#), "{stage}: a stop is not a verdict on the target");
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{stage}: {run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
}

#[test]
fn sigterm_after_the_journal_record() {
    term_at("termjournal", "journaled");
}

#[test]
fn sigterm_after_the_pull() {
    term_at("termpull", "pulled");
}

#[test]
fn sigterm_after_the_recreate() {
    term_at("termrecreate", "recreated");
}

#[test]
fn git_faults_are_clear_errors_and_change_nothing() {
    let mut stack = Stack::new("gitfaults");
    let web = stack.image("web");
    stack.publish("v1", &web);
    let remote = stack.remote();
    remote.commit_compose(&format!("services:\n  web:\n    image: {web}\n"), "first");
    stack.write_git_config(&remote, "    auto: {structural: true}\n");
    assert_eq!(stack.clusterup(&["apply", "--yes"]).code, 0);
    let container = stack.container_id("web");
    let config = stack.config_path();
    let good = std::fs::read_to_string(&config).unwrap();

    // Unreachable remote.
    let gone = stack.scratch("gone.git");
    std::fs::write(
        &config,
        good.replace(&remote.bare.display().to_string(), &gone.join("missing").display().to_string()),
    )
    .unwrap();
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 1, "failed, nothing changed: {run:?}");
    assert!(run.stderr.contains("missing"), "the remote is named: {run:?}");
    assert_eq!(stack.container_id("web"), container);

    // The branch was deleted on the remote.
    std::fs::write(&config, &good).unwrap();
    let deleted = Command::new("git")
        .args(["-C"])
        .arg(&remote.bare)
        .args(["update-ref", "-d", "refs/heads/main"])
        .status()
        .unwrap();
    assert!(deleted.success());
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 1, "failed, nothing changed: {run:?}");
    assert!(run.stderr.contains("main") && run.stderr.contains("does not exist"), "{run:?}");
    assert_eq!(stack.container_id("web"), container);
    assert_eq!(stack.health("web"), "running/healthy");
}

#[test]
fn a_clock_jumping_backwards_keeps_pauses_and_windows_sane() {
    // 2026-11-25 is a Wednesday.
    let (stack, _) = Stack::web_update_pending("clockjump", |s| s.image("web"));
    let config = stack.config_path();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}    window: \"Wed 11:00-15:00 UTC\"\n")).unwrap();
    assert_eq!(stack.clusterup_at("2026-11-25T12:00:00Z", &["pause", "--for", "1h"]).code, 0);
    // The clock jumps back a day: the pause still holds (it ends at a
    // fixed time, not after an elapsed span), outside the window too.
    let run = stack.clusterup_at("2026-11-24T12:00:00Z", &["apply", "--auto"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stdout.contains("paused by") && run.stdout.contains("2026-11-25T13:00:00"), "{run:?}");
    let run = stack.clusterup_at("2026-11-25T12:30:00Z", &["apply", "--auto"]);
    assert_eq!(run.code, 4, "inside the window, still paused: {run:?}");
    assert!(run.stdout.contains("paused by"), "{run:?}");
    // Past the pause's end but after the window closed: the window holds,
    // and names the next one.
    let run = stack.clusterup_at("2026-11-25T16:00:00Z", &["apply", "--auto"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stdout.contains("outside the update window") && run.stdout.contains("2026-12-02T11:00:00"), "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"), "held back every time");
    // Back inside the window, the pause over: it applies.
    let run = stack.clusterup_at("2026-11-25T14:00:00Z", &["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    let run = stack.clusterup_at("2026-11-25T14:00:00Z", &["status", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let status: serde_json::Value = run.json();
    assert_eq!(status["paused"], serde_json::Value::Null, "the ended pause is gone: {status}");
}

#[test]
fn a_manifest_for_another_platform_fails_the_pull_and_changes_nothing() {
    let (mut stack, web) = Stack::web_running("platform", |s| s.image("web"));
    let container = stack.container_id("web");
    // A manifest list whose only entry claims linux/arm64.
    let source = format!("{}/{}/web:amd64src", crate::support::bed().registry, stack.name);
    stack.publish("v2", &source);
    let manifest = |args: &[&str]| {
        let out = docker(&[&["manifest"], args].concat());
        assert!(out.status.success(), "docker manifest {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    manifest(&["create", "--insecure", "--amend", &web, &source]);
    manifest(&["annotate", "--os", "linux", "--arch", "arm64", &web, &source]);
    manifest(&["push", "--insecure", "--purge", &web]);

    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let report = run.json();
    assert_eq!(report["outcome"], "failed", "{run:?}");
    assert!(report["error"].as_str().unwrap().contains("no matching manifest"), "{run:?}");
    assert_eq!(stack.container_id("web"), container);
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
}

/// A Docker engine of the test's own (scripts/lib/private-dockerd.sh), so
/// it can be restarted in the middle of an apply without disturbing the
/// engine the other tests share. Destroyed with everything in it on drop.
struct PrivateEngine {
    dir: std::path::PathBuf,
    host: String,
}

impl PrivateEngine {
    fn script(call: &str, dir: &std::path::Path) -> std::process::Output {
        let lib = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lib/private-dockerd.sh");
        let _bridge = crate::support::moving_default_bridge();
        Command::new("bash")
            .args(["-c", &format!("source {lib} && {call} \"$1\""), "_"])
            .arg(dir)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    }

    fn start(name: &str) -> PrivateEngine {
        let dir = std::path::PathBuf::from(format!("/tmp/cu-pd-{name}-{}", std::process::id()));
        let out = PrivateEngine::script("private_dockerd_start", &dir);
        // Not a skip: without its own engine this fault cannot be injected.
        assert!(out.status.success(), "starting a private dockerd failed: {}", String::from_utf8_lossy(&out.stderr));
        let host = String::from_utf8_lossy(&out.stdout).trim().to_string();
        PrivateEngine { dir, host }
    }

    fn restart(&self) {
        let out = PrivateEngine::script("private_dockerd_restart", &self.dir);
        assert!(out.status.success(), "restarting the private dockerd: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker").args(["-H", &self.host]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        PrivateEngine::script("private_dockerd_destroy", &self.dir);
    }
}

#[test]
fn a_docker_daemon_restart_during_apply_ends_on_one_whole_revision() {
    let engine = PrivateEngine::start("restart");
    let mut stack = Stack::new("dockerd");
    stack.docker_host = Some(engine.host.clone());
    let web = stack.image("web");
    stack.publish("v1", &web);
    stack.write_compose(&format!(
        "services:\n  web:\n    image: {web}\n    restart: unless-stopped\n    volumes: [data:/data]\n\
         volumes:\n  data: {{}}\n"
    ));
    stack.write_config("");
    let config = stack.config_path();
    let text = std::fs::read_to_string(&config).unwrap().replace("stability: 1s", "stability: 8s");
    std::fs::write(&config, text).unwrap();
    let out = stack.compose(&["up", "--detach", "--wait", "--pull", "always"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let project = format!("label=com.docker.compose.project={}", stack.name);
    let container = |engine: &PrivateEngine| engine.docker(&["ps", "-q", "--filter", &project]);
    let first = container(&engine);
    engine.docker(&["exec", &first, "sh", "-c", "echo kept > /data/file"]);
    let v1 = engine.docker(&["inspect", "-f", "{{.Image}}", &first]);
    stack.publish("v2", &web);

    // Restart the engine while clusterup waits for the new container's
    // stability period.
    let apply = stack
        .clusterup_command(&stack.dir, &["apply", "--auto", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let now = container(&engine);
        if !now.is_empty() && now != first {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new container never started");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    engine.restart();
    let out = apply.wait_with_output().unwrap();
    let code = out.status.code();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    // The engine going away is waited for like a slow container; the
    // container comes back (unless-stopped) on v2 and healthy, and the
    // revision completes.
    assert_eq!(code, Some(0), "waits for the engine and applies: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "applied", "{report}");

    // The next run finds one whole revision, running and healthy, with
    // the volume's data, and nothing to do.
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 0, "after exit {code:?} ({stderr}): {run:?}");
    assert_eq!(run.json()["outcome"], "up_to_date", "{run:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let id = loop {
        let id = container(&engine);
        let health = if id.is_empty() {
            String::new()
        } else {
            engine.docker(&["inspect", "-f", "{{.State.Health.Status}}", &id])
        };
        if health == "healthy" {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "web never became healthy again: {id} {health}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(!id.contains('\n'), "one container of web: {id}");
    let image = engine.docker(&["inspect", "-f", "{{.Image}}", &id]);
    assert_ne!(image, v1);
    assert_eq!(image, image_id("clusterup-fixture/web:v2"));
    assert_eq!(engine.docker(&["exec", &id, "cat", "/data/file"]), "kept");
    // The journal parses and its last word matches what runs.
    let journal = stack.journal();
    let last = journal
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("journal line {l:?}: {e}")))
        .rfind(|v| v["outcome"].is_string())
        .expect("a finished revision");
    assert_eq!(last["outcome"], "applied", "runs {image}, journal says {last}");
    drop(stack);
}
