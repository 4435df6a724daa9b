//! `follow:`: a service moves to new version tags of its own shape, as far
//! as its level allows; a directory stack's `image:` line is edited in
//! place (nothing else in the file), and a new tag that fails is rolled
//! back file and all.

use crate::support::{Stack, image_id};

#[test]
fn follow_offers_the_newest_allowed_tag_and_edits_only_the_image_line() {
    let mut stack = Stack::new("follow");
    let repo = stack.image("web");
    let repo = repo.rsplit_once(':').unwrap().0.to_string();
    let tag = |t: &str| format!("{repo}:{t}");
    for (fixture, t) in [
        ("v1", "1.4.2"),
        ("v1", "1.4.2-alpine"),
        ("v2", "1.4.3"),
        ("v2", "1.5.0"),
        ("v2", "2.0.0"),
        ("v2", "1.4.3-alpine"),
    ] {
        stack.publish(fixture, &tag(t));
    }
    let compose = format!(
        "# the shop\nservices:\n  web:\n    image: \"{}\"   # moved by clusterup\n  edge:\n    image: {}\n",
        tag("1.4.2"),
        tag("1.4.2-alpine")
    );
    stack.write_compose(&compose);
    stack.write_config("    services: {web: {follow: patch}, edge: {follow: major}}\n");
    stack.up();

    let check = stack.clusterup(&["check"]);
    assert_eq!(check.code, 100, "{check:?}");
    assert!(check.all().contains("web: new tag 1.4.2 -> 1.4.3 (patch)"), "{check:?}");
    assert!(check.all().contains("edge: new tag 1.4.2-alpine -> 1.4.3-alpine (patch)"), "stays -alpine: {check:?}");

    stack.write_config("    services: {web: {follow: minor}, edge: {follow: {level: major, exclude: ['*-alpine']}}}\n");
    let json = stack.clusterup(&["check", "--json"]).json();
    let offered: Vec<_> =
        json["tag_updates"].as_array().unwrap().iter().map(|t| (t["service"].clone(), t["to"].clone())).collect();
    assert_eq!(offered, [(serde_json::json!("web"), serde_json::json!("1.5.0"))], "{json}");

    stack.write_config("    services: {web: {follow: major}}\n");
    let held = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(held.code, 4, "a major version waits for a person: {held:?}");
    assert!(held.all().contains("web: new tag 1.4.2 -> 2.0.0 (major) needs approval"), "{held:?}");
    assert_eq!(std::fs::read_to_string(stack.dir.join("compose.yaml")).unwrap(), compose, "nothing edited");

    stack.write_config("    services: {web: {follow: minor}}\n");
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    let edited = std::fs::read_to_string(stack.dir.join("compose.yaml")).unwrap();
    assert_eq!(edited, compose.replace("web:1.4.2\"", "web:1.5.0\""), "only the tag moved");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    assert_eq!(stack.clusterup(&["check"]).code, 0, "in step with its edited file");

    // A new tag that fails its health check: the image and the file go back.
    stack.publish("bad", &tag("1.5.1"));
    let failed = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert_eq!(std::fs::read_to_string(stack.dir.join("compose.yaml")).unwrap(), edited, "the file rolled back");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
}

/// A git stack is never edited on the host: its new tag becomes one pull
/// request (a branch, one commit editing the image line); the next newer
/// tag gets its own and the older one is closed.
#[test]
fn a_git_stack_gets_one_pull_request_per_new_tag_and_nothing_on_the_host_changes() {
    use base64::Engine as _;
    let rx = crate::receiver::Receiver::start();
    let mut stack = Stack::new("followgit");
    let repo = stack.image("web");
    let repo = repo.rsplit_once(':').unwrap().0.to_string();
    let tag = |t: &str| format!("{repo}:{t}");
    stack.publish("v1", &tag("1.4.2"));
    stack.publish("v2", &tag("1.4.3"));
    let remote = stack.remote();
    let compose = format!("services:\n  web:\n    image: {}  # followed\n", tag("1.4.2"));
    remote.commit_compose(&compose, "first");
    let token = stack.scratch("gh").join("token");
    std::fs::write(&token, "ghp_pullRequestT0ken\n").unwrap();
    std::fs::write(
        stack.config_path(),
        format!(
            "stacks:\n  - name: {}\n    git: {{url: 'file://{}', branch: main, path: stack, pull_requests: {{repo: o/r, api_url: '{}', token_file: '{}'}}}}\n    health: {{timeout: 30s, stability: 1s}}\n    services: {{web: {{follow: patch}}}}\n",
            stack.name,
            remote.bare.display(),
            rx.url("/gh"),
            token.display()
        ),
    )
    .unwrap();
    assert_eq!(stack.clusterup(&["apply", "--yes"]).code, 0, "first deploy");

    let check = stack.clusterup(&["check"]);
    assert!(check.all().contains("web: new tag 1.4.2 -> 1.4.3 (patch)"), "{check:?}");
    assert!(rx.to("/gh").is_empty(), "check writes nothing");
    for _ in 0..2 {
        let run = stack.clusterup(&["apply", "--auto"]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    let branch = format!("clusterup/{}/web-1.4.3", stack.name);
    assert_eq!(rx.open_pulls(), std::slice::from_ref(&branch), "one pull request, not one per run");
    let created: Vec<_> = rx.to("/gh/repos/o/r/pulls").into_iter().filter(|r| r.method == "POST").collect();
    assert_eq!((created.len(), created[0].body["base"].as_str()), (1, Some("main")));
    assert_eq!(created[0].authorization.as_deref(), Some("Bearer ghp_pullRequestT0ken"));
    let put = rx.to("/gh/repos/o/r/contents/stack/compose.yaml");
    assert_eq!(put.len(), 1);
    let content = base64::engine::general_purpose::STANDARD.decode(put[0].body["content"].as_str().unwrap()).unwrap();
    assert_eq!(String::from_utf8(content).unwrap(), compose.replace(":1.4.2", ":1.4.3"), "only the tag moves");
    let blob = crate::support::git(&remote.work, &["rev-parse", "HEAD:stack/compose.yaml"]);
    assert_eq!(put[0].body["sha"], blob.trim(), "the edit names the blob it replaces");
    assert_eq!(put[0].body["branch"], branch);

    stack.publish("v2", &tag("1.4.4"));
    assert_eq!(stack.clusterup(&["apply", "--auto"]).code, 0);
    assert_eq!(rx.open_pulls(), [format!("clusterup/{}/web-1.4.4", stack.name)], "the older one closed");
    assert!(
        std::fs::read_to_string(stack.checkout().join("compose.yaml")).unwrap().contains(":1.4.2"),
        "host untouched"
    );
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
}
