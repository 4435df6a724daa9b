//! Notifications: a generic JSON webhook, Slack-compatible incoming
//! webhooks, and GitHub issues (one open issue per stack and problem,
//! commented on instead of duplicated, closed when the stack is healthy
//! again). A notifier that fails is logged; it never fails the update.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use serde_json::json;

use crate::exit::ExitStatus;
use crate::output::Printer;
use crate::redact::Secret;
use crate::report::{CommandName, Ended, Report};
use crate::settings::{Event, NotifyKind, NotifyTarget, StackSettings};
use crate::state::Outcome;

/// What a finished command means for notifications, and whether the stack
/// is healthy (closing open problem issues).
pub fn events_for(command: CommandName, status: ExitStatus, report: &Report) -> (Vec<Event>, bool) {
    let mut events = Vec::new();
    if command == CommandName::Check {
        if status == ExitStatus::UpdatesPending {
            events.push(Event::UpdateAvailable);
        }
        if status == ExitStatus::Failed {
            events.push(Event::Failed);
        }
        return (events, false);
    }
    let ended = report.ended();
    match ended {
        Some(Ended::Outcome(Outcome::Applied)) if report.revision().is_some() => events.push(Event::Applied),
        Some(Ended::Outcome(Outcome::RolledBack)) => events.push(Event::RolledBack),
        Some(Ended::Outcome(Outcome::RollbackFailed)) => events.push(Event::RollbackFailed),
        Some(Ended::Outcome(Outcome::Failed)) => events.push(Event::Failed),
        _ if status == ExitStatus::Failed => events.push(Event::Failed),
        _ => {}
    }
    if !report.held_back().is_empty() && ended != Some(Ended::Skipped) {
        events.push(Event::NeedsApproval);
    }
    let healthy =
        matches!(ended, Some(Ended::Outcome(Outcome::Applied | Outcome::UpToDate))) && status == ExitStatus::Success;
    (events, healthy)
}

/// This machine's name, as notifications and the page show it.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn summary(stack: &str, host: &str, event: Event, report: &Report) -> String {
    let mut text = format!("clusterup: stack {stack} on {host}: {}", event.name().replace('_', " "));
    if let Some(rev) = report.revision() {
        text.push_str(&format!(" (revision {rev})"));
    }
    let changes: Vec<String> = report
        .changes()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                serde_json::to_value(c.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                c.service
            )
        })
        .collect();
    if !changes.is_empty() {
        text.push_str(&format!("\nchanges: {}", changes.join(", ")));
    }
    if let Some(e) = report.error() {
        text.push_str(&format!("\nerror: {e}"));
    }
    if !report.held_back().is_empty() {
        text.push_str(&format!("\nheld back: {}", report.held_back().join("; ")));
    }
    text
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(timeout)).build().into()
}

/// Sends what `command`'s result calls for to every target; failures are
/// logged on stderr and kept to be sent again by the next run.
pub fn send(
    stack: &StackSettings,
    command: CommandName,
    status: ExitStatus,
    report: &Report,
    time: jiff::Timestamp,
    printer: &Printer,
) {
    if stack.notify.is_empty() {
        return;
    }
    let (events, healthy) = events_for(command, status, report);
    let host = host();
    let mut ledger = Ledger::load(&stack.state_dir);
    for target in &stack.notify {
        let wanted: Vec<Event> =
            events.iter().copied().filter(|e| target.events.is_empty() || target.events.contains(e)).collect();
        let result = match target.kind {
            NotifyKind::Webhook | NotifyKind::Slack => {
                let agent = agent(stack.timeouts.notify);
                let (messages, dropped) = ledger.messages(target, command, &wanted, report, time, |e, resolves| {
                    body(target, &stack.name, &host, e, resolves, report, time)
                });
                if dropped > 0 {
                    printer.warn(format!(
                        "stack {}: {dropped} notification(s) ({:?}) given up after {ATTEMPTS} runs could not deliver them",
                        stack.name, target.kind
                    ));
                }
                let mut failed = None;
                for message in messages {
                    if let Err(e) = post(&agent, target, &message.body) {
                        ledger.keep(target, message);
                        failed = Some(e);
                    }
                }
                failed.map_or(Ok(()), Err)
            }
            NotifyKind::Github => {
                github(&agent(stack.timeouts.notify), target, &stack.name, &host, &wanted, healthy, report)
            }
        };
        if let Err(e) = result {
            printer.warn(format!("stack {}: notification ({:?}) failed: {e:#}", stack.name, target.kind));
        }
    }
    if let Err(e) = ledger.save(&stack.state_dir) {
        printer.warn(format!("stack {}: recording what was notified: {e:#}", stack.name));
    }
}

