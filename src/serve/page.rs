//! The host page, rendered on the server from the same reports the API
//! gives (`status` and `rollback --list`): readable without JavaScript,
//! charts as inline SVG, actions as plain forms carrying the session's
//! CSRF token. The small script only refreshes `<main>` in place.

use std::fmt::Write as _;

use jiff::Timestamp;
use serde_json::Value;

/// Who is looking: actions are drawn only for the operate scope.
pub struct Viewer<'a> {
    pub name: &'a str,
    pub operate: bool,
    pub csrf: &'a str,
}

pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The elements of the array at `pointer` (none when it is not one).
pub fn items<'a>(v: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(pointer).and_then(Value::as_array).into_iter().flatten()
}

/// "What changed" of a plan or revision: `kind service`, each.
pub fn changes(v: &Value, pointer: &str) -> Vec<String> {
    items(v, pointer).map(|c| format!("{} {}", text(c, "kind"), text(c, "service"))).collect()
}

/// A report that may hold one stack or `{"stacks": [...]}`.
pub fn each(report: &Value) -> Vec<&Value> {
    match report.get("stacks").and_then(Value::as_array) {
        Some(all) => all.iter().collect(),
        None => vec![report],
    }
}

pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// The whole document: `status` and `history` as the CLI reports them.
pub fn host(status: &Value, history: &Value, viewer: &Viewer, notice: Option<&str>) -> String {
    document(viewer, &main(status, history, viewer, notice))
}

/// The page around a `<main>`: header, sign-out, style and script.
fn document(viewer: &Viewer, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>clusterup · {host}</title><style>{css}</style></head><body>\
         <header><h1>clusterup <span class=\"host\">{host}</span></h1>\
         <nav><a href=\"/\">This host</a> · <a href=\"/fleet\">Fleet</a></nav>\
         <form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <span>{who} ({scope})</span> <button type=\"submit\">Sign out</button></form></header>{main}\
         <script>{js}</script></body></html>\n",
        host = esc(&crate::notify::host()),
        css = CSS,
        csrf = esc(viewer.csrf),
        who = esc(viewer.name),
        scope = if viewer.operate { "operate" } else { "read" },
        js = JS,
    )
}

/// The fleet: every host's stacks in one table, a stack whose version
/// differs from what most hosts run marked, unreachable hosts with when
/// they last answered.
pub fn fleet(
    hosts: &[super::fleet::HostView],
    common: &std::collections::BTreeMap<String, String>,
    viewer: &Viewer,
) -> String {
    document(viewer, &fleet_main(hosts, common))
}

/// The fleet page's `<main>`, which its script refreshes.
pub fn fleet_main(hosts: &[super::fleet::HostView], common: &std::collections::BTreeMap<String, String>) -> String {
    let mut rows = String::new();
    for h in hosts {
        if let Some((why, last)) = &h.unreachable {
            let seen = last.map_or("never seen".to_string(), |t| {
                format!("last seen {}", t.round(jiff::Unit::Second).unwrap_or(t))
            });
            let _ = write!(
                rows,
                "<tr><th scope=\"row\">{}</th><td colspan=\"6\" class=\"bad wrap\">unreachable ({}): {}</td><td class=\"bad\">unreachable</td></tr>",
                esc(&h.host),
                esc(&seen),
                esc(why)
            );
            continue;
        }
        for s in &h.stacks {
            let same = common.get(&s.stack).is_none_or(|v| *v == s.version);
            let verdict = if same {
                "<td class=\"ok\">same as most</td>".to_string()
            } else {
                let most = common.get(&s.stack).map(String::as_str).unwrap_or("");
                format!("<td class=\"warn\">differs (most run {})</td>", esc(short(most)))
            };
            let _ = write!(
                rows,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td>{verdict}</tr>",
                esc(&h.host),
                esc(&s.stack),
                s.revision.map_or("-".to_string(), |r| r.to_string()),
                esc(s.commit.as_deref().map(short).unwrap_or("-")),
                s.pending,
                if s.paused { "paused" } else { "no" },
                esc(&s.last_outcome.as_deref().unwrap_or("-").replace('_', " ")),
            );
        }
    }
    format!(
        "<main id=\"main\"><table class=\"fleet\"><caption>Fleet</caption><thead><tr><th scope=\"col\">Host</th>\
         <th scope=\"col\">Stack</th><th scope=\"col\">Revision</th><th scope=\"col\">Commit</th><th scope=\"col\">Pending</th>\
         <th scope=\"col\">Paused</th><th scope=\"col\">Last outcome</th><th scope=\"col\">Fleet</th></tr></thead><tbody>{rows}</tbody></table>\
         <p class=\"updated\">Shown at {}</p></main>",
        Timestamp::now().round(jiff::Unit::Second).unwrap_or(Timestamp::now())
    )
}

