//! `apply_layer`: layer semantics, metadata, formats, and path safety against
//! hostile archives. Every extraction goes into a temp dir; escape tests check
//! that a sentinel beside the target is untouched.

// Tests say on stderr when they skip a check the machine cannot run.
#![allow(clippy::print_stderr)]

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::{gzip, is_root, zstd, Layer, Sandbox, MTIME};
use kiln_fs::apply::{
    apply_layer, ApplyError, ApplyOptions, ApplyStats, Devices, Whiteouts, XattrErrors,
};
use kiln_oci::Compression;
use tar::EntryType;

fn apply(layer: &[u8], target: &Path) -> Result<ApplyStats, ApplyError> {
    apply_layer(layer, target, &ApplyOptions::default())
}

fn md(p: impl AsRef<Path>) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap()
}

// ---------------------------------------------------------------------------
// Entry types and metadata

#[test]
fn files_dirs_modes_owners_and_times_are_applied() {
    let sb = Sandbox::new();
    let t = &sb.target;
    let layer = Layer::new()
        .dir_with("usr/", 0o755, 0, 0, MTIME + 1)
        .dir_with("usr/bin/", 0o750, 0, 0, MTIME + 2)
        .file_with("usr/bin/su", b"suid", 0o4755, 0, 0, MTIME + 3)
        .file_with("usr/bin/wall", b"sgid", 0o2755, 0, 5, MTIME + 4)
        .dir_with("tmp/", 0o1777, 0, 0, MTIME + 5)
        .dir_with("home/u/", 0o700, 1000, 1000, MTIME + 6)
        .file_with(
            "home/u/.profile",
            b"export A=1\n",
            0o600,
            1000,
            1001,
            MTIME + 7,
        )
        .file_with("implicit/parent/file", b"x", 0o640, 0, 0, MTIME + 8)
        .finish();
    let stats = apply(&layer, t).unwrap();
    assert_eq!(
        (stats.files, stats.dirs, stats.bytes),
        (4, 4, 4 + 4 + 11 + 1)
    );

    let su = md(t.join("usr/bin/su"));
    assert_eq!(su.mode() & 0o7777, 0o4755, "setuid kept after chown");
    assert_eq!(fs::read(t.join("usr/bin/su")).unwrap(), b"suid");
    assert_eq!(su.mtime(), (MTIME + 3) as i64);
    let wall = md(t.join("usr/bin/wall"));
    assert_eq!(
        (wall.mode() & 0o7777, wall.gid()),
        (0o2755, 5),
        "setgid kept"
    );
    assert_eq!(md(t.join("tmp")).mode() & 0o7777, 0o1777, "sticky kept");
    let home = md(t.join("home/u"));
    assert_eq!(
        (home.uid(), home.gid(), home.mode() & 0o7777),
        (1000, 1000, 0o700)
    );
    let profile = md(t.join("home/u/.profile"));
    assert_eq!(
        (profile.uid(), profile.gid(), profile.mode() & 0o7777),
        (1000, 1001, 0o600)
    );
    // Directory times are set after their contents were created.
    assert_eq!(md(t.join("usr/bin")).mtime(), (MTIME + 2) as i64);
    assert_eq!(md(t.join("usr/bin")).mode() & 0o7777, 0o750);
    assert_eq!(md(t.join("home/u")).mtime(), (MTIME + 6) as i64);
    // Implicit parents are made 0755.
    assert_eq!(md(t.join("implicit/parent")).mode() & 0o7777, 0o755);
    assert_eq!(md(t.join("implicit/parent/file")).mode() & 0o7777, 0o640);
}

#[test]
fn symlinks_get_their_own_times_and_are_not_followed() {
    let sb = Sandbox::new();
    let t = &sb.target;
    fs::write(t.join("real"), b"r").unwrap();
    let layer = Layer::new().symlink("link", "real").finish();
    apply(&layer, t).unwrap();
    assert_eq!(fs::read_link(t.join("link")).unwrap(), Path::new("real"));
    assert_eq!(md(t.join("link")).mtime(), MTIME as i64);
    assert_ne!(
        md(t.join("real")).mtime(),
        MTIME as i64,
        "target was stamped through the link"
    );
}

