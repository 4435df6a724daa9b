//! External programs (hooks, credential helpers, Compose) run with a time
//! limit, in a process group of their own that goes whole when the limit
//! is reached, and with their output read while they run: a program that
//! writes more than a pipe holds neither blocks nor looks like a hang.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How much of a hook's output is kept: its end says why it failed.
pub const TAIL: usize = 64 * 1024;

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug)]
pub enum Failure {
    /// It could not be started at all.
    Spawn(std::io::Error),
    /// It ran past the limit; its whole process group was killed.
    TimedOut(Duration),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Spawn(e) => write!(f, "could not start it: {e}"),
            Failure::TimedOut(limit) => write!(f, "did not finish within {}", humantime::format_duration(*limit)),
        }
    }
}

impl std::error::Error for Failure {}

/// Runs `cmd` with `input` on its stdin (or none), keeping at most `keep`
/// bytes (the last ones) of stdout and of stderr.
pub fn run(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration, keep: usize) -> Result<Finished, Failure> {
    let mut child = cmd
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(Failure::Spawn)?;
    let group = child.id() as libc::pid_t;
    let stdout = drain(child.stdout.take(), keep);
    let stderr = drain(child.stderr.take(), keep);
    if let (Some(mut stdin), Some(bytes)) = (child.stdin.take(), input) {
        // A program that exits without reading its input is its business.
        let _ = stdin.write_all(bytes);
    }
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(child.wait());
    });
    let status = match receive.recv_timeout(timeout) {
        Ok(status) => status,
        Err(RecvTimeoutError::Timeout) => {
            kill_group(group);
            let _ = receive.recv();
            // Children that left the group may still hold the pipes open:
            // do not wait for their output.
            return Err(Failure::TimedOut(timeout));
        }
        Err(RecvTimeoutError::Disconnected) => unreachable!("the waiter always sends"),
    };
    let status = status.map_err(Failure::Spawn)?;
    Ok(Finished { status, stdout: collect(stdout), stderr: collect(stderr) })
}

fn kill_group(group: libc::pid_t) {
    // SAFETY: killpg has no memory-safety preconditions; the group is the
    // one this module created, and a gone group is ESRCH, harmless.
    unsafe { libc::killpg(group, libc::SIGKILL) };
}

/// Output read so far, and whether the pipe has closed.
type Drained = Arc<(Mutex<(Vec<u8>, bool)>, Condvar)>;

fn drain(pipe: Option<impl Read + Send + 'static>, keep: usize) -> Drained {
    let shared: Drained = Arc::default();
    let Some(mut pipe) = pipe else {
        shared.0.lock().unwrap().1 = true;
        return shared;
    };
    let writer = shared.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            let n = pipe.read(&mut buf).unwrap_or(0);
            let mut state = writer.0.lock().unwrap();
            if n == 0 {
                state.1 = true;
                writer.1.notify_all();
                return;
            }
            state.0.extend_from_slice(&buf[..n]);
            if state.0.len() > keep {
                let excess = state.0.len() - keep;
                state.0.drain(..excess);
            }
        }
    });
    shared
}

/// The output once the pipe closes; a background child that keeps it open
/// (a hook that starts a daemon) costs at most a second, not a hang.
fn collect(drained: Drained) -> Vec<u8> {
    let (lock, closed) = &*drained;
    let state = lock.lock().unwrap();
    let (state, _) = closed.wait_timeout_while(state, Duration::from_secs(1), |s| !s.1).unwrap();
    state.0.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn output_beyond_a_pipe_is_read_while_running_and_its_tail_kept() {
        let done = run(&mut sh("head -c 300000 /dev/zero | tr '\\0' x; echo END"), None, Duration::from_secs(20), TAIL)
            .expect("300 KB of output is no hang");
        assert!(done.status.success());
        assert_eq!(done.stdout.len(), TAIL);
        assert!(done.stdout.ends_with(b"xEND\n"));
    }

    #[test]
    fn a_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let start = Instant::now();
        let err = run(&mut sh(&script), None, Duration::from_millis(500), TAIL).err().expect("must time out");
        assert!(matches!(err, Failure::TimedOut(_)), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ");
        assert!(!alive, "the hook's child {pid} outlived the timeout");
    }

    #[test]
    fn stdin_is_given() {
        let done = run(&mut Command::new("cat"), Some(b"hello"), Duration::from_secs(5), TAIL).unwrap();
        assert_eq!(done.stdout, b"hello");
    }
}
