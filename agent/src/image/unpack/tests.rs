//! Hostile archives: each must fail (or stay inside the root) and leave the host
//! untouched. Shared helpers for the other test files live here too.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::*;

/// A temporary directory holding `root/` (the destination) and `outside/` (the host).
pub(super) struct Sandbox {
    pub(super) tmp: tempfile::TempDir,
}

impl Sandbox {
    pub(super) fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("root")).unwrap();
        std::fs::create_dir(tmp.path().join("outside")).unwrap();
        Sandbox { tmp }
    }
    pub(super) fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }
    pub(super) fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }
    /// The host is untouched: `outside/` holds only `expected`, and nothing but
    /// `root/` and `outside/` sits next to the root.
    pub(super) fn assert_host_untouched(&self, expected: &[&str]) {
        let mut names: Vec<String> = std::fs::read_dir(self.outside())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, expected, "files appeared outside the root");
        let siblings = std::fs::read_dir(self.tmp.path()).unwrap().count();
        assert_eq!(siblings, 2, "files appeared next to the root");
    }
}

/// Builds tar archives with raw names, which `tar::Builder`'s path setters refuse.
pub(super) struct Tar(pub(super) tar::Builder<Vec<u8>>);

impl Tar {
    pub(super) fn new() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }
    pub(super) fn header(name: &str, kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        let raw = name.as_bytes();
        h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h
    }
    pub(super) fn add(mut self, mut h: Header, data: &[u8]) -> Self {
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    pub(super) fn file(self, name: &str, data: &[u8]) -> Self {
        self.add(
            Self::header(name, EntryType::Regular, 0o644, data.len() as u64),
            data,
        )
    }
    pub(super) fn dir(self, name: &str) -> Self {
        self.add(Self::header(name, EntryType::Directory, 0o755, 0), b"")
    }
    pub(super) fn link(self, kind: EntryType, name: &str, target: &str) -> Self {
        let mut h = Self::header(name, kind, 0o777, 0);
        let raw = target.as_bytes();
        h.as_old_mut().linkname[..raw.len()].copy_from_slice(raw);
        self.add(h, b"")
    }
    pub(super) fn symlink(self, name: &str, target: &str) -> Self {
        self.link(EntryType::Symlink, name, target)
    }
    pub(super) fn hardlink(self, name: &str, target: &str) -> Self {
        self.link(EntryType::Link, name, target)
    }
    pub(super) fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

pub(super) fn opts(mode: WhiteoutMode, resolver: Resolver) -> UnpackOptions {
    UnpackOptions {
        mode,
        resolver,
        ..UnpackOptions::default()
    }
}

pub(super) fn unpack(
    tar: &[u8],
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    unpack_layer(
        "sha256:test",
        "application/vnd.oci.image.layer.v1.tar",
        tar,
        dest,
        opts,
    )
}

const RESOLVERS: [Resolver; 2] = [Resolver::Auto, Resolver::Userspace];

fn assert_unsafe(r: Result<LayerStats, UnpackError>, want_reason: &str) {
    match r {
        Err(UnpackError::UnsafePath { reason, layer, .. }) => {
            assert_eq!(reason, want_reason);
            assert_eq!(layer, "sha256:test");
        }
        other => panic!("expected unsafe path error, got {other:?}"),
    }
}

#[test]
fn dotdot_names_are_refused() {
    for r in RESOLVERS {
        let sb = Sandbox::new();
        let tar = Tar::new().file("ok", b"1").file("../escape", b"x").finish();
        assert_unsafe(
            unpack(&tar, &sb.root(), &opts(WhiteoutMode::Flatten, r)),
            "'..' component",
        );
        let tar = Tar::new().file("a/../../outside/escape", b"x").finish();
        assert_unsafe(
            unpack(&tar, &sb.root(), &opts(WhiteoutMode::Snapshot, r)),
            "'..' component",
        );
        sb.assert_host_untouched(&[]);
    }
}

#[test]
fn absolute_names_are_refused() {
    let sb = Sandbox::new();
    let target = format!("{}/abs", sb.outside().display());
    let tar = Tar::new().file(&target, b"x").finish();
    assert_unsafe(
        unpack(&tar, &sb.root(), &UnpackOptions::default()),
        "absolute path",
    );
    sb.assert_host_untouched(&[]);
}

#[test]
fn absolute_symlink_out_then_write_through_it() {
    for r in RESOLVERS {
        let sb = Sandbox::new();
        let out = sb.outside().display().to_string();
        let tar = Tar::new()
            .symlink("evil", &out)
            .file("evil/file", b"x")
            .finish();
        let err = unpack(&tar, &sb.root(), &opts(WhiteoutMode::Flatten, r)).unwrap_err();
        assert!(
            matches!(&err, UnpackError::Fs { op: "create parent directory of", path, .. } if path == "evil/file"),
            "{err:?}"
        );
        sb.assert_host_untouched(&[]);
        // The symlink itself is kept verbatim: it only ever resolves inside the root.
        assert_eq!(
            std::fs::read_link(sb.root().join("evil")).unwrap(),
            sb.outside()
        );
    }
}

#[test]
fn symlinks_are_followed_only_inside_the_root() {
    for r in RESOLVERS {
        let sb = Sandbox::new();
        let tar = Tar::new()
            .dir("usr")
            .symlink("abs", "/usr")
            .symlink("a", "../../..")
            .file("abs/via-abs", b"1")
            .file("a/x", b"2")
            .symlink("up", "../../outside")
            .file("up/y", b"3")
            .finish();
        let err = unpack(&tar, &sb.root(), &opts(WhiteoutMode::Flatten, r)).unwrap_err();
        assert!(
            matches!(&err, UnpackError::Fs { path, .. } if path == "up/y"),
            "{err:?}"
        );
        assert_eq!(std::fs::read(sb.root().join("usr/via-abs")).unwrap(), b"1");
        // `a -> ../../..` is the root itself: `a/x` is `/x` inside it.
        assert_eq!(std::fs::read(sb.root().join("x")).unwrap(), b"2");
        sb.assert_host_untouched(&[]);
    }
}

#[test]
fn symlink_replacing_a_directory_mid_archive() {
    for r in RESOLVERS {
        let sb = Sandbox::new();
        let out = sb.outside().display().to_string();
        let tar = Tar::new()
            .dir("d")
            .file("d/inner", b"1")
            .symlink("d", &out)
            .file("d/file", b"x")
            .finish();
        let err = unpack(&tar, &sb.root(), &opts(WhiteoutMode::Snapshot, r)).unwrap_err();
        assert!(
            matches!(&err, UnpackError::Fs { path, .. } if path == "d/file"),
            "{err:?}"
        );
        assert!(
            std::fs::symlink_metadata(sb.root().join("d"))
                .unwrap()
                .is_symlink()
        );
        sb.assert_host_untouched(&[]);
    }
}

#[test]
fn hardlinks_cannot_reach_outside() {
    for r in RESOLVERS {
        let sb = Sandbox::new();
        std::fs::write(sb.outside().join("secret"), b"s").unwrap();
        let out = sb.outside().display().to_string();
        let cases: [(&str, &str); 4] = [
            ("/etc/passwd", "absolute path"),
            ("../../outside/secret", "'..' component"),
            ("lnk/secret", "target does not exist"),
            ("missing", "target does not exist"),
        ];
        for (target, reason) in cases {
            let tar = Tar::new()
                .symlink("lnk", &out)
                .hardlink("h", target)
                .finish();
            match unpack(&tar, &sb.root(), &opts(WhiteoutMode::Flatten, r)) {
                Err(UnpackError::BadHardlink { reason: got, .. }) => {
                    assert_eq!(got, reason, "{target}")
                }
                other => panic!("{target}: {other:?}"),
            }
            assert!(!sb.root().join("h").exists());
        }
        let tar = Tar::new().dir("dir").hardlink("h", "dir").finish();
        assert!(matches!(
            unpack(&tar, &sb.root(), &opts(WhiteoutMode::Flatten, r)),
            Err(UnpackError::BadHardlink {
                reason: "target is a directory",
                ..
            })
        ));
        assert_eq!(
            std::fs::metadata(sb.outside().join("secret"))
                .unwrap()
                .nlink(),
            1
        );
        sb.assert_host_untouched(&["secret"]);
    }
}

#[test]
fn a_file_never_writes_through_a_final_symlink() {
    let sb = Sandbox::new();
    std::fs::write(sb.outside().join("target"), b"keep").unwrap();
    let target = format!("{}/target", sb.outside().display());
    let tar = Tar::new().symlink("f", &target).file("f", b"new").finish();
    unpack(&tar, &sb.root(), &UnpackOptions::default()).unwrap();
    assert_eq!(std::fs::read(sb.root().join("f")).unwrap(), b"new");
    assert_eq!(std::fs::read(sb.outside().join("target")).unwrap(), b"keep");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

#[test]
fn decompression_bomb_is_stopped_and_named() {
    let zeros = vec![0u8; 8 << 20];
    let bomb = gzip(&Tar::new().file("zeros", &zeros).finish());
    assert!(bomb.len() < 64 << 10);
    let sb = Sandbox::new();
    let mut o = UnpackOptions::default();
    o.limits.max_uncompressed_bytes = 1 << 20;
    let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
    let err = unpack_layer("sha256:bomb", gz, &bomb[..], &sb.root(), &o).unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer sha256:bomb: limit max_uncompressed_bytes exceeded (limit 1048576)"
    );
    let mut o = UnpackOptions::default();
    o.limits.max_ratio = 100;
    o.limits.ratio_grace_bytes = 1 << 20;
    let err = unpack_layer("sha256:bomb", gz, &bomb[..], &sb.root(), &o).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Limit {
                limit: LimitKind::Ratio,
                max: 100,
                ..
            }
        ),
        "{err:?}"
    );
    // With the defaults the same layer is fine.
    let stats = unpack_layer(
        "sha256:bomb",
        gz,
        &bomb[..],
        &sb.root(),
        &UnpackOptions::default(),
    )
    .unwrap();
    assert_eq!(stats.compression, Compression::Gzip);
    assert!(stats.uncompressed_bytes > 8 << 20);
}