#[test]
fn long_names_and_long_link_names_work() {
    let sb = Sandbox::new();
    let t = &sb.target;
    let deep = format!("{}/{}", "d".repeat(120), "f".repeat(130));
    let long_target = format!("../{}", "t".repeat(200));
    let pax_name = format!("{}/pax-{}", "p".repeat(90), "n".repeat(90));
    let pax_link = format!("/{}", "l".repeat(180));
    let layer = Layer::new()
        .file("short", b"s")
        .file(&deep, b"gnu longname") // GNU 'L' record
        .symlink("sym", &long_target) // GNU 'K' record
        .hardlink(&format!("{deep}-hard"), &deep)
        .pax(&[("path", pax_name.as_bytes())])
        .file("truncated-by-pax", b"pax path")
        .pax(&[("path", b"pax-symlink"), ("linkpath", pax_link.as_bytes())])
        .symlink("ignored-name", "ignored-target")
        .finish();
    apply(&layer, t).unwrap();
    assert_eq!(fs::read(t.join(&deep)).unwrap(), b"gnu longname");
    assert_eq!(
        fs::read_link(t.join("sym")).unwrap(),
        Path::new(&long_target)
    );
    assert_eq!(
        md(t.join(&deep)).ino(),
        md(t.join(format!("{deep}-hard"))).ino()
    );
    assert_eq!(fs::read(t.join(&pax_name)).unwrap(), b"pax path");
    assert!(!t.join("truncated-by-pax").exists());
    assert_eq!(
        fs::read_link(t.join("pax-symlink")).unwrap(),
        Path::new(&pax_link)
    );
    assert!(!t.join("ignored-name").exists());
}

#[test]
fn hardlinks_within_and_across_layers_share_an_inode() {
    let sb = Sandbox::new();
    let t = &sb.target;
    let lower = Layer::new()
        .file_with("bin/busybox", b"bb", 0o755, 0, 0, MTIME)
        .finish();
    apply(&lower, t).unwrap();
    let upper = Layer::new()
        .hardlink("bin/sh", "bin/busybox") // to a lower file
        .hardlink("usr/bin/ls", "/bin/busybox") // absolute, into a new dir
        .file("etc/a", b"a")
        .hardlink("etc/b", "etc/a") // within the layer
        .hardlink("etc/c", "./etc//b")
        .finish();
    let stats = apply(&upper, t).unwrap();
    assert_eq!(stats.hardlinks, 4);
    let bb = md(t.join("bin/busybox"));
    assert_eq!(bb.nlink(), 3);
    assert_eq!(md(t.join("bin/sh")).ino(), bb.ino());
    assert_eq!(md(t.join("usr/bin/ls")).ino(), bb.ino());
    let a = md(t.join("etc/a"));
    assert_eq!(a.nlink(), 3);
    assert_eq!(md(t.join("etc/b")).ino(), a.ino());
    assert_eq!(md(t.join("etc/c")).ino(), a.ino());
}

#[test]
fn a_rewritten_file_does_not_change_its_lower_hard_links() {
    let sb = Sandbox::new();
    let t = &sb.target;
    apply(
        &Layer::new().file("a", b"old").hardlink("b", "a").finish(),
        t,
    )
    .unwrap();
    apply(&Layer::new().file("a", b"new").finish(), t).unwrap();
    assert_eq!(fs::read(t.join("a")).unwrap(), b"new");
    assert_eq!(fs::read(t.join("b")).unwrap(), b"old");
}

