//! `clusterup rollback`: back to the previous good revision, or to any
//! recorded one; `--list` shows them.

use anyhow::{Result, anyhow};

use super::apply::report;
use super::{each_stack, table, to_value};
use crate::apply::revision::Session;
use crate::apply::volumes::{self, Manifest, Restore, Snapshots, VolumeSnapshot};
use crate::cli::RollbackArgs;
use crate::exit::{ExitStatus, usage};
use crate::ops::{self, Goal};
use crate::output::Printer;
use crate::plan::classify::{Change, ChangeKind, Plan};
use crate::plan::observation::Observation;
use crate::reference::short;
use crate::report::{CommandName, Report, RevisionsReport};
use crate::seams::Seams;
use crate::settings::StackSettings;
use crate::state::Outcome;
use crate::state::{Revision, StateDir, Trigger};

pub fn run(seams: &Seams, stacks: &[StackSettings], args: &RollbackArgs, printer: &Printer) -> Result<ExitStatus> {
    Ok(each_stack(stacks, printer, |stack| {
        if args.list {
            return list(stack, printer);
        }
        let result = rollback_one(seams, stack, args, printer);
        super::after_run(seams, stack, CommandName::Rollback, &result, printer);
        result
    }))
}

fn list(stack: &StackSettings, printer: &Printer) -> Result<(ExitStatus, Report)> {
    let revisions = match StateDir::existing(&stack.state_dir) {
        Some(state) => state.revisions()?,
        None => Vec::new(),
    };
    let rows: Vec<[String; 6]> = revisions
        .iter()
        .rev()
        .map(|r| {
            let images: Vec<String> = r.images.iter().map(|(s, i)| format!("{s}={}", short(i))).collect();
            [
                r.id.to_string(),
                r.started.to_string(),
                to_value(&r.trigger).as_str().unwrap_or("").to_string(),
                r.plan.commit.as_deref().map(short).unwrap_or("-").to_string(),
                r.outcome.map_or("unfinished", Outcome::describe).to_string(),
                images.join(" "),
            ]
        })
        .collect();
    printer.human(format!(
        "stack {}\n{}",
        stack.name,
        table(&["REV", "STARTED", "TRIGGER", "COMMIT", "OUTCOME", "IMAGES"], &rows)
    ));
    let report = RevisionsReport { command: CommandName::Rollback, stack: stack.name.clone(), revisions };
    Ok((ExitStatus::Success, Report::Revisions(report)))
}

/// What a tag points at now in each repository the stack's revisions
/// changed: (service, digest).
type TagDigests<'a> = &'a dyn Fn(&str) -> Vec<(String, String)>;

/// The revision `spec` names: a number, a commit prefix, a time (the last
/// good revision started by then), or an immutable image tag (CI's
/// `autonomy-<sha>`): the good revision that deployed the digest it
/// points at, or the state before the one that replaced it.
fn resolve(spec: &str, revisions: &[Revision], tag: TagDigests) -> Result<Revision> {
    resolve_by_name(spec, revisions).cloned().or_else(|err| {
        if spec.chars().all(|c| c.is_ascii_digit()) {
            return Err(err);
        }
        let digests = tag(spec);
        if digests.is_empty() {
            return Err(err);
        }
        let runs = |r: &&Revision| {
            r.plan.changes.iter().any(|c| digests.iter().any(|(s, d)| c.service == *s && c.to.as_deref() == Some(d)))
        };
        let replaced = |r: &&Revision| {
            r.plan.changes.iter().any(|c| digests.iter().any(|(s, d)| c.service == *s && c.from.as_deref() == Some(d)))
        };
        let good: Vec<&Revision> = revisions.iter().filter(|r| r.is_good()).collect();
        match (good.iter().rev().copied().find(runs), good.iter().rev().copied().find(replaced)) {
            (Some(r), _) => Ok(r.clone()),
            (None, Some(b)) => Ok(state_before(b)),
            (None, None) => Err(usage(format!("no revision ran or replaced the image tagged {spec}"))),
        }
    })
}

