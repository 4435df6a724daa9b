//! Lifecycle hook commands: on the host (`sh -c`) or inside a service's
//! container (`docker exec`), with the update's details in the environment
//! and a time limit.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `command`; Err says why it failed (exit status, time limit, the
/// end of its output).
pub fn run(command: &str, container: Option<&str>, env: &[(&str, String)], timeout: Duration) -> Result<(), String> {
    let mut cmd = match container {
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", command]).envs(env.iter().map(|(k, v)| (*k, v.as_str())));
            c
        }
        Some(id) => {
            let mut c = Command::new("docker");
            c.arg("exec");
            for (k, v) in env {
                c.arg("--env").arg(format!("{k}={v}"));
            }
            c.args([id, "sh", "-c", command]);
            c
        }
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start it: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(_) => break,
            None if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {}", humantime::format_duration(timeout)));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(if out.stderr.is_empty() { &out.stdout } else { &out.stderr }).to_string();
    let tail: String =
        text.trim().lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" / ");
    Err(format!("{}{}", out.status, if tail.is_empty() { String::new() } else { format!(": {tail}") }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_exit_status_and_time_limit() {
        let env = [("CLUSTERUP_SERVICE", "web".to_string())];
        assert!(run("test \"$CLUSTERUP_SERVICE\" = web", None, &env, Duration::from_secs(5)).is_ok());
        let err = run("echo nope >&2; exit 3", None, &env, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("3") && err.contains("nope"), "{err}");
        let err = run("sleep 5", None, &env, Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("did not finish"), "{err}");
    }
}