#[test]
fn devices_and_fifos_are_created_or_skipped() {
    let layer = Layer::new()
        .device("dev/null", EntryType::Char, 1, 3, 0o666)
        .device("dev/loop0", EntryType::Block, 7, 0, 0o660)
        .device("run/pipe", EntryType::Fifo, 0, 0, 0o620)
        .finish();
    if is_root() {
        let sb = Sandbox::new();
        let t = &sb.target;
        let stats = apply(&layer, t).unwrap();
        assert_eq!((stats.devices, stats.devices_skipped), (3, 0));
        let null = md(t.join("dev/null"));
        assert!(null.file_type().is_char_device());
        assert_eq!(
            (
                rustix::fs::major(null.rdev()),
                rustix::fs::minor(null.rdev())
            ),
            (1, 3)
        );
        assert_eq!(null.mode() & 0o7777, 0o666);
        let lp = md(t.join("dev/loop0"));
        assert!(lp.file_type().is_block_device());
        assert_eq!(
            (rustix::fs::major(lp.rdev()), rustix::fs::minor(lp.rdev())),
            (7, 0)
        );
        assert_eq!(lp.mode() & 0o7777, 0o660);
    }
    let sb = Sandbox::new();
    let t = &sb.target;
    let mut options = ApplyOptions::default();
    options.devices = Devices::Skip;
    let stats = apply_layer(&layer[..], t, &options).unwrap();
    assert_eq!((stats.devices, stats.devices_skipped), (1, 2));
    assert!(!t.join("dev/null").exists());
    let pipe = md(t.join("run/pipe"));
    assert!(
        pipe.file_type().is_fifo(),
        "FIFOs need no privilege and are always made"
    );
    assert_eq!(pipe.mode() & 0o7777, 0o620);
}

#[test]
fn entries_replace_entries_of_another_type() {
    let sb = Sandbox::new();
    let t = &sb.target;
    let lower = Layer::new()
        .file("x/deep/file", b"1")
        .file("y", b"2")
        .file("z/inner", b"3")
        .symlink("w", "y")
        .file("keep/old", b"4")
        .file("v", b"5")
        .finish();
    apply(&lower, t).unwrap();
    let upper = Layer::new()
        .file("x", b"file over dir")
        .dir("y/", 0o755)
        .file("y/child", b"dir over file")
        .symlink("z", "y")
        .file("w", b"file over symlink")
        .dir("keep/", 0o700)
        .device("v", EntryType::Fifo, 0, 0, 0o644)
        .finish();
    apply(&upper, t).unwrap();
    assert_eq!(fs::read(t.join("x")).unwrap(), b"file over dir");
    assert!(md(t.join("y")).is_dir());
    assert_eq!(fs::read(t.join("y/child")).unwrap(), b"dir over file");
    assert_eq!(fs::read_link(t.join("z")).unwrap(), Path::new("y"));
    assert!(md(t.join("w")).is_file());
    assert_eq!(
        fs::read(t.join("keep/old")).unwrap(),
        b"4",
        "an existing dir keeps its content"
    );
    assert_eq!(
        md(t.join("keep")).mode() & 0o7777,
        0o700,
        "…and takes the new metadata"
    );
    assert!(md(t.join("v")).file_type().is_fifo());
}

#[test]
fn a_directory_replaced_by_a_symlink_mid_layer_is_gone() {
    let sb = Sandbox::new();
    let t = &sb.target;
    let layer = Layer::new()
        .file("d/f", b"1")
        .symlink("d", "elsewhere")
        .dir("elsewhere/", 0o755)
        .file("d/g", b"through the new link, inside the root")
        .finish();
    apply(&layer, t).unwrap();
    assert_eq!(fs::read_link(t.join("d")).unwrap(), Path::new("elsewhere"));
    assert_eq!(
        fs::read(t.join("elsewhere/g")).unwrap(),
        b"through the new link, inside the root"
    );
    assert!(!t.join("elsewhere/f").exists());
}

// ---------------------------------------------------------------------------
// Whiteouts

