//! Everything that may be a secret passes through here, once.
//!
//! Credentials (registry passwords and tokens, git tokens and URL
//! passwords, webhook URLs, GitHub tokens) are held as [`Secret`] or
//! [`SecretUrl`]; making one registers its value, and every sink — the
//! printer, `--json`, the journal and state files, notification bodies —
//! passes its text through [`scrub`]. Values of the stack's environment
//! (`.env`, `environment:`, `env_file`) are registered too, but scrubbed
//! only from messages of external programs ([`external`]): compose, git,
//! hooks and registries echo them (`invalid hostPort: hunter2`), while
//! clusterup's own output names images and tags that may equal them.

use std::fmt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

const SHOWN: &str = "<redacted>";

static CREDENTIALS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static ENV_VALUES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Shorter values are words, not secrets: scrubbing them would garble
/// every message (a stack named after a weak password) and protect
/// little. Userinfo is stripped from URLs whatever its length.
const MIN_CREDENTIAL: usize = 6;
const MIN_ENV_VALUE: usize = 4;

fn remember(list: &Mutex<Vec<String>>, value: &str, min: usize) {
    let value = value.trim();
    if value.chars().count() < min {
        return;
    }
    let mut known = list.lock().unwrap_or_else(|e| e.into_inner());
    if !known.iter().any(|k| k == value) {
        known.push(value.to_string());
        // Longest first, so a secret containing another goes whole.
        known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

/// A credential: printed as `<redacted>`, never in `Debug` either.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        let value = value.into();
        remember(&CREDENTIALS, &value, MIN_CREDENTIAL);
        Secret(value)
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SHOWN)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SHOWN)
    }
}

/// A URL that may carry credentials. Shown without its userinfo; a
/// webhook URL (whose path is the credential) as scheme and host only.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    full: String,
    shown: String,
}

impl SecretUrl {
    /// A git remote: `https://user:token@host/repo.git` shows as
    /// `https://host/repo.git`.
    pub fn git(url: &str) -> SecretUrl {
        let parts = UrlParts::of(url);
        // A user name alone (`https://org@dev.azure.com/...`) is not a
        // secret, and may well be the name of a service or an image.
        if let Some((_, password)) = parts.userinfo.and_then(|u| u.split_once(':')) {
            remember(&CREDENTIALS, password, MIN_CREDENTIAL);
            remember(&CREDENTIALS, &percent_decode(password), MIN_CREDENTIAL);
        }
        SecretUrl { full: url.to_string(), shown: strip_userinfo(url) }
    }

    /// A webhook or API URL: the whole URL is the secret.
    pub fn webhook(url: &str) -> SecretUrl {
        remember(&CREDENTIALS, url, MIN_CREDENTIAL);
        let parts = UrlParts::of(url);
        if parts.rest.len() > 1 {
            remember(&CREDENTIALS, parts.rest, 8);
        }
        if let Some((_, password)) = parts.userinfo.and_then(|u| u.split_once(':')) {
            remember(&CREDENTIALS, password, MIN_CREDENTIAL);
        }
        let shown = match parts.scheme {
            Some(scheme) => format!("{scheme}://{}", parts.host_port),
            None => SHOWN.to_string(),
        };
        SecretUrl { full: url.to_string(), shown }
    }

    /// A URL that is not itself a secret (an API base): shown whole, less
    /// any userinfo.
    pub fn public(url: &str) -> SecretUrl {
        SecretUrl { full: url.to_string(), shown: strip_userinfo(url) }
    }

    pub fn expose(&self) -> &str {
        &self.full
    }

    pub fn scheme(&self) -> Option<&str> {
        UrlParts::of(&self.full).scheme
    }

    /// The host, without port or brackets.
    pub fn host(&self) -> &str {
        host_of(UrlParts::of(&self.full).host_port)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown)
    }
}

/// `scheme://userinfo@host:port/rest`, split without judging.
struct UrlParts<'a> {
    scheme: Option<&'a str>,
    userinfo: Option<&'a str>,
    host_port: &'a str,
    rest: &'a str,
}

impl<'a> UrlParts<'a> {
    fn of(url: &'a str) -> UrlParts<'a> {
        let Some((scheme, after)) = url.split_once("://") else {
            return UrlParts { scheme: None, userinfo: None, host_port: "", rest: url };
        };
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(end);
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        UrlParts { scheme: Some(scheme), userinfo, host_port, rest }
    }
}

/// `host:port`, `[v6]:port` or `host` to the host alone.
pub fn host_of(host_port: &str) -> &str {
    if let Some(rest) = host_port.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host_port.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host_port,
    }
}

