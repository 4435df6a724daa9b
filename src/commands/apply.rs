//! `clusterup apply`: check, then back up, pull, recreate and health-check,
//! rolling back what fails. Every revision is journaled before it acts.

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::{each_stack, plural, to_value};
use crate::cli::ApplyArgs;
use crate::exit::{ExitStatus, usage};
use crate::output::Printer;
use crate::pipeline::execute::Executor;
use crate::pipeline::{self, Outcome, backup};
use crate::seams::compose::ComposeCli;
use crate::seams::engine::Engine;
use crate::settings::StackSettings;
use crate::state::{Revision, StateDir, Trigger, now};

pub fn run(
    engine: &dyn Engine,
    stacks: &[StackSettings],
    args: &ApplyArgs,
    printer: &Printer,
) -> Result<ExitStatus> {
    Ok(each_stack(stacks, printer, |stack| {
        apply_one(engine, stack, args, printer)
    }))
}

fn apply_one(
    engine: &dyn Engine,
    stack: &StackSettings,
    args: &ApplyArgs,
    printer: &Printer,
) -> Result<(ExitStatus, Value)> {
    let state = StateDir::open(&stack.state_dir)?;
    let _lock = state.lock(&stack.name)?;
    let compose = ComposeCli::new(stack);
    let checked = pipeline::check(engine, &compose, stack)?;
    let plan = &checked.plan;
    printer.human(super::check::summary(plan));
    let registry_failed = plan.registry_errors().next().is_some();
    let report = |outcome: Outcome, revision: Option<u64>, error: Option<String>| {
        let mut v = to_value(plan);
        v["command"] = json!("apply");
        v["outcome"] = to_value(&outcome);
        v["revision"] = json!(revision);
        v["error"] = json!(error);
        v
    };
    if plan.changes.is_empty() {
        let status = if registry_failed {
            ExitStatus::Failed
        } else {
            ExitStatus::Success
        };
        return Ok((status, report(Outcome::UpToDate, None, None)));
    }
    if !(args.auto || args.yes) {
        if !printer.can_ask() {
            return Err(usage(
                "apply asks for confirmation, and stdin is not a terminal: pass --yes to apply anyway, \
                 or --auto for unattended runs",
            ));
        }
        let question = format!(
            "Apply {} to stack {}?",
            plural(plan.changes.len(), "update", "updates"),
            stack.name
        );
        if !printer.confirm(&question)? {
            printer.human("nothing applied\n");
            return Ok((
                ExitStatus::Skipped,
                report(Outcome::UpToDate, None, Some("declined".into())),
            ));
        }
    }

    let id = state.next_revision_id()?;
    let backups = backup::backups_for(plan, &checked.observation, id);
    let revision = Revision {
        id,
        trigger: if args.auto {
            Trigger::Auto
        } else {
            Trigger::Manual
        },
        started: now(),
        finished: None,
        plan: plan.clone(),
        services: backups.clone(),
        outcome: None,
        error: None,
    };
    state
        .begin(&revision)
        .context("journaling the revision before acting")?;
    for b in &backups {
        printer.detail(format!(
            "keeping the image {} runs now as {}",
            b.service, b.backup_tag
        ));
    }
    let execution = match backup::keep_images(engine, &backups) {
        Ok(()) => Executor {
            engine,
            compose: &compose,
            printer,
            health: stack.health,
        }
        .execute(plan, &backups),
        Err(e) => pipeline::execute::Execution {
            outcome: Outcome::Failed,
            error: Some(format!(
                "keeping the current images for rollback: {e:#}; nothing was changed"
            )),
            after: Vec::new(),
        },
    };
    state
        .end(
            id,
            execution.outcome,
            execution.error.clone(),
            execution.after.clone(),
        )
        .context("journaling the end of the revision")?;

    let (status, line) = match execution.outcome {
        Outcome::Applied if registry_failed => (
            ExitStatus::Failed,
            "applied, but some registries could not be checked",
        ),
        Outcome::Applied | Outcome::UpToDate => (ExitStatus::Success, "applied"),
        Outcome::RolledBack => (ExitStatus::Failed, "failed and rolled back"),
        Outcome::Failed => (ExitStatus::Failed, "failed"),
        Outcome::RollbackFailed => (
            ExitStatus::RollbackFailed,
            "failed, and the rollback failed: a human is needed",
        ),
    };
    printer.human(format!("revision {id}: {line}\n"));
    if let Some(e) = &execution.error {
        eprintln!("error: stack {}: {e}", stack.name);
    }
    Ok((status, report(execution.outcome, Some(id), execution.error)))
}
