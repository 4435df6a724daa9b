//! One file per subcommand. Each turns its arguments into calls on the
//! pipeline and prints the result; none of them sees another's arguments.

pub mod apply;
pub mod check;
pub mod pause;
pub mod rollback;
pub mod serve;
pub mod status;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use crate::cli::{Cli, Command};
use crate::clock::{Clock, SystemClock};
use crate::exit::{ExitStatus, status_of};
use crate::output::Printer;
use crate::plan::classify::{Plan, PlanKind, ServiceReport, ServiceState};
use crate::reference::short;
use crate::report::{CommandName, Ended, ErrorReport, Report};
use crate::seams::engine::DockerEngine;
use crate::seams::{Seams, System};
use crate::settings::{self, StackSettings};
use crate::signals::ProcessSignals;
use crate::state::Outcome;

pub fn run(cli: Cli, printer: &Printer) -> Result<ExitStatus> {
    let cwd = std::env::current_dir()?;
    let stacks = settings::resolve(&settings::Sources {
        config: cli.global.config.as_deref(),
        state_dir: cli.global.state_dir.as_deref(),
        stack: cli.global.stack.as_deref(),
        cwd: &cwd,
    })?;
    if let Some(root) = stacks.first().and_then(|s| s.state_dir.parent()) {
        crate::redact::init_fingerprint_key(root);
    }
    // Known from the start, whether or not a remote ever asks for it.
    if let Ok(token) = std::env::var("CLUSTERUP_GIT_TOKEN") {
        crate::redact::Secret::new(token);
    }
    let metrics = cli.global.metrics_file.clone().or_else(|| stacks.first().and_then(|s| s.metrics_file.clone()));
    let clock = SystemClock;
    let status = dispatch(cli, &stacks, &clock, printer);
    if let Some(path) = metrics
        && let Err(e) = crate::metrics::write(&path, &stacks, &clock)
    {
        printer.warn(format!("writing metrics to {}: {e:#}", path.display()));
    }
    status
}

fn dispatch(cli: Cli, stacks: &[StackSettings], clock: &dyn Clock, printer: &Printer) -> Result<ExitStatus> {
    // Pausing must work while the engine is down, in an incident.
    let timeouts = stacks.first().map(|s| s.timeouts).unwrap_or_default();
    let engine = || DockerEngine::connect(timeouts.engine, timeouts.registry, timeouts.credential_helper);
    let with_seams = |run: &dyn Fn(&Seams) -> Result<ExitStatus>| {
        let engine = engine()?;
        run(&Seams { engine: &engine, open: &System, clock, signals: &ProcessSignals })
    };
    let global = &cli.global;
    match cli.command {
        Command::Check(args) => with_seams(&|seams| check::run(seams, stacks, &args, printer)),
        Command::Apply(args) => with_seams(&|seams| apply::run(seams, stacks, (&args).into(), printer)),
        Command::Rollback(args) => with_seams(&|seams| rollback::run(seams, stacks, &args, printer)),
        Command::Pause(args) => pause::pause(clock, stacks, &args, printer),
        Command::Resume => pause::resume(stacks, printer),
        Command::Status(args) => with_seams(&|seams| status::run(seams, stacks, &args, printer)),
        Command::Serve(args) => serve::run(stacks, global, &args, printer),
    }
}

/// How many stacks `each_stack_at_once` checks at the same time: their
/// registry lookups share each registry's cap, their Compose runs the
/// machine's cores.
const STACKS_AT_ONCE: usize = 8;

/// Runs `one` for every stack, so one broken stack does not hide the
/// others; the exit status is the one that most needs attention. With
/// --json, one document: the stack's report, or `{"stacks": [...]}` when
/// there are several.
pub fn each_stack(
    stacks: &[StackSettings],
    printer: &Printer,
    mut one: impl FnMut(&StackSettings) -> Result<(ExitStatus, Report)>,
) -> ExitStatus {
    let mut ran = Ran::default();
    for stack in stacks {
        ran.add(stack, one(stack), printer);
    }
    ran.finish(printer).0
}

/// `each_stack` for work that changes nothing: several stacks at a time,
/// each printing through a printer of its own, replayed in configuration
/// order. Also gives each stack's exit status, in that order.
pub fn each_stack_at_once(
    stacks: &[StackSettings],
    printer: &Printer,
    one: impl Fn(&StackSettings, &Printer) -> Result<(ExitStatus, Report)> + Sync,
) -> (ExitStatus, Vec<ExitStatus>) {
    let mut ran = Ran::default();
    let mut early = BTreeMap::new();
    let work = |stack: &StackSettings| {
        let own = printer.keeping();
        let result = one(stack, &own);
        (own, result)
    };
    crate::at_once::for_each(stacks, STACKS_AT_ONCE, work, |i, finished| {
        early.insert(i, finished);
        while let Some((own, result)) = early.remove(&ran.each.len()) {
            own.replay(printer);
            ran.add(&stacks[ran.each.len()], result, printer);
        }
    });
    ran.finish(printer)
}

/// What the stacks of a run ended with, in configuration order.
#[derive(Default)]
struct Ran {
    each: Vec<ExitStatus>,
    reports: Vec<Report>,
}

impl Ran {
    fn add(&mut self, stack: &StackSettings, result: Result<(ExitStatus, Report)>, printer: &Printer) {
        match result {
            Ok((s, report)) => {
                self.each.push(s);
                self.reports.push(report);
            }
            Err(err) => {
                self.each.push(status_of(&err));
                printer.error(format!("stack {}", stack.name), &err);
                self.reports.push(error_report(stack, &err));
            }
        }
    }

