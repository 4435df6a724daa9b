//! backup: before anything is touched, keep every changed service's
//! current image under a clusterup tag, so neither a prune nor the pull
//! that moves the service's own tag can take away the rollback target.

use anyhow::Result;

use crate::plan::classify::{ChangeKind, Plan};
use crate::plan::observation::Observation;
use crate::seams::engine::Engine;
use crate::state::ServiceImages;

pub const BACKUP_REPOSITORY: &str = "clusterup";

/// One record per change to a service that has a container now: what it
/// runs is what a rollback restores.
pub fn backups_for(plan: &Plan, observation: &Observation, revision: u64) -> Vec<ServiceImages> {
    plan.changes
        .iter()
        .filter(|change| change.kind != ChangeKind::Create)
        .filter_map(|change| {
            let image = observation.services.get(&change.service)?.image.as_ref()?;
            Some(ServiceImages {
                service: change.service.clone(),
                image: change.image.clone(),
                before: image.id.clone(),
                backup_tag: backup_tag(&plan.stack, &change.service, revision),
                after: None,
            })
        })
        .collect()
}

pub fn keep_images(engine: &dyn Engine, backups: &[ServiceImages]) -> Result<()> {
    for b in backups {
        let (repo, tag) = b.backup_tag.rsplit_once(':').expect("backup tags carry a tag");
        engine.tag(&b.before, repo, tag)?;
    }
    Ok(())
}

/// `clusterup/<stack>/<service>:rev-<n>`, each part reduced to what a
/// repository path component allows.
pub fn backup_tag(stack: &str, service: &str, revision: u64) -> String {
    format!("{}{}:rev-{revision}", backup_prefix(stack), component(service))
}

/// The repository prefix of all of a stack's backup tags.
pub fn backup_prefix(stack: &str) -> String {
    format!("{BACKUP_REPOSITORY}/{}/", component(stack))
}

fn component(name: &str) -> String {
    let mapped: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    let trimmed = mapped.trim_matches(['-', '_']);
    if trimmed.is_empty() { "x".to_string() } else { trimmed.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_tags_are_valid_repository_names() {
        assert_eq!(backup_tag("web", "api", 3), "clusterup/web/api:rev-3");
        assert_eq!(backup_tag("My.Stack", "_Svc", 1), "clusterup/my-stack/svc:rev-1");
    }
}
