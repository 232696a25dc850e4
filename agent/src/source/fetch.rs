//! One fetch of the node's repository into its bare clone, `<state_dir>/source/repo.git`.
//!
//! - Network URLs are fetched shallow (`source.depth`, default 1) for slow edge links.
//!   libgit2 refuses a depth on its local transport, so `file://` URLs and local paths
//!   always fetch the full history.
//! - Only the ref the node follows is fetched (`+refs/heads/B`, `+refs/tags/T`); a pinned
//!   commit already in the clone is not fetched again, and one that is not is asked for
//!   by id, then by fetching every branch and tag in full (servers that refuse
//!   unadvertised objects).
//! - https takes `credentials_file` (`token` or `user:password`) when the server asks,
//!   and an extra CA (`ca_file`); ssh takes `ssh_key`, and the host key must be listed in
//!   `known_hosts` (an unknown or wrong key is refused). See `trust`.
//! - A clone that libgit2 cannot open or read is moved aside and cloned afresh.
//! - A branch or tag that moved to a commit that does not descend from the one fetched
//!   before is followed, and reported as rewritten (a force-push).
//! - No credential reaches a message: libgit2's messages are cut of the URL's userinfo,
//!   and URLs are shown without it ([`display_url`]).

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_spec::node::{GitRef, SourceSection, Transport};
use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, ErrorClass, ErrorCode,
    FetchOptions, ObjectType, Oid, RemoteCallbacks, Repository,
};
use zeroize::Zeroizing;

use super::trust::{ExtraCa, HostKeys, TrustError};
use super::verify::MAX_OBJECT_BYTES;

/// The ref under which the clone keeps the commit fetched last (so its objects stay
/// reachable, and a failed fetch can check the clone still reads).
const FETCHED_REF: &str = "refs/berth/fetched";
/// Where a pinned commit fetched by id is kept.
const PINNED_REF: &str = "refs/berth/pinned";
/// How big a credentials file may be.
const MAX_CREDENTIALS: u64 = 64 * 1024;
/// The most bytes one fetch may receive.
const MAX_FETCH_BYTES: usize = 1024 * 1024 * 1024;
/// A clone past this size (revisions refused and forgotten, shallow packs piling up)
/// is set aside and cloned afresh before the next fetch.
const MAX_CLONE_BYTES: u64 = 512 * 1024 * 1024;
/// How many ancestors are walked to tell a fast-forward from a rewrite.
const MAX_WALK: usize = 100_000;

/// Why a fetch did not give a revision.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server could not be reached or broke off; worth trying again later.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server was reached, and refused us or we refused it.
    #[error("{url}: {reason}")]
    Refused { url: String, reason: String },
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The branch, tag or commit is not on the server.
    #[error("{url}: {what} was not found on the server")]
    NotFound { url: String, what: String },
    #[error("{key}: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("the local clone {}: {reason}", .path.display())]
    Clone { path: PathBuf, reason: String },
    /// No fetch was asked for (zero attempts).
    #[error("no fetch was attempted")]
    NotAttempted,
}

impl FetchError {
    /// Whether trying again may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// How the fetched commit relates to the one fetched before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum History {
    /// Nothing was fetched before.
    First,
    /// The same commit.
    Unchanged,
    /// A descendant of it.
    FastForward,
    /// Not a descendant: the branch or tag was rewritten (a force-push).
    Rewritten,
    /// A shallow clone does not hold enough history to tell.
    Unknown,
    /// A shallow clone cannot tell, but the commit is older than the one applied
    /// before: a rollback, or the ref moved back.
    Older,
}

/// What one fetch gave.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The commit to apply.
    pub commit: Oid,
    /// The annotated tag object, when following a tag that has one.
    pub tag: Option<Oid>,
    /// The commit fetched before, if any.
    pub previous: Option<Oid>,
    pub history: History,
    /// Bytes received from the server.
    pub received_bytes: usize,
    /// The clone was unusable and was cloned afresh.
    pub recloned: bool,
}

/// The source as the fetch needs it: the section, its trust files read.
#[derive(Debug)]
pub struct Remote<'a> {
    pub section: &'a SourceSection,
    /// `<state_dir>/source`.
    pub dir: PathBuf,
    /// What a relative local `source.url` is relative to: the node configuration's
    /// directory (the current directory when none).
    pub base: Option<PathBuf>,
    /// The commit applied before from this same ref, to tell a fast-forward from a
    /// rewrite; none when nothing was applied from it.
    pub previous: Option<Oid>,
    /// The longest one fetch may take, however steadily bytes trickle in.
    pub deadline: Duration,
}

