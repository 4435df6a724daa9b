//! Who may call the API and the webhooks: bearer tokens with a scope, and
//! the secrets push webhooks are signed with. They come from a file of
//! their own or the environment, never from the main configuration (which
//! many people may read), and every value is registered for redaction.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hmac::{Mac, SimpleHmac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::exit::usage;
use crate::redact::Secret;

/// Shorter tokens can be guessed within the rate limit's patience.
const MIN_TOKEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Status, history, versions, operations, and `check` (which changes
    /// nothing).
    Read,
    /// Everything `read` may, and apply, pause, resume and roll back.
    Operate,
}

struct Token {
    name: String,
    scope: Scope,
    /// SHA-256 of the value: every comparison takes the same time whatever
    /// the lengths.
    hash: [u8; 32],
}

/// The tokens and webhook secrets `serve` accepts.
#[derive(Default)]
pub struct Credentials {
    tokens: Vec<Token>,
    /// Per stack name; `*` for every stack.
    github: BTreeMap<String, Secret>,
    image: Option<Secret>,
    /// Other hosts' `serve` for the fleet view, with their read tokens.
    peers: Vec<super::fleet::Peer>,
}

/// A caller the API knows: the token's name, for the journal and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
}

impl Credentials {
    /// `file` (`--credentials`), then the environment's
    /// `CLUSTERUP_READ_TOKEN`, `CLUSTERUP_OPERATE_TOKEN`,
    /// `CLUSTERUP_GITHUB_SECRET` and `CLUSTERUP_IMAGE_HOOK_SECRET`.
    pub fn load(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Credentials> {
        let mut creds = Credentials::default();
        if let Some(path) = file {
            let text = read_private(path)?;
            creds.parse(&text).with_context(|| format!("reading credentials {}", path.display()))?;
        }
        for (var, name, scope) in [
            ("CLUSTERUP_READ_TOKEN", "env-read", Scope::Read),
            ("CLUSTERUP_OPERATE_TOKEN", "env-operate", Scope::Operate),
        ] {
            if let Some(value) = env(var).filter(|v| !v.is_empty()) {
                creds.add_token(name, scope, value).with_context(|| format!("${var}"))?;
            }
        }
        if let Some(value) = env("CLUSTERUP_GITHUB_SECRET").filter(|v| !v.is_empty()) {
            creds.github.insert("*".into(), Secret::new(value));
        }
        if let Some(value) = env("CLUSTERUP_IMAGE_HOOK_SECRET").filter(|v| !v.is_empty()) {
            creds.image = Some(Secret::new(value));
        }
        Ok(creds)
    }

    fn parse(&mut self, text: &str) -> Result<()> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = || format!("line {}", n + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["token", name, scope, value] => {
                    let scope = match *scope {
                        "read" => Scope::Read,
                        "operate" => Scope::Operate,
                        other => bail!("{}: scope {other:?}: read or operate", at()),
                    };
                    self.add_token(name, scope, value.to_string()).with_context(at)?;
                }
                ["github", stack, value] => {
                    self.github.insert(stack.to_string(), Secret::new(*value));
                }
                ["image", value] => self.image = Some(Secret::new(*value)),
                ["peer", name, url, token] => {
                    let host = url.strip_prefix("http://").map(|rest| rest.split('/').next().unwrap_or(rest));
                    if !url.starts_with("https://")
                        && !host.is_some_and(|h| crate::redact::is_loopback_host(crate::redact::host_of(h)))
                    {
                        bail!(
                            "{}: peer {name}: {url} must be https (its read token would cross the network in the clear)",
                            at()
                        );
                    }
                    let peer =
                        super::fleet::Peer { name: name.to_string(), url: url.to_string(), token: Secret::new(*token) };
                    self.peers.push(peer);
                }
                _ => bail!(
                    "{}: expected `token NAME read|operate VALUE`, `github STACK|* SECRET`, `image SECRET` or `peer NAME URL TOKEN`",
                    at()
                ),
            }
        }
        Ok(())
    }

    fn add_token(&mut self, name: &str, scope: Scope, value: String) -> Result<()> {
        if value.chars().count() < MIN_TOKEN {
            bail!("token {name}: at least {MIN_TOKEN} characters (for example `openssl rand -hex 32`)");
        }
        let hash = Sha256::digest(Secret::new(value).expose().as_bytes()).into();
        self.tokens.push(Token { name: name.to_string(), scope, hash });
        Ok(())
    }

    #[cfg(test)]
    pub fn add_test_token(&mut self, name: &str, scope: Scope, value: &str) {
        self.add_token(name, scope, value.to_string()).expect("a long enough token");
    }

    /// The peers, for the fleet view (they leave the credentials here).
    pub fn take_peers(&mut self) -> Vec<super::fleet::Peer> {
        std::mem::take(&mut self.peers)
    }

    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The caller an `Authorization: Bearer …` header names, if any. Every
    /// token is compared, in constant time, whichever matches.
    pub fn caller(&self, authorization: Option<&str>) -> Option<Caller> {
        let presented = authorization?.strip_prefix("Bearer ")?.trim();
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.hash.ct_eq(&hash)) {
                found = Some(Caller { name: token.name.clone(), scope: token.scope });
            }
        }
        found
    }

    /// The secret GitHub deliveries for `stack` are signed with.
    pub fn github_secret(&self, stack: &str) -> Option<&Secret> {
        self.github.get(stack).or_else(|| self.github.get("*"))
    }

    pub fn image_secret(&self) -> Option<&Secret> {
        self.image.as_ref()
    }
}

