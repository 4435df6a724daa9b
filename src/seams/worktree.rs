//! The operator's own git checkout, updated in place: a stack directory
//! inside a clone whose branch follows an upstream, as `git pull` scripts
//! left it. Fetching and moving the work tree go through the `git`
//! command, so the checkout's own remote, credential helper, ssh
//! configuration and submodule settings apply exactly as they did for
//! those scripts. Commits are read through libgit2, as for clusterup's
//! own clones.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use git2::{Oid, Repository};

use super::git::short;

/// A stack directory's place in a work tree, and the upstream its branch
/// follows (None: a detached HEAD or a branch without one).
#[derive(Debug, Clone, PartialEq)]
pub struct Discovered {
    pub root: PathBuf,
    /// The stack directory inside the work tree ("" for the top).
    pub path: PathBuf,
    pub upstream: Option<Upstream>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub remote: String,
    pub url: String,
    /// The branch on the remote.
    pub branch: String,
}

/// The work tree `dir` lies in, if it lies in one.
pub fn discover(dir: &Path) -> Result<Option<Discovered>> {
    // Most stacks are in no work tree: asking libgit2 would set it up
    // (TLS included) on every run for nothing.
    if !dir.ancestors().any(|d| d.join(".git").exists()) {
        return Ok(None);
    }
    let repo = match Repository::discover(dir) {
        Ok(repo) => repo,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) if e.code() == git2::ErrorCode::Owner => {
            let root = dir.ancestors().find(|d| d.join(".git").exists()).unwrap_or(dir);
            return Err(anyhow!(
                "the git checkout {} is owned by another user, and git refuses it (\"dubious ownership\"); \
                 if it is yours to deploy from, trust it with `git config --global --add safe.directory {}`, \
                 or run clusterup as its owner (nothing was changed)",
                root.display(),
                root.display()
            ));
        }
        Err(e) => return Err(anyhow!("opening the git checkout around {}: {}", dir.display(), e.message())),
    };
    let Some(root) = repo.workdir() else { return Ok(None) };
    let root = root.canonicalize().with_context(|| format!("resolving {}", root.display()))?;
    let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
    let path = dir.strip_prefix(&root).map(Path::to_path_buf).unwrap_or_default();
    Ok(Some(Discovered { upstream: upstream(&repo), root, path }))
}

fn upstream(repo: &Repository) -> Option<Upstream> {
    let head = repo.head().ok().filter(|h| h.is_branch())?;
    let name = head.name().ok()?;
    let remote = repo.branch_upstream_remote(name).ok()?.as_str().ok()?.to_string();
    let merge = repo.branch_upstream_merge(name).ok()?.as_str().ok()?.to_string();
    let url = repo.find_remote(&remote).ok()?.url().ok()?.to_string();
    Some(Upstream { remote, url, branch: merge.strip_prefix("refs/heads/").unwrap_or(&merge).to_string() })
}

/// The remote of the clone at `root` that `url` names, when the clone
/// exists and is not clusterup's own (whose object store is `ours`): a
/// configured `directory:` that already holds one is adopted.
pub fn remote_for(root: &Path, url: &str, ours: &Path) -> Result<Option<String>> {
    if !root.join(".git").exists() {
        return Ok(None);
    }
    let repo =
        Repository::open(root).map_err(|e| anyhow!("opening the git checkout {}: {}", root.display(), e.message()))?;
    let within =
        |a: &Path, b: &Path| a.canonicalize().ok().is_some_and(|a| b.canonicalize().is_ok_and(|b| a.starts_with(b)));
    if within(repo.path(), ours) {
        return Ok(None);
    }
    let mut urls = Vec::new();
    for name in repo.remotes()?.iter().flatten().flatten() {
        let Some(remote_url) = repo.find_remote(name).ok().and_then(|r| r.url().ok().map(String::from)) else {
            continue;
        };
        if same_repository(&remote_url, url) {
            return Ok(Some(name.to_string()));
        }
        urls.push(format!("{name} = {}", crate::redact::SecretUrl::git(&remote_url)));
    }
    bail!(
        "{} is already a git clone, of another repository than git.url {} (its remotes: {}); \
         point `directory` elsewhere, or fix git.url",
        root.display(),
        crate::redact::SecretUrl::git(url),
        if urls.is_empty() { "none".to_string() } else { urls.join(", ") }
    )
}

