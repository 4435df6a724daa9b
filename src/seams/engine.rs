//! The Docker engine seam and its bollard implementation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{ContainerSummary, EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest};
use bollard::query_parameters::{
    CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, StopContainerOptionsBuilder,
    TagImageOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::credentials::Credentials;
use super::registry::{ImageConfig, Registries};
use crate::reference::Reference;

const PROJECT_LABEL: &str = "com.docker.compose.project";
const SERVICE_LABEL: &str = "com.docker.compose.service";
const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";
const CONFIG_HASH_LABEL: &str = "com.docker.compose.config-hash";

/// How many engine requests run at once when there are many to make.
const ENGINE_CONCURRENCY: usize = 16;

/// How many registry lookups run at once: enough to hide latency, few
/// enough that a registry does not answer 429.
const REGISTRY_CONCURRENCY: usize = 8;

/// One container of a compose service, as the engine reports it now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub service: String,
    /// created, running, restarting, exited, paused, dead
    pub state: String,
    /// None when the image and service define no HEALTHCHECK.
    pub health: Option<String>,
    pub restart_count: i64,
    pub image_id: String,
    /// The Compose config hash the container was created with.
    pub config_hash: Option<String>,
    /// RFC 3339, as the engine reports it.
    pub started_at: Option<String>,
    /// Its volumes and bind mounts.
    #[serde(skip)]
    pub mounts: Vec<Mount>,
    /// Its labels: for a service gone from the compose files, the only
    /// place its own say (`clusterup.*`) is still written.
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
}

impl ContainerInfo {
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    /// Where anonymous volumes are mounted: data no name finds again once
    /// the container is gone. The engine names them with 64 hex digits.
    pub fn anonymous_volumes(&self) -> Vec<String> {
        self.volumes()
            .filter(|m| m.name.len() == 64 && m.name.chars().all(|c| c.is_ascii_hexdigit()))
            .map(|m| m.destination.clone())
            .collect()
    }

    /// Its volume mounts, named and anonymous.
    pub fn volumes(&self) -> impl Iterator<Item = &Mount> {
        self.mounts.iter().filter(|m| m.kind == "volume")
    }
}

/// One mount of a container: a volume (`name` is the engine's) or a bind
/// mount (`source` is the host path).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mount {
    /// volume, bind, tmpfs, ...
    pub kind: String,
    pub name: String,
    pub source: String,
    pub destination: String,
    pub driver: String,
}

/// A volume as the engine describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeInfo {
    pub name: String,
    pub driver: String,
    /// Where the local driver keeps its data on the engine's host.
    pub mountpoint: String,
    pub options: BTreeMap<String, String>,
}

