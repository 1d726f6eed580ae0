//! Setup order checked with the recording syscalls: no root calls are made.

use std::fs;

use kiln_sandbox::syscall::{MountPropagationFlags, UnshareFlags};
use kiln_sandbox::{record_setup, Call, RecordingSyscall, RunSpec};

#[test]
fn private_propagation_first_chroot_after_mounts_setuid_last() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    let resolv = tmp.path().join("resolv.conf");
    fs::write(&resolv, "nameserver 192.0.2.1\n").unwrap();
    let mut spec = RunSpec::new(&rootfs, vec!["true".into()]);
    spec.uid = 1000;
    spec.gid = 1000;
    spec.extra_gids = vec![27];
    spec.hostname = Some("box".into());
    spec.resolv_conf = Some(resolv);
    spec.cwd = "/app/src".into();

    let sys = RecordingSyscall::new();
    record_setup(&spec, &sys).unwrap();
    let calls = sys.calls();

    let unshare = calls
        .iter()
        .position(|c| matches!(c, Call::Unshare(_)))
        .unwrap();
    let Call::Unshare(flags) = &calls[unshare] else {
        unreachable!()
    };
    assert!(flags.contains(UnshareFlags::NEWNS | UnshareFlags::NEWPID | UnshareFlags::NEWUTS));

    let is_mount = |c: &Call| {
        matches!(
            c,
            Call::Mount { .. }
                | Call::BindMount { .. }
                | Call::Remount { .. }
                | Call::SetPropagation { .. }
        )
    };
    let first_mount = calls.iter().position(is_mount).unwrap();
    assert!(first_mount > unshare);
    assert_eq!(
        calls[first_mount],
        Call::SetPropagation {
            target: "/".into(),
            flags: MountPropagationFlags::REC | MountPropagationFlags::PRIVATE
        }
    );
    let last_mount = calls.iter().rposition(is_mount).unwrap();
    let chroot = calls
        .iter()
        .position(|c| matches!(c, Call::Chroot(_)))
        .unwrap();
    assert!(chroot > last_mount);
    let hostname = calls
        .iter()
        .position(|c| matches!(c, Call::Sethostname(_)))
        .unwrap();
    assert!(hostname > unshare);

    let n = calls.len();
    assert_eq!(
        &calls[n - 4..],
        &[
            Call::Chdir("/app/src".into()),
            Call::Setgroups(vec![27]),
            Call::Setgid(1000),
            Call::Setuid(1000),
        ]
    );
    assert!(calls.contains(&Call::Mkdir("/app".into())));
}

/// RUN --mount: binds (read-only ones remounted), tmpfs, a mount inside a tmpfs made after it;
/// all before the chroot. `--network=none`: a network namespace and loopback up.
#[test]
fn run_mounts_come_after_the_system_mounts_and_before_the_chroot() {
    use kiln_sandbox::{StepMount, StepMountKind};
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    let cache = tmp.path().join("cache");
    fs::create_dir(&cache).unwrap();
    let secret = tmp.path().join("secret");
    fs::write(&secret, "x").unwrap();
    let mut spec = RunSpec::new(&rootfs, vec!["true".into()]);
    spec.network = false;
    spec.mounts = vec![
        StepMount {
            target: "/var/cache/apt".into(),
            kind: StepMountKind::Bind {
                source: cache.clone(),
                readonly: false,
            },
        },
        StepMount {
            target: "/run/secrets/token".into(),
            kind: StepMountKind::Bind {
                source: secret.clone(),
                readonly: true,
            },
        },
        StepMount {
            target: "/run/secrets/in-memory".into(),
            kind: StepMountKind::File {
                content: kiln_sandbox::FileContent(b"value".to_vec()),
                mode: 0o400,
                uid: 0,
                gid: 0,
            },
        },
        StepMount {
            target: "/scratch".into(),
            kind: StepMountKind::Tmpfs {
                size: Some(1 << 20),
            },
        },
        StepMount {
            target: "/scratch/deep/dir".into(),
            kind: StepMountKind::Bind {
                source: cache.clone(),
                readonly: false,
            },
        },
    ];
    let sys = RecordingSyscall::new();
    let created = record_setup(&spec, &sys).unwrap();
    let calls = sys.calls();
    let Call::Unshare(flags) = calls
        .iter()
        .find(|c| matches!(c, Call::Unshare(_)))
        .unwrap()
    else {
        unreachable!()
    };
    assert!(flags.contains(UnshareFlags::NEWNET));
    let root = fs::canonicalize(&rootfs).unwrap();
    let at = |rel: &str| root.join(rel).display().to_string();
    let position = |call: &Call| {
        calls
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("{call:?} not in {calls:#?}"))
    };
    let cache_bind = position(&Call::BindMount {
        source: cache.display().to_string(),
        target: at("var/cache/apt"),
    });
    let secret_bind = position(&Call::BindMount {
        source: secret.display().to_string(),
        target: at("run/secrets/token"),
    });
    assert!(
        matches!(&calls[secret_bind + 1], Call::Remount { target, .. } if *target == at("run/secrets/token")),
        "a read-only bind is remounted read-only: {calls:#?}"
    );
    assert!(
        !matches!(&calls[cache_bind + 1], Call::Remount { .. }),
        "a writable bind is not"
    );
    let tmpfs = calls
        .iter()
        .position(|c| matches!(c, Call::Mount { target, .. } if *target == at("scratch")))
        .unwrap();
    let deep_dir = position(&Call::Mkdir(at("scratch/deep")));
    let nested = position(&Call::BindMount {
        source: cache.display().to_string(),
        target: at("scratch/deep/dir"),
    });
    assert!(tmpfs < deep_dir && deep_dir < nested, "{calls:#?}");
    // A file mount is written on the step's /dev tmpfs, bound, and unlinked there.
    let staging = at("dev/.kiln-file-2");
    let written = position(&Call::WriteNewFile {
        path: staging.clone(),
        len: 5,
        mode: 0o400,
    });
    let dev = calls
        .iter()
        .position(|c| matches!(c, Call::Mount { target, .. } if *target == at("dev")))
        .unwrap();
    let bound = position(&Call::BindMount {
        source: staging.clone(),
        target: at("run/secrets/in-memory"),
    });
    let unlinked = position(&Call::Unlink(staging));
    assert!(
        dev < written && written < bound && bound < unlinked,
        "{calls:#?}"
    );
    assert!(format!("{spec:?}").contains("<5 bytes>") && !format!("{spec:?}").contains("value"));
    let loopback = position(&Call::LoopbackUp);
    let chroot = calls
        .iter()
        .position(|c| matches!(c, Call::Chroot(_)))
        .unwrap();
    assert!(nested < chroot && loopback < chroot);
    // Mount points made in the rootfs (not inside the tmpfs) are reported, parents first.
    let points: Vec<String> = created.iter().map(|p| p.display().to_string()).collect();
    for made in [
        "var",
        "var/cache",
        "var/cache/apt",
        "run",
        "run/secrets",
        "run/secrets/token",
        "scratch",
    ] {
        assert!(points.contains(&at(made)), "{made}: {points:?}");
    }
    assert!(!points.contains(&at("scratch/deep")));
}
