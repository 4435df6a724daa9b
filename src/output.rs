//! All human output goes through one `Printer`, which knows whether it
//! talks to a person (terminal: progress bars, prompts) or to a log
//! (systemd, Ansible: plain lines, never a question).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::seams::engine::PullProgress;

pub struct Printer {
    pub json: bool,
    quiet: bool,
    verbose: u8,
    stderr_tty: bool,
    interactive: bool,
    color: bool,
    /// Output kept in order instead of written, for `replay`: stacks
    /// checked at once print one after another, in configuration order.
    kept: Option<Mutex<Vec<(Stream, String)>>>,
}

#[derive(Clone, Copy)]
enum Stream {
    Out,
    Err,
}

// The one place that writes to the terminal.
#[allow(clippy::print_stdout, clippy::print_stderr)]
impl Printer {
    pub fn new(json: bool, quiet: bool, verbose: u8) -> Printer {
        Printer {
            json,
            quiet,
            verbose,
            stderr_tty: std::io::stderr().is_terminal(),
            interactive: std::io::stdin().is_terminal() && std::io::stdout().is_terminal(),
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            kept: None,
        }
    }

    /// A printer like this one that keeps what it is given until `replay`.
    /// It shows no progress bar and asks nothing.
    pub fn keeping(&self) -> Printer {
        Printer {
            stderr_tty: false,
            interactive: false,
            kept: Some(Mutex::new(Vec::new())),
            json: self.json,
            quiet: self.quiet,
            verbose: self.verbose,
            color: self.color,
        }
    }

    /// Writes what a `keeping` printer kept through `to`, in order.
    pub fn replay(self, to: &Printer) {
        for (stream, text) in self.kept.map(|k| k.into_inner().unwrap()).unwrap_or_default() {
            match stream {
                Stream::Out => to.out(text),
                Stream::Err => to.err(text),
            }
        }
    }

    /// What a `keeping` printer holds, stdout and stderr interleaved.
    #[cfg(test)]
    pub fn kept_text(&self) -> String {
        self.kept
            .as_ref()
            .map(|k| k.lock().unwrap().iter().map(|(_, t)| format!("{t}\n")).collect())
            .unwrap_or_default()
    }

    fn out(&self, text: String) {
        match &self.kept {
            Some(kept) => kept.lock().unwrap().push((Stream::Out, text)),
            None => print!("{text}"),
        }
    }

    /// One line to stderr.
    fn err(&self, line: String) {
        match &self.kept {
            Some(kept) => kept.lock().unwrap().push((Stream::Err, line)),
            None => eprintln!("{line}"),
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.color || (std::io::stdout().is_terminal() && !self.json)
    }

    /// Whether a question may be asked: a person at a terminal, and stdout
    /// is not being parsed as JSON.
    pub fn can_ask(&self) -> bool {
        self.interactive && !self.json
    }

    /// A progress line: what the run is doing now. To stderr, so stdout
    /// stays the result (and pure JSON with --json).
    pub fn step(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            self.err(for_people(msg.as_ref()));
        }
    }

    /// Something went wrong beside the run's result (a notification, the
    /// metrics file): said even with --quiet.
    pub fn warn(&self, msg: impl AsRef<str>) {
        self.err(format!("warning: {}", for_people(msg.as_ref())));
    }

    /// An error that ends a run or a stack's part of it, with its causes.
    pub fn error(&self, context: impl AsRef<str>, err: &dyn std::fmt::Display) {
        let context = context.as_ref();
        let sep = if context.is_empty() { "" } else { ": " };
        self.err(format!("error: {context}{sep}{}", for_people(&format!("{err:#}"))));
    }

    /// Clears a terminal for the next redraw (`status --watch`).
    pub fn clear_screen(&self) {
        self.out("\x1b[2J\x1b[H".to_string());
    }

    pub fn detail(&self, msg: impl AsRef<str>) {
        if self.verbose > 0 {
            self.err(for_people(msg.as_ref()));
        }
    }

    /// The result of a command, for people.
    pub fn human(&self, text: impl AsRef<str>) {
        if !self.json {
            self.out(for_people(text.as_ref()));
        }
    }

