//! snapshot: copies of a directory stack's files, so a failed edit can be
//! undone and `rollback --to N` brings back revision N's files. Nothing
//! else keeps them: people edit these files in place.
//!
//! Kept: the compose files, `.env` and every other regular file at the
//! top of the stack directory (up to 1 MiB each), and, anywhere inside
//! it, the env files the compose files name, bind-mounted files,
//! read-only bind-mounted directories, and config and secret files. Not
//! kept: read-write bind-mounted directories (data, never restored),
//! anything outside the stack directory, and whatever would take the
//! copy past 16 MiB (listed in the manifest as skipped).
//!
//! Each copy lives under `<state>/files/<id>/`, `id` a hash of its
//! contents, so the same files are kept once; `good` names the files
//! last seen to match what runs.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::redact::hex;
use crate::seams::compose::ComposeModel;

/// All files of one copy together.
pub const TOTAL_CAP: u64 = 16 * 1024 * 1024;
/// A top-level file no compose file names (an archive left beside them).
pub const UNNAMED_FILE_CAP: u64 = 1024 * 1024;

const MANIFEST: &str = "manifest.json";
const TREE: &str = "tree";
const GOOD: &str = "good";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<Entry>,
    #[serde(default)]
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the stack directory.
    pub path: PathBuf,
    pub sha256: String,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// A file worth keeping, and whether the compose files name it.
struct Candidate {
    path: PathBuf,
    named: bool,
}

/// The stack's files worth keeping, relative to `directory`: the compose
/// files (`compose_files`), what the model and the compose files' YAML
/// name inside the directory, and the other top-level files.
fn candidates(directory: &Path, compose_files: &[PathBuf], model: &ComposeModel) -> Vec<Candidate> {
    let mut named: BTreeSet<PathBuf> = compose_files.iter().cloned().collect();
    named.insert(PathBuf::from(".env"));
    let mut inside = |absolute: &str| {
        if let Some(relative) = relative_inside(directory, Path::new(absolute)) {
            named.insert(relative);
        }
    };
    for svc in model.services.values() {
        for mount in svc.raw.get("volumes").and_then(Value::as_array).into_iter().flatten() {
            if mount.get("type").and_then(Value::as_str) != Some("bind") {
                continue;
            }
            let Some(source) = mount.get("source").and_then(Value::as_str) else { continue };
            let read_only = mount.get("read_only").and_then(Value::as_bool).unwrap_or(false);
            let path = Path::new(source);
            if path.is_file() {
                inside(source);
            } else if path.is_dir() && read_only {
                for file in files_under(path) {
                    inside(&file.to_string_lossy());
                }
            }
        }
    }
    for section in ["configs", "secrets"] {
        for entry in model.top_level.get(section).into_iter().flat_map(|m| m.values()) {
            if let Some(file) = entry.get("file").and_then(Value::as_str) {
                inside(file);
            }
        }
    }
    for file in compose_files {
        for env_file in env_files_named(&directory.join(file)) {
            if let Some(relative) = relative_inside(directory, &env_file) {
                named.insert(relative);
            }
        }
    }
    let mut out: Vec<Candidate> = named.into_iter().map(|path| Candidate { path, named: true }).collect();
    let mut top: Vec<PathBuf> = std::fs::read_dir(directory)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| PathBuf::from(e.file_name()))
        .filter(|p| !out.iter().any(|c| &c.path == p))
        .collect();
    top.sort();
    out.extend(top.into_iter().map(|path| Candidate { path, named: false }));
    out
}

/// `env_file` entries of a compose file, as written (before Compose
/// folds them into `environment`), resolved against its directory.
fn env_files_named(compose_file: &Path) -> Vec<PathBuf> {
    let base = compose_file.parent().unwrap_or(Path::new("."));
    let entries = crate::seams::compose_inputs::env_file_entries(compose_file);
    // An interpolated path is Compose's to resolve; a guess could copy the wrong file.
    entries.into_iter().filter(|p| !p.contains('$')).map(|p| base.join(p)).collect()
}