impl Remote<'_> {
    /// The bare clone's path.
    pub fn clone_path(&self) -> PathBuf {
        self.dir.join("repo.git")
    }

    /// The URL as libgit2 takes it (a relative local path made absolute).
    fn url(&self) -> String {
        let url = &self.section.url;
        if self.section.transport == Transport::Local && !url.starts_with("file://") {
            let p = Path::new(url);
            if p.is_relative() {
                let base = self
                    .base
                    .clone()
                    .or_else(|| std::env::current_dir().ok())
                    .unwrap_or_default();
                return base.join(p).display().to_string();
            }
        }
        url.clone()
    }

    /// Fetches the followed ref, trying a transient failure `attempts` times in all
    /// with `pause` doubling between tries.
    pub fn fetch_with_retries(
        &self,
        attempts: u32,
        pause: Duration,
    ) -> Result<Fetched, FetchError> {
        if attempts == 0 {
            return Err(FetchError::NotAttempted);
        }
        let mut pause = pause;
        let mut tried = 0;
        loop {
            tried += 1;
            match self.fetch() {
                Err(e) if e.is_transient() && tried < attempts => {
                    tracing::info!(target: "source", error = %e, retry_in = ?pause, "fetch failed; trying again");
                    std::thread::sleep(pause);
                    pause = pause.saturating_mul(2);
                }
                other => return other,
            }
        }
    }

    /// A local repository that is not there: said plainly, and not tried again.
    fn check_local(&self) -> Result<(), FetchError> {
        if self.section.transport != Transport::Local {
            return Ok(());
        }
        let url = self.url();
        let path = percent_decode(url.strip_prefix("file://").unwrap_or(&url));
        if Path::new(&path).is_dir() {
            Ok(())
        } else {
            Err(FetchError::NotFound {
                url: display_url(&self.section.url),
                what: format!("the repository directory {path}"),
            })
        }
    }

    /// One fetch of the followed ref. When it fails and the clone itself turns out
    /// unreadable, the clone is set aside and the fetch made once more into a fresh one.
    pub fn fetch(&self) -> Result<Fetched, FetchError> {
        self.check_local()?;
        fs::create_dir_all(&self.dir).map_err(|e| self.clone_error(e.to_string()))?;
        let (repo, recloned) = self.open_or_init()?;
        let err = match self.fetch_into(&repo) {
            Ok(mut f) => {
                f.recloned = recloned;
                return Ok(f);
            }
            Err(e) => e,
        };
        let broken = match &err {
            FetchError::Clone { reason, .. } => Some(reason.clone()),
            _ if recloned => None,
            _ => unreadable(&repo),
        };
        let Some(reason) = broken else {
            return Err(err);
        };
        drop(repo);
        self.fetch_fresh(&reason)
    }

    /// Sets the clone aside (it cannot be read: `reason`) and fetches into a new one.
    pub fn fetch_fresh(&self, reason: &str) -> Result<Fetched, FetchError> {
        tracing::warn!(target: "source", clone = %self.clone_path().display(), %reason, "the local clone is unusable; cloning afresh");
        self.set_aside()?;
        let repo = self.init()?;
        let mut fetched = self.fetch_into(&repo)?;
        fetched.recloned = true;
        Ok(fetched)
    }

    fn clone_error(&self, reason: String) -> FetchError {
        FetchError::Clone {
            path: self.clone_path(),
            reason,
        }
    }

    fn init(&self) -> Result<Repository, FetchError> {
        Repository::init_bare(self.clone_path())
            .map_err(|e| self.clone_error(e.message().to_string()))
    }

    /// Opens the clone, or makes one; a clone that cannot be opened is set aside.
    fn open_or_init(&self) -> Result<(Repository, bool), FetchError> {
        let path = self.clone_path();
        if !path.exists() {
            return Ok((self.init()?, false));
        }
        let size = dir_size(&path);
        if size > MAX_CLONE_BYTES {
            tracing::warn!(target: "source", clone = %path.display(), bytes = size, "the local clone grew past its cap; cloning afresh");
            self.set_aside()?;
            return Ok((self.init()?, true));
        }
        match Repository::open_bare(&path) {
            Ok(repo) if repo.is_bare() => Ok((repo, false)),
            Ok(_) => {
                self.set_aside()?;
                Ok((self.init()?, true))
            }
            Err(e) => {
                tracing::warn!(target: "source", clone = %path.display(), error = %e.message(), "the local clone cannot be opened; cloning afresh");
                self.set_aside()?;
                Ok((self.init()?, true))
            }
        }
    }

    /// Removes the clone (renamed first, so a crash leaves no half-removed clone in its
    /// place).
    fn set_aside(&self) -> Result<(), FetchError> {
        let path = self.clone_path();
        let aside = self
            .dir
            .join(format!("repo.git.broken-{}", std::process::id()));
        let _ = fs::remove_dir_all(&aside);
        fs::rename(&path, &aside).map_err(|e| self.clone_error(e.to_string()))?;
        fs::remove_dir_all(&aside).map_err(|e| self.clone_error(e.to_string()))
    }

    fn fetch_into(&self, repo: &Repository) -> Result<Fetched, FetchError> {
        let previous = self.previous;
        let mut received = 0;
        let (commit, tag) = match &self.section.git_ref {
            GitRef::Branch(b) => {
                let local = format!("refs/remotes/origin/{b}");
                check_ref_name(&format!("refs/heads/{b}"), "source.branch")?;
                received += self.run_fetch(repo, &[format!("+refs/heads/{b}:{local}")], true)?;
                let id = repo
                    .refname_to_id(&local)
                    .map_err(|_| self.not_found(format!("branch `{b}`")))?;
                (self.peel_commit(repo, id)?, None)
            }
            GitRef::Tag(t) => {
                let local = format!("refs/tags/{t}");
                check_ref_name(&local, "source.tag")?;
                received += self.run_fetch(repo, &[format!("+{local}:{local}")], true)?;
                let id = repo
                    .refname_to_id(&local)
                    .map_err(|_| self.not_found(format!("tag `{t}`")))?;
                let annotated = match repo.find_tag(id) {
                    // A tag object moved under another name is not this tag.
                    Ok(tag) if tag.name_bytes() != t.as_bytes() => {
                        return Err(FetchError::Refused {
                            url: display_url(&self.section.url),
                            reason: format!(
                                "refs/tags/{t} holds a tag object named `{}`: a tag moved under another name; refusing it",
                                String::from_utf8_lossy(tag.name_bytes())
                            ),
                        });
                    }
                    Ok(tag) => Some(tag.id()),
                    Err(_) => None,
                };
                (self.peel_commit(repo, id)?, annotated)
            }
            GitRef::Commit(c) => {
                let c = c.to_ascii_lowercase();
                if c.len() < 4 || c.len() > 40 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(FetchError::Config {
                        key: "source.commit",
                        reason: format!("`{c}` is not a commit id (4 to 40 hex digits)"),
                    });
                }
                // The id is resolved without reading the object (its size is checked
                // before it is read, by peel_commit).
                let find = |repo: &Repository| -> Option<Oid> {
                    let odb = repo.odb().ok()?;
                    let short = Oid::from_str(&c).ok()?;
                    let id = if c.len() == 40 {
                        odb.exists(short).then_some(short)?
                    } else {
                        odb.exists_prefix(short, c.len()).ok()?
                    };
                    Some(id)
                };
                if find(repo).is_none() {
                    // A full id is asked for by id (servers that allow it); otherwise,
                    // or when the server refuses, every branch and tag is fetched in
                    // full and the commit looked for there.
                    let by_id = if c.len() == 40 {
                        self.run_fetch(repo, &[format!("+{c}:{PINNED_REF}")], true)
                            .inspect_err(|e| {
                                tracing::debug!(target: "source", error = %e, "fetching the pinned commit by id failed; fetching every branch and tag");
                            })
                            .ok()
                    } else {
                        None
                    };
                    match by_id {
                        Some(n) if find(repo).is_some() => received += n,
                        _ => {
                            received += self.run_fetch(
                                repo,
                                &[
                                    "+refs/heads/*:refs/remotes/origin/*".to_string(),
                                    "+refs/tags/*:refs/tags/*".to_string(),
                                ],
                                false,
                            )?;
                        }
                    }
                }
                let found = find(repo).ok_or_else(|| {
                    self.not_found(format!("commit {c} (on no branch or tag of the server)"))
                })?;
                let commit = self.peel_commit(repo, found)?;
                (commit, None)
            }
        };
        let history = history(repo, previous, commit);
        repo.reference(FETCHED_REF, commit, true, "berth: fetched")
            .map_err(|e| self.clone_error(e.message().to_string()))?;
        Ok(Fetched {
            commit,
            tag,
            previous,
            history,
            received_bytes: received,
            recloned: false,
        })
    }

    fn not_found(&self, what: String) -> FetchError {
        FetchError::NotFound {
            url: display_url(&self.section.url),
            what,
        }
    }

    /// The commit `id` names (itself, or what a tag points at), each object's size
    /// checked from its header before it is read: a commit or tag larger than
    /// [`MAX_OBJECT_BYTES`] is refused unread, as `berth source verify` refuses it.
    fn peel_commit(&self, repo: &Repository, id: Oid) -> Result<Oid, FetchError> {
        let odb = repo
            .odb()
            .map_err(|e| self.clone_error(e.message().to_string()))?;
        let asked = id;
        let mut id = id;
        // A tag of a tag of … is followed a bounded number of times.
        for _ in 0..8 {
            let (size, kind) = odb
                .read_header(id)
                .map_err(|e| self.clone_error(e.message().to_string()))?;
            if matches!(kind, ObjectType::Commit | ObjectType::Tag) && size > MAX_OBJECT_BYTES {
                return Err(FetchError::Refused {
                    url: display_url(&self.section.url),
                    reason: format!(
                        "the {} {id} is {size} bytes, more than the {MAX_OBJECT_BYTES} berth reads; refusing it unread",
                        kind.str()
                    ),
                });
            }
            match kind {
                ObjectType::Commit => return Ok(id),
                ObjectType::Tag => {
                    id = repo
                        .find_tag(id)
                        .map_err(|e| self.clone_error(e.message().to_string()))?
                        .target_id();
                }
                _ => break,
            }
        }
        Err(FetchError::Refused {
            url: display_url(&self.section.url),
            reason: format!("{asked} does not point at a commit"),
        })
    }

    /// Runs one fetch of `refspecs`, shallow when `shallow` and the transport allows
    /// it; returns the bytes received.
    fn run_fetch(
        &self,
        repo: &Repository,
        refspecs: &[String],
        shallow: bool,
    ) -> Result<usize, FetchError> {
        let s = self.section;
        let url = self.url();
        let shown = display_url(&s.url);
        let target = Target::of(&s.url, s.transport);
        // What our callbacks refused, for a clearer message than libgit2's.
        let refusal: RefCell<Option<FetchError>> = RefCell::new(None);
        let host_keys = match s.transport {
            Transport::Ssh => Some(match &s.known_hosts {
                Some(p) => HostKeys::load(p)?,
                None => return Err(TrustError::NoKnownHosts { url: shown }.into()),
            }),
            _ => None,
        };
        let extra_ca = match (&s.ca_file, s.transport) {
            (Some(p), Transport::Https) => Some(ExtraCa::load(p)?),
            _ => None,
        };
        // libgit2 asks again when the server refuses what it was given; each kind of
        // credentials is offered once (an ssh URL without a user asks for the user
        // name first, then for the key).
        let mut offered: Vec<CredentialType> = Vec::new();
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|_url, username, allowed| {
            let kind = [
                CredentialType::SSH_KEY,
                CredentialType::USER_PASS_PLAINTEXT,
                CredentialType::USERNAME,
            ]
            .into_iter()
            .find(|k| allowed.contains(*k))
            .unwrap_or(allowed);
            if offered.contains(&kind) {
                let reason = self.refused_credentials(kind);
                *refusal.borrow_mut() = Some(FetchError::Refused {
                    url: shown.clone(),
                    reason: reason.clone(),
                });
                return Err(git2::Error::from_str(&reason));
            }
            offered.push(kind);
            self.credentials(username, allowed).map_err(|e| {
                let msg = e.to_string();
                *refusal.borrow_mut() = Some(e);
                git2::Error::from_str(&msg)
            })
        });
        callbacks.certificate_check(|cert, _host| {
            if let Some(hk) = cert.as_hostkey() {
                let Some(keys) = &host_keys else {
                    return Ok(CertificateCheckStatus::CertificatePassthrough);
                };
                let checked = match hk.hostkey() {
                    Some(raw) => keys.check(&target.host, target.port, raw),
                    None => Err(TrustError::BadHostKey {
                        host: target.host.clone(),
                        reason: "the server's raw host key is not available".into(),
                    }),
                };
                return match checked {
                    Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                    Err(e) => {
                        let msg = e.to_string();
                        *refusal.borrow_mut() = Some(e.into());
                        Err(git2::Error::from_str(&msg))
                    }
                };
            }
            if let (Some(x509), Some(ca)) = (cert.as_x509(), &extra_ca) {
                // libgit2 does not say whether its own check passed; ours passing is
                // enough, and otherwise libgit2's verdict stands.
                if ca.check(&target.host, x509.data()).is_ok() {
                    return Ok(CertificateCheckStatus::CertificateOk);
                }
            }
            Ok(CertificateCheckStatus::CertificatePassthrough)
        });
        // No fetch outlives its deadline or grows past its cap: a server that trickles
        // bytes forever, or streams an endless pack, is cut off.
        let started = std::time::Instant::now();
        let deadline = self.deadline;
        callbacks.transfer_progress(|p| {
            if started.elapsed() > deadline {
                *refusal.borrow_mut() = Some(FetchError::Unreachable {
                    url: shown.clone(),
                    reason: format!(
                        "the fetch took longer than {} (10 × runtime.pull_idle_timeout)",
                        humantime::format_duration(deadline)
                    ),
                });
                return false;
            }
            if p.received_bytes() > MAX_FETCH_BYTES {
                *refusal.borrow_mut() = Some(FetchError::Refused {
                    url: shown.clone(),
                    reason: format!("the server sent more than {MAX_FETCH_BYTES} bytes"),
                });
                return false;
            }
            true
        });
        callbacks.sideband_progress(|_| started.elapsed() <= deadline);
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(callbacks);
        opts.download_tags(AutotagOption::None);
        if shallow && s.transport != Transport::Local && s.depth > 0 {
            opts.depth(i32::try_from(s.depth).unwrap_or(i32::MAX));
        } else if repo.is_shallow() && s.transport != Transport::Local {
            // `depth = 0` over a clone made shallow before: fetch the whole history
            // (libgit2's "unshallow" depth).
            opts.depth(i32::MAX);
        }
        let mut remote = repo
            .remote_anonymous(&url)
            .map_err(|e| FetchError::Config {
                key: "source.url",
                reason: redact(e.message(), &s.url),
            })?;
        let result = remote.fetch(refspecs, Some(&mut opts), Some("berth: fetch"));
        let received = remote.stats().received_bytes();
        drop(remote);
        drop(opts);
        match result {
            Ok(()) => Ok(received),
            Err(e) => Err(match refusal.into_inner() {
                Some(ours) => ours,
                None => match classify(&e, &s.url) {
                    FetchError::Clone { reason, .. } => self.clone_error(reason),
                    other => other,
                },
            }),
        }
    }

    /// Why the server refused the credentials of `kind`, naming where they came from.
    fn refused_credentials(&self, kind: CredentialType) -> String {
        let s = self.section;
        if kind == CredentialType::SSH_KEY {
            return format!(
                "the server refused the key {} (`source.ssh_key`)",
                s.ssh_key
                    .as_ref()
                    .map_or_else(String::new, |k| k.display().to_string())
            );
        }
        if kind == CredentialType::USER_PASS_PLAINTEXT {
            return match &s.credentials_file {
                Some(f) => format!(
                    "the server refused the credentials in {} (`source.credentials_file`: one line, `token` or `user:password`)",
                    f.display()
                ),
                None => "the server refused the credentials in the URL".into(),
            };
        }
        "the server refused the user name".into()
    }

    /// The credentials the server asked for.
    fn credentials(
        &self,
        username: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, FetchError> {
        let s = self.section;
        let shown = display_url(&s.url);
        if allowed.contains(CredentialType::SSH_KEY) {
            let Some(key) = &s.ssh_key else {
                return Err(FetchError::Config {
                    key: "source.ssh_key",
                    reason: format!(
                        "the ssh server {shown} asks for a key, and `source.ssh_key` is not set"
                    ),
                });
            };
            return Cred::ssh_key(username.unwrap_or("git"), None, key, None).map_err(|e| {
                FetchError::Config {
                    key: "source.ssh_key",
                    reason: format!("cannot use {}: {}", key.display(), e.message()),
                }
            });
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let Some(file) = &s.credentials_file else {
                // Credentials written into the URL, as git takes them.
                if let Ok(u) = url::Url::parse(&s.url)
                    && let Some(password) = u.password()
                {
                    let user = percent_decode(u.username());
                    let password = Zeroizing::new(percent_decode(password));
                    return Cred::userpass_plaintext(&user, &password).map_err(|e| {
                        FetchError::Config {
                            key: "source.url",
                            reason: e.message().to_string(),
                        }
                    });
                }
                return Err(FetchError::Refused {
                    url: shown,
                    reason:
                        "the server asks for credentials, and `source.credentials_file` is not set"
                            .into(),
                });
            };
            let (user, password) = read_credentials(file)?;
            return Cred::userpass_plaintext(&user, &password).map_err(|e| FetchError::Config {
                key: "source.credentials_file",
                reason: e.message().to_string(),
            });
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(username.unwrap_or("git")).map_err(|e| FetchError::Config {
                key: "source.url",
                reason: e.message().to_string(),
            });
        }
        Err(FetchError::Refused {
            url: shown,
            reason: "the server asks for a kind of credentials berth does not have".into(),
        })
    }
}

