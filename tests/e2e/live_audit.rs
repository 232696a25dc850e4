//! The agent's live audit report end to end, as root: an agent following a Git
//! repository (`file://`) runs a compliant container and one that breaks several
//! rules (the node's policy is in audit mode, so both run). Then:
//! - after every pass the agent writes `state/audit.json` (its `live.generated_at`
//!   moves on with the passes), for the revision applied;
//! - `berth audit --live --format json`, while the agent runs, is the agent's report
//!   (`live.source` `agent`), and judges every container as offline `berth audit`
//!   judges the applied revision's checkout: the same containers, and per container
//!   the same findings (rule, severity, status, key, message);
//! - `GET /v1/audit` on the socket (`curl`) is the file, byte for byte, and so is the
//!   CLI's JSON (the report read back renders the same);
//! - both outputs, and the agent's file, validate against
//!   `policies/report.schema.json` with Python's `jsonschema` (draft 2020-12, formats
//!   checked);
//! - with the agent stopped, `berth audit --live` makes the report from the state
//!   directory (`live.source` `state-directory`), with the same findings.
//!
//!
//! And after `berth apply DIR` while the agent runs (suspended: its report stays the
//! one of its last pass), `berth audit --live` is not the agent's stale report but one
//! made from the state directory: the instances `berth apply` made, applied from a
//! directory, no revision.
//!
//! The nodes' `default` networks are 10.251.85.0/24 and 10.251.86.0/24.
//!
//! Debian packages: `git`, `curl`, `docker-registry`, `runc`; Python: `jsonschema`.

use std::collections::BTreeMap;
use std::process::Command;

use berth_e2e::agentd::poll;
use berth_e2e::{Run, api_get, have_tools, missing, workspace_root};
use serde_json::Value;

use crate::agent_daemon::{CONVERGE, Host, SPECS};

fn show(r: &Run) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        r.code, r.stdout, r.stderr
    )
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(r)))
}

/// `curl --unix-socket <run>/api.sock http://localhost/v1/audit`: the body.
fn curl_audit(h: &Host) -> String {
    api_get(&h.node.run_dir().join("api.sock"), "/v1/audit").1
}