/// Conditions that last across runs: sent once while they hold.
const LASTING: [Event; 2] = [Event::NeedsApproval, Event::UpdateAvailable];
/// A message that could not be delivered is tried by this many runs.
const ATTEMPTS: u32 = 5;

/// What each webhook or Slack target was sent (`<state dir>/notified.json`):
/// the lasting conditions it knows of, and messages still to deliver.
#[derive(Debug, Default, serde::Serialize, Deserialize)]
struct Ledger {
    #[serde(default)]
    targets: std::collections::BTreeMap<String, TargetLedger>,
}

#[derive(Debug, Default, serde::Serialize, Deserialize)]
struct TargetLedger {
    /// Event name → the condition last sent: what it was about and when.
    #[serde(default)]
    open: std::collections::BTreeMap<String, Sent>,
    #[serde(default)]
    outbox: Vec<Undelivered>,
}

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
struct Sent {
    identity: String,
    time: jiff::Timestamp,
}

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
struct Undelivered {
    body: serde_json::Value,
    attempts: u32,
}

const LEDGER: &str = "notified.json";

/// A target's key: its kind and a fingerprint of its URL (the URL is the
/// credential and is not written down).
fn target_key(target: &NotifyTarget) -> String {
    let url = target.url.as_ref().map(|u| u.expose().to_string()).unwrap_or_default();
    format!("{:?}:{}", target.kind, crate::redact::fingerprint(&url))
}

/// What a lasting condition is about: the changes and why they are held.
fn identity(report: &Report) -> String {
    let changes: Vec<String> =
        report.changes().iter().map(|c| format!("{:?} {} {:?}", c.kind, c.service, c.to)).collect();
    format!("{} | {}", changes.join(", "), report.held_back().join("; "))
}

