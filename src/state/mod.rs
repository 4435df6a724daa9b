//! The per-stack state directory: the journal of revisions and rejected
//! targets, the pause marker, and the lock.
//!
//! The journal is JSON Lines, one event per line, each appended and
//! fsynced before the action it announces. A crash can only tear the last
//! line, which readers detect and skip; the next writer starts a fresh line.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::exit::LockHeld;
use crate::files::{private_dir, read_nofollow, refuse_unsafe_dir, sync_dir, write_atomic};
use crate::plan::classify::Plan;

pub mod snapshots;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    UpToDate,
    Applied,
    /// A change failed; the stack was returned to the previous revision.
    RolledBack,
    /// The rollback failed too: a human is needed.
    RollbackFailed,
    /// Failed before any container was touched (e.g. a pull failed).
    Failed,
}

impl Outcome {
    pub fn describe(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::UpToDate => "up to date",
            Outcome::RolledBack => "failed and rolled back",
            Outcome::Failed => "failed; nothing was changed",
            Outcome::RollbackFailed => "failed, and the rollback failed: a human is needed",
        }
    }
}

const JOURNAL: &str = "journal.jsonl";
const LOCK: &str = "lock";

/// A stack's lock file; while held it names the holder's pid.
pub fn lock_file(state_dir: &Path) -> PathBuf {
    state_dir.join(LOCK)
}
const PAUSE: &str = "pause.json";
const LAST_RUN: &str = "last_run.json";

/// One apply: what it set out to do and how it ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Revision {
    pub id: u64,
    pub trigger: Trigger,
    #[schemars(with = "String")]
    pub started: Timestamp,
    #[schemars(with = "Option<String>")]
    pub finished: Option<Timestamp>,
    pub plan: Plan,
    pub services: Vec<ServiceImages>,
    /// None while the revision is in progress (or was interrupted).
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    /// Every running service's image id when the revision ended: what a
    /// rollback to this revision restores.
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    /// Directory stacks: the copy of the files this revision deploys, and
    /// of those that ran before it (see `pipeline::snapshot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_before: Option<String>,
    /// The volumes it restores from an earlier revision's snapshots
    /// (`rollback --restore-volumes`): what a recovery puts back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<snapshots::Restore>,
}

impl Revision {
    /// The revision ended with the stack in its target state.
    pub fn is_good(&self) -> bool {
        self.outcome == Some(Outcome::Applied)
    }

    /// Digest updates this revision set out to apply, as (service, digest).
    pub fn target_digests(&self) -> Vec<(String, String)> {
        self.plan
            .changes
            .iter()
            .filter(|c| c.is_digest_update())
            .filter_map(|c| Some((c.service.clone(), c.to.clone()?)))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Manual,
    Auto,
    Rollback,
}

/// The image a service ran before the revision, kept under `backup_tag`
/// so no prune removes it, and the image it runs after.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct ServiceImages {
    pub service: String,
    pub image: Option<String>,
    pub before: String,
    pub backup_tag: String,
    pub after: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    Begin {
        revision: Box<Revision>,
    },
    End {
        id: u64,
        finished: Timestamp,
        outcome: Outcome,
        error: Option<String>,
        after: Vec<(String, String)>,
        #[serde(default)]
        images: BTreeMap<String, String>,
    },
    Reject(Rejection),
}

/// A target that must not be applied unattended again: the commit and the
/// image digests of a revision that failed or that an operator left.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rejection {
    pub revision: u64,
    pub time: Timestamp,
    pub commit: Option<String>,
    pub digests: Vec<(String, String)>,
    pub reason: String,
}

/// How a revision ended.
pub struct Ending {
    pub finished: Timestamp,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub after: Vec<(String, String)>,
    pub images: BTreeMap<String, String>,
}

/// Everything the journal says.
#[derive(Debug, Default)]
pub struct Journal {
    pub revisions: Vec<Revision>,
    pub rejections: Vec<Rejection>,
}

impl Journal {
    pub fn rejected_commit(&self, commit: &str) -> Option<&Rejection> {
        self.rejections.iter().rev().find(|r| r.commit.as_deref() == Some(commit))
    }

    pub fn rejected_digest(&self, service: &str, digest: &str) -> Option<&Rejection> {
        self.rejections.iter().rev().find(|r| r.digests.iter().any(|(s, d)| s == service && d == digest))
    }
}

/// The last `check` or `apply` of a stack, for `status` and metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct LastRun {
    #[schemars(with = "String")]
    pub time: Timestamp,
    pub command: String,
    pub exit_code: u8,
    /// Changes the plan held (applied or not), and of what kind.
    pub pending: usize,
    pub kind: crate::plan::classify::PlanKind,
}

