//! `clusterup apply`: recover an interrupted run, check, then back up,
//! pull, switch files, recreate and health-check, rolling back what fails.
//! Unattended runs respect pauses, update windows, the approval policy and
//! rejected targets.

use anyhow::Result;

use super::{each_stack, plural};
use crate::apply::handover;
use crate::apply::revision::Session;
use crate::cli::ApplyArgs;
use crate::exit::{ExitStatus, usage};
use crate::labels::ServicePolicy;
use crate::ops;
use crate::output::Printer;
use crate::plan::classify::{self, Change, Plan};
use crate::reference::short;
use crate::report::{CommandName, Held, PlanReport, RecoveredReport, Report, RunResult, SkippedOutcome, SkippedReport};
use crate::seams::Seams;
use crate::settings::{Bump, StackSettings};
use crate::state::Outcome;
use crate::state::{Journal, Pause, Trigger};

/// What the operator allowed, independent of how it was asked.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    pub auto: bool,
    pub yes: bool,
    pub accept_data_risk: bool,
    pub retry: bool,
    pub ignore_min_age: bool,
    pub expect_revision: Option<String>,
    /// Services to build again: None, none asked; empty, every built one.
    pub rebuild: Option<Vec<String>>,
}

impl From<&ApplyArgs> for ApplyOptions {
    fn from(a: &ApplyArgs) -> Self {
        ApplyOptions {
            auto: a.auto,
            yes: a.yes,
            accept_data_risk: a.accept_data_risk,
            retry: a.retry,
            ignore_min_age: a.ignore_min_age,
            expect_revision: a.expect_revision.clone(),
            rebuild: a.rebuild.then(|| a.services.clone()),
        }
    }
}

pub fn run(seams: &Seams, stacks: &[StackSettings], opts: ApplyOptions, printer: &Printer) -> Result<ExitStatus> {
    Ok(each_stack(stacks, printer, |stack| {
        let mut handover = None;
        let result = apply_one(seams, stack, &opts, printer, &mut handover);
        super::after_run(seams, stack, CommandName::Apply, &result, printer);
        if let (Some(handover), Ok((status, _))) = (handover, &result)
            && !matches!(status, ExitStatus::Failed | ExitStatus::RollbackFailed)
        {
            hand_over(stack, &handover, printer);
        }
        result
    }))
}

/// What is left for a helper container: the one clusterup runs in, and the
/// arguments the helper runs `clusterup` with.
struct Handover {
    container: String,
    args: Vec<String>,
}

/// Once the stack's lock is free: a helper container updates the service
/// this clusterup runs in (see `apply::handover`).
fn hand_over(stack: &StackSettings, handover: &Handover, printer: &Printer) {
    match handover::launch(&handover.container, &handover.args, stack.timeouts.engine) {
        Ok(helper) => printer.step(format!(
            "stack {}: helper container {} updates this clusterup's own service",
            stack.name,
            short(&helper)
        )),
        Err(e) => {
            printer.warn(format!("stack {}: starting the helper for this clusterup's own service: {e:#}", stack.name))
        }
    }
}

pub fn report(
    command: CommandName,
    plan: &Plan,
    outcome: Outcome,
    revision: Option<u64>,
    error: Option<String>,
    held_back: &[String],
    held: Option<Held>,
) -> Report {
    let run = RunResult { outcome, revision, error, held_back: held_back.to_vec(), skipped: None, held };
    Report::Plan(Box::new(PlanReport { command, plan: plan.clone(), file_diff: None, run: Some(run) }))
}

/// Exit status and report for a run that did nothing on purpose.
fn skipped(stack: &StackSettings, why: String, printer: &Printer) -> (ExitStatus, Report) {
    printer.human(format!("stack {}: not applied: {why}\n", stack.name));
    let report = SkippedReport {
        command: CommandName::Apply,
        stack: stack.name.clone(),
        outcome: SkippedOutcome::Skipped,
        revision: None,
        held_back: vec![why],
    };
    (ExitStatus::Skipped, Report::Skipped(report))
}

