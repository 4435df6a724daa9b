//! The documented exit codes, and the one place errors become them.

use std::process::ExitCode;

/// Exit statuses are part of the interface: scripts, systemd units and the
/// Ansible playbook branch on them, so the numbers never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitStatus {
    /// Success, or nothing to do.
    Success,
    /// `check` found updates that are not applied yet (`dnf check-update`).
    UpdatesPending,
    /// Skipped by policy: paused, outside the window, needs approval.
    Skipped,
    /// Another run holds the stack's lock.
    Locked,
    /// The update failed; anything it changed was rolled back.
    Failed,
    /// Bad command line, configuration or compose file; nothing was changed.
    Usage,
    /// The update failed and so did its rollback: a human is needed.
    RollbackFailed,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::UpdatesPending => 100,
            ExitStatus::Failed => 1,
            ExitStatus::Usage => 2,
            ExitStatus::RollbackFailed => 3,
            ExitStatus::Skipped => 4,
            ExitStatus::Locked => 75,
        }
    }

    /// Several stacks in one run report the status that most needs a human:
    /// the enum is declared in that order.
    pub fn worst(self, other: ExitStatus) -> ExitStatus {
        self.max(other)
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> ExitCode {
        ExitCode::from(status.code())
    }
}

/// Bad input from the operator: exit 2, and nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Another run holds the stack lock: exit 75 so a timer simply tries later.
#[derive(Debug, thiserror::Error)]
#[error(
    "another clusterup run (pid {holder}) holds the lock for stack {stack} ({path}); try again when it has finished"
)]
pub struct LockHeld {
    pub stack: String,
    pub holder: String,
    pub path: String,
}

/// Maps an error that escaped a command to its exit status.
pub fn status_of(err: &anyhow::Error) -> ExitStatus {
    if err.downcast_ref::<UsageError>().is_some() {
        ExitStatus::Usage
    } else if err.downcast_ref::<LockHeld>().is_some() {
        ExitStatus::Locked
    } else {
        ExitStatus::Failed
    }
}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's order: 3 > 2 > 1 > 75 > 4 > 100 > 0, whichever stack
    /// comes first.
    #[test]
    fn the_code_that_most_needs_attention_wins() {
        use ExitStatus::*;
        let order = [Success, UpdatesPending, Skipped, Locked, Failed, Usage, RollbackFailed];
        let codes: Vec<u8> = order.iter().map(|s| s.code()).collect();
        assert_eq!(codes, [0, 100, 4, 75, 1, 2, 3]);
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                assert_eq!(a.worst(*b), order[i.max(j)], "{a:?} with {b:?}");
            }
        }
    }
}
