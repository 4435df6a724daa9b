//! The git seam: clusterup's own clone of a stack's repository. Its object
//! store lives in the state dir; its work tree is the stack's checkout,
//! always at the deployed commit. New commits are read from the object
//! store (exported to a scratch directory) until an apply checks them out.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use git2::{
    AutotagOption, Cred, CredentialType, FetchOptions, ObjectType, Oid, RemoteCallbacks, Repository,
    RepositoryInitOptions, TreeWalkMode, TreeWalkResult, build::CheckoutBuilder,
};

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::worktree;
use crate::redact::{Secret, SecretUrl};

/// `host/path` of a git URL without scheme, user, `.git` or trailing
/// slash, so `https://github.com/o/r.git`, `git@github.com:o/r.git` and
/// `ssh://git@github.com/o/r` compare equal.
pub fn repo_key(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    let url = url.strip_suffix(".git").unwrap_or(url);
    let (rest, scp) = match url.split_once("://") {
        Some((_, rest)) => (rest, false),
        None => (url, !url.starts_with('/')),
    };
    let rest = rest.rsplit_once('@').filter(|(user, _)| !user.contains('/')).map_or(rest, |(_, r)| r);
    let rest = if scp { rest.replacen(':', "/", 1) } else { rest.to_string() };
    // A port is not part of which repository it is.
    match rest.split_once('/') {
        Some((host, path)) => format!("{}/{path}", host.split(':').next().unwrap_or(host).to_lowercase()),
        None => rest,
    }
}

/// The web pages of a repository on GitHub, GitLab or Gitea (Codeberg,
/// Forgejo): the base, and how a commit's and a comparison's paths are
/// spelt there. Other hosts: None.
pub fn forge(url: &str) -> Option<Forge> {
    let key = repo_key(url);
    let (host, path) = key.split_once('/')?;
    let dash = if host == "github.com" || host.contains("gitea") || host.contains("forgejo") || host == "codeberg.org" {
        ""
    } else if host.contains("gitlab") {
        "/-"
    } else {
        return None;
    };
    Some(Forge { base: format!("https://{host}/{path}"), dash })
}

pub struct Forge {
    base: String,
    dash: &'static str,
}

impl Forge {
    pub fn commit(&self, id: &str) -> String {
        format!("{}{}/commit/{id}", self.base, self.dash)
    }

    pub fn compare(&self, old: &str, new: &str) -> String {
        format!("{}{}/compare/{old}...{new}", self.base, self.dash)
    }

    /// The repository itself, as an image's `source` label names it.
    pub fn is_github(&self) -> bool {
        self.base.starts_with("https://github.com/")
    }

    pub fn base(&self) -> &str {
        &self.base
    }
}

/// A stack whose compose files come from a branch of a git repository.
#[derive(Debug, Clone, PartialEq)]
pub struct GitSource {
    pub url: SecretUrl,
    pub branch: String,
    /// The stack's directory inside the repository ("" for the top).
    pub path: PathBuf,
    /// clusterup's clone updates its submodules on checkout; an in-place
    /// checkout always does (`submodule update --init --recursive`, as the
    /// old scripts did), whatever this says.
    pub submodules: bool,
    pub ssh_key: Option<PathBuf>,
    /// Where clusterup checks out the deployed commit.
    pub checkout: PathBuf,
    /// CLUSTERUP_GIT_TOKEN may go over plain HTTP.
    pub insecure: bool,
    /// A fetch that sends or receives nothing for this long is given up.
    pub idle_timeout: Duration,
    /// No fetch (submodules included) takes longer than this.
    pub timeout: Duration,
    /// The operator's own clone at `checkout`, fetched from this remote of
    /// it and moved in place (None: clusterup's clone in the state dir).
    pub in_place: Option<String>,
}

pub struct GitRepo {
    repo: Repository,
    git_dir: PathBuf,
    source: GitSource,
}

/// A stack's git checkout: clusterup's clone in the state dir, or the
/// operator's own, moved in place.
pub trait Repo {
    /// Fetches the branch and returns its commit. Bounded: a remote that
    /// accepts and never answers, or a signal, ends the wait (the fetch
    /// itself runs on a thread of its own, left behind if it hangs).
    fn fetch(&self) -> Result<Oid>;

