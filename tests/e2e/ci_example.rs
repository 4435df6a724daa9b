//! The CI half of the path, as shipped in examples/ci: the workflow files
//! are valid for their CI (schema-checked), and the GitHub workflow's own
//! build-and-push and webhook scripts, run here against the test registry
//! and a `clusterup serve`, update a host; clusterup then names the
//! running image by its `autonomy-<sha>` tag and rolls back to it by name.

use std::path::Path;
use std::process::Command;

use serde_yaml::Value;

use crate::serve::{IMAGE, Server};
use crate::support::{Stack, image_id};

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci").join(name)
}

#[test]
fn the_workflow_files_are_valid_for_their_ci() {
    for (file, schema) in [("github-actions.yml", "vendor.github-workflows"), ("gitlab-ci.yml", "vendor.gitlab-ci")] {
        let out = Command::new("check-jsonschema")
            .args(["--builtin-schema", schema])
            .arg(example(file))
            .output()
            .expect("check-jsonschema (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The `run:` script of the workflow step with this id.
fn step(id: &str) -> String {
    let workflow: Value =
        serde_yaml::from_str(&std::fs::read_to_string(example("github-actions.yml")).unwrap()).unwrap();
    let steps = workflow["jobs"]["build"]["steps"].as_sequence().unwrap();
    let step = steps.iter().find(|s| s["id"].as_str() == Some(id)).unwrap_or_else(|| panic!("no step {id}"));
    step["run"].as_str().unwrap().to_string()
}

/// Runs a step's script as the runner would (bash -e), with `env`.
fn run_step(id: &str, stack: &Stack, env: &[(&str, String)]) -> (String, String) {
    let dir = stack.scratch("runner");
    let (output, summary) = (dir.join("output"), dir.join("summary"));
    let run = Command::new("bash")
        .args(["-e", "-c", &step(id)])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("GITHUB_OUTPUT", &output)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("DOCKER_CONFIG", &stack.docker_config)
        .output()
        .unwrap();
    assert!(run.status.success(), "step {id}: {}", String::from_utf8_lossy(&run.stderr));
    (String::from_utf8_lossy(&run.stdout).into_owned(), std::fs::read_to_string(&output).unwrap_or_default())
}

/// The tags the workflow's build made here, removed whatever happens.
struct Untag(Vec<String>);

impl Drop for Untag {
    fn drop(&mut self) {
        for tag in &self.0 {
            crate::support::docker(&["rmi", "-f", tag]);
        }
    }
}

#[test]
fn the_workflow_pushes_both_tags_a_host_follows_and_rolls_back_by_the_fixed_one() {
    let stack = Stack::new("ciexample");
    let image = format!("{}/{}/orchestrator", crate::support::bed().registry, stack.name);
    let context = stack.scratch("orchestrator");
    let build = |fixture: &str, sha: &str| {
        std::fs::write(context.join("Dockerfile"), format!("FROM clusterup-fixture/web:{fixture}\n")).unwrap();
        let env = [
            ("IMAGE", image.clone()),
            ("CONTEXT", context.display().to_string()),
            ("SOURCE", "https://github.com/acme/shop".to_string()),
            ("SHA", sha.to_string()),
        ];
        let (_, output) = run_step("push", &stack, &env);
        assert!(output.contains(&format!("tag=autonomy-{}", &sha[..12])), "{output}");
        assert!(output.contains("digest=sha256:"), "{output}");
    };
    let (first, second) = ("1f0e2d3c4b5a69788796a5b4c3d2e1f001234567", "2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d");
    let _built = Untag(
        [first, second]
            .iter()
            .map(|s| format!("{image}:autonomy-{}", &s[..12]))
            .chain([format!("{image}:autonomy-latest")])
            .collect(),
    );
    build("v1", first);
    stack.write_compose(&format!("services:\n  web:\n    image: {image}:autonomy-latest\n"));
    stack.write_config("");
    stack.up();
    let server = Server::start(&stack);

    build("v2", second);
    let (answer, _) = run_step(
        "notify",
        &stack,
        &[
            ("IMAGE", image.clone()),
            ("CLUSTERUP_HOOK_URL", format!("http://127.0.0.1:{}", server.port)),
            ("CLUSTERUP_IMAGE_HOOK_SECRET", IMAGE.to_string()),
        ],
    );
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
    let id = answer["operations"][0].as_u64().unwrap_or_else(|| panic!("{answer}"));
    let op = server.finished(id);
    assert_eq!(op["exit_code"], 0, "{op}");
    let v2 = image_id(&format!("{image}:autonomy-{}", &second[..12]));
    assert_eq!(stack.running_image("web"), v2, "the webhook updated the host");

    let check = stack.clusterup(&["check", "--json"]).json();
    assert_eq!(check["services"][0]["running_tag"], format!("autonomy-{}", &second[..12]), "{check}");
    let human = stack.clusterup(&["check"]);
    assert!(human.all().contains(&format!("(autonomy-{})", &second[..12])), "{human:?}");

    let back = stack.clusterup(&["rollback", "--to", &format!("autonomy-{}", &first[..12]), "--yes"]);
    assert_eq!(back.code, 0, "{back:?}");
    assert_eq!(stack.running_image("web"), image_id(&format!("{image}:autonomy-{}", &first[..12])));
    let unknown = stack.clusterup(&["rollback", "--to", "autonomy-000000000000", "--yes"]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
}
