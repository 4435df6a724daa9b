//! `clusterup status`: what runs now, and what clusterup did recently.

use anyhow::Result;
use serde::Serialize;
use serde_json::{Value, json};

use super::{each_stack, short_digest, table, to_value};
use crate::cli::StatusArgs;
use crate::exit::ExitStatus;
use crate::output::Printer;
use crate::pipeline::health::short;
use crate::pipeline::observe::observe;
use crate::reference::Reference;
use crate::seams::compose::{Compose, ComposeCli};
use crate::seams::engine::Engine;
use crate::settings::StackSettings;
use crate::state::{Revision, StateDir};

#[derive(Serialize)]
struct ServiceStatus {
    service: String,
    image: Option<String>,
    container: Option<String>,
    state: String,
    health: Option<String>,
    image_id: Option<String>,
    digest: Option<String>,
}

pub fn run(engine: &dyn Engine, stacks: &[StackSettings], args: &StatusArgs, printer: &Printer) -> Result<ExitStatus> {
    Ok(each_stack(stacks, printer, |stack| status_one(engine, stack, args, printer)))
}

fn status_one(
    engine: &dyn Engine,
    stack: &StackSettings,
    args: &StatusArgs,
    printer: &Printer,
) -> Result<(ExitStatus, Value)> {
    if stack.git.is_some() && !stack.directory.is_dir() {
        printer.human(format!("stack {}: not deployed from git yet; `clusterup check` shows the plan\n", stack.name));
        return Ok((ExitStatus::Success, json!({"command": "status", "stack": stack.name, "deployed": false})));
    }
    let model = ComposeCli::new(stack).model()?;
    let observation = observe(engine, &model.project, &[])?;
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
            ServiceStatus {
                service: name.clone(),
                image: svc.image.clone(),
                container: container.map(|c| c.name.clone()),
                state: container.map_or_else(|| "not created".to_string(), |c| c.state.clone()),
                health: container.and_then(|c| c.health.clone()),
                image_id: container.map(|c| c.image_id.clone()),
                digest,
            }
        })
        .collect();
    let revisions: Vec<Revision> = match StateDir::existing(&stack.state_dir) {
        Some(state) => state.revisions()?,
        None => Vec::new(),
    };
    let recent: Vec<&Revision> = revisions.iter().rev().take(args.revisions).collect();
    let pause = match StateDir::existing(&stack.state_dir) {
        Some(state) => super::apply::active_pause(&state)?,
        None => None,
    };

    let rows: Vec<[String; 5]> = services
        .iter()
        .map(|s| {
            [
                s.service.clone(),
                s.state.clone(),
                s.health.clone().unwrap_or_else(|| "-".into()),
                s.image.clone().unwrap_or_else(|| "(build)".into()),
                s.digest.as_deref().or(s.image_id.as_deref()).map(short_digest).unwrap_or("-").to_string(),
            ]
        })
        .collect();
    let mut text = format!("stack {} (project {})\n", stack.name, model.project);
    text.push_str(&table(&["SERVICE", "STATE", "HEALTH", "IMAGE", "DIGEST"], &rows));
    if recent.is_empty() {
        text.push_str("no revisions yet\n");
    } else {
        text.push_str("recent revisions:\n");
        for r in &recent {
            let outcome =
                r.outcome.map_or_else(|| "unfinished".to_string(), |o| to_value(&o).as_str().unwrap_or("").to_string());
            let changes: Vec<String> = r
                .services
                .iter()
                .map(|s| {
                    format!("{} {}->{}", s.service, short(&s.before), s.after.as_deref().map(short).unwrap_or("?"))
                })
                .collect();
            text.push_str(&format!(
                "  #{} {} {} {} {}\n",
                r.id,
                r.started,
                to_value(&r.trigger).as_str().unwrap_or(""),
                outcome,
                changes.join(", ")
            ));
        }
    }
    if let Some(p) = &pause {
        text.push_str(&format!("unattended applies {}\n", super::apply::describe_pause(p)));
    }
    printer.human(text);
    let report = json!({
        "paused": pause,
        "command": "status",
        "stack": stack.name,
        "project": model.project,
        "services": services,
        "revisions": recent,
    });
    Ok((ExitStatus::Success, report))
}