impl VolumeInfo {
    /// A directory on the engine's host, nothing mounted in its place.
    pub fn is_plain_local(&self) -> bool {
        self.driver == "local" && self.options.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageInfo {
    pub id: String,
    pub repo_digests: Vec<String>,
    pub repo_tags: Vec<String>,
}

/// What a pull reports while it runs, for progress display.
pub struct PullProgress<'a> {
    pub layer: Option<&'a str>,
    pub status: &'a str,
    pub current: Option<i64>,
    pub total: Option<i64>,
}

pub trait Engine: Sync {
    /// Every container of the project's services (not `compose run`
    /// one-offs), stopped ones included.
    fn containers(&self, project: &str) -> Result<Vec<ContainerInfo>>;
    /// `containers` from one listing, without inspecting each: no restart
    /// count or start time, which a plan does not need.
    fn container_summaries(&self, project: &str) -> Result<Vec<ContainerInfo>> {
        self.containers(project)
    }
    /// The local image a reference or id names, if present.
    fn image(&self, reference: &str) -> Result<Option<ImageInfo>>;
    /// Every local image, in one listing.
    fn local_images(&self) -> Result<Vec<ImageInfo>>;
    /// The registry's current manifest digest for each reference, without
    /// pulling. Lookups run concurrently; results keep the input order.
    fn registry_digests(&self, references: &[String]) -> Vec<Result<String>>;
    /// What the image `reference` names at `digest` says of itself (its
    /// labels, when it was built), read from the registry, not pulled.
    fn image_config(&self, reference: &str, digest: &str) -> Result<ImageConfig>;
    /// Every tag of the reference's repository in its registry.
    fn registry_tags(&self, reference: &str) -> Result<Vec<String>>;
    fn pull(&self, reference: &str, progress: &mut dyn FnMut(&PullProgress)) -> Result<()>;
    /// Gives `image` (an id or reference) the name `repo:tag`.
    fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<()>;
    /// Stops and removes a container, never its volumes.
    fn remove_container(&self, id: &str) -> Result<()>;
    /// The aliases the container answers to in each of its networks (for
    /// a compose container: its name and its service's).
    fn network_aliases(&self, id: &str) -> Result<BTreeMap<String, Vec<String>>>;
    /// Attaches the container to `network` again, under exactly `aliases`:
    /// which names Docker's DNS resolves to it.
    fn set_aliases(&self, id: &str, network: &str, aliases: &[String]) -> Result<()>;
    fn start_container(&self, id: &str) -> Result<()>;
    /// Local tags (`repo:tag`) whose repository starts with `prefix`.
    fn tags_under(&self, prefix: &str) -> Result<Vec<String>>;
    /// Removes one tag; the image goes only if nothing else names or uses it.
    fn untag(&self, tag: &str) -> Result<()>;
    /// Stops a container (its own stop signal and grace period), keeping it.
    fn stop_container(&self, id: &str) -> Result<()>;
    fn volume(&self, name: &str) -> Result<VolumeInfo>;
    /// Writes the tar archive of `path` in the container (running or not)
    /// to `sink`: the engine's archive API, no helper container or image.
    fn export(&self, container: &str, path: &str, sink: &mut dyn std::io::Write) -> Result<()>;
    /// Every container that mounts the volume, with its compose project
    /// (empty for a container of none).
    fn volume_users(&self, volume: &str) -> Result<Vec<(String, ContainerInfo)>>;
}

fn mounts(mounts: Option<Vec<bollard::models::MountPoint>>) -> Vec<Mount> {
    mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| Mount {
            kind: m.typ.map(|t| t.to_string()).unwrap_or_default(),
            name: m.name.unwrap_or_default(),
            source: m.source.unwrap_or_default(),
            destination: m.destination.unwrap_or_default(),
            driver: m.driver.unwrap_or_default(),
        })
        .collect()
}

/// A container as the listing tells it, without inspecting it: no restart
/// count or start time.
fn summary_info(s: ContainerSummary) -> ContainerInfo {
    let labels = s.labels.unwrap_or_default();
    let status = s.status.unwrap_or_default();
    // The listing tells health only inside its status text.
    let health = ["healthy", "unhealthy", "starting"]
        .into_iter()
        .find(|h| status.contains(&format!("({h})")) || status.contains(&format!("(health: {h})")))
        .map(String::from);
    ContainerInfo {
        id: s.id.unwrap_or_default(),
        name: s.names.unwrap_or_default().first().map(|n| n.trim_start_matches('/').to_string()).unwrap_or_default(),
        service: labels.get(SERVICE_LABEL).cloned().unwrap_or_default(),
        state: s.state.map(|s| s.to_string()).unwrap_or_default(),
        health,
        restart_count: 0,
        image_id: s.image_id.unwrap_or_default(),
        config_hash: labels.get(CONFIG_HASH_LABEL).cloned(),
        started_at: None,
        mounts: mounts(s.mounts),
        labels: labels.into_iter().collect(),
    }
}

pub struct DockerEngine {
    /// Only through `docker()`, which waits for the API version.
    docker: Docker,
    /// The engine is asked its API version in the background while the
    /// stacks' files are read: a round trip off every run's critical path.
    negotiation: Mutex<Option<tokio::task::JoinHandle<Result<Docker, bollard::errors::Error>>>>,
    negotiated: std::sync::OnceLock<Result<(), String>>,
    host: String,
    runtime: tokio::runtime::Runtime,
    credentials: Credentials,
    /// Looked up once per registry and run: a credential helper can be slow.
    credential_cache: Mutex<HashMap<String, Option<DockerCredentials>>>,
    registries: Registries,
    /// The last list of local images and when it was made: stacks
    /// observed together share one. A pull or tag from this process drops
    /// it; `LISTING_FRESH` bounds what another process may have changed.
    images: Mutex<Option<(Instant, Vec<ImageInfo>)>>,
    containers: Mutex<SharedListing>,
}

