//! The JUnit XML report (`--format junit`) for CI systems: one test suite per
//! container, one test case per container × evaluated rule. An error-level violation
//! is a failure; a warning passes with its message in `system-out`; waived and
//! not-checked findings are skipped with the reason. The tree's errors form a suite of
//! their own, each an `error`; a live audit's trust chains another (`chain`).

use std::fmt::Write;

use crate::finding::{Finding, Status};

use super::Report;
use super::chain::FlagLevel;

/// Escapes text for XML attributes and content, dropping characters XML 1.0 forbids.
fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| {
        matches!(c, '&' | '<' | '>' | '"' | '\'' | '\u{FFFE}' | '\u{FFFF}') || (c as u32) < 0x20
    }) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            // Not characters XML 1.0 allows (its `Char` production).
            c if (c as u32) < 0x20 || matches!(c, '\u{FFFE}' | '\u{FFFF}') => {}
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

fn text(f: &Finding) -> String {
    format!(
        "{}:{}: {}: {} (fix: {})",
        f.file, f.line, f.rule, f.message, f.remedy
    )
}

/// One test case's outcome.
enum Outcome {
    Pass(Option<String>),
    Failure(String, String),
    Skipped(String),
}

fn outcome(fs: &[&Finding]) -> Outcome {
    let body = |pick: &dyn Fn(&Finding) -> bool| {
        fs.iter()
            .filter(|f| pick(f))
            .map(|f| text(f))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if let Some(first) = fs.iter().find(|f| f.is_error()) {
        return Outcome::Failure(first.message.clone(), body(&Finding::is_error));
    }
    if fs.iter().any(|f| f.is_warning()) {
        return Outcome::Pass(Some(body(&Finding::is_warning)));
    }
    if let Some(w) = fs.iter().find(|f| f.status == Status::Waived) {
        return Outcome::Skipped(format!(
            "waived: {}",
            w.waiver_reason.as_deref().unwrap_or("no reason given")
        ));
    }
    if let Some(n) = fs.iter().find(|f| f.status == Status::NotChecked) {
        return Outcome::Skipped(format!("not checked: {}", n.message));
    }
    Outcome::Pass(None)
}

pub(super) fn render(r: &Report) -> String {
    let mut suites = String::new();
    let (mut tests, mut failures, mut skipped) = (0, 0, 0);
    let groups = r.by_container();
    for c in &r.containers {
        let (mut t, mut fl, mut sk) = (0, 0, 0);
        let mut cases = String::new();
        let mine = groups.get(c.name.as_str()).copied().unwrap_or_default();
        for (rule, _) in &r.rules {
            let fs: Vec<&Finding> = mine.iter().filter(|f| f.rule == *rule).collect();
            let (file, line) = fs
                .first()
                .map_or((c.file.as_str(), c.line), |f| (f.file.as_str(), f.line));
            t += 1;
            let _ = write!(
                cases,
                "    <testcase name=\"{}\" classname=\"container.{}\" file=\"{}\" line=\"{line}\" time=\"0\"",
                rule.id(),
                esc(&c.name),
                esc(file)
            );
            match outcome(&fs) {
                Outcome::Pass(None) => cases.push_str("/>\n"),
                Outcome::Pass(Some(out)) => {
                    let _ = write!(
                        cases,
                        ">\n      <system-out>{}</system-out>\n    </testcase>\n",
                        esc(&out)
                    );
                }
                Outcome::Failure(msg, body) => {
                    fl += 1;
                    let _ = write!(
                        cases,
                        ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>\n",
                        esc(&msg),
                        rule.id(),
                        esc(&body)
                    );
                }
                Outcome::Skipped(msg) => {
                    sk += 1;
                    let _ = write!(
                        cases,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                        esc(&msg)
                    );
                }
            }
        }
        let _ = write!(
            suites,
            "  <testsuite name=\"container {}\" tests=\"{t}\" failures=\"{fl}\" errors=\"0\" skipped=\"{sk}\" time=\"0\" file=\"{}\">\n{cases}  </testsuite>\n",
            esc(&c.name),
            esc(&c.file)
        );
        tests += t;
        failures += fl;
        skipped += sk;
    }
    let mut chain_errors = 0;
    if !r.chains.is_empty() {
        let (t, fl, er) = chain_suite(r, &mut suites);
        tests += t;
        failures += fl;
        chain_errors = er;
    }
    let errors = r.errors.len();
    if errors > 0 {
        let mut cases = String::new();
        for e in &r.errors {
            let _ = write!(
                cases,
                "    <testcase name=\"{}:{}:{}\" classname=\"spec\" file=\"{}\" line=\"{}\" time=\"0\">\n      <error message=\"{}\" type=\"spec\">{}</error>\n    </testcase>\n",
                esc(&e.file),
                e.line,
                e.column,
                esc(&e.file),
                e.line,
                esc(&e.message),
                esc(&e.to_string())
            );
        }
        let _ = write!(
            suites,
            "  <testsuite name=\"spec errors\" tests=\"{errors}\" failures=\"0\" errors=\"{errors}\" skipped=\"0\" time=\"0\">\n{cases}  </testsuite>\n"
        );
        tests += errors;
    }
    let errors = errors + chain_errors;
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"berth audit ({})\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"0\">\n{suites}</testsuites>\n",
        esc(&r.policy)
    )
}

