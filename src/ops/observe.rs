//! observe: what runs now, read afresh from the engine on every run.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use crate::plan::observation::{Observation, ServiceObservation};
use crate::reference::Reference;
use crate::seams::engine::Engine;

/// `detailed`: also each container's restart count and start time, which
/// cost one inspection per container.
pub fn observe(engine: &dyn Engine, project: &str, references: &[String], detailed: bool) -> Result<Observation> {
    // Two engine requests at once: each is mostly a round trip.
    let (containers, images) = std::thread::scope(|scope| {
        let images = scope.spawn(|| engine.local_images());
        let containers = if detailed { engine.containers(project) } else { engine.container_summaries(project) };
        (containers, images.join().unwrap_or_else(|_| Err(anyhow::anyhow!("listing images failed"))))
    });
    let mut services: BTreeMap<String, ServiceObservation> = BTreeMap::new();
    for container in containers? {
        services.entry(container.service.clone()).or_default().containers.push(container);
    }
    let images = images?;
    for obs in services.values_mut() {
        let chosen = obs.containers.iter().find(|c| c.is_running()).or(obs.containers.first());
        obs.image = chosen.and_then(|c| images.iter().find(|i| i.id == c.image_id)).cloned();
    }
    let names: BTreeSet<Reference> =
        images.iter().flat_map(|i| i.repo_tags.iter().chain(&i.repo_digests)).map(|n| Reference::parse(n)).collect();
    let local_images = references
        .iter()
        .filter(|r| {
            let r = Reference::parse(r);
            // A digest-pinned reference is present when its digest is.
            let by_digest = r.digest.as_ref().map(|_| Reference { tag: None, ..r.clone() });
            names.contains(&r) || by_digest.is_some_and(|d| names.contains(&d))
        })
        .cloned()
        .collect();
    Ok(Observation { services, local_images })
}