/// Refuses a branch or tag name git would not take (so it cannot bend the refspec).
fn check_ref_name(name: &str, key: &'static str) -> Result<(), FetchError> {
    if git2::Reference::is_valid_name(name) && !name.contains('*') {
        Ok(())
    } else {
        Err(FetchError::Config {
            key,
            reason: format!("`{name}` is not a valid ref name"),
        })
    }
}

/// `credentials_file`: `user:password`, or a token alone (sent as the password, with
/// the user name `git`, which the common servers accept for tokens).
fn read_credentials(path: &Path) -> Result<(String, Zeroizing<String>), FetchError> {
    let bad = |reason: String| FetchError::Config {
        key: "source.credentials_file",
        reason: format!("{}: {reason}", path.display()),
    };
    let meta = fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() || meta.len() > MAX_CREDENTIALS {
        return Err(bad("not a small regular file".into()));
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.is_empty() {
        return Err(bad("it is empty".into()));
    }
    // A git-credential-store line (`https://user:password@host`).
    if line.contains("://")
        && let Ok(u) = url::Url::parse(line)
        && let Some(password) = u.password()
    {
        return Ok((
            percent_decode(u.username()),
            Zeroizing::new(percent_decode(password)),
        ));
    }
    Ok(match line.split_once(':') {
        Some((user, password)) if !user.is_empty() => {
            (user.to_string(), Zeroizing::new(password.to_string()))
        }
        _ => ("git".to_string(), Zeroizing::new(line.to_string())),
    })
}

/// Why the clone's own objects do not read back (the commit fetched last, its tree,
/// every object the tree names), or none when they do. A fetch that failed over a
/// clone that does not read back is retried into a fresh clone.
fn unreadable(repo: &Repository) -> Option<String> {
    let Ok(r) = repo.find_reference(FETCHED_REF) else {
        return None;
    };
    let Some(id) = r.target() else {
        return Some(format!("{FETCHED_REF} is not a direct reference"));
    };
    let tree = match repo.find_commit(id).and_then(|c| c.tree()) {
        Ok(t) => t,
        Err(e) => return Some(e.message().to_string()),
    };
    let odb = match repo.odb() {
        Ok(o) => o,
        Err(e) => return Some(e.message().to_string()),
    };
    let mut bad: Option<String> = None;
    let walked = tree.walk(git2::TreeWalkMode::PreOrder, |_, entry| {
        if entry.kind() == Some(git2::ObjectType::Commit) {
            return git2::TreeWalkResult::Ok;
        }
        match odb.read_header(entry.id()) {
            Ok(_) => git2::TreeWalkResult::Ok,
            Err(e) => {
                bad = Some(format!("object {}: {}", entry.id(), e.message()));
                git2::TreeWalkResult::Abort
            }
        }
    });
    bad.or_else(|| walked.err().map(|e| e.message().to_string()))
}

/// The bytes of the files below `dir` (links not followed).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => {
                    total = total.saturating_add(e.metadata().map_or(0, |m| m.len()));
                }
                _ => {}
            }
        }
    }
    total
}

