//! `RUN --mount` (cache, secret, ssh, bind, tmpfs) and `RUN --network=none` end to end, under
//! every RUN backend: overlay, chroot with namespaces, chroot without them (a pod without
//! CAP_SYS_ADMIN: setpriv drops it) and rootless (a non-root user in a user namespace). The
//! base image comes from the real registry; umoci unpacks the result; and a secret's value is
//! looked for in every output: the layers (decompressed), the config, the log at trace level
//! and every file left in the kiln dir.

mod common;

use common::runners::{open_dir, Harness, Runner, RUNNERS};
use common::{contains, files_containing, layout_blobs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// A build of its own: a fresh kiln dir and output dir, kept as long as this lives.
struct Fresh {
    out: Output,
    layout: PathBuf,
    kiln_dir: tempfile::TempDir,
    _out_dir: tempfile::TempDir,
}

impl Harness {
    fn build_fresh(
        &self,
        runner: Runner,
        context: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Fresh {
        let kiln_dir = open_dir();
        let out_dir = open_dir();
        let layout = out_dir.path().join("layout");
        let out = self.build(runner, context, kiln_dir.path(), &layout, extra, envs);
        Fresh {
            out,
            layout,
            kiln_dir,
            _out_dir: out_dir,
        }
    }
}

/// Asserts that a build failed before any step ran, its error holding every one of `needles`.
fn assert_refused(out: &Output, needles: &[&str], what: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "{what}: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{what}: no {needle:?} in: {err}");
    }
    assert!(
        !err.contains("STEP 1/"),
        "{what}: refused before any step: {err}"
    );
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
RUN --mount=type=bind,source=src,target=src --mount=type=cache,target=/work/target/,id=tgt <<EOF
set -e
cat src/hello > target/out
cp target/out /heredoc-seen
EOF
RUN --mount=from=BASEIMAGE,src=/bin/busybox,dst=/tools/busybox /tools/busybox true && echo image > /from-image
RUN --mount=type=cache,id=counter,target=/owned,uid=5 stat -c '%u' /owned > /owned-uid \
    && test ! -e /owned/count
RUN --mount=type=cache,target=/opt/nested --mount=type=tmpfs,target=/opt/nested/tmp \
    echo n > /opt/nested/tmp/f && ls /opt/nested > /nested-seen
"#;

/// Every mount type in one build, under every backend: what each step saw, what the image
/// holds (no mount target, none of the parents kiln made for one), the cache kept between two
/// builds of one kiln dir, and the secret nowhere.
#[test]
fn every_mount_type_under_every_backend() {
    let harness = Harness::new();
    let main = MAIN.replace("BASEIMAGE", &harness.world.base);
    let context = common::context(&main, &[("src/hello", "hi\n")]);
    let secret_dir = open_dir();
    let secret_file = secret_dir.path().join("token");
    std::fs::write(&secret_file, SECRET).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret_flag = format!("id=token,src={}", secret_file.display());
    for runner in RUNNERS {
        let flags = [
            "--secret",
            secret_flag.as_str(),
            "--secret",
            "id=fromenv,env=KILN_TEST_SECRET",
        ];
        let envs = [("KILN_TEST_SECRET", "twelve-chars")];
        let Fresh {
            out,
            layout,
            kiln_dir,
            _out_dir: out_dir,
        } = harness.build_fresh(runner, context.path(), &flags, &envs);
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
        assert_eq!(fs.read("/from-image"), "image\n", "{what}");
        assert_eq!(fs.read("/heredoc-seen"), "hi\n", "{what}");
        // The same id with an owner is another cache (BuildKit: what a new one starts from
        // tells caches apart).
        assert_eq!(fs.read("/owned-uid"), "5\n", "{what}");
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
            "/tools",
            "/work/src",
            "/work/target",
            "/owned",
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

/// `RUN --network=none`: only a loopback interface, so a server on the host's 127.0.0.1 is out
/// of reach, while a plain RUN reaches it. Refused, naming the line, where steps get no
/// namespaces.
#[test]
fn network_none_cuts_the_step_off_the_host_network() {
    let harness = Harness::new();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in server.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let _ = std::io::Write::write_all(&mut conn, b"HTTP/1.0 200 OK\r\n\r\nhello");
        }
    });
    let dockerfile = format!(
        "ARG BASE\nFROM $BASE\n\
         RUN wget -q -O /reached http://127.0.0.1:{port}/\n\
         RUN --network=none if wget -q -T 3 -O /dev/null http://127.0.0.1:{port}/; \
         then echo reached; else echo unreachable; fi > /none-result; \
         tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /none-ifaces\n"
    );
    let context = common::context(&dockerfile, &[]);
    for runner in RUNNERS {
        let what = format!("{runner:?}");
        let fresh = harness.build_fresh(runner, context.path(), &[], &[]);
        let (out, layout) = (&fresh.out, &fresh.layout);
        if runner == Runner::ChrootNoNamespaces {
            assert_refused(out, &["Dockerfile:4:1", "RUN --network=none"], &what);
            continue;
        }
        assert_ok(out, &what);
        let fs = common::unpack(layout);
        assert_eq!(fs.read("/reached"), "hello", "{what}");
        assert_eq!(fs.read("/none-result"), "unreachable\n", "{what}");
        assert_eq!(fs.read("/none-ifaces"), "lo\n", "{what}");
    }
}

