//! `clusterup apply`: check, then back up, pull, switch files, recreate and
//! health-check, rolling back what fails. Every revision is journaled
//! before it acts.

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::{each_stack, plural, to_value};
use crate::cli::ApplyArgs;
use crate::exit::{ExitStatus, usage};
use crate::output::Printer;
use crate::pipeline::classify::{self, Plan};
use crate::pipeline::execute::{Execution, Executor, Files};
use crate::pipeline::{self, Outcome, backup};
use crate::seams::compose::ComposeCli;
use crate::seams::engine::Engine;
use crate::settings::StackSettings;
use crate::state::{Revision, StateDir, Trigger, now};

/// What the operator allowed, independent of how it was asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    pub auto: bool,
    pub yes: bool,
    pub accept_data_risk: bool,
}

impl From<&ApplyArgs> for ApplyOptions {
    fn from(a: &ApplyArgs) -> Self {
        ApplyOptions { auto: a.auto, yes: a.yes, accept_data_risk: a.accept_data_risk }
    }
}

pub fn run(engine: &dyn Engine, stacks: &[StackSettings], opts: ApplyOptions, printer: &Printer) -> Result<ExitStatus> {
    Ok(each_stack(stacks, printer, |stack| apply_one(engine, stack, opts, printer)))
}

fn report(plan: &Plan, outcome: Outcome, revision: Option<u64>, error: Option<String>, held_back: &[String]) -> Value {
    let mut v = to_value(plan);
    v["command"] = json!("apply");
    v["outcome"] = to_value(&outcome);
    v["revision"] = json!(revision);
    v["error"] = json!(error);
    v["held_back"] = json!(held_back);
    v
}

fn apply_one(
    engine: &dyn Engine,
    stack: &StackSettings,
    opts: ApplyOptions,
    printer: &Printer,
) -> Result<(ExitStatus, Value)> {
    let state = StateDir::open(&stack.state_dir)?;
    let _lock = state.lock(&stack.name)?;
    let checked = pipeline::check(engine, stack)?;
    printer.human(super::check::summary(&checked.plan, &checked.file_diff, printer));
    let registry_failed = checked.plan.registry_errors().next().is_some();

    let (plan, held_back) = if opts.auto {
        classify::unattended(&checked.plan, stack.policy, opts.accept_data_risk)
    } else {
        (checked.plan.clone(), Vec::new())
    };
    let moves_commit = plan.commit.is_some() && plan.commit != plan.deployed_commit;
    let quiet_status = if registry_failed {
        ExitStatus::Failed
    } else if !held_back.is_empty() {
        ExitStatus::Skipped
    } else {
        ExitStatus::Success
    };
    if plan.changes.is_empty() && !moves_commit {
        for reason in &held_back {
            printer.human(format!("not applied: {reason}\n"));
        }
        return Ok((quiet_status, report(&plan, Outcome::UpToDate, None, None, &held_back)));
    }
    if !opts.auto
        && let Some(declined) = confirm(&plan, stack, opts, printer)?
    {
        printer.human(format!("nothing applied: {declined}\n"));
        return Ok((ExitStatus::Skipped, report(&plan, Outcome::UpToDate, None, None, &[declined])));
    }

    let id = state.next_revision_id()?;
    let backups = backup::backups_for(&plan, &checked.observation, id);
    let revision = Revision {
        id,
        trigger: if opts.auto { Trigger::Auto } else { Trigger::Manual },
        started: now(),
        finished: None,
        plan: plan.clone(),
        services: backups.clone(),
        outcome: None,
        error: None,
    };
    state.begin(&revision).context("journaling the revision before acting")?;
    for b in &backups {
        printer.detail(format!("keeping the image {} runs now as {}", b.service, b.backup_tag));
    }
    let compose = ComposeCli::new(stack);
    let files = checked.git.as_ref().filter(|_| moves_commit).map(|g| g as &dyn Files);
    let execution = match backup::keep_images(engine, &backups) {
        Ok(()) => Executor { engine, compose: &compose, printer, health: stack.health }.execute(&plan, &backups, files),
        Err(e) => Execution {
            outcome: Outcome::Failed,
            error: Some(format!("keeping the current images for rollback: {e:#}; nothing was changed")),
            after: Vec::new(),
        },
    };

    let (mut status, line) = match execution.outcome {
        Outcome::Applied | Outcome::UpToDate => (quiet_status, "applied"),
        Outcome::RolledBack => (ExitStatus::Failed, "failed and rolled back"),
        Outcome::Failed => (ExitStatus::Failed, "failed"),
        Outcome::RollbackFailed => (ExitStatus::RollbackFailed, "failed, and the rollback failed: a human is needed"),
    };
    // The outcome stands even if the journal cannot record it: a failed
    // rollback must still exit 3.
    if let Err(e) = state.end(id, execution.outcome, execution.error.clone(), execution.after.clone()) {
        eprintln!("error: stack {}: journaling the end of revision {id}: {e:#}", stack.name);
        status = status.worst(ExitStatus::Failed);
    }
    printer.human(format!("revision {id}: {line}\n"));
    for reason in &held_back {
        printer.human(format!("not applied: {reason}\n"));
    }
    if let Some(e) = &execution.error {
        eprintln!("error: stack {}: {e}", stack.name);
    }
    Ok((status, report(&plan, execution.outcome, Some(id), execution.error, &held_back)))
}

/// Asks the operator when they must be asked. None: go ahead; Some: why not.
fn confirm(plan: &Plan, stack: &StackSettings, opts: ApplyOptions, printer: &Printer) -> Result<Option<String>> {
    let risky = !plan.data_risks.is_empty() && !opts.accept_data_risk;
    if !risky && opts.yes {
        return Ok(None);
    }
    if !printer.can_ask() {
        if risky {
            return Ok(Some(
                "this plan puts data at risk; confirm on a terminal or pass --accept-data-risk".to_string(),
            ));
        }
        return Err(usage(
            "apply asks for confirmation, and there is no terminal to ask on: pass --yes to apply anyway, \
             or --auto for unattended runs",
        ));
    }
    let question = if risky {
        format!("This puts data at risk ({}). Apply anyway?", plan.data_risks.join("; "))
    } else {
        format!("Apply {} to stack {}?", plural(plan.changes.len(), "change", "changes"), stack.name)
    };
    Ok((!printer.confirm(&question)?).then(|| "declined".to_string()))
}
