//! The routes: `/api/v1/…` and `/hooks/…`, each a plain function from a
//! request to a reply, so they are tested without a socket. Every one
//! runs the CLI's own operation (see `runs`) and answers with its report.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::{Caller, Credentials, Limiter, Scope, signed};
use super::hooks::{Push, Seen, following, same_image};
use super::runs::{Operation, Request, Runner, State};
use crate::settings::StackSettings;
use crate::state::{Outcome, StateDir};

/// How long a POST waits for its operation before answering 202, unless
/// it asks for longer (`?wait=SECONDS`, at most `MAX_WAIT`).
const GRACE: Duration = Duration::from_secs(2);
const MAX_WAIT: Duration = Duration::from_secs(600);
/// An image hook's timestamp may be this far from the server's clock.
const HOOK_SKEW: i64 = 300;

pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub header: &'a dyn Fn(&str) -> Option<String>,
    pub body: &'a [u8],
    pub peer: IpAddr,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// A page instead of JSON.
    pub html: Option<String>,
    pub set_cookie: Option<String>,
    /// 202: where to poll.
    pub location: Option<String>,
    /// 429: seconds.
    pub retry_after: Option<u64>,
    /// For the log line: who called.
    pub caller: Option<String>,
}

impl Reply {
    fn new(status: u16, body: Value) -> Reply {
        Reply { status, body, html: None, set_cookie: None, location: None, retry_after: None, caller: None }
    }

    pub fn html(status: u16, page: String) -> Reply {
        Reply { html: Some(page), ..Reply::new(status, Value::Null) }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::new(status, json!({ "error": message.into() }))
    }
}

