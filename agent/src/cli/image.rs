//! `berth image pull | ls | inspect | rm | prune`: the content store from the command
//! line. Thin: parse, call `image::pull` / the store, print, map errors to exit codes
//! (1 when content failed verification, 2 for a bad reference, 3 when the job could
//! not be done).

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};

use berth_spec::reference::Reference;

use super::human;
use super::image_local;
use super::image_output::{self as out, Bars};
use super::{EXIT_FAILED, EXIT_FINDINGS, EXIT_USAGE, Format};
use crate::image::digest::Digest;
use crate::image::platform::Platform;
use crate::image::prepare;
use crate::image::pull::{self, PullOptions, PullProgress, Silent};
use crate::image::registry::{Client, RegistryConfig};
use crate::image::signature::exchange;
use crate::image::snapshot::SnapshotStore;
use crate::image::store::Store;
use crate::image::store::records::ImageRecord;
use berth_spec::node::NodeConfig;

pub use crate::node::{pull_timeouts, registries_of};

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image (and its signature) into the content store
    Pull(PullArgs),
    /// List pulled images
    Ls(FormatArg),
    /// Show an image's digests, platform, config, layers and history
    Inspect(RefArgs),
    /// Remove an image and the blobs no other image uses
    Rm(RefArgs),
    /// Remove blobs and snapshots no image refers to, and interrupted downloads
    Prune(FormatArg),
    /// Write an image's flattened root filesystem into DIR (the image must be pulled)
    Unpack(image_local::UnpackArgs),
    /// Check an image's cosign signature against trusted keys, or a Sigstore bundle file
    /// offline with --bundle (exit 1 if it does not verify)
    Verify(image_local::VerifyArgs),
}

