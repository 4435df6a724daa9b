//! volumes: copies of a service's data, taken before a revision changes a
//! service that opted in (`backup_volumes`), and put back only when an
//! operator asks (`rollback --restore-volumes`).
//!
//! A snapshot is the engine's archive of the mount (the archive API, from
//! the service's own container: no helper image), gzip-compressed into
//! `<dir>/rev-<N>/`, checked against its sha256 and read back whole before
//! the revision goes on, and listed in that directory's `manifest.json`,
//! written last: a directory without one holds nothing to restore.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::execute::Files;
use crate::files::{private_dir, sync_dir, write_atomic};
use crate::labels::ServicePolicy;
use crate::output::Printer;
use crate::plan::classify::{Change, ChangeKind, Plan};
use crate::plan::observation::Observation;
use crate::redact::hex;
use crate::seams::engine::{ContainerInfo, Engine};
use crate::state::snapshots::MANIFEST;
pub use crate::state::snapshots::{
    Manifest, MountKind, Restore, RestoreTarget, VolumeSnapshot, bytes, list, prune, revision_dir,
};

/// Room left free beside a snapshot, for the engine, the journal and logs.
const RESERVE: u64 = 64 << 20;
/// How often a snapshot being written checks the room it has left.
const SPACE_EVERY: u64 = 16 << 20;

/// What one volume or bind mount of a service is copied from.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub service: String,
    /// The container copied from.
    pub container: String,
    /// The volume's name, or the bind mount's host path.
    pub name: String,
    pub kind: MountKind,
    /// Where it is mounted in the container.
    pub path: String,
    /// Its size on this host, when it can be measured here.
    pub size: Option<u64>,
}

/// The snapshots a revision takes, and what it leaves out and why.
#[derive(Debug, Clone, Default)]
pub struct Snapshots {
    pub sources: Vec<Source>,
    pub not_copied: Vec<String>,
    /// How each service is kept still while it is copied: its `pre_backup`
    /// hooks (host, container), or none: it is stopped.
    pub hooks: BTreeMap<String, (Option<String>, Option<String>)>,
    /// Each service's running containers: all are kept still together.
    pub running: BTreeMap<String, Vec<String>>,
}

impl Snapshots {
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The bytes the copies are expected to take (uncompressed: the worst
    /// case), and whether every source could be measured.
    fn estimate(&self) -> (u64, bool) {
        let known = self.sources.iter().filter_map(|s| s.size).sum();
        (known, self.sources.iter().all(|s| s.size.is_some()))
    }
}

/// Every volume and listed bind mount of the services the plan changes
/// and that opted in, from their containers as they are now.
pub fn select(
    engine: &dyn Engine,
    plan: &Plan,
    observation: &Observation,
    policies: &BTreeMap<String, ServicePolicy>,
) -> Result<Snapshots> {
    let mut out = Snapshots::default();
    let mut seen = BTreeSet::new();
    for (change, policy) in opted_in(plan, policies) {
        let Some(observed) = observation.services.get(&change.service) else { continue };
        let hooks = (policy.host_hooks.pre_backup.clone(), policy.container_hooks.pre_backup.clone());
        for c in &observed.containers {
            for m in &c.mounts {
                let (kind, name) = match m.kind.as_str() {
                    "volume" => (MountKind::Volume, m.name.clone()),
                    "bind" if policy.backup_binds.iter().any(|b| same_path(b, &m.source)) => {
                        (MountKind::Bind, m.source.clone())
                    }
                    _ => continue,
                };
                if !seen.insert(name.clone()) {
                    continue;
                }
                let size = match kind {
                    MountKind::Volume => {
                        let v = engine.volume(&name)?;
                        if !v.is_plain_local() {
                            out.not_copied.push(format!(
                                "{}: volume {name} is not copied: its data is not on this host (driver {}{})",
                                change.service,
                                v.driver,
                                if v.options.is_empty() { "" } else { " with options" }
                            ));
                            continue;
                        }
                        dir_size(Path::new(&v.mountpoint))
                    }
                    MountKind::Bind => {
                        if !Path::new(&name).is_dir() {
                            out.not_copied.push(format!(
                                "{}: bind mount {name} is not copied: only directories are",
                                change.service
                            ));
                            continue;
                        }
                        dir_size(Path::new(&name))
                    }
                };
                out.sources.push(Source {
                    service: change.service.clone(),
                    container: c.id.clone(),
                    name,
                    kind,
                    path: m.destination.clone(),
                    size,
                });
            }
        }
        out.hooks.insert(change.service.clone(), hooks);
    }
    // Kept still for the copy: the service's containers, and any other of
    // the project's that mounts what is copied.
    for source in &out.sources {
        let users = observation.services.values().flat_map(|o| &o.containers).filter(|c| {
            c.is_running() && (c.service == source.service || c.mounts.iter().any(|m| source.kind.is(m, &source.name)))
        });
        let running = out.running.entry(source.service.clone()).or_default();
        for c in users {
            if !running.contains(&c.id) {
                running.push(c.id.clone());
            }
        }
    }
    Ok(out)
}

/// The changes to services that exist and opted in: their volumes are
/// copied before the revision acts.
pub fn opted_in<'a>(
    plan: &'a Plan,
    policies: &'a BTreeMap<String, ServicePolicy>,
) -> impl Iterator<Item = (&'a Change, &'a ServicePolicy)> {
    plan.changes
        .iter()
        .filter(|c| c.kind != ChangeKind::Create)
        .filter_map(|c| Some((c, policies.get(&c.service).filter(|p| p.backup_volumes)?)))
}