/// Stacks checked together ask for their containers one after another;
/// each listing costs the engine time for every container it holds. From
/// the third project asked, one listing of every compose container serves
/// the others, each project only on its first ask of the run: what it asks
/// after that may have changed since, and is listed afresh.
#[derive(Default)]
struct SharedListing {
    asked: HashSet<String>,
    every: Option<(Instant, HashMap<String, Vec<ContainerSummary>>)>,
}

impl SharedListing {
    /// This project's part of a listing of every compose container, if
    /// there is one or it is worth making now (`list_every`).
    fn take(
        &mut self,
        project: &str,
        list_every: impl FnOnce() -> Result<Vec<ContainerSummary>>,
    ) -> Result<Option<Vec<ContainerSummary>>> {
        if !self.asked.insert(project.to_string()) {
            return Ok(None);
        }
        if self.every.as_ref().is_some_and(|(when, _)| when.elapsed() >= LISTING_FRESH) {
            self.every = None;
        }
        if self.every.is_none() && self.asked.len() >= 3 {
            let mut by_project: HashMap<String, Vec<ContainerSummary>> = HashMap::new();
            for summary in list_every()? {
                let owner = summary.labels.as_ref().and_then(|l| l.get(PROJECT_LABEL)).cloned().unwrap_or_default();
                by_project.entry(owner).or_default().push(summary);
            }
            self.every = Some((Instant::now(), by_project));
        }
        Ok(self.every.as_mut().map(|(_, every)| every.remove(project).unwrap_or_default()))
    }
}

fn connecting(host: &str) -> String {
    format!("connecting to the Docker engine at {host}; is dockerd running and may this user use it?")
}

/// How long a listing of local images or containers answers again.
const LISTING_FRESH: Duration = Duration::from_secs(1);

impl DockerEngine {
    /// The engine at DOCKER_HOST (or the default socket); each request
    /// bounded by `engine`, each registry request by `registry`, each
    /// credential helper call by `credential_helper`.
    pub fn connect(engine: Duration, registry: Duration, credential_helper: Duration) -> Result<DockerEngine> {
        // One worker drives the negotiation while the caller goes on.
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
        let docker = Docker::connect_with_defaults().with_context(|| connecting(&host))?.with_timeout(engine);
        // bollard speaks the newest API by default; older engines refuse it.
        // The clone shares the client's version, which negotiating lowers.
        let negotiation = runtime.spawn(docker.clone().negotiate_version());
        Ok(DockerEngine {
            docker,
            negotiation: Mutex::new(Some(negotiation)),
            negotiated: std::sync::OnceLock::new(),
            host,
            runtime,
            credentials: Credentials::load(credential_helper)?,
            credential_cache: Mutex::new(HashMap::new()),
            registries: Registries::new(registry),
            images: Mutex::new(None),
            containers: Mutex::new(SharedListing::default()),
        })
    }

