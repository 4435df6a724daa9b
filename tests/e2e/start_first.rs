//! The start-first strategy: the new container serves before the old one
//! goes, so a client in the compose network sees no failed request.

use crate::support::{Stack, image_id};

/// `web` (start-first) and a probe that asks it every 10 ms from inside the
/// compose network, printing `ok` or `FAIL` per request.
fn with_probe(stack: &Stack, web_extra: &str) -> String {
    format!(
        "services:\n  web:\n    image: {}\n{web_extra}  probe:\n    image: clusterup-fixture/web:v1\n    \
         labels: {{clusterup.enable: \"false\"}}\n    healthcheck: {{disable: true}}\n    \
         command: [\"/bin/sh\", \"-c\", \"while :; do if wget -q -T 2 -O /dev/null http://web:8080/health; \
         then echo ok; else echo FAIL; fi; usleep 10000; done\"]\n",
        stack.image("web")
    )
}

/// (ok, failed) requests the probe has made so far.
fn probe_counts(stack: &Stack) -> (usize, usize) {
    let out = stack.compose(&["logs", "--no-log-prefix", "probe"]);
    let logs = String::from_utf8_lossy(&out.stdout);
    (logs.lines().filter(|l| l.trim() == "ok").count(), logs.lines().filter(|l| l.trim() == "FAIL").count())
}

#[test]
fn start_first_updates_and_rollbacks_drop_no_request() {
    let mut stack = Stack::new("startfirst");
    let web = stack.image("web");
    stack.publish("v1", &web);
    stack.write_compose(&with_probe(&stack, "    labels: {clusterup.strategy: start-first}\n"));
    stack.up();
    stack.write_config("");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (ok_before, _) = probe_counts(&stack);
    assert!(ok_before > 10, "the probe reaches web: {:?}", probe_counts(&stack));

    stack.publish("v2", &web);
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("start-first"), "{run:?}");
    // Back at one container, on the new image, healthy.
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    assert_eq!(stack.health("web"), "running/healthy");
    let (ok, failed) = probe_counts(&stack);
    assert_eq!(failed, 0, "requests failed during a start-first update ({ok} ok)");
    assert!(ok > ok_before, "the probe went on");

    // A bad image never takes over, and the serving container never stops.
    let serving = stack.container_id("web");
    stack.publish("bad", &web);
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["outcome"], "rolled_back", "{run:?}");
    assert_eq!(stack.container_id("web"), serving, "the old container kept serving");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    let (ok, failed) = probe_counts(&stack);
    assert_eq!(failed, 0, "requests failed while a bad start-first update was rolled back ({ok} ok)");
}

#[test]
fn start_first_where_it_cannot_work_is_refused_unless_a_fallback_is_configured() {
    let mut stack = Stack::new("startfixed");
    let web = stack.image("web");
    stack.publish("v1", &web);
    let port = crate::support::free_port();
    let web_extra =
        format!("    labels: {{clusterup.strategy: start-first}}\n    ports: [\"127.0.0.1:{port}:8080\"]\n");
    stack.write_compose(&with_probe(&stack, &web_extra));
    stack.up();
    let before = stack.container_id("web");
    stack.publish("v2", &web);

    stack.write_config("");
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("service web: start-first is impossible because it publishes the fixed host port")
            && run.stderr.contains("strategy_fallback: stop-first"),
        "{run:?}"
    );
    assert_eq!(stack.container_id("web"), before, "nothing changed");

    stack.write_config("    services:\n      web: {strategy_fallback: stop-first}\n");
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("stop-first, as configured where start-first is impossible"), "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
}
