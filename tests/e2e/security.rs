//! Secrets never leak, external waits are bounded, hostile input changes
//! nothing (issue 13). The sweep plants a distinct canary in every place a
//! secret can live and reads every byte clusterup writes.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::receiver::Receiver;
use crate::support::{Run, Stack, bed, free_port, http_get, silent_port};

/// Runs a prepared clusterup command and keeps everything it printed.
fn compose_with(stack: &Stack, n: u32) -> String {
    let web = stack.auth_image("web");
    format!(
        "x-common: &common\n  DB_PASSWORD: CanaryAnchor{n}\nservices:\n  web:\n    image: {web}\n    environment:\n      <<: *common\n      API_TOKEN: CanaryEnv{n}\n      FROM_DOTENV: ${{DOTENV_SECRET}}\n    labels:\n      traefik.http.middlewares.auth.basicauth.users: \"admin:CanaryLabel{n}\"\n    x-note: CanaryExtension{n}\n  tools:\n    profiles: [never]\n    build:\n      context: .\n      args:\n        NPM_TOKEN: CanaryBuildArg{n}\n    command: [\"migrate\", \"--password=CanaryCommand{n}\"]\n    environment: # credentials\n    - CERT=CanaryList{n}\n    entrypoint: |\n      /bin/sh -c \"KEY=CanaryBlock{n} exec run\"\n"
    )
}

fn dotenv_with(n: u32) -> String {
    format!("DOTENV_SECRET=CanaryDotenv{n}\nMULTI=\"first line\nCanaryMultiline{n}\nlast\"\n")
}

