//! kiln in a container with the least privilege each RUN backend needs, under podman (runc) as
//! the Kubernetes examples configure the build pod (docs/kubernetes.md, "securityContext"):
//! - root with every capability dropped but the chroot backend's ten, and no privilege
//!   escalation (`allowPrivilegeEscalation: false` is podman's `no-new-privileges`);
//! - the same plus SYS_ADMIN: the namespaced backends, still without privilege escalation;
//! - a non-root user (uid 1000) with only SETUID and SETGID, an unmasked /proc
//!   (`procMount: Unmasked`) and no seccomp filter, which gets the rootless backend through
//!   newuidmap/newgidmap carrying file capabilities;
//! - that non-root user with no privilege escalation, which cannot map its subordinate ids and
//!   must say so and why.
//!
//! Each container runs a directory as its root file system (podman `--rootfs`): kiln (a static
//! one from `KILN_IMAGE_BIN`, else this test's with its shared libraries), busybox and what
//! kiln's rootless image adds (scripts/lib/rootless-files.sh: newuidmap/newgidmap with file
//! capabilities, the user kiln with subordinate ids). The build runs a RUN that chowns,
//! under the backend kiln logs, into a docker-archive checked by the test.

mod common;

use std::path::Path;
use std::process::{Command, Output};

/// The capabilities the chroot backend needs (examples/kubernetes/README.md says why).
const CHROOT_CAPS: &str =
    "CHOWN,DAC_OVERRIDE,FOWNER,FSETID,SETUID,SETGID,SYS_CHROOT,MKNOD,KILL,SETFCAP";

/// Copies `bin` to `root` at the same path, with the shared libraries ldd names.
fn install(root: &Path, bin: &Path, at: &str) {
    let dest = root.join(at.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(bin, &dest).unwrap();
    let ldd = Command::new("ldd").arg(bin).output().unwrap();
    if !ldd.status.success() {
        return; // static
    }
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let dest = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(lib, dest).unwrap();
    }
}

