//! Each channel's request, shaped as its API documents it. Building a
//! request is pure ([`requests`]); [`deliver`] sends them, bounded by the
//! agent's timeout, and names the endpoint without its credentials.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use super::message::Message;
use crate::redact::SecretUrl;
use crate::settings::{Auth, Channel, Event, MatrixAuth};

/// One HTTP request of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: &'static str,
    pub url: String,
    /// The URL as errors show it.
    pub shown: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

impl Request {
    fn post(url: &SecretUrl, path: &str, body: Value) -> Request {
        Request {
            method: "POST",
            url: format!("{}{path}", url.expose().trim_end_matches('/')),
            shown: format!("{url}{}", if path.is_empty() { "" } else { "/…" }),
            headers: Vec::new(),
            body,
        }
    }

    fn header(mut self, name: &'static str, value: String) -> Request {
        self.headers.push((name, value));
        self
    }
}

/// The requests that deliver `message` over a channel that needs no
/// answer to go on (all but Matrix, e-mail and GitHub).
pub fn requests(channel: &Channel, message: &Message) -> Result<Vec<Request>> {
    let m = message;
    Ok(match channel {
        Channel::Webhook { url } => vec![Request::post(url, "", webhook(m))],
        Channel::Slack { url } => vec![Request::post(url, "", json!({"text": m.full()}))],
        Channel::Discord { url } => vec![Request::post(url, "", discord(m))],
        Channel::Teams { url } => vec![Request::post(url, "", teams(url, m))],
        Channel::Ntfy { server, topic, auth, priority } => {
            let request = Request::post(server, "", ntfy(topic, *priority, m));
            vec![match auth {
                Some(auth) => request.header("Authorization", authorization(auth)?),
                None => request,
            }]
        }
        Channel::Gotify { server, token, priority } => vec![
            Request::post(server, "/message", gotify(*priority, m))
                .header("X-Gotify-Key", token.read()?.expose().into()),
        ],
        Channel::Telegram { api, token, chats } => {
            let token = token.read()?;
            chats
                .iter()
                .map(|chat| {
                    let mut r = Request::post(api, &format!("/bot{}/sendMessage", token.expose()), telegram(chat, m));
                    r.shown = format!("{api}/bot…/sendMessage");
                    r
                })
                .collect()
        }
        Channel::Matrix { .. } | Channel::Email(_) | Channel::Github { .. } => {
            return Err(anyhow!("not a one-request channel"));
        }
    })
}

fn authorization(auth: &Auth) -> Result<String> {
    Ok(match auth {
        Auth::Bearer(token) => format!("Bearer {}", token.read()?.expose()),
        Auth::Basic(user, password) => crate::seams::registry::basic(user, password.expose()),
    })
}

/// Sends `message` over `channel` (not GitHub: see `super::github`).
pub fn deliver(agent: &ureq::Agent, channel: &Channel, message: &Message, timeout: Duration) -> Result<()> {
    match channel {
        Channel::Matrix { server, rooms, auth } => matrix(agent, server, rooms, auth, message),
        Channel::Email(email) => super::email::send(email, message, timeout),
        _ => requests(channel, message)?.iter().try_for_each(|r| send(agent, r).map(drop)),
    }
}

fn send(agent: &ureq::Agent, r: &Request) -> Result<Value> {
    let mut builder = match r.method {
        "PUT" => agent.put(&r.url),
        _ => agent.post(&r.url),
    };
    for (name, value) in &r.headers {
        builder = builder.header(*name, value);
    }
    let mut response = builder.send_json(&r.body).map_err(|e| anyhow!("{} {}: {}", r.method, r.shown, e))?;
    // An empty or non-JSON answer is fine: only Matrix reads one.
    Ok(response.body_mut().read_json().unwrap_or(Value::Null))
}

/// clusterup's own document: the message, and the report it is about.
/// `title` and `message` are what shoutrrr's generic service sends.
pub fn webhook(m: &Message) -> Value {
    json!({
        "schema_version": crate::report::SCHEMA_VERSION,
        "event": m.event,
        "resolves": m.resolves,
        "stack": m.stack,
        "host": m.host,
        "time": m.time,
        "title": m.title,
        "message": m.text,
        "summary": m.full(),
        "report": m.report,
    })
}

