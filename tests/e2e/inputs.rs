//! Bad input: exit 2, the file and line named, the cluster untouched.

use crate::support::Stack;

fn running_stack(test: &str) -> Stack {
    let mut stack = Stack::new(test);
    let web = stack.image("web");
    stack.publish("v1", &web);
    stack.write_compose(&format!("services:\n  web:\n    image: {web}\n"));
    stack.up();
    stack.publish("v2", &web);
    stack
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
    stack.write_config("");
    let compose = stack.dir.join("compose.yaml");
    let good = std::fs::read_to_string(&compose).unwrap();
    std::fs::write(&compose, good.replace("    image: ", "    image: [")).unwrap();
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains(&compose.display().to_string()), "{run:?}");
    assert!(run.stderr.contains("line"), "{run:?}");
    assert_eq!(stack.container_id("web"), container);
    std::fs::write(&compose, good).unwrap();
}

#[test]
fn apply_without_a_terminal_needs_yes() {
    let stack = running_stack("noprompt");
    stack.write_config("");
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
