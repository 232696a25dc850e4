//! `berth sign REF --key KEY`: sign an image in its registry with a cosign-compatible
//! signature in the legacy `sha256-<hex>.sig` layout (every registry stores it; cosign
//! verifies it with `--key`). Existing signatures in that manifest are kept.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use bytes::Bytes;
use clap::Args;

use super::config;
use super::image::{Failure, async_runtime, parse_ref, registries_of};
use super::{Cli, EXIT_FAILED, Format};
use crate::image::registry::{Client, Repository};
use crate::image::signature::{self, SigningKey};

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The image to sign (a tag is resolved to the digest it points to now)
    pub reference: String,
    /// The private key (PKCS#8 PEM, as `berth key generate` writes it)
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(cli: &Cli, args: &SignArgs) -> ExitCode {
    let loaded = match config::load_or_report(cli) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match sign(&loaded, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn sign(loaded: &config::Loaded, args: &SignArgs) -> Result<(), Failure> {
    let reference = parse_ref(&args.reference)?;
    let key = SigningKey::load(&args.key).map_err(|e| Failure(EXIT_FAILED, anyhow!(e)))?;
    let client = Client::new(registries_of(&loaded.config))?;
    let repo = Repository::of(&reference);
    let rt = async_runtime()?;
    let (digest, tag, sig_digest) = rt.block_on(async {
        let manifest = client.fetch_manifest(&repo, reference.reference()).await?;
        let digest = manifest.digest.as_str().to_string();
        let tag =
            signature::signature_tag(&digest).map_err(|e| Failure(EXIT_FAILED, anyhow!(e)))?;
        let existing = match client.fetch_manifest(&repo, &tag).await {
            Ok(m) => Some(m.bytes),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(Failure(EXIT_FAILED, anyhow!(e))),
        };
        let artifact = signature::sign_image(&reference.name(), &digest, &key, existing.as_deref())
            .map_err(|e| Failure(EXIT_FAILED, anyhow!(e)))?;
        client
            .push_blob(&repo, Bytes::from(artifact.config.bytes))
            .await?;
        client
            .push_blob(&repo, Bytes::from(artifact.payload.bytes))
            .await?;
        let sig_digest = client
            .push_manifest(
                &repo,
                &artifact.tag,
                artifact.manifest.media_type,
                Bytes::from(artifact.manifest.bytes),
            )
            .await?;
        Ok::<_, Failure>((digest, artifact.tag, sig_digest))
    })?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({"reference": reference.to_string(), "digest": digest, "signature_tag": tag, "signature_manifest": sig_digest.as_str()})
        ),
        Format::Text => println!(
            "signed {}@{digest} ({}:{tag})",
            reference.name(),
            reference.name()
        ),
    }
    Ok(())
}
