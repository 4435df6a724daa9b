//! README promises that had no test: several stacks in one run, pauses
//! (`--until`, with the engine down, mentioned by a manual apply), the
//! health-URL gate, a failing stack pre-update hook, a `skip` naming no
//! service.

use crate::support::{Run, Stack, image_id};

/// The configuration for `stack` plus one more stack per `(suffix, dir)`.
fn several(stack: &Stack, others: &[(&str, &std::path::Path)]) {
    let config = stack.write_config("");
    let mut text = std::fs::read_to_string(&config).unwrap();
    for (suffix, dir) in others {
        text.push_str(&format!("  - name: {}-{suffix}\n    directory: {}\n", stack.name, dir.display()));
    }
    std::fs::write(&config, text).unwrap();
}

#[test]
fn several_stacks_report_in_one_document_and_the_code_that_most_needs_attention_wins() {
    let (stack, web) = Stack::web_running("multi", |s| s.image("web"));
    let paused = stack.scratch("paused");
    std::fs::write(paused.join("compose.yaml"), format!("services:\n  web:\n    image: {web}\n")).unwrap();
    let broken = stack.scratch("broken");
    std::fs::write(broken.join("compose.yaml"), "services: [web]\n").unwrap();
    several(&stack, &[("paused", &paused), ("broken", &broken)]);
    let paused_name = format!("{}-paused", stack.name);
    assert_eq!(stack.clusterup(&["pause", "--stack", &paused_name, "--reason", "drill"]).code, 0);

    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 2, "2 (the broken stack) wins over 4 (paused) and 0: {run:?}");
    let doc = run.json();
    assert_eq!(doc["schema_version"], 1, "{doc}");
    let stacks = doc["stacks"].as_array().expect("one document for several stacks");
    let names: Vec<&str> = stacks.iter().map(|s| s["stack"].as_str().unwrap()).collect();
    assert_eq!(names, [stack.name.clone(), paused_name.clone(), format!("{}-broken", stack.name)], "config order");
    assert_eq!(stacks[0]["outcome"], "up_to_date", "{doc}");
    assert_eq!(stacks[1]["outcome"], "skipped", "{doc}");
    assert!(stacks[1]["held_back"][0].as_str().unwrap().contains("drill"), "{doc}");
    assert_eq!(stacks[2]["exit_code"], 2, "{doc}");
    assert!(stacks[2]["error"].as_str().unwrap().contains("services must be a mapping"), "{doc}");

    // Without the broken stack: the pause's 4 wins over 0.
    several(&stack, &[("paused", &paused)]);
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stdout.contains(&format!("stack {paused_name}: not applied: paused by")), "{run:?}");
}