fn same_path(configured: &Path, mounted: &str) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canonical(configured) == canonical(Path::new(mounted))
}

/// What the files under `dir` take (None where `dir` is not on this host).
fn dir_size(dir: &Path) -> Option<u64> {
    let mut total = 0;
    let mut stack = vec![std::fs::symlink_metadata(dir).ok().filter(|m| m.is_dir()).map(|_| dir.to_path_buf())?];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Some(total)
}

/// Bytes free to this user in the filesystem holding `dir`.
fn available(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a statvfs to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("reading free space of {}", dir.display()));
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The nearest existing directory at or above `dir`: where it will be made.
fn existing_ancestor(dir: &Path) -> &Path {
    dir.ancestors().find(|d| d.is_dir()).unwrap_or(Path::new("/"))
}

/// Err: why the snapshots do not fit in `dir`, for an operator: the
/// revision is held back, nothing is written.
pub fn check_space(snapshots: &Snapshots, dir: &Path) -> Result<(), String> {
    let (estimate, all_known) = snapshots.estimate();
    let margin = estimate / 10 + RESERVE;
    let free = available(existing_ancestor(dir)).map_err(|e| format!("{e:#}"))?;
    if estimate + margin > free {
        return Err(format!(
            "not enough space for the volume snapshots in {}: they need about {} ({} of data{} and {} to spare), \
             {} is free; free some space, lower keep_volume_snapshots or set backup_dir to a larger disk",
            dir.display(),
            bytes(estimate + margin),
            bytes(estimate),
            if all_known { "" } else { " that could be measured" },
            bytes(margin),
            bytes(free),
        ));
    }
    Ok(())
}

/// What taking snapshots needs from the revision.
pub struct Taker<'a> {
    pub engine: &'a dyn Engine,
    pub printer: &'a Printer,
    pub stack: &'a str,
    pub dir: &'a Path,
    pub hook_timeout: Duration,
}