    /// A unified diff, red and green on a terminal.
    pub fn diff(&self, diff: &str) {
        if self.json || diff.is_empty() {
            return;
        }
        let diff = for_people(diff);
        if !self.color {
            self.out(diff);
            return;
        }
        let painted: String = diff
            .lines()
            .map(|l| {
                let code = match l.as_bytes().first() {
                    Some(b'+') if !l.starts_with("+++") => "32",
                    Some(b'-') if !l.starts_with("---") => "31",
                    Some(b'@') => "36",
                    _ => return format!("{l}\n"),
                };
                format!("\x1b[{code}m{l}\x1b[0m\n")
            })
            .collect();
        self.out(painted);
    }

    pub fn json(&self, value: &impl Serialize) {
        if self.json {
            let mut value = serde_json::to_value(value).expect("plain data serializes");
            crate::redact::scrub_json(&mut value);
            self.out(format!("{}\n", serde_json::to_string_pretty(&value).expect("plain data serializes")));
        }
    }

    pub fn confirm(&self, question: &str) -> std::io::Result<bool> {
        dialoguer::Confirm::new().with_prompt(question).default(false).interact().map_err(std::io::Error::other)
    }

    /// Progress of one image pull: a byte bar on a terminal, two plain
    /// lines (start, end) anywhere else.
    pub fn pull(&self, reference: &str) -> PullDisplay {
        let bar = (self.stderr_tty && !self.quiet).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{spinner} pulling {prefix} {bytes}/{total_bytes} {wide_msg}")
                    .expect("static template"),
            );
            bar.set_prefix(for_people(reference));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            self.step(format!("pulling {reference}"));
        }
        PullDisplay { bar, layers: HashMap::new() }
    }

    /// What a build is doing: on a terminal one line that follows it;
    /// elsewhere (systemd) a plain line per build step; with -v every line
    /// the builder writes.
    pub fn build(&self, services: &str) -> BuildDisplay<'_> {
        let bar = (self.stderr_tty && !self.quiet && self.verbose == 0).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} building {prefix}: {wide_msg}").expect("static template"),
            );
            bar.set_prefix(for_people(services));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        self.step(format!("building {services}"));
        BuildDisplay { printer: self, bar, builder_said: false }
    }
}

pub struct BuildDisplay<'a> {
    printer: &'a Printer,
    bar: Option<ProgressBar>,
    builder_said: bool,
}

impl BuildDisplay<'_> {
    /// One line of the build's log (`docker compose --progress plain`).
    pub fn line(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        if !self.builder_said {
            let builder = if line.starts_with("#0 building with") || line.starts_with("#1 [") {
                Some("BuildKit (the engine's builder)")
            } else if line.starts_with("Step 1/") || line.starts_with("Sending build context") {
                Some("the classic builder (no BuildKit)")
            } else {
                None
            };
            if let Some(builder) = builder {
                self.printer.detail(format!("building with {builder}"));
                self.builder_said = true;
            }
        }
        // A step's title: BuildKit's `#5 [app 1/2] FROM …`, the classic
        // builder's `Step 1/2 : FROM …`.
        let title = (line.starts_with('#') && line.contains(" [")) || line.starts_with("Step ");
        match &self.bar {
            Some(bar) => bar.set_message(for_people(line)),
            None if title || self.printer.verbose > 0 => self.printer.step(format!("build: {line}")),
            None => {}
        }
    }

    pub fn finish(self, result: &str) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        self.printer.step(result);
    }
}

/// Every line a person reads: no credential, no control character.
pub fn for_people(text: &str) -> String {
    crate::redact::terminal_safe(&crate::redact::scrub(text))
}

pub struct PullDisplay {
    bar: Option<ProgressBar>,
    layers: HashMap<String, (u64, u64)>,
}

impl PullDisplay {
    pub fn update(&mut self, p: &PullProgress) {
        let Some(bar) = &self.bar else { return };
        if let (Some(layer), Some(total)) = (p.layer, p.total) {
            let current = p.current.unwrap_or(0).max(0) as u64;
            self.layers.insert(layer.to_string(), (current, total.max(0) as u64));
            let (done, all) = self.layers.values().fold((0, 0), |(d, a), (c, t)| (d + c, a + t));
            bar.set_length(all);
            bar.set_position(done);
        }
        bar.set_message(for_people(p.status));
    }

    pub fn finish(self, printer: &Printer, result: &str) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        printer.step(result);
    }
}
