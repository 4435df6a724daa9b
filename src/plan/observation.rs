//! What runs now, as the planner sees it: containers per service and the
//! images they run. Read from the engine by `ops::observe`.

use std::collections::{BTreeMap, BTreeSet};

use crate::seams::engine::{ContainerInfo, ImageInfo};

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
