//! The command line, as clap sees it. Nothing here does any work: each
//! subcommand's arguments are turned into options for its `commands` module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Keeps Docker Compose stacks up to date: only changed services are
/// recreated, each is health-checked, and a failed update rolls back.
#[derive(Debug, Parser)]
#[command(name = "clusterup", version, propagate_version = true)]
#[command(after_help = "Exit codes: 0 success / up to date, 100 updates pending (check), \
1 failed and rolled back, 2 usage or configuration error, 3 rollback failed, \
4 skipped, 75 another run holds the lock.")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file [default: /etc/clusterup/clusterup.yaml; without
    /// one, the current directory is the stack]
    #[arg(long, global = true, env = "CLUSTERUP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Only this stack (by name) from the configuration
    #[arg(long, global = true, value_name = "NAME")]
    pub stack: Option<String>,

    /// Print one JSON document instead of human output
    #[arg(long, global = true)]
    pub json: bool,

    /// Where journals, backups and locks live [default: /var/lib/clusterup]
    #[arg(long, global = true, env = "CLUSTERUP_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Write node_exporter textfile-collector metrics here after the run
    #[arg(long, global = true, env = "CLUSTERUP_METRICS_FILE", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// More detail
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors and the final result
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compare running images with their registries; change nothing
    ///
    /// Exits 0 when every service is up to date and 100 when updates are
    /// pending. On a terminal with pending updates it offers to apply them.
    Check(CheckArgs),
    /// Pull and recreate the services with updates, health-gated, rolling
    /// back a service that does not become healthy
    Apply(ApplyArgs),
    /// Return the stack to the previous good revision, or to --to REV
    ///
    /// Restores that revision's compose files (git stacks) and image ids,
    /// recreates only what differs, waits for health, and records a new
    /// revision. The revision rolled away from is rejected: `apply --auto`
    /// will not apply it again.
    Rollback(RollbackArgs),
    /// Stop unattended applies (`apply --auto`) of the stacks
    Pause(PauseArgs),
    /// Allow unattended applies again
    Resume,
    /// Show each service's image, digest and health, and recent revisions
    Status(StatusArgs),
    /// Serve the control API and push webhooks; apply on a schedule
    ///
    /// Every API call runs the same operation as the command line, under
    /// the same per-stack locks, and answers with its `--json` report.
    /// Tokens and webhook secrets come from --credentials or the
    /// environment, never from the configuration. SIGUSR1 runs `apply
    /// --auto` at once; SIGTERM lets running operations finish or roll back.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; anything but loopback needs TLS or
    /// --insecure-http
    #[arg(long, default_value = "127.0.0.1:8090", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,

    /// Tokens and webhook secrets, one per line: `token NAME read|operate
    /// VALUE`, `github STACK|* SECRET`, `image SECRET` (mode 0600)
    #[arg(long, env = "CLUSTERUP_CREDENTIALS", value_name = "FILE")]
    pub credentials: Option<PathBuf>,

    /// TLS certificate chain (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM, mode 0600)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Listen on a non-loopback address without TLS: only behind a reverse
    /// proxy that terminates TLS, on a network no one else can reach
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_http: bool,

    /// Run `apply --auto` of every stack this often (e.g. 15m), for hosts
    /// without a systemd timer
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub every: Option<std::time::Duration>,

    /// Wait up to this much longer before each scheduled run, at random
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "0s", requires = "every")]
    pub jitter: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Revision to return to: its number, a git commit prefix, a time (the
    /// last good revision started by then, e.g. 2026-11-24T18:00:00Z), or
    /// an immutable image tag such as CI's autonomy-<sha>
    #[arg(long, value_name = "REV")]
    pub to: Option<String>,

    /// List the recorded revisions and change nothing
    #[arg(long, conflicts_with_all = ["to", "dry_run"])]
    pub list: bool,

    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Roll back without asking for confirmation
    #[arg(short, long)]
    pub yes: bool,

    /// Why, recorded with the revision rolled away from
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Also put the volumes' data back from volume snapshots: those revision
    /// REV took (with --to), else those of the revision rolled back from.
    /// Their content now is moved aside until the services are healthy
    #[arg(long, conflicts_with = "list")]
    pub restore_volumes: bool,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Why, for whoever finds the stack paused
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// End the pause by itself after this long (e.g. 2h, 30m)
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "until")]
    pub duration: Option<std::time::Duration>,

    /// End the pause by itself at this time (RFC 3339, e.g. 2026-11-26T06:00:00Z)
    #[arg(long, value_name = "TIME")]
    pub until: Option<jiff::Timestamp>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Only report; never offer to apply
    #[arg(long)]
    pub only: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Unattended: apply what policy allows, never prompt (for timers)
    #[arg(long)]
    pub auto: bool,

    /// Apply without asking for confirmation (changes that put data at risk
    /// still need --accept-data-risk)
    #[arg(short, long)]
    pub yes: bool,

    /// Also apply changes that put data at risk (a removed service with an
    /// anonymous volume, a removed or reconfigured named volume)
    #[arg(long)]
    pub accept_data_risk: bool,

    /// Apply even targets that failed before or that an operator rolled
    /// back from (unattended runs otherwise hold them back)
    #[arg(long)]
    pub retry: bool,

    /// Take new images younger than their `min_age` too (an emergency
    /// fix); without it, unattended runs wait and a manual run asks
    #[arg(long)]
    pub ignore_min_age: bool,

    /// Deploy this commit of the branch (a prefix is enough) instead of its
    /// head: a fleet rollout applies what was checked on the first host
    /// even if the branch moves meanwhile
    #[arg(long, value_name = "COMMIT")]
    pub expect_revision: Option<String>,

    /// Build images again from the files as they are (the SERVICEs named,
    /// else every service with `build:`) and recreate them through the
    /// health gate: source changes of a directory stack, which clusterup
    /// cannot see
    #[arg(long)]
    pub rebuild: bool,

    /// With --rebuild: the services to build (names after `--`)
    #[arg(value_name = "SERVICE", requires = "rebuild")]
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How many recent revisions to show
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub revisions: usize,

    /// Redraw every 2 seconds (on a terminal)
    #[arg(long)]
    pub watch: bool,
}
