//! One set of fakes for the seams, for unit tests of everything above
//! them: an engine and Compose in memory (`Fake`), Compose reading its
//! model from a file (`FileCompose`), a clock that stands still and no
//! signals; git is the real one, on local repositories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::compose::{Compose, ComposeModel, ComposeSpec, relocate};
use super::engine::{ContainerInfo, Engine, ImageInfo, PullProgress};
use super::git::{GitSource, Repo};
use super::registry::ImageConfig;
use super::{Open, Seams};
use crate::clock::Clock;
use crate::reference::split_tag;
use crate::signals::Signals;

/// The seams of a unit test: `engine`, `FileCompose`, real git, a clock
/// standing at `NOW`, no signal.
pub fn seams(engine: &dyn Engine) -> Seams<'_> {
    Seams { engine, open: &FakeOpen, clock: &Stopped, signals: &NoSignal }
}

pub const NOW: jiff::Timestamp = jiff::Timestamp::constant(1_795_780_800, 0);

pub struct Stopped;

impl Clock for Stopped {
    fn now(&self) -> Result<jiff::Timestamp> {
        Ok(NOW)
    }
}

pub struct NoSignal;

impl Signals for NoSignal {
    fn stop_requested(&self) -> bool {
        false
    }
}

pub struct FakeOpen;

impl Open for FakeOpen {
    fn compose(&self, spec: &ComposeSpec) -> Box<dyn Compose> {
        Box::new(FileCompose { directory: spec.directory.clone(), project: spec.project.clone(), relocation: None })
    }

    fn repo(&self, git_dir: &Path, source: &GitSource) -> Result<Box<dyn Repo>> {
        super::System.repo(git_dir, source)
    }
}

/// Compose whose normalized model is `compose.json` in the directory,
/// written as `docker compose config --format json` prints it (a project
/// `name` is optional here: the directory's name stands in). A service's
/// config hash is a hash of its model.
pub struct FileCompose {
    directory: PathBuf,
    project: Option<String>,
    relocation: Option<(PathBuf, PathBuf)>,
}

pub const MODEL_FILE: &str = "compose.json";