#[test]
fn no_secret_reaches_any_output_state_file_or_notification() {
    let rx = Receiver::start();
    let mut stack = Stack::new("sweep");
    let web = stack.auth_image("web");
    stack.publish("v1", &web);
    let remote = stack.remote();
    remote.commit_files(&[("compose.yaml", &compose_with(&stack, 1)), (".env", &dotenv_with(1))], "first");
    let dead = free_port();
    let leaky = format!("http://deploy:CanaryUrlPassword@127.0.0.1:{dead}/team/repo.git");
    let config = format!(
        "notify:\n  - {{type: webhook, url: '{}'}}\n  - {{type: slack, url: '{}'}}\n  - {{type: github, repo: o/r, api_url: '{}', token_env: CU_SWEEP_TOKEN}}\nstacks:\n  - name: {}\n    git: {{url: 'file://{}', branch: main, path: stack}}\n    auto: {{structural: true}}\n    health: {{timeout: 30s, stability: 1s}}\n  - name: {}-remote\n    git: {{url: '{leaky}', branch: main, timeout: 5s}}\n",
        rx.url("/hook/CanaryWebhookPath"),
        rx.url("/slack/CanarySlackPath"),
        rx.url("/gh"),
        stack.name,
        remote.bare.display(),
        stack.name,
    );
    std::fs::write(stack.config_path(), config).unwrap();
    let metrics = stack.scratch("metrics").join("clusterup.prom");
    let run = |args: &[&str]| {
        let mut cmd = stack.clusterup_command(&stack.dir, args);
        cmd.env("CLUSTERUP_GIT_TOKEN", "CanaryGitToken")
            .env("CU_SWEEP_TOKEN", "CanaryGithubToken")
            .env("CLUSTERUP_METRICS_FILE", &metrics);
        Run::of(cmd)
    };
    let mut outputs = Vec::new();

    let first = run(&["apply", "--yes", "--json"]);
    assert_eq!(first.code, 1, "the remote with credentials cannot be reached: {first:?}");
    let doc = first.json();
    assert_eq!(doc["stacks"][0]["outcome"], "applied", "{first:?}");
    assert!(doc["stacks"][1]["error"].as_str().unwrap().contains(&format!("http://127.0.0.1:{dead}/team/repo.git")));
    outputs.push(first);

    remote.commit_files(&[("compose.yaml", &compose_with(&stack, 2)), (".env", &dotenv_with(2))], "second");
    let check = run(&["check", "--only", "--json", "--stack", &stack.name]);
    assert_eq!(check.code, 100, "{check:?}");
    let diff = check.json()["file_diff"].as_str().unwrap().to_string();
    assert!(diff.contains("API_TOKEN") && diff.contains("<redacted #"), "keys and fingerprints show: {diff}");
    outputs.push(check);
    outputs.push(run(&["check", "--only"]));
    let applied = run(&["apply", "--auto", "--json", "--stack", &stack.name]);
    assert_eq!(applied.code, 0, "{applied:?}");
    outputs.push(applied);

    // Compose quotes a bad value in its error: it must not reach anyone.
    let broken = compose_with(&stack, 3).replace("    x-note:", "    ports: [\"${HOSTPORT}:8080\"]\n    x-note:");
    remote
        .commit_files(&[("compose.yaml", &broken), (".env", &format!("{}HOSTPORT=CanaryPort\n", dotenv_with(3)))], "3");
    let bad = run(&["check", "--json", "--stack", &stack.name]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("invalid") || bad.stderr.contains("hostPort"), "compose's reason still shows: {bad:?}");
    outputs.push(bad);
    outputs.push(run(&["status", "--json"]));
    outputs.push(run(&["status"]));
    outputs.push(run(&["rollback", "--list", "--json", "--stack", &stack.name]));

    let mut sinks: Vec<(String, Vec<u8>)> =
        outputs.iter().map(|r| (format!("output of exit {}", r.code), r.all().into_bytes())).collect();
    // Not the clone's objects nor the checkout: the repository's own
    // content holds its env values by design.
    let files = crate::support::files_under(&stack.state, &["checkout", "objects"]);
    sinks.extend(files.into_iter().map(|(path, bytes)| (path.display().to_string(), bytes)));
    sinks.push(("metrics".into(), std::fs::read(&metrics).expect("the metrics file was written")));
    let requests = rx.requests();
    assert!(requests.iter().any(|r| r.path.starts_with("/hook")), "notifications were sent");
    for r in &requests {
        // The URL path and the Authorization header are where those
        // secrets belong; the bodies are what the receiver may show.
        sinks.push((
            format!("{} {} body", r.method, r.path.split('/').nth(1).unwrap_or("")),
            r.body.to_string().into_bytes(),
        ));
    }
    let canaries = [
        "CanaryUrlPassword",
        "CanaryGitToken",
        "CanaryGithubToken",
        "CanaryWebhookPath",
        "CanarySlackPath",
        "CanaryAnchor",
        "CanaryEnv",
        "CanaryDotenv",
        "CanaryMultiline",
        "CanaryLabel",
        "CanaryExtension",
        "CanaryBuildArg",
        "CanaryCommand",
        "CanaryList",
        "CanaryBlock",
        "CanaryPort",
        bed().auth_password.as_str(),
    ];
    let mut hits = Vec::new();
    for (place, bytes) in &sinks {
        let text = String::from_utf8_lossy(bytes);
        for canary in canaries {
            if text.contains(canary) {
                hits.push(format!("{canary} in {place}"));
            }
        }
    }
    assert!(hits.is_empty(), "secrets leaked:\n{}", hits.join("\n"));
    assert!(sinks.len() > 8, "the sweep read the journal, state files, outputs and bodies: {}", sinks.len());
}

/// Item 13: a service whose name reads as an option is refused before
/// compose is asked to do anything.
#[test]
fn a_service_named_like_an_option_is_refused() {
    let (mut stack, web) = Stack::web_running("optinj", |s| s.image("web"));
    let id = stack.container_id("web");
    stack.publish("v2", &web);
    stack.write_compose(&format!("services:\n  web:\n    image: {web}\n  --force-recreate:\n    image: {web}\n"));
    let run = stack.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("service name \"--force-recreate\" is refused"), "{run:?}");
    assert_eq!(stack.container_id("web"), id, "nothing was recreated");
}

