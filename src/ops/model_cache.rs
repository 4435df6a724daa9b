//! The compose model of a directory stack, kept from the last run while
//! nothing Compose reads has changed: the timer's common run ("nothing
//! changed") then costs what the registries cost, not two Compose starts.
//!
//! What is kept is the planning view of the model: the fields the planner
//! reads, never environment values, commands or other labels, which may be
//! secrets (the state directory holds no secret). Every plan of such a
//! stack is made from that view, cached or not, so a cache hit and a miss
//! plan alike.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::seams::compose::{Compose, ComposeModel, TOP_LEVEL_SECTIONS};

const FILE: &str = "compose-model.json";

/// Models kept per stack: a host whose timer and operator run with
/// different environments has a key for each, and neither evicts the other.
const ENTRIES: usize = 4;

/// Service fields the planner reads (labels, volumes, networks, what a
/// service is attached to, the names of its configs and secrets).
const SERVICE_FIELDS: [&str; 12] = [
    "image",
    "depends_on",
    "container_name",
    "network_mode",
    "ports",
    "mac_address",
    "networks",
    "volumes",
    "volumes_from",
    "configs",
    "secrets",
    "profiles",
];

/// Of `build`, what says where the image comes from; never its args.
const BUILD_FIELDS: [&str; 3] = ["context", "dockerfile", "target"];

/// Of top-level networks, volumes, configs and secrets: names and files,
/// never inline content or driver options (which hold passwords).
const TOP_LEVEL_FIELDS: [&str; 3] = ["name", "external", "file"];

/// Labels clusterup reads, by prefix.
const LABEL_PREFIXES: [&str; 2] = ["clusterup.", "com.centurylinklabs.watchtower."];

#[derive(Serialize, Deserialize, Default)]
struct Kept {
    entries: Vec<Cached>,
}

#[derive(Serialize, Deserialize)]
struct Cached {
    key: String,
    model: Value,
    hashes: BTreeMap<String, String>,
}

/// The planning view of the model and the config hashes, from the cache
/// when `use_cache` and the key still matches, else from Compose (and then
/// kept). The bool says whether it came from the cache.
pub fn model_and_hashes(
    compose: &dyn Compose,
    state_dir: &Path,
    use_cache: bool,
) -> Result<(ComposeModel, BTreeMap<String, String>, bool)> {
    let path = state_dir.join(FILE);
    let key = cache_key(compose);
    let mut kept = load(&path);
    if use_cache
        && let Some(key) = &key
        && let Some(cached) = kept.entries.iter().find(|c| &c.key == key)
    {
        return Ok((ComposeModel::from_json(&cached.model)?, cached.hashes.clone(), true));
    }
    let (model, hashes) = compose.model_and_hashes()?;
    let view = planning_view(&model);
    // Files changed while Compose read them: the model may be of either
    // version, so it is kept under neither.
    if let Some(key) = key
        && cache_key(compose).as_ref() == Some(&key)
    {
        kept.entries.retain(|c| c.key != key);
        kept.entries.insert(0, Cached { key, model: view.clone(), hashes: hashes.clone() });
        kept.entries.truncate(ENTRIES);
        // A cache that cannot be written costs the next run time, nothing
        // else; the state directory's own writes report its trouble.
        let _ = crate::files::private_dir(state_dir)
            .map_err(anyhow::Error::from)
            .and_then(|()| crate::files::write_atomic(&path, &serde_json::to_vec(&kept)?));
    }
    Ok((ComposeModel::from_json(&view)?, hashes, false))
}

/// Compose's key, and the fields kept: a clusterup that keeps other
/// fields does not read what an earlier one kept.
fn cache_key(compose: &dyn Compose) -> Option<String> {
    use sha2::Digest;
    let fields = [&SERVICE_FIELDS[..], &BUILD_FIELDS, &TOP_LEVEL_FIELDS, &LABEL_PREFIXES].concat().join(",");
    compose.cache_key().map(|k| format!("{k}-{:x}", sha2::Sha256::digest(fields)))
}

