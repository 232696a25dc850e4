//! `berth sign REF --key KEY`: sign an image in its registry with a cosign-compatible
//! signature in the legacy `sha256-<hex>.sig` layout (every registry stores it; cosign
//! verifies it with `--key`). Existing signatures in that manifest are kept, and the
//! signature stored with every pulled image it signs is refreshed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::Args;

use super::config;
use super::image::{Failure, async_runtime, parse_ref, registries_of};
use super::{Cli, EXIT_FAILED, Format};
use crate::image::registry::Client;
use crate::image::signature::{SigningKey, exchange};
use crate::image::store::Store;

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
    let store = Store::open_read_only(&loaded.config.runtime.state_dir);
    let rt = async_runtime()?;
    let (published, refreshed) = rt.block_on(async {
        let published = exchange::publish(&client, &reference, &key)
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
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({"reference": reference.to_string(), "digest": digest, "signature_tag": published.tag, "signature_manifest": published.manifest.as_str(), "refreshed": refreshed})
        ),
        Format::Text => {
            println!(
                "signed {}@{digest} ({}:{})",
                reference.name(),
                reference.name(),
                published.tag
            );
            for r in &refreshed {
                println!("refreshed the signature stored with {r}");
            }
        }
    }
    Ok(())
}
