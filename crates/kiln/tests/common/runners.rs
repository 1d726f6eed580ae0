//! The four ways kiln runs RUN steps, as the tests start kiln for each: overlay, chroot with
//! namespaces, chroot without them (a pod without CAP_SYS_ADMIN: setpriv drops it) and
//! rootless (`nobody` in a user namespace of its own).

use super::World;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// How kiln runs its RUN steps in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runner {
    Overlay,
    Chroot,
    /// Root without CAP_SYS_ADMIN: no namespaces, mounts made by moving files.
    ChrootNoNamespaces,
    /// `nobody` in a user namespace of its own (overlay or chroot inside, as kiln picks).
    Rootless,
}

pub(crate) const RUNNERS: [Runner; 4] = [
    Runner::Overlay,
    Runner::Chroot,
    Runner::ChrootNoNamespaces,
    Runner::Rootless,
];

/// A directory anyone may use (the rootless runner is `nobody`).
pub(crate) fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// Makes `dir` and everything under it readable (and dirs enterable) by anyone.
pub(crate) fn open_tree(dir: &Path) {
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status()
        .unwrap();
}

pub(crate) struct Harness {
    pub(crate) world: World,
    /// A copy of kiln `nobody` can run, and subordinate ids for it.
    pub(crate) tools: tempfile::TempDir,
}

impl Harness {
    pub(crate) fn new() -> Harness {
        let world = World::new();
        let tools = open_dir();
        std::fs::copy(env!("CARGO_BIN_EXE_kiln"), tools.path().join("kiln")).unwrap();
        std::fs::write(tools.path().join("subids"), "nobody:300000:65536\n").unwrap();
        Harness { world, tools }
    }

    /// `kiln build` of `context` into `layout` with this runner and kiln dir; `envs` are set
    /// for kiln (secrets by variable, SSH_AUTH_SOCK).
    pub(crate) fn build(
        &self,
        runner: Runner,
        context: &Path,
        kiln_dir: &Path,
        layout: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Output {
        self.command(runner, context, kiln_dir, layout, extra, envs)
            .output()
            .expect("kiln runs")
    }

    /// The command [`Harness::build`] runs, to start it and watch it instead.
    pub(crate) fn command(
        &self,
        runner: Runner,
        context: &Path,
        kiln_dir: &Path,
        layout: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Command {
        let isolation = match runner {
            Runner::Overlay => "overlay",
            Runner::Rootless => "auto",
            Runner::Chroot | Runner::ChrootNoNamespaces => "chroot",
        };
        let mut args: Vec<String> = [
            "build",
            "--context",
            context.to_str().unwrap(),
            "--no-push",
            "--oci-layout-path",
            layout.to_str().unwrap(),
            "--build-arg",
            &format!("BASE={}", self.world.base),
            "--isolation",
            isolation,
            "--insecure-registry",
            &self.world.registry.host(),
            "--kiln-dir",
            kiln_dir.to_str().unwrap(),
            "--verbosity",
            "trace",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let kiln = env!("CARGO_BIN_EXE_kiln");
        let mut cmd = match runner {
            Runner::Overlay | Runner::Chroot => {
                let mut c = Command::new(kiln);
                c.args(&args);
                c
            }
            Runner::ChrootNoNamespaces => {
                let mut c = Command::new("setpriv");
                c.args(["--bounding-set", "-sys_admin", "--", kiln])
                    .args(&args);
                c
            }
            Runner::Rootless => {
                open_tree(context);
                let script = format!(
                    "mount --bind {ids} /etc/subuid && mount --bind {ids} /etc/subgid && \
                     exec setpriv --reuid 65534 --regid 65534 --clear-groups -- {kiln} \"$@\"",
                    ids = self.tools.path().join("subids").display(),
                    kiln = self.tools.path().join("kiln").display(),
                );
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
                    .arg(script)
                    .arg("sh")
                    .args(&args);
                c
            }
        };
        cmd.env("DOCKER_CONFIG", self.world.docker_config.path())
            .env("HOME", self.world.docker_config.path())
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("SSH_AUTH_SOCK");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd
    }
}
