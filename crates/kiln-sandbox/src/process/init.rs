//! Stage 3, pid 1 of the step's pid namespace: mounts, chroot, credentials.
//!
//! Runs between fork and exec: raw syscalls on prepared data only. When
//! [`setup`] succeeds, control returns into std, which execs the command.

use std::os::fd::BorrowedFd;

use rustix::io::Errno;
use rustix::mount::MountFlags;
use rustix::process::Signal;

use crate::error::Stage;
use crate::process::message::Message;
use crate::process::plan::{Plan, PlannedMountKind};
use crate::syscall::Syscall;

/// Tags a kernel error with the stage it happened in.
fn at(stage: Stage) -> impl Fn(Errno) -> (Stage, Errno) {
    move |e| (stage, e)
}

/// Every setup call of pid 1, in order. The mount namespace is already
/// private (see `intermediate.rs`), so none of these mounts reach the host.
pub(crate) fn setup(plan: &Plan, sys: &dyn Syscall) -> Result<(), (Stage, Errno)> {
    let nosuid_nodev_noexec = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    // Die with the intermediate process (and so does the whole namespace).
    sys.set_parent_death_signal(Some(Signal::KILL))
        .map_err(at(Stage::ParentDeathSignal))?;

    // A fresh /proc that shows this pid namespace only.
    sys.mount(c"proc", &plan.proc_dir, c"proc", nosuid_nodev_noexec, None)
        .map_err(at(Stage::MountProc))?;

    // A small /dev with the usual character devices.
    sys.mount(
        c"tmpfs",
        &plan.dev_dir,
        c"tmpfs",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(c"mode=755,size=65536k"),
    )
    .map_err(at(Stage::MountDev))?;
    for (path, dev, host) in &plan.devices {
        match sys.mknod_char(path, 0o666, *dev) {
            // mknod applies the umask; devices must be world-usable.
            Ok(()) => sys.chmod(path, 0o666).map_err(at(Stage::DeviceNodes))?,
            // In a user namespace: bind the host's node instead.
            Err(Errno::PERM) => {
                sys.create_file(path, 0o666)
                    .map_err(at(Stage::DeviceNodes))?;
                sys.bind_mount(host, path).map_err(at(Stage::DeviceNodes))?;
            }
            Err(e) => return Err((Stage::DeviceNodes, e)),
        }
    }
    for (target, link) in &plan.dev_links {
        sys.symlink(target, link).map_err(at(Stage::DeviceNodes))?;
    }
    sys.mkdir(&plan.shm_dir, 0o1777)
        .map_err(at(Stage::MountShm))?;
    sys.mount(
        c"shm",
        &plan.shm_dir,
        c"tmpfs",
        nosuid_nodev_noexec,
        Some(c"mode=1777,size=65536k"),
    )
    .map_err(at(Stage::MountShm))?;

    // /sys from the host, read-only (a bind ignores MS_RDONLY until remounted).
    if let Some(sys_dir) = &plan.sys_dir {
        if plan.sys_recursive {
            sys.rbind_mount(c"/sys", sys_dir)
        } else {
            sys.bind_mount(c"/sys", sys_dir)
        }
        .map_err(at(Stage::BindSys))?;
        sys.remount(
            sys_dir,
            MountFlags::BIND | MountFlags::RDONLY | nosuid_nodev_noexec,
        )
        .map_err(at(Stage::BindSys))?;
    }

    // resolv.conf and hosts from the caller, read-only so the step cannot
    // write through to the caller's files.
    for bind in &plan.binds {
        sys.bind_mount(&bind.source, &bind.target)
            .map_err(at(bind.stage))?;
        sys.remount(
            &bind.target,
            MountFlags::BIND | MountFlags::RDONLY | nosuid_nodev_noexec,
        )
        .map_err(at(bind.stage))?;
    }

    // RUN --mount, in order (a mount inside another comes after it).
    for mount in &plan.mounts {
        for dir in &mount.mkdirs {
            match sys.mkdir(dir, 0o755) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err((Stage::RunMount, e)),
            }
        }
        if mount.file_point {
            sys.create_file(&mount.target, 0o644)
                .map_err(at(Stage::RunMount))?;
        }
        match &mount.what {
            PlannedMountKind::Bind { source, readonly } => {
                sys.bind_mount(source, &mount.target)
                    .map_err(at(Stage::RunMount))?;
                if let Some(kept) = readonly {
                    sys.remount(&mount.target, MountFlags::BIND | MountFlags::RDONLY | *kept)
                        .map_err(at(Stage::RunMount))?;
                }
            }
            PlannedMountKind::File {
                staging,
                content,
                mode,
                uid,
                gid,
                readonly,
            } => {
                sys.write_new_file(staging, &content.0, *mode, *uid, *gid)
                    .map_err(at(Stage::RunMount))?;
                sys.bind_mount(staging, &mount.target)
                    .map_err(at(Stage::RunMount))?;
                sys.remount(
                    &mount.target,
                    MountFlags::BIND | MountFlags::RDONLY | *readonly,
                )
                .map_err(at(Stage::RunMount))?;
                // Reachable at the target only.
                sys.unlink(staging).map_err(at(Stage::RunMount))?;
            }
            PlannedMountKind::Tmpfs { data } => sys
                .mount(
                    c"tmpfs",
                    &mount.target,
                    c"tmpfs",
                    MountFlags::NOSUID | MountFlags::NODEV,
                    Some(data),
                )
                .map_err(at(Stage::RunMount))?,
        }
    }
    if plan.new_network {
        sys.loopback_up().map_err(at(Stage::Loopback))?;
    }

    if let Some(name) = &plan.hostname {
        // Safe: the UTS namespace was unshared in `intermediate.rs`.
        sys.sethostname(name).map_err(at(Stage::Hostname))?;
    }

    sys.chroot(&plan.rootfs).map_err(at(Stage::Chroot))?;
    sys.chdir(c"/").map_err(at(Stage::Chroot))?;

    for dir in &plan.cwd_dirs {
        match sys.mkdir(dir, 0o755) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err((Stage::Workdir, e)),
        }
    }
    sys.chdir(&plan.cwd).map_err(at(Stage::Workdir))?;

    // Groups, then gid, then uid: after setuid we may no longer change the others.
    sys.setgroups(&plan.groups).map_err(at(Stage::Groups))?;
    sys.setgid(plan.gid).map_err(at(Stage::Gid))?;
    sys.setuid(plan.uid).map_err(at(Stage::Uid))?;
    Ok(())
}

/// Runs [`setup`] with the real syscalls and reports a failure on `msg`.
pub(crate) fn run(plan: &Plan, sys: &dyn Syscall, msg: BorrowedFd<'_>) -> std::io::Result<()> {
    setup(plan, sys).map_err(|(stage, errno)| {
        Message::SetupFailed {
            stage,
            errno: errno.raw_os_error(),
        }
        .send(msg);
        std::io::Error::from(errno)
    })?;
    crate::process::plan::close_on_exec_above_stderr();
    Ok(())
}
