use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

/// docs/metrics.md's table: name → (type, labels, unit).
fn documented() -> BTreeMap<String, (String, Vec<String>, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    let text = std::fs::read_to_string(path).expect("docs/metrics.md");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `berth_")) {
        // No cell holds a `|`.
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert!(cells.len() >= 5, "a row of five cells: {line}");
        let unquote = |c: &str| c.trim().trim_matches('`').to_string();
        let labels = cells[2]
            .split(',')
            .map(unquote)
            .filter(|l| !l.is_empty())
            .collect();
        out.insert(
            unquote(cells[0]),
            (unquote(cells[1]), labels, unquote(cells[3])),
        );
    }
    out
}

/// The exposition's families: family name → (type, unit), from `# TYPE` and `# UNIT`.
fn families(text: &str) -> BTreeMap<String, (String, String)> {
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("#"), Some("TYPE"), Some(name), Some(t)) => {
                out.entry(name.to_string()).or_default().0 = t.to_string();
            }
            (Some("#"), Some("UNIT"), Some(name), Some(u)) => {
                out.entry(name.to_string()).or_default().1 = u.to_string();
            }
            _ => {}
        }
    }
    out
}

/// The value of the sample written exactly `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn every_kind_recorded(m: &Metrics) {
    m.pass(
        PassTrigger::Start,
        PassEnd::Converged,
        Duration::from_millis(300),
        &PassSamples {
            steps: vec![
                StepSample {
                    action: "pull".into(),
                    result: "done".into(),
                    ..Default::default()
                },
                StepSample {
                    action: "start".into(),
                    result: "failed".into(),
                    ..Default::default()
                },
            ],
            pulls: vec![PullSample {
                ok: true,
                bytes: 1000,
                seconds: 2.0,
            }],
            ..Default::default()
        },
    );
    m.fetch(FetchEnd::Fetched);
    m.findings([FindingKey {
        rule: "run-as-non-root",
        severity: "error",
        status: "violation",
    }]);
    m.containers([ContainerSample {
        name: "web",
        state: "running",
        health: Some("healthy"),
        restarts: 0,
    }]);
    m.revision_age(Some(Duration::from_secs(90)));
    m.webhook(202);
}

#[test]
fn webhook_requests_are_counted_by_their_answer() {
    let m = Metrics::new();
    for status in [202, 202, 200, 401, 403, 429, 404, 413, 400] {
        m.webhook(status);
    }
    let text = m.encode();
    for (result, want) in [
        ("accepted", 2.0),
        ("ignored", 1.0),
        ("unauthorized", 2.0),
        ("throttled", 1.0),
        ("refused", 3.0),
    ] {
        let series = format!("berth_webhook_requests_total{{result=\"{result}\"}}");
        assert_eq!(sample(&text, &series), Some(want), "{series} in\n{text}");
    }
}

