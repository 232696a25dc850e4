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
use crate::image::signature::keyless::{IdentityMatcher, KeylessError, rfc3339};
use crate::image::signature::{self, BundleError, Trust, TrustError, Voucher, exchange};
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
    /// A Sigstore trusted root (trusted_root.json) for keyless signatures [default: the node's `policy.trusted_root`]
    #[arg(long = "trusted-root", value_name = "FILE")]
    pub trusted_root: Option<PathBuf>,
    /// A trusted keyless identity: OIDC issuer and exact subject, split at the first `=` (an issuer holding `=`: --certificate-oidc-issuer and --certificate-identity); repeatable [default: the node's `policy.trusted_identities`]
    #[arg(long = "identity", value_name = "ISSUER=SUBJECT")]
    pub identities: Vec<String>,
    /// A trusted keyless identity whose subject the regular expression matches whole (berth anchors it, cosign does not); repeatable
    #[arg(long = "identity-regex", value_name = "ISSUER=REGEX")]
    pub identity_regexes: Vec<String>,
    /// cosign's spelling: an exact subject, trusted with --certificate-oidc-issuer
    #[arg(long = "certificate-identity", value_name = "SUBJECT", hide = true)]
    pub cosign_identities: Vec<String>,
    /// cosign's spelling: a subject pattern (anchored here), trusted with --certificate-oidc-issuer
    #[arg(
        long = "certificate-identity-regexp",
        value_name = "REGEX",
        hide = true
    )]
    pub cosign_identity_regexes: Vec<String>,
    /// cosign's spelling: the OIDC issuer of --certificate-identity(-regexp)
    #[arg(long = "certificate-oidc-issuer", value_name = "ISSUER", hide = true)]
    pub cosign_issuer: Option<String>,
    /// cosign's issuer pattern: not supported (refused with a hint)
    #[arg(
        long = "certificate-oidc-issuer-regexp",
        value_name = "REGEX",
        hide = true
    )]
    pub cosign_issuer_regex: Option<String>,
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

fn trust_error(e: TrustError) -> Failure {
    let code = match e {
        TrustError::IdentitiesWithoutRoot | TrustError::Identity { .. } => super::EXIT_USAGE,
        _ => EXIT_FAILED,
    };
    Failure(code, anyhow!(e))
}

/// `ISSUER=SUBJECT` of `--identity` / `--identity-regex`, split at the first `=`: an
/// OIDC issuer is a URL without query or fragment (so without `=`), a subject may hold
/// `=`. An issuer read with a `?` or `#` is refused: it was cut at a `=` of its query
/// (cosign's flags take such an issuer whole).
fn identity_arg(text: &str, regex: bool) -> Result<IdentityMatcher, Failure> {
    let flag = if regex {
        "--identity-regex"
    } else {
        "--identity"
    };
    let Some((issuer, subject)) = text.split_once('=') else {
        return Err(Failure(
            super::EXIT_USAGE,
            anyhow!("{flag} {text}: expected ISSUER=SUBJECT"),
        ));
    };
    let usage = |why: String| {
        Failure(
            super::EXIT_USAGE,
            anyhow!("{flag} {text}: read as issuer `{issuer}` and subject `{subject}`: {why}"),
        )
    };
    if issuer.contains(['?', '#']) {
        return Err(usage(
            "an OIDC issuer has no query or fragment, so ISSUER=SUBJECT is split at the first `=`; \
             give an issuer holding `=` with --certificate-oidc-issuer ISSUER and --certificate-identity SUBJECT"
                .into(),
        ));
    }
    matcher(issuer, subject, regex, usage)
}

/// The identity `issuer` and `subject` (a pattern when `regex`); `usage` makes the
/// error of a flag.
fn matcher(
    issuer: &str,
    subject: &str,
    regex: bool,
    usage: impl Fn(String) -> Failure,
) -> Result<IdentityMatcher, Failure> {
    if !issuer.starts_with("https://") || subject.is_empty() {
        return Err(usage(
            "expected an https:// OIDC issuer and a non-empty subject".into(),
        ));
    }
    if regex {
        IdentityMatcher::regex(issuer, subject).map_err(|e| usage(error_chain(&e)))
    } else {
        Ok(IdentityMatcher::exact(issuer, subject))
    }
}