fn resolve_by_name<'a>(spec: &str, revisions: &'a [Revision]) -> Result<&'a Revision> {
    let good = || revisions.iter().rev().filter(|r| r.is_good());
    if let Ok(id) = spec.parse::<u64>() {
        let r = revisions.iter().find(|r| r.id == id).ok_or_else(|| usage(format!("there is no revision {id}")))?;
        if !r.is_good() {
            return Err(usage(format!(
                "revision {id} did not apply ({}); roll back to a revision that did (see --list)",
                r.outcome.map_or("unfinished", Outcome::describe)
            )));
        }
        return Ok(r);
    }
    if spec.len() >= 4 && spec.chars().all(|c| c.is_ascii_hexdigit()) {
        return good()
            .find(|r| r.plan.commit.as_deref().is_some_and(|c| c.starts_with(spec)))
            .ok_or_else(|| usage(format!("no good revision deployed a commit starting with {spec}")));
    }
    let time: jiff::Timestamp = spec.parse().map_err(|_| {
        usage(format!(
            "--to {spec:?} is neither a revision number, a commit prefix, an RFC 3339 time nor a tag of the stack's images"
        ))
    })?;
    good().find(|r| r.started <= time).ok_or_else(|| usage(format!("no good revision started before {spec}")))
}

/// The revision that runs now and the one to go back to: `to`'s, or the
/// good revision before the current one, or (from the first) the state
/// before it.
/// `data_only`: going "to" what runs now is allowed (to restore its
/// volume snapshots).
fn choose(
    to: Option<&str>,
    revisions: &[Revision],
    stack: &str,
    tag: TagDigests,
    data_only: bool,
) -> Result<(Revision, Revision)> {
    let current = revisions
        .iter()
        .rev()
        .find(|r| r.is_good())
        .ok_or_else(|| anyhow!("nothing to roll back: no revision of stack {stack} was applied yet"))?;
    let target = match to {
        Some(spec) => resolve(spec, revisions, tag)?,
        None => match revisions.iter().rev().find(|r| r.is_good() && r.id < current.id) {
            Some(r) => r.clone(),
            None => state_before(current),
        },
    };
    // The state before the current revision shares its id: only the
    // revision itself is "what runs now".
    if target.id == current.id && to.is_some() && target.images == current.images && !data_only {
        return Err(usage(format!("revision {} is what runs now", target.id)));
    }
    Ok((current.clone(), target))
}

/// Where `name` points in the registry, for each service whose image the
/// revisions changed (a name that is no tag there points nowhere).
fn tag_digests(seams: &Seams, revisions: &[Revision], name: &str) -> Vec<(String, String)> {
    if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Vec::new();
    }
    let mut services: Vec<(String, String)> = revisions
        .iter()
        .flat_map(|r| &r.plan.changes)
        .filter_map(|c| {
            let image = c.image.as_deref()?;
            let repository = crate::reference::split_tag(image).map_or(image, |(r, _)| r);
            Some((c.service.clone(), format!("{repository}:{name}")))
        })
        .collect();
    services.sort();
    services.dedup();
    let references: Vec<String> = services.iter().map(|(_, r)| r.clone()).collect();
    services
        .into_iter()
        .zip(seams.engine.registry_digests(&references))
        .filter_map(|((service, _), digest)| Some((service, digest.ok()?)))
        .collect()
}

/// Every service whose containers mount a volume the snapshot restores
/// is stopped for the swap and started again (recreated, if the rollback
/// changes it anyway), health-gated like any change.
fn restart_volume_users(plan: &mut Plan, observation: &Observation, manifest: &Manifest) -> Vec<String> {
    let mut users = Vec::new();
    for (service, observed) in &observation.services {
        let uses =
            |v: &VolumeSnapshot| observed.containers.iter().flat_map(|c| &c.mounts).any(|m| v.kind.is(m, &v.name));
        let restored: Vec<&str> = manifest.volumes.iter().filter(|v| uses(v)).map(|v| v.name.as_str()).collect();
        if restored.is_empty() {
            continue;
        }
        users.push(service.clone());
        let why =
            format!("its data ({}) is restored from revision {}'s snapshot", restored.join(", "), manifest.revision);
        match plan.changes.iter_mut().find(|c| &c.service == service) {
            Some(change) => change.reasons.push(why),
            None => {
                let mut change = Change::new(service, ChangeKind::Recreate, None);
                change.reasons.push(why);
                plan.changes.push(change);
            }
        }
    }
    plan.kind = crate::plan::classify::kind_of(&plan.changes);
    users
}

