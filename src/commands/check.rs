//! `clusterup check`: what would change, changing nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;

use super::apply::ApplyOptions;
use super::{each_stack_at_once, plan_table, plural};
use crate::cli::CheckArgs;
use crate::exit::ExitStatus;
use crate::labels::ServicePolicy;
use crate::ops;
use crate::output::Printer;
use crate::plan::classify::{ChangeKind, Plan, PlanKind};
use crate::reference::short;
use crate::report::{CommandName, PlanReport, Report};
use crate::seams::Seams;
use crate::settings::StackSettings;

pub fn run(seams: &Seams, stacks: &[StackSettings], args: &CheckArgs, printer: &Printer) -> Result<ExitStatus> {
    let (status, each) = each_stack_at_once(stacks, printer, |stack, printer| {
        let result = check_one(seams, stack, printer);
        super::after_run(seams, stack, CommandName::Check, &result, printer);
        result
    });
    let (pending, others): (Vec<_>, Vec<_>) =
        stacks.iter().zip(each).partition(|(_, s)| *s == ExitStatus::UpdatesPending);
    if pending.is_empty() || args.only || !printer.can_ask() {
        return Ok(status);
    }
    if !printer.confirm("Apply these changes now?")? {
        return Ok(status);
    }
    let pending: Vec<StackSettings> = pending.into_iter().map(|(stack, _)| stack.clone()).collect();
    let applied = super::apply::run(seams, &pending, ApplyOptions { yes: true, ..Default::default() }, printer)?;
    Ok(others.into_iter().fold(applied, |worst, (_, s)| worst.worst(s)))
}

fn check_one(seams: &Seams, stack: &StackSettings, printer: &Printer) -> Result<(ExitStatus, Report)> {
    let checked = ops::check(seams, stack)?;
    let plan = &checked.plan;
    show_plan(printer, plan, &checked.file_diff);
    show_snapshots(printer, plan, &checked.policies);
    let status = if plan.registry_errors().next().is_some() {
        ExitStatus::Failed
    } else if plan.changes.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::UpdatesPending
    };
    let report =
        PlanReport { command: CommandName::Check, plan: checked.plan, file_diff: Some(checked.file_diff), run: None };
    Ok((status, Report::Plan(Box::new(report))))
}

/// Which services' volumes an apply copies first.
pub fn show_snapshots(printer: &Printer, plan: &Plan, policies: &BTreeMap<String, ServicePolicy>) {
    let services: Vec<&str> =
        crate::apply::volumes::opted_in(plan, policies).map(|(c, _)| c.service.as_str()).collect();
    if !services.is_empty() {
        printer.human(format!("volume snapshots first (backup_volumes): {}\n", services.join(", ")));
    }
}

/// The plan for people, then the file diff.
pub fn show_plan(printer: &Printer, plan: &Plan, file_diff: &str) {
    printer.human(summary(plan));
    printer.diff(file_diff);
}

/// Heading, service table, the changes in order, what is at risk or needs
/// approval.
fn summary(plan: &Plan) -> String {
    let errors = plan.registry_errors().count();
    let mut out = format!("stack {} (project {}): ", plan.stack, plan.project);
    out.push_str(&match (plan.changes.len(), plan.kind) {
        (0, _) => "up to date".to_string(),
        (n, PlanKind::Image) => plural(n, "update available", "updates available"),
        (n, kind) => format!("{} ({})", plural(n, "change", "changes"), super::to_value(&kind).as_str().unwrap_or("")),
    });
    if errors > 0 {
        let _ = write!(out, ", {}", plural(errors, "registry error", "registry errors"));
    }
    if let (Some(new), deployed) = (&plan.commit, &plan.deployed_commit)
        && Some(new) != deployed.as_ref()
    {
        let _ = write!(out, "; commit {} -> {}", deployed.as_deref().map_or("(none deployed)", short), short(new));
    }
    out.push('\n');
    out.push_str(&plan_table(plan));
    if plan.changes.iter().any(|c| c.kind != ChangeKind::Image || !c.reasons.is_empty()) {
        out.push_str("changes, in order:\n");
        for c in &plan.changes {
            let what = super::to_value(&c.kind);
            let why = if c.reasons.is_empty() { String::new() } else { format!(": {}", c.reasons.join("; ")) };
            let _ = writeln!(out, "  {:<8} {}{why}", what.as_str().unwrap_or(""), c.service);
        }
    }
    for c in &plan.changes {
        if let Some(info) = &c.new_image {
            let _ = writeln!(out, "new image for {}: {}", c.service, info.describe());
        }
        if let Some(waiting) = &c.waiting {
            let _ = writeln!(out, "waiting: {}", waiting.describe(&c.service));
        }
    }
    for update in &plan.tag_updates {
        let _ = writeln!(out, "{}", update.describe());
    }
    for line in plan.commits.iter().flat_map(|log| log.lines()) {
        let _ = writeln!(out, "{line}");
    }
    for risk in &plan.data_risks {
        let _ = writeln!(out, "data at risk: {risk}");
    }
    for reason in &plan.needs_approval {
        let _ = writeln!(out, "needs approval for --auto: {reason}");
    }
    out
}
