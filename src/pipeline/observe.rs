//! observe: what runs now, read afresh from the engine on every run.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use crate::seams::engine::{ContainerInfo, Engine, ImageInfo};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceObservation {
    pub containers: Vec<ContainerInfo>,
    /// The image the service's (first running) container was created from.
    pub image: Option<ImageInfo>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub services: BTreeMap<String, ServiceObservation>,
    /// Which of the references asked about exist as local images.
    pub local_images: BTreeSet<String>,
}

pub fn observe(engine: &dyn Engine, project: &str, references: &[String]) -> Result<Observation> {
    let mut services: BTreeMap<String, ServiceObservation> = BTreeMap::new();
    for container in engine.containers(project)? {
        services.entry(container.service.clone()).or_default().containers.push(container);
    }
    // Every image asked about at once: those the containers run, then the
    // references of the compose model.
    let chosen: Vec<(String, String)> = services
        .iter()
        .filter_map(|(name, obs)| {
            let c = obs.containers.iter().find(|c| c.is_running()).or(obs.containers.first())?;
            Some((name.clone(), c.image_id.clone()))
        })
        .collect();
    let mut wanted: Vec<String> = chosen.iter().map(|(_, id)| id.clone()).collect();
    wanted.extend(references.iter().cloned());
    let mut found = engine.images(&wanted).into_iter();
    for (name, _) in &chosen {
        let image = found.next().expect("one answer per image")?;
        if let Some(obs) = services.get_mut(name) {
            obs.image = image;
        }
    }
    let mut local_images = BTreeSet::new();
    for (r, image) in references.iter().zip(found) {
        if image?.is_some() {
            local_images.insert(r.clone());
        }
    }
    Ok(Observation { services, local_images })
}