/// `<main>` alone: what the page's script swaps in every few seconds.
pub fn main(status: &Value, history: &Value, viewer: &Viewer, notice: Option<&str>) -> String {
    let mut out = String::from("<main id=\"main\">");
    if let Some(n) = notice {
        let _ = write!(out, "<p class=\"notice\" role=\"status\">{}</p>", esc(n));
    }
    let histories = each(history);
    for stack in each(status) {
        let name = text(stack, "stack");
        let revisions = histories
            .iter()
            .find(|h| text(h, "stack") == name)
            .and_then(|h| h.get("revisions"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        out.push_str(&stack_section(stack, &revisions, viewer));
    }
    let _ = write!(
        out,
        "<p class=\"updated\">Shown at {}</p></main>",
        Timestamp::now().round(jiff::Unit::Second).unwrap_or(Timestamp::now())
    );
    out
}

fn stack_section(stack: &Value, revisions: &[Value], viewer: &Viewer) -> String {
    let name = text(stack, "stack");
    let mut out = format!(
        "<section class=\"stack\" aria-labelledby=\"s-{id}\"><h2 id=\"s-{id}\">{n}</h2>",
        id = esc(name),
        n = esc(name)
    );
    if let Some(error) = stack.get("error").and_then(Value::as_str) {
        let _ = write!(out, "<p class=\"bad\">Cannot be read: {}</p></section>", esc(error));
        return out;
    }
    out.push_str("<dl class=\"facts\">");
    let deployed = match stack.get("deployed") {
        Some(Value::Object(d)) => format!(
            "revision {} {} ({}, {})",
            d.get("revision").and_then(Value::as_u64).unwrap_or(0),
            d.get("commit").and_then(Value::as_str).map(|c| format!("at {}", short(c))).unwrap_or_default(),
            d.get("trigger").and_then(Value::as_str).unwrap_or(""),
            d.get("when").and_then(Value::as_str).unwrap_or("")
        ),
        Some(Value::Bool(false)) => "not deployed yet".to_string(),
        _ => "no revision yet".to_string(),
    };
    let _ = write!(out, "<dt>Deployed</dt><dd>{}</dd>", esc(&deployed));
    let pause = match stack.get("paused") {
        Some(p @ Value::Object(_)) => {
            let mut t = format!("paused by {} since {}", text(p, "by"), text(p, "since"));
            if !text(p, "reason").is_empty() {
                let _ = write!(t, ": {}", text(p, "reason"));
            }
            if !text(p, "until").is_empty() {
                let _ = write!(t, " (until {})", text(p, "until"));
            }
            t
        }
        _ => "not paused".to_string(),
    };
    let paused = matches!(stack.get("paused"), Some(Value::Object(_)));
    let _ = write!(
        out,
        "<dt>Unattended applies</dt><dd class=\"{}\">{}</dd>",
        if paused { "warn" } else { "ok" },
        esc(&pause)
    );
    if let Some(run) = stack.get("last_run").filter(|r| r.is_object()) {
        let pending = run.get("pending").and_then(Value::as_u64).unwrap_or(0);
        let kind = text(run, "kind");
        let _ = write!(
            out,
            "<dt>Last run</dt><dd>{} at {}, exit {}; {}</dd>",
            esc(text(run, "command")),
            esc(text(run, "time")),
            run.get("exit_code").and_then(Value::as_u64).unwrap_or(0),
            match (pending, kind) {
                (0, _) => "nothing pending".to_string(),
                (n, "none" | "") => format!("{n} pending"),
                (n, kind) => esc(&format!("{n} pending ({kind})")),
            }
        );
    }
    if let Some(stats) = stack.get("stats") {
        let rate =
            stats.get("success_rate").and_then(Value::as_f64).map_or("-".to_string(), |r| format!("{:.0}%", r * 100.0));
        let secs = |k: &str| stats.get(k).and_then(Value::as_f64).map_or("-".to_string(), |s| format!("{s:.0} s"));
        let _ = write!(
            out,
            "<dt>Updates</dt><dd>{} revisions, {rate} applied, median {}, p95 {}</dd>",
            stats.get("revisions").and_then(Value::as_u64).unwrap_or(0),
            secs("median_seconds"),
            secs("p95_seconds")
        );
    }
    out.push_str("</dl>");
    if viewer.operate {
        out.push_str(&actions(name, paused, revisions, viewer));
    }
    out.push_str(&services(stack));
    out.push_str(&charts(revisions));
    out.push_str(&revisions_table(revisions));
    out.push_str("</section>");
    out
}

fn actions(stack: &str, paused: bool, revisions: &[Value], viewer: &Viewer) -> String {
    let hidden = format!(
        "<input type=\"hidden\" name=\"stack\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(stack),
        esc(viewer.csrf)
    );
    let mut out = String::from("<div class=\"actions\">");
    if paused {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/ui/resume\">{hidden}<button type=\"submit\">Resume</button></form>"
        );
    } else {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/ui/pause\">{hidden}<label>Reason <input name=\"reason\" required></label> \
             <label>For <input name=\"for\" placeholder=\"2h\" size=\"5\"></label> <button type=\"submit\">Pause</button></form>"
        );
    }
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/ui/check\">{hidden}<button type=\"submit\">Check now</button></form>\
         <form method=\"post\" action=\"/ui/apply\">{hidden}<button type=\"submit\">Apply what policy allows</button></form>\
         <form method=\"post\" action=\"/ui/approve\">{hidden}<label><input type=\"checkbox\" name=\"approve\" value=\"yes\" required> \
         I approve what the policy holds back</label> <label><input type=\"checkbox\" name=\"accept_data_risk\" value=\"yes\"> \
         and accept the data at risk</label> <button type=\"submit\">Apply all</button></form>"
    );
    let good: Vec<u64> = revisions
        .iter()
        .filter(|r| text(r, "outcome") == "applied")
        .filter_map(|r| r.get("id").and_then(Value::as_u64))
        .collect();
    if !good.is_empty() {
        // Empty: the CLI's default, the previous good revision (or, after
        // the first apply, the state before it).
        let older: String =
            good.iter().rev().skip(1).map(|id| format!("<option value=\"{id}\">revision {id}</option>")).collect();
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/ui/rollback\">{hidden}<label>Roll back to <select name=\"to\">\
             <option value=\"\">the previous good revision</option>{older}</select></label> \
             <label>Reason <input name=\"reason\" required></label> <button type=\"submit\">Roll back</button></form>"
        );
    }
    out.push_str("</div>");
    out
}

