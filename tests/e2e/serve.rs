//! `clusterup serve` over real HTTP: each endpoint and scope, the same
//! pause and locks as the command line, push webhooks, SIGUSR1 and
//! SIGTERM.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use hmac::{Mac, SimpleHmac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{Remote, Stack, free_port, image_id};

pub const READ: &str = "read-token-0123456789abcdef";
pub const OPERATE: &str = "operate-token-0123456789abcdef";
const GITHUB: &str = "github-secret-for-this-test";
pub const IMAGE: &str = "image-hook-secret-for-this-test";

/// A `clusterup serve` of the stack's configuration on a port of its own,
/// stopped with SIGTERM when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    agent: ureq::Agent,
}

impl Server {
    pub fn start(stack: &Stack) -> Server {
        Server::start_with(stack, "")
    }

    /// With more lines in its credentials file (peers).
    pub fn start_with(stack: &Stack, more: &str) -> Server {
        let creds = stack.scratch("serve").join("credentials");
        std::fs::write(
            &creds,
            format!(
                "token dash read {READ}\ntoken ci operate {OPERATE}\ngithub {} {GITHUB}\nimage {IMAGE}\n{more}",
                stack.name
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = stack.clusterup_command(&stack.dir, &["serve", "--listen", &listen, "--credentials"]);
        let log = stack.scratch("serve").join("log");
        cmd.arg(&creds).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("starting clusterup serve");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let mut server = Server { child, port, agent };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&listen).is_err() {
            let exited = server.child.try_wait().unwrap();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "serve did not answer on {listen}: {exited:?} {log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(server.get("/api/v1/health", None).0, 200);
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.agent.get(self.url(path));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        answer(req.call())
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.agent.post(self.url(path));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        answer(req.send(body.to_string()))
    }

    fn post_signed(&self, path: &str, headers: &[(&str, String)], body: &str) -> (u16, Value) {
        let mut req = self.agent.post(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        answer(req.send(body))
    }

    /// The operation, once finished.
    pub fn finished(&self, id: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, op) = self.get(&format!("/api/v1/operations/{id}"), Some(READ));
            assert_eq!(status, 200, "{op}");
            if op["state"] == "finished" {
                return op;
            }
            assert!(Instant::now() < deadline, "operation {id} did not finish: {op}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM; its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.stop();
        }
    }
}

fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut response = result.expect("an HTTP answer");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn signature(secret: &str, message: &[u8]) -> String {
    let mut mac = SimpleHmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(message);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The config for `web_running`'s stack, with a health gate that holds
/// the lock a few seconds: long enough to collide with.
fn slow_gate(stack: &Stack) {
    let config = stack.config_path();
    let text = std::fs::read_to_string(&config).unwrap().replace("stability: 1s", "stability: 4s");
    std::fs::write(&config, text).unwrap();
}

#[test]
fn the_api_answers_by_scope_and_shares_pause_and_locks_with_the_cli() {
    let (mut stack, web) = Stack::web_running("serveapi", |s| s.image("web"));
    slow_gate(&stack);
    let mut server = Server::start(&stack);
    let wrong = "wrong-token-0123456789abcdef";

    assert_eq!(server.get("/api/v1/health", None).0, 200, "health needs no token");
    for path in ["/api/v1/status", "/api/v1/history", "/api/v1/versions", "/api/v1/operations"] {
        assert_eq!(server.get(path, None).0, 401, "{path} without a token");
        assert_eq!(server.get(path, Some(wrong)).0, 401, "{path} with a wrong token");
        assert_eq!(server.get(path, Some(READ)).0, 200, "{path} with a read token");
        assert_eq!(server.get(path, Some(OPERATE)).0, 200, "{path} with an operate token");
    }
    let (_, status) = server.get("/api/v1/status", Some(READ));
    assert_eq!(status["command"], "status", "the CLI's own report: {status}");
    assert_eq!(status["services"][0]["service"], "web");
    for op in ["check", "apply", "pause", "resume", "rollback"] {
        // A generous wait: on a loaded machine a check may take over the 2 s
        // after which the answer would be 202.
        let path = format!("/api/v1/{op}?wait=60");
        assert_eq!(server.post(&path, None, json!({})).0, 401, "{op} without a token");
        assert_eq!(server.post(&path, Some(wrong), json!({})).0, 401, "{op} with a wrong token");
        let read = server.post(&path, Some(READ), json!({}));
        assert_eq!(read.0, if op == "check" { 200 } else { 403 }, "{op} with a read token: {read:?}");
    }
    let (code, op) = server.post("/api/v1/check?wait=60", Some(OPERATE), json!({}));
    assert_eq!((code, op["exit_code"].as_u64()), (200, Some(0)), "nothing pending: {op}");
    assert_eq!(op["report"]["command"], "check");
    assert_eq!(server.post("/api/v1/apply", Some(OPERATE), json!({"stack": "nosuch"})).0, 404);
    assert_eq!(server.post("/api/v1/apply", Some(OPERATE), json!({"approve": "yes"})).0, 400, "a bad body");

    // A pause through the API holds the timer's apply back, and the other way round.
    let (code, op) = server.post("/api/v1/pause?wait=60", Some(OPERATE), json!({"reason": "incident 7", "for": "1h"}));
    assert_eq!(code, 200, "{op}");
    assert_eq!(op["report"]["pause"]["by"], "api:ci");
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.all().contains("incident 7"), "{run:?}");
    assert_eq!(server.post("/api/v1/resume?wait=60", Some(OPERATE), json!({})).0, 200);
    assert_eq!(stack.clusterup(&["pause", "--reason", "from the shell"]).code, 0);
    let (_, op) = server.post("/api/v1/apply?wait=60", Some(OPERATE), json!({}));
    assert_eq!(op["exit_code"], 4, "{op}");
    assert_eq!(stack.clusterup(&["resume"]).code, 0);

    // One apply at a time, whoever starts it.
    stack.publish("v2", &web);
    let (code, op) = server.post("/api/v1/apply", Some(OPERATE), json!({}));
    assert_eq!(code, 202, "the apply holds the lock and goes on: {op}");
    let id = op["id"].as_u64().unwrap();
    let (code, busy) = server.post("/api/v1/apply", Some(OPERATE), json!({}));
    assert_eq!(code, 409, "{busy}");
    assert_eq!(busy["operation"], id);
    let run = stack.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 75, "{run:?}");
    let op = server.finished(id);
    assert_eq!(op["exit_code"], 0, "{op}");
    assert_eq!(op["report"]["outcome"], "applied");
    assert_eq!(stack.outcomes(), ["applied"], "one revision");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));

    stack.publish("v1", &web);
    let mut cli = stack.clusterup_command(&stack.dir, &["apply", "--yes"]);
    let mut cli = cli.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let lock = stack.state.join(&stack.name).join("lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != cli.id().to_string() {
        assert!(Instant::now() < deadline, "the CLI's apply did not take the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, op) = server.post("/api/v1/apply?wait=60", Some(OPERATE), json!({}));
    assert_eq!(code, 409, "{op}");
    assert_eq!(op["exit_code"], 75);
    assert!(op["report"]["error"].as_str().unwrap().contains(&format!("pid {}", cli.id())), "who holds it: {op}");
    assert!(cli.wait().unwrap().success());
    assert_eq!(stack.outcomes(), ["applied", "applied"]);

    // A registry push, signed: the stacks using the image apply it.
    stack.publish("v2", &web);
    let body = json!({"image": web}).to_string();
    let stamp = jiff::Timestamp::now().as_second().to_string();
    let sign = |secret: &str| signature(secret, format!("{stamp}.{body}").as_bytes());
    let headers = |sig: String| vec![("X-Clusterup-Timestamp", stamp.clone()), ("X-Clusterup-Signature-256", sig)];
    let (code, _) = server.post_signed("/hooks/image", &headers(sign("not-the-secret")), &body);
    assert_eq!(code, 401);
    let (code, pushed) = server.post_signed("/hooks/image", &headers(sign(IMAGE)), &body);
    assert_eq!(code, 202, "{pushed}");
    assert_eq!(pushed["stacks"], json!([stack.name]));
    let op = server.finished(pushed["operations"][0].as_u64().unwrap());
    assert_eq!(op["report"]["outcome"], "applied", "{op}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    let (code, _) = server.post_signed("/hooks/image", &headers(sign(IMAGE)), &body);
    assert_eq!(code, 409, "a replay is refused");

    // A rollback with a reason; versions lists what can be returned to.
    let (code, op) = server.post("/api/v1/rollback?wait=120", Some(OPERATE), json!({"reason": "v2 was worse"}));
    assert_eq!((code, op["exit_code"].as_u64()), (200, Some(0)), "{op}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"));
    let (_, versions) = server.get("/api/v1/versions", Some(READ));
    let listed = &versions["stacks"][0]["versions"];
    assert_eq!(versions["stacks"][0]["deployed"], 4, "{versions}");
    let rejected = listed.as_array().unwrap().iter().find(|v| v["revision"] == 3).unwrap();
    assert!(rejected["rejected"].as_str().unwrap().contains("v2 was worse"), "{versions}");
    let (_, history) = server.get("/api/v1/history", Some(READ));
    assert_eq!(history["revisions"].as_array().unwrap().len(), 4, "{history}");

    // SIGUSR1 runs `apply --auto` now.
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGUSR1) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let usr1 = loop {
        let (_, ops) = server.get("/api/v1/operations", Some(READ));
        if let Some(op) = ops["operations"].as_array().unwrap().iter().find(|o| o["by"] == "SIGUSR1") {
            break op["id"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "SIGUSR1 started nothing");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(server.finished(usr1)["exit_code"].is_u64(), "it ran to its end");

    // Guessing tokens is slowed down.
    let refused = (0..40).map(|_| server.get("/api/v1/status", Some(wrong)).0).collect::<Vec<_>>();
    assert_eq!(refused.last(), Some(&429), "{refused:?}");

    // SIGTERM while an apply runs: the apply stops before it changes
    // anything or rolls back before the server exits, never left half done.
    let running = stack.running_image("web");
    stack.publish("bad", &web);
    let lock = stack.state.join(&stack.name).join("lock");
    let last_holder = std::fs::read_to_string(&lock).unwrap_or_default();
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGUSR1) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&lock).unwrap_or_default() == last_holder {
        assert!(Instant::now() < deadline, "the scheduled apply did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.stop(), Some(0));
    let outcomes = stack.outcomes();
    let last = outcomes.last().map(String::as_str);
    assert!(
        matches!(last, Some("failed" | "rolled_back")),
        "stopped before or rolled back, not unfinished: {outcomes:?}"
    );
    assert_eq!(stack.running_image("web"), running, "the running service is as it was");
}

#[test]
fn a_signed_github_push_applies_the_followed_branch_and_nothing_else_does() {
    let mut stack = Stack::new("servegh");
    let repo = format!("{}/{}/web", crate::support::bed().registry, stack.name);
    stack.publish("v1", &format!("{repo}:v1"));
    stack.publish("v2", &format!("{repo}:v2"));
    let remote: Remote = stack.remote();
    remote.commit_compose(&format!("services:\n  web:\n    image: {repo}:v1\n"), "v1");
    stack.write_git_config(&remote, "");
    assert_eq!(stack.clusterup(&["apply", "--yes"]).code, 0);
    let server = Server::start(&stack);
    let commit = remote.commit_compose(&format!("services:\n  web:\n    image: {repo}:v2\n"), "v2");

    let clone_url = format!("file://{}", remote.bare.display());
    let payload =
        json!({"ref": "refs/heads/main", "after": commit, "repository": {"clone_url": clone_url}}).to_string();
    let headers = |sig: String, delivery: &str| {
        vec![
            ("X-GitHub-Event", "push".to_string()),
            ("X-GitHub-Delivery", delivery.to_string()),
            ("X-Hub-Signature-256", sig),
        ]
    };
    let (code, _) =
        server.post_signed("/hooks/github", &headers(signature("wrong", payload.as_bytes()), "d-1"), &payload);
    assert_eq!(code, 401, "a bad signature");
    let (code, _) = server.post_signed("/hooks/github", &[("X-GitHub-Event", "push".into())], &payload);
    assert_eq!(code, 401, "no signature");
    let other = json!({"ref": "refs/heads/other", "repository": {"clone_url": clone_url}}).to_string();
    let (code, answer) =
        server.post_signed("/hooks/github", &headers(signature(GITHUB, other.as_bytes()), "d-2"), &other);
    assert_eq!((code, answer["stacks"].clone()), (202, json!([])), "another branch: {answer}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v1"), "nothing changed");

    let signed = headers(signature(GITHUB, payload.as_bytes()), "d-3");
    let (code, answer) = server.post_signed("/hooks/github", &signed, &payload);
    assert_eq!(code, 202, "{answer}");
    let op = server.finished(answer["operations"][0].as_u64().unwrap());
    assert_eq!(op["exit_code"], 0, "{op}");
    assert_eq!(op["report"]["commit"], commit.as_str(), "{op}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
    let (code, _) = server.post_signed("/hooks/github", &signed, &payload);
    assert_eq!(code, 409, "a replayed delivery");
}

/// Off loopback the API needs TLS (or an explicit --insecure-http); with a
/// certificate it serves https only, and a key others can read is refused.
#[test]
fn tls_is_required_off_loopback_and_served_with_a_certificate() {
    let stack = Stack::new("servetls");
    stack.write_compose("services:\n  web:\n    image: clusterup-fixture/web:v1\n");
    stack.write_config("");
    let port = free_port().to_string();
    let run = stack.clusterup(&["serve", "--listen", &format!("0.0.0.0:{port}")]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--tls-cert and --tls-key, or --insecure-http"), "{run:?}");

    let dir = stack.scratch("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=clusterup-test", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let tls = |stack: &Stack| {
        let mut cmd = stack.clusterup_command(&stack.dir, &["serve", "--listen", &listen, "--tls-cert"]);
        cmd.arg(&cert).arg("--tls-key").arg(&key);
        cmd
    };
    let run = crate::support::Run::of(tls(&stack));
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("lets others read it"), "{run:?}");

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut server = tls(&stack).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let curl = |url: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&cert)
            .arg(url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let https = format!("https://127.0.0.1:{port}/api/v1/health");
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl(&https) != "200" {
        assert!(Instant::now() < deadline, "no https answer on {listen}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(curl(&format!("http://127.0.0.1:{port}/api/v1/health")), "200", "no plain http on a TLS port");
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGTERM) };
    assert!(server.wait().unwrap().success());
}
