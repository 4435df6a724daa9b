//! Registry credentials from the Docker CLI's configuration, so a host that
//! can `docker pull` needs no second copy of its secrets. Credentials go to
//! the registry (digest lookups) or the engine (pulls) per request and are
//! never printed or journaled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde::Deserialize;

use crate::redact::Secret;
use crate::reference::DOCKER_HUB;

#[derive(Debug, Default, Deserialize)]
struct CliConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

pub struct Credentials {
    config: CliConfig,
    source: PathBuf,
    helper_timeout: Duration,
}

impl Credentials {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; a missing
    /// file means anonymous access, as for the Docker CLI.
    pub fn load(helper_timeout: Duration) -> Result<Credentials> {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .unwrap_or_else(|| PathBuf::from("/root/.docker"));
        Credentials::from_dir(&dir, helper_timeout)
    }

    fn from_dir(dir: &Path, helper_timeout: Duration) -> Result<Credentials> {
        let source = dir.join("config.json");
        let config = match std::fs::read_to_string(&source) {
            // serde quotes the value it choked on, and this file holds
            // passwords: say where, not what.
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "reading Docker CLI configuration {}: not what the Docker CLI writes at line {} column {}",
                    source.display(),
                    e.line(),
                    e.column()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CliConfig::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", source.display())),
        };
        Ok(Credentials { config, source, helper_timeout })
    }

    pub fn source(&self) -> &std::path::Path {
        &self.source
    }

    /// The registry's credentials; each secret in them is registered, so
    /// no message that happens to carry it is printed or sent.
    pub fn for_registry(&self, registry: &str) -> Result<Option<DockerCredentials>> {
        let found = self.lookup(registry)?;
        for secret in found.iter().flat_map(|c| [&c.password, &c.identitytoken, &c.auth, &c.registrytoken]).flatten() {
            Secret::new(secret.as_str());
        }
        Ok(found)
    }

    fn lookup(&self, registry: &str) -> Result<Option<DockerCredentials>> {
        let helper = |name: &str| {
            let program = PathBuf::from(format!("docker-credential-{name}"));
            helper_get(&program, &server_key(registry), self.helper_timeout)
        };
        if let Some(name) = self.config.cred_helpers.get(registry) {
            return helper(name);
        }
        if let Some(entry) = self.config.auths.iter().find(|(k, _)| normalize(k) == registry).map(|(_, v)| v) {
            let from_auth = entry.auth.as_deref().map(decode_auth).transpose()?;
            let (username, password) = match from_auth {
                Some((u, p)) => (Some(u), Some(p)),
                None => (entry.username.clone(), entry.password.clone()),
            };
            if username.is_some() || entry.identitytoken.is_some() {
                return Ok(Some(DockerCredentials {
                    username,
                    password,
                    identitytoken: entry.identitytoken.clone(),
                    serveraddress: Some(server_key(registry)),
                    ..Default::default()
                }));
            }
        }
        match &self.config.creds_store {
            Some(store) => helper(store),
            None => Ok(None),
        }
    }
}

/// The key the Docker CLI files a registry under.
fn server_key(registry: &str) -> String {
    if registry == DOCKER_HUB { "https://index.docker.io/v1/".to_string() } else { registry.to_string() }
}

fn normalize(key: &str) -> String {
    let host = key.trim_start_matches("https://").trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        other => other.to_string(),
    }
}

fn decode_auth(auth: &str) -> Result<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .context("an `auth` entry in the Docker CLI configuration is not valid base64")?;
    let text = String::from_utf8(bytes).context("an `auth` entry is not UTF-8")?;
    match text.split_once(':') {
        Some((u, p)) => Ok((u.to_string(), p.to_string())),
        None => bail!("an `auth` entry in the Docker CLI configuration is not `user:password`"),
    }
}

