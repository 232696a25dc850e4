//! Benchmark: auditing 1,000 containers in 200 files must take well under the time to
//! load them (read + parse + validate), so `berth audit` costs about what
//! `berth validate` costs.
//!
//! `cargo bench -p berth-policy --bench audit` prints both (best of several runs, in
//! release) and fails if evaluating takes more than half the load time, or evaluating
//! plus rendering any format more than the load time. Under `cargo test --benches` it
//! runs once and only prints.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use berth_policy::report::{SarifOptions, audit};
use berth_policy::{Date, Evaluator, HostContext, Policy};
use berth_spec::node::PolicyMode;
use berth_spec::{check, loader};

const FILES: usize = 200;
const PER_FILE: usize = 5;
const DIGEST: &str = "sha256:7d9eb2d8b3ee91df4021326ad0ce10c2e6033742ba327db0946e205a043689fe";

/// One file of five containers, some compliant, some not, on a shared network.
fn file(f: usize) -> String {
    let mut s = format!(
        "[network.net-{f}]\nsubnet = \"10.{}.{}.0/24\"\n\n",
        100 + f / 250,
        f % 250
    );
    for i in 0..PER_FILE {
        let name = format!("app-{f}-{i}");
        let _ = write!(
            s,
            "[container.{name}]\nimage = \"registry.example.com/team-{f}/app-{i}@{DIGEST}\"\n\
             user = \"{}\"\ncap_drop = [\"ALL\"]\nread_only = {}\nnetworks = [\"net-{f}\"]\n\
             env = {{ LOG_LEVEL = \"info\", API_TOKEN = \"{}\" }}\n\
             ports = [\"127.0.0.1:{}:8080\"]\n\n\
             [container.{name}.resources]\nmemory = \"64MiB\"\npids = 64\n\n\
             [[container.{name}.mounts]]\ntmpfs = \"/tmp\"\nsize = \"16MiB\"\n\n",
            if i == 0 { "0" } else { "10001:10001" },
            i % 2 == 0,
            if i == 1 { "t0ken" } else { "" },
            10_000 + f * PER_FILE + i,
        );
    }
    s
}

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        out = Some(v);
    }
    match out {
        Some(v) => (best, v),
        None => unreachable!("runs > 0"),
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn main() -> std::process::ExitCode {
    let bench = std::env::args().any(|a| a == "--bench");
    let runs = if bench { 7 } else { 1 };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot create a temporary directory: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    for f in 0..FILES {
        let sub = dir.path().join(format!("team-{:03}", f / 20));
        if let Err(e) = std::fs::create_dir_all(&sub)
            .and_then(|()| std::fs::write(sub.join(format!("app-{f:03}.toml")), file(f)))
        {
            eprintln!("cannot write the bench tree: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    let (load, checked) = best(runs, || {
        let tree = loader::load_tree(dir.path()).unwrap_or_default();
        check(&tree, None)
    });
    assert_eq!(
        checked.state.containers.len(),
        FILES * PER_FILE,
        "{:?}",
        checked.errors.first()
    );
    let Some(policy) = Policy::profile("restricted") else {
        return std::process::ExitCode::FAILURE;
    };
    let host = HostContext::default();
    let ev = Evaluator::new(
        &policy,
        &host,
        Date {
            year: 2026,
            month: 11,
            day: 22,
        },
    );
    let (eval, report) = best(runs, || audit(&checked, None, &ev, PolicyMode::Enforce));
    let (text, _) = best(runs, || report.to_text(false).len());
    let (json, _) = best(runs, || report.to_json().len());
    let (sarif, _) = best(runs, || report.to_sarif(&SarifOptions::default()).len());
    let (junit, _) = best(runs, || report.to_junit().len());
    let s = report.summary();
    println!(
        "{} containers in {FILES} files ({} findings: {} violations, {} warnings)",
        s.containers,
        report.findings.len(),
        s.violations,
        s.warnings
    );
    println!("load (read + parse + validate): {load:.2?}");
    println!(
        "audit (evaluate every rule):    {eval:.2?}  = {:.2} x load",
        ratio(eval, load)
    );
    for (name, t) in [
        ("text", text),
        ("json", json),
        ("sarif", sarif),
        ("junit", junit),
    ] {
        println!(
            "audit + render {name:5}:           {:.2?}  = {:.2} x load",
            eval + t,
            ratio(eval + t, load)
        );
    }
    let slowest = eval + text.max(json).max(sarif).max(junit);
    if bench && (eval * 2 > load || slowest > load) {
        eprintln!("auditing is not well under the load time");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
