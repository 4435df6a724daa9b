//! execute: pull everything first, switch the files to the new revision,
//! then apply one change at a time in plan order through Compose, each
//! gated on health. The first failure sends the stack back: the previous
//! files, the previous images, every changed service restored.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use super::error::StepError;
use super::health::{Check, wait_healthy};
use crate::labels::ServicePolicy;
use crate::output::Printer;
use crate::plan::classify::{Change, ChangeKind, Plan};
use crate::reference::{short, split_tag, with_digest};
use crate::seams::compose::Compose;
use crate::seams::engine::{ContainerInfo, Engine};
use crate::seams::hooks;
use crate::settings::{HealthSettings, Hooks, Strategy};
use crate::signals::Signals;
use crate::state::Outcome;
use crate::state::ServiceImages;

const POLL: Duration = Duration::from_millis(500);
/// How long a retired start-first container keeps serving after it left
/// its service's DNS name: past a client's first SYN retry (1 s), with
/// time for that request to finish.
const DRAIN: Duration = Duration::from_secs(2);

pub struct Execution {
    pub outcome: Outcome,
    pub error: Option<String>,
    /// (service, image id) each changed service runs at the end.
    pub after: Vec<(String, String)>,
    /// Services left as they were because their pre-update hook failed.
    pub skipped: Vec<String>,
}

impl Execution {
    pub fn failed(error: String) -> Execution {
        Execution { outcome: Outcome::Failed, error: Some(error), after: Vec::new(), skipped: Vec::new() }
    }
}

/// A container started out of its service's DNS name, and the aliases
/// it gets back once healthy, per network.
struct Hidden {
    id: String,
    aliases: BTreeMap<String, Vec<String>>,
}

/// How one change went.
enum Step {
    Done(Option<String>),
    Skipped(String),
}

/// Moves the stack's files between the deployed and the new revision (a
/// git checkout). Directory stacks have none: people edit the files.
pub trait Files {
    fn deploy_new(&self) -> Result<()>;
    fn restore_old(&self) -> Result<()>;
    /// For the journal: the copy of the files deployed, and of those that
    /// ran before (directory stacks; git has its commits).
    fn copies(&self) -> (Option<String>, Option<String>) {
        (None, None)
    }
    /// What an operator should know after the files went back.
    fn kept_note(&self) -> Option<String> {
        None
    }
}

pub struct Executor<'a> {
    pub engine: &'a dyn Engine,
    pub signals: &'a dyn Signals,
    pub compose: &'a dyn Compose,
    pub printer: &'a Printer,
    pub health: HealthSettings,
    pub stack: &'a str,
    pub policies: &'a BTreeMap<String, ServicePolicy>,
    /// The stack's own hooks, around the whole update.
    pub hooks: &'a Hooks,
    pub hook_timeout: Duration,
}