/// Validates each document against `policies/report.schema.json` with Python's
/// `jsonschema`; false when the package is missing (a failure in CI).
fn conforms(docs: &[(&str, &str)]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let mut args = Vec::new();
    for (i, (what, text)) in docs.iter().enumerate() {
        let path = dir.path().join(format!("{i}.json"));
        std::fs::write(&path, text).unwrap();
        args.push(what.to_string());
        args.push(path.to_string_lossy().into_owned());
    }
    let script = r#"
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
bad = 0
for what, path in zip(sys.argv[2::2], sys.argv[3::2]):
    for e in v.iter_errors(json.load(open(path))):
        bad += 1
        print(f"{what}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
sys.exit(1 if bad else 0)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(workspace_root().join("policies/report.schema.json"))
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("ModuleNotFoundError") {
        return !missing(&format!("the python package jsonschema: {err}"));
    }
    assert!(
        out.status.success(),
        "the reports do not conform to report.schema.json:\n{}{err}",
        String::from_utf8_lossy(&out.stdout)
    );
    true
}

/// Per container, its findings as (rule, severity, status, key, message), sorted.
type Judged = BTreeMap<String, Vec<(String, String, String, String, String)>>;

/// How a report judges each container it audited: every audited container is a key,
/// a compliant one with no findings.
fn judged(doc: &Value) -> Judged {
    let mut out: Judged = doc["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("no containers in {doc:#}"))
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), Vec::new()))
        .collect();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    for f in doc["findings"].as_array().unwrap() {
        let name = s(&f["name"]);
        out.get_mut(&name)
            .unwrap_or_else(|| panic!("a finding of {name}, which was not audited: {doc:#}"))
            .push((
                s(&f["rule"]),
                s(&f["severity"]),
                s(&f["status"]),
                s(&f["key"]),
                s(&f["message"]),
            ));
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// The agent's report file.
fn report_file(h: &Host) -> Option<String> {
    std::fs::read_to_string(h.node.state().join("state/audit.json")).ok()
}

#[test]
fn the_agents_live_report_judges_what_runs_as_the_offline_audit_judges_the_revision() {
    if !have_tools(&["curl", "python3"]) {
        return;
    }
    let Some(mut h) = Host::on("10.251.85", "") else {
        return;
    };
    // web: compliant but for its image (no digest, no signature); loose: runs as root
    // with every default left open.
    h.repo.write(
        &format!("{SPECS}/web.toml"),
        &format!(
            "[container.web]\nimage = \"{}\"\nuser = \"10001:10001\"\n\
             command = [\"sleep\", \"1000\"]\nstop_signal = \"SIGKILL\"\n\
             read_only = true\ncap_drop = [\"ALL\"]\n\
             resources = {{ memory = \"16MiB\", pids = 16 }}\n",
            h.node.image
        ),
    );
    h.repo.write(
        &format!("{SPECS}/loose.toml"),
        &format!(
            "[container.loose]\nimage = \"{}\"\nuser = \"0\"\n\
             command = [\"sleep\", \"1000\"]\nstop_signal = \"SIGKILL\"\n\
             env = {{ DB_PASSWORD = \"hunter2\" }}\n",
            h.node.image
        ),
    );
    let commit = h.push("web and loose");
    h.follow(&h.repo.file_url());
    h.start();
    h.wait_converged(&commit);
    let context = |h: &Host| {
        format!(
            "audit.json: {:?}\nagent log:\n{}",
            report_file(h),
            h.agent.as_ref().map(|a| a.log()).unwrap_or_default()
        )
    };

    // The report of a pass on the revision, and a later pass's: one after every pass.
    let first = poll(
        "the agent's audit report of the revision",
        CONVERGE,
        || {
            let doc: Value = serde_json::from_str(&report_file(&h)?).ok()?;
            (doc["live"]["revision"] == commit.as_str()).then_some(doc)
        },
        || context(&h),
    );
    assert_eq!(first["live"]["source"], "agent", "{first:#}");
    let at = first["live"]["generated_at"].clone();
    poll(
        "the report of a later pass (runtime.resync is 2 s)",
        CONVERGE,
        || {
            let doc: Value = serde_json::from_str(&report_file(&h)?).ok()?;
            (doc["live"]["generated_at"] != at).then_some(())
        },
        || context(&h),
    );

    // No more passes: the file, the API and the CLI can be compared.
    let suspended = h.node.berth(&["suspend"]);
    assert_eq!(suspended.code, 0, "{}", show(&suspended));
    let file = report_file(&h).unwrap();
    let served = curl_audit(&h);
    assert_eq!(served, file, "GET /v1/audit is the file");
    let live = h.node.berth(&["audit", "--live", "--format", "json"]);
    assert_eq!(
        live.stdout,
        file,
        "the CLI shows the agent's report\n{}",
        show(&live)
    );
    let live_doc = json(&live);
    assert_eq!(live_doc["live"]["source"], "agent");
    assert_eq!(live_doc["live"]["revision"], commit.as_str());
    let chained: Vec<&str> = live_doc["trust_chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["container"].as_str().unwrap())
        .collect();
    assert_eq!(chained, ["loose", "web"], "{live_doc:#}");
    for c in live_doc["trust_chains"].as_array().unwrap() {
        assert_eq!(c["commit"], commit.as_str(), "{c:#}");
    }
    let text = h.node.berth(&["audit", "--live"]);
    assert!(
        text.stdout
            .starts_with("live: the agent's report after its pass at "),
        "{}",
        show(&text)
    );

    // Offline, the applied revision's checkout.
    let checkout = h
        .node
        .state()
        .join("source/revisions")
        .join(&commit)
        .join(SPECS);
    assert!(checkout.is_dir(), "{}", checkout.display());
    let offline = h
        .node
        .berth(&["audit", &checkout.to_string_lossy(), "--format", "json"]);
    assert_eq!(
        offline.code,
        live.code,
        "{}\n{}",
        show(&offline),
        show(&live)
    );
    assert_eq!(
        live.code,
        1,
        "loose breaks error-level rules: {}",
        show(&live)
    );
    let offline_doc = json(&offline);
    assert!(offline_doc.get("live").is_none(), "{offline_doc:#}");
    let (want, got) = (judged(&offline_doc), judged(&live_doc));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        ["loose", "web"],
        "{offline_doc:#}"
    );
    assert!(
        want["loose"]
            .iter()
            .any(|f| f.0 == "run-as-non-root" && f.2 == "violation"),
        "{want:#?}"
    );
    assert_eq!(got, want, "live and offline judge the containers alike");
    assert_eq!(live_doc["summary"], offline_doc["summary"]);
    assert_eq!(live_doc["rules"], offline_doc["rules"]);

    if !conforms(&[
        ("the agent's file", &file),
        ("berth audit --live", &live.stdout),
        ("berth audit (offline)", &offline.stdout),
    ]) {
        return;
    }

    // Without the agent: made from the state directory, judging alike.
    h.agent.as_mut().unwrap().terminate();
    let state = h.node.berth(&["audit", "--live", "--format", "json"]);
    assert_eq!(state.code, 1, "{}", show(&state));
    assert_eq!(state.stderr, "", "no agent is no warning: {}", show(&state));
    let state_doc = json(&state);
    assert_eq!(state_doc["live"]["source"], "state-directory");
    assert_eq!(state_doc["live"]["revision"], commit.as_str());
    assert_eq!(judged(&state_doc), want);
    assert!(conforms(&[(
        "berth audit --live (state directory)",
        &state.stdout
    )]));
}

/// Finding: after `berth apply DIR` (deploying on an agent without a source), the
/// agent's report, written only after its passes, left out the containers it made and
/// showed the chains of the commit forgotten, until the agent's next pass.
#[test]
fn after_berth_apply_dir_the_live_report_is_what_runs_not_the_agents_last_pass() {
    let Some(mut h) = Host::on("10.251.86", "") else {
        return;
    };
    h.sleeper("web", 1000);
    let commit = h.push("web");
    h.follow(&h.repo.file_url());
    h.start();
    h.wait_converged(&commit);
    poll(
        "the agent's audit report of the revision",
        CONVERGE,
        || {
            let doc: Value = serde_json::from_str(&report_file(&h)?).ok()?;
            (doc["live"]["revision"] == commit.as_str()).then_some(())
        },
        || format!("audit.json: {:?}", report_file(&h)),
    );
    // No more passes: the agent's report stays the one of its last pass.
    let suspended = h.node.berth(&["suspend"]);
    assert_eq!(suspended.code, 0, "{}", show(&suspended));
    let agents = report_file(&h).unwrap();
    let live = h.node.berth(&["audit", "--live", "--format", "json"]);
    assert_eq!(live.stdout, agents, "current: the agent's\n{}", show(&live));
    let old_web = h.node.instance("web").unwrap();

    // `berth apply DIR`: web changed, and a new container.
    let dir = tempfile::tempdir().unwrap();
    for (name, secs) in [("web", 2000), ("extra", 1000)] {
        std::fs::write(
            dir.path().join(format!("{name}.toml")),
            format!(
                "[container.{name}]\nimage = \"{}\"\nuser = \"10001:10001\"\n\
                 command = [\"sleep\", \"{secs}\"]\nstop_signal = \"SIGKILL\"\n",
                h.node.image
            ),
        )
        .unwrap();
    }
    let applied = h.node.berth(&["apply", &dir.path().to_string_lossy()]);
    assert_eq!(applied.code, 0, "{}", show(&applied));
    let new_web = h.node.instance("web").unwrap();
    assert_ne!(new_web, old_web, "web was recreated");
    assert_eq!(report_file(&h).unwrap(), agents, "the agent made no pass");

    let live = h.node.berth(&["audit", "--live", "--format", "json"]);
    assert!(
        live.stderr
            .contains("what runs changed since the agent's last pass"),
        "{}",
        show(&live)
    );
    let doc = json(&live);
    assert_eq!(doc["live"]["source"], "state-directory", "{doc:#}");
    assert!(doc["live"]["revision"].is_null(), "forgotten: {doc:#}");
    let chains: BTreeMap<&str, &Value> = doc["trust_chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["container"].as_str().unwrap(), c))
        .collect();
    assert_eq!(
        chains.keys().copied().collect::<Vec<_>>(),
        ["extra", "web"],
        "{doc:#}"
    );
    for (name, c) in &chains {
        assert_eq!(
            c["instance"].as_str(),
            h.node.instance(name).as_deref(),
            "{c:#}"
        );
        assert!(c["commit"].is_null(), "{c:#}");
        assert_eq!(
            c["commit_signer"]["status"], "applied-from-directory",
            "{c:#}"
        );
    }
}
