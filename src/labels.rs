//! Service labels, read from the compose model: clusterup's own, and
//! Watchtower's so stacks that used Watchtower move over unchanged.
//!
//! | label | effect |
//! |---|---|
//! | `clusterup.enable=false`, `com.centurylinklabs.watchtower.enable=false` | never touched |
//! | `…enable=true` | with `label_enable: true`, only these are touched |
//! | `com.centurylinklabs.watchtower.scope=X` | with `scope: X`, only these are touched |
//! | `clusterup.health-url`, `clusterup.health-timeout` | health check overrides |
//! | `clusterup.pre-update`, `clusterup.post-update` (or Watchtower's `lifecycle.` ones) | hooks run inside the container |
//! | `clusterup.strategy` | `stop-first` (the default) or `start-first` |
//! | `clusterup.strategy-fallback` | `stop-first`: where start-first cannot work |
//! | `clusterup.backup-volumes` | `true`: snapshot its volumes before it is changed |
//! | `clusterup.pre-backup` | run inside the container before its volumes are copied while it runs |

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::seams::compose::{ComposeModel, ComposeService};
use crate::settings::{Hooks, StackSettings, Strategy};

pub const ENABLE: &str = "clusterup.enable";
pub const WATCHTOWER_ENABLE: &str = "com.centurylinklabs.watchtower.enable";
pub const WATCHTOWER_SCOPE: &str = "com.centurylinklabs.watchtower.scope";
const HEALTH_URL: &str = "clusterup.health-url";
const HEALTH_TIMEOUT: &str = "clusterup.health-timeout";
const PRE_UPDATE: &str = "clusterup.pre-update";
const POST_UPDATE: &str = "clusterup.post-update";
const WATCHTOWER_PRE_UPDATE: &str = "com.centurylinklabs.watchtower.lifecycle.pre-update";
const WATCHTOWER_POST_UPDATE: &str = "com.centurylinklabs.watchtower.lifecycle.post-update";
const STRATEGY: &str = "clusterup.strategy";
const STRATEGY_FALLBACK: &str = "clusterup.strategy-fallback";
const MIN_AGE: &str = "clusterup.min-age";
const FOLLOW: &str = "clusterup.follow";
const WINDOW: &str = "clusterup.window";
const FOLLOW_INCLUDE: &str = "clusterup.follow.include";
const FOLLOW_EXCLUDE: &str = "clusterup.follow.exclude";
const BACKUP_VOLUMES: &str = "clusterup.backup-volumes";
const PRE_BACKUP: &str = "clusterup.pre-backup";

/// Everything that decides how one service is updated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServicePolicy {
    pub health_url: Option<String>,
    pub health_timeout: Option<Duration>,
    /// Run on the host (configuration).
    pub host_hooks: Hooks,
    /// Run inside the service's container (labels).
    pub container_hooks: Hooks,
    pub strategy: Strategy,
    /// Why start-first was asked for but stop-first is used.
    pub fallback_reason: Option<String>,
    /// How old a new image must be before `apply --auto` takes it.
    pub min_age: Option<std::time::Duration>,
    /// Which new version tags the service moves to.
    pub follow: Option<crate::settings::Follow>,
    /// When `apply --auto` may change it; empty: whenever the stack may.
    pub windows: Vec<crate::window::Window>,
    /// Its volumes are snapshot before a revision changes it.
    pub backup_volumes: bool,
    /// Bind mounts (host paths) snapshot with them.
    pub backup_binds: Vec<std::path::PathBuf>,
}

pub struct Resolved {
    pub skip: BTreeSet<String>,
    pub policies: BTreeMap<String, ServicePolicy>,
}

