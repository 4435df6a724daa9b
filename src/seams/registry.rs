//! Manifest digests straight from registries (the distribution API's
//! `HEAD /v2/<name>/manifests/<tag>`), over reused connections with tokens
//! cached for the run. The engine's own lookup costs ~30 ms per image and
//! does not overlap; this is what makes a no-op run cheap. It is only a fast
//! path: the engine asks whenever this client cannot answer for sure.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde::Deserialize;
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::at_once::Places;
use crate::redact::Secret;
use crate::reference::{DOCKER_HUB, Reference};

/// Every manifest kind a tag may point at. Without them a registry may
/// answer with a converted schema-1 manifest, whose digest the engine
/// would never report.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.manifest.v1+json";

/// Enough lookups in flight to hide round trips, few enough that a
/// registry does not answer 429.
const CONCURRENCY: usize = 8;

/// How often one lookup waits out a 429 before reporting it.
const RATE_LIMIT_RETRIES: usize = 2;

/// Resolves each registry's name once per run. ureq resolves before every
/// request, a pooled connection or not, on a thread of its own when a
/// timeout is set: a thread and a DNS query per image otherwise.
#[derive(Debug, Default)]
struct OncePerHost {
    system: DefaultResolver,
    known: Mutex<HashMap<String, ResolvedSocketAddrs>>,
}

impl Resolver for OncePerHost {
    fn resolve(&self, uri: &Uri, config: &Config, timeout: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = format!("{:?}://{:?}", uri.scheme(), uri.authority());
        if let Some(addrs) = self.known.lock().unwrap().get(&key) {
            return Ok(addrs.clone());
        }
        let addrs = self.system.resolve(uri, config, timeout)?;
        self.known.lock().unwrap().insert(key, addrs.clone());
        Ok(addrs)
    }
}

pub struct Registries {
    agent: ureq::Agent,
    timeout: Duration,
    /// `Authorization` values that worked, per registry and repository.
    authorizations: Mutex<HashMap<(String, String), String>>,
    /// Lookups in flight per registry, whoever asks: stacks checked at
    /// once share the `CONCURRENCY` of each registry.
    in_flight: Places,
}

