//! health-check: judged by clusterup, not by `compose up --wait`, which
//! passes a crash-looping service that is briefly "running".

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::error::{StepError, Unhealthy};
use crate::reference::short;
use crate::seams::engine::{ContainerInfo, Engine};
use crate::settings::HealthSettings;
use crate::signals::Signals;

/// How one health wait is judged.
pub struct Check<'a> {
    pub settings: HealthSettings,
    /// Must answer 2xx too, when given.
    pub url: Option<&'a str>,
    pub poll: Duration,
    /// A stop request (SIGTERM) ends the wait as a failure; a rollback's
    /// wait is not interruptible (None).
    pub stop: Option<&'a dyn Signals>,
    /// Containers not judged: the old ones a start-first update retires
    /// once the new ones pass.
    pub ignore: &'a [String],
}

/// Waits until every container of `service` runs `expected_image`, is
/// running and healthy (or has no HEALTHCHECK), and stays so with no
/// restart for the stability period. Err carries the reason for the report.
pub fn wait_healthy(
    engine: &dyn Engine,
    project: &str,
    service: &str,
    expected_image: Option<&str>,
    check: &Check,
) -> Result<(), StepError> {
    let Check { settings, url, poll, stop, ignore } = *check;
    let start = Instant::now();
    let mut restarts: HashMap<String, i64> = HashMap::new();
    let mut stable_since: Option<Instant> = None;
    loop {
        // An engine that does not answer may be restarting (a package
        // upgrade, a daemon.json change): wait for it like for a slow
        // container, up to the same timeout.
        let (containers, mut waiting_for): (Vec<ContainerInfo>, _) = match engine.containers(project) {
            Ok(all) => (all.into_iter().filter(|c| c.service == service && !ignore.contains(&c.id)).collect(), None),
            Err(e) => (Vec::new(), Some(format!("the Docker engine does not answer ({e:#})"))),
        };
        for c in &containers {
            let base = *restarts.entry(c.id.clone()).or_insert(c.restart_count);
            if c.restart_count > base {
                return Err(StepError::Unhealthy(Unhealthy::Restarted { container: c.name.clone() }));
            }
            if matches!(c.state.as_str(), "exited" | "dead" | "restarting") {
                let (container, state) = (c.name.clone(), c.state.clone());
                return Err(StepError::Unhealthy(Unhealthy::Stopped { container, state }));
            }
            if c.health.as_deref() == Some("unhealthy") {
                return Err(StepError::Unhealthy(Unhealthy::Reported { container: c.name.clone() }));
            }
            if expected_image.is_some_and(|e| c.image_id != e) {
                waiting_for = Some(format!("container {} still runs image {}", c.name, short(&c.image_id)));
            } else if !c.is_running() {
                waiting_for = Some(format!("container {} is {}", c.name, c.state));
            } else if let Some(h) = c.health.as_deref().filter(|h| *h != "healthy") {
                waiting_for = Some(format!("container {} health is {h}", c.name));
            }
        }
        if containers.is_empty() && waiting_for.is_none() {
            waiting_for = Some("no container".to_string());
        }
        if waiting_for.is_none()
            && let Some(url) = url
            && let Err(e) = probe(url)
        {
            waiting_for = Some(format!("health URL {url}: {e}"));
        }
        match waiting_for {
            None => {
                let since = *stable_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= settings.stability {
                    return Ok(());
                }
            }
            Some(reason) => {
                stable_since = None;
                if start.elapsed() >= settings.timeout {
                    let timed_out = Unhealthy::TimedOut { after: settings.timeout, waiting_for: reason };
                    return Err(StepError::Unhealthy(timed_out));
                }
            }
        }
        std::thread::sleep(poll);
        crate::signals::crash_point("health-wait");
        if stop.is_some_and(|s| s.stop_requested()) {
            return Err(StepError::Interrupted);
        }
    }
}

