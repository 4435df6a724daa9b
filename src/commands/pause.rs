//! `clusterup pause` and `resume`: stop and allow unattended applies, for
//! an incident or a maintenance. `check`, `status`, `rollback` and a
//! manual `apply` keep working.

use anyhow::{Context, Result};

use super::each_stack;
use crate::cli::PauseArgs;
use crate::clock::Clock;
use crate::exit::ExitStatus;
use crate::output::Printer;
use crate::report::{CommandName, PausedReport, Report, ResumedReport};
use crate::settings::StackSettings;
use crate::state::{Pause, StateDir};

/// Who is pausing, as the log should remember it.
fn who() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown user".to_string())
}

pub fn pause(clock: &dyn Clock, stacks: &[StackSettings], args: &PauseArgs, printer: &Printer) -> Result<ExitStatus> {
    let now = clock.now()?;
    let until = match (args.duration, args.until) {
        (Some(d), _) => Some(now.checked_add(jiff::SignedDuration::try_from(d).context("--for is too long")?)?),
        (None, until) => until,
    };
    let pause = Pause { by: who(), since: now, reason: args.reason.clone(), until };
    Ok(each_stack(stacks, printer, |stack| {
        StateDir::open(&stack.state_dir)?.set_pause(&pause)?;
        printer.human(format!("stack {}: {}\n", stack.name, pause.describe()));
        let report = PausedReport { command: CommandName::Pause, stack: stack.name.clone(), pause: pause.clone() };
        Ok((ExitStatus::Success, Report::Paused(report)))
    }))
}

pub fn resume(stacks: &[StackSettings], printer: &Printer) -> Result<ExitStatus> {
    Ok(each_stack(stacks, printer, |stack| {
        let was = match StateDir::existing(&stack.state_dir) {
            Some(state) => state.clear_pause()?,
            None => false,
        };
        printer.human(format!("stack {}: {}\n", stack.name, if was { "resumed" } else { "was not paused" }));
        let report = ResumedReport { command: CommandName::Resume, stack: stack.name.clone(), was_paused: was };
        Ok((ExitStatus::Success, Report::Resumed(report)))
    }))
}
