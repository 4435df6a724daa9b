//! Where notifications go. An entry of `notify:` is either typed
//! (`{type: ntfy, url: ...}`) or a shoutrrr URL — what Watchtower's
//! `WATCHTOWER_NOTIFICATION_URL` holds, several separated by spaces — and
//! is resolved into one [`Channel`] per destination when the configuration
//! is read: a bad URL is an error at load naming the entry, and every
//! credential in it is a [`Secret`] from then on.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;

use crate::redact::{Secret, SecretUrl};

/// What a notification target may be told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    UpdateAvailable,
    Applied,
    Failed,
    RolledBack,
    NeedsApproval,
    RollbackFailed,
    /// A lasting condition (`needs_approval`, `update_available`) that was
    /// notified has ended: approved, applied or superseded.
    Resolved,
}

impl Event {
    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    }

    /// Worth a GitHub issue until the stack is healthy again.
    pub fn is_problem(self) -> bool {
        matches!(self, Event::Failed | Event::RolledBack | Event::NeedsApproval | Event::RollbackFailed)
    }
}

/// A resolved destination and what it is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyTarget {
    pub channel: Channel,
    /// Empty: every event.
    pub events: Vec<Event>,
    /// A condition that lasts (`needs_approval`, `update_available`) is
    /// sent once; again after this long if it still holds (None: never).
    pub remind: Option<Duration>,
    /// A minijinja template for the message text, instead of the default.
    pub template: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Channel {
    /// clusterup's JSON document, POSTed.
    Webhook {
        url: SecretUrl,
    },
    /// A Slack (or Mattermost, Rocket.Chat) incoming webhook.
    Slack {
        url: SecretUrl,
    },
    /// One issue per stack and problem, closed when healthy again.
    Github {
        repo: String,
        api: SecretUrl,
        token: Token,
    },
    /// A Discord channel webhook (`https://discord.com/api/webhooks/ID/TOKEN`).
    Discord {
        url: SecretUrl,
    },
    /// A Microsoft Teams incoming webhook (Office 365 connector or Workflows).
    Teams {
        url: SecretUrl,
    },
    /// An ntfy server and topic; `auth` for protected topics.
    Ntfy {
        server: SecretUrl,
        topic: String,
        auth: Option<Auth>,
        priority: Option<u8>,
    },
    /// A Gotify server and application token.
    Gotify {
        server: SecretUrl,
        token: Token,
        priority: Option<i64>,
    },
    /// A Telegram bot and the chats it posts to.
    Telegram {
        api: SecretUrl,
        token: Token,
        chats: Vec<String>,
    },
    /// A Matrix homeserver and rooms (ids `!x:server` or aliases `#x:server`).
    Matrix {
        server: SecretUrl,
        rooms: Vec<String>,
        auth: MatrixAuth,
    },
    Email(Box<Email>),
}

impl Channel {
    pub fn name(&self) -> &'static str {
        match self {
            Channel::Webhook { .. } => "webhook",
            Channel::Slack { .. } => "slack",
            Channel::Github { .. } => "github",
            Channel::Discord { .. } => "discord",
            Channel::Teams { .. } => "teams",
            Channel::Ntfy { .. } => "ntfy",
            Channel::Gotify { .. } => "gotify",
            Channel::Telegram { .. } => "telegram",
            Channel::Matrix { .. } => "matrix",
            Channel::Email(_) => "email",
        }
    }

    /// Where it sends, credentials included: what tells two targets of
    /// the same kind apart (only ever fingerprinted).
    pub fn destination(&self) -> String {
        match self {
            Channel::Webhook { url } | Channel::Slack { url } | Channel::Discord { url } | Channel::Teams { url } => {
                url.expose().to_string()
            }
            Channel::Github { repo, api, .. } => format!("{} {repo}", api.expose()),
            Channel::Ntfy { server, topic, .. } => format!("{} {topic}", server.expose()),
            Channel::Gotify { server, token, .. } => format!("{} {}", server.expose(), token.key()),
            Channel::Telegram { api, token, chats } => format!("{} {} {}", api.expose(), token.key(), chats.join(",")),
            Channel::Matrix { server, rooms, .. } => format!("{} {}", server.expose(), rooms.join(",")),
            Channel::Email(e) => format!("{}:{} {}", e.host, e.port, e.to.join(",")),
        }
    }
}

