//! `RUN --mount` (cache, secret, ssh, bind, tmpfs) and `RUN --network=none` end to end, under
//! every RUN backend: overlay, chroot with namespaces, chroot without them (a pod without
//! CAP_SYS_ADMIN: setpriv drops it) and rootless (a non-root user in a user namespace). The
//! base image comes from the real registry; umoci unpacks the result; and a secret's value is
//! looked for in every output: the layers (decompressed), the config, the log at trace level
//! and every file left in the kiln dir.

mod common;

use common::World;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// How kiln runs its RUN steps in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runner {
    Overlay,
    Chroot,
    /// Root without CAP_SYS_ADMIN: no namespaces, mounts made by moving files.
    ChrootNoNamespaces,
    /// `nobody` in a user namespace of its own (overlay or chroot inside, as kiln picks).
    Rootless,
}

const RUNNERS: [Runner; 4] = [
    Runner::Overlay,
    Runner::Chroot,
    Runner::ChrootNoNamespaces,
    Runner::Rootless,
];

/// A directory anyone may use (the rootless runner is `nobody`).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// Makes `dir` and everything under it readable (and dirs enterable) by anyone.
fn open_tree(dir: &Path) {
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status()
        .unwrap();
}

struct Harness {
    world: World,
    /// A copy of kiln `nobody` can run, and subordinate ids for it.
    tools: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let world = World::new();
        let tools = open_dir();
        std::fs::copy(env!("CARGO_BIN_EXE_kiln"), tools.path().join("kiln")).unwrap();
        std::fs::write(tools.path().join("subids"), "nobody:300000:65536\n").unwrap();
        Harness { world, tools }
    }

    /// `kiln build` of `context` into `layout` with this runner and kiln dir; `envs` are set
    /// for kiln (secrets by variable, SSH_AUTH_SOCK).
    fn build(
        &self,
        runner: Runner,
        context: &Path,
        kiln_dir: &Path,
        layout: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Output {
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
        cmd.output().expect("kiln runs")
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: kiln failed:\n{}",
        stderr(out)
    );
}

/// Every file under `dir` whose content holds `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                if let Ok(bytes) = std::fs::read(&path) {
                    if contains(&bytes, needle) {
                        found.push(path);
                    }
                }
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every blob of an OCI layout, gzip layers decompressed.
fn layout_blobs(layout: &Path) -> Vec<(String, Vec<u8>)> {
    let mut blobs = Vec::new();
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let plain = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            bytes
        };
        blobs.push((path.display().to_string(), plain));
    }
    blobs
}

/// Asserts `secret` appears in no output of a build: the image's blobs, the log, the kiln dir.
fn assert_secret_nowhere(secret: &str, layout: &Path, out: &Output, kiln_dir: &Path, what: &str) {
    let needle = secret.as_bytes();
    for (name, bytes) in layout_blobs(layout) {
        assert!(
            !contains(&bytes, needle),
            "{what}: the secret is in blob {name}"
        );
    }
    assert!(
        !contains(&out.stderr, needle) && !contains(&out.stdout, needle),
        "{what}: the secret is in kiln's output"
    );
    let left = files_containing(kiln_dir, needle);
    assert!(left.is_empty(), "{what}: the secret is left in {left:?}");
}

const SECRET: &str = "s3cr3t-Value-9f1c2d";

const MAIN: &str = r#"ARG BASE
FROM $BASE AS tools
RUN mkdir -p /opt/tool && echo tool-data > /opt/tool/data
FROM $BASE
WORKDIR /work
RUN --mount=type=cache,id=counter,target=/var/cache/kilntest \
    n=$(cat /var/cache/kilntest/count 2>/dev/null || echo 0); \
    echo $((n+1)) > /var/cache/kilntest/count; cp /var/cache/kilntest/count /count-seen
