//! A real overlayfs upper dir becomes a layer: whiteouts, opaque dirs,
//! copy-ups and hard links, checked with the tar crate and applied by umoci.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use kiln_fs::layer::{layer_from_overlay_upper, write_layer, LayerError, LayerOptions};
use kiln_fs::snapshot::{Changes, StatIndex};
use support::*;

fn write(p: &Path, content: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// Mounts an overlay of `lower` at `merged`; false when this system refuses.
fn mount_overlay(lower: &Path, upper: &Path, work: &Path, merged: &Path, extra: &str) -> bool {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}{extra}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let out = Command::new("mount")
        .args(["-t", "overlay", "kiln-test-overlay", "-o", &opts])
        .arg(merged)
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "SKIP overlay test: mount -t overlay refused: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
            false
        }
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("SKIP overlay test: cannot run mount: {e}");
            }
            false
        }
    }
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn an_overlay_upper_dir_is_the_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| {
        let p = tmp.path().join(d);
        fs::create_dir(&p).unwrap();
        p
    });
    write(&lower.join("a/keep"), b"keep");
    write(&lower.join("a/del"), b"del");
    write(&lower.join("opq/old1"), b"old1");
    write(&lower.join("opq/old2"), b"old2");
    write(&lower.join("file1"), b"one");
    write(&lower.join("file2"), b"two");
    write(&lower.join("rmdir/x"), b"x");
    write(&lower.join("untouched/deep/file"), b"deep");

    if !mount_overlay(
        &lower,
        &upper,
        &work,
        &merged,
        ",redirect_dir=off,metacopy=off,index=off",
    ) {
        return;
    }
    let guard = Mounted(&merged);
    fs::remove_file(merged.join("a/del")).unwrap();
    fs::remove_dir_all(merged.join("opq")).unwrap();
    fs::create_dir(merged.join("opq")).unwrap();
    write(&merged.join("opq/new"), b"new");
    fs::write(merged.join("file1"), b"ONE, longer").unwrap();
    std::os::unix::fs::chown(merged.join("file2"), Some(7), Some(8)).unwrap();
    fs::remove_dir_all(merged.join("rmdir")).unwrap();
    write(&merged.join("newfile"), b"fresh");
    fs::hard_link(merged.join("newfile"), merged.join("newlink")).unwrap();
    let expected = capture(&merged, &[]);
    drop(guard);
    assert!(
        !fs::read_dir(&merged).unwrap().any(|_| true),
        "the overlay is still mounted"
    );

    // The lower dir as the base layer, the upper dir as the next one.
    let opts = LayerOptions::default();
    let base_blob = tmp.path().join("base.tar.gz");
    let base_index = StatIndex::scan(&lower, &[]).unwrap();
    let base = write_layer(
        &lower,
        &Changes::full(&base_index),
        fs::File::create(&base_blob).unwrap(),
        &opts,
    )
    .unwrap();
    let blob = tmp.path().join("upper.tar.gz");
    let info = layer_from_overlay_upper(&upper, fs::File::create(&blob).unwrap(), &opts).unwrap();
    check_digests_with_coreutils(&blob, &info);

    let entries = read_layer(&blob);
    let names: Vec<(&str, char)> = entries.iter().map(|e| (e.path.as_str(), e.kind)).collect();
    assert_eq!(
        names,
        vec![
            ("a/", 'd'),
            ("a/.wh.del", '-'),
            ("file1", '-'),
            ("file2", '-'),
            ("newfile", '-'),
            ("newlink", 'h'),
            ("opq/", 'd'),
            ("opq/.wh..wh..opq", '-'),
            ("opq/new", '-'),
            (".wh.rmdir", '-'),
        ]
    );
    for e in &entries {
        assert!(
            !e.xattrs.keys().any(|k| k.contains(".overlay.")),
            "{} carries overlay's own xattrs: {:?}",
            e.path,
            e.xattrs.keys()
        );
    }
    let file2 = entries.iter().find(|e| e.path == "file2").unwrap();
    assert_eq!((file2.uid, file2.gid), (7, 8));

    let unpacked = tmp.path().join("unpacked");
    umoci_unpack(tmp.path(), &[(base_blob, base), (blob, info)], &unpacked);
    assert_same_tree(&expected, &capture(&unpacked, &[]));
}

#[test]
fn a_redirected_directory_is_refused_because_its_content_is_not_in_the_upper_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| {
        let p = tmp.path().join(d);
        fs::create_dir(&p).unwrap();
        p
    });
    write(&lower.join("dir/file"), b"f");
    if !mount_overlay(&lower, &upper, &work, &merged, ",redirect_dir=on,index=off") {
        return;
    }
    let guard = Mounted(&merged);
    fs::rename(merged.join("dir"), merged.join("moved")).unwrap();
    drop(guard);
    let err = layer_from_overlay_upper(&upper, Vec::new(), &LayerOptions::default()).unwrap_err();
    assert!(
        matches!(&err, LayerError::OverlayFeature { path, xattr }
            if path.ends_with("moved") && xattr == "trusted.overlay.redirect"),
        "{err}"
    );
}