    /// Whether the work tree may be moved to `upstream`: an in-place
    /// checkout must be on its branch, clean, and behind upstream only.
    /// clusterup's own clone is always at the deployed commit.
    fn preflight(&self, upstream: Oid) -> Result<()>;

    /// The commit a (possibly abbreviated) id names.
    fn resolve(&self, prefix: &str) -> Result<Oid>;

    /// Whether `new` contains `old` in its history: the branch moved
    /// forward. A force-push or rewritten history answers no.
    fn descends_from(&self, new: Oid, old: Oid) -> Result<bool>;

    /// Writes the tree of `commit` (submodules included, where known) to
    /// `dest`, fresh: the stack directory's compose files may name files
    /// anywhere in the repository (`../shared/app.env`).
    fn export(&self, commit: Oid, dest: &Path) -> Result<()>;

    /// Puts `commit` in the work tree: changed and deleted files follow the
    /// commit; files git does not track (data, local `.env`) stay.
    fn checkout(&self, commit: Oid) -> Result<()>;

    /// Files that differ between two commits, as paths in the work tree;
    /// inside a submodule that moved too, where its clone has both commits.
    fn changed_files(&self, old: Oid, new: Oid) -> Result<Changed>;

    /// The commit the work tree holds, if anything was checked out yet.
    fn head(&self) -> Option<Oid>;

    /// The commits in `new` and not in `old`, newest first: how many in
    /// all (counted up to a bound), and the first `max`.
    fn log(&self, old: Oid, new: Oid, max: usize) -> Result<(usize, Vec<LogEntry>)>;

    /// The file at `path` (from the repository's top) in `commit`: its
    /// blob id and contents; None if there is no such file.
    fn blob(&self, commit: Oid, path: &Path) -> Result<Option<(Oid, Vec<u8>)>>;
}

impl GitRepo {
    /// Opens the clone in `git_dir`, creating it (empty, 0700) the first
    /// time.
    pub fn open(git_dir: &Path, source: &GitSource) -> Result<GitRepo> {
        if source.in_place.is_some() {
            let repo = Repository::open(&source.checkout)
                .map_err(|e| anyhow!("opening the git checkout {}: {}", source.checkout.display(), e.message()))?;
            return Ok(GitRepo { repo, git_dir: source.checkout.clone(), source: source.clone() });
        }
        let repo = match Repository::open(git_dir) {
            Ok(r) => r,
            Err(_) => {
                checkout_dir(git_dir, &source.checkout)
                    .with_context(|| format!("creating checkout directory {}", source.checkout.display()))?;
                crate::files::private_dir(git_dir).with_context(|| format!("creating {}", git_dir.display()))?;
                let mut opts = RepositoryInitOptions::new();
                opts.workdir_path(&source.checkout).no_reinit(true).mkdir(true);
                Repository::init_opts(git_dir, &opts)
                    .with_context(|| format!("creating clusterup's clone in {}", git_dir.display()))?
            }
        };
        Ok(GitRepo { repo, git_dir: git_dir.to_path_buf(), source: source.clone() })
    }

    /// Whether this is the operator's own checkout, moved in place.
    pub fn in_place(&self) -> bool {
        self.source.in_place.is_some()
    }

    fn callbacks(&self) -> RemoteCallbacks<'static> {
        callbacks(&self.source, Instant::now() + self.source.timeout)
    }
}

