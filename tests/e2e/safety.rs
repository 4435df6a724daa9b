//! Safety rails: unreachable registries, concurrent runs.

use std::time::{Duration, Instant};

use crate::support::{Stack, image_id};

#[test]
fn unreachable_registry_is_named_and_nothing_changes() {
    let mut stack = Stack::new("unreachable");
    let registry = stack.start_own_registry();
    let web = format!("{registry}/{}/web:latest", stack.name);
    stack.publish("v1", &web);
    stack.write_compose(&format!("services:\n  web:\n    image: {web}\n"));
    stack.write_config("");
    stack.up();
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