/// `localhost` or a loopback address: traffic that never leaves the host.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every `scheme://userinfo@` in `text` loses its userinfo, whether or
/// not clusterup knew the URL (a submodule's, one in a git message).
fn strip_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, after) = rest.split_at(i + 3);
        out.push_str(head);
        let end = after.find(|c: char| c == '/' || c.is_whitespace() || "\"'<>`?#".contains(c)).unwrap_or(after.len());
        match after[..end].rfind('@') {
            Some(at) => rest = &after[at + 1..],
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

fn replace_known(text: &str, list: &Mutex<Vec<String>>) -> String {
    let known = list.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for value in known.iter() {
        if out.contains(value.as_str()) {
            out = out.replace(value.as_str(), SHOWN);
        }
    }
    out
}

/// Text on its way out of clusterup: no credential, no URL userinfo.
pub fn scrub(text: &str) -> String {
    replace_known(&strip_userinfo(text), &CREDENTIALS)
}

/// A message from an external program (compose, git, a hook, a registry,
/// the engine): `scrub`, and no value of the stack's environment either.
pub fn external(text: &str) -> String {
    replace_known(&scrub(text), &ENV_VALUES)
}

/// `scrub` for every string value in a JSON document. Keys are names
/// (services, fields) that other records are matched by: never changed.
pub fn scrub_json(value: &mut Value) {
    match value {
        Value::String(s) => *s = scrub(s),
        Value::Array(items) => items.iter_mut().for_each(scrub_json),
        Value::Object(map) => map.values_mut().for_each(scrub_json),
        _ => {}
    }
}

/// A value of the stack's environment: kept out of external messages,
/// as written and as Go and JSON quote it (`"pa\"ss"`). Values that are
/// words every message uses (`latest`, `true`, a port) are not secrets.
pub fn register_env_value(value: &str) {
    let value = value.trim();
    let word = ["true", "false", "yes", "no", "on", "off", "null", "none", "latest"]
        .iter()
        .any(|w| value.eq_ignore_ascii_case(w));
    let port = value.len() <= 5 && value.chars().all(|c| c.is_ascii_digit());
    if word || port {
        return;
    }
    remember(&ENV_VALUES, value, MIN_ENV_VALUE);
    let quoted = serde_json::to_string(value).unwrap_or_default();
    let escaped = &quoted[1..quoted.len().saturating_sub(1).max(1)];
    if escaped != value {
        remember(&ENV_VALUES, escaped, MIN_ENV_VALUE);
    }
}

/// Every value of a dotenv file (`.env`, an `env_file`), if it exists.
pub fn register_env_file(path: &Path) {
    if let Ok(text) = std::fs::read_to_string(path) {
        for (_, value) in parse_dotenv(&text) {
            register_env_value(&value);
        }
    }
}

/// The variables of a dotenv file as Compose reads it: `KEY=value`,
/// `export KEY=value`, single- or double-quoted values that may span
/// lines, `#` comments.
pub fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else { continue };
        let value = value.trim_start();
        let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'');
        let value = match quote {
            Some(q) => {
                let mut body = value[1..].to_string();
                while !body.contains(q) {
                    match lines.next() {
                        Some(next) => {
                            body.push('\n');
                            body.push_str(next);
                        }
                        None => break,
                    }
                }
                body.split(q).next().unwrap_or_default().to_string()
            }
            None => value.split(" #").next().unwrap_or_default().trim_end().to_string(),
        };
        out.push((key.trim().to_string(), value));
    }
    out
}

/// Text for a terminal: control characters (escape sequences, carriage
/// returns, backspaces) from image names, service names or registry
/// messages are shown escaped, never acted on. Newlines and tabs stay.
pub fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

static KEY: OnceLock<[u8; 32]> = OnceLock::new();

const KEY_FILE: &str = "fingerprint.key";

/// Loads (or creates, 0600) the host's fingerprint key in the state dir
/// root. Without one a fingerprint could be checked against guesses
/// offline. Where the file cannot be had, a key for this run only: the
/// fingerprints then change between runs, and still confirm nothing.
pub fn init_fingerprint_key(root: &Path) {
    KEY.get_or_init(|| crate::files::host_key(&root.join(KEY_FILE), random_key).unwrap_or_else(|_| random_key()));
}

pub fn random_key() -> [u8; 32] {
    use std::io::Read;
    let mut key = [0u8; 32];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key)).is_err() {
        // No /dev/urandom: the clock and the process still vary per run.
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        key.copy_from_slice(&sha2_of(seed.as_bytes()));
    }
    key
}

