//! Directory stacks: the files in the directory, edited by hand, against
//! what runs (part of issue 14).

use crate::support::{Run, Stack, docker, free_port, http_get};

#[test]
fn a_service_added_to_the_files_is_created_and_nothing_else_touched() {
    let mut stack = Stack::new("diradd");
    let (web, other) = (stack.image("web"), stack.image("other"));
    stack.publish("v1", &web);
    stack.publish("v1", &other);
    stack.write_compose(&format!("services:\n  web:\n    image: {web}\n"));
    stack.write_config("");
    stack.up();
    let web_id = stack.container_id("web");

    stack.write_compose(&format!("services:\n  web:\n    image: {web}\n  other:\n    image: {other}\n"));
    let run = stack.clusterup(&["check", "--only", "--json"]);
    assert_eq!(run.code, 100, "{run:?}");
    let plan = run.json();
    assert_eq!(plan["kind"], "structural", "{run:?}");
    assert_eq!(plan["changes"].as_array().unwrap().len(), 1, "{run:?}");
    assert_eq!(
        (plan["changes"][0]["kind"].as_str(), plan["changes"][0]["service"].as_str()),
        (Some("create"), Some("other"))
    );

    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 4, "structural changes wait for approval: {run:?}");
    assert!(!stack.has_container("other"));

    let run = stack.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stack.health("other"), "running/healthy");
    assert_eq!(stack.container_id("web"), web_id, "web was not touched");

    let run = stack.clusterup(&["apply", "--yes", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["outcome"], "up_to_date", "a second apply does nothing: {run:?}");
}