impl Taker<'_> {
    /// Copies every source into `rev-<revision>/`, each service kept still
    /// as configured and running again afterwards as it was. On any error
    /// the partial directory goes and the error says what happened.
    pub fn take(&self, snapshots: &Snapshots, revision: u64, taken: Timestamp) -> Result<Manifest> {
        let out = revision_dir(self.dir, revision);
        let result = self.take_into(snapshots, &out, revision, taken);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&out);
        }
        result
    }

    fn take_into(&self, snapshots: &Snapshots, out: &Path, revision: u64, taken: Timestamp) -> Result<Manifest> {
        private_dir(out).with_context(|| format!("creating {}", out.display()))?;
        sync_dir(self.dir)?;
        let mut volumes = Vec::new();
        let services: BTreeSet<&str> = snapshots.sources.iter().map(|s| s.service.as_str()).collect();
        for service in services {
            let sources: Vec<&Source> = snapshots.sources.iter().filter(|s| s.service == service).collect();
            let (host, inside) = snapshots.hooks.get(service).cloned().unwrap_or_default();
            let running = snapshots.running.get(service).cloned().unwrap_or_default();
            let quiesced = if running.is_empty() {
                "not_running"
            } else if host.is_some() || inside.is_some() {
                self.pre_backup(service, host.as_deref(), inside.as_deref(), &running[0])?;
                "pre_backup"
            } else {
                "stopped"
            };
            let mut stopped = Vec::new();
            let mut written = Vec::new();
            let copied = (|| {
                if quiesced == "stopped" {
                    self.printer.step(format!("stopping {service} to copy its volumes"));
                    for id in &running {
                        self.engine.stop_container(id)?;
                        stopped.push(id);
                    }
                }
                for (i, source) in sources.iter().enumerate() {
                    let file = format!("{}-{i}.tar.gz", file_stem(service, &source.name));
                    written.push(self.copy(source, out, &file, quiesced)?);
                }
                Ok::<(), anyhow::Error>(())
            })();
            let not_started: Vec<String> = stopped
                .iter()
                .filter_map(|id| self.engine.start_container(id).err().map(|e| format!("{e:#}")))
                .collect();
            if !not_started.is_empty() {
                let copy = copied.err().map(|e| format!(" (and the copy failed: {e:#})")).unwrap_or_default();
                bail!(
                    "{service} was stopped for the copy and did not start again: {}{copy}; start it by hand \
                     (docker compose up -d {service})",
                    not_started.join("; ")
                );
            }
            copied?;
            // Read back once the service runs again: its downtime is the
            // copy's alone.
            for mut snapshot in written {
                self.settle(out, &mut snapshot)?;
                volumes.push(snapshot);
            }
        }
        let manifest = Manifest { stack: self.stack.to_string(), revision, taken, volumes };
        write_atomic(&out.join(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)?;
        Ok(manifest)
    }

    fn pre_backup(&self, service: &str, host: Option<&str>, inside: Option<&str>, container: &str) -> Result<()> {
        let env = [
            ("CLUSTERUP_STACK", self.stack.to_string()),
            ("CLUSTERUP_HOOK", "pre-backup".to_string()),
            ("CLUSTERUP_SERVICE", service.to_string()),
            ("CLUSTERUP_CONTAINER", container.to_string()),
        ];
        for (command, place) in [(host, None), (inside, Some(container))] {
            let Some(command) = command else { continue };
            let whence = if place.is_some() { " in the container" } else { "" };
            self.printer.step(format!("running {service}'s pre-backup hook{whence}: {command}"));
            crate::seams::hooks::run(command, place, &env, self.hook_timeout)
                .map_err(|e| anyhow!("{service}'s pre-backup hook failed ({e}); its volumes were not copied"))?;
        }
        Ok(())
    }

    /// One source into `out`, under a temporary name until `settle`d.
    fn copy(&self, source: &Source, out: &Path, file: &str, quiesced: &str) -> Result<VolumeSnapshot> {
        let what = match source.kind {
            MountKind::Volume => format!("volume {}", source.name),
            MountKind::Bind => format!("bind mount {}", source.name),
        };
        let started = Instant::now();
        let partial = partial_name(out, file);
        let written = (|| {
            let target = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
            let guarded = SpaceGuard { inner: target, dir: out.to_path_buf(), since_check: 0 };
            let hashed = Hashing { inner: guarded, hasher: Sha256::new(), bytes: 0 };
            let mut gz =
                Counting { inner: flate2::write::GzEncoder::new(hashed, flate2::Compression::fast()), bytes: 0 };
            self.engine.export(&source.container, &source.path, &mut gz)?;
            let raw = gz.bytes;
            let hashed = gz.inner.finish()?;
            hashed.inner.inner.sync_all()?;
            Ok::<_, anyhow::Error>((raw, hashed.bytes, hex(&hashed.hasher.finalize())))
        })();
        let (raw, stored, sha256) = match written {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e.context(format!("copying {what} of {}", source.service)));
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        self.printer.step(format!(
            "copied {what} of {}: {} of data in {seconds:.1} s, {} stored",
            source.service,
            bytes(raw),
            bytes(stored),
        ));
        Ok(VolumeSnapshot {
            service: source.service.clone(),
            name: source.name.clone(),
            kind: source.kind,
            path: source.path.clone(),
            file: file.to_string(),
            bytes: raw,
            compressed_bytes: stored,
            sha256,
            entries: 0,
            quiesced: quiesced.to_string(),
            seconds: (seconds * 1000.0).round() / 1000.0,
        })
    }

    /// Reads a copy back whole against its checksum, then gives it its
    /// name: only a verified copy is ever a snapshot.
    fn settle(&self, out: &Path, snapshot: &mut VolumeSnapshot) -> Result<()> {
        let partial = partial_name(out, &snapshot.file);
        snapshot.entries = verify(&partial, &snapshot.sha256, snapshot.bytes)
            .with_context(|| format!("checking the copy of {} of {}", snapshot.name, snapshot.service))?;
        let path = out.join(&snapshot.file);
        std::fs::rename(&partial, &path).with_context(|| format!("renaming {}", partial.display()))?;
        sync_dir(out)?;
        self.printer.detail(format!("checked {}: sha256 {}", path.display(), snapshot.sha256));
        Ok(())
    }
}

