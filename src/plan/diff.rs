//! diff: the deployed compose model against the new one, service by service
//! and field by field, plus a text diff of the files for people. Both
//! models come normalized from Compose, so anchors, `extends`, profiles,
//! interpolation and short/long syntax differences do not show up here.
//! Environment values are never shown: only which keys changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_yaml::Value as Yaml;

use crate::seams::compose::{ComposeModel, ComposeService};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ModelDiff {
    pub services: Vec<ServiceDiff>,
    pub top_level: Vec<TopLevelChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum ServiceDiff {
    Added {
        service: String,
    },
    Removed {
        service: String,
    },
    /// A removed and an added service with the same image and volumes.
    Renamed {
        from: String,
        to: String,
        data: String,
    },
    Changed {
        service: String,
        fields: Vec<FieldChange>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FieldChange {
    pub field: String,
    /// A short, secret-free description (keys, not values).
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TopLevelChange {
    /// networks, volumes, secrets or configs
    pub section: String,
    pub name: String,
    pub change: Presence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Added,
    Removed,
    Changed,
}

pub fn diff(old: &ComposeModel, new: &ComposeModel) -> ModelDiff {
    let mut services = Vec::new();
    let removed: Vec<&String> = old.services.keys().filter(|s| !new.services.contains_key(*s)).collect();
    let mut added: Vec<&String> = new.services.keys().filter(|s| !old.services.contains_key(*s)).collect();
    for name in removed {
        let gone = &old.services[name];
        let twin = added.iter().position(|a| same_image_and_volumes(gone, &new.services[*a]));
        match twin {
            Some(i) => {
                let to = added.remove(i);
                services.push(ServiceDiff::Renamed { from: name.clone(), to: to.clone(), data: rename_data(gone) });
            }
            None => services.push(ServiceDiff::Removed { service: name.clone() }),
        }
    }
    services.extend(added.into_iter().map(|s| ServiceDiff::Added { service: s.clone() }));
    for (name, new_svc) in &new.services {
        if let Some(old_svc) = old.services.get(name) {
            let fields = field_changes(&old_svc.raw, &new_svc.raw);
            if !fields.is_empty() {
                services.push(ServiceDiff::Changed { service: name.clone(), fields });
            }
        }
    }
    let mut top_level = Vec::new();
    for (section, new_entries) in &new.top_level {
        let empty = BTreeMap::new();
        let old_entries = old.top_level.get(section).unwrap_or(&empty);
        let names: BTreeSet<&String> = old_entries.keys().chain(new_entries.keys()).collect();
        for name in names {
            let change = match (old_entries.get(name), new_entries.get(name)) {
                (None, Some(_)) => Presence::Added,
                (Some(_), None) => Presence::Removed,
                (Some(a), Some(b)) if a != b => Presence::Changed,
                _ => continue,
            };
            top_level.push(TopLevelChange { section: section.clone(), name: name.clone(), change });
        }
    }
    ModelDiff { services, top_level }
}

fn same_image_and_volumes(a: &ComposeService, b: &ComposeService) -> bool {
    a.image.is_some() && a.image == b.image && a.raw.get("volumes") == b.raw.get("volumes")
}

fn rename_data(svc: &ComposeService) -> String {
    let anonymous = anonymous_volumes(svc);
    let named = named_volumes(svc);
    match (named.is_empty(), anonymous.is_empty()) {
        (true, true) => "no volumes".to_string(),
        (_, false) => {
            format!("anonymous volumes at {} do not follow a rename: their data stays behind", anonymous.join(", "))
        }
        (false, true) => format!("named volumes {} follow the rename", named.join(", ")),
    }
}

/// Mount targets of volumes with no name: their data is tied to the
/// container and is left behind when it is removed or renamed.
/// The names of the configs or secrets (`section`) a service uses, from
/// Compose's normalized `[{source: name, target: ...}]` (or plain names).
pub fn sources(svc: &ComposeService, section: &str) -> Vec<String> {
    svc.raw
        .get(section)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().or_else(|| e.get("source").and_then(Value::as_str)))
        .map(String::from)
        .collect()
}

pub fn anonymous_volumes(svc: &ComposeService) -> Vec<String> {
    volumes(svc)
        .filter(|v| v.get("type").and_then(Value::as_str) == Some("volume") && v.get("source").is_none())
        .filter_map(|v| v.get("target").and_then(Value::as_str).map(String::from))
        .collect()
}

pub fn named_volumes(svc: &ComposeService) -> Vec<String> {
    volumes(svc)
        .filter(|v| v.get("type").and_then(Value::as_str) == Some("volume"))
        .filter_map(|v| v.get("source").and_then(Value::as_str).map(String::from))
        .collect()
}

fn volumes(svc: &ComposeService) -> impl Iterator<Item = &Value> {
    svc.raw.get("volumes").and_then(Value::as_array).into_iter().flatten()
}

/// Host files a service reads whose contents Compose does not hash: bind
/// mounts, and the files behind its `configs` and `secrets`.
pub fn file_inputs(svc: &ComposeService, model: &ComposeModel) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = volumes(svc)
        .filter(|v| v.get("type").and_then(Value::as_str) == Some("bind"))
        .filter_map(|v| v.get("source").and_then(Value::as_str).map(PathBuf::from))
        .collect();
    for section in ["configs", "secrets"] {
        for used in svc.raw.get(section).and_then(Value::as_array).into_iter().flatten() {
            let name = used.get("source").and_then(Value::as_str).or(used.as_str());
            let file = name
                .and_then(|n| model.top_level.get(section)?.get(n))
                .and_then(|def| def.get("file"))
                .and_then(Value::as_str);
            out.extend(file.map(PathBuf::from));
        }
    }
    out
}

/// What a built service's image is made from, on this host. A context
/// Compose fetches (a git URL) has no local files and is not here.
#[derive(Debug, Default)]
pub struct BuildInputs {
    pub context: Option<PathBuf>,
    /// May live outside the context; always sent to the builder.
    pub dockerfile: Option<PathBuf>,
    /// `additional_contexts` that are directories.
    pub extra: Vec<PathBuf>,
}

impl BuildInputs {
    pub fn all(&self) -> impl Iterator<Item = &PathBuf> {
        self.context.iter().chain(&self.dockerfile).chain(&self.extra)
    }

    /// Where the builder looks for ignore rules, first found first: the
    /// Dockerfile's own (`<Dockerfile>.dockerignore`), then the context's.
    pub fn ignore_files(&self) -> Vec<PathBuf> {
        let own = self.dockerfile.as_ref().map(|d| {
            let mut name = d.clone().into_os_string();
            name.push(".dockerignore");
            PathBuf::from(name)
        });
        own.into_iter().chain(self.context.as_ref().map(|c| c.join(".dockerignore"))).collect()
    }
}

pub fn build_inputs(svc: &ComposeService) -> BuildInputs {
    let Some(build) = svc.raw.get("build") else { return BuildInputs::default() };
    let local = |p: &str| Path::new(p).is_absolute().then(|| PathBuf::from(p));
    let context = build.get("context").and_then(Value::as_str).and_then(local);
    let dockerfile = build.get("dockerfile").and_then(Value::as_str).unwrap_or("Dockerfile");
    let dockerfile = local(dockerfile).or_else(|| context.as_ref().map(|c| c.join(dockerfile)));
    let extra = match build.get("additional_contexts") {
        Some(Value::Object(extra)) => extra.values().filter_map(Value::as_str).filter_map(local).collect(),
        _ => Vec::new(),
    };
    BuildInputs { context, dockerfile, extra }
}

/// The networks a service is attached to.
pub fn networks(svc: &ComposeService) -> Vec<String> {
    match svc.raw.get("networks") {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        _ => Vec::new(),
    }
}

/// Services whose containers are joined to another's: `network_mode:
/// service:X` and `volumes_from: [X]` must follow X when it is recreated.
pub fn attached_to(svc: &ComposeService) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(target) = svc.raw.get("network_mode").and_then(Value::as_str).and_then(|m| m.strip_prefix("service:")) {
        out.push(target.to_string());
    }
    for from in svc.raw.get("volumes_from").and_then(Value::as_array).into_iter().flatten() {
        if let Some(f) = from.as_str().filter(|f| !f.starts_with("container:")) {
            out.push(f.split(':').next().unwrap_or(f).to_string());
        }
    }
    out
}

fn field_changes(old: &Value, new: &Value) -> Vec<FieldChange> {
    let empty = serde_json::Map::new();
    let (o, n) = (old.as_object().unwrap_or(&empty), new.as_object().unwrap_or(&empty));
    let keys: BTreeSet<&String> = o.keys().chain(n.keys()).filter(|k| !k.starts_with("x-")).collect();
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| FieldChange { field: k.clone(), detail: detail(k, o.get(k), n.get(k)) })
        .collect()
}