#[test]
fn entry_path_and_header_limits() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    for i in 0..10 {
        t = t.file(&format!("f{i}"), b"");
    }
    let mut o = UnpackOptions::default();
    o.limits.max_entries = 5;
    let err = unpack(&t.finish(), &sb.root(), &o).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Limit {
                limit: LimitKind::Entries,
                ..
            }
        ),
        "{err:?}"
    );

    // A long name goes through a GNU long-name record.
    let mut b = tar::Builder::new(Vec::new());
    let long = "d/".repeat(60) + "f";
    let mut h = Tar::header("", EntryType::Regular, 0o644, 0);
    b.append_data(&mut h, &long, &b""[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let mut o = UnpackOptions::default();
    o.limits.max_path_len = 100;
    let err = unpack(&tar, &sb.root(), &o).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Limit {
                limit: LimitKind::PathLength,
                ..
            }
        ),
        "{err:?}"
    );
    unpack(&tar, &sb.root(), &UnpackOptions::default()).unwrap();
    assert!(sb.root().join(&long).is_file());

    // A PAX record held in memory, larger than allowed.
    let mut b = tar::Builder::new(Vec::new());
    let big = vec![b'v'; 256 << 10];
    b.append_pax_extensions([("SCHILY.xattr.user.big", &big[..])])
        .unwrap();
    let mut h = Tar::header("", EntryType::Regular, 0o644, 0);
    b.append_data(&mut h, "f", &b""[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let mut o = UnpackOptions::default();
    o.limits.max_header_bytes = 64 << 10;
    let err = unpack(&tar, &sb.root(), &o).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Limit {
                limit: LimitKind::HeaderBytes,
                ..
            }
        ),
        "{err:?}"
    );
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    let sum = sha2::Sha256::digest(data);
    sum.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn diff_id_is_the_uncompressed_digest_for_every_compression() {
    let tar = Tar::new()
        .dir("etc")
        .file("etc/hostname", b"berth\n")
        .finish();
    let want = format!("sha256:{}", sha256_hex(&tar));
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    let gz = gzip(&tar);
    let cases: [(&str, &[u8], Compression); 5] = [
        (
            "application/vnd.oci.image.layer.v1.tar",
            &tar,
            Compression::None,
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &gz,
            Compression::Gzip,
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            &gz,
            Compression::Gzip,
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+zstd",
            &zst,
            Compression::Zstd,
        ),
        ("", &zst, Compression::Zstd),
    ];
    for (mt, blob, c) in cases {
        let sb = Sandbox::new();
        let stats =
            unpack_layer("sha256:x", mt, blob, &sb.root(), &UnpackOptions::default()).unwrap();
        assert_eq!(stats.diff_id, want, "{mt}");
        assert_eq!(stats.compression, c);
        assert_eq!(stats.entries, 2);
        assert_eq!(stats.compressed_bytes, blob.len() as u64);
        assert_eq!(
            std::fs::read(sb.root().join("etc/hostname")).unwrap(),
            b"berth\n"
        );
        verify_diff_id("sha256:x", &stats, &want).unwrap();
        assert!(matches!(
            verify_diff_id("sha256:x", &stats, "sha256:00"),
            Err(UnpackError::DiffIdMismatch { .. })
        ));
    }
    // A gzip blob declared as plain tar is a corrupt archive, not a silent success.
    let sb = Sandbox::new();
    let r = unpack(&gz, &sb.root(), &UnpackOptions::default());
    assert!(matches!(r, Err(UnpackError::Archive { .. })), "{r:?}");
}