/// The identities of cosign's flags: each --certificate-identity(-regexp) with the one
/// --certificate-oidc-issuer, taken whole (an issuer may hold `=`). What has no berth
/// equivalent is a usage error naming berth's flag.
fn cosign_identities(a: &VerifyArgs) -> Result<Vec<IdentityMatcher>, Failure> {
    let usage = |why: &str| Failure(super::EXIT_USAGE, anyhow!("{why}"));
    if a.cosign_issuer_regex.is_some() {
        return Err(usage(
            "--certificate-oidc-issuer-regexp: berth compares the issuer exactly; give it with --identity-regex ISSUER=REGEX (one per issuer)",
        ));
    }
    let subjects = a.cosign_identities.len() + a.cosign_identity_regexes.len();
    let issuer = match (&a.cosign_issuer, subjects) {
        (None, 0) => return Ok(Vec::new()),
        (None, _) => {
            return Err(usage(
                "--certificate-identity(-regexp) needs --certificate-oidc-issuer ISSUER (berth's spelling: --identity ISSUER=SUBJECT, --identity-regex ISSUER=REGEX)",
            ));
        }
        (Some(_), 0) => {
            return Err(usage(
                "--certificate-oidc-issuer needs --certificate-identity or --certificate-identity-regexp (berth's spelling: --identity ISSUER=SUBJECT)",
            ));
        }
        (Some(issuer), _) => issuer,
    };
    let flagged = |flag: &'static str, subject: &str| {
        let shown = format!("--certificate-oidc-issuer {issuer} {flag} {subject}");
        move |why: String| Failure(super::EXIT_USAGE, anyhow!("{shown}: {why}"))
    };
    let exact = a
        .cosign_identities
        .iter()
        .map(|s| matcher(issuer, s, false, flagged("--certificate-identity", s)));
    let regex = a
        .cosign_identity_regexes
        .iter()
        .map(|s| matcher(issuer, s, true, flagged("--certificate-identity-regexp", s)));
    exact.chain(regex).collect()
}

/// The trust of `berth image verify`: each of --key, --trusted-root and the
/// --identity flags replaces the node's setting it names.
fn trust_of(a: &VerifyArgs, loaded: &Loaded) -> Result<Trust, Failure> {
    let policy = &loaded.config.policy;
    let keys = if a.keys.is_empty() {
        &policy.trusted_keys
    } else {
        &a.keys
    };
    let root = a.trusted_root.as_deref().or(policy.trusted_root.as_deref());
    let flagged = a.identities.is_empty()
        && a.identity_regexes.is_empty()
        && a.cosign_identities.is_empty()
        && a.cosign_identity_regexes.is_empty();
    let identities = if flagged && a.cosign_issuer.is_none() {
        policy
            .trusted_identities
            .iter()
            .enumerate()
            .map(|(index, id)| {
                IdentityMatcher::from_config(id)
                    .map_err(|source| trust_error(TrustError::Identity { index, source }))
            })
            .collect::<Result<Vec<_>, _>>()?
    } else {
        let exact = a.identities.iter().map(|i| identity_arg(i, false));
        let regex = a.identity_regexes.iter().map(|i| identity_arg(i, true));
        exact.chain(regex).collect::<Result<Vec<_>, _>>()?
    };
    let identities = [identities, cosign_identities(a)?].concat();
    if keys.is_empty() && (root.is_none() || identities.is_empty()) {
        return Err(Failure(
            super::EXIT_USAGE,
            anyhow!(
                "nothing to verify with: pass --key PUB (or --trusted-root FILE with --identity ISSUER=SUBJECT), \
                 or set `policy.trusted_keys` (or `policy.trusted_root` with `policy.trusted_identities`) in the node configuration"
            ),
        ));
    }
    Trust::with(keys, root, identities).map_err(trust_error)
}

