//! Operations: each API call, webhook delivery and scheduled run is the
//! CLI itself, run as a child process with `--json`. So the API has
//! exactly the CLI's semantics (its locks, policy, journal, SIGTERM
//! handling) and answers with exactly its reports; a run that goes wrong
//! cannot take the server with it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

/// Finished operations kept for polling.
const KEPT: usize = 200;
/// What is kept of a child's stderr (its human output and errors).
const STDERR_KEPT: usize = 16 * 1024;

/// One run of the CLI on the server's behalf.
#[derive(Debug, Clone)]
pub struct Request {
    /// The subcommand and its options, as the CLI takes them.
    pub args: Vec<String>,
    /// Named stacks, or every stack when empty.
    pub stacks: Vec<String>,
    /// Whether it takes the stacks' locks (apply, rollback): two of those
    /// for one stack are never started together.
    pub exclusive: bool,
    /// Who asked: a token's name, `github`, `schedule`. Recorded as the
    /// user (a pause's `by`).
    pub by: String,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Finished,
}

/// An operation as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Operation {
    pub id: u64,
    /// The command line it runs, after `clusterup --json`.
    pub command: Vec<String>,
    pub by: String,
    pub state: State,
    #[schemars(with = "String")]
    pub started: Timestamp,
    #[schemars(with = "Option<String>")]
    pub finished: Option<Timestamp>,
    /// The CLI's exit code: 0, 100, 1, 2, 3, 4 or 75 as documented.
    pub exit_code: Option<u8>,
    /// The CLI's `--json` document.
    pub report: Option<Value>,
    /// The end of the CLI's error output, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why an exclusive operation was not started.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Busy {
    pub error: String,
    /// The operation that holds the stack.
    pub operation: u64,
}

struct Runs {
    next: u64,
    ops: VecDeque<Operation>,
    /// Stack name → the exclusive operation holding it.
    held: BTreeMap<String, u64>,
    /// Running children by operation, for SIGTERM.
    children: BTreeMap<u64, u32>,
    /// Stacks to apply again once their operation ends: a push that came
    /// while they were busy.
    again: BTreeSet<String>,
}

pub struct Runner {
    exe: PathBuf,
    /// Global options every child gets (`--config`, `--state-dir`, ...).
    global: Vec<String>,
    /// Every stack the configuration names.
    all: Vec<String>,
    /// How each stack's lock file is found, to tell when a child holds it.
    locks: BTreeMap<String, PathBuf>,
    runs: Mutex<Runs>,
    changed: Condvar,
}

