//! Snapshot a tree, change it the ways a RUN step does, diff, write the
//! layer, and check it with the `tar` crate, GNU tar, coreutils and umoci.

mod support;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{chown, lchown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_fs::compress::Encoding;
use kiln_fs::layer::{write_layer, LayerInfo, LayerOptions, MediaTypes, MtimeRule, XattrPolicy};
use kiln_fs::snapshot::{diff, ChangeKind, Changes, ScanOptions, StatIndex};
use rustix::fs::{makedev, mknodat, FileType, Mode, CWD};
use support::*;

/// `cap_net_bind_service+ep` as the kernel stores it (vfs_cap_data rev 2).
const CAP_NET_BIND_SERVICE_EP: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn write(p: &Path, content: &[u8]) {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(p, content).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn long_dir() -> String {
    format!("long/{}", "d".repeat(120))
}

/// The tree before the step.
fn make_base(root: &Path) {
    write(&root.join("bin/sudo"), b"sudo");
    chmod(&root.join("bin/sudo"), 0o4755);
    write(&root.join("bin/tool"), b"tool v1");
    chmod(&root.join("bin/tool"), 0o755);
    write(&root.join("d2f/x"), b"x");
    write(&root.join("d2s/y"), b"y");
    write(&root.join("etc/config"), b"a=1\n");
    write(&root.join("etc/gone"), b"bye");
    write(&root.join("etc/hosts"), b"127.0.0.1 localhost\n");
    write(&root.join("etc/mode"), b"m");
    chmod(&root.join("etc/mode"), 0o644);
    write(&root.join("etc/owner"), b"o");
    write(&root.join("f2d"), b"file");
    rustix::fs::mkfifoat(CWD, root.join("fifo"), Mode::from_raw_mode(0o640)).unwrap();
    write(&root.join("kiln/state"), b"kiln's own");
    write(&root.join("links/a"), b"shared");
    fs::hard_link(root.join("links/a"), root.join("links/b")).unwrap();
    symlink("bin/tool", root.join("lnk")).unwrap();
    write(
        &root.join(format!("{}/{}", long_dir(), "f".repeat(150))),
        b"deep",
    );
    write(&root.join("recreate/old1"), b"old1");
    write(&root.join("recreate/old2"), b"old2");
    fs::create_dir(root.join("tmp")).unwrap();
    chmod(&root.join("tmp"), 0o1777);
    write(&root.join("tree/c"), b"c");
    write(&root.join("tree/sub/a"), b"a");
    write(&root.join("tree/sub/b"), b"b");
    // Not a multiple of 512, not all one byte.
    let big: Vec<u8> = (0..1_048_583u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&root.join("big"), &big);
    chown(root.join("big"), Some(1000), Some(1000)).unwrap();
}

/// The step. Returns whether `security.capability` could be set.
fn run_step(root: &Path) -> bool {
    write(&root.join("etc/added"), b"new");
    write(&root.join("new/file"), b"new file");
    // Edit in place, same size.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(root.join("etc/config"))
        .unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"a=2\n").unwrap();
    drop(f);
    xattr::set(root.join("etc/config"), "user.test", b"v").unwrap();
    chmod(&root.join("etc/mode"), 0o600);
    chown(root.join("etc/owner"), Some(1234), Some(5678)).unwrap();
    fs::remove_file(root.join("etc/gone")).unwrap();
    fs::remove_dir_all(root.join("tree")).unwrap();
    fs::remove_dir_all(root.join("d2f")).unwrap();
    write(&root.join("d2f"), b"now a file");
    fs::remove_dir_all(root.join("d2s")).unwrap();
    symlink("target/elsewhere", root.join("d2s")).unwrap();
    // A new directory (new inode) in place of the old one.
    write(&root.join("recreate.new/new"), b"new");
    write(&root.join("recreate.new/old1"), b"new old1");
    fs::remove_dir_all(root.join("recreate")).unwrap();
    fs::rename(root.join("recreate.new"), root.join("recreate")).unwrap();
    fs::remove_file(root.join("f2d")).unwrap();
    write(&root.join("f2d/child"), b"child");
    fs::hard_link(root.join("etc/hosts"), root.join("etc/hosts.link")).unwrap();
    fs::create_dir(root.join("dev")).unwrap();
    mknodat(
        CWD,
        root.join("dev/null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        makedev(1, 3),
    )
    .unwrap();
    mknodat(
        CWD,
        root.join("dev/loop9"),
        FileType::BlockDevice,
        Mode::from_raw_mode(0o660),
        makedev(7, 9),
    )
    .unwrap();
    // mknod applies the umask; say the modes outright.
    chmod(&root.join("dev/null"), 0o666);
    chmod(&root.join("dev/loop9"), 0o660);
    symlink(
        format!("/{}", "t".repeat(130)),
        root.join(format!("{}/lnk2", long_dir())),
    )
    .unwrap();
    lchown(root.join("lnk"), Some(42), Some(42)).unwrap();
    write(&root.join("kiln/state"), b"kiln's own, changed");
    match xattr::set(
        root.join("bin/tool"),
        "security.capability",
        &CAP_NET_BIND_SERVICE_EP,
    ) {
        Ok(()) => true,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("SKIP security.capability: this file system refused it: {e}");
            }
            false
        }
    }
}

