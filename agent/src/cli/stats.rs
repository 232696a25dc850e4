//! `berth stats [NAME…] [--no-stream] [--format text|json]`: CPU, memory and process
//! counts of running containers, read from their cgroups (runtime/cgroup). One sample
//! per container, as `docker stats --no-stream` (`--no-stream` is accepted and is the
//! default); CPU % is measured over about a second between two readings.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::human;
use super::ps::{fail, state_dir, status_or_warn};
use super::{Cli, EXIT_FAILED, Format};
use crate::runtime::cgroup::{self, CgroupDirs, Layout, Memory, Pids, Sample};
use crate::runtime::record::ContainerRecord;
use crate::runtime::status;
use crate::util::error_chain;

/// Time between the two CPU readings.
const CPU_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Containers to show [default: every running container]
    pub names: Vec<String>,
    /// Print one sample and exit (the default; for `docker stats` habits)
    #[arg(long)]
    pub no_stream: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// One container's figures; the `--format json` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsRow {
    pub kind: &'static str,
    pub name: String,
    pub instance: String,
    pub cgroup_path: String,
    /// Percent of one CPU (200 = two CPUs busy).
    pub cpu_percent: Option<f64>,
    pub memory: Option<MemoryRow>,
    pub pids: Option<PidsRow>,
    /// Why the cgroup could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryRow {
    pub usage_bytes: u64,
    /// `None`: no limit.
    pub limit_bytes: Option<u64>,
    pub percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PidsRow {
    pub current: u64,
    pub limit: Option<u64>,
}

pub fn run(cli: &Cli, args: &StatsArgs) -> ExitCode {
    // One sample is the only mode: `--no-stream` changes nothing (see the module doc).
    let _ = args.no_stream;
    let state_dir = match state_dir(cli) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let records = match status::load_records(&state_dir) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let mut chosen: Vec<&ContainerRecord> = Vec::new();
    if args.names.is_empty() {
        chosen.extend(records.values());
    } else {
        for name in &args.names {
            match records.get(name) {
                Some(r) => chosen.push(r),
                None => {
                    return fail(&status::StatusError::Unknown {
                        name: name.clone(),
                        state_dir: state_dir.clone(),
                    });
                }
            }
        }
    }
    let running: Vec<&ContainerRecord> = chosen
        .into_iter()
        .filter(|r| {
            let up = status_or_warn(&state_dir, r).is_running();
            if !up && !args.names.is_empty() {
                tracing::warn!("container {} is not running", r.name);
            }
            up
        })
        .collect();
    let layout = match Layout::host() {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot find the cgroup hierarchies: {}",
                error_chain(&e)
            );
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let rows = sample_all(&layout, &running);
    match args.format {
        Format::Text => print!("{}", render_table(&rows)),
        Format::Json => match serde_json::to_string_pretty(&rows) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
        },
    }
    if rows.iter().any(|r| r.error.is_some()) {
        return ExitCode::from(EXIT_FAILED);
    }
    ExitCode::SUCCESS
}

/// Reads every container twice, `CPU_WINDOW` apart.
fn sample_all(layout: &Layout, records: &[&ContainerRecord]) -> Vec<StatsRow> {
    let dirs: Vec<CgroupDirs> = records
        .iter()
        .map(|r| layout.locate(&r.cgroup_path))
        .collect();
    let first: Vec<_> = dirs.iter().map(cgroup::read_sample).collect();
    let t0 = Instant::now();
    if first
        .iter()
        .any(|s| s.as_ref().is_ok_and(|s| s.cpu_ns.is_some()))
    {
        std::thread::sleep(CPU_WINDOW);
    }
    let elapsed = t0.elapsed();
    records
        .iter()
        .zip(&dirs)
        .zip(first)
        .map(|((r, d), before)| {
            let second = before.and_then(|b| cgroup::read_sample(d).map(|a| (b, a)));
            match second {
                Ok((b, a)) => row(r, &b, &a, elapsed),
                Err(e) => {
                    tracing::warn!("container {}: {}", r.name, error_chain(&e));
                    StatsRow {
                        kind: "container",
                        name: r.name.clone(),
                        instance: r.instance.clone(),
                        cgroup_path: r.cgroup_path.clone(),
                        cpu_percent: None,
                        memory: None,
                        pids: None,
                        error: Some(error_chain(&e)),
                    }
                }
            }
        })
        .collect()
}