/// Request bodies (JSON; all fields optional; unknown fields refused).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    /// One stack by name; every stack when absent.
    pub stack: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyBody {
    pub stack: Option<String>,
    /// Apply what the policy would hold back (`apply --yes`); without it,
    /// `apply --auto`.
    #[serde(default)]
    pub approve: bool,
    /// With `approve`: `--accept-data-risk`.
    #[serde(default)]
    pub accept_data_risk: bool,
    /// `--retry`: also targets that failed before.
    #[serde(default)]
    pub retry: bool,
    /// `--expect-revision COMMIT`.
    pub expect_revision: Option<String>,
    /// With `approve`: `--rebuild` of these services (empty: every built
    /// service).
    pub rebuild: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    pub stack: Option<String>,
    pub reason: Option<String>,
    /// A duration such as `2h`.
    #[serde(rename = "for")]
    pub duration: Option<String>,
    /// RFC 3339.
    pub until: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    pub stack: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    pub stack: Option<String>,
    /// A revision number, commit prefix or time; the previous good
    /// revision when absent.
    pub to: Option<String>,
    /// Recorded with the rejection of the revision rolled away from.
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageHookBody {
    /// The image pushed, `registry/repository[:tag]`: stacks with a
    /// service using it are applied (`apply --auto`).
    pub image: String,
}

/// `GET /api/v1/versions`: per stack, what it runs and what it can be
/// rolled back to.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct VersionsReport {
    pub stacks: Vec<StackVersions>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct StackVersions {
    pub stack: String,
    /// The revision the stack runs (the last that applied).
    pub deployed: Option<u64>,
    /// Revisions that applied, newest first: `rollback {to}` targets.
    pub versions: Vec<Version>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Version {
    pub revision: u64,
    pub commit: Option<String>,
    #[schemars(with = "String")]
    pub started: jiff::Timestamp,
    /// Service → image id it ran.
    pub images: BTreeMap<String, String>,
    /// Service → registry digest it ran, where known.
    pub digests: BTreeMap<String, String>,
    /// Why `apply --auto` will not return to it, if it will not.
    pub rejected: Option<String>,
}

pub struct Api {
    creds: Credentials,
    pub(super) runner: Arc<Runner>,
    stacks: Vec<StackSettings>,
    limiter: Mutex<Limiter>,
    seen: Mutex<Seen>,
    pub(super) sessions: super::ui::Sessions,
    /// Served over TLS: session cookies are marked Secure.
    pub(super) secure: bool,
    pub(super) fleet: super::fleet::Fleet,
}

impl Api {
    pub fn new(
        creds: Credentials,
        runner: Arc<Runner>,
        stacks: Vec<StackSettings>,
        secure: bool,
        fleet: super::fleet::Fleet,
    ) -> Api {
        Api {
            creds,
            runner,
            stacks,
            limiter: Mutex::default(),
            seen: Mutex::default(),
            sessions: Default::default(),
            secure,
            fleet,
        }
    }

    pub fn handle(&self, call: &Call) -> Reply {
        let Some(known) = ROUTES.iter().find(|r| r.answers(call.method, call.path)) else {
            return Reply::error(404, format!("no such endpoint: {} {}", call.method, call.path));
        };
        match (known.scope, call.method, call.path) {
            (None, _, "/hooks/github") => self.github(call),
            (None, _, "/hooks/image") => self.image(call),
            (None, _, "/") => self.page(call),
            (None, _, "/fleet") => self.fleet_page(call),
            (None, "GET", "/login") => self.login_page(),
            (None, "POST", "/login") => self.login(call),
            (None, _, "/logout") => self.logout(call),
            (None, _, path) if path.starts_with("/ui/") => self.action(call, &path["/ui/".len()..]),
            (None, _, _) => Reply::new(200, json!({ "ok": true, "version": env!("CARGO_PKG_VERSION") })),
            (Some(need), _, path) => match self.authorize(call, need) {
                Ok(caller) => {
                    let route = path.strip_prefix("/api/v1/").unwrap_or(path);
                    let mut reply = self.route(call, route, &caller);
                    reply.caller = Some(caller.name);
                    reply
                }
                Err(reply) => *reply,
            },
        }
    }

    pub(super) fn authorize(&self, call: &Call, need: Scope) -> Result<Caller, Box<Reply>> {
        let mut limiter = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(wait) = limiter.refused(call.peer, now) {
            let mut reply = Reply::error(429, "too many failed attempts from this address; try again later");
            reply.retry_after = Some(wait.as_secs().max(1));
            return Err(Box::new(reply));
        }
        match self.creds.caller((call.header)("authorization").as_deref()) {
            None => {
                limiter.failed(call.peer, now);
                Err(Box::new(Reply::error(401, "a bearer token is required (Authorization: Bearer TOKEN)")))
            }
            Some(c) if c.scope < need => {
                Err(Box::new(Reply::error(403, format!("token {} has the read scope; this needs operate", c.name))))
            }
            Some(c) => Ok(c),
        }
    }

    fn route(&self, call: &Call, route: &str, caller: &Caller) -> Reply {
        let query = Query::parse(call.query);
        if let Some(stack) = query.get("stack").or_else(|| stack_in(call.body))
            && !self.stacks.iter().any(|s| s.name == stack)
        {
            return Reply::error(404, format!("no stack named {stack:?} here"));
        }
        match (call.method, route) {
            ("GET", "status") => self.read(vec!["status".into()], query.get("stack")),
            ("GET", "history") => self.read(vec!["rollback".into(), "--list".into()], query.get("stack")),
            ("GET", "versions") => Reply::new(200, to_value(&self.versions(query.get("stack")))),
            ("GET", "operations") => Reply::new(200, json!({ "operations": self.runner.recent() })),
            ("GET", r) if r.starts_with("operations/") => {
                match r["operations/".len()..].parse().ok().and_then(|id| self.runner.get(id)) {
                    Some(op) => Reply::new(200, to_value(&op)),
                    None => Reply::error(404, "no such operation (finished ones are kept for a while)"),
                }
            }
            ("POST", "check") => self.post(call, &query, caller, check_args),
            ("POST", "apply") => self.post(call, &query, caller, apply_args),
            ("POST", "pause") => self.post(call, &query, caller, pause_args),
            ("POST", "resume") => self.post(call, &query, caller, resume_args),
            ("POST", "rollback") => self.post(call, &query, caller, rollback_args),
            (m, r) => Reply::error(404, format!("no such endpoint: {m} /api/v1/{r}")),
        }
    }

    /// A read runs to its end; the body is the CLI's report itself.
    fn read(&self, mut args: Vec<String>, stack: Option<String>) -> Reply {
        args.extend(stack.map(|s| format!("--stack={s}")));
        let op = self.runner.run_now(&Request { args, stacks: Vec::new(), exclusive: false, by: "api".into() });
        match (op.exit_code, op.report) {
            (Some(code), Some(report)) => {
                let status = if code == 2 { 400 } else { 200 };
                Reply::new(status, report)
            }
            _ => Reply::error(500, op.error.unwrap_or_else(|| "the run ended without a report".into())),
        }
    }

    /// Starts an operation from a JSON body; answers with it when it ends
    /// within the wait, else 202 and where to poll.
    fn post<B: serde::de::DeserializeOwned + Default>(
        &self,
        call: &Call,
        query: &Query,
        caller: &Caller,
        args: impl FnOnce(B) -> Planned,
    ) -> Reply {
        let body: B = if call.body.iter().all(u8::is_ascii_whitespace) {
            B::default()
        } else {
            match serde_json::from_slice(call.body) {
                Ok(b) => b,
                Err(e) => return Reply::error(400, format!("request body: {e}")),
            }
        };
        let (args, stack, exclusive) = match args(body) {
            Ok(a) => a,
            Err(e) => return Reply::error(400, e),
        };
        let request =
            Request { args, stacks: stack.into_iter().collect(), exclusive, by: format!("api:{}", caller.name) };
        let wait = match query.get("wait").map(|w| w.parse::<u64>()) {
            None => GRACE,
            Some(Ok(s)) => Duration::from_secs(s).min(MAX_WAIT),
            Some(Err(_)) => return Reply::error(400, "wait: a number of seconds"),
        };
        let locks = exclusive.then(|| self.runner.locks_of(&request));
        let id = match self.runner.start(request) {
            Ok(id) => id,
            Err(busy) => return Reply::new(409, to_value(&busy)),
        };
        // Waiting longer than the grace means waiting for the end.
        let locks = locks.filter(|_| wait <= GRACE);
        let op = self.runner.wait(id, Instant::now() + wait, locks.as_deref()).expect("just started");
        operation_reply(op)
    }

    fn versions(&self, only: Option<String>) -> VersionsReport {
        let stacks = self.stacks.iter().filter(|s| only.as_ref().is_none_or(|o| *o == s.name));
        VersionsReport { stacks: stacks.map(versions_of).collect() }
    }

    fn github(&self, call: &Call) -> Reply {
        if let Some(reply) = self.refused(call) {
            return reply;
        }
        let Some(signature) = (call.header)("x-hub-signature-256") else {
            return self.hook_refused(call, 401, "unsigned delivery (no X-Hub-Signature-256)");
        };
        let signed_for =
            |stack: &str| self.creds.github_secret(stack).is_some_and(|s| signed(s, call.body, &signature));
        let any_signed = signed_for("*") || self.stacks.iter().any(|s| signed_for(&s.name));
        if !any_signed {
            return self.hook_refused(call, 401, "the signature matches no configured secret");
        }
        let delivery = (call.header)("x-github-delivery").unwrap_or_default();
        if delivery.is_empty() || !self.seen.lock().unwrap_or_else(|e| e.into_inner()).first(&delivery) {
            return self.hook_refused(call, 409, "delivery already received (or without X-GitHub-Delivery)");
        }
        match (call.header)("x-github-event").as_deref() {
            Some("ping") => return Reply::new(200, json!({ "pong": true })),
            Some("push") => {}
            other => return Reply::new(200, json!({ "ignored": format!("event {}", other.unwrap_or("?")) })),
        }
        let push: Push = match serde_json::from_slice(call.body) {
            Ok(p) => p,
            Err(e) => return Reply::error(400, format!("push payload: {e}")),
        };
        let stacks: Vec<String> = following(&self.stacks, &push)
            .into_iter()
            .filter(|s| signed_for(&s.name))
            .map(|s| s.name.clone())
            .collect();
        self.apply_each(stacks, "github")
    }

    fn image(&self, call: &Call) -> Reply {
        if let Some(reply) = self.refused(call) {
            return reply;
        }
        let Some(secret) = self.creds.image_secret() else {
            return Reply::error(404, "the image hook is not configured (no image secret)");
        };
        let (Some(stamp), Some(signature)) =
            ((call.header)("x-clusterup-timestamp"), (call.header)("x-clusterup-signature-256"))
        else {
            return self.hook_refused(
                call,
                401,
                "unsigned delivery (X-Clusterup-Timestamp, X-Clusterup-Signature-256)",
            );
        };
        let fresh = stamp.parse::<i64>().is_ok_and(|t| (t - jiff::Timestamp::now().as_second()).abs() <= HOOK_SKEW);
        let mut message = format!("{stamp}.").into_bytes();
        message.extend_from_slice(call.body);
        if !fresh || !signed(secret, &message, &signature) {
            return self.hook_refused(
                call,
                401,
                "the signature does not match, or its timestamp is not within 5 minutes",
            );
        }
        if !self.seen.lock().unwrap_or_else(|e| e.into_inner()).first(&signature) {
            return self.hook_refused(call, 409, "delivery already received");
        }
        let body: ImageHookBody = match serde_json::from_slice(call.body) {
            Ok(b) => b,
            Err(e) => return Reply::error(400, format!("request body: {e}")),
        };
        let status = self.runner.run_now(&Request {
            args: vec!["status".into()],
            stacks: Vec::new(),
            exclusive: false,
            by: "hook".into(),
        });
        let Some(report) = status.report else {
            return Reply::error(500, status.error.unwrap_or_else(|| "reading the stacks' images failed".into()));
        };
        let stacks = stacks_using(&report, &body.image);
        self.apply_each(stacks, "image hook")
    }

    fn apply_each(&self, stacks: Vec<String>, by: &str) -> Reply {
        let mut operations = Vec::new();
        let mut queued = Vec::new();
        for stack in &stacks {
            match self.runner.apply_soon(stack, by) {
                Some(id) => operations.push(id),
                None => queued.push(stack.clone()),
            }
        }
        Reply::new(202, json!({ "stacks": stacks, "operations": operations, "queued": queued }))
    }

    fn refused(&self, call: &Call) -> Option<Reply> {
        let wait = self.limiter.lock().unwrap_or_else(|e| e.into_inner()).refused(call.peer, Instant::now())?;
        let mut reply = Reply::error(429, "too many refused deliveries from this address; try again later");
        reply.retry_after = Some(wait.as_secs().max(1));
        Some(reply)
    }

    fn hook_refused(&self, call: &Call, status: u16, why: &str) -> Reply {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner()).failed(call.peer, Instant::now());
        super::log(&format!("{} {}: refused: {why}", call.peer, call.path));
        Reply::error(status, why)
    }
}

fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).expect("plain data serializes")
}

