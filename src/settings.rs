//! Configuration file and command line resolved once into one
//! `StackSettings` per stack, before any pipeline stage runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use crate::exit::usage;

pub const DEFAULT_CONFIG: &str = "/etc/clusterup/clusterup.yaml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/clusterup";

/// Names Compose looks for, in its own order of preference.
pub const COMPOSE_FILE_NAMES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

#[derive(Debug, Clone, PartialEq)]
pub struct StackSettings {
    /// The stack's name in clusterup: journal, lock and backups are kept
    /// under it.
    pub name: String,
    pub directory: PathBuf,
    /// Empty: let Compose find its default file in `directory`.
    pub compose_files: Vec<PathBuf>,
    /// Empty: the project name Compose derives itself (`name:` in the file,
    /// `COMPOSE_PROJECT_NAME`, or the directory), so clusterup finds stacks
    /// that people started with a bare `docker compose up`.
    pub project: Option<String>,
    pub health: HealthSettings,
    pub skip: BTreeSet<String>,
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthSettings {
    /// How long a recreated service may take to become healthy.
    pub timeout: Duration,
    /// How long it must then stay healthy with no restart.
    pub stability: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            timeout: Duration::from_secs(120),
            stability: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    state_dir: Option<PathBuf>,
    #[serde(default)]
    stacks: Vec<StackEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StackEntry {
    name: String,
    directory: PathBuf,
    #[serde(default)]
    compose_files: Vec<PathBuf>,
    project: Option<String>,
    #[serde(default)]
    health: HealthEntry,
    #[serde(default)]
    services: BTreeMap<String, ServiceEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthEntry {
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    stability: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceEntry {
    #[serde(default)]
    skip: bool,
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); write e.g. \"90s\" or \"2m\""
        ))
    })
}

/// What the command line says about where settings come from.
pub struct Sources<'a> {
    pub config: Option<&'a Path>,
    pub state_dir: Option<&'a Path>,
    pub stack: Option<&'a str>,
    pub cwd: &'a Path,
}

pub fn resolve(src: &Sources) -> Result<Vec<StackSettings>> {
    let explicit = src.config.is_some();
    let config_path = src
        .config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let stacks = match std::fs::read_to_string(&config_path) {
        Ok(text) => from_config(&config_path, &text, src.state_dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            vec![from_directory(src.cwd, src.state_dir)?]
        }
        Err(e) => {
            return Err(usage(format!(
                "reading configuration file {}: {e}",
                config_path.display()
            )));
        }
    };
    select(stacks, src.stack)
}

