//! Image updates: detection without pulling, health-gated apply, rollback.

use crate::support::{Stack, image_id};

fn two_services(stack: &Stack) -> String {
    format!(
        "services:\n  web:\n    image: {}\n  other:\n    image: {}\n    depends_on: [web]\n",
        stack.image("web"),
        stack.image("other")
    )
}

#[test]
fn update_is_detected_applied_healthy_and_journaled() {
    let mut stack = Stack::new("update");
    let (web, other) = (stack.image("web"), stack.image("other"));
    stack.publish("v1", &web);
    stack.publish("v1", &other);
    stack.write_compose(&two_services(&stack));
    stack.up();
    let other_container = stack.container_id("other");

    // Zero configuration: the directory is the stack.
    let run = stack.clusterup(&["check"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("up to date"), "{run:?}");

    stack.publish("v2", &web);
    let run = stack.clusterup(&["check", "--json"]);
    assert_eq!(run.code, 100, "{run:?}");
    let plan = run.json();
    assert_eq!(plan["kind"], "image");
    assert_eq!(plan["changes"].as_array().unwrap().len(), 1, "{run:?}");
    assert_eq!(plan["changes"][0]["service"], "web");
    assert_eq!(plan["changes"][0]["to"].as_str().unwrap(), repo_digest("clusterup-fixture/web:v2", &web));
    // check never pulls: the local tag still points at v1.
    assert_eq!(image_id(&web), image_id("clusterup-fixture/web:v1"));

    stack.write_config("");
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert_eq!(report["outcome"], "applied");
    assert_eq!(report["revision"], 1);
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    assert_eq!(stack.health("web"), "running/healthy");
    assert_eq!(stack.container_id("other"), other_container, "an unchanged service must not be recreated");

    let run = stack.clusterup(&["check"]);
    assert_eq!(run.code, 0, "{run:?}");

    // A second apply changes nothing: no redeploy loop.
    let web_container = stack.container_id("web");
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["outcome"], "up_to_date");
    assert_eq!(stack.container_id("web"), web_container);

    let run = stack.clusterup(&["status", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let status = run.json();
    let revisions = status["revisions"].as_array().unwrap();
    assert_eq!(revisions.len(), 1, "{run:?}");
    assert_eq!(revisions[0]["outcome"], "applied");
    assert_eq!(revisions[0]["services"][0]["before"].as_str().unwrap(), image_id("clusterup-fixture/web:v1"));
    assert_eq!(revisions[0]["services"][0]["after"].as_str().unwrap(), image_id("clusterup-fixture/web:v2"));
    // The previous image is kept under a clusterup tag for rollback.
    assert_eq!(image_id(&format!("clusterup/{}/web:rev-1", stack.name)), image_id("clusterup-fixture/web:v1"));
}

/// The digest under which `image` was pushed to `reference`'s repository.
fn repo_digest(image: &str, reference: &str) -> String {
    let digests =
        crate::support::docker(&["image", "inspect", "-f", "{{range .RepoDigests}}{{println .}}{{end}}", image]);
    let repo = reference.rsplit_once(':').unwrap().0;
    String::from_utf8_lossy(&digests.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{repo}@")).map(String::from))
        .expect("pushed image has a repo digest")
}

#[test]
fn unhealthy_update_is_rolled_back() {
    let mut stack = Stack::new("rollback");
    let (web, other) = (stack.image("web"), stack.image("other"));
    stack.publish("v1", &web);
    stack.publish("v1", &other);
    stack.write_compose(&two_services(&stack));
    stack.write_config("");
    stack.up();
    let other_container = stack.container_id("other");

    stack.publish("bad", &web);
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let report = run.json();
    assert_eq!(report["outcome"], "rolled_back");
    assert!(report["error"].as_str().unwrap().contains("unhealthy"), "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"), "web must run its previous image");
    assert_eq!(stack.health("web"), "running/healthy");
    assert_eq!(stack.container_id("other"), other_container);

    let journal = stack.journal();
    assert!(journal.contains(r#""outcome":"rolled_back""#), "{journal}");
}

#[test]
fn pinned_and_locally_built_images_are_reported_and_never_touched() {
    let mut stack = Stack::new("pinned");
    let pinned_ref = stack.image("pinned");
    stack.publish("v1", &pinned_ref);
    let digest = repo_digest("clusterup-fixture/web:v1", &pinned_ref);
    let pinned = format!("{}@{digest}", pinned_ref.rsplit_once(':').unwrap().0);
    let local = format!("{}-local/web:dev", stack.name);
    stack.tag_local("v1", &local);
    stack.write_compose(&format!("services:\n  pinned:\n    image: {pinned}\n  local:\n    image: {local}\n"));
    stack.write_config("");
    stack.up();
    // A newer image behind the pinned repository's tag must not matter.
    stack.publish("v2", &pinned_ref);
    let ids = (stack.container_id("pinned"), stack.container_id("local"));

    let run = stack.clusterup(&["check", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let states: Vec<(String, String)> = run.json()["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["service"].as_str().unwrap().to_string(), s["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        states,
        [("local".to_string(), "local_build".to_string()), ("pinned".to_string(), "pinned".to_string())]
    );
    let human = stack.clusterup(&["check"]);
    assert!(human.stdout.contains("pinned by digest") && human.stdout.contains("local build"), "{human:?}");

    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!((stack.container_id("pinned"), stack.container_id("local")), ids);
}

#[test]
fn private_registry_with_credentials_from_the_docker_config() {
    let (stack, _) = Stack::web_update_pending("private", |s| s.auth_image("web"));

    let run = stack.clusterup(&["check"]);
    assert_eq!(run.code, 100, "{run:?}");
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));

    let password = crate::support::bed().auth_password.clone();
    stack.write_docker_config("wrong-password");
    let run = stack.clusterup(&["check"]);
    assert_eq!(run.code, 1, "{run:?}");
    let registry = &crate::support::bed().auth_registry;
    assert!(run.all().contains(&format!("registry {registry}: authentication failed")), "{run:?}");

    // No secret anywhere: output, journal, every state file.
    let mut texts = vec![run.all(), stack.journal()];
    let files = crate::support::files_under(&stack.state, &[]);
    assert!(!files.is_empty(), "the state dir was written");
    texts.extend(files.into_iter().map(|(_, bytes)| String::from_utf8_lossy(&bytes).to_string()));
    for text in texts {
        assert!(!text.contains(&password) && !text.contains("wrong-password"), "secret leaked: {text}");
    }
}

#[test]
fn credentials_from_a_credential_helper() {
    let (stack, _) = Stack::web_update_pending("credhelper", |s| s.auth_image("web"));

    // The Docker CLI protocol: `docker-credential-<name> get`, server on
    // stdin, JSON on stdout.
    let bed = crate::support::bed();
    let bin = stack.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-cutest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\n[ \"$server\" = \"{}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{}\",\"Secret\":\"{}\"}}' \"$server\"\n",
            bed.auth_registry, bed.auth_user, bed.auth_password
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(stack.docker_config.join("config.json"), r#"{"credsStore":"cutest"}"#).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let out = stack.clusterup_command(&stack.dir, &["apply", "--auto"]).env("PATH", path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains(&bed.auth_password) && !stack.journal().contains(&bed.auth_password));
}