/// An operation's command line, the stack it names, and whether it takes
/// the stack's lock; or why the request is refused.
pub type Planned = Result<(Vec<String>, Option<String>, bool), String>;

fn stack_arg(stack: &Option<String>) -> Vec<String> {
    stack.iter().map(|s| format!("--stack={s}")).collect()
}

pub fn check_args(b: CheckBody) -> Planned {
    let mut args = vec!["check".into(), "--only".into()];
    args.extend(stack_arg(&b.stack));
    Ok((args, b.stack, false))
}

pub fn apply_args(b: ApplyBody) -> Planned {
    let mut args = vec!["apply".to_string(), if b.approve { "--yes" } else { "--auto" }.to_string()];
    if (b.accept_data_risk || b.rebuild.is_some()) && !b.approve {
        return Err("accept_data_risk and rebuild need approve: true".to_string());
    }
    args.extend(b.accept_data_risk.then(|| "--accept-data-risk".to_string()));
    args.extend(b.retry.then(|| "--retry".to_string()));
    args.extend(b.expect_revision.map(|c| format!("--expect-revision={c}")));
    args.extend(stack_arg(&b.stack));
    if let Some(services) = b.rebuild {
        args.push("--rebuild".into());
        args.push("--".into());
        args.extend(services);
    }
    Ok((args, b.stack, true))
}