/// What the file holds; nothing when it is missing or unreadable.
fn load(path: &Path) -> Kept {
    std::fs::read(path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
}

/// The model as `docker compose config --format json` would print it,
/// with only what the planner reads.
pub fn planning_view(model: &ComposeModel) -> Value {
    let services: Map<String, Value> =
        model.services.iter().map(|(name, svc)| (name.clone(), service_view(&svc.raw))).collect();
    let mut doc = Map::new();
    doc.insert("name".into(), model.project.clone().into());
    doc.insert("services".into(), services.into());
    for section in TOP_LEVEL_SECTIONS {
        let entries: Map<String, Value> = model
            .top_level
            .get(section)
            .into_iter()
            .flatten()
            .map(|(name, entry)| (name.clone(), only(entry, &TOP_LEVEL_FIELDS)))
            .collect();
        doc.insert(section.into(), entries.into());
    }
    doc.into()
}

fn service_view(raw: &Value) -> Value {
    let mut view = match only(raw, &SERVICE_FIELDS) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Some(build) = raw.get("build") {
        view.insert("build".into(), only(build, &BUILD_FIELDS));
    }
    let labels: Map<String, Value> = match raw.get("labels") {
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(Value::Array(a)) => {
            a.iter().filter_map(|v| v.as_str()?.split_once('=')).map(|(k, v)| (k.to_string(), Value::from(v))).collect()
        }
        _ => Map::new(),
    };
    let ours: Map<String, Value> =
        labels.into_iter().filter(|(k, _)| LABEL_PREFIXES.iter().any(|p| k.starts_with(p))).collect();
    if !ours.is_empty() {
        view.insert("labels".into(), ours.into());
    }
    view.into()
}

fn only(value: &Value, fields: &[&str]) -> Value {
    let Some(map) = value.as_object() else { return Value::Object(Map::new()) };
    map.iter().filter(|(k, _)| fields.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::diff;

    /// Everything the planner reads of a model, through its own readers.
    fn planner_reads(model: &ComposeModel, dir: &Path) -> String {
        let stack = crate::settings::from_directory(dir, Some(&dir.join("state"))).unwrap();
        let resolved = crate::labels::resolve(&stack, model).map(|r| format!("{:?} {:?}", r.skip, r.policies));
        let services: Vec<String> = model
            .services
            .iter()
            .map(|(name, svc)| {
                format!(
                    "{name} {:?} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                    svc.image,
                    svc.build,
                    svc.depends_on,
                    diff::attached_to(svc),
                    diff::file_inputs(svc, model),
                    diff::networks(svc),
                    diff::sources(svc, "configs"),
                    diff::sources(svc, "secrets"),
                    diff::named_volumes(svc),
                    diff::anonymous_volumes(svc),
                )
            })
            .collect();
        format!("{} {resolved:?} {services:?}", model.project)
    }

    #[test]
    fn the_planning_view_reads_alike_and_holds_no_secret() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("compose.yaml"), "services: {}\n").unwrap();
        let rich = json!({
            "name": "p",
            "services": {
                "web": {
                    "image": "r/web:1", "container_name": "web1", "mac_address": "02:42:ac:11:00:02",
                    "ports": [{"target": 80, "published": "8080", "protocol": "tcp"}],
                    "networks": {"front": {"aliases": ["w"]}}, "depends_on": {"db": {"condition": "service_healthy"}},
                    "volumes": [{"type": "bind", "source": "/srv/conf.ini", "target": "/c", "read_only": true},
                                {"type": "volume", "source": "data", "target": "/data"}, {"type": "volume", "target": "/tmp/x"}],
                    "configs": [{"source": "app", "target": "/app.conf"}], "secrets": [{"source": "key"}],
                    "labels": {"clusterup.health-url": "http://x/h", "com.centurylinklabs.watchtower.enable": "true",
                               "traefik.users": "admin:CanaryLabel"},
                    "environment": {"TOKEN": "CanaryEnv"}, "command": ["run", "--pw=CanaryCommand"],
                    "healthcheck": {"test": ["CMD", "curl", "-H", "token: CanaryHealth"]}
                },
                "side": {"image": "r/side:1", "network_mode": "service:web", "volumes_from": ["web:ro"],
                         "labels": ["clusterup.strategy=stop-first", "other=CanaryListLabel"]},
                "job": {"build": {"context": "/srv/app", "dockerfile": "Dockerfile", "args": {"NPM_TOKEN": "CanaryBuildArg"}}},
                "db": {"image": "r/db:1"}
            },
            "networks": {"front": {"name": "p_front", "driver_opts": {"password": "CanaryDriver"}}},
            "volumes": {"data": {"name": "p_data", "driver_opts": {"o": "username=u,password=CanaryCifs"}}},
            "configs": {"app": {"name": "p_app", "file": "/srv/app.conf"}, "inline": {"content": "CanaryContent"}},
            "secrets": {"key": {"name": "p_key", "file": "/srv/key"}}
        });
        let mut models = vec![rich];
        for case in std::fs::read_dir("tests/fixtures/normalized").unwrap() {
            for side in ["a", "b"] {
                let text =
                    std::fs::read_to_string(case.as_ref().unwrap().path().join(side).join("config.json")).unwrap();
                models.push(serde_json::from_str(&text).unwrap());
            }
        }
        assert!(models.len() > 10);
        for json in models {
            let full = ComposeModel::from_json(&json).unwrap();
            let view = planning_view(&full);
            assert_eq!(
                planner_reads(&ComposeModel::from_json(&view).unwrap(), tmp.path()),
                planner_reads(&full, tmp.path())
            );
            let text = view.to_string();
            assert!(!text.contains("Canary"), "a secret in the planning view: {text}");
        }
    }
}
