//! External programs (hooks, credential helpers, Compose) run with a time
//! limit, in a process group of their own that goes whole when the limit
//! is reached, and with their output read while they run: a program that
//! writes more than a pipe holds neither blocks nor looks like a hang.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

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
    run_watching(cmd, input, timeout, keep, &mut |_| {})
}

/// `run`, handing each line the program writes (stdout or stderr) to
/// `watch` as it comes: a long build shows what it is doing.
pub fn run_watching(
    cmd: &mut Command,
    input: Option<&[u8]>,
    timeout: Duration,
    keep: usize,
    watch: &mut dyn FnMut(&str),
) -> Result<Finished, Failure> {
    let mut child = cmd
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(Failure::Spawn)?;
    let group = child.id() as libc::pid_t;
    let (send, receive) = std::sync::mpsc::channel();
    read(child.stdout.take(), STDOUT, send.clone());
    read(child.stderr.take(), STDERR, send.clone());
    if let (Some(mut stdin), Some(bytes)) = (child.stdin.take(), input) {
        // A program that exits without reading its input is its business.
        let _ = stdin.write_all(bytes);
    }
    std::thread::spawn(move || {
        let _ = send.send(Event::Exited(child.wait()));
    });
    let deadline = Instant::now() + timeout;
    let mut output = Output::default();
    let status = loop {
        match receive.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(event) => {
                if let Some(status) = output.note(event, keep, watch) {
                    break status;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                kill_group(group);
                while !matches!(receive.recv(), Ok(Event::Exited(_)) | Err(_)) {}
                // Children that left the group may still hold the pipes
                // open: do not wait for their output.
                return Err(Failure::TimedOut(timeout));
            }
            Err(RecvTimeoutError::Disconnected) => unreachable!("the waiter always sends"),
        }
    };
    // The pipes close when the program is done, its last output read; a
    // background child that keeps them open (a hook that starts a daemon)
    // costs at most a second, not a hang.
    let until = Instant::now() + Duration::from_secs(1);
    while output.open() {
        match receive.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(event) => {
                output.note(event, keep, watch);
            }
            Err(_) => break,
        }
    }
    let status = status.map_err(Failure::Spawn)?;
    let [stdout, stderr] = output.streams.map(|s| s.kept);
    Ok(Finished { status, stdout, stderr })
}

fn kill_group(group: libc::pid_t) {
    // SAFETY: killpg has no memory-safety preconditions; the group is the
    // one this module created, and a gone group is ESRCH, harmless.
    unsafe { libc::killpg(group, libc::SIGKILL) };
}

const STDOUT: usize = 0;
const STDERR: usize = 1;

/// What the waiter and the readers report while a program runs.
enum Event {
    /// Bytes from `STDOUT` or `STDERR`.
    Output(usize, Vec<u8>),
    Closed(usize),
    Exited(std::io::Result<ExitStatus>),
}

/// Reads `pipe` to its end on a thread of its own, so a program that
/// writes more than a pipe holds never blocks on it.
fn read(pipe: Option<impl Read + Send + 'static>, which: usize, events: Sender<Event>) {
    let Some(mut pipe) = pipe else {
        let _ = events.send(Event::Closed(which));
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            // Once the program is done or given up, nobody listens: the
            // pipe is still read to its end.
            let n = pipe.read(&mut buf).unwrap_or(0);
            if n == 0 {
                let _ = events.send(Event::Closed(which));
                return;
            }
            let _ = events.send(Event::Output(which, buf[..n].to_vec()));
        }
    });
}

/// What a program wrote so far, per stream.
#[derive(Default)]
struct Output {
    streams: [Stream; 2],
}

#[derive(Default)]
struct Stream {
    /// The last `keep` bytes.
    kept: Vec<u8>,
    /// The line not finished yet (its last `keep` bytes).
    partial: Vec<u8>,
    closed: bool,
}

impl Output {
    /// Takes in one event: output is kept and handed on a line at a time;
    /// the program's exit status once it has one.
    fn note(&mut self, event: Event, keep: usize, watch: &mut dyn FnMut(&str)) -> Option<std::io::Result<ExitStatus>> {
        match event {
            Event::Output(which, bytes) => {
                let stream = &mut self.streams[which];
                for buffer in [&mut stream.kept, &mut stream.partial] {
                    buffer.extend_from_slice(&bytes);
                    let excess = buffer.len().saturating_sub(keep);
                    buffer.drain(..excess);
                }
                while let Some(end) = stream.partial.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = stream.partial.drain(..=end).collect();
                    watch(String::from_utf8_lossy(&line).trim_end());
                }
            }
            Event::Closed(which) => self.streams[which].closed = true,
            Event::Exited(status) => return Some(status),
        }
        None
    }

    fn open(&self) -> bool {
        self.streams.iter().any(|s| !s.closed)
    }
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
    fn each_line_is_handed_on_while_the_program_runs() {
        let mut seen = Vec::new();
        let script = "echo one; echo two >&2; sleep 0.3; printf 'three\\nfour'";
        let done = run_watching(&mut sh(script), None, Duration::from_secs(20), TAIL, &mut |l| {
            seen.push((l.to_string(), std::time::Instant::now()))
        })
        .unwrap();
        let mut lines: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
        // stdout and stderr are read apart: their order is not kept.
        lines[..2].sort();
        assert_eq!(lines, ["one", "two", "three"], "an unfinished last line is the program's business");
        assert!(
            seen[2].1.duration_since(seen[0].1) >= Duration::from_millis(250),
            "the first lines came before the sleep"
        );
        assert_eq!(done.stdout, b"one\nthree\nfour");
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
