//! Structural updates from git: a bare repository is the remote; each test
//! deploys a first commit, pushes a change and applies it.

use crate::support::{Remote, Stack, free_port, http_get, image_id};

/// A stack deployed from `remote` at a first commit with `yaml`.
fn deployed(test: &str, yaml: impl Fn(&Stack) -> String) -> (Stack, Remote) {
    deployed_with(test, yaml, &[])
}

fn deployed_with(test: &str, yaml: impl Fn(&Stack) -> String, files: &[(&str, &str)]) -> (Stack, Remote) {
    let mut stack = Stack::new(test);
    for service in ["web", "other", "db", "api"] {
        let image = stack.image(service);
        stack.publish("v1", &image);
    }
    let remote = stack.remote();
    let compose = yaml(&stack);
    let mut all = vec![("compose.yaml", compose.as_str())];
    all.extend_from_slice(files);
    remote.commit_files(&all, "first");
    stack.write_git_config(&remote, "    auto: {structural: true}\n");
    let run = stack.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 0, "first deploy: {run:?}");
    (stack, remote)
}

fn services(stack: &Stack, body: &str) -> String {
    format!("services:\n{}", body.replace("IMG_", &format!("{}/{}/", crate::support::bed().registry, stack.name)))
}

#[test]
fn an_added_service_is_created_and_nothing_else_is_touched() {
    let base = "  web:\n    image: IMG_web:latest\n  other:\n    image: IMG_other:latest\n";
    let (stack, remote) = deployed("gitadd", |s| services(s, base));
    let ids = (stack.container_id("web"), stack.container_id("other"));

    remote.commit_compose(&services(&stack, &format!("{base}  db:\n    image: IMG_db:latest\n")), "add db");
    let run = stack.clusterup(&["check", "--json"]);
    assert_eq!(run.code, 100, "{run:?}");
    let plan = run.json();
    assert_eq!(plan["kind"], "structural");
    assert_eq!(plan["changes"].as_array().unwrap().len(), 1, "{run:?}");
    assert_eq!(plan["changes"][0]["kind"], "create");
    assert_eq!(plan["changes"][0]["service"], "db");

    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stack.health("db"), "running/healthy");
    assert_eq!(
        (stack.container_id("web"), stack.container_id("other")),
        ids,
        "untouched services keep their containers"
    );

    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["outcome"], "up_to_date", "a second apply does nothing");
}

#[test]
fn a_port_change_recreates_only_that_service() {
    let (p1, p2) = (free_port(), free_port());
    let body = |port: u16| {
        format!(
            "  web:\n    image: IMG_web:latest\n    ports: [\"127.0.0.1:{port}:8080\"]\n  other:\n    image: IMG_other:latest\n"
        )
    };
    let (stack, remote) = deployed("gitport", |s| services(s, &body(p1)));
    assert_eq!(http_get(p1, "/version").as_deref(), Some("v1"));
    let other = stack.container_id("other");

    remote.commit_compose(&services(&stack, &body(p2)), "move web");
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let changes = run.json()["changes"].as_array().unwrap().clone();
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0]["service"].as_str(), changes[0]["kind"].as_str()), (Some("web"), Some("recreate")));
    assert_eq!(http_get(p2, "/version").as_deref(), Some("v1"), "the new port answers");
    assert_eq!(http_get(p1, "/version"), None, "the old port is closed");
    assert_eq!(stack.container_id("other"), other);
}

#[test]
fn a_removed_service_goes_and_its_named_volume_stays_with_its_data() {
    let base = "  web:\n    image: IMG_web:latest\n";
    let db = "  db:\n    image: IMG_db:latest\n    volumes: [\"data:/data\"]\n";
    let volumes = "volumes:\n  data: {}\n";
    let (stack, remote) = deployed("gitremove", |s| format!("{}{volumes}", services(s, &format!("{base}{db}"))));
    stack.exec("db", "echo precious > /data/file");

    remote.commit_compose(&format!("{}{volumes}", services(&stack, base)), "drop db");
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!stack.has_container("db"), "the removed service's container is gone");
    assert_eq!(stack.volume_file("data", "file").as_deref(), Some("precious"), "its volume and data stay");
}