impl Registries {
    /// `timeout` bounds each request, connecting included.
    pub fn new(timeout: Duration) -> Registries {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .timeout_global(Some(timeout))
            .max_idle_connections_per_host(CONCURRENCY)
            .user_agent(concat!("clusterup/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = ureq::Agent::with_parts(config, DefaultConnector::default(), OncePerHost::default());
        Registries { agent, timeout, authorizations: Mutex::new(HashMap::new()), in_flight: Places::new(CONCURRENCY) }
    }

    /// The digest of each `(reference, credentials)`, several in flight,
    /// input order kept.
    pub fn digests(&self, lookups: &[(Reference, Option<DockerCredentials>)]) -> Vec<Result<String>> {
        let mut results: Vec<Option<Result<String>>> = lookups.iter().map(|_| None).collect();
        crate::at_once::for_each(
            lookups,
            CONCURRENCY,
            |(reference, creds)| self.digest(reference, creds.as_ref()),
            |i, result| results[i] = Some(result),
        );
        results.into_iter().map(|r| r.expect("every lookup ran")).collect()
    }

    fn digest(&self, reference: &Reference, creds: Option<&DockerCredentials>) -> Result<String> {
        let _in_flight = self.in_flight.take(&reference.registry);
        let target = reference.tag.as_deref().or(reference.digest.as_deref()).unwrap_or("latest");
        let url = format!("{}/v2/{}/manifests/{}", base_url(&reference.registry), reference.repository, target);
        let response = self.authorized("HEAD", reference, &url, creds)?;
        header(&response, "docker-content-digest")
            .filter(|d| d.starts_with("sha256:"))
            .ok_or_else(|| anyhow!("registry {} sent no digest for {url}", reference.registry))
    }

    /// `method` on `url` of `reference`'s repository, answering the
    /// registry's challenge once (and remembering what it took); any
    /// answer but 200 is an error.
    fn authorized(
        &self,
        method: &str,
        reference: &Reference,
        url: &str,
        creds: Option<&DockerCredentials>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let key = (reference.registry.clone(), reference.repository.clone());
        let cached = self.authorizations.lock().unwrap().get(&key).cloned();
        let mut response = self.request(method, url, cached.as_deref())?;
        if response.status() == 401 {
            let challenge = header(&response, "www-authenticate").unwrap_or_default();
            let authorization = self.authorize(&reference.registry, &reference.repository, &challenge, creds)?;
            response = self.request(method, url, Some(&authorization))?;
            if response.status() == 401 {
                bail!("registry {} refused the credentials", reference.registry);
            }
            self.authorizations.lock().unwrap().insert(key, authorization);
        }
        if response.status() != 200 {
            bail!("registry {} answered {} for {url}", reference.registry, response.status());
        }
        Ok(response)
    }

    /// Every tag of `reference`'s repository (`tags/list`, page by page as
    /// the registry's `Link` headers lead, at most `MAX_TAG_PAGES`).
    pub fn tags(&self, reference: &Reference, creds: Option<&DockerCredentials>) -> Result<Vec<String>> {
        let _in_flight = self.in_flight.take(&reference.registry);
        let base = base_url(&reference.registry);
        let mut url = format!("{base}/v2/{}/tags/list?n=1000", reference.repository);
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let mut response = self.authorized("GET", reference, &url, creds)?;
            let next = header(&response, "link").and_then(|l| next_page(&l));
            let page: serde_json::Value = response
                .body_mut()
                .with_config()
                .limit(CONFIG_LIMIT)
                .read_json()
                .with_context(|| format!("reading the tag list of {}", reference.repository))?;
            tags.extend(page["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(String::from)));
            match next {
                Some(next) if next.starts_with("http") => url = next,
                Some(next) => url = format!("{base}{next}"),
                None => return Ok(tags),
            }
        }
        bail!("registry {}: {} has more than {MAX_TAG_PAGES} pages of tags", reference.registry, reference.repository)
    }

    /// The config of the image `reference` names at `digest`, for this
    /// host's platform when it is an index: read from the registry (the
    /// manifest, then the config blob), nothing pulled.
    pub fn image_config(
        &self,
        reference: &Reference,
        digest: &str,
        creds: Option<&DockerCredentials>,
    ) -> Result<ImageConfig> {
        let _in_flight = self.in_flight.take(&reference.registry);
        let base = format!("{}/v2/{}", base_url(&reference.registry), reference.repository);
        let json = |path: String| -> Result<serde_json::Value> {
            let mut response = self.authorized("GET", reference, &format!("{base}/{path}"), creds)?;
            response
                .body_mut()
                .with_config()
                .limit(CONFIG_LIMIT)
                .read_json()
                .with_context(|| format!("reading {base}/{path}"))
        };
        let mut manifest = json(format!("manifests/{digest}"))?;
        if let Some(list) = manifest["manifests"].as_array() {
            let arch = platform_arch();
            let chosen = list
                .iter()
                .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
                .and_then(|m| m["digest"].as_str())
                .with_context(|| format!("{base}@{digest} has no linux/{arch} image"))?;
            manifest = json(format!("manifests/{chosen}"))?;
        }
        let config = manifest["config"]["digest"].as_str().with_context(|| format!("{base}@{digest}: no config"))?;
        let config = json(format!("blobs/{config}"))?;
        let labels = config["config"]["Labels"]
            .as_object()
            .map(|l| l.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
            .unwrap_or_default();
        Ok(ImageConfig { labels, created: config["created"].as_str().and_then(|c| c.parse().ok()) })
    }

    /// A registry that answers 429 is asked again after the wait its
    /// `Retry-After` names (seconds; a date or none: 1 s), at most
    /// `RATE_LIMIT_RETRIES` times, never past the request's timeout and
    /// not once a stop was asked for.
    fn request(
        &self,
        method: &str,
        url: &str,
        authorization: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let deadline = Instant::now() + self.timeout;
        let mut attempt = 0;
        loop {
            let request = match method {
                "GET" => self.agent.get(url),
                _ => self.agent.head(url),
            };
            let mut request = request.header("Accept", ACCEPT);
            if let Some(a) = authorization {
                request = request.header("Authorization", a);
            }
            // The error names the URL only: headers may carry credentials.
            let response = request.call().map_err(|e| anyhow!("{url}: {e}"))?;
            if response.status() != 429 || attempt == RATE_LIMIT_RETRIES {
                return Ok(response);
            }
            let wait = header(&response, "retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(Duration::from_secs(1), Duration::from_secs);
            if Instant::now() + wait > deadline {
                bail!(
                    "{url}: rate limited (429); the registry asks to wait {}, longer than timeouts.registry allows",
                    humantime::format_duration(wait)
                );
            }
            let until = Instant::now() + wait;
            while Instant::now() < until {
                if crate::signals::stop_requested() {
                    bail!("{url}: rate limited (429), and a stop was asked for while waiting");
                }
                std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
            }
            attempt += 1;
        }
    }

    /// The `Authorization` value a 401's challenge asks for.
    fn authorize(
        &self,
        registry: &str,
        repository: &str,
        challenge: &str,
        creds: Option<&DockerCredentials>,
    ) -> Result<String> {
        let basic = creds.and_then(|c| Some(basic(c.username.as_deref()?, c.password.as_deref()?)));
        let (scheme, params) = parse_challenge(challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                // Basic sends the password with every request: only over TLS or loopback.
                if !base_url(registry).starts_with("https://") && !is_loopback(registry) {
                    bail!("registry {registry} asks for Basic auth over plain HTTP");
                }
                basic.ok_or_else(|| anyhow!("registry {registry} requires credentials"))
            }
            "bearer" => {
                let realm =
                    params.get("realm").ok_or_else(|| anyhow!("registry {registry}: challenge without realm"))?;
                let basic = basic.filter(|_| credentials_may_go_to(registry, realm));
                if !realm.starts_with("https://") && !realm_is_loopback(realm) {
                    bail!("registry {registry} sends its token realm over plain HTTP");
                }
                let scope = format!("repository:{repository}:pull");
                let mut request = self.agent.get(realm.as_str()).query("scope", &scope);
                if let Some(service) = params.get("service") {
                    request = request.query("service", service);
                }
                if let Some(b) = &basic {
                    request = request.header("Authorization", b);
                }
                let mut response = request.call().map_err(|e| anyhow!("token from {realm}: {e}"))?;
                if response.status() != 200 {
                    bail!("registry {registry}: token service {realm} answered {}", response.status());
                }
                let token: Token =
                    response.body_mut().read_json().map_err(|e| anyhow!("token from {realm} unreadable: {e}"))?;
                let token = token.token.or(token.access_token).ok_or_else(|| anyhow!("no token from {realm}"))?;
                Ok(format!("Bearer {}", Secret::new(token).expose()))
            }
            _ => bail!("registry {registry}: unsupported auth challenge {scheme:?}"),
        }
    }
}

/// What an image's config says of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageConfig {
    pub labels: BTreeMap<String, String>,
    pub created: Option<jiff::Timestamp>,
}

const MAX_TAG_PAGES: usize = 50;

/// The `rel="next"` target of a `Link` header.
fn next_page(link: &str) -> Option<String> {
    link.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| {
        let start = part.find('<')? + 1;
        let end = part.find('>')?;
        Some(part.get(start..end)?.to_string())
    })
}

/// A manifest or config larger than this is not an image's.
const CONFIG_LIMIT: u64 = 4 << 20;

/// This host's architecture as image platforms name it.
fn platform_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[derive(Deserialize)]
struct Token {
    token: Option<String>,
    access_token: Option<String>,
}

fn header(response: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

pub fn basic(username: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")))
}

/// Docker talks plain HTTP to loopback registries unless told otherwise.
fn base_url(registry: &str) -> String {
    match registry {
        DOCKER_HUB => "https://registry-1.docker.io".to_string(),
        r if is_loopback(r) => format!("http://{r}"),
        r => format!("https://{r}"),
    }
}

fn is_loopback(host_port: &str) -> bool {
    crate::redact::is_loopback_host(crate::redact::host_of(host_port))
}

/// The realm's host, parsed as an HTTP client reads it: userinfo
/// (`http://[::1]@192.0.2.2/`) cannot pass for the host.
fn realm_host(realm: &str) -> Option<String> {
    let uri: Uri = realm.parse().ok()?;
    let host = uri.host()?;
    Some(host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase())
}

fn realm_is_loopback(realm: &str) -> bool {
    realm_host(realm).is_some_and(|h| crate::redact::is_loopback_host(&h))
}

/// A token service gets the registry's credentials only over TLS or when
/// it is the registry's own host: a hostile registry must not be able to
/// send them elsewhere in clear text.
fn credentials_may_go_to(registry: &str, realm: &str) -> bool {
    let Some(host) = realm_host(realm) else { return false };
    let registry_host = crate::redact::host_of(registry).to_ascii_lowercase();
    realm.starts_with("https://") || host == registry_host
}

/// `Bearer realm="...",service="...",scope="..."` into its scheme and
/// parameters.
fn parse_challenge(challenge: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = challenge.trim().split_once(' ').unwrap_or((challenge.trim(), ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => after.split_once(',').unwrap_or((after, "")),
        };
        params.insert(key, value.to_string());
        rest = tail.trim_start_matches(',').trim();
    }
    (scheme.to_string(), params)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn the_next_page_of_tags_comes_from_the_link_header() {
        let link = r#"</v2/acme/web/tags/list?last=1.4.2&n=1000>; rel="next""#;
        assert_eq!(next_page(link).as_deref(), Some("/v2/acme/web/tags/list?last=1.4.2&n=1000"));
        assert_eq!(next_page(r#"<https://r.example/v2/x/tags/list?last=a>; rel="prev""#), None);
    }

    #[test]
    fn challenges_parse_with_commas_inside_quotes() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "reg.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#).0, "Basic");
    }

    /// Issue 13, item 5: userinfo before the host cannot make a remote
    /// realm look like loopback, and credentials go only to the registry's
    /// own host or a TLS realm.
    #[test]
    fn realms_are_judged_by_their_real_host() {
        assert!(!realm_is_loopback("http://[::1]@192.0.2.2/token"));
        assert!(!realm_is_loopback("http://127.0.0.1@192.0.2.2/token"));
        assert!(realm_is_loopback("http://127.0.0.1:5550/token"));
        assert!(realm_is_loopback("http://[::1]:5550/token"));
        assert!(!credentials_may_go_to("127.0.0.1:5550", "http://[::1]@192.0.2.2/token"));
        assert!(credentials_may_go_to("127.0.0.1:5550", "http://127.0.0.1:9999/token"));
        assert!(credentials_may_go_to("reg.example", "https://auth.example/token"));
        assert!(!credentials_may_go_to("127.0.0.1:5550", "http://localhost.evil.example/token"));
    }

    /// A realm that hides a remote host behind userinfo is refused before
    /// anything is sent to it.
    #[test]
    fn a_disguised_realm_gets_nothing() {
        let registries = Registries::new(Duration::from_secs(5));
        let creds =
            DockerCredentials { username: Some("alice".into()), password: Some("pw".into()), ..Default::default() };
        let challenge = r#"Bearer realm="http://[::1]@192.0.2.2/token",service="reg""#;
        let err = registries.authorize("127.0.0.1:5550", "app", challenge, Some(&creds)).unwrap_err();
        assert!(err.to_string().contains("plain HTTP"), "{err}");
    }

    /// A registry that accepts and never answers costs the timeout.
    #[test]
    fn a_silent_registry_is_bounded() {
        let addr = format!("127.0.0.1:{}", crate::seams::silent_port());
        let registries = Registries::new(Duration::from_millis(800));
        let start = Instant::now();
        let err = registries.digest(&Reference::parse(&format!("{addr}/app:v1")), None).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}: {err}", start.elapsed());
    }

    #[test]
    fn loopback_registries_are_plain_http_and_others_tls() {
        assert_eq!(base_url("127.0.0.1:5550"), "http://127.0.0.1:5550");
        assert_eq!(base_url("localhost:5000"), "http://localhost:5000");
        assert_eq!(base_url("[::1]:5000"), "http://[::1]:5000");
        assert_eq!(base_url("ghcr.io"), "https://ghcr.io");
        assert_eq!(base_url("10.0.0.1:5000"), "https://10.0.0.1:5000");
        assert_eq!(base_url(DOCKER_HUB), "https://registry-1.docker.io");
    }

    /// A registry that asks for a bearer token from its own token service,
    /// as Docker Hub, GHCR and most hosted registries do; it records each
    /// request line and `Authorization` header.
    fn bearer_registry() -> (String, std::sync::Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let realm = format!("http://{addr}/token");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let log = log.clone();
                let realm = realm.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            break;
                        }
                        let request = line.trim().to_string();
                        let mut auth = String::new();
                        loop {
                            let mut h = String::new();
                            reader.read_line(&mut h).unwrap();
                            if h.trim().is_empty() {
                                break;
                            }
                            if let Some(v) = h.strip_prefix("authorization: ").or(h.strip_prefix("Authorization: ")) {
                                auth = v.trim().to_string();
                            }
                        }
                        log.lock().unwrap().push(format!("{request} [{auth}]"));
                        let reply = if request.starts_with("GET /token") {
                            assert_eq!(auth, basic("alice", "pw"));
                            assert!(request.contains("scope=repository%3Ateam%2Fapp%3Apull"), "{request}");
                            let body = r#"{"token":"t0k"}"#;
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len())
                        } else if auth == "Bearer t0k" {
                            "HTTP/1.1 200 OK\r\ndocker-content-digest: sha256:abc\r\ncontent-length: 0\r\n\r\n"
                                .to_string()
                        } else {
                            format!(
                                "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm=\"{realm}\",service=\"reg\"\r\ncontent-length: 0\r\n\r\n"
                            )
                        };
                        stream.write_all(reply.as_bytes()).unwrap();
                    }
                });
            }
        });
        (addr, seen)
    }

    #[test]
    fn bearer_tokens_are_fetched_once_per_repository_and_reused() {
        let (addr, seen) = bearer_registry();
        let registries = Registries::new(Duration::from_secs(20));
        let creds =
            DockerCredentials { username: Some("alice".into()), password: Some("pw".into()), ..Default::default() };
        let reference = Reference::parse(&format!("{addr}/team/app:v2"));
        for _ in 0..3 {
            assert_eq!(registries.digest(&reference, Some(&creds)).unwrap(), "sha256:abc");
        }
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.iter().filter(|r| r.starts_with("GET /token")).count(), 1, "{seen:#?}");
        assert_eq!(seen.iter().filter(|r| r.starts_with("HEAD /v2/team/app/manifests/v2")).count(), 4, "{seen:#?}");
    }

    /// Stacks checked at once share each registry's lookups in flight.
    #[test]
    fn lookups_in_flight_are_capped_per_registry_across_callers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let counts = std::sync::Arc::new(Mutex::new((0usize, 0usize)));
        let shared = counts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let (mut stream, counts) = (stream.unwrap(), shared.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 {
                        while reader.read_line(&mut line).unwrap_or(0) > 2 {
                            line.clear();
                        }
                        line.clear();
                        {
                            let mut c = counts.lock().unwrap();
                            c.0 += 1;
                            c.1 = c.1.max(c.0);
                        }
                        std::thread::sleep(Duration::from_millis(30));
                        counts.lock().unwrap().0 -= 1;
                        let reply = "HTTP/1.1 200 OK\r\ndocker-content-digest: sha256:abc\r\ncontent-length: 0\r\n\r\n";
                        if stream.write_all(reply.as_bytes()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let registries = Registries::new(Duration::from_secs(20));
        let lookups: Vec<(Reference, Option<DockerCredentials>)> =
            (0..12).map(|i| (Reference::parse(&format!("{addr}/app{i}:v1")), None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| assert!(registries.digests(&lookups).iter().all(|r| r.is_ok())));
            }
        });
        let most = counts.lock().unwrap().1;
        assert!((2..=CONCURRENCY).contains(&most), "at most {CONCURRENCY} in flight, and more than one: {most}");
    }

    /// A registry stand-in that answers each HEAD in turn with the next
    /// of `replies` (the last one repeats), recording when each came.
    fn scripted_registry(replies: &'static [&'static str]) -> (String, std::sync::Arc<Mutex<Vec<Instant>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    while reader.read_line(&mut line).unwrap_or(0) > 2 {
                        line.clear();
                    }
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(Instant::now());
                        log.len()
                    };
                    let reply = replies[(n - 1).min(replies.len() - 1)];
                    if stream.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            }
        });
        (addr, seen)
    }

    const LIMITED: &str = "HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n";
    const FOUND: &str = "HTTP/1.1 200 OK\r\ndocker-content-digest: sha256:abc\r\ncontent-length: 0\r\n\r\n";

    #[test]
    fn a_rate_limited_lookup_waits_as_asked_and_tries_again() {
        let (addr, seen) = scripted_registry(&[LIMITED, FOUND]);
        let registries = Registries::new(Duration::from_secs(20));
        let digest = registries.digest(&Reference::parse(&format!("{addr}/app:v1")), None).unwrap();
        assert_eq!(digest, "sha256:abc");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen[1] - seen[0] >= Duration::from_secs(1), "waited the Retry-After: {:?}", seen[1] - seen[0]);
    }

    #[test]
    fn rate_limits_are_bounded_and_reported() {
        let (addr, seen) = scripted_registry(&[LIMITED]);
        let registries = Registries::new(Duration::from_secs(20));
        let err = registries.digest(&Reference::parse(&format!("{addr}/app:v1")), None).unwrap_err().to_string();
        assert!(err.contains("429"), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 1 + RATE_LIMIT_RETRIES, "asked again twice, then gave up");

        const FOR_AN_HOUR: &str = "HTTP/1.1 429 Too Many Requests\r\nretry-after: 3600\r\ncontent-length: 0\r\n\r\n";
        let (addr, seen) = scripted_registry(&[FOR_AN_HOUR]);
        let err = registries.digest(&Reference::parse(&format!("{addr}/app:v1")), None).unwrap_err().to_string();
        assert!(err.contains("rate limited (429)") && err.contains("1h"), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 1, "a wait past the timeout is not waited");
    }

    #[test]
    fn a_registry_without_the_manifest_is_an_error_naming_it() {
        let registries = Registries::new(Duration::from_secs(20));
        let (addr, _) = scripted_registry(&["HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"]);
        let err = registries.digest(&Reference::parse(&format!("{addr}/app:v9")), None).unwrap_err().to_string();
        assert!(err.contains(&addr) && err.contains("404"), "{err}");
    }
}
