//! The spec hash and instance ids (DESIGN.md §7).
//!
//! A container is recreated exactly when its hash changes, as kubelet does with its
//! container hash. The hash covers everything that shapes the running instance:
//! - the normalised container spec: the model's serde JSON (defaults applied, maps
//!   ordered, source locations skipped), so reordering or reformatting the TOML
//!   changes nothing while any value change does;
//! - the resolved image digest (a moved tag is a new instance);
//! - the content of the networks, volumes and secrets the container references; for a
//!   secret, the *ciphertext* bytes from the repository — a re-encrypted or changed
//!   secret recreates the container, and no plaintext ever reaches a hash;
//! - the bytes of a seccomp profile file, which the model names but does not contain.
//!
//! The input is serialised as one JSON document with a version tag, then SHA-256. The
//! instance id is `<name>-<first 8 hex>`; two instances of one container can run side
//! by side during a `start-first` update.

use serde::Serialize;
use sha2::{Digest, Sha256};

use berth_spec::{Container, Network, Secret, Volume};

/// Bumped when the hashed document changes shape, which recreates every container once.
const HASH_FORMAT: u32 = 1;

/// Hex digits of the hash that go into an instance id.
const INSTANCE_HEX: usize = 8;

/// A referenced secret: its definition and its encrypted bytes.
#[derive(Debug, Clone, Copy)]
pub struct SecretInput<'a> {
    pub secret: &'a Secret,
    /// The age ciphertext as read from the repository, never the plaintext.
    pub ciphertext: &'a [u8],
}

/// Everything the hash covers. Referenced objects may be given in any order.
#[derive(Debug, Clone, Copy)]
pub struct HashInput<'a> {
    pub container: &'a Container,
    /// The manifest digest the container runs (`sha256:<hex>`).
    pub image_digest: &'a str,
    pub networks: &'a [&'a Network],
    pub volumes: &'a [&'a Volume],
    pub secrets: &'a [SecretInput<'a>],
    /// The seccomp profile file's bytes, for `seccomp = "<file>"`.
    pub seccomp_profile: Option<&'a [u8]>,
}

/// A spec hash: 64 lowercase hex digits of SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SpecHash(String);

impl SpecHash {
    /// Wraps a hash a test spells out; `None` unless it is 64 lowercase hex digits.
    #[cfg(test)]
    pub fn parse(hex: &str) -> Option<SpecHash> {
        let ok = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| SpecHash(hex.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The instance id of container `name` at this hash: `<name>-<first 8 hex>`.
    pub fn instance_id(&self, name: &str) -> String {
        format!("{name}-{}", &self.0[..INSTANCE_HEX])
    }
}

impl std::fmt::Display for SpecHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Serialize)]
struct HashedSecret<'a> {
    #[serde(flatten)]
    secret: &'a Secret,
    ciphertext_sha256: String,
}

#[derive(Serialize)]
struct Hashed<'a> {
    format: u32,
    container: &'a Container,
    image_digest: &'a str,
    networks: Vec<&'a Network>,
    volumes: Vec<&'a Volume>,
    secrets: Vec<HashedSecret<'a>>,
    seccomp_profile_sha256: Option<String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Computes the spec hash.
pub fn spec_hash(input: &HashInput<'_>) -> Result<SpecHash, serde_json::Error> {
    let mut networks = input.networks.to_vec();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    let mut volumes = input.volumes.to_vec();
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut secrets: Vec<HashedSecret<'_>> = input
        .secrets
        .iter()
        .map(|s| HashedSecret {
            secret: s.secret,
            ciphertext_sha256: sha256_hex(s.ciphertext),
        })
        .collect();
    secrets.sort_by(|a, b| a.secret.name.cmp(&b.secret.name));
    let doc = Hashed {
        format: HASH_FORMAT,
        container: input.container,
        image_digest: input.image_digest,
        networks,
        volumes,
        secrets,
        seccomp_profile_sha256: input.seccomp_profile.map(sha256_hex),
    };
    Ok(SpecHash(sha256_hex(&serde_json::to_vec(&doc)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_spec::{DesiredState, SourceFile, Tree};

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    fn state(text: &str) -> DesiredState {
        let mut tree = Tree::from_sources(vec![SourceFile {
            path: "app.toml".into(),
            text: text.into(),
        }]);
        tree.files.insert("secrets/pw.age".into());
        let checked = berth_spec::check(&tree, None);
        assert!(checked.is_ok(), "{:?}", checked.errors);
        checked.state
    }

    const SPEC: &str = r#"
[network.front]
subnet = "10.89.1.0/24"
[volume.data]
[secret.pw]
file = "secrets/pw.age"
[container.web]
image = "registry.example.com/web@sha256:0000000000000000000000000000000000000000000000000000000000000001"
user = "10001:10001"
env = { A = "1", B = "2" }
networks = ["front"]
cap_drop = ["ALL"]
[[container.web.mounts]]
volume = "data"
target = "/data"
[[container.web.secrets]]
name = "pw"
target = "pw"
"#;

    // The same spec with keys, tables and env entries in another order.
    const REORDERED: &str = r#"
[container.web]
cap_drop = ["ALL"]
networks = ["front"]
env = { B = "2", A = "1" }
user = "10001:10001"
image = "registry.example.com/web@sha256:0000000000000000000000000000000000000000000000000000000000000001"
[[container.web.mounts]]
target = "/data"
volume = "data"
[[container.web.secrets]]
target = "pw"
name = "pw"
[secret.pw]
file = "secrets/pw.age"
[volume.data]
[network.front]
subnet = "10.89.1.0/24"
"#;

    fn hash_of(text: &str, ciphertext: &[u8]) -> SpecHash {
        let s = state(text);
        let c = &s.containers["web"];
        let networks: Vec<&Network> = s.networks.values().collect();
        let volumes: Vec<&Volume> = s.volumes.values().collect();
        let secrets = [SecretInput {
            secret: &s.secrets["pw"],
            ciphertext,
        }];
        spec_hash(&HashInput {
            container: c,
            image_digest: DIGEST,
            networks: &networks,
            volumes: &volumes,
            secrets: &secrets,
            seccomp_profile: None,
        })
        .unwrap()
    }

    #[test]
    fn stable_under_toml_key_order() {
        assert_eq!(hash_of(SPEC, b"age-1"), hash_of(REORDERED, b"age-1"));
    }

    #[test]
    fn changes_with_one_env_value() {
        let changed = SPEC.replace(r#"B = "2""#, r#"B = "3""#);
        assert_ne!(hash_of(SPEC, b"age-1"), hash_of(&changed, b"age-1"));
    }

    #[test]
    fn changes_with_secret_ciphertext() {
        assert_ne!(hash_of(SPEC, b"age-1"), hash_of(SPEC, b"age-2"));
    }

    #[test]
    fn changes_with_network_content() {
        let changed = SPEC.replace("10.89.1.0/24", "10.89.2.0/24");
        assert_ne!(hash_of(SPEC, b"age-1"), hash_of(&changed, b"age-1"));
    }

    #[test]
    fn instance_id_and_parse() {
        let h = hash_of(SPEC, b"age-1");
        assert_eq!(h.as_str().len(), 64);
        let id = h.instance_id("web");
        assert_eq!(id, format!("web-{}", &h.as_str()[..8]));
        assert_eq!(SpecHash::parse(h.as_str()), Some(h.clone()));
        assert_eq!(SpecHash::parse("ABC"), None);
        assert_eq!(SpecHash::parse(&h.as_str().to_uppercase()), None);
    }
}
