//! The chroot backend without namespaces, for a build container that may not create them (a
//! plain Kubernetes pod: no CAP_SYS_ADMIN, a seccomp profile that refuses `unshare`): fork,
//! new session, chroot into the rootfs, enter the working directory, set groups, gid, uid, exec.
//!
//! What the namespaced backend mounts is made of files instead: the usual `/dev` nodes with
//! mknod (CAP_MKNOD is a default capability), `resolv.conf` and `hosts` copied in when the image
//! has none. Everything kiln created is reported so the caller keeps it out of the layer. There
//! is no `/proc` or `/sys`. Processes the step leaves behind are killed with its process group
//! (a daemon that starts its own session escapes that).
//!
//! `RUN --mount`s are moved in instead of mounted (`mounts.rs`): a bind's source is renamed to
//! the target for the step and back after, a tmpfs is an empty directory; read-only and size
//! limits are not enforced. `--network=none` is refused: there is no network namespace.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;

use crate::error::SandboxError;
use crate::process::mounts::MovedIn;
use crate::process::plan::{cstr, dir_chain, DEVICES};
use crate::rootfs::{ensure, resolve_rootfs, Kind};
use crate::spec::{RunSpec, StepOutcome, StepStatus};

/// Runs `spec` chrooted, without namespaces.
pub(crate) fn run_plain(
    spec: &RunSpec,
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> Result<StepOutcome, SandboxError> {
    let rootfs = resolve_rootfs(&spec.rootfs)?;
    if spec.argv.is_empty() {
        return Err(SandboxError::InvalidSpec {
            reason: "empty argv".to_owned(),
        });
    }
    if !spec.network {
        return Err(SandboxError::InvalidSpec {
            reason: "RUN --network=none needs a network namespace, and this container may not \
                     create namespaces"
                .to_owned(),
        });
    }
    let mut created = Vec::new();
    let mut moved = MovedIn::new(&rootfs, &spec.mounts, &mut created)?;
    let result = run_moved_in(spec, &rootfs, &mut moved, created, stdout, stderr);
    moved.restore();
    if !moved.problems.is_empty() {
        return Err(SandboxError::InvalidSpec {
            reason: format!(
                "the step replaced a directory on the way to a mount with something else, so \
                 kiln could not put the tree back: {}",
                moved.problems.join(", ")
            ),
        });
    }
    result.map(|outcome| StepOutcome {
        touched: std::mem::take(&mut moved.touched),
        ..outcome
    })
}

/// Runs `spec` once its mounts are in place (`created`: mount points made so far).
fn run_moved_in(
    spec: &RunSpec,
    rootfs: &std::path::Path,
    moved: &mut MovedIn,
    mut created: Vec<std::path::PathBuf>,
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> Result<StepOutcome, SandboxError> {
    // /dev nodes, as files of the tree for the step's duration.
    ensure(rootfs, "dev", Kind::Dir, &mut created)?;
    for (name, major, minor) in DEVICES {
        let path = rootfs.join("dev").join(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        // Without CAP_MKNOD the step goes without that node.
        if rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(major, minor),
        )
        .is_ok()
        {
            let _ = rustix::fs::chmod(&path, rustix::fs::Mode::from_raw_mode(0o666));
            created.push(path);
        }
    }
    for (source, rel) in [
        (&spec.resolv_conf, "etc/resolv.conf"),
        (&spec.hosts, "etc/hosts"),
    ] {
        let Some(source) = source else { continue };
        let target = rootfs.join(rel);
        if std::fs::symlink_metadata(&target).is_ok() {
            continue;
        }
        let mut made = Vec::new();
        ensure(rootfs, rel, Kind::File, &mut made)?;
        std::fs::copy(source, &target).map_err(|source| SandboxError::MountPoint {
            path: target.clone(),
            source,
        })?;
        created.extend(made);
    }
    // The working directory may lie inside a moved-in mount: what is made there is the mount's.
    for dir in dir_chain(&spec.cwd)? {
        moved.ensure_dir(dir.trim_start_matches('/'), &mut created)?;
    }
    let root_c = cstr(rootfs.as_os_str().as_encoded_bytes())?;
    let cwd_c: CString = cstr(spec.cwd.as_bytes())?;
    let groups: Vec<rustix::process::Gid> = spec
        .extra_gids
        .iter()
        .map(|g| rustix::process::Gid::from_raw(*g))
        .collect();
    let (uid, gid) = (spec.uid, spec.gid);

    let mut cmd = crate::process::parent::step_command(spec);
    // SAFETY: only raw syscalls on data prepared above; no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setsid().map_err(io::Error::from)?;
            rustix::process::chroot(root_c.as_c_str()).map_err(io::Error::from)?;
            rustix::process::chdir(cwd_c.as_c_str()).map_err(io::Error::from)?;
            rustix::thread::set_thread_groups(&groups).map_err(io::Error::from)?;
            rustix::thread::set_thread_res_gid(
                rustix::process::Gid::from_raw(gid),
                rustix::process::Gid::from_raw(gid),
                rustix::process::Gid::from_raw(gid),
            )
            .map_err(io::Error::from)?;
            rustix::thread::set_thread_res_uid(
                rustix::process::Uid::from_raw(uid),
                rustix::process::Uid::from_raw(uid),
                rustix::process::Uid::from_raw(uid),
            )
            .map_err(io::Error::from)?;
            crate::process::plan::close_on_exec_above_stderr();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| SandboxError::Exec {
        program: spec.argv[0].clone(),
        source,
    })?;
    drop(child.stdin.take());
    let pid = child.id() as i32;
    // setsid made the step the leader of a process group with its pid.
    let registered = crate::stop::register(crate::stop::Running::Group(pid));
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let status = std::thread::scope(|s| {
        let out = s.spawn(|| match out_pipe.as_mut() {
            Some(p) => io::copy(p, stdout).map(drop),
            None => Ok(()),
        });
        let err = s.spawn(|| match err_pipe.as_mut() {
            Some(p) => io::copy(p, stderr).map(drop),
            None => Ok(()),
        });
        let status = child.wait();
        // What the step left running goes with its process group (the pipes then close).
        if let Some(pgid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        let copied = out
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("output thread panicked")))
            .and(
                err.join()
                    .unwrap_or_else(|_| Err(io::Error::other("output thread panicked"))),
            );
        (status, copied)
    });
    let (status, copied) = status;
    drop(registered);
    if crate::stop::stopping() {
        return Err(SandboxError::Stopped);
    }
    let status = status.map_err(SandboxError::Wait)?;
    copied.map_err(SandboxError::Output)?;
    use std::os::unix::process::ExitStatusExt;
    Ok(StepOutcome {
        status: StepStatus::from_wait_status(status.into_raw()),
        created_mount_points: created,
        without_sys: true,
        without_namespaces: true,
        touched: Vec::new(),
    })
}

/// Whether this process may create the namespaces the namespaced backend uses (tried in a
/// forked child, so this process is unchanged). Returns why not.
pub fn namespaces_available() -> Result<(), String> {
    let flags = rustix::thread::UnshareFlags::NEWNS
        | rustix::thread::UnshareFlags::NEWPID
        | rustix::thread::UnshareFlags::NEWUTS
        | rustix::thread::UnshareFlags::NEWIPC;
    // SAFETY: fork in a possibly multi-threaded process; the child only makes raw syscalls and
    // leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: single-threaded child; unshare affects only it.
        let ok = unsafe { rustix::thread::unshare_unsafe(flags) }.is_ok()
            && rustix::mount::mount_change(
                c"/",
                rustix::mount::MountPropagationFlags::REC
                    | rustix::mount::MountPropagationFlags::PRIVATE,
            )
            .is_ok();
        // SAFETY: leaving the child without running destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err("this container may not create mount and pid namespaces (no CAP_SYS_ADMIN, or a seccomp profile refuses unshare)".into())
    }
}