impl Ledger {
    fn load(state_dir: &std::path::Path) -> Ledger {
        std::fs::read(state_dir.join(LEDGER)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn save(&self, state_dir: &std::path::Path) -> Result<()> {
        crate::state::StateDir::open(state_dir)?;
        let bytes = serde_json::to_vec_pretty(self).expect("plain data serializes");
        crate::files::write_atomic(&state_dir.join(LEDGER), &bytes)
    }

    /// The messages this run owes `target`: those an earlier run could not
    /// deliver, each one-off event, a lasting condition that is new or
    /// changed (or due a reminder), and `resolved` for one that ended.
    fn messages(
        &mut self,
        target: &NotifyTarget,
        command: CommandName,
        wanted: &[Event],
        report: &Report,
        now: jiff::Timestamp,
        body: impl Fn(Event, Option<Event>) -> serde_json::Value,
    ) -> (Vec<Undelivered>, usize) {
        let entry = self.targets.entry(target_key(target)).or_default();
        let mut out: Vec<Undelivered> = Vec::new();
        let mut dropped = 0;
        for waiting in std::mem::take(&mut entry.outbox) {
            if waiting.attempts < ATTEMPTS {
                out.push(waiting);
            } else {
                dropped += 1;
            }
        }
        let fresh = |body: serde_json::Value| Undelivered { body, attempts: 0 };
        let id = identity(report);
        for event in wanted {
            if !LASTING.contains(event) {
                out.push(fresh(body(*event, None)));
                continue;
            }
            let due = match entry.open.get(&event.name()) {
                Some(sent) if sent.identity == id => target
                    .remind
                    .and_then(|r| jiff::SignedDuration::try_from(r).ok())
                    .is_some_and(|r| now.duration_since(sent.time) >= r),
                _ => true,
            };
            if due {
                out.push(fresh(body(*event, None)));
                entry.open.insert(event.name(), Sent { identity: id.clone(), time: now });
            }
        }
        // A run that decides a condition and no longer finds it ends it.
        let decides = |e: Event| match (e, command) {
            (Event::UpdateAvailable, CommandName::Check) => true,
            (Event::UpdateAvailable, CommandName::Apply) => report.revision().is_some(),
            (Event::NeedsApproval, CommandName::Apply) => report.ended() != Some(Ended::Skipped),
            _ => false,
        };
        for event in LASTING {
            if decides(event) && !wanted.contains(&event) && entry.open.remove(&event.name()).is_some() {
                out.push(fresh(body(Event::Resolved, Some(event))));
            }
        }
        (out, dropped)
    }

    /// `message` could not be delivered: the next run tries again.
    fn keep(&mut self, target: &NotifyTarget, mut message: Undelivered) {
        message.attempts += 1;
        self.targets.entry(target_key(target)).or_default().outbox.push(message);
    }
}

/// The message for `event` (for `resolved`, which condition ended), as the
/// target's kind wants it.
fn body(
    target: &NotifyTarget,
    stack: &str,
    host: &str,
    event: Event,
    resolves: Option<Event>,
    report: &Report,
    time: jiff::Timestamp,
) -> serde_json::Value {
    let text = match resolves {
        Some(ended) => format!("clusterup: stack {stack} on {host}: resolved: {}", ended.name().replace('_', " ")),
        None => summary(stack, host, event, report),
    };
    let mut body = match target.kind {
        NotifyKind::Slack => json!({"text": text}),
        _ => json!({
            "schema_version": crate::report::SCHEMA_VERSION,
            "event": event,
            "resolves": resolves,
            "stack": stack,
            "host": host,
            "time": time,
            "summary": text,
            "report": report,
        }),
    };
    crate::redact::scrub_json(&mut body);
    body
}

fn post(agent: &ureq::Agent, target: &NotifyTarget, body: &serde_json::Value) -> Result<()> {
    let url = target.url.as_ref().context("`url` is required for webhook and slack notifications")?;
    agent.post(url.expose()).send_json(body).map_err(|e| anyhow!("POST {url}: {e}"))?;
    Ok(())
}

fn token(target: &NotifyTarget) -> Result<Secret> {
    if let Some(file) = &target.token_file {
        let t = std::fs::read_to_string(file).with_context(|| format!("reading token file {}", file.display()))?;
        return Ok(Secret::new(t.trim()));
    }
    let var = target.token_env.as_deref().unwrap_or("GITHUB_TOKEN");
    std::env::var(var).map(Secret::new).map_err(|_| anyhow!("no GitHub token: set {var} (or `token_file`)"))
}

#[derive(Deserialize)]
struct Issue {
    number: u64,
    title: String,
}

fn github(
    agent: &ureq::Agent,
    target: &NotifyTarget,
    stack: &str,
    host: &str,
    events: &[Event],
    healthy: bool,
    report: &Report,
) -> Result<()> {
    let repo = target.repo.as_deref().context("`repo` (owner/name) is required for github notifications")?;
    let api = target.api_url.expose().trim_end_matches('/');
    let token = token(target)?;
    let auth = format!("Bearer {}", token.expose());
    let request = |method: &str, path: &str| {
        let url = format!("{api}/repos/{repo}{path}");
        let builder = match method {
            "GET" => agent.get(&url).force_send_body(),
            "PATCH" => agent.patch(&url),
            _ => agent.post(&url),
        };
        builder
            .header("Authorization", &auth)
            .header("Accept", "application/vnd.github+json")
            .header("User-Agent", "clusterup")
    };
    let prefix = format!("clusterup: stack {stack} on {host}:");
    let open: Vec<Issue> = request("GET", "/issues?state=open&labels=clusterup&per_page=100")
        .send_empty()
        .map_err(|e| anyhow!("listing issues of {repo}: {e}"))?
        .body_mut()
        .read_json()
        .context("reading the issue list")?;
    for event in events.iter().filter(|e| e.is_problem()) {
        let title = format!("{prefix} {}", event.name().replace('_', " "));
        let body = crate::redact::scrub(&summary(stack, host, *event, report));
        match open.iter().find(|i| i.title == title) {
            Some(issue) => {
                request("POST", &format!("/issues/{}/comments", issue.number))
                    .send_json(json!({"body": body}))
                    .map_err(|e| anyhow!("commenting on issue {}: {e}", issue.number))?;
            }
            None => {
                request("POST", "/issues")
                    .send_json(json!({"title": title, "body": body, "labels": ["clusterup"]}))
                    .map_err(|e| anyhow!("opening an issue in {repo}: {e}"))?;
            }
        }
    }
    if healthy {
        for issue in open.iter().filter(|i| i.title.starts_with(&prefix)) {
            request("POST", &format!("/issues/{}/comments", issue.number))
                .send_json(json!({"body": format!("{prefix} healthy again")}))
                .map_err(|e| anyhow!("commenting on issue {}: {e}", issue.number))?;
            request("PATCH", &format!("/issues/{}", issue.number))
                .send_json(json!({"state": "closed"}))
                .map_err(|e| anyhow!("closing issue {}: {e}", issue.number))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::plan::classify::{Change, ChangeKind, Plan};
    use crate::report::{PlanReport, RunResult, SkippedOutcome, SkippedReport};

    fn applied(outcome: Outcome, revision: Option<u64>, held: &[&str]) -> Report {
        let run = RunResult {
            outcome,
            revision,
            error: None,
            held_back: held.iter().map(|h| h.to_string()).collect(),
            skipped: None,
        };
        Report::Plan(Box::new(PlanReport {
            command: CommandName::Apply,
            plan: Plan::empty("s"),
            file_diff: None,
            run: Some(run),
        }))
    }

    #[test]
    fn events_follow_outcomes() {
        use CommandName::{Apply, Check};
        let check =
            Report::Plan(Box::new(PlanReport { command: Check, plan: Plan::empty("s"), file_diff: None, run: None }));
        assert_eq!(events_for(Check, ExitStatus::UpdatesPending, &check), (vec![Event::UpdateAvailable], false));
        assert_eq!(
            events_for(Apply, ExitStatus::Success, &applied(Outcome::Applied, Some(3), &[])),
            (vec![Event::Applied], true)
        );
        assert_eq!(events_for(Apply, ExitStatus::Success, &applied(Outcome::UpToDate, None, &[])), (vec![], true));
        assert_eq!(
            events_for(Apply, ExitStatus::Failed, &applied(Outcome::RolledBack, Some(3), &[])),
            (vec![Event::RolledBack], false)
        );
        assert_eq!(
            events_for(Apply, ExitStatus::RollbackFailed, &applied(Outcome::RollbackFailed, Some(3), &[])),
            (vec![Event::RollbackFailed], false)
        );
        assert_eq!(
            events_for(
                Apply,
                ExitStatus::Skipped,
                &applied(Outcome::UpToDate, None, &["structural changes need approval"])
            ),
            (vec![Event::NeedsApproval], false)
        );
        let paused = Report::Skipped(SkippedReport {
            command: Apply,
            stack: "s".into(),
            outcome: SkippedOutcome::Skipped,
            revision: None,
            held_back: vec!["paused".into()],
        });
        assert_eq!(events_for(Apply, ExitStatus::Skipped, &paused), (vec![], false));
    }

    fn webhook(url: &str) -> NotifyTarget {
        let yaml = format!("{{type: webhook, url: '{url}'}}");
        serde_yaml::from_str(&yaml).unwrap()
    }

    /// Issue 13, item 12: a receiver that accepts and never answers costs
    /// the notification timeout; the warning shows scheme and host only.
    #[test]
    fn a_silent_receiver_is_bounded_and_its_url_not_shown() {
        let port = crate::seams::silent_port();
        let target = webhook(&format!("http://127.0.0.1:{port}/hooks/Webhook-Secret-Path"));
        let start = std::time::Instant::now();
        let report = applied(Outcome::Failed, None, &[]);
        let message = body(&target, "s", "h", Event::Failed, None, &report, crate::seams::fake::NOW);
        let err = post(&agent(Duration::from_millis(800)), &target, &message);
        let err = format!("{:#}", err.unwrap_err());
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        assert!(!crate::redact::scrub(&err).contains("Webhook-Secret-Path"), "{err}");
        assert!(err.contains(&format!("http://127.0.0.1:{port}")) && !err.contains("/hooks"), "{err}");
    }

    /// A lasting condition once per target, again after `remind`, resolved
    /// once by the run that no longer finds it; one-off events each time.
    #[test]
    fn a_lasting_condition_is_sent_once_reminded_and_resolved() {
        let mut target = webhook("http://127.0.0.1:1/h");
        target.remind = Some(Duration::from_secs(3600));
        let mut ledger = Ledger::default();
        let held = {
            let mut r = applied(Outcome::UpToDate, None, &["structural changes need approval"]);
            if let Report::Plan(p) = &mut r {
                p.plan.changes.push(Change::new("web", ChangeKind::Recreate, None));
            }
            r
        };
        let t0: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let names = |ledger: &mut Ledger, report: &Report, wanted: &[Event], at: jiff::Timestamp| {
            let (out, _) = ledger.messages(
                &target,
                CommandName::Apply,
                wanted,
                report,
                at,
                |e, r| json!({"event": e, "resolves": r}),
            );
            out.iter().map(|m| format!("{}{}", m.body["event"], m.body["resolves"])).collect::<Vec<_>>()
        };
        let approval = [Event::NeedsApproval];
        assert_eq!(names(&mut ledger, &held, &approval, t0), ["\"needs_approval\"null"]);
        assert!(names(&mut ledger, &held, &approval, t0 + jiff::SignedDuration::from_mins(30)).is_empty());
        assert_eq!(names(&mut ledger, &held, &approval, t0 + jiff::SignedDuration::from_mins(61)).len(), 1, "reminded");
        let done = applied(Outcome::Applied, Some(2), &[]);
        let later = t0 + jiff::SignedDuration::from_mins(90);
        assert_eq!(
            names(&mut ledger, &done, &[Event::Applied], later),
            ["\"applied\"null", "\"resolved\"\"needs_approval\""]
        );
        assert_eq!(names(&mut ledger, &done, &[Event::Applied], later), ["\"applied\"null"], "resolved once");
    }

    #[test]
    fn summaries_name_stack_host_and_what_happened() {
        let mut report = applied(Outcome::RolledBack, Some(4), &[]);
        if let Report::Plan(p) = &mut report {
            p.plan.changes.push(Change::new("web", ChangeKind::Image, None));
            p.run.as_mut().unwrap().error = Some("service web: unhealthy".into());
        }
        let text = summary("shop", "h1", Event::RolledBack, &report);
        assert!(text.starts_with("clusterup: stack shop on h1: rolled back (revision 4)"), "{text}");
        assert!(text.contains("image web") && text.contains("unhealthy"), "{text}");
    }
}