/// A required secret or ssh id that was not given stops the build before any step, naming the
/// line and the id; bad `--secret`/`--ssh` values name the flag.
#[test]
fn missing_required_secrets_and_bad_flags_fail_before_the_build() {
    let harness = Harness::new();
    for (line, flag_hint) in [
        (
            "RUN --mount=type=secret,id=npmrc,required=true cat /run/secrets/npmrc",
            "secret npmrc: not found",
        ),
        (
            "RUN --mount=type=ssh,id=github,required git --version",
            "ssh github: not found",
        ),
    ] {
        let context = common::context(&format!("ARG BASE\nFROM $BASE\nRUN true\n{line}\n"), &[]);
        let fresh = harness.build_fresh(Runner::Chroot, context.path(), &[], &[]);
        assert_refused(&fresh.out, &["Dockerfile:4:1", flag_hint], flag_hint);
    }
    for (flags, expected) in [
        (
            vec!["--secret", "src=/nonexistent/kiln-secret"],
            "--secret id=/nonexistent/kiln-secret: cannot read",
        ),
        (
            vec!["--secret", "id=a,kind=file"],
            "--secret \"id=a,kind=file\": unknown key \"kind\"",
        ),
        (vec!["--ssh", "default"], "SSH_AUTH_SOCK is not set"),
        (
            vec!["--ssh", "deploy=/etc/hostname"],
            "--ssh deploy: ssh key /etc/hostname is not an OpenSSH private key",
        ),
        (
            vec!["--ssh", "deploy=/nonexistent/key"],
            "--ssh deploy: cannot read /nonexistent/key",
        ),
    ] {
        let out = harness.world.kiln(
            &[
                &["build", "--no-push", "-c", "/nonexistent-context"][..],
                &flags,
            ]
            .concat(),
        );
        let err = stderr(&out);
        assert!(
            !out.status.success() && err.contains(expected),
            "{flags:?}: {err}"
        );
    }
}

/// Runs `args` as `nobody` (the agent must accept the rootless kiln, which runs as nobody).
fn as_nobody(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ])
    .args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The host's `ssh-add` and the libraries it loads, laid out as a context directory to COPY
/// into the busybox image.
fn ssh_add_tree(into: &Path) {
    let ssh_add = Path::new("/usr/bin/ssh-add");
    let mut files = vec![ssh_add.to_owned()];
    let ldd = Command::new("ldd").arg(ssh_add).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        files.extend(path);
    }
    for file in files {
        let dest = into.join(file.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&file, &dest).unwrap();
    }
}