impl Repo for GitRepo {
    fn fetch(&self) -> Result<Oid> {
        let GitSource { url, branch, timeout, .. } = &self.source;
        if let Some(remote) = &self.source.in_place {
            return worktree::fetch(&self.repo, &self.source.checkout, remote, branch, *timeout);
        }
        // One libgit2 fetch at a time (stacks are checked at once): the
        // timeouts it sets are process-wide. Its own bound starts after.
        let _alone = NETWORK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let deadline = Instant::now() + *timeout;
        let (send, receive) = std::sync::mpsc::channel();
        let (git_dir, source) = (self.git_dir.clone(), self.source.clone());
        std::thread::spawn(move || {
            let _ = send.send(fetch_branch(&git_dir, &source, deadline));
        });
        loop {
            match receive.recv_timeout(Duration::from_millis(100)) {
                Ok(result) => return result,
                Err(RecvTimeoutError::Disconnected) => bail!("fetching branch {branch} from {url}: the fetch died"),
                Err(RecvTimeoutError::Timeout) if crate::signals::stop_requested() => {
                    bail!("fetching branch {branch} from {url}: interrupted by a signal; nothing was changed")
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => bail!(
                    "fetching branch {branch} from {url}: no answer within {} (git.timeout); nothing was changed",
                    humantime::format_duration(*timeout)
                ),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn preflight(&self, upstream: Oid) -> Result<()> {
        match &self.source.in_place {
            Some(_) => worktree::preflight(&self.repo, &self.source.checkout, upstream, self.source.timeout),
            None => Ok(()),
        }
    }

    fn resolve(&self, prefix: &str) -> Result<Oid> {
        self.repo.revparse_single(prefix).and_then(|o| o.peel_to_commit()).map(|c| c.id()).map_err(|_| {
            anyhow!("commit {prefix} is not in {} (branch {} was fetched)", self.source.url, self.source.branch)
        })
    }

    fn descends_from(&self, new: Oid, old: Oid) -> Result<bool> {
        if new == old {
            return Ok(true);
        }
        if self.repo.find_commit(old).is_err() {
            return Ok(false);
        }
        Ok(self.repo.graph_descendant_of(new, old)?)
    }

    fn export(&self, commit: Oid, dest: &Path) -> Result<()> {
        if dest.exists() {
            std::fs::remove_dir_all(dest).with_context(|| format!("clearing {}", dest.display()))?;
        }
        std::fs::create_dir_all(dest)?;
        let tree = self.repo.find_commit(commit)?.tree()?;
        if !self.source.path.as_os_str().is_empty() {
            let entry = tree.get_path(&self.source.path).ok().filter(|e| e.kind() == Some(ObjectType::Tree));
            if entry.is_none() {
                bail!("commit {} has no directory {} (git.path)", short(commit), self.source.path.display());
            }
        }
        export_tree(&self.repo, &tree, Path::new(""), dest)
    }

    fn checkout(&self, commit: Oid) -> Result<()> {
        // Files get the modes git records (0644, 0755), whatever the umask
        // clusterup runs under (systemd's UMask=0077 would make them
        // unreadable to a container that does not run as root).
        let _umask = Umask::set(0o022);
        if self.in_place() {
            return worktree::move_to(&self.source.checkout, commit, self.source.timeout);
        }
        let object = self.repo.find_object(commit, None)?;
        let mut opts = CheckoutBuilder::new();
        opts.force();
        self.repo
            .checkout_tree(&object, Some(&mut opts))
            .with_context(|| format!("checking out {} into {}", short(commit), self.source.checkout.display()))?;
        self.repo.set_head_detached(commit)?;
        if self.source.submodules {
            // A rollback checks out without fetching first: the bounds must
            // be in place for submodule fetches too.
            let _alone = NETWORK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            set_network_timeouts(self.source.idle_timeout);
            for mut sub in self.repo.submodules()? {
                let name = sub.name().unwrap_or("?").to_string();
                let mut opts = git2::SubmoduleUpdateOptions::new();
                let mut fetch = FetchOptions::new();
                fetch.remote_callbacks(self.callbacks());
                opts.fetch(fetch);
                sub.update(true, Some(&mut opts)).with_context(|| format!("updating submodule {name}"))?;
            }
        }
        Ok(())
    }

    fn changed_files(&self, old: Oid, new: Oid) -> Result<Changed> {
        let mut out = Changed::default();
        changed_in(&self.repo, old, new, &self.source.checkout, &mut out)?;
        Ok(out)
    }

    fn head(&self) -> Option<Oid> {
        self.repo.head().ok().and_then(|h| h.target())
    }

    fn log(&self, old: Oid, new: Oid, max: usize) -> Result<(usize, Vec<LogEntry>)> {
        let mut walk = self.repo.revwalk().context("walking the history")?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)?;
        walk.push(new)?;
        walk.hide(old)?;
        let (mut total, mut entries) = (0, Vec::new());
        // A branch that moved by a whole other project is not counted out.
        for id in walk.take(LOG_COUNT_BOUND) {
            let id = id.context("walking the history")?;
            total += 1;
            if entries.len() < max {
                let commit = self.repo.find_commit(id)?;
                entries.push(LogEntry {
                    id,
                    subject: commit.summary().ok().flatten().unwrap_or("").to_string(),
                    author: commit.author().name().unwrap_or("").to_string(),
                });
            }
        }
        Ok((total, entries))
    }

    fn blob(&self, commit: Oid, path: &Path) -> Result<Option<(Oid, Vec<u8>)>> {
        let tree = self.repo.find_commit(commit)?.tree()?;
        let Ok(entry) = tree.get_path(path) else { return Ok(None) };
        let Ok(blob) = self.repo.find_blob(entry.id()) else { return Ok(None) };
        Ok(Some((entry.id(), blob.content().to_vec())))
    }
}

const LOG_COUNT_BOUND: usize = 10_000;

/// One commit as a message lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub id: Oid,
    pub subject: String,
    pub author: String,
}

/// Writes `tree` (at `prefix` in `repo`) to `dest`, and a submodule's
/// files at the commit the tree records, when its clone has that commit
/// (a compose file may name an env file or an include inside one).
fn export_tree(repo: &Repository, tree: &git2::Tree, prefix: &Path, dest: &Path) -> Result<()> {
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
        let relative = Path::new(parent).join(entry.name().unwrap_or("_"));
        let path = dest.join(&relative);
        let result = match entry.kind() {
            Some(ObjectType::Tree) => std::fs::create_dir_all(&path).map_err(anyhow::Error::from),
            Some(ObjectType::Blob) => write_blob(repo, entry.id(), entry.filemode(), &path),
            Some(ObjectType::Commit) => export_submodule(repo, &prefix.join(&relative), entry.id(), &path),
            _ => Ok(()),
        };
        match result {
            Ok(()) => TreeWalkResult::Ok,
            Err(e) => {
                failure = Some(e.context(format!("writing {}", path.display())));
                TreeWalkResult::Abort
            }
        }
    })?;
    failure.map_or(Ok(()), Err)
}

