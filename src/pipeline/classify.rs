//! classify: compose model + observed containers + registry digests → Plan.
//! Pure: no engine, no clock, no files.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::observe::{Observation, ServiceObservation};
use crate::reference::Reference;
use crate::seams::compose::{ComposeModel, ComposeService};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    None,
    Image,
    Structural,
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Same reference, new digest in the registry: pull and recreate.
    Image,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub service: String,
    pub kind: ChangeKind,
    pub image: String,
    /// The repository digest the service runs now.
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    UpToDate,
    UpdateAvailable,
    /// `image: name@sha256:...` never changes by itself.
    Pinned,
    /// Built locally (compose `build:` or never pulled): no registry has it.
    LocalBuild,
    RegistryError,
    /// Stopped on purpose, or a finished one-shot job: left alone.
    Stopped,
    /// In the compose file but not created (structural changes create it).
    NotCreated,
    /// `skip: true` in the configuration.
    Skipped,
}

impl ServiceState {
    pub fn describe(self) -> &'static str {
        match self {
            ServiceState::UpToDate => "up to date",
            ServiceState::UpdateAvailable => "update available",
            ServiceState::Pinned => "pinned by digest",
            ServiceState::LocalBuild => "local build, not in any registry",
            ServiceState::RegistryError => "registry error",
            ServiceState::Stopped => "stopped, left alone",
            ServiceState::NotCreated => "not created",
            ServiceState::Skipped => "skipped by configuration",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub service: String,
    pub image: Option<String>,
    pub running_digest: Option<String>,
    pub available_digest: Option<String>,
    pub state: ServiceState,
    /// The registry's error, when `state` is `registry_error`.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub stack: String,
    pub project: String,
    pub kind: PlanKind,
    /// In the order they will be applied: dependencies first.
    pub changes: Vec<Change>,
    pub services: Vec<ServiceReport>,
}

impl Plan {
    pub fn registry_errors(&self) -> impl Iterator<Item = &ServiceReport> {
        self.services
            .iter()
            .filter(|s| s.state == ServiceState::RegistryError)
    }
}

/// What can be said of a service before asking any registry.
enum Precheck {
    Final(ServiceState),
    AskRegistry { reference: String, running: String },
}

fn precheck(svc: &ComposeService, observed: Option<&ServiceObservation>, skip: bool) -> Precheck {
    let Some(image) = svc.image.as_deref() else {
        return Precheck::Final(ServiceState::LocalBuild);
    };
    if skip {
        return Precheck::Final(ServiceState::Skipped);
    }
    let reference = Reference::parse(image);
    if reference.is_pinned() {
        return Precheck::Final(ServiceState::Pinned);
    }
    let Some(observed) = observed.filter(|o| !o.containers.is_empty()) else {
        return Precheck::Final(ServiceState::NotCreated);
    };
    if !observed
        .containers
        .iter()
        .any(|c| c.is_running() || c.state == "restarting")
    {
        return Precheck::Final(ServiceState::Stopped);
    }
    // An image that never came from (or went to) this repository was built
    // or loaded here: replacing it with the registry's would lose it.
    let repo_digests = observed
        .image
        .as_ref()
        .map(|i| i.repo_digests.as_slice())
        .unwrap_or_default();
    let running = repo_digests.iter().find_map(|d| reference.digest_in(d));
    match running {
        Some(digest) if !svc.build => Precheck::AskRegistry {
            reference: image.to_string(),
            running: digest.to_string(),
        },
        _ => Precheck::Final(ServiceState::LocalBuild),
    }
}

/// The references whose registry digest the plan needs, each once.
pub fn registry_lookups(
    model: &ComposeModel,
    observation: &Observation,
    skip: &BTreeSet<String>,
) -> Vec<String> {
    let mut refs = BTreeSet::new();
    for (name, svc) in &model.services {
        if let Precheck::AskRegistry { reference, .. } =
            precheck(svc, observation.services.get(name), skip.contains(name))
        {
            refs.insert(reference);
        }
    }
    refs.into_iter().collect()
}

pub fn classify(
    stack: &str,
    model: &ComposeModel,
    observation: &Observation,
    skip: &BTreeSet<String>,
    remote: &BTreeMap<String, Result<String, String>>,
) -> Plan {
    let mut services = Vec::new();
    let mut changed = BTreeMap::new();
    for (name, svc) in &model.services {
        let mut report = ServiceReport {
            service: name.clone(),
            image: svc.image.clone(),
            running_digest: None,
            available_digest: None,
            state: ServiceState::UpToDate,
            detail: None,
        };
        match precheck(svc, observation.services.get(name), skip.contains(name)) {
            Precheck::Final(state) => report.state = state,
            Precheck::AskRegistry { reference, running } => {
                report.running_digest = Some(running.clone());
                match remote.get(&reference) {
                    Some(Ok(available)) => {
                        report.available_digest = Some(available.clone());
                        if running == *available {
                            report.state = ServiceState::UpToDate;
                        } else {
                            report.state = ServiceState::UpdateAvailable;
                            changed.insert(
                                name.clone(),
                                Change {
                                    service: name.clone(),
                                    kind: ChangeKind::Image,
                                    image: reference,
                                    from: running,
                                    to: available.clone(),
                                },
                            );
                        }
                    }
                    Some(Err(e)) => {
                        report.state = ServiceState::RegistryError;
                        report.detail = Some(e.clone());
                    }
                    None => {
                        report.state = ServiceState::RegistryError;
                        report.detail = Some("registry was not asked".to_string());
                    }
                }
            }
        }
        services.push(report);
    }
    let changes: Vec<Change> = dependency_order(model)
        .into_iter()
        .filter_map(|name| changed.remove(&name))
        .collect();
    let kind = if changes.is_empty() {
        PlanKind::None
    } else {
        PlanKind::Image
    };
    Plan {
        stack: stack.to_string(),
        project: model.project.clone(),
        kind,
        changes,
        services,
    }
}

/// Every service after the services it depends on; ties broken by name so
/// plans are stable. Members of a dependency cycle (Compose refuses those)
/// come last, by name.
pub fn dependency_order(model: &ComposeModel) -> Vec<String> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    loop {
        let ready: Vec<&str> = model
            .services
            .iter()
            .filter(|(name, _)| !done.contains(name.as_str()))
            .filter(|(_, svc)| {
                svc.depends_on
                    .iter()
                    .all(|d| done.contains(d.as_str()) || !model.services.contains_key(d))
            })
            .map(|(name, _)| name.as_str())
            .collect();
        if ready.is_empty() {
            break;
        }
        for name in ready {
            done.insert(name);
            order.push(name.to_string());
        }
    }
    order.extend(
        model
            .services
            .keys()
            .filter(|n| !done.contains(n.as_str()))
            .cloned(),
    );
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seams::engine::{ContainerInfo, ImageInfo};