/// `handover`: set when this clusterup runs in one of the stack's
/// containers and that service has a change.
fn apply_one(
    seams: &Seams,
    stack: &StackSettings,
    opts: &ApplyOptions,
    printer: &Printer,
    handover: &mut Option<Handover>,
) -> Result<(ExitStatus, Report)> {
    let session = Session::open(seams, stack)?;
    let (state, ctx) = (&session.state, session.ctx(seams, stack, printer));
    if let Some((id, outcome)) = ctx.recover()?
        && outcome == Outcome::RollbackFailed
    {
        let report = RecoveredReport { command: CommandName::Apply, stack: stack.name.clone(), outcome, revision: id };
        return Ok((ExitStatus::RollbackFailed, Report::Recovered(report)));
    }
    let pause = state.active_pause(seams.clock.now()?)?;
    if opts.auto {
        if let Some(p) = &pause {
            return Ok(skipped(stack, p.describe(), printer));
        }
        if let Err(next) = crate::window::check(&stack.windows, seams.clock.now()?) {
            let when = next.map_or_else(|| "never".to_string(), |z| z.to_string());
            let windows: Vec<String> = stack.windows.iter().map(ToString::to_string).collect();
            return Ok(skipped(
                stack,
                format!("outside the update window ({}); the next opens {when}", windows.join(", ")),
                printer,
            ));
        }
    }

    let goal = match &opts.expect_revision {
        Some(commit) => ops::Goal::Commit(commit),
        None => ops::Goal::Latest,
    };
    let mut checked = ops::plan(seams, stack, goal)?;
    let work = !checked.plan.changes.is_empty() || checked.plan.moves_commit() || opts.rebuild.is_some();
    if checked.cached_model && work {
        // Work to do: the plan carried out is made from what Compose says.
        checked = ops::plan_fresh(seams, stack, goal)?;
    }
    if let Some(asked) = &opts.rebuild {
        classify::ask_rebuild(&mut checked.plan, asked, &checked.built, &checked.observation)
            .map_err(|e| usage(format!("stack {}: {e}", stack.name)))?;
    }
    super::check::show_plan(printer, &checked.plan, &checked.file_diff);
    super::check::show_snapshots(printer, &checked.plan, &checked.policies);
    if let (Some(prs), Some(source), Some(git)) = (&stack.pull_requests, &stack.git, &checked.git)
        && !checked.plan.tag_updates.is_empty()
    {
        let plan = &checked.plan;
        match ops::pull_requests::propose(stack, source, prs, git.repo.as_ref(), git.new, plan, stack.timeouts.notify) {
            Ok(done) => done.iter().for_each(|line| printer.human(format!("{line}\n"))),
            Err(e) => printer.warn(format!("stack {}: proposing new tags: {e:#}", stack.name)),
        }
    }
    let registry_failed = checked.plan.registry_errors().next().is_some();
    let journal = state.journal()?;
    let (plan, held_back) = if opts.auto {
        let (mut plan, mut held) = classify::unattended(&checked.plan, stack.policy, opts.accept_data_risk);
        if !opts.retry {
            let rejected;
            (plan, rejected) = hold_back_rejected(plan, &journal);
            held.extend(rejected);
        }
        if !opts.ignore_min_age {
            held.extend(too_young(&plan));
            plan.changes.retain(|c| c.waiting.is_none());
        }
        held.extend(hold_back_outside_windows(&mut plan, &checked.policies, seams.clock.now()?));
        held.extend(hold_back_tag_moves(&mut plan, &checked.plan));
        plan.kind = classify::kind_of(&plan.changes);
        (plan, held)
    } else {
        (checked.plan.clone(), Vec::new())
    };
    let quiet_status = if registry_failed {
        ExitStatus::Failed
    } else if !held_back.is_empty() {
        ExitStatus::Skipped
    } else {
        ExitStatus::Success
    };
    let (mut plan, mut held_back) = (plan, held_back);
    if let Some(container) = handover::own_container()
        && let Some(own) = handover::own_service(&checked.observation, &container)
        && handover::set_aside(&mut plan, &own)
    {
        held_back.push(format!("{own} runs this clusterup: a helper container updates it once this run has ended"));
        *handover = Some(Handover { container, args: helper_args(stack, opts, &plan) });
    }
    let held = Held::between(&checked.plan, &plan);
    let moves_commit = plan.moves_commit();
    if plan.changes.is_empty() && !moves_commit {
        for reason in &held_back {
            printer.human(format!("not applied: {reason}\n"));
        }
        let report = report(CommandName::Apply, &plan, Outcome::UpToDate, None, None, &held_back, held);
        return Ok((quiet_status, report));
    }
    if !opts.auto {
        let mut warnings: Vec<String> = pause.iter().map(Pause::describe).collect();
        if !opts.retry {
            warnings.extend(rejected_parts(&plan, &journal));
        }
        if !opts.ignore_min_age {
            warnings.extend(too_young(&plan));
        }
        if let Some(declined) = confirm(&plan, stack, opts, &warnings, printer)? {
            printer.human(format!("nothing applied: {declined}\n"));
            return Ok((
                ExitStatus::Skipped,
                report(CommandName::Apply, &plan, Outcome::UpToDate, None, None, &[declined], None),
            ));
        }
    }

    let snapshots = match ctx.snapshots_for(&plan, &checked.observation, &checked.policies)? {
        Ok(s) => s,
        Err(no_room) => {
            printer.human(format!("not applied: {no_room}\n"));
            held_back.push(no_room);
            let report = report(CommandName::Apply, &plan, Outcome::UpToDate, None, None, &held_back, held);
            return Ok((ExitStatus::Skipped, report));
        }
    };
    let files = checked.files_for(&plan);
    let trigger = if opts.auto { Trigger::Auto } else { Trigger::Manual };
    let (id, execution) =
        ctx.run_revision(&plan, &checked.observation, &checked.policies, files, trigger, (&snapshots, None))?;
    let status = match execution.outcome {
        Outcome::Applied | Outcome::UpToDate => quiet_status,
        Outcome::RolledBack | Outcome::Failed => ExitStatus::Failed,
        Outcome::RollbackFailed => ExitStatus::RollbackFailed,
    };
    printer.human(format!("revision {id}: {}\n", execution.outcome.describe()));
    for reason in &held_back {
        printer.human(format!("not applied: {reason}\n"));
    }
    if let Some(e) = &execution.error {
        printer.error(format!("stack {}", stack.name), e);
    }
    let run = RunResult {
        outcome: execution.outcome,
        revision: Some(id),
        error: execution.error,
        held_back,
        skipped: Some(execution.skipped),
        held,
    };
    let report = PlanReport { command: CommandName::Apply, plan, file_diff: None, run: Some(run) };
    Ok((status, Report::Plan(Box::new(report))))
}

