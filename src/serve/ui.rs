//! The browser's way in: a token posted once at `/login` becomes a
//! session cookie (HttpOnly, SameSite=Strict; the token itself is never
//! stored in the browser), and every form carries the session's CSRF
//! token, so a page elsewhere cannot post on the operator's behalf. The
//! actions are the API's own operations.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::api::{
    Api, ApplyBody, Call, CheckBody, PauseBody, Planned, Reply, ResumeBody, RollbackBody, apply_args, check_args,
    pause_args, resume_args, rollback_args,
};
use super::auth::{Caller, Scope};
use super::page::{self, Viewer};
use super::runs::{Request, State};

const COOKIE: &str = "clusterup_session";
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long an action from the page waits for its operation before the
/// page says it is still running.
const ACTION_WAIT: Duration = Duration::from_secs(60);

struct Session {
    caller: Caller,
    csrf: String,
    expires: Instant,
    /// What the last action did, shown once.
    notice: Option<String>,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<BTreeMap<String, Session>>,
}

fn random_hex() -> String {
    crate::redact::hex(&crate::redact::random_key())
}

impl Sessions {
    fn start(&self, caller: Caller) -> String {
        let id = random_hex();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        map.insert(id.clone(), Session { caller, csrf: random_hex(), expires: now + LIFETIME, notice: None });
        id
    }

    /// The session a request's cookie names: its id, caller and CSRF token.
    fn of(&self, call: &Call) -> Option<(String, Caller, String)> {
        let cookies = (call.header)("cookie")?;
        let id = cookies.split(';').find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")).map(str::to_string))?;
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get(&id).filter(|s| s.expires > Instant::now())?;
        Some((id.clone(), s.caller.clone(), s.csrf.clone()))
    }

    fn notice(&self, id: &str, text: Option<String>) -> Option<String> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get_mut(id)?;
        match text {
            Some(t) => {
                s.notice = Some(t);
                None
            }
            None => s.notice.take(),
        }
    }

    fn end(&self, id: &str) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

fn redirect(to: &str) -> Reply {
    let mut reply = Reply::html(303, String::new());
    reply.location = Some(to.to_string());
    reply
}

fn form(body: &[u8]) -> BTreeMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

impl Api {
    /// `GET /`: the host page, or the way to sign in.
    pub(super) fn page(&self, call: &Call) -> Reply {
        let Some((id, caller, csrf)) = self.sessions.of(call) else { return redirect("/login") };
        let read = |args: &[&str]| {
            let request = Request {
                args: args.iter().map(|a| a.to_string()).collect(),
                stacks: Vec::new(),
                exclusive: false,
                by: "page".into(),
            };
            self.runner.run_now(&request).report.unwrap_or(Value::Null)
        };
        let (status, history) = (read(&["status"]), read(&["rollback", "--list"]));
        let viewer = Viewer { name: &caller.name, operate: caller.scope == Scope::Operate, csrf: &csrf };
        let part = call.query.split('&').any(|p| p == "part=main");
        let notice = if part { None } else { self.sessions.notice(&id, None) };
        let html = if part {
            page::main(&status, &history, &viewer, None)
        } else {
            page::host(&status, &history, &viewer, notice.as_deref())
        };
        let mut reply = Reply::html(200, html);
        reply.caller = Some(caller.name);
        reply
    }

    /// `GET /fleet`: this host and its peers side by side.
    pub(super) fn fleet_page(&self, call: &Call) -> Reply {
        let Some((_, caller, csrf)) = self.sessions.of(call) else { return redirect("/login") };
        let request = Request { args: vec!["status".into()], stacks: Vec::new(), exclusive: false, by: "page".into() };
        let status = self.runner.run_now(&request).report.unwrap_or(Value::Null);
        let hosts = self.fleet.gather((&crate::notify::host(), &status));
        let common = super::fleet::common_versions(&hosts);
        let viewer = Viewer { name: &caller.name, operate: caller.scope == Scope::Operate, csrf: &csrf };
        let html = if call.query.split('&').any(|p| p == "part=main") {
            page::fleet_main(&hosts, &common)
        } else {
            page::fleet(&hosts, &common, &viewer)
        };
        let mut reply = Reply::html(200, html);
        reply.caller = Some(caller.name);
        reply
    }

    pub(super) fn login_page(&self) -> Reply {
        Reply::html(200, page::login(None))
    }

    /// `POST /login`: a valid token starts a session; wrong ones count
    /// against the address like a wrong bearer token.
    pub(super) fn login(&self, call: &Call) -> Reply {
        let token = form(call.body).remove("token").unwrap_or_default();
        let header = format!("Bearer {token}");
        let auth = |name: &str| (name == "authorization").then(|| header.clone());
        let as_bearer = Call { header: &auth, ..*call };
        match self.authorize(&as_bearer, Scope::Read) {
            Ok(caller) => {
                let name = caller.name.clone();
                let id = self.sessions.start(caller);
                let secure = if self.secure { "; Secure" } else { "" };
                let mut reply = redirect("/");
                reply.set_cookie = Some(format!(
                    "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
                    LIFETIME.as_secs()
                ));
                reply.caller = Some(name);
                reply
            }
            Err(refused) => Reply::html(refused.status, page::login(Some("That token is not known here."))),
        }
    }

