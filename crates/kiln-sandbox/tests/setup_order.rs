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
