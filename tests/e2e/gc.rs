//! Garbage collection end to end, as root: `berth agent --once` follows a `file://`
//! repository with `runtime.gc_grace = "0s"` through ten revisions that each give the
//! container `web` another image (ten images built from busybox, in a loopback
//! registry), while `db` keeps the demo image and the instance of its first revision.
//! After each, only what is in use is left: the two images and their blobs, their three
//! snapshots (the busybox layer is shared), the two instances and the one revision the
//! containers run (an unchanged container is vouched for by each new revision, so the
//! revision it was created from is not kept for it) — so the disk use does not grow
//! with the revisions — and both containers run.

use std::collections::BTreeSet;
use std::path::Path;

use berth_e2e::fixture::{self, ImageSpec};
use berth_e2e::git::GitRepo;
use berth_e2e::live::LiveNode;
use berth_e2e::registry::TestRegistry;
use serde_json::Value;

/// Audit mode: the test is about what is collected, not the policy.
const POLICY: &str = "[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n";
const REVISIONS: usize = 10;

/// `fleet/NAME.toml`: `sleep` in `image` (as PID 1 it ignores SIGTERM: SIGKILL it).
fn write_container(repo: &GitRepo, name: &str, image: &str) {
    repo.write(
        &format!("fleet/{name}.toml"),
        &format!(
            "[container.{name}]\nimage = \"{image}\"\nuser = \"10001:10001\"\n\
             command = [\"sleep\", \"1000\"]\nstop_signal = \"SIGKILL\"\n"
        ),
    );
}

/// The names in `dir` (none when it does not exist).
fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The container records, by name.
fn records(state: &Path) -> Vec<Value> {
    entries(&state.join("containers"))
        .iter()
        .map(|name| json(&state.join("containers").join(name).join("state.json")))
        .collect()
}