    /// The client, once the engine has agreed its API version.
    fn docker(&self) -> Result<&Docker> {
        let settled = self.negotiated.get_or_init(|| {
            let negotiation = self.negotiation.lock().unwrap().take().expect("negotiated once");
            match self.runtime.block_on(negotiation) {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        });
        match settled {
            Ok(()) => Ok(&self.docker),
            Err(e) => Err(anyhow!("{e}").context(connecting(&self.host))),
        }
    }

    fn credentials_for(&self, registry: &str) -> Result<Option<DockerCredentials>> {
        if let Some(hit) = self.credential_cache.lock().unwrap().get(registry) {
            return Ok(hit.clone());
        }
        let found = self.credentials.for_registry(registry).with_context(|| {
            format!("credentials for registry {registry} from {}", self.credentials.source().display())
        })?;
        self.credential_cache.lock().unwrap().insert(registry.to_string(), found.clone());
        Ok(found)
    }

    fn list(&self, project: &str) -> Result<Vec<ContainerSummary>> {
        self.list_labelled(format!("{PROJECT_LABEL}={project}"))
            .with_context(|| format!("listing containers of compose project {project}"))
    }

    /// Containers of compose services (not one-offs) with `label`.
    fn list_labelled(&self, label: String) -> Result<Vec<ContainerSummary>> {
        let filters = HashMap::from([("label", vec![label, format!("{ONEOFF_LABEL}=False")])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        Ok(self.runtime.block_on(self.docker()?.list_containers(Some(options)))?)
    }

    /// The container's endpoint in each network it is attached to.
    fn networks(&self, id: &str) -> Result<HashMap<String, EndpointSettings>> {
        let inspect = self
            .runtime
            .block_on(self.docker()?.inspect_container(id, None))
            .with_context(|| format!("inspecting container {id}"))?;
        Ok(inspect.network_settings.and_then(|n| n.networks).unwrap_or_default())
    }

    fn registry_error(&self, registry: &str, err: bollard::errors::Error) -> anyhow::Error {
        let text = crate::redact::external(&match &err {
            bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
            other => other.to_string(),
        });
        let lower = text.to_lowercase();
        let auth = ["unauthorized", "authentication required", "no basic auth credentials", "denied"]
            .iter()
            .any(|w| lower.contains(w));
        if auth {
            anyhow!(
                "registry {registry}: authentication failed ({}); check the credentials for {registry} in {} (docker login {registry})",
                text.trim(),
                self.credentials.source().display()
            )
        } else {
            anyhow!("registry {registry}: {}", text.trim())
        }
    }
}

impl Engine for DockerEngine {
    fn containers(&self, project: &str) -> Result<Vec<ContainerInfo>> {
        let summaries = self.list(project)?;
        let docker = self.docker()?;
        self.runtime.block_on(async {
            // One inspect per container, several in flight: the engine
            // answers each in milliseconds, but there may be hundreds.
            let inspected: Vec<Result<Option<ContainerInfo>>> =
                futures_util::stream::iter(summaries.into_iter().filter_map(|s| s.id))
                    .map(|id| async move {
                        let inspect = match docker.inspect_container(&id, None).await {
                            Ok(i) => i,
                            // Removed between list and inspect: compose is mid-recreate.
                            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                                return Ok(None);
                            }
                            Err(e) => return Err(e).with_context(|| format!("inspecting container {id}")),
                        };
                        let labels = inspect.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
                        let state = inspect.state.unwrap_or_default();
                        Ok(Some(ContainerInfo {
                            name: inspect.name.unwrap_or_default().trim_start_matches('/').to_string(),
                            service: labels.get(SERVICE_LABEL).cloned().unwrap_or_default(),
                            state: state.status.map(|s| s.to_string()).unwrap_or_default(),
                            health: state
                                .health
                                .and_then(|h| h.status)
                                .map(|s| s.to_string())
                                .filter(|s| !s.is_empty() && s != "none"),
                            restart_count: inspect.restart_count.unwrap_or(0),
                            image_id: inspect.image.unwrap_or_default(),
                            config_hash: labels.get(CONFIG_HASH_LABEL).cloned(),
                            started_at: state.started_at.clone(),
                            mounts: mounts(inspect.mounts),
                            labels: labels.into_iter().collect(),
                            id,
                        }))
                    })
                    .buffered(ENGINE_CONCURRENCY)
                    .collect()
                    .await;
            let mut out: Vec<ContainerInfo> =
                inspected.into_iter().filter_map(Result::transpose).collect::<Result<_>>()?;
            out.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
            Ok(out)
        })
    }

    fn container_summaries(&self, project: &str) -> Result<Vec<ContainerInfo>> {
        let shared = self.containers.lock().unwrap().take(project, || {
            self.list_labelled(PROJECT_LABEL.to_string()).context("listing the containers of every compose project")
        })?;
        let summaries = match shared {
            Some(summaries) => summaries,
            None => self.list(project)?,
        };
        let mut out: Vec<ContainerInfo> = summaries.into_iter().map(summary_info).collect();
        out.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
        Ok(out)
    }

    fn image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        match self.runtime.block_on(self.docker()?.inspect_image(reference)) {
            Ok(i) => Ok(Some(ImageInfo {
                id: i.id.unwrap_or_default(),
                repo_digests: i.repo_digests.unwrap_or_default(),
                repo_tags: i.repo_tags.unwrap_or_default(),
            })),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting image {reference}")),
        }
    }

    fn local_images(&self) -> Result<Vec<ImageInfo>> {
        // Held while listing: stacks asking at once wait for one answer.
        let mut kept = self.images.lock().unwrap();
        if let Some((when, images)) = kept.as_ref()
            && when.elapsed() < LISTING_FRESH
        {
            return Ok(images.clone());
        }
        let options = ListImagesOptionsBuilder::default().build();
        let listed = self.runtime.block_on(self.docker()?.list_images(Some(options))).context("listing images")?;
        let images: Vec<ImageInfo> = listed
            .into_iter()
            .map(|i| ImageInfo { id: i.id, repo_digests: i.repo_digests, repo_tags: i.repo_tags })
            .collect();
        *kept = Some((Instant::now(), images.clone()));
        Ok(images)
    }

    fn image_config(&self, reference: &str, digest: &str) -> Result<ImageConfig> {
        let parsed = Reference::parse(reference);
        let creds = self.credentials_for(&parsed.registry)?;
        self.registries.image_config(&parsed, digest, creds.as_ref())
    }

    fn registry_tags(&self, reference: &str) -> Result<Vec<String>> {
        let parsed = Reference::parse(reference);
        let creds = self.credentials_for(&parsed.registry)?;
        self.registries.tags(&parsed, creds.as_ref())
    }

    fn registry_digests(&self, references: &[String]) -> Vec<Result<String>> {
        let lookups: Vec<(Reference, Result<Option<DockerCredentials>>)> = references
            .iter()
            .map(|r| {
                let reference = Reference::parse(r);
                let creds = self.credentials_for(&reference.registry);
                (reference, creds)
            })
            .collect();
        // Identity tokens need an OAuth exchange the engine already knows.
        let direct: Vec<usize> = (0..lookups.len())
            .filter(|&i| matches!(&lookups[i].1, Ok(c) if c.as_ref().is_none_or(|c| c.identitytoken.is_none())))
            .collect();
        let asks: Vec<(Reference, Option<DockerCredentials>)> =
            direct.iter().map(|&i| (lookups[i].0.clone(), lookups[i].1.as_ref().ok().cloned().flatten())).collect();
        let mut out: Vec<Option<Result<String>>> = lookups.iter().map(|_| None).collect();
        for (i, answer) in direct.into_iter().zip(self.registries.digests(&asks)) {
            out[i] = answer.ok().map(Ok);
        }
        // Whatever the direct lookup could not settle, the engine asks:
        // mirrors, insecure-registries and proxies are configured there.
        let slow: Vec<(usize, String, String, Result<Option<DockerCredentials>>)> = lookups
            .into_iter()
            .enumerate()
            .filter(|(i, _)| out[*i].is_none())
            .map(|(i, (reference, creds))| (i, references[i].clone(), reference.registry, creds))
            .collect();
        // Each failed lookup says why; nothing to ask, nothing to wait for.
        let docker = if slow.is_empty() { Ok(&self.docker) } else { self.docker().map_err(|e| format!("{e:#}")) };
        let docker = &docker;
        let answers: Vec<(usize, Result<String>)> = self.runtime.block_on(
            futures_util::stream::iter(slow)
                .map(|(i, reference, registry, creds)| async move {
                    let answer = async {
                        let inspect = docker
                            .as_ref()
                            .map_err(|e| anyhow!("{e}"))?
                            .inspect_registry_image(&reference, creds?)
                            .await
                            .map_err(|e| self.registry_error(&registry, e))?;
                        inspect
                            .descriptor
                            .digest
                            .ok_or_else(|| anyhow!("registry {registry}: no digest for {reference}"))
                    };
                    (i, answer.await)
                })
                .buffered(REGISTRY_CONCURRENCY)
                .collect(),
        );
        for (i, answer) in answers {
            out[i] = Some(answer);
        }
        out.into_iter().map(|r| r.expect("every reference looked up")).collect()
    }

    fn pull(&self, reference: &str, progress: &mut dyn FnMut(&PullProgress)) -> Result<()> {
        let registry = Reference::parse(reference).registry;
        let creds = self.credentials_for(&registry)?;
        let options = CreateImageOptionsBuilder::default().from_image(reference).build();
        let docker = self.docker()?;
        let pulled = self.runtime.block_on(async {
            let mut stream = docker.create_image(Some(options), None, creds);
            while let Some(info) = stream.try_next().await.map_err(|e| self.registry_error(&registry, e))? {
                let detail = info.progress_detail.unwrap_or_default();
                progress(&PullProgress {
                    layer: info.id.as_deref(),
                    status: info.status.as_deref().unwrap_or(""),
                    current: detail.current,
                    total: detail.total,
                });
            }
            Ok::<(), anyhow::Error>(())
        });
        self.images.lock().unwrap().take();
        pulled.with_context(|| format!("pulling {reference}"))
    }

    fn remove_container(&self, id: &str) -> Result<()> {
        let stop = StopContainerOptionsBuilder::default().t(10).build();
        let remove = RemoveContainerOptionsBuilder::default().v(false).force(false).build();
        let docker = self.docker()?;
        self.runtime.block_on(async {
            match docker.stop_container(id, Some(stop)).await {
                Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => {}
                Err(e) => return Err(e).with_context(|| format!("stopping container {id}")),
            }
            docker.remove_container(id, Some(remove)).await.with_context(|| format!("removing container {id}"))
        })
    }

    fn network_aliases(&self, id: &str) -> Result<BTreeMap<String, Vec<String>>> {
        let networks = self.networks(id)?;
        Ok(networks.into_iter().map(|(name, settings)| (name, settings.aliases.unwrap_or_default())).collect())
    }

    fn set_aliases(&self, id: &str, network: &str, aliases: &[String]) -> Result<()> {
        let current = self.networks(id)?.remove(network);
        let current = current.ok_or_else(|| anyhow!("container {id} is not in network {network}"))?;
        let endpoint = EndpointSettings {
            aliases: Some(aliases.to_vec()),
            ipam_config: current.ipam_config,
            links: current.links,
            driver_opts: current.driver_opts,
            ..Default::default()
        };
        let what = || format!("attaching container {id} to network {network} as {}", aliases.join(", "));
        let docker = self.docker()?;
        self.runtime.block_on(async {
            let request = NetworkDisconnectRequest { container: id.to_string(), force: Some(true) };
            docker.disconnect_network(network, request).await.with_context(what)?;
            let request = NetworkConnectRequest { container: id.to_string(), endpoint_config: Some(endpoint) };
            docker.connect_network(network, request).await.with_context(what)
        })
    }

    fn start_container(&self, id: &str) -> Result<()> {
        self.runtime
            .block_on(self.docker()?.start_container(id, None))
            .with_context(|| format!("starting container {id}"))
    }

    fn tags_under(&self, prefix: &str) -> Result<Vec<String>> {
        let filters = HashMap::from([("reference", vec![format!("{prefix}*")])]);
        let options = ListImagesOptionsBuilder::default().filters(&filters).build();
        let images = self.runtime.block_on(self.docker()?.list_images(Some(options))).context("listing images")?;
        Ok(images.into_iter().flat_map(|i| i.repo_tags).filter(|t| t.starts_with(prefix)).collect())
    }

    fn untag(&self, tag: &str) -> Result<()> {
        let options = RemoveImageOptionsBuilder::default().force(false).noprune(false).build();
        let removed = self.runtime.block_on(self.docker()?.remove_image(tag, Some(options), None));
        self.images.lock().unwrap().take();
        match removed {
            // A container still runs it: the tag stays, and so does the image.
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing tag {tag}")),
        }
    }

    fn stop_container(&self, id: &str) -> Result<()> {
        let stopped = self.runtime.block_on(self.docker()?.stop_container(id, None));
        match stopped {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("stopping container {id}")),
        }
    }

