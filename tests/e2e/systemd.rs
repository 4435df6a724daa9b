//! The packaged systemd unit run by systemd for real (issue 13, item 17):
//! systemd as PID 1 of a container built from this host's own /usr, with
//! the engine's socket, running `clusterup.service` as shipped (only
//! ExecStart points at the binary under test). Its hardening
//! (`ProtectSystem=strict`, `UMask=0077`, ...) is enforced there, so what
//! the unit may write is what it may write on a host.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Stack, docker};

/// A container running systemd, removed with its image on drop.
struct SystemdHost {
    name: String,
}

impl SystemdHost {
    fn start(stack: &Stack, config: &str, remote: &Path, serve_port: u16) -> SystemdHost {
        let ctx = stack.scratch("systemd-image");
        let link = |target: &str, name: &str| std::os::unix::fs::symlink(target, ctx.join(name)).unwrap();
        for (dir, name) in [("usr/bin", "bin"), ("usr/lib", "lib"), ("usr/lib64", "lib64"), ("usr/sbin", "sbin")] {
            link(dir, name);
        }
        for dir in
            ["usr", "var/lib/prometheus/node-exporter", "srv", "opt/clusterup", "tmp", "run", "proc", "sys", "dev"]
        {
            std::fs::create_dir_all(ctx.join(dir)).unwrap();
        }
        link("../run", "var/run");
        let write = |path: &str, text: &str| {
            let path = ctx.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
        write("etc/group", "root:x:0:\n");
        write("etc/machine-id", "");
        write("etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n");
        write("etc/os-release", &std::fs::read_to_string("/etc/os-release").unwrap_or_default());
        write("etc/clusterup/clusterup.yaml", config);
        let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/clusterup.service"));
        write("etc/systemd/system/clusterup.service", &unit.unwrap());
        let serve =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/clusterup-serve.service"));
        write("etc/systemd/system/clusterup-serve.service", &serve.unwrap());
        write(
            "etc/systemd/system/clusterup.service.d/under-test.conf",
            "[Service]\nExecStart=\nExecStart=/opt/clusterup/clusterup apply --auto\n",
        );
        write(
            "etc/systemd/system/clusterup-serve.service.d/under-test.conf",
            &format!(
                "[Service]\nExecStart=\nExecStart=/opt/clusterup/clusterup serve --listen 127.0.0.1:{serve_port} --every 1h\n"
            ),
        );
        // The unit requires docker.service; the engine here is the host's.
        write(
            "etc/systemd/system/docker.service",
            "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
        );
        write("Dockerfile", "FROM scratch\nCOPY . /\nSTOPSIGNAL SIGRTMIN+3\nCMD [\"/lib/systemd/systemd\"]\n");
        let image = format!("clusterup-test/systemd:{}", stack.name);
        let bridge = crate::support::on_default_bridge();
        let built = Command::new("docker")
            .args(["build", "-q", "-t", &image])
            .arg(&ctx)
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .unwrap();
        drop(bridge);
        assert!(built.status.success(), "building the systemd image: {}", String::from_utf8_lossy(&built.stderr));
        let host = SystemdHost { name: format!("{}-systemd", stack.name) };
        let bin = env!("CARGO_BIN_EXE_clusterup");
        let out = docker(&[
            "run",
            "-d",
            "--name",
            &host.name,
            // Enough for systemd to build each service's namespaces (so the
            // hardening is enforced, not skipped as in a plain container).
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "apparmor=unconfined",
            "--security-opt",
            "seccomp=unconfined",
            "--network",
            "host",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "--tmpfs",
            "/tmp",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            "-v",
            "/usr:/usr:ro",
            "-v",
            "/var/run/docker.sock:/run/docker.sock",
            "-v",
            &format!("{bin}:/opt/clusterup/clusterup:ro"),
            "-v",
            &format!("{}:/remote.git:ro", remote.display()),
            &image,
        ]);
        assert!(out.status.success(), "starting systemd in a container: {}", String::from_utf8_lossy(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = host.exec(&["systemctl", "is-system-running"]);
            let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(Instant::now() < deadline, "systemd did not come up: {state:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
        host
    }

    fn exec(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// `systemctl start clusterup.service`: whether it succeeded, and its
    /// journal.
    fn run_unit(&self) -> (bool, String) {
        let started = self.exec(&["systemctl", "start", "clusterup.service"]);
        let journal = self.exec(&["journalctl", "-u", "clusterup.service", "--no-pager", "-o", "cat"]);
        (started.status.success(), String::from_utf8_lossy(&journal.stdout).to_string())
    }

    fn write(&self, path: &str, text: &str) {
        let out =
            self.exec(&["sh", "-c", &format!("mkdir -p \"$(dirname {path})\" && cat > {path} <<'EOF'\n{text}EOF")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(self.exec(&["systemctl", "daemon-reload"]).status.success());
    }
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        let image = docker(&["inspect", "-f", "{{.Config.Image}}", &self.name]);
        let _ = docker(&["rm", "-f", &self.name]);
        let image = String::from_utf8_lossy(&image.stdout).trim().to_string();
        if !image.is_empty() {
            let _ = docker(&["image", "rm", &image]);
        }
    }
}

#[test]
fn the_unit_as_shipped_deploys_a_git_stack_under_srv_and_writes_metrics() {
    let mut stack = Stack::new("systemd");
    let web = stack.image("web");
    stack.publish("v1", &web);
    let remote = stack.remote();
    remote.commit_compose(&format!("services:\n  web:\n    image: {web}\n"), "first");
    let config = format!(
        "metrics_file: /var/lib/prometheus/node-exporter/clusterup.prom\nstacks:\n  - name: {}\n    git: {{url: 'file:///remote.git', branch: main, path: stack}}\n    directory: /srv/{}\n    auto: {{structural: true}}\n    health: {{timeout: 30s, stability: 1s}}\n",
        stack.name, stack.name
    );
    let serve_port = crate::support::free_port();
    let host = SystemdHost::start(&stack, &config, &remote.bare, serve_port);

    // The paths the unit shipped with before: the checkout under /srv is
    // read-only under ProtectSystem=strict, and nothing is deployed.
    host.write(
        "/etc/systemd/system/clusterup.service.d/old-paths.conf",
        "[Service]\nReadWritePaths=\nReadWritePaths=/var/lib/clusterup /run/docker.sock /var/run/docker.sock\n",
    );
    let (ok, journal) = host.run_unit();
    assert!(!ok, "the old paths cannot work: {journal}");
    assert!(journal.contains("Read-only file system"), "{journal}");
    assert!(!stack.has_container("web"), "nothing was started");

    assert!(host.exec(&["rm", "/etc/systemd/system/clusterup.service.d/old-paths.conf"]).status.success());
    assert!(host.exec(&["systemctl", "daemon-reload"]).status.success());
    let (ok, journal) = host.run_unit();
    assert!(ok, "the unit as shipped deploys: {journal}");
    assert_eq!(stack.health("web"), "running/healthy", "{journal}");
    let metrics = host.exec(&["cat", "/var/lib/prometheus/node-exporter/clusterup.prom"]);
    assert!(String::from_utf8_lossy(&metrics.stdout).contains("clusterup_last_run_exit_code"), "{journal}");
    let srv = format!("/srv/{}", stack.name);
    let state = host.exec(&["stat", "-c", "%a", "/var/lib/clusterup", &srv, &format!("{srv}/stack/compose.yaml")]);
    assert_eq!(
        String::from_utf8_lossy(&state.stdout),
        "700\n755\n644\n",
        "under UMask=0077: a private state dir, an operator's checkout directory and files as git records them"
    );

    // The serve unit as shipped: its API answers, SIGUSR1 through systemd
    // runs an apply, and a stop ends it cleanly.
    let token = "read-token-for-the-systemd-test";
    host.write("/etc/clusterup/serve.credentials", &format!("token t read {token}\n"));
    assert!(host.exec(&["chmod", "600", "/etc/clusterup/serve.credentials"]).status.success());
    let started = host.exec(&["systemctl", "start", "clusterup-serve.service"]);
    let journal = || {
        let j = host.exec(&["journalctl", "-u", "clusterup-serve.service", "--no-pager", "-o", "cat"]);
        String::from_utf8_lossy(&j.stdout).to_string()
    };
    assert!(started.status.success(), "{}", journal());
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "-H", &format!("Authorization: Bearer {token}")])
            .arg(format!("http://127.0.0.1:{serve_port}{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !get("/api/v1/status").contains(&stack.name) {
        assert!(Instant::now() < deadline, "the API did not answer: {}", journal());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(host.exec(&["systemctl", "kill", "-s", "USR1", "clusterup-serve.service"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !journal().contains("SIGUSR1: apply --auto started")
        || get("/api/v1/operations").contains("\"state\": \"running\"")
    {
        assert!(Instant::now() < deadline, "SIGUSR1 ran nothing: {}", journal());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(get("/api/v1/operations").contains("\"exit_code\": 0"), "{}", journal());
    assert!(host.exec(&["systemctl", "stop", "clusterup-serve.service"]).status.success());
    let state = host.exec(&["systemctl", "show", "-p", "ActiveState,Result", "clusterup-serve.service"]);
    assert_eq!(String::from_utf8_lossy(&state.stdout), "Result=success\nActiveState=inactive\n", "{}", journal());
}