#[derive(Debug, Args)]
pub struct FormatArg {
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RefArgs {
    /// Image reference (`registry/repo:tag`, `…@sha256:…`) or a bare `sha256:` digest
    pub reference: String,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference, e.g. registry.example.com/shop/web:1.0 or …@sha256:<hex>
    pub reference: String,
    /// Platform to select from a multi-platform image [default: this host's]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Allow plain http (and unverified TLS) for this registry; repeatable
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Pull through a mirror for a registry; repeatable
    #[arg(long = "registry-mirror", value_name = "HOST=URL")]
    pub registry_mirror: Vec<String>,
    /// Do not fetch the image's cosign signature
    #[arg(long)]
    pub no_signature: bool,
    #[command(flatten)]
    pub format: FormatArg,
}

/// Runs an image command against the store under `state_dir`.
pub fn run(cli: &super::Cli, args: &ImageArgs) -> ExitCode {
    let loaded = match super::config::load_or_report(cli) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let state_dir = loaded.config.runtime.state_dir.as_path();
    let result = match &args.command {
        ImageCommand::Pull(a) => pull_cmd(a, state_dir, &loaded),
        ImageCommand::Ls(a) => ls(a.format, state_dir),
        ImageCommand::Inspect(a) => inspect(a, state_dir),
        ImageCommand::Rm(a) => rm(a, state_dir),
        ImageCommand::Prune(a) => prune(a.format, state_dir),
        ImageCommand::Unpack(a) => image_local::unpack(a, state_dir),
        ImageCommand::Verify(a) => image_local::verify(a, &loaded),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// An error and the exit code it maps to.
pub struct Failure(pub u8, pub anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(EXIT_FAILED, e.into())
    }
}

pub fn usage(e: impl Into<anyhow::Error>) -> Failure {
    Failure(EXIT_USAGE, e.into())
}

pub fn parse_ref(s: &str) -> Result<Reference, Failure> {
    Reference::parse(s)
        .map_err(|e| usage(anyhow!(e).context(format!("invalid image reference `{s}`"))))
}

/// Registry settings: the node configuration's `[registries]`, plus command-line flags.
fn registry_config(a: &PullArgs, node: &NodeConfig) -> Result<RegistryConfig, Failure> {
    let mut cfg = registries_of(node);
    for host in &a.insecure_registry {
        cfg.entry(host.clone()).or_default().insecure = true;
    }
    for m in &a.registry_mirror {
        let (host, url) = m
            .split_once('=')
            .ok_or_else(|| usage(anyhow!("--registry-mirror `{m}`: expected HOST=URL")))?;
        cfg.entry(host.to_string()).or_default().mirror = Some(url.to_string());
    }
    Ok(cfg)
}

fn pull_cmd(a: &PullArgs, state_dir: &Path, loaded: &super::config::Loaded) -> Result<(), Failure> {
    let node = &loaded.config;
    let reference = parse_ref(&a.reference)?;
    let platform = match &a.platform {
        Some(p) => Platform::parse(p).map_err(usage)?,
        None => Platform::host(),
    };
    let opts = PullOptions {
        platform,
        signatures: !a.no_signature,
        ..PullOptions::default()
    };
    let client = Client::with_timeouts(registry_config(a, node)?, pull_timeouts(node))?;
    let store = Store::open(state_dir)?;
    let runtime = async_runtime()?;
    let bars;
    let progress: &dyn PullProgress = if std::io::stderr().is_terminal() {
        bars = Bars::new();
        &bars
    } else {
        &Silent
    };
    let pulled = runtime
        .block_on(pull::pull(&client, &store, &reference, &opts, progress))
        .map_err(|e| {
            let code = if e.is_integrity() {
                EXIT_FINDINGS
            } else {
                EXIT_FAILED
            };
            let hint = if e.is_transient() {
                " (this looks temporary: try again later)"
            } else {
                ""
            };
            Failure(
                code,
                anyhow!(e).context(format!("cannot pull {reference}{hint}")),
            )
        })?;
    let record = pulled.record;
    let check = image_local::signature_gate(&record, loaded, |trust| {
        if a.no_signature {
            prepare::verify_stored(&store, &record, trust)
        } else {
            runtime.block_on(exchange::verify_fresh(&client, &store, &record, trust))
        }
    })?;
    let snapshots = SnapshotStore::open(state_dir)?;
    let snaps = prepare::unpack_snapshots(&store, &snapshots, &record).map_err(|e| {
        let code = if e.is_integrity() {
            EXIT_FINDINGS
        } else {
            EXIT_FAILED
        };
        Failure(code, anyhow!(e))
    })?;
    match a.format.format {
        Format::Json => out::json(&serde_json::json!({
            "image": &record,
            "snapshots": snaps.iter().map(|s| s.id).collect::<Vec<_>>(),
            "signature": image_local::check_json(check.as_ref()),
        }))?,
        Format::Text => {
            out::pulled(&record, pulled.from_store);
            if let Some(c) = &check {
                println!("verified: {}", image_local::check_text(c));
            }
            println!(
                "snapshots: {}",
                snaps
                    .iter()
                    .map(|s| s.id.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    Ok(())
}

/// A small multi-threaded runtime for the commands that talk to registries.
pub fn async_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?)
}

fn ls(format: Format, state_dir: &Path) -> Result<(), Failure> {
    let records = Store::open(state_dir)?.records()?;
    match format {
        Format::Json => out::json(&records)?,
        Format::Text => out::table(&records),
    }
    Ok(())
}

/// The records `s` names: the exact reference, or every image with that digest
/// (a bare `sha256:` digest, or `name@digest` pulled under another reference).
pub fn find(store: &Store, s: &str) -> Result<Vec<ImageRecord>, Failure> {
    let (name, digest) = if s.starts_with("sha256:") {
        (None, Some(Digest::parse(s).map_err(usage)?))
    } else {
        let r = parse_ref(s)?;
        if let Some(record) = store.record(&r.to_string())? {
            return Ok(vec![record]);
        }
        let d = r
            .digest
            .as_deref()
            .map(Digest::parse)
            .transpose()
            .map_err(usage)?;
        (Some(r.name()), d)
    };
    let Some(digest) = digest else {
        return Ok(vec![]);
    };
    Ok(store
        .records()?
        .into_iter()
        .filter(|r| name.as_ref().is_none_or(|n| *n == r.name))
        .filter(|r| r.digest == digest || r.manifest.digest == digest)
        .collect())
}

fn inspect(a: &RefArgs, state_dir: &Path) -> Result<(), Failure> {
    let store = Store::open(state_dir)?;
    let record = find(&store, &a.reference)?
        .into_iter()
        .next()
        .ok_or_else(|| {
            anyhow!(
                "no image {} in the store under {}",
                a.reference,
                state_dir.display()
            )
        })?;
    let details = out::Inspect::load(&store, record)?;
    match a.format.format {
        Format::Json => out::json(&details)?,
        Format::Text => details.print(),
    }
    Ok(())
}

fn rm(a: &RefArgs, state_dir: &Path) -> Result<(), Failure> {
    let store = Store::open(state_dir)?;
    let _lock = store.lock_exclusive()?;
    let records = find(&store, &a.reference)?;
    if records.is_empty() {
        return Err(anyhow!(
            "no image {} in the store under {}",
            a.reference,
            state_dir.display()
        )
        .into());
    }
    // An image a container runs stays: removing it would strand the container.
    let containers = crate::runtime::record::read_records(state_dir)?;
    for r in &records {
        let users = crate::image::usage::users(r, &containers);
        if !users.is_empty() {
            return Err(Failure(
                EXIT_FINDINGS,
                anyhow!(
                    "image {} is used by container {}: remove the container first (`berth rm NAME`)",
                    r.reference,
                    users.join(", ")
                ),
            ));
        }
    }
    let mut candidates = BTreeSet::new();
    for r in &records {
        store.remove_record(&r.reference)?;
        candidates.extend(r.blobs().cloned());
    }
    let report = store.gc(Some(&candidates))?;
    let untagged: Vec<&str> = records.iter().map(|r| r.reference.as_str()).collect();
    match a.format.format {
        Format::Json => out::json(
            &serde_json::json!({ "untagged": untagged, "deleted": report.removed, "bytes": report.bytes }),
        )?,
        Format::Text => {
            for r in untagged {
                println!("untagged {r}");
            }
            println!(
                "deleted {} blobs ({})",
                report.removed.len(),
                human::bytes(report.bytes)
            );
        }
    }
    Ok(())
}

fn prune(format: Format, state_dir: &Path) -> Result<(), Failure> {
    let store = Store::open(state_dir)?;
    let _lock = store.lock_exclusive()?;
    let report = store.gc(None)?;
    let snapshots = image_local::prune_snapshots(&store, state_dir)?;
    match format {
        Format::Json => out::json(&serde_json::json!({
            "removed": report.removed, "bytes": report.bytes, "partials": report.partials,
            "snapshots": snapshots,
        }))?,
        Format::Text => println!(
            "deleted {} blobs ({}), {} snapshots and {} interrupted downloads",
            report.removed.len(),
            human::bytes(report.bytes),
            snapshots.len(),
            report.partials
        ),
    }
    Ok(())
}