fn detail(field: &str, old: Option<&Value>, new: Option<&Value>) -> Option<String> {
    match field {
        "image" => Some(format!(
            "{} -> {}",
            old.and_then(Value::as_str).unwrap_or("none"),
            new.and_then(Value::as_str).unwrap_or("none")
        )),
        "environment" | "labels" => Some(key_changes(old, new)),
        _ => None,
    }
}

/// Which keys of a map were added, removed or changed; never the values.
fn key_changes(old: Option<&Value>, new: Option<&Value>) -> String {
    let empty = serde_json::Map::new();
    let o = old.and_then(Value::as_object).unwrap_or(&empty);
    let n = new.and_then(Value::as_object).unwrap_or(&empty);
    let pick = |f: &dyn Fn(&String) -> bool, keys: &serde_json::Map<String, Value>| -> Vec<String> {
        keys.keys().filter(|k| f(k)).cloned().collect()
    };
    let added = pick(&|k| !o.contains_key(k), n);
    let removed = pick(&|k| !n.contains_key(k), o);
    let changed = pick(&|k| o.get(k).is_some_and(|v| n.get(k) != Some(v)), n);
    [("added", added), ("removed", removed), ("changed", changed)]
        .into_iter()
        .filter(|(_, keys)| !keys.is_empty())
        .map(|(what, keys)| format!("{what} {}", keys.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A unified diff of one file for people, made from the files' parsed
/// documents with every value that may be a secret replaced (see
/// `redacted_document`): what a line-by-line reading of YAML would miss
/// (anchors merged into `environment`, block scalars, comments, flow
/// style) never reaches the text.
pub fn text_diff(name: &str, old: &str, new: &str) -> String {
    let (old, new) = (redacted_document(name, old), redacted_document(name, new));
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{name}"), &format!("b/{name}"))
        .to_string()
}

fn is_env_file(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.ends_with(".env") || base.starts_with(".env.")
}

/// The file as people may see it: a dotenv file as its keys with value
/// fingerprints; a compose file re-serialized from its parsed YAML with
/// every value under `environment`, `labels`, `build.args`, secret and
/// config `content` and `x-` extensions fingerprinted, and `KEY=value`
/// arguments of `command`, `entrypoint` and health check tests too. A file
/// that does not parse shows only that it changed. Comments go: they hold
/// secrets as often as anything.
pub fn redacted_document(name: &str, text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    if is_env_file(name) {
        return crate::redact::parse_dotenv(text)
            .into_iter()
            .map(|(key, value)| format!("{key}={}\n", crate::redact::fingerprint(&value)))
            .collect();
    }
    let mut doc: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            let at = e.location().map(|l| format!(" (line {})", l.line())).unwrap_or_default();
            return format!("# not YAML{at}; content {} not shown\n", crate::redact::fingerprint(text));
        }
    };
    // `<<: *anchor` merged where it is used; an unmergeable one stays and
    // is redacted where it stands.
    let _ = doc.apply_merge();
    redact_compose(&mut doc);
    serde_yaml::to_string(&doc).unwrap_or_default()
}

fn redact_compose(doc: &mut Yaml) {
    let Yaml::Mapping(top) = doc else { return redact_all(doc) };
    for (key, value) in top.iter_mut() {
        match key.as_str().unwrap_or_default() {
            k if k.starts_with("x-") => redact_all(value),
            "services" => {
                for svc in mapping_values(value) {
                    redact_service(svc);
                }
            }
            "volumes" | "networks" => {
                for def in mapping_values(value) {
                    redact_extensions(def);
                    if let Some(opts) = def.get_mut("driver_opts") {
                        redact_pairs(opts);
                    }
                }
            }
            "secrets" | "configs" => {
                for def in mapping_values(value) {
                    redact_extensions(def);
                    if let Some(content) = def.get_mut("content") {
                        redact_all(content);
                    }
                }
            }
            _ => redact_extensions(value),
        }
    }
}

fn mapping_values(value: &mut Yaml) -> impl Iterator<Item = &mut Yaml> {
    value.as_mapping_mut().into_iter().flat_map(|m| m.iter_mut().map(|(_, v)| v))
}

fn redact_service(svc: &mut Yaml) {
    redact_extensions(svc);
    let Yaml::Mapping(fields) = svc else { return redact_all(svc) };
    for (key, value) in fields.iter_mut() {
        match key.as_str().unwrap_or_default() {
            "environment" | "labels" => redact_pairs(value),
            "command" | "entrypoint" => redact_arguments(value),
            "logging" => {
                if let Some(options) = value.get_mut("options") {
                    redact_pairs(options);
                }
            }
            "healthcheck" => {
                if let Some(test) = value.get_mut("test") {
                    redact_arguments(test);
                }
            }
            "build" => {
                for part in ["args", "labels"] {
                    if let Some(v) = value.get_mut(part) {
                        redact_pairs(v);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `x-` keys anywhere below `value` hide their values.
fn redact_extensions(value: &mut Yaml) {
    match value {
        Yaml::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                if k.as_str().is_some_and(|k| k.starts_with("x-")) {
                    redact_all(v);
                } else {
                    redact_extensions(v);
                }
            }
        }
        Yaml::Sequence(items) => items.iter_mut().for_each(redact_extensions),
        Yaml::Tagged(t) => redact_extensions(&mut t.value),
        _ => {}
    }
}

/// Every scalar below `value` becomes its fingerprint; keys stay.
fn redact_all(value: &mut Yaml) {
    match value {
        Yaml::Mapping(m) => m.iter_mut().for_each(|(_, v)| redact_all(v)),
        Yaml::Sequence(items) => items.iter_mut().for_each(redact_all),
        Yaml::Tagged(t) => redact_all(&mut t.value),
        Yaml::Null => {}
        scalar => *scalar = Yaml::String(crate::redact::fingerprint(&scalar_text(scalar))),
    }
}

/// `KEY: value` maps and `KEY=value` lists: keys stay, values go.
fn redact_pairs(value: &mut Yaml) {
    match value {
        Yaml::Sequence(items) => {
            for item in items {
                match item {
                    Yaml::String(s) => *s = redact_assignment(s),
                    other => redact_all(other),
                }
            }
        }
        other => redact_all(other),
    }
}

/// Arguments that look like `KEY=value` (or `--flag=value`) lose the
/// value, in a list or in one string.
fn redact_arguments(value: &mut Yaml) {
    match value {
        Yaml::String(s) => *s = redact_words(s.split(' ')).join(" "),
        Yaml::Sequence(items) => {
            let words: Vec<String> = items.iter().map(scalar_text).collect();
            let redacted = redact_words(words.iter().map(String::as_str));
            for (item, (word, new)) in items.iter_mut().zip(words.iter().zip(redacted)) {
                if *word != new {
                    *item = Yaml::String(new);
                }
            }
        }
        Yaml::Mapping(_) | Yaml::Tagged(_) => redact_all(value),
        _ => {}
    }
}

/// `KEY=value` loses its value; so does the word after a flag that names
/// a credential (`--password X`, `--api-token X`).
fn redact_words<'a>(words: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut after_secret_flag = false;
    words
        .map(|word| {
            let out = if after_secret_flag && !word.is_empty() {
                crate::redact::fingerprint(word)
            } else {
                redact_assignment(word)
            };
            let flag = word.trim_start_matches('-').to_ascii_lowercase();
            after_secret_flag = word.starts_with('-')
                && !word.contains('=')
                && ["pass", "token", "secret", "key", "auth", "cred"].iter().any(|w| flag.contains(w));
            out
        })
        .collect()
}

fn redact_assignment(text: &str) -> String {
    match text.split_once('=') {
        Some((key, value)) => format!("{key}={}", crate::redact::fingerprint(value)),
        None => text.to_string(),
    }
}

fn scalar_text(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(services: Value, volumes: Value) -> ComposeModel {
        let json = json!({"name": "p", "services": services, "volumes": volumes});
        ComposeModel::from_json(&json).unwrap()
    }

    #[test]
    fn added_removed_changed_and_top_level() {
        let old = model(
            json!({"web": {"image": "w:1", "environment": {"A": "1", "S": "secret1"}}, "db": {"image": "pg"}}),
            json!({"data": {"name": "p_data"}}),
        );
        let new = model(
            json!({"web": {"image": "w:2", "environment": {"A": "1", "S": "secret2", "B": "x"}}, "cache": {"image": "redis"}}),
            json!({"data": {"name": "p_data", "driver": "nfs"}}),
        );
        let d = diff(&old, &new);
        assert!(d.services.contains(&ServiceDiff::Removed { service: "db".into() }));
        assert!(d.services.contains(&ServiceDiff::Added { service: "cache".into() }));
        let ServiceDiff::Changed { fields, .. } =
            d.services.iter().find(|s| matches!(s, ServiceDiff::Changed { .. })).unwrap()
        else {
            unreachable!()
        };
        let env = fields.iter().find(|f| f.field == "environment").unwrap();
        assert_eq!(env.detail.as_deref(), Some("added B; changed S"));
        assert_eq!(fields.iter().find(|f| f.field == "image").unwrap().detail.as_deref(), Some("w:1 -> w:2"));
        let text = serde_json::to_string(&d).unwrap();
        assert!(!text.contains("secret"), "values never appear: {text}");
        assert_eq!(
            d.top_level,
            [TopLevelChange { section: "volumes".into(), name: "data".into(), change: Presence::Changed }]
        );
    }

    #[test]
    fn renames_are_found_by_image_and_volumes() {
        let named = json!([{"type": "volume", "source": "data", "target": "/data"}]);
        let anon = json!([{"type": "volume", "target": "/data"}]);
        for (volumes, want) in [(named, "named volumes data follow"), (anon, "anonymous volumes at /data")] {
            let old = model(json!({"api": {"image": "a:1", "volumes": volumes}}), json!({}));
            let new = model(json!({"backend": {"image": "a:1", "volumes": volumes}}), json!({}));
            let d = diff(&old, &new);
            match &d.services[..] {
                [ServiceDiff::Renamed { from, to, data }] => {
                    assert_eq!((from.as_str(), to.as_str()), ("api", "backend"));
                    assert!(data.contains(want), "{data}");
                }
                other => panic!("{other:?}"),
            }
        }
        let old = model(json!({"api": {"image": "a:1"}}), json!({}));
        let new = model(json!({"backend": {"image": "b:1"}}), json!({}));
        assert_eq!(diff(&old, &new).services.len(), 2, "different images: a removal and an addition");
    }

    #[test]
    fn identical_models_and_extension_fields_give_no_diff() {
        let old = model(json!({"web": {"image": "w", "x-note": "a"}}), json!({}));
        let new = model(json!({"web": {"image": "w", "x-note": "b"}}), json!({}));
        assert_eq!(diff(&old, &new), ModelDiff::default());
    }

    #[test]
    fn text_diff_shows_structure_and_hides_environment_values() {
        let old = "services:\n  web:\n    image: w:1\n    environment:\n      TOKEN: abc123\n      MODE: a\n    ports: [\"80\"]\n";
        let new = "services:\n  web:\n    image: w:2\n    environment:\n      TOKEN: zzz999\n      MODE: a\n    ports: [\"80\"]\n";
        let d = text_diff("compose.yaml", old, new);
        assert!(d.contains("-    image: w:1") && d.contains("+    image: w:2"), "{d}");
        assert!(d.contains("TOKEN:") && !d.contains("abc123") && !d.contains("zzz999"), "{d}");
        assert!(d.contains("ports"), "lines after the block are shown as they are: {d}");
        let d = text_diff(".env", "PASSWORD=one\n", "PASSWORD=two\n");
        assert!(d.contains("PASSWORD=") && !d.contains("one") && !d.contains("two"), "{d}");
        assert_eq!(text_diff("compose.yaml", "a: 1 # old comment\n", "a: 1 # new comment\n"), "");
    }

    /// The layouts a line-based redaction leaked from (issue 13, item 2):
    /// no byte of any secret survives, in either version of the file.
    #[test]
    fn no_secret_survives_any_layout() {
        let cases: [(&str, &str); 11] = [
            (
                "compose.yaml",
                "x-env: &env\n  DB_PASSWORD: SECRET\nservices:\n  web:\n    image: w\n    environment:\n      <<: *env\n      MODE: a\n",
            ),
            (
                "compose.yaml",
                "services:\n  web:\n    image: w\n    command: [\"run\", \"--token=SECRET\"]\n    entrypoint: /bin/sh -c \"API_KEY=SECRET exec app\"\n",
            ),
            (
                "compose.yaml",
                "services:\n  web:\n    image: w\n    environment: # the app's settings\n      PASSWORD: SECRET\n",
            ),
            (
                "compose.yaml",
                "services:\n  web:\n    image: w\n    labels:\n      traefik.http.middlewares.auth.basicauth.users: \"admin:SECRET\"\n",
            ),
            (
                "compose.yaml",
                "services:\n  web:\n    image: w\n    environment:\n    - PASSWORD=SECRET\n    - MODE=a\n",
            ),
            (
                "compose.yaml",
                "services:\n  web:\n    image: w\n    environment:\n      CERT: |\n        -----BEGIN-----\n        SECRET\n        -----END-----\n",
            ),
            (
                "compose.yaml",
                "services:\n  web:\n    build:\n      context: .\n      args:\n        NPM_TOKEN: SECRET\n",
            ),
            (".env", "A=1\nKEY=\"first line\nSECRET\nlast line\"\nB=2\n"),
            (
                "compose.yaml",
                "services:\n  web:\n    image: w\n    x-note: SECRET\nsecrets:\n  s:\n    content: SECRET\n",
            ),
            (
                "compose.yaml",
                "services:\n  web:\n    image: w\n    command: [\"run\", \"--db-password\", \"SECRET\"]\n    entrypoint: app --api-token SECRET -v\n",
            ),
            (
                "compose.yaml",
                "services:\n  web:\n    image: w\n    logging:\n      driver: splunk\n      options: {splunk-token: SECRET}\nvolumes:\n  share:\n    driver_opts: {type: cifs, o: \"username=u,password=SECRET\"}\n",
            ),
        ];
        for (name, text) in cases {
            for (i, (old, new)) in
                [(text.replace("SECRET", "s3cr3t-one"), text.replace("SECRET", "s3cr3t-two"))].iter().enumerate()
            {
                let d = text_diff(name, old, new);
                assert!(!d.contains("s3cr3t") && !d.contains("SECRET"), "case {i} of {text:?} leaked:\n{d}");
                assert!(d.contains("<redacted #"), "the change still shows as a changed fingerprint: {d}");
                let d = text_diff(name, "", new);
                assert!(!d.contains("s3cr3t"), "{d}");
            }
        }
    }

    /// Issue 13, item 3: the line-based redaction cut its output at a byte
    /// count that landed inside a multi-byte character (exit 101 on every
    /// run). The crafted file that did it, at every value length.
    #[test]
    fn multi_byte_text_before_a_long_value_does_not_panic() {
        for n in 1..80 {
            let text = format!(
                "x: {}\nservices:\n  web:\n    environment:\n      environment: {}\n",
                "é".repeat(30),
                "Z".repeat(n)
            );
            let d = text_diff("compose.yaml", "", &text);
            assert!(!d.contains('Z'), "the value is redacted: {d}");
        }
    }

    #[test]
    fn a_file_that_is_not_yaml_shows_only_that_it_changed() {
        let d = text_diff("compose.yaml", "services: {}\n", "services: [\n  PASSWORD: s3cr3t\n");
        assert!(d.contains("not YAML") && !d.contains("s3cr3t"), "{d}");
    }

    /// Pairs of compose files as Compose normalizes them, recorded in
    /// `tests/fixtures/normalized/<case>/{a,b}/config.json` (the e2e test
    /// `normalized` checks the recording against the real Compose):
    /// spelling differences must vanish, real changes must not.
    mod normalized_by_compose {
        use super::*;

        fn case(name: &str) -> ModelDiff {
            let side = |side: &str| {
                let path =
                    format!("{}/tests/fixtures/normalized/{name}/{side}/config.json", env!("CARGO_MANIFEST_DIR"));
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                ComposeModel::from_json(&serde_json::from_str(&text).unwrap()).unwrap()
            };
            diff(&side("a"), &side("b"))
        }

        /// Anchors and merges, long and short syntax (`volume: {}`,
        /// `create_host_path`), interpolation defaults, `extends`, a
        /// service under an inactive profile.
        #[test]
        fn spelling_differences_vanish() {
            for name in [
                "same-anchors",
                "same-long-syntax",
                "same-interpolation-default",
                "same-extends",
                "same-inactive-profile",
            ] {
                assert_eq!(case(name), ModelDiff::default(), "{name}");
            }
        }

        #[test]
        fn real_changes_show() {
            match &case("changed-env-file-tag").services[..] {
                [ServiceDiff::Changed { fields, .. }] => assert_eq!(fields[0].detail.as_deref(), Some("w:1 -> w:2")),
                other => panic!("{other:?}"),
            }
            let d = case("changed-port");
            assert!(
                matches!(&d.services[..], [ServiceDiff::Changed { fields, .. }] if fields[0].field == "ports"),
                "{d:?}"
            );
        }
    }
}
