//! kaniko issue 1586: a Jenkins agent container lost its workspace after a `--cleanup` build,
//! because kaniko unpacks images over `/` and deletes it between stages. kiln keeps all state
//! under its kiln dir. This test makes a throwaway root that looks like the Jenkins container
//! (`/busybox`, `/workspace`, `/etc`, the executor at `/kiln/executor`), chroots into it, runs the
//! executor three times in a row as the pipeline does (single-stage, multi-stage, `--cleanup`),
//! and checks that every file outside the kiln dir is exactly as before.

mod common;

use common::World;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Copies the kiln binary and the shared libraries it needs into `root`.
fn install_executor(root: &Path) {
    let exe = Path::new(env!("CARGO_BIN_EXE_kiln"));
    std::fs::create_dir_all(root.join("kiln")).unwrap();
    std::fs::copy(exe, root.join("kiln/executor")).unwrap();
    let ldd = Command::new("ldd").arg(exe).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(lib) = path {
            let dest = root.join(lib.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&lib, &dest).unwrap();
        }
    }
}

/// Everything under `root` except `skip`: path → (type, mode, owner, size, mtime, content or
/// link target).
fn inventory(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path == skip {
                continue;
            }
            let m = std::fs::symlink_metadata(&path).unwrap();
            let detail = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if m.is_file() {
                format!("file {:?}", std::fs::read(&path).unwrap().len())
                    + &format!(" {:x}", simple_hash(&std::fs::read(&path).unwrap()))
            } else if m.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else {
                "other".to_owned()
            };
            out.insert(
                path.strip_prefix(root).unwrap().to_owned(),
                format!(
                    "{detail} mode={:o} owner={}:{} mtime={}.{}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.mtime(),
                    m.mtime_nsec()
                ),
            );
        }
    }
    out
}

fn simple_hash(bytes: &[u8]) -> u64 {
    // FNV-1a: enough to notice a changed file.
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

#[test]
fn three_builds_in_a_row_leave_the_jenkins_container_as_it_was() {
    let world = World::new();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    install_executor(r);
    // What the kaniko debug image and the Jenkins agent put in the container.
    std::fs::create_dir_all(r.join("busybox")).unwrap();
    std::fs::copy(kiln_test::BUSYBOX_BIN, r.join("busybox/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", r.join("busybox/sh")).unwrap();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/busybox/sh\n").unwrap();
    std::fs::create_dir_all(r.join("kaniko/.docker")).unwrap();
    std::fs::write(r.join("kaniko/.docker/config.json"), "{}").unwrap();
    let ws = r.join("workspace/app");
    std::fs::create_dir_all(ws.join("src")).unwrap();
    std::fs::write(ws.join("src/main.txt"), "source\n").unwrap();
    std::fs::write(
        ws.join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nCOPY src /src\nRUN rm -rf /workspace /busybox /etc/passwd; echo built > /built\n",
    )
    .unwrap();
    std::fs::write(
        ws.join("multi.Dockerfile"),
        "ARG BASE\nFROM $BASE AS build\nRUN mkdir /out && echo artifact > /out/a && rm -rf /tmp\nFROM $BASE\nCOPY --from=build /out /out\n",
    )
    .unwrap();
    let before = inventory(r, &r.join("kiln"));
    let host = world.registry.host();
    let base_arg = format!("BASE={}", world.base);
    let runs: [&[&str]; 3] = [
        &["--destination", &format!("{host}/app:one")],
        &[
            "--dockerfile",
            "multi.Dockerfile",
            "--destination",
            &format!("{host}/app:two"),
        ],
        &["--destination", &format!("{host}/app:three"), "--cleanup"],
    ];
    for extra in runs {
        // A container's root is a mount point in its own mount namespace: so is this one's.
        let out = Command::new("/usr/bin/unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg("/bin/sh")
            .arg("-c")
            .arg("/usr/bin/mount --bind \"$0\" \"$0\" && exec /usr/sbin/chroot \"$0\" \"$@\"")
            .arg(r)
            .arg("/kiln/executor")
            .args(["--context", "/workspace/app", "--build-arg", &base_arg])
            .args(["--insecure-registry", &host])
            .args(extra)
            .env_clear()
            .env("PATH", "/busybox")
            .env("HOME", "/root")
            .output()
            .unwrap();
        common::assert_success(&out);
        // As the Jenkins `sh` step does next: the workspace is still there.
        assert!(r.join("workspace/app/src/main.txt").is_file());
    }
    let after = inventory(r, &r.join("kiln"));
    assert_eq!(before, after, "files outside the kiln dir changed");
    // --cleanup removed that build's directory and nothing else of the kiln dir; a build
    // without it keeps its directory until the next build starts (which removes the
    // directories of builds that are gone).
    let builds: Vec<_> = std::fs::read_dir(r.join("kiln/builds")).unwrap().collect();
    assert_eq!(
        builds.len(),
        0,
        "no build directory outlives the next build"
    );
    assert!(
        r.join("kiln/store/blobs").is_dir(),
        "the shared store stays"
    );
    // The pushed images hold what the builds made.
    let image = tempfile::tempdir().unwrap();
    kiln_test::skopeo_checked([
        "copy".to_string(),
        "--src-tls-verify=false".to_string(),
        format!("docker://{host}/app:three"),
        format!("oci:{}:three", image.path().display()),
    ])
    .unwrap();
    let fs = common::unpack(image.path());
    assert_eq!(fs.read("/built"), "built\n");
    assert_eq!(fs.read("/src/main.txt"), "source\n");
}