    pub(super) fn logout(&self, call: &Call) -> Reply {
        if let Some((id, _, csrf)) = self.sessions.of(call)
            && form(call.body).get("csrf") == Some(&csrf)
        {
            self.sessions.end(&id);
        }
        let mut reply = redirect("/login");
        reply.set_cookie = Some(format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"));
        reply
    }

    /// `POST /ui/<action>`: an operate session, the form's CSRF token, then
    /// the same operation the API runs.
    pub(super) fn action(&self, call: &Call, action: &str) -> Reply {
        let Some((id, caller, csrf)) = self.sessions.of(call) else {
            return Reply::html(403, "<p>Refused: no session. <a href=\"/login\">Sign in</a>.</p>\n".into());
        };
        let mut fields = form(call.body);
        if fields.get("csrf") != Some(&csrf) {
            super::log(&format!("{} {}: refused: a form without this session's CSRF token", call.peer, call.path));
            return Reply::html(403, "<p>Refused: this form did not come from this page.</p>\n".into());
        }
        if caller.scope != Scope::Operate {
            return Reply::html(
                403,
                format!("<p>Refused: token {} has the read scope.</p>\n", page::esc(&caller.name)),
            );
        }
        let stack = fields.remove("stack").filter(|s| !s.is_empty());
        let text = |fields: &mut BTreeMap<String, String>, k: &str| fields.remove(k).filter(|v| !v.is_empty());
        let planned: Planned = match action {
            "pause" => pause_args(PauseBody {
                stack,
                reason: text(&mut fields, "reason"),
                duration: text(&mut fields, "for"),
                until: None,
            }),
            "resume" => resume_args(ResumeBody { stack }),
            "apply" => apply_args(ApplyBody { stack, ..ApplyBody::default() }),
            "check" => check_args(CheckBody { stack }),
            // The CLI's two confirmations, as two boxes to tick: the plan
            // (what policy holds back) and, separately, data at risk.
            "approve" => match fields.get("approve").map(String::as_str) {
                Some("yes") => apply_args(ApplyBody {
                    stack,
                    approve: true,
                    accept_data_risk: fields.get("accept_data_risk").is_some_and(|v| v == "yes"),
                    ..ApplyBody::default()
                }),
                _ => Err("approve: tick the box to apply what the policy holds back".to_string()),
            },
            "rollback" => {
                rollback_args(RollbackBody { stack, to: text(&mut fields, "to"), reason: text(&mut fields, "reason") })
            }
            _ => Err(format!("no action {action}")),
        };
        let notice = match planned {
            Err(e) => e,
            Ok((args, stack, exclusive)) => {
                let request = Request {
                    args,
                    stacks: stack.into_iter().collect(),
                    exclusive,
                    by: format!("page:{}", caller.name),
                };
                match self.runner.start(request) {
                    Err(busy) => busy.error,
                    Ok(op) => match self.runner.wait(op, Instant::now() + ACTION_WAIT, None) {
                        Some(o) if matches!(o.state, State::Finished) => {
                            outcome(action, &o.report, o.exit_code, &o.error)
                        }
                        _ => format!("{action}: still running as operation {op}"),
                    },
                }
            }
        };
        self.sessions.notice(&id, Some(notice));
        let mut reply = redirect("/");
        reply.caller = Some(caller.name);
        reply
    }
}

/// One line on what an action did, for the page.
fn outcome(action: &str, report: &Option<Value>, code: Option<u8>, error: &Option<String>) -> String {
    let outcome = report.as_ref().and_then(|r| r.get("outcome")).and_then(Value::as_str);
    if action == "check" && matches!(code, Some(0 | 100)) {
        return report.as_ref().map_or("check: done".to_string(), checked);
    }
    match (code, outcome, error) {
        (Some(0), Some(o), _) => format!("{action}: {}", o.replace('_', " ")),
        (Some(0), None, _) => format!("{action}: done"),
        (Some(4), _, _) => format!("{action}: skipped (held back by policy, a pause or a window)"),
        (Some(75), _, _) => format!("{action}: another run holds the stack's lock; try again when it has finished"),
        (c, _, e) => format!(
            "{action}: failed (exit {}){}",
            c.map_or("?".to_string(), |c| c.to_string()),
            e.as_deref().map(|e| format!(": {}", e.lines().last().unwrap_or(""))).unwrap_or_default()
        ),
    }
}

/// What a check found: the changes, and what `--auto` would hold back and
/// why (the page's apply button) or what needs the data-risk box.
fn checked(report: &Value) -> String {
    let changes = page::changes(report, "/changes");
    if changes.is_empty() {
        return "check: up to date".to_string();
    }
    let list = |key: &str| -> Vec<String> {
        page::items(report, &format!("/{key}")).filter_map(Value::as_str).map(String::from).collect()
    };
    let mut text = format!("check: {} pending ({})", changes.len(), changes.join(", "));
    let held = list("needs_approval");
    if !held.is_empty() {
        text.push_str(&format!("; held back for --auto: {}", held.join("; ")));
    }
    let risks = list("data_risks");
    if !risks.is_empty() {
        text.push_str(&format!("; data at risk: {}", risks.join("; ")));
    }
    text
}