fn services(stack: &Value) -> String {
    let mut out = String::from(
        "<table class=\"services\"><caption>Services</caption><thead><tr><th scope=\"col\">Service</th><th scope=\"col\">State</th>\
         <th scope=\"col\">Health</th><th scope=\"col\">Up</th><th scope=\"col\">Image</th><th scope=\"col\">Digest</th></tr></thead><tbody>",
    );
    for s in items(stack, "/services") {
        let up = s.get("uptime_seconds").and_then(Value::as_i64).map_or("-".to_string(), duration);
        let health = text(s, "health");
        let class = match health {
            "healthy" => "ok",
            "unhealthy" => "bad",
            _ => "",
        };
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td class=\"{class}\">{}</td><td>{up}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(text(s, "service")),
            esc(text(s, "state")),
            esc(if health.is_empty() { "-" } else { health }),
            esc(text(s, "image")),
            esc(short(text(s, "digest")))
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn duration(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

fn seconds_of(r: &Value) -> Option<f64> {
    let start: Timestamp = text(r, "started").parse().ok()?;
    let end: Timestamp = text(r, "finished").parse().ok()?;
    Some((end.as_millisecond() - start.as_millisecond()) as f64 / 1000.0)
}

fn revisions_table(revisions: &[Value]) -> String {
    let mut out = String::from(
        "<table class=\"revisions\"><caption>Revisions</caption><thead><tr><th scope=\"col\">Rev</th><th scope=\"col\">Started</th>\
         <th scope=\"col\">Trigger</th><th scope=\"col\">Commit</th><th scope=\"col\">Changes</th><th scope=\"col\">Took</th>\
         <th scope=\"col\">Outcome</th></tr></thead><tbody>",
    );
    for r in revisions.iter().rev().take(20) {
        let outcome = r.get("outcome").and_then(Value::as_str).unwrap_or("unfinished");
        let class = match outcome {
            "applied" => "ok",
            "up_to_date" => "",
            "unfinished" => "warn",
            _ => "bad",
        };
        let changes = changes(r, "/plan/changes");
        let took = seconds_of(r).map_or("-".to_string(), |s| format!("{s:.0} s"));
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{took}</td><td class=\"{class}\">{}</td></tr>",
            r.get("id").and_then(Value::as_u64).unwrap_or(0),
            esc(text(r, "started")),
            esc(text(r, "trigger")),
            esc(short(r.pointer("/plan/commit").and_then(Value::as_str).unwrap_or("-"))),
            esc(&changes.join(", ")),
            esc(&outcome.replace('_', " "))
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// Updates per day over the last 30 days (applied and failed stacked),
/// and each revision's duration with the median and p95.
fn charts(revisions: &[Value]) -> String {
    let today = Timestamp::now().as_second() / 86_400;
    let mut days = [(0u32, 0u32); 30];
    for r in revisions {
        let Ok(t) = text(r, "started").parse::<Timestamp>() else { continue };
        let age = today - t.as_second() / 86_400;
        if (0..30).contains(&age) {
            let slot = &mut days[29 - age as usize];
            if text(r, "outcome") == "applied" {
                slot.0 += 1
            } else if !r["outcome"].is_null() && text(r, "outcome") != "up_to_date" {
                slot.1 += 1
            }
        }
    }
    let top = days.iter().map(|(a, f)| a + f).max().unwrap_or(0).max(1) as f64;
    let mut bars = String::new();
    for (i, (applied, failed)) in days.iter().enumerate() {
        let x = 30 + i * 9;
        let h_ok = *applied as f64 / top * 80.0;
        let h_bad = *failed as f64 / top * 80.0;
        let _ = write!(
            bars,
            "<rect class=\"ok\" x=\"{x}\" y=\"{:.1}\" width=\"7\" height=\"{h_ok:.1}\"><title>{applied} applied</title></rect>\
             <rect class=\"bad\" x=\"{x}\" y=\"{:.1}\" width=\"7\" height=\"{h_bad:.1}\"><title>{failed} failed</title></rect>",
            90.0 - h_ok,
            90.0 - h_ok - h_bad
        );
    }
    let per_day = format!(
        "<figure><svg viewBox=\"0 0 310 100\" role=\"img\" aria-labelledby=\"per-day\"><title id=\"per-day\">Updates per day, last 30 days</title>\
         <line class=\"axis\" x1=\"28\" y1=\"90\" x2=\"302\" y2=\"90\"/><text x=\"2\" y=\"14\">{top}</text>{bars}</svg>\
         <figcaption>Updates per day (30 days): applied, failed</figcaption></figure>"
    );
    let mut took: Vec<f64> = revisions.iter().filter_map(seconds_of).collect();
    let n = took.len();
    let mut points = String::new();
    let slowest = took.iter().cloned().fold(1.0_f64, f64::max);
    for (i, s) in took.iter().enumerate() {
        let x = 30.0 + 270.0 * (i as f64 + 0.5) / n.max(1) as f64;
        let y = 90.0 - s / slowest * 80.0;
        let _ = write!(
            points,
            "<circle class=\"point\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\"><title>{s:.0} s</title></circle>"
        );
    }
    took.sort_by(f64::total_cmp);
    let quantile = |q: f64| (n > 0).then(|| took[((n as f64 * q).ceil() as usize).clamp(1, n) - 1]);
    let mut lines = String::new();
    for (class, label, value) in [("median", "median", quantile(0.5)), ("p95", "p95", quantile(0.95))] {
        if let Some(v) = value {
            let y = 90.0 - v / slowest * 80.0;
            let _ = write!(
                lines,
                "<line class=\"{class}\" x1=\"30\" y1=\"{y:.1}\" x2=\"300\" y2=\"{y:.1}\"><title>{label} {v:.0} s</title></line>"
            );
        }
    }
    let durations = format!(
        "<figure><svg viewBox=\"0 0 310 100\" role=\"img\" aria-labelledby=\"took\"><title id=\"took\">Update duration per revision</title>\
         <line class=\"axis\" x1=\"28\" y1=\"90\" x2=\"302\" y2=\"90\"/><text x=\"2\" y=\"14\">{slowest:.0} s</text>{lines}{points}</svg>\
         <figcaption>Update duration: each revision, median and p95</figcaption></figure>"
    );
    format!("<div class=\"charts\">{per_day}{durations}</div>")
}

/// The sign-in page: a token, posted once for a session cookie.
pub fn login(error: Option<&str>) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>clusterup · sign in</title>\
         <style>{CSS}</style></head><body><main><h1>clusterup</h1>{}\
         <form method=\"post\" action=\"/login\"><label>Token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required autofocus></label> \
         <button type=\"submit\">Sign in</button></form></main></body></html>\n",
        error.map(|e| format!("<p class=\"bad\" role=\"alert\">{}</p>", esc(e))).unwrap_or_default()
    )
}

const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// The Content-Security-Policy of every page: its one script and one
/// style by hash, forms posting only here, never framed.
pub static POLICY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = |text: &str| base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes()));
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; img-src 'self'; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        hash(JS),
        hash(CSS)
    )
});

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status() -> Value {
        json!({"command": "status", "stack": "shop", "deployed": {"revision": 2, "commit": null, "when": "2026-12-01T10:00:00Z", "trigger": "auto"},
               "paused": null, "last_run": null, "stats": {"revisions": 2, "success_rate": 0.5, "median_seconds": 4.0, "p95_seconds": 9.0},
               "services": [{"service": "web", "state": "running", "health": "healthy", "image": "r/web:1", "digest": "sha256:abcdef0123456789", "uptime_seconds": 30}]})
    }

    fn history() -> Value {
        json!({"stack": "shop", "revisions": [
            {"id": 1, "started": "2026-12-01T09:00:00Z", "finished": "2026-12-01T09:00:09Z", "trigger": "auto", "outcome": "rolled_back", "plan": {"changes": [{"kind": "image", "service": "web"}]}},
            {"id": 2, "started": "2026-12-01T10:00:00Z", "finished": "2026-12-01T10:00:04Z", "trigger": "auto", "outcome": "applied", "plan": {"changes": [{"kind": "image", "service": "<script>"}]}}]})
    }

    #[test]
    fn revisions_show_their_outcome_and_names_are_escaped() {
        let page = main(&status(), &history(), &Viewer { name: "dash", operate: false, csrf: "c" }, None);
        assert!(page.contains("rolled back") && page.contains(">applied<"), "{page}");
        assert!(page.contains("&lt;script&gt;") && !page.contains("<script>"), "{page}");
        assert!(page.contains("50% applied, median 4 s, p95 9 s"), "{page}");
        assert!(!page.contains("<form"), "no actions for a read token: {page}");
    }

    #[test]
    fn an_operator_gets_forms_that_carry_the_csrf_token() {
        let page = main(&status(), &history(), &Viewer { name: "ops", operate: true, csrf: "tok3n" }, None);
        for action in ["/ui/pause", "/ui/apply", "/ui/check", "/ui/approve"] {
            assert!(page.contains(&format!("action=\"{action}\"")), "{action}: {page}");
        }
        assert!(page.matches("name=\"csrf\" value=\"tok3n\"").count() >= 2, "{page}");
        assert!(page.contains("<option value=\"\">the previous good revision</option></select>"), "{page}");
    }
}