/// A container root: kiln, busybox, a build context at /ctx, what kiln's rootless image adds
/// (scripts/lib/rootless-files.sh), a writable /tmp.
fn container_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in [
        "bin",
        "etc",
        "tmp",
        "proc",
        "sys",
        "dev",
        "home/kiln",
        "ctx",
        "out",
    ] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    let kiln =
        std::env::var("KILN_IMAGE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kiln").into());
    install(r, Path::new(&kiln), "/usr/bin/kiln");
    std::fs::copy(kiln_test::BUSYBOX_BIN, r.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
    // To become the non-root user as Kubernetes starts one (see `AS_KUBERNETES_NON_ROOT`).
    install(r, Path::new("/usr/bin/setpriv"), "/usr/bin/setpriv");
    // What kiln's rootless image adds: newuidmap/newgidmap with file capabilities, the user
    // kiln (1000) with subordinate ids.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lib/rootless-files.sh");
    let added = Command::new("bash").arg(script).arg(r).status().unwrap();
    assert!(added.success(), "scripts/lib/rootless-files.sh failed");
    std::fs::copy(kiln_test::BUSYBOX_BIN, r.join("ctx/busybox")).unwrap();
    std::fs::write(
        r.join("ctx/Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \
         \"/bin/busybox mkdir /made && /bin/busybox echo ran > /made/file && \
         /bin/busybox chown 1234:1234 /made/file\"]\n",
    )
    .unwrap();
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(r)
        .status()
        .unwrap();
    for dir in ["tmp", "out"] {
        Command::new("chmod")
            .arg("1777")
            .arg(r.join(dir))
            .status()
            .unwrap();
    }
    Command::new("chown")
        .arg("1000:1000")
        .arg(r.join("home/kiln"))
        .status()
        .unwrap();
    root
}

/// The rootless pod's settings (examples/kubernetes/build-pod-rootless.yaml): SETUID and SETGID
/// only, an unmasked /proc (`procMount: Unmasked`), no seccomp filter.
const ROOTLESS_POD: [&str; 8] = [
    "--cap-drop",
    "ALL",
    "--cap-add",
    "SETUID,SETGID",
    "--security-opt",
    "unmask=ALL",
    "--security-opt",
    "seccomp=unconfined",
];

/// How the container's command becomes uid 1000 as in a Kubernetes pod with `runAsUser: 1000`:
/// no capability in its effective, permitted, inheritable or ambient sets, the pod's
/// capabilities only in the bounding set (where file capabilities can draw on them). podman's
/// own `--user` would hand the added capabilities over as ambient ones, which Kubernetes
/// does not.
const AS_KUBERNETES_NON_ROOT: [&str; 7] = [
    "/usr/bin/setpriv",
    "--reuid=1000",
    "--regid=1000",
    "--clear-groups",
    "--inh-caps=-all",
    "--ambient-caps=-all",
    "--",
];

/// Runs a build in a container of `root` with the podman flags `security`, as root or (with
/// `non_root`) as uid 1000 the way Kubernetes starts it.
fn build_in_container(root: &Path, podman_dir: &Path, security: &[&str], non_root: bool) -> Output {
    let rootfs = root.to_str().unwrap();
    let user: &[&str] = if non_root {
        &AS_KUBERNETES_NON_ROOT
    } else {
        &[]
    };
    let args = [
        &["run", "--rm"][..],
        &common::PODMAN_RUN_LIMITS,
        security,
        &["--rootfs", rootfs],
        user,
        &[
            "/usr/bin/kiln",
            "build",
            "--context",
            "/ctx",
            "--no-push",
            "--destination",
            "kiln.test/least:1",
            "--tar-path",
            "/out/image.tar",
            "--kiln-dir",
            "/tmp/kiln",
        ],
    ]
    .concat();
    common::podman(podman_dir, &args)
}

/// The owner and content of /made/file in the docker-archive the build wrote.
fn made_file(root: &Path) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let tar = root.join("out/image.tar");
    let unpacked = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(unpacked.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    let layer = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let listing = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(dir.path().join(&layer))
        .arg("made/file")
        .output()
        .unwrap();
    let content = Command::new("tar")
        .arg("-xOf")
        .arg(dir.path().join(&layer))
        .arg("made/file")
        .output()
        .unwrap();
    let owner = String::from_utf8_lossy(&listing.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (owner, String::from_utf8_lossy(&content.stdout).into_owned())
}

#[test]
fn each_backend_builds_with_its_least_privilege() {
    let namespaced_caps = format!("{CHROOT_CAPS},SYS_ADMIN");
    let cases: [(&str, Vec<&str>, &str, bool); 3] = [
        (
            "root, chroot capabilities only, no privilege escalation",
            vec![
                "--cap-drop",
                "ALL",
                "--cap-add",
                CHROOT_CAPS,
                "--security-opt",
                "no-new-privileges",
            ],
            "RUN isolation: chroot",
            false,
        ),
        (
            "root, chroot capabilities and SYS_ADMIN, no privilege escalation",
            vec![
                "--cap-drop",
                "ALL",
                "--cap-add",
                &namespaced_caps,
                "--security-opt",
                "no-new-privileges",
            ],
            "RUN isolation: ",
            false,
        ),
        (
            "uid 1000, SETUID and SETGID only, unmasked /proc, no seccomp filter",
            ROOTLESS_POD.to_vec(),
            "RUN isolation: ",
            true,
        ),
    ];
    let podman_dir = tempfile::tempdir().unwrap();
    for (what, security, backend, non_root) in cases {
        let root = container_root();
        let out = build_in_container(root.path(), podman_dir.path(), &security, non_root);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{what}: {stderr}");
        assert!(
            stderr.contains(backend),
            "{what}: no {backend:?} in:\n{stderr}"
        );
        if what.starts_with("root, chroot capabilities only") {
            assert!(stderr.contains("without namespaces"), "{what}: {stderr}");
        } else {
            assert!(!stderr.contains("without namespaces"), "{what}: {stderr}");
        }
        let (owner, content) = made_file(root.path());
        assert_eq!(owner, "1234/1234", "{what}: the RUN's chown");
        assert_eq!(content, "ran\n", "{what}");
    }
}

#[test]
fn a_non_root_user_without_privilege_escalation_is_told_why_it_cannot_build() {
    let root = container_root();
    let podman_dir = tempfile::tempdir().unwrap();
    let out = build_in_container(
        root.path(),
        podman_dir.path(),
        &[&ROOTLESS_POD[..], &["--security-opt", "no-new-privileges"]].concat(),
        true,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for needle in [
        "newuidmap failed",
        "file capabilities",
        "allow privilege escalation",
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}