fn partial_name(out: &Path, file: &str) -> PathBuf {
    out.join(format!(".{file}.partial"))
}

/// A file name from a service and volume: what a path allows, readable.
fn file_stem(service: &str, name: &str) -> String {
    let clean = |s: &str| -> String {
        let mapped: String =
            s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        mapped.trim_matches('_').chars().take(60).collect()
    };
    format!("{}--{}", clean(service), clean(name))
}

/// Reads the snapshot back whole: its sha256 must match, it must
/// decompress to `raw` bytes and be a complete tar archive. The number of
/// entries it holds.
pub fn verify(path: &Path, sha256: &str, raw: u64) -> Result<u64> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let hashing = Hashing { inner: BufReader::new(file), hasher: Sha256::new(), bytes: 0 };
    let mut decoded = Counting { inner: flate2::read::GzDecoder::new(hashing), bytes: 0 };
    let mut entries = 0;
    {
        let mut archive = tar::Archive::new(&mut decoded);
        for entry in archive.entries()? {
            entry?;
            entries += 1;
        }
    }
    std::io::copy(&mut decoded, &mut std::io::sink())?;
    let (unpacked, mut hashing) = (decoded.bytes, decoded.inner.into_inner());
    std::io::copy(&mut hashing, &mut std::io::sink())?;
    let found = hex(&hashing.hasher.finalize());
    if found != sha256 {
        bail!("{} has sha256 {found}, not {sha256}", path.display());
    }
    if unpacked != raw {
        bail!("{} holds {unpacked} bytes of archive, not {raw}", path.display());
    }
    Ok(entries)
}

