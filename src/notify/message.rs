//! One message per event, written once and shown by each channel in its
//! own way: a title, a few lines of text, and the report behind them.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::report::Report;
use crate::settings::{Event, NotifyTarget};

/// What a target is told; kept as is in the ledger until delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub event: Event,
    /// For `resolved`: the condition that ended.
    pub resolves: Option<Event>,
    pub stack: String,
    pub host: String,
    pub time: jiff::Timestamp,
    /// `clusterup: stack shop on h1: rolled back (revision 4)`
    pub title: String,
    /// What changed and why, one item per line.
    pub text: String,
    /// The command's report (the webhook sends it whole), scrubbed.
    pub report: serde_json::Value,
}

/// Everything a message says, for `event` (or the end of `resolves`).
pub struct Facts<'a> {
    pub stack: &'a str,
    pub host: &'a str,
    pub event: Event,
    pub resolves: Option<Event>,
    pub report: &'a Report,
    pub time: jiff::Timestamp,
}

impl Message {
    /// The default title and text, or the target's template's text.
    pub fn new(facts: &Facts, target: Option<&NotifyTarget>) -> Message {
        let title = title(facts);
        let default = match facts.resolves {
            Some(_) => String::new(),
            None => lines(facts.report).join("\n"),
        };
        let mut report = serde_json::to_value(facts.report).unwrap_or_default();
        crate::redact::scrub_json(&mut report);
        let mut message = Message {
            event: facts.event,
            resolves: facts.resolves,
            stack: facts.stack.to_string(),
            host: facts.host.to_string(),
            time: facts.time,
            title: crate::redact::scrub(&title),
            text: crate::redact::scrub(&default),
            report,
        };
        if let Some(template) = target.and_then(|t| t.template.as_deref()) {
            message.text = crate::redact::scrub(&render(template, &message));
        }
        message
    }

    /// Title and text as one block (Slack, Telegram, a GitHub comment).
    pub fn full(&self) -> String {
        if self.text.is_empty() { self.title.clone() } else { format!("{}\n{}", self.title, self.text) }
    }

    /// How urgent, 1 (resolved) to 5 (a rollback that failed).
    pub fn severity(&self) -> u8 {
        match self.event {
            Event::RollbackFailed => 5,
            Event::Failed | Event::RolledBack => 4,
            Event::NeedsApproval => 3,
            Event::UpdateAvailable | Event::Applied => 2,
            Event::Resolved => 1,
        }
    }
}

fn title(facts: &Facts) -> String {
    let what = match facts.resolves {
        Some(ended) => format!("resolved: {}", ended.name().replace('_', " ")),
        None => facts.event.name().replace('_', " "),
    };
    let mut text = format!("clusterup: stack {} on {}: {what}", facts.stack, facts.host);
    if let (None, Some(rev)) = (facts.resolves, facts.report.revision()) {
        text.push_str(&format!(" (revision {rev})"));
    }
    text
}

/// The default text: each change with what it brings, then the error and
/// what was held back.
pub fn lines(report: &Report) -> Vec<String> {
    let mut out: Vec<String> = report.changes().iter().map(|c| c.describe()).collect();
    out.extend(report.commits().map(|c| c.lines()).unwrap_or_default());
    if let Some(e) = report.error() {
        out.push(format!("error: {e}"));
    }
    if !report.held_back().is_empty() {
        out.push(format!("held back: {}", report.held_back().join("; ")));
    }
    if let Some(held) = report.held() {
        out.extend(held.changes.iter().map(|c| format!("  {}", c.describe())));
        out.extend(held.commits.iter().flat_map(|c| c.lines()).map(|l| format!("  {l}")));
    }
    out
}

/// A user's template: minijinja, with nothing but the message to read
/// (no file system, no includes), and a bounded amount of work.
fn render(template: &str, message: &Message) -> String {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(100_000));
    let context = json!({
        "event": message.event,
        "resolves": message.resolves,
        "stack": message.stack,
        "host": message.host,
        "time": message.time,
        "title": message.title,
        "text": message.text,
        "report": message.report,
    });
    env.render_str(template, minijinja::value::Serde(context))
        .unwrap_or_else(|e| format!("{}\n(the target's template failed: {e})", message.text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(report: &Report) -> Facts<'_> {
        Facts {
            stack: "shop",
            host: "h1",
            event: Event::Applied,
            resolves: None,
            report,
            time: crate::seams::fake::NOW,
        }
    }

    fn templated(template: &str) -> NotifyTarget {
        let yaml = format!("{{type: webhook, url: 'http://127.0.0.1:1/x', template: {template:?}}}");
        let entry: crate::settings::NotifyEntry = serde_yaml::from_str(&yaml).unwrap();
        crate::settings::resolve_entry(&entry).unwrap().remove(0)
    }

    #[test]
    fn a_template_reads_the_message_and_a_failing_one_falls_back() {
        let report = crate::notify::tests::applied(crate::state::Outcome::Applied, Some(7), &[]);
        let target = templated("{{ stack }}@{{ host }} rev {{ report.revision }}: {{ event }}");
        assert_eq!(Message::new(&facts(&report), Some(&target)).text, "shop@h1 rev 7: applied");
        let runaway = templated("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}");
        let text = Message::new(&facts(&report), Some(&runaway)).text;
        assert!(text.contains("template failed"), "{text}");
    }
}
