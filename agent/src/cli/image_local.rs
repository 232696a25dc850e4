//! The image commands that work from the local store: `berth image unpack` and
//! `berth image verify`, the signature gate of `berth image pull`, and snapshot pruning.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use berth_policy::policy::Severity;
use berth_policy::rule::Rule;
use berth_spec::node::PolicyMode;
use clap::Args;

use super::Format;
use super::config::{self, Loaded};
use super::image::{Failure, async_runtime, find, parse_ref, registries_of};
use super::image_output as out;
use super::{EXIT_FAILED, EXIT_FINDINGS};
use crate::image::prepare::{self, SignatureCheck};
use crate::image::registry::Client;
use crate::image::signature::{self, BundleError, TrustedKey, exchange};
use crate::image::snapshot::SnapshotStore;
use crate::image::store::Store;
use crate::image::store::records::ImageRecord;
use crate::image::usage;
use crate::util::error_chain;

#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// Image reference (as pulled) or `sha256:` digest
    pub reference: String,
    /// Directory that becomes the image's root filesystem (created if missing)
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Image reference (as pulled) or `sha256:` digest
    #[arg(required_unless_present = "bundle", conflicts_with = "bundle")]
    pub reference: Option<String>,
    /// A trusted public key (PEM); repeatable [default: the node's `policy.trusted_keys`]
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    /// Fetch the signature from the registry instead of the store
    #[arg(long)]
    pub remote: bool,
    /// Verify a Sigstore bundle file offline (no registry, no store) as a signature of --digest
    #[arg(
        long,
        value_name = "FILE",
        requires = "digest",
        conflicts_with = "remote"
    )]
    pub bundle: Option<PathBuf>,
    /// The manifest digest (`sha256:…`) the --bundle must sign
    #[arg(long, value_name = "DIGEST", requires = "bundle", value_parser = digest_arg)]
    pub digest: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

fn not_pulled(reference: &str, state_dir: &Path) -> Failure {
    Failure(
        EXIT_FAILED,
        anyhow!(
            "image {reference} is not in the store under {}: pull it first with `berth image pull {reference}`",
            state_dir.display()
        ),
    )
}

fn one(store: &Store, reference: &str, state_dir: &Path) -> Result<ImageRecord, Failure> {
    find(store, reference)?
        .into_iter()
        .next()
        .ok_or_else(|| not_pulled(reference, state_dir))
}