/// Asks `docker-credential-<helper> get`, the protocol the Docker CLI
/// uses, within `timeout`: a helper waiting on a locked keyring or a
/// dead D-Bus would otherwise hang the run.
fn helper_get(program: &Path, server: &str, timeout: Duration) -> Result<Option<DockerCredentials>> {
    let shown = program.display();
    let out = super::process::run(Command::new(program).arg("get"), Some(server.as_bytes()), timeout, 1 << 20)
        .with_context(|| format!("credential helper {shown} for {server}"))?;
    if !out.status.success() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        bail!("credential helper {shown} failed for {server} ({})", out.status);
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("credential helper {shown} gave unreadable output (column {})", e.column()))?;
    // The helper protocol marks identity tokens with this user name.
    let token = reply.username == "<token>";
    Ok(Some(DockerCredentials {
        username: (!token).then_some(reply.username),
        password: (!token).then(|| reply.secret.clone()),
        identitytoken: token.then_some(reply.secret),
        serveraddress: Some(server.to_string()),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(json: &str) -> Credentials {
        Credentials {
            config: serde_json::from_str(json).unwrap(),
            source: PathBuf::from("/x"),
            helper_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn auth_entries_are_found_by_host_in_any_spelling() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let c = creds(&format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"http://127.0.0.1:5001":{{"username":"bob","password":"pw"}}}}}}"#
        ));
        let hub = c.for_registry(DOCKER_HUB).unwrap().unwrap();
        assert_eq!(hub.username.as_deref(), Some("alice"));
        assert_eq!(hub.password.as_deref(), Some("s3cret"));
        let local = c.for_registry("127.0.0.1:5001").unwrap().unwrap();
        assert_eq!(local.username.as_deref(), Some("bob"));
        assert!(c.for_registry("127.0.0.1:5000").unwrap().is_none());
    }

    #[test]
    fn malformed_auth_is_an_error_without_the_secret() {
        let c = creds(r#"{"auths":{"r.example":{"auth":"not base64!"}}}"#);
        let err = format!("{:#}", c.for_registry("r.example").unwrap_err());
        assert!(!err.contains("not base64!"), "{err}");
    }

    /// `docker-credential-<name>` in `dir`, running `script`.
    fn helper_script(dir: &std::path::Path, name: &str, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let helper = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&helper, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        helper
    }

    /// A helper that never answers costs the timeout, names itself, and
    /// leaves nothing running (issue 13, item 10).
    #[test]
    fn a_hanging_helper_is_bounded_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let helper = helper_script(dir.path(), "stuck", "sleep 60");
        let start = std::time::Instant::now();
        let err = helper_get(&helper, "r.example", Duration::from_millis(500)).unwrap_err();
        let err = format!("{err:#}");
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        assert!(err.contains("docker-credential-stuck") && err.contains("did not finish"), "{err}");
    }

    /// A file the parser chokes on is reported by position: serde would
    /// quote the value, and this file holds passwords.
    #[test]
    fn an_unreadable_docker_config_is_not_quoted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), r#"{"auths":{"reg":"dXNlcjpTM2NyZXQ="}}"#).unwrap();
        let err = Credentials::from_dir(dir.path(), Duration::from_secs(1)).err().map(|e| format!("{e:#}")).unwrap();
        assert!(err.contains("line 1 column") && !err.contains("dXNlcjpTM2NyZXQ="), "{err}");
    }

    /// A helper's reply that does not parse is not quoted back.
    #[test]
    fn an_unreadable_helper_reply_is_not_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let helper = helper_script(dir.path(), "odd", "echo '\"ghp_Helper-Secret-Value\"'");
        let err = format!("{:#}", helper_get(&helper, "r.example", Duration::from_secs(5)).unwrap_err());
        assert!(err.contains("unreadable output") && !err.contains("Helper-Secret-Value"), "{err}");
    }

    #[test]
    fn found_passwords_are_never_printed() {
        let auth = base64::engine::general_purpose::STANDARD.encode("carol:Regi5try-Passw0rd");
        let c = creds(&format!(r#"{{"auths":{{"r.example":{{"auth":"{auth}"}}}}}}"#));
        c.for_registry("r.example").unwrap();
        assert_eq!(crate::redact::scrub("denied: Regi5try-Passw0rd"), "denied: <redacted>");
    }
}