/// Whether two remote URLs name one repository: credentials, a trailing
/// `/` or `.git` and `file://` aside.
fn same_repository(a: &str, b: &str) -> bool {
    let norm = |u: &str| {
        let shown = crate::redact::SecretUrl::git(u).to_string();
        let u = shown.strip_prefix("file://").unwrap_or(&shown);
        let u = u.trim_end_matches('/');
        u.strip_suffix(".git").unwrap_or(u).to_string()
    };
    norm(a) == norm(b)
}

/// The `git` command in the work tree at `root`, bounded by `timeout`;
/// its standard output. Never a prompt: an unattended run has no one to
/// answer, and a terminal's would hang the run.
pub fn git(root: &Path, args: &[&str], timeout: Duration) -> Result<String> {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(root).args(args).env("GIT_TERMINAL_PROMPT", "0");
    let what = format!("git {}", args.iter().take_while(|a| **a != "--").cloned().collect::<Vec<_>>().join(" "));
    let done = super::process::run(&mut cmd, None, timeout, super::process::TAIL).map_err(|e| match e {
        super::process::Failure::Spawn(e) => {
            anyhow!("running `{what}` in {}: {e}; in-place git stacks need the git command", root.display())
        }
        timed_out => anyhow!("`{what}` in {}: {timed_out} (git.timeout); nothing was changed", root.display()),
    })?;
    if !done.status.success() {
        let stderr = String::from_utf8_lossy(&done.stderr);
        bail!("`{what}` in {} failed: {}", root.display(), crate::redact::external(stderr.trim()));
    }
    Ok(String::from_utf8_lossy(&done.stdout).into_owned())
}

/// Fetches `branch` of `remote` (and the submodule commits it records)
/// into the remote-tracking branch, as `git fetch` would; its commit.
pub fn fetch(repo: &Repository, root: &Path, remote: &str, branch: &str, timeout: Duration) -> Result<Oid> {
    if branch.is_empty() {
        attached(repo, root)?;
        bail!(
            "the branch checked out in {} follows no upstream: `git -C {} branch --set-upstream-to={remote}/<branch>`, \
             or set `git.branch`; nothing was changed",
            root.display(),
            root.display()
        );
    }
    let tracking = format!("refs/remotes/{remote}/{branch}");
    let refspec = format!("+refs/heads/{branch}:{tracking}");
    git(root, &["fetch", "--quiet", "--no-tags", "--recurse-submodules=on-demand", "--", remote, &refspec], timeout)
        .with_context(|| format!("fetching branch {branch} from {remote}; nothing was changed"))?;
    repo.refname_to_id(&tracking).map_err(|_| anyhow!("branch {branch} does not exist on remote {remote}"))
}

/// Why the work tree cannot be moved from HEAD to `upstream` as it is:
/// a detached HEAD, tracked files changed by hand, or commits upstream
/// does not have. Untracked files (data, a local `.env`) do not count.
pub fn preflight(repo: &Repository, root: &Path, upstream: Oid, timeout: Duration) -> Result<()> {
    let stop = "nothing was changed";
    attached(repo, root)?;
    let modified = modified_files(root, timeout)?;
    if !modified.is_empty() {
        let more = if modified.len() > 10 { format!(" and {} more", modified.len() - 10) } else { String::new() };
        bail!(
            "the checkout {} has local changes to tracked files: {}{more}. clusterup moves it only from a clean state: \
             commit and push them, or `git -C {} stash`, and run again; {stop}",
            root.display(),
            modified.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
            root.display()
        );
    }
    let head = repo.head()?.peel_to_commit()?.id();
    let (ahead, _) = repo.graph_ahead_behind(head, upstream)?;
    if ahead > 0 {
        let local = commits_between(repo, head, upstream)?;
        let both = !repo.graph_descendant_of(head, upstream)? && head != upstream;
        let shape = if both { "has diverged from its upstream" } else { "is ahead of its upstream" };
        bail!(
            "the checkout {} {shape}: {ahead} local commit(s) upstream does not have ({local}). \
             Push them or reset the branch to its upstream, and run again; {stop}",
            root.display()
        );
    }
    Ok(())
}