fn export_submodule(repo: &Repository, path: &Path, commit: Oid, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    let Some(sub) = open_submodule(repo, path) else { return Ok(()) };
    let Ok(commit) = sub.find_commit(commit) else { return Ok(()) };
    export_tree(&sub, &commit.tree()?, Path::new(""), dest)
}

fn open_submodule(repo: &Repository, path: &Path) -> Option<Repository> {
    repo.find_submodule(path.to_str()?).ok()?.open().ok()
}

/// What a range of commits changed.
#[derive(Debug, Default)]
pub struct Changed {
    /// Paths in the work tree.
    pub files: Vec<PathBuf>,
    /// Each submodule that moved, and how: `abc1234..def5678`.
    pub submodules: Vec<(PathBuf, String)>,
}

fn changed_in(repo: &Repository, old: Oid, new: Oid, root: &Path, out: &mut Changed) -> Result<()> {
    let old_tree = repo.find_commit(old)?.tree()?;
    let new_tree = repo.find_commit(new)?.tree()?;
    let diff = repo.diff_tree_to_tree(Some(&old_tree), Some(&new_tree), None)?;
    for delta in diff.deltas() {
        let (was, is) = (delta.old_file(), delta.new_file());
        if was.mode() == git2::FileMode::Commit
            && is.mode() == git2::FileMode::Commit
            && let Some(path) = is.path()
        {
            let range = format!("{}..{}", short(was.id()), short(is.id()));
            out.submodules.push((root.join(path), range));
            if let Some(sub) = open_submodule(repo, path)
                && sub.find_commit(was.id()).is_ok()
                && sub.find_commit(is.id()).is_ok()
            {
                changed_in(&sub, was.id(), is.id(), &root.join(path), out)?;
                continue;
            }
        }
        out.files.extend([was.path(), is.path()].into_iter().flatten().map(|p| root.join(p)));
    }
    Ok(())
}

