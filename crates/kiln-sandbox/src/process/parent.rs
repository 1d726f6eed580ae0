//! Stage 1, the caller: prepare, spawn, stream output, collect the status.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use rustix::pipe::PipeFlags;
use rustix::process::{Gid, Signal};

use crate::error::{SandboxError, Stage};
use crate::process::intermediate;
use crate::process::message::{decode_all, Message};
use crate::process::plan::{cpath, cstr, dir_chain, Bind, Plan};
use crate::rootfs::{ensure, resolve_rootfs, Kind};
use crate::spec::{RunSpec, StepOutcome, StepStatus, DEFAULT_PATH};
use crate::syscall::{LinuxSyscall, Syscall};

/// The step's command with exactly its environment (`PATH` defaulted) and its output piped.
/// Stdin is a pipe the caller closes at once, not /dev/null: the build container may have no
/// /dev.
pub(crate) fn step_command(spec: &RunSpec) -> Command {
    let mut cmd = Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !spec.env.iter().any(|(k, _)| k == "PATH") {
        cmd.env("PATH", DEFAULT_PATH);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Validates `spec`, creates missing mount points, and builds the plan. Returns it with the
/// mount points made in the rootfs.
pub(crate) fn prepare(spec: &RunSpec) -> Result<(Plan, Vec<PathBuf>), SandboxError> {
    let rootfs = resolve_rootfs(&spec.rootfs)?;
    if spec.argv.is_empty() {
        return Err(SandboxError::InvalidSpec {
            reason: "empty argv".to_owned(),
        });
    }
    // Values are never echoed: an environment value may be a secret.
    if spec.argv.iter().any(|a| a.contains('\0')) {
        return Err(SandboxError::InvalidSpec {
            reason: "the command contains a NUL byte".to_owned(),
        });
    }
    if let Some((k, _)) = spec
        .env
        .iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err(SandboxError::InvalidSpec {
            reason: format!(
                "environment variable {:?} contains a NUL byte",
                k.replace('\0', "\\0")
            ),
        });
    }
    if let Some((k, _)) = spec
        .env
        .iter()
        .find(|(k, _)| k.is_empty() || k.contains('='))
    {
        return Err(SandboxError::InvalidSpec {
            reason: format!("bad environment variable name {k:?}"),
        });
    }
    let cwd_chain = dir_chain(&spec.cwd)?;

    let mut created = Vec::new();
    ensure(&rootfs, "proc", Kind::Dir, &mut created)?;
    ensure(&rootfs, "dev", Kind::Dir, &mut created)?;
    // A build container without /sys (rare, but a chroot may lack it) gets none.
    let host_sys = Path::new("/sys/kernel").is_dir();
    if host_sys {
        ensure(&rootfs, "sys", Kind::Dir, &mut created)?;
    }
    let mut plan = Plan::with_defaults(&rootfs)?;
    if !host_sys {
        plan.sys_dir = None;
    }
    plan.sys_recursive = crate::userns::is_rootless();
    for (source, rel, stage) in [
        (&spec.resolv_conf, "etc/resolv.conf", Stage::BindResolvConf),
        (&spec.hosts, "etc/hosts", Stage::BindHosts),
    ] {
        let Some(source) = source else { continue };
        if !source.is_file() {
            return Err(SandboxError::InvalidSpec {
                reason: format!("{} is not a regular file", source.display()),
            });
        }
        let target = ensure(&rootfs, rel, Kind::File, &mut created)?;
        plan.binds.push(Bind {
            source: cpath(source)?,
            target: cpath(&target)?,
            stage,
        });
    }
    plan.mounts = crate::process::mounts::plan(&rootfs, &spec.mounts, &mut created)?;
    plan.new_network = !spec.network;
    plan.hostname = match &spec.hostname {
        Some(h) if h.is_empty() || h.len() > 64 || h.contains('\0') => {
            return Err(SandboxError::InvalidSpec {
                reason: format!("bad hostname {h:?}"),
            })
        }
        h => h.as_ref().map(|h| h.as_bytes().to_vec()),
    };
    plan.cwd_dirs = cwd_chain
        .iter()
        .map(|d| cstr(d.as_bytes()))
        .collect::<Result<_, _>>()?;
    plan.cwd = cstr(cwd_chain.last().map_or("/", |s| s.as_str()).as_bytes())?;
    plan.groups = spec.extra_gids.iter().map(|g| Gid::from_raw(*g)).collect();
    plan.gid = spec.gid;
    plan.uid = spec.uid;
    Ok((plan, created))
}

/// Runs one step in `spec.rootfs` with the chroot backend (see the crate docs).
///
/// The command's stdout and stderr are streamed to `stdout` and `stderr`.
/// Returns once the command and everything it started are gone.
pub fn run_step(
    spec: &RunSpec,
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> Result<StepOutcome, SandboxError> {
    if crate::stop::stopping() {
        return Err(SandboxError::Stopped);
    }
    if !spec.namespaces {
        return crate::process::plain::run_plain(spec, stdout, stderr);
    }
    let (plan, created_mount_points) = prepare(spec)?;
    spawn_and_wait(spec, &Arc::new(plan), created_mount_points, stdout, stderr)
}

/// Runs the prepared step and waits for it and everything it started.
fn spawn_and_wait(
    spec: &RunSpec,
    plan: &Arc<Plan>,
    created_mount_points: Vec<PathBuf>,
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
) -> Result<StepOutcome, SandboxError> {
    let (msg_read, msg_write) =
        rustix::pipe::pipe_with(PipeFlags::CLOEXEC).map_err(|e| SandboxError::Pipe(e.into()))?;
    let msg_fd = msg_write.as_raw_fd();

    let mut cmd = step_command(spec);
    let child_plan = Arc::clone(plan);
    // SAFETY: the hook only makes raw syscalls on the prepared plan (see
    // intermediate.rs and init.rs); it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || intermediate::run(&child_plan, msg_fd));
    }
    let spawned = cmd.spawn();
    drop(msg_write);
    let read_messages = |mut pipe: std::fs::File| {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        decode_all(&bytes)
    };
    let msg_file = std::fs::File::from(msg_read);

    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            // std has reaped the intermediate process; all reports are in.
            let messages = read_messages(msg_file);
            for m in &messages {
                if let Message::SetupFailed { stage, errno } = m {
                    return Err(SandboxError::Setup {
                        stage: *stage,
                        source: io::Error::from_raw_os_error(*errno),
                    });
                }
            }
            if messages.is_empty() {
                return Err(SandboxError::Spawn(e));
            }
            return Err(SandboxError::Exec {
                program: spec.argv[0].clone(),
                source: e,
            });
        }
    };

    drop(child.stdin.take());
    let pid = child.id() as i32;
    let registered = crate::stop::register(crate::stop::Running::Intermediate(pid));
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let copy = |pipe: &mut Option<std::process::ChildStdout>, w: &mut (dyn Write + Send)| {
        pipe.as_mut().map_or(Ok(0), |p| io::copy(p, w))
    };
    let copied: Result<(), io::Error> = std::thread::scope(|s| {
        let out = s.spawn(|| {
            let r = copy(&mut out_pipe, stdout);
            if r.is_err() {
                // Killing the intermediate kills pid 1 (parent-death
                // signal), which ends the whole pid namespace.
                let _ = LinuxSyscall.kill(pid, Signal::KILL);
            }
            r
        });
        let r = match err_pipe.as_mut() {
            Some(p) => io::copy(p, stderr),
            None => Ok(0),
        };
        if r.is_err() {
            let _ = LinuxSyscall.kill(pid, Signal::KILL);
        }
        let out_r = out
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("output thread panicked")));
        r.and(out_r).map(drop)
    });
    let exit = child.wait().map_err(SandboxError::Wait)?;
    drop(registered);
    if crate::stop::stopping() {
        return Err(SandboxError::Stopped);
    }
    copied.map_err(SandboxError::Output)?;
    for m in read_messages(msg_file) {
        if let Message::StepExited { wait_status } = m {
            return Ok(StepOutcome {
                status: StepStatus::from_wait_status(wait_status),
                created_mount_points,
                without_sys: plan.sys_dir.is_none(),
                without_namespaces: false,
                touched: Vec::new(),
            });
        }
    }
    Err(SandboxError::NoStatus(exit))
}
