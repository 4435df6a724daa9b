//! Property tests: the configuration parser and the planner on generated
//! input. Bounded in cases so they run in every `cargo test`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;
use serde_json::json;

use crate::plan::classify::{Baseline, ChangeKind, Inputs, classify};
use crate::plan::diff::{redacted_document, text_diff};
use crate::plan::observation::Observation;
use crate::seams::compose::ComposeModel;
use crate::settings::{Policy, from_config};

fn yaml_like() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "stacks:",
        "\n",
        "  - ",
        "name: ",
        "web",
        "directory: ",
        "/srv",
        "git: {url: u}",
        "health: {timeout: 3s}",
        "window: \"Mon 01:00-02:00\"",
        "auto: {structural: true}",
        "[",
        "]",
        "{",
        "}",
        ": ",
        "\t",
        "'",
        "\"",
        "#",
        "-",
        "services: {db: {skip: true}}",
        "keep_images: 2",
        "..",
        "\u{feff}",
        "&a",
        "*a",
        "<<: *a",
        "!!str",
    ]);
    prop::collection::vec(atoms, 0..40).prop_map(|parts| parts.concat())
}

/// A model of up to 6 services with random images and dependencies.
fn model() -> impl Strategy<Value = ComposeModel> {
    let names = ["a", "b", "c", "d", "e", "f"];
    prop::collection::vec((any::<bool>(), prop::sample::subsequence(names.to_vec(), 0..3), 0u8..3), 1..6).prop_map(
        move |specs| {
            let mut services = serde_json::Map::new();
            for (i, (has_image, deps, tag)) in specs.into_iter().enumerate() {
                // Compose refuses a dependency cycle: only earlier names.
                let deps: Vec<&str> = deps.into_iter().filter(|d| names[..i].contains(d)).collect();
                let mut svc = json!({"depends_on": deps, "environment": {"T": tag.to_string()}});
                if has_image {
                    svc["image"] = json!(format!("r/{}:{tag}", names[i]));
                } else {
                    svc["build"] = json!({"context": "."});
                }
                services.insert(names[i].to_string(), svc);
            }
            ComposeModel::from_json(&json!({"name": "p", "services": services})).unwrap()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_config_parser_never_panics(text in yaml_like()) {
        // Ok or a usage error naming the file; never a panic.
        if let Err(e) = from_config(Path::new("/c.yaml"), &text, None) {
            let message = format!("{:#}", e);
            prop_assert!(message.starts_with("configuration file /c.yaml: "), "{}", message);
        }
    }

    #[test]
    fn plans_respect_dependencies_and_never_invent_services(old in model(), new in model()) {
        let observation = Observation {
            services: old.services.keys().map(|n| (n.clone(), Default::default())).collect(),
            ..Default::default()
        };
        let plan = classify(&Inputs {
            stack: "s",
            new: &new,
            baseline: Baseline::Deployed(&old),
            observation: &observation,
            skip: &BTreeSet::new(),
            remote: &BTreeMap::new(),
            policy: Policy::default(),
            commit: Some("n".into()),
            deployed_commit: Some("o".into()),
            changed_files: &[],
            dockerignore: &BTreeMap::new(),
            moved_submodules: &[],
            target_images: None,
        });
        // Whether `from` depends on `to` through the new files' depends_on.
        let reaches = |from: &str, to: &str| {
            let (mut todo, mut seen) = (vec![from.to_string()], BTreeSet::new());
            while let Some(s) = todo.pop() {
                for d in new.services.get(&s).map(|x| x.depends_on.clone()).unwrap_or_default() {
                    if d == to {
                        return true;
                    }
                    if seen.insert(d.clone()) {
                        todo.push(d);
                    }
                }
            }
            false
        };
        let mut seen = BTreeSet::new();
        for (i, c) in plan.changes.iter().enumerate() {
            prop_assert!(seen.insert(c.service.clone()), "one change per service");
            match c.kind {
                ChangeKind::Remove => prop_assert!(old.services.contains_key(&c.service) && !new.services.contains_key(&c.service)),
                _ => {
                    prop_assert!(new.services.contains_key(&c.service));
                    // Nothing that comes later is something this one
                    // depends on, directly or not.
                    for later in plan.changes[i + 1..].iter().filter(|l| l.kind != ChangeKind::Remove) {
                        prop_assert!(
                            !reaches(&c.service, &later.service),
                            "{} depends on {}, which comes later", c.service, later.service
                        );
                    }
                }
            }
        }
    }

    /// Issue 13, item 3: arbitrary UTF-8 (multi-byte characters before
    /// long values included) never panics the diff or the redaction, and a
    /// planted value never survives under `environment`.
    #[test]
    fn diffs_and_redaction_take_any_text(
        old in "\\PC{0,300}",
        new in "(\\PC|\n|:| ){0,300}",
        secret in "[a-zA-Z0-9]{12,20}",
        filler in "[\u{e9}\u{4e2d}\u{1f600}]{1,40}",
    ) {
        for name in ["compose.yaml", ".env", "prod.env"] {
            let _ = text_diff(name, &old, &new);
            let _ = redacted_document(name, &new);
        }
        let _ = crate::redact::scrub(&new);
        let _ = crate::redact::terminal_safe(&new);
        let _ = crate::reference::short(&new);
        let planted = format!("services:\n  web:\n    environment:\n      {filler}: {filler}{secret}\n");
        let d = text_diff("compose.yaml", &old, &planted);
        prop_assert!(!d.contains(&secret), "{}", d);
        let planted_env = format!("{filler}=\"{filler}\n{secret}\"\n");
        let d = text_diff(".env", &old, &planted_env);
        prop_assert!(!d.contains(&secret), "{}", d);
    }
}