/// Counts what goes through.
struct Counting<T> {
    inner: T,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Hashes and counts what goes through.
struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Stops a snapshot before it fills the disk: the estimate was only one.
struct SpaceGuard {
    inner: File,
    dir: PathBuf,
    since_check: u64,
}

impl Write for SpaceGuard {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.since_check >= SPACE_EVERY {
            self.since_check = 0;
            let free = available(&self.dir).map_err(std::io::Error::other)?;
            if free < RESERVE {
                return Err(std::io::Error::other(format!(
                    "{} has only {} left; the snapshot was given up before the disk filled",
                    self.dir.display(),
                    bytes(free)
                )));
            }
        }
        let n = self.inner.write(buf)?;
        self.since_check += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Restore {
    /// Checks each snapshot of `manifest` against its checksum, finds
    /// where its volume's data is on this host, and unpacks it beside it,
    /// while the services still run. Nothing the services see changes.
    pub fn prepare(
        engine: &dyn Engine,
        printer: &Printer,
        dir: &Path,
        manifest: &Manifest,
        project: &str,
        by: u64,
    ) -> Result<Restore> {
        let snapshot_dir = revision_dir(dir, manifest.revision);
        let mut targets = Vec::new();
        for v in &manifest.volumes {
            let data = match v.kind {
                MountKind::Volume => {
                    let info = engine.volume(&v.name).with_context(|| {
                        format!("volume {} is gone: create it (docker volume create {}) first", v.name, v.name)
                    })?;
                    if !info.is_plain_local() {
                        bail!(
                            "volume {} (driver {}) is not a plain local volume: restore it by hand",
                            v.name,
                            info.driver
                        );
                    }
                    PathBuf::from(info.mountpoint)
                }
                MountKind::Bind => PathBuf::from(&v.name),
            };
            if !data.is_dir() {
                bail!(
                    "{} of volume {} is not on this host (is the engine remote?): restore it by hand, see the README",
                    data.display(),
                    v.name
                );
            }
            let others: Vec<String> = match v.kind {
                MountKind::Volume => engine
                    .volume_users(&v.name)?
                    .into_iter()
                    .filter(|(p, _)| p != project)
                    .map(|(_, c)| c.name)
                    .collect(),
                MountKind::Bind => Vec::new(),
            };
            if !others.is_empty() {
                bail!(
                    "volume {} is also used by {}, outside this stack: stop them or restore by hand",
                    v.name,
                    others.join(", ")
                );
            }
            let top = Path::new(&v.path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            targets.push((RestoreTarget { name: v.name.clone(), kind: v.kind, data, top }, v));
        }
        let restore = Restore {
            from: manifest.revision,
            by,
            project: project.to_string(),
            targets: targets.iter().map(|(t, _)| t.clone()).collect(),
        };
        let unpacked = targets.iter().try_for_each(|(target, v)| {
            let file = snapshot_dir.join(&v.file);
            printer.step(format!("checking the snapshot of {} ({})", v.name, bytes(v.compressed_bytes)));
            verify(&file, &v.sha256, v.bytes).with_context(|| format!("the snapshot of {} is damaged", v.name))?;
            let room = available(existing_ancestor(&target.data))?;
            if v.bytes + RESERVE > room {
                bail!(
                    "restoring {} needs {} beside it, {} is free there: its current content stays until the \
                     restored copy is healthy",
                    v.name,
                    bytes(v.bytes + RESERVE),
                    bytes(room)
                );
            }
            unpack(&file, &target.staging(by), &target.top)
                .with_context(|| format!("unpacking the snapshot of {} beside it", v.name))?;
            printer.step(format!("unpacked the snapshot of {} beside it", v.name));
            Ok::<(), anyhow::Error>(())
        });
        // Nothing the services see was touched: only the unpacked copies go.
        match unpacked {
            Ok(()) => Ok(restore),
            Err(e) => Err(match restore.discard_staging() {
                Ok(()) => e,
                Err(u) => e.context(format!("removing what was unpacked failed too: {u:#}")),
            }),
        }
    }

    /// The project's containers that mount a target.
    fn users(&self, engine: &dyn Engine) -> Result<Vec<ContainerInfo>> {
        let containers = engine.containers(&self.project)?;
        Ok(containers
            .into_iter()
            .filter(|c| c.mounts.iter().any(|m| self.targets.iter().any(|t| t.kind.is(m, &t.name))))
            .collect())
    }

    /// How far a restore got, from what is beside each volume: every step
    /// is a rename, and each deletion first renames what it deletes to a
    /// name that says which way the restore was going.
    pub fn progress(&self) -> Progress {
        let any = |f: &dyn Fn(&RestoreTarget) -> PathBuf| self.targets.iter().any(|t| f(t).exists());
        if any(&|t| t.discard(self.by)) {
            Progress::Committing
        } else if any(&|t| t.undone(self.by)) {
            Progress::Undoing
        } else if self.targets.iter().all(|t| t.aside(self.by).exists() && t.data.exists()) {
            Progress::Swapped
        } else {
            Progress::Prepared
        }
    }

    /// The services were stopped: each volume's content goes aside, the
    /// unpacked snapshot in.
    fn swap(&self) -> Result<()> {
        for t in &self.targets {
            let (aside, staging) = (t.aside(self.by), t.staging(self.by));
            std::fs::rename(&t.data, &aside)
                .with_context(|| format!("moving {} aside to {}", t.data.display(), aside.display()))?;
            std::fs::rename(staging.join(&t.top), &t.data)
                .with_context(|| format!("moving the restored copy into {}", t.data.display()))?;
            sync_parent(&t.data)?;
            remove(&staging)?;
        }
        Ok(())
    }

    /// Puts each volume's content back as it was before this restore,
    /// from whatever point a run stopped at, and removes the unpacked copy.
    pub fn undo(&self) -> Result<()> {
        for t in &self.targets {
            let (aside, undone) = (t.aside(self.by), t.undone(self.by));
            if aside.exists() {
                if t.data.exists() {
                    std::fs::rename(&t.data, &undone)
                        .with_context(|| format!("moving the restored copy {} out", t.data.display()))?;
                }
                std::fs::rename(&aside, &t.data)
                    .with_context(|| format!("moving {} back to {}", aside.display(), t.data.display()))?;
                sync_parent(&t.data)?;
            }
        }
        for t in &self.targets {
            remove(&t.undone(self.by))?;
        }
        self.discard_staging()
    }

    /// The restored services are healthy: what was moved aside goes.
    pub fn commit(&self) -> Result<()> {
        for t in &self.targets {
            let (aside, discard) = (t.aside(self.by), t.discard(self.by));
            if aside.exists() {
                std::fs::rename(&aside, &discard).with_context(|| format!("renaming {}", aside.display()))?;
                sync_parent(&discard)?;
            }
        }
        for t in &self.targets {
            remove(&t.discard(self.by))?;
        }
        Ok(())
    }

    /// Removes the unpacked copies not moved in.
    pub fn discard_staging(&self) -> Result<()> {
        self.targets.iter().try_for_each(|t| remove(&t.staging(self.by)))
    }

    /// Where a content that is neither live nor on its way out remains:
    /// for the operator, after a restore that could not be undone.
    pub fn left_aside(&self) -> Vec<PathBuf> {
        self.targets.iter().map(|t| t.aside(self.by)).filter(|a| a.exists()).collect()
    }
}

/// How far a restore got (see `Restore::progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Unpacked beside; what the services see may be partly swapped.
    Prepared,
    /// Every volume holds the restored copy, its old content aside.
    Swapped,
    Committing,
    Undoing,
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

fn sync_parent(path: &Path) -> Result<()> {
    sync_dir(path.parent().unwrap_or(Path::new("/")))
}

/// Moves the volumes' content: the stack's files first (the chain's
/// inner `Files`), then the data.
pub struct WithRestore<'a> {
    pub files: Option<&'a dyn Files>,
    pub restore: &'a Restore,
    pub engine: &'a dyn Engine,
    /// Containers stopped for the swap, started again if it is undone.
    pub stopped: Mutex<Vec<String>>,
}

impl<'a> WithRestore<'a> {
    pub fn new(files: Option<&'a dyn Files>, restore: &'a Restore, engine: &'a dyn Engine) -> WithRestore<'a> {
        WithRestore { files, restore, engine, stopped: Mutex::default() }
    }

    fn stop_users(&self) -> Result<()> {
        for c in self.restore.users(self.engine)?.into_iter().filter(ContainerInfo::is_running) {
            self.engine.stop_container(&c.id)?;
            self.stopped.lock().unwrap().push(c.id);
        }
        Ok(())
    }
}

impl Files for WithRestore<'_> {
    fn deploy_new(&self) -> Result<()> {
        if let Some(f) = self.files {
            f.deploy_new()?;
        }
        self.stop_users()?;
        self.restore.swap()?;
        crate::signals::crash_point("swapped");
        Ok(())
    }