/// The stack as it was before `rev`: its commit and, per service, the
/// image kept as `before`.
fn state_before(rev: &Revision) -> Revision {
    let mut target = rev.clone();
    target.plan.commit = rev.plan.deployed_commit.clone();
    target.files = rev.files_before.clone();
    for s in &rev.services {
        target.images.insert(s.service.clone(), s.before.clone());
    }
    for c in rev.plan.changes.iter().filter(|c| c.kind == crate::plan::classify::ChangeKind::Create) {
        target.images.remove(&c.service);
    }
    target
}

fn rollback_one(
    seams: &Seams,
    stack: &StackSettings,
    args: &RollbackArgs,
    printer: &Printer,
) -> Result<(ExitStatus, Report)> {
    let session = Session::open(seams, stack)?;
    let (state, ctx) = (&session.state, session.ctx(seams, stack, printer));
    ctx.recover()?;
    let journal = state.journal()?;
    let tag = |name: &str| tag_digests(seams, &journal.revisions, name);
    let (current, target) = choose(args.to.as_deref(), &journal.revisions, &stack.name, &tag, args.restore_volumes)?;
    let (current, target) = (&current, &target);
    let checked = ops::plan(seams, stack, Goal::Revision(target))?;
    let mut plan = checked.plan.clone();
    let data_only = plan.changes.is_empty() && !plan.moves_commit();
    // Whose snapshots: the revision named, else the one rolled back from.
    let source = if args.to.is_some() { target.id } else { current.id };
    // Snapshots out of reach never stand in the way of a plain rollback.
    let kept = match volumes::list(&stack.volumes.dir) {
        Ok(kept) => kept,
        Err(e) if !args.restore_volumes => {
            printer.warn(format!("volume snapshots: {e:#}"));
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let snapshot = kept.into_iter().find(|m| m.revision == source);
    let mut policies = checked.policies.clone();
    if args.restore_volumes {
        let Some(manifest) = &snapshot else {
            return Err(usage(format!(
                "revision {source} took no volume snapshots (or they were pruned); `clusterup status` lists those kept"
            )));
        };
        // Stopped for the swap, they cannot answer a pre-update hook.
        for service in restart_volume_users(&mut plan, &checked.observation, manifest) {
            if let Some(p) = policies.get_mut(&service)
                && (p.host_hooks.pre_update.take().is_some() | p.container_hooks.pre_update.take().is_some())
            {
                printer.step(format!("{service}'s pre-update hooks are not run: it is stopped for the restore"));
            }
        }
    }
    let plan = &plan;
    let to = if target.id == current.id {
        format!("the state before revision {}", current.id)
    } else {
        format!("revision {}", target.id)
    };
    printer.human(format!("rollback of stack {} from revision {} to {to}\n", stack.name, current.id));
    super::check::show_plan(printer, plan, &checked.file_diff);
    match (&snapshot, args.restore_volumes) {
        (Some(m), true) => printer.human(format!(
            "volumes restored from revision {source}'s snapshots: {}; what they hold now is moved aside until \
             the services are healthy\n",
            m.describe()
        )),
        (Some(m), false) => printer.human(format!(
            "revision {source} has volume snapshots ({}); this rollback leaves the data as it is \
             (--restore-volumes restores them)\n",
            m.describe()
        )),
        (None, _) => {}
    }
    let moves_commit = plan.moves_commit();
    if args.dry_run || (plan.changes.is_empty() && !moves_commit && !args.restore_volumes) {
        return Ok((
            ExitStatus::Success,
            report(CommandName::Rollback, plan, Outcome::UpToDate, None, None, &[], None),
        ));
    }
    if !args.yes {
        if !printer.can_ask() {
            return Err(usage("rollback asks for confirmation, and there is no terminal to ask on: pass --yes"));
        }
        let data = if args.restore_volumes { " and restore its volumes' data" } else { "" };
        if !printer.confirm(&format!("Roll stack {} back to {to}{data}?", stack.name))? {
            return Ok((
                ExitStatus::Skipped,
                report(CommandName::Rollback, plan, Outcome::UpToDate, None, Some("declined".into()), &[], None),
            ));
        }
    }
    let files = checked.files_for(plan);
    let restore = match (&snapshot, args.restore_volumes) {
        (Some(manifest), true) => Some(Restore::prepare(
            seams.engine,
            printer,
            &stack.volumes.dir,
            manifest,
            &plan.project,
            state.next_revision_id()?,
        )?),
        _ => None,
    };
    // A restore keeps what it replaces until the services are healthy:
    // no copy of the data it is about to replace is taken first.
    let snapshots = match &restore {
        Some(_) => Snapshots::default(),
        None => match ctx.snapshots_for(plan, &checked.observation, &checked.policies)? {
            Ok(s) => s,
            Err(no_room) => {
                printer.human(format!("not rolled back: {no_room}\n"));
                let report = report(CommandName::Rollback, plan, Outcome::UpToDate, None, None, &[no_room], None);
                return Ok((ExitStatus::Skipped, report));
            }
        },
    };
    let data = (&snapshots, restore.as_ref());
    let ran = ctx.run_revision(plan, &checked.observation, &policies, files, Trigger::Rollback, data);
    if let (Err(_), Some(r)) = (&ran, &restore) {
        // Never begun: the unpacked copies are all there is to tidy.
        let _ = r.discard_staging();
    }
    let (id, execution) = ran?;
    if execution.outcome == Outcome::Applied && !data_only {
        let why = match &args.reason {
            Some(reason) => format!("an operator rolled back from it: {reason}"),
            None => "an operator rolled back from it".to_string(),
        };
        ctx.reject(current, &why)?;
    }
    let status = match execution.outcome {
        Outcome::Applied | Outcome::UpToDate => ExitStatus::Success,
        Outcome::RolledBack | Outcome::Failed => ExitStatus::Failed,
        Outcome::RollbackFailed => ExitStatus::RollbackFailed,
    };
    printer.human(format!("revision {id}: {}\n", execution.outcome.describe()));
    if let Some(e) = &execution.error {
        printer.error(format!("stack {}", stack.name), e);
    }
    Ok((status, report(CommandName::Rollback, plan, execution.outcome, Some(id), execution.error, &[], None)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::classify::{Change, ChangeKind, Plan, PlanKind};

    fn rev(id: u64, outcome: Outcome, commit: &str, started: &str) -> Revision {
        Revision {
            id,
            trigger: Trigger::Auto,
            started: started.parse().unwrap(),
            finished: None,
            plan: Plan { kind: PlanKind::Image, commit: Some(commit.into()), ..Plan::empty("s") },
            services: vec![],
            outcome: Some(outcome),
            error: None,
            images: Default::default(),
            files: None,
            files_before: None,
            restore: None,
        }
    }

    #[test]
    fn revisions_are_found_by_number_commit_or_time() {
        let revs = vec![
            rev(1, Outcome::Applied, "aaaa1111", "2026-11-20T10:00:00Z"),
            rev(2, Outcome::RolledBack, "bbbb2222", "2026-11-21T10:00:00Z"),
            rev(3, Outcome::Applied, "cccc3333", "2026-11-22T10:00:00Z"),
        ];
        assert_eq!(resolve("1", &revs, &|_| Vec::new()).unwrap().id, 1);
        assert!(format!("{:#}", resolve("2", &revs, &|_| Vec::new()).unwrap_err()).contains("did not apply"));
        assert!(resolve("9", &revs, &|_| Vec::new()).is_err());
        assert_eq!(resolve("cccc", &revs, &|_| Vec::new()).unwrap().id, 3);
        assert!(resolve("bbbb", &revs, &|_| Vec::new()).is_err(), "a failed revision is no rollback target");
        assert_eq!(resolve("2026-11-21T12:00:00Z", &revs, &|_| Vec::new()).unwrap().id, 1);
        assert_eq!(resolve("2026-11-23T00:00:00Z", &revs, &|_| Vec::new()).unwrap().id, 3);
        assert!(format!("{:#}", resolve("yesterday", &revs, &|_| Vec::new()).unwrap_err()).contains("neither"));
    }

    /// CI's fixed tags: the revision that deployed the digest, or the
    /// state before the one that replaced it.
    #[test]
    fn an_image_tag_names_the_revision_that_ran_its_digest() {
        let digest_change = |from: &str, to: &str| {
            let mut c = Change::new("web", ChangeKind::Image, Some("r/web:latest".into()));
            (c.from, c.to) = (Some(from.into()), Some(to.into()));
            c
        };
        let mut revs = vec![
            rev(1, Outcome::Applied, "aaaa1111", "2026-11-20T10:00:00Z"),
            rev(2, Outcome::Applied, "bbbb2222", "2026-11-21T10:00:00Z"),
        ];
        revs[0].plan.changes.push(digest_change("sha256:d1", "sha256:d2"));
        revs[1].plan.changes.push(digest_change("sha256:d2", "sha256:d3"));
        let points = |digest: &'static str| move |_: &str| vec![("web".to_string(), digest.to_string())];
        assert_eq!(resolve("autonomy-2", &revs, &points("sha256:d2")).unwrap().id, 1);
        let before_first = resolve("autonomy-1", &revs, &points("sha256:d1")).unwrap();
        assert_eq!((before_first.id, before_first.plan.commit.as_deref()), (1, None), "the state before revision 1");
        let err = resolve("autonomy-0", &revs, &points("sha256:d0")).unwrap_err();
        assert!(format!("{err:#}").contains("no revision ran or replaced"), "{err:#}");
    }

    #[test]
    fn a_rollback_goes_to_the_good_revision_before_the_current_one() {
        let revs = vec![
            rev(1, Outcome::Applied, "aaaa1111", "2026-11-20T10:00:00Z"),
            rev(2, Outcome::RolledBack, "bbbb2222", "2026-11-21T10:00:00Z"),
            rev(3, Outcome::Applied, "cccc3333", "2026-11-22T10:00:00Z"),
            rev(4, Outcome::RollbackFailed, "dddd4444", "2026-11-23T10:00:00Z"),
        ];
        let (current, target) = choose(None, &revs, "s", &|_| Vec::new(), false).unwrap();
        assert_eq!((current.id, target.id), (3, 1), "failed revisions are neither current nor a target");
        let err = choose(Some("3"), &revs, "s", &|_| Vec::new(), false).unwrap_err();
        assert!(err.to_string().contains("is what runs now"), "{err}");
        assert_eq!(choose(Some("aaaa"), &revs, "s", &|_| Vec::new(), false).unwrap().1.id, 1);
        let err = choose(None, &revs[1..2], "s", &|_| Vec::new(), false).unwrap_err();
        assert!(err.to_string().contains("nothing to roll back"), "{err}");
    }

    /// From the first revision, back to what ran before it: the images it
    /// kept, its files before, its commit before; a service it created has
    /// no image to go back to.
    #[test]
    fn a_rollback_from_the_first_revision_goes_to_the_state_before_it() {
        let mut first = rev(1, Outcome::Applied, "aaaa1111", "2026-11-20T10:00:00Z");
        first.plan.deployed_commit = Some("0000aaaa".into());
        first.files_before = Some("copy-before".into());
        first.plan.changes = vec![
            crate::plan::classify::Change::new("web", crate::plan::classify::ChangeKind::Image, Some("r/web:1".into())),
            crate::plan::classify::Change::new(
                "new",
                crate::plan::classify::ChangeKind::Create,
                Some("r/new:1".into()),
            ),
        ];
        first.services = ["web", "new"]
            .map(|s| crate::state::ServiceImages {
                service: s.into(),
                image: Some(format!("r/{s}:1")),
                before: format!("old-{s}"),
                backup_tag: format!("clusterup/s/{s}:rev-1"),
                after: None,
            })
            .to_vec();
        let (current, target) = choose(None, &[first], "s", &|_| Vec::new(), false).unwrap();
        assert_eq!((current.id, target.id), (1, 1));
        assert_eq!(target.plan.commit.as_deref(), Some("0000aaaa"));
        assert_eq!(target.files.as_deref(), Some("copy-before"));
        assert_eq!(target.images.into_iter().collect::<Vec<_>>(), [("web".to_string(), "old-web".to_string())]);
    }
}
