//! New version tags of a git stack, proposed as pull requests on its
//! GitHub repository: clusterup never edits a git checkout on the host.
//! One branch and pull request per target tag (`clusterup/<stack>/<service>-<tag>`),
//! a single commit editing the `image:` line; a pull request for an older
//! tag of the same service is closed once a newer one is proposed. Merging
//! is the approval: the next run deploys the commit by the git path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use git2::Oid;
use serde_json::{Value, json};

use crate::plan::classify::Plan;
use crate::plan::tags;
use crate::seams::git::{GitSource, Repo};
use crate::settings::{PullRequests, StackSettings};

/// Compose's own file names, in the order it looks for them.
const DEFAULT_FILES: [&str; 4] = ["compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml"];

/// Opens what `plan`'s tag updates call for; what was done, one line each.
pub fn propose(
    stack: &StackSettings,
    source: &GitSource,
    prs: &PullRequests,
    repo: &dyn Repo,
    commit: Oid,
    plan: &Plan,
    timeout: Duration,
) -> Result<Vec<String>> {
    let token = prs.token.read().map_err(|e| anyhow!("no GitHub token for pull requests: {e:#}"))?;
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(timeout)).build().into();
    let api = format!("{}/repos/{}", prs.api.expose().trim_end_matches('/'), prs.repo);
    let auth = format!("Bearer {}", token.expose());
    let call = |method: &str, path: &str, body: Option<Value>| -> Result<Value> {
        let url = format!("{api}{path}");
        let shown = format!("{method} {}/repos/{}{}", prs.api, prs.repo, path.split('?').next().unwrap_or(""));
        let with = |b: ureq::RequestBuilder<ureq::typestate::WithBody>| {
            b.header("Authorization", &auth)
                .header("Accept", "application/vnd.github+json")
                .header("User-Agent", "clusterup")
        };
        let mut response = match (method, body) {
            ("GET", _) => agent
                .get(&url)
                .header("Authorization", &auth)
                .header("Accept", "application/vnd.github+json")
                .header("User-Agent", "clusterup")
                .call(),
            ("PUT", Some(b)) => with(agent.put(&url)).send_json(b),
            ("PATCH", Some(b)) => with(agent.patch(&url)).send_json(b),
            (_, b) => with(agent.post(&url)).send_json(b.unwrap_or(Value::Null)),
        }
        .map_err(|e| anyhow!("{shown}: {e}"))?;
        Ok(response.body_mut().read_json().unwrap_or(Value::Null))
    };
    let open = call("GET", "/pulls?state=open&per_page=100", None)?;
    let open: Vec<(u64, String)> = open
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["number"].as_u64()?, p["head"]["ref"].as_str()?.to_string())))
        .collect();
    let mut done = Vec::new();
    for update in &plan.tag_updates {
        let Some(image) = plan.services.iter().find(|s| s.service == update.service).and_then(|s| s.image.clone())
        else {
            continue;
        };
        let repository = image.strip_suffix(&format!(":{}", update.from)).unwrap_or(&image).to_string();
        let prefix = format!("clusterup/{}/{}-", stack.name, update.service);
        let branch = format!("{prefix}{}", update.to);
        if let Some((number, _)) = open.iter().find(|(_, head)| *head == branch) {
            done.push(format!("pull request #{number} proposes {}", update.describe()));
            continue;
        }
        let (path, blob, text) = compose_file(stack, source, repo, commit, &update.service, &image)?;
        let new_text = tags::rewrite_image(&text, &update.service, &image, &format!("{repository}:{}", update.to))
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let title = format!("{}: {} -> {}", update.service, update.from, update.to);
        // A branch left by a run that stopped half way is used again.
        let _ =
            call("POST", "/git/refs", Some(json!({"ref": format!("refs/heads/{branch}"), "sha": commit.to_string()})));
        call(
            "PUT",
            &format!("/contents/{}", path.display()),
            Some(json!({
                "message": format!("{title}\n\nProposed by clusterup (follow: {:?}).", update.bump).to_lowercase(),
                "content": base64::engine::general_purpose::STANDARD.encode(new_text.as_bytes()),
                "sha": blob.to_string(),
                "branch": branch,
            })),
        )?;
        let body = format!(
            "clusterup found a newer tag for service `{}` of stack `{}`: `{}` → `{}` ({:?}).\n\n\
             Merging this pull request is the approval: the next run deploys it, health-gated, \
             with automatic rollback.",
            update.service, stack.name, update.from, update.to, update.bump
        );
        let created =
            call("POST", "/pulls", Some(json!({"title": title, "head": branch, "base": source.branch, "body": body})))?;
        let number = created["number"].as_u64().context("GitHub answered without a pull request number")?;
        done.push(format!("opened pull request #{number}: {}", update.describe()));
        for (older, _) in open.iter().filter(|(_, head)| head.starts_with(&prefix) && *head != branch) {
            call(
                "POST",
                &format!("/issues/{older}/comments"),
                Some(json!({"body": format!("Superseded by #{number}.")})),
            )?;
            call("PATCH", &format!("/pulls/{older}"), Some(json!({"state": "closed"})))?;
            done.push(format!("closed pull request #{older} (superseded by #{number})"));
        }
    }
    Ok(done)
}

/// The compose file of the stack at `commit` that holds `service`'s
/// `image:` line: its path in the repository, blob id and text.
fn compose_file(
    stack: &StackSettings,
    source: &GitSource,
    repo: &dyn Repo,
    commit: Oid,
    service: &str,
    image: &str,
) -> Result<(PathBuf, Oid, String)> {
    let names: Vec<PathBuf> = if stack.compose_files.is_empty() {
        DEFAULT_FILES.iter().map(PathBuf::from).collect()
    } else {
        stack.compose_files.clone()
    };
    for name in names {
        let path = Path::new(&source.path).join(&name);
        if let Some((blob, bytes)) = repo.blob(commit, &path)? {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if tags::rewrite_image(&text, service, image, image).is_ok() {
                return Ok((path, blob, text));
            }
        }
    }
    Err(anyhow!("no compose file of the stack has service {service}'s `image: {image}` line"))
}