fn write_blob(repo: &Repository, id: Oid, mode: i32, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let blob = repo.find_blob(id)?;
    if mode == 0o120000 {
        let target = std::str::from_utf8(blob.content()).context("symlink target is not UTF-8")?;
        std::os::unix::fs::symlink(target, path)?;
    } else {
        std::fs::write(path, blob.content())?;
        let mode = if mode == 0o100755 { 0o755 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The fetch itself, on its own thread: libgit2's handles stay there.
fn fetch_branch(git_dir: &Path, source: &GitSource, deadline: Instant) -> Result<Oid> {
    let GitSource { url, branch, .. } = source;
    set_network_timeouts(source.idle_timeout);
    let repo = Repository::open(git_dir).with_context(|| format!("opening {}", git_dir.display()))?;
    let mut remote = repo.remote_anonymous(url.expose()).with_context(|| format!("git remote {url}"))?;
    let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(callbacks(source, deadline));
    opts.download_tags(AutotagOption::None);
    // FETCH_HEAD would record the URL, credentials and all, in the state dir.
    opts.update_fetchhead(false);
    remote.fetch(&[&refspec], Some(&mut opts), None).map_err(|e| {
        anyhow!("fetching branch {branch} from {url}: {}{}", crate::redact::external(e.message()), auth_hint(&e))
    })?;
    let tracking = format!("refs/remotes/origin/{branch}");
    let advertised = remote.list().map(|heads| heads.iter().any(|h| h.name() == format!("refs/heads/{branch}")));
    if matches!(advertised, Ok(false)) {
        bail!("branch {branch} does not exist on {url}; check `git.branch` in the configuration");
    }
    repo.refname_to_id(&tracking)
        .map_err(|_| anyhow!("branch {branch} does not exist on {url}; check `git.branch` in the configuration"))
}

/// Held by whoever sets libgit2's network timeouts and connects with them.
static NETWORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// libgit2's own bounds on connecting and on a connection that goes
/// quiet (process-wide; every stack's fetch sets them before it starts).
fn set_network_timeouts(idle: Duration) {
    let ms = i32::try_from(idle.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: these set libgit2 globals; callers hold NETWORK, so no other
    // fetch of this process connects meanwhile (but one given up at its
    // deadline, whose callbacks end it at their next call).
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms);
        let _ = git2::opts::set_server_timeout_in_milliseconds(ms);
    }
}

/// Credentials for the configured remote only, and progress callbacks that
/// give up at `deadline` or on a signal. CLUSTERUP_GIT_TOKEN goes only to
/// the configured remote's host, over HTTPS unless `git.insecure`: a
/// submodule URL written in the repository can name any host.
fn callbacks(source: &GitSource, deadline: Instant) -> RemoteCallbacks<'static> {
    let key = source.ssh_key.clone();
    let (remote_host, insecure) = (source.url.host().to_ascii_lowercase(), source.insecure);
    let mut attempts = 0;
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(move |url, username, allowed| {
        let shown = crate::redact::scrub(url);
        // libgit2 asks again after a rejected credential: stop early.
        attempts += 1;
        if attempts > 3 {
            return Err(git2::Error::from_str(&format!("authentication to {shown} failed")));
        }
        let user = username.unwrap_or("git");
        if allowed.contains(CredentialType::SSH_KEY) {
            return match &key {
                Some(key) => Cred::ssh_key(user, None, key, None),
                None => Cred::ssh_key_from_agent(user),
            };
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && let Ok(token) = std::env::var("CLUSTERUP_GIT_TOKEN")
        {
            let token = Secret::new(token);
            token_may_go_to(url, &remote_host, insecure).map_err(|e| git2::Error::from_str(&e))?;
            return Cred::userpass_plaintext(username.unwrap_or("x-access-token"), token.expose());
        }
        Cred::default()
    });
    let going = move || !crate::signals::stop_requested() && Instant::now() < deadline;
    callbacks.transfer_progress(move |_| going());
    callbacks.sideband_progress(move |_| going());
    callbacks
}

/// The process umask until dropped. Stacks checked at once may each set
/// one: the lock keeps each set-and-restore whole, so the process never
/// keeps another's mask.
struct Umask {
    old: libc::mode_t,
    _held: std::sync::MutexGuard<'static, ()>,
}

static UMASK: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Umask {
    fn set(mask: libc::mode_t) -> Umask {
        let held = UMASK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: umask cannot fail; it is restored on drop.
        Umask { old: unsafe { libc::umask(mask) }, _held: held }
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::umask(self.old) };
    }
}

/// Whether CLUSTERUP_GIT_TOKEN may answer `url`'s request for credentials.
fn token_may_go_to(url: &str, remote_host: &str, insecure: bool) -> std::result::Result<(), String> {
    let target = SecretUrl::git(url);
    let same_host = target.host().eq_ignore_ascii_case(remote_host);
    let scheme_ok = target.scheme() == Some("https") || (target.scheme() == Some("http") && insecure);
    if same_host && scheme_ok {
        return Ok(());
    }
    Err(format!(
        "{target} asks for credentials; CLUSTERUP_GIT_TOKEN is sent only to {remote_host} over https \
         (plain http with `git.insecure: true`)"
    ))
}

/// clusterup's own checkout beside its clone is private (0700); one at a
/// `directory:` of the operator's gets the usual 0755, since a container
/// that does not run as root may mount it whole (`.:/app`).
fn checkout_dir(git_dir: &Path, checkout: &Path) -> std::io::Result<()> {
    let ours = git_dir.parent().is_some_and(|state| checkout.starts_with(state));
    if ours {
        return crate::files::private_dir(checkout);
    }
    use std::os::unix::fs::DirBuilderExt;
    let _umask = Umask::set(0o022);
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(checkout)
}

fn auth_hint(e: &git2::Error) -> &'static str {
    match e.class() {
        git2::ErrorClass::Ssh | git2::ErrorClass::Http if e.code() == git2::ErrorCode::Auth => {
            " (authentication failed: for ssh set `git.ssh_key` or load the key into ssh-agent; for https set CLUSTERUP_GIT_TOKEN)"
        }
        _ => "",
    }
}

