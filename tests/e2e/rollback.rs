//! Updates are verified and rolled back (`update_timeout`): a new instance that does not
//! run — or, with a health check, does not become healthy — in time is stopped and
//! removed, and the instance it replaced runs again as the container's instance, with
//! its published port; the revision's other containers are updated all the same. A
//! fixed revision is applied. With `start-first`, the old instance serves throughout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use berth_e2e::live::LiveNode;

const PORT: u16 = 18_461;

fn spec(image: &str, web_command: &str, web_extra: &str, other_env: &str) -> String {
    format!(
        "[network.rb]\nsubnet = \"10.252.40.0/24\"\n\
         [container.web]\nimage = \"{image}\"\nuser = \"10001:10001\"\n\
         networks = [\"rb\"]\nports = [\"127.0.0.1:{PORT}:8080\"]\n\
         command = {web_command}\nupdate_timeout = \"8s\"\nstop_signal = \"SIGKILL\"\n{web_extra}\n\
         [container.other]\nimage = \"{image}\"\nuser = \"10001:10001\"\nnetwork_mode = \"none\"\n\
         command = [\"sleep\", \"1000\"]\nenv = {{ V = \"{other_env}\" }}\nstop_signal = \"SIGKILL\"\n"
    )
}

const SERVE: &str = "[\"/bin/httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/etc\"]";

/// `GET /hostname` on the published port: the body, or why not.
fn get() -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", PORT)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    s.write_all(b"GET /hostname HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    if out.starts_with("HTTP/1.") && out.contains(" 200 ") {
        Ok(out)
    } else {
        Err(out)
    }
}

fn served() -> bool {
    (0..30).any(|_| {
        let ok = get().is_ok();
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    })
}

fn show(r: &berth_e2e::Run) -> String {
    format!("exit {}\n{}\n{}", r.code, r.stdout, r.stderr)
}

#[test]
fn a_failing_update_is_rolled_back_while_the_others_update_and_a_fix_is_applied() {
    let Some(node) = LiveNode::start("[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n", "")
    else {
        return;
    };
    let image = node.image.clone();
    node.write_spec("app.toml", &spec(&image, SERVE, "", "1"));
    let r = node.apply();
    assert_eq!(r.code, 0, "{}", show(&r));
    assert!(served(), "the first version does not serve");
    let good = node.instance("web").unwrap();
    let other_v1 = node.instance("other").unwrap();

    // A broken update of web (its process exits at once) beside a good one of other.
    node.write_spec(
        "app.toml",
        &spec(&image, "[\"sh\", \"-c\", \"exit 3\"]", "", "2"),
    );
    let r = node.apply();
    assert_eq!(r.code, 1, "{}", show(&r));
    assert!(
        r.stdout.contains("web: rolled back: update to web-") && r.stdout.contains("exited with 3"),
        "{}",
        show(&r)
    );
    assert!(
        r.stdout.contains(&format!("rolled back to {good}")),
        "{}",
        show(&r)
    );
    let after = node.instances();
    assert_eq!(after["web"], good, "web is not its last good instance");
    assert_ne!(after["other"], other_v1, "other was not updated");
    assert!(served(), "the rolled-back web does not serve its port");
    let mark = node.state().join("containers/web/rollback.json");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&mark).expect("a rollback mark")).unwrap();
    assert!(
        m["reason"].as_str().unwrap().contains("exited with 3"),
        "{m}"
    );
    // Nothing of the failed instance is left: one instance directory per container.
    let dirs = std::fs::read_dir(node.state().join("instances"))
        .unwrap()
        .count();
    assert_eq!(dirs, 2, "instances left: {after:?}");
    let ps = node.ps();
    let web = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "web")
        .unwrap();
    assert_eq!(web["state"], "running", "{ps}");

    // An update whose process cannot even start (create or start fails) is rolled
    // back too: the instance it replaced, stopped, gets its network and port again.
    node.write_spec("app.toml", &spec(&image, "[\"/bin/nonexistent\"]", "", "2"));
    let r = node.apply();
    assert_eq!(r.code, 1, "{}", show(&r));
    assert!(r.stdout.contains("web: rolled back:"), "{}", show(&r));
    assert_eq!(node.instance("web").unwrap(), good);
    assert!(
        served(),
        "the web rolled back from a failed start does not serve"
    );

    // With a health check, a process that exits is named by its exit code at once.
    node.write_spec(
        "app.toml",
        &spec(
            &image,
            "[\"sh\", \"-c\", \"exit 4\"]",
            "health = { exec = [\"true\"], interval = \"1s\" }",
            "2",
        ),
    );
    let r = node.apply();
    assert_eq!(r.code, 1, "{}", show(&r));
    assert!(r.stdout.contains("exited with 4"), "{}", show(&r));
    assert_eq!(node.instance("web").unwrap(), good);
    assert!(served());

    // A health check that never passes is rolled back too, with the probe's output.
    node.write_spec(
        "app.toml",
        &spec(
            &image,
            SERVE,
            "health = { exec = [\"false\"], interval = \"1s\", retries = 2 }",
            "2",
        ),
    );
    let r = node.apply();
    assert_eq!(r.code, 1, "{}", show(&r));
    assert!(
        r.stdout.contains("web: rolled back:") && r.stdout.contains("false"),
        "{}",
        show(&r)
    );
    assert_eq!(node.instance("web").unwrap(), good);
    assert!(served());

    // The fix is applied, and the mark goes.
    node.write_spec(
        "app.toml",
        &spec(&image, SERVE, "env = { FIXED = \"yes\" }", "3"),
    );
    let r = node.apply();
    assert_eq!(r.code, 0, "{}", show(&r));
    assert_ne!(node.instance("web").unwrap(), good);
    assert!(!mark.exists(), "the mark outlived a verified update");
    assert!(served());
    let dirs = std::fs::read_dir(node.state().join("instances"))
        .unwrap()
        .count();
    assert_eq!(dirs, 2);
}