/// The trust chains of a live audit: one suite, the links as its properties
/// (`<container>.<link>`), a test case per container whose `system-out` has the links
/// and which fails when a link no longer holds (an error when one could not be
/// checked). Returns (tests, failures, errors).
fn chain_suite(r: &Report, suites: &mut String) -> (usize, usize, usize) {
    let mut props = String::new();
    let mut cases = String::new();
    let mut failures = 0;
    let mut errors = 0;
    for c in &r.chains {
        for (k, w) in &c.links {
            let _ = writeln!(
                props,
                "      <property name=\"{}.{}\" value=\"{}\"/>",
                esc(&c.container),
                esc(&k.replace(' ', "_")),
                esc(w)
            );
        }
        let _ = writeln!(
            cases,
            "    <testcase name=\"{}\" classname=\"trust-chain.{}\" file=\"{}\" line=\"1\" time=\"0\">",
            esc(&c.container),
            esc(&c.container),
            esc(&c.file)
        );
        // A link that no longer holds fails the case; one that could not be checked
        // is an error; a warning passes, said in `system-out`.
        for (level, element) in [
            (FlagLevel::Error, "failure"),
            (FlagLevel::CannotCheck, "error"),
        ] {
            let flags: Vec<&super::ChainFlag> =
                c.flags.iter().filter(|f| f.level == level).collect();
            let Some(first) = flags.first() else {
                continue;
            };
            match level {
                FlagLevel::Error => failures += 1,
                _ => errors += 1,
            }
            let body: Vec<String> = flags
                .iter()
                .map(|f| format!("{}: {}", f.link, f.message))
                .collect();
            let _ = writeln!(
                cases,
                "      <{element} message=\"{}\" type=\"{}\">{}</{element}>",
                esc(&format!("{}: {}", first.link, first.message)),
                super::chain::RULE,
                esc(&body.join("\n"))
            );
            if level == FlagLevel::Error {
                break;
            }
        }
        let mut out = c.lines();
        out.extend(
            c.flags
                .iter()
                .filter(|f| f.level == FlagLevel::Warning)
                .map(|f| format!("warning: {}: {}", f.link, f.message)),
        );
        let _ = write!(
            cases,
            "      <system-out>{}</system-out>\n    </testcase>\n",
            esc(&out.join("\n"))
        );
    }
    let n = r.chains.len();
    let _ = write!(
        suites,
        "  <testsuite name=\"trust chains\" tests=\"{n}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"0\">\n    <properties>\n{props}    </properties>\n{cases}  </testsuite>\n"
    );
    (n, failures, errors)
}