impl Runner {
    pub fn new(exe: PathBuf, global: Vec<String>, locks: BTreeMap<String, PathBuf>) -> Arc<Runner> {
        Arc::new(Runner {
            exe,
            global,
            all: locks.keys().cloned().collect(),
            locks,
            runs: Mutex::new(Runs {
                next: 1,
                ops: VecDeque::new(),
                held: BTreeMap::new(),
                children: BTreeMap::new(),
                again: BTreeSet::new(),
            }),
            changed: Condvar::new(),
        })
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, Runs> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn targets(&self, request: &Request) -> Vec<String> {
        if request.stacks.is_empty() { self.all.clone() } else { request.stacks.clone() }
    }

    /// Starts `request` in the background. An exclusive one whose stack an
    /// operation of this server holds is refused with that operation.
    pub fn start(self: &Arc<Self>, request: Request) -> Result<u64, Busy> {
        let mut runs = self.runs();
        let targets = self.targets(&request);
        if request.exclusive
            && let Some((stack, op)) = targets.iter().find_map(|s| runs.held.get(s).map(|op| (s, *op)))
        {
            let holder = runs.ops.iter().find(|o| o.id == op).map(|o| format!(" ({} by {})", o.command[0], o.by));
            return Err(Busy {
                error: format!("stack {stack} is busy with operation {op}{}", holder.unwrap_or_default()),
                operation: op,
            });
        }
        let id = runs.next;
        runs.next += 1;
        if request.exclusive {
            for stack in &targets {
                runs.held.insert(stack.clone(), id);
            }
        }
        runs.ops.push_back(Operation {
            id,
            command: request.args.clone(),
            by: request.by.clone(),
            state: State::Running,
            started: Timestamp::now(),
            finished: None,
            exit_code: None,
            report: None,
            error: None,
        });
        drop(runs);
        let runner = self.clone();
        std::thread::spawn(move || runner.run(id, request, targets));
        Ok(id)
    }

    /// `apply --auto` for `stack`, now or, if an operation holds it, once
    /// that has ended.
    pub fn apply_soon(self: &Arc<Self>, stack: &str, by: &str) -> Option<u64> {
        let request = auto_apply(Some(stack), by);
        match self.start(request) {
            Ok(id) => Some(id),
            Err(_) => {
                self.runs().again.insert(stack.to_string());
                None
            }
        }
    }

    fn run(self: Arc<Self>, id: u64, request: Request, targets: Vec<String>) {
        let ended = self.child(id, &request);
        let mut runs = self.runs();
        runs.children.remove(&id);
        if request.exclusive {
            runs.held.retain(|_, op| *op != id);
        }
        let again: Vec<String> = targets.iter().filter(|s| runs.again.remove(*s)).cloned().collect();
        if let Some(op) = runs.ops.iter_mut().find(|o| o.id == id) {
            op.state = State::Finished;
            op.finished = Some(Timestamp::now());
            (op.exit_code, op.report, op.error) = ended;
        }
        let finished = runs.ops.iter().filter(|o| matches!(o.state, State::Finished)).count();
        if finished > KEPT
            && let Some(at) = runs.ops.iter().position(|o| matches!(o.state, State::Finished))
        {
            runs.ops.remove(at);
        }
        drop(runs);
        self.changed.notify_all();
        for stack in again {
            self.apply_soon(&stack, "push (queued)");
        }
    }

    /// Runs the child to its end: its exit code, its report, its error.
    fn child(&self, id: u64, request: &Request) -> (Option<u8>, Option<Value>, Option<String>) {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--json").args(&self.global).args(&request.args);
        // Its own process group: a terminal's Ctrl-C reaches the server,
        // which passes SIGTERM on once, as the CLI's own runs expect.
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        cmd.env_remove("SUDO_USER").env("USER", &request.by).env("CLUSTERUP_OPERATION", id.to_string());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return (None, None, Some(format!("starting {}: {e}", self.exe.display()))),
        };
        self.runs().children.insert(id, child.id());
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let err_reader = std::thread::spawn(move || {
            let mut tail = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_KEPT {
                    tail.drain(..tail.len() - STDERR_KEPT);
                }
            }
            tail
        });
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        let status = child.wait();
        let tail = err_reader.join().unwrap_or_default();
        let code = status.ok().and_then(|s| s.code()).and_then(|c| u8::try_from(c).ok());
        let report = serde_json::from_slice::<Value>(&out).ok();
        let error = (code != Some(0) && code != Some(100))
            .then(|| crate::redact::scrub(String::from_utf8_lossy(&tail).trim()))
            .filter(|e| !e.is_empty());
        (code, report, error)
    }

    /// Runs a read (`status`, `rollback --list`) on this thread, to its
    /// end; it is not listed among the operations.
    pub fn run_now(&self, request: &Request) -> Operation {
        let id = {
            let mut runs = self.runs();
            runs.next += 1;
            runs.next - 1
        };
        let started = Timestamp::now();
        let (exit_code, report, error) = self.child(id, request);
        self.runs().children.remove(&id);
        self.changed.notify_all();
        Operation {
            id,
            command: request.args.clone(),
            by: request.by.clone(),
            state: State::Finished,
            started,
            finished: Some(Timestamp::now()),
            exit_code,
            report,
            error,
        }
    }

    pub fn get(&self, id: u64) -> Option<Operation> {
        self.runs().ops.iter().find(|o| o.id == id).cloned()
    }

    pub fn recent(&self) -> Vec<Operation> {
        self.runs().ops.iter().rev().cloned().collect()
    }

    /// Waits until operation `id` has finished or `until`; an exclusive
    /// one also stops waiting once it holds every lock it took (it is
    /// under way: nothing else can be told yet).
    pub fn wait(&self, id: u64, until: Instant, locks_of: Option<&[String]>) -> Option<Operation> {
        let mut runs = self.runs();
        loop {
            let op = runs.ops.iter().find(|o| o.id == id)?.clone();
            let now = Instant::now();
            if matches!(op.state, State::Finished) || now >= until {
                return Some(op);
            }
            if let (Some(stacks), Some(pid)) = (locks_of, runs.children.get(&id)) {
                let pid = pid.to_string();
                let held = stacks.iter().all(|s| {
                    self.locks.get(s).and_then(|p| std::fs::read_to_string(p).ok()).is_some_and(|h| h.trim() == pid)
                });
                if held {
                    return Some(op);
                }
            }
            let step = (until - now).min(Duration::from_millis(25));
            runs = self.changed.wait_timeout(runs, step).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    pub fn locks_of(&self, request: &Request) -> Vec<String> {
        self.targets(request)
    }

    /// SIGTERM to every running child, once; then waits for them: each
    /// finishes or rolls back its change, as under systemd.
    pub fn stop(&self) {
        let pids: Vec<u32> = self.runs().children.values().copied().collect();
        for pid in pids {
            // SAFETY: kill has no memory preconditions; the pid is our child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        let mut runs = self.runs();
        while !runs.children.is_empty() {
            runs = self.changed.wait_timeout(runs, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    pub fn running(&self) -> usize {
        self.runs().children.len()
    }
}

/// `apply --auto`, for one stack or every stack.
pub fn auto_apply(stack: Option<&str>, by: &str) -> Request {
    let mut args = vec!["apply".to_string(), "--auto".to_string()];
    args.extend(stack.map(|s| format!("--stack={s}")));
    Request { args, stacks: stack.map(|s| vec![s.to_string()]).unwrap_or_default(), exclusive: true, by: by.into() }
}
