//! Safety rails: unreachable registries, concurrent runs.

use std::time::{Duration, Instant};

use crate::support::{Stack, image_id};

#[test]
fn unreachable_registry_is_named_and_nothing_changes() {
    let (mut stack, web) = Stack::web_from_own_registry("unreachable");
    let registry = web.split('/').next().unwrap().to_string();
    let container = stack.container_id("web");
    stack.stop_own_registry();

    let run = stack.clusterup(&["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.all().contains(&format!("registry {registry}")), "the registry must be named: {run:?}");

    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(stack.container_id("web"), container);
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
    assert!(stack.journal().is_empty(), "nothing was applied, so no revision");
}

#[test]
fn a_second_concurrent_apply_exits_75() {
    let (stack, _) = Stack::web_update_pending("lock", |s| s.image("web"));
    // A long stability period keeps the first run holding the lock.
    let config = stack.config_path();
    let text = std::fs::read_to_string(&config).unwrap().replace("stability: 1s", "stability: 6s");
    std::fs::write(&config, text).unwrap();

    let mut first = stack
        .clusterup_command(&stack.dir, &["apply", "--auto"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = stack.state.join(&stack.name).join("lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&lock).map(|s| s.trim().is_empty()).unwrap_or(true) {
        assert!(Instant::now() < deadline, "first run never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(second.code, 75, "{second:?}");
    assert!(second.stderr.contains(&format!("pid {}", first.id())), "{second:?}");
    assert!(first.wait().unwrap().success());
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
}

#[test]
fn sigterm_during_the_health_wait_rolls_back_cleanly_and_does_not_reject() {
    let (stack, _) = Stack::web_update_pending("sigterm", |s| s.image("web"));
    let config = stack.config_path();
    let text = std::fs::read_to_string(&config).unwrap().replace("stability: 1s", "stability: 20s");
    std::fs::write(&config, text).unwrap();
    let mut child = stack
        .clusterup_command(&stack.dir, &["apply", "--auto"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let v2 = image_id("clusterup-fixture/web:v2");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.try_running_image("web").as_ref() != Some(&v2) {
        assert!(Instant::now() < deadline, "web was never recreated");
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "rolled back");
    assert!(started.elapsed() < Duration::from_secs(20), "it stopped well within a systemd stop timeout");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
    assert_eq!(stack.health("web"), "running/healthy");
    assert!(stack.journal().contains(r#""outcome":"rolled_back""#));

    std::fs::write(&config, std::fs::read_to_string(&config).unwrap().replace("stability: 20s", "stability: 1s"))
        .unwrap();
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "an interrupted update is not rejected: {run:?}");
    assert_eq!(stack.running_image("web"), v2);
}

#[test]
fn a_world_writable_config_and_a_foreign_state_dir_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (stack, _) = Stack::web_update_pending("perms", |s| s.image("web"));
    let container = stack.container_id("web");
    let config = stack.config_path();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("writable by other users") && run.stderr.contains("chmod go-w"), "{run:?}");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let state = stack.state.join(&stack.name);
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("belongs to uid 65534"), "{run:?}");
    assert_eq!(stack.container_id("web"), container, "nothing changed");
    std::os::unix::fs::chown(&state, Some(0), Some(0)).unwrap();
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for entry in std::fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
}

#[test]
fn malformed_compose_files_change_nothing() {
    let (stack, _) = Stack::web_update_pending("badcomposes", |s| s.image("web"));
    let container = stack.container_id("web");
    let compose = stack.dir.join("compose.yaml");
    let good = std::fs::read_to_string(&compose).unwrap();
    let web = stack.image("web");
    let cases = [
        (
            format!("services:\n  web:\n    image: {web}\n    depends_on: [ghost]\n"),
            "depends on undefined service \"ghost\"",
        ),
        (
            format!(
                "services:\n  web:\n    image: {web}\n    depends_on: [db]\n  db:\n    image: {web}\n    depends_on: [web]\n"
            ),
            "dependency cycle",
        ),
        (
            format!("services:\n  web:\n    image: {web}\n    ports: [\"notaport\"]\n"),
            "invalid containerPort: notaport",
        ),
        (
            "services:\n  web:\n    image: ${NOT_SET?please set NOT_SET}\n".to_string(),
            "required variable NOT_SET is missing a value: please set NOT_SET",
        ),
        (
            format!("services:\n  web:\n    image: {web}\n    image: again\n"),
            "line 4: mapping key \"image\" already defined at line 3",
        ),
        ("services: [web]\n".to_string(), "services must be a mapping"),
    ];
    for (broken, want) in cases {
        std::fs::write(&compose, &broken).unwrap();
        let run = stack.clusterup(&["apply", "--auto"]);
        assert_eq!(run.code, 2, "{broken}: {run:?}");
        assert!(run.stderr.contains(&compose.display().to_string()), "{run:?}");
        assert!(run.stderr.contains(want), "{broken}: wanted {want}: {run:?}");
        assert_eq!(stack.container_id("web"), container);
    }
    std::fs::write(&compose, good).unwrap();
}
