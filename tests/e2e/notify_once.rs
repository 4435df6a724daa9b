//! Notifications people keep switched on: a condition that lasts is sent
//! once per target (again only after `remind`), `resolved` when it ends,
//! and a delivery that failed arrives with the next run, exactly once.

use crate::receiver::Receiver;
use crate::support::Stack;

#[test]
fn a_held_back_change_is_notified_once_reminded_resolved_and_a_failed_delivery_arrives_once() {
    let rx = Receiver::start();
    rx.fail_next(1);
    let (stack, web) = Stack::web_running("notifyonce", |s| s.image("web"));
    let config = std::fs::read_to_string(stack.config_path()).unwrap();
    let notify = format!(
        "    notify:\n      - {{type: webhook, url: '{}'}}\n      - {{type: slack, url: '{}', remind: 24h}}\n      - {{type: webhook, url: '{}'}}\n",
        rx.url("/hook"),
        rx.url("/slack"),
        rx.url("/flaky")
    );
    std::fs::write(stack.config_path(), format!("{config}{notify}")).unwrap();
    // A structural change: held back by the default policy, run after run.
    stack.write_compose(&format!("services:\n  web:\n    image: {web}\n    environment: {{MODE: two}}\n"));
    for now in ["2026-12-01T00:00:00Z", "2026-12-01T00:15:00Z", "2026-12-01T00:30:00Z", "2026-12-02T00:30:00Z"] {
        let run = stack.clusterup_at(now, &["apply", "--auto"]);
        assert_eq!(run.code, 4, "held back: {run:?}");
    }
    let events = |path: &str, event: &str| rx.to(path).iter().filter(|r| r.body["event"] == event).count();
    assert_eq!(events("/hook", "needs_approval"), 1, "once, not every run: {:?}", rx.to("/hook"));
    let slack = rx.to("/slack");
    assert_eq!(slack.len(), 2, "once, and a reminder after 24h: {slack:?}");
    assert_eq!(events("/flaky", "needs_approval"), 1, "the failed delivery arrives with the next run, once");

    let run = stack.clusterup_at("2026-12-02T01:00:00Z", &["apply", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(events("/hook", "applied"), 1);
    let resolved: Vec<_> = rx.to("/hook").into_iter().filter(|r| r.body["event"] == "resolved").collect();
    assert_eq!(resolved.len(), 1, "{:?}", rx.to("/hook"));
    assert_eq!(resolved[0].body["resolves"], "needs_approval");
    let last = rx.to("/slack").pop().unwrap();
    assert!(last.body["text"].as_str().unwrap().contains("resolved: needs approval"), "{last:?}");
    let run = stack.clusterup_at("2026-12-02T01:15:00Z", &["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(events("/hook", "resolved"), 1, "resolved once");
    assert_eq!(events("/hook", "needs_approval"), 1);
}