/// The same apply, for the helper: pinned to the commit this run deploys.
fn helper_args(stack: &StackSettings, opts: &ApplyOptions, plan: &Plan) -> Vec<String> {
    let mut args = vec![format!("--stack={}", stack.name), "apply".to_string()];
    args.push(if opts.auto { "--auto" } else { "--yes" }.to_string());
    args.extend(opts.accept_data_risk.then(|| "--accept-data-risk".to_string()));
    args.extend(opts.retry.then(|| "--retry".to_string()));
    args.extend(opts.ignore_min_age.then(|| "--ignore-min-age".to_string()));
    args.extend(plan.commit.as_ref().map(|c| format!("--expect-revision={c}")));
    args
}

/// The parts of `plan` an earlier failure or rollback rejected.
fn rejected_parts(plan: &Plan, journal: &Journal) -> Vec<String> {
    let mut out = Vec::new();
    if plan.moves_commit()
        && let Some(commit) = plan.commit.as_deref()
        && let Some(r) = journal.rejected_commit(commit)
    {
        out.push(format!("commit {} was rejected ({})", short(commit), r.reason));
    }
    for c in plan.changes.iter().filter(|c| c.is_digest_update()) {
        if let Some(r) = c.to.as_deref().and_then(|d| journal.rejected_digest(&c.service, d)) {
            out.push(format!("{}'s image {} was rejected ({})", c.service, c.to.as_deref().unwrap_or(""), r.reason));
        }
    }
    out
}