impl Executor<'_> {
    pub fn execute(&self, plan: &Plan, backups: &[ServiceImages], files: Option<&dyn Files>) -> Execution {
        let failed = |e: String| Execution::failed(format!("{e}; nothing was changed"));
        if let Some(hook) = &self.hooks.pre_update
            && let Err(e) = self.run_hook("pre-update", hook, None, None)
        {
            return failed(format!("the stack's pre-update hook failed ({e})"));
        }
        if let Err(e) = self.pull_all(plan) {
            return failed(e.to_string());
        }
        if self.signals.stop_requested() {
            return failed("interrupted by a signal after pulling".to_string());
        }
        // Nothing touched yet but the files: a failure puts the old ones
        // back, and the run changed nothing.
        let back_to_old_files = |error: String| match files.map_or(Ok(()), |f| f.restore_old()) {
            Ok(()) => failed(error),
            Err(r) => Execution {
                outcome: Outcome::RollbackFailed,
                error: Some(format!("{error}; restoring the previous files failed: {r:#}")),
                after: Vec::new(),
                skipped: Vec::new(),
            },
        };
        // A half-written checkout must not stay.
        if let Some(files) = files
            && let Err(e) = files.deploy_new()
        {
            return back_to_old_files(format!("{e:#}"));
        }
        // Built from the new files, before any container is touched.
        if let Err(e) = self.build_all(plan) {
            return back_to_old_files(e.to_string());
        }
        let backups: BTreeMap<&str, &ServiceImages> = backups.iter().map(|b| (b.service.as_str(), b)).collect();
        let mut done: Vec<&Change> = Vec::new();
        let mut after = Vec::new();
        let mut skipped = Vec::new();
        for change in &plan.changes {
            if self.signals.stop_requested() {
                let error = "interrupted by a signal before all changes were made".to_string();
                self.printer.step(format!("{error}; rolling back"));
                return self.roll_back(plan, &done, &backups, files, error);
            }
            match self.apply_one(&plan.project, change) {
                Ok(Step::Done(id)) => {
                    done.push(change);
                    after.extend(id.map(|id| (change.service.clone(), id)));
                }
                Ok(Step::Skipped(why)) => {
                    self.printer.step(format!("{} left as it was: {why}", change.service));
                    skipped.push(format!("{}: {why}", change.service));
                }
                Err(reason) => {
                    done.push(change);
                    let error = format!("service {}: {reason}", change.service);
                    self.printer.step(format!("{error}; rolling back"));
                    return self.roll_back(plan, &done, &backups, files, error);
                }
            }
        }
        if let Some(hook) = &self.hooks.post_update
            && let Err(e) = self.run_hook("post-update", hook, None, None)
        {
            self.printer.warn(format!("the stack's post-update hook failed ({e})"));
        }
        Execution { outcome: Outcome::Applied, error: None, after, skipped }
    }

    fn health_for(&self, service: &str) -> (HealthSettings, Option<&str>) {
        let policy = self.policies.get(service);
        let timeout = policy.and_then(|p| p.health_timeout).unwrap_or(self.health.timeout);
        // Stopping (SIGTERM) restores and checks health, but does not sit
        // out the stability period against a stop timeout.
        let stability = if self.signals.stop_requested() { Duration::ZERO } else { self.health.stability };
        (HealthSettings { timeout, stability }, policy.and_then(|p| p.health_url.as_deref()))
    }

    /// Runs one hook with the update's details in its environment.
    fn run_hook(
        &self,
        which: &str,
        command: &str,
        change: Option<&Change>,
        container: Option<&str>,
    ) -> Result<(), StepError> {
        let mut env = vec![("CLUSTERUP_STACK", self.stack.to_string()), ("CLUSTERUP_HOOK", which.to_string())];
        if let Some(c) = change {
            env.push(("CLUSTERUP_SERVICE", c.service.clone()));
            env.push(("CLUSTERUP_CHANGE", format!("{:?}", c.kind).to_lowercase()));
            env.push(("CLUSTERUP_IMAGE", c.image.clone().unwrap_or_default()));
            env.push(("CLUSTERUP_OLD_DIGEST", c.from.clone().unwrap_or_default()));
            env.push(("CLUSTERUP_NEW_DIGEST", c.to.clone().unwrap_or_default()));
        }
        let place = if container.is_some() { " in the container" } else { "" };
        self.printer.step(format!("running {which} hook{place}: {command}"));
        hooks::run(command, container, &env, self.hook_timeout).map_err(StepError::Hook)
    }

    /// The service's hooks for one moment: on the host, then in its
    /// container (when it has one).
    fn service_hooks(&self, which: &str, project: &str, change: &Change) -> Result<(), StepError> {
        let Some(policy) = self.policies.get(&change.service) else { return Ok(()) };
        let (host, inside) = match which {
            "pre-update" => (&policy.host_hooks.pre_update, &policy.container_hooks.pre_update),
            _ => (&policy.host_hooks.post_update, &policy.container_hooks.post_update),
        };
        if let Some(cmd) = host {
            self.run_hook(which, cmd, Some(change), None)?;
        }
        if let Some(cmd) = inside {
            let containers = self.service_containers(project, &change.service)?;
            if let Some(c) = containers.iter().find(|c| c.is_running()) {
                self.run_hook(which, cmd, Some(change), Some(&c.id))?;
            }
        }
        Ok(())
    }

    /// All pulls succeed before any container is touched, so a registry
    /// failure can never leave a service removed and not recreated. Image
    /// updates are pulled by the digest that was checked, so the tag moving
    /// again meanwhile cannot slip an unplanned image in.
    fn pull_all(&self, plan: &Plan) -> Result<(), StepError> {
        let mut pulled: Vec<&str> = Vec::new();
        for change in plan.changes.iter().filter(|c| c.pull) {
            let Some(image) = change.image.as_deref() else {
                continue;
            };
            if pulled.contains(&image) {
                continue;
            }
            pulled.push(image);
            let by_digest = match &change.to {
                Some(digest) if change.is_digest_update() => with_digest(image, digest),
                _ => None,
            };
            let source = by_digest.as_deref().unwrap_or(image);
            let mut display = self.printer.pull(image);
            let mut result = self.engine.pull(source, &mut |p| display.update(p));
            if result.is_ok()
                && let Some(pinned) = &by_digest
                && let Some((repo, tag)) = split_tag(image)
            {
                result = self.engine.tag(pinned, repo, tag);
            }
            crate::signals::crash_point("pulled");
            let summary = match &result {
                Ok(()) => format!("pulled {source}"),
                Err(e) => format!("pull of {source} failed: {e:#}"),
            };
            display.finish(self.printer, &summary);
            result.map_err(StepError::Engine)?;
        }
        Ok(())
    }

    /// Builds every image the plan builds, in one Compose run.
    fn build_all(&self, plan: &Plan) -> Result<(), StepError> {
        let services: Vec<String> = plan.changes.iter().filter(|c| c.build).map(|c| c.service.clone()).collect();
        if services.is_empty() {
            return Ok(());
        }
        let mut display = self.printer.build(&services.join(", "));
        let built = self.compose.build(&plan.project, &services, &mut |line| display.line(line));
        display.finish(&match &built {
            Ok(()) => format!("built {}", services.join(", ")),
            Err(_) => format!("building {} failed", services.join(", ")),
        });
        built.map_err(StepError::Compose)?;
        crate::signals::crash_point("built");
        Ok(())
    }

    /// Applies one change; the image id the service runs afterwards, if it
    /// still exists.
    fn apply_one(&self, project: &str, change: &Change) -> Result<Step, StepError> {
        let service = &change.service;
        if let Err(e) = self.service_hooks("pre-update", project, change) {
            return Ok(Step::Skipped(format!("its pre-update hook failed ({e})")));
        }
        if change.kind == ChangeKind::Remove {
            self.printer.step(format!("removing {service} (its volumes stay)"));
            self.remove_service(project, service)?;
            return Ok(Step::Done(None));
        }
        if let (Some(id), Some((repo, tag))) = (&change.restore_image, change.image.as_deref().and_then(split_tag)) {
            self.engine.tag(id, repo, tag).map_err(StepError::Engine)?;
        }
        let expected = match change.image.as_deref() {
            Some(image) => self.engine.image(image).map_err(StepError::Engine)?.map(|i| i.id),
            None => None,
        };
        let why = if change.reasons.is_empty() { String::new() } else { format!(" ({})", change.reasons.join("; ")) };
        let policy = self.policies.get(service);
        if let Some(reason) = policy.and_then(|p| p.fallback_reason.as_deref()) {
            self.printer
                .step(format!("{service}: stop-first, as configured where start-first is impossible ({reason})"));
        }
        let old: Vec<String> = match policy.map(|p| p.strategy) {
            Some(Strategy::StartFirst) if change.kind != ChangeKind::Create => {
                self.service_containers(project, service)?.into_iter().map(|c| c.id).collect()
            }
            _ => Vec::new(),
        };
        if old.is_empty() {
            let verb = if change.kind == ChangeKind::Create { "creating" } else { "recreating" };
            self.printer.step(format!("{verb} {service}{why}"));
            self.compose.up(project, service, change.force).map_err(StepError::Compose)?;
            crate::signals::crash_point("recreated");
            self.wait(project, service, expected.as_deref(), &[])?;
        } else {
            self.printer.step(format!("starting new {service} beside the old (start-first){why}"));
            self.start_first(project, service, expected.as_deref(), &old)?;
        }
        self.printer.step(format!("{service} is healthy"));
        if let Err(e) = self.service_hooks("post-update", project, change) {
            self.printer.warn(format!("{service}'s post-update hook failed ({e})"));
        }
        let running = self.engine.containers(project).map_err(StepError::Engine)?;
        Ok(Step::Done(running.into_iter().find(|c| c.service == *service).map(|c| c.image_id)))
    }

    fn wait(&self, project: &str, service: &str, expected: Option<&str>, ignore: &[String]) -> Result<(), StepError> {
        self.printer.step(format!("waiting for {service} to be healthy"));
        let (health, url) = self.health_for(service);
        let check = Check { settings: health, url, poll: POLL, stop: Some(self.signals), ignore };
        wait_healthy(self.engine, project, service, expected, &check)
    }

    /// Replaces the `old` containers of `service` by new ones that serve
    /// before the old ones stop. On failure only the new ones go: the old
    /// ones never stopped.
    fn start_first(
        &self,
        project: &str,
        service: &str,
        expected: Option<&str>,
        old: &[String],
    ) -> Result<(), StepError> {
        let is_new = |id: &str| !old.contains(&id.to_string());
        let fresh = self
            .compose
            .scale_up(project, service, old.len() * 2)
            .map_err(StepError::Compose)
            .and_then(|()| self.start_hidden(project, service, old))
            .and_then(|hidden| {
                crate::signals::crash_point("recreated");
                self.wait(project, service, expected, old)?;
                self.reveal(&hidden)
            });
        if let Err(e) = fresh {
            self.retire(project, service, is_new);
            return Err(e);
        }
        self.printer.step(format!("retiring the old {service}"));
        self.retire(project, service, |id| !is_new(id));
        Ok(())
    }

    /// Starts the containers a start-first update created, known in their
    /// networks by their own names only: Docker's DNS would hand out their
    /// addresses under the service's name before they serve. Returns the
    /// aliases each had, for `reveal`.
    fn start_hidden(&self, project: &str, service: &str, old: &[String]) -> Result<Vec<Hidden>, StepError> {
        let fail = StepError::Engine;
        let mut hidden = Vec::new();
        for c in self.service_containers(project, service)?.into_iter().filter(|c| !old.contains(&c.id)) {
            let aliases = self.named_networks(&c).map_err(fail)?;
            for network in aliases.keys() {
                self.engine.set_aliases(&c.id, network, std::slice::from_ref(&c.name)).map_err(fail)?;
            }
            self.engine.start_container(&c.id).map_err(fail)?;
            hidden.push(Hidden { id: c.id, aliases });
        }
        Ok(hidden)
    }

    /// Gives the healthy new containers back the aliases compose created
    /// them with, the service's name among them.
    fn reveal(&self, hidden: &[Hidden]) -> Result<(), StepError> {
        for h in hidden {
            for (network, aliases) in &h.aliases {
                self.engine.set_aliases(&h.id, network, aliases).map_err(StepError::Engine)?;
            }
        }
        Ok(())
    }

    fn service_containers(&self, project: &str, service: &str) -> Result<Vec<ContainerInfo>, StepError> {
        let all = self.engine.containers(project).map_err(StepError::Engine)?;
        Ok(all.into_iter().filter(|c| c.service == service).collect())
    }

    /// A rollback needs the engine: if it is away (restarting), give it
    /// the health timeout to come back rather than fail every step at once.
    fn await_engine(&self, project: &str) {
        let deadline = std::time::Instant::now() + self.health.timeout;
        let mut said = false;
        while let Err(e) = self.engine.containers(project) {
            if std::time::Instant::now() >= deadline {
                return;
            }
            if !said {
                self.printer.step(format!("waiting for the Docker engine to answer ({e:#})"));
                said = true;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Takes the chosen containers of a start-first update out of service.
    /// Each first leaves its DNS names but keeps its address: Docker frees
    /// a leaving container's address before its DNS stops handing it out
    /// (tens of milliseconds), and a client that got it in that window
    /// would wait on a dead address until it gave up. Attached again at
    /// once, the container gets the same address and MAC back, so that
    /// client's retried SYN, a second later, still reaches a server. It is
    /// removed after `DRAIN`. A failure here leaves a redundant container,
    /// not a stopped service: it is reported, and the next `up` scales the
    /// service back.
    fn retire(&self, project: &str, service: &str, chosen: impl Fn(&str) -> bool) {
        let containers = match self.service_containers(project, service) {
            Ok(c) => c,
            Err(e) => return self.printer.step(format!("warning: listing {service}'s containers: {e}")),
        };
        let chosen: Vec<ContainerInfo> = containers.into_iter().filter(|c| chosen(&c.id)).collect();
        let mut withdrawn = false;
        for c in &chosen {
            match self.withdraw(c) {
                Ok(w) => withdrawn |= w,
                Err(e) => self.printer.step(format!("warning: taking {} out of DNS: {e:#}", c.name)),
            }
        }
        if withdrawn {
            crate::signals::crash_point("withdrawn");
            std::thread::sleep(DRAIN);
        }
        for c in &chosen {
            if let Err(e) = self.engine.remove_container(&c.id) {
                self.printer.step(format!("warning: retiring container {}: {e:#}", c.name));
            }
        }
    }

    /// Leaves the container known by its own name only, in every network
    /// where it answers to its service's. Returns whether it did.
    fn withdraw(&self, c: &ContainerInfo) -> Result<bool> {
        let networks = self.named_networks(c)?;
        for network in networks.keys() {
            self.engine.set_aliases(&c.id, network, std::slice::from_ref(&c.name))?;
        }
        Ok(!networks.is_empty())
    }

    /// The container's aliases in each network where Docker's DNS gives it
    /// out under its service's name (the default bridge has no names).
    fn named_networks(&self, c: &ContainerInfo) -> Result<BTreeMap<String, Vec<String>>> {
        let mut aliases = self.engine.network_aliases(&c.id)?;
        aliases.retain(|_, names| names.contains(&c.service));
        Ok(aliases)
    }

    fn remove_service(&self, project: &str, service: &str) -> Result<(), StepError> {
        for c in self.service_containers(project, service)? {
            self.engine.remove_container(&c.id).map_err(StepError::Engine)?;
        }
        Ok(())
    }

    /// Returns the stack to where `plan` started, as if every change had
    /// been made: for a revision that was interrupted at an unknown point.
    pub fn restore(
        &self,
        plan: &Plan,
        backups: &[ServiceImages],
        files: Option<&dyn Files>,
        error: String,
    ) -> Execution {
        let backups: BTreeMap<&str, &ServiceImages> = backups.iter().map(|b| (b.service.as_str(), b)).collect();
        let all: Vec<&Change> = plan.changes.iter().collect();
        self.roll_back(plan, &all, &backups, files, error)
    }

    fn roll_back(
        &self,
        plan: &Plan,
        done: &[&Change],
        backups: &BTreeMap<&str, &ServiceImages>,
        files: Option<&dyn Files>,
        error: String,
    ) -> Execution {
        self.await_engine(&plan.project);
        let mut failures = Vec::new();
        if let Some(files) = files
            && let Err(e) = files.restore_old()
        {
            failures.push(format!("restoring the previous files: {e:#}"));
        }
        // Every pulled or built tag goes back, also of services not reached
        // yet: an untested image must not wait under the tag for the next
        // `up`.
        for change in plan.changes.iter().filter(|c| c.is_digest_update() || c.restore_image.is_some() || c.build) {
            if let (Some(b), Some((repo, tag))) =
                (backups.get(change.service.as_str()), change.image.as_deref().and_then(split_tag))
                && let Err(e) = self.engine.tag(&b.before, repo, tag)
            {
                failures.push(format!("re-tagging {repo}:{tag}: {e:#}"));
            }
        }
        let mut after = Vec::new();
        for change in done.iter().rev() {
            let service = change.service.as_str();
            let result = match change.kind {
                ChangeKind::Create => {
                    self.printer.step(format!("removing {service}, new in the failed revision"));
                    self.remove_service(&plan.project, service)
                }
                _ => {
                    let before = backups.get(service).map(|b| b.before.as_str());
                    self.printer.step(format!(
                        "restoring {service}{}",
                        before.map(|b| format!(" to {}", short(b))).unwrap_or_default()
                    ));
                    self.compose
                        .up(&plan.project, service, change.force)
                        .map_err(StepError::Compose)
                        .and_then(|()| {
                            let (health, url) = self.health_for(service);
                            let check = Check { settings: health, url, poll: POLL, stop: None, ignore: &[] };
                            wait_healthy(self.engine, &plan.project, service, before, &check)
                        })
                        .map(|()| {
                            if let Some(b) = before {
                                after.push((service.to_string(), b.to_string()));
                            }
                        })
                }
            };
            if let Err(e) = result {
                failures.push(format!("restoring {service}: {e}"));
            }
        }
        if failures.is_empty() {
            Execution { outcome: Outcome::RolledBack, error: Some(error), after, skipped: Vec::new() }
        } else {
            Execution {
                outcome: Outcome::RollbackFailed,
                error: Some(format!("{error}; rollback failed: {}", failures.join("; "))),
                after,
                skipped: Vec::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::classify::PlanKind;
    use crate::seams::fake::{Fake, fake};

    /// The files an apply moves, as entries in the fake's log.
    impl Files for Fake {
        fn deploy_new(&self) -> Result<()> {
            self.log.lock().unwrap().push("files new".into());
            Ok(())
        }
        fn restore_old(&self) -> Result<()> {
            self.log.lock().unwrap().push("files old".into());
            Ok(())
        }
    }

    fn change(service: &str, kind: ChangeKind, to: Option<&str>) -> Change {
        Change {
            to: to.map(String::from),
            pull: kind == ChangeKind::Image,
            ..Change::new(service, kind, Some(format!("r/{service}:latest")))
        }
    }

    fn backup(service: &str) -> ServiceImages {
        ServiceImages {
            service: service.into(),
            image: Some(format!("r/{service}:latest")),
            before: format!("old-{service}"),
            backup_tag: format!("clusterup/p/{service}:rev-1"),
            after: None,
        }
    }

    fn run(f: &Fake, changes: Vec<Change>, backups: &[ServiceImages], files: bool) -> Execution {
        run_with_hooks(f, changes, backups, files, &Hooks::default(), &BTreeMap::new())
    }

    fn run_with_hooks(
        f: &Fake,
        changes: Vec<Change>,
        backups: &[ServiceImages],
        files: bool,
        hooks: &Hooks,
        policies: &BTreeMap<String, ServicePolicy>,
    ) -> Execution {
        let plan = Plan { kind: PlanKind::Image, commit: None, changes, ..Plan::empty("p") };
        let printer = Printer::new(false, true, 0);
        let health = HealthSettings { timeout: Duration::from_millis(50), stability: Duration::ZERO };
        let files = files.then_some(f as &dyn Files);
        let executor = Executor {
            engine: f,
            signals: &crate::seams::fake::NoSignal,
            compose: f,
            printer: &printer,
            health,
            stack: "p",
            policies,
            hooks,
            hook_timeout: Duration::from_secs(5),
        };
        executor.execute(&plan, backups, files)
    }

    fn image_updates(f: &Fake, new: [&str; 2]) -> Execution {
        let changes = vec![change("a", ChangeKind::Image, Some(new[0])), change("b", ChangeKind::Image, Some(new[1]))];
        run(f, changes, &[backup("a"), backup("b")], false)
    }

    #[test]
    fn all_healthy_is_applied_after_pulling_everything_first_by_digest() {
        let f = fake("sha256:new-a", "sha256:new-b");
        let e = image_updates(&f, ["sha256:new-a", "sha256:new-b"]);
        assert_eq!(e.outcome, Outcome::Applied);
        assert_eq!(
            e.after,
            [("a".to_string(), "sha256:new-a".to_string()), ("b".to_string(), "sha256:new-b".to_string())]
        );
        assert_eq!(
            *f.log.lock().unwrap(),
            [
                "pull r/a@sha256:new-a",
                "tag r/a@sha256:new-a r/a:latest",
                "pull r/b@sha256:new-b",
                "tag r/b@sha256:new-b r/b:latest",
                "up a",
                "up b"
            ]
        );
    }

    #[test]
    fn an_unhealthy_service_sends_every_changed_service_back() {
        let f = fake("sha256:new-a", "sha256:bad-b");
        let e = image_updates(&f, ["sha256:new-a", "sha256:bad-b"]);
        assert_eq!(e.outcome, Outcome::RolledBack);
        assert!(e.error.unwrap().contains("service b"));
        assert_eq!(f.running.lock().unwrap()["a"], "old-a");
        assert_eq!(f.running.lock().unwrap()["b"], "old-b");
        assert_eq!(f.tags.lock().unwrap()["r/a:latest"], "old-a", "the tag points at the restored image");
        let log = f.log.lock().unwrap();
        let tail: Vec<&str> = log[6..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            ["tag old-a r/a:latest", "tag old-b r/b:latest", "up b", "up a"],
            "tags first, then services in reverse"
        );
    }

    fn rebuild(service: &str) -> Change {
        Change::rebuild(service, format!("r/{service}:latest"), Vec::new())
    }

    #[test]
    fn rebuilds_are_built_from_the_new_files_before_any_container_is_touched() {
        let mut f = fake("sha256:new-a", "sha256:new-b");
        f.builds =
            [("a", "built-a"), ("b", "built-b")].map(|(s, id)| (s.into(), (format!("r/{s}:latest"), id.into()))).into();
        let e = run(&f, vec![rebuild("a"), rebuild("b")], &[backup("a"), backup("b")], true);
        assert_eq!(e.outcome, Outcome::Applied, "{:?}", e.error);
        assert_eq!(*f.log.lock().unwrap(), ["files new", "build a b", "up a", "up b"]);
        assert_eq!(f.running.lock().unwrap()["a"], "built-a");
    }

    #[test]
    fn a_failed_build_changes_nothing_and_an_unhealthy_rebuild_goes_back_to_the_old_image() {
        let f = Fake { fail_build: true, ..fake("sha256:new-a", "sha256:new-b") };
        let e = run(&f, vec![rebuild("a")], &[backup("a")], true);
        assert_eq!(e.outcome, Outcome::Failed);
        let error = e.error.unwrap();
        assert!(error.contains("failed to solve") && error.contains("nothing was changed"), "{error}");
        assert_eq!(*f.log.lock().unwrap(), ["files new", "build a", "files old"], "the old files are back");

        let mut f = fake("sha256:new-a", "sha256:new-b");
        f.builds = [("a".into(), ("r/a:latest".into(), "bad-a".into()))].into();
        let e = run(&f, vec![rebuild("a")], &[backup("a")], true);
        assert_eq!(e.outcome, Outcome::RolledBack);
        assert_eq!(f.tags.lock().unwrap()["r/a:latest"], "old-a", "the old image is back under the name");
        assert_eq!(f.running.lock().unwrap()["a"], "old-a");
    }

    #[test]
    fn a_failed_pull_touches_no_container() {
        let f = Fake { fail_pull: true, ..fake("sha256:new-a", "sha256:new-b") };
        let e = image_updates(&f, ["sha256:new-a", "sha256:new-b"]);
        assert_eq!(e.outcome, Outcome::Failed);
        assert!(e.error.unwrap().contains("nothing was changed"));
        assert!(!f.log.lock().unwrap().iter().any(|l| l.starts_with("up")));
        assert_eq!(f.running.lock().unwrap()["a"], "old-a");
    }

    #[test]
    fn a_failed_restore_is_reported_as_rollback_failed() {
        let f = Fake { fail_up_of_image: Some("old-b".into()), ..fake("sha256:new-a", "sha256:bad-b") };
        let e = image_updates(&f, ["sha256:new-a", "sha256:bad-b"]);
        assert_eq!(e.outcome, Outcome::RollbackFailed);
        let error = e.error.unwrap();
        assert!(error.contains("rollback failed") && error.contains("restoring b"), "{error}");
        assert_eq!(f.running.lock().unwrap()["a"], "old-a", "the other services are still restored");
    }

    #[test]
    fn structural_changes_switch_files_and_a_failure_switches_them_back() {
        let with_c = |c_image: &str| {
            let mut f = fake("sha256:new-a", "sha256:new-b");
            f.tags.lock().unwrap().insert("r/c:latest".into(), c_image.into());
            f.images.insert("c".into(), "r/c:latest".into());
            f
        };
        let f = with_c("c1");
        let e = run(
            &f,
            vec![change("c", ChangeKind::Create, None), change("b", ChangeKind::Remove, None)],
            &[backup("b")],
            true,
        );
        assert_eq!(e.outcome, Outcome::Applied);
        assert_eq!(*f.log.lock().unwrap(), ["files new", "up c", "rm b-old-b"]);
        assert!(!f.running.lock().unwrap().contains_key("b"));

        let f = with_c("bad-c");
        let e = run(
            &f,
            vec![change("a", ChangeKind::Recreate, None), change("c", ChangeKind::Create, None)],
            &[backup("a")],
            true,
        );
        assert_eq!(e.outcome, Outcome::RolledBack);
        assert_eq!(*f.log.lock().unwrap(), ["files new", "up a", "up c", "files old", "rm c-bad-c", "up a"]);
        assert!(!f.running.lock().unwrap().contains_key("c"), "a service created by the failed revision is removed");
    }

    /// The stack's hooks wrap the whole update; a service's host hooks
    /// wrap its own recreate; a failing service pre-update hook leaves
    /// that service as it was and the others go on; a failing stack
    /// pre-update hook changes nothing.
    #[test]
    fn hooks_run_in_order_and_their_failures_are_contained() {
        let tmp = tempfile::tempdir().unwrap();
        let trail = tmp.path().join("trail");
        let say = |what: &str| format!("echo {what} >> {}", trail.display());
        let stack_hooks =
            Hooks { pre_update: Some(say("stack-pre")), post_update: Some(say("stack-post")), pre_backup: None };
        let service = |pre: String| ServicePolicy {
            health_url: None,
            health_timeout: None,
            host_hooks: Hooks {
                pre_update: Some(pre),
                post_update: Some(say("post-$CLUSTERUP_SERVICE")),
                pre_backup: None,
            },
            container_hooks: Hooks::default(),
            strategy: Strategy::StopFirst,
            fallback_reason: None,
            min_age: None,
            follow: None,
            windows: Vec::new(),
            backup_volumes: false,
            backup_binds: Vec::new(),
        };
        let policies = BTreeMap::from([("b".to_string(), service(say("pre-$CLUSTERUP_SERVICE")))]);
        let f = Fake { trail: Some(trail.clone()), ..fake("sha256:new-a", "sha256:new-b") };
        let changes = vec![
            change("a", ChangeKind::Image, Some("sha256:new-a")),
            change("b", ChangeKind::Image, Some("sha256:new-b")),
        ];
        let e = run_with_hooks(&f, changes.clone(), &[backup("a"), backup("b")], false, &stack_hooks, &policies);
        assert_eq!(e.outcome, Outcome::Applied);
        let lines = std::fs::read_to_string(&trail).unwrap();
        assert_eq!(lines.lines().collect::<Vec<_>>(), ["stack-pre", "up a", "pre-b", "up b", "post-b", "stack-post"]);

        std::fs::remove_file(&trail).unwrap();
        let policies = BTreeMap::from([("b".to_string(), service("exit 3".to_string()))]);
        let f = Fake { trail: Some(trail.clone()), ..fake("sha256:new-a", "sha256:new-b") };
        let e = run_with_hooks(&f, changes.clone(), &[backup("a"), backup("b")], false, &stack_hooks, &policies);
        assert_eq!(e.outcome, Outcome::Applied);
        assert_eq!(e.skipped.len(), 1, "{:?}", e.skipped);
        assert!(e.skipped[0].starts_with("b: its pre-update hook failed"), "{:?}", e.skipped);
        assert_eq!(f.running.lock().unwrap()["b"], "old-b", "b was left as it was");
        assert_eq!(f.running.lock().unwrap()["a"], "sha256:new-a");

        let failing = Hooks { pre_update: Some("exit 1".into()), post_update: None, pre_backup: None };
        let f = fake("sha256:new-a", "sha256:new-b");
        let e = run_with_hooks(&f, changes, &[backup("a"), backup("b")], false, &failing, &BTreeMap::new());
        assert_eq!(e.outcome, Outcome::Failed);
        assert!(e.error.unwrap().contains("nothing was changed"));
        assert!(f.log.lock().unwrap().is_empty(), "not even a pull: {:?}", f.log.lock().unwrap());
    }
}