/// Green, blue, amber, red: how the event reads at a glance.
fn color(m: &Message) -> u32 {
    match (m.event, m.severity()) {
        (Event::Resolved | Event::Applied, _) => 0x2e7d32,
        (_, 4..) => 0xc62828,
        (Event::NeedsApproval, _) => 0xf9a825,
        _ => 0x1565c0,
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// <https://discord.com/developers/docs/resources/webhook#execute-webhook>:
/// an embed's title is at most 256 characters, its description 4096.
fn discord(m: &Message) -> Value {
    let mut embed = json!({
        "title": cut(&m.title, 256),
        "color": color(m),
        "timestamp": m.time,
        "footer": {"text": format!("{} · {}", m.host, m.stack)},
    });
    if !m.text.is_empty() {
        embed["description"] = json!(cut(&m.text, 4096));
    }
    json!({"username": "clusterup", "embeds": [embed]})
}

/// An Office 365 connector URL takes a MessageCard; a Workflows URL
/// (Power Automate, what Microsoft moves connectors to) an Adaptive Card.
fn teams(url: &SecretUrl, m: &Message) -> Value {
    let host = url.host();
    if host.ends_with(".webhook.office.com") || host == "outlook.office.com" || url.expose().contains("/webhookb2/") {
        return json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": cut(&m.title, 256),
            "themeColor": format!("{:06X}", color(m)),
            "title": m.title,
            // Teams renders Markdown: a line break needs a blank line.
            "text": m.text.replace('\n', "\n\n"),
        });
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": m.title, "weight": "Bolder", "size": "Medium", "wrap": true},
                    {"type": "TextBlock", "text": m.text.replace('\n', "\n\n"), "wrap": true},
                ],
            },
        }],
    })
}

/// <https://docs.ntfy.sh/publish/#publish-as-json>
fn ntfy(topic: &str, priority: Option<u8>, m: &Message) -> Value {
    let tag = match m.event {
        Event::Applied | Event::Resolved => "white_check_mark",
        Event::NeedsApproval => "hourglass",
        Event::UpdateAvailable => "arrow_up",
        _ => "rotating_light",
    };
    json!({
        "topic": topic,
        "title": m.title,
        "message": if m.text.is_empty() { m.title.clone() } else { m.text.clone() },
        "priority": priority.unwrap_or(m.severity().max(2)),
        "tags": [tag],
    })
}

/// <https://gotify.net/api-docs#/message/createMessage>; 0-10, where 8 and
/// up interrupt.
fn gotify(priority: Option<i64>, m: &Message) -> Value {
    json!({
        "title": m.title,
        "message": if m.text.is_empty() { m.title.clone() } else { m.text.clone() },
        "priority": priority.unwrap_or(i64::from(m.severity()) * 2),
    })
}

/// <https://core.telegram.org/bots/api#sendmessage>: HTML, at most 4096
/// characters; a chat is an id or `@channel`.
fn telegram(chat: &str, m: &Message) -> Value {
    let chat_id = chat.parse::<i64>().map_or_else(|_| json!(chat), |id| json!(id));
    let mut text = format!("<b>{}</b>", html(&m.title));
    if !m.text.is_empty() {
        text.push('\n');
        text.push_str(&html(&cut(&m.text, 3500)));
    }
    json!({"chat_id": chat_id, "text": text, "parse_mode": "HTML", "disable_web_page_preview": true})
}

