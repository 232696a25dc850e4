//! Health is observed: `berth apply` probes a container with a health check once after
//! its start (a failure then races the application's start and leaves it `starting`),
//! and every pass probes again each running instance whose last probe is at least an
//! interval old; the result is recorded next to the instance, and `ps` and `inspect`
//! read it. An unhealthy container is restarted per its restart policy.

use berth_e2e::live::LiveNode;

fn ps_health(node: &LiveNode) -> serde_json::Value {
    let r = node.berth(&["ps", "--format", "json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

fn row<'a>(ps: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    ps.as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {ps}"))
}

#[test]
fn apply_probes_once_and_ps_and_inspect_show_the_health() {
    let Some(node) = LiveNode::start("[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n", "")
    else {
        return;
    };
    node.write_spec(
        "health.toml",
        "[container.good]\nimage = \"IMAGE\"\nuser = \"10001:10001\"\n\
         command = [\"sleep\", \"1000\"]\n\
         health = { exec = [\"true\"], interval = \"1s\" }\n\
         [container.bad]\nimage = \"IMAGE\"\nuser = \"10001:10001\"\n\
         command = [\"sleep\", \"1000\"]\n\
         health = { exec = [\"false\"], interval = \"1s\", retries = 1, start_period = \"0s\" }\n\
         [container.plain]\nimage = \"IMAGE\"\nuser = \"10001:10001\"\n\
         command = [\"sleep\", \"1000\"]\n",
    );
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // The probe right after the start does not count a failure: `bad` is starting.
    let ps = ps_health(&node);
    assert_eq!(row(&ps, "bad")["health"], "starting", "{ps}");
    // An interval later, the next apply probes it again, and that failure counts.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("bad: unchanged"), "{}", r.stdout);

    let ps = ps_health(&node);
    assert_eq!(row(&ps, "good")["health"], "healthy", "{ps}");
    assert_eq!(row(&ps, "good")["status"], "running (healthy)", "{ps}");
    assert_eq!(row(&ps, "bad")["health"], "unhealthy", "{ps}");
    assert_eq!(row(&ps, "bad")["status"], "running (unhealthy)", "{ps}");
    assert_eq!(row(&ps, "plain")["health"], serde_json::Value::Null, "{ps}");
    assert_eq!(row(&ps, "plain")["status"], "running", "{ps}");

    let text = node.berth(&["ps"]);
    assert!(
        text.stdout.contains("running (unhealthy)"),
        "{}",
        text.stdout
    );

    let r = node.berth(&["inspect", "bad"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let h = &v["state"]["health"];
    assert_eq!(h["status"], "unhealthy", "{v}");
    assert_eq!(h["failing_streak"], 1, "{v}");
    assert!(h["last_probe"].is_string(), "{v}");
    assert!(
        h["output"].as_str().is_some_and(|o| o.contains("false")),
        "{v}"
    );
    let r = node.berth(&["inspect", "--format", "text", "good"]);
    assert!(
        r.stdout.contains("Health:    healthy (last probe "),
        "{}",
        r.stdout
    );

    // The file next to the instance, private to root.
    use std::os::unix::fs::PermissionsExt;
    let id = node.instance("bad").expect("an instance of bad");
    let file = node.state().join("instances").join(id).join("health.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());

    // An unhealthy container is restarted per its restart policy (`always`), as a
    // failing liveness probe is: stopped and started again, at once the first time;
    // `good` and `plain` are left alone.
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("bad: started"), "{}", r.stdout);
    assert!(r.stdout.contains("good: unchanged"), "{}", r.stdout);
    let ps = node.ps();
    assert_eq!(row(&ps, "bad")["state"], "running", "{ps}");
    assert_eq!(row(&ps, "good")["state"], "running", "{ps}");
}

/// An exec check that hangs is killed at its timeout: `berth apply` does not wait for
/// it, and the failure counts (`restart = "no"` keeps the unhealthy container running).
#[test]
fn a_hanging_exec_check_is_cut_at_its_timeout() {
    let Some(node) = LiveNode::start("[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n", "")
    else {
        return;
    };
    node.write_spec(
        "hang.toml",
        "[container.hang]\nimage = \"IMAGE\"\nuser = \"10001:10001\"\n\
         command = [\"sleep\", \"1000\"]\nrestart = \"no\"\n\
         health = { exec = [\"sleep\", \"600\"], interval = \"1s\", timeout = \"1s\", retries = 1, start_period = \"0s\" }\n",
    );
    for _ in 0..2 {
        let start = std::time::Instant::now();
        let r = node.apply();
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "apply took {:?}",
            start.elapsed()
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let ps = ps_health(&node);
    assert_eq!(row(&ps, "hang")["health"], "unhealthy", "{ps}");
    let r = node.berth(&["inspect", "hang"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v["state"]["health"]["output"], "`sleep 600` timed out after 1s",
        "{v}"
    );
    // The probe's process is gone from the container.
    let (code, out, _) = node.exec("hang", &["ps", "-o", "args"]);
    assert_eq!(code, 0);
    assert!(!out.contains("sleep 600"), "{out}");
}

/// A server that starts slowly is `starting` after the apply that started it (the probe
/// right after the start races it), and `healthy` after an apply an interval later.
#[test]
fn a_slow_server_converges_to_healthy_on_a_later_apply() {
    let Some(node) = LiveNode::start("[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n", "")
    else {
        return;
    };
    node.write_spec(
        "slow.toml",
        "[container.slow]\nimage = \"IMAGE\"\nuser = \"10001:10001\"\n\
         command = [\"sh\", \"-c\", \"sleep 2; exec httpd -f -p 8080 -h /srv\"]\n\
         health = { http = \"http://localhost:8080/index.html\", interval = \"3s\", retries = 1, start_period = \"0s\" }\n",
    );
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let ps = ps_health(&node);
    assert_eq!(row(&ps, "slow")["health"], "starting", "{ps}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("slow: unchanged"), "{}", r.stdout);
    let ps = ps_health(&node);
    assert_eq!(row(&ps, "slow")["health"], "healthy", "{ps}");
    assert_eq!(row(&ps, "slow")["status"], "running (healthy)", "{ps}");
}

/// A dependency that runs but does not become healthy is what happened to it (created,
/// its health noted), not "not applied"; its dependent is held, and apply exits 1
/// (`restart = "no"`: it is not restarted for being unhealthy).
#[test]
fn an_unhealthy_dependency_runs_and_holds_its_dependent() {
    let Some(node) = LiveNode::start("[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n", "")
    else {
        return;
    };
    node.write_spec(
        "dep.toml",
        "[container.exbad]\nimage = \"IMAGE\"\nuser = \"10001:10001\"\n\
         command = [\"sleep\", \"1000\"]\nrestart = \"no\"\n\
         health = { exec = [\"false\"], interval = \"1s\", retries = 1, start_period = \"0s\" }\n\
         [container.dep]\nimage = \"IMAGE\"\nuser = \"10001:10001\"\n\
         command = [\"sleep\", \"1000\"]\ndepends_on = [\"exbad\"]\n",
    );
    let r = node.apply();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let line = |out: &str, name: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no line for {name} in {out}"))
            .to_string()
    };
    let exbad = line(&r.stdout, "exbad");
    assert!(
        exbad.starts_with("exbad: created (unhealthy: "),
        "{}",
        r.stdout
    );
    assert!(!exbad.contains("not applied"), "{}", r.stdout);
    let dep = line(&r.stdout, "dep");
    assert!(
        dep.starts_with("dep: held: `exbad` did not become healthy"),
        "{}",
        r.stdout
    );
    let ps = ps_health(&node);
    assert_eq!(row(&ps, "exbad")["status"], "running (unhealthy)", "{ps}");

    // The next apply: exbad unchanged, still unhealthy; dep still held.
    let r = node.apply();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let exbad = line(&r.stdout, "exbad");
    assert!(
        exbad.starts_with("exbad: unchanged (unhealthy: "),
        "{}",
        r.stdout
    );
    assert!(
        line(&r.stdout, "dep").starts_with("dep: held: "),
        "{}",
        r.stdout
    );
}

/// A `none` container's `tcp` and `http` checks run in its own network namespace: a
/// server on the host's loopback does not answer them, one inside the container does.
#[test]
fn a_none_containers_check_runs_in_its_own_namespace_not_the_hosts() {
    let Some(node) = LiveNode::start("[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n", "")
    else {
        return;
    };
    // A host server on the port `lone`'s check asks for.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    node.write_spec(
        "none.toml",
        &format!(
            "[container.lone]\nimage = \"IMAGE\"\nuser = \"10001:10001\"\nnetwork_mode = \"none\"\n\
             command = [\"sleep\", \"1000\"]\nrestart = \"no\"\n\
             health = {{ tcp = {port}, interval = \"1s\", retries = 1 }}\n\
             [container.inside]\nimage = \"IMAGE\"\nuser = \"10001:10001\"\nnetwork_mode = \"none\"\n\
             command = [\"httpd\", \"-f\", \"-p\", \"{port}\", \"-h\", \"/etc\"]\nrestart = \"no\"\n\
             health = {{ http = \"http://127.0.0.1:{port}/hostname\", interval = \"1s\", retries = 1 }}\n"
        ),
    );
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let r = node.apply();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let ps = ps_health(&node);
    assert_eq!(row(&ps, "lone")["health"], "unhealthy", "{ps}");
    assert_eq!(row(&ps, "inside")["health"], "healthy", "{ps}");
    drop(host);
}
