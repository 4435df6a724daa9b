//! The outside world behind small seams: the Docker engine, the Compose CLI,
//! registries and their credentials. Pipeline stages take these as traits so the
//! planner and executor are tested without a daemon.

pub mod compose;
pub mod credentials;
pub mod engine;
#[cfg(test)]
pub mod fake;
pub mod git;
pub mod hooks;
pub mod process;
pub mod registry;
pub mod worktree;

/// A peer that accepts connections and never answers: the hang every
/// external call must bound.
#[cfg(test)]
pub fn silent_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(8).collect();
        std::thread::sleep(std::time::Duration::from_secs(120));
        drop(held);
    });
    port
}
