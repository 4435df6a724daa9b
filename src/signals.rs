//! The process-signal view: SIGTERM and SIGINT ask the run to stop, and
//! the crash points the recovery tests stop it at. Everything that waits
//! asks whether to stop: the pipeline through the `Signals` it is given
//! (`seams::Seams`), the seams' own bounded waits through `stop_requested`.

use anyhow::Result;

static STOP: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> = std::sync::OnceLock::new();

/// SIGTERM (systemd stopping the unit) and SIGINT (Ctrl-C) ask the run to
/// stop: the change in progress finishes or is rolled back, then the run
/// ends. A second signal ends it at once; the next run recovers.
pub fn install_signal_handlers() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = STOP.get_or_init(Default::default).clone();
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(())
}

/// Whether the run was asked to stop.
pub trait Signals: Sync {
    fn stop_requested(&self) -> bool;
}

/// This process's SIGTERM and SIGINT.
pub struct ProcessSignals;

impl Signals for ProcessSignals {
    fn stop_requested(&self) -> bool {
        stop_requested()
    }
}

pub fn stop_requested() -> bool {
    STOP.get().is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
}

/// Stops the process dead at a named point when `CLUSTERUP_CRASH_AT` names
/// it: the recovery tests' stand-in for SIGKILL, OOM or power loss.
/// `CLUSTERUP_TERM_AT` sends the process SIGTERM there instead, the first
/// time it passes (a second signal would end it at once), to test the
/// graceful stop at each point.
pub fn crash_point(name: &str) {
    if std::env::var("CLUSTERUP_CRASH_AT").is_ok_and(|at| at == name) {
        std::process::abort();
    }
    static TERMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if std::env::var("CLUSTERUP_TERM_AT").is_ok_and(|at| at == name)
        && !TERMED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        // SAFETY: raise has no preconditions; the handler only sets a flag.
        unsafe { libc::raise(libc::SIGTERM) };
    }
}