    fn restore_old(&self) -> Result<()> {
        let r = self.restore;
        let undone = self.stop_users().and_then(|()| r.undo());
        for id in self.stopped.lock().unwrap().drain(..) {
            // Gone (recreated by the revision): compose brings it back.
            let _ = self.engine.start_container(&id);
        }
        let files = self.files.map_or(Ok(()), |f| f.restore_old());
        undone.and(files)
    }

    fn copies(&self) -> (Option<String>, Option<String>) {
        self.files.map(Files::copies).unwrap_or_default()
    }

    fn kept_note(&self) -> Option<String> {
        let files = self.files.and_then(Files::kept_note);
        let data = "the volumes hold what they held before the restore".to_string();
        Some(files.map_or(data.clone(), |f| format!("{f}; {data}")))
    }
}

/// Unpacks a snapshot into `dest` (made here): its top directory `top`
/// becomes `dest/top`. The tar crate keeps every path, link and link
/// target inside `dest`; owners, modes and times are as archived.
pub fn unpack(file: &Path, dest: &Path, top: &str) -> Result<()> {
    remove(dest)?;
    private_dir(dest).with_context(|| format!("creating {}", dest.display()))?;
    let reader = flate2::read::GzDecoder::new(BufReader::new(File::open(file)?));
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    archive.unpack(dest)?;
    if !dest.join(top).is_dir() {
        bail!("{} holds no directory {top}", file.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry's header, owned by root.
    fn header(kind: tar::EntryType, size: usize, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size as u64);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// What the engine's archive API sends for a mount at `/data`.
    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = header(tar::EntryType::Directory, 0, 0o750);
        builder.append_data(&mut dir, "data/", std::io::empty()).unwrap();
        for (name, content) in files {
            let mut h = header(tar::EntryType::Regular, content.len(), 0o640);
            builder.append_data(&mut h, format!("data/{name}"), *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn snapshot(tmp: &Path, files: &[(&str, &[u8])]) -> (PathBuf, String, u64) {
        let raw = archive(files);
        let path = tmp.join("s.tar.gz");
        let hashed = Hashing { inner: File::create(&path).unwrap(), hasher: Sha256::new(), bytes: 0 };
        let mut gz = flate2::write::GzEncoder::new(hashed, flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let hashed = gz.finish().unwrap();
        (path, hex(&hashed.hasher.finalize()), raw.len() as u64)
    }

    #[test]
    fn a_snapshot_is_verified_by_checksum_length_and_a_complete_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, sha, raw) = snapshot(tmp.path(), &[("a", b"alpha"), ("sub/b", b"beta")]);
        assert_eq!(verify(&path, &sha, raw).unwrap(), 3, "the top directory and two files");
        let err = verify(&path, &"0".repeat(64), raw).unwrap_err();
        assert!(format!("{err:#}").contains("has sha256"), "{err:#}");
        let err = verify(&path, &sha, raw + 1).unwrap_err();
        assert!(format!("{err:#}").contains("bytes of archive"), "{err:#}");

        // Cut short: a half-written file is never taken as good.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(verify(&path, &sha, raw).is_err());
    }

    #[test]
    fn unpacking_keeps_modes_under_the_mounts_name() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let (path, _, _) = snapshot(tmp.path(), &[("a", b"alpha"), ("sub/b", b"beta")]);
        let dest = tmp.path().join("restored");
        unpack(&path, &dest, "data").unwrap();
        let data = dest.join("data");
        assert_eq!(std::fs::read(data.join("a")).unwrap(), b"alpha");
        assert_eq!(std::fs::read(data.join("sub/b")).unwrap(), b"beta");
        assert_eq!(std::fs::metadata(data.join("a")).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o750);
        assert!(unpack(&path, &dest, "other").is_err(), "the mount's own directory must be in it");
    }

    /// A snapshot file is only as trusted as the disk it sits on: a link
    /// in it never makes root write, or link, outside where it unpacks.
    #[test]
    fn an_archive_cannot_reach_outside_where_it_unpacks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"host file").unwrap();
        type Escape<'a> = &'a dyn Fn(&mut tar::Builder<Vec<u8>>);
        let escapes: [Escape; 2] = [
            &|b| {
                let mut link = header(tar::EntryType::Symlink, 0, 0o777);
                b.append_link(&mut link, "data/x", &outside).unwrap();
                let mut file = header(tar::EntryType::Regular, 4, 0o644);
                b.append_data(&mut file, "data/x/planted", &b"evil"[..]).unwrap();
            },
            &|b| {
                let mut link = header(tar::EntryType::Link, 0, 0o644);
                b.append_link(&mut link, "data/secret", outside.join("secret")).unwrap();
            },
        ];
        for (i, escape) in escapes.iter().enumerate() {
            let mut builder = tar::Builder::new(Vec::new());
            escape(&mut builder);
            let raw = builder.into_inner().unwrap();
            let path = tmp.path().join(format!("evil-{i}.tar.gz"));
            let mut gz = flate2::write::GzEncoder::new(File::create(&path).unwrap(), flate2::Compression::fast());
            gz.write_all(&raw).unwrap();
            gz.finish().unwrap();
            let dest = tmp.path().join(format!("dest-{i}"));
            let _ = unpack(&path, &dest, "data");
            assert!(!outside.join("planted").exists(), "case {i}: wrote through a symlink");
            let linked = dest.join("data/secret");
            assert!(!linked.exists(), "case {i}: hard-linked a host file into the volume");
        }
    }

    /// The swap is undone from any point a run stopped at, an undo cut
    /// short included; a commit cut short is finished, never undone.
    #[test]
    fn a_restore_is_undone_or_finished_from_wherever_it_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("_data");
        let target = RestoreTarget { name: "v".into(), kind: MountKind::Volume, data: data.clone(), top: "d".into() };
        let restore = Restore { from: 1, by: 2, project: "p".into(), targets: vec![target.clone()] };
        let [aside, staging, undone, discard] =
            [target.aside(2), target.staging(2), target.undone(2), target.discard(2)];
        let reset = || {
            for p in [&data, &aside, &staging, &undone, &discard] {
                let _ = std::fs::remove_dir_all(p);
            }
            std::fs::create_dir(&data).unwrap();
            std::fs::write(data.join("live"), b"now").unwrap();
            std::fs::create_dir_all(staging.join("d")).unwrap();
            std::fs::write(staging.join("d/old"), b"then").unwrap();
        };
        let moves: [&dyn Fn(); 5] = [
            &|| {},
            &|| std::fs::rename(&data, &aside).unwrap(),
            &|| restore.swap().unwrap(),
            // An undo killed after moving the restored copy out.
            &|| {
                restore.swap().unwrap();
                std::fs::rename(&data, &undone).unwrap();
            },
            // ... and after moving the old content back, before tidying.
            &|| {
                restore.swap().unwrap();
                std::fs::rename(&data, &undone).unwrap();
                std::fs::rename(&aside, &data).unwrap();
            },
        ];
        let expected =
            [Progress::Prepared, Progress::Prepared, Progress::Swapped, Progress::Undoing, Progress::Undoing];
        for (i, step) in moves.iter().enumerate() {
            reset();
            step();
            assert_eq!(restore.progress(), expected[i], "step {i}");
            restore.undo().unwrap();
            assert_eq!(std::fs::read(data.join("live")).unwrap(), b"now", "stopped at step {i}");
            assert!(!data.join("old").exists());
            assert!([&aside, &staging, &undone, &discard].iter().all(|p| !p.exists()), "step {i}");
        }
        reset();
        restore.swap().unwrap();
        std::fs::rename(&aside, &discard).unwrap();
        assert_eq!(restore.progress(), Progress::Committing, "a commit cut short");
        restore.commit().unwrap();
        assert_eq!(std::fs::read(data.join("old")).unwrap(), b"then");
        assert!(!discard.exists() && !aside.exists(), "what was moved aside goes once the service is healthy");
    }

