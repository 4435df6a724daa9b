//! The fleet view: this host and its peers side by side, read from each
//! peer's `GET /api/v1/status` with a read token (nothing else is asked of
//! them). A stack whose deployed version differs from what most hosts run
//! is marked; a peer that does not answer is shown with when it last did.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde_json::Value;

use super::page::{each, items, text};
use crate::redact::Secret;

/// Another host's `serve`, from the credentials file (`peer NAME URL
/// TOKEN`): its read token is a secret like any other.
pub struct Peer {
    pub name: String,
    pub url: String,
    pub token: Secret,
}

/// A peer is given this long to answer: the page waits for the slowest.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub struct StackView {
    pub stack: String,
    pub revision: Option<u64>,
    pub commit: Option<String>,
    /// What the stack runs, to compare across hosts: the commit, else the
    /// services' digests.
    pub version: String,
    pub pending: u64,
    pub paused: bool,
    pub last_outcome: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HostView {
    pub host: String,
    /// None: it answered now. Some: why not, and when it last did.
    pub unreachable: Option<(String, Option<Timestamp>)>,
    /// What it runs; for an unreachable host, what it ran when it last
    /// answered (a host that is down still tells what most hosts run).
    pub stacks: Vec<StackView>,
}

/// The stacks of a `status` report, as the fleet view compares them.
pub fn stacks_of(status: &Value) -> Vec<StackView> {
    each(status)
        .into_iter()
        .filter(|s| s.get("error").is_none())
        .map(|s| {
            let deployed = s.get("deployed").filter(|d| d.is_object());
            let commit = deployed.and_then(|d| d.get("commit")).and_then(Value::as_str).map(String::from);
            let digests: Vec<String> =
                items(s, "/services").map(|v| format!("{}={}", text(v, "service"), text(v, "digest"))).collect();
            let last_outcome = s
                .get("revisions")
                .and_then(Value::as_array)
                .and_then(|r| r.iter().max_by_key(|r| r.get("id").and_then(Value::as_u64)))
                .map(|r| r.get("outcome").and_then(Value::as_str).unwrap_or("unfinished").to_string());
            StackView {
                stack: text(s, "stack").to_string(),
                revision: deployed.and_then(|d| d.get("revision")).and_then(Value::as_u64),
                version: commit.clone().unwrap_or_else(|| digests.join(" ")),
                commit,
                pending: s.pointer("/last_run/pending").and_then(Value::as_u64).unwrap_or(0),
                paused: s.get("paused").is_some_and(Value::is_object),
                last_outcome,
            }
        })
        .collect()
}

/// Per stack, the version most hosts run, an unreachable one by what it
/// last ran (ties: the smallest, so the answer does not change from one
/// look to the next).
pub fn common_versions(hosts: &[HostView]) -> BTreeMap<String, String> {
    let mut counts: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for h in hosts {
        for s in &h.stacks {
            *counts.entry(&s.stack).or_default().entry(&s.version).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .filter_map(|(stack, versions)| {
            let top = versions.values().max().copied()?;
            let version = versions.into_iter().find(|(_, n)| *n == top)?.0;
            Some((stack.to_string(), version.to_string()))
        })
        .collect()
}

#[derive(Default)]
pub struct Fleet {
    pub peers: Vec<Peer>,
    last_seen: Mutex<BTreeMap<String, (Timestamp, Vec<StackView>)>>,
}

impl Fleet {
    pub fn new(peers: Vec<Peer>) -> Fleet {
        Fleet { peers, last_seen: Mutex::default() }
    }

    /// This host (`own`, its `status` report) and every peer, asked at once.
    pub fn gather(&self, own: (&str, &Value)) -> Vec<HostView> {
        let mut hosts = vec![HostView { host: own.0.to_string(), unreachable: None, stacks: stacks_of(own.1) }];
        let answers: Vec<(String, Result<Value>)> = std::thread::scope(|scope| {
            let asks: Vec<_> = self.peers.iter().map(|p| (p.name.clone(), scope.spawn(move || ask(p)))).collect();
            asks.into_iter()
                .map(|(name, ask)| (name, ask.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the request failed")))))
                .collect()
        });
        let mut seen = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
        for (name, answer) in answers {
            match answer {
                Ok(status) => {
                    let stacks = stacks_of(&status);
                    seen.insert(name.clone(), (Timestamp::now(), stacks.clone()));
                    hosts.push(HostView { host: name, unreachable: None, stacks });
                }
                Err(e) => {
                    let (last, stacks) = seen.get(&name).cloned().map_or((None, Vec::new()), |(t, s)| (Some(t), s));
                    // The cause alone (refused, timed out, 401): the URL is
                    // the peer's row already.
                    let why = crate::redact::scrub(&e.root_cause().to_string());
                    hosts.push(HostView { host: name, unreachable: Some((why, last)), stacks });
                }
            }
        }
        hosts
    }
}

fn ask(peer: &Peer) -> Result<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(PEER_TIMEOUT)).build().into();
    let url = format!("{}/api/v1/status", peer.url.trim_end_matches('/'));
    let mut response = agent
        .get(&url)
        .header("Authorization", format!("Bearer {}", peer.token.expose()))
        .call()
        .with_context(|| format!("asking {url}"))?;
    response.body_mut().read_json::<Value>().with_context(|| format!("reading {url}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(name: &str, commit: &str) -> HostView {
        let status = json!({"stack": "shop", "deployed": {"revision": 3, "commit": commit}, "paused": null,
                            "last_run": {"pending": 1}, "services": [], "revisions": [{"id": 3, "outcome": "applied"}]});
        HostView { host: name.into(), unreachable: None, stacks: stacks_of(&status) }
    }

    #[test]
    fn the_version_most_hosts_run_is_the_common_one_an_unreachable_host_by_what_it_last_ran() {
        let mut hosts = vec![host("a", "c2"), host("b", "c1"), host("c", "c2")];
        assert_eq!(common_versions(&hosts)["shop"], "c2");
        let s = &hosts[1].stacks[0];
        assert_eq!((s.revision, s.pending, s.paused, s.last_outcome.as_deref()), (Some(3), 1, false, Some("applied")));
        hosts[2].unreachable = Some(("down".into(), None));
        assert_eq!(common_versions(&hosts)["shop"], "c2", "c last ran c2");
        hosts[2].stacks.clear();
        assert_eq!(common_versions(&hosts)["shop"], "c1", "a tie: the smallest");
    }
}
