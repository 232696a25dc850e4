//! Keys: trusted public keys (PKIX PEM, as cosign writes `cosign.pub`) and signing keys
//! (unencrypted PKCS#8 PEM, or SEC1 `EC PRIVATE KEY` as `openssl ecparam` writes it).
//!
//! cosign's own private-key format (`ENCRYPTED SIGSTORE PRIVATE KEY`, scrypt + secretbox)
//! is refused with a message saying what to do instead. Only ECDSA P-256 is supported:
//! it is cosign's default and the one algorithm the signature spec requires.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use p256::ecdsa;
use p256::elliptic_curve::Generate;
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};

use super::{BoxError, SignatureError, sha256_digest};

/// PEM labels of cosign's encrypted private keys (current and historical).
const COSIGN_ENCRYPTED_LABELS: [&str; 2] = [
    "ENCRYPTED SIGSTORE PRIVATE KEY",
    "ENCRYPTED COSIGN PRIVATE KEY",
];

/// A public key that signatures are verified against, named after where it came from
/// (its file path) so every message can say which key was meant.
#[derive(Clone)]
pub struct TrustedKey {
    name: String,
    key: ecdsa::VerifyingKey,
    fingerprint: String,
}

impl TrustedKey {
    /// Reads a PKIX PEM public key (`-----BEGIN PUBLIC KEY-----`) from `path`.
    pub fn load(path: &Path) -> Result<Self, SignatureError> {
        let text = read_key_file(path)?;
        TrustedKey::from_pem(path.display().to_string(), &text)
    }

    /// Parses a PKIX PEM public key; `name` labels it in messages.
    pub fn from_pem(name: impl Into<String>, pem: &str) -> Result<Self, SignatureError> {
        let name = name.into();
        let label = pem_label(pem).ok_or_else(|| SignatureError::NotPem {
            key: name.clone(),
            expected: "PUBLIC KEY",
        })?;
        if label != "PUBLIC KEY" {
            return Err(SignatureError::NotAPublicKey { key: name, label });
        }
        match ecdsa::VerifyingKey::from_public_key_pem(pem) {
            Ok(key) => TrustedKey::new(name, key),
            Err(e) => Err(SignatureError::InvalidPublicKey {
                key: name,
                source: Box::new(e),
            }),
        }
    }

    fn new(name: String, key: ecdsa::VerifyingKey) -> Result<Self, SignatureError> {
        let der = key
            .to_public_key_der()
            .map_err(|e| SignatureError::EncodeKey {
                key: name.clone(),
                source: Box::new(e),
            })?;
        let fingerprint = sha256_digest(der.as_bytes());
        Ok(TrustedKey {
            name,
            key,
            fingerprint,
        })
    }

    /// Where the key came from (its file path), as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `sha256:<hex>` of the key's DER SubjectPublicKeyInfo, for audit records.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key as PKIX PEM with LF line endings, exactly as cosign writes `cosign.pub`.
    pub fn to_pem(&self) -> Result<String, SignatureError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| SignatureError::EncodeKey {
                key: self.name.clone(),
                source: Box::new(e),
            })
    }

    pub(super) fn verifying_key(&self) -> &ecdsa::VerifyingKey {
        &self.key
    }
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKey")
            .field("name", &self.name)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// An ECDSA P-256 private key. Its `Debug` prints the name only; the scalar is zeroed
/// on drop by `p256`.
pub struct SigningKey {
    name: String,
    key: ecdsa::SigningKey,
}