/// Unattended runs never apply a rejected target again: it stays held
/// back until something newer appears or an operator passes --retry.
fn hold_back_rejected(mut plan: Plan, journal: &Journal) -> (Plan, Vec<String>) {
    let mut held: Vec<String> = rejected_parts(&plan, journal)
        .into_iter()
        .map(|r| format!("{r}; `clusterup apply --retry` tries it again"))
        .collect();
    let commit_rejected =
        plan.moves_commit() && plan.commit.as_deref().is_some_and(|c| journal.rejected_commit(c).is_some());
    if commit_rejected {
        plan.keep_deployed_files();
    }
    plan.changes.retain(|c| {
        !(c.is_digest_update() && c.to.as_deref().is_some_and(|d| journal.rejected_digest(&c.service, d).is_some()))
    });
    plan.kind = classify::kind_of(&plan.changes);
    held.dedup();
    (plan, held)
}

/// The new images younger than their service's `min_age`, said.
fn too_young(plan: &Plan) -> Vec<String> {
    plan.changes.iter().filter_map(|c| Some(c.waiting.as_ref()?.describe(&c.service))).collect()
}

/// A service with windows of its own (a database only on Sunday night)
/// is changed by unattended runs only inside them. A held change that
/// needs the new files holds back every change that does.
fn hold_back_outside_windows(
    plan: &mut Plan,
    policies: &std::collections::BTreeMap<String, ServicePolicy>,
    now: jiff::Timestamp,
) -> Vec<String> {
    let mut held = Vec::new();
    let mut files_held = false;
    plan.changes.retain(|c| {
        let windows = policies.get(&c.service).map_or(&[][..], |p| p.windows.as_slice());
        match crate::window::check(windows, now) {
            Ok(()) => true,
            Err(next) => {
                let when = next.map_or_else(|| "never".to_string(), |z| z.to_string());
                let list: Vec<String> = windows.iter().map(ToString::to_string).collect();
                held.push(format!(
                    "{}: outside its update window ({}); the next opens {when}",
                    c.service,
                    list.join(", ")
                ));
                files_held |= c.needs_files();
                false
            }
        }
    });
    if files_held {
        if plan.changes.iter().any(Change::needs_files) {
            held.push("the changes that need the new files wait with it".to_string());
        }
        plan.keep_deployed_files();
    }
    held
}

/// A new major version waits for a person; and the tag moves of one
/// stack go together or not at all (they are one edit of its files).
fn hold_back_tag_moves(plan: &mut Plan, found: &Plan) -> Vec<String> {
    let mut held: Vec<String> = plan
        .changes
        .iter()
        .filter_map(|c| c.tag_update.as_ref().filter(|t| t.bump == Bump::Major))
        .map(|t| format!("{} needs approval (a new major version)", t.describe()))
        .collect();
    let moves = |p: &Plan| p.changes.iter().filter(|c| c.tag_update.is_some()).count();
    if moves(plan) > 0 && (!held.is_empty() || moves(plan) < moves(found)) {
        held.extend(
            plan.changes
                .iter()
                .filter_map(|c| c.tag_update.as_ref().filter(|t| t.bump != Bump::Major))
                .map(|t| format!("{} waits: the stack's tag moves are applied together", t.describe())),
        );
        plan.changes.retain(|c| c.tag_update.is_none());
    }
    held
}

