//! Push webhooks: which stacks a delivery is about, and whether it was
//! seen before. Signatures are checked in `auth`; what runs is `apply
//! --auto`, as the timer would.

use std::collections::{BTreeSet, VecDeque};

use serde::Deserialize;

use crate::reference::Reference;
use crate::seams::git::repo_key;
use crate::settings::StackSettings;

/// What clusterup reads of a GitHub `push` delivery.
#[derive(Debug, Deserialize)]
pub struct Push {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub repository: Repository,
}

#[derive(Debug, Deserialize)]
pub struct Repository {
    #[serde(default)]
    pub clone_url: Option<String>,
    #[serde(default)]
    pub ssh_url: Option<String>,
    #[serde(default)]
    pub git_url: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
}

/// The stacks that follow the pushed repository and branch.
pub fn following<'a>(stacks: &'a [StackSettings], push: &Push) -> Vec<&'a StackSettings> {
    let Some(branch) = push.git_ref.strip_prefix("refs/heads/") else { return Vec::new() };
    let r = &push.repository;
    let keys: Vec<String> =
        [&r.clone_url, &r.ssh_url, &r.git_url, &r.html_url].into_iter().flatten().map(|u| repo_key(u)).collect();
    stacks
        .iter()
        .filter(|s| s.git.as_ref().is_some_and(|g| g.branch == branch && keys.contains(&repo_key(g.url.expose()))))
        .collect()
}

/// Whether a service's image is the pushed one: the same repository, and
/// the same tag when the push names one.
pub fn same_image(pushed: &str, used: &str) -> bool {
    let (p, u) = (Reference::parse(pushed), Reference::parse(used));
    let tagged = pushed.rsplit('/').next().is_some_and(|last| last.contains(':'));
    p.registry == u.registry && p.repository == u.repository && (!tagged || p.tag == u.tag)
}

/// Deliveries already taken, so a replay is refused: GitHub's delivery
/// ids, and image hook signatures within their time window.
#[derive(Default)]
pub struct Seen {
    order: VecDeque<String>,
    ids: BTreeSet<String>,
}

/// Kept: enough for the busiest repository's pushes between restarts.
const SEEN_KEPT: usize = 4096;

impl Seen {
    /// False when `id` was seen before; otherwise remembers it.
    pub fn first(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        if self.order.len() > SEEN_KEPT
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_repository_compare_equal() {
        let key = repo_key("https://github.com/acme/shop.git");
        assert_eq!(key, "github.com/acme/shop");
        for same in [
            "git@github.com:acme/shop.git",
            "ssh://git@github.com/acme/shop",
            "https://token:x-oauth@github.com/acme/shop/",
            "git://github.com/acme/shop.git",
            "https://GitHub.com:443/acme/shop",
        ] {
            assert_eq!(repo_key(same), key, "{same}");
        }
        assert_ne!(repo_key("https://github.com/acme/shop-old"), key);
        assert_eq!(repo_key("file:///srv/git/shop.git"), "/srv/git/shop");
        assert_eq!(repo_key("/srv/git/shop.git"), "/srv/git/shop");
    }

    #[test]
    fn a_push_concerns_the_stacks_on_its_repository_and_branch() {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("c.yaml");
        std::fs::write(
            &config,
            "stacks:\n  - name: a\n    git: {url: 'https://github.com/acme/shop.git'}\n  - name: b\n    git: {url: 'git@github.com:acme/shop.git', branch: prod}\n  - name: c\n    git: {url: 'https://github.com/acme/other.git'}\n",
        )
        .unwrap();
        let stacks = crate::settings::resolve(&crate::settings::Sources {
            config: Some(&config),
            state_dir: Some(&tmp.path().join("state")),
            stack: None,
            cwd: tmp.path(),
        })
        .unwrap();
        let push = |r: &str| Push {
            git_ref: r.into(),
            repository: Repository {
                clone_url: Some("https://github.com/acme/shop.git".into()),
                ssh_url: Some("git@github.com:acme/shop.git".into()),
                git_url: None,
                html_url: None,
            },
        };
        let names = |p: &Push| following(&stacks, p).iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&push("refs/heads/main")), ["a"]);
        assert_eq!(names(&push("refs/heads/prod")), ["b"]);
        assert!(names(&push("refs/tags/v1")).is_empty(), "a tag is not a branch");
    }

    #[test]
    fn a_pushed_image_matches_its_repository_and_tag() {
        assert!(same_image("registry.local/app:latest", "registry.local/app:latest"));
        assert!(same_image("registry.local/app", "registry.local/app:v2"), "no tag: every tag of it");
        assert!(!same_image("registry.local/app:v1", "registry.local/app:v2"));
        assert!(same_image("nginx:1.27", "docker.io/library/nginx:1.27"));
        assert!(!same_image("registry.local/app:v1", "other.local/app:v1"));
        assert!(same_image("127.0.0.1:5550/app:v1", "127.0.0.1:5550/app:v1"), "a port is not a tag");
    }

    #[test]
    fn a_delivery_is_taken_once() {
        let mut seen = Seen::default();
        assert!(seen.first("d1"));
        assert!(!seen.first("d1"));
        assert!(seen.first("d2"));
    }
}