pub fn unpack(a: &UnpackArgs, state_dir: &Path) -> Result<(), Failure> {
    let store = Store::open(state_dir)?;
    let record = one(&store, &a.reference, state_dir)?;
    prepare::flatten(&store, &record, &a.dir).map_err(|e| {
        let code = if e.is_integrity() {
            EXIT_FINDINGS
        } else {
            EXIT_FAILED
        };
        Failure(code, anyhow!(e))
    })?;
    println!(
        "unpacked {} ({} layers) into {}",
        record.reference,
        record.layers.len(),
        a.dir.display()
    );
    Ok(())
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<TrustedKey>, Failure> {
    paths
        .iter()
        .map(|p| TrustedKey::load(p).map_err(|e| Failure(EXIT_FAILED, anyhow!(e))))
        .collect()
}

pub fn verify(a: &VerifyArgs, loaded: &Loaded) -> Result<(), Failure> {
    let state_dir = loaded.config.runtime.state_dir.as_path();
    let key_paths = if a.keys.is_empty() {
        loaded.config.policy.trusted_keys.clone()
    } else {
        a.keys.clone()
    };
    if key_paths.is_empty() {
        return Err(Failure(
            super::EXIT_USAGE,
            anyhow!(
                "no key to verify with: pass --key PUB or set `policy.trusted_keys` in the node configuration"
            ),
        ));
    }
    let keys = load_keys(&key_paths)?;
    let (Some(reference), None) = (&a.reference, &a.bundle) else {
        return verify_bundle_file(a, &keys);
    };
    let client = Client::new(registries_of(&loaded.config))?;
    let rt = async_runtime()?;
    let exchanged = |e: exchange::ExchangeError| {
        let code = if e.is_integrity() {
            EXIT_FINDINGS
        } else {
            EXIT_FAILED
        };
        Failure(code, anyhow!(e))
    };
    let (reference, digest, located) = if a.remote {
        let r = parse_ref(reference)?;
        let (digest, located) = rt
            .block_on(exchange::verify_remote(&client, &r, &keys))
            .map_err(exchanged)?;
        (r.to_string(), digest.as_str().to_string(), located)
    } else {
        let store = Store::open(state_dir)?;
        let record = one(&store, reference, state_dir)?;
        let located = rt
            .block_on(exchange::verify_pulled(&client, &store, &record, &keys))
            .map_err(|e| {
                let f = exchanged(e);
                Failure(
                    f.0,
                    f.1.context(format!(
                        "the local store has no signature of {}, and fetching it from the registry failed",
                        record.reference
                    )),
                )
            })?;
        (
            record.reference.clone(),
            record.digest.as_str().to_string(),
            located,
        )
    };
    match a.format {
        Format::Json => {
            let mut signature = check_json(Some(&located.check));
            signature["looked"] = serde_json::json!(located.looked.place());
            if let Some((by, at)) = located.looked.fetched() {
                signature["fetched"] = serde_json::json!({"by": by, "at": at});
            }
            out::json(&serde_json::json!({
                "reference": reference, "digest": digest, "signature": signature,
            }))?
        }
        Format::Text => {
            let how = match located.check {
                SignatureCheck::Verified(_) => "found",
                SignatureCheck::Failed(_) => "looked",
            };
            println!(
                "{reference} ({digest}): {}; {how} {}",
                check_text(&located.check),
                located.looked
            );
        }
    }
    match located.check {
        SignatureCheck::Verified(_) => Ok(()),
        SignatureCheck::Failed(_) => Err(Failure(
            EXIT_FINDINGS,
            anyhow!(
                "the signature of {reference} does not verify; looked {}{}",
                located.looked,
                match located.looked {
                    exchange::Looked::Store { .. } => " (`--remote` checks the registry's)",
                    exchange::Looked::Registry { .. } => "",
                }
            ),
        )),
    }
}

fn digest_arg(s: &str) -> Result<String, berth_spec::reference::ReferenceError> {
    berth_spec::reference::validate_digest(s).map(|()| s.to_string())
}

/// `berth image verify --bundle FILE --digest DIGEST`: one bundle file, no registry,
/// no store. Exit 0 when it verifies, 1 when not, 3 when the file cannot be read.
fn verify_bundle_file(a: &VerifyArgs, keys: &[TrustedKey]) -> Result<(), Failure> {
    let (Some(path), Some(digest)) = (&a.bundle, &a.digest) else {
        return Err(Failure(
            super::EXIT_USAGE,
            anyhow!("--bundle FILE needs --digest DIGEST"),
        ));
    };
    let file = path.display().to_string();
    let outcome = match signature::read_bundle_file(path) {
        Err(e @ BundleError::Read { .. }) => return Err(Failure(EXIT_FAILED, anyhow!(e))),
        read => read.and_then(|bytes| signature::verify_bundle(&bytes, digest, keys)),
    };
    match a.format {
        Format::Json => out::json(&match &outcome {
            Ok(v) => serde_json::json!({
                "bundle": file, "digest": digest, "status": "verified",
                "key": v.key, "key_fingerprint": v.key_fingerprint, "unchecked": v.unchecked,
            }),
            Err(e) => serde_json::json!({
                "bundle": file, "digest": digest, "status": "failed",
                "reason": error_chain(e),
            }),
        })?,
        Format::Text => match &outcome {
            Ok(v) => {
                println!("{file}: verified by {} for {digest}", v.key);
                for item in &v.unchecked {
                    println!(
                        "note: the bundle's {item} is not checked (keyed bundles are judged by their key alone)"
                    );
                }
            }
            Err(e) => println!("{file}: not verified for {digest}: {}", error_chain(e)),
        },
    }
    match outcome {
        Ok(_) => Ok(()),
        Err(_) => Err(Failure(
            EXIT_FINDINGS,
            anyhow!("the bundle {file} does not verify for {digest}"),
        )),
    }
}

/// At pull time: with trusted keys set, the image's signature is checked by `verify`
/// (from the store, and again from the registry when that does not verify). When the node's policy has `image-signature` at `error` in enforce mode, an
/// image that does not verify fails the pull before anything is unpacked (exit 1);
/// otherwise the outcome is reported. Without trusted keys nothing is checked.
pub fn signature_gate(
    record: &ImageRecord,
    loaded: &Loaded,
    verify: impl FnOnce(&[TrustedKey]) -> SignatureCheck,
) -> Result<Option<SignatureCheck>, Failure> {
    if loaded.config.policy.trusted_keys.is_empty() {
        return Ok(None);
    }
    let np = config::node_policy(loaded, None).map_err(|e| Failure(EXIT_FAILED, anyhow!(e)))?;
    let keys = load_keys(&loaded.config.policy.trusted_keys)?;
    let check = verify(&keys);
    let enforced = np.policy.rule(Rule::ImageSignature).severity == Severity::Error
        && np.mode == PolicyMode::Enforce;
    if enforced {
        prepare::require_signature(record, &check)
            .map_err(|e| Failure(EXIT_FINDINGS, anyhow!(e)))?;
    } else if let SignatureCheck::Failed(reason) = &check {
        tracing::warn!(image = %record.reference, "signature does not verify (allowed by the node's policy): {reason}");
    }
    Ok(Some(check))
}

pub fn check_text(c: &SignatureCheck) -> String {
    match c {
        SignatureCheck::Verified(v) if v.unchecked.is_empty() => {
            format!("signature verified by {}", v.join(", "))
        }
        SignatureCheck::Verified(v) => format!(
            "signature verified by {} (judged by the key alone; not checked yet: the bundle's {})",
            v.join(", "),
            v.unchecked.join(", "),
        ),
        SignatureCheck::Failed(reason) => format!("signature does not verify: {reason}"),
    }
}

pub fn check_json(c: Option<&SignatureCheck>) -> serde_json::Value {
    match c {
        None => serde_json::json!({"status": "not-checked"}),
        Some(SignatureCheck::Verified(v)) if v.unchecked.is_empty() => {
            serde_json::json!({"status": "verified", "keys": v})
        }
        Some(SignatureCheck::Verified(v)) => {
            serde_json::json!({"status": "verified", "keys": v, "unchecked": v.unchecked})
        }
        Some(SignatureCheck::Failed(reason)) => {
            serde_json::json!({"status": "failed", "reason": reason})
        }
    }
}

/// Removes the snapshots no stored image and no container uses (children before
/// parents) and what crashed unpacks left; returns the removed chain IDs.
pub fn prune_snapshots(store: &Store, state_dir: &Path) -> Result<Vec<String>, Failure> {
    let snapshots = SnapshotStore::open(state_dir)?;
    let containers = crate::runtime::record::read_records(state_dir)?;
    let keep = usage::chains_in_use(&store.records()?, &containers)
        .map_err(|e| Failure(EXIT_FAILED, anyhow!(e)))?;
    let removed = usage::remove_snapshots(&snapshots, &keep)?;
    snapshots.cleanup()?;
    Ok(removed
        .into_iter()
        .map(|s| s.chain_id.as_str().to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::prepare::Verifiers;

    #[test]
    fn a_bundle_judged_by_its_key_alone_says_so() {
        let plain = SignatureCheck::Verified(Verifiers {
            keys: vec!["release.pub".into()],
            unchecked: Vec::new(),
            ..Verifiers::default()
        });
        assert_eq!(check_text(&plain), "signature verified by release.pub");
        assert_eq!(
            check_json(Some(&plain)),
            serde_json::json!({"status": "verified", "keys": ["release.pub"]})
        );
        let logged = SignatureCheck::Verified(Verifiers {
            keys: vec!["release.pub".into()],
            unchecked: vec!["timestamp".into(), "transparency-log entry".into()],
            ..Verifiers::default()
        });
        assert_eq!(
            check_text(&logged),
            "signature verified by release.pub (judged by the key alone; not checked yet: \
             the bundle's timestamp, transparency-log entry)"
        );
        assert_eq!(
            check_json(Some(&logged))["unchecked"],
            serde_json::json!(["timestamp", "transparency-log entry"])
        );
    }
}