/// Item 16: under systemd's UMask=0077 a checked-out file keeps the mode
/// git records, so a container that does not run as root can read it.
#[test]
fn checked_out_files_are_readable_by_a_non_root_container_whatever_the_umask() {
    let mut stack = Stack::new("umask");
    let web = stack.image("web");
    stack.publish("v1", &web);
    let port = free_port();
    let remote = stack.remote();
    let compose = format!(
        "services:\n  web:\n    image: {web}\n    user: \"65534:65534\"\n    ports: [\"127.0.0.1:{port}:8080\"]\n    volumes: [\"./page.txt:/www/page.txt:ro\"]\n"
    );
    remote.commit_files(&[("compose.yaml", &compose), ("page.txt", "from git\n")], "first");
    stack.write_git_config(&remote, "    auto: {structural: true}\n");
    let plain = stack.clusterup_command(&stack.dir, &["apply", "--yes"]);
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("umask 077; exec \"$0\" \"$@\"").arg(plain.get_program()).args(plain.get_args());
    cmd.current_dir(&stack.dir).stdin(std::process::Stdio::null());
    for (k, v) in plain.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let run = Run::of(cmd);
    assert_eq!(run.code, 0, "{run:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(stack.checkout().join("page.txt")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    assert_eq!(http_get(port, "/page.txt").as_deref(), Some("from git"), "uid 65534 reads the bind-mounted file");
}

/// Item 12: an engine that accepts and never answers costs the engine
/// timeout, not the run.
#[test]
fn a_silent_engine_is_bounded() {
    let stack = Stack::new("silentengine");
    let socket = stack.scratch("engine").join("docker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(8).collect();
        std::thread::sleep(Duration::from_secs(120));
        drop(held);
    });
    stack.write_compose("services:\n  web:\n    image: w\n");
    let config = stack.write_config("");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("timeouts: {{engine: 2s}}\n{text}")).unwrap();
    let mut cmd = stack.clusterup_command(&stack.dir, &["status"]);
    cmd.env("DOCKER_HOST", format!("unix://{}", socket.display()));
    let start = Instant::now();
    let run = Run::of(cmd);
    assert!(start.elapsed() < Duration::from_secs(30), "{:?}: {run:?}", start.elapsed());
    assert_eq!(run.code, 1, "failed, nothing changed: {run:?}");
    assert!(run.stderr.contains("Docker engine") || run.stderr.contains("timed out"), "{run:?}");
}

/// Item 12: a `docker compose` that never finishes costs `timeouts.compose`
/// and leaves nothing running.
#[test]
fn a_hanging_compose_is_bounded() {
    let stack = Stack::new("hangcompose");
    // A Docker CLI config of clusterup's own: the test's cleanup must find
    // the real Compose.
    let docker_config = stack.scratch("hanging-docker-config");
    let plugins = docker_config.join("cli-plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let fake = plugins.join("docker-compose");
    std::fs::write(&fake, "#!/bin/sh\nsleep 300 &\nwait\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    stack.write_compose("services:\n  web:\n    image: w\n");
    let config = stack.write_config("");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("timeouts: {{compose: 2s}}\n{text}")).unwrap();
    let mut cmd = stack.clusterup_command(&stack.dir, &["check", "--only"]);
    cmd.env("DOCKER_CONFIG", &docker_config);
    let start = Instant::now();
    let run = Run::of(cmd);
    assert!(start.elapsed() < Duration::from_secs(30), "{:?}: {run:?}", start.elapsed());
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("did not finish within 2s (timeouts.compose)"), "{run:?}");
    let left = Command::new("pgrep").args(["-f", &fake.display().to_string()]).output().unwrap();
    assert!(left.stdout.is_empty(), "the fake compose's group was killed: {}", String::from_utf8_lossy(&left.stdout));
}

/// Item 9: a git remote that accepts and never answers ends on the first
/// SIGTERM, not after the timeout, and the lock is free again.
#[test]
fn the_first_sigterm_ends_a_hanging_fetch() {
    let stack = Stack::new("hangfetch");
    let port = silent_port();
    let config = format!(
        "stacks:\n  - name: {}\n    git: {{url: 'http://127.0.0.1:{port}/r.git', timeout: 10m, idle_timeout: 10m}}\n",
        stack.name
    );
    std::fs::write(stack.config_path(), config).unwrap();
    let mut child = stack
        .clusterup_command(&stack.dir, &["apply", "--auto"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "still waiting for the remote");
    let sent = Instant::now();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(sent.elapsed() < Duration::from_secs(5), "{:?}", sent.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("interrupted by a signal"), "{stderr}");
    let run = stack.clusterup(&["pause", "--reason", "lock is free"]);
    assert_eq!(run.code, 0, "{run:?}");
}
