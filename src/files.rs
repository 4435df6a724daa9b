//! Files clusterup keeps: private directories, reads that never follow a
//! symlink, writes that are whole or absent after a crash, and the host's
//! secret key. Below every other module that touches the disk.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// Another user who owns the state dir, or may write it, could plant a
/// journal that makes root recreate services from images of their
/// choosing, or a symlink that makes root write where they like.
/// `shared`: a sticky directory others may write is fine (`/tmp`), as
/// others cannot move or replace what is ours in it.
pub fn refuse_unsafe_dir(dir: &Path, shared: bool) -> Result<()> {
    use crate::trust::Untrusted;
    use std::os::unix::fs::FileTypeExt;
    // The root may be a symlink an administrator made (state moved to a
    // bigger disk); what it points at is judged. A stack's own dir may not.
    let meta = if shared { std::fs::metadata(dir) } else { std::fs::symlink_metadata(dir) };
    let meta = meta.with_context(|| format!("reading {}", dir.display()))?;
    let me = crate::trust::me();
    let refuse = |why: String, fix: String| {
        Err(crate::exit::usage(format!(
            "state directory {} {why}; refusing to use it. Fix it ({fix}) or choose another with --state-dir",
            dir.display()
        )))
    };
    if meta.file_type().is_symlink() {
        return refuse("is a symlink".into(), format!("replace it with a directory: rm {}", dir.display()));
    }
    if !meta.is_dir() || meta.file_type().is_fifo() {
        return refuse("is not a directory".into(), "remove it".into());
    }
    match crate::trust::judge(&meta, shared) {
        Some(Untrusted::Owner(owner)) => refuse(
            format!("belongs to uid {owner}, not to this user (uid {me}) or root"),
            format!("chown -R {me} {}", dir.display()),
        ),
        Some(Untrusted::Writable(mode)) => {
            refuse(format!("is writable by other users (mode {mode:o})"), format!("chmod go-w {}", dir.display()))
        }
        None => Ok(()),
    }
}

/// Creates `dir` and any missing parents 0700: clusterup's own.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The host's secret key at `path` (32 bytes, 0600), made by `fresh` the
/// first time.
pub fn host_key(path: &Path, fresh: impl FnOnce() -> [u8; 32]) -> Result<[u8; 32]> {
    if let Some(root) = path.parent() {
        private_dir(root)?;
        refuse_unsafe_dir(root, false)?;
    }
    match read_nofollow(path) {
        Ok(bytes) => {
            let key = bytes.get(..32).and_then(|k| k.try_into().ok());
            return key.with_context(|| format!("reading {}: shorter than a key", path.display()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let key = fresh();
    write_atomic(path, &key)?;
    Ok(key)
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))
}

/// Temp file in the same directory, fsync, rename, fsync the directory:
/// the file is the old one or the new one, never a mix, after a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
    sync_dir(dir)
}

/// A state file's bytes; a symlink in its place is an error, not followed.
pub fn read_nofollow(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}
