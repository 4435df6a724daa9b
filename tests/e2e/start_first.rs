//! The start-first strategy: the old container serves until the new one
//! is healthy, so a service that takes seconds to start stays answering.

use std::os::unix::process::ExitStatusExt;

use crate::support::{Stack, docker, image_id};

/// Resolves `web` afresh for every request, as a client that does not
/// cache DNS would (the fixture's static busybox resolves names only with
/// its own nslookup; its wget crashes on `-T`), and asks it, giving up
/// after 2 s: long enough for one TCP retry (1 s), as any client makes.
const PROBE: &str = "while :; do ip=$$(nslookup web 127.0.0.11 | awk '/^Address: / {print $$2; exit}'); \
    if timeout 2 wget -q -O /dev/null http://$$ip:8080/health; then echo ok; else echo FAIL $$ip; fi; usleep 10000; done";

/// `web` (start-first, taking 4 s to start serving) and a probe that asks
/// it every 10 ms from inside the compose network, printing `ok` or
/// `FAIL` per request.
fn with_probe(stack: &Stack, web_extra: &str) -> String {
    format!(
        "services:\n  web:\n    image: {}\n{web_extra}  probe:\n    image: clusterup-fixture/web:v1\n    \
         labels: {{clusterup.enable: \"false\"}}\n    healthcheck: {{test: [\"CMD\", \"/bin/true\"], interval: 1s}}\n    \
         command: [\"/bin/sh\", \"-c\", \"{PROBE}\"]\n",
        stack.image("web")
    )
}

const SLOW_START: &str = "    labels: {clusterup.strategy: start-first}\n    \
    command: [\"/bin/sh\", \"-c\", \"sleep 4; exec /bin/httpd -f -p 8080 -h /www\"]\n    \
    healthcheck: {start_period: 20s}\n";

/// The probe's answers since `since` (RFC 3339): (ok, failed, the longest
/// time in seconds without a successful answer).
fn probe_since(stack: &Stack, since: &str) -> (usize, usize, f64) {
    let out = stack.compose(&["logs", "--timestamps", "--no-log-prefix", "--since", since, "probe"]);
    let logs = String::from_utf8_lossy(&out.stdout).to_string();
    let mut ok = Vec::new();
    let mut failed = 0;
    for line in logs.lines() {
        let Some((stamp, word)) = line.split_once(' ') else { continue };
        match word.split(' ').next() {
            Some("ok") => ok.push(stamp.parse::<jiff::Timestamp>().expect("docker log timestamp")),
            Some("FAIL") => failed += 1,
            _ => {}
        }
    }
    let gap = ok.windows(2).map(|w| w[1].duration_since(w[0]).as_secs_f64()).fold(0.0, f64::max);
    (ok.len(), failed, gap)
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

#[test]
fn start_first_keeps_a_slow_starting_service_answering_and_a_bad_image_never_stops_it() {
    let mut stack = Stack::new("startfirst");
    let web = stack.image("web");
    stack.publish("v1", &web);
    stack.write_compose(&with_probe(&stack, SLOW_START));
    stack.up();
    stack.write_config("");
    let since = now();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (ok, _, _) = probe_since(&stack, &since);
    assert!(ok > 10, "the probe reaches web: {:?}", probe_since(&stack, &since));

    // Stopping first leaves web unanswered for the 4 s its new container
    // takes to start (measured here: a 4.3 s gap, 246 failed requests).
    // Start-first keeps the new container out of the service's DNS name
    // until it is healthy, and the old one keeps its address until Docker's
    // DNS has stopped handing it out.
    stack.publish("v2", &web);
    let since = now();
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("starting new web beside the old (start-first)"), "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    assert_eq!(stack.health("web"), "running/healthy");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (ok, failed, gap) = probe_since(&stack, &since);
    assert!(gap < 3.0, "web went {gap:.2} s without answering ({ok} ok, {failed} failed)");
    assert_eq!(failed, 0, "requests failed during a start-first update ({ok} ok, gap {gap:.2} s)");
    assert!(ok > 100, "the probe went on: {ok} ok, {failed} failed");

    // A bad image never takes over, and the serving container never stops.
    let serving = stack.container_id("web");
    stack.publish("bad", &web);
    let since = now();
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["outcome"], "rolled_back", "{run:?}");
    assert_eq!(stack.container_id("web"), serving, "the old container kept serving");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    // The bad container never got the service's name: no request reached it.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (ok, failed, gap) = probe_since(&stack, &since);
    assert_eq!(failed, 0, "requests failed during a bad start-first update ({ok} ok, gap {gap:.2} s)");
    assert!(ok > 100, "the probe went on: {ok} ok");
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

/// Killed with two containers of `web` running, at `stage`, the next run
/// recovers to one container, healthy and reachable under the service's
/// name, and then applies v2.
fn crash_during_start_first(name: &str, stage: &str) {
    let mut stack = Stack::new(name);
    let web = stack.image("web");
    stack.publish("v1", &web);
    stack.write_compose(&format!(
        "services:\n  web:\n    image: {web}\n    labels: {{clusterup.strategy: start-first}}\n"
    ));
    stack.up();
    stack.write_config("");
    let config = stack.config_path();
    let text = std::fs::read_to_string(&config).unwrap().replace("timeout: 30s", "timeout: 10s");
    std::fs::write(&config, text).unwrap();
    stack.publish("v2", &web);

    let out =
        stack.clusterup_command(&stack.dir, &["apply", "--auto"]).env("CLUSTERUP_CRASH_AT", stage).output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "the run must have died at {stage}: {out:?}");
    let running = stack.compose(&["ps", "-q", "web"]);
    assert_eq!(String::from_utf8_lossy(&running.stdout).lines().count(), 2, "two containers of web at the crash");

    // Paused, a run recovers and stops there: what recovery left is seen
    // as it is, not as the next update makes it.
    assert_eq!(stack.clusterup(&["pause"]).code, 0);
    let run = stack.clusterup(&["apply", "--auto"]);
    assert!(run.stdout.contains("recovered interrupted revision 1"), "{run:?}");
    assert!(run.stderr.contains("left by an interrupted start-first update"), "{run:?}");
    assert_eq!(stack.health("web"), "running/healthy");
    assert_named(&stack);

    assert_eq!(stack.clusterup(&["resume"]).code, 0);
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    assert_eq!(stack.health("web"), "running/healthy");
    assert_named(&stack);
}

/// `web` is one container (container_id asserts that), and the service's
/// name resolves to it: a container left out of the name would run and
/// serve no one.
fn assert_named(stack: &Stack) {
    let id = stack.container_id("web");
    let lookup = stack.compose(&["exec", "-T", "web", "nslookup", "web", "127.0.0.11"]);
    let answer = String::from_utf8_lossy(&lookup.stdout);
    let inspect = docker(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &id]);
    let address = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    assert!(answer.contains(&format!("Address: {address}")), "web resolves to {address}: {answer}");
}

#[test]
fn a_crash_before_the_switch_of_a_start_first_update_recovers_to_one_named_container() {
    crash_during_start_first("startcrash", "recreated");
}

#[test]
fn a_crash_while_the_old_container_drains_recovers_to_one_named_container() {
    crash_during_start_first("startdrain", "withdrawn");
}