pub fn verify(a: &VerifyArgs, loaded: &Loaded) -> Result<(), Failure> {
    let state_dir = loaded.config.runtime.state_dir.as_path();
    let trust = trust_of(a, loaded)?;
    let (Some(reference), None) = (&a.reference, &a.bundle) else {
        return verify_bundle_file(a, &trust);
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
            .block_on(exchange::verify_remote(&client, &r, &trust))
            .map_err(exchanged)?;
        (r.to_string(), digest.as_str().to_string(), located)
    } else {
        let store = Store::open(state_dir)?;
        let record = one(&store, reference, state_dir)?;
        let located = rt
            .block_on(exchange::verify_pulled(&client, &store, &record, &trust))
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
fn verify_bundle_file(a: &VerifyArgs, trust: &Trust) -> Result<(), Failure> {
    let (Some(path), Some(digest)) = (&a.bundle, &a.digest) else {
        return Err(Failure(
            super::EXIT_USAGE,
            anyhow!("--bundle FILE needs --digest DIGEST"),
        ));
    };
    let file = path.display().to_string();
    let outcome = match signature::read_bundle_file(path) {
        Err(e @ BundleError::Read { .. }) => return Err(Failure(EXIT_FAILED, anyhow!(e))),
        read => read.and_then(|bytes| signature::verify_bundle(&bytes, digest, trust)),
    };
    match a.format {
        Format::Json => out::json(&match &outcome {
            Ok(v) => {
                let mut j = serde_json::json!({
                    "bundle": file, "digest": digest, "status": "verified", "unchecked": v.unchecked,
                });
                match &v.voucher {
                    Voucher::Key { name, fingerprint } => {
                        j["key"] = serde_json::json!(name);
                        j["key_fingerprint"] = serde_json::json!(fingerprint);
                    }
                    Voucher::Identity {
                        issuer, subject, ..
                    } => {
                        j["identity"] = serde_json::json!({"issuer": issuer, "subject": subject});
                    }
                }
                if let Some(index) = v.log_index {
                    j["log_index"] = serde_json::json!(index);
                }
                if !v.signed_at.is_empty() {
                    j["signed_at"] = serde_json::json!(
                        v.signed_at.iter().map(|t| rfc3339(*t)).collect::<Vec<_>>()
                    );
                }
                j
            }
            Err(e) => {
                let mut j = serde_json::json!({
                    "bundle": file, "digest": digest, "status": "failed",
                    "reason": error_chain(e),
                });
                // An identity that is not trusted: the one found and those expected.
                if let BundleError::KeylessNotVerified(k) = e
                    && let KeylessError::Identity {
                        issuer,
                        subjects,
                        expected,
                    } = &**k
                {
                    j["identity_found"] =
                        serde_json::json!({"issuer": issuer, "subjects": subjects});
                    j["identities_expected"] = serde_json::json!(expected);
                }
                j
            }
        })?,
        Format::Text => match &outcome {
            Ok(v) => {
                let by = match &v.voucher {
                    Voucher::Key { name, .. } => name.clone(),
                    identity => identity.to_string(),
                };
                println!("{file}: verified by {by} for {digest}");
                if let (Voucher::Key { .. }, Some(index)) = (&v.voucher, v.log_index) {
                    println!("log entry {index} and timestamps verified");
                }
                for item in &v.unchecked {
                    println!(
                        "note: the bundle's {item} is not checked (keyed bundles are judged by their key alone)"
                    );
                }
            }
            Err(e) => println!(
                "{file}: not verified for {digest}: {}",
                berth_spec::diag::printable(&error_chain(e))
            ),
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

/// At pull time: with trusted keys (or a trusted root and identities) set, the image's signature is checked by `verify`
/// (from the store, and again from the registry when that does not verify). When the node's policy has `image-signature` at `error` in enforce mode, an
/// image that does not verify fails the pull before anything is unpacked (exit 1);
/// otherwise the outcome is reported. With nothing to verify with, nothing is checked.
pub fn signature_gate(
    record: &ImageRecord,
    loaded: &Loaded,
    verify: impl FnOnce(&Trust) -> SignatureCheck,
) -> Result<Option<SignatureCheck>, Failure> {
    let trust = Trust::from_policy(&loaded.config.policy).map_err(trust_error)?;
    if trust.is_empty() {
        return Ok(None);
    }
    let np = config::node_policy(loaded, None).map_err(|e| Failure(EXIT_FAILED, anyhow!(e)))?;
    let check = verify(&trust);
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

/// Who verified: the key names, and each keyless identity with its issuer and log index.
fn verified_by(v: &prepare::Verifiers) -> String {
    if !v
        .vouchers
        .iter()
        .any(|x| matches!(x, Voucher::Identity { .. }))
    {
        return v.join(", ");
    }
    v.vouchers
        .iter()
        .map(|x| match x {
            Voucher::Key { name, .. } => name.clone(),
            identity => identity.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The keyless identities that verified, for JSON.
fn identities(v: &prepare::Verifiers) -> Vec<&Voucher> {
    v.vouchers
        .iter()
        .filter(|x| matches!(x, Voucher::Identity { .. }))
        .collect()
}

pub fn check_text(c: &SignatureCheck) -> String {
    match c {
        SignatureCheck::Verified(v) if v.unchecked.is_empty() => {
            format!("signature verified by {}", verified_by(v))
        }
        SignatureCheck::Verified(v) => format!(
            "signature verified by {} (judged by the key alone; not checked yet: the bundle's {})",
            verified_by(v),
            v.unchecked.join(", "),
        ),
        SignatureCheck::Failed(reason) => format!("signature does not verify: {reason}"),
    }
}

pub fn check_json(c: Option<&SignatureCheck>) -> serde_json::Value {
    let mut json = check_json_keys(c);
    if let Some(SignatureCheck::Verified(v)) = c {
        let ids = identities(v);
        if !ids.is_empty() {
            json["identities"] = serde_json::json!(ids);
        }
    }
    json
}

fn check_json_keys(c: Option<&SignatureCheck>) -> serde_json::Value {
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
    use clap::Parser;

    /// `berth image verify ARGS`'s arguments.
    fn verify_args(args: &[&str]) -> VerifyArgs {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            verify: VerifyArgs,
        }
        Cli::try_parse_from([&["verify"], args].concat())
            .unwrap()
            .verify
    }

    /// cosign's flags give the issuer whole, even with a `=` in it; --identity splits
    /// at the first `=` and refuses an issuer it cut in its query, naming both parts.
    #[test]
    fn an_issuer_holding_an_equals_sign_is_taken_whole_or_refused() {
        let issuer = "https://login.example/t?tenant=a";
        let ids = cosign_identities(&verify_args(&[
            "--bundle",
            "b.json",
            "--digest",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "--certificate-oidc-issuer",
            issuer,
            "--certificate-identity",
            "x",
            "--certificate-identity-regexp",
            "y=.*",
        ]))
        .map_err(|f| f.1)
        .unwrap();
        assert_eq!(ids.len(), 2);
        assert!(ids[0].matches(issuer, "x"));
        assert!(!ids[0].matches("https://login.example/t?tenant", "a=x"));
        assert!(ids[1].matches(issuer, "y=1"));
        let Err(Failure(code, e)) = identity_arg(&format!("{issuer}=x"), false) else {
            panic!("an issuer cut in its query must be refused");
        };
        assert_eq!(code, crate::cli::EXIT_USAGE);
        let e = e.to_string();
        assert!(
            e.contains("issuer `https://login.example/t?tenant`")
                && e.contains("subject `a=x`")
                && e.contains("--certificate-oidc-issuer"),
            "{e}"
        );
        // A subject holding `=` is the subject's.
        let id = identity_arg("https://idp.example=user=a", false)
            .map_err(|f| f.1)
            .unwrap();
        assert!(id.matches("https://idp.example", "user=a"));
        let Err(Failure(_, e)) = identity_arg("http://idp=s", false) else {
            panic!("http issuer");
        };
        assert!(
            e.to_string()
                .contains("issuer `http://idp` and subject `s`"),
            "{e}"
        );
    }

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

    #[test]
    fn a_keyless_identity_is_shown_with_its_issuer_and_log_index() {
        let identity = Voucher::Identity {
            issuer: "https://token.actions.githubusercontent.com".into(),
            subject: "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1"
                .into(),
            log_index: Some(42),
        };
        let key = Voucher::Key {
            name: "release.pub".into(),
            fingerprint: "sha256:00".into(),
        };
        let v = SignatureCheck::Verified(Verifiers {
            keys: vec![identity.name(), key.name()],
            vouchers: vec![key, identity],
            unchecked: Vec::new(),
        });
        assert_eq!(
            check_text(&v),
            "signature verified by release.pub, identity \
             https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1 \
             (issuer https://token.actions.githubusercontent.com, log index 42)"
        );
        let j = check_json(Some(&v));
        assert_eq!(j["identities"][0]["kind"], "identity", "{j}");
        assert_eq!(j["identities"][0]["log_index"], 42, "{j}");
        assert_eq!(j["identities"].as_array().unwrap().len(), 1, "{j}");
    }
}