pub fn short(oid: Oid) -> String {
    crate::reference::short(&oid.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forges_link_commits_and_comparisons_in_their_own_spelling() {
        let gh = forge("git@github.com:acme/shop.git").unwrap();
        assert_eq!(gh.commit("abc"), "https://github.com/acme/shop/commit/abc");
        assert_eq!(gh.compare("a", "b"), "https://github.com/acme/shop/compare/a...b");
        assert!(gh.is_github());
        let gl = forge("https://user:t0ken@gitlab.example.com/group/shop.git").unwrap();
        assert_eq!(gl.compare("a", "b"), "https://gitlab.example.com/group/shop/-/compare/a...b");
        let gitea = forge("ssh://git@codeberg.org/acme/shop").unwrap();
        assert_eq!(gitea.commit("abc"), "https://codeberg.org/acme/shop/commit/abc");
        assert!(forge("file:///srv/git/shop.git").is_none() && forge("https://git.example.com/shop").is_none());
    }
    use crate::seams::fake::git;
    use std::os::unix::fs::PermissionsExt;

    /// A bare remote with one commit holding `stack/compose.yaml`.
    fn remote() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let bare = tmp.path().join("remote.git");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "--bare", "-q"]);
        git(tmp.path(), &["clone", "-q", bare.to_str().unwrap(), "work"]);
        std::fs::create_dir_all(work.join("stack")).unwrap();
        std::fs::write(work.join("stack/compose.yaml"), "services: {}\n").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-qm", "one"]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        (tmp, bare, work)
    }

    fn source(tmp: &Path, bare: &Path, branch: &str) -> GitSource {
        GitSource {
            url: SecretUrl::git(&format!("file://{}", bare.display())),
            insecure: false,
            timeout: crate::settings::DEFAULT_GIT_TIMEOUT,
            idle_timeout: crate::settings::DEFAULT_GIT_IDLE_TIMEOUT,
            branch: branch.into(),
            path: PathBuf::from("stack"),
            submodules: false,
            ssh_key: None,
            checkout: tmp.join("checkout"),
            in_place: None,
        }
    }

    #[test]
    fn fetch_export_checkout_and_history_checks() {
        let (tmp, bare, work) = remote();
        let src = source(tmp.path(), &bare, "main");
        let repo = GitRepo::open(&tmp.path().join("git"), &src).unwrap();
        assert!(repo.head().is_none());
        let first = repo.fetch().unwrap();
        assert!(!tmp.path().join("git/FETCH_HEAD").exists(), "no file records the remote's URL");
        repo.export(first, &tmp.path().join("incoming")).unwrap();
        assert!(tmp.path().join("incoming/stack/compose.yaml").is_file());
        repo.checkout(first).unwrap();
        assert_eq!(repo.head(), Some(first));
        assert!(tmp.path().join("checkout/stack/compose.yaml").is_file());

        std::fs::write(work.join("stack/extra.env"), "A=1\n").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-qm", "two"]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        let second = repo.fetch().unwrap();
        assert!(repo.descends_from(second, first).unwrap());

        git(&work, &["reset", "-q", "--hard", "HEAD~1"]);
        std::fs::write(work.join("stack/other.env"), "B=1\n").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-qm", "rewritten"]);
        git(&work, &["push", "-q", "--force", "origin", "HEAD:main"]);
        let rewritten = repo.fetch().unwrap();
        assert!(!repo.descends_from(rewritten, second).unwrap(), "a force-push is not a descendant");

        repo.checkout(second).unwrap();
        repo.checkout(first).unwrap();
        assert!(!tmp.path().join("checkout/stack/extra.env").exists(), "files deleted by a commit go");
    }

    /// Issue 13, item 4: the token goes to the configured remote's host
    /// over https only; a submodule elsewhere or plain http gets nothing.
    #[test]
    fn the_git_token_goes_only_to_the_remote_over_https() {
        assert!(token_may_go_to("https://git.example/team/repo.git", "git.example", false).is_ok());
        assert!(token_may_go_to("https://GIT.example:443/other.git", "git.example", false).is_ok());
        assert!(token_may_go_to("https://evil.example/x.git", "git.example", false).is_err());
        assert!(token_may_go_to("https://git.example@evil.example/x.git", "git.example", false).is_err());
        let err = token_may_go_to("http://git.example/team/repo.git", "git.example", false).unwrap_err();
        assert!(err.contains("git.insecure"), "{err}");
        assert!(token_may_go_to("http://git.example/team/repo.git", "git.example", true).is_ok());
        assert!(token_may_go_to("http://evil.example/r.git", "git.example", true).is_err());
    }

    /// Issue 13, item 9: a remote that accepts and never answers costs
    /// `git.timeout`, with the URL shown without its credentials.
    #[test]
    fn a_silent_remote_is_bounded() {
        let port = crate::seams::silent_port();
        let tmp = tempfile::tempdir().unwrap();
        let mut src = source(tmp.path(), Path::new("/unused"), "main");
        src.url = SecretUrl::git(&format!("http://deploy:Git-T0ken-xyz@127.0.0.1:{port}/repo.git"));
        src.timeout = Duration::from_secs(1);
        let repo = GitRepo::open(&tmp.path().join("git"), &src).unwrap();
        let start = Instant::now();
        let err = format!("{:#}", repo.fetch().unwrap_err());
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        assert!(err.contains("no answer within 1s") && err.contains("git.timeout"), "{err}");
        assert!(!err.contains("Git-T0ken-xyz") && !err.contains("deploy"), "{err}");
        let mode = std::fs::metadata(tmp.path().join("git")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn missing_branch_and_unreachable_remote_are_clear_errors() {
        let (tmp, bare, _work) = remote();
        let repo = GitRepo::open(&tmp.path().join("git"), &source(tmp.path(), &bare, "nope")).unwrap();
        let err = format!("{:#}", repo.fetch().unwrap_err());
        assert!(err.contains("nope"), "{err}");
        let gone = source(tmp.path(), &tmp.path().join("missing.git"), "main");
        let repo = GitRepo::open(&tmp.path().join("git2"), &gone).unwrap();
        let err = format!("{:#}", repo.fetch().unwrap_err());
        assert!(err.contains("missing.git"), "{err}");
    }
}
