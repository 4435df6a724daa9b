//! `check` (and a notification) says what an update brings: the commits
//! of a git stack, and what a new image's OCI labels say of it.

use crate::receiver::Receiver;
use crate::support::{Stack, docker, image_id};

#[test]
fn check_lists_the_commits_a_git_stack_would_deploy() {
    let mut stack = Stack::new("whatcommits");
    let web = stack.image("web");
    stack.publish("v1", &web);
    let remote = stack.remote();
    remote.commit_compose(&format!("services:\n  web:\n    image: {web}\n"), "first");
    stack.write_git_config(&remote, "");
    assert_eq!(stack.clusterup(&["apply", "--yes"]).code, 0);
    for n in 1..=12 {
        let yaml = format!("services:\n  web:\n    image: {web}\n    environment: {{STEP: '{n}'}}\n");
        remote.commit_compose(&yaml, &format!("Step {n} of the web tier"));
    }
    let run = stack.clusterup(&["check"]);
    assert_eq!(run.code, 100, "updates pending: {run:?}");
    let out = run.all();
    assert!(out.contains("12 new commits"), "{out}");
    assert!(out.contains("Step 12 of the web tier (test)") && out.contains("Step 3 of the web tier"), "{out}");
    assert!(
        !out.contains("Step 2 of the web tier") && out.contains("and 2 more"),
        "ten shown, the rest counted: {out}"
    );

    let json = stack.clusterup(&["check", "--json"]).json();
    let log = &json["commits"];
    assert_eq!(log["total"], 12, "{json}");
    assert_eq!(log["commits"][0]["subject"], "Step 12 of the web tier");
    assert_eq!(log["commits"].as_array().unwrap().len(), 10);
    assert_eq!(log["compare_url"], serde_json::Value::Null, "a file:// remote is no forge");
}

#[test]
fn check_and_the_notification_show_a_new_images_version_and_source() {
    let rx = Receiver::start();
    let (stack, web) = Stack::web_running("whatimage", |s| s.image("web"));
    let config = std::fs::read_to_string(stack.config_path()).unwrap();
    let hook = format!("    notify: [{{type: webhook, url: '{}'}}]\n", rx.url("/hook"));
    std::fs::write(stack.config_path(), format!("{config}{hook}")).unwrap();
    // A release as CI builds it: the labels say which version and where
    // its source lives.
    let context = stack.scratch("labelled");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM clusterup-fixture/web:v2\nLABEL org.opencontainers.image.version=1.4.3 \\\n  org.opencontainers.image.revision=4f1c2b9e0d7a6c5b \\\n  org.opencontainers.image.source=https://github.com/acme/web\n",
    )
    .unwrap();
    let built = docker(&["build", "-q", "-t", &web, context.to_str().unwrap()]);
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let pushed = docker(&["--config", stack.docker_config.to_str().unwrap(), "push", "-q", &web]);
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    // The host still runs v1 under the tag, as before the release.
    assert!(docker(&["tag", "clusterup-fixture/web:v1", &web]).status.success());

    let run = stack.clusterup(&["check"]);
    assert_eq!(run.code, 100, "updates pending: {run:?}");
    let expected = "new image for web: version 1.4.3, revision 4f1c2b9e0d7a, source https://github.com/acme/web, \
                    release notes https://github.com/acme/web/releases/tag/1.4.3";
    assert!(run.all().contains(expected), "{run:?}");
    let json = stack.clusterup(&["check", "--json"]).json();
    let info = &json["changes"][0]["new_image"];
    assert_eq!(
        (info["version"].as_str(), info["source"].as_str()),
        (Some("1.4.3"), Some("https://github.com/acme/web"))
    );
    assert_eq!(image_id(&web), image_id("clusterup-fixture/web:v1"), "check pulled nothing");

    assert_eq!(stack.clusterup(&["apply", "--auto"]).code, 0);
    let applied: Vec<_> = rx.to("/hook").into_iter().filter(|r| r.body["event"] == "applied").collect();
    assert_eq!(applied.len(), 1, "{:?}", rx.to("/hook"));
    assert!(applied[0].body["message"].as_str().unwrap().contains("image web (version 1.4.3"), "{:?}", applied[0].body);
}