impl Compose for FileCompose {
    fn model(&self) -> Result<ComposeModel> {
        let path = self.directory.join(MODEL_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut json: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let fallback = self.directory.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let project = self.project.clone().or_else(|| json["name"].as_str().map(String::from)).unwrap_or(fallback);
        json["name"] = project.into();
        if let Some((from, to)) = &self.relocation {
            relocate(&mut json, from, to);
        }
        ComposeModel::from_json(&json)
    }
    fn hashes(&self) -> Result<BTreeMap<String, String>> {
        use sha2::Digest;
        let hash = |raw: &Value| format!("{:x}", sha2::Sha256::digest(raw.to_string().as_bytes()))[..12].to_string();
        Ok(self.model()?.services.iter().map(|(name, svc)| (name.clone(), hash(&svc.raw))).collect())
    }
    fn up(&self, _: &str, _: &str, _: bool) -> Result<()> {
        unreachable!("FileCompose only reads")
    }
    fn scale_up(&self, _: &str, _: &str, _: usize) -> Result<()> {
        unreachable!("FileCompose only reads")
    }
    fn build(&self, _: &str, _: &[String], _: &mut dyn FnMut(&str)) -> Result<()> {
        unreachable!("FileCompose only reads")
    }
    fn all_services(&self) -> Result<Vec<String>> {
        Ok(self.model()?.services.into_keys().collect())
    }
    fn compose_files(&self) -> Vec<PathBuf> {
        vec![PathBuf::from(MODEL_FILE)]
    }
    fn cache_key(&self) -> Option<String> {
        use sha2::Digest;
        let model = std::fs::read(self.directory.join(MODEL_FILE)).ok()?;
        let key = sha2::Sha256::new().chain_update(model).chain_update(self.project.as_deref().unwrap_or_default());
        Some(format!("{:x}", key.finalize())).filter(|_| self.relocation.is_none())
    }
    fn in_copy(&self, copy: &Path, root: &Path, project: Option<&str>) -> Box<dyn Compose> {
        let inside = self.directory.strip_prefix(root).unwrap_or(Path::new(""));
        Box::new(FileCompose {
            directory: copy.join(inside),
            project: project.map(String::from).or_else(|| self.project.clone()),
            relocation: Some((copy.to_path_buf(), root.to_path_buf())),
        })
    }
}

/// A tiny engine + compose + files: tags map references to image ids,
/// `up` (re)creates a service from its reference's current id, and an
/// image id starting with "bad" is unhealthy.
#[derive(Default)]
pub struct Fake {
    pub tags: Mutex<BTreeMap<String, String>>,
    pub running: Mutex<BTreeMap<String, String>>,
    pub registry: BTreeMap<String, String>,
    /// What `image_config` answers, per digest.
    pub configs: BTreeMap<String, ImageConfig>,
    /// What `registry_tags` answers, per repository.
    pub repository_tags: BTreeMap<String, Vec<String>>,
    pub images: BTreeMap<String, String>,
    /// The config hash each service's containers carry.
    pub hashes: BTreeMap<String, String>,
    pub fail_pull: bool,
    /// What building a service makes: its reference and the new image id.
    pub builds: BTreeMap<String, (String, String)>,
    pub fail_build: bool,
    pub fail_up_of_image: Option<String>,
    pub log: Mutex<Vec<String>>,
    /// A file each `up` is also written to, for ordering against hooks
    /// (which run as real processes and write there too).
    pub trail: Option<std::path::PathBuf>,
}

impl Engine for Fake {
    fn containers(&self, _: &str) -> Result<Vec<ContainerInfo>> {
        Ok(self
            .running
            .lock()
            .unwrap()
            .iter()
            .map(|(service, image)| ContainerInfo {
                id: format!("{service}-{image}"),
                name: format!("p-{service}-1"),
                service: service.clone(),
                state: "running".into(),
                health: Some(if image.contains("bad") { "unhealthy" } else { "healthy" }.into()),
                restart_count: 0,
                image_id: image.clone(),
                config_hash: self.hashes.get(service).cloned(),
                started_at: None,
                mounts: vec![],
                labels: Default::default(),
            })
            .collect())
    }
    fn image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        Ok(self.tags.lock().unwrap().get(reference).map(|id| ImageInfo { id: id.clone(), ..Default::default() }))
    }
    /// The digest the registry serves under a reference's repository.
    fn registry_digests(&self, references: &[String]) -> Vec<Result<String>> {
        references
            .iter()
            .map(|r| {
                let repo = split_tag(r).map_or(r.as_str(), |(repo, _)| repo);
                let found = self.registry.keys().find_map(|k| k.strip_prefix(&format!("{repo}@")).map(String::from));
                found.with_context(|| format!("registry r: {repo} not found"))
            })
            .collect()
    }
    fn image_config(&self, _: &str, digest: &str) -> Result<ImageConfig> {
        self.configs.get(digest).cloned().with_context(|| format!("registry r: no config for {digest}"))
    }
    fn registry_tags(&self, reference: &str) -> Result<Vec<String>> {
        let repo = split_tag(reference).map_or(reference, |(repo, _)| repo);
        self.repository_tags.get(repo).cloned().with_context(|| format!("registry r: {repo} not found"))
    }
    fn network_aliases(&self, _: &str) -> Result<BTreeMap<String, Vec<String>>> {
        Ok(BTreeMap::new())
    }
    fn set_aliases(&self, _: &str, _: &str, _: &[String]) -> Result<()> {
        unreachable!("no start-first service here")
    }
    fn start_container(&self, _: &str) -> Result<()> {
        unreachable!("no start-first service here")
    }
    /// An image id is also its digest: `r/a:latest` tagging `old-a` was
    /// pulled as `r/a@old-a`.
    fn local_images(&self) -> Result<Vec<ImageInfo>> {
        let mut images: BTreeMap<String, ImageInfo> = BTreeMap::new();
        for (reference, id) in self.tags.lock().unwrap().iter() {
            let image = images.entry(id.clone()).or_insert_with(|| ImageInfo { id: id.clone(), ..Default::default() });
            image.repo_tags.push(reference.clone());
            let repo = split_tag(reference).map_or(reference.as_str(), |(repo, _)| repo);
            image.repo_digests.push(format!("{repo}@{id}"));
        }
        Ok(images.into_values().collect())
    }
    fn pull(&self, reference: &str, _: &mut dyn FnMut(&PullProgress)) -> Result<()> {
        self.log.lock().unwrap().push(format!("pull {reference}"));
        if self.fail_pull {
            bail!("registry r: connection refused");
        }
        self.tags.lock().unwrap().insert(reference.into(), self.registry[reference].clone());
        Ok(())
    }
    fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<()> {
        self.log.lock().unwrap().push(format!("tag {image} {repo}:{tag}"));
        let id = self.tags.lock().unwrap().get(image).cloned().unwrap_or_else(|| image.to_string());
        self.tags.lock().unwrap().insert(format!("{repo}:{tag}"), id);
        Ok(())
    }
    fn tags_under(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.tags.lock().unwrap().keys().filter(|t| t.starts_with(prefix)).cloned().collect())
    }
    fn stop_container(&self, id: &str) -> Result<()> {
        self.log.lock().unwrap().push(format!("stop {id}"));
        Ok(())
    }
    fn volume(&self, name: &str) -> Result<crate::seams::engine::VolumeInfo> {
        anyhow::bail!("no volume {name} here")
    }
    fn export(&self, container: &str, path: &str, _: &mut dyn std::io::Write) -> Result<()> {
        anyhow::bail!("nothing to copy from {container}:{path} here")
    }
    fn volume_users(&self, _: &str) -> Result<Vec<(String, ContainerInfo)>> {
        Ok(Vec::new())
    }
    fn untag(&self, tag: &str) -> Result<()> {
        self.log.lock().unwrap().push(format!("untag {tag}"));
        self.tags.lock().unwrap().remove(tag);
        Ok(())
    }
    fn remove_container(&self, id: &str) -> Result<()> {
        self.log.lock().unwrap().push(format!("rm {id}"));
        self.running.lock().unwrap().retain(|s, i| format!("{s}-{i}") != id);
        Ok(())
    }
}

