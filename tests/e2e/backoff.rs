//! Crash-loop backoff through `berth apply`: the restart history is kept in the state
//! directory, so each new berth process knows how often the container crashed.

use std::time::{Duration, Instant};

use berth_e2e::live::LiveNode;

fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no line for {name}:\n{out}"))
}

/// Waits until `berth ps -a` shows the container exited.
fn wait_exited(node: &LiveNode, name: &str) {
    let start = Instant::now();
    loop {
        let r = node.berth(&["ps", "-a", "--format", "json"]);
        let ps: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
        let exited = ps.as_array().is_some_and(|a| {
            a.iter().any(|c| {
                c["name"] == name
                    && c["status"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("exited"))
            })
        });
        if exited {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{name} never exited: {ps}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_crashing_container_waits_out_its_backoff_across_berth_processes() {
    let Some(node) = LiveNode::start("[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n", "")
    else {
        return;
    };
    node.write_spec(
        "flaky.toml",
        "[container.flaky]\nimage = \"IMAGE\"\nuser = \"10001:10001\"\n\
         command = [\"sh\", \"-c\", \"exit 1\"]\nrestart = \"always\"\n",
    );
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        line(&r.stdout, "flaky").starts_with("flaky: created"),
        "{}",
        r.stdout
    );
    wait_exited(&node, "flaky");

    // Right after the crash: deferred, with the time it is due.
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let l = line(&r.stdout, "flaky");
    assert!(
        l.contains("restart deferred until ") && l.contains("backoff 10s"),
        "{l}"
    );
    let json = node.berth(&["apply", "--format", "json", &node.spec.to_string_lossy()]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["containers"]["flaky"]["outcome"], "deferred", "{v}");
    // Due later: not converged, yet not a failure (exit 0); times in RFC 3339.
    assert_eq!(json.code, 0, "{}", json.stderr);
    assert_eq!(v["converged"], false, "{v}");
    assert!(
        v["next_pass"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{v}"
    );
    assert_eq!(v["next_pass"], v["containers"]["flaky"]["until"], "{v}");

    // Once due it restarts; the exit went into the history on disk.
    std::thread::sleep(Duration::from_secs(11));
    let r = node.apply();
    assert!(
        line(&r.stdout, "flaky").starts_with("flaky: started"),
        "{}",
        r.stdout
    );
    let history = std::fs::read_to_string(node.state().join("containers/flaky/history.json"))
        .expect("a restart history");
    assert!(history.contains("\"code\": 1"), "{history}");
    wait_exited(&node, "flaky");

    // A new berth process reads it back: the second delay is twice the first.
    let r = node.apply();
    let l = line(&r.stdout, "flaky");
    assert!(
        l.contains("restart deferred until ") && l.contains("backoff 20s"),
        "{l}"
    );
}