/// Who stopped unattended applies, why, and until when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Pause {
    pub by: String,
    #[schemars(with = "String")]
    pub since: Timestamp,
    pub reason: Option<String>,
    /// None: until `clusterup resume`.
    #[schemars(with = "Option<String>")]
    pub until: Option<Timestamp>,
}

impl Pause {
    pub fn describe(&self) -> String {
        let mut text = format!("paused by {} since {}", self.by, self.since);
        if let Some(r) = &self.reason {
            text.push_str(&format!(" ({r})"));
        }
        match &self.until {
            Some(u) => text.push_str(&format!(", until {u}")),
            None => text.push_str(", until `clusterup resume`"),
        }
        text
    }
}

pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Creates the directory (0700: backups hold compose files and env
    /// files, which hold secrets), and refuses one another user could
    /// have planted or may write: its contents decide what root runs.
    pub fn open(dir: &Path) -> Result<StateDir> {
        match private_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(crate::exit::usage(format!(
                    "cannot create state directory {}: {e}; run as root, or choose another with --state-dir \
                     (or CLUSTERUP_STATE_DIR)",
                    dir.display()
                )));
            }
            Err(e) => return Err(e).with_context(|| format!("creating state directory {}", dir.display())),
        }
        if let Some(root) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            refuse_unsafe_dir(root, true)?;
        }
        refuse_unsafe_dir(dir, false)?;
        Ok(StateDir { dir: dir.to_path_buf() })
    }

    /// Read-only use (`status`, `check`) must not create anything.
    pub fn existing(dir: &Path) -> Option<StateDir> {
        dir.is_dir().then(|| StateDir { dir: dir.to_path_buf() })
    }

    pub fn lock(&self, stack: &str) -> Result<StackLock> {
        let path = lock_file(&self.dir);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockHeld {
                    stack: stack.to_string(),
                    holder: if holder.is_empty() { "unknown".to_string() } else { holder.to_string() },
                    path: path.display().to_string(),
                }
                .into());
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        write!(file, "{}", std::process::id())?;
        file.sync_data()?;
        Ok(StackLock { _file: file })
    }

    pub fn revisions(&self) -> Result<Vec<Revision>> {
        Ok(self.journal()?.revisions)
    }

    pub fn journal(&self) -> Result<Journal> {
        read_journal(&self.dir.join(JOURNAL))
    }

    pub fn reject(&self, rejection: Rejection) -> Result<()> {
        self.append(&Event::Reject(rejection))
    }

    pub fn last_run(&self) -> Result<Option<LastRun>> {
        read_json(&self.dir.join(LAST_RUN))
    }

    pub fn record_run(&self, run: &LastRun) -> Result<()> {
        write_atomic(&self.dir.join(LAST_RUN), &serde_json::to_vec_pretty(run)?)
    }

    pub fn pause(&self) -> Result<Option<Pause>> {
        read_json(&self.dir.join(PAUSE))
    }

    /// The pause in force, if any; one whose time has passed is lifted.
    pub fn active_pause(&self, now: Timestamp) -> Result<Option<Pause>> {
        let Some(pause) = self.pause()? else { return Ok(None) };
        let expired = pause.until.is_some_and(|u| u <= now);
        if expired {
            self.clear_pause()?;
            return Ok(None);
        }
        Ok(Some(pause))
    }

    pub fn set_pause(&self, pause: &Pause) -> Result<()> {
        write_atomic(&self.dir.join(PAUSE), &serde_json::to_vec_pretty(pause)?)
    }

    pub fn clear_pause(&self) -> Result<bool> {
        match std::fs::remove_file(self.dir.join(PAUSE)) {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).context("removing the pause marker"),
        }
    }

    pub fn next_revision_id(&self) -> Result<u64> {
        Ok(self.revisions()?.last().map_or(1, |r| r.id + 1))
    }

    pub fn begin(&self, revision: &Revision) -> Result<()> {
        self.append(&Event::Begin { revision: Box::new(revision.clone()) })
    }

    pub fn end(&self, id: u64, ending: Ending) -> Result<()> {
        let Ending { finished, outcome, error, after, images } = ending;
        self.append(&Event::End { id, finished, outcome, error, after, images })
    }

    fn append(&self, event: &Event) -> Result<()> {
        let path = self.dir.join(JOURNAL);
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("opening journal {}", path.display()))?;
        // Errors quote external programs: nothing secret is journaled.
        let mut record = serde_json::to_value(event)?;
        crate::redact::scrub_json(&mut record);
        let mut line = serde_json::to_string(&record)?;
        line.push('\n');
        drop_torn_tail(&mut file)?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .with_context(|| format!("writing journal {}", path.display()))?;
        if created {
            // The new file's name lives in the directory: make it durable too.
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match read_nofollow(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Held for the life of a run; the kernel releases it if we die.
pub struct StackLock {
    _file: File,
}

/// Cuts a torn last record (no newline: the write never completed) so the
/// next record starts on a line of its own.
fn drop_torn_tail(file: &mut File) -> Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    if bytes.last() != Some(&b'\n') {
        let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        file.set_len(keep as u64)?;
        file.sync_data()?;
    }
    Ok(())
}

fn read_journal(path: &Path) -> Result<Journal> {
    let bytes = match read_nofollow(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Journal::default()),
        Err(e) => return Err(e).with_context(|| format!("reading journal {}", path.display())),
    };
    let mut revisions: Vec<Revision> = Vec::new();
    let mut rejections = Vec::new();
    for (n, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        // A record is complete only with its newline: anything after the
        // last one is a torn write, never acknowledged, so not a record.
        let Some(record) = line.strip_suffix(b"\n") else { continue };
        if record.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let event: Event = serde_json::from_slice(record).with_context(|| {
            format!(
                "journal {} line {} is damaged; move the file aside to continue \
                 (images of earlier revisions stay tagged clusterup/...)",
                path.display(),
                n + 1
            )
        })?;
        match event {
            Event::Begin { revision } => revisions.push(*revision),
            Event::Reject(r) => rejections.push(r),
            Event::End { id, finished, outcome, error, after, images } => {
                if let Some(rev) = revisions.iter_mut().rev().find(|r| r.id == id) {
                    rev.finished = Some(finished);
                    rev.outcome = Some(outcome);
                    rev.error = error;
                    rev.images = images;
                    for (service, image) in after {
                        if let Some(s) = rev.services.iter_mut().find(|s| s.service == service) {
                            s.after = Some(image);
                        }
                    }
                }
            }
        }
    }
    Ok(Journal { revisions, rejections })
}