/// `path` relative to `directory`, if it lies inside it (lexically).
fn relative_inside(directory: &Path, path: &Path) -> Option<PathBuf> {
    let relative = path.strip_prefix(directory).ok()?;
    let clean = relative.components().all(|c| matches!(c, Component::Normal(_)));
    (clean && !relative.as_os_str().is_empty()).then(|| relative.to_path_buf())
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(entry.path()),
                Ok(t) if t.is_file() => out.push(entry.path()),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Where the copies of a stack's files live.
pub fn root(state_dir: &Path) -> PathBuf {
    state_dir.join("files")
}

/// Copies the stack's files in `directory`; the copy's id.
pub fn take(state_dir: &Path, directory: &Path, compose_files: &[PathBuf], model: &ComposeModel) -> Result<String> {
    let candidates = candidates(directory, compose_files, model);
    let mut manifest = Manifest { files: Vec::new(), skipped: Vec::new() };
    let mut contents = Vec::new();
    let mut total = 0u64;
    for Candidate { path, named } in candidates {
        let full = directory.join(&path);
        let Ok(meta) = std::fs::metadata(&full) else { continue };
        if !meta.is_file() {
            continue;
        }
        let cap = if named { TOTAL_CAP } else { UNNAMED_FILE_CAP };
        if meta.len() > cap || total + meta.len() > TOTAL_CAP {
            if named {
                let reason = format!("{} bytes; the copy keeps at most {TOTAL_CAP} bytes in all", meta.len());
                manifest.skipped.push(Skipped { path, reason });
            }
            continue;
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&full)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .with_context(|| format!("reading {} for the copy of the stack's files", full.display()))?;
        total += bytes.len() as u64;
        let sha256 = hex(&Sha256::digest(&bytes));
        manifest.files.push(Entry { path, sha256, mode: meta.permissions().mode() & 0o7777 });
        contents.push(bytes);
    }
    store(state_dir, &manifest, &contents)
}

/// A copy of copy `id` with `edits` (path in it, new contents) made: the
/// files a revision deploys when clusterup itself edits them.
pub fn edited(state_dir: &Path, id: &str, edits: &[(PathBuf, String)]) -> Result<String> {
    let mut manifest = manifest(state_dir, id)?;
    let tree = tree(state_dir, id);
    let mut contents = Vec::new();
    for entry in &mut manifest.files {
        let bytes = match edits.iter().find(|(path, _)| *path == entry.path) {
            Some((_, text)) => text.as_bytes().to_vec(),
            None => std::fs::read(tree.join(&entry.path))
                .with_context(|| format!("reading the kept copy of {}", entry.path.display()))?,
        };
        entry.sha256 = hex(&Sha256::digest(&bytes));
        contents.push(bytes);
    }
    store(state_dir, &manifest, &contents)
}

/// Keeps `contents` (in `manifest`'s order) as a copy; its id.
fn store(state_dir: &Path, manifest: &Manifest, contents: &[Vec<u8>]) -> Result<String> {
    let listing = serde_json::to_vec_pretty(manifest)?;
    let id = hex(&Sha256::digest(&listing))[..16].to_string();
    let root = root(state_dir);
    let dest = root.join(&id);
    if dest.join(MANIFEST).is_file() {
        return Ok(id);
    }
    crate::files::private_dir(&root).with_context(|| format!("creating {}", root.display()))?;
    let scratch = tempfile::Builder::new().prefix(".new-").tempdir_in(&root)?;
    for (entry, bytes) in manifest.files.iter().zip(contents) {
        let path = scratch.path().join(TREE).join(&entry.path);
        std::fs::create_dir_all(path.parent().unwrap_or(scratch.path()))?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    std::fs::write(scratch.path().join(MANIFEST), &listing)?;
    let kept = scratch.keep();
    // Another run that kept the same files first is as good.
    if std::fs::rename(&kept, &dest).is_err() {
        std::fs::remove_dir_all(&kept).ok();
        if !dest.join(MANIFEST).is_file() {
            bail!("keeping a copy of the stack's files in {}", dest.display());
        }
    }
    Ok(id)
}

pub fn manifest(state_dir: &Path, id: &str) -> Result<Manifest> {
    let path = root(state_dir).join(id).join(MANIFEST);
    let text =
        std::fs::read(&path).with_context(|| format!("reading the copy of the stack's files {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("reading {}", path.display()))
}

/// The copy's files, for reading a model from (relative paths in the
/// compose files resolve inside it as in the stack directory).
pub fn tree(state_dir: &Path, id: &str) -> PathBuf {
    root(state_dir).join(id).join(TREE)
}

/// Writes the copy's files back into `directory`, each replaced whole
/// (a reader never sees half a file). Files the copy does not hold are
/// left as they are.
pub fn restore(state_dir: &Path, id: &str, directory: &Path) -> Result<()> {
    let manifest = manifest(state_dir, id)?;
    let tree = tree(state_dir, id);
    for entry in &manifest.files {
        let bytes = std::fs::read(tree.join(&entry.path))
            .with_context(|| format!("reading the kept copy of {}", entry.path.display()))?;
        let dest = directory.join(&entry.path);
        if std::fs::read(&dest).is_ok_and(|now| now == bytes) {
            continue;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let owner = std::fs::symlink_metadata(&dest).ok().map(|m| (m.uid(), m.gid()));
        crate::files::write_atomic_mode(&dest, &bytes, entry.mode)
            .with_context(|| format!("restoring {}", dest.display()))?;
        // The operator's file stays theirs, not root's.
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dest, Some(uid), Some(gid))
                .with_context(|| format!("giving {} back its owner", dest.display()))?;
        }
    }
    Ok(())
}

/// Files of the copy that differ from `directory` now, as paths in it: a
/// rollback recreates the services that mount them.
pub fn differing(state_dir: &Path, id: &str, directory: &Path) -> Result<Vec<PathBuf>> {
    let manifest = manifest(state_dir, id)?;
    Ok(manifest
        .files
        .into_iter()
        .filter(|e| std::fs::read(directory.join(&e.path)).map_or(true, |now| hex(&Sha256::digest(&now)) != e.sha256))
        .map(|e| directory.join(e.path))
        .collect())
}

/// The copy last seen to match what runs, if any.
pub fn good(state_dir: &Path) -> Option<String> {
    let id = std::fs::read_to_string(root(state_dir).join(GOOD)).ok()?;
    let id = id.trim().to_string();
    root(state_dir).join(&id).join(MANIFEST).is_file().then_some(id)
}

pub fn set_good(state_dir: &Path, id: &str) -> Result<()> {
    if good(state_dir).as_deref() == Some(id) {
        return Ok(());
    }
    crate::files::write_atomic(&root(state_dir).join(GOOD), id.as_bytes())
}

/// Removes the copies no one needs: all but `keep` and `good`.
pub fn prune(state_dir: &Path, keep: &BTreeSet<String>) -> Result<()> {
    let good = good(state_dir);
    let root = root(state_dir);
    for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let is_copy = name.len() == 16 && name.chars().all(|c| c.is_ascii_hexdigit());
        if is_copy && !keep.contains(&name) && good.as_deref() != Some(name.as_str()) {
            std::fs::remove_dir_all(entry.path()).with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(dir: &Path) -> ComposeModel {
        let d = dir.display();
        let services = json!({
            "web": {"image": "w", "volumes": [
                {"type": "bind", "source": format!("{d}/nginx.conf"), "target": "/etc/nginx.conf"},
                {"type": "bind", "source": format!("{d}/conf.d"), "target": "/conf.d", "read_only": true},
                {"type": "bind", "source": format!("{d}/data"), "target": "/data"},
                {"type": "bind", "source": "/etc/hosts", "target": "/h", "read_only": true},
                {"type": "volume", "source": "db", "target": "/db"}
            ]}
        });
        ComposeModel::from_json(
            &json!({"name": "p", "services": services, "secrets": {"s": {"file": format!("{d}/secret.txt")}}}),
        )
        .unwrap()
    }

    #[test]
    fn keeps_configuration_not_data_and_restores_it() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, state) = (tmp.path().join("stack"), tmp.path().join("state"));
        for (path, text) in [
            ("compose.yaml", "services:\n  web:\n    image: w\n    env_file: [env/app.env]\n"),
            (".env", "PORT=1\n"),
            ("env/app.env", "A=1\n"),
            ("nginx.conf", "server {}\n"),
            ("conf.d/site.conf", "site\n"),
            ("data/db.bin", "precious\n"),
            ("secret.txt", "s3cret\n"),
            ("notes.txt", "top-level\n"),
            ("elsewhere/unnamed.txt", "not kept\n"),
        ] {
            std::fs::create_dir_all(dir.join(path).parent().unwrap()).unwrap();
            std::fs::write(dir.join(path), text).unwrap();
        }
        let files = vec![PathBuf::from("compose.yaml")];
        let model = model(&dir);
        let id = take(&state, &dir, &files, &model).unwrap();
        let kept: Vec<String> =
            manifest(&state, &id).unwrap().files.iter().map(|e| e.path.display().to_string()).collect();
        assert_eq!(
            kept,
            [".env", "compose.yaml", "conf.d/site.conf", "env/app.env", "nginx.conf", "secret.txt", "notes.txt"]
        );
        assert_eq!(take(&state, &dir, &files, &model).unwrap(), id, "the same files are the same copy");

        std::fs::write(dir.join("compose.yaml"), "edited\n").unwrap();
        std::fs::write(dir.join("conf.d/site.conf"), "edited\n").unwrap();
        std::fs::write(dir.join("data/db.bin"), "newer data\n").unwrap();
        let edited = take(&state, &dir, &files, &model).unwrap();
        assert_ne!(edited, id);
        restore(&state, &id, &dir).unwrap();
        assert!(std::fs::read_to_string(dir.join("compose.yaml")).unwrap().contains("env_file"));
        assert_eq!(std::fs::read_to_string(dir.join("conf.d/site.conf")).unwrap(), "site\n");
        assert_eq!(std::fs::read_to_string(dir.join("data/db.bin")).unwrap(), "newer data\n", "data is never restored");

        set_good(&state, &id).unwrap();
        prune(&state, &BTreeSet::new()).unwrap();
        assert_eq!(good(&state).as_deref(), Some(id.as_str()));
        assert!(manifest(&state, &edited).is_err(), "a copy no one names goes");
    }

    #[test]
    fn past_the_cap_files_are_listed_not_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, state) = (tmp.path().join("stack"), tmp.path().join("state"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("compose.yaml"), "services: {}\n").unwrap();
        std::fs::write(dir.join("archive.tar"), vec![0u8; UNNAMED_FILE_CAP as usize + 1]).unwrap();
        let big = std::fs::File::create(dir.join("secret.txt")).unwrap();
        big.set_len(TOTAL_CAP + 1).unwrap();
        let id = take(&state, &dir, &[PathBuf::from("compose.yaml")], &model(&dir)).unwrap();
        let m = manifest(&state, &id).unwrap();
        assert_eq!(m.files.len(), 1, "{m:?}");
        assert_eq!(m.skipped.len(), 1, "only named files are worth a mention: {m:?}");
        assert_eq!(m.skipped[0].path, PathBuf::from("secret.txt"));
    }
}
