//! The `--json` documents of check, apply, status and rollback for a
//! demo-like stack, against files kept in `tests/golden/`: the output is a
//! stable interface, and a refactoring must not change it by accident.
//! Values that differ from run to run (the stack's name, digests and ids,
//! times, durations) are replaced by placeholders first; digests and ids
//! keep their identity (the same digest gets the same placeholder).
//! `CLUSTERUP_BLESS=1` writes the files instead of comparing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::support::{Stack, bed};

#[test]
fn json_documents_are_stable() {
    let mut stack = Stack::new("golden");
    let (web, sidecar) = (stack.image("web"), stack.image("sidecar"));
    stack.publish("v1", &web);
    stack.publish("v1", &sidecar);
    stack.write_compose(&format!(
        "services:\n  web:\n    image: {web}\n  sidecar:\n    image: {sidecar}\n    depends_on: [web]\n"
    ));
    stack.write_config("");
    stack.up();
    stack.publish("v2", &web);

    let mut names = Names::new(&stack);
    let mut documents = Vec::new();
    for (name, args, code) in [
        ("check", &["check", "--only", "--json"][..], 100),
        ("apply", &["apply", "--yes", "--json"], 0),
        ("status", &["status", "--json"], 0),
        ("rollback", &["rollback", "--yes", "--json"], 0),
        ("rollback-list", &["rollback", "--list", "--json"], 0),
        ("check-after", &["check", "--only", "--json"], 100),
    ] {
        let run = stack.clusterup(args);
        assert_eq!(run.code, code, "{name}: {run:?}");
        let mut doc = run.json();
        names.normalize(&mut doc);
        documents.push((name, serde_json::to_string_pretty(&doc).unwrap() + "\n"));
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let files = documents.into_iter().map(|(name, text)| (dir.join(format!("{name}.json")), text)).collect();
    crate::support::golden(files, "JSON output changed");
}

/// Placeholders for what changes between runs.
struct Names {
    replace: Vec<(String, String)>,
    seen: BTreeMap<String, String>,
}

impl Names {
    fn new(stack: &Stack) -> Names {
        let replace = vec![
            (stack.dir.display().to_string(), "<dir>".to_string()),
            (stack.name.clone(), "<stack>".to_string()),
            (bed().registry.clone(), "<registry>".to_string()),
        ];
        Names { replace, seen: BTreeMap::new() }
    }

    fn normalize(&mut self, value: &mut Value) {
        match value {
            Value::String(s) => *s = self.text(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.normalize(v)),
            Value::Object(map) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let v = map.get_mut(&key).unwrap();
                    let varies = key.ends_with("_seconds") && v.is_number();
                    if varies {
                        *v = Value::from(0);
                    } else {
                        self.normalize(v);
                    }
                    let new_key = self.text(&key);
                    if new_key != key {
                        let v = map.remove(&key).unwrap();
                        map.insert(new_key, v);
                    }
                }
            }
            _ => {}
        }
    }

    fn text(&mut self, s: &str) -> String {
        if s.parse::<jiff::Timestamp>().is_ok() {
            return "<time>".to_string();
        }
        let mut out = s.to_string();
        for (from, to) in &self.replace {
            out = out.replace(from.as_str(), to);
        }
        // Hex runs of 12 or more: digests, image and container ids, commits
        // (in full or short), each numbered by first appearance.
        let mut result = String::new();
        let mut run = String::new();
        for c in out.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_hexdigit() && c.is_ascii_lowercase() || c.is_ascii_digit() {
                run.push(c);
                continue;
            }
            if run.len() >= 12 {
                let next = self.seen.len();
                let key = run[..12].to_string();
                let id = self.seen.entry(key).or_insert_with(|| format!("<hex{next}>")).clone();
                result.push_str(&id);
            } else {
                result.push_str(&run);
            }
            run.clear();
            result.push(c);
        }
        result.pop();
        result
    }
}