fn attached(repo: &Repository, root: &Path) -> Result<()> {
    if repo.head_detached().unwrap_or(false) {
        let at = repo.head().ok().and_then(|h| h.target()).map(short).unwrap_or_default();
        bail!(
            "the checkout {} is at a detached HEAD ({at}): clusterup follows a branch; \
             `git -C {} switch <branch>` and run again; nothing was changed",
            root.display(),
            root.display()
        );
    }
    Ok(())
}

/// Tracked files that differ from HEAD, submodules at another commit
/// among them; untracked files are the host's.
fn modified_files(root: &Path, timeout: Duration) -> Result<Vec<String>> {
    let out = git(
        root,
        &["status", "--porcelain=v1", "-z", "--untracked-files=no", "--ignore-submodules=untracked"],
        timeout,
    )?;
    Ok(porcelain_paths(&out))
}

/// The paths of `git status --porcelain=v1 -z`: `XY path`, where a rename
/// or copy is followed by its source path as an entry of its own.
fn porcelain_paths(out: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut entries = out.split('\0').filter(|e| !e.is_empty());
    while let Some(entry) = entries.next() {
        let Some(path) = entry.get(3..) else { continue };
        paths.push(path.to_string());
        if entry.starts_with(['R', 'C']) {
            entries.next();
        }
    }
    paths
}

/// Up to five commits of `from` that `not` lacks, as `abc1234 subject`.
fn commits_between(repo: &Repository, from: Oid, not: Oid) -> Result<String> {
    let mut walk = repo.revwalk()?;
    walk.push(from)?;
    walk.hide(not)?;
    let mut shown = Vec::new();
    for oid in walk.take(5) {
        let commit = repo.find_commit(oid?)?;
        shown.push(format!("{} {}", short(commit.id()), commit.summary().ok().flatten().unwrap_or("")));
    }
    Ok(shown.join("; "))
}

/// Moves the checked-out branch and the work tree to `commit`, and the
/// submodules to what it records (`--init --recursive`, as the scripts
/// did). `--keep`: a file changed by hand meanwhile stops it, unharmed.
pub fn move_to(root: &Path, commit: Oid, timeout: Duration) -> Result<()> {
    let id = commit.to_string();
    git(root, &["reset", "--quiet", "--keep", &id], timeout)
        .with_context(|| format!("moving the checkout {} to {}", root.display(), short(commit)))?;
    if root.join(".gitmodules").exists() {
        git(root, &["submodule", "--quiet", "update", "--init", "--recursive"], timeout)
            .with_context(|| format!("updating the submodules of {} to {}", root.display(), short(commit)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_entries_name_each_changed_path_once() {
        let out = " M compose.yaml\0R  new.env\0old.env\0MM sub dir/a b.txt\0";
        assert_eq!(porcelain_paths(out), ["compose.yaml", "new.env", "sub dir/a b.txt"]);
    }

    #[test]
    fn remote_urls_match_without_credentials_or_suffixes() {
        assert!(same_repository("https://x:tok@git.example/team/ops.git", "https://git.example/team/ops"));
        assert!(same_repository("/srv/git/ops.git/", "file:///srv/git/ops.git"));
        assert!(!same_repository("https://git.example/team/ops.git", "https://git.example/team/other.git"));
    }
}