impl SigningKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate(name: impl Into<String>) -> Result<Self, SignatureError> {
        let key =
            ecdsa::SigningKey::try_generate().map_err(|e| SignatureError::Random(Box::new(e)))?;
        Ok(SigningKey {
            name: name.into(),
            key,
        })
    }

    /// Reads an unencrypted private key from `path`: PKCS#8 (`PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`).
    pub fn load(path: &Path) -> Result<Self, SignatureError> {
        let text = Zeroizing::new(read_key_file(path)?);
        SigningKey::from_pem(path.display().to_string(), &text)
    }

    /// Parses an unencrypted PKCS#8 or SEC1 PEM private key; `name` labels it.
    pub fn from_pem(name: impl Into<String>, pem: &str) -> Result<Self, SignatureError> {
        let name = name.into();
        let label = pem_label(pem).ok_or_else(|| SignatureError::NotPem {
            key: name.clone(),
            expected: "PRIVATE KEY",
        })?;
        let parsed: Result<ecdsa::SigningKey, BoxError> = match label.as_str() {
            "PRIVATE KEY" => ecdsa::SigningKey::from_pkcs8_pem(pem).map_err(|e| Box::new(e).into()),
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_pem(pem)
                .map(ecdsa::SigningKey::from)
                .map_err(|e| Box::new(e).into()),
            l if COSIGN_ENCRYPTED_LABELS.contains(&l) => {
                return Err(SignatureError::EncryptedCosignKey { key: name, label });
            }
            _ => return Err(SignatureError::NotAPrivateKey { key: name, label }),
        };
        match parsed {
            Ok(key) => Ok(SigningKey { name, key }),
            Err(source) => Err(SignatureError::InvalidPrivateKey { key: name, source }),
        }
    }

    /// Where the key came from, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key, named after this key.
    pub fn public_key(&self) -> Result<TrustedKey, SignatureError> {
        TrustedKey::new(self.name.clone(), *self.key.verifying_key())
    }

    /// The key as unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, SignatureError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| SignatureError::EncodeKey {
                key: self.name.clone(),
                source: Box::new(e),
            })
    }

    pub(super) fn ecdsa(&self) -> &ecdsa::SigningKey {
        &self.key
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The two files `berth key generate` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairPaths {
    /// `PREFIX.key`: PKCS#8 PEM, mode 0600.
    pub private_key: PathBuf,
    /// `PREFIX.pub`: PKIX PEM, mode 0644.
    pub public_key: PathBuf,
}

/// Generates a key pair and writes `PREFIX.key` (PKCS#8 PEM, created with mode 0600)
/// and `PREFIX.pub` (PKIX PEM, mode 0644), the names cosign uses.
///
/// Without `force`, an existing file is an error and nothing is written. With `force`,
/// each file is written to a new temporary file with its mode and renamed over the old
/// one, so the old file's mode never carries over and no reader sees half a key.
pub fn write_key_pair(prefix: &Path, force: bool) -> Result<KeyPairPaths, SignatureError> {
    let paths = KeyPairPaths {
        private_key: with_suffix(prefix, ".key"),
        public_key: with_suffix(prefix, ".pub"),
    };
    if !force {
        for path in [&paths.private_key, &paths.public_key] {
            if path.symlink_metadata().is_ok() {
                return Err(SignatureError::KeyExists { path: path.clone() });
            }
        }
    }
    let key = SigningKey::generate(paths.private_key.display().to_string())?;
    let private_pem = key.to_pkcs8_pem()?;
    let public_pem = key.public_key()?.to_pem()?;
    write_file(&paths.private_key, private_pem.as_bytes(), 0o600, force)?;
    if let Err(e) = write_file(&paths.public_key, public_pem.as_bytes(), 0o644, force) {
        // Leave no private key whose public half was never written (unless it replaced
        // an older key, which is gone either way).
        if !force {
            let _ = std::fs::remove_file(&paths.private_key);
        }
        return Err(e);
    }
    Ok(paths)
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `bytes` to a file created with `mode`; never changes the mode afterwards.
fn write_file(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> Result<(), SignatureError> {
    let err = |source| SignatureError::WriteKey {
        path: path.to_path_buf(),
        source,
    };
    if !replace {
        let file = create_new(path, mode).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => SignatureError::KeyExists {
                path: path.to_path_buf(),
            },
            _ => err(e),
        })?;
        return fill(file, bytes).map_err(|e| {
            let _ = std::fs::remove_file(path);
            err(e)
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = create_new(&tmp, mode)
        .and_then(|file| fill(file, bytes))
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| File::open(&dir)?.sync_all());
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

fn create_new(path: &Path, mode: u32) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

fn fill(mut file: File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

/// A key file: a regular file (a FIFO would block, `/dev/zero` never end), at most
/// [`MAX_KEY_FILE`] bytes (a PEM key is well under 1 KiB).
fn read_key_file(path: &Path) -> Result<String, SignatureError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| SignatureError::ReadKey {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(err)?;
    if !file.metadata().map_err(err)?.is_file() {
        return Err(err(std::io::Error::other("not a regular file")));
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(err)?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(err(std::io::Error::other(format!(
            "larger than {MAX_KEY_FILE} bytes: not a key"
        ))));
    }
    Ok(text)
}

/// The largest key file read.
const MAX_KEY_FILE: u64 = 64 << 10;

/// The label of the first PEM block (`-----BEGIN <label>-----`), if any.
fn pem_label(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        line.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .map(str::to_string)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    // cosign.pub of the shared fixture (sigstore-rs test vector).
    const FIXTURE_PUB: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENptdY/l3nB0yqkXLBWkZWQwo6+cu\nOSWS1X9vPavpiQOoTTGC0xX57OojUadxF1cdQmrsiReWg2Wn4FneJfa8xw==\n-----END PUBLIC KEY-----\n";

    #[test]
    fn public_key_round_trips_to_the_same_pem() {
        let key = TrustedKey::from_pem("fixture.pub", FIXTURE_PUB).unwrap();
        assert_eq!(key.to_pem().unwrap(), FIXTURE_PUB);
        assert!(key.fingerprint().starts_with("sha256:"));
        assert_eq!(key.fingerprint().len(), 7 + 64);
    }

    #[test]
    fn public_key_with_crlf_line_endings() {
        let crlf = FIXTURE_PUB.replace('\n', "\r\n");
        let key = TrustedKey::from_pem("crlf.pub", &crlf).unwrap();
        assert_eq!(key.to_pem().unwrap(), FIXTURE_PUB);
    }

    #[test]
    fn public_key_errors_name_the_file_and_the_label() {
        let err = TrustedKey::from_pem("/etc/berth/keys/x.pub", "hello").unwrap_err();
        assert!(err.to_string().contains("/etc/berth/keys/x.pub"), "{err}");
        let key = SigningKey::generate("k").unwrap();
        let private = key.to_pkcs8_pem().unwrap();
        let err = TrustedKey::from_pem("k.key", &private).unwrap_err();
        assert!(
            matches!(&err, SignatureError::NotAPublicKey { label, .. } if label == "PRIVATE KEY"),
            "{err}"
        );
        let garbled = FIXTURE_PUB.replace("MFkwEwYHKoZIzj0CAQYI", "MFkwEwYHKoZIzj0CAQYJ");
        let err = TrustedKey::from_pem("bad.pub", &garbled).unwrap_err();
        assert!(
            matches!(err, SignatureError::InvalidPublicKey { .. }),
            "{err}"
        );
    }

    #[test]
    fn load_names_a_missing_file() {
        let err = TrustedKey::load(Path::new("/nonexistent/release.pub")).unwrap_err();
        assert!(matches!(err, SignatureError::ReadKey { .. }));
        assert!(
            err.to_string().contains("/nonexistent/release.pub"),
            "{err}"
        );
    }

    #[test]
    fn private_key_round_trips_through_pkcs8() {
        let key = SigningKey::generate("a").unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{}",
            pem.as_str()
        );
        let back = SigningKey::from_pem("a", &pem).unwrap();
        assert_eq!(
            back.public_key().unwrap().to_pem().unwrap(),
            key.public_key().unwrap().to_pem().unwrap()
        );
        assert!(!format!("{key:?}").contains(&pem[30..60]));
    }

    #[test]
    fn cosign_encrypted_keys_are_refused_with_advice() {
        let pem = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\neyJrZGYiOnt9fQ==\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
        let err = SigningKey::from_pem("cosign.key", pem).unwrap_err();
        assert!(matches!(err, SignatureError::EncryptedCosignKey { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("cosign.key") && msg.contains("berth key generate"),
            "{msg}"
        );
        assert!(msg.contains("cosign import-key-pair"), "{msg}");
    }

    #[test]
    fn a_public_key_is_not_a_private_key() {
        let err = SigningKey::from_pem("x.pub", FIXTURE_PUB).unwrap_err();
        assert!(
            matches!(err, SignatureError::NotAPrivateKey { .. }),
            "{err}"
        );
    }

    #[test]
    fn write_key_pair_modes_and_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("release");
        let paths = write_key_pair(&prefix, false).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&paths.private_key), 0o600);
        assert_eq!(mode(&paths.public_key) & 0o600, 0o600);
        let before = std::fs::read(&paths.private_key).unwrap();

        let err = write_key_pair(&prefix, false).unwrap_err();
        assert!(matches!(err, SignatureError::KeyExists { .. }), "{err}");
        assert_eq!(std::fs::read(&paths.private_key).unwrap(), before);

        // A forced rewrite recreates the file: a loosened mode does not carry over.
        std::fs::set_permissions(&paths.private_key, std::fs::Permissions::from_mode(0o644))
            .unwrap();
        write_key_pair(&prefix, true).unwrap();
        assert_ne!(std::fs::read(&paths.private_key).unwrap(), before);
        assert_eq!(mode(&paths.private_key), 0o600);
        let key = SigningKey::load(&paths.private_key).unwrap();
        let public = TrustedKey::load(&paths.public_key).unwrap();
        assert_eq!(
            key.public_key().unwrap().to_pem().unwrap(),
            public.to_pem().unwrap()
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
