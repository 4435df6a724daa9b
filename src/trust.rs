//! Whether another user could change a file or directory that decides
//! what clusterup, running as root, does: the configuration, the hook
//! scripts it names, the state dir. One rule for all of them; each caller
//! says what the finding means for its file.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

pub enum Untrusted {
    /// Owned by neither root nor this user: this uid.
    Owner(u32),
    /// Writable by a user or group other than root and this user: the mode.
    Writable(u32),
}

/// `sticky_ok`: a sticky directory others may write (`/tmp`) is fine, as
/// others cannot move or replace what is ours in it.
pub fn judge(meta: &Metadata, sticky_ok: bool) -> Option<Untrusted> {
    if meta.uid() != 0 && meta.uid() != me() {
        return Some(Untrusted::Owner(meta.uid()));
    }
    // Group root may write: its members are root's already.
    let writers = if meta.gid() == 0 { 0o002 } else { 0o022 };
    let sticky = sticky_ok && meta.mode() & 0o1000 != 0;
    (meta.mode() & writers != 0 && !sticky).then(|| Untrusted::Writable(meta.mode() & 0o7777))
}

/// The effective uid clusterup runs as.
pub fn me() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
