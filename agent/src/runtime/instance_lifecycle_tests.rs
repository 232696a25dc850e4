//! The lifecycle against the real runtimes and the real shim, as root: an overlay
//! rootfs from two busybox-static "snapshots", a config from the real renderer and
//! `host::gather`, create through `berth-shim`, start, exec, stop (trapped SIGTERM;
//! ignored SIGTERM → SIGKILL), delete, unmount; then nothing may be left in the
//! runtime's list, the mount table or the cgroup hierarchies.
//!
//! Prerequisites: root, `/bin/busybox`, `runc` (and `crun`, `unshare` for the crun
//! test), and `berth-shim` at `$BERTH_SHIM_BIN` or next to the test binary's target
//! dir (`cargo build -p berth-shim`). Missing ones skip with a reason, or fail under
//! `CI=true`.
//!
//! crun 1.8 cannot create containers on this cgroup v1 hybrid host, so its test
//! re-runs the test binary inside `unshare --mount` with a tmpfs over
//! `/sys/fs/cgroup/unified` (research/baseline.md §1) — a test-only view: berth
//! itself never works around the host's layout.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::lab::*;
use super::*;
use crate::runtime::mount::unmount_rootfs;
use crate::runtime::oci::{self, RuntimeKind, detect};

/// Traps SIGTERM (exit 42) once ready; `wait` returns at once when the trap fires.
const TRAPS_TERM: &str =
    "trap 'exit 42' TERM; touch /tmp/ready; echo ready; while :; do sleep 1 & wait; done";

/// The whole flow, for whichever runtime the lab holds.
fn lifecycle(lab: &Lab) {
    let oci = &lab.oci;
    let a = lab.prepare("trapper", TRAPS_TERM);
    let created = oci.create(&a).unwrap();
    assert!(created.pid > 0 && created.shim_pid > 0, "{created:?}");
    assert_eq!(
        oci.status(&a).unwrap(),
        InstanceStatus::Created { pid: created.pid }
    );
    oci.start(&a).unwrap();
    assert_eq!(
        oci.status(&a).unwrap(),
        InstanceStatus::Running { pid: created.pid }
    );
    wait_until("the trap", Duration::from_secs(20), || {
        a.dirs.upper().join("tmp/ready").exists()
    });
    // The overlay: the top snapshot wins, writes land in upper/.
    assert_eq!(
        std::fs::read_to_string(a.dirs.rootfs().join("etc/layer")).unwrap(),
        "top\n"
    );

    assert_eq!(
        lab.exec(&a, &["id", "-u"], None),
        (0, "10001\n".into(), None)
    );
    assert_eq!(lab.exec(&a, &["id", "-u"], Some(0)).1, "0\n");
    assert_eq!(lab.exec(&a, &["sh", "-c", "echo $PATH; exit 7"], None).0, 7);
    let (code, _, err) = lab.exec(&a, &["nope"], None);
    assert_eq!(code, 127, "{err:?}");
    assert!(err.unwrap().contains("nope"));
    let (code, _, err) = lab.exec(&a, &["/noexec"], None);
    assert_eq!(code, 126, "{err:?}");

    let exit = oci.stop(&a, SIGTERM, Duration::from_secs(10)).unwrap();
    assert_eq!(exit.map(|e| (e.exit_code, e.signal)), Some((42, None)));
    assert!(a.dirs.exit_file().exists());
    assert!(matches!(oci.status(&a).unwrap(), InstanceStatus::Exited(e) if e.exit_code == 42));
    let log = std::fs::read_to_string(a.dirs.log()).unwrap();
    assert!(log.lines().any(|l| l.ends_with(" stdout F ready")), "{log}");

    // PID 1 without a handler ignores SIGTERM: killed after the 1 s timeout.
    let b = lab.prepare("stubborn", "touch /tmp/ready; exec sleep 1000");
    oci.create(&b).unwrap();
    oci.start(&b).unwrap();
    wait_until("the sleeper", Duration::from_secs(20), || {
        b.dirs.upper().join("tmp/ready").exists()
    });
    let started = Instant::now();
    let exit = oci.stop(&b, SIGTERM, Duration::from_secs(1)).unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(exit.map(|e| (e.exit_code, e.signal)), Some((137, Some(9))));

    // Created, never started: delete kills it and waits for the shim's exit file.
    let c = lab.prepare("unstarted", "exit 0");
    oci.create(&c).unwrap();
    oci.delete(&c).unwrap();
    assert!(matches!(oci.status(&c).unwrap(), InstanceStatus::Exited(_)));
    std::fs::remove_file(c.dirs.exit_file()).unwrap();
    assert_eq!(oci.status(&c).unwrap(), InstanceStatus::Missing);
    oci.delete(&c).unwrap();

    for inst in [&a, &b, &c] {
        unmount_rootfs(&inst.dirs).unwrap();
    }
    lab.assert_clean();
}