#[test]
fn a_rename_with_a_named_volume_takes_the_data_along() {
    let vol = "volumes:\n  data: {}\n";
    let svc = |name: &str| format!("  {name}:\n    image: IMG_api:latest\n    volumes: [\"data:/data\"]\n");
    let (stack, remote) = deployed("gitrename", |s| format!("{}{vol}", services(s, &svc("api"))));
    stack.exec("api", "echo follows > /data/file");

    remote.commit_compose(&format!("{}{vol}", services(&stack, &svc("backend"))), "rename");
    let run = stack.clusterup(&["check", "--json"]);
    let plan = run.json();
    assert_eq!(plan["diff"]["services"][0]["change"], "renamed", "{run:?}");
    assert_eq!(plan["data_risks"].as_array().unwrap().len(), 0);
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!stack.has_container("api"));
    let id = stack.container_id("backend");
    let out = crate::support::docker(&["exec", &id, "/bin/cat", "/data/file"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "follows");
}

#[test]
fn a_rename_with_an_anonymous_volume_is_data_at_risk_and_never_automatic() {
    let svc = |name: &str| format!("  {name}:\n    image: IMG_api:latest\n    volumes: [\"/data\"]\n");
    let (stack, remote) = deployed("gitanon", |s| services(s, &svc("api")));
    let id = stack.container_id("api");

    remote.commit_compose(&services(&stack, &svc("backend")), "rename");
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 4, "{run:?}");
    let report = run.json();
    assert!(report["data_risks"][0].as_str().unwrap_or("").contains("anonymous"), "{run:?}");
    assert_eq!(stack.container_id("api"), id, "nothing changed");
    assert!(!stack.has_container("backend"));
    let run = stack.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 4, "--yes alone does not accept data risk: {run:?}");
    assert_eq!(stack.container_id("api"), id);
}

#[test]
fn an_env_change_recreates_with_the_new_env_and_shows_no_values() {
    let body = |v: &str| {
        format!(
            "  web:\n    image: IMG_web:latest\n    environment:\n      MODE: {v}\n      API_TOKEN: tok-{v}-secret\n  other:\n    image: IMG_other:latest\n"
        )
    };
    let (stack, remote) = deployed("gitenv", |s| services(s, &body("one")));
    let other = stack.container_id("other");

    remote.commit_compose(&services(&stack, &body("two")), "env");
    let run = stack.clusterup(&["check"]);
    assert_eq!(run.code, 100, "{run:?}");
    assert!(run.stdout.contains("environment"), "{run:?}");
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let env = stack.env("web");
    assert!(env.contains("MODE=two"));
    assert_eq!(stack.container_id("other"), other);
    for text in [run.all(), stack.journal(), stack.clusterup(&["check"]).all()] {
        assert!(!text.contains("tok-one-secret") && !text.contains("tok-two-secret"), "an env value leaked: {text}");
    }
}

#[test]
fn a_failing_new_service_rolls_the_whole_revision_back() {
    let base = "  web:\n    image: IMG_web:latest\n  other:\n    image: IMG_other:latest\n";
    let (mut stack, remote) = deployed("gitfail", |s| services(s, base));
    let first = std::fs::read_to_string(stack.checkout().join("compose.yaml")).unwrap();
    let web = stack.container_id("web");
    let bad = stack.image("bad");
    stack.publish("bad", &bad);

    // `late` comes after web, so web is already recreated when it fails.
    let changed = "  web:\n    image: IMG_web:latest\n    environment: {MODE: new}\n  late:\n    image: IMG_bad:latest\n    depends_on: [web]\n";
    remote.commit_compose(&services(&stack, changed), "break it");
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["outcome"], "rolled_back");
    assert!(!stack.has_container("late"), "the new service is removed again");
    assert_eq!(stack.health("other"), "running/healthy", "the service the commit removed is still there");
    assert_eq!(stack.health("web"), "running/healthy");
    assert_ne!(stack.container_id("web"), web, "web was recreated, then restored");
    let env = stack.env("web");
    assert!(!env.contains("MODE=new"), "web runs the old configuration");
    assert_eq!(
        std::fs::read_to_string(stack.checkout().join("compose.yaml")).unwrap(),
        first,
        "the previous files are back"
    );
}

#[test]
fn a_new_tag_and_a_new_service_are_one_mixed_revision() {
    let (mut stack, remote) = deployed("gitmixed", |s| services(s, "  web:\n    image: IMG_web:latest\n"));
    let v2 = format!("{}/{}/web:v2", crate::support::bed().registry, stack.name);
    stack.publish("v2", &v2);
    remote
        .commit_compose(&services(&stack, "  web:\n    image: IMG_web:v2\n  db:\n    image: IMG_db:latest\n"), "mixed");
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert_eq!(report["kind"], "mixed");
    assert_eq!(report["revision"], 2);
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    assert_eq!(stack.health("db"), "running/healthy");
}

