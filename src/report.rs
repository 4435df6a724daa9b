//! What one command did to one stack, as data. The command files render
//! it for people; `--json` prints it (keys sorted, `schema_version` at the
//! top; see `docs/report.schema.json`); notifications and the last-run
//! record read it through its accessors. Nothing patches it by key.

use serde::Serialize;

use crate::plan::classify::{Change, CommitLog, Plan, PlanKind};
use crate::state::Outcome;
use crate::state::{LastRun, Pause, Revision, Trigger};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandName {
    Check,
    Apply,
    Rollback,
    Status,
    Pause,
    Resume,
}

impl CommandName {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::Check => "check",
            CommandName::Apply => "apply",
            CommandName::Rollback => "rollback",
            CommandName::Status => "status",
            CommandName::Pause => "pause",
            CommandName::Resume => "resume",
        }
    }
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Report {
    /// check, apply and rollback: the plan, and what became of it.
    Plan(Box<PlanReport>),
    /// An apply that did nothing on purpose: paused, outside its window.
    Skipped(SkippedReport),
    /// An apply that stopped after recovering an interrupted revision
    /// whose rollback failed.
    Recovered(RecoveredReport),
    /// `rollback --list`.
    Revisions(RevisionsReport),
    Status(Box<StatusReport>),
    Paused(PausedReport),
    Resumed(ResumedReport),
    /// The stack could not be handled at all.
    Error(ErrorReport),
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PlanReport {
    pub command: CommandName,
    #[serde(flatten)]
    pub plan: Plan,
    /// check: the unified diff of the stack's files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_diff: Option<String>,
    /// apply and rollback: what became of the plan.
    #[serde(flatten)]
    pub run: Option<RunResult>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RunResult {
    pub outcome: Outcome,
    pub revision: Option<u64>,
    pub error: Option<String>,
    /// Why part of the plan was not applied.
    pub held_back: Vec<String>,
    /// A revision that ran: services left as they were (their pre-update
    /// hook failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Vec<String>>,
    /// What `held_back` kept back: the changes, and the commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Held {
    pub changes: Vec<Change>,
    /// The commit not deployed, and what it brings.
    pub commit: Option<String>,
    pub commits: Option<CommitLog>,
}

impl Held {
    /// What of `found` is not in `applied` (None: nothing).
    pub fn between(found: &Plan, applied: &Plan) -> Option<Held> {
        let changes: Vec<Change> = found.changes.iter().filter(|c| !applied.changes.contains(c)).cloned().collect();
        let moved = found.commit != applied.commit;
        let commit = found.commit.clone().filter(|_| moved);
        let commits = found.commits.clone().filter(|_| moved);
        (!changes.is_empty() || commit.is_some()).then_some(Held { changes, commit, commits })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SkippedOutcome {
    Skipped,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SkippedReport {
    pub command: CommandName,
    pub stack: String,
    pub outcome: SkippedOutcome,
    /// Always null: no revision was made.
    pub revision: Option<u64>,
    pub held_back: Vec<String>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RecoveredReport {
    pub command: CommandName,
    pub stack: String,
    pub outcome: Outcome,
    pub revision: u64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RevisionsReport {
    pub command: CommandName,
    pub stack: String,
    pub revisions: Vec<Revision>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PausedReport {
    pub command: CommandName,
    pub stack: String,
    pub pause: Pause,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ResumedReport {
    pub command: CommandName,
    pub stack: String,
    pub was_paused: bool,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ErrorReport {
    pub stack: String,
    pub error: String,
    pub exit_code: u8,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StatusReport {
    pub command: CommandName,
    pub stack: String,
    /// `false` for a git stack not deployed yet (then nothing else is
    /// said); otherwise the deployed revision, or null.
    pub deployed: Deployed,
    #[serde(flatten)]
    pub detail: Option<StatusDetail>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Deployed {
    NotYet(bool),
    Revision(Option<DeployedRevision>),
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DeployedRevision {
    pub revision: u64,
    pub commit: Option<String>,
    #[schemars(with = "Option<String>")]
    pub when: Option<jiff::Timestamp>,
    pub trigger: Trigger,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StatusDetail {
    pub project: String,
    pub paused: Option<Pause>,
    pub last_run: Option<LastRun>,
    pub stats: Stats,
    pub services: Vec<ServiceStatus>,
    pub revisions: Vec<Revision>,
    /// The volume snapshots kept, oldest first.
    pub snapshots: Vec<crate::state::snapshots::Manifest>,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ServiceStatus {
    pub service: String,
    pub image: Option<String>,
    pub container: Option<String>,
    pub state: String,
    pub health: Option<String>,
    pub image_id: Option<String>,
    pub digest: Option<String>,
    pub uptime_seconds: Option<i64>,
}

/// What the journal says about how updates go.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Stats {
    pub revisions: usize,
    /// Share of finished revisions that applied, 0..=1.
    pub success_rate: Option<f64>,
    pub median_seconds: Option<f64>,
    pub p95_seconds: Option<f64>,
}

/// How a run ended, for notifications and the last-run record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Outcome(Outcome),
    Skipped,
}

impl Report {
    pub fn ended(&self) -> Option<Ended> {
        match self {
            Report::Plan(p) => p.run.as_ref().map(|r| Ended::Outcome(r.outcome)),
            Report::Skipped(_) => Some(Ended::Skipped),
            Report::Recovered(r) => Some(Ended::Outcome(r.outcome)),
            _ => None,
        }
    }

    pub fn revision(&self) -> Option<u64> {
        match self {
            Report::Plan(p) => p.run.as_ref().and_then(|r| r.revision),
            Report::Recovered(r) => Some(r.revision),
            _ => None,
        }
    }

    pub fn held_back(&self) -> &[String] {
        match self {
            Report::Plan(p) => p.run.as_ref().map_or(&[], |r| r.held_back.as_slice()),
            Report::Skipped(s) => &s.held_back,
            _ => &[],
        }
    }

    /// A git stack's commits that the plan brings.
    pub fn commits(&self) -> Option<&CommitLog> {
        match self {
            Report::Plan(p) => p.plan.commits.as_ref(),
            _ => None,
        }
    }

    pub fn held(&self) -> Option<&Held> {
        match self {
            Report::Plan(p) => p.run.as_ref().and_then(|r| r.held.as_ref()),
            _ => None,
        }
    }

    pub fn changes(&self) -> &[Change] {
        match self {
            Report::Plan(p) => &p.plan.changes,
            _ => &[],
        }
    }

    pub fn kind(&self) -> PlanKind {
        match self {
            Report::Plan(p) => p.plan.kind,
            _ => PlanKind::None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Report::Plan(p) => p.run.as_ref().and_then(|r| r.error.as_deref()),
            Report::Error(e) => Some(&e.error),
            _ => None,
        }
    }

    /// The document `--json` prints for one stack, or for several.
    pub fn document(reports: &[Report]) -> serde_json::Value {
        let document = match reports {
            [report] => Document::One { schema_version: SCHEMA_VERSION, report: report.clone() },
            _ => Document::Many { schema_version: SCHEMA_VERSION, stacks: reports.to_vec() },
        };
        // Through a Value: its keys are sorted, as they always were.
        serde_json::to_value(document).expect("reports are plain data")
    }
}

/// The whole `--json` output: one stack's report with the schema version
/// beside its fields, or several stacks' under `stacks`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Document {
    One {
        schema_version: u32,
        #[serde(flatten)]
        report: Report,
    },
    Many {
        schema_version: u32,
        stacks: Vec<Report>,
    },
}

/// The JSON Schema of `Document`, as checked in at `docs/report.schema.json`.
#[cfg(test)]
pub fn schema() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(Document)).expect("a schema serializes") + "\n"
}
