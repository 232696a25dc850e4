//! Secrets: age files in the repository (age-encryption.org/v1, X25519 recipients),
//! decrypted in memory with the node's identity and delivered to a container on a
//! per-instance tmpfs (research/security.md §4.4).
//!
//! Contract:
//! - Plaintext lives only in [`Plaintext`] (zeroized on drop, `Debug` prints nothing)
//!   and in files on the instance's tmpfs. It is never logged, printed, hashed or put
//!   in an error: errors name the secret file and the reason ("no identity matches",
//!   "not an age file"), never content.
//! - The node identity is an age-keygen-format file (`# created:`, `# public key:`,
//!   `AGE-SECRET-KEY-1…`), created mode 0600 and never overwritten; only its recipient
//!   (`age1…`) leaves the node.
//! - Delivery: [`mount_secrets_dir`] mounts a fresh tmpfs (`nosuid,nodev,noexec`,
//!   mode 0700) at `<run_dir>/secrets/<instance id>`; [`write_secret`] creates each file
//!   there with `O_EXCL|O_NOFOLLOW`, mode 0400, owned by the container's uid/gid; the
//!   runtime bind-mounts each file read-only at `/run/secrets/<target>` (as Docker
//!   does), so the directory itself stays root-only; [`unmount_secrets_dir`] removes it.

use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use age::secrecy::ExposeSecret;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use zeroize::Zeroizing;

pub use age::x25519::Recipient;

/// Why a secret could not be handled. No variant carries plaintext or key material.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read identity file {}: {source}", path.display())]
    ReadIdentity {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("identity file {} line {line}: not an age X25519 identity (AGE-SECRET-KEY-1…)", path.display())]
    BadIdentity { path: PathBuf, line: usize },
    #[error("identity file {} holds no identity", path.display())]
    NoIdentity { path: PathBuf },
    #[error("identity file {} already exists; refusing to overwrite it", path.display())]
    IdentityExists { path: PathBuf },
    #[error("cannot write identity file {}: {source}", path.display())]
    WriteIdentity {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("secret file {}", path.display())]
    TreeFile {
        path: PathBuf,
        #[source]
        source: super::treefile::TreeFileError,
    },
    #[error("secret file {}: not an age file", path.display())]
    NotAge { path: PathBuf },
    #[error("secret file {}: no identity matches (it is not encrypted to this node's recipient)", path.display())]
    NoMatchingIdentity { path: PathBuf },
    #[error("secret file {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("invalid recipient `{value}`: expected an age X25519 recipient (age1…)")]
    BadRecipient { value: String },
    #[error("cannot encrypt: {reason}")]
    Encrypt { reason: String },
    #[error("secret target `{target}` must be one file name (no `/`, not `.` or `..`)")]
    BadTarget { target: String },
    #[error("cannot mount a tmpfs at {}: {source}", path.display())]
    Mount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot unmount or remove {}: {source}", path.display())]
    Unmount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write secret file {}: {source}", path.display())]
    WriteSecret {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SecretError {
    /// Whether trying again later may work (a full tmpfs, a busy mount point). A secret
    /// not encrypted to this node, or a bad identity, stays until the input changes.
    pub fn is_transient(&self) -> bool {
        crate::runtime::state::chain_is_transient(self)
    }
}

/// A node's age X25519 identity (one or more keys, as an age identity file may hold):
/// what decrypts its secrets. Not the node's name and labels (`berth_spec`'s
/// `NodeIdentity`).
#[derive(Clone)]
pub struct AgeIdentity {
    keys: Vec<age::x25519::Identity>,
}

impl fmt::Debug for AgeIdentity {
    /// Shows the public recipients only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgeIdentity")
            .field("recipients", &self.recipients())
            .finish()
    }
}

impl AgeIdentity {
    /// A fresh random identity.
    pub fn generate() -> Self {
        AgeIdentity {
            keys: vec![age::x25519::Identity::generate()],
        }
    }