fn layer_to_file(root: &Path, changes: &Changes, path: &Path, opts: &LayerOptions) -> LayerInfo {
    let file = fs::File::create(path).unwrap();
    write_layer(root, changes, file, opts).unwrap()
}

#[test]
fn a_run_step_becomes_a_layer_that_umoci_applies_to_the_same_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    make_base(&root);
    let excluded = [Path::new("/kiln")];

    let before = StatIndex::scan(&root, &excluded).unwrap();
    assert!(before.get(Path::new("kiln")).is_none());
    assert!(before.get(Path::new("kiln/state")).is_none());
    assert_eq!(
        before.get(Path::new("lnk")).unwrap().link_target,
        Some(Path::new("bin/tool"))
    );

    let opts = LayerOptions::default();
    let base_blob = tmp.path().join("base.tar.gz");
    let base = layer_to_file(&root, &Changes::full(&before), &base_blob, &opts);
    check_digests_with_coreutils(&base_blob, &base);

    let cap = run_step(&root);
    let after = StatIndex::scan(&root, &excluded).unwrap();
    let changes = diff(&before, &after);

    let long = long_dir();
    let lnk2 = format!("{long}/lnk2");
    use ChangeKind::*;
    let mut expected: Vec<(&str, ChangeKind)> = vec![
        ("bin/tool", Modified),
        ("d2f", TypeChanged),
        ("d2s", TypeChanged),
        ("dev", Added),
        ("dev/loop9", Added),
        ("dev/null", Added),
        ("etc", Modified),
        ("etc/added", Added),
        ("etc/config", Modified),
        ("etc/gone", Deleted),
        ("etc/hosts", Modified),
        ("etc/hosts.link", Added),
        ("etc/mode", Modified),
        ("etc/owner", Modified),
        ("f2d", TypeChanged),
        ("f2d/child", Added),
        ("lnk", Modified),
        (&long, Modified),
        (&lnk2, Added),
        ("new", Added),
        ("new/file", Added),
        ("recreate", Recreated),
        ("recreate/new", Added),
        ("recreate/old1", Added),
        ("tree", Deleted),
    ];
    if !cap {
        expected.retain(|(p, _)| *p != "bin/tool");
    }
    let got: Vec<(String, ChangeKind)> = changes
        .iter()
        .map(|c| (c.path.to_str().unwrap().to_owned(), c.kind))
        .collect();
    let want: Vec<(String, ChangeKind)> =
        expected.iter().map(|(p, k)| (p.to_string(), *k)).collect();
    assert_eq!(got, want);

    let blob = tmp.path().join("layer.tar.gz");
    let info = layer_to_file(&root, &changes, &blob, &opts);
    check_digests_with_coreutils(&blob, &info);
    assert_eq!(
        info.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    // The entries, read back with the tar crate.
    let entries = read_layer(&blob);
    let names: Vec<(&str, char)> = entries.iter().map(|e| (e.path.as_str(), e.kind)).collect();
    let long_slash = format!("{long}/");
    let mut want: Vec<(&str, char)> = vec![
        ("bin/", 'd'),
        ("bin/tool", '-'),
        (".wh.d2f", '-'),
        ("d2f", '-'),
        (".wh.d2s", '-'),
        ("d2s", 'l'),
        ("dev/", 'd'),
        ("dev/loop9", 'b'),
        ("dev/null", 'c'),
        ("etc/", 'd'),
        ("etc/added", '-'),
        ("etc/config", '-'),
        ("etc/.wh.gone", '-'),
        ("etc/hosts", '-'),
        ("etc/hosts.link", 'h'),
        ("etc/mode", '-'),
        ("etc/owner", '-'),
        (".wh.f2d", '-'),
        ("f2d/", 'd'),
        ("f2d/child", '-'),
        ("lnk", 'l'),
        ("long/", 'd'),
        (&long_slash, 'd'),
        (&lnk2, 'l'),
        ("new/", 'd'),
        ("new/file", '-'),
        ("recreate/", 'd'),
        ("recreate/.wh..wh..opq", '-'),
        ("recreate/new", '-'),
        ("recreate/old1", '-'),
        (".wh.tree", '-'),
    ];
    if !cap {
        want.retain(|(p, _)| !p.starts_with("bin/"));
    }
    assert_eq!(names, want);
    let get = |p: &str| entries.iter().find(|e| e.path == p).unwrap();
    assert_eq!(get("etc/hosts.link").link.as_deref(), Some("etc/hosts"));
    assert_eq!(get("etc/hosts.link").size, 0);
    assert_eq!(get("dev/null").dev, Some((1, 3)));
    assert_eq!(get("dev/loop9").dev, Some((7, 9)));
    assert_eq!(get("etc/mode").mode, 0o600);
    assert_eq!((get("etc/owner").uid, get("etc/owner").gid), (1234, 5678));
    assert_eq!((get("lnk").uid, get("lnk").gid), (42, 42));
    assert_eq!(
        get("etc/config").xattrs.get("user.test").map(Vec::as_slice),
        Some(&b"v"[..])
    );
    assert_eq!(get("d2s").link.as_deref(), Some("target/elsewhere"));
    assert_eq!(
        get(&lnk2).link.as_deref(),
        Some(format!("/{}", "t".repeat(130)).as_str())
    );
    if cap {
        assert_eq!(
            get("bin/tool")
                .xattrs
                .get("security.capability")
                .map(Vec::as_slice),
            Some(&CAP_NET_BIND_SERVICE_EP[..])
        );
    }
    let config_mtime = fs::metadata(root.join("etc/config")).unwrap();
    assert_eq!(
        get("etc/config").mtime as i64,
        std::os::unix::fs::MetadataExt::mtime(&config_mtime)
    );

    // The base layer keeps setuid, sticky, fifos, hard links and long names.
    let base_entries = read_layer(&base_blob);
    let bget = |p: &str| base_entries.iter().find(|e| e.path == p).unwrap();
    assert_eq!(bget("bin/sudo").mode, 0o4755);
    assert_eq!(bget("tmp/").mode, 0o1777);
    assert_eq!(bget("fifo").kind, 'p');
    assert_eq!(bget("links/b").kind, 'h');
    assert_eq!(bget("links/b").link.as_deref(), Some("links/a"));
    assert_eq!((bget("big").uid, bget("big").size), (1000, 1_048_583));
    assert!(bget(&format!("{long}/{}", "f".repeat(150))).kind == '-');
    assert!(!base_entries.iter().any(|e| e.path.starts_with("kiln")));

    // GNU tar reads it too, xattrs included.
    let listing = run(Command::new("tar")
        .arg("--xattrs")
        .arg("--xattrs-include=*")
        .arg("-tvvf")
        .arg(&blob));
    assert!(
        listing.contains("etc/hosts.link link to etc/hosts"),
        "{listing}"
    );
    assert!(
        listed(&listing, "crw-rw-rw-", "0/0", "dev/null"),
        "{listing}"
    );
    assert!(
        listed(&listing, "brw-rw----", "0/0", "dev/loop9"),
        "{listing}"
    );
    assert!(
        listed(&listing, "-rw-------", "0/0", "etc/mode"),
        "{listing}"
    );
    assert!(
        listed(&listing, "-rw-r--r--", "1234/5678", "etc/owner"),
        "{listing}"
    );
    assert!(listing.contains(&lnk2), "{listing}");
    if cap {
        assert!(listing.contains("security.capability"), "{listing}");
    }
    let base_listing = run(Command::new("tar").arg("-tvf").arg(&base_blob));
    assert!(
        listed(&base_listing, "-rwsr-xr-x", "0/0", "bin/sudo"),
        "{base_listing}"
    );
    assert!(
        listed(&base_listing, "drwxrwxrwt", "0/0", "tmp/"),
        "{base_listing}"
    );

    // Applied by an independent tool, base + layer is the changed tree.
    let unpacked = tmp.path().join("unpacked");
    umoci_unpack(
        tmp.path(),
        &[
            (base_blob.clone(), base.clone()),
            (blob.clone(), info.clone()),
        ],
        &unpacked,
    );
    let want = capture(&root, &["kiln"]);
    assert!(want.len() == 33, "{want:?}");
    assert_same_tree(&want, &capture(&unpacked, &[]));

    // And the base alone, unpacked by umoci and by GNU tar, agree.
    let by_umoci = tmp.path().join("base-umoci");
    umoci_unpack(tmp.path(), &[(base_blob.clone(), base)], &by_umoci);
    let by_tar = tmp.path().join("base-tar");
    fs::create_dir(&by_tar).unwrap();
    run(Command::new("tar")
        .arg("--xattrs")
        .arg("--xattrs-include=*")
        .arg("--numeric-owner")
        .arg("-xpf")
        .arg(&base_blob)
        .arg("-C")
        .arg(&by_tar));
    assert_same_tree(&capture(&by_umoci, &[]), &capture(&by_tar, &[]));

    // Deterministic: the same tree gives the same bytes.
    let again = tmp.path().join("again.tar.gz");
    let info2 = layer_to_file(&root, &changes, &again, &opts);
    assert_eq!(info2, info);
    assert_eq!(fs::read(&again).unwrap(), fs::read(&blob).unwrap());
}

