//! Lifecycle hook commands: on the host (`sh -c`) or inside a service's
//! container (`docker exec`), with the update's details in the environment
//! and a time limit.

use std::process::Command;
use std::time::Duration;

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
    let out = super::process::run(&mut cmd, None, timeout, super::process::TAIL).map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(if out.stderr.is_empty() { &out.stdout } else { &out.stderr }).to_string();
    let tail: String =
        text.trim().lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" / ");
    let tail = crate::redact::external(&tail);
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
        // More output than a pipe holds is not a timeout (issue 13, item 11).
        assert!(run("head -c 200000 /dev/zero", None, &env, Duration::from_secs(20)).is_ok());
        let err = run(
            "head -c 200000 /dev/zero | tr '\\0' y; echo; echo why >&2; exit 4",
            None,
            &env,
            Duration::from_secs(20),
        )
        .unwrap_err();
        assert!(err.contains("4") && err.contains("why"), "{err}");
    }
}
