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

/// The kiln binary where `nobody` can run it, and subordinate ids for `nobody`.
struct Rootless {
    tools: tempfile::TempDir,
}

impl Rootless {
    fn new() -> Rootless {
        let tools = open_dir();
        // The test binary's directory may not be readable by nobody: use a copy.
        std::fs::copy(env!("CARGO_BIN_EXE_kiln"), tools.path().join("kiln")).unwrap();
        std::fs::write(tools.path().join("subids"), "nobody:300000:65536\n").unwrap();
        Rootless { tools }
    }

    /// `kiln build` of `context` as `nobody` (BASE = the world's base image) into an OCI
    /// layout, with this backend and kiln dir (default: under `home`'s cache).
    fn build(
        &self,
        world: &World,
        context: &std::path::Path,
        layout: &std::path::Path,
        backend: &str,
        kiln_dir: Option<&std::path::Path>,
        home: &std::path::Path,
    ) -> std::process::Output {
        let kiln_dir = kiln_dir
            .map(|d| format!(" --kiln-dir {}", d.display()))
            .unwrap_or_default();
        let script = format!(
            "mount --bind {ids} /etc/subuid && mount --bind {ids} /etc/subgid && \
             exec setpriv --reuid 65534 --regid 65534 --clear-groups -- {kiln} build \
             -c {ctx} --no-push --oci-layout-path {layout} --build-arg BASE={base} \
             --insecure-registry {host} --isolation {backend}{kiln_dir}",
            ids = self.tools.path().join("subids").display(),
            kiln = self.tools.path().join("kiln").display(),
            ctx = context.display(),
            layout = layout.display(),
            base = world.base,
            host = world.registry.host(),
        );
        Command::new("unshare")
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
            .env("HOME", home)
            .env("XDG_CACHE_HOME", home)
            .env("DOCKER_CONFIG", world.docker_config.path())
            .output()
            .unwrap()
    }
}

#[test]
fn a_non_root_user_builds_in_a_user_namespace_with_both_backends() {
    let world = World::new();
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
        let out =
            Rootless::new().build(&world, context.path(), &layout, backend, None, home.path());
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

/// Layers unpacked for a rootless overlay mark opaque directories with `user.overlay.opaque`,
/// which root's overlay ignores (and the other way round): a rootless and a root build sharing
/// one kiln dir must each get trees unpacked their own way.
#[test]
fn a_rootless_and_a_root_build_sharing_a_kiln_dir_each_see_the_right_tree() {
    use kiln_test::LayerTar;
    let world = World::new();
    // busybox, then a layer that makes /base/dir opaque: only `new` is left in it.
    let opaque = LayerTar::new()
        .dir("base/dir", 0o755, (0, 0))
        .unwrap()
        .file("base/dir/.wh..wh..opq", 0o644, (0, 0), b"")
        .unwrap()
        .file("base/dir/new", 0o644, (0, 0), b"new\n")
        .unwrap()
        .finish()
        .unwrap();
    let image = kiln_test::BaseImage::build(
        vec![kiln_test::busybox_layer().unwrap(), opaque],
        serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["sh"]}),
    )
    .unwrap();
    let base = world.push_base(&image, "opaque:1");
    let context = open_dir();
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {base}\nRUN ls /base/dir > /listing\n"),
    )
    .unwrap();
    let kiln_dir = open_dir();
    let home = open_dir();
    let out_dir = open_dir();
    let rootless_layout = out_dir.path().join("rootless");
    let out = Rootless::new().build(
        &world,
        context.path(),
        &rootless_layout,
        "overlay",
        Some(kiln_dir.path()),
        home.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(common::unpack(&rootless_layout).read("/listing"), "new\n");
    // Root, on the same kiln dir: the base layers unpacked for the rootless overlay are not
    // its own.
    let root_layout = out_dir.path().join("root");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--no-push", "--isolation", "overlay", "-c"])
        .arg(context.path())
        .arg("--oci-layout-path")
        .arg(&root_layout)
        .arg("--kiln-dir")
        .arg(kiln_dir.path())
        .args(["--insecure-registry", &world.registry.host()])
        .env("DOCKER_CONFIG", world.docker_config.path())
        .output()
        .unwrap();
    common::assert_success(&out);
    assert_eq!(common::unpack(&root_layout).read("/listing"), "new\n");
    let formats: Vec<String> = std::fs::read_dir(kiln_dir.path().join("store/layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(formats.contains(&"overlay".to_owned()), "{formats:?}");
    assert!(
        formats.iter().any(|f| f.starts_with("overlay-userxattr")),
        "{formats:?}"
    );
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