    #[test]
    fn retention_keeps_the_last_snapshots_and_drops_unfinished_ones() {
        let tmp = tempfile::tempdir().unwrap();
        for rev in [1, 3, 4, 6] {
            let dir = revision_dir(tmp.path(), rev);
            std::fs::create_dir_all(&dir).unwrap();
            if rev != 6 {
                let m = Manifest { stack: "s".into(), revision: rev, taken: Timestamp::UNIX_EPOCH, volumes: vec![] };
                std::fs::write(dir.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
            }
        }
        assert_eq!(prune(tmp.path(), 2, None).unwrap(), [1, 6]);
        assert_eq!(list(tmp.path()).unwrap().iter().map(|m| m.revision).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn space_is_checked_against_the_estimate_and_a_margin() {
        let tmp = tempfile::tempdir().unwrap();
        let source = |size| Source {
            service: "db".into(),
            container: "c".into(),
            name: "v".into(),
            kind: MountKind::Volume,
            path: "/data".into(),
            size: Some(size),
        };
        let small = Snapshots { sources: vec![source(1000)], ..Default::default() };
        assert!(check_space(&small, &tmp.path().join("not/yet")).is_ok());
        let huge = Snapshots { sources: vec![source(u64::MAX / 4)], ..Default::default() };
        let err = check_space(&huge, tmp.path()).unwrap_err();
        assert!(err.contains("not enough space for the volume snapshots") && err.contains("is free"), "{err}");
    }
}