#[test]
fn pause_until_a_time_and_pausing_with_the_engine_down() {
    let (mut stack, web) = Stack::web_update_pending("pauseuntil", |s| s.image("web"));
    stack.write_config("");
    // An incident: the engine does not answer, pausing still works.
    let mut pause =
        stack.clusterup_command(&stack.dir, &["pause", "--until", "2026-11-25T13:00:00Z", "--reason", "db"]);
    pause.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let run = Run::of(pause);
    assert_eq!(run.code, 0, "{run:?}");
    let run = stack.clusterup_at("2026-11-25T12:59:00Z", &["apply", "--auto"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stdout.contains("paused by") && run.stdout.contains("db"), "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
    let run = stack.clusterup_at("2026-11-25T13:00:01Z", &["apply", "--auto"]);
    assert_eq!(run.code, 0, "the pause ended at its time: {run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));

    // Paused again, a manual apply goes ahead and says the stack is paused.
    assert_eq!(stack.clusterup_at("2026-11-25T13:00:01Z", &["pause", "--for", "1h"]).code, 0);
    stack.publish("v1", &web);
    let run = stack.clusterup_at("2026-11-25T13:30:00Z", &["apply", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("note: paused by"), "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
}

/// An HTTP health endpoint that answers 500 for `failing` after its
/// first request, then 200: an update's health wait (bounded below that)
/// sees only failures, the rollback's wait after it a healthy answer.
fn flaky_endpoint(failing: std::time::Duration) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut first = None;
        for mut stream in listener.incoming().flatten() {
            let since = *first.get_or_insert_with(std::time::Instant::now);
            let mut request = [0u8; 1024];
            let _ = std::io::Read::read(&mut stream, &mut request);
            let status = if since.elapsed() < failing { "500 Internal Server Error" } else { "200 OK" };
            let _ = std::io::Write::write_all(&mut stream, format!("HTTP/1.0 {status}\r\n\r\n").as_bytes());
        }
    });
    port
}

/// `clusterup.health-url`: a service Docker calls healthy whose URL does
/// not answer 2xx is rolled back.
#[test]
fn a_health_url_that_fails_rolls_back_a_service_docker_calls_healthy() {
    let mut stack = Stack::new("healthurl");
    let web = stack.image("web");
    stack.publish("v1", &web);
    let port = flaky_endpoint(std::time::Duration::from_secs(8));
    stack.write_compose(&format!(
        "services:\n  web:\n    image: {web}\n    labels:\n      clusterup.health-url: http://127.0.0.1:{port}/ready\n      clusterup.health-timeout: 8s\n"
    ));
    stack.write_config("");
    stack.up();
    stack.publish("v2", &web);
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let error = run.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("health URL") && error.contains("500"), "{error}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
    assert_eq!(stack.health("web"), "running/healthy");

    let run = stack.clusterup(&["apply", "--auto", "--retry"]);
    assert_eq!(run.code, 0, "a URL that answers lets it through: {run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
}

#[test]
fn a_failing_stack_pre_update_hook_touches_nothing() {
    let (stack, _) = Stack::web_update_pending("prehook", |s| s.image("web"));
    stack.write_config("    hooks:\n      pre_update: 'echo backing up; exit 3'\n");
    let container = stack.container_id("web");
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let error = run.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("pre-update hook failed") && error.contains("nothing was changed"), "{error}");
    assert_eq!(stack.container_id("web"), container, "not recreated");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
}

#[test]
fn a_skip_naming_no_service_is_a_configuration_error() {
    let (stack, _) = Stack::web_running("skipghost", |s| s.image("web"));
    stack.write_config("    services:\n      ghost: {skip: true}\n");
    let run = stack.clusterup(&["check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("services.ghost.skip") && run.stderr.contains("services: web"), "{run:?}");
}

/// Starts `apply --auto` and waits until web no longer runs `before`:
/// the run is in its health wait.
fn apply_in_health_wait(stack: &Stack, before: &str) -> std::process::Child {
    let child = stack
        .clusterup_command(&stack.dir, &["apply", "--auto"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while stack.try_running_image("web").is_none_or(|image| image == before) {
        assert!(std::time::Instant::now() < deadline, "web was never recreated");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    child
}

fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// SIGINT (Ctrl-C) stops a run the way SIGTERM does: the change in
/// progress is rolled back and the run exits 1; a second signal ends it
/// at once, and the next run recovers.
#[test]
fn sigint_rolls_back_and_a_second_signal_ends_the_run_at_once() {
    let (mut stack, web) = Stack::web_running("sigint", |s| s.image("web"));
    let v1 = image_id("clusterup-fixture/web:v1");
    stack.publish("slow", &web);
    let child = apply_in_health_wait(&stack, &v1);
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stack.running_image("web"), v1);
    assert_eq!(stack.health("web"), "running/healthy");
    assert_eq!(stack.outcomes(), ["rolled_back"]);
    assert!(!stack.journal().contains(r#""event":"reject""#), "a stop is not a verdict on the target");

    let child = apply_in_health_wait(&stack, &v1);
    signal(&child, libc::SIGTERM);
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "the second signal ends the run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stack.outcomes(), ["rolled_back", "unfinished"]);

    stack.publish("v1", &web);
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("recovered interrupted revision 2"), "{run:?}");
    assert_eq!(stack.running_image("web"), v1);
    assert_eq!(stack.health("web"), "running/healthy");
}

/// A failing post-update hook is logged (even with `-q`) and the update
/// stands.
#[test]
fn a_failing_post_update_hook_is_logged_and_the_update_stands() {
    let (stack, _) = Stack::web_update_pending("posthook", |s| s.image("web"));
    stack.write_config("    hooks:\n      post_update: 'exit 5'\n");
    let run = stack.clusterup(&["-q", "apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("warning: the stack's post-update hook failed"), "{run:?}");
    assert!(run.stderr.contains("exit status: 5") || run.stderr.contains("exit 5"), "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
}

/// `--config`, `--state-dir` and `--stack` on the command line do what
/// the environment does; `-q` leaves out progress, never the result.
#[test]
fn flags_name_the_configuration_the_state_dir_and_the_stack() {
    let (stack, _) = Stack::web_update_pending("flags", |s| s.image("web"));
    let config = stack.write_config("");
    let elsewhere = stack.scratch("flag-state");
    let run_with = |args: &[&str]| {
        let mut cmd = stack.clusterup_command(&stack.dir, args);
        cmd.env_remove("CLUSTERUP_CONFIG").env_remove("CLUSTERUP_STATE_DIR");
        Run::of(cmd)
    };
    let (config, state) = (config.display().to_string(), elsewhere.display().to_string());
    let flags = ["--config", config.as_str(), "--state-dir", state.as_str(), "--stack", stack.name.as_str()];
    let run = run_with(&[&flags[..], &["check", "--only"]].concat());
    assert_eq!(run.code, 100, "{run:?}");
    let run = run_with(&[&flags[..], &["-q", "apply", "--auto"]].concat());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stderr.contains("pulling") && !run.stderr.contains("recreating"), "-q: no progress: {run:?}");
    assert!(elsewhere.join(&stack.name).join("journal.jsonl").is_file(), "the journal went to --state-dir");
    assert!(!stack.state.join(&stack.name).join("journal.jsonl").exists(), "and not to the default");
    let run = run_with(&[&flags[..4], &["--stack", "nosuch", "check"]].concat());
    assert_eq!(run.code, 2, "an unknown --stack is a usage error: {run:?}");
    assert!(run.stderr.contains("nosuch"), "{run:?}");
}

/// `status --revisions N` shows the last N; rollback and resume work
/// while paused.
#[test]
fn status_shows_n_revisions_and_rollback_works_while_paused() {
    let (mut stack, web) = Stack::web_update_pending("statusn", |s| s.image("web"));
    stack.write_config("");
    assert_eq!(stack.clusterup(&["apply", "--auto"]).code, 0);
    stack.publish("v1", &web);
    assert_eq!(stack.clusterup(&["apply", "--auto"]).code, 0);
    let run = stack.clusterup(&["status", "--json", "--revisions", "1"]);
    let revisions = run.json()["revisions"].as_array().unwrap().clone();
    let ids: Vec<u64> = revisions.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [2], "the latest one only: {run:?}");

    assert_eq!(stack.clusterup(&["pause", "--reason", "incident"]).code, 0);
    let run = stack.clusterup(&["rollback", "--yes"]);
    assert_eq!(run.code, 0, "rollback is for incidents, paused or not: {run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    let mut resume = stack.clusterup_command(&stack.dir, &["resume"]);
    resume.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let run = Run::of(resume);
    assert_eq!(run.code, 0, "resume with the engine down: {run:?}");
    assert!(run.stdout.contains("resumed"), "{run:?}");
}

/// A rollback recreates only the services whose image or configuration
/// differs from the target revision's.
#[test]
fn a_rollback_recreates_only_what_differs() {
    let mut stack = Stack::new("rollbackonly");
    let (web, other) = (stack.image("web"), stack.image("other"));
    stack.publish("v1", &web);
    stack.publish("v1", &other);
    stack.write_compose(&format!("services:\n  web:\n    image: {web}\n  other:\n    image: {other}\n"));
    stack.write_config("");
    stack.up();
    stack.publish("v2", &web);
    assert_eq!(stack.clusterup(&["apply", "--auto"]).code, 0);
    let other_id = stack.container_id("other");
    let run = stack.clusterup(&["rollback", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
    assert_eq!(stack.container_id("other"), other_id, "other was the same in both revisions");
}

/// A manual apply of a target an earlier failure rejected says so before
/// it goes ahead.
#[test]
fn a_manual_apply_of_a_rejected_target_says_so() {
    let (mut stack, web) = Stack::web_running("manualrejected", |s| s.image("web"));
    stack.publish("bad", &web);
    assert_eq!(stack.clusterup(&["apply", "--auto"]).code, 1);
    let run = stack.clusterup(&["apply", "--yes"]);
    assert!(run.stdout.contains("note: web's image sha256:") && run.stdout.contains("was rejected"), "{run:?}");
    assert_eq!(run.code, 1, "tried again, failed again, rolled back: {run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
}

/// An edit to a directory stack clusterup never saw match what runs has
/// no files to go back to: when it fails, the run says a human is needed
/// (exit 3).
#[test]
fn a_failed_first_edit_without_kept_files_needs_a_human() {
    let mut stack = Stack::new("firstedit");
    let web = stack.image("web");
    stack.publish("v1", &web);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    stack.write_compose(&format!("services:\n  web:\n    image: {web}\n"));
    stack.write_config("");
    stack.up();
    stack.write_compose(&format!("services:\n  web:\n    image: {web}\n    ports: ['127.0.0.1:{port}:8080']\n"));
    let run = stack.clusterup(&["apply", "--yes", "--json"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.json()["outcome"], "rollback_failed", "{run:?}");
    assert!(run.stderr.contains("no copy of the files that ran before"), "{run:?}");
    drop(taken);
}
