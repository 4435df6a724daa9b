//! The start-first strategy: the new container serves before the old one
//! goes, so a client in the compose network sees no failed request.

use crate::support::{Stack, image_id};

/// Resolves `web` afresh for every request, as a client that does not
/// cache DNS would (the fixture's static busybox resolves names only with
/// its own nslookup; its wget crashes on `-T`), and asks it.
const PROBE: &str = "while :; do ip=$$(nslookup web 127.0.0.11 | awk '/^Address: / {print $$2; exit}'); \
    if timeout 2 wget -q -O /dev/null http://$$ip:8080/health; then echo ok; else echo FAIL $$ip; fi; usleep 10000; done";

/// `web` (start-first) and a probe that asks it every 10 ms from inside the
/// compose network, printing `ok` or `FAIL` per request.
fn with_probe(stack: &Stack, web_extra: &str) -> String {
    format!(
        "services:\n  web:\n    image: {}\n{web_extra}  probe:\n    image: clusterup-fixture/web:v1\n    \
         labels: {{clusterup.enable: \"false\"}}\n    healthcheck: {{test: [\"CMD\", \"/bin/true\"], interval: 1s}}\n    \
         command: [\"/bin/sh\", \"-c\", \"{PROBE}\"]\n",
        stack.image("web")
    )
}

/// (ok, failed) requests the probe has made so far.
fn probe_counts(stack: &Stack) -> (usize, usize) {
    let out = stack.compose(&["logs", "--no-log-prefix", "probe"]);
    let logs = String::from_utf8_lossy(&out.stdout);
    (logs.lines().filter(|l| l.trim() == "ok").count(), logs.lines().filter(|l| l.starts_with("FAIL")).count())
}

#[test]
fn start_first_updates_drop_no_request_and_a_bad_image_never_stops_the_old_container() {
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
    assert!(run.stderr.contains("starting new web beside the old (start-first)"), "{run:?}");
    // Back at one container, on the new image, healthy.
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    assert_eq!(stack.health("web"), "running/healthy");
    let (ok, failed) = probe_counts(&stack);
    // The old container serves until the new one is healthy. Taking it
    // out of the network is not atomic with Docker's DNS: a request that
    // resolved its address a moment before can still fail. No more than
    // that one.
    assert!(failed <= 1, "{failed} requests failed during a start-first update ({ok} ok)");
    assert!(ok > ok_before, "the probe went on");

    // A bad image never takes over, and the serving container never stops.
    let serving = stack.container_id("web");
    stack.publish("bad", &web);
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["outcome"], "rolled_back", "{run:?}");
    assert_eq!(stack.container_id("web"), serving, "the old container kept serving");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    // Docker's DNS does not wait for health: while the bad container ran,
    // some requests reached it. Once it is gone (and the probe's 2 s
    // timeout has ended requests still in flight to it), none fail.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (ok, failed) = probe_counts(&stack);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (ok_after, failed_after) = probe_counts(&stack);
    assert_eq!(failed_after, failed, "requests still fail after the rollback");
    assert!(ok_after > ok + 10, "the probe goes on: {ok} -> {ok_after}");
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
    assert!(run.stderr.contains("stop-first, as configured where start-first is impossible"), "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
}