#[test]
fn whiteouts_and_opaque_dirs_apply_across_two_layers() {
    let sb = Sandbox::new();
    let t = &sb.target;
    let lower = Layer::new()
        .file("etc/a", b"a")
        .file("etc/b", b"old b")
        .file("etc/c", b"old c")
        .file("etc/sub/keep", b"k")
        .file("var/lib/x/y/z", b"tree")
        .file("opq/old", b"o")
        .file("opq/olddir/z", b"o")
        .file("opq/keepdir/old", b"o")
        .symlink("opq/oldlink", "/etc")
        .file("keep", b"k")
        .finish();
    apply(&lower, t).unwrap();
    let upper = Layer::new()
        .file("etc/.wh.a", b"")
        .file("etc/.wh.b", b"") // whiteout, then this layer's own entry
        .file("etc/b", b"new b")
        .file("etc/c", b"new c") // entry, then whiteout: the entry stays
        .file("etc/.wh.c", b"")
        .file("var/lib/.wh.x", b"") // a whole tree
        .dir("opq/", 0o755)
        .file("opq/before", b"before the marker")
        .file("opq/keepdir/new", b"this layer")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/after", b"after the marker")
        .file(".wh.missing", b"") // nothing to hide: fine
        .file(".wh..wh.plnk", b"") // aufs bookkeeping: ignored
        .finish();
    let stats = apply(&upper, t).unwrap();
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (5, 1));

    assert!(!t.join("etc/a").exists());
    assert_eq!(fs::read(t.join("etc/b")).unwrap(), b"new b");
    assert_eq!(fs::read(t.join("etc/c")).unwrap(), b"new c");
    assert!(t.join("etc/sub/keep").exists());
    assert!(!t.join("var/lib/x").exists());
    assert!(t.join("var/lib").is_dir());
    let mut opq: Vec<_> = walkdir::WalkDir::new(t.join("opq"))
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(t)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    opq.sort();
    assert_eq!(
        opq,
        ["opq/after", "opq/before", "opq/keepdir", "opq/keepdir/new"]
    );
    assert!(t.join("keep").exists());
    let leftovers: Vec<_> = walkdir::WalkDir::new(t)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".wh."))
        .collect();
    assert!(
        leftovers.is_empty(),
        "whiteout files created: {leftovers:?}"
    );
}