RUN --mount=type=secret,id=token \
    --mount=type=secret,id=token,env=TOKEN,target=/custom/tok,mode=0440,uid=7,gid=8 \
    test "$(cat /run/secrets/token)" = "$TOKEN" && stat -c '%a %u %g' /custom/tok > /secret-meta \
    && echo ${#TOKEN} > /secret-len && stat -c '%a %u %g' /run/secrets/token > /secret-default
RUN --mount=type=secret,id=fromenv,env=FROMENV echo ${#FROMENV} > /env-len
RUN --mount=type=secret,id=absent,env=ABSENT \
    test ! -e /run/secrets/absent && test -z "$ABSENT" && echo ok > /absent-ok
RUN --mount=type=bind,source=src,target=/mnt/ctx cat /mnt/ctx/hello > /from-ctx
RUN --mount=type=bind,source=src/hello,target=/one-file cat /one-file > /from-file
RUN --mount=type=bind,source=src,target=/mnt/rw,rw \
    echo changed > /mnt/rw/hello && cat /mnt/rw/hello > /rw-seen && touch /mnt/rw/new
RUN --mount=type=bind,from=tools,source=/opt/tool,target=/a/b/tool cat /a/b/tool/data > /from-stage
RUN --mount=type=bind,target=rel cat rel/src/hello > /relative-seen
RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/x && ls /scratch > /tmpfs-seen
RUN --mount=type=cache,target=/opt/nested --mount=type=tmpfs,target=/opt/nested/tmp \
    echo n > /opt/nested/tmp/f && ls /opt/nested > /nested-seen
"#;

/// Every mount type in one build, under every backend: what each step saw, what the image
/// holds (no mount target, none of the parents kiln made for one), the cache kept between two
/// builds of one kiln dir, and the secret nowhere.
#[test]
fn every_mount_type_under_every_backend() {
    let harness = Harness::new();
    let context = common::context(MAIN, &[("src/hello", "hi\n")]);
    let secret_dir = open_dir();
    let secret_file = secret_dir.path().join("token");
    std::fs::write(&secret_file, SECRET).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret_flag = format!("id=token,src={}", secret_file.display());
    for runner in RUNNERS {
        let kiln_dir = open_dir();
        let out_dir = open_dir();
        let layout = out_dir.path().join("layout");
        let flags = [
            "--secret",
            secret_flag.as_str(),
            "--secret",
            "id=fromenv,env=KILN_TEST_SECRET",
        ];
        let envs = [("KILN_TEST_SECRET", "twelve-chars")];
        let out = harness.build(
            runner,
            context.path(),
            kiln_dir.path(),
            &layout,
            &flags,
            &envs,
        );
        let what = format!("{runner:?}");
        assert_ok(&out, &what);
        let fs = common::unpack(&layout);
        assert_eq!(fs.read("/count-seen"), "1\n", "{what}");
        assert_eq!(fs.read("/secret-meta"), "440 7 8\n", "{what}");
        assert_eq!(fs.read("/secret-default"), "400 0 0\n", "{what}");
        assert_eq!(
            fs.read("/secret-len"),
            format!("{}\n", SECRET.len()),
            "{what}"
        );
        assert_eq!(fs.read("/env-len"), "12\n", "{what}");
        assert_eq!(fs.read("/absent-ok"), "ok\n", "{what}");
        assert_eq!(fs.read("/from-ctx"), "hi\n", "{what}");
        assert_eq!(fs.read("/from-file"), "hi\n", "{what}");
        assert_eq!(fs.read("/rw-seen"), "changed\n", "{what}");
        assert_eq!(fs.read("/from-stage"), "tool-data\n", "{what}");
        assert_eq!(fs.read("/relative-seen"), "hi\n", "{what}");
        assert_eq!(fs.read("/tmpfs-seen"), "x\n", "{what}");
        assert_eq!(fs.read("/nested-seen"), "tmp\n", "{what}");
        for absent in [
            "/var/cache/kilntest",
            "/run/secrets",
            "/custom",
            "/mnt",
            "/one-file",
            "/a",
            "/scratch",
            "/opt/nested",
            "/work/rel",
        ] {
            assert!(!fs.exists(absent), "{what}: {absent} is in the image");
        }
        // The rw bind wrote to a copy: the context is as it was.
        assert_eq!(
            std::fs::read_to_string(context.path().join("src/hello")).unwrap(),
            "hi\n"
        );
        assert!(!context.path().join("src/new").exists(), "{what}");
        assert_secret_nowhere(SECRET, &layout, &out, kiln_dir.path(), &what);
        assert_secret_nowhere("twelve-chars", &layout, &out, kiln_dir.path(), &what);

        // Again on the same kiln dir, without the step cache: the cache mount kept its count.
        let again = out_dir.path().join("again");
        let out = harness.build(
            runner,
            context.path(),
            kiln_dir.path(),
            &again,
            &[&flags[..], &["--no-cache"]].concat(),
            &envs,
        );
        assert_ok(&out, &what);
        assert_eq!(common::unpack(&again).read("/count-seen"), "2\n", "{what}");
        assert_secret_nowhere(SECRET, &again, &out, kiln_dir.path(), &what);
    }
}