fn sha2_of(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Enough to see that a value changed, nothing to recover or confirm it
/// from: HMAC-SHA256 under the host's key, 48 bits shown.
pub fn fingerprint(value: &str) -> String {
    use hmac::{Mac, SimpleHmac};
    let key = KEY.get_or_init(random_key);
    let mut mac = SimpleHmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(value.trim().as_bytes());
    let tag = mac.finalize().into_bytes();
    format!("<redacted #{}>", hex(&tag[..6]))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls_lose_their_userinfo_everywhere() {
        let url = SecretUrl::git("https://deploy:T0ken-git-1@git.example/team/repo.git");
        assert_eq!(url.to_string(), "https://git.example/team/repo.git");
        assert_eq!(format!("{url:?}"), "\"https://git.example/team/repo.git\"");
        assert_eq!(url.host(), "git.example");
        let message = "fetching from https://deploy:T0ken-git-1@git.example/team/repo.git: 401 (token T0ken-git-1)";
        let clean = scrub(message);
        assert!(!clean.contains("T0ken-git-1") && !clean.contains("deploy"), "{clean}");
        assert!(clean.contains("https://git.example/team/repo.git"), "{clean}");
        // A URL clusterup never saw (a submodule's) loses its userinfo too.
        assert_eq!(scrub("see http://u:p@[::1]:8080/x and ssh://git@h/r"), "see http://[::1]:8080/x and ssh://h/r");
    }

    #[test]
    fn webhook_urls_show_scheme_and_host_only() {
        let url = SecretUrl::webhook("https://hooks.slack.example:8443/services/T00/B00/XXXXsecretXXXX");
        assert_eq!(url.to_string(), "https://hooks.slack.example:8443");
        assert_eq!(url.host(), "hooks.slack.example");
        assert!(!scrub("POST /services/T00/B00/XXXXsecretXXXX failed").contains("XXXXsecretXXXX"));
    }

    #[test]
    fn secrets_never_show_in_debug_or_display() {
        let s = Secret::new("hunter2-credential");
        assert_eq!(format!("{s} {s:?}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2-credential");
        assert_eq!(scrub("password hunter2-credential rejected"), "password <redacted> rejected");
    }

    #[test]
    fn environment_values_are_scrubbed_from_external_messages_only() {
        register_env_value("s3cr3t-port-value");
        let compose = "invalid hostPort: s3cr3t-port-value";
        assert_eq!(external(compose), "invalid hostPort: <redacted>");
        assert_eq!(scrub("image r/web:s3cr3t-port-value"), "image r/web:s3cr3t-port-value");
    }

    #[test]
    fn a_user_name_alone_is_no_secret_and_keys_are_never_changed() {
        SecretUrl::git("https://contoso@dev.azure.com/contoso/_git/ops");
        assert_eq!(scrub("service contoso-web"), "service contoso-web");
        let secret = Secret::new("journal-key-secret");
        let mut doc = serde_json::json!({"journal-key-secret": "x journal-key-secret"});
        scrub_json(&mut doc);
        assert_eq!(doc, serde_json::json!({"journal-key-secret": "x <redacted>"}));
        drop(secret);
        register_env_value("latest");
        register_env_value("8080");
        register_env_value("pa\"ss\\word");
        assert_eq!(external("image app:latest on 8080"), "image app:latest on 8080");
        assert_eq!(external("bad value \"pa\\\"ss\\\\word\""), "bad value \"<redacted>\"");
    }

    #[test]
    fn dotenv_values_including_multi_line_quotes() {
        let text = "# c\nA=1\nexport B = two # note\nC=\"line one\nline two\"\nD='x=y'\nnot a var\n";
        let vars = parse_dotenv(text);
        assert_eq!(
            vars,
            [
                ("A".to_string(), "1".to_string()),
                ("B".into(), "two".into()),
                ("C".into(), "line one\nline two".into()),
                ("D".into(), "x=y".into())
            ]
        );
    }

    #[test]
    fn control_characters_are_escaped_for_terminals() {
        assert_eq!(terminal_safe("web\x1b[2J\r\x08 ok\n\tnext"), "web\\u{1b}[2J\\r\\u{8} ok\n\tnext");
    }

    #[test]
    fn fingerprints_are_keyed_and_long() {
        let a = fingerprint("one");
        assert_ne!(a, fingerprint("two"));
        assert_eq!(a, fingerprint(" one "));
        assert_eq!(a.len(), "<redacted #>".len() + 12, "{a}");
        // An unkeyed 16-bit hash would let anyone confirm a guess offline;
        // a key that is not in the output makes the same guess useless.
        use hmac::{Mac, SimpleHmac};
        let mut guess = SimpleHmac::<sha2::Sha256>::new_from_slice(&[0u8; 32]).unwrap();
        guess.update(b"one");
        assert!(!a.contains(&hex(&guess.finalize().into_bytes()[..6])));
    }
}
