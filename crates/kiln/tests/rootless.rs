//! `kiln build` as a non-root user: kiln runs itself again as root of a user namespace mapped
//! onto the user's subordinate ids (newuidmap/newgidmap), then builds with the overlay or the
//! chroot backend there. The test plays a workstation user with `nobody` (uid 65534) and gives it
//! subordinate ids in a private mount namespace (its own /etc/subuid and /etc/subgid bound over
//! the machine's, which stay untouched).

mod common;

use common::World;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

#[test]
fn a_non_root_user_builds_in_a_user_namespace_with_both_backends() {
    let world = World::new();
    let tools = open_dir();
    // The test binary's directory may not be readable by nobody: use a copy.
    let kiln = tools.path().join("kiln");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &kiln).unwrap();
    let ids = tools.path().join("subids");
    std::fs::write(&ids, "nobody:300000:65536\n").unwrap();
    let context = open_dir();
    std::fs::write(
        context.path().join("Dockerfile"),
        "ARG BASE\nFROM $BASE\nCOPY --chown=app:app note.txt /home/app/note.txt\n\
         RUN echo \"built as $(id -u)\" > /built && chown app:app /built && rm -r /base/dir\n\
         USER app\nRUN id -un > /tmp/who\n",
    )
    .unwrap();
    std::fs::write(context.path().join("note.txt"), "note\n").unwrap();
    for backend in common::BACKENDS {
        let home = open_dir();
        let out_dir = open_dir();
        let layout = out_dir.path().join("layout");
        let script = format!(
            "mount --bind {ids} /etc/subuid && mount --bind {ids} /etc/subgid && \
             exec setpriv --reuid 65534 --regid 65534 --clear-groups -- {kiln} build \
             -c {ctx} --no-push --oci-layout-path {layout} --build-arg BASE={base} \
             --insecure-registry {host} --isolation {backend}",
            ids = ids.display(),
            kiln = kiln.display(),
            ctx = context.path().display(),
            layout = layout.display(),
            base = world.base,
            host = world.registry.host(),
        );
        let out = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                &script,
            ])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", home.path())
            .env("XDG_CACHE_HOME", home.path())
            .env("DOCKER_CONFIG", world.docker_config.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{backend}: {err}");
        assert!(err.contains(&format!("RUN isolation: {backend}")), "{err}");
        let fs = common::unpack(&layout);
        assert_eq!(fs.read("/built"), "built as 0\n");
        let built = fs.meta("/built");
        assert_eq!(
            (built.uid(), built.gid()),
            (1000, 1000),
            "owners inside the image"
        );
        let note = fs.meta("/home/app/note.txt");
        assert_eq!((note.uid(), note.gid()), (1000, 1000));
        assert_eq!(fs.read("/tmp/who"), "app\n");
        assert!(!fs.exists("/base/dir"), "the deletion is a whiteout");
        assert!(fs.exists("/base/file"));
        // State stayed under the user's cache dir, owned by the user.
        let store = home.path().join("kiln/store");
        assert!(store.is_dir());
        assert_eq!(std::fs::metadata(&store).unwrap().uid(), 65534);
    }
}

#[test]
fn without_subordinate_ids_the_error_says_what_to_set_up() {
    let tools = open_dir();
    let kiln = tools.path().join("kiln");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &kiln).unwrap();
    let empty = tools.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let script = format!(
        "mount --bind {e} /etc/subuid && mount --bind {e} /etc/subgid && \
         exec setpriv --reuid 65534 --regid 65534 --clear-groups -- {kiln} build --no-push -c /",
        e = empty.display(),
        kiln = kiln.display()
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("/etc/subuid") && err.contains("nobody"),
        "{err}"
    );
}