/// Asks the operator when they must be asked. None: go ahead; Some: why not.
fn confirm(
    plan: &Plan,
    stack: &StackSettings,
    opts: &ApplyOptions,
    warnings: &[String],
    printer: &Printer,
) -> Result<Option<String>> {
    let risky = !plan.data_risks.is_empty() && !opts.accept_data_risk;
    for w in warnings {
        printer.human(format!("note: {w}\n"));
    }
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
    let mut question = if risky {
        format!("This puts data at risk ({}). Apply anyway?", plan.data_risks.join("; "))
    } else {
        format!("Apply {} to stack {}?", plural(plan.changes.len(), "change", "changes"), stack.name)
    };
    if !warnings.is_empty() {
        question = format!("{} — {question}", warnings.join("; "));
    }
    Ok((!printer.confirm(&question)?).then(|| "declined".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::classify::{Change, ChangeKind, PlanKind};
    use crate::state::Rejection;

    fn change(service: &str, kind: ChangeKind, to: &str) -> Change {
        Change {
            to: Some(to.into()),
            pull: kind == ChangeKind::Image,
            ..Change::new(service, kind, Some(format!("r/{service}:1")))
        }
    }

    fn rejection(commit: Option<&str>, digests: &[(&str, &str)]) -> Rejection {
        Rejection {
            revision: 1,
            time: "2026-11-27T10:00:00Z".parse().unwrap(),
            commit: commit.map(String::from),
            digests: digests.iter().map(|(s, d)| (s.to_string(), d.to_string())).collect(),
            reason: "revision 1: it failed and was rolled back".into(),
        }
    }

    /// A plan moving the commit to `new`: web's new digest, api recreated
    /// by the commit, worker's tag changed by it.
    fn plan() -> Plan {
        let mut plan = Plan::empty("s");
        plan.commit = Some("new".into());
        plan.deployed_commit = Some("old".into());
        plan.changes = vec![
            change("web", ChangeKind::Image, "sha256:bad"),
            change("api", ChangeKind::Recreate, "r/api:1"),
            change("worker", ChangeKind::Image, "r/worker:2"),
        ];
        plan.kind = PlanKind::Mixed;
        plan
    }

    #[test]
    fn a_rejected_commit_holds_back_everything_it_brings() {
        let journal = Journal { revisions: vec![], rejections: vec![rejection(Some("new"), &[])] };
        let (held, why) = hold_back_rejected(plan(), &journal);
        let left: Vec<&str> = held.changes.iter().map(|c| c.service.as_str()).collect();
        assert_eq!(left, ["web"], "the registry's digest is not the commit's to hold back");
        assert_eq!(held.commit.as_deref(), Some("old"), "the deployed files stay");
        assert_eq!(held.kind, PlanKind::Image);
        assert_eq!(why.len(), 1);
        assert!(why[0].contains("commit new") && why[0].contains("--retry"), "{why:?}");
    }

    #[test]
    fn a_rejected_digest_is_held_back_until_a_newer_one_appears() {
        let journal = Journal { revisions: vec![], rejections: vec![rejection(None, &[("web", "sha256:bad")])] };
        let (held, why) = hold_back_rejected(plan(), &journal);
        let left: Vec<&str> = held.changes.iter().map(|c| c.service.as_str()).collect();
        assert_eq!(left, ["api", "worker"]);
        assert_eq!(held.commit.as_deref(), Some("new"));
        assert!(why[0].contains("web's image sha256:bad was rejected"), "{why:?}");

        let mut newer = plan();
        newer.changes[0].to = Some("sha256:newer".into());
        let (held, why) = hold_back_rejected(newer, &journal);
        assert_eq!(held.changes.len(), 3, "a newer digest is tried");
        assert!(why.is_empty());
        assert!(rejected_parts(&plan(), &Journal::default()).is_empty());
    }
}
