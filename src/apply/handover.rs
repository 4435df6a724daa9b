//! clusterup running in a container of the stack it updates (the
//! containerized `serve`): recreating that container stops the process
//! doing the recreate, and Compose with it, halfway. So its own service is
//! set aside, the rest of the revision runs as usual, and once the stack's
//! lock is free a helper container started from the same image, with the
//! same mounts, runs the same `apply` again: the only change left is this
//! clusterup's own, which the helper, outside the container it replaces,
//! carries out through the usual health gate and rollback.

use std::time::Duration;

use anyhow::{Result, bail};

use crate::plan::classify::{Plan, kind_of};
use crate::plan::observation::Observation;

/// This process's container id, when it runs in a Docker container: the
/// engine bind-mounts the container's own `hostname`, `hosts` and
/// `resolv.conf` from `…/containers/<id>/`.
pub fn own_container() -> Option<String> {
    container_in_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

fn container_in_mountinfo(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (_, rest) = line.split_once("/containers/")?;
        let id = rest.get(..64)?;
        (id.bytes().all(|b| b.is_ascii_hexdigit()) && rest[64..].starts_with('/')).then(|| id.to_string())
    })
}

/// The service whose container `own` is.
pub fn own_service(observation: &Observation, own: &str) -> Option<String> {
    observation.services.iter().find(|(_, s)| s.containers.iter().any(|c| c.id == own)).map(|(name, _)| name.clone())
}

/// Takes `service`'s changes out of `plan`; whether there were any.
pub fn set_aside(plan: &mut Plan, service: &str) -> bool {
    let before = plan.changes.len();
    plan.changes.retain(|c| c.service != service);
    plan.kind = kind_of(&plan.changes);
    plan.changes.len() < before
}

/// Starts the helper: a container of `own`'s image (by id: the one running
/// now, whatever its tag names since), with `own`'s mounts, network and
/// clusterup's environment, running `clusterup <args>`. Removed when it
/// ends; its run is in the journal and notified like any other.
pub fn launch(own: &str, args: &[String], timeout: Duration) -> Result<String> {
    let inspect = docker(&["inspect", "-f", "{{.Image}} {{.HostConfig.NetworkMode}}", "--", own], timeout)?;
    let Some((image, network)) = inspect.split_once(' ') else {
        bail!("reading this container's image and network: {inspect:?}");
    };
    let exe = std::env::current_exe()?;
    let mut run: Vec<String> = ["run", "-d", "--rm", "--label", "clusterup.handover=true", "--volumes-from", own]
        .iter()
        .map(|s| s.to_string())
        .collect();
    run.extend(["--network".to_string(), network.to_string()]);
    // `-e NAME` alone: the docker CLI takes the value from the environment it
    // inherits, so a token (CLUSTERUP_GIT_TOKEN) never shows in `ps`.
    for (key, _) in std::env::vars() {
        let ours = (key.starts_with("CLUSTERUP_") && key != "CLUSTERUP_OPERATION") || key.starts_with("DOCKER_");
        if ours {
            run.extend(["-e".to_string(), key]);
        }
    }
    run.extend(["--entrypoint".to_string(), exe.display().to_string(), image.to_string()]);
    run.extend(args.iter().cloned());
    let refs: Vec<&str> = run.iter().map(String::as_str).collect();
    docker(&refs, timeout)
}

fn docker(args: &[&str], timeout: Duration) -> Result<String> {
    let mut cmd = std::process::Command::new("docker");
    cmd.args(args).stdin(std::process::Stdio::null());
    let out = crate::seams::process::run(&mut cmd, None, timeout, 64 * 1024)
        .map_err(|e| anyhow::anyhow!("docker {}: {e}", args[0]))?;
    if !out.status.success() {
        bail!("docker {} failed: {}", args[0], crate::redact::external(String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_container_is_read_from_the_mounts_the_engine_made() {
        let id = "3f".repeat(32);
        let text = format!(
            "1 0 0:1 / / rw - overlay overlay rw\n\
             2 1 8:1 /var/lib/docker/containers/{id}/resolv.conf /etc/resolv.conf rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(container_in_mountinfo(&text), Some(id));
        assert_eq!(container_in_mountinfo("1 0 0:1 / / rw - ext4 /dev/sda1 rw\n"), None, "on the host");
        assert_eq!(container_in_mountinfo("2 1 8:1 /srv/containers/notanid/x /x rw\n"), None);
    }
}
