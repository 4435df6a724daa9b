//! What `docker compose config` reads to build a project's model, found
//! without running it: the compose files (through `include` and
//! `extends`), the `.env` files, every `env_file` and `label_file`, and any
//! other file a compose file names. A model cached under a key made of
//! these (and the environment, which interpolation reads) is the model
//! Compose would print; where the files cannot be told for sure, there is
//! no key and Compose is asked.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use sha2::{Digest, Sha256};

/// Changes whenever what is cached under a key changes shape.
const KEY_FORMAT: &str = "clusterup compose model 1";

/// A key for what `docker compose config` (the binary `compose`) prints
/// for this project now: the same key, the same model and hashes. None
/// when the inputs cannot be told. `env` is the environment Compose runs
/// with.
pub fn cache_key(
    compose: &Path,
    directory: &Path,
    files: &[PathBuf],
    project: Option<&str>,
    env: &[(OsString, OsString)],
) -> Option<String> {
    let inputs = inputs(directory, files, env)?;
    let mut key = Key(Sha256::new());
    key.field(KEY_FORMAT.as_bytes());
    key.field(env!("CARGO_PKG_VERSION").as_bytes());
    key.identity(compose)?;
    key.field(directory.as_os_str().as_bytes());
    for f in files {
        key.field(f.as_os_str().as_bytes());
    }
    key.field(project.unwrap_or_default().as_bytes());
    let mut texts = Vec::new();
    for path in &inputs.read {
        key.field(path.as_os_str().as_bytes());
        match std::fs::read(path) {
            Ok(bytes) => {
                key.field(&bytes);
                texts.push(bytes);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => key.field(b"\0absent"),
            Err(_) => return None,
        }
    }
    // Interpolation may read any variable, `${PWD}` included; those that
    // differ on every run of a timer or login count only where a file
    // names them.
    let mut env: Vec<_> = env
        .iter()
        .filter(|(name, _)| {
            !VOLATILE.iter().any(|v| name == v) || texts.iter().any(|t| interpolates(t, name.as_bytes()))
        })
        .collect();
    env.sort();
    for (name, value) in env {
        key.field(name.as_bytes());
        key.field(value.as_bytes());
    }
    for path in &inputs.named {
        key.field(path.as_os_str().as_bytes());
        key.identity(path)?;
    }
    Some(format!("{:x}", key.0.finalize()))
}

/// Variables set anew for each run by systemd, a shell or an ssh login.
const VOLATILE: [&str; 18] = [
    "_",
    "OLDPWD",
    "SHLVL",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "SYSTEMD_EXEC_PID",
    "MANAGERPID",
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "SSH_CLIENT",
    "SSH_CONNECTION",
    "SSH_TTY",
    "SSH_AUTH_SOCK",
    "XDG_SESSION_ID",
];

/// Whether `text` reads the variable `name` as Compose interpolates:
/// `${name...` or `$name` not followed by more of a name. A bare mention
/// is no use (`_` is in nearly every compose file, and a shell sets it to
/// the command that ran clusterup).
fn interpolates(text: &[u8], name: &[u8]) -> bool {
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    (0..text.len()).any(|i| {
        let rest = &text[i..];
        if rest.starts_with(b"${") && rest[2..].starts_with(name) {
            return !rest.get(2 + name.len()).is_some_and(word);
        }
        rest.starts_with(b"$") && rest[1..].starts_with(name) && !rest.get(1 + name.len()).is_some_and(word)
    })
}

struct Key(Sha256);

impl Key {
    /// Length-prefixed, so no two sequences of fields hash alike.
    fn field(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    /// A file as the file system identifies it: any write or replacement
    /// changes its inode, size, or change time.
    fn identity(&mut self, path: &Path) -> Option<()> {
        let m = std::fs::metadata(path).ok()?;
        for n in [m.dev(), m.ino(), m.size()] {
            self.field(&n.to_le_bytes());
        }
        for n in [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()] {
            self.field(&n.to_le_bytes());
        }
        Some(())
    }
}

/// The files Compose reads when it runs in `directory`, by role.
#[derive(Debug, Default, PartialEq)]
pub struct Inputs {
    /// Read whole: their contents (or absence) decide the model.
    pub read: BTreeSet<PathBuf>,
    /// Named by a value that happens to be an existing file (a bind
    /// mount, a config's file): Compose may look at them, so a change of
    /// size, time or inode counts.
    pub named: BTreeSet<PathBuf>,
    /// Some service or include reads an `env_file`.
    pub env_files: bool,
}

/// Compose's own override file names, read beside the default file.
const OVERRIDE_NAMES: [&str; 4] =
    ["compose.override.yaml", "compose.override.yml", "docker-compose.override.yaml", "docker-compose.override.yml"];

/// Variables that make Compose read files other than the ones found here.
const FILE_CHOOSING_VARIABLES: [&str; 3] = ["COMPOSE_FILE", "COMPOSE_ENV_FILES", "COMPOSE_PATH_SEPARATOR"];

/// How deep `include` and `extends` may nest before the answer is "cannot
/// tell" (Compose itself refuses cycles).
const MAX_DEPTH: usize = 16;

/// The inputs of the project in `directory` with the `--file`s `files`
/// (none: Compose's default names), or None when they cannot be told.
pub fn inputs(directory: &Path, files: &[PathBuf], env: &[(OsString, OsString)]) -> Option<Inputs> {
    if env.iter().any(|(name, _)| FILE_CHOOSING_VARIABLES.iter().any(|v| name == v)) {
        return None;
    }
    let mut found = Inputs::default();
    let roots: Vec<PathBuf> = if files.is_empty() {
        let defaults = super::compose::COMPOSE_FILE_NAMES.iter().chain(&OVERRIDE_NAMES).map(|n| directory.join(n));
        found.read.extend(defaults);
        // With no file here Compose looks in the parent directories.
        let main = super::compose::COMPOSE_FILE_NAMES.iter().map(|n| directory.join(n)).find(|p| p.is_file())?;
        let override_file = OVERRIDE_NAMES.iter().map(|n| directory.join(n)).filter(|p| p.is_file());
        std::iter::once(main).chain(override_file).collect()
    } else {
        files.iter().map(|f| directory.join(f)).collect()
    };
    let project_dir = roots.first().and_then(|f| f.parent()).unwrap_or(directory).to_path_buf();
    for dir in [directory, &project_dir] {
        let env = dir.join(".env");
        if names_file_choosing_variable(&env) {
            return None;
        }
        found.read.insert(env);
    }
    let mut walk = Walk { found, seen: BTreeSet::new() };
    for root in &roots {
        walk.compose_file(root, &project_dir, 0)?;
    }
    Some(walk.found)
}

fn names_file_choosing_variable(env_file: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(env_file) else { return false };
    text.lines().any(|l| {
        let l = l.trim_start().trim_start_matches("export ").trim_start();
        FILE_CHOOSING_VARIABLES.iter().any(|v| l.strip_prefix(v).is_some_and(|rest| rest.trim_start().starts_with('=')))
    })
}

struct Walk {
    found: Inputs,
    seen: BTreeSet<PathBuf>,
}

impl Walk {
    /// One compose file and what it reads; `project_dir` is where its
    /// project's relative `env_file`s may also be resolved.
    fn compose_file(&mut self, path: &Path, project_dir: &Path, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.found.read.insert(path.to_path_buf());
        if !self.seen.insert(path.to_path_buf()) {
            return Some(());
        }
        let text = std::fs::read_to_string(path).ok()?;
        let doc: Value = serde_yaml::from_str(&text).ok()?;
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        for entry in sequence(doc.get("include")) {
            let (paths, env_files, project) = match entry {
                Value::String(p) => (vec![p.as_str()], Vec::new(), None),
                Value::Mapping(_) => {
                    let project = match entry.get("project_directory") {
                        Some(p) => Some(local_path(&dir, p.as_str()?)?),
                        None => None,
                    };
                    (strings(entry.get("path"))?, strings(entry.get("env_file"))?, project)
                }
                _ => return None,
            };
            for p in paths {
                let included = local_path(&dir, p)?;
                let included_dir = project.clone().unwrap_or_else(|| included.parent().unwrap_or(&dir).to_path_buf());
                self.found.read.insert(included_dir.join(".env"));
                for e in &env_files {
                    self.found.env_files = true;
                    self.found.read.insert(local_path(&dir, e)?);
                }
                self.compose_file(&included, &included_dir, depth + 1)?;
            }
        }
        let services = doc.get("services").and_then(Value::as_mapping).into_iter().flat_map(|m| m.values());
        for svc in services {
            for key in ["env_file", "label_file"] {
                for file in file_entries(svc.get(key))? {
                    self.found.env_files |= key == "env_file";
                    self.found.read.insert(local_path(&dir, file)?);
                    self.found.read.insert(local_path(project_dir, file)?);
                }
            }
            if let Some(file) = svc.get("extends").and_then(|e| e.get("file")) {
                let extended = local_path(&dir, file.as_str()?)?;
                self.compose_file(&extended, project_dir, depth + 1)?;
            }
        }
        self.named_files(&doc, &dir);
        Some(())
    }

    /// Any string that names an existing file, wherever it appears.
    fn named_files(&mut self, value: &Value, dir: &Path) {
        match value {
            Value::String(s) if !s.is_empty() && s.len() < 4096 && !s.contains(['\n', '\0']) => {
                let path = dir.join(s);
                if path.is_file() && !self.found.read.contains(&path) {
                    self.found.named.insert(path);
                }
            }
            Value::Sequence(items) => items.iter().for_each(|v| self.named_files(v, dir)),
            Value::Mapping(map) => map.iter().for_each(|(k, v)| {
                self.named_files(k, dir);
                self.named_files(v, dir);
            }),
            Value::Tagged(tagged) => self.named_files(&tagged.value, dir),
            _ => {}
        }
    }
}

/// A path Compose reads from this machine: relative to `dir`, and written
/// so that no interpolation or remote source decides where it points.
fn local_path(dir: &Path, path: &str) -> Option<PathBuf> {
    let remote = path.contains("://") || path.starts_with("git@");
    if path.is_empty() || path.contains('$') || path.starts_with('~') || remote {
        return None;
    }
    Some(dir.join(path))
}

fn sequence(value: Option<&Value>) -> impl Iterator<Item = &Value> {
    value.and_then(Value::as_sequence).into_iter().flatten()
}

/// A string or a list of strings; None for anything else.
fn strings(value: Option<&Value>) -> Option<Vec<&str>> {
    match value {
        None => Some(Vec::new()),
        Some(Value::String(s)) => Some(vec![s.as_str()]),
        Some(Value::Sequence(items)) => items.iter().map(Value::as_str).collect(),
        Some(_) => None,
    }
}

/// `env_file: a.env`, `[a.env, b.env]` or `[{path: a.env, required: false}]`;
/// None when an entry is none of these.
fn file_entries(value: Option<&Value>) -> Option<Vec<&str>> {
    match value {
        Some(Value::Sequence(items)) => items.iter().map(file_entry).collect(),
        other => strings(other),
    }
}

fn file_entry(item: &Value) -> Option<&str> {
    item.as_str().or_else(|| item.get("path").and_then(Value::as_str))
}

/// The `env_file` entries of a compose file's services, as written, for
/// callers that take what they can: none when the file cannot be read,
/// and an entry of no known form is left out.
pub fn env_file_entries(compose_file: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(compose_file) else { return Vec::new() };
    let Ok(doc) = serde_yaml::from_str::<Value>(&text) else { return Vec::new() };
    let services = doc.get("services").and_then(Value::as_mapping);
    let entries = services.into_iter().flat_map(|m| m.values()).flat_map(|svc| match svc.get("env_file") {
        Some(Value::Sequence(items)) => items.iter().filter_map(file_entry).collect(),
        Some(one) => one.as_str().into_iter().collect(),
        None => Vec::new(),
    });
    entries.map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn follows_includes_extends_and_env_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(
            d,
            &[
                (
                    "compose.yaml",
                    "include:\n  - lib/db.yaml\n  - path: [other/x.yaml]\n    env_file: other/x.env\n\
                     services:\n  web:\n    image: w\n    env_file: [app.env, {path: opt.env, required: false}]\n\
                     \x20   extends: {file: base/common.yaml, service: base}\n    volumes: [{type: bind, source: ./conf.ini, target: /c}]\n",
                ),
                ("lib/db.yaml", "services:\n  db:\n    image: d\n    label_file: labels.txt\n"),
                ("other/x.yaml", "services:\n  x:\n    image: x\n"),
                ("base/common.yaml", "services:\n  base:\n    env_file: base.env\n"),
                ("conf.ini", "a=1\n"),
            ],
        );
        let found = inputs(d, &[], &[]).unwrap();
        for read in [
            "compose.yaml",
            "compose.override.yaml",
            ".env",
            "app.env",
            "opt.env",
            "lib/db.yaml",
            "lib/.env",
            "lib/labels.txt",
            "other/x.yaml",
            "other/x.env",
            "base/common.yaml",
            "base/base.env",
        ] {
            assert!(found.read.contains(&d.join(read)), "{read} is read: {found:?}");
        }
        assert!(found.named.contains(&d.join("./conf.ini")), "{found:?}");
        assert!(found.env_files);
        write(d, &[("compose.yaml", "services:\n  web:\n    image: w\n")]);
        assert!(!inputs(d, &[], &[]).unwrap().env_files);
    }

    #[test]
    fn every_input_class_changes_the_key() {
        let tmp = tempfile::tempdir().unwrap();
        let (d, binary) = (tmp.path().join("stack"), tmp.path().join("docker-compose"));
        std::fs::create_dir(&d).unwrap();
        write(tmp.path(), &[("docker-compose", "compose 2.40")]);
        write(
            &d,
            &[
                (
                    "compose.yaml",
                    "include: [lib/db.yaml]\nservices:\n  web:\n    image: w:${TAG}\n    env_file: [app.env, {path: opt.env, required: false}]\n\
                     \x20   extends: {file: base/common.yaml, service: base}\n    volumes: [{type: bind, source: ./conf.ini, target: /c}]\n",
                ),
                (".env", "A=1\n"),
                ("app.env", "B=1\n"),
                ("lib/db.yaml", "services:\n  db:\n    image: d\n    label_file: labels.txt\n"),
                ("lib/labels.txt", "x=1\n"),
                ("base/common.yaml", "services:\n  base:\n    env_file: base.env\n"),
                ("base/base.env", "C=1\n"),
                ("conf.ini", "a=1\n"),
            ],
        );
        let env = |tag: &str| vec![(OsString::from("PATH"), OsString::from("/bin")), ("TAG".into(), tag.into())];
        let key = |project: Option<&str>, tag: &str| cache_key(&binary, &d, &[], project, &env(tag)).unwrap();
        let mut seen = BTreeSet::from([key(None, "1")]);
        assert_eq!(key(None, "1"), key(None, "1"), "nothing changed, the same key");
        let changes: [(&str, &dyn Fn()); 11] = [
            ("the compose file", &|| write(&d, &[("compose.yaml", "services:\n  web:\n    image: w\n")])),
            ("an override file appearing", &|| write(&d, &[("compose.override.yaml", "services: {}\n")])),
            (".env", &|| write(&d, &[(".env", "A=2\n")])),
            ("an env_file", &|| write(&d, &[("app.env", "B=2\n")])),
            ("an optional env_file appearing", &|| write(&d, &[("opt.env", "D=1\n")])),
            ("an included file", &|| {
                write(&d, &[("lib/db.yaml", "services:\n  db:\n    image: e\n    label_file: labels.txt\n")])
            }),
            ("an included file's label_file", &|| write(&d, &[("lib/labels.txt", "x=2\n")])),
            ("an extended file", &|| {
                write(&d, &[("base/common.yaml", "services:\n  base:\n    env_file: base.env\n    init: true\n")])
            }),
            ("an extended file's env_file", &|| write(&d, &[("base/base.env", "C=2\n")])),
            ("a named file", &|| write(&d, &[("conf.ini", "a=22\n")])),
            ("the compose binary", &|| write(tmp.path(), &[("docker-compose", "compose 2.41")])),
        ];
        // Each change is made to the files as the earlier ones left them;
        // the compose file is rewritten last so the others stay read.
        for (what, change) in changes.iter().skip(1).chain(changes.iter().take(1)) {
            change();
            assert!(seen.insert(key(None, "1")), "{what} changes the key");
        }
        assert!(seen.insert(key(Some("other"), "1")), "the project name changes the key");
        assert!(seen.insert(key(None, "2")), "the environment changes the key");

        let run = |id: &str| {
            let mut env = env("2");
            env.push(("INVOCATION_ID".into(), id.into()));
            cache_key(&binary, &d, &[], None, &env).unwrap()
        };
        assert_eq!(run("a1"), run("b2"), "what systemd sets anew for each run is no input");
        let shell = |command: &str| {
            let mut env = env("2");
            env.push(("_".into(), command.into()));
            cache_key(&binary, &d, &[], None, &env).unwrap()
        };
        write(&d, &[("compose.yaml", "services:\n  web:\n    image: w\n    network_mode: none\n")]);
        assert_eq!(shell("/usr/bin/clusterup"), shell("/usr/bin/strace"), "nor is the command a shell ran: `_`");
        for text in ["ID=$INVOCATION_IDS\n", "ID=${INVOCATION_IDS}\n", "INVOCATION_ID=1\n"] {
            write(&d, &[(".env", text)]);
            assert_eq!(run("a1"), run("b2"), "{text}: another variable, or no interpolation");
        }
        write(&d, &[(".env", "ID=$INVOCATION_ID\n")]);
        assert_ne!(run("a1"), run("b2"), "a file interpolating it, bare");
        write(&d, &[(".env", "ID=${INVOCATION_ID}\n")]);
        assert_ne!(run("a1"), run("b2"), "unless a file names it");
    }

    #[test]
    fn what_cannot_be_told_has_no_inputs() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        assert_eq!(inputs(d, &[], &[]), None, "no compose file here: Compose looks in the parents");
        for compose in [
            "services:\n  web:\n    env_file: ${ENV_DIR}/app.env\n",
            "include:\n  - oci://registry/stack:1\n",
            "include:\n  - https://example.com/x.git\n",
            "services: [unclosed\n",
        ] {
            write(d, &[("compose.yaml", compose)]);
            assert_eq!(inputs(d, &[], &[]), None, "{compose}");
        }
        write(d, &[("compose.yaml", "services:\n  web:\n    image: w\n"), (".env", "COMPOSE_FILE=a.yaml:b.yaml\n")]);
        assert_eq!(inputs(d, &[], &[]), None, "the .env chooses other compose files");
    }
}