#[test]
fn every_encoding_is_deterministic_and_hashes_what_it_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    make_base(&root);
    let index = StatIndex::scan(&root, &[Path::new("kiln")]).unwrap();
    let changes = Changes::full(&index);
    let mut diff_ids = Vec::new();
    for (n, encoding) in [
        Encoding::None,
        Encoding::default(),
        Encoding::Gzip {
            level: 6,
            threads: 2,
        },
        Encoding::Zstd {
            level: 3,
            workers: 0,
        },
        Encoding::Zstd {
            level: 3,
            workers: 2,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let opts = LayerOptions {
            encoding,
            media_types: MediaTypes::Docker,
            ..LayerOptions::default()
        };
        let a = tmp.path().join(format!("{n}-a"));
        let b = tmp.path().join(format!("{n}-b"));
        let ia = layer_to_file(&root, &changes, &a, &opts);
        let ib = layer_to_file(&root, &changes, &b, &opts);
        assert_eq!(ia, ib, "{encoding:?}");
        let bytes = fs::read(&a).unwrap();
        assert_eq!(bytes, fs::read(&b).unwrap(), "{encoding:?}");
        assert_eq!(kiln_oci::Digest::of(&bytes), ia.digest);
        assert_eq!(bytes.len() as u64, ia.size);
        assert_eq!(
            kiln_oci::media_type::layer_compression(ia.media_type),
            Some(encoding.compression())
        );
        assert!(ia.media_type.starts_with("application/vnd.docker."));
        let raw = match encoding.compression() {
            kiln_oci::Compression::Zstd => sh(&format!(
                "zstd -dc '{}' 2>/dev/null | sha256sum || true",
                a.display()
            )),
            kiln_oci::Compression::Gzip => sh(&format!("gunzip -c '{}' | sha256sum", a.display())),
            kiln_oci::Compression::None => sh(&format!("sha256sum '{}'", a.display())),
        };
        let hex = raw.split_whitespace().next().unwrap_or("");
        if encoding.compression() != kiln_oci::Compression::Zstd || which("zstd") {
            assert_eq!(hex, ia.diff_id.hex(), "{encoding:?}");
        }
        assert_eq!(
            read_layer(&a).len(),
            read_layer(&tmp.path().join("0-a")).len()
        );
        diff_ids.push(ia.diff_id);
    }
    // One tar, whatever the compression.
    assert!(diff_ids.windows(2).all(|w| w[0] == w[1]));
}

