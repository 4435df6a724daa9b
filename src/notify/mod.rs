//! Notifications: what a finished command means ([`events_for`]), one
//! [`Message`] per event and target (templated if the target says so),
//! sent once per lasting condition ([`ledger`]) over the target's channel
//! ([`channels`], [`email`], [`github`]). A notifier that fails is logged
//! and retried by the next runs; it never fails the update.

mod channels;
mod email;
mod github;
mod ledger;
mod message;

use std::time::Duration;

use crate::exit::ExitStatus;
use crate::output::Printer;
use crate::report::{CommandName, Ended, Report};
use crate::settings::{Channel, Event, StackSettings};
use crate::state::Outcome;
use ledger::Ledger;
pub use message::{Facts, Message};

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

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(timeout)).build().into()
}

/// Sends what `command`'s result calls for to every target; failures are
/// logged on stderr and kept to be sent again by the next runs.
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
    let timeout = stack.timeouts.notify;
    let agent = agent(timeout);
    for target in &stack.notify {
        let wanted: Vec<Event> =
            events.iter().copied().filter(|e| target.events.is_empty() || target.events.contains(e)).collect();
        let message = |event, resolves| {
            Message::new(&Facts { stack: &stack.name, host: &host, event, resolves, report, time }, Some(target))
        };
        let result = match &target.channel {
            Channel::Github { repo, api, token } => {
                let messages: Vec<Message> = wanted.iter().map(|e| message(*e, None)).collect();
                github::sync(&agent, (repo, api, token), &stack.name, &host, &messages, healthy)
            }
            channel => {
                let (messages, dropped) = ledger.messages(target, command, &wanted, report, time, message);
                if dropped > 0 {
                    printer.warn(format!(
                        "stack {}: {dropped} notification(s) ({}) given up after {} runs could not deliver them",
                        stack.name,
                        channel.name(),
                        ledger::ATTEMPTS
                    ));
                }
                let mut failed = None;
                for waiting in messages {
                    if let Err(e) = channels::deliver(&agent, channel, &waiting.message, timeout) {
                        ledger.keep(target, waiting);
                        failed = Some(e);
                    }
                }
                failed.map_or(Ok(()), Err)
            }
        };
        if let Err(e) = result {
            printer.warn(format!("stack {}: notification ({}) failed: {e:#}", stack.name, target.channel.name()));
        }
    }
    if let Err(e) = ledger.save(&stack.state_dir) {
        printer.warn(format!("stack {}: recording what was notified: {e:#}", stack.name));
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::settings::NotifyTarget;

    use crate::plan::classify::{Change, ChangeKind, Plan};
    use crate::report::{PlanReport, RunResult, SkippedOutcome, SkippedReport};

    pub fn applied(outcome: Outcome, revision: Option<u64>, held: &[&str]) -> Report {
        let run = RunResult {
            outcome,
            revision,
            error: None,
            held_back: held.iter().map(|h| h.to_string()).collect(),
            skipped: None,
            held: None,
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
        let entry = serde_yaml::from_str(&format!("{{type: webhook, url: '{url}'}}")).unwrap();
        crate::settings::resolve_entry(&entry).unwrap().remove(0)
    }

    fn message(event: Event, resolves: Option<Event>, report: &Report) -> Message {
        Message::new(&Facts { stack: "shop", host: "h1", event, resolves, report, time: crate::seams::fake::NOW }, None)
    }

    /// Issue 13, item 12: a receiver that accepts and never answers costs
    /// the notification timeout; the warning shows scheme and host only.
    #[test]
    fn a_silent_receiver_is_bounded_and_its_url_not_shown() {
        let port = crate::seams::silent_port();
        let target = webhook(&format!("http://127.0.0.1:{port}/hooks/Webhook-Secret-Path"));
        let start = std::time::Instant::now();
        let report = applied(Outcome::Failed, None, &[]);
        let message = message(Event::Failed, None, &report);
        let err = channels::deliver(&agent(Duration::from_millis(800)), &target.channel, &message, Duration::ZERO);
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
            let (out, _) =
                ledger.messages(&target, CommandName::Apply, wanted, report, at, |e, r| message(e, r, report));
            out.iter().map(|m| format!("{:?}{:?}", m.message.event, m.message.resolves)).collect::<Vec<_>>()
        };
        let approval = [Event::NeedsApproval];
        assert_eq!(names(&mut ledger, &held, &approval, t0), ["NeedsApprovalNone"]);
        assert!(names(&mut ledger, &held, &approval, t0 + jiff::SignedDuration::from_mins(30)).is_empty());
        assert_eq!(names(&mut ledger, &held, &approval, t0 + jiff::SignedDuration::from_mins(61)).len(), 1, "reminded");
        let done = applied(Outcome::Applied, Some(2), &[]);
        let later = t0 + jiff::SignedDuration::from_mins(90);
        assert_eq!(names(&mut ledger, &done, &[Event::Applied], later), ["AppliedNone", "ResolvedSome(NeedsApproval)"]);
        assert_eq!(names(&mut ledger, &done, &[Event::Applied], later), ["AppliedNone"], "resolved once");
    }

    #[test]
    fn summaries_name_stack_host_and_what_happened() {
        let mut report = applied(Outcome::RolledBack, Some(4), &[]);
        if let Report::Plan(p) = &mut report {
            p.plan.changes.push(Change::new("web", ChangeKind::Image, None));
            p.run.as_mut().unwrap().error = Some("service web: unhealthy".into());
        }
        let text = message(Event::RolledBack, None, &report).full();
        assert!(text.starts_with("clusterup: stack shop on h1: rolled back (revision 4)"), "{text}");
        assert!(text.contains("image web") && text.contains("unhealthy"), "{text}");
    }
}