/// A URL's percent-encoded user or password, decoded.
fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map_or_else(|| s.to_string(), |(_, v)| v.into_owned())
}

/// How `commit` relates to `previous`.
fn history(repo: &Repository, previous: Option<Oid>, commit: Oid) -> History {
    let Some(prev) = previous else {
        return History::First;
    };
    if prev == commit {
        return History::Unchanged;
    }
    // A walk of our own rather than libgit2's revwalk, so that each commit's size is
    // checked from its header before it is read: a huge commit further down the
    // history ends the walk unread.
    let Ok(odb) = repo.odb() else {
        return History::Unknown;
    };
    let mut seen = std::collections::HashSet::from([commit]);
    let mut queue = std::collections::VecDeque::from([commit]);
    let shallow = repo.is_shallow();
    let mut walked = 0;
    while let Some(id) = queue.pop_front() {
        if id == prev {
            return History::FastForward;
        }
        walked += 1;
        if walked > MAX_WALK {
            return History::Unknown;
        }
        match odb.read_header(id) {
            Ok((size, ObjectType::Commit)) if size <= MAX_OBJECT_BYTES => {}
            Ok(_) => return History::Unknown,
            // A shallow clone's boundary: its parents are not here.
            Err(_) if shallow => continue,
            Err(_) => return History::Unknown,
        }
        let Ok(c) = repo.find_commit(id) else {
            return History::Unknown;
        };
        for parent in c.parent_ids() {
            if seen.insert(parent) {
                queue.push_back(parent);
            }
        }
    }
    if shallow {
        // A shallow clone cannot tell a rewrite; a commit older than the one applied
        // before is at least said (a rollback, or a branch moved back).
        let time = |id| repo.find_commit(id).map(|c| c.committer().when().seconds());
        match (time(commit), time(prev)) {
            (Ok(new), Ok(old)) if new < old => History::Older,
            _ => History::Unknown,
        }
    } else {
        History::Rewritten
    }
}

