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
    for obs in services.values_mut() {
        let chosen = obs.containers.iter().find(|c| c.is_running()).or(obs.containers.first());
        if let Some(c) = chosen {
            obs.image = engine.image(&c.image_id)?;
        }
    }
    let mut local_images = BTreeSet::new();
    for r in references {
        if engine.image(r)?.is_some() {
            local_images.insert(r.clone());
        }
    }
    Ok(Observation { services, local_images })
}