#[cfg(test)]
mod tests {

    /// Times are now `jiff::Timestamp`s: a state dir written by the
    /// release before (times as RFC 3339 strings) still reads, and times
    /// are written as before, to the second.
    #[test]
    fn state_written_by_the_previous_release_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(JOURNAL), include_str!("../../tests/fixtures/state-0.1/journal.jsonl")).unwrap();
        std::fs::write(dir.path().join(LAST_RUN), include_str!("../../tests/fixtures/state-0.1/last_run.json"))
            .unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let revisions = state.revisions().unwrap();
        assert_eq!(revisions.len(), 1);
        assert_eq!(revisions[0].started.to_string(), "2026-11-27T15:57:50Z");
        assert_eq!(revisions[0].finished.map(|f| f.to_string()).as_deref(), Some("2026-11-27T15:58:03Z"));
        assert_eq!(revisions[0].outcome, Some(Outcome::Applied));
        assert_eq!(state.last_run().unwrap().unwrap().time.to_string(), "2026-11-27T15:58:03Z");
        let written = serde_json::to_string(&SystemClock.stamp()).unwrap();
        assert!(written.ends_with("Z\"") && !written.contains('.'), "{written}");
    }

    use super::*;
    use crate::clock::{Clock, SystemClock};
    use crate::plan::classify::PlanKind;
    use std::os::unix::fs::PermissionsExt;

    fn revision(id: u64) -> Revision {
        Revision {
            id,
            trigger: Trigger::Auto,
            started: SystemClock.stamp(),
            finished: None,
            plan: Plan { kind: PlanKind::Image, commit: None, ..Plan::empty("s") },
            services: vec![ServiceImages {
                service: "web".into(),
                image: Some("r/web:1".into()),
                before: "sha256:old".into(),
                backup_tag: "clusterup/s/web:rev-1".into(),
                after: None,
            }],
            outcome: None,
            error: None,
            images: BTreeMap::new(),
            files: None,
            files_before: None,
            restore: None,
        }
    }

    #[test]
    fn begin_and_end_fold_into_one_revision_with_private_files() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(&tmp.path().join("stack")).unwrap();
        state.begin(&revision(1)).unwrap();
        let images = BTreeMap::from([("web".to_string(), "sha256:new".to_string())]);
        let ending = Ending {
            finished: SystemClock.stamp(),
            outcome: Outcome::Applied,
            error: None,
            after: vec![("web".into(), "sha256:new".into())],
            images,
        };
        state.end(1, ending).unwrap();
        let revs = state.revisions().unwrap();
        assert_eq!(revs.len(), 1);
        assert_eq!(revs[0].outcome, Some(Outcome::Applied));
        assert_eq!(revs[0].services[0].after.as_deref(), Some("sha256:new"));
        assert_eq!(revs[0].images["web"], "sha256:new");
        assert_eq!(state.next_revision_id().unwrap(), 2);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tmp.path().join("stack")), 0o700);
        assert_eq!(mode(&tmp.path().join("stack").join(JOURNAL)), 0o600);
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_the_next_write_survives() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        state.begin(&revision(1)).unwrap();
        let path = tmp.path().join(JOURNAL);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"event\":\"end\",\"id\":1,\"finished\":\"2026-\xe2\x82\0\0\0").unwrap();
        let revs = state.revisions().unwrap();
        assert_eq!(revs.len(), 1);
        assert_eq!(revs[0].outcome, None, "the torn end record must not count");
        let ending = Ending {
            finished: SystemClock.stamp(),
            outcome: Outcome::RolledBack,
            error: Some("unhealthy".into()),
            after: vec![],
            images: BTreeMap::new(),
        };
        state.end(1, ending).unwrap();
        assert_eq!(state.revisions().unwrap()[0].outcome, Some(Outcome::RolledBack));
        let text = std::fs::read(&path).unwrap();
        assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 2, "the torn bytes are gone");

        std::fs::write(&path, b"not json\n").unwrap();
        let err = format!("{:#}", state.revisions().unwrap_err());
        assert!(err.contains("line 1 is damaged") && err.contains("move the file aside"), "{err}");
    }

    /// Issue 13, item 14: planted symlinks are not followed, and a state
    /// dir others may write is refused.
    #[test]
    fn symlinks_and_open_state_dirs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let state = StateDir::open(&tmp.path().join("root/stack")).unwrap();
        std::os::unix::fs::symlink(&victim, tmp.path().join("root/stack").join(LOCK)).unwrap();
        assert!(state.lock("s").is_err(), "a planted lock symlink is not followed");
        std::os::unix::fs::symlink(&victim, tmp.path().join("root/stack").join(JOURNAL)).unwrap();
        assert!(state.begin(&revision(1)).is_err() && state.journal().is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");

        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, tmp.path().join("root/linked")).unwrap();
        let err = format!("{:#}", StateDir::open(&tmp.path().join("root/linked")).err().unwrap());
        assert!(err.contains("is a symlink"), "{err}");

        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = format!("{:#}", StateDir::open(&open.join("stack")).err().unwrap());
        assert!(err.contains("writable by other users") && err.contains("chmod go-w"), "{err}");
        // A root an administrator moved by symlink is judged by its target.
        std::os::unix::fs::symlink(&elsewhere, tmp.path().join("moved")).unwrap();
        assert!(StateDir::open(&tmp.path().join("moved/stack")).is_ok());
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(StateDir::open(&open.join("stack")).is_ok(), "a sticky root like /tmp protects our entry");
        let mode = std::fs::metadata(open.join("stack")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        let _held = state.lock("s").unwrap();
        let err = state.lock("s").err().expect("second lock must fail");
        let held = err.downcast_ref::<LockHeld>().expect("LockHeld");
        assert_eq!(held.holder, std::process::id().to_string());
    }

    #[test]
    fn rejections_and_pauses_survive_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        state.begin(&revision(1)).unwrap();
        state
            .reject(Rejection {
                revision: 1,
                time: SystemClock.stamp(),
                commit: Some("abc".into()),
                digests: vec![("web".into(), "sha256:bad".into())],
                reason: "rolled back".into(),
            })
            .unwrap();
        let journal = StateDir::open(tmp.path()).unwrap().journal().unwrap();
        assert_eq!(journal.revisions.len(), 1);
        assert!(journal.rejected_commit("abc").is_some() && journal.rejected_commit("def").is_none());
        assert!(journal.rejected_digest("web", "sha256:bad").is_some());
        assert!(journal.rejected_digest("db", "sha256:bad").is_none());

        assert_eq!(state.pause().unwrap(), None);
        let pause =
            Pause { by: "alice".into(), since: SystemClock.stamp(), reason: Some("incident".into()), until: None };
        state.set_pause(&pause).unwrap();
        assert_eq!(state.pause().unwrap(), Some(pause));
        let mode = std::fs::metadata(tmp.path().join(PAUSE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(state.clear_pause().unwrap());
        assert_eq!(state.pause().unwrap(), None);
    }
}
