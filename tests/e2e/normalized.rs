//! The compose models the planner's unit tests compare
//! (`tests/fixtures/normalized/<case>/{a,b}/config.json`) are what this
//! machine's Compose prints for the files beside them: the unit tier
//! needs no Compose, and a Compose that normalizes differently fails
//! here. `CLUSTERUP_BLESS=1` records them afresh.

use std::path::PathBuf;

use crate::support::Stack;

#[test]
fn recorded_compose_models_are_what_compose_prints() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/normalized");
    let mut files = Vec::new();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 7, "{cases:?}");
    for side in cases.iter().flat_map(|case| [case.join("a"), case.join("b")]) {
        let stack = Stack::new("normalized");
        for entry in std::fs::read_dir(&side).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n != "config.json") {
                std::fs::copy(&path, stack.dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        let out = stack.compose(&["config", "--format", "json"]);
        assert!(out.status.success(), "{}: {}", side.display(), String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        // Read as if deployed from one directory, under one project name.
        let text = text.replace(&stack.dir.display().to_string(), "/deployed").replace(&stack.name, "p");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        files.push((side.join("config.json"), serde_json::to_string_pretty(&json).unwrap() + "\n"));
    }
    crate::support::golden(files, "Compose normalizes these files differently");
}