fn select(stacks: Vec<StackSettings>, wanted: Option<&str>) -> Result<Vec<StackSettings>> {
    let Some(wanted) = wanted else {
        return Ok(stacks);
    };
    let names: Vec<String> = stacks.iter().map(|s| s.name.clone()).collect();
    let chosen: Vec<StackSettings> = stacks.into_iter().filter(|s| s.name == wanted).collect();
    if chosen.is_empty() {
        return Err(usage(format!(
            "no stack named {wanted:?}; known stacks: {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    }
    Ok(chosen)
}

pub fn from_config(
    path: &Path,
    text: &str,
    state_dir: Option<&Path>,
) -> Result<Vec<StackSettings>> {
    let bad = |msg: String| usage(format!("configuration file {}: {msg}", path.display()));
    let file: ConfigFile = serde_yaml::from_str(text).map_err(|e| bad(e.to_string()))?;
    if file.stacks.is_empty() {
        return Err(bad(
            "no stacks configured; add a `stacks:` list with at least one entry".into(),
        ));
    }
    let base = path.parent().unwrap_or(Path::new("/"));
    let root = state_dir
        .map(Path::to_path_buf)
        .or(file.state_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, entry) in file.stacks.into_iter().enumerate() {
        check_name(&entry.name).map_err(|m| bad(format!("stacks[{i}].name: {m}")))?;
        if !seen.insert(entry.name.clone()) {
            return Err(bad(format!(
                "stacks[{i}]: stack {:?} is configured twice",
                entry.name
            )));
        }
        let directory = base.join(&entry.directory);
        let defaults = HealthSettings::default();
        out.push(StackSettings {
            state_dir: root.join(&entry.name),
            compose_files: entry
                .compose_files
                .iter()
                .map(|f| directory.join(f))
                .collect(),
            directory,
            project: entry.project,
            health: HealthSettings {
                timeout: entry.health.timeout.unwrap_or(defaults.timeout),
                stability: entry.health.stability.unwrap_or(defaults.stability),
            },
            skip: entry
                .services
                .into_iter()
                .filter(|(_, s)| s.skip)
                .map(|(n, _)| n)
                .collect(),
            name: entry.name,
        });
    }
    Ok(out)
}

/// Zero-configuration mode: a directory holding a compose file is a stack.
pub fn from_directory(dir: &Path, state_dir: Option<&Path>) -> Result<StackSettings> {
    if !COMPOSE_FILE_NAMES.iter().any(|f| dir.join(f).is_file()) {
        return Err(usage(format!(
            "no configuration file ({DEFAULT_CONFIG}) and no compose file in {}; \
             run clusterup in a directory with a compose.yaml, or pass --config FILE",
            dir.display()
        )));
    }
    let name = project_name_of(dir);
    if name.is_empty() {
        return Err(usage(format!(
            "cannot derive a stack name from directory {}",
            dir.display()
        )));
    }
    Ok(StackSettings {
        state_dir: state_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
            .join(&name),
        name,
        directory: dir.to_path_buf(),
        compose_files: Vec::new(),
        project: None,
        health: HealthSettings::default(),
        skip: BTreeSet::new(),
    })
}

/// Compose's own normalisation of a directory name into a project name.
fn project_name_of(dir: &Path) -> String {
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let kept: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    kept.trim_start_matches(['_', '-']).to_string()
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid stack name; use letters, digits, '-', '_' and '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<StackSettings>> {
        from_config(Path::new("/etc/clusterup/clusterup.yaml"), text, None)
    }

    #[test]
    fn full_stack_entry_resolves_paths_and_defaults() {
        let stacks = parse(
            "stacks:\n  - name: web\n    directory: /srv/web\n    compose_files: [compose.yaml, prod.yaml]\n    health: {timeout: 30s}\n    services:\n      db: {skip: true}\n",
        )
        .unwrap();
        let s = &stacks[0];
        assert_eq!(s.directory, PathBuf::from("/srv/web"));
        assert_eq!(
            s.compose_files,
            vec![
                PathBuf::from("/srv/web/compose.yaml"),
                PathBuf::from("/srv/web/prod.yaml")
            ]
        );
        assert_eq!(s.health.timeout, Duration::from_secs(30));
        assert_eq!(s.health.stability, HealthSettings::default().stability);
        assert!(s.skip.contains("db"));
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/clusterup/web"));
    }

    #[test]
    fn relative_directory_is_relative_to_the_config_file() {
        let stacks = parse("stacks:\n  - name: web\n    directory: stacks/web\n").unwrap();
        assert_eq!(
            stacks[0].directory,
            PathBuf::from("/etc/clusterup/stacks/web")
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "stacks:\n  - name: web\n    directory: /srv\n    colour: red\n",
                "line 4",
                "colour",
            ),
            (
                "stacks:\n  - name: web\n    directory: [1, 2]\n",
                "line 3",
                "directory",
            ),
            (
                "stacks:\n  - name: web\n    directory: /srv\n    health: {timeout: soon}\n",
                "line 4",
                "invalid duration",
            ),
            ("stacks:\n\t- name: web\n", "line 2", ""),
            (
                "stacks:\n  - name: a/b\n    directory: /srv\n",
                "stacks[0].name",
                "not a valid stack name",
            ),
            ("stacks: []\n", "no stacks", ""),
        ];
        for (text, want1, want2) in cases {
            let err = parse(text).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("/etc/clusterup/clusterup.yaml"), "{msg}");
            assert!(msg.contains(want1), "{text:?} gave {msg}");
            assert!(msg.contains(want2), "{text:?} gave {msg}");
            assert!(err.downcast_ref::<crate::exit::UsageError>().is_some());
        }
    }

    #[test]
    fn duplicate_stack_names_are_refused() {
        let err = parse("stacks:\n  - {name: a, directory: /x}\n  - {name: a, directory: /y}\n")
            .unwrap_err();
        assert!(err.to_string().contains("configured twice"));
    }

    #[test]
    fn project_name_follows_compose() {
        assert_eq!(project_name_of(Path::new("/srv/My.App_1")), "myapp_1");
        assert_eq!(project_name_of(Path::new("/srv/-x")), "x");
    }

    #[test]
    fn selecting_an_unknown_stack_lists_the_known_ones() {
        let stacks = parse("stacks:\n  - {name: a, directory: /x}\n").unwrap();
        let err = select(stacks, Some("b")).unwrap_err();
        assert!(err.to_string().contains("known stacks: a"));
    }
}