/// True when a `tar -tv` listing has a line for `path` with these
/// permissions and `uid/gid`.
fn listed(listing: &str, perms: &str, owner: &str, path: &str) -> bool {
    listing.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 2
            && f[0].trim_end_matches('*') == perms
            && f[1] == owner
            && f.last() == Some(&path)
    })
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn reproducible_mtime_clamps_or_fixes_every_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    make_base(&root);
    let index = StatIndex::scan(&root, &[Path::new("kiln")]).unwrap();
    let mut changes: Vec<_> = Changes::full(&index).iter().cloned().collect();
    changes.push(kiln_fs::snapshot::Change {
        path: PathBuf::from("etc/removed"),
        kind: ChangeKind::Deleted,
    });
    let changes = Changes::new(changes);
    let old = 1_000_000_000;
    filetime_set(&root.join("etc/hosts"), old);
    for (rule, check) in [
        (
            MtimeRule::Fixed(0),
            Box::new(|_: &TarEntry, m: u64| m == 0) as Box<dyn Fn(&TarEntry, u64) -> bool>,
        ),
        (
            MtimeRule::Clamp(1_500_000_000),
            Box::new(move |e: &TarEntry, m: u64| {
                if e.path == "etc/hosts" {
                    m == old as u64
                } else {
                    m == 1_500_000_000
                }
            }),
        ),
    ] {
        let opts = LayerOptions {
            reproducible_mtime: Some(rule),
            xattrs: XattrPolicy::None,
            ..LayerOptions::default()
        };
        let blob = tmp.path().join("l.tar.gz");
        layer_to_file(&root, &changes, &blob, &opts);
        let entries = read_layer(&blob);
        assert!(entries.iter().any(|e| e.path == "etc/.wh.removed"));
        for e in &entries {
            assert!(
                check(e, e.mtime),
                "{rule:?}: {} has mtime {}",
                e.path,
                e.mtime
            );
        }
    }
}

