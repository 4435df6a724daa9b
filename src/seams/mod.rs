//! The outside world behind small seams: the Docker engine, the Compose CLI,
//! registries and their credentials, git, the clock and the process's
//! signals. `commands::dispatch` builds them once as `Seams`; everything
//! below takes them from there, so the pipeline is tested without a daemon
//! (`fake`).

pub mod compose;
pub mod compose_inputs;
pub mod credentials;
pub mod engine;
#[cfg(test)]
pub mod fake;
pub mod git;
pub mod hooks;
pub mod process;
pub mod registry;
pub mod worktree;

use std::path::Path;

use anyhow::Result;

use crate::clock::Clock;
use crate::signals::Signals;
use compose::{Compose, ComposeCli, ComposeSpec};
use engine::Engine;
use git::{GitRepo, GitSource, Repo};

/// What a command talks to outside the process.
#[derive(Clone, Copy)]
pub struct Seams<'a> {
    pub engine: &'a dyn Engine,
    pub open: &'a dyn Open,
    pub clock: &'a dyn Clock,
    pub signals: &'a dyn Signals,
}

/// Opens a stack's Compose and its git checkout.
pub trait Open: Sync {
    fn compose(&self, spec: &ComposeSpec) -> Box<dyn Compose>;
    /// clusterup's clone in `git_dir` (created the first time), or the
    /// operator's checkout when `source` is in place.
    fn repo(&self, git_dir: &Path, source: &GitSource) -> Result<Box<dyn Repo>>;
}

/// The Compose CLI and libgit2 (with the git command, in place).
pub struct System;

impl Open for System {
    fn compose(&self, spec: &ComposeSpec) -> Box<dyn Compose> {
        Box::new(ComposeCli::new(spec))
    }

    fn repo(&self, git_dir: &Path, source: &GitSource) -> Result<Box<dyn Repo>> {
        Ok(Box::new(GitRepo::open(git_dir, source)?))
    }
}

/// A peer that accepts connections and never answers: the hang every
/// external call must bound.
#[cfg(test)]
pub fn silent_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(8).collect();
        std::thread::sleep(std::time::Duration::from_secs(120));
        drop(held);
    });
    port
}
