//! End-to-end tests of the chroot backend. They need root and a static
//! busybox at /bin/busybox (Debian's `busybox-static`). Every rootfs lives
//! in a temp dir; every mount happens in the step's own mount namespace.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use kiln_sandbox::{run_step, RunSpec, SandboxError, StepOutcome, StepStatus};
use tempfile::TempDir;

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "sleep", "ps", "touch", "pwd", "hostname", "test",
];

/// A temp dir holding `rootfs/` with busybox and its applet links.
fn busybox_rootfs() -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    (tmp, rootfs)
}

fn sh(rootfs: &Path, script: &str) -> RunSpec {
    let mut spec = RunSpec::new(rootfs, vec!["sh".into(), "-c".into(), script.into()]);
    spec.env.push(("PATH".into(), "/bin".into()));
    spec
}

fn run(spec: &RunSpec) -> (StepOutcome, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = run_step(spec, &mut out, &mut err).expect("step runs");
    (
        outcome,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn exit_code_and_stdout_come_back() {
    let (_tmp, rootfs) = busybox_rootfs();
    let (outcome, out, err) = run(&sh(&rootfs, "echo hi; echo oops >&2; exit 3"));
    assert_eq!(outcome.status, StepStatus::Exited(3));
    assert_eq!(out, "hi\n");
    assert_eq!(err, "oops\n");
}

#[test]
fn child_killed_by_signal_gives_shell_status() {
    let (_tmp, rootfs) = busybox_rootfs();
    // pid 1 ignores signals it has no handler for, even SIGKILL from
    // inside, so the step has a child shell kill itself.
    let (outcome, _, _) = run(&sh(&rootfs, "sh -c 'kill -9 $$'; exit $?"));
    assert_eq!(outcome.status, StepStatus::Exited(137));
}

#[test]
fn proc_dev_and_pid_namespace_work() {
    let (_tmp, rootfs) = busybox_rootfs();
    let (outcome, out, err) = run(&sh(
        &rootfs,
        "grep -q '^State:' /proc/self/status && echo proc-ok; \
         echo gone > /dev/null && echo null-ok; \
         head -c 4 /dev/zero | wc -c; \
         test -c /dev/urandom && test -d /dev/shm && echo dev-ok; \
         echo $$; \
         touch /sys/x 2>/dev/null || echo sys-ro",
    ));
    assert_eq!(outcome.status, StepStatus::Exited(0), "stderr: {err}");
    assert_eq!(out, "proc-ok\nnull-ok\n4\ndev-ok\n1\nsys-ro\n");
}

#[test]
fn resolv_conf_is_bound_and_the_rootfs_copy_is_untouched() {
    let (tmp, rootfs) = busybox_rootfs();
    fs::write(rootfs.join("etc/resolv.conf"), "nameserver 10.9.9.9\n").unwrap();
    let provided = tmp.path().join("resolv.conf");
    fs::write(&provided, "nameserver 192.0.2.53\n").unwrap();
    let hosts = tmp.path().join("hosts");
    fs::write(&hosts, "127.0.0.1 localhost kiln\n").unwrap();
    let mut spec = sh(
        &rootfs,
        "cat /etc/resolv.conf /etc/hosts; echo x >> /etc/resolv.conf || echo read-only",
    );
    spec.resolv_conf = Some(provided.clone());
    spec.hosts = Some(hosts);
    let (outcome, out, _) = run(&spec);
    assert_eq!(outcome.status, StepStatus::Exited(0));
    assert_eq!(
        out,
        "nameserver 192.0.2.53\n127.0.0.1 localhost kiln\nread-only\n"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/resolv.conf")).unwrap(),
        "nameserver 10.9.9.9\n"
    );
    assert_eq!(
        fs::read_to_string(provided).unwrap(),
        "nameserver 192.0.2.53\n"
    );
    // Only /etc/hosts was missing; it is reported (with proc, dev, sys).
    let rel: Vec<_> = outcome
        .created_mount_points
        .iter()
        .map(|p| {
            p.strip_prefix(rootfs.canonicalize().unwrap())
                .unwrap()
                .to_owned()
        })
        .collect();
    let want: Vec<PathBuf> = ["proc", "dev", "sys", "etc/hosts"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(rel, want);
    assert_eq!(fs::read(rootfs.join("etc/hosts")).unwrap(), b"");
}

#[test]
fn uid_gid_groups_env_cwd_and_hostname_apply() {
    let (_tmp, rootfs) = busybox_rootfs();
    let mut spec = sh(&rootfs, "id -u; id -g; id -G; echo $FOO; pwd; hostname");
    spec.uid = 1000;
    spec.gid = 1001;
    spec.extra_gids = vec![1001, 2000];
    spec.env.push(("FOO".into(), "bar baz".into()));
    spec.cwd = "/work/dir".into();
    spec.hostname = Some("kiln-step".into());
    let (outcome, out, err) = run(&spec);
    assert_eq!(outcome.status, StepStatus::Exited(0), "stderr: {err}");
    assert_eq!(
        out,
        "1000\n1001\n1001 2000\nbar baz\n/work/dir\nkiln-step\n"
    );
    assert!(rootfs.join("work/dir").is_dir());
    assert_ne!(
        fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "kiln-step"
    );
}

#[test]
fn environment_is_replaced_not_inherited() {
    let (_tmp, rootfs) = busybox_rootfs();
    let (_, out, _) = run(&sh(&rootfs, "echo \"[$HOME][$CARGO][$PATH]\""));
    assert_eq!(out, "[][][/bin]\n");
}

fn host_processes_with_cmdline(needle: &[u8]) -> usize {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| c == needle)
        .count()
}

#[test]
fn background_processes_are_killed_when_the_step_ends() {
    let (_tmp, rootfs) = busybox_rootfs();
    let (outcome, out, _) = run(&sh(
        &rootfs,
        "sleep 987654 & sleep 987654 & sleep 0.2; ps -o args | grep -c '^sleep 987654'",
    ));
    assert_eq!(outcome.status, StepStatus::Exited(0));
    assert_eq!(out, "2\n");
    assert_eq!(host_processes_with_cmdline(b"sleep\x00987654\x00"), 0);
}

#[test]
fn host_mount_table_is_unchanged() {
    let (_tmp, rootfs) = busybox_rootfs();
    let before = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let (outcome, _, _) = run(&sh(&rootfs, "cat /proc/self/mountinfo >/dev/null"));
    assert!(outcome.status.success());
    let after = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(before, after);
    // Nothing is left mounted under the rootfs and /dev holds no nodes.
    assert_eq!(fs::read_dir(rootfs.join("dev")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(rootfs.join("proc")).unwrap().count(), 0);
}

#[test]
fn missing_command_is_an_exec_error() {
    let (_tmp, rootfs) = busybox_rootfs();
    let mut spec = RunSpec::new(&rootfs, vec!["no-such-tool".into()]);
    spec.env.push(("PATH".into(), "/bin".into()));
    let err = run_step(&spec, &mut Vec::new(), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, SandboxError::Exec { .. }), "{err:?}");
}

#[test]
fn host_root_is_refused() {
    let spec = RunSpec::new("/", vec!["true".into()]);
    let err = run_step(&spec, &mut Vec::new(), &mut Vec::new()).unwrap_err();
    assert!(
        matches!(err, SandboxError::RootfsIsHostRoot { .. }),
        "{err:?}"
    );
    // Also through a symlink.
    let tmp = tempfile::tempdir().unwrap();
    symlink("/", tmp.path().join("root")).unwrap();
    let spec = RunSpec::new(tmp.path().join("root"), vec!["true".into()]);
    let err = run_step(&spec, &mut Vec::new(), &mut Vec::new()).unwrap_err();
    assert!(
        matches!(err, SandboxError::RootfsIsHostRoot { .. }),
        "{err:?}"
    );
}

#[test]
fn non_directory_rootfs_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("file"), "").unwrap();
    for p in [tmp.path().join("file"), tmp.path().join("missing")] {
        let err = run_step(
            &RunSpec::new(&p, vec!["true".into()]),
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(
            matches!(err, SandboxError::RootfsNotDirectory { .. }),
            "{err:?}"
        );
    }
}

#[test]
fn symlinked_mount_point_is_refused() {
    let (tmp, rootfs) = busybox_rootfs();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    symlink(&outside, rootfs.join("proc")).unwrap();
    let err = run_step(&sh(&rootfs, "true"), &mut Vec::new(), &mut Vec::new()).unwrap_err();
    assert!(
        matches!(err, SandboxError::UnsafeMountPoint { .. }),
        "{err:?}"
    );
}

#[test]
fn without_namespaces_the_step_is_chrooted_with_dev_nodes_and_cleaned_up() {
    let (tmp, rootfs) = busybox_rootfs();
    let resolv = tmp.path().join("resolv.conf");
    fs::write(&resolv, "nameserver 192.0.2.53\n").unwrap();
    let mut spec = sh(
        &rootfs,
        "echo to-null > /dev/null && cat /etc/resolv.conf && id -u && id -G && pwd && \
         (sleep 1000 &) && echo started",
    );
    spec.namespaces = false;
    spec.uid = 1000;
    spec.gid = 1000;
    spec.extra_gids = vec![1000, 10];
    spec.cwd = "/work/dir".into();
    spec.resolv_conf = Some(resolv);
    let (outcome, out, _) = run(&spec);
    assert_eq!(outcome.status, StepStatus::Exited(0));
    assert!(outcome.without_namespaces);
    assert_eq!(
        out,
        "nameserver 192.0.2.53\n1000\n1000 10\n/work/dir\nstarted\n"
    );
    // What kiln created is reported, so the caller can keep it out of the layer.
    let created = &outcome.created_mount_points;
    assert!(created.contains(&fs::canonicalize(&rootfs).unwrap().join("dev/null")));
    assert!(created.iter().any(|p| p.ends_with("etc/resolv.conf")));
    // The background sleep went with the step's process group.
    assert_eq!(host_processes_with_cmdline(b"sleep\x001000\x00"), 0);
}

/// Real mounts: a read-only bind refuses writes, a writable one takes them (on the host side), a
/// tmpfs holds what the step writes and leaves nothing in the tree, `--network=none` leaves
/// only loopback.
#[test]
fn run_mounts_and_network_none_in_the_namespaced_backend() {
    use kiln_sandbox::{StepMount, StepMountKind};
    let (tmp, rootfs) = busybox_rootfs();
    let ro = tmp.path().join("ro");
    let rw = tmp.path().join("rw");
    fs::create_dir(&ro).unwrap();
    fs::create_dir(&rw).unwrap();
    fs::write(ro.join("f"), "read me\n").unwrap();
    let mut spec = sh(
        &rootfs,
        "cat /ro/f && (touch /ro/new 2>/dev/null && echo ro-written || echo ro-refused) && \
         echo kept > /rw/out && echo t > /t/x && cat /t/x && \
         cat /proc/net/dev | tail -n +3 | cut -d: -f1",
    );
    spec.network = false;
    spec.mounts = vec![
        StepMount {
            target: "/ro".into(),
            kind: StepMountKind::Bind {
                source: ro.clone(),
                readonly: true,
            },
        },
        StepMount {
            target: "/rw".into(),
            kind: StepMountKind::Bind {
                source: rw.clone(),
                readonly: false,
            },
        },
        StepMount {
            target: "/t".into(),
            kind: StepMountKind::Tmpfs { size: None },
        },
    ];
    let (outcome, out, err) = run(&spec);
    assert_eq!(outcome.status, StepStatus::Exited(0), "{err}");
    let ifaces: Vec<&str> = out.lines().skip(3).map(str::trim).collect();
    assert_eq!(
        &out.lines().take(3).collect::<Vec<_>>(),
        &["read me", "ro-refused", "t"]
    );
    assert_eq!(ifaces, ["lo"]);
    assert_eq!(fs::read_to_string(rw.join("out")).unwrap(), "kept\n");
    assert!(!ro.join("new").exists());
    assert!(
        fs::read_dir(rootfs.join("t")).unwrap().next().is_none(),
        "tmpfs content stays in the tmpfs"
    );
}

/// Without namespaces a mount's source is moved in for the step and back after; what the tree
/// had at the target is set aside and restored; a tmpfs is an empty directory, removed after;
/// `--network=none` is refused.
#[test]
fn without_namespaces_mounts_are_moved_in_and_out() {
    use kiln_sandbox::{StepMount, StepMountKind};
    let (tmp, rootfs) = busybox_rootfs();
    let cache = tmp.path().join("cache");
    fs::create_dir(&cache).unwrap();
    fs::write(cache.join("count"), "1\n").unwrap();
    fs::create_dir_all(rootfs.join("opt/cache")).unwrap();
    fs::write(rootfs.join("opt/cache/image-file"), "image\n").unwrap();
    let mut spec = sh(
        &rootfs,
        "cat /opt/cache/count && test ! -e /opt/cache/image-file && echo 2 > /opt/cache/count && \
         echo t > /t/x",
    );
    spec.namespaces = false;
    spec.mounts = vec![
        StepMount {
            target: "/opt/cache".into(),
            kind: StepMountKind::Bind {
                source: cache.clone(),
                readonly: false,
            },
        },
        StepMount {
            target: "/t".into(),
            kind: StepMountKind::Tmpfs { size: None },
        },
    ];
    let (outcome, out, err) = run(&spec);
    assert_eq!(outcome.status, StepStatus::Exited(0), "{err}");
    assert_eq!(out, "1\n");
    assert_eq!(
        fs::read_to_string(cache.join("count")).unwrap(),
        "2\n",
        "moved back"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("opt/cache/image-file")).unwrap(),
        "image\n",
        "the tree's own content is back"
    );
    assert!(!rootfs.join("opt/cache/count").exists());
    assert!(!rootfs.join("t").exists(), "the tmpfs stand-in is gone");
    let root = fs::canonicalize(&rootfs).unwrap();
    assert!(outcome.touched.contains(&root.join("opt/cache")));

    spec.network = false;
    spec.mounts.clear();
    let refused = run_step(&spec, &mut Vec::new(), &mut Vec::new()).unwrap_err();
    assert!(refused.to_string().contains("--network=none"), "{refused}");
}

