//! A person at a terminal: check offers to apply, apply asks first. Driven
//! through tmux so clusterup sees a real terminal.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Stack, image_id};

struct Tmux {
    session: String,
}

impl Tmux {
    fn start(stack: &Stack, args: &str) -> Tmux {
        // A server of its own per session: parallel tests never share one.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let session = format!("{}-{}", stack.name, N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let script = format!(
            "cd '{}' && CLUSTERUP_CONFIG='{}' CLUSTERUP_STATE_DIR='{}' DOCKER_CONFIG='{}' '{}' {args}; echo EXIT=$?; sleep 60",
            stack.dir.display(),
            stack.config_path().display(),
            stack.state.display(),
            stack.docker_config.display(),
            env!("CARGO_BIN_EXE_clusterup"),
        );
        let ok = Command::new("tmux")
            .args(["-L", &session, "new-session", "-d", "-s", &session, "-x", "200", "-y", "50", "sh", "-c", &script])
            .status()
            .expect("tmux (scripts/test.sh installs it)")
            .success();
        assert!(ok, "tmux new-session failed");
        Tmux { session }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.session, "capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(Instant::now() < deadline, "never saw {text:?}; screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn keys(&self, keys: &str) {
        Command::new("tmux").args(["-L", &self.session, "send-keys", "-t", &self.session, keys]).status().unwrap();
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.session, "kill-server"]).status();
    }
}

fn pending_update(test: &str) -> Stack {
    Stack::web_update_pending(test, |s| s.image("web")).0
}

#[test]
fn check_on_a_terminal_offers_to_apply() {
    let stack = pending_update("offer");
    let tmux = Tmux::start(&stack, "check");
    tmux.wait_for("Apply these changes now?");
    tmux.keys("y");
    let screen = tmux.wait_for("EXIT=");
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert_eq!(stack.running_image("web"), image_id("clusterup-fixture/web:v2"));
}

#[test]
fn apply_on_a_terminal_asks_and_no_means_nothing_changes() {
    let stack = pending_update("decline");
    let container = stack.container_id("web");
    let tmux = Tmux::start(&stack, "apply");
    tmux.wait_for("Apply 1 change to stack");
    tmux.keys("n");
    let screen = tmux.wait_for("EXIT=");
    assert!(screen.contains("EXIT=4"), "{screen}");
    assert_eq!(stack.container_id("web"), container);
    drop(tmux);

    let tmux = Tmux::start(&stack, "check --only");
    let screen = tmux.wait_for("EXIT=");
    assert!(screen.contains("EXIT=100") && !screen.contains("Apply"), "--only never offers:\n{screen}");
}
