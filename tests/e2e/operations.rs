//! The operations surface: notifications, hooks, labels, status, metrics.

use crate::receiver::Receiver;
use crate::support::{Stack, docker, image_id};

const TOKEN: &str = "ghp_test-token-never-printed";

fn pending(test: &str, next: &str, compose_extra: &str, config: &str) -> Stack {
    let mut stack = Stack::new(test);
    let (web, other) = (stack.image("web"), stack.image("other"));
    stack.publish("v1", &web);
    stack.publish("v1", &other);
    stack.write_compose(&format!("services:\n  web:\n    image: {web}\n{compose_extra}  other:\n    image: {other}\n"));
    stack.write_config(config);
    stack.up();
    stack.publish(next, &web);
    stack
}

#[test]
fn notifications_reach_webhook_slack_and_one_github_issue_per_problem() {
    let rx = Receiver::start();
    let dead = crate::support::free_port();
    let config = format!(
        "    notify:\n      - {{type: webhook, url: '{}'}}\n      - {{type: slack, url: '{}', events: [rolled_back]}}\n      - {{type: github, repo: o/r, api_url: '{}', token_env: CU_TEST_TOKEN}}\n      - {{type: webhook, url: 'http://127.0.0.1:{dead}/gone'}}\n",
        rx.url("/hook"),
        rx.url("/slack"),
        rx.url("/gh")
    );
    let mut stack = pending("notify", "bad", "", &config);
    let web = stack.image("web");
    let apply = |stack: &Stack, args: &[&str]| {
        let out = stack.clusterup_command(&stack.dir, args).env("CU_TEST_TOKEN", TOKEN).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
        (out.status.code(), text)
    };
    let (code, text) = apply(&stack, &["apply", "--auto"]);
    assert_eq!(code, Some(1), "a failing notifier does not change the outcome: {text}");
    assert!(text.contains("notification") && text.contains("failed"), "the failing notifier is logged: {text}");

    let hooks = rx.to("/hook");
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].body["event"], "rolled_back");
    assert_eq!(hooks[0].body["stack"], stack.name.as_str());
    assert_eq!(hooks[0].body["report"]["outcome"], "rolled_back");
    let slack = rx.to("/slack");
    assert!(slack[0].body["text"].as_str().unwrap().contains("rolled back"), "{slack:?}");
    assert_eq!(rx.open_issues().len(), 1);
    assert_eq!(rx.to("/gh").iter().filter(|r| r.method == "GET").count(), 1);
    assert!(rx.to("/gh").iter().all(|r| r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}") as &str)));

    let (code, _) = apply(&stack, &["apply", "--auto", "--retry"]);
    assert_eq!(code, Some(1));
    assert_eq!(rx.open_issues().len(), 1, "the same problem again is a comment, not a second issue");
    assert!(rx.to("/gh/repos/o/r/issues/1/comments").len() == 1);

    stack.publish("v2", &web);
    let (code, text) = apply(&stack, &["apply", "--auto"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(rx.open_issues().is_empty(), "healthy again: the issue is closed");
    assert!(rx.to("/hook").iter().any(|r| r.body["event"] == "applied"));
    let slack = rx.to("/slack");
    assert_eq!(slack.len(), 2, "slack wanted only the two rollbacks");
    assert!(slack.iter().all(|r| r.body["text"].as_str().unwrap().contains("rolled back")));
}

/// The variables the README promises hooks (the test's own environment
/// holds other CLUSTERUP_ variables, which hooks inherit).
const HOOK_VARS: &str = "CLUSTERUP_(STACK|HOOK|SERVICE|CHANGE|IMAGE|OLD_DIGEST|NEW_DIGEST)=";

#[test]
fn hooks_get_the_update_details_and_a_failing_pre_hook_skips_its_service() {
    let stack_dir_file = std::env::temp_dir().join(format!("cu-hooks-{}.env", std::process::id()));
    let service_file = std::env::temp_dir().join(format!("cu-hooks-{}-web.env", std::process::id()));
    let config = format!(
        "    hooks:\n      pre_update: 'env | grep -E \"^{HOOK_VARS}\" | sort > {}'\n    services:\n      other:\n        pre_update: 'exit 7'\n      web:\n        pre_update: 'env | grep -E \"^{HOOK_VARS}\" | sort > {}'\n",
        stack_dir_file.display(),
        service_file.display()
    );
    // `$$`: Compose would interpolate a single `$` itself.
    let labels = "    labels:\n      clusterup.post-update: 'echo $$CLUSTERUP_NEW_DIGEST > /www/hooked'\n";
    let mut stack = pending("hooks", "v2", labels, &config);
    let other = stack.image("other");
    stack.publish("v2", &other);
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert!(report["skipped"][0].as_str().unwrap().starts_with("other: its pre-update hook failed"), "{run:?}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    assert_eq!(stack.running_image("other"), image_id("clusterup-fixture/web:v1"), "skipped, left as it was");

    let env = std::fs::read_to_string(&stack_dir_file).unwrap();
    let _ = std::fs::remove_file(&stack_dir_file);
    let expected = format!("CLUSTERUP_HOOK=pre-update\nCLUSTERUP_STACK={}\n", stack.name);
    assert_eq!(env, expected, "the stack's hook knows the stack");
    let web_change = report["changes"].as_array().unwrap().iter().find(|c| c["service"] == "web").unwrap().clone();
    let env = std::fs::read_to_string(&service_file).unwrap();
    let _ = std::fs::remove_file(&service_file);
    let expected = format!(
        "CLUSTERUP_CHANGE=image\nCLUSTERUP_HOOK=pre-update\nCLUSTERUP_IMAGE={}\nCLUSTERUP_NEW_DIGEST={}\n\
         CLUSTERUP_OLD_DIGEST={}\nCLUSTERUP_SERVICE=web\nCLUSTERUP_STACK={}\n",
        stack.image("web"),
        web_change["to"].as_str().unwrap(),
        web_change["from"].as_str().unwrap(),
        stack.name
    );
    assert_eq!(env, expected, "a service's hook gets every detail of its change");
    assert!(web_change["from"].as_str().unwrap().starts_with("sha256:"), "{web_change}");
    let id = stack.container_id("web");
    let out = docker(&["exec", &id, "/bin/cat", "/www/hooked"]);
    let digest = web_change["to"].clone();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        digest.as_str().unwrap(),
        "the label hook ran in the new container"
    );
}

#[test]
fn watchtower_labels_are_honoured() {
    let mut stack = Stack::new("watchtower");
    let image = |s: &Stack, n: &str| s.image(n);
    let names = ["off", "plain", "on", "scoped"];
    for n in names {
        let r = image(&stack, n);
        stack.publish("v1", &r);
    }
    let label = |l: &str| format!("    labels: [\"{l}\"]\n");
    stack.write_compose(&format!(
        "services:\n  off:\n    image: {}\n{}  plain:\n    image: {}\n  on:\n    image: {}\n{}  scoped:\n    image: {}\n{}",
        image(&stack, "off"),
        label("com.centurylinklabs.watchtower.enable=false"),
        image(&stack, "plain"),
        image(&stack, "on"),
        label("com.centurylinklabs.watchtower.enable=true"),
        image(&stack, "scoped"),
        label("com.centurylinklabs.watchtower.scope=prod\", \"com.centurylinklabs.watchtower.lifecycle.post-update=touch /www/wt-hooked"),
    ));
    stack.write_config("    label_enable: true\n");
    stack.up();
    for n in names {
        let r = image(&stack, n);
        stack.publish("v2", &r);
    }
    let run = stack.clusterup(&["check", "--json"]);
    let states: Vec<(String, String)> = run.json()["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["service"].as_str().unwrap().into(), s["state"].as_str().unwrap().into()))
        .collect();
    let want: Vec<(String, String)> =
        [("off", "skipped"), ("on", "update_available"), ("plain", "skipped"), ("scoped", "skipped")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    assert_eq!(states, want, "label-enable mode: only enable=true");
    stack.write_config("    scope: prod\n");
    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    let changed: Vec<&str> =
        report["changes"].as_array().unwrap().iter().map(|c| c["service"].as_str().unwrap()).collect();
    assert_eq!(changed, ["scoped"], "scope: only services of that scope");
    assert_eq!(stack.running_image("off"), image_id("clusterup-fixture/web:v1"));
    let hooked = docker(&["exec", &stack.container_id("scoped"), "/bin/ls", "/www/wt-hooked"]);
    assert!(hooked.status.success(), "Watchtower's post-update label ran in the new container: {hooked:?}");
}

#[test]
fn status_and_metrics_tell_what_happened() {
    let stack = pending("statusmetrics", "v2", "", "");
    let metrics = stack.dir.join("clusterup.prom");
    let metrics_arg = metrics.to_string_lossy().to_string();
    let run = stack.clusterup(&["--metrics-file", &metrics_arg, "apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = stack.clusterup(&["status", "--json"]);
    let status = run.json();
    assert_eq!(status["deployed"]["revision"], 1, "{run:?}");
    assert_eq!(status["last_run"]["command"], "apply");
    assert_eq!(status["last_run"]["exit_code"], 0);
    assert_eq!(status["last_run"]["pending"], 0, "the update was applied: {run:?}");
    assert_eq!(status["stats"]["success_rate"], 1.0);
    let web = status["services"].as_array().unwrap().iter().find(|s| s["service"] == "web").unwrap().clone();
    assert_eq!(web["health"], "healthy");
    let uptime = web["uptime_seconds"].as_i64().unwrap();
    assert!((0..120).contains(&uptime), "recreated by this test's apply: {uptime}s");
    let human = stack.clusterup(&["status"]).stdout;
    assert!(human.contains("deployed: revision 1") && human.contains("100% applied"), "{human}");

    let text = std::fs::read_to_string(&metrics).unwrap();
    let value = |name: &str| -> f64 {
        let prefix = format!("{name}{{stack=\"{}\"", stack.name);
        text.lines().find(|l| l.starts_with(&prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(-1.0)
    };
    assert_eq!(value("clusterup_revision"), 1.0, "{text}");
    assert_eq!(value("clusterup_last_run_exit_code"), 0.0);
    assert_eq!(value("clusterup_paused"), 0.0);
    assert_eq!(value("clusterup_pending_changes"), 0.0, "{text}");
    let now = jiff::Timestamp::now().as_second() as f64;
    let ran = value("clusterup_last_run_timestamp_seconds");
    assert!((now - 600.0..=now).contains(&ran), "the apply just now: {ran} vs {now}");
    assert_eq!(value("clusterup_deployed_revision"), 1.0, "{text}");
    let took = value("clusterup_last_update_duration_seconds");
    assert!(took > 0.0 && took < 600.0, "{text}");
    assert!(text.contains(&format!("clusterup_revisions_total{{stack=\"{}\",outcome=\"applied\"}} 1", stack.name)));
    assert!(
        text.lines().filter(|l| !l.starts_with('#')).all(|l| l.rsplit(' ').next().unwrap().parse::<f64>().is_ok()),
        "{text}"
    );
}
