//! Policies per service. `min_age`: a new image is taken by `apply
//! --auto` only once clusterup has known it that long (a withdrawn release
//! never reaches the hosts); `check` says how long is left,
//! `--ignore-min-age` is the emergency way. `window` per service: a
//! database only on Sunday night, the web tier any night.

use crate::support::Stack;

#[test]
fn a_new_image_waits_for_min_age_then_applies() {
    let (mut stack, web) = Stack::web_running("minage", |s| s.image("web"));
    let config = std::fs::read_to_string(stack.config_path()).unwrap();
    std::fs::write(stack.config_path(), format!("{config}    min_age: 3d\n")).unwrap();
    stack.publish("v2", &web);
    // The fixture was built before now: first sight is what counts.
    let t0 = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(1)).unwrap();
    let at = |hours: i64| t0.checked_add(jiff::SignedDuration::from_hours(hours)).unwrap().to_string();

    let run = stack.clusterup_at(&at(0), &["apply", "--auto"]);
    assert_eq!(run.code, 4, "held back: {run:?}");
    assert!(run.all().contains("web: the new image waits for min_age 3d (3d left)"), "{run:?}");
    assert_eq!(stack.running_image("web"), crate::support::image_id("clusterup-fixture/web:v1"));

    // The same digest pushed again does not restart the clock.
    stack.publish("v2", &web);
    let check = stack.clusterup_at(&at(26), &["check"]);
    assert!(check.all().contains("waiting: web: the new image waits for min_age 3d (1d 22h left)"), "{check:?}");
    let json = stack.clusterup_at(&at(26), &["check", "--json"]).json();
    assert_eq!(json["changes"][0]["waiting"]["left"], "1d 22h", "{json}");
    assert_eq!(stack.clusterup_at(&at(48), &["apply", "--auto"]).code, 4);

    let run = stack.clusterup_at(&at(72), &["apply", "--auto"]);
    assert_eq!(run.code, 0, "old enough: {run:?}");
    assert_eq!(stack.running_image("web"), crate::support::image_id("clusterup-fixture/web:v2"));
}

#[test]
fn ignore_min_age_takes_a_fresh_image_at_once_and_a_manual_apply_says_it_is_young() {
    let (mut stack, web) = Stack::web_running("minagefix", |s| s.image("web"));
    let config = std::fs::read_to_string(stack.config_path()).unwrap();
    std::fs::write(stack.config_path(), format!("{config}    services: {{web: {{min_age: 2h}}}}\n")).unwrap();
    stack.publish("v2", &web);
    let manual = stack.clusterup(&["apply"]);
    assert_eq!(manual.code, 2, "no terminal to ask on: {manual:?}");
    assert!(manual.all().contains("note: web: the new image waits for min_age 2h"), "{manual:?}");
    let run = stack.clusterup(&["apply", "--auto", "--ignore-min-age"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stack.running_image("web"), crate::support::image_id("clusterup-fixture/web:v2"));
}

#[test]
fn a_service_with_its_own_window_waits_for_it_while_the_others_update() {
    let stack =
        Stack::two_services_pushed("svcwindow", "v2", "    services: {other: {window: 'Sun 01:00-04:00 UTC'}}\n");
    // Wednesday: web may change, other may not.
    let run = stack.clusterup_at("2026-12-02T02:00:00Z", &["apply", "--auto"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.all().contains("other: outside its update window (Sun 01:00-04:00 UTC)"), "{run:?}");
    let v2 = crate::support::image_id("clusterup-fixture/web:v2");
    assert_eq!(stack.running_image("web"), v2);
    assert_eq!(stack.running_image("other"), crate::support::image_id("clusterup-fixture/web:v1"));
    // Sunday night: its turn.
    let run = stack.clusterup_at("2026-12-06T02:00:00Z", &["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stack.running_image("other"), v2);
}
