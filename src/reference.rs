//! Image references, parsed the way the Docker CLI reads them.

/// `registry/repository[:tag][@digest]`, with Docker Hub's defaults made
/// explicit so two spellings of one image compare equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

pub const DOCKER_HUB: &str = "docker.io";

impl Reference {
    pub fn parse(text: &str) -> Reference {
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (text, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(rest[last_slash + i + 1..].to_string())),
            None => (rest, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" { DOCKER_HUB.to_string() } else { registry };
        let repository = if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path };
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_string()) } else { tag };
        Reference { registry, repository, tag, digest }
    }

    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// Whether `repo_digest` (an entry of an image's RepoDigests,
    /// `name@sha256:...`) is a digest of this reference's repository, and
    /// if so which.
    pub fn digest_in<'a>(&self, repo_digest: &'a str) -> Option<&'a str> {
        let (_, digest) = repo_digest.split_once('@')?;
        let other = Reference::parse(repo_digest);
        (other.registry == self.registry && other.repository == self.repository).then_some(digest)
    }
}

/// `name[:tag]` split for tagging: the repository as written and the tag
/// (`latest` when none). None for references pinned by digest.
pub fn split_tag(reference: &str) -> Option<(&str, &str)> {
    if reference.contains('@') {
        return None;
    }
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    Some(match reference[last_slash..].rfind(':') {
        Some(i) => (&reference[..last_slash + i], &reference[last_slash + i + 1..]),
        None => (reference, "latest"),
    })
}

/// An image id, digest or commit cut to its first 12 hex digits, as the
/// Docker and git CLIs show them.
pub fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    // A hostile registry's "digest" need not be hex: cut on a character.
    let end = hex.char_indices().nth(12).map_or(hex.len(), |(i, _)| i);
    &hex[..end]
}

/// The same repository pinned to `digest`, for pulling exactly what was
/// checked.
pub fn with_digest(reference: &str, digest: &str) -> Option<String> {
    split_tag(reference).map(|(repo, _)| format!("{repo}@{digest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_spellings() {
        let cases = [
            ("nginx", DOCKER_HUB, "library/nginx", Some("latest"), None),
            ("nginx:1.27", DOCKER_HUB, "library/nginx", Some("1.27"), None),
            ("docker.io/library/nginx:1", DOCKER_HUB, "library/nginx", Some("1"), None),
            ("user/app", DOCKER_HUB, "user/app", Some("latest"), None),
            ("127.0.0.1:5000/t/web:v2", "127.0.0.1:5000", "t/web", Some("v2"), None),
            ("localhost/web", "localhost", "web", Some("latest"), None),
            ("ghcr.io/o/a@sha256:ab", "ghcr.io", "o/a", None, Some("sha256:ab")),
            ("ghcr.io/o/a:1@sha256:ab", "ghcr.io", "o/a", Some("1"), Some("sha256:ab")),
        ];
        for (text, registry, repository, tag, digest) in cases {
            let r = Reference::parse(text);
            assert_eq!(r.registry, registry, "{text}");
            assert_eq!(r.repository, repository, "{text}");
            assert_eq!(r.tag.as_deref(), tag, "{text}");
            assert_eq!(r.digest.as_deref(), digest, "{text}");
        }
    }

    #[test]
    fn split_tag_keeps_the_spelling() {
        assert_eq!(split_tag("127.0.0.1:5000/t/web:v2"), Some(("127.0.0.1:5000/t/web", "v2")));
        assert_eq!(split_tag("localhost:5000/web"), Some(("localhost:5000/web", "latest")));
        assert_eq!(split_tag("nginx"), Some(("nginx", "latest")));
        assert_eq!(split_tag("nginx@sha256:1"), None);
    }

    #[test]
    fn repo_digests_match_by_repository() {
        let r = Reference::parse("nginx:latest");
        assert_eq!(r.digest_in("nginx@sha256:1"), Some("sha256:1"));
        assert_eq!(r.digest_in("docker.io/library/nginx@sha256:1"), Some("sha256:1"));
        assert_eq!(r.digest_in("other/nginx@sha256:1"), None);
        let r = Reference::parse("127.0.0.1:5000/t/web:latest");
        assert_eq!(r.digest_in("127.0.0.1:5000/t/web@sha256:2"), Some("sha256:2"));
        assert_eq!(r.digest_in("127.0.0.1:5001/t/web@sha256:2"), None);
    }
}