/// `docker compose config` keeps `$$` escaped so its output loads again;
/// the container gets `$`.
fn labels(svc: &ComposeService) -> BTreeMap<String, String> {
    let raw: BTreeMap<String, String> = match svc.raw.get("labels") {
        Some(Value::Object(m)) => {
            m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()
        }
        Some(Value::Array(a)) => {
            a.iter().filter_map(|v| v.as_str()?.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
        }
        _ => BTreeMap::new(),
    };
    raw.into_iter().map(|(k, v)| (k, v.replace("$$", "$"))).collect()
}

fn flag(value: Option<&String>) -> Option<bool> {
    value.map(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Labels and configuration merged per service; configuration wins. Err:
/// a label clusterup cannot honour, named with its service.
pub fn resolve(stack: &StackSettings, model: &ComposeModel) -> Result<Resolved, String> {
    let mut skip = stack.skip.clone();
    let mut policies = BTreeMap::new();
    for (name, svc) in &model.services {
        let l = labels(svc);
        let enabled = flag(l.get(ENABLE)).or(flag(l.get(WATCHTOWER_ENABLE)));
        let out_of_scope = stack.scope.as_ref().is_some_and(|scope| l.get(WATCHTOWER_SCOPE) != Some(scope));
        if enabled == Some(false) || (stack.label_enable && enabled != Some(true)) || out_of_scope {
            skip.insert(name.clone());
        }
        let configured = stack.services.get(name).cloned().unwrap_or_default();
        let label_strategy = |key: &str| {
            l.get(key)
                .map(|v| v.parse::<Strategy>().map_err(|e| format!("service {name}: label {key}: {e}")))
                .transpose()
        };
        let wanted = configured.strategy.or(label_strategy(STRATEGY)?).unwrap_or_default();
        let fallback = configured.strategy_fallback.or(label_strategy(STRATEGY_FALLBACK)?);
        let (strategy, fallback_reason) = match (wanted, start_first_blocker(svc)) {
            (Strategy::StartFirst, Some(why)) => match fallback {
                Some(f) => (f, Some(why)),
                None => {
                    return Err(format!(
                        "service {name}: start-first is impossible because {why}: two containers cannot run \
                         side by side; remove that, or set strategy_fallback: stop-first (label \
                         {STRATEGY_FALLBACK}=stop-first) to stop the old container first for this service"
                    ));
                }
            },
            (s, _) => (s, None),
        };
        let duration = |key: &str| match l.get(key) {
            Some(t) => humantime::parse_duration(t)
                .map(Some)
                .map_err(|e| format!("service {name}: label {key}={t:?}: {e}; write e.g. 90s or 3d")),
            None => Ok(None),
        };
        let timeout = duration(HEALTH_TIMEOUT)?;
        let min_age = configured.min_age.or(duration(MIN_AGE)?).or(stack.min_age);
        let patterns = |key: &str| -> Vec<String> {
            l.get(key)
                .map(|v| v.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect())
                .unwrap_or_default()
        };
        let follow = match (configured.follow, l.get(FOLLOW)) {
            (Some(f), _) => Some(f),
            (None, Some(level)) => Some(crate::settings::Follow {
                level: level.parse().map_err(|e| format!("service {name}: label {FOLLOW}: {e}"))?,
                include: patterns(FOLLOW_INCLUDE),
                exclude: patterns(FOLLOW_EXCLUDE),
            }),
            (None, None) => None,
        };
        let windows = match (configured.windows.is_empty(), l.get(WINDOW)) {
            (true, Some(text)) => text
                .split(';')
                .map(|w| w.parse().map_err(|e| format!("service {name}: label {WINDOW}={text:?}: {e}")))
                .collect::<Result<Vec<_>, String>>()?,
            _ => configured.windows,
        };
        let backup_volumes = configured.backup_volumes.or(flag(l.get(BACKUP_VOLUMES))).unwrap_or(stack.volumes.all);
        policies.insert(
            name.clone(),
            ServicePolicy {
                health_url: configured.health_url.or_else(|| l.get(HEALTH_URL).cloned()),
                health_timeout: configured.health_timeout.or(timeout),
                host_hooks: configured.hooks,
                container_hooks: Hooks {
                    pre_update: l.get(PRE_UPDATE).or(l.get(WATCHTOWER_PRE_UPDATE)).cloned(),
                    post_update: l.get(POST_UPDATE).or(l.get(WATCHTOWER_POST_UPDATE)).cloned(),
                    pre_backup: l.get(PRE_BACKUP).cloned(),
                },
                strategy,
                fallback_reason,
                min_age,
                follow,
                windows,
                backup_volumes,
                backup_binds: configured.backup_binds,
            },
        );
    }
    Ok(Resolved { skip, policies })
}

/// What keeps a second container of the service from starting while the
/// first runs: a fixed name, host port, address or MAC, or another
/// container's (or the host's) network namespace.
fn start_first_blocker(svc: &ComposeService) -> Option<String> {
    if let Some(name) = svc.raw.get("container_name").and_then(Value::as_str) {
        return Some(format!("it sets container_name: {name}"));
    }
    if let Some(mode) = svc.raw.get("network_mode").and_then(Value::as_str)
        && (mode == "host" || mode.starts_with("service:") || mode.starts_with("container:"))
    {
        return Some(format!("it uses network_mode: {mode}"));
    }
    let ports = svc.raw.get("ports").and_then(Value::as_array).into_iter().flatten();
    for port in ports {
        let published = match port.get("published") {
            Some(Value::String(p)) => p.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => continue,
        };
        // A range lets Compose give the second container another port.
        if !published.is_empty() && !published.contains('-') {
            return Some(format!("it publishes the fixed host port {published}"));
        }
    }
    if let Some(mac) = svc.raw.get("mac_address").and_then(Value::as_str) {
        return Some(format!("it sets mac_address: {mac}"));
    }
    let networks = svc.raw.get("networks").and_then(Value::as_object).into_iter().flatten();
    for (network, settings) in networks {
        for key in ["ipv4_address", "ipv6_address"] {
            if let Some(address) = settings.get(key).and_then(Value::as_str) {
                return Some(format!("it sets {key}: {address} in network {network}"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(services: Value) -> ComposeModel {
        ComposeModel::from_json(&json!({"name": "p", "services": services})).unwrap()
    }

    fn stack() -> StackSettings {
        crate::settings::from_config(
            std::path::Path::new("/c.yaml"),
            "stacks:\n  - name: s\n    directory: /s\n    services: {cfg: {health_url: 'http://x/cfg'}}\n",
            None,
        )
        .unwrap()
        .remove(0)
    }

    #[test]
    fn enable_labels_opt_in_mode_and_scope() {
        let m = model(json!({
            "plain": {"image": "a"},
            "off": {"image": "a", "labels": {"clusterup.enable": "false"}},
            "on": {"image": "a", "labels": {"clusterup.enable": "true"}},
            "wt_off": {"image": "a", "labels": ["com.centurylinklabs.watchtower.enable=false"]},
            "wt_on": {"image": "a", "labels": {"com.centurylinklabs.watchtower.enable": "true", "com.centurylinklabs.watchtower.scope": "prod"}},
        }));
        let mut s = stack();
        let skip = |s: &StackSettings| resolve(s, &m).unwrap().skip.into_iter().collect::<Vec<_>>();
        assert_eq!(skip(&s), ["off", "wt_off"]);
        s.label_enable = true;
        assert_eq!(skip(&s), ["off", "plain", "wt_off"], "opt-in: only enable=true, clusterup's or Watchtower's");
        s.label_enable = false;
        s.scope = Some("prod".into());
        assert_eq!(skip(&s), ["off", "on", "plain", "wt_off"], "scope: only services of that scope");
    }

    #[test]
    fn health_and_hook_labels_with_configuration_winning() {
        let m = model(json!({
            "cfg": {"image": "a", "labels": {"clusterup.health-url": "http://x/label"}},
            "lab": {"image": "a", "labels": {"clusterup.health-url": "http://x/l", "clusterup.health-timeout": "30s", "clusterup.pre-update": "touch /x"}},
        }));
        let r = resolve(&stack(), &m).unwrap();
        assert_eq!(r.policies["cfg"].health_url.as_deref(), Some("http://x/cfg"));
        assert_eq!(r.policies["lab"].health_url.as_deref(), Some("http://x/l"));
        assert_eq!(r.policies["lab"].health_timeout, Some(Duration::from_secs(30)));
        assert_eq!(r.policies["lab"].container_hooks.pre_update.as_deref(), Some("touch /x"));
    }

    /// A Watchtower-labelled stack keeps its lifecycle hooks; clusterup's
    /// own label wins where both are set.
    #[test]
    fn watchtower_lifecycle_labels_are_container_hooks() {
        let m = model(json!({
            "wt": {"image": "a", "labels": {
                "com.centurylinklabs.watchtower.lifecycle.pre-update": "/dump.sh",
                "com.centurylinklabs.watchtower.lifecycle.post-update": "/warm.sh"}},
            "both": {"image": "a", "labels": {
                "com.centurylinklabs.watchtower.lifecycle.pre-update": "/old.sh",
                "clusterup.pre-update": "/new.sh"}},
        }));
        let r = resolve(&stack(), &m).unwrap();
        assert_eq!(r.policies["wt"].container_hooks.pre_update.as_deref(), Some("/dump.sh"));
        assert_eq!(r.policies["wt"].container_hooks.post_update.as_deref(), Some("/warm.sh"));
        assert_eq!(r.policies["both"].container_hooks.pre_update.as_deref(), Some("/new.sh"));
    }

    #[test]
    fn start_first_is_refused_where_two_containers_cannot_coexist_unless_a_fallback_is_set() {
        let m = model(json!({
            "free": {"image": "a", "labels": {"clusterup.strategy": "start-first"}, "ports": [{"target": 80, "protocol": "tcp"}]},
            "named": {"image": "a", "container_name": "n", "labels": {"clusterup.strategy": "start-first"}},
        }));
        let err = resolve(&stack(), &m).err().unwrap();
        assert!(err.starts_with("service named: start-first is impossible because it sets container_name: n"), "{err}");
        assert!(err.contains("strategy_fallback: stop-first"), "{err}");
        for (raw, why) in [
            (json!({"ports": [{"target": 80, "published": "8080"}]}), "fixed host port 8080"),
            (json!({"network_mode": "service:db"}), "network_mode: service:db"),
            (json!({"network_mode": "host"}), "network_mode: host"),
            (
                json!({"networks": {"back": null, "front": {"ipv4_address": "10.5.0.9"}}}),
                "ipv4_address: 10.5.0.9 in network front",
            ),
            (json!({"mac_address": "02:42:ac:11:00:99"}), "mac_address: 02:42:ac:11:00:99"),
        ] {
            let mut svc = json!({"image": "a", "labels": {"clusterup.strategy": "start-first", "clusterup.strategy-fallback": "stop-first"}});
            svc.as_object_mut().unwrap().extend(raw.as_object().unwrap().clone());
            let r = resolve(&stack(), &model(json!({"web": svc}))).unwrap();
            assert_eq!(r.policies["web"].strategy, Strategy::StopFirst);
            assert!(r.policies["web"].fallback_reason.as_deref().unwrap().contains(why));
        }
        let m = model(
            json!({"free": {"image": "a", "labels": {"clusterup.strategy": "start-first"}, "ports": [{"target": 80, "published": "8000-8010"}]}}),
        );
        assert_eq!(resolve(&stack(), &m).unwrap().policies["free"].strategy, Strategy::StartFirst);
        let mut s = stack();
        s.services.entry("cfg".into()).or_default().strategy = Some(Strategy::StartFirst);
        let m = model(json!({"cfg": {"image": "a", "labels": {"clusterup.strategy": "stop-first"}}}));
        assert_eq!(resolve(&s, &m).unwrap().policies["cfg"].strategy, Strategy::StartFirst, "configuration wins");
    }

    #[test]
    fn labels_that_cannot_be_honoured_are_errors() {
        for labels in [json!({"clusterup.strategy": "blue-green"}), json!({"clusterup.health-timeout": "soon"})] {
            let m = model(json!({"web": {"image": "a", "labels": labels}}));
            let err = resolve(&stack(), &m).err().unwrap();
            assert!(err.starts_with("service web: label clusterup."), "{err}");
        }
    }
}