/// The figures from two samples. Pure.
pub fn row(r: &ContainerRecord, before: &Sample, after: &Sample, elapsed: Duration) -> StatsRow {
    StatsRow {
        kind: "container",
        name: r.name.clone(),
        instance: r.instance.clone(),
        cgroup_path: r.cgroup_path.clone(),
        cpu_percent: before
            .cpu_ns
            .zip(after.cpu_ns)
            .map(|(b, a)| cgroup::cpu_percent(b, a, elapsed)),
        memory: after.memory.map(|Memory { usage, limit }| MemoryRow {
            usage_bytes: usage,
            limit_bytes: limit,
            percent: limit
                .filter(|&l| l > 0)
                .map(|l| usage as f64 / l as f64 * 100.0),
        }),
        pids: after
            .pids
            .map(|Pids { current, limit }| PidsRow { current, limit }),
        error: None,
    }
}

/// The `--format text` table. Pure.
pub fn render_table(rows: &[StatsRow]) -> String {
    let dash = || "--".to_string();
    let header = ["NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            let mem = r.memory.as_ref();
            [
                r.name.clone(),
                r.cpu_percent.map_or_else(dash, |c| format!("{c:.2}%")),
                mem.map_or_else(dash, |m| {
                    let limit = m
                        .limit_bytes
                        .map_or_else(|| "unlimited".to_string(), human::bytes);
                    format!("{} / {limit}", human::bytes(m.usage_bytes))
                }),
                mem.and_then(|m| m.percent)
                    .map_or_else(dash, |p| format!("{p:.2}%")),
                r.pids.as_ref().map_or_else(dash, |p| match p.limit {
                    Some(l) => format!("{} / {l}", p.current),
                    None => p.current.to_string(),
                }),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let rows_iter = std::iter::once(header.map(str::to_string)).chain(cells);
    for row in rows_iter {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            line.push_str(&format!("{c:<w$}   ", w = widths[i]));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::status::tests::record;

    #[test]
    fn rows_and_table() {
        let before = Sample {
            cpu_ns: Some(1_000_000_000),
            memory: None,
            pids: None,
        };
        let after = Sample {
            cpu_ns: Some(1_250_000_000),
            memory: Some(Memory {
                usage: 16 << 20,
                limit: Some(64 << 20),
            }),
            pids: Some(Pids {
                current: 3,
                limit: Some(100),
            }),
        };
        let web = row(&record("web"), &before, &after, Duration::from_secs(1));
        assert_eq!(web.cpu_percent, Some(25.0));
        assert_eq!(web.memory.as_ref().unwrap().percent, Some(25.0));
        let unlimited = Sample {
            cpu_ns: None,
            memory: Some(Memory {
                usage: 1 << 20,
                limit: None,
            }),
            pids: Some(Pids {
                current: 1,
                limit: None,
            }),
        };
        let db = row(
            &record("db"),
            &unlimited,
            &unlimited,
            Duration::from_secs(1),
        );
        let want = "\
NAME   CPU %    MEM USAGE / LIMIT   MEM %    PIDS
web    25.00%   16MiB / 64MiB       25.00%   3 / 100
db     --       1MiB / unlimited    --       1
";
        assert_eq!(render_table(&[web, db]), want);
        let v = serde_json::to_value(row(&record("x"), &unlimited, &unlimited, Duration::ZERO))
            .unwrap();
        assert_eq!(v["memory"]["limit_bytes"], serde_json::Value::Null);
        assert!(v.get("error").is_none());
    }
}
