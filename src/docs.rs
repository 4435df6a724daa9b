//! The man pages in `man/` and shell completions in `completions/` are
//! generated from the clap model, and `docs/report.schema.json` from the
//! report types, and checked in. This test fails when they
//! are stale; `CLUSTERUP_BLESS=1 cargo test docs` (or
//! `scripts/gen-docs.sh`) rewrites them.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Sections the clap model cannot express, in roff.
const EXTRA: &str = r#".SH CONFIGURATION
Without a configuration file, a directory holding \fBcompose.yaml\fR (or
\fBcompose.yml\fR, \fBdocker\-compose.yaml\fR, \fBdocker\-compose.yml\fR) is a
stack on its own. With one (\fB/etc/clusterup/clusterup.yaml\fR, \fB\-\-config\fR
or \fBCLUSTERUP_CONFIG\fR):
.PP
.nf
state_dir: /var/lib/clusterup
stacks:
  \- name: shop
    directory: /srv/shop            # or git: {url, branch, path, submodules, ssh_key,
                                    #   timeout, idle_timeout, insecure}; or, with the
                                    #   directory in an existing clone, git: {in_place: true}
    compose_files: [compose.yaml]
    project: shop
    health: {timeout: 120s, stability: 10s}
    services: {db: {skip: true}, web: {strategy: start\-first}}
    auto: {images: true, structural: false}
    window: "Mon\-Fri 02:00\-05:00 Europe/Berlin"
    keep_images: 3
timeouts: {engine: 2m, registry: 20s, notify: 10s, credential_helper: 10s, compose: 10m}
.fi
.PP
Unknown keys and wrong types are errors naming the file, line and key.
The configuration, the hook scripts it names, and every directory above
them must be owned by root or the invoking user and not be writable by
another user or group (group root may; a sticky directory such as /tmp is
fine); so must the state dir.
.SH "EXIT STATUS"
.TP
\fB0\fR
Success, or nothing to do.
.TP
\fB100\fR
\fBcheck\fR: updates are pending.
.TP
\fB1\fR
Failed; anything changed was rolled back (also: a registry could not be checked).
.TP
\fB2\fR
Usage, configuration or compose file error; nothing was changed.
.TP
\fB3\fR
Failed, and the rollback failed too: a human is needed.
.TP
\fB4\fR
Skipped: paused, outside the update window, changes need approval, a rejected target, or declined.
.TP
\fB75\fR
Another run holds the stack's lock.
.SH ENVIRONMENT
.TP
\fBCLUSTERUP_CONFIG\fR, \fBCLUSTERUP_STATE_DIR\fR
As \fB\-\-config\fR and \fB\-\-state\-dir\fR.
.TP
\fBDOCKER_HOST\fR, \fBDOCKER_CONFIG\fR
The engine to talk to, and the Docker CLI configuration registry credentials are read from.
.TP
\fBCLUSTERUP_GIT_TOKEN\fR
Token for https git remotes, sent only to the configured remote's host, over https (plain http with \fBgit.insecure: true\fR).
.TP
\fBNO_COLOR\fR
No colour in diffs.
.SH FILES
.TP
\fB/etc/clusterup/clusterup.yaml\fR
The configuration.
.TP
\fB/var/lib/clusterup/<stack>/journal.jsonl\fR
The journal of revisions and rejected targets (JSON Lines, fsynced).
.TP
\fB/var/lib/clusterup/<stack>/lock\fR
Held by a running apply or rollback; holds its pid.
.TP
\fB/var/lib/clusterup/<stack>/pause.json\fR
Present while the stack is paused.
.TP
\fB/var/lib/clusterup/<stack>/git\fR, \fBcheckout\fR
clusterup's clone of a git stack and its work tree at the deployed commit.
.TP
\fB/var/lib/clusterup/fingerprint.key\fR
The host's key for the fingerprints that stand in for secret values in diffs (0600).
"#;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every generated file: its path under the repository and its content.
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page).unwrap();
    page.extend_from_slice(EXTRA.as_bytes());
    out.push((PathBuf::from("man/clusterup.1"), page));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let name = format!("clusterup-{}", sub.get_name());
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.clone().name(name.clone())).render(&mut page).unwrap();
        out.push((PathBuf::from(format!("man/{name}.1")), page));
    }
    for (shell, file) in [(Shell::Bash, "clusterup.bash"), (Shell::Zsh, "_clusterup"), (Shell::Fish, "clusterup.fish")]
    {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "clusterup", &mut script);
        out.push((Path::new("completions").join(file), script));
    }
    out.push((PathBuf::from("docs/report.schema.json"), crate::report::schema().into_bytes()));
    out.push((PathBuf::from("docs/api.md"), crate::serve::reference().into_bytes()));
    out
}

#[test]
fn docs_are_up_to_date() {
    let bless = std::env::var_os("CLUSTERUP_BLESS").is_some();
    let mut stale = Vec::new();
    for (path, content) in generated() {
        let full = root().join(&path);
        if std::fs::read(&full).ok().as_deref() != Some(content.as_slice()) {
            if bless {
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, content).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(stale.is_empty(), "stale generated docs: {}; run scripts/gen-docs.sh", stale.join(", "));
}

#[test]
fn the_man_page_documents_every_flag_exit_code_and_file() {
    let page = String::from_utf8(generated().remove(0).1).unwrap();
    for needle in
        ["\\-\\-config", "\\-\\-state\\-dir", "\\-\\-json", "EXIT STATUS", "75", "journal.jsonl", "CONFIGURATION"]
    {
        assert!(page.contains(needle), "man page lacks {needle}");
    }
}

/// The shipped units say what the README says: every 15 minutes, up to
/// 5 minutes' random delay, catching up after downtime; 4 and 75 are
/// not failures.
#[test]
fn the_systemd_units_keep_the_readmes_schedule_and_exit_codes() {
    let unit = |name: &str| std::fs::read_to_string(format!("{}/systemd/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let timer = unit("clusterup.timer");
    for line in ["OnCalendar=*:0/15", "RandomizedDelaySec=5min", "Persistent=true"] {
        assert!(timer.lines().any(|l| l.trim() == line), "clusterup.timer: {line}");
    }
    let service = unit("clusterup.service");
    assert!(service.lines().any(|l| l.trim() == "SuccessExitStatus=4 75"), "{service}");
    assert!(service.contains("apply --auto"), "{service}");
}

/// The walkthrough is written by `scripts/walkthrough.sh` from real runs;
/// what it shows must still be valid commands of this clusterup.
#[test]
fn the_walkthroughs_commands_are_this_clis() {
    use clap::Parser;
    let text = std::fs::read_to_string(root().join("docs/walkthrough.md")).unwrap();
    assert!(text.contains("Generated by `scripts/walkthrough.sh`"), "docs/walkthrough.md is the script's output");
    let commands: Vec<&str> = text.lines().filter_map(|l| l.split_once("$ clusterup ").map(|(_, args)| args)).collect();
    assert!(commands.len() >= 10, "{commands:?}");
    for args in commands {
        let argv = std::iter::once("clusterup").chain(args.split_whitespace());
        if let Err(e) = Cli::try_parse_from(argv) {
            panic!("docs/walkthrough.md: `clusterup {args}` no longer parses: {e}");
        }
    }
}