    /// Reads an identity file (age-keygen format: `#` comments, blank lines, keys).
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path)
            .map(Zeroizing::new)
            .map_err(|source| SecretError::ReadIdentity {
                path: path.to_path_buf(),
                source,
            })?;
        Self::parse(path, &text)
    }

    /// Parses identity file text; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, SecretError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key =
                age::x25519::Identity::from_str(line).map_err(|_| SecretError::BadIdentity {
                    path: path.to_path_buf(),
                    line: i + 1,
                })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(SecretError::NoIdentity {
                path: path.to_path_buf(),
            });
        }
        Ok(AgeIdentity { keys })
    }

    /// The recipients (`age1…`) to encrypt secrets for this node, one per key.
    pub fn recipients(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.to_public().to_string())
            .collect()
    }

    /// The identity file's text, as age-keygen writes it.
    fn file_text(&self, created: SystemTime) -> Zeroizing<String> {
        let mut text = Zeroizing::new(format!(
            "# created: {}\n",
            humantime::format_rfc3339_seconds(created)
        ));
        for key in &self.keys {
            text.push_str(&format!("# public key: {}\n", key.to_public()));
            text.push_str(key.to_string().expose_secret());
            text.push('\n');
        }
        text
    }

    /// Writes the identity to a new file, mode 0600; an existing file is never replaced.
    pub fn write_new(&self, path: &Path) -> Result<(), SecretError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => SecretError::IdentityExists {
                    path: path.to_path_buf(),
                },
                _ => SecretError::WriteIdentity {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        let written = file
            .write_all(self.file_text(SystemTime::now()).as_bytes())
            .and_then(|()| file.sync_all());
        written.map_err(|source| {
            // Leave no half-written key behind.
            let _ = std::fs::remove_file(path);
            SecretError::WriteIdentity {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// The identity file's text for stdout (`berth secret keygen --output -`).
    pub fn to_file_text(&self) -> Zeroizing<String> {
        self.file_text(SystemTime::now())
    }
}

/// Decrypted secret bytes: zeroized on drop, never shown by `Debug`.
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    /// Wraps bytes that are already secret (read from stdin to encrypt, for instance).
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Plaintext(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Plaintext(..)")
    }
}

/// Parses an `age1…` recipient.
pub fn parse_recipient(value: &str) -> Result<Recipient, SecretError> {
    Recipient::from_str(value.trim()).map_err(|_| SecretError::BadRecipient {
        value: value.to_string(),
    })
}

/// Encrypts to every recipient; `armor` selects the PEM-like ASCII form.
pub fn encrypt(
    recipients: &[Recipient],
    plaintext: &[u8],
    armor: bool,
) -> Result<Vec<u8>, SecretError> {
    let reason = |e: &dyn fmt::Display| SecretError::Encrypt {
        reason: e.to_string(),
    };
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| reason(&e))?;
    let format = if armor {
        Format::AsciiArmor
    } else {
        Format::Binary
    };
    let mut out = Vec::with_capacity(plaintext.len() + 512);
    let armored = ArmoredWriter::wrap_output(&mut out, format).map_err(|e| reason(&e))?;
    let mut writer = encryptor.wrap_output(armored).map_err(|e| reason(&e))?;
    writer.write_all(plaintext).map_err(|e| reason(&e))?;
    writer
        .finish()
        .and_then(|armored| armored.finish())
        .map_err(|e| reason(&e))?;
    Ok(out)
}

/// Decrypts an age file (binary or armored) held in memory; `path` names it in errors.
pub fn decrypt(
    identity: &AgeIdentity,
    path: &Path,
    ciphertext: &[u8],
) -> Result<Plaintext, SecretError> {
    let corrupt = |reason: &str| SecretError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let decryptor = age::Decryptor::new(ArmoredReader::new(ciphertext)).map_err(|e| match e {
        age::DecryptError::InvalidHeader | age::DecryptError::Io(_) => SecretError::NotAge {
            path: path.to_path_buf(),
        },
        age::DecryptError::UnknownFormat => corrupt("unknown age format version"),
        age::DecryptError::InvalidMac => {
            corrupt("header MAC does not verify (damaged or tampered)")
        }
        other => corrupt(&other.to_string()),
    })?;
    let keys = identity.keys.iter().map(|k| k as &dyn age::Identity);
    let mut reader = decryptor.decrypt(keys).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => SecretError::NoMatchingIdentity {
            path: path.to_path_buf(),
        },
        age::DecryptError::InvalidMac => {
            corrupt("header MAC does not verify (damaged or tampered)")
        }
        other => corrupt(&other.to_string()),
    })?;
    // The plaintext is no longer than the ciphertext: reserving that much up front means
    // the buffer never reallocates, so no unzeroized copy is left in freed memory.
    let mut plain = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
    reader
        .read_to_end(&mut plain)
        .map_err(|_| corrupt("payload does not decrypt (damaged or truncated)"))?;
    Ok(Plaintext(plain))
}