impl Compose for Fake {
    fn model(&self) -> Result<ComposeModel> {
        unreachable!()
    }
    fn hashes(&self) -> Result<BTreeMap<String, String>> {
        Ok(BTreeMap::new())
    }
    fn up(&self, _: &str, service: &str, _: bool) -> Result<()> {
        self.log.lock().unwrap().push(format!("up {service}"));
        if let Some(trail) = &self.trail {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(trail)?;
            writeln!(file, "up {service}")?;
        }
        let id = self.tags.lock().unwrap()[&self.images[service]].clone();
        if self.fail_up_of_image.as_deref() == Some(id.as_str()) {
            bail!("compose failed");
        }
        self.running.lock().unwrap().insert(service.into(), id);
        Ok(())
    }
    fn scale_up(&self, _: &str, _: &str, _: usize) -> Result<()> {
        unreachable!("no start-first service here")
    }
    fn build(&self, _: &str, services: &[String], _: &mut dyn FnMut(&str)) -> Result<()> {
        self.log.lock().unwrap().push(format!("build {}", services.join(" ")));
        if self.fail_build {
            anyhow::bail!("docker compose build failed:\nERROR: failed to solve");
        }
        for (reference, id) in services.iter().filter_map(|s| self.builds.get(s)) {
            self.tags.lock().unwrap().insert(reference.clone(), id.clone());
        }
        Ok(())
    }
    fn all_services(&self) -> Result<Vec<String>> {
        unreachable!("the executor reads no files")
    }
    fn compose_files(&self) -> Vec<PathBuf> {
        unreachable!("the executor reads no files")
    }
    fn in_copy(&self, _: &Path, _: &Path, _: Option<&str>) -> Box<dyn Compose> {
        unreachable!("the executor reads no files")
    }
}

/// Services a and b, each `r/<svc>:latest`, running `old-<svc>`; the
/// registry serves `new_a` / `new_b` under the digests of those names.
pub fn fake(new_a: &str, new_b: &str) -> Fake {
    let mut f = Fake::default();
    for (svc, new) in [("a", new_a), ("b", new_b)] {
        let r = format!("r/{svc}:latest");
        f.tags.lock().unwrap().insert(r.clone(), format!("old-{svc}"));
        f.running.lock().unwrap().insert(svc.into(), format!("old-{svc}"));
        f.registry.insert(format!("r/{svc}@{new}"), new.into());
        f.images.insert(svc.into(), r);
    }
    f
}

/// Runs git in `dir` as a test's committer; panics when it fails.
pub fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}