/// A credentials file must be the operator's alone.
fn read_private(path: &Path) -> Result<String> {
    refuse_shared(path).map_err(|e| usage(format!("credentials {}: {e}", path.display())))?;
    std::fs::read_to_string(path).with_context(|| format!("reading credentials {}", path.display()))
}

/// A file of secrets (credentials, a TLS key) must be owned by root or
/// this user, and neither readable nor writable by anyone else.
pub fn refuse_shared(path: &Path) -> std::result::Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.uid() != 0 && meta.uid() != crate::trust::me() {
        return Err(format!("owned by uid {}; it must belong to root or the user clusterup runs as", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!("mode {:o} lets others read it; `chmod 600 {}`", meta.mode() & 0o7777, path.display()));
    }
    Ok(())
}

/// Whether `signature` (`sha256=<hex>`, as GitHub's
/// `X-Hub-Signature-256`) is the HMAC-SHA256 of `body` under `secret`.
pub fn signed(secret: &Secret, body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.strip_prefix("sha256=") else { return false };
    let Some(expected) = from_hex(hex) else { return false };
    let mut mac = SimpleHmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("any key length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// `sha256=<hex>` of `body` under `secret`: what a sender puts in the
/// signature header.
#[cfg(test)]
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = SimpleHmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", crate::redact::hex(&bytes))
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// Failed attempts per address: after `LIMIT` within `WINDOW`, the address
/// is refused until the window has passed, so a token cannot be guessed
/// at network speed.
#[derive(Default)]
pub struct Limiter {
    failures: BTreeMap<IpAddr, (Instant, u32)>,
}

const LIMIT: u32 = 30;
const WINDOW: Duration = Duration::from_secs(60);

impl Limiter {
    /// None: go ahead. Some: refused for this long.
    pub fn refused(&mut self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let (since, count) = *self.failures.get(&addr)?;
        let left = WINDOW.checked_sub(now.duration_since(since)).filter(|l| !l.is_zero())?;
        (count >= LIMIT).then_some(left)
    }

    pub fn failed(&mut self, addr: IpAddr, now: Instant) {
        self.failures.retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
        let entry = self.failures.entry(addr).or_insert((now, 0));
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(text: &str) -> Credentials {
        let mut c = Credentials::default();
        c.parse(text).unwrap();
        c
    }

    #[test]
    fn a_token_names_its_caller_and_scope_and_nothing_else_does() {
        let c = creds("# comment\ntoken dash read aaaaaaaaaaaaaaaaaaaa\ntoken ci operate bbbbbbbbbbbbbbbbbbbb\n");
        assert_eq!(
            c.caller(Some("Bearer aaaaaaaaaaaaaaaaaaaa")),
            Some(Caller { name: "dash".into(), scope: Scope::Read })
        );
        assert_eq!(c.caller(Some("Bearer bbbbbbbbbbbbbbbbbbbb")).unwrap().scope, Scope::Operate);
        assert_eq!(c.caller(Some("Bearer aaaaaaaaaaaaaaaaaaab")), None);
        assert_eq!(c.caller(Some("aaaaaaaaaaaaaaaaaaaa")), None, "only as a bearer token");
        assert_eq!(c.caller(Some("Bearer ")), None);
        assert_eq!(c.caller(None), None);
    }

    #[test]
    fn peers_need_https_off_this_host() {
        let mut c = creds(
            "peer b http://127.0.0.1:8090 aaaaaaaaaaaaaaaaaaaa\npeer c https://c.example:8090/ bbbbbbbbbbbbbbbbbbbb\n",
        );
        assert_eq!(c.take_peers().iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        let e = Credentials::default().parse("peer d http://d.example:8090 aaaaaaaaaaaaaaaaaaaa\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 1: peer d: http://d.example:8090 must be https"), "{e:#}");
    }

    #[test]
    fn bad_lines_and_short_tokens_are_refused_with_their_line() {
        let mut c = Credentials::default();
        let e = c.parse("\ntoken x admin aaaaaaaaaaaaaaaaaaaa\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2: scope \"admin\""), "{e:#}");
        let e = c.parse("token x read short\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 1: token x: at least 16 characters"), "{e:#}");
        let e = c.parse("tokens x read aaaaaaaaaaaaaaaaaaaaa\n").unwrap_err();
        assert!(format!("{e:#}").contains("expected `token NAME"), "{e:#}");
    }

    #[test]
    fn a_credentials_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        std::fs::write(&path, "token a read aaaaaaaaaaaaaaaaaaaa\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Credentials::load(Some(&path), &|_| None).err().unwrap();
        assert!(format!("{e:#}").contains("lets others read it"), "{e:#}");
        assert!(e.downcast_ref::<crate::exit::UsageError>().is_some());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Credentials::load(Some(&path), &|_| None).unwrap().has_tokens());
    }

    #[test]
    fn github_signatures_are_checked_against_the_stacks_secret() {
        let c = creds("github shop s3cr3t-shop\ngithub * s3cr3t-any\n");
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign("s3cr3t-shop", body);
        assert!(signed(c.github_secret("shop").unwrap(), body, &good));
        assert!(!signed(c.github_secret("shop").unwrap(), b"{}", &good), "another body");
        assert!(!signed(c.github_secret("other").unwrap(), body, &good), "another stack's secret");
        assert!(signed(c.github_secret("other").unwrap(), body, &sign("s3cr3t-any", body)));
        assert!(!signed(c.github_secret("shop").unwrap(), body, good.trim_start_matches("sha256=")));
        assert!(!signed(c.github_secret("shop").unwrap(), body, "sha256=zz"));
    }

    #[test]
    fn an_address_that_keeps_failing_waits_out_the_window() {
        let mut l = Limiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t = Instant::now();
        for _ in 0..LIMIT {
            assert_eq!(l.refused(a, t), None);
            l.failed(a, t);
        }
        assert!(l.refused(a, t).is_some());
        assert_eq!(l.refused(b, t), None, "other addresses are not affected");
        assert_eq!(l.refused(a, t + WINDOW), None, "the window passes");
    }
}
