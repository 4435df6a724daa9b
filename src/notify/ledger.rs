//! What each target was told, so that a condition that lasts is sent once
//! (again after `remind:`), its end once, and a message that could not be
//! delivered is sent by the next runs, a bounded number of times.

use anyhow::Result;
use serde::Deserialize;

use super::message::Message;
use crate::report::{CommandName, Ended, Report};
use crate::settings::{Event, NotifyTarget};

/// Conditions that last across runs: sent once while they hold.
const LASTING: [Event; 2] = [Event::NeedsApproval, Event::UpdateAvailable];
/// A message that could not be delivered is tried by this many runs.
pub const ATTEMPTS: u32 = 5;

/// What each target was sent (`<state dir>/notified.json`): the lasting
/// conditions it knows of, and messages still to deliver.
#[derive(Debug, Default, serde::Serialize, Deserialize)]
pub struct Ledger {
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
pub struct Undelivered {
    pub message: Message,
    attempts: u32,
}

const LEDGER: &str = "notified.json";

/// A target's key: its channel's name and a fingerprint of where it
/// sends (URLs and tokens are credentials and are not written down).
fn target_key(target: &NotifyTarget) -> String {
    format!("{}:{}", target.channel.name(), crate::redact::fingerprint(&target.channel.destination()))
}

/// What a lasting condition is about: the changes (and commit) it holds,
/// or offers, and why; a different target is a new condition.
fn identity(report: &Report) -> String {
    let describe = |changes: &[crate::plan::classify::Change]| -> Vec<String> {
        changes.iter().map(|c| format!("{:?} {} {:?}", c.kind, c.service, c.to)).collect()
    };
    let mut parts = describe(report.changes());
    if let Some(held) = report.held() {
        parts.extend(describe(&held.changes));
        parts.extend(held.commit.clone());
    }
    format!("{} | {}", parts.join(", "), report.held_back().join("; "))
}

impl Ledger {
    pub fn load(state_dir: &std::path::Path) -> Ledger {
        std::fs::read(state_dir.join(LEDGER)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    pub fn save(&self, state_dir: &std::path::Path) -> Result<()> {
        crate::state::StateDir::open(state_dir)?;
        let bytes = serde_json::to_vec_pretty(self).expect("plain data serializes");
        crate::files::write_atomic(&state_dir.join(LEDGER), &bytes)
    }

    /// The messages this run owes `target`: those an earlier run could not
    /// deliver, each one-off event, a lasting condition that is new or
    /// changed (or due a reminder), and `resolved` for one that ended.
    pub fn messages(
        &mut self,
        target: &NotifyTarget,
        command: CommandName,
        wanted: &[Event],
        report: &Report,
        now: jiff::Timestamp,
        message: impl Fn(Event, Option<Event>) -> Message,
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
        let fresh = |message: Message| Undelivered { message, attempts: 0 };
        let id = identity(report);
        for event in wanted {
            if !LASTING.contains(event) {
                out.push(fresh(message(*event, None)));
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
                out.push(fresh(message(*event, None)));
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
                out.push(fresh(message(Event::Resolved, Some(event))));
            }
        }
        (out, dropped)
    }

    /// `message` could not be delivered: the next run tries again.
    pub fn keep(&mut self, target: &NotifyTarget, mut message: Undelivered) {
        message.attempts += 1;
        self.targets.entry(target_key(target)).or_default().outbox.push(message);
    }
}