#[test]
fn invalid_compose_in_a_new_commit_changes_nothing() {
    let base = "  web:\n    image: IMG_web:latest\n";
    let (stack, remote) = deployed("gitinvalid", |s| services(s, base));
    let web = stack.container_id("web");
    for (broken, want) in [
        ("services:\n  web:\n    image: [unclosed\n".to_string(), "yaml"),
        ("services:\n  web:\n    image: ${MISSING_TAG?set MISSING_TAG}\n".to_string(), "MISSING_TAG"),
    ] {
        remote.commit_compose(&broken, "broken");
        let run = stack.clusterup(&["apply", "--auto"]);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stderr.contains(want) && run.stderr.contains("commit"), "{run:?}");
        assert_eq!(stack.container_id("web"), web);
    }
}

#[test]
fn rewritten_remote_history_is_refused() {
    let base = "  web:\n    image: IMG_web:latest\n";
    let (stack, remote) = deployed("gitforce", |s| services(s, base));
    remote.rewrite_history(&services(&stack, "  web:\n    image: IMG_web:latest\n    environment: {A: b}\n"));
    let web = stack.container_id("web");
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 1, "failed, nothing changed: {run:?}");
    assert!(run.stderr.contains("no longer contains the deployed commit"), "{run:?}");
    assert_eq!(stack.container_id("web"), web);
}

#[test]
fn a_changed_bind_mounted_file_redeploys_its_service() {
    let body = "  web:\n    image: IMG_web:latest\n    volumes: [\"./site/version:/www/version:ro\"]\n  other:\n    image: IMG_other:latest\n";
    let (stack, remote) = deployed_with("gitbind", |s| services(s, body), &[("site/version", "one\n")]);
    let other = stack.container_id("other");
    let web = stack.container_id("web");

    remote.commit_files(&[("site/version", "two\n")], "new content, same compose file");
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert_eq!(report["changes"][0]["service"], "web", "{run:?}");
    assert!(report["changes"][0]["reasons"][0].as_str().unwrap().contains("site/version"), "{run:?}");
    assert_ne!(stack.container_id("web"), web);
    assert_eq!(stack.container_id("other"), other);
    let out = crate::support::docker(&["exec", &stack.container_id("web"), "/bin/cat", "/www/version"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "two");
}

#[test]
fn rollback_of_a_structural_update_restores_files_and_containers() {
    let base = "  web:\n    image: IMG_web:latest\n    environment: {MODE: one}\n";
    let (stack, remote) = deployed("gitrollback", |s| services(s, base));
    let first = std::fs::read_to_string(stack.checkout().join("compose.yaml")).unwrap();
    remote.commit_compose(
        &services(
            &stack,
            "  web:\n    image: IMG_web:latest\n    environment: {MODE: two}\n  db:\n    image: IMG_db:latest\n",
        ),
        "more",
    );
    assert_eq!(stack.clusterup(&["apply", "--auto"]).code, 0);
    assert!(stack.has_container("db"));

    let run = stack.clusterup(&["rollback", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!stack.has_container("db"), "the service the rolled-back commit added is gone");
    let env = stack.env("web");
    assert!(env.contains("MODE=one"));
    assert_eq!(std::fs::read_to_string(stack.checkout().join("compose.yaml")).unwrap(), first);

    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 4, "the rolled-back commit is not applied again: {run:?}");
    assert!(run.stdout.contains("rejected"), "{run:?}");
    assert!(!stack.has_container("db"));
}

#[test]
fn rollback_to_two_revisions_back() {
    let body = |mode: &str| format!("  web:\n    image: IMG_web:latest\n    environment: {{MODE: {mode}}}\n");
    let (stack, remote) = deployed("gitrollbackto", |s| services(s, &body("one")));
    let first_commit = std::fs::read_to_string(stack.checkout().join("compose.yaml")).unwrap();
    for mode in ["two", "three"] {
        remote.commit_compose(&services(&stack, &body(mode)), mode);
        assert_eq!(stack.clusterup(&["apply", "--auto"]).code, 0);
    }
    let run = stack.clusterup(&["rollback", "--to", "1", "--yes", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["revision"], 4);
    let env = stack.env("web");
    assert!(env.contains("MODE=one"));
    assert_eq!(std::fs::read_to_string(stack.checkout().join("compose.yaml")).unwrap(), first_commit);
    let list = stack.clusterup(&["rollback", "--list", "--json"]).json();
    let triggers: Vec<&str> =
        list["revisions"].as_array().unwrap().iter().map(|r| r["trigger"].as_str().unwrap()).collect();
    assert_eq!(triggers, ["manual", "auto", "auto", "rollback"]);
}