/// Reads the secret file `reference` of the spec tree at `root` (as `treefile` reads
/// it: no link followed, a regular file, at most [`treefile::MAX_SECRET_FILE`]) and
/// decrypts it.
pub fn decrypt_tree_file(
    identity: &AgeIdentity,
    root: &Path,
    reference: &str,
) -> Result<Plaintext, SecretError> {
    let path = root.join(reference);
    let bytes = super::treefile::read(root, reference, super::treefile::MAX_SECRET_FILE).map_err(
        |source| SecretError::TreeFile {
            path: path.clone(),
            source,
        },
    )?;
    decrypt(identity, &path, &bytes)
}

/// An instance's secrets directory: `<run_dir>/secrets/<instance id>` (DESIGN.md §7).
pub fn secrets_dir(run_dir: &Path, instance_id: &str) -> PathBuf {
    run_dir.join("secrets").join(instance_id)
}

/// Mounts a fresh tmpfs at `dir` (`<run_dir>/secrets/<instance id>`), creating it mode
/// 0700. A mount left there by a crash is replaced, so no stale secret survives.
/// `size` bounds the tmpfs in bytes (tmpfs counts whole pages per file).
pub fn mount_secrets_dir(dir: &Path, size: u64) -> Result<(), SecretError> {
    let mount_err = |source: io::Error| SecretError::Mount {
        path: dir.to_path_buf(),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(mount_err)?;
    while is_mount_point(dir) {
        nix::mount::umount2(dir, MntFlags::MNT_DETACH).map_err(|e| mount_err(e.into()))?;
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let data = format!("mode=0700,size={}", size.max(4096));
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| mount_err(e.into()))
}

/// Unmounts and removes an instance's secrets directory; nothing there is fine.
pub fn unmount_secrets_dir(dir: &Path) -> Result<(), SecretError> {
    while is_mount_point(dir) {
        nix::mount::umount2(dir, MntFlags::MNT_DETACH).map_err(|e| SecretError::Unmount {
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SecretError::Unmount {
            path: dir.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Writes one secret into a mounted secrets directory: a new file (never through a
/// symlink, never over an existing one), mode 0400, owned by `uid:gid`.
pub fn write_secret(
    dir: &Path,
    target: &str,
    plaintext: &Plaintext,
    uid: u32,
    gid: u32,
) -> Result<PathBuf, SecretError> {
    if target.is_empty() || target == "." || target == ".." || target.contains(['/', '\0']) {
        return Err(SecretError::BadTarget {
            target: target.to_string(),
        });
    }
    let path = dir.join(target);
    let write_err = |source| SecretError::WriteSecret {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .map_err(write_err)?;
    file.write_all(plaintext.as_bytes()).map_err(write_err)?;
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(write_err)?;
    // The umask may have narrowed the create mode; set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(0o400))
        .map_err(write_err)?;
    Ok(path)
}

/// True when `dir` is the root of a mount (its device differs from its parent's).
fn is_mount_point(dir: &Path) -> bool {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    match (std::fs::metadata(dir), std::fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.dev() != p.dev(),
        _ => false,
    }
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