    fn volume(&self, name: &str) -> Result<VolumeInfo> {
        let v = self
            .runtime
            .block_on(self.docker()?.inspect_volume(name))
            .with_context(|| format!("inspecting volume {name}"))?;
        Ok(VolumeInfo {
            name: v.name,
            driver: v.driver,
            mountpoint: v.mountpoint,
            options: v.options.into_iter().collect(),
        })
    }

    fn export(&self, container: &str, path: &str, sink: &mut dyn std::io::Write) -> Result<()> {
        let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
        let docker = self.docker()?;
        // The request is bounded by the client; the body, which may take
        // minutes, by how long the engine may go without sending a byte.
        let idle = docker.timeout();
        self.runtime
            .block_on(async {
                let mut stream = docker.download_from_container(container, Some(options));
                loop {
                    let chunk = tokio::time::timeout(idle, stream.next())
                        .await
                        .map_err(|_| anyhow!("the engine sent nothing for {}", humantime::format_duration(idle)))?;
                    match chunk {
                        Some(bytes) => sink.write_all(&bytes?)?,
                        None => return Ok::<(), anyhow::Error>(()),
                    }
                }
            })
            .with_context(|| format!("copying {path} out of container {container}"))
    }

    fn volume_users(&self, volume: &str) -> Result<Vec<(String, ContainerInfo)>> {
        let filters = HashMap::from([("volume", vec![volume.to_string()])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let listed = self
            .runtime
            .block_on(self.docker()?.list_containers(Some(options)))
            .with_context(|| format!("listing the containers that use volume {volume}"))?;
        Ok(listed
            .into_iter()
            .map(|s| {
                let project = s.labels.as_ref().and_then(|l| l.get(PROJECT_LABEL)).cloned().unwrap_or_default();
                (project, summary_info(s))
            })
            .collect())
    }

    fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<()> {
        let options = TagImageOptionsBuilder::default().repo(repo).tag(tag).build();
        let tagged = self.runtime.block_on(self.docker()?.tag_image(image, Some(options)));
        self.images.lock().unwrap().take();
        tagged.with_context(|| format!("tagging image {image} as {repo}:{tag}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(project: &str) -> ContainerSummary {
        ContainerSummary {
            labels: Some(HashMap::from([(PROJECT_LABEL.to_string(), project.to_string())])),
            ..Default::default()
        }
    }

    #[test]
    fn stacks_checked_together_share_one_listing_and_each_takes_its_part_once() {
        let mut shared = SharedListing::default();
        let listings = std::cell::Cell::new(0);
        let every = || {
            listings.set(listings.get() + 1);
            Ok(vec![container("c"), container("c"), container("d"), container("a")])
        };
        assert!(shared.take("a", every).unwrap().is_none(), "one project: its own listing");
        assert!(shared.take("b", every).unwrap().is_none(), "two: still their own");
        assert_eq!(shared.take("c", every).unwrap().map(|c| c.len()), Some(2), "the third lists every project");
        assert_eq!(shared.take("d", every).unwrap().map(|c| c.len()), Some(1), "the fourth takes its part");
        assert_eq!(shared.take("e", every).unwrap().map(|c| c.len()), Some(0), "a project without containers");
        assert_eq!(listings.get(), 1, "listed once");
        assert!(shared.take("c", every).unwrap().is_none(), "asked again: listed afresh");
        assert!(shared.take("a", every).unwrap().is_none(), "asked before the listing: listed afresh");

        shared.every.as_mut().unwrap().0 = Instant::now() - LISTING_FRESH;
        assert_eq!(shared.take("f", every).unwrap().map(|c| c.len()), Some(0), "a stale listing is made again");
        assert_eq!(listings.get(), 2);
    }

    #[test]
    fn a_failed_shared_listing_is_the_asking_stacks_error() {
        let mut shared = SharedListing::default();
        let fail = || Err(anyhow!("engine gone"));
        shared.take("a", fail).unwrap();
        shared.take("b", fail).unwrap();
        assert!(shared.take("c", fail).is_err());
        assert!(shared.every.is_none(), "nothing kept");
    }
}