fn filetime_set(p: &Path, secs: i64) {
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(CWD, p, &t, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

#[test]
fn a_name_that_looks_like_a_whiteout_is_refused_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("d/.wh.sneaky"), b"");
    let index = StatIndex::scan(tmp.path(), &[]).unwrap();
    let err = write_layer(
        tmp.path(),
        &Changes::full(&index),
        Vec::new(),
        &LayerOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("d/.wh.sneaky"), "{err}");
}

#[test]
fn an_unchanged_tree_has_no_changes_and_a_changed_one_only_its_change() {
    let tmp = tempfile::tempdir().unwrap();
    make_base(tmp.path());
    let a = StatIndex::scan(tmp.path(), &[]).unwrap();
    let b = StatIndex::scan(tmp.path(), &[]).unwrap();
    assert!(diff(&a, &b).is_empty());
    assert_eq!(a.len(), b.len());
    // Same size, rewritten right after the scan: the ctime still moves.
    fs::write(tmp.path().join("etc/mode"), b"M").unwrap();
    let c = StatIndex::scan(tmp.path(), &[]).unwrap();
    let changes = diff(&b, &c);
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.path.to_str().unwrap(), c.kind))
            .collect::<Vec<_>>(),
        vec![("etc/mode", ChangeKind::Modified)]
    );
}

#[test]
fn mount_points_are_not_entered_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    write(&tmp.path().join("top"), b"t");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "kiln-test", mnt.to_str().unwrap()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("SKIP mount_points_are_not_entered_unless_asked: cannot mount tmpfs here");
        }
        return;
    }
    write(&mnt.join("inside"), b"i");
    let same = StatIndex::scan(tmp.path(), &[]);
    let cross = StatIndex::scan_with(
        tmp.path(),
        &ScanOptions {
            cross_filesystems: true,
            ..Default::default()
        },
    );
    run(Command::new("umount").arg(&mnt));
    let same = same.unwrap();
    let cross = cross.unwrap();
    assert!(same.get(Path::new("mnt")).is_some());
    assert!(same.get(Path::new("mnt/inside")).is_none());
    assert!(cross.get(Path::new("mnt/inside")).is_some());
}

#[test]
fn parallel_and_serial_scans_give_the_same_index_in_tree_order() {
    let tmp = tempfile::tempdir().unwrap();
    make_base(tmp.path());
    for d in 0..30 {
        for f in 0..20 {
            write(&tmp.path().join(format!("many/d{d:02}/sub/f{f:02}")), b"");
        }
    }
    let excluded = [Path::new("many/d07/sub"), Path::new("kiln")];
    let scan = |threads| {
        StatIndex::scan_with(
            tmp.path(),
            &ScanOptions {
                excluded: &excluded,
                threads,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let serial = scan(1);
    let entries = |i: &StatIndex| -> Vec<(PathBuf, kiln_fs::snapshot::Stat, Option<PathBuf>)> {
        i.iter()
            .map(|e| {
                (
                    e.path.to_owned(),
                    *e.stat,
                    e.link_target.map(Path::to_owned),
                )
            })
            .collect()
    };
    let want = entries(&serial);
    assert!(want.iter().any(|(p, ..)| p == Path::new("many/d07")));
    assert!(!want
        .iter()
        .any(|(p, ..)| p.starts_with("many/d07/sub") || p.starts_with("kiln")));
    let mut sorted = want.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(sorted, want, "not in tree order");
    for threads in [2, 3, 8] {
        assert_eq!(entries(&scan(threads)), want, "{threads} threads");
    }
    // Found by path, too.
    let e = serial.get(Path::new("many/d29/sub/f19")).unwrap();
    assert_eq!(e.stat.size, 0);
    assert!(serial.get(Path::new("many/d29/sub/f20")).is_none());
}