#[test]
fn start_first_keeps_the_old_instance_serving_through_a_failed_update() {
    let Some(node) = LiveNode::start("[policy]\nprofile = \"restricted\"\nmode = \"audit\"\n", "")
    else {
        return;
    };
    let image = node.image.clone();
    let text = |health: &str, v: &str| {
        format!(
            "[container.api]\nimage = \"{image}\"\nuser = \"10001:10001\"\nnetwork_mode = \"none\"\n\
             command = [\"sleep\", \"1000\"]\nupdate = \"start-first\"\nupdate_timeout = \"6s\"\n\
             env = {{ V = \"{v}\" }}\nstop_signal = \"SIGKILL\"\n\
             health = {{ exec = [\"{health}\"], interval = \"1s\", retries = 2 }}\n"
        )
    };
    node.write_spec("api.toml", &text("true", "1"));
    let r = node.apply();
    assert_eq!(r.code, 0, "{}", show(&r));
    let old = node.instance("api").unwrap();
    let pid = |id: &str| berth_e2e::agentd::shim_pid(&node, id);
    let old_pid = pid(&old).expect("the shim of the first instance");

    node.write_spec("api.toml", &text("false", "2"));
    let r = node.apply();
    assert_eq!(r.code, 1, "{}", show(&r));
    assert!(r.stdout.contains("api: rolled back:"), "{}", show(&r));
    // The same process served throughout: never stopped, never restarted.
    assert_eq!(node.instance("api").unwrap(), old);
    assert_eq!(pid(&old), Some(old_pid));
    let dirs = std::fs::read_dir(node.state().join("instances"))
        .unwrap()
        .count();
    assert_eq!(dirs, 1);

    // A good start-first update hands over once the new one is healthy.
    node.write_spec("api.toml", &text("true", "3"));
    let r = node.apply();
    assert_eq!(r.code, 0, "{}", show(&r));
    assert_ne!(node.instance("api").unwrap(), old);
}
