//! `clusterup check`: what would change, changing nothing.

use anyhow::Result;
use serde_json::{Value, json};

use super::{each_stack, plan_table, plural, to_value};
use crate::cli::{ApplyArgs, CheckArgs};
use crate::exit::ExitStatus;
use crate::output::Printer;
use crate::pipeline::{self, classify::Plan};
use crate::seams::compose::ComposeCli;
use crate::seams::engine::Engine;
use crate::settings::StackSettings;

pub fn run(
    engine: &dyn Engine,
    stacks: &[StackSettings],
    args: &CheckArgs,
    printer: &Printer,
) -> Result<ExitStatus> {
    let mut pending: Vec<StackSettings> = Vec::new();
    let status = each_stack(stacks, printer, |stack| {
        let (status, report) = check_one(engine, stack, printer)?;
        if status == ExitStatus::UpdatesPending {
            pending.push(stack.clone());
        }
        Ok((status, report))
    });
    if pending.is_empty() || args.only || !printer.can_ask() {
        return Ok(status);
    }
    if !printer.confirm("Apply these updates now?")? {
        return Ok(status);
    }
    super::apply::run(
        engine,
        &pending,
        &ApplyArgs {
            auto: false,
            yes: true,
        },
        printer,
    )
}

fn check_one(
    engine: &dyn Engine,
    stack: &StackSettings,
    printer: &Printer,
) -> Result<(ExitStatus, Value)> {
    let checked = pipeline::check(engine, &ComposeCli::new(stack), stack)?;
    let plan = &checked.plan;
    printer.human(summary(plan));
    let status = if plan.registry_errors().next().is_some() {
        ExitStatus::Failed
    } else if plan.changes.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::UpdatesPending
    };
    let mut report = to_value(plan);
    report["command"] = json!("check");
    Ok((status, report))
}

/// Heading, table, and a line on what to do next.
pub fn summary(plan: &Plan) -> String {
    let errors = plan.registry_errors().count();
    let mut heading = format!("stack {} (project {}): ", plan.stack, plan.project);
    heading.push_str(&match plan.changes.len() {
        0 => "up to date".to_string(),
        n => plural(n, "update available", "updates available"),
    });
    if errors > 0 {
        heading.push_str(&format!(
            ", {}",
            plural(errors, "registry error", "registry errors")
        ));
    }
    format!("{heading}\n{}", plan_table(plan))
}