#[test]
fn overlay_whiteouts_are_written_as_overlayfs_expects() {
    if !is_root() {
        return; // trusted.* xattrs and 0:0 whiteouts need root here
    }
    let sb = Sandbox::new();
    let t = &sb.target;
    let mut options = ApplyOptions::default();
    options.whiteouts = Whiteouts::Overlay;
    let layer = Layer::new()
        .file("etc/.wh.passwd", b"")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new", b"n")
        .finish();
    apply_layer(&layer[..], t, &options).unwrap();
    let wh = md(t.join("etc/passwd"));
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert_eq!(
        xattr::get(t.join("opq"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert!(t.join("opq/new").is_file());
}

// ---------------------------------------------------------------------------
// xattrs

/// A `security.capability` v2 value granting cap_net_bind_service (effective).
const CAP_NET_BIND_SERVICE: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    0x00, 0x04, 0x00, 0x00, // permitted (low): bit 10
    0x00, 0x00, 0x00, 0x00, // inheritable (low)
    0x00, 0x00, 0x00, 0x00, // permitted (high)
    0x00, 0x00, 0x00, 0x00, // inheritable (high)
];

#[test]
fn xattrs_including_security_capability_are_set() {
    let sb = Sandbox::new();
    let t = &sb.target;
    if !common::user_xattrs_supported(t) {
        eprintln!("SKIPPED: the temp file system refuses user.* xattrs");
        return;
    }
    // Newlines and NULs in values: the `tar` crate's PAX parser splits on
    // newlines; kiln's does not.
    let binary = [0u8, 255, 10, 0, 7, b'\n', b'='];
    let layer = Layer::new()
        .pax(&[
            ("SCHILY.xattr.user.plain", b"value"),
            ("SCHILY.xattr.user.binary", &binary),
        ])
        .file_with("bin/tool", b"x", 0o755, 1000, 1000, MTIME)
        .pax(&[("SCHILY.xattr.user.dir", b"d")])
        .dir("data/", 0o755)
        .pax(&[("SCHILY.xattr.security.capability", &CAP_NET_BIND_SERVICE)])
        .file_with("bin/ping", b"p", 0o4755, 0, 0, MTIME)
        .finish();
    let stats = apply(&layer, t).unwrap();
    assert_eq!(stats.xattrs_skipped, 0);
    let get = |p: &str, n: &str| xattr::get(t.join(p), n).unwrap();
    assert_eq!(
        get("bin/tool", "user.plain").as_deref(),
        Some(&b"value"[..])
    );
    assert_eq!(get("bin/tool", "user.binary").as_deref(), Some(&binary[..]));
    assert_eq!(get("data", "user.dir").as_deref(), Some(&b"d"[..]));
    if is_root() {
        assert_eq!(
            get("bin/ping", "security.capability").as_deref(),
            Some(&CAP_NET_BIND_SERVICE[..]),
            "capabilities survive chown and chmod"
        );
    }
    assert_eq!(md(t.join("bin/ping")).mode() & 0o7777, 0o4755);
}

#[test]
fn refused_xattrs_are_counted_or_fail() {
    let layer = Layer::new()
        .pax(&[("SCHILY.xattr.bogus.namespace", b"v")])
        .file("f", b"x")
        .finish();
    let sb = Sandbox::new();
    let stats = apply(&layer, &sb.target).unwrap();
    assert_eq!(stats.xattrs_skipped, 1);
    assert!(sb.target.join("f").is_file());

    let sb = Sandbox::new();
    let mut options = ApplyOptions::default();
    options.xattr_errors = XattrErrors::Fail;
    let err = apply_layer(&layer[..], &sb.target, &options).unwrap_err();
    assert!(
        matches!(&err, ApplyError::Xattr { entry, name, .. } if entry == Path::new("f") && name == "bogus.namespace"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Compression

#[test]
fn gzip_and_zstd_are_detected_by_magic_bytes() {
    let plain = Layer::new()
        .dir("a/", 0o755)
        .file("a/f", &vec![7u8; 300_000])
        .symlink("a/l", "f")
        .finish();
    let mut trees = Vec::new();
    for (bytes, expected, hint) in [
        (plain.clone(), Compression::None, Some(Compression::Gzip)),
        (gzip(&plain), Compression::Gzip, Some(Compression::Gzip)),
        (zstd(&plain), Compression::Zstd, None),
        // A gzip of a gzip member followed by another member (multi-member).
        (
            [gzip(&plain[..1024]), gzip(&plain[1024..])].concat(),
            Compression::Gzip,
            Some(Compression::Zstd),
        ),
    ] {
        let sb = Sandbox::new();
        let mut options = ApplyOptions::default();
        options.compression_hint = hint;
        let stats = apply_layer(&bytes[..], &sb.target, &options).unwrap();
        assert_eq!(stats.compression, Some(expected));
        assert_eq!(stats.hint_disagreed, hint.is_some_and(|h| h != expected));
        trees.push(common::snapshot(&sb.target, Default::default()));
    }
    for tree in &trees[1..] {
        common::assert_same_tree(&trees[0], tree, "other compression");
    }
}

#[test]
fn xz_and_bzip2_layers_are_refused_by_name() {
    let sb = Sandbox::new();
    for magic in [&b"\xfd7zXZ\x00rest"[..], &b"BZh91AY&SY"[..]] {
        let err = apply(magic, &sb.target).unwrap_err();
        assert!(matches!(err, ApplyError::Decompress { .. }), "{err}");
        assert!(err.to_string().contains("not supported"), "{err}");
    }
}

#[test]
fn a_truncated_layer_names_the_entry_being_read() {
    let sb = Sandbox::new();
    let layer = Layer::new().file("big", &vec![1u8; 10_000]).finish();
    let err = apply(&layer[..5000], &sb.target).unwrap_err();
    assert!(
        matches!(&err, ApplyError::ReadEntry { entry, .. } if entry == Path::new("big")),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Path safety: hostile archives

#[test]
fn dotdot_entries_are_refused() {
    for name in [
        &b"../outside/sentinel"[..],
        b"a/../../outside/sentinel",
        b"./../outside/sentinel",
        b"../outside/.wh.sentinel",
        b"../outside/.wh..wh..opq",
    ] {
        let sb = Sandbox::new();
        let layer = Layer::new()
            .raw(name, EntryType::Regular, b"", b"pwned")
            .finish();
        let err = apply(&layer, &sb.target).unwrap_err();
        assert!(matches!(err, ApplyError::UnsafePath { .. }), "{err}");
        assert!(
            err.to_string().contains(&*String::from_utf8_lossy(name)),
            "{err}"
        );
        sb.assert_untouched();
    }
}

#[test]
fn dotdot_hidden_in_pax_and_gnu_long_names_is_refused() {
    let sb = Sandbox::new();
    let long = format!("{}/../../../../outside/sentinel", "x/".repeat(60));
    let layer = Layer::new()
        .pax(&[("path", long.as_bytes())])
        .file("innocent", b"pwned")
        .finish();
    let err = apply(&layer, &sb.target).unwrap_err();
    assert!(matches!(err, ApplyError::UnsafePath { .. }), "{err}");
    sb.assert_untouched();

    // A GNU 'L' record written by hand (the tar crate refuses `..`).
    let mut raw = Layer::new();
    let name = format!("{}../outside/sentinel\0", "../".repeat(40));
    raw.raw(
        b"././@LongLink",
        EntryType::GNULongName,
        b"",
        name.as_bytes(),
    );
    raw.raw(b"innocent", EntryType::Regular, b"", b"pwned");
    let err = apply(&raw.finish(), &sb.target).unwrap_err();
    assert!(matches!(err, ApplyError::UnsafePath { .. }), "{err}");
    sb.assert_untouched();
}

#[test]
fn absolute_entries_are_confined_to_the_target() {
    let sb = Sandbox::new();
    let abs = sb.sentinel.to_str().unwrap().to_owned();
    let layer = Layer::new()
        .raw(abs.as_bytes(), EntryType::Regular, b"", b"pwned")
        .finish();
    let stats = apply(&layer, &sb.target).unwrap();
    assert_eq!(stats.paths_neutralised, 1);
    sb.assert_untouched();
    let inside = sb.target.join(abs.trim_start_matches('/'));
    assert_eq!(fs::read(inside).unwrap(), b"pwned");
}

#[test]
fn a_symlink_to_an_outside_dir_is_created_but_never_followed() {
    let sb = Sandbox::new();
    let out = sb.outside_str();
    // Nothing at <target>/<outside path>: the write has nowhere to go.
    let layer = Layer::new()
        .symlink("a", &out)
        .file("a/sentinel", b"pwned")
        .finish();
    let err = apply(&layer, &sb.target).unwrap_err();
    assert!(
        matches!(&err, ApplyError::NotADirectory { entry, path } if entry == Path::new("a/sentinel") && path == Path::new("a")),
        "{err}"
    );
    assert_eq!(fs::read_link(sb.target.join("a")).unwrap(), Path::new(&out));
    sb.assert_untouched();

    // With the same path existing inside the target, the write lands there.
    let sb = Sandbox::new();
    let out = sb.outside_str();
    fs::create_dir_all(sb.target.join(out.trim_start_matches('/'))).unwrap();
    let layer = Layer::new()
        .symlink("a", &out)
        .file("a/sentinel", b"pwned")
        .finish();
    apply(&layer, &sb.target).unwrap();
    sb.assert_untouched();
    let inside = sb.target.join(out.trim_start_matches('/')).join("sentinel");
    assert_eq!(fs::read(inside).unwrap(), b"pwned");
}

#[test]
fn a_relative_symlink_climbing_out_is_confined() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("a", "../../../../../../../..")
        .file("a/outside/sentinel", b"pwned")
        .symlink("b", "..")
        .file("b/outside/second", b"pwned")
        .finish();
    apply(&layer, &sb.target).unwrap();
    sb.assert_untouched();
    assert_eq!(
        fs::read(sb.target.join("outside/sentinel")).unwrap(),
        b"pwned"
    );
    assert_eq!(
        fs::read(sb.target.join("outside/second")).unwrap(),
        b"pwned"
    );
}

#[test]
fn chains_of_symlinks_stay_inside() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("l3", "../outside")
        .symlink("l2", "l3")
        .symlink("l1", "/l2")
        .dir("outside/", 0o755)
        .file("l1/sentinel", b"pwned")
        .finish();
    apply(&layer, &sb.target).unwrap();
    sb.assert_untouched();
    assert_eq!(
        fs::read(sb.target.join("outside/sentinel")).unwrap(),
        b"pwned"
    );

    // A chain ending outside with nothing inside: refused, not followed.
    let sb = Sandbox::new();
    let layer = Layer::new()
        .symlink("l2", &sb.outside_str())
        .symlink("l1", "l2")
        .file("l1/sentinel", b"pwned")
        .finish();
    assert!(apply(&layer, &sb.target).is_err());
    sb.assert_untouched();
}

#[test]
fn a_directory_swapped_for_an_outside_symlink_mid_layer_is_not_followed() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .dir("d/", 0o755)
        .file("d/f", b"1")
        .symlink("d", &sb.outside_str())
        .file("d/sentinel", b"pwned")
        .finish();
    let result = apply(&layer, &sb.target);
    assert!(
        matches!(result, Err(ApplyError::NotADirectory { .. })),
        "{result:?}"
    );
    sb.assert_untouched();
    assert!(md(sb.target.join("d")).file_type().is_symlink());
}

#[test]
fn lower_symlinks_are_replaced_never_written_through() {
    let sb = Sandbox::new();
    let t = &sb.target;
    let out = sb.outside_str();
    std::os::unix::fs::symlink(&sb.sentinel, t.join("f")).unwrap();
    std::os::unix::fs::symlink(&out, t.join("d")).unwrap();
    std::os::unix::fs::symlink(&sb.sentinel, t.join("node")).unwrap();
    let mut layer = Layer::new();
    layer
        .file_with("f", b"pwned", 0o777, 1234, 1234, 1)
        .dir_with("d/", 0o777, 1234, 1234, 1)
        .symlink("s", &sb.sentinel.to_string_lossy());
    if is_root() {
        layer.device("node", EntryType::Char, 1, 3, 0o777);
    }
    apply(&layer.finish(), t).unwrap();
    sb.assert_untouched();
    assert!(md(t.join("f")).is_file());
    assert!(md(t.join("d")).is_dir());
    // The symlink entry itself is fine: it exists, pointing outside.
    assert_eq!(fs::read_link(t.join("s")).unwrap(), sb.sentinel);
}

#[test]
fn hardlinks_cannot_reach_outside() {
    let sb = Sandbox::new();
    let out = sb.outside_str();
    type Check = fn(&ApplyError) -> bool;
    let cases: Vec<(Vec<u8>, Check)> = vec![
        (b"../outside/sentinel".to_vec(), |e| {
            matches!(e, ApplyError::UnsafeLink { .. })
        }),
        (format!("{out}/sentinel").into_bytes(), |e| {
            matches!(e, ApplyError::LinkTargetMissing { .. })
        }),
        (b"s/sentinel".to_vec(), |e| {
            matches!(e, ApplyError::LinkTargetMissing { .. })
        }),
        (b"r/outside/sentinel".to_vec(), |e| {
            matches!(e, ApplyError::LinkTargetMissing { .. })
        }),
    ];
    for (link, check) in cases {
        let sb = Sandbox::new();
        let layer = Layer::new()
            .symlink("s", &out)
            .symlink("r", "../../..")
            .raw(b"h", EntryType::Link, &link, b"")
            .finish();
        let err = apply(&layer, &sb.target).unwrap_err();
        assert!(check(&err), "{}: {err}", String::from_utf8_lossy(&link));
        sb.assert_untouched();
        assert!(!sb.target.join("h").exists());
    }
    sb.assert_untouched();
}

#[test]
fn a_hardlink_to_an_outside_symlink_links_the_symlink() {
    let sb = Sandbox::new();
    let t = &sb.target;
    let layer = Layer::new()
        .symlink("s", &sb.sentinel.to_string_lossy())
        .hardlink("h", "s")
        .finish();
    apply(&layer, t).unwrap();
    assert!(md(t.join("h")).file_type().is_symlink());
    assert_eq!(md(t.join("h")).ino(), md(t.join("s")).ino());
    sb.assert_untouched();
    // A later layer writing `h` replaces the link instead of writing through it.
    apply(&Layer::new().file("h", b"pwned").finish(), t).unwrap();
    assert!(md(t.join("h")).is_file());
    sb.assert_untouched();
}

#[test]
fn whiteouts_never_reach_outside() {
    let sb = Sandbox::new();
    let t = &sb.target;
    std::os::unix::fs::symlink(sb.outside_str(), t.join("a")).unwrap();
    std::os::unix::fs::symlink("../outside", t.join("b")).unwrap();
    let layer = Layer::new()
        .file("a/.wh.sentinel", b"")
        .file("a/.wh..wh..opq", b"")
        .file("b/.wh.sentinel", b"")
        .file("b/.wh..wh..opq", b"")
        .file(".wh.a", b"") // removes the symlink, not what it points to
        .finish();
    apply(&layer, t).unwrap();
    sb.assert_untouched();
    assert!(!t.join("a").exists() && fs::symlink_metadata(t.join("a")).is_err());
    assert!(md(t.join("b")).file_type().is_symlink());
}

#[test]
fn a_file_cannot_stand_in_for_the_target_root() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .raw(b"./", EntryType::Regular, b"", b"x")
        .finish();
    let err = apply(&layer, &sb.target).unwrap_err();
    assert!(matches!(err, ApplyError::InvalidEntry { .. }), "{err}");
    assert!(sb.target.is_dir());
    let layer = Layer::new()
        .raw(b"/", EntryType::Symlink, b"/", b"")
        .finish();
    assert!(apply(&layer, &sb.target).is_err());
    assert!(md(&sb.target).is_dir());
    sb.assert_untouched();
}

#[test]
fn the_root_entry_updates_the_target_dir() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .dir_with("./", 0o751, 0, 0, MTIME)
        .file("f", b"")
        .finish();
    apply(&layer, &sb.target).unwrap();
    let root = md(&sb.target);
    assert_eq!((root.mode() & 0o7777, root.mtime()), (0o751, MTIME as i64));
    fs::set_permissions(&sb.target, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn lower_directories_keep_their_times_when_a_layer_changes_their_content() {
    let sb = Sandbox::new();
    let t = &sb.target;
    let lower = Layer::new()
        .dir_with("etc/", 0o755, 0, 0, MTIME + 1)
        .file("etc/a", b"a")
        .dir_with("opq/", 0o755, 0, 0, MTIME + 2)
        .file("opq/old", b"o")
        .finish();
    apply(&lower, t).unwrap();
    let upper = Layer::new()
        .file("etc/b", b"b") // adds to etc without listing it
        .file("etc/.wh.a", b"")
        .file("opq/.wh..wh..opq", b"")
        .file("new/dir/file", b"implicit parents")
        .finish();
    apply(&upper, t).unwrap();
    assert_eq!(md(t.join("etc")).mtime(), (MTIME + 1) as i64);
    assert_eq!(md(t.join("opq")).mtime(), (MTIME + 2) as i64);
    assert!(!t.join("opq/old").exists() && !t.join("etc/a").exists());
}

#[test]
fn pax_sparse_files_are_refused_not_corrupted() {
    let sb = Sandbox::new();
    let layer = Layer::new()
        .pax(&[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"big"),
        ])
        .file("GNUSparseFile.0/big", b"1\n0\n4\nabcd")
        .finish();
    let err = apply(&layer, &sb.target).unwrap_err();
    assert!(matches!(err, ApplyError::InvalidEntry { .. }), "{err}");
    assert!(err.to_string().contains("sparse"), "{err}");
}