pub fn pause_args(b: PauseBody) -> Planned {
    let mut args = vec!["pause".to_string()];
    args.extend(b.reason.map(|r| format!("--reason={r}")));
    args.extend(b.duration.map(|d| format!("--for={d}")));
    args.extend(b.until.map(|u| format!("--until={u}")));
    args.extend(stack_arg(&b.stack));
    Ok((args, b.stack, false))
}

pub fn resume_args(b: ResumeBody) -> Planned {
    let mut args = vec!["resume".to_string()];
    args.extend(stack_arg(&b.stack));
    Ok((args, b.stack, false))
}

pub fn rollback_args(b: RollbackBody) -> Planned {
    let mut args = vec!["rollback".to_string(), "--yes".to_string()];
    args.extend(b.to.map(|t| format!("--to={t}")));
    args.extend(b.reason.map(|r| format!("--reason={r}")));
    args.extend(stack_arg(&b.stack));
    Ok((args, b.stack, true))
}

/// 200 with the finished operation (409 when a lock was held, 400 for a
/// usage error), or 202 while it runs.
fn operation_reply(op: Operation) -> Reply {
    let status = match (&op.state, op.exit_code) {
        (State::Running, _) => 202,
        (_, Some(75)) => 409,
        (_, Some(2)) => 400,
        _ => 200,
    };
    let location = (status == 202).then(|| format!("/api/v1/operations/{}", op.id));
    let mut reply = Reply::new(status, to_value(&op));
    reply.location = location;
    reply
}