#[test]
fn sparse_file_cannot_expand_past_the_byte_limit() {
    // A GNU sparse entry: no data in the archive, 16 MiB of zeros when read.
    let mut h = Tar::header("sparse", EntryType::GNUSparse, 0o644, 0);
    let gnu = h.as_gnu_mut().unwrap();
    let octal = |field: &mut [u8], v: u64| {
        let s = format!("{v:0w$o}\0", w = field.len() - 1);
        field.copy_from_slice(s.as_bytes());
    };
    octal(&mut gnu.realsize, 16 << 20);
    octal(&mut gnu.sparse[0].offset, 16 << 20);
    octal(&mut gnu.sparse[0].numbytes, 0);
    let tar = Tar::new().add(h, b"").finish();
    assert!(tar.len() < 4096);
    let sb = Sandbox::new();
    let mut o = UnpackOptions::default();
    o.limits.max_uncompressed_bytes = 1 << 20;
    let err = unpack(&tar, &sb.root(), &o).unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Limit {
                limit: LimitKind::UncompressedBytes,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!sb.root().join("sparse").exists());
    let stats = unpack(&tar, &sb.root(), &UnpackOptions::default()).unwrap();
    assert_eq!(stats.entries, 1);
    assert_eq!(
        std::fs::metadata(sb.root().join("sparse")).unwrap().len(),
        16 << 20
    );
}

