//! A fleet of three hosts, each its own stack (project, state dir and
//! configuration) on this engine, addressed by Ansible as three inventory
//! hosts with `ansible_connection=local`, all following one git branch.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{Remote, Stack, free_port};

struct Fleet {
    hosts: Vec<Stack>,
    remote: Remote,
    inventory: PathBuf,
    _dir: tempfile::TempDir,
}

fn config(host: &Stack, remote: &Remote) -> String {
    format!(
        "state_dir: {}\nstacks:\n  - name: {}\n    git: {{url: 'file://{}', branch: main, path: stack}}\n    auto: {{structural: true}}\n    health: {{timeout: 30s, stability: 1s}}\n",
        host.state.display(),
        host.name,
        remote.bare.display()
    )
}

impl Fleet {
    fn new(test: &str) -> Fleet {
        let mut hosts: Vec<Stack> = (1..=3).map(|n| Stack::new(&format!("{test}{n}"))).collect();
        let web = hosts[0].image("web");
        hosts[0].publish("v1", &web);
        let remote = hosts[0].remote();
        let dir = tempfile::tempdir().unwrap();
        let inventory = dir.path().join("inventory.ini");
        let mut text = String::from("[clusterup]\n");
        for (i, host) in hosts.iter().enumerate() {
            std::fs::write(host.config_path(), config(host, &remote)).unwrap();
            text.push_str(&format!(
                "host{} ansible_connection=local clusterup_config={}\n",
                i + 1,
                host.config_path().display()
            ));
        }
        text.push_str(&format!(
            "[clusterup:vars]\nclusterup_bin={}\nansible_python_interpreter={}\n",
            env!("CARGO_BIN_EXE_clusterup"),
            python()
        ));
        std::fs::write(&inventory, text).unwrap();
        let fleet = Fleet { hosts, remote, inventory, _dir: dir };
        fleet.commit("a");
        for host in &fleet.hosts {
            let run = host.clusterup(&["apply", "--yes"]);
            assert_eq!(run.code, 0, "first deploy: {run:?}");
        }
        fleet
    }

    fn commit(&self, mode: &str) -> String {
        let image = self.hosts[0].image("web");
        self.remote.commit_compose(
            &format!("services:\n  web:\n    image: {image}\n    environment: {{MODE: {mode}}}\n"),
            mode,
        )
    }

    /// A revision that publishes web on the port each host's untracked
    /// `.env` names.
    fn commit_with_port(&self, mode: &str) -> String {
        let image = self.hosts[0].image("web");
        self.remote.commit_compose(
            &format!("services:\n  web:\n    image: {image}\n    environment: {{MODE: {mode}}}\n    ports: [\"127.0.0.1:${{WEB_PORT:-0}}:8080\"]\n"),
            mode,
        )
    }

    fn playbook(&self, book: &str, extra: &[&str]) -> (i32, String) {
        let out = Command::new("ansible-playbook")
            .arg("-i")
            .arg(&self.inventory)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ansible").join(book))
            .args(extra)
            .env("ANSIBLE_LOCALHOST_WARNING", "false")
            .env("ANSIBLE_NOCOLOR", "1")
            .env_remove("CLUSTERUP_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("ansible-playbook (scripts/test.sh installs ansible-core)");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    fn modes(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| h.env("web").lines().find_map(|l| l.strip_prefix("MODE=")).unwrap_or("?").to_string())
            .collect()
    }
}

fn python() -> String {
    let out = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_fleet_rollout_stops_at_the_first_failing_host() {
    let fleet = Fleet::new("fleet");

    fleet.commit("b");
    let (rc, text) = fleet.playbook("site.yml", &[]);
    assert_eq!(rc, 0, "{text}");
    assert_eq!(fleet.modes(), ["b", "b", "b"]);
    assert!(text.contains("changed=") && text.contains("applied revision 2"), "{text}");

    // Host 2's own configuration makes the next revision fail there: the
    // port its .env names is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for (i, host) in fleet.hosts.iter().enumerate() {
        let p = if i == 1 { port } else { free_port() };
        std::fs::write(host.checkout().join(".env"), format!("WEB_PORT={p}\n")).unwrap();
    }
    fleet.commit_with_port("c");
    let (rc, text) = fleet.playbook("site.yml", &[]);
    assert_ne!(rc, 0, "the play must fail: {text}");
    assert_eq!(fleet.modes(), ["c", "b", "b"], "host 1 updated, host 2 rolled back, host 3 untouched");
    assert_eq!(fleet.hosts[1].outcomes().last().map(String::as_str), Some("rolled_back"));
    assert_eq!(fleet.hosts[2].outcomes().len(), 2, "host 3 was never touched");
    assert!(text.contains("rolled_back"), "{text}");
    drop(taken);

    // The branch moves on to "e", but the rollout deploys the checked "d".
    let d = fleet.commit("d");
    fleet.commit("e");
    let (rc, text) = fleet.playbook("site.yml", &["-e", &format!("expect_revision={}", &d[..10])]);
    assert_eq!(rc, 0, "{text}");
    assert_eq!(fleet.modes(), ["d", "d", "d"]);

    // Incident: the whole fleet pauses, and unattended runs do nothing.
    let (rc, text) = fleet.playbook("pause.yml", &["-e", "reason=incident-42"]);
    assert_eq!(rc, 0, "{text}");
    for host in &fleet.hosts {
        let run = host.clusterup(&["apply", "--auto"]);
        assert_eq!(run.code, 4, "{run:?}");
        assert!(run.stdout.contains("incident-42"), "{run:?}");
    }
    assert_eq!(fleet.modes(), ["d", "d", "d"]);
    let (rc, text) = fleet.playbook("pause.yml", &["-e", "resume=true"]);
    assert_eq!(rc, 0, "{text}");
    let (rc, text) = fleet.playbook("site.yml", &["--tags", "preflight"]);
    assert_eq!(rc, 0, "{text}");
    assert!(text.contains("structural"), "the pre-flight shows what would change where: {text}");
    assert_eq!(fleet.modes(), ["d", "d", "d"], "the pre-flight changes nothing");

    // Canary: the first host, a soak and a health re-check, then the rest.
    fleet.commit("f");
    let (rc, text) = fleet.playbook("site.yml", &["-e", "canary=1", "-e", "soak=1"]);
    assert_eq!(rc, 0, "{text}");
    assert!(text.contains("Soak") && text.contains("Every service of the canary is healthy"), "{text}");
    assert_eq!(fleet.modes(), ["f", "f", "f"]);
}
