//! `clusterup status`: what runs now, what the last check found, and what
//! clusterup did recently, with success rate and update durations.

use std::fmt::Write as _;

use anyhow::Result;

use super::{each_stack, table, to_value};
use crate::cli::StatusArgs;
use crate::exit::{ExitStatus, usage};
use crate::ops::observe::observe;
use crate::output::Printer;
use crate::reference::Reference;
use crate::reference::short;
use crate::report::{
    CommandName, Deployed, DeployedRevision, Report, ServiceStatus, Stats, StatusDetail, StatusReport,
};
use crate::seams::Seams;
use crate::settings::StackSettings;
use crate::state::Outcome;
use crate::state::{Revision, StateDir, snapshots};

pub fn stats(revisions: &[Revision]) -> Stats {
    let finished: Vec<&Revision> = revisions.iter().filter(|r| r.outcome.is_some()).collect();
    let good = finished.iter().filter(|r| r.outcome == Some(Outcome::Applied)).count();
    let mut durations: Vec<f64> =
        finished.iter().filter_map(|r| Some(r.finished?.duration_since(r.started).as_secs_f64())).collect();
    durations.sort_by(f64::total_cmp);
    // Nearest rank: the smallest value with at least p of the data at or below it.
    let rank =
        |p: f64| (!durations.is_empty()).then(|| durations[((p * durations.len() as f64).ceil() as usize).max(1) - 1]);
    Stats {
        revisions: revisions.len(),
        success_rate: (!finished.is_empty()).then(|| good as f64 / finished.len() as f64),
        median_seconds: rank(0.5),
        p95_seconds: rank(0.95),
    }
}