    fn finish(self, printer: &Printer) -> (ExitStatus, Vec<ExitStatus>) {
        if printer.json {
            printer.json(&Report::document(&self.reports));
        }
        (self.each.iter().fold(ExitStatus::Success, |worst, s| worst.worst(*s)), self.each)
    }
}

fn error_report(stack: &StackSettings, err: &anyhow::Error) -> Report {
    let error = crate::redact::scrub(&format!("{err:#}"));
    Report::Error(ErrorReport { stack: stack.name.clone(), error, exit_code: status_of(err).code() })
}

/// After a `check`, `apply` or `rollback` of `stack`: remember how it
/// ended (for `status` and metrics) and notify. Never fails the run.
pub fn after_run(
    seams: &Seams,
    stack: &StackSettings,
    command: CommandName,
    result: &Result<(ExitStatus, Report)>,
    printer: &Printer,
) {
    let now = seams.clock.stamp();
    if command != CommandName::Rollback {
        record_run(now, stack, command, result, printer);
    }
    match result {
        Ok((status, report)) => crate::notify::send(stack, command, *status, report, now, printer),
        Err(e) => crate::notify::send(stack, command, status_of(e), &error_report(stack, e), now, printer),
    }
}

fn record_run(
    time: jiff::Timestamp,
    stack: &StackSettings,
    command: CommandName,
    result: &Result<(ExitStatus, Report)>,
    printer: &Printer,
) {
    let (exit_code, report) = match result {
        Ok((status, report)) => (status.code(), Some(report)),
        Err(e) => (status_of(e).code(), None),
    };
    // What is still to do after this run: an applied plan is done, what
    // was held back is not; a plan that failed is still pending.
    let pending = report.map_or(0, |r| {
        let applied = r.ended() == Some(Ended::Outcome(Outcome::Applied));
        r.held_back().len() + if applied { 0 } else { r.changes().len() }
    });
    let kind = report.filter(|_| pending > 0).map_or(PlanKind::None, Report::kind);
    let run = crate::state::LastRun { time, command: command.as_str().to_string(), exit_code, pending, kind };
    if let Err(e) = crate::state::StateDir::open(&stack.state_dir).and_then(|s| s.record_run(&run)) {
        printer.warn(format!("stack {}: recording the run: {e:#}", stack.name));
    }
}

pub fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).expect("plain data serializes")
}

/// The plan as a table: one row per service.
pub fn plan_table(plan: &Plan) -> String {
    let rows: Vec<[String; 5]> = plan
        .services
        .iter()
        .map(|s: &ServiceReport| {
            let state = match (&s.state, &s.detail) {
                (ServiceState::RegistryError, Some(d)) => format!("registry error: {d}"),
                (state, Some(d)) => format!("{}; {d}", state.describe()),
                (state, None) => state.describe().to_string(),
            };
            let running = s.running_digest.as_deref().map(short).unwrap_or("-");
            [
                s.service.clone(),
                s.image.clone().unwrap_or_else(|| "(build)".into()),
                match &s.running_tag {
                    Some(tag) => format!("{running} ({tag})"),
                    None => running.to_string(),
                },
                s.available_digest.as_deref().map(short).unwrap_or("-").to_string(),
                state,
            ]
        })
        .collect();
    table(&["SERVICE", "IMAGE", "RUNNING", "AVAILABLE", "STATE"], &rows)
}

pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == N {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::ResumedReport;

    /// Stacks that finish in reverse order print in configuration order;
    /// a failing one hides no other.
    #[test]
    fn stacks_at_once_print_in_configuration_order_and_a_broken_one_hides_none() {
        let tmp = tempfile::tempdir().unwrap();
        let stacks: Vec<StackSettings> = (0..7)
            .map(|i| {
                let dir = tmp.path().join(format!("s{i}"));
                std::fs::create_dir(&dir).unwrap();
                std::fs::write(dir.join("compose.yaml"), "services: {}\n").unwrap();
                settings::from_directory(&dir, Some(&tmp.path().join("state"))).unwrap()
            })
            .collect();
        let printer = Printer::new(false, false, 0).keeping();
        let (status, each) = each_stack_at_once(&stacks, &printer, |stack, printer| {
            let n: u64 = stack.name[1..].parse().unwrap();
            printer.human(format!("{} begins\n", stack.name));
            std::thread::sleep(Duration::from_millis(20 * (7 - n)));
            if n == 2 {
                anyhow::bail!("s2 is broken");
            }
            printer.step(format!("{} ends", stack.name));
            let report = ResumedReport { command: CommandName::Check, stack: stack.name.clone(), was_paused: false };
            Ok((if n == 5 { ExitStatus::UpdatesPending } else { ExitStatus::Success }, Report::Resumed(report)))
        });
        assert_eq!(status, ExitStatus::Failed);
        assert_eq!(each[2], ExitStatus::Failed);
        assert_eq!(each[5], ExitStatus::UpdatesPending);
        assert_eq!(each.len(), 7);
        let expected: String = (0..7)
            .map(|i| match i {
                2 => "s2 begins\n\nerror: stack s2: s2 is broken\n".to_string(),
                _ => format!("s{i} begins\n\ns{i} ends\n"),
            })
            .collect();
        assert_eq!(printer.kept_text(), expected);
    }
}
