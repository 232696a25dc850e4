//! The text report: a live report's source, the tree's errors as `berth validate`
//! prints them, then findings grouped by container, one line each —
//! `FILE:LINE: RULE: STATUS: message (fix: …)` — then the trust chains of a live audit,
//! a summary by rule and the expired waivers. Colour only when asked (a terminal).

use berth_spec::diag::printable;
use std::fmt::Write;

use crate::finding::{Finding, Status};
use crate::policy::Severity;

use super::Report;
use super::chain::FlagLevel;

const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

struct Paint(bool);

impl Paint {
    fn p(&self, style: &str, s: &str) -> String {
        if self.0 {
            format!("{style}{s}{RESET}")
        } else {
            s.to_string()
        }
    }
}

fn status_word(f: &Finding, paint: &Paint) -> String {
    let w = match (f.status, f.severity) {
        (Status::Violation, Severity::Error) => paint.p(RED, "error"),
        (Status::Violation, _) => paint.p(YELLOW, "warning"),
        (Status::Waived, _) => paint.p(DIM, "waived"),
        (Status::NotChecked, _) => paint.p(DIM, "not checked"),
    };
    match f.change {
        Some(c) => format!("{w} [{}]", c.as_str()),
        None => w,
    }
}

fn line(f: &Finding, paint: &Paint) -> String {
    let tail = match f.status {
        Status::Violation => format!(" (fix: {})", printable(&f.remedy)),
        Status::Waived => format!(
            " (waived: {})",
            printable(f.waiver_reason.as_deref().unwrap_or("no reason given"))
        ),
        Status::NotChecked => String::new(),
    };
    format!(
        "{}:{}: {}: {}: {}{tail}",
        printable(&f.file),
        f.line,
        f.rule,
        status_word(f, paint),
        printable(&f.message)
    )
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub(super) fn render(r: &Report, color: bool) -> String {
    let paint = Paint(color);
    let mut out = String::new();
    if let Some(live) = &r.live {
        let _ = writeln!(out, "{}\n", live_line(live));
    }
    for e in &r.errors {
        let _ = writeln!(out, "{e}");
    }
    if !r.errors.is_empty() {
        out.push('\n');
    }
    let groups = r.by_container();
    for c in &r.containers {
        let Some(fs) = groups.get(c.name.as_str()) else {
            continue;
        };
        let _ = writeln!(
            out,
            "{} ({}:{})",
            paint.p(BOLD, &format!("container {}", c.name)),
            c.file,
            c.line
        );
        for f in fs.iter() {
            let _ = writeln!(out, "{}", line(f, &paint));
        }
        out.push('\n');
    }
    if let Some(rev) = &r.since
        && !r.fixed.is_empty()
    {
        let _ = writeln!(out, "{}", paint.p(BOLD, &format!("fixed since {rev}")));
        for f in &r.fixed {
            let _ = writeln!(
                out,
                "{}:{}: {}: {}: {}",
                f.file,
                f.line,
                f.rule,
                paint.p(GREEN, "fixed"),
                f.message
            );
        }
        out.push('\n');
    }
    chains(r, &paint, &mut out);
    let s = r.summary();
    let _ = writeln!(
        out,
        "policy {} ({}): {}, {} compliant; {}, {}, {} waived, {} not checked",
        r.policy,
        r.mode.as_str(),
        plural(s.containers, "container", "containers"),
        s.compliant,
        plural(s.violations, "violation", "violations"),
        plural(s.warnings, "warning", "warnings"),
        s.waived,
        s.not_checked,
    );
    if let Some(rev) = &r.since {
        let new = r.failing().count();
        let _ = writeln!(
            out,
            "since {rev}: {new} new error-level {}, {} fixed",
            if new == 1 { "violation" } else { "violations" },
            r.fixed.len()
        );
    }
    if !s.by_rule.is_empty() {
        let width = s.by_rule.keys().map(|k| k.id().len()).max().unwrap_or(0);
        for (rule, n) in &s.by_rule {
            let _ = writeln!(out, "  {:width$}  {n}", rule.id());
        }
    }
    for w in &r.expired_waivers {
        let _ = writeln!(
            out,
            "{}:{}: {}: waiver for `{}` on {} expired {} ({})",
            w.origin.file,
            w.origin.line,
            paint.p(YELLOW, "expired waiver"),
            w.rule,
            w.objects.join(", "),
            w.expires.as_deref().unwrap_or("?"),
            w.reason
        );
    }
    let flags = r.chain_flags();
    if flags > 0 {
        let _ = writeln!(
            out,
            "{} of the trust chains no longer {}: the keys or identities named no longer vouch for what runs",
            plural(flags, "link", "links"),
            if flags == 1 { "holds" } else { "hold" }
        );
    }
    let unchecked = r.chains_unchecked();
    if unchecked > 0 {
        let _ = writeln!(
            out,
            "{} of the trust chains could not be checked: the audit cannot say whether {}",
            plural(unchecked, "link", "links"),
            if unchecked == 1 {
                "it holds"
            } else {
                "they hold"
            }
        );
    }
    if !r.errors.is_empty() {
        let _ = writeln!(
            out,
            "{} in the tree: fix them for a complete audit",
            plural(r.errors.len(), "error", "errors")
        );
    }
    out
}

/// Where a live report comes from: `live: the agent's report after its pass at T
/// (revision C)`, or `live: from the state directory at T (revision C)`.
fn live_line(live: &super::Live) -> String {
    let source = match live.source {
        super::LiveSource::Agent => "the agent's report after its pass at",
        super::LiveSource::StateDirectory => "from the state directory at",
    };
    let revision = match &live.revision {
        Some(c) => format!(" (revision {})", printable(c)),
        None => String::new(),
    };
    format!("live: {source} {}{revision}", printable(&live.generated_at))
}

/// The trust chains: a block per container, its links, after `--verify` each link now
/// and what no longer vouches.
fn chains(r: &Report, paint: &Paint, out: &mut String) {
    if r.chains.is_empty() {
        return;
    }
    let _ = writeln!(out, "{}", paint.p(BOLD, "trust chains"));
    for c in &r.chains {
        let _ = writeln!(out, "container {} ({})", printable(&c.container), c.file);
        for l in c.lines() {
            let _ = writeln!(out, "  {}", printable(&l));
        }
        for f in &c.flags {
            let color = match f.level {
                FlagLevel::Error => RED,
                FlagLevel::Warning | FlagLevel::CannotCheck => YELLOW,
            };
            let _ = writeln!(
                out,
                "{}:1: trust-chain: {}: {}: {}",
                c.file,
                paint.p(color, f.level.as_str()),
                f.link,
                printable(&f.message)
            );
        }
    }
    out.push('\n');
}
