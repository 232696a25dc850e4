//! The policy model and policy files (DESIGN.md §5): each rule's severity and settings,
//! and the waivers a policy file given with `--policy` may hold.
//!
//! A policy file is strict TOML like the spec: an unknown key, rule or severity is a
//! located error (`FILE:LINE:COL`) with a suggestion. The shipped profiles
//! (`profiles/restricted.toml`, `profiles/baseline.toml`) are compiled in, so the
//! binary needs no data files; a test keeps them complete and parseable.

use std::collections::BTreeMap;
use std::fmt;

use berth_spec::Diagnostic;
use berth_spec::diag::{LineIndex, Location, suggest};
use berth_spec::node::{Waiver, parse_waivers};
use serde::Serialize;
use toml::de::{DeTable, DeValue};

use crate::rule::Rule;

/// How much a rule's violation matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The rule is not evaluated.
    Off,
    /// Reported; never blocks.
    Warning,
    /// Reported; blocks in enforce mode and fails `berth audit`.
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Off => "off",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    fn parse(s: &str) -> Option<Severity> {
        match s {
            "off" => Some(Severity::Off),
            "warning" => Some(Severity::Warning),
            "error" => Some(Severity::Error),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule's setting in a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleConfig {
    pub severity: Severity,
    /// The allow list of the rules that take one; an empty list allows nothing.
    pub allow: Vec<String>,
}

/// A policy: every rule's setting, and the waivers that came with it.
#[derive(Debug, Clone)]
pub struct Policy {
    /// How reports name it: a profile name or the file as given.
    pub name: String,
    pub rules: BTreeMap<Rule, RuleConfig>,
    pub waivers: Vec<Waiver>,
}

/// The shipped profiles, by name.
pub const PROFILES: &[(&str, &str)] = &[
    ("restricted", include_str!("../profiles/restricted.toml")),
    ("baseline", include_str!("../profiles/baseline.toml")),
];

/// The profile used when neither `--policy` nor a node configuration names one.
pub const DEFAULT_PROFILE: &str = "restricted";

const TOP_KEYS: &[&str] = &["description", "extends", "rules", "waiver"];
const RULE_KEYS: &[&str] = &["severity", "allow"];

impl Policy {
    /// A shipped profile (`restricted`, `baseline`), or `None` for another name.
    pub fn profile(name: &str) -> Option<Policy> {
        let (_, text) = PROFILES.iter().find(|(n, _)| *n == name)?;
        let mut p = Policy::parse_base(&format!("profiles/{name}.toml"), text, None).ok()?;
        p.name = name.to_string();
        Some(p)
    }

    /// The setting of a rule (`off` when a policy does not know it).
    pub fn rule(&self, rule: Rule) -> RuleConfig {
        self.rules.get(&rule).cloned().unwrap_or(RuleConfig {
            severity: Severity::Off,
            allow: Vec::new(),
        })
    }

    /// The rules that are not `off`, in report order.
    pub fn enabled(&self) -> Vec<Rule> {
        Rule::ALL
            .into_iter()
            .filter(|r| self.rule(*r).severity != Severity::Off)
            .collect()
    }

    /// Parses a policy file; `file` names it in diagnostics and reports. Rules the file
    /// does not set keep the setting of the profile it `extends` (default `restricted`),
    /// so a forgotten rule is never silently off.
    pub fn parse(file: &str, text: &str) -> Result<Policy, Vec<Diagnostic>> {
        let base = Policy::profile(DEFAULT_PROFILE);
        Policy::parse_base(file, text, base)
    }

    fn parse_base(file: &str, text: &str, base: Option<Policy>) -> Result<Policy, Vec<Diagnostic>> {
        let idx = LineIndex::new(text);
        let loc = |span: std::ops::Range<usize>| {
            let (line, column) = idx.position(text, span.start);
            Location {
                file: file.to_string(),
                line,
                column,
            }
        };
        let mut diags = Vec::new();
        let doc = DeTable::parse(text).map_err(|e| {
            let msg = e.message().trim().trim_end_matches('.').to_string();
            vec![Diagnostic::new(
                &loc(e.span().unwrap_or(0..0)),
                format!("TOML syntax error: {msg}"),
            )]
        })?;
        let mut rules = base.map(|b| b.rules).unwrap_or_default();
        for (k, v) in doc.get_ref().iter() {
            let key: &str = k.get_ref();
            let at = loc(k.span());
            match (key, v.get_ref()) {
                ("description", DeValue::String(_)) | ("waiver", _) => {}
                ("extends", DeValue::String(name)) => match Policy::profile(name) {
                    // `extends` replaces the default base; rules set below override it.
                    Some(p) => {
                        for (r, c) in p.rules {
                            rules.insert(r, c);
                        }
                    }
                    None => diags.push(
                        Diagnostic::new(
                            &loc(v.span()),
                            format!(
                                "unknown profile `{name}` in `extends`: expected `restricted` or `baseline`"
                            ),
                        )
                        .key("extends"),
                    ),
                },
                ("rules", DeValue::Table(_)) => {}
                ("description" | "extends" | "rules", other) => diags.push(
                    Diagnostic::new(
                        &at,
                        format!("`{key}` must be {}, found {}", want(key), type_name(other)),
                    )
                    .key(key),
                ),
                _ => diags.push(unknown(&at, key, "", TOP_KEYS)),
            }
        }
        let rules_table = doc.get_ref().iter().find_map(|(k, v)| {
            let key: &str = k.get_ref();
            match v.get_ref() {
                DeValue::Table(t) if key == "rules" => Some(t),
                _ => None,
            }
        });
        if let Some(t) = rules_table {
            for (k, v) in t.iter() {
                let id: &str = k.get_ref();
                let at = loc(k.span());
                let Some(rule) = Rule::from_id(id) else {
                    diags.push(unknown(&at, id, "rules.", &Rule::ids()));
                    continue;
                };
                let key = format!("rules.{id}");
                match rule_config(rule, v.get_ref(), &key, &loc, v.span(), &mut diags) {
                    Some(c) => {
                        rules.insert(rule, c);
                    }
                    None => continue,
                }
            }
        }
        let waivers = match parse_waivers(file, text) {
            Ok(w) => w,
            Err(d) => {
                diags.extend(d);
                Vec::new()
            }
        };
        diags.extend(check_waivers(&waivers));
        for r in Rule::ALL {
            if !rules.contains_key(&r) {
                diags.push(
                    Diagnostic::new(
                        &loc(0..0),
                        format!("rule `{r}` is not set: set it in [rules] or use `extends`"),
                    )
                    .key(format!("rules.{r}")),
                );
            }
        }
        if !diags.is_empty() {
            berth_spec::diag::sort(&mut diags);
            return Err(diags);
        }
        Ok(Policy {
            name: file.to_string(),
            rules,
            waivers,
        })
    }
}

fn want(key: &str) -> &'static str {
    if key == "rules" {
        "a table"
    } else {
        "a string"
    }
}

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn unknown(at: &Location, key: &str, prefix: &str, allowed: &[&str]) -> Diagnostic {
    let what = if prefix == "rules." { "rule" } else { "key" };
    let mut msg = format!("unknown {what} `{prefix}{key}`");
    match suggest(key, allowed) {
        Some(s) => msg.push_str(&format!(", did you mean `{s}`?")),
        None => msg.push_str(&format!(" (expected one of: {})", allowed.join(", "))),
    }
    Diagnostic::new(at, msg).key(format!("{prefix}{key}"))
}

