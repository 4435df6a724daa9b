//! The files an apply moves and a rollback moves back: a git checkout
//! (clusterup's clone or the operator's, in place), or a directory stack's
//! kept copies.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use git2::Oid;

use super::execute::Files;
use super::snapshot;
use crate::seams::git::Repo;

/// The checkout move an apply makes, and undoes on rollback.
pub struct GitDeploy {
    pub repo: Box<dyn Repo>,
    pub new: Oid,
    pub old: Option<Oid>,
}

impl Files for GitDeploy {
    fn deploy_new(&self) -> Result<()> {
        self.repo.checkout(self.new)
    }

    fn restore_old(&self) -> Result<()> {
        match self.old {
            Some(old) => self.repo.checkout(old),
            // A first deploy has no earlier files to go back to.
            None => Ok(()),
        }
    }
}

/// A directory stack's files, moved between copies (`snapshot`): on
/// rollback the files that ran before are written back, so what runs and
/// what the files say agree again, and no unattended run tries the failed
/// edit a second time. The edit itself stays in its own copy.
pub struct DirectoryFiles {
    pub state_dir: PathBuf,
    pub directory: PathBuf,
    /// The copy of the files as they are now on disk.
    pub on_disk: String,
    /// A rollback to a revision: its copy, written into the directory; or
    /// the files with the plan's new tags (`tag_edits`).
    pub deploy: Option<String>,
    pub tag_edits: bool,
    /// The copy last seen to match what runs (None: never seen yet).
    pub before: Option<String>,
}

impl Files for DirectoryFiles {
    fn deploy_new(&self) -> Result<()> {
        match &self.deploy {
            Some(id) => snapshot::restore(&self.state_dir, id, &self.directory),
            None => Ok(()),
        }
    }

    fn restore_old(&self) -> Result<()> {
        match &self.before {
            Some(id) => snapshot::restore(&self.state_dir, id, &self.directory),
            None => Err(anyhow!(
                "clusterup has no copy of the files that ran before (it never saw this stack's files match \
                 what runs), so the previous configuration cannot be restored"
            )),
        }
    }

    fn copies(&self) -> (Option<String>, Option<String>) {
        (Some(self.deploy.clone().unwrap_or_else(|| self.on_disk.clone())), self.before.clone())
    }

    fn kept_note(&self) -> Option<String> {
        let edit = snapshot::tree(&self.state_dir, &self.on_disk);
        Some(format!(
            "the files that ran before are back in {}; the edited ones are kept in {}",
            self.directory.display(),
            edit.display()
        ))
    }
}