pub fn run(seams: &Seams, stacks: &[StackSettings], args: &StatusArgs, printer: &Printer) -> Result<ExitStatus> {
    if !args.watch {
        return Ok(each_stack(stacks, printer, |stack| status_one(seams, stack, args, printer)));
    }
    if !printer.is_terminal() {
        return Err(usage("--watch redraws a terminal; without one, run `clusterup status` from a timer"));
    }
    loop {
        printer.clear_screen();
        each_stack(stacks, printer, |stack| status_one(seams, stack, args, printer));
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

fn status_one(
    seams: &Seams,
    stack: &StackSettings,
    args: &StatusArgs,
    printer: &Printer,
) -> Result<(ExitStatus, Report)> {
    if stack.git.is_some() && !stack.directory.is_dir() {
        printer.human(format!("stack {}: not deployed from git yet; `clusterup check` shows the plan\n", stack.name));
        let report = StatusReport {
            command: CommandName::Status,
            stack: stack.name.clone(),
            deployed: Deployed::NotYet(false),
            detail: None,
        };
        return Ok((ExitStatus::Success, Report::Status(Box::new(report))));
    }
    let model = seams.open.compose(&stack.compose_spec()).model()?;
    let observation = observe(seams.engine, &model.project, &[], true)?;
    let now = seams.clock.now()?;
    let services: Vec<ServiceStatus> = model
        .services
        .iter()
        .map(|(name, svc)| {
            let obs = observation.services.get(name);
            let container = obs.and_then(|o| o.containers.iter().find(|c| c.is_running()).or(o.containers.first()));
            let digest = match (&svc.image, obs.and_then(|o| o.image.as_ref())) {
                (Some(image), Some(info)) => {
                    let r = Reference::parse(image);
                    info.repo_digests.iter().find_map(|d| r.digest_in(d)).map(String::from)
                }
                _ => None,
            };
            let uptime = container
                .filter(|c| c.is_running())
                .and_then(|c| c.started_at.as_deref()?.parse::<jiff::Timestamp>().ok())
                .map(|started| now.duration_since(started).as_secs());
            ServiceStatus {
                service: name.clone(),
                image: svc.image.clone(),
                container: container.map(|c| c.name.clone()),
                state: container.map_or_else(|| "not created".to_string(), |c| c.state.clone()),
                health: container.and_then(|c| c.health.clone()),
                image_id: container.map(|c| c.image_id.clone()),
                digest,
                uptime_seconds: uptime,
            }
        })
        .collect();
    let state = StateDir::existing(&stack.state_dir);
    let revisions: Vec<Revision> = match &state {
        Some(s) => s.revisions()?,
        None => Vec::new(),
    };
    let (pause, last_run) = match &state {
        Some(s) => (s.active_pause(now)?, s.last_run()?),
        None => (None, None),
    };
    let deployed = revisions.iter().rev().find(|r| r.is_good());
    let recent: Vec<&Revision> = revisions.iter().rev().take(args.revisions).collect();
    let stats = stats(&revisions);

    let rows: Vec<[String; 6]> = services
        .iter()
        .map(|s| {
            [
                s.service.clone(),
                s.state.clone(),
                s.health.clone().unwrap_or_else(|| "-".into()),
                s.uptime_seconds.map_or_else(
                    || "-".into(),
                    |u| humantime::format_duration(std::time::Duration::from_secs(u.max(0) as u64)).to_string(),
                ),
                s.image.clone().unwrap_or_else(|| "(build)".into()),
                s.digest.as_deref().or(s.image_id.as_deref()).map(short).unwrap_or("-").to_string(),
            ]
        })
        .collect();
    let mut text = format!("stack {} (project {})\n", stack.name, model.project);
    if let Some(d) = deployed {
        let commit = d.plan.commit.as_deref().map(|c| format!(" commit {}", short(c))).unwrap_or_default();
        let _ = writeln!(
            text,
            "deployed: revision {}{commit}, {} ({})",
            d.id,
            d.finished.unwrap_or(d.started),
            to_value(&d.trigger).as_str().unwrap_or("")
        );
    }
    text.push_str(&table(&["SERVICE", "STATE", "HEALTH", "UP", "IMAGE", "DIGEST"], &rows));
    if let Some(run) = &last_run {
        let _ = writeln!(
            text,
            "last run: {} {} exited {}; {} pending ({})",
            run.time,
            run.command,
            run.exit_code,
            run.pending,
            to_value(&run.kind).as_str().unwrap_or("")
        );
    }
    if let Some(p) = &pause {
        let _ = writeln!(text, "unattended applies {}", p.describe());
    }
    if let (Some(rate), Some(median), Some(p95)) = (stats.success_rate, stats.median_seconds, stats.p95_seconds) {
        let _ = writeln!(
            text,
            "{} revisions, {:.0}% applied; update duration median {median:.1}s, 95th percentile {p95:.1}s",
            stats.revisions,
            rate * 100.0
        );
    }
    if recent.is_empty() {
        text.push_str("no revisions yet\n");
    } else {
        text.push_str("recent revisions:\n");
        for r in &recent {
            let outcome = r.outcome.map_or("unfinished", Outcome::describe);
            let changes: Vec<String> = r
                .services
                .iter()
                .map(|s| {
                    format!("{} {}->{}", s.service, short(&s.before), s.after.as_deref().map(short).unwrap_or("?"))
                })
                .collect();
            let _ = writeln!(
                text,
                "  #{} {} {} {outcome} {}",
                r.id,
                r.started,
                to_value(&r.trigger).as_str().unwrap_or(""),
                changes.join(", ")
            );
        }
    }
    let snapshots = snapshots::list(&stack.volumes.dir)?;
    if !snapshots.is_empty() {
        let _ = writeln!(text, "volume snapshots in {}:", stack.volumes.dir.display());
        for m in &snapshots {
            let _ = writeln!(text, "  #{} {} {}", m.revision, m.taken, m.describe());
        }
    }
    printer.human(text);
    let deployed = deployed.map(|d| DeployedRevision {
        revision: d.id,
        commit: d.plan.commit.clone(),
        when: d.finished,
        trigger: d.trigger,
    });
    let report = StatusReport {
        command: CommandName::Status,
        stack: stack.name.clone(),
        deployed: Deployed::Revision(deployed),
        detail: Some(StatusDetail {
            project: model.project,
            paused: pause,
            last_run,
            stats,
            services,
            revisions: recent.into_iter().cloned().collect(),
            snapshots,
        }),
    };
    Ok((ExitStatus::Success, Report::Status(Box::new(report))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::classify::{Plan, PlanKind};
    use crate::state::Trigger;

    fn rev(outcome: Option<Outcome>, started: &str, finished: &str) -> Revision {
        Revision {
            id: 1,
            trigger: Trigger::Auto,
            started: started.parse().unwrap(),
            finished: Some(finished.parse().unwrap()),
            plan: Plan { kind: PlanKind::Image, ..Plan::empty("s") },
            services: vec![],
            outcome,
            error: None,
            images: Default::default(),
            files: None,
            files_before: None,
            restore: None,
        }
    }

    #[test]
    fn success_rate_and_duration_percentiles() {
        let mut revs: Vec<Revision> = (1..=19)
            .map(|s| rev(Some(Outcome::Applied), "2026-11-25T10:00:00Z", &format!("2026-11-25T10:00:{s:02}Z")))
            .collect();
        revs.push(rev(Some(Outcome::RolledBack), "2026-11-25T10:00:00Z", "2026-11-25T10:01:40Z"));
        revs.push(rev(None, "2026-11-25T10:00:00Z", "2026-11-25T10:00:00Z"));
        let s = stats(&revs);
        assert_eq!(s.revisions, 21);
        assert_eq!(s.success_rate, Some(19.0 / 20.0));
        assert_eq!(s.median_seconds, Some(10.0));
        assert_eq!(s.p95_seconds, Some(19.0));
        assert_eq!(stats(&[]), Stats { revisions: 0, success_rate: None, median_seconds: None, p95_seconds: None });
    }
}
