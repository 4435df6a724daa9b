//! The Compose CLI seam. Compose stays the owner of container lifecycle and
//! of the compose file format: clusterup asks it for the normalized model
//! and to recreate one service at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::exit::usage;
use crate::settings::{COMPOSE_FILE_NAMES, StackSettings};

/// The stack as Compose understands it after interpolation, `extends`,
/// `include`, profiles and merges.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ComposeModel {
    pub project: String,
    pub services: BTreeMap<String, ComposeService>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ComposeService {
    pub image: Option<String>,
    /// Built from source by compose, so no registry holds it.
    pub build: bool,
    pub depends_on: Vec<String>,
}

impl ComposeModel {
    pub fn from_json(json: &Value) -> Result<ComposeModel> {
        let project = json
            .get("name")
            .and_then(Value::as_str)
            .context("compose config has no project name")?
            .to_string();
        let mut services = BTreeMap::new();
        if let Some(map) = json.get("services").and_then(Value::as_object) {
            for (name, svc) in map {
                let depends_on = match svc.get("depends_on") {
                    Some(Value::Object(m)) => m.keys().cloned().collect(),
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect(),
                    _ => Vec::new(),
                };
                services.insert(
                    name.clone(),
                    ComposeService {
                        image: svc.get("image").and_then(Value::as_str).map(String::from),
                        build: svc.get("build").is_some(),
                        depends_on,
                    },
                );
            }
        }
        Ok(ComposeModel { project, services })
    }
}

pub trait Compose {
    fn model(&self) -> Result<ComposeModel>;
    /// Recreates one service if its container differs from the model (or
    /// its image id from the local tag), touching nothing else.
    fn up(&self, project: &str, service: &str) -> Result<()>;
}

pub struct ComposeCli {
    directory: PathBuf,
    files: Vec<PathBuf>,
    project: Option<String>,
}

impl ComposeCli {
    pub fn new(stack: &StackSettings) -> ComposeCli {
        ComposeCli {
            directory: stack.directory.clone(),
            files: stack.compose_files.clone(),
            project: stack.project.clone(),
        }
    }

    fn command(&self, project: Option<&str>) -> Command {
        let mut cmd = Command::new("docker");
        cmd.arg("compose");
        if let Some(p) = project.or(self.project.as_deref()) {
            cmd.args(["--project-name", p]);
        }
        for f in &self.files {
            cmd.arg("--file").arg(f);
        }
        // Compose may ask questions (e.g. "Recreate volume (data will be
        // lost)?"); no one must ever answer yes on its behalf.
        cmd.current_dir(&self.directory).stdin(Stdio::null());
        cmd
    }

    fn describe_files(&self) -> String {
        if self.files.is_empty() {
            let default = COMPOSE_FILE_NAMES
                .iter()
                .map(|f| self.directory.join(f))
                .find(|p| p.is_file());
            match default {
                Some(path) => path.display().to_string(),
                None => format!("the compose file in {}", self.directory.display()),
            }
        } else {
            self.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

fn run(mut cmd: Command, what: &str) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("{what}: running `docker compose`; is the Docker CLI installed?"))
}

/// A failing `docker compose` may simply be Compose v1 or none at all; say
/// so rather than pass on a confusing message.
fn require_v2() -> Result<()> {
    let v2 = Command::new("docker")
        .args(["compose", "version", "--short"])
        .stdin(Stdio::null())
        .output();
    if matches!(&v2, Ok(o) if o.status.success()) {
        return Ok(());
    }
    let v1 = Command::new("docker-compose")
        .arg("version")
        .stdin(Stdio::null())
        .output();
    let found = match v1 {
        Ok(o) if o.status.success() => {
            "only docker-compose v1 (Python), which names and recreates containers differently, is installed"
        }
        _ => "`docker compose` is not available",
    };
    Err(usage(format!(
        "clusterup needs Docker Compose v2, but {found}; install the docker-compose-plugin package \
         (or the compose binary as ~/.docker/cli-plugins/docker-compose)"
    )))
}

impl Compose for ComposeCli {
    fn model(&self) -> Result<ComposeModel> {
        let mut cmd = self.command(None);
        cmd.args(["config", "--format", "json"]);
        let out = run(cmd, "reading the compose model")?;
        if !out.status.success() {
            require_v2()?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(usage(format!(
                "invalid compose configuration in {} (nothing was changed): {}",
                self.describe_files(),
                stderr.trim()
            )));
        }
        let json: Value = serde_json::from_slice(&out.stdout)
            .context("reading `docker compose config` output")?;
        ComposeModel::from_json(&json)
    }

    fn up(&self, project: &str, service: &str) -> Result<()> {
        let mut cmd = self.command(Some(project));
        cmd.args([
            "up",
            "--detach",
            "--no-deps",
            "--pull",
            "never",
            "--quiet-pull",
            service,
        ]);
        let out = run(cmd, "recreating a service")?;
        if !out.status.success() {
            bail!(
                "docker compose up {service} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_reads_images_builds_and_both_depends_on_forms() {
        let json: Value = serde_json::from_str(
            r#"{"name":"shop","services":{
                "web":{"image":"r/web:1","depends_on":{"db":{"condition":"service_started"}}},
                "db":{"image":"postgres:16"},
                "job":{"build":{"context":"."},"depends_on":["db"]}}}"#,
        )
        .unwrap();
        let m = ComposeModel::from_json(&json).unwrap();
        assert_eq!(m.project, "shop");
        assert_eq!(m.services["web"].depends_on, vec!["db"]);
        assert_eq!(m.services["job"].depends_on, vec!["db"]);
        assert!(m.services["job"].build && m.services["job"].image.is_none());
        assert_eq!(m.services["db"].image.as_deref(), Some("postgres:16"));
    }
}
