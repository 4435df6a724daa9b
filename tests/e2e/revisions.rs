//! Revisions and recovery: no flapping, rollback, crash recovery, pause,
//! update windows, pruning of rollback images.

use std::os::unix::process::ExitStatusExt;

use crate::support::{Stack, docker, image_id};

#[test]
fn a_rolled_back_image_is_not_retried_until_a_newer_one_appears() {
    let mut stack = Stack::two_services_pushed("noflap", "bad", "");
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 1, "{run:?}");
    let ids = (stack.container_id("web"), stack.container_id("other"));
    for _ in 0..5 {
        let run = stack.clusterup(&["apply", "--auto"]);
        assert_eq!(run.code, 4, "{run:?}");
        assert!(run.stdout.contains("rejected") && run.stdout.contains("--retry"), "{run:?}");
        assert_eq!((stack.container_id("web"), stack.container_id("other")), ids, "left untouched");
    }
    assert_eq!(stack.outcomes(), ["rolled_back"], "no further revisions were attempted");

    let web = stack.image("web");
    stack.publish("v2", &web);
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 4, "web's new image applies, other's rejected one is still held back: {run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    assert_eq!(stack.running_image("other"), image_id("clusterup-fixture/web:v1"));
}

#[test]
fn rollback_returns_to_the_state_before_and_auto_does_not_reapply() {
    let stack = Stack::two_services_pushed("rollbackimg", "v2", "");
    assert_eq!(stack.clusterup(&["apply", "--auto"]).code, 0);
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));

    let run = stack.clusterup(&["rollback", "--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"), "--dry-run changes nothing");

    let run = stack.clusterup(&["rollback", "--yes", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    for svc in ["web", "other"] {
        assert_eq!(stack.running_image(svc), image_id("clusterup-fixture/web:v1"), "{svc}");
        assert_eq!(stack.health(svc), "running/healthy");
    }
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 4, "the images rolled away from are rejected: {run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
    let run = stack.clusterup(&["apply", "--auto", "--retry"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    let list = stack.clusterup(&["rollback", "--list"]);
    assert!(list.stdout.contains("rollback") && list.stdout.contains("auto"), "{list:?}");
}

/// Kills `apply --auto` at `stage`, then checks that the next run recovers
/// and finishes the update.
fn crash_at(test: &str, stage: &str, completed: bool) {
    let stack = Stack::two_services_pushed(test, "v2", "");
    let out =
        stack.clusterup_command(&stack.dir, &["apply", "--auto"]).env("CLUSTERUP_CRASH_AT", stage).output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "the run must have died at {stage}: {out:?}");
    let ids_at_crash = (stack.container_id("web"), stack.container_id("other"));

    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("recovered interrupted revision 1"), "{run:?}");
    for svc in ["web", "other"] {
        assert_eq!(stack.running_image(svc), image_id("clusterup-fixture/web:v2"), "{stage}: {svc}");
        assert_eq!(stack.health(svc), "running/healthy", "{stage}: {svc}");
    }
    let outcomes = stack.outcomes();
    if completed {
        assert_eq!(outcomes, ["applied"], "{stage}: the interrupted revision had done its work");
        let ids = (stack.container_id("web"), stack.container_id("other"));
        assert_eq!(ids, ids_at_crash, "{stage}: completing it recreates nothing");
    } else {
        assert_eq!(outcomes, ["rolled_back", "applied"], "{stage}: rolled back, then applied afresh");
    }
    let names = docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=com.docker.compose.project={}", stack.name),
    ]);
    assert_eq!(String::from_utf8_lossy(&names.stdout).lines().count(), 2, "no leftover containers");
}

#[test]
fn killed_after_the_journal_record_recovers() {
    crash_at("crashjournal", "journaled", false);
}

#[test]
fn killed_mid_pull_recovers() {
    crash_at("crashpull", "pulled", false);
}

#[test]
fn killed_after_the_first_of_two_recreates_recovers() {
    crash_at("crashrecreate", "recreated", false);
}

#[test]
fn killed_during_the_health_wait_recovers() {
    crash_at("crashhealth", "health-wait", false);
}

/// Killed once every service was recreated and healthy, before the end
/// was journaled: the next run finds the target reached and completes
/// the revision, recreating nothing.
#[test]
fn killed_after_the_update_was_healthy_completes_it() {
    crash_at("crashdone", "executed", true);
}

#[test]
fn pause_stops_unattended_applies_until_resumed_or_expired() {
    let stack = Stack::two_services_pushed("pause", "v2", "");
    let run = stack.clusterup(&["pause", "--reason", "incident 42"]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stdout.contains("paused by") && run.stdout.contains("incident 42"), "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
    assert_eq!(stack.clusterup(&["check"]).code, 100, "check still works");
    assert!(stack.clusterup(&["status"]).stdout.contains("incident 42"));
    assert_eq!(stack.clusterup(&["resume"]).code, 0);
    assert_eq!(stack.clusterup(&["apply", "--auto"]).code, 0);
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));

    let run = stack.clusterup(&["pause", "--for", "1h"]);
    assert_eq!(run.code, 0, "{run:?}");
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2)).to_string();
    let run = stack.clusterup_at(&later, &["apply", "--auto"]);
    assert_eq!(run.code, 0, "a pause --for ends by itself: {run:?}");
}

#[test]
fn an_update_window_holds_unattended_applies() {
    let stack = Stack::two_services_pushed("window", "v2", "    window: \"Mon 02:00-03:00 UTC\"\n");
    let run = stack.clusterup_at("2026-11-25T12:00:00Z", &["apply", "--auto"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stdout.contains("outside the update window") && run.stdout.contains("2026-11-30T02:00:00"), "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
    let run = stack.clusterup_at("2026-11-30T02:30:00Z", &["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
}

#[test]
fn pruning_keeps_the_configured_number_of_rollback_images() {
    let mut stack = Stack::two_services_pushed("prune", "v2", "    keep_images: 2\n");
    let user_tag = format!("{}-user/keep:1", stack.name);
    stack.tag_local("v1", &user_tag);
    let web = stack.image("web");
    let other = stack.image("other");
    for (n, next) in ["v2", "v1", "v2"].iter().enumerate() {
        if n > 0 {
            stack.publish(next, &web);
            stack.publish(next, &other);
        }
        let run = stack.clusterup(&["apply", "--auto"]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    let tags = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}", &format!("clusterup/{}/*", stack.name)]);
    let mut tags: Vec<String> =
        String::from_utf8_lossy(&tags.stdout).lines().map(|l| l.rsplit(':').next().unwrap().to_string()).collect();
    tags.sort();
    tags.dedup();
    assert_eq!(tags, ["rev-2", "rev-3"], "the last two revisions keep their images");
    assert!(
        docker(&["image", "inspect", &user_tag]).status.success(),
        "an image clusterup did not tag is never touched"
    );
}
