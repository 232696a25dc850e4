//! Modes under the state and run directories (docs/layout.md), end to end as root:
//! after `berth apply` under `umask 000` and under `umask 022` of a non-root container
//! with a named volume, from an image pulled from a loopback registry, user `nobody`
//! reads and writes nothing below either directory, even where the test opens the
//! state directory to traversal (0711); and inside the container a non-root user
//! reads `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` and writes its volume.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_e2e::live::LiveNode;
use berth_e2e::{Run, have_tools};

/// `berth ARGS` under `umask`, through a shell as an operator would start it.
fn berth_under(node: &LiveNode, umask: &str, args: &[&str]) -> Run {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(berth_e2e::berth_bin())
        .arg("--config")
        .arg(&node.config)
        .args(args)
        .env_remove("BERTH_CONFIG")
        .env("BERTH_SHIM_BIN", berth_e2e::shim_bin())
        .output()
        .unwrap();
    Run::from(out)
}

/// `berth exec app -- CMD`, as the container's own user (10001).
fn exec(node: &LiveNode, cmd: &[&str]) -> Run {
    let mut args = vec!["exec", "app", "--"];
    args.extend_from_slice(cmd);
    node.berth(&args)
}

/// A node with one non-root container, bind-free, on a bridge network, writing its
/// named volume and its `/tmp` (so `upper/tmp` exists, 1777 from the image).
fn setup(subnet: &str) -> Option<LiveNode> {
    if !have_tools(&["setpriv"]) {
        return None;
    }
    let node = LiveNode::start("[policy]\nprofile = \"restricted\"\nmode = \"audit\"", "")?;
    // Open like /var/lib and /run: only berth's own modes may keep `nobody` out.
    chmod(node.dir.path(), 0o755);
    node.write_spec(
        "perms.toml",
        &format!(
            "[network.perms]\nsubnet = \"{subnet}\"\n\n[volume.perms-data]\n\n\
             [container.app]\nimage = \"IMAGE\"\nuser = \"10001:10001\"\n\
             command = [\"/bin/sh\", \"-c\", \"echo ok > /data/written && echo t > /tmp/t && exec sleep 600\"]\n\
             networks = [\"perms\"]\ncap_drop = [\"ALL\"]\nstop_timeout = \"1s\"\n\n\
             [[container.app.mounts]]\nvolume = \"perms-data\"\ntarget = \"/data\"\n"
        ),
    );
    Some(node)
}

/// Every directory and regular file below `root` (and `root`), walked as root without
/// following symbolic links; sockets, FIFOs and devices are left out.
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        i += 1;
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir())
            && let Ok(entries) = std::fs::read_dir(&p)
        {
            for e in entries.flatten() {
                let ft = e.file_type().unwrap();
                if ft.is_dir() || ft.is_file() {
                    out.push(e.path());
                }
            }
        }
    }
    out
}

/// What `nobody` (no groups) can do to `paths`: one line per success, `list DIR`,
/// `write DIR` (created a file in it), `read FILE` or `write FILE` (opened it for
/// appending, which changes nothing).
fn nobody_can(paths: &[PathBuf]) -> Vec<String> {
    let list = tempfile::NamedTempFile::new().unwrap();
    let text: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(list.path(), text).unwrap();
    std::fs::set_permissions(list.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let script = r#"
        n=0
        while IFS= read -r p; do
            n=$((n + 1))
            if [ -d "$p" ]; then
                ls -a "$p" >/dev/null 2>&1 && echo "list $p"
                if touch "$p/.nobody-was-here" 2>/dev/null; then
                    echo "write $p"
                    rm -f "$p/.nobody-was-here"
                fi
            else
                cat "$p" >/dev/null 2>&1 && echo "read $p"
                ( : >> "$p" ) 2>/dev/null && echo "write $p"
            fi
        done < "$1"
        echo "checked $n $(id -u):$(id -g):$(id -G)"
    "#;
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(script)
        .arg("sh")
        .arg(list.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    // The walk ran to its end, as nobody with no other group.
    assert_eq!(
        lines.pop(),
        Some(format!("checked {} 65534:65534:65534", paths.len())),
        "setpriv: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn closed_to_local_users(umask: &str, subnet: &str) {
    let Some(node) = setup(subnet) else {
        return;
    };
    let r = berth_under(&node, umask, &["apply", &node.spec.to_string_lossy()]);
    assert_eq!(r.code, 0, "apply failed:\n{}\n{}", r.stdout, r.stderr);

    // The container works as its non-root user: it wrote its volume, and it reads the
    // files berth binds into it.
    let r = exec(&node, &["id", "-u"]);
    assert_eq!((r.code, r.stdout.trim()), (0, "10001"), "{}", r.stderr);
    let mut written = String::new();
    for _ in 0..50 {
        let r = exec(&node, &["cat", "/data/written"]);
        written = r.stdout;
        if written.trim() == "ok" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        written.trim(),
        "ok",
        "the container did not write its volume"
    );
    let r = exec(&node, &["touch", "/data/again"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = exec(
        &node,
        &["cat", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"],
    );
    assert_eq!(r.code, 0, "a non-root user cannot read them: {}", r.stderr);
    assert!(r.stdout.starts_with("app\n"), "{}", r.stdout);
    let r = exec(
        &node,
        &["stat", "-c", "%a %n", "/", "/etc/hostname", "/etc/hosts"],
    );
    assert_eq!(
        r.stdout, "755 /\n644 /etc/hostname\n644 /etc/hosts\n",
        "{}",
        r.stderr
    );

    // The state and run directories are berth's alone.
    let (state, run) = (node.state(), node.run_dir());
    assert_eq!((mode(&state), mode(&run)), (0o700, 0o700));
    let mut paths = tree(&state);
    paths.extend(tree(&run));
    let has = |p: &str| paths.iter().any(|x| x.to_string_lossy().contains(p));
    for p in [
        "/volumes/perms-data",
        "/content/blobs/sha256/",
        "/bundle/config.json",
    ] {
        assert!(has(p), "nothing like {p} under the state directory");
    }
    assert!(has("/containers/app/state.json") && has("/upper/tmp"));
    assert_eq!(nobody_can(&paths), Vec::<String>::new());

    // Where a container user would have to traverse the state directory (0711), still
    // nothing below it is open.
    chmod(&state, 0o711);
    chmod(&run, 0o711);
    let found = nobody_can(&paths);
    chmod(&state, 0o700);
    chmod(&run, 0o700);
    assert_eq!(found, Vec::<String>::new());

    // The check sees an open file: a record made readable along its path.
    let record = state.join("containers/app/state.json");
    chmod(&state, 0o711);
    for (p, m) in [
        (state.join("containers"), 0o711),
        (state.join("containers/app"), 0o711),
        (record.clone(), 0o644),
    ] {
        chmod(&p, m);
    }
    let found = nobody_can(std::slice::from_ref(&record));
    for p in [
        state.clone(),
        state.join("containers"),
        state.join("containers/app"),
    ] {
        chmod(&p, 0o700);
    }
    chmod(&record, 0o600);
    assert_eq!(found, vec![format!("read {}", record.display())]);
}

#[test]
fn state_dir_is_closed_to_local_users_under_umask_000() {
    closed_to_local_users("000", "10.251.27.0/24");
}

#[test]
fn state_dir_is_closed_to_local_users_under_umask_022() {
    closed_to_local_users("022", "10.251.28.0/24");
}