/// Without namespaces only what kiln moved in goes back: a step that moves a cache away and
/// puts another directory (or a symlink) at its target does not get that taken for the cache.
#[test]
fn without_namespaces_only_the_moved_in_source_goes_back() {
    use kiln_sandbox::{StepMount, StepMountKind};
    for replace in ["mkdir /c", "ln -s /etc /c"] {
        let (tmp, rootfs) = busybox_rootfs();
        let cache = tmp.path().join("cache");
        fs::create_dir(&cache).unwrap();
        fs::write(cache.join("kept"), "cache content\n").unwrap();
        let mut spec = sh(&rootfs, &format!("mv /c /elsewhere && {replace}"));
        spec.namespaces = false;
        spec.mounts = vec![StepMount {
            target: "/c".into(),
            kind: StepMountKind::Bind {
                source: cache.clone(),
                readonly: false,
            },
        }];
        let (outcome, _, err) = run(&spec);
        assert_eq!(outcome.status, StepStatus::Exited(0), "{err}");
        assert!(
            !cache.exists(),
            "{replace}: the step's own directory was taken for the cache"
        );
        assert!(
            !rootfs.join("c").exists(),
            "{replace}: the step's stand-in is gone"
        );
        assert_eq!(
            fs::read_to_string(rootfs.join("elsewhere/kept")).unwrap(),
            "cache content\n",
            "what the step moved stays where it put it"
        );
    }
}