    const REPO: &str = "127.0.0.1:5000/t/web";

    fn service(image: Option<&str>, depends_on: &[&str]) -> ComposeService {
        ComposeService {
            image: image.map(String::from),
            build: false,
            depends_on: depends_on.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn running(state: &str, repo_digests: &[&str]) -> ServiceObservation {
        ServiceObservation {
            containers: vec![ContainerInfo {
                id: "c1".into(),
                name: "p-web-1".into(),
                service: "web".into(),
                state: state.into(),
                health: None,
                restart_count: 0,
                image_id: "sha256:img".into(),
                started_at: None,
            }],
            image: Some(ImageInfo {
                id: "sha256:img".into(),
                repo_digests: repo_digests.iter().map(|s| s.to_string()).collect(),
            }),
        }
    }

    struct Case {
        name: &'static str,
        svc: ComposeService,
        observed: Option<ServiceObservation>,
        skip: bool,
        remote: Option<Result<&'static str, &'static str>>,
        want: ServiceState,
        want_change: bool,
    }

    #[test]
    fn service_states() {
        let image = format!("{REPO}:latest");
        let img = Some(image.as_str());
        let digest_a = format!("{REPO}@sha256:aaa");
        let cases = vec![
            Case {
                name: "same digest",
                svc: service(img, &[]),
                observed: Some(running("running", &[&digest_a])),
                skip: false,
                remote: Some(Ok("sha256:aaa")),
                want: ServiceState::UpToDate,
                want_change: false,
            },
            Case {
                name: "new digest",
                svc: service(img, &[]),
                observed: Some(running("running", &[&digest_a])),
                skip: false,
                remote: Some(Ok("sha256:bbb")),
                want: ServiceState::UpdateAvailable,
                want_change: true,
            },
            Case {
                name: "pinned",
                svc: service(Some("r/x@sha256:abc"), &[]),
                observed: Some(running("running", &[&digest_a])),
                skip: false,
                remote: None,
                want: ServiceState::Pinned,
                want_change: false,
            },
            Case {
                name: "never pulled",
                svc: service(img, &[]),
                observed: Some(running("running", &[])),
                skip: false,
                remote: Some(Ok("sha256:bbb")),
                want: ServiceState::LocalBuild,
                want_change: false,
            },
            Case {
                name: "compose build",
                svc: ComposeService {
                    build: true,
                    ..service(img, &[])
                },
                observed: Some(running("running", &[&digest_a])),
                skip: false,
                remote: Some(Ok("sha256:bbb")),
                want: ServiceState::LocalBuild,
                want_change: false,
            },
            Case {
                name: "no image at all",
                svc: service(None, &[]),
                observed: None,
                skip: false,
                remote: None,
                want: ServiceState::LocalBuild,
                want_change: false,
            },
            Case {
                name: "stopped on purpose",
                svc: service(img, &[]),
                observed: Some(running("exited", &[&digest_a])),
                skip: false,
                remote: Some(Ok("sha256:bbb")),
                want: ServiceState::Stopped,
                want_change: false,
            },
            Case {
                name: "not created",
                svc: service(img, &[]),
                observed: None,
                skip: false,
                remote: Some(Ok("sha256:bbb")),
                want: ServiceState::NotCreated,
                want_change: false,
            },
            Case {
                name: "skipped",
                svc: service(img, &[]),
                observed: Some(running("running", &[&digest_a])),
                skip: true,
                remote: Some(Ok("sha256:bbb")),
                want: ServiceState::Skipped,
                want_change: false,
            },
            Case {
                name: "registry down",
                svc: service(img, &[]),
                observed: Some(running("running", &[&digest_a])),
                skip: false,
                remote: Some(Err("registry 127.0.0.1:5000: refused")),
                want: ServiceState::RegistryError,
                want_change: false,
            },
            Case {
                name: "digest of another repository only",
                svc: service(img, &[]),
                observed: Some(running("running", &["other/web@sha256:aaa"])),
                skip: false,
                remote: None,
                want: ServiceState::LocalBuild,
                want_change: false,
            },
        ];
        for case in cases {
            let model = ComposeModel {
                project: "p".into(),
                services: BTreeMap::from([("web".to_string(), case.svc.clone())]),
            };
            let observation = Observation {
                services: case
                    .observed
                    .into_iter()
                    .map(|o| ("web".to_string(), o))
                    .collect(),
            };
            let skip = if case.skip {
                BTreeSet::from(["web".to_string()])
            } else {
                BTreeSet::new()
            };
            let lookups = registry_lookups(&model, &observation, &skip);
            let remote: BTreeMap<String, Result<String, String>> = lookups
                .iter()
                .map(|r| {
                    (
                        r.clone(),
                        case.remote
                            .expect("asked the registry unexpectedly")
                            .map(String::from)
                            .map_err(String::from),
                    )
                })
                .collect();
            let plan = classify("s", &model, &observation, &skip, &remote);
            assert_eq!(plan.services[0].state, case.want, "{}", case.name);
            assert_eq!(
                plan.changes.len(),
                usize::from(case.want_change),
                "{}",
                case.name
            );
            assert_eq!(
                plan.kind,
                if case.want_change {
                    PlanKind::Image
                } else {
                    PlanKind::None
                },
                "{}",
                case.name
            );
            if case.want == ServiceState::RegistryError {
                assert!(
                    plan.services[0]
                        .detail
                        .as_deref()
                        .unwrap()
                        .contains("127.0.0.1:5000")
                );
            }
        }
    }

    #[test]
    fn changes_come_in_dependency_order_through_unchanged_services() {
        let img = Some("127.0.0.1:5000/t/web:latest");
        let model = ComposeModel {
            project: "p".into(),
            services: BTreeMap::from([
                ("a-front".to_string(), service(img, &["m-api"])),
                ("m-api".to_string(), service(Some("other:1"), &["z-db"])),
                ("z-db".to_string(), service(img, &[])),
            ]),
        };
        let obs = running(
            "running",
            &["127.0.0.1:5000/t/web@sha256:aaa", "other@sha256:ooo"],
        );
        let observation = Observation {
            services: ["a-front", "m-api", "z-db"]
                .iter()
                .map(|s| (s.to_string(), obs.clone()))
                .collect(),
        };
        let remote = BTreeMap::from([
            (
                "127.0.0.1:5000/t/web:latest".to_string(),
                Ok("sha256:bbb".to_string()),
            ),
            ("other:1".to_string(), Ok("sha256:ooo".to_string())),
        ]);
        let plan = classify("s", &model, &observation, &BTreeSet::new(), &remote);
        let order: Vec<&str> = plan.changes.iter().map(|c| c.service.as_str()).collect();
        assert_eq!(order, ["z-db", "a-front"]);
    }

    #[test]
    fn cycles_do_not_lose_services() {
        let model = ComposeModel {
            project: "p".into(),
            services: BTreeMap::from([
                ("a".to_string(), service(None, &["b"])),
                ("b".to_string(), service(None, &["a"])),
                ("c".to_string(), service(None, &["gone"])),
            ]),
        };
        assert_eq!(dependency_order(&model), ["c", "a", "b"]);
    }
}