#[test]
fn runc_lifecycle() {
    let Some(shim) = prerequisites("runc") else {
        return;
    };
    let run_dir = tempfile::tempdir().unwrap();
    let runtime = detect("runc", run_dir.path()).unwrap();
    assert_eq!(runtime.kind, RuntimeKind::Runc);
    lifecycle(&Lab::new(runtime, shim));
}

#[test]
fn auto_prefers_crun_and_falls_back_to_runc_with_a_reason() {
    if prerequisites("runc").is_none() || prerequisites("crun").is_none() {
        return;
    }
    let run_dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let crun = detect("crun", run_dir.path());
    let crun_ms = started.elapsed().as_millis();
    let started = Instant::now();
    let (auto, logs) = capture_logs(|| detect("auto", run_dir.path()));
    let auto = auto.unwrap();
    let auto_ms = started.elapsed().as_millis();
    let started = Instant::now();
    detect("auto", run_dir.path()).unwrap();
    let cached_us = started.elapsed().as_micros();
    eprintln!(
        "probe cost: crun {crun_ms} ms, then auto (crun cached, runc probed) {auto_ms} ms, then cached {cached_us} µs"
    );
    match crun {
        Ok(c) => assert_eq!(auto, c, "crun works here, so auto picks it"),
        Err(e) => {
            assert_eq!(auto.kind, RuntimeKind::Runc);
            assert_eq!(auto.root, run_dir.path().join("runc"));
            assert!(
                logs.contains("crun is not usable here, using runc"),
                "{logs}"
            );
            let reason = e.to_string();
            assert!(
                logs.contains(&reason),
                "the log names why: {reason}\n{logs}"
            );
            // This host (cgroup v1 hybrid): crun's own words.
            if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
                eprintln!("crun refused: {reason}");
            }
        }
    }
}

#[test]
fn crun_lifecycle_in_a_private_mount_namespace() {
    // Inside the namespace this same test, re-executed, runs the body.
    if std::env::var(NS_FLAG).as_deref() == Ok("1") {
        crun_lifecycle_body();
        return;
    }
    if prerequisites("crun").is_none() {
        return;
    }
    if oci::detect::find_in_path("unshare").is_none() {
        missing("`unshare` (util-linux)");
        return;
    }
    let test = format!(
        "{}::crun_lifecycle_in_a_private_mount_namespace",
        module_path!().trim_start_matches("berth::")
    );
    // Only on a hybrid host is the cover needed (and possible).
    let cover = if Path::new("/sys/fs/cgroup/unified").is_dir() {
        "mount -t tmpfs -o size=16m berth-nocg2 /sys/fs/cgroup/unified && "
    } else {
        ""
    };
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("{cover}exec \"$0\" \"$@\""))
        .arg(std::env::current_exe().unwrap())
        .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(NS_FLAG, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "crun lifecycle failed");
    assert!(text.contains("1 passed"), "the body did not run");
    assert!(
        text.contains("crun lifecycle: ran with"),
        "the body did not run"
    );
}

/// The crun lifecycle, run inside the private mount namespace by
/// [`crun_lifecycle_in_a_private_mount_namespace`].
fn crun_lifecycle_body() {
    let shim = prerequisites("crun").unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    let runtime = detect("crun", run_dir.path()).unwrap();
    assert_eq!(runtime.kind, RuntimeKind::Crun);
    assert_eq!(
        detect("auto", run_dir.path()).unwrap(),
        runtime,
        "auto prefers a working crun"
    );
    let cache: oci::detect::ProbeCache = serde_json::from_slice(
        &std::fs::read(run_dir.path().join(oci::detect::CACHE_FILE)).unwrap(),
    )
    .unwrap();
    let rec = cache
        .probes
        .iter()
        .find(|r| r.binary == runtime.binary)
        .unwrap();
    assert_eq!((rec.kind, rec.error.as_deref()), (RuntimeKind::Crun, None));
    let lab = Lab::new(runtime, shim);
    lifecycle(&lab);
    eprintln!(
        "crun lifecycle: ran with {}",
        lab.oci.runtime.binary.display()
    );
}