/// An HTTP health URL answers 2xx within a few seconds.
fn probe(url: &str) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
    agent.get(url).call().map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seams::engine::{ImageInfo, PullProgress};
    use std::sync::Mutex;

    /// Replays one container state per poll, then repeats the last.
    struct Scripted {
        states: Mutex<Vec<Vec<ContainerInfo>>>,
    }

    impl Engine for Scripted {
        fn containers(&self, _: &str) -> anyhow::Result<Vec<ContainerInfo>> {
            let mut s = self.states.lock().unwrap();
            Ok(if s.len() > 1 { s.remove(0) } else { s[0].clone() })
        }
        fn image(&self, _: &str) -> anyhow::Result<Option<ImageInfo>> {
            unreachable!()
        }
        fn registry_digests(&self, _: &[String]) -> Vec<anyhow::Result<String>> {
            unreachable!()
        }
        fn image_config(&self, _: &str, _: &str) -> anyhow::Result<crate::seams::registry::ImageConfig> {
            unreachable!()
        }
        fn registry_tags(&self, _: &str) -> anyhow::Result<Vec<String>> {
            unreachable!()
        }
        fn network_aliases(&self, _: &str) -> anyhow::Result<std::collections::BTreeMap<String, Vec<String>>> {
            unreachable!("no start-first service here")
        }
        fn set_aliases(&self, _: &str, _: &str, _: &[String]) -> anyhow::Result<()> {
            unreachable!("no start-first service here")
        }
        fn start_container(&self, _: &str) -> anyhow::Result<()> {
            unreachable!("no start-first service here")
        }
        fn local_images(&self) -> anyhow::Result<Vec<ImageInfo>> {
            unreachable!()
        }
        fn pull(&self, _: &str, _: &mut dyn FnMut(&PullProgress)) -> anyhow::Result<()> {
            unreachable!()
        }
        fn tag(&self, _: &str, _: &str, _: &str) -> anyhow::Result<()> {
            unreachable!()
        }
        fn tags_under(&self, _: &str) -> anyhow::Result<Vec<String>> {
            unreachable!()
        }
        fn untag(&self, _: &str) -> anyhow::Result<()> {
            unreachable!()
        }
        fn remove_container(&self, _: &str) -> anyhow::Result<()> {
            unreachable!()
        }
        fn stop_container(&self, _: &str) -> anyhow::Result<()> {
            unreachable!()
        }
        fn volume(&self, _: &str) -> anyhow::Result<crate::seams::engine::VolumeInfo> {
            unreachable!()
        }
        fn export(&self, _: &str, _: &str, _: &mut dyn std::io::Write) -> anyhow::Result<()> {
            unreachable!()
        }
        fn volume_users(&self, _: &str) -> anyhow::Result<Vec<(String, ContainerInfo)>> {
            unreachable!()
        }
    }

    fn c(state: &str, health: Option<&str>, restarts: i64, image: &str) -> Vec<ContainerInfo> {
        vec![ContainerInfo {
            id: "c1".into(),
            name: "p-web-1".into(),
            service: "web".into(),
            state: state.into(),
            health: health.map(String::from),
            restart_count: restarts,
            image_id: image.into(),
            config_hash: None,
            started_at: None,
            mounts: vec![],
            labels: Default::default(),
        }]
    }

    fn judge(states: Vec<Vec<ContainerInfo>>) -> Result<(), StepError> {
        let engine = Scripted { states: Mutex::new(states) };
        let settings = HealthSettings { timeout: Duration::from_millis(200), stability: Duration::from_millis(20) };
        let check = Check { settings, url: None, poll: Duration::from_millis(5), stop: None, ignore: &[] };
        wait_healthy(&engine, "p", "web", Some("new"), &check)
    }

    /// The verdict, and the evidence it carries.
    fn verdict(states: Vec<Vec<ContainerInfo>>) -> (Unhealthy, String) {
        match judge(states) {
            Err(StepError::Unhealthy(u)) => {
                let text = u.to_string();
                (u, text)
            }
            other => panic!("expected an unhealthy verdict, got {other:?}"),
        }
    }

    #[test]
    fn verdicts() {
        assert!(judge(vec![c("running", Some("starting"), 0, "new"), c("running", Some("healthy"), 0, "new")]).is_ok());
        assert!(judge(vec![c("running", None, 0, "new")]).is_ok(), "no healthcheck: running and stable is enough");
        let (u, e) = verdict(vec![c("running", Some("starting"), 0, "new"), c("running", Some("unhealthy"), 0, "new")]);
        assert!(matches!(u, Unhealthy::Reported { .. }) && e.contains("unhealthy"), "{e}");
        let (u, e) = verdict(vec![c("running", Some("healthy"), 0, "new"), c("running", Some("healthy"), 1, "new")]);
        assert!(matches!(u, Unhealthy::Restarted { .. }), "healthy then restarting is a crash loop: {e}");
        let (u, e) = verdict(vec![c("running", Some("healthy"), 0, "new"), c("exited", None, 0, "new")]);
        assert!(matches!(&u, Unhealthy::Stopped { state, .. } if state == "exited"), "{e}");
        let (u, e) = verdict(vec![c("running", Some("starting"), 0, "new")]);
        assert!(matches!(&u, Unhealthy::TimedOut { waiting_for, .. } if waiting_for.contains("starting")), "{e}");
        assert!(e.contains("not healthy within"), "{e}");
        let (_, e) = verdict(vec![c("running", Some("healthy"), 0, "old")]);
        assert!(e.contains("still runs image"), "{e}");
        let (_, e) = verdict(vec![vec![]]);
        assert!(e.contains("no container"), "{e}");
    }
}
