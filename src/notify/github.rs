//! GitHub issues: one open issue per stack and problem, commented on
//! instead of duplicated, closed when the stack is healthy again.

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use serde_json::json;

use super::message::Message;
use crate::redact::SecretUrl;
use crate::settings::Token;

#[derive(Deserialize)]
struct Issue {
    number: u64,
    title: String,
}

/// Opens (or comments on) one issue per stack and problem among
/// `messages`, and closes the stack's issues once it is `healthy`.
pub fn sync(
    agent: &ureq::Agent,
    (repo, api, token): (&str, &SecretUrl, &Token),
    stack: &str,
    host: &str,
    messages: &[Message],
    healthy: bool,
) -> Result<()> {
    let api = api.expose().trim_end_matches('/');
    let token = token.read().map_err(|e| anyhow!("no GitHub token: {e:#} (set `token_env` or `token_file`)"))?;
    let auth = format!("Bearer {}", token.expose());
    let request = |method: &str, path: &str| {
        let url = format!("{api}/repos/{repo}{path}");
        let builder = match method {
            "GET" => agent.get(&url).force_send_body(),
            "PATCH" => agent.patch(&url),
            _ => agent.post(&url),
        };
        builder
            .header("Authorization", &auth)
            .header("Accept", "application/vnd.github+json")
            .header("User-Agent", "clusterup")
    };
    let prefix = format!("clusterup: stack {stack} on {host}:");
    let open: Vec<Issue> = request("GET", "/issues?state=open&labels=clusterup&per_page=100")
        .send_empty()
        .map_err(|e| anyhow!("listing issues of {repo}: {e}"))?
        .body_mut()
        .read_json()
        .context("reading the issue list")?;
    for message in messages.iter().filter(|m| m.event.is_problem()) {
        let title = format!("{prefix} {}", message.event.name().replace('_', " "));
        let body = message.full();
        match open.iter().find(|i| i.title == title) {
            Some(issue) => {
                request("POST", &format!("/issues/{}/comments", issue.number))
                    .send_json(json!({"body": body}))
                    .map_err(|e| anyhow!("commenting on issue {}: {e}", issue.number))?;
            }
            None => {
                request("POST", "/issues")
                    .send_json(json!({"title": title, "body": body, "labels": ["clusterup"]}))
                    .map_err(|e| anyhow!("opening an issue in {repo}: {e}"))?;
            }
        }
    }
    if healthy {
        for issue in open.iter().filter(|i| i.title.starts_with(&prefix)) {
            request("POST", &format!("/issues/{}/comments", issue.number))
                .send_json(json!({"body": format!("{prefix} healthy again")}))
                .map_err(|e| anyhow!("commenting on issue {}: {e}", issue.number))?;
            request("PATCH", &format!("/issues/{}", issue.number))
                .send_json(json!({"state": "closed"}))
                .map_err(|e| anyhow!("closing issue {}: {e}", issue.number))?;
        }
    }
    Ok(())
}
