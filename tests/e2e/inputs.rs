//! Bad input: exit 2, the file and line named, the cluster untouched.

use crate::support::Stack;

fn running_stack(test: &str) -> Stack {
    Stack::web_update_pending(test, |s| s.image("web")).0
}

#[test]
fn malformed_config_names_file_line_and_key() {
    let stack = running_stack("badconfig");
    let container = stack.container_id("web");
    let config = stack.write_config("    colour: blue\n");
    for command in [&["check"][..], &["apply", "--auto"][..]] {
        let run = stack.clusterup(command);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stderr.contains(&config.display().to_string()), "{run:?}");
        assert!(run.stderr.contains("line 7") && run.stderr.contains("colour"), "{run:?}");
    }
    assert_eq!(stack.container_id("web"), container);
}

#[test]
fn malformed_compose_file_is_refused_with_composes_message() {
    let stack = running_stack("badcompose");
    let container = stack.container_id("web");
    let compose = stack.dir.join("compose.yaml");
    let good = std::fs::read_to_string(&compose).unwrap();
    std::fs::write(&compose, good.replace("    image: ", "    image: [")).unwrap();
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains(&compose.display().to_string()), "{run:?}");
    let line = run.stderr.split("line ").nth(1).and_then(|rest| rest.split(':').next());
    assert!(line.is_some_and(|n| n.parse::<u32>().is_ok()), "names the line: {run:?}");
    assert_eq!(stack.container_id("web"), container);
    std::fs::write(&compose, good).unwrap();
}

#[test]
fn apply_without_a_terminal_needs_yes() {
    let stack = running_stack("noprompt");
    let container = stack.container_id("web");
    let run = stack.clusterup(&["apply"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--yes"), "{run:?}");
    assert_eq!(stack.container_id("web"), container);
}

#[test]
fn no_config_and_no_compose_file_explains_both() {
    let stack = Stack::new("nothing");
    let empty = tempfile::tempdir().unwrap();
    let run = stack.clusterup_in(empty.path(), &["check"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("no compose file"), "{run:?}");
}