fn versions_of(stack: &StackSettings) -> StackVersions {
    let journal = StateDir::existing(&stack.state_dir).and_then(|s| s.journal().ok()).unwrap_or_default();
    let good: Vec<_> = journal.revisions.iter().filter(|r| r.outcome == Some(Outcome::Applied)).collect();
    let versions = good
        .iter()
        .rev()
        .map(|r| {
            let digests = r
                .plan
                .services
                .iter()
                .filter_map(|s| Some((s.service.clone(), s.available_digest.clone().or(s.running_digest.clone())?)))
                .collect();
            let rejected = r
                .plan
                .commit
                .as_deref()
                .and_then(|c| journal.rejected_commit(c))
                .or_else(|| journal.rejections.iter().rev().find(|x| x.revision == r.id))
                .map(|x| x.reason.clone());
            Version {
                revision: r.id,
                commit: r.plan.commit.clone(),
                started: r.started,
                images: r.images.clone(),
                digests,
                rejected,
            }
        })
        .collect();
    StackVersions { stack: stack.name.clone(), deployed: good.last().map(|r| r.id), versions }
}

/// The stacks a `status` report shows running `image`.
fn stacks_using(report: &Value, image: &str) -> Vec<String> {
    use super::page::{each, items, text};
    let uses = |r: &&Value| items(r, "/services").any(|s| same_image(image, text(s, "image")));
    each(report).into_iter().filter(uses).map(|r| text(r, "stack").to_string()).collect()
}

/// The `stack` a JSON body names, to refuse an unknown one before running.
fn stack_in(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body).ok()?.get("stack")?.as_str().map(String::from)
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Query {
        Query(form_urlencoded::parse(query.as_bytes()).into_owned().collect())
    }

    fn get(&self, key: &str) -> Option<String> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }
}

/// One endpoint: the scope it needs, and what `docs/api.md` says of it.
pub struct Route {
    pub method: &'static str,
    /// `{id}`: any last segment.
    pub path: &'static str,
    /// None: no token (health; the hooks check their own signatures).
    pub scope: Option<Scope>,
    #[cfg_attr(not(test), allow(dead_code))]
    pub body: Option<fn() -> schemars::Schema>,
    #[cfg_attr(not(test), allow(dead_code))]
    pub answer: &'static str,
    #[cfg_attr(not(test), allow(dead_code))]
    pub about: &'static str,
}

impl Route {
    fn answers(&self, method: &str, path: &str) -> bool {
        method == self.method
            && match self.path.strip_suffix("{id}") {
                Some(prefix) => path.strip_prefix(prefix).is_some_and(|id| !id.is_empty() && !id.contains('/')),
                None => path == self.path,
            }
    }
}

const OPERATION: &str = "`Operation`: 200 when it ended within the wait, else 202 with `Location`; 409 `Busy` or exit 75; 400 on a usage error (exit 2)";

const PAGE: &str = "HTML";

pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/",
        scope: None,
        body: None,
        answer: PAGE,
        about: "The host page (a session from `/login`; else a redirect there). `?part=main`: the page's `<main>` alone, which its script fetches every 15 s.",
    },
    Route {
        method: "GET",
        path: "/fleet",
        scope: None,
        body: None,
        answer: PAGE,
        about: "This host and the peers in the credentials file (`peer NAME URL TOKEN`, a read token of theirs) side by side: per stack the deployed revision and commit, pending, paused, the last outcome, whether it differs from what most hosts run; a peer that does not answer, with when it last did.",
    },
    Route { method: "GET", path: "/login", scope: None, body: None, answer: PAGE, about: "The sign-in form." },
    Route {
        method: "POST",
        path: "/login",
        scope: None,
        body: None,
        answer: "303 to `/` with a session cookie, or 401",
        about: "Form field `token`: a read or operate token. The session (12 h) holds the token's name and scope, not the token.",
    },
    Route {
        method: "POST",
        path: "/logout",
        scope: None,
        body: None,
        answer: "303 to `/login`",
        about: "Ends the session (form field `csrf`).",
    },
    Route {
        method: "POST",
        path: "/ui/pause",
        scope: None,
        body: None,
        answer: "303 to `/`",
        about: "The page's pause form: `stack`, `reason`, `for`, `csrf`. An operate session and its CSRF token, else 403.",
    },
    Route {
        method: "POST",
        path: "/ui/resume",
        scope: None,
        body: None,
        answer: "303 to `/`",
        about: "The page's resume form: `stack`, `csrf`.",
    },
    Route {
        method: "POST",
        path: "/ui/apply",
        scope: None,
        body: None,
        answer: "303 to `/`",
        about: "The page's apply form (`apply --auto`): `stack`, `csrf`.",
    },
    Route {
        method: "POST",
        path: "/ui/check",
        scope: None,
        body: None,
        answer: "303 to `/`",
        about: "The page's check: what is pending and what `--auto` would hold back and why, shown once on the page (`stack`, `csrf`).",
    },
    Route {
        method: "POST",
        path: "/ui/approve",
        scope: None,
        body: None,
        answer: "303 to `/`",
        about: "The page's apply with approval (`apply --yes`): `approve=yes` (the CLI's confirmation), `accept_data_risk=yes` (its data-risk confirmation), `stack`, `csrf`.",
    },
    Route {
        method: "POST",
        path: "/ui/rollback",
        scope: None,
        body: None,
        answer: "303 to `/`",
        about: "The page's rollback form: `stack`, `to`, `reason`, `csrf`.",
    },
    Route {
        method: "GET",
        path: "/api/v1/health",
        scope: None,
        body: None,
        answer: "`{\"ok\": true, \"version\"}`",
        about: "The server answers (for container health checks).",
    },
    Route {
        method: "GET",
        path: "/api/v1/status",
        scope: Some(Scope::Read),
        body: None,
        answer: "`clusterup status --json`",
        about: "Each stack's services, pause, last run, revisions. `?stack=NAME`.",
    },
    Route {
        method: "GET",
        path: "/api/v1/history",
        scope: Some(Scope::Read),
        body: None,
        answer: "`clusterup rollback --list --json`",
        about: "Every revision: trigger, commit, outcome, started and finished. `?stack=NAME`.",
    },
    Route {
        method: "GET",
        path: "/api/v1/versions",
        scope: Some(Scope::Read),
        body: None,
        answer: "`VersionsReport`",
        about: "Per stack, the deployed revision and the revisions a rollback can return to (commit, image ids, digests, rejection). `?stack=NAME`.",
    },
    Route {
        method: "GET",
        path: "/api/v1/operations",
        scope: Some(Scope::Read),
        body: None,
        answer: "`{\"operations\": [Operation]}`",
        about: "Operations started by this server, newest first (the last 200 finished).",
    },
    Route {
        method: "GET",
        path: "/api/v1/operations/{id}",
        scope: Some(Scope::Read),
        body: None,
        answer: "`Operation`",
        about: "One operation: poll it until `state` is `finished`.",
    },
    Route {
        method: "POST",
        path: "/api/v1/check",
        scope: Some(Scope::Read),
        body: Some(|| schemars::schema_for!(CheckBody)),
        answer: OPERATION,
        about: "`clusterup check --only`: changes nothing.",
    },
    Route {
        method: "POST",
        path: "/api/v1/apply",
        scope: Some(Scope::Operate),
        body: Some(|| schemars::schema_for!(ApplyBody)),
        answer: OPERATION,
        about: "`apply --auto`, or with `approve: true` `apply --yes`.",
    },
    Route {
        method: "POST",
        path: "/api/v1/pause",
        scope: Some(Scope::Operate),
        body: Some(|| schemars::schema_for!(PauseBody)),
        answer: OPERATION,
        about: "`clusterup pause`; `by` is `api:<token name>`.",
    },
    Route {
        method: "POST",
        path: "/api/v1/resume",
        scope: Some(Scope::Operate),
        body: Some(|| schemars::schema_for!(ResumeBody)),
        answer: OPERATION,
        about: "`clusterup resume`.",
    },
    Route {
        method: "POST",
        path: "/api/v1/rollback",
        scope: Some(Scope::Operate),
        body: Some(|| schemars::schema_for!(RollbackBody)),
        answer: OPERATION,
        about: "`clusterup rollback --yes [--to REV] [--reason TEXT]`.",
    },
    Route {
        method: "POST",
        path: "/hooks/github",
        scope: None,
        body: None,
        answer: "202 `{\"stacks\", \"operations\", \"queued\"}`",
        about: "A GitHub `push` delivery, signed (`X-Hub-Signature-256`, the stack's `github` secret): `apply --auto` of the stacks following that repository and branch. `ping` answers 200. A delivery id seen before: 409.",
    },
    Route {
        method: "POST",
        path: "/hooks/image",
        scope: None,
        body: Some(|| schemars::schema_for!(ImageHookBody)),
        answer: "202 `{\"stacks\", \"operations\", \"queued\"}`",
        about: "An image was pushed: `apply --auto` of the stacks running it. Signed: `X-Clusterup-Timestamp: <unix seconds>` and `X-Clusterup-Signature-256: sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\" under the image secret>`, within 5 minutes; a replay gets 409.",
    },
];