#[test]
fn a_reference_changed_to_an_unreachable_registry_is_a_registry_error() {
    let (stack, _) = Stack::web_running("dirunreach", |s| s.image("web"));
    let gone = format!("127.0.0.1:{}/team/web:v2", free_port());
    stack.write_compose(&format!("services:\n  web:\n    image: {gone}\n"));
    let run = stack.clusterup(&["check", "--only", "--json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let service = &run.json()["services"][0];
    assert_eq!(service["state"], "registry_error", "never `local_build`: {run:?}");
    assert!(service["detail"].as_str().unwrap_or("").contains("127.0.0.1"), "{run:?}");
}

/// Issue 14, part 2: a service deleted from the files by hand goes; its
/// named volume and data stay; its anonymous volume makes it a data risk.
/// A service of an inactive profile that runs is no removal.
#[test]
fn a_service_removed_from_the_files_is_removed_and_its_volumes_kept() {
    let mut stack = Stack::new("dirremove");
    let (web, db) = (stack.image("web"), stack.image("db"));
    stack.publish("v1", &web);
    stack.publish("v1", &db);
    let tools = format!("  tools:\n    image: {web}\n    profiles: [debug]\n");
    stack.write_compose(&format!(
        "services:\n  web:\n    image: {web}\n{tools}  db:\n    image: {db}\n    volumes: [data:/data, /cache]\nvolumes:\n  data: {{}}\n"
    ));
    stack.write_config("");
    stack.up();
    let out = stack.compose(&["--profile", "debug", "up", "--detach", "--wait", "tools"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    stack.exec("db", "echo precious > /data/file");
    let web_id = stack.container_id("web");

    stack.write_compose(&format!("services:\n  web:\n    image: {web}\n{tools}"));
    let run = stack.clusterup(&["check", "--only", "--json"]);
    assert_eq!(run.code, 100, "{run:?}");
    let plan = run.json();
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "tools (profile debug) is no removal: {run:?}");
    assert_eq!((changes[0]["kind"].as_str(), changes[0]["service"].as_str()), (Some("remove"), Some("db")));
    assert!(plan["data_risks"].to_string().contains("/cache"), "{run:?}");

    let run = stack.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 4, "data at risk needs more than --yes: {run:?}");
    assert_eq!(stack.health("db"), "running/healthy");
    let label = format!("label=com.docker.compose.project={}", stack.name);
    let db_before = docker(&["ps", "-q", "--filter", &label, "--filter", "label=com.docker.compose.service=db"]);
    assert!(!String::from_utf8_lossy(&db_before.stdout).trim().is_empty(), "db runs before");
    let format = "{{range .Mounts}}{{if eq .Destination \"/cache\"}}{{.Name}}{{end}}{{end}}";
    let cache = docker(&["inspect", "-f", format, String::from_utf8_lossy(&db_before.stdout).trim()]);
    let cache = String::from_utf8_lossy(&cache.stdout).trim().to_string();
    assert_eq!(cache.len(), 64, "db's anonymous volume: {cache:?}");

    let run = stack.clusterup(&["apply", "--yes", "--accept-data-risk"]);
    assert_eq!(run.code, 0, "{run:?}");
    // Not `compose ps db`: the files no longer know db.
    let db_left = docker(&["ps", "-aq", "--filter", &label, "--filter", "label=com.docker.compose.service=db"]);
    assert!(String::from_utf8_lossy(&db_left.stdout).trim().is_empty(), "db is removed");
    assert_eq!(stack.volume_file("data", "file").as_deref(), Some("precious"), "its named volume and data stay");
    assert!(docker(&["volume", "inspect", &cache]).status.success(), "its anonymous volume stays too");
    // Detached and unlabelled, it is the test's to clean up.
    docker(&["volume", "rm", &cache]);
    assert_eq!(stack.container_id("web"), web_id, "web was not touched");
    assert_eq!(stack.health("tools"), "running/healthy", "tools was not touched");
    let run = stack.clusterup(&["check", "--only"]);
    assert_eq!(run.code, 0, "{run:?}");
}

/// Issue 14, part 3: an edit that fails (a port already taken) is rolled
/// back with the files that ran before: the old port serves again, the
/// files on disk are the old ones, the edit is kept aside, and nothing
/// tries it again.
#[test]
fn a_failed_edit_is_rolled_back_with_the_previous_files() {
    let mut stack = Stack::new("dirport");
    let web = stack.image("web");
    stack.publish("v1", &web);
    let (old_port, taken) = (free_port(), std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let taken_port = taken.local_addr().unwrap().port();
    let compose = |port: u16| format!("services:\n  web:\n    image: {web}\n    ports: ['127.0.0.1:{port}:8080']\n");
    stack.write_compose(&compose(old_port));
    stack.write_config("");
    stack.up();
    let run = stack.clusterup(&["check", "--only"]);
    assert_eq!(run.code, 0, "{run:?}");

    stack.write_compose(&compose(taken_port));
    let run = stack.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 1, "rolled back, not 'a human is needed': {run:?}");
    assert!(run.stdout.contains("failed and rolled back"), "{run:?}");
    assert_eq!(http_get(old_port, "/version").as_deref(), Some("v1"), "the old port serves again");
    let on_disk = std::fs::read_to_string(stack.dir.join("compose.yaml")).unwrap();
    assert_eq!(on_disk, compose(old_port), "the files that ran are back");
    let output = run.all();
    let kept = output.lines().find_map(|l| l.split("the edited ones are kept in ").nth(1)).expect("where the edit is");
    let edit = std::fs::read_to_string(std::path::Path::new(kept.trim()).join("compose.yaml")).unwrap();
    assert_eq!(edit, compose(taken_port), "the edit is kept");

    let run = stack.clusterup(&["apply", "--auto", "--json"]);
    assert_eq!((run.code, run.json()["outcome"].as_str()), (0, Some("up_to_date")), "nothing to retry: {run:?}");
    drop(taken);
}

/// Issue 14, part 3: `rollback --to N` on a directory stack brings back
/// revision N's files and containers, across later structural changes.
#[test]
fn rollback_to_a_revision_restores_its_files() {
    let mut stack = Stack::new("dirrollto");
    let (web, other) = (stack.image("web"), stack.image("other"));
    stack.publish("v1", &web);
    stack.publish("v1", &other);
    let compose = |mode: &str, with_other: bool| {
        let mut yaml = format!("services:\n  web:\n    image: {web}\n    environment: {{MODE: {mode}}}\n");
        if with_other {
            yaml.push_str(&format!("  other:\n    image: {other}\n"));
        }
        yaml
    };
    stack.write_compose(&compose("a", false));
    stack.write_config("");
    stack.up();
    assert_eq!(stack.clusterup(&["check", "--only"]).code, 0);

    stack.write_compose(&compose("b", false));
    let run = stack.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    stack.write_compose(&compose("c", true));
    let run = stack.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(stack.env("web").contains("MODE=c") && stack.has_container("other"));

    let run = stack.clusterup(&["rollback", "--to", "1", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(std::fs::read_to_string(stack.dir.join("compose.yaml")).unwrap(), compose("b", false));
    assert!(stack.env("web").contains("MODE=b"), "{}\n{run:?}", stack.env("web"));
    assert!(!stack.has_container("other"), "other, added after revision 1, is removed");
    assert_eq!(stack.health("web"), "running/healthy");
    let run = stack.clusterup(&["check", "--only"]);
    assert_eq!(run.code, 0, "files and containers agree again: {run:?}");
}

/// Issue 17: the compose model is kept between runs while nothing Compose
/// reads changes, and a change to any of it is seen on the next run.
#[test]
fn a_kept_compose_model_never_hides_a_change_to_what_compose_reads() {
    use std::os::unix::fs::MetadataExt;
    let mut stack = Stack::new("dircache");
    let web = stack.image("web");
    stack.publish("v1", &web);
    stack.write_compose(&format!(
        "services:\n  web:\n    image: {web}\n    env_file: [app.env]\n    environment:\n      FROM_DOTENV: ${{DOTENV_VALUE}}\n      FROM_SHELL: ${{SHELL_VALUE:-unset}}\n      TOKEN: CanaryKeptModel\n    command: [/bin/sh, -c, 'KEY=CanaryKeptCommand exec /bin/httpd -f -p 8080 -h /www']\n"
    ));
    let write = |name: &str, text: &str| std::fs::write(stack.dir.join(name), text).unwrap();
    write(".env", "DOTENV_VALUE=1\n");
    write("app.env", "APP=1\n");
    stack.write_config("");
    stack.up();
    let check = |env: &[(&str, &str)]| {
        let mut cmd = stack.clusterup_command(&stack.dir, &["check", "--only", "--json"]);
        cmd.envs(env.iter().copied());
        Run::of(cmd)
    };
    let kept = || {
        let found = crate::support::files_under(&stack.state, &[]);
        let (path, bytes) = found.iter().find(|(p, _)| p.ends_with("compose-model.json")).expect("the model is kept");
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("CanaryKept"), "no value of the environment or command is kept: {text}");
        // The inode alone is no proof: a rewrite (temp file, rename) may
        // get the number the file before it freed.
        let meta = std::fs::metadata(path).unwrap();
        (meta.ino(), meta.modified().unwrap())
    };
    let in_step = |why: &str| {
        let run = check(&[]);
        assert_eq!(run.code, 0, "{why}: {run:?}");
    };
    in_step("first run");
    let first = kept();
    in_step("second run");
    assert_eq!(kept(), first, "nothing changed: the kept model answered and was not written again");

    let recreates_web = |what: &str, run: Run| {
        assert_eq!(run.code, 100, "{what} is seen: {run:?}");
        let plan = run.json();
        assert_eq!(plan["changes"][0]["service"], "web", "{what}: {run:?}");
        assert_eq!(plan["changes"][0]["kind"], "recreate", "{what}: {run:?}");
    };
    for (what, file, changed, back) in
        [(".env", ".env", "DOTENV_VALUE=2\n", "DOTENV_VALUE=1\n"), ("an env_file", "app.env", "APP=2\n", "APP=1\n")]
    {
        write(file, changed);
        recreates_web(what, check(&[]));
        write(file, back);
        in_step(&format!("{what} back as it was"));
    }
    recreates_web("a variable of the environment", check(&[("SHELL_VALUE", "set")]));
    in_step("the environment back as it was");
    assert_ne!(kept(), first, "each change asked Compose again");
}

/// A stack named by its compose files, one overriding the other, whose
/// service reads an env_file and publishes a port: in step right after
/// `compose up` with the same files.
#[test]
fn an_env_file_service_of_named_compose_files_is_in_step() {
    let mut stack = Stack::new("direnvfiles");
    let web = stack.image("web");
    stack.publish("v1", &web);
    let port = free_port();
    std::fs::write(
        stack.dir.join("base.yaml"),
        format!(
            "services:\n  web:\n    image: {web}\n    env_file: [app.env]\n    ports: [\"127.0.0.1:{port}:8080\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(stack.dir.join("prod.yaml"), "services:\n  web:\n    environment: {MODE: prod}\n").unwrap();
    std::fs::write(stack.dir.join("app.env"), "APP=1\n").unwrap();
    stack.write_config("    compose_files: [base.yaml, prod.yaml]\n");
    let out =
        stack.compose(&["--file", "base.yaml", "--file", "prod.yaml", "up", "--detach", "--wait", "--pull", "never"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = stack.clusterup(&["check", "--only", "--json"]);
    assert_eq!(run.code, 0, "in step: {run:?}");
    std::fs::write(stack.dir.join("app.env"), "APP=2\n").unwrap();
    let run = stack.clusterup(&["check", "--only", "--json"]);
    assert_eq!(run.code, 100, "the env_file's change is seen: {run:?}");
}