/// The host and port of a network URL, for the host-key and certificate checks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: Option<u16>,
}

impl Target {
    fn of(url: &str, transport: Transport) -> Self {
        if let Ok(u) = url::Url::parse(url)
            && let Some(host) = u.host_str()
        {
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            return Self {
                host,
                port: u.port(),
            };
        }
        // scp-like `user@host:path`.
        if transport == Transport::Ssh {
            let rest = url.split_once('@').map_or(url, |(_, r)| r);
            let host = rest.split_once(':').map_or(rest, |(h, _)| h);
            return Self {
                host: host.to_string(),
                port: None,
            };
        }
        Self {
            host: String::new(),
            port: None,
        }
    }
}

/// A URL without its userinfo (`https://user:token@host/x` → `https://host/x`,
/// `git@host:x` → `host:x`), for every message and record.
pub fn display_url(url: &str) -> String {
    if let Ok(mut u) = url::Url::parse(url)
        && u.has_host()
    {
        let _ = u.set_username("");
        let _ = u.set_password(None);
        return u.to_string();
    }
    // scp-like (`user@host:path`, even `user:password@host:path`): drop everything up
    // to the last `@` before the path.
    let head = url.split_once('/').map_or(url, |(h, _)| h);
    if let Some(at) = head.rfind('@') {
        return url[at + 1..].to_string();
    }
    url.to_string()
}