/// umoci's `insert` ends a layer right after the last file's data: no padding, no
/// end-of-archive blocks. That is accepted (the diff_id covers the bytes); anything
/// after such a cut is still a malformed archive.
#[test]
fn a_layer_cut_after_its_last_entry_is_accepted() {
    let data = b"0123456789";
    let full = Tar::new().dir("etc/").file("etc/motd", data).finish();
    let cut = &full[..512 + 512 + data.len()];
    let sb = Sandbox::new();
    let stats = unpack(cut, &sb.root(), &UnpackOptions::default()).unwrap();
    assert_eq!(stats.entries, 2);
    assert_eq!(std::fs::read(sb.root().join("etc/motd")).unwrap(), data);
    assert_eq!(stats.uncompressed_bytes, cut.len() as u64);

    // Cut inside the data: the entry is incomplete.
    let sb = Sandbox::new();
    let r = unpack(
        &full[..512 + 512 + 4],
        &sb.root(),
        &UnpackOptions::default(),
    );
    assert!(matches!(r, Err(UnpackError::Archive { .. })), "{r:?}");
    // Cut inside the next header: malformed, and bytes were left over.
    let two = Tar::new().file("a", data).file("b", data).finish();
    let sb = Sandbox::new();
    let r = unpack(&two[..1024 + 100], &sb.root(), &UnpackOptions::default());
    assert!(matches!(r, Err(UnpackError::Archive { .. })), "{r:?}");
}
