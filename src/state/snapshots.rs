//! The stack's volume snapshots on disk: each revision's in
//! `<dir>/rev-<N>/`, listed by its `manifest.json`, written last (a
//! directory without one holds nothing to restore); and the record of a
//! restore, journaled before it acts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    Volume,
    Bind,
}

impl MountKind {
    /// Whether the container mount `m` is this kind's `name`: a volume by
    /// its name, a bind mount by its host path.
    pub fn is(self, m: &crate::seams::engine::Mount, name: &str) -> bool {
        match self {
            MountKind::Volume => m.kind == "volume" && m.name == name,
            MountKind::Bind => m.kind == "bind" && m.source == name,
        }
    }
}

/// `1.2 GB`, `340 kB`, `12 B`.
pub fn bytes(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", units[unit]) }
}

/// One revision's snapshots, as `manifest.json` lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Manifest {
    pub stack: String,
    /// The revision that took them, before it changed anything.
    pub revision: u64,
    #[schemars(with = "String")]
    pub taken: Timestamp,
    pub volumes: Vec<VolumeSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VolumeSnapshot {
    pub service: String,
    /// The volume's name, or the bind mount's host path.
    pub name: String,
    pub kind: MountKind,
    /// Where the service mounts it; the archive's top directory is its
    /// last component.
    pub path: String,
    /// The file, in the manifest's directory: a gzip-compressed tar.
    pub file: String,
    /// The archive's size, uncompressed, and the file's.
    pub bytes: u64,
    pub compressed_bytes: u64,
    /// Of the file as stored (`sha256sum FILE`).
    pub sha256: String,
    pub entries: u64,
    /// How the service was kept still: `stopped`, `pre_backup`, or
    /// `not_running`.
    pub quiesced: String,
    pub seconds: f64,
}

impl Manifest {
    pub fn total(&self) -> (u64, u64) {
        self.volumes.iter().fold((0, 0), |(b, c), v| (b + v.bytes, c + v.compressed_bytes))
    }

    pub fn describe(&self) -> String {
        let (raw, stored) = self.total();
        let names: Vec<&str> = self.volumes.iter().map(|v| v.name.as_str()).collect();
        format!("{} ({} of data, {} stored)", names.join(", "), bytes(raw), bytes(stored))
    }
}

pub fn revision_dir(dir: &Path, revision: u64) -> PathBuf {
    dir.join(format!("rev-{revision}"))
}

/// The snapshots kept for the stack, oldest first.
pub fn list(dir: &Path) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    // Only clusterup's own directories count; a manifest that does not
    // read names nothing that could be restored.
    for entry in entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("rev-")) {
        if let Ok(text) = std::fs::read(entry.path().join(MANIFEST))
            && let Ok(manifest) = serde_json::from_slice(&text)
        {
            out.push(manifest);
        }
    }
    out.sort_by_key(|m| m.revision);
    Ok(out)
}

/// Keeps the snapshots of the last `keep` revisions that took any, and
/// removes older ones and whatever an interrupted snapshot left (a
/// directory without a manifest) but `current`'s.
pub fn prune(dir: &Path, keep: usize, current: Option<u64>) -> Result<Vec<u64>> {
    let manifests = list(dir)?;
    let kept: BTreeSet<u64> = manifests.iter().rev().take(keep).map(|m| m.revision).chain(current).collect();
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(removed) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(revision) = name.strip_prefix("rev-").and_then(|n| n.parse::<u64>().ok()) else { continue };
        if !kept.contains(&revision) {
            std::fs::remove_dir_all(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
            removed.push(revision);
        }
    }
    removed.sort();
    Ok(removed)
}

/// A restore in progress: where each snapshot is unpacked beside its
/// volume, and where the volume's content goes aside while the restored
/// copy takes its place. Everything is a rename within the volume's own
/// directory, so nothing is copied twice and nothing is deleted until the
/// restored services are healthy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Restore {
    /// The revision whose snapshots are restored, and the one restoring.
    pub from: u64,
    pub by: u64,
    pub project: String,
    pub targets: Vec<RestoreTarget>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RestoreTarget {
    pub name: String,
    pub kind: MountKind,
    /// The directory the service sees: the volume's `_data`, or the bind
    /// mount's source.
    pub data: PathBuf,
    /// The archive's top directory (the mount path's last component).
    pub top: String,
}

impl RestoreTarget {
    fn beside(&self, what: &str, by: u64) -> PathBuf {
        let name = self.data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.data.with_file_name(format!(".{name}.clusterup-{what}-{by}"))
    }
    /// Where the snapshot is unpacked, before it moves in.
    pub fn staging(&self, by: u64) -> PathBuf {
        self.beside("restore", by)
    }
    /// The volume's content while the restored copy is tried.
    pub fn aside(&self, by: u64) -> PathBuf {
        self.beside("aside", by)
    }
    /// The old content on its way out, once the restore is kept: a
    /// commit has begun and is finished, never undone.
    pub fn discard(&self, by: u64) -> PathBuf {
        self.beside("discard", by)
    }
    /// The restored copy on its way out: an undo has begun and is
    /// finished.
    pub fn undone(&self, by: u64) -> PathBuf {
        self.beside("undone", by)
    }
}
