//! Output of the `berth image` commands: text tables, JSON, and progress bars
//! (indicatif, only when stderr is a terminal).

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

use super::human;
use crate::image::digest::Digest;
use crate::image::manifest::{History, ImageConfig, MAX_CONFIG_BYTES};
use crate::image::pull::PullProgress;
use crate::image::store::Store;
use crate::image::store::records::ImageRecord;

/// Prints any value as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> Result<(), serde_json::Error> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn pulled(r: &ImageRecord, from_store: bool) {
    let how = if from_store {
        "already present"
    } else {
        "pulled"
    };
    println!("{how} {}", r.reference);
    println!("digest:   {}", r.digest);
    if r.manifest.digest != r.digest {
        println!("manifest: {}", r.manifest.digest);
    }
    println!("platform: {}", r.platform);
    println!("layers:   {} ({})", r.layers.len(), human::bytes(r.size()));
    println!("signature: {}", signatures(r));
}

/// The stored signatures: the legacy tag and how many Sigstore bundles, or `none`.
fn signatures(r: &ImageRecord) -> String {
    let mut found: Vec<String> = r.signature.iter().map(|s| s.tag.clone()).collect();
    if let Some(b) = r.bundles.first() {
        let (n, via) = (r.bundles.len(), b.found.as_str());
        found.push(format!("{n} sigstore bundle(s) (found via {via})"));
    }
    if found.is_empty() {
        "none".to_string()
    } else {
        found.join(", ")
    }
}

pub fn table(records: &[ImageRecord]) {
    let rows: Vec<[String; 5]> = records
        .iter()
        .map(|r| {
            [
                r.reference.clone(),
                r.digest.short().to_string(),
                r.platform.to_string(),
                human::bytes(r.size()),
                r.pulled_at.clone(),
            ]
        })
        .collect();
    let header = ["REFERENCE", "DIGEST", "PLATFORM", "SIZE", "PULLED"].map(String::from);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// `image inspect`: the record plus what the config says.
#[derive(Debug, Serialize)]
pub struct Inspect {
    #[serde(flatten)]
    pub record: ImageRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The config's runtime defaults (`User`, `Env`, `Entrypoint`, `Cmd`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_config: Option<serde_json::Value>,
    pub history: Vec<History>,
}

impl Inspect {
    pub fn load(store: &Store, record: ImageRecord) -> Result<Inspect, anyhow::Error> {
        let bytes = store.read_blob(&record.config.digest, MAX_CONFIG_BYTES)?;
        let config = ImageConfig::parse(&bytes, record.layers.len()).map_err(|e| {
            anyhow::anyhow!(e).context(format!("image config {}", record.config.digest))
        })?;
        Ok(Inspect {
            record,
            created: config.created,
            image_config: config.config,
            history: config.history,
        })
    }

    pub fn print(&self) {
        let r = &self.record;
        println!("reference: {}", r.reference);
        println!("digest:    {} ({})", r.digest, r.media_type);
        println!(
            "manifest:  {} ({})",
            r.manifest.digest, r.manifest.media_type
        );
        println!("platform:  {}", r.platform);
        println!(
            "config:    {} ({})",
            r.config.digest,
            human::bytes(r.config.size)
        );
        if let Some(created) = &self.created {
            println!("created:   {created}");
        }
        println!("pulled:    {}", r.pulled_at);
        if let Some(serde_json::Value::Object(cfg)) = &self.image_config {
            for (k, v) in cfg {
                println!("  {k}: {v}");
            }
        }
        println!("layers:    {} ({})", r.layers.len(), human::bytes(r.size()));
        for l in &r.layers {
            println!(
                "  {}  {:>10}  {}",
                l.digest,
                human::bytes(l.size),
                l.media_type
            );
            println!("    diff_id {}", l.diff_id);
        }
        println!("history:");
        for h in &self.history {
            let what = h
                .created_by
                .as_deref()
                .or(h.comment.as_deref())
                .unwrap_or("");
            let empty = if h.empty_layer { " (no layer)" } else { "" };
            println!("  {}  {what}{empty}", h.created.as_deref().unwrap_or("-"));
        }
        println!("signature: {}", signatures(r));
    }
}

/// Progress bars, one per blob.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    pub fn new() -> Bars {
        Bars {
            multi: MultiProgress::new(),
            bars: Mutex::default(),
        }
    }

    fn with(&self, digest: &Digest, f: impl FnOnce(&ProgressBar)) {
        let bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = bars.get(digest) {
            f(bar);
        }
    }
}

impl PullProgress for Bars {
    fn blob_started(&self, digest: &Digest, size: u64) {
        let bar = self.multi.add(ProgressBar::new(size));
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(digest.short().to_string());
        self.bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.clone(), bar);
    }

    fn blob_advanced(&self, digest: &Digest, bytes: u64) {
        self.with(digest, |b| b.inc(bytes));
    }

    fn blob_finished(&self, digest: &Digest, already_present: bool) {
        self.with(digest, |b| {
            if already_present {
                b.set_position(b.length().unwrap_or(0));
                b.finish_with_message("already present");
            } else {
                b.finish_with_message("done");
            }
        });
    }
}
