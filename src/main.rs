// Human output goes through `output::Printer` alone: it knows about
// --json, --quiet, terminals and secrets.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod apply;
mod at_once;
mod cli;
mod clock;
mod commands;
#[cfg(test)]
mod docs;
mod exit;
mod files;
#[cfg(test)]
mod fuzz;
mod labels;
mod metrics;
mod notify;
mod ops;
mod output;
mod plan;
mod redact;
mod reference;
mod report;
mod seams;
mod serve;
mod settings;
mod signals;
mod state;
mod trust;
mod window;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let printer = output::Printer::new(cli.global.json, cli.global.quiet, cli.global.verbose);
    if let Err(e) = signals::install_signal_handlers() {
        printer.warn(format!("cannot handle SIGTERM gracefully: {e}"));
    }
    match commands::run(cli, &printer) {
        Ok(status) => status.into(),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            printer.error("", &err);
            exit::status_of(&err).into()
        }
    }
}

/// `clusterup status | head` is not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().filter_map(|e| e.downcast_ref::<std::io::Error>()).any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