/// `docs/api.md`: the endpoints and the JSON they take and give.
#[cfg(test)]
pub fn reference() -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "# The `clusterup serve` API, v1\n\nGenerated from `src/serve/api.rs` by `scripts/gen-docs.sh`; do not edit.\n\n\
         Every `/api/v1/` call but `health` needs `Authorization: Bearer <token>`; a token has the `read` or the \
         `operate` scope (see README, \"Control API\"). Wrong or missing: 401; the wrong scope: 403; 30 failures \
         from one address within a minute: 429 until the minute has passed. Bodies are JSON objects (unknown \
         fields refused), at most 64 KiB (hooks: 5 MiB). A POST waits up to 2 s for its operation (`?wait=SECONDS`, \
         up to 600, to wait for its end). Every operation is the command line's own, run with `--json`: its \
         `report` is that command's report (`docs/report.schema.json`) and its `exit_code` the documented exit code.\n\n\
         | Method | Path | Scope | Answer | What it does |\n|---|---|---|---|---|\n",
    );
    for r in ROUTES {
        let scope = r.scope.map_or("none", |s| if s == Scope::Read { "read" } else { "operate" });
        let _ = writeln!(out, "| {} | `{}` | {scope} | {} | {} |", r.method, r.path, r.answer, r.about);
    }
    let schema = |title: &str, s: schemars::Schema| {
        format!("\n## {title}\n\n```json\n{}\n```\n", serde_json::to_string_pretty(&s).expect("a schema serializes"))
    };
    for r in ROUTES {
        if let Some(body) = r.body {
            out.push_str(&schema(&format!("{} {} body", r.method, r.path), body()));
        }
    }
    out.push_str(&schema("Operation", schemars::schema_for!(Operation)));
    out.push_str(&schema("Busy", schemars::schema_for!(super::runs::Busy)));
    out.push_str(&schema("VersionsReport", schemars::schema_for!(VersionsReport)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented routes are the routes: each answers with something
    /// other than "no such endpoint".
    #[test]
    fn every_documented_route_is_answered() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("compose.yaml"), "services: {}\n").unwrap();
        let stack = crate::settings::from_directory(&dir, Some(&tmp.path().join("state"))).unwrap();
        let mut creds = Credentials::default();
        creds.add_test_token("t", Scope::Operate, "operate-token-0123456789");
        let runner = Runner::new("/bin/true".into(), Vec::new(), BTreeMap::new());
        let api = Api::new(creds, runner, vec![stack], false, Default::default());
        let header = |name: &str| (name == "authorization").then(|| "Bearer operate-token-0123456789".to_string());
        for r in ROUTES {
            let path = r.path.replace("{id}", "1");
            let call = Call {
                method: r.method,
                path: &path,
                query: "",
                header: &header,
                body: b"{}",
                peer: [127, 0, 0, 1].into(),
            };
            let reply = api.handle(&call);
            let unknown = reply.body["error"].as_str().is_some_and(|e| e.starts_with("no such endpoint"))
                || reply.html.as_deref().is_some_and(|h| h.contains("no action"));
            assert!(!unknown, "{} {}: {:?}", r.method, r.path, reply);
        }
        let call = Call {
            method: "GET",
            path: "/api/v1/nothing",
            query: "",
            header: &header,
            body: b"",
            peer: [127, 0, 0, 1].into(),
        };
        assert_eq!(api.handle(&call).status, 404);
    }
}
