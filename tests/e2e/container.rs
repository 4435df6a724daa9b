//! The containerized mode: the image scripts/build-image.sh builds FROM
//! scratch from this host's binaries runs `clusterup serve` as a service
//! of the stack it updates, with the engine's socket and the stack's
//! directories mounted; it updates the stack through them, and its own
//! image too, through a helper container, without cutting itself off.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Stack, bed, docker, free_port, image_id};

/// The images this test builds, removed on drop.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in self.0.iter().rev() {
            let _ = docker(&["image", "rm", image]);
        }
    }
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_image_serves_updates_its_stack_and_hands_its_own_update_to_a_helper() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/container/compose.yaml");
    let valid = Command::new("docker").args(["compose", "-f"]).arg(&example).args(["config", "-q"]).output().unwrap();
    assert!(valid.status.success(), "the example: {}", String::from_utf8_lossy(&valid.stderr));
    // Before the stack: dropped after it, when no container uses them.
    let mut images = Images(Vec::new());
    let mut stack = Stack::new("container");
    let web = stack.image("web");
    stack.publish("v1", &web);
    let own = format!("{}/{}/clusterup:latest", bed().registry, stack.name);
    let (first, second) = (format!("clusterup-test/{}:one", stack.name), format!("clusterup-test/{}:two", stack.name));
    images.0 = vec![first.clone(), second.clone(), own.clone()];
    let built = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-image.sh"))
        .arg(&first)
        .env("CLUSTERUP_BIN", env!("CARGO_BIN_EXE_clusterup"))
        .output()
        .unwrap();
    assert!(built.status.success(), "building the image: {}", String::from_utf8_lossy(&built.stderr));
    let config = stack.docker_config.display().to_string();
    let push = |image: &str| {
        docker_ok(&["tag", image, &own]);
        docker_ok(&["--config", &config, "push", "-q", &own]);
    };
    push(&first);

    let token = "operate-token-for-the-container-test";
    let creds = stack.scratch("serve").join("credentials");
    std::fs::write(&creds, format!("token ci operate {token}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Everything of the test's (stack directory, configuration, state,
    // Docker config) at the same path inside as outside, as the example's
    // /srv: Compose hands bind-mount paths to the engine, which reads them
    // on the host.
    let root = stack.dir.parent().unwrap().display().to_string();
    let port = free_port();
    stack.write_config("");
    stack.write_compose(&format!(
        "services:
  web:
    image: {web}
  clusterup:
    image: {own}
    network_mode: host
    command: [serve, --listen, '127.0.0.1:{port}']
    volumes: ['/var/run/docker.sock:/var/run/docker.sock', '{root}:{root}']
    environment:
      CLUSTERUP_CONFIG: '{}'
      CLUSTERUP_STATE_DIR: '{}'
      DOCKER_CONFIG: '{config}'
      CLUSTERUP_CREDENTIALS: '{}'
    healthcheck:
      test: [CMD, /bin/wget, -q, -O, /dev/null, 'http://127.0.0.1:{port}/api/v1/health']
      interval: 1s
",
        stack.config_path().display(),
        stack.state.display(),
        creds.display()
    ));
    stack.up();
    let logs = |stack: &Stack| String::from_utf8_lossy(&stack.compose(&["logs", "clusterup"]).stdout).to_string();
    let apply = || {
        let out = Command::new("curl")
            .args(["-s", "-X", "POST", "-d", "{}", "-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("http://127.0.0.1:{port}/api/v1/apply?wait=120"))
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };

    // An update of another service, through the mounted socket.
    stack.publish("v2", &web);
    let op = apply();
    assert_eq!(op["exit_code"], 0, "{op} {}", logs(&stack));
    assert_eq!(op["report"]["outcome"], "applied", "{op}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    assert_eq!(stack.outcomes(), ["applied"], "the journal the host's CLI reads");

    // A new image of clusterup itself: the run sets it aside and a helper
    // container, outside the one it replaces, applies it, health-gated.
    let ctx = stack.scratch("second-image");
    std::fs::write(ctx.join("Dockerfile"), format!("FROM {first}\nLABEL test.revision=two\n")).unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", &second])
        .arg(&ctx)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    push(&second);
    let before = stack.container_id("clusterup");
    let op = apply();
    assert_eq!(op["exit_code"], 0, "{op} {}", logs(&stack));
    let held = op["report"]["held_back"].to_string();
    assert!(held.contains("clusterup runs this clusterup: a helper container updates it"), "{op}");
    let helpers = || docker_ok(&["ps", "-aq", "--filter", "label=clusterup.handover=true"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while stack.try_running_image("clusterup") != Some(image_id(&second))
        || stack.health("clusterup") != "running/healthy"
        || !helpers().is_empty()
    {
        assert!(Instant::now() < deadline, "the helper did not update clusterup: {}", stack.journal());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_ne!(stack.container_id("clusterup"), before);
    assert_eq!(stack.outcomes(), ["applied", "applied"], "the helper's revision: {}", stack.journal());
    let answer = apply();
    assert_eq!(answer["exit_code"], 0, "the new container serves: {answer}");
}
