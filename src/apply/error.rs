//! Why one step of a revision failed, with its evidence and cause chain.
//! Rendered once, where the revision's error is recorded.

use std::time::Duration;

/// A step of `execute` that failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    Unhealthy(Unhealthy),
    /// The Docker engine refused or failed a request.
    #[error("{0:#}")]
    Engine(anyhow::Error),
    /// `docker compose` failed (its exit status and scrubbed output are in
    /// the message) or could not be run.
    #[error("{0:#}")]
    Compose(anyhow::Error),
    /// A hook exited non-zero, timed out, or could not be run.
    #[error("{0}")]
    Hook(String),
    /// A stop was asked for (SIGTERM, Ctrl-C) while waiting.
    #[error("interrupted by a signal while waiting for health")]
    Interrupted,
}

/// How a service failed its health gate.
#[derive(Debug)]
pub enum Unhealthy {
    Restarted {
        container: String,
    },
    Stopped {
        container: String,
        state: String,
    },
    Reported {
        container: String,
    },
    /// Never healthy within the timeout; what it was still waiting for.
    TimedOut {
        after: Duration,
        waiting_for: String,
    },
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unhealthy::Restarted { container } => write!(f, "container {container} restarted during the health check"),
            Unhealthy::Stopped { container, state } => {
                write!(f, "container {container} is {state} (it stopped after starting)")
            }
            Unhealthy::Reported { container } => write!(f, "container {container} is unhealthy"),
            Unhealthy::TimedOut { after, waiting_for } => {
                write!(f, "not healthy within {} ({waiting_for})", humantime::format_duration(*after))
            }
        }
    }
}