fn severity(
    v: &DeValue<'_>,
    key: &str,
    at: &Location,
    diags: &mut Vec<Diagnostic>,
) -> Option<Severity> {
    match v {
        DeValue::String(s) => Severity::parse(s).or_else(|| {
            diags.push(
                Diagnostic::new(
                    at,
                    format!(
                        "invalid severity `{s}` for `{key}`: expected `error`, `warning` or `off`"
                    ),
                )
                .key(key),
            );
            None
        }),
        other => {
            diags.push(
                Diagnostic::new(
                    at,
                    format!(
                        "`{key}` must be a severity (\"error\", \"warning\", \"off\") or a table {{ severity, allow }}, found {}",
                        type_name(other)
                    ),
                )
                .key(key),
            );
            None
        }
    }
}

fn rule_config(
    rule: Rule,
    v: &DeValue<'_>,
    key: &str,
    loc: &dyn Fn(std::ops::Range<usize>) -> Location,
    span: std::ops::Range<usize>,
    diags: &mut Vec<Diagnostic>,
) -> Option<RuleConfig> {
    let at = loc(span);
    let DeValue::Table(t) = v else {
        let sev = severity(v, key, &at, diags)?;
        if rule.info().has_allow && sev != Severity::Off {
            diags.push(
                Diagnostic::new(
                    &at,
                    format!("`{key}` needs an allow list: write `{{ severity = \"{sev}\", allow = [...] }}`"),
                )
                .key(key),
            );
            return None;
        }
        return Some(RuleConfig {
            severity: sev,
            allow: Vec::new(),
        });
    };
    let mut sev = None;
    let mut allow = None;
    for (k, val) in t.iter() {
        let name: &str = k.get_ref();
        let kat = loc(k.span());
        match name {
            "severity" => {
                sev = severity(
                    val.get_ref(),
                    &format!("{key}.severity"),
                    &loc(val.span()),
                    diags,
                )
            }
            "allow" if rule.info().has_allow => match val.get_ref() {
                DeValue::Array(items) => {
                    let mut out = Vec::new();
                    for item in items.iter() {
                        match item.get_ref() {
                            DeValue::String(s) => out.push(s.to_string()),
                            other => diags.push(
                                Diagnostic::new(
                                    &loc(item.span()),
                                    format!(
                                        "`{key}.allow` must be an array of strings, found {}",
                                        type_name(other)
                                    ),
                                )
                                .key(format!("{key}.allow")),
                            ),
                        }
                    }
                    allow = Some(out);
                }
                other => diags.push(
                    Diagnostic::new(
                        &loc(val.span()),
                        format!(
                            "`{key}.allow` must be an array of strings, found {}",
                            type_name(other)
                        ),
                    )
                    .key(format!("{key}.allow")),
                ),
            },
            "allow" => diags.push(
                Diagnostic::new(&kat, format!("rule `{rule}` takes no `allow` list"))
                    .key(format!("{key}.allow")),
            ),
            _ => diags.push(unknown(&kat, name, &format!("{key}."), RULE_KEYS)),
        }
    }
    let Some(severity) = sev else {
        diags.push(
            Diagnostic::new(&at, format!("missing required key `{key}.severity`"))
                .key(format!("{key}.severity")),
        );
        return None;
    };
    if rule.info().has_allow && allow.is_none() && severity != Severity::Off {
        diags.push(
            Diagnostic::new(&at, format!("missing required key `{key}.allow`"))
                .key(format!("{key}.allow")),
        );
        return None;
    }
    Some(RuleConfig {
        severity,
        allow: allow.unwrap_or_default(),
    })
}

/// Located errors for waivers that name no known rule (in a policy file or a node
/// configuration: waivers come from both and merge).
pub fn check_waivers(waivers: &[Waiver]) -> Vec<Diagnostic> {
    waivers
        .iter()
        .filter(|w| Rule::from_id(&w.rule).is_none())
        .map(|w| {
            let hint = suggest(&w.rule, &Rule::ids())
                .map(|s| format!(", did you mean `{s}`?"))
                .unwrap_or_default();
            Diagnostic::new(
                &w.origin,
                format!("waiver for unknown rule `{}`{hint}", w.rule),
            )
            .key("rule")
        })
        .collect()
}
