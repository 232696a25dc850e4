//! The reconcile pass as its callers see it: `berth plan` agrees with `berth apply`
//! (same facts, same verdicts, same reasons), and the state lock names its holder and
//! gives up after `--lock-timeout`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_e2e::live::LiveNode;
use berth_e2e::run_berth;

/// A container the restricted profile allows but for its image's signature.
pub(crate) const WEB: &str = r#"
[container.web]
image = "IMAGE"
command = ["/bin/sleep", "3600"]
user = "10001:10001"
read_only = true
cap_drop = ["ALL"]
resources = { memory = "16MiB", pids = 16 }
stop_signal = "SIGKILL"
"#;

/// The reason `berth plan --format json` gives for a blocked container.
fn plan_reason(v: &serde_json::Value, name: &str) -> Option<String> {
    v["steps"].as_array()?.iter().find_map(|s| {
        (s["action"] == "report" && s["name"] == name && s["kind"] == "blocked")
            .then(|| s["reason"].as_str().map(str::to_string))
            .flatten()
    })
}

#[test]
fn plan_agrees_with_apply_on_an_unsigned_image_under_enforce() {
    let keys = tempfile::tempdir().unwrap();
    let r = run_berth(keys.path(), &["key", "generate", "release"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let public = keys.path().join("release.pub");
    let Some(node) = LiveNode::start(
        &format!(
            "[policy]\nprofile = \"restricted\"\nmode = \"enforce\"\ntrusted_keys = [{:?}]\n",
            public.display().to_string()
        ),
        "",
    ) else {
        return;
    };
    node.write_spec("web.toml", WEB);
    let spec = node.spec.to_string_lossy().to_string();

    // A fresh state directory: nothing pulled, so `plan` must ask the registry.
    let plan = node.berth(&["plan", &spec, "--format", "json"]);
    assert_eq!(plan.code, 1, "{}{}", plan.stdout, plan.stderr);
    let v: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let planned = plan_reason(&v, "web").unwrap_or_else(|| panic!("not blocked: {v:#}"));
    assert!(planned.contains("image-signature"), "{planned}");
    assert!(
        planned.contains("no signature was found in the registry"),
        "{planned}"
    );
    assert_eq!(v["containers"]["web"]["outcome"], "blocked", "{v:#}");
    // Nothing was pulled or written by `plan`, not even the stores' directories.
    for dir in ["containers", "content", "snapshots"] {
        assert!(!node.state().join(dir).exists(), "plan created {dir}");
    }

    let text = node.berth(&["plan", &spec]);
    assert!(text.stdout.contains("web  blocked"), "{}", text.stdout);

    let apply = node.berth(&["apply", &spec, "--format", "json"]);
    assert_eq!(apply.code, 1, "{}{}", apply.stdout, apply.stderr);
    let a: serde_json::Value = serde_json::from_str(&apply.stdout).unwrap();
    assert_eq!(a["containers"]["web"]["outcome"], "blocked", "{a:#}");
    assert_eq!(a["containers"]["web"]["reason"], planned.as_str(), "{a:#}");

    // Offline, the pulled image's stored signature record says the same.
    let offline = node.berth(&["plan", &spec, "--offline", "--format", "json"]);
    let o: serde_json::Value = serde_json::from_str(&offline.stdout).unwrap();
    assert_eq!(plan_reason(&o, "web").as_deref(), Some(planned.as_str()));
}

#[test]
fn plan_offline_says_what_it_cannot_know() {
    let keys = tempfile::tempdir().unwrap();
    let r = run_berth(keys.path(), &["key", "generate", "release"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let Some(node) = LiveNode::start(
        &format!(
            "[policy]\nprofile = \"restricted\"\nmode = \"enforce\"\ntrusted_keys = [{:?}]\n",
            keys.path().join("release.pub").display().to_string()
        ),
        "",
    ) else {
        return;
    };
    node.write_spec("web.toml", WEB);
    let spec = node.spec.to_string_lossy().to_string();
    let plan = node.berth(&["plan", &spec, "--offline"]);
    // The signature decides under enforce: neither a create nor a start, and exit 1
    // as `apply` would (it blocks the unsigned image).
    assert_eq!(plan.code, 1, "{}{}", plan.stdout, plan.stderr);
    assert!(plan.stdout.contains("web  unknown"), "{}", plan.stdout);
    assert!(!plan.stdout.contains("create "), "{}", plan.stdout);
    assert!(!plan.stdout.contains("start "), "{}", plan.stdout);
    assert!(
        plan.stdout
            .contains("web: not known: the signature of image 127.0.0.1:")
            && plan
                .stdout
                .contains("--offline forbids asking its registry"),
        "{}{}",
        plan.stdout,
        plan.stderr
    );
    let json = node.berth(&["plan", &spec, "--offline", "--format", "json"]);
    assert_eq!(json.code, 1, "{}{}", json.stdout, json.stderr);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let web = &v["containers"]["web"];
    assert_eq!(web["outcome"], "unknown", "{v:#}");
    assert!(
        web["reason"]
            .as_str()
            .is_some_and(|r| r.contains("--offline forbids asking its registry")),
        "{v:#}"
    );

    // A user name resolved in layers that are not pulled: unknown too, online.
    node.write_spec("web.toml", &WEB.replace("10001:10001", "ghost"));
    let ghost = node.berth(&["plan", &spec, "--format", "json"]);
    assert_eq!(ghost.code, 1, "{}{}", ghost.stdout, ghost.stderr);
    let g: serde_json::Value = serde_json::from_str(&ghost.stdout).unwrap();
    assert_eq!(g["containers"]["web"]["outcome"], "unknown", "{g:#}");
    assert!(
        g["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["action"] != "create" && s["action"] != "start"),
        "{g:#}"
    );
}

/// Takes the state lock as a berth would, naming `command` as its holder.
fn hold_lock(state: &Path, command: &str) -> File {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state)
        .unwrap();
    let mut f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(state.join("lock"))
        .unwrap();
    f.try_lock().unwrap();
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let holder = serde_json::json!({"pid": std::process::id(), "command": command, "since": since});
    f.set_len(0).unwrap();
    f.write_all(holder.to_string().as_bytes()).unwrap();
    f
}

#[test]
fn a_second_apply_names_the_holder_then_proceeds_or_gives_up_after_its_timeout() {
    let Some(node) = LiveNode::start("", "") else {
        return;
    };
    let spec = node.spec.to_string_lossy().to_string();
    let who = format!(
        "another berth (pid {}, `berth apply`) holds the state directory since ",
        std::process::id()
    );

    // Past the timeout: exit 3 with the sentence.
    let held = hold_lock(&node.state(), "berth apply");
    let t = Instant::now();
    let r = node.berth(&["--lock-timeout", "1s", "apply", &spec]);
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains(&who), "{}", r.stderr);
    assert!(r.stderr.contains("; waiting"), "{}", r.stderr);
    assert!(r.stderr.contains(" UTC; gave up after 1s"), "{}", r.stderr);

    // The operator commands are writers too: they wait for the lock before they read
    // the record.
    for op in ["stop", "start", "restart", "rm"] {
        let r = node.berth(&["--lock-timeout", "200ms", op, "web"]);
        assert_eq!(r.code, 3, "{op}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(&who), "{op}: {}", r.stderr);
    }

    // Released while it waits: it says once who it waits for, then proceeds.
    let child = berth_e2e::berth()
        .arg("--config")
        .arg(&node.config)
        .args(["apply", &spec])
        .env("BERTH_SHIM_BIN", berth_e2e::shim_bin())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    drop(held);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr.matches(&who).count(), 1, "{stderr}");
    // The lock is free again and names nobody.
    let lock = std::fs::read_to_string(node.state().join("lock")).unwrap();
    assert_eq!(lock, "", "{lock}");
}
