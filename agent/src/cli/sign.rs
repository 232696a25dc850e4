//! `berth sign REF --key KEY`: sign an image in its registry with a cosign-compatible
//! signature: by default a Sigstore bundle attached as an OCI referrer (cosign 3's
//! layout; listed in the `sha256-<hex>` index on registries without the referrers
//! API), with `--legacy` the `sha256-<hex>.sig` layout of cosign 2. Signatures already
//! there are kept, and the signatures stored with every pulled image it signs are
//! refreshed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::Args;

use super::config;
use super::image::{Failure, async_runtime, parse_ref, registries_of};
use super::{Cli, EXIT_FAILED, Format};
use crate::image::registry::Client;
use crate::image::signature::exchange::{PublishedAs, SignFormat};
use crate::image::signature::{SigningKey, exchange};
use crate::image::store::Store;

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The image to sign (a tag is resolved to the digest it points to now)
    pub reference: String,
    /// The private key (PKCS#8 PEM, as `berth key generate` writes it)
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// Write cosign's legacy `sha256-<hex>.sig` signature instead of a Sigstore bundle
    #[arg(long)]
    pub legacy: bool,
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
    let store = Store::open_read_only(&loaded.config.runtime.state_dir);
    let rt = async_runtime()?;
    let (published, refreshed) = rt.block_on(async {
        let format = if args.legacy {
            SignFormat::Legacy
        } else {
            SignFormat::Bundle
        };
        let published = exchange::publish(&client, &reference, &key, format)
            .await
            .map_err(|e| Failure(EXIT_FAILED, anyhow!(e)))?;
        // The signature is in the registry: a store that cannot take it is a warning.
        let refreshed =
            exchange::refresh_signed(&client, &store, &reference, &published.digest).await;
        Ok::<_, Failure>((published, refreshed))
    })?;
    let refreshed = refreshed.unwrap_or_else(|e| {
        eprintln!(
            "warning: signed, but the signature stored with {reference} in {} was not refreshed: {:#}",
            store.root().display(),
            anyhow!(e)
        );
        Vec::new()
    });
    let digest = published.digest.as_str();
    let name = reference.name();
    let manifest = published.manifest.as_str();
    match args.format {
        Format::Json => {
            let mut v = serde_json::json!({"reference": reference.to_string(), "digest": digest,
                "signature_manifest": manifest, "refreshed": refreshed});
            match &published.how {
                PublishedAs::Legacy { tag } => {
                    v["format"] = "legacy".into();
                    v["signature_tag"] = tag.as_str().into();
                }
                PublishedAs::Bundle { index_tag } => {
                    v["format"] = "bundle".into();
                    v["referrers_index_tag"] = index_tag.as_deref().into();
                }
            }
            println!("{v}");
        }
        Format::Text => {
            match &published.how {
                PublishedAs::Legacy { tag } => {
                    println!("signed {name}@{digest} (legacy signature {name}:{tag})")
                }
                PublishedAs::Bundle {
                    index_tag: Some(tag),
                } => println!(
                    "signed {name}@{digest} (sigstore bundle, referrer manifest {manifest}, listed in the referrers index {name}:{tag})"
                ),
                PublishedAs::Bundle { index_tag: None } => println!(
                    "signed {name}@{digest} (sigstore bundle, referrer manifest {manifest}, listed by the registry's referrers API)"
                ),
            }
            for r in &refreshed {
                println!("refreshed the signature stored with {r}");
            }
        }
    }
    Ok(())
}