/// A credential: written in the entry (from a shoutrrr URL), or read when
/// sending from an environment variable or a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Inline(Secret),
    Env(String),
    File(PathBuf),
}

impl Token {
    /// Which credential, without reading it (an inline one is itself).
    fn key(&self) -> String {
        match self {
            Token::Inline(s) => s.expose().to_string(),
            Token::Env(var) => format!("${var}"),
            Token::File(file) => file.display().to_string(),
        }
    }

    pub fn read(&self) -> Result<Secret> {
        match self {
            Token::Inline(s) => Ok(s.clone()),
            Token::Env(var) => std::env::var(var).map(Secret::new).map_err(|_| anyhow!("{var} is not set")),
            Token::File(file) => std::fs::read_to_string(file)
                .map(|t| Secret::new(t.trim()))
                .with_context(|| format!("reading token file {}", file.display())),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    Bearer(Token),
    Basic(String, Secret),
}

#[derive(Debug, Clone, PartialEq)]
pub enum MatrixAuth {
    Token(Token),
    /// Logged in for each delivery (what shoutrrr does).
    Password(String, Token),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub user: Option<String>,
    pub password: Option<Token>,
    pub from: String,
    pub to: Vec<String>,
    /// A PEM file of the CA that signed the server's certificate, for a
    /// relay with a private CA; the system's roots otherwise.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// TLS from the first byte (port 465).
    Implicit,
    /// STARTTLS, required.
    Required,
    /// STARTTLS if offered: only to this host itself.
    Opportunistic,
    /// Plain text: only to this host itself, or with `insecure: true`.
    Off,
}

/// A `notify:` entry as written.
#[derive(Debug, Clone, PartialEq)]
pub enum NotifyEntry {
    /// One or more shoutrrr URLs separated by spaces.
    Urls(String),
    Typed(Box<TypedEntry>),
}

impl<'de> Deserialize<'de> for NotifyEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NotifyEntry, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NotifyEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a shoutrrr URL (discord://..., telegram://...) or a map with `type:`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NotifyEntry, E> {
                Ok(NotifyEntry::Urls(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<NotifyEntry, A::Error> {
                TypedEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|t| NotifyEntry::Typed(Box::new(t)))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    Webhook,
    Slack,
    Github,
    Discord,
    Teams,
    Ntfy,
    Gotify,
    Telegram,
    Matrix,
    Email,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypedEntry {
    /// Absent: `url` is a shoutrrr URL.
    #[serde(rename = "type")]
    kind: Option<NotifyKind>,
    url: Option<String>,
    /// github: owner/name.
    repo: Option<String>,
    /// The service's API base: GitHub Enterprise, a self-hosted Telegram
    /// Bot API server, a proxy in front of Discord or Slack.
    api_url: Option<String>,
    /// Allows plain HTTP (or SMTP without TLS) to a host other than this
    /// one: the URL or token then crosses the network readable by anyone.
    #[serde(default)]
    insecure: bool,
    /// The token, password or key comes from this environment variable...
    token_env: Option<String>,
    /// ...or this file; never from the configuration itself.
    token_file: Option<PathBuf>,
    /// telegram: chat ids or @channel names.
    #[serde(default)]
    chats: Vec<String>,
    /// matrix: room ids or aliases.
    #[serde(default)]
    rooms: Vec<String>,
    /// matrix (password login) and email: the user name.
    user: Option<String>,
    /// email: the sender and recipients.
    from: Option<String>,
    #[serde(default)]
    to: Vec<String>,
    /// email: a PEM CA file for the server's certificate.
    ca_file: Option<PathBuf>,
    #[serde(default)]
    events: Vec<Event>,
    #[serde(default, deserialize_with = "crate::settings::duration")]
    remind: Option<Duration>,
    template: Option<String>,
}

/// The targets an entry stands for (a string of several URLs is several).
pub fn resolve(entry: &NotifyEntry) -> std::result::Result<Vec<NotifyTarget>, String> {
    let typed = match entry {
        NotifyEntry::Urls(urls) => {
            let urls: Vec<&str> = urls.split_whitespace().collect();
            if urls.is_empty() {
                return Err("an empty notification URL".into());
            }
            let mut targets = Vec::new();
            for url in urls {
                let entry = TypedEntry { url: Some(url.to_string()), ..TypedEntry::default() };
                targets.push(target(&entry)?);
            }
            return Ok(targets);
        }
        NotifyEntry::Typed(typed) => typed,
    };
    Ok(vec![target(typed)?])
}

fn target(entry: &TypedEntry) -> std::result::Result<NotifyTarget, String> {
    let channel = match entry.kind {
        None => {
            let url = entry.url.as_deref().ok_or("`type` or a shoutrrr `url` is required")?;
            shoutrrr(url, entry)?
        }
        Some(kind) => typed(kind, entry)?,
    };
    check_transport(&channel, entry.insecure)?;
    if let Some(template) = &entry.template {
        check_template(template)?;
    }
    Ok(NotifyTarget { channel, events: entry.events.clone(), remind: entry.remind, template: entry.template.clone() })
}

fn token(entry: &TypedEntry) -> Option<Token> {
    match (&entry.token_env, &entry.token_file) {
        (_, Some(file)) => Some(Token::File(file.clone())),
        (Some(var), None) => Some(Token::Env(var.clone())),
        (None, None) => None,
    }
}

fn required<'a>(value: &'a Option<String>, what: &str, kind: &str) -> std::result::Result<&'a str, String> {
    value.as_deref().ok_or_else(|| format!("`{what}` is required for {kind} notifications"))
}

fn typed(kind: NotifyKind, e: &TypedEntry) -> std::result::Result<Channel, String> {
    let name = format!("{kind:?}").to_lowercase();
    let url = || required(&e.url, "url", &name);
    let need_token = || token(e).ok_or_else(|| format!("{name} needs `token_env` or `token_file`"));
    Ok(match kind {
        NotifyKind::Webhook => Channel::Webhook { url: SecretUrl::webhook(url()?) },
        NotifyKind::Slack => Channel::Slack { url: SecretUrl::webhook(url()?) },
        NotifyKind::Discord => Channel::Discord { url: SecretUrl::webhook(url()?) },
        NotifyKind::Teams => Channel::Teams { url: SecretUrl::webhook(url()?) },
        NotifyKind::Github => Channel::Github {
            repo: required(&e.repo, "repo", "github").map_err(|m| m.replace("`repo`", "`repo` (owner/name)"))?.into(),
            api: SecretUrl::public(e.api_url.as_deref().unwrap_or("https://api.github.com")),
            token: token(e).unwrap_or(Token::Env("GITHUB_TOKEN".into())),
        },
        NotifyKind::Ntfy => {
            let (server, topic) = split_topic(url()?)?;
            Channel::Ntfy { server, topic, auth: token(e).map(Auth::Bearer), priority: None }
        }
        NotifyKind::Gotify => {
            Channel::Gotify { server: SecretUrl::public(url()?), token: need_token()?, priority: None }
        }
        NotifyKind::Telegram => {
            if e.chats.is_empty() {
                return Err("`chats` (chat ids or @channel names) is required for telegram notifications".into());
            }
            Channel::Telegram {
                api: SecretUrl::public(e.api_url.as_deref().unwrap_or(TELEGRAM_API)),
                token: need_token()?,
                chats: e.chats.clone(),
            }
        }
        NotifyKind::Matrix => {
            if e.rooms.is_empty() {
                return Err("`rooms` (room ids or aliases) is required for matrix notifications".into());
            }
            let secret = need_token()?;
            let auth = match &e.user {
                Some(user) => MatrixAuth::Password(user.clone(), secret),
                None => MatrixAuth::Token(secret),
            };
            Channel::Matrix { server: SecretUrl::public(url()?), rooms: rooms(&e.rooms), auth }
        }
        NotifyKind::Email => {
            let url = SecretUrl::git(url()?);
            let (tls, default_port) = match url.scheme() {
                Some("smtps") => (Tls::Implicit, 465),
                Some("smtp") if crate::redact::is_loopback_host(url.host()) => (Tls::Opportunistic, 25),
                Some("smtp") if e.insecure => (Tls::Off, 25),
                Some("smtp") => (Tls::Required, 587),
                _ => return Err(format!("{url}: email needs an smtp:// (STARTTLS) or smtps:// (TLS) URL")),
            };
            let (user, password) = userinfo(url.expose());
            email(Email {
                host: url.host().to_string(),
                port: port_of(url.expose()).unwrap_or(default_port),
                tls,
                user: e.user.clone().or(user),
                password: token(e).or(password.map(Token::Inline)),
                from: required(&e.from, "from", "email")?.to_string(),
                to: e.to.clone(),
                ca_file: e.ca_file.clone(),
            })?
        }
    })
}

const TELEGRAM_API: &str = "https://api.telegram.org";

fn email(email: Email) -> std::result::Result<Channel, String> {
    if email.to.is_empty() {
        return Err("`to` (one or more addresses) is required for email notifications".into());
    }
    for address in email.to.iter().chain([&email.from]) {
        address.parse::<lettre::Address>().map_err(|e| format!("{address:?} is not an e-mail address: {e}"))?;
    }
    Ok(Channel::Email(Box::new(email)))
}

/// `https://ntfy.sh/topic` → the server and the topic.
fn split_topic(url: &str) -> std::result::Result<(SecretUrl, String), String> {
    let trimmed = url.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((server, topic)) if server.contains("://") && !server.ends_with('/') && !topic.is_empty() => {
            Ok((SecretUrl::git(server), topic.to_string()))
        }
        _ => Err(format!("{}: ntfy needs the topic's URL (https://ntfy.sh/TOPIC)", SecretUrl::git(url))),
    }
}

/// Aliases may be written without their `#` (it starts a fragment in a URL).
fn rooms(rooms: &[String]) -> Vec<String> {
    rooms.iter().map(|r| if r.starts_with('!') || r.starts_with('#') { r.clone() } else { format!("#{r}") }).collect()
}

fn userinfo(url: &str) -> (Option<String>, Option<Secret>) {
    let Some(authority) = url.split_once("://").map(|(_, a)| a.split(['/', '?']).next().unwrap_or("")) else {
        return (None, None);
    };
    let Some((info, _)) = authority.rsplit_once('@') else { return (None, None) };
    let decode = |s: &str| crate::redact::percent_decode(s);
    match info.split_once(':') {
        Some((user, password)) => {
            let user = Some(decode(user)).filter(|u| !u.is_empty());
            (user, Some(Secret::new(decode(password))))
        }
        None => (Some(decode(info)), None),
    }
}

fn port_of(url: &str) -> Option<u16> {
    let authority = url.split_once("://")?.1.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port
        .rsplit_once(':')
        .filter(|(h, _)| !h.ends_with(']') || h.starts_with('['))
        .and_then(|(_, p)| p.parse().ok())
}

/// The HTTP endpoints a channel talks to, for the plain-HTTP rule.
fn endpoints(channel: &Channel) -> Vec<&SecretUrl> {
    match channel {
        Channel::Webhook { url } | Channel::Slack { url } | Channel::Discord { url } | Channel::Teams { url } => {
            vec![url]
        }
        Channel::Github { api, .. } | Channel::Telegram { api, .. } => vec![api],
        Channel::Ntfy { server, .. } | Channel::Gotify { server, .. } | Channel::Matrix { server, .. } => {
            vec![server]
        }
        Channel::Email(_) => vec![],
    }
}

fn check_transport(channel: &Channel, insecure: bool) -> std::result::Result<(), String> {
    if let Channel::Email(email) = channel
        && email.tls == Tls::Off
        && !insecure
        && !crate::redact::is_loopback_host(&email.host)
    {
        return Err(format!(
            "SMTP to {} without TLS: the password and messages would cross the network in clear text; \
             use STARTTLS or TLS, or add `insecure: true` to this target",
            email.host
        ));
    }
    for url in endpoints(channel) {
        match url.scheme() {
            Some("https") => {}
            Some("http") if insecure || crate::redact::is_loopback_host(url.host()) => {}
            Some("http") => {
                return Err(format!(
                    "{url} is plain HTTP: the URL and any token would cross the network in clear text; \
                     use https, or add `insecure: true` to this target"
                ));
            }
            _ => return Err(format!("{url} is not an http(s) URL")),
        }
    }
    Ok(())
}

fn check_template(template: &str) -> std::result::Result<(), String> {
    let env = minijinja::Environment::new();
    env.template_from_str(template).map(|_| ()).map_err(|e| format!("template: {e}"))
}

/// A shoutrrr URL (<https://containrrr.dev/shoutrrr/v0.8/services/overview/>)
/// as the channel it names. Parameters that only dress the message (a bot
/// name, a colour) are accepted and ignored; any other is refused, so a URL
/// never does less than its writer expects without saying so.
pub fn shoutrrr(url: &str, entry: &TypedEntry) -> std::result::Result<Channel, String> {
    let shown = SecretUrl::webhook(url);
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{shown}: not a URL (service://...)"))?;
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
    let (info, host) = authority.rsplit_once('@').map_or((None, authority), |(i, h)| (Some(i), h));
    let mut params = Params::parse(query, &shown)?;
    let secret = |s: &str| Secret::new(crate::redact::percent_decode(s));
    let api = |default: &str| SecretUrl::public(entry.api_url.as_deref().unwrap_or(default));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let bad = |what: &str| format!("{shown}: {what} (see https://containrrr.dev/shoutrrr/v0.8/services/{scheme}/)");
    let channel = match scheme {
        "discord" => {
            params.ignore(&[
                "username",
                "avatarurl",
                "color",
                "colordebug",
                "colorerror",
                "colorinfo",
                "colorwarn",
                "splitlines",
                "title",
                "json",
            ]);
            params.refuse(&["thread_id"], "posting into a thread")?;
            let token = info.filter(|t| !t.is_empty()).ok_or_else(|| bad("discord://TOKEN@WEBHOOK_ID expected"))?;
            secret(token);
            let base = api("https://discord.com");
            Channel::Discord { url: SecretUrl::webhook(&format!("{}/api/webhooks/{host}/{token}", base.expose())) }
        }
        "slack" => {
            params.ignore(&["botname", "color", "icon", "title", "threadts"]);
            let token = match (info, host) {
                (Some(t), "webhook") => t.strip_prefix("hook:").unwrap_or(t).replace('-', "/"),
                (Some(t), _) if t.starts_with("xoxb:") || t.starts_with("xoxp:") => {
                    return Err(bad(
                        "a Slack API token: clusterup posts to incoming webhooks only (slack://hook:TOKEN@webhook)",
                    ));
                }
                (None, a) if segments.len() == 2 => format!("{a}/{}/{}", segments[0], segments[1]),
                _ => return Err(bad("slack://hook:TOKEN@webhook expected")),
            };
            let base = api("https://hooks.slack.com");
            Channel::Slack { url: SecretUrl::webhook(&format!("{}/services/{token}", base.expose())) }
        }
        "teams" => {
            params.ignore(&["color", "title"]);
            let webhook_host = params.take("host");
            let url = match (info, webhook_host) {
                (Some(group), Some(webhook_host)) if segments.len() >= 2 => {
                    let extra = segments.get(2).map(|e| format!("/{e}")).unwrap_or_default();
                    format!(
                        "https://{webhook_host}/webhookb2/{group}@{authority_host}/IncomingWebhook/{}/{}{extra}",
                        segments[0],
                        segments[1],
                        authority_host = host_part(authority)
                    )
                }
                (None, None) if segments.len() == 2 => {
                    format!("https://outlook.office.com/webhook/{host}/IncomingWebhook/{}/{}", segments[0], segments[1])
                }
                _ => return Err(bad("teams://GROUP@TENANT/ALTID/GROUPOWNER?host=ORG.webhook.office.com expected")),
            };
            let url = match &entry.api_url {
                Some(base) => format!("{base}{}", &url[url.find("/webhook").unwrap_or(0)..]),
                None => url,
            };
            Channel::Teams { url: SecretUrl::webhook(&url) }
        }
        "telegram" => {
            params.ignore(&["preview", "notification", "parsemode", "title"]);
            let token = info.ok_or_else(|| bad("telegram://TOKEN@telegram?chats=... expected"))?;
            let chats: Vec<String> = params.list("chats").or_else(|| params.list("channels")).unwrap_or_default();
            if chats.is_empty() {
                return Err(bad("`chats` is required"));
            }
            Channel::Telegram { api: api(TELEGRAM_API), token: Token::Inline(secret(token)), chats }
        }
        "gotify" => {
            params.ignore(&["title"]);
            let tls = !params.flag("disabletls");
            let priority =
                params.take("priority").map(|p| p.parse().map_err(|_| bad("`priority` is a number"))).transpose()?;
            let (token, prefix) = segments.split_last().ok_or_else(|| bad("gotify://HOST/TOKEN expected"))?;
            let prefix = prefix.iter().map(|s| format!("/{s}")).collect::<String>();
            let scheme = if tls { "https" } else { "http" };
            Channel::Gotify {
                server: SecretUrl::public(&format!("{scheme}://{host}{prefix}")),
                token: Token::Inline(secret(token)),
                priority,
            }
        }
        "ntfy" => {
            params.ignore(&[
                "title", "tags", "icon", "click", "attach", "filename", "delay", "email", "actions", "cache",
                "firebase",
            ]);
            let scheme = params.take("scheme").unwrap_or_else(|| "https".into());
            if scheme != "https" && scheme != "http" {
                return Err(bad("`scheme` is http or https"));
            }
            let priority = params
                .take("priority")
                .map(|p| ntfy_priority(&p).ok_or_else(|| bad("`priority` is 1-5 or min/low/default/high/max")))
                .transpose()?;
            let topic = segments.first().ok_or_else(|| bad("ntfy://HOST/TOPIC expected"))?;
            let auth = match info {
                Some(info) => match info.split_once(':') {
                    Some(("", token)) => Some(Auth::Bearer(Token::Inline(secret(token)))),
                    Some((user, password)) => Some(Auth::Basic(user.to_string(), secret(password))),
                    None => Some(Auth::Bearer(Token::Inline(secret(info)))),
                },
                None => token(entry).map(Auth::Bearer),
            };
            let host = if host.is_empty() { "ntfy.sh" } else { host };
            Channel::Ntfy {
                server: SecretUrl::public(&format!("{scheme}://{host}")),
                topic: topic.to_string(),
                auth,
                priority,
            }
        }
        "matrix" => {
            params.ignore(&["title"]);
            let tls = !params.flag("disabletls");
            let wanted = params.list("rooms").or_else(|| params.list("room")).unwrap_or_default();
            if wanted.is_empty() {
                return Err(bad("`rooms` is required (clusterup does not post to every room the account joined)"));
            }
            let (user, password) = match info.map(|i| i.split_once(':').unwrap_or(("", i))) {
                Some((user, password)) if !password.is_empty() => (user, password),
                _ => return Err(bad("matrix://USER:PASSWORD@HOST or matrix://:TOKEN@HOST expected")),
            };
            let auth = if user.is_empty() {
                MatrixAuth::Token(Token::Inline(secret(password)))
            } else {
                MatrixAuth::Password(crate::redact::percent_decode(user), Token::Inline(secret(password)))
            };
            let scheme = if tls { "https" } else { "http" };
            Channel::Matrix { server: SecretUrl::public(&format!("{scheme}://{host}")), rooms: rooms(&wanted), auth }
        }
        "smtp" => {
            params.ignore(&["fromname", "subject", "usehtml", "clienthost"]);
            let from =
                params.take("from").or_else(|| params.take("fromaddress")).ok_or_else(|| bad("`from` is required"))?;
            let to = params.list("to").or_else(|| params.list("toaddresses")).unwrap_or_default();
            let auth = params.take("auth").map(|a| a.to_lowercase());
            let encryption = params.take("encryption").map(|e| e.to_lowercase());
            let starttls = params.take("usestarttls").map(|v| !matches!(v.as_str(), "no" | "false" | "0"));
            let host_only = host_part(authority);
            let port = port_of(url).unwrap_or(25);
            let loopback = crate::redact::is_loopback_host(host_only);
            let tls = match (encryption.as_deref().unwrap_or("auto"), starttls) {
                ("implicittls", _) => Tls::Implicit,
                ("none", _) | (_, Some(false)) => Tls::Off,
                ("explicittls", _) => Tls::Required,
                ("auto", _) if port == 465 => Tls::Implicit,
                ("auto", _) if loopback => Tls::Opportunistic,
                ("auto", _) => Tls::Required,
                (other, _) => {
                    return Err(bad(&format!("encryption `{other}`: None, ExplicitTLS, ImplicitTLS or Auto")));
                }
            };
            let (user, password) = match auth.as_deref() {
                Some("none") => (None, None),
                Some("oauth2" | "crammd5") => return Err(bad("only plain/login authentication is supported")),
                _ => userinfo(url),
            };
            email(Email {
                host: host_only.to_string(),
                port,
                tls,
                user,
                password: password.map(Token::Inline),
                from,
                to,
                ca_file: entry.ca_file.clone(),
            })?
        }
        "generic" | "generic+https" | "generic+http" => {
            let tls = scheme != "generic+http" && !params.flag("disabletls");
            params.ignore(&["template", "contenttype", "messagekey", "titlekey", "requestmethod"]);
            let query = params.rest();
            let scheme = if tls { "https" } else { "http" };
            let auth = info.map(|i| format!("{i}@")).unwrap_or_default();
            Channel::Webhook { url: SecretUrl::webhook(&format!("{scheme}://{auth}{before_query}{query}")) }
        }
        other => {
            return Err(format!(
                "{shown}: shoutrrr service `{other}` is not supported; clusterup sends to discord, slack, teams, \
                 telegram, gotify, ntfy, matrix, smtp and generic (or use a typed entry such as `type: webhook`)"
            ));
        }
    };
    if scheme != "generic" && !scheme.starts_with("generic+") {
        params.finish(&shown)?;
    }
    Ok(channel)
}

fn host_part(authority: &str) -> &str {
    crate::redact::host_of(authority.rsplit_once('@').map_or(authority, |(_, h)| h))
}

fn ntfy_priority(p: &str) -> Option<u8> {
    match p.to_lowercase().as_str() {
        "min" | "1" => Some(1),
        "low" | "2" => Some(2),
        "default" | "3" => Some(3),
        "high" | "4" => Some(4),
        "max" | "urgent" | "5" => Some(5),
        _ => None,
    }
}

/// A shoutrrr URL's query: keys are case-insensitive.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: &str, shown: &SecretUrl) -> std::result::Result<Params, String> {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.to_lowercase(), v.into_owned())).collect();
        if pairs.iter().any(|(k, _)| k.is_empty()) {
            return Err(format!("{shown}: a query parameter without a name"));
        }
        Ok(Params(pairs))
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    fn list(&mut self, key: &str) -> Option<Vec<String>> {
        self.take(key).map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
    }

    fn flag(&mut self, key: &str) -> bool {
        self.take(key).is_some_and(|v| matches!(v.to_lowercase().as_str(), "yes" | "true" | "1"))
    }

    fn ignore(&mut self, keys: &[&str]) {
        self.0.retain(|(k, _)| !keys.contains(&k.as_str()));
    }

    fn refuse(&self, keys: &[&str], what: &str) -> std::result::Result<(), String> {
        match self.0.iter().find(|(k, _)| keys.contains(&k.as_str())) {
            Some((k, _)) => Err(format!("`{k}` ({what}) is not supported by clusterup")),
            None => Ok(()),
        }
    }

    /// What a generic webhook passes through to its URL.
    fn rest(&mut self) -> String {
        let kept: Vec<(String, String)> = std::mem::take(&mut self.0)
            .into_iter()
            .filter(|(k, _)| !k.starts_with('@') && !k.starts_with('$'))
            .collect();
        if kept.is_empty() {
            return String::new();
        }
        let mut q = form_urlencoded::Serializer::new(String::from("?"));
        for (k, v) in kept {
            q.append_pair(&k, &v);
        }
        q.finish()
    }

    fn finish(&self, shown: &SecretUrl) -> std::result::Result<(), String> {
        match self.0.first() {
            Some((k, _)) => Err(format!("{shown}: parameter `{k}` is not supported by clusterup")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> std::result::Result<Vec<NotifyTarget>, String> {
        let entry: NotifyEntry = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        resolve(&entry)
    }

    /// The URLs of shoutrrr's and Watchtower's documentation, as copied.
    #[test]
    fn watchtower_urls_are_accepted_as_written() {
        let urls = [
            ("discord://token@id", "discord"),
            ("slack://hook:WNA3PBYV6-F20DUQND3RQ-Webc4MAvoacrpPakR8phF0zi@webhook", "slack"),
            ("slack://T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX", "slack"),
            ("telegram://token@telegram?chats=@channel-1,chat-id-1", "telegram"),
            ("gotify://gotify-host/token", "gotify"),
            ("ntfy://ntfy.sh/topic?priority=high", "ntfy"),
            ("ntfy://username:password@ntfy.example.com/topic", "ntfy"),
            ("teams://group@tenant/altId/groupOwner?host=organization.webhook.office.com", "teams"),
            ("matrix://user:password@matrix.example.com/?rooms=!roomID1,roomAlias2", "matrix"),
            ("smtp://username:password@host:587/?from=fromAddress@example.com&to=recipient1@example.com", "email"),
            ("generic://example.com/webhook?template=json", "webhook"),
        ];
        for (url, name) in urls {
            let targets = parse(&format!("{url:?}")).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(targets[0].channel.name(), name, "{url}");
        }
        let both = parse("'discord://token@id telegram://token@telegram?chats=1'").unwrap();
        assert_eq!(both.len(), 2, "WATCHTOWER_NOTIFICATION_URL holds several, separated by spaces");
        let Channel::Matrix { rooms, .. } = &parse("'matrix://u:p@m.example/?rooms=!a:m,b:m'").unwrap()[0].channel
        else {
            panic!()
        };
        assert_eq!(rooms, &["!a:m", "#b:m"]);
    }

    #[test]
    fn what_is_not_supported_is_said_and_no_secret_is_shown() {
        let cases = [
            ("'pushover://shoutrrr:s3cr3tAPItoken@userKey'", "`pushover` is not supported"),
            ("'discord://s3cr3tWebhookToken@id?thread_id=5'", "`thread_id` (posting into a thread) is not supported"),
            ("'telegram://s3cr3tBotToken@telegram'", "`chats` is required"),
            ("'matrix://user:s3cr3tPassword@m.example'", "`rooms` is required"),
            ("'slack://xoxb:s3cr3tBotToken@C001'", "incoming webhooks only"),
            ("'gotify://g.example/s3cr3tAppToken?bogus=1'", "parameter `bogus` is not supported"),
            ("'gotify://g.example/s3cr3tAppToken?disabletls=yes'", "plain HTTP"),
            ("'smtp://u:s3cr3tMailPass@mail.example:25/?from=a@b.c&to=d@e.f&encryption=None'", "without TLS"),
            ("'smtp://u:s3cr3tMailPass@mail.example/?from=nobody&to=d@e.f'", "not an e-mail address"),
            ("{type: telegram, token_env: T}", "`chats`"),
            ("{type: email, url: 'smtp://mail.example', from: a@b.c}", "`to`"),
            ("{type: webhook, url: 'http://127.0.0.1:1/x', template: '{{ oops'}", "template"),
            ("{url: 'gotify://g.example/s3cr3tAppToken?disabletls=yes', insecure: true}", ""),
        ];
        for (yaml, expected) in cases {
            let result = parse(yaml);
            if expected.is_empty() {
                assert!(result.is_ok(), "{yaml}: {result:?}");
                continue;
            }
            let err = result.expect_err(yaml);
            assert!(err.contains(expected), "{yaml}: {err}");
            assert!(!err.contains("s3cr3t"), "{yaml}: {err}");
        }
    }
}
