//! Built services in git stacks: a commit that changes what a service is
//! built from rebuilds it, through the same health gate and rollback as an
//! image update; a commit that changes nothing it is built from does not.

use crate::support::{Remote, Stack, free_port, http_get, image_id};

const DOCKERFILE: &str = "FROM clusterup-fixture/web:v1\nCOPY version /www/version\n";

/// `app` built from `stack/app` (serving its `version` file on `port`) and
/// `web` pulled, deployed from a first commit.
fn deployed(test: &str, port: u16) -> (Stack, Remote) {
    let mut stack = Stack::new(test);
    let web = stack.image("web");
    stack.publish("v1", &web);
    let remote = stack.remote();
    let compose = format!(
        "services:\n  app:\n    build: ./app\n    ports: [\"127.0.0.1:{port}:8080\"]\n  web:\n    image: {web}\n"
    );
    remote.commit_files(
        &[("compose.yaml", &compose), ("app/Dockerfile", DOCKERFILE), ("app/version", "one\n"), ("README.md", "hi\n")],
        "first",
    );
    stack.write_git_config(&remote, "");
    let run = stack.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 0, "first deploy: {run:?}");
    assert_eq!(http_get(port, "/version").as_deref(), Some("one"));
    (stack, remote)
}

#[test]
fn a_source_change_rebuilds_only_its_service_and_other_commits_rebuild_nothing() {
    let port = free_port();
    let (stack, remote) = deployed("rebuild", port);
    let web = stack.container_id("web");

    remote.commit_files(&[("README.md", "more\n")], "docs only");
    let run = stack.clusterup(&["check", "--json"]);
    assert_eq!(run.code, 0, "a README outside every build context: {run:?}");
    assert!(run.json()["changes"].as_array().unwrap().is_empty(), "{run:?}");

    remote.commit_files(&[("app/version", "two\n")], "new code");
    let run = stack.clusterup(&["check", "--json"]);
    assert_eq!(run.code, 100, "{run:?}");
    let changes = run.json()["changes"].as_array().unwrap().clone();
    assert_eq!(changes.len(), 1, "{run:?}");
    assert_eq!((changes[0]["service"].as_str(), changes[0]["kind"].as_str()), (Some("app"), Some("rebuild")));
    assert_eq!(changes[0]["reasons"][0], "version changed");
    let run = stack.clusterup(&["check"]);
    assert!(run.stdout.contains("rebuild"), "{run:?}");

    // Unattended, as an image update is: auto.structural is off here.
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.all().contains("building app"), "{run:?}");
    // No terminal: a plain line per build step, as under systemd.
    assert!(run.stderr.contains("build: #") || run.stderr.contains("build: Step"), "{run:?}");
    assert_eq!(http_get(port, "/version").as_deref(), Some("two"), "the new code runs");
    assert_eq!(stack.health("app"), "running/healthy");
    assert_eq!(stack.container_id("web"), web, "the pulled service was not touched");
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.json()["outcome"], "up_to_date", "built once: {run:?}");
}

#[test]
fn a_broken_build_changes_nothing_and_an_unhealthy_rebuild_is_rolled_back() {
    let port = free_port();
    let (stack, remote) = deployed("rebuildfail", port);
    let app = stack.container_id("app");
    let image = stack.running_image("app");

    remote.commit_files(
        &[("app/Dockerfile", &format!("{DOCKERFILE}RUN [\"/bin/false\"]\n")), ("app/version", "broken\n")],
        "breaks the build",
    );
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.all().contains("docker compose build app failed"), "{run:?}");
    assert!(run.all().contains("nothing was changed"), "{run:?}");
    assert_eq!(stack.container_id("app"), app, "no container touched");
    assert_eq!(http_get(port, "/version").as_deref(), Some("one"));
    let files = std::fs::read_to_string(stack.checkout().join("app/version")).unwrap();
    assert_eq!(files, "one\n", "the deployed files are the old ones again");

    remote.commit_files(
        &[("app/Dockerfile", "FROM clusterup-fixture/web:bad\nCOPY version /www/version\n"), ("app/version", "bad\n")],
        "builds, never healthy",
    );
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 1, "rolled back: {run:?}");
    assert!(run.all().contains("rolling back"), "{run:?}");
    assert_eq!(stack.running_image("app"), image, "the image it ran before");
    assert_eq!(http_get(port, "/version").as_deref(), Some("one"));
    assert_eq!(stack.health("app"), "running/healthy");
    let name = format!("{}-app", stack.name);
    assert_eq!(image_id(&name), image, "the old image is back under Compose's name");
}

/// A directory stack's sources change by hand, where clusterup cannot see
/// it: `apply --rebuild` builds and recreates through the same gate, and
/// nothing rebuilds by itself.
#[test]
fn a_directory_stack_rebuilds_when_asked_and_only_then() {
    let port = free_port();
    let stack = Stack::new("rebuilddir");
    std::fs::create_dir_all(stack.dir.join("app")).unwrap();
    std::fs::write(stack.dir.join("app/Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(stack.dir.join("app/version"), "one\n").unwrap();
    stack.write_compose(&format!(
        "services:\n  app:\n    build: ./app\n    ports: [\"127.0.0.1:{port}:8080\"]\n  other:\n    image: clusterup-fixture/web:v1\n"
    ));
    stack.write_config("");
    stack.up();
    let other = stack.container_id("other");
    let image = stack.running_image("app");

    std::fs::write(stack.dir.join("app/version"), "two\n").unwrap();
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.json()["outcome"], "up_to_date", "never by itself: {run:?}");
    assert_eq!(http_get(port, "/version").as_deref(), Some("one"));

    let run = stack.clusterup(&["apply", "--yes", "--rebuild", "--", "nosuch"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.all().contains("not a built service (built: app)"), "{run:?}");

    let run = stack.clusterup(&["-v", "apply", "--yes", "--rebuild", "--", "app"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("building with BuildKit") || run.stderr.contains("building with the classic"),
        "{run:?}"
    );
    assert_eq!(http_get(port, "/version").as_deref(), Some("two"));
    assert_ne!(stack.running_image("app"), image);
    assert_eq!(stack.container_id("other"), other, "only the asked service");

    // A rebuild that fails health goes back to the image it ran.
    let image = stack.running_image("app");
    std::fs::write(stack.dir.join("app/Dockerfile"), "FROM clusterup-fixture/web:bad\nCOPY version /www/version\n")
        .unwrap();
    let run = stack.clusterup(&["apply", "--yes", "--rebuild"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(stack.running_image("app"), image);
    assert_eq!(http_get(port, "/version").as_deref(), Some("two"));

    // A build that outlives `timeouts.build` ends there and changes nothing.
    std::fs::write(stack.dir.join("app/Dockerfile"), format!("{DOCKERFILE}RUN sleep 300\n")).unwrap();
    let config = stack.config_path();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("timeouts: {{build: 3s}}\n{text}")).unwrap();
    let run = stack.clusterup(&["apply", "--yes", "--rebuild"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("did not finish within 3s (timeouts.build)"), "{run:?}");
    assert_eq!(stack.running_image("app"), image);
    assert_eq!(http_get(port, "/version").as_deref(), Some("two"));
}
