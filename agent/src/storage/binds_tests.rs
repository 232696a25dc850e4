use std::path::Path;

use super::*;
use crate::testing;

fn mounted(p: &Path) -> bool {
    !mount::mounts_at(p).is_empty()
}

#[test]
fn resolve_follows_links_to_the_real_path() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink("/", real.join("hostroot")).unwrap();
    std::os::unix::fs::symlink(&real, tmp.path().join("alias")).unwrap();
    let alias = tmp.path().join("alias/hostroot");
    assert_eq!(resolve(alias.to_str().unwrap()).unwrap(), Path::new("/"));
    let e = resolve("/nonexistent/berth-bind").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/berth-bind"), "{e}");
}

#[test]
fn a_symlink_met_on_the_walk_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().canonicalize().unwrap();
    std::fs::create_dir(real.join("d")).unwrap();
    // Checked as `…/d/sub`, but `sub` is a link by the time it is opened.
    std::os::unix::fs::symlink("/etc", real.join("d/sub")).unwrap();
    let e = open_nofollow("spec", &real.join("d/sub")).unwrap_err();
    assert!(matches!(e, BindError::Symlink { .. }), "{e:?}");
    assert!(e.to_string().contains("d/sub"), "{e}");
    // Without links the walk ends on the object itself.
    let (_, is_dir) = open_nofollow("spec", &real.join("d")).unwrap();
    assert!(is_dir);
    std::fs::write(real.join("f"), "x").unwrap();
    let (_, is_dir) = open_nofollow("spec", &real.join("f")).unwrap();
    assert!(!is_dir);
}

#[test]
fn stage_mounts_the_checked_directory_and_file_and_unstage_keeps_their_data() {
    if !testing::have_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let (src, inst) = (root.join("src"), root.join("instance"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&inst).unwrap();
    std::fs::write(src.join("data"), "keep me").unwrap();
    std::fs::write(root.join("config"), "cfg").unwrap();

    let d = stage(&inst, 0, "src", &src).unwrap();
    let f = stage(&inst, 3, "config", &root.join("config")).unwrap();
    assert_eq!(d, staged_path(&inst, 0));
    assert!(mounted(&d) && mounted(&f));
    assert_eq!(std::fs::read_to_string(d.join("data")).unwrap(), "keep me");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "cfg");
    // Staging again is a no-op.
    assert_eq!(stage(&inst, 0, "src", &src).unwrap(), d);

    unstage_all(&inst).unwrap();
    assert!(!mounted(&d) && !mounted(&f));
    assert!(!binds_dir(&inst).exists());
    assert_eq!(
        std::fs::read_to_string(src.join("data")).unwrap(),
        "keep me"
    );
    assert_eq!(std::fs::read_to_string(root.join("config")).unwrap(), "cfg");
    // Nothing staged is fine.
    unstage_all(&inst).unwrap();
}

#[test]
fn unstage_never_deletes_through_a_point_it_could_not_unmount() {
    let tmp = tempfile::tempdir().unwrap();
    let inst = tmp.path().join("instance");
    // A directory with content where a mount point should be (as if still mounted and
    // the unmount had silently not happened): rmdir fails, nothing is deleted.
    let point = staged_path(&inst, 0);
    std::fs::create_dir_all(&point).unwrap();
    std::fs::write(point.join("precious"), "x").unwrap();
    assert!(unstage_all(&inst).is_err());
    assert!(point.join("precious").exists());
}
