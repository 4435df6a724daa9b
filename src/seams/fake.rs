//! One set of fakes for the seams, for unit tests of everything above
//! them: an engine and Compose, in memory. Tags map references to image
//! ids, `up` (re)creates a service from its reference's current id, and
//! an image id containing "bad" is unhealthy.

use std::cell::RefCell;
use std::collections::BTreeMap;

use anyhow::{Result, bail};

use crate::seams::compose::{Compose, ComposeModel};
use crate::seams::engine::{ContainerInfo, Engine, ImageInfo, PullProgress};

/// A tiny engine + compose + files: tags map references to image ids,
/// `up` (re)creates a service from its reference's current id, and an
/// image id starting with "bad" is unhealthy.
#[derive(Default)]
pub struct Fake {
    pub tags: RefCell<BTreeMap<String, String>>,
    pub running: RefCell<BTreeMap<String, String>>,
    pub registry: BTreeMap<String, String>,
    pub images: BTreeMap<String, String>,
    pub fail_pull: bool,
    pub fail_up_of_image: Option<String>,
    pub log: RefCell<Vec<String>>,
    /// A file each `up` is also written to, for ordering against hooks
    /// (which run as real processes and write there too).
    pub trail: Option<std::path::PathBuf>,
}

impl Engine for Fake {
    fn containers(&self, _: &str) -> Result<Vec<ContainerInfo>> {
        Ok(self
            .running
            .borrow()
            .iter()
            .map(|(service, image)| ContainerInfo {
                id: format!("{service}-{image}"),
                name: format!("p-{service}-1"),
                service: service.clone(),
                state: "running".into(),
                health: Some(if image.contains("bad") { "unhealthy" } else { "healthy" }.into()),
                restart_count: 0,
                image_id: image.clone(),
                config_hash: None,
                started_at: None,
                anonymous_volumes: vec![],
            })
            .collect())
    }
    fn image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        Ok(self.tags.borrow().get(reference).map(|id| ImageInfo { id: id.clone(), ..Default::default() }))
    }
    fn registry_digests(&self, _: &[String]) -> Vec<Result<String>> {
        unreachable!("execute never asks registries")
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
    fn local_images(&self) -> Result<Vec<ImageInfo>> {
        let ids: std::collections::BTreeSet<String> = self.tags.borrow().values().cloned().collect();
        Ok(ids.into_iter().map(|id| ImageInfo { id, ..Default::default() }).collect())
    }
    fn pull(&self, reference: &str, _: &mut dyn FnMut(&PullProgress)) -> Result<()> {
        self.log.borrow_mut().push(format!("pull {reference}"));
        if self.fail_pull {
            bail!("registry r: connection refused");
        }
        self.tags.borrow_mut().insert(reference.into(), self.registry[reference].clone());
        Ok(())
    }
    fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<()> {
        self.log.borrow_mut().push(format!("tag {image} {repo}:{tag}"));
        let id = self.tags.borrow().get(image).cloned().unwrap_or_else(|| image.to_string());
        self.tags.borrow_mut().insert(format!("{repo}:{tag}"), id);
        Ok(())
    }
    fn tags_under(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.tags.borrow().keys().filter(|t| t.starts_with(prefix)).cloned().collect())
    }
    fn untag(&self, tag: &str) -> Result<()> {
        self.log.borrow_mut().push(format!("untag {tag}"));
        self.tags.borrow_mut().remove(tag);
        Ok(())
    }
    fn remove_container(&self, id: &str) -> Result<()> {
        self.log.borrow_mut().push(format!("rm {id}"));
        self.running.borrow_mut().retain(|s, i| format!("{s}-{i}") != id);
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
        self.log.borrow_mut().push(format!("up {service}"));
        if let Some(trail) = &self.trail {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(trail)?;
            writeln!(file, "up {service}")?;
        }
        let id = self.tags.borrow()[&self.images[service]].clone();
        if self.fail_up_of_image.as_deref() == Some(id.as_str()) {
            bail!("compose failed");
        }
        self.running.borrow_mut().insert(service.into(), id);
        Ok(())
    }
    fn scale_up(&self, _: &str, _: &str, _: usize) -> Result<()> {
        unreachable!("no start-first service here")
    }
}

/// Services a and b, each `r/<svc>:latest`, running `old-<svc>`; the
/// registry serves `new_a` / `new_b` under the digests of those names.
pub fn fake(new_a: &str, new_b: &str) -> Fake {
    let mut f = Fake::default();
    for (svc, new) in [("a", new_a), ("b", new_b)] {
        let r = format!("r/{svc}:latest");
        f.tags.borrow_mut().insert(r.clone(), format!("old-{svc}"));
        f.running.borrow_mut().insert(svc.into(), format!("old-{svc}"));
        f.registry.insert(format!("r/{svc}@{new}"), new.into());
        f.images.insert(svc.into(), r);
    }
    f
}