pub fn html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// <https://spec.matrix.org/v1.11/client-server-api/#mroommessage>: log in
/// if need be, find each room's id, send an `m.text` event.
fn matrix(agent: &ureq::Agent, server: &SecretUrl, rooms: &[String], auth: &MatrixAuth, m: &Message) -> Result<()> {
    let token = match auth {
        MatrixAuth::Token(token) => token.read()?,
        MatrixAuth::Password(user, password) => {
            let login = json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user},
                "password": password.read()?.expose(),
                "initial_device_display_name": "clusterup",
            });
            let answer = send(agent, &Request::post(server, "/_matrix/client/v3/login", login))?;
            let token = answer["access_token"].as_str().context("the Matrix login answered without an access_token")?;
            crate::redact::Secret::new(token)
        }
    };
    let bearer = format!("Bearer {}", token.expose());
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let body = json!({
        "msgtype": "m.text",
        "body": m.full(),
        "format": "org.matrix.custom.html",
        "formatted_body": format!("<strong>{}</strong><br>{}", html(&m.title), html(&m.text).replace('\n', "<br>")),
    });
    for room in rooms {
        let id = if room.starts_with('#') {
            let url =
                format!("{}/_matrix/client/v3/directory/room/{}", server.expose().trim_end_matches('/'), enc(room));
            let mut answer = agent
                .get(&url)
                .header("Authorization", &bearer)
                .call()
                .map_err(|e| anyhow!("GET {server}/…/directory/room: {e}"))?;
            let answer: Value = answer.body_mut().read_json().context("reading the Matrix room alias answer")?;
            answer["room_id"].as_str().with_context(|| format!("Matrix knows no room {room}"))?.to_string()
        } else {
            room.clone()
        };
        let digest = <sha2::Sha256 as sha2::Digest>::digest(m.full().as_bytes());
        let txn = format!("clusterup-{}-{}", m.time.as_millisecond(), crate::redact::hex(&digest[..8]));
        let mut put = Request::post(
            server,
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(&id), enc(&txn)),
            body.clone(),
        )
        .header("Authorization", bearer.clone());
        put.method = "PUT";
        send(agent, &put)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::NotifyEntry;

    fn channel(yaml: &str) -> Channel {
        let entry: NotifyEntry = serde_yaml::from_str(yaml).unwrap();
        crate::settings::resolve_entry(&entry).unwrap().remove(0).channel
    }

    fn message(event: Event) -> Message {
        Message {
            event,
            resolves: None,
            stack: "shop".into(),
            host: "h1".into(),
            time: crate::seams::fake::NOW,
            title: "clusterup: stack shop on h1: rolled back (revision 4)".into(),
            text: "image web (version 1.4.3)\nerror: service web: unhealthy <exit 1>".into(),
            report: json!({}),
        }
    }

    /// Each channel's request has the shape its API documents.
    #[test]
    fn requests_have_each_apis_shape() {
        let m = message(Event::RolledBack);
        let one = |yaml: &str| requests(&channel(yaml), &m).unwrap().remove(0);

        let r = one("discord://tok3n-secret@123456");
        assert_eq!(r.url, "https://discord.com/api/webhooks/123456/tok3n-secret");
        assert_eq!(r.body["embeds"][0]["title"], m.title);
        assert_eq!(r.body["embeds"][0]["color"], 0xc62828);

        let r = one("slack://hook:WNA3PBYV6-F20DUQND3RQ-Webc4MAvoacrpPakR8phF0zi@webhook");
        assert_eq!(r.url, "https://hooks.slack.com/services/WNA3PBYV6/F20DUQND3RQ/Webc4MAvoacrpPakR8phF0zi");
        assert!(r.body["text"].as_str().unwrap().starts_with(&m.title));

        let r = one("telegram://110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw@telegram?chats=@clusterup,-1001234");
        assert_eq!(r.url, "https://api.telegram.org/bot110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage");
        assert!(!r.shown.contains("AAHd"), "{}", r.shown);
        assert_eq!((r.body["chat_id"].clone(), r.body["parse_mode"].clone()), (json!("@clusterup"), json!("HTML")));
        assert!(r.body["text"].as_str().unwrap().contains("&lt;exit 1&gt;"));
        assert_eq!(
            requests(&channel("telegram://1:AAA-secret@telegram?chats=@a,-100"), &m).unwrap()[1].body["chat_id"],
            -100
        );

        let r = one("gotify://gotify.example.com/sub/AzyoeNS.D4iJLVa?priority=7");
        assert_eq!(r.url, "https://gotify.example.com/sub/message");
        assert_eq!(r.headers, [("X-Gotify-Key", "AzyoeNS.D4iJLVa".to_string())]);
        assert_eq!((r.body["priority"].clone(), r.body["title"].clone()), (json!(7), json!(m.title)));

        let r = one("ntfy://:tk_secrettoken@ntfy.example.com/deploys?priority=high");
        assert_eq!(r.url, "https://ntfy.example.com");
        assert_eq!(r.headers, [("Authorization", "Bearer tk_secrettoken".to_string())]);
        assert_eq!((r.body["topic"].clone(), r.body["priority"].clone()), (json!("deploys"), json!(4)));

        let r = one("teams://group@tenant/altId/groupOwner?host=contoso.webhook.office.com");
        assert_eq!(r.url, "https://contoso.webhook.office.com/webhookb2/group@tenant/IncomingWebhook/altId/groupOwner");
        assert_eq!(r.body["@type"], "MessageCard");
        let r = one(
            "{type: teams, url: 'https://prod-1.westus.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=s3cr3t'}",
        );
        assert_eq!(r.body["attachments"][0]["contentType"], "application/vnd.microsoft.card.adaptive");

        let r = one("generic://example.com/hooks/deploy?template=json");
        assert_eq!(r.url, "https://example.com/hooks/deploy");
        assert_eq!((r.body["title"].clone(), r.body["event"].clone()), (json!(m.title), json!("rolled_back")));
    }

    #[test]
    fn long_texts_are_cut_to_each_apis_limit() {
        let mut m = message(Event::Failed);
        m.text = "x".repeat(10_000);
        let r = requests(&channel("discord://t0ken-long@1"), &m).unwrap().remove(0);
        assert_eq!(r.body["embeds"][0]["description"].as_str().unwrap().chars().count(), 4096);
    }
}
