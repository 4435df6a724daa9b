//! Prometheus metrics in node_exporter's textfile-collector format,
//! written atomically so the collector never reads half a file.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::clock::Clock;
use crate::settings::StackSettings;
use crate::state::Outcome;
use crate::state::StateDir;

const METRICS: [(&str, &str, &str); 8] = [
    ("clusterup_last_run_timestamp_seconds", "gauge", "When the last check or apply of the stack ran."),
    (
        "clusterup_last_run_exit_code",
        "gauge",
        "Exit code of that run (0 ok, 100 pending, 1 rolled back, 3 rollback failed, 4 skipped).",
    ),
    ("clusterup_pending_changes", "gauge", "Changes still to apply after the last run (held back or failed included)."),
    ("clusterup_paused", "gauge", "1 while unattended applies are paused."),
    ("clusterup_revision", "gauge", "The stack's latest revision number."),
    ("clusterup_last_update_duration_seconds", "gauge", "How long the latest revision took."),
    ("clusterup_revisions_total", "counter", "Revisions by outcome."),
    ("clusterup_deployed_revision", "gauge", "The revision the stack runs (the latest that applied)."),
];

pub fn render(stacks: &[StackSettings], clock: &dyn Clock) -> Result<String> {
    let mut lines: Vec<(usize, String)> = Vec::new();
    for stack in stacks {
        let Some(state) = StateDir::existing(&stack.state_dir) else { continue };
        let label = format!("stack=\"{}\"", stack.name.replace('\\', "\\\\").replace('"', "\\\""));
        if let Some(run) = state.last_run()? {
            lines.push((0, format!("{{{label}}} {}", run.time.as_second())));
            lines.push((1, format!("{{{label}}} {}", run.exit_code)));
            lines.push((2, format!("{{{label}}} {}", run.pending)));
        }
        let paused = state.active_pause(clock.now()?)?.is_some();
        lines.push((3, format!("{{{label}}} {}", u8::from(paused))));
        let revisions = state.revisions()?;
        if let Some(last) = revisions.last() {
            lines.push((4, format!("{{{label}}} {}", last.id)));
            let took = last.finished.map(|f| f.duration_since(last.started));
            if let Some(d) = took {
                lines.push((5, format!("{{{label}}} {}", d.as_secs_f64())));
            }
        }
        for outcome in [Outcome::Applied, Outcome::RolledBack, Outcome::RollbackFailed, Outcome::Failed] {
            let n = revisions.iter().filter(|r| r.outcome == Some(outcome)).count();
            let name = serde_json::to_value(outcome)?.as_str().unwrap_or("").to_string();
            lines.push((6, format!("{{{label},outcome=\"{name}\"}} {n}")));
        }
        if let Some(d) = revisions.iter().rev().find(|r| r.is_good()) {
            lines.push((7, format!("{{{label}}} {}", d.id)));
        }
    }
    let mut out = String::new();
    for (i, (name, kind, help)) in METRICS.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (_, line) in lines.iter().filter(|(m, _)| *m == i) {
            let _ = writeln!(out, "{name}{line}");
        }
    }
    Ok(out)
}

pub fn write(path: &Path, stacks: &[StackSettings], clock: &dyn Clock) -> Result<()> {
    // The collector runs as another user: the file is world-readable, and
    // holds nothing secret.
    crate::files::write_atomic_mode(path, render(stacks, clock)?.as_bytes(), 0o644)
}