#[test]
fn the_exposition_is_openmetrics_and_lists_what_the_documentation_lists() {
    let m = Metrics::new();
    every_kind_recorded(&m);
    let text = m.encode();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let families = families(&text);
    let docs = documented();
    assert_eq!(docs.len(), families.len(), "{docs:?}\n{families:?}");
    for (name, (kind, labels, unit)) in &docs {
        // A counter's family is its name without `_total`.
        let family = match kind.as_str() {
            "counter" => name
                .strip_suffix("_total")
                .unwrap_or_else(|| panic!("the counter {name} ends in _total")),
            _ => name.as_str(),
        };
        let (t, u) = families
            .get(family)
            .unwrap_or_else(|| panic!("{family} is documented and not exposed:\n{text}"));
        assert_eq!(t, kind, "{name}'s type");
        assert_eq!(u, unit, "{name}'s unit");
        assert!(name.starts_with("berth_"), "{name}");
        for suffix in ["_seconds", "_bytes"] {
            assert_eq!(
                family.ends_with(suffix),
                unit == suffix.trim_start_matches('_'),
                "{name}: its unit is its suffix"
            );
        }
        // The labels a sample carries are the documented ones.
        for line in text.lines().filter(|l| {
            l.starts_with(family)
                && l[family.len()..].starts_with(['{', ' ', '_'])
                && !l.starts_with('#')
        }) {
            let got: Vec<&str> = line
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'))
                .map(|(ls, _)| {
                    ls.split(',')
                        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                        .filter(|k| *k != "le")
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(got, *labels, "{line}");
        }
    }
}

#[test]
fn a_pass_counts_its_end_trigger_steps_pulls_and_fetch() {
    let m = Metrics::new();
    every_kind_recorded(&m);
    m.pass(
        PassTrigger::Api,
        PassEnd::of("not-converged"),
        Duration::from_secs(40),
        &PassSamples::default(),
    );
    m.fetch(FetchEnd::Unavailable);
    let text = m.encode();
    let got = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("{s} in\n{text}"));
    assert_eq!(
        got(r#"berth_reconcile_passes_total{result="converged",trigger="start"}"#),
        1.0
    );
    assert_eq!(
        got(r#"berth_reconcile_passes_total{result="not_converged",trigger="api"}"#),
        1.0
    );
    assert_eq!(got("berth_reconcile_pass_duration_seconds_count"), 2.0);
    assert_eq!(got("berth_reconcile_pass_duration_seconds_sum"), 40.3);
    assert_eq!(
        got(r#"berth_reconcile_pass_duration_seconds_bucket{le="0.5"}"#),
        1.0
    );
    assert_eq!(
        got(r#"berth_reconcile_steps_total{action="start",result="failed"}"#),
        1.0
    );
    assert_eq!(got(r#"berth_image_pulls_total{result="pulled"}"#), 1.0);
    assert_eq!(got("berth_image_pull_bytes_total"), 1000.0);
    assert_eq!(got("berth_image_pull_duration_seconds_count"), 1.0);
    assert_eq!(got(r#"berth_source_fetches_total{result="fetched"}"#), 1.0);
    assert_eq!(
        got(r#"berth_source_fetches_total{result="unavailable"}"#),
        1.0
    );
    assert_eq!(
        got(r#"berth_policy_findings{rule="run-as-non-root",severity="error",status="violation"}"#),
        1.0
    );
    assert_eq!(got("berth_applied_revision_age_seconds"), 90.0);
    // A pass that judged the tree again replaces the findings.
    m.findings([]);
    assert!(!m.encode().contains("run-as-non-root"));
    for end in ["converged", "not-converged", "observed", "what"] {
        assert!(!PassEnd::of(end).as_str().contains('-'), "{end}");
    }
}

#[test]
fn containers_are_counted_by_state_and_health_and_restarts_since_the_first_look() {
    let m = Metrics::new();
    let c = |name, state, health, restarts| ContainerSample {
        name,
        state,
        health,
        restarts,
    };
    // Restarts made before the agent started are not counted.
    m.containers([
        c("web", "running", Some("healthy"), 4),
        c("db", "exited", None, 2),
    ]);
    let text = m.encode();
    let got = |text: &str, s: &str| sample(text, s).unwrap_or_else(|| panic!("{s} in\n{text}"));
    assert_eq!(got(&text, "berth_container_restarts_total"), 0.0);
    assert_eq!(
        got(
            &text,
            r#"berth_containers{state="running",health="healthy"}"#
        ),
        1.0
    );
    assert_eq!(
        got(&text, r#"berth_containers{state="exited",health="none"}"#),
        1.0
    );
    // Every state is there, 0 when no container is in it.
    assert_eq!(
        got(&text, r#"berth_containers{state="created",health="none"}"#),
        0.0
    );
    // web restarted twice; db was replaced by a new instance (its count went down);
    // cache is new since and restarted once.
    m.containers([
        c("web", "running", Some("unhealthy"), 6),
        c("db", "running", None, 0),
        c("cache", "running", None, 1),
    ]);
    let text = m.encode();
    assert_eq!(got(&text, "berth_container_restarts_total"), 3.0);
    assert_eq!(
        got(&text, r#"berth_containers{state="running",health="none"}"#),
        2.0
    );
    assert_eq!(
        got(&text, r#"berth_containers{state="exited",health="none"}"#),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            r#"berth_containers{state="running",health="healthy"}"#
        ),
        None,
        "{text}"
    );
    m.containers([c("db", "running", None, 1)]);
    assert_eq!(got(&m.encode(), "berth_container_restarts_total"), 4.0);
}

#[test]
fn a_scrape_reads_the_state_directory_and_a_missing_one_is_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = Metrics::new();
    let text = m.scrape(dir.path(), Default::default());
    assert_eq!(
        sample(&text, "berth_applied_revision_age_seconds"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"berth_containers{state="running",health="none"}"#),
        Some(0.0)
    );
    assert_eq!(sample(&text, "berth_container_restarts_total"), Some(0.0));
}

#[test]
fn pulls_are_logged_from_any_thread_and_taken_once() {
    let log = PullLog::default();
    std::thread::scope(|s| {
        for bytes in [1, 2] {
            let log = &log;
            s.spawn(move || {
                log.record(PullSample {
                    ok: true,
                    bytes,
                    seconds: 0.1,
                })
            });
        }
    });
    let mut got: Vec<u64> = log.take().iter().map(|p| p.bytes).collect();
    got.sort_unstable();
    assert_eq!(got, [1, 2]);
    assert!(log.take().is_empty());
}

#[test]
fn passes_steps_and_pulls_are_counted_from_zero() {
    let text = Metrics::new().encode();
    for line in [
        "berth_reconcile_passes_total{result=\"failed\",trigger=\"start\"} 0\n",
        "berth_reconcile_passes_total{result=\"not_converged\",trigger=\"retry\"} 0\n",
        "berth_reconcile_steps_total{action=\"start\",result=\"failed\"} 0\n",
        "berth_reconcile_steps_total{action=\"pull\",result=\"done\"} 0\n",
        "berth_reconcile_steps_total{action=\"report\",result=\"reported\"} 0\n",
        "berth_image_pulls_total{result=\"pulled\"} 0\n",
        "berth_image_pulls_total{result=\"failed\"} 0\n",
    ] {
        assert!(text.contains(line), "{line}in:\n{text}");
    }
    // A pull that never reached a registry is an attempt that failed: counted, and so
    // documented.
    assert!(
        text.contains("# HELP berth_image_pulls Image pull attempts"),
        "{text}"
    );
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .unwrap();
    let row = |name: &str| {
        doc.lines()
            .find(|l| l.starts_with(&format!("| `{name}`")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row("berth_image_pulls_total").contains("attempts"));
    let steps = row("berth_reconcile_steps_total");
    for action in STEP_ACTIONS {
        assert!(steps.contains(&format!("`{action}`")), "{action}");
    }
}

#[test]
fn a_scrape_that_asks_for_the_text_format_gets_it() {
    use Format::{OpenMetrics, Text};
    for (accept, want) in [
        (None, OpenMetrics),
        (Some("*/*"), OpenMetrics),
        (
            Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
            OpenMetrics,
        ),
        (Some("text/plain;version=0.0.4"), Text),
        (Some("Text/Plain"), Text),
    ] {
        assert_eq!(Format::of(accept), want, "{accept:?}");
    }
    let m = Metrics::new();
    let text = m.encode_as(Text);
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# TYPE berth_reconcile_passes_total counter\n"),
        "{text}"
    );
    assert!(m.encode_as(OpenMetrics).ends_with("# EOF\n"));
    assert_eq!(
        Text.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
}