/// `message` with the URL's userinfo (and the URL as given) cut out.
fn redact(message: &str, url: &str) -> String {
    let mut out = message.replace(url, &display_url(url));
    if let Ok(u) = url::Url::parse(url)
        && let Some(p) = u.password()
        && !p.is_empty()
    {
        out = out.replace(p, "***");
    }

    out
}

/// A libgit2 fetch error as transient (network) or permanent.
fn classify(e: &git2::Error, url: &str) -> FetchError {
    let shown = display_url(url);
    let reason = redact(e.message(), url);
    match (e.class(), e.code()) {
        (_, ErrorCode::Auth) => FetchError::Refused {
            url: shown,
            reason: format!("authentication failed: {reason}"),
        },
        (_, ErrorCode::Certificate) | (ErrorClass::Ssl, _) => FetchError::Refused {
            url: shown,
            reason: format!(
                "the server's certificate is not trusted: {reason} (for a private CA, set `source.ca_file`)"
            ),
        },
        (ErrorClass::Ssh, _) if reason.contains("private key") || reason.contains("passphrase") => {
            FetchError::Config {
                key: "source.ssh_key",
                reason: format!(
                    "cannot use the key: {reason} (a key with a passphrase cannot be used: the agent runs unattended)"
                ),
            }
        }
        (_, ErrorCode::NotFound) => FetchError::NotFound {
            url: shown,
            what: reason,
        },
        (ErrorClass::Odb | ErrorClass::Object | ErrorClass::Zlib | ErrorClass::Indexer, _) => {
            FetchError::Clone {
                path: PathBuf::new(),
                reason,
            }
        }
        _ => FetchError::Unreachable { url: shown, reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local repository whose branch `main` holds a small commit on top of a commit
    /// of `huge` bytes (its message), and the section following it.
    fn with_huge_commit(dir: &Path, huge: usize, on_top: bool) -> (SourceSection, Oid) {
        let repo = Repository::init(dir.join("server")).expect("init");
        let sig = git2::Signature::now("t", "t@example.org").expect("sig");
        let tree = repo
            .treebuilder(None)
            .and_then(|t| t.write())
            .expect("tree");
        let tree = repo.find_tree(tree).expect("tree");
        let big = repo
            .commit(None, &sig, &sig, &"x".repeat(huge), &tree, &[])
            .expect("commit");
        let head = if on_top {
            let parent = repo.find_commit(big).expect("big");
            repo.commit(None, &sig, &sig, "small", &tree, &[&parent])
                .expect("commit")
        } else {
            big
        };
        repo.reference("refs/heads/main", head, true, "test")
            .expect("ref");
        let section = SourceSection {
            url: dir.join("server").display().to_string(),
            transport: Transport::Local,
            git_ref: GitRef::Branch("main".into()),
            path: String::new(),
            interval: Duration::from_secs(60),
            retry_backoff: Duration::from_secs(5),
            depth: 0,
            credentials_file: None,
            ca_file: None,
            ssh_key: None,
            known_hosts: None,
            allowed_signers: None,
            trusted_pgp_keys: Vec::new(),
            webhook: None,
            notify: None,
        };
        (section, big)
    }

    #[test]
    fn a_commit_over_the_size_limit_is_refused_from_its_header_unread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (section, _) = with_huge_commit(dir.path(), MAX_OBJECT_BYTES + 1, false);
        let remote = Remote {
            section: &section,
            dir: dir.path().join("state"),
            base: None,
            previous: None,
            deadline: Duration::from_secs(60),
        };
        match remote.fetch() {
            Err(FetchError::Refused { reason, .. }) => {
                assert!(reason.contains("more than the"), "{reason}");
                assert!(reason.contains("commit"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Pinned by id, the same.
        let mut by_id = section.clone();
        let (_, big) = with_huge_commit(&dir.path().join("b"), MAX_OBJECT_BYTES + 1, false);
        by_id.url = dir.path().join("b/server").display().to_string();
        by_id.git_ref = GitRef::Commit(big.to_string());
        let remote = Remote {
            section: &by_id,
            dir: dir.path().join("state-b"),
            base: None,
            previous: None,
            deadline: Duration::from_secs(60),
        };
        assert!(
            matches!(remote.fetch(), Err(FetchError::Refused { .. })),
            "a pinned huge commit is refused"
        );
    }

    #[test]
    fn a_huge_commit_down_the_history_ends_the_walk_unread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, big) = with_huge_commit(dir.path(), MAX_OBJECT_BYTES + 1, true);
        let repo = Repository::open(dir.path().join("server")).expect("open");
        let head = repo.refname_to_id("refs/heads/main").expect("head");
        // Some other commit that is not an ancestor: the walk meets the huge one.
        let elsewhere = Oid::from_str("0123456789012345678901234567890123456789").expect("oid");
        assert_eq!(history(&repo, Some(elsewhere), head), History::Unknown);
        // The small commit on top, with the huge one applied before, is a fast-forward
        // found before the huge one is read.
        assert_eq!(history(&repo, Some(big), head), History::FastForward);
        // Within the limit, a commit not found is a rewrite.
        let (_, small_big) = with_huge_commit(&dir.path().join("s"), 1024, true);
        let repo = Repository::open(dir.path().join("s/server")).expect("open");
        let head = repo.refname_to_id("refs/heads/main").expect("head");
        assert_ne!(small_big, head);
        assert_eq!(history(&repo, Some(elsewhere), head), History::Rewritten);
    }

    #[test]
    fn urls_are_shown_without_userinfo() {
        assert_eq!(
            display_url("https://user:s3cret@git.example.com/fleet.git"),
            "https://git.example.com/fleet.git"
        );
        assert_eq!(
            display_url("ssh://git@127.0.0.1:2222/srv/fleet.git"),
            "ssh://127.0.0.1:2222/srv/fleet.git"
        );
        assert_eq!(
            display_url("git@git.example.com:fleet.git"),
            "git.example.com:fleet.git"
        );
        assert_eq!(display_url("/srv/git/fleet.git"), "/srv/git/fleet.git");
        assert_eq!(display_url("alice:S3cret@127.0.0.1:/x"), "127.0.0.1:/x");
        assert_eq!(
            display_url("file:///srv/git/fleet.git"),
            "file:///srv/git/fleet.git"
        );
        let msg = redact(
            "failed to connect to https://user:s3cret@git.example.com/fleet.git: s3cret",
            "https://user:s3cret@git.example.com/fleet.git",
        );
        assert!(!msg.contains("s3cret"), "{msg}");
    }

    #[test]
    fn targets_name_host_and_port() {
        assert_eq!(
            Target::of("ssh://git@127.0.0.1:2222/x.git", Transport::Ssh),
            Target {
                host: "127.0.0.1".into(),
                port: Some(2222)
            }
        );
        assert_eq!(
            Target::of("git@git.example.com:x.git", Transport::Ssh),
            Target {
                host: "git.example.com".into(),
                port: None
            }
        );
        assert_eq!(
            Target::of("https://[::1]:8443/x.git", Transport::Https),
            Target {
                host: "::1".into(),
                port: Some(8443)
            }
        );
    }

    #[test]
    fn credentials_are_a_token_or_user_and_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("c");
        fs::write(&f, "alice:pa:ss\n").expect("write");
        let (u, p) = read_credentials(&f).expect("read");
        assert_eq!((u.as_str(), p.as_str()), ("alice", "pa:ss"));
        fs::write(&f, "\n  tok3n  \n").expect("write");
        let (u, p) = read_credentials(&f).expect("read");
        assert_eq!((u.as_str(), p.as_str()), ("git", "tok3n"));
        fs::write(&f, "").expect("write");
        assert!(read_credentials(&f).is_err());
    }

    #[test]
    fn ref_names_that_bend_a_refspec_are_refused() {
        assert!(check_ref_name("refs/heads/main", "source.branch").is_ok());
        assert!(check_ref_name("refs/heads/a*", "source.branch").is_err());
        assert!(check_ref_name("refs/heads/a:b", "source.branch").is_err());
        assert!(check_ref_name("refs/heads/..", "source.branch").is_err());
    }
}