/// Asserts the state directory holds what the containers use and nothing more.
fn assert_only_what_is_in_use(state: &Path, revisions_in_use: &BTreeSet<String>, when: &str) {
    let records = records(state);
    assert_eq!(records.len(), 2, "{when}: {records:?}");
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };

    let instances: BTreeSet<String> = records
        .iter()
        .map(|r| r["instance"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(entries(&state.join("instances")), instances, "{when}");

    // Images: one record per image a container runs, and only their blobs.
    let images: Vec<Value> = entries(&state.join("content/images"))
        .iter()
        .map(|f| json(&state.join("content/images").join(f)))
        .collect();
    let digests: BTreeSet<&str> = records
        .iter()
        .map(|r| r["image"]["digest"].as_str().unwrap())
        .collect();
    let pulled: BTreeSet<&str> = images
        .iter()
        .map(|i| i["manifest"]["digest"].as_str().unwrap())
        .collect();
    assert_eq!(pulled, digests, "{when}: image records");
    let mut blobs = BTreeSet::new();
    for i in &images {
        blobs.insert(i["manifest"]["digest"].as_str().unwrap().to_string());
        blobs.insert(i["config"]["digest"].as_str().unwrap().to_string());
        for l in i["layers"].as_array().unwrap() {
            blobs.insert(l["digest"].as_str().unwrap().to_string());
        }
    }
    let stored: BTreeSet<String> = entries(&state.join("content/blobs/sha256"))
        .iter()
        .map(|hex| format!("sha256:{hex}"))
        .collect();
    assert_eq!(stored, blobs, "{when}: blobs");

    // Snapshots: the chains the containers run (busybox, demo's /etc, web's /etc).
    let chains: BTreeSet<String> = records
        .iter()
        .flat_map(|r| strs(&r["image"]["chain_ids"]))
        .collect();
    assert_eq!(chains.len(), 3, "{when}: {chains:?}");
    let metadata = json(&state.join("snapshots/metadata.json"));
    let known: BTreeSet<String> = metadata["snapshots"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(known, chains, "{when}: snapshot metadata");
    let dirs = entries(&state.join("snapshots"))
        .iter()
        .filter(|n| n.parse::<u64>().is_ok())
        .count();
    assert_eq!(dirs, chains.len(), "{when}: snapshot directories");

    assert_eq!(
        &entries(&state.join("source/revisions")),
        revisions_in_use,
        "{when}: revisions"
    );
    let ledger = json(&state.join("state/gc.json"));
    assert_eq!(ledger["unused_since"], serde_json::json!({}), "{when}");
}

#[test]
fn ten_revisions_that_each_change_an_image_leave_only_what_is_in_use() {
    let Some(reg) = TestRegistry::start() else {
        return;
    };
    let extra = format!(
        "gc_grace = \"0s\"\n[registries.\"{}\"]\ninsecure = true\n",
        reg.host()
    );
    let Some(node) = LiveNode::start(POLICY, &extra) else {
        return;
    };
    let Some(repo) = GitRepo::new() else {
        return;
    };
    let started = std::time::Instant::now();
    let images: Vec<String> = (1..=REVISIONS)
        .map(|i| {
            let spec = ImageSpec {
                files: vec![("etc/release".into(), format!("{i}\n").into_bytes())],
                ..ImageSpec::default()
            };
            let digest = fixture::push(
                &reg,
                "berth/web",
                &format!("v{i}"),
                &fixture::busybox(&spec),
            );
            format!("{}/berth/web@{digest}", reg.host())
        })
        .collect();
    let config = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        format!(
            "{config}\n[source]\nurl = {:?}\nbranch = \"main\"\npath = \"fleet\"\n",
            repo.file_url()
        ),
    )
    .unwrap();

    let state = node.state();
    let mut db_instance: Option<String> = None;
    let mut freed = 0;
    for (i, image) in images.iter().enumerate() {
        if i == 0 {
            write_container(&repo, "db", &node.image);
        }
        write_container(&repo, "web", image);
        let commit = repo.commit(&format!("web: release {}", i + 1));
        repo.push();

        let r = node.berth(&["agent", "--once", "--format", "json"]);
        assert_eq!(r.code, 0, "revision {}: {}{}", i + 1, r.stdout, r.stderr);
        let report: Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("revision {}: {e}: {}", i + 1, r.stdout));
        let gc = &report["gc"];
        assert_eq!(gc["kept_waiting"], 0, "{gc}");
        if i > 0 {
            // The image web ran before went, with its own layer and blobs.
            let removed: Vec<(&str, &str)> = gc["removed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["kind"].as_str().unwrap(), r["id"].as_str().unwrap()))
                .collect();
            let before = &images[i - 1];
            let digest = before.rsplit('@').next().unwrap();
            assert!(
                removed
                    .iter()
                    .any(|(k, id)| *k == "image" && id.ends_with(digest)),
                "revision {}: {gc}",
                i + 1
            );
            assert_eq!(
                removed.iter().filter(|(k, _)| *k == "snapshot").count(),
                1,
                "revision {}: {gc}",
                i + 1
            );
            assert!(gc["freed_bytes"].as_u64().unwrap() > 0, "{gc}");
            freed += gc["freed_bytes"].as_u64().unwrap();
            // Each removal is logged.
            assert!(
                r.stderr.contains("removed") && r.stderr.contains(digest),
                "revision {}: {}",
                i + 1,
                r.stderr
            );
        }
        // db was not touched: the same instance throughout.
        let db = node
            .instances()
            .remove("db")
            .unwrap_or_else(|| panic!("revision {}: db is not listed", i + 1));
        assert_eq!(
            db_instance.get_or_insert_with(|| db.clone()),
            &db,
            "revision {}: db was recreated",
            i + 1
        );
        let in_use: BTreeSet<String> = [commit].into_iter().collect();
        assert_only_what_is_in_use(&state, &in_use, &format!("after revision {}", i + 1));
    }

    // Both run, web the last release.
    let ps = node.ps();
    let running: BTreeSet<&str> = ps
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "running")
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(running, BTreeSet::from(["db", "web"]), "{ps}");
    assert_eq!(node.exec_ok("web", &["cat", "/etc/release"]), "10\n");
    eprintln!(
        "gc: {REVISIONS} revisions in {:.1}s, {freed} bytes freed",
        started.elapsed().as_secs_f64()
    );
}