/// `RUN --mount=type=ssh`: a local ssh-agent holding a test key, forwarded with `--ssh`; the
/// step lists the agent's keys through the socket kiln serves (mode 0600, at BuildKit's default
/// path, named by SSH_AUTH_SOCK), under every backend.
#[test]
fn an_ssh_agent_is_served_to_the_step() {
    let harness = Harness::new();
    let agent_dir = open_dir();
    let key = agent_dir.path().join("key");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test-key", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(keygen.success());
    Command::new("chown")
        .arg("65534:65534")
        .arg(&key)
        .status()
        .unwrap();
    let socket = agent_dir.path().join("agent.sock");
    let socket_s = socket.to_str().unwrap();
    let started = as_nobody(&["ssh-agent", "-a", socket_s], &[]);
    assert!(started.status.success(), "{}", stderr(&started));
    let agent_pid: i32 = String::from_utf8_lossy(&started.stdout)
        .split("SSH_AGENT_PID=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|pid| pid.parse().ok())
        .expect("ssh-agent prints its pid");
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _agent = Kill(agent_pid);
    let added = as_nobody(
        &["ssh-add", key.to_str().unwrap()],
        &[("SSH_AUTH_SOCK", socket_s)],
    );
    assert!(added.status.success(), "{}", stderr(&added));
    let listed = as_nobody(&["ssh-add", "-l"], &[("SSH_AUTH_SOCK", socket_s)]);
    let expected = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(expected.contains("kiln-test-key"), "{expected}");

    let context = common::context(
        "ARG BASE\nFROM $BASE\nCOPY tools/ /\n\
         RUN --mount=type=ssh ssh-add -l > /keys && echo $SSH_AUTH_SOCK > /sock-path \
         && stat -c '%a %u' $SSH_AUTH_SOCK > /sock-meta\n\
         RUN --mount=type=ssh,id=deploy,target=/tmp/agent,uid=7 \
         SSH_AUTH_SOCK=/tmp/agent ssh-add -l > /keys2 && stat -c '%a %u' /tmp/agent > /sock2-meta\n\
         RUN --mount=type=ssh,id=files,target=/tmp/own SSH_AUTH_SOCK=/tmp/own ssh-add -l > /keys3\n\
         RUN --mount=type=ssh (ssh-add -D 2>/dev/null && echo removed || echo refused) > /delete\n\
         RUN --mount=type=ssh,id=files (ssh-add -D 2>/dev/null && echo removed || echo refused) \
         > /delete-own\n\
         RUN --mount=type=ssh,id=absent test -z \"$SSH_AUTH_SOCK\" || test ! -e \"$SSH_AUTH_SOCK\"\n",
        &[],
    );
    ssh_add_tree(&context.path().join("tools"));
    let flags = [
        "--ssh".to_string(),
        "default".to_string(),
        "--ssh".to_string(),
        format!("deploy={socket_s}"),
        "--ssh".to_string(),
        format!("files={}", key.display()),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    for runner in RUNNERS {
        let what = format!("{runner:?}");
        let envs = [("SSH_AUTH_SOCK", socket_s)];
        let fresh = harness.build_fresh(runner, context.path(), &flags, &envs);
        let (out, layout) = (&fresh.out, &fresh.layout);
        assert_ok(out, &what);
        let fs = common::unpack(layout);
        assert_eq!(fs.read("/keys"), expected, "{what}");
        assert_eq!(fs.read("/keys2"), expected, "{what}");
        assert_eq!(
            fs.read("/keys3"),
            expected,
            "{what}: kiln's own agent serves the key file"
        );
        assert_eq!(
            fs.read("/delete"),
            "refused\n",
            "{what}: the forwarded agent is read-only"
        );
        assert_eq!(
            fs.read("/delete-own"),
            "refused\n",
            "{what}: kiln's agent is read-only"
        );
        assert_eq!(
            fs.read("/sock-path"),
            "/run/buildkit/ssh_agent.0\n",
            "{what}"
        );
        assert_eq!(fs.read("/sock-meta"), "600 0\n", "{what}");
        assert_eq!(fs.read("/sock2-meta"), "600 7\n", "{what}");
        assert!(
            !fs.exists("/run/buildkit") && !fs.exists("/tmp/agent"),
            "{what}"
        );
    }
    let still = as_nobody(&["ssh-add", "-l"], &[("SSH_AUTH_SOCK", socket_s)]);
    assert_eq!(
        String::from_utf8_lossy(&still.stdout),
        expected,
        "the agent kept its keys"
    );
}

/// Two builds at once on one kiln dir. `sharing=private`: each gets a directory of its own
/// (both steps are inside the cache at the same moment: a shared cache meets them first);
/// `sharing=locked`: the steps take turns (a step that found the other inside fails).
#[test]
fn private_and_locked_caches_under_concurrent_builds() {
    let harness = Harness::new();
    let private = common::context(
        "ARG BASE\nFROM $BASE\nARG N\n\
         RUN --mount=type=cache,id=meet,target=/meet \
         --mount=type=cache,id=mine,target=/mine,sharing=private \
         echo $N > /mine/owner && touch /meet/$N && \
         i=0; while [ $(ls /meet | wc -l) -lt 2 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; \
         [ $(ls /meet | wc -l) -ge 2 ] && test \"$(cat /mine/owner)\" = $N && echo $N > /result\n",
        &[],
    );
    let locked = common::context(
        "ARG BASE\nFROM $BASE\nARG N\n\
         RUN --mount=type=cache,id=turns,target=/turns,sharing=locked \
         mkdir /turns/inside && sleep 1 && rmdir /turns/inside && echo $N > /result\n",
        &[],
    );
    for runner in [Runner::Overlay, Runner::Chroot, Runner::ChrootNoNamespaces] {
        let kiln_dir = open_dir();
        // Without namespaces a cache is moved into the step, so even a shared one is used in
        // turns: the two private steps could never meet there.
        let cases: &[(&str, &tempfile::TempDir)] = if runner == Runner::ChrootNoNamespaces {
            &[("locked", &locked)]
        } else {
            &[("private", &private), ("locked", &locked)]
        };
        for &(name, context) in cases {
            let what = format!("{runner:?} {name}");
            let out_dir = open_dir();
            let outs: Vec<(Output, PathBuf)> = std::thread::scope(|s| {
                let handles: Vec<_> = ["1", "2"]
                    .into_iter()
                    .map(|n| {
                        let layout = out_dir.path().join(format!("layout-{n}"));
                        let harness = &harness;
                        let kiln_dir = kiln_dir.path();
                        s.spawn(move || {
                            let arg = format!("N={n}");
                            let out = harness.build(
                                runner,
                                context.path(),
                                kiln_dir,
                                &layout,
                                &["--build-arg", &arg],
                                &[],
                            );
                            (out, layout)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (n, (out, layout)) in outs.iter().enumerate() {
                assert_ok(out, &what);
                assert_eq!(
                    common::unpack(layout).read("/result"),
                    format!("{}\n", n + 1),
                    "{what}"
                );
            }
        }
        // The private cache has two instances now; `kiln prune --all` removes every cache.
        let mounts = kiln_dir.path().join("store/mounts");
        let instances = |dir: &Path| -> usize {
            std::fs::read_dir(dir)
                .unwrap()
                .flatten()
                .flat_map(|id| std::fs::read_dir(id.path()).unwrap().flatten())
                .filter(|e| e.file_type().unwrap().is_dir())
                .count()
        };
        let expected = if runner == Runner::ChrootNoNamespaces {
            1
        } else {
            4
        };
        assert_eq!(
            instances(&mounts),
            expected,
            "{runner:?}: meet, mine ×2, turns"
        );
        let pruned = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["prune", "--all", "--kiln-dir"])
            .arg(kiln_dir.path())
            .output()
            .unwrap();
        assert_ok(&pruned, "prune");
        assert_eq!(instances(&mounts), 0, "{runner:?}: pruned");
    }
}

/// What a bind mount shows is part of the step's cache key (a changed file runs the step
/// again); a secret's value is not (BuildKit's rule), nor a cache mount's content.
#[test]
fn bind_mount_content_keys_the_step_and_secrets_do_not() {
    let harness = Harness::new();
    let context = common::context(
        "ARG BASE\nFROM $BASE\n\
         RUN --mount=type=bind,source=dep.txt,target=/dep cat /dep > /seen\n\
         RUN --mount=type=secret,id=s,required wc -c < /run/secrets/s > /secret-size\n",
        &[("dep.txt", "one\n")],
    );
    let secret = open_dir();
    let secret_file = secret.path().join("s");
    let flag = format!("id=s,src={}", secret_file.display());
    let kiln_dir = open_dir();
    let build = |n: usize| {
        let out_dir = open_dir();
        let layout = out_dir.path().join("layout");
        let out = harness.build(
            Runner::Chroot,
            context.path(),
            kiln_dir.path(),
            &layout,
            &["--secret", &flag],
            &[],
        );
        assert_ok(&out, &format!("build {n}"));
        let err = stderr(&out);
        let cached = |step: &str| {
            err.lines()
                .any(|l| l.contains(step) && l.contains("  CACHED ("))
        };
        (
            cached("RUN --mount=type=bind"),
            cached("RUN --mount=type=secret"),
            common::unpack(&layout).read("/seen"),
        )
    };
    std::fs::write(&secret_file, "first").unwrap();
    assert_eq!(build(1), (false, false, "one\n".into()));
    std::fs::write(&secret_file, "second value").unwrap();
    assert_eq!(
        build(2),
        (true, true, "one\n".into()),
        "a new secret value keeps the key"
    );
    std::fs::write(context.path().join("dep.txt"), "two\n").unwrap();
    assert_eq!(
        build(3),
        (false, false, "two\n".into()),
        "a changed bound file runs again"
    );
}

/// One cache id mounted twice in a step is one directory at both targets (BuildKit), even when
/// locked (a step never waits for itself); without namespaces, where a cache is moved to its
/// target, that is refused with the line.
#[test]
fn one_cache_twice_in_a_step() {
    let harness = Harness::new();
    let context = common::context(
        "ARG BASE\nFROM $BASE\n\
         RUN --mount=type=cache,id=twice,target=/c1,sharing=locked \
         --mount=type=cache,id=twice,target=/c2,sharing=locked touch /c1/x && test -e /c2/x\n",
        &[],
    );
    for runner in [Runner::Overlay, Runner::ChrootNoNamespaces] {
        let fresh = harness.build_fresh(runner, context.path(), &[], &[]);
        if runner == Runner::ChrootNoNamespaces {
            let needles = ["Dockerfile:3:1", "cache \"twice\" mounted twice in one RUN"];
            assert_refused(&fresh.out, &needles, "no namespaces");
        } else {
            assert_ok(&fresh.out, &format!("{runner:?}"));
        }
    }
}

/// Steps that turn on kiln: one replaces the parent of a mount point kiln made with a symlink
/// to a directory of the build container (kiln must not follow it when it removes the point);
/// a secret given as a variable holds a NUL byte (the error must not show the value).
#[test]
fn hostile_steps_cannot_turn_mount_cleanup_or_errors_against_kiln() {
    let harness = Harness::new();
    let victim = open_dir();
    std::fs::write(victim.path().join("victim"), "keep me\n").unwrap();
    let dockerfile = format!(
        "ARG BASE\nFROM $BASE\n\
         RUN --mount=type=bind,source=f,target=/x/victim \
         umount /x/victim 2>/dev/null; mv /x /moved && ln -s {} /x\n",
        victim.path().display()
    );
    let context = common::context(&dockerfile, &[("f", "context file\n")]);
    for runner in [Runner::Overlay, Runner::Chroot, Runner::ChrootNoNamespaces] {
        let what = format!("{runner:?}");
        let fresh = harness.build_fresh(runner, context.path(), &[], &[]);
        // Without namespaces kiln cannot put the tree back and says so; with them the step
        // may do this.
        if runner != Runner::ChrootNoNamespaces {
            assert_ok(&fresh.out, &what);
        }
        assert_eq!(
            std::fs::read_to_string(victim.path().join("victim")).unwrap(),
            "keep me\n",
            "{what}: kiln removed a file outside the build through the step's symlink"
        );
    }

    let nul_secret = open_dir();
    let file = nul_secret.path().join("s");
    std::fs::write(&file, b"top-secret-part\0tail").unwrap();
    let context = common::context(
        "ARG BASE\nFROM $BASE\nRUN --mount=type=secret,id=s,env=S true\n",
        &[],
    );
    let flag = format!("id=s,src={}", file.display());
    let fresh = harness.build_fresh(Runner::Overlay, context.path(), &["--secret", &flag], &[]);
    let err = stderr(&fresh.out);
    assert!(
        !fresh.out.status.success() && err.contains("without NUL bytes"),
        "{err}"
    );
    assert!(!err.contains("top-secret-part"), "{err}");
}

/// A secret is never on disk while the step runs (namespaced backends: it lives on the step's
/// own tmpfs); a build killed during such a step leaves nothing of it once the next build on
/// the kiln dir has started (without namespaces it was a file in the killed build's tree).
#[test]
fn a_killed_build_leaves_no_secret_behind() {
    let harness = Harness::new();
    let secret_dir = open_dir();
    let secret_file = secret_dir.path().join("token");
    std::fs::write(&secret_file, SECRET).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let flag = format!("id=token,src={}", secret_file.display());
    for (runner, marker) in [
        (Runner::Overlay, "3017"),
        (Runner::ChrootNoNamespaces, "3018"),
    ] {
        let what = format!("{runner:?}");
        let context = common::context(
            &format!(
                "ARG BASE\nFROM $BASE\nRUN --mount=type=secret,id=token cat /run/secrets/token \
                 > /dev/null && echo step-started && sleep {marker}\n"
            ),
            &[],
        );
        let kiln_dir = open_dir();
        let out_dir = open_dir();
        let log = out_dir.path().join("log");
        let kiln = env!("CARGO_BIN_EXE_kiln");
        let mut cmd = if runner == Runner::Overlay {
            Command::new(kiln)
        } else {
            let mut c = Command::new("setpriv");
            c.args(["--bounding-set", "-sys_admin", "--", kiln]);
            c
        };
        let isolation = if runner == Runner::Overlay {
            "overlay"
        } else {
            "chroot"
        };
        let mut running = cmd
            .args(["build", "--no-push", "--context"])
            .arg(context.path())
            .arg("--oci-layout-path")
            .arg(out_dir.path().join("layout"))
            .args(["--build-arg", &format!("BASE={}", harness.world.base)])
            .args(["--insecure-registry", &harness.world.registry.host()])
            .args(["--isolation", isolation, "--secret", &flag, "--kiln-dir"])
            .arg(kiln_dir.path())
            .env("DOCKER_CONFIG", harness.world.docker_config.path())
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("step-started")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: the step never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if runner == Runner::Overlay {
            let on_disk = files_containing(kiln_dir.path(), SECRET.as_bytes());
            assert!(
                on_disk.is_empty(),
                "{what}: the secret is on disk: {on_disk:?}"
            );
        }
        running.kill().unwrap();
        running.wait().unwrap();
        // The step's own processes (its session, without namespaces) go too.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &format!("sleep {marker}")])
            .status();
        // The next build on the same kiln dir sweeps the killed one's directory.
        let context2 = common::context("ARG BASE\nFROM $BASE\nRUN true\n", &[]);
        let out = harness.build(
            runner,
            context2.path(),
            kiln_dir.path(),
            &out_dir.path().join("again"),
            &[],
            &[],
        );
        assert_ok(&out, &what);
        let left = files_containing(kiln_dir.path(), SECRET.as_bytes());
        assert!(left.is_empty(), "{what}: the secret is left in {left:?}");
    }
}
