//! The outside world behind small seams: the Docker engine, the Compose CLI,
//! registries and their credentials. Pipeline stages take these as traits so the
//! planner and executor are tested without a daemon.

pub mod compose;
pub mod credentials;
pub mod engine;
pub mod git;
pub mod hooks;
pub mod process;
pub mod registry;
