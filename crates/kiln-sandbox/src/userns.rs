//! Rootless kiln (a workstation user): the process runs itself again as root of a new user
//! namespace, uid and gid 0 inside being the caller and 1… the caller's subordinate ids from
//! `/etc/subuid` and `/etc/subgid`, mapped by the setuid helpers `newuidmap` and `newgidmap`
//! (Debian's `uidmap`). Inside, kiln has the capabilities it needs over its own namespaces:
//! mounts (overlay with `userxattr`), chroot, chown within the mapped range.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::thread::UnshareFlags;

use crate::error::SandboxError;

/// Set in the environment of the process run inside the user namespace.
pub const IN_USER_NAMESPACE_ENV: &str = "KILN_IN_USER_NAMESPACE";

/// True when this process runs in a user namespace other than the host's (rootless): its uid
/// map is not the identity over all ids.
pub fn is_rootless() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// A range of subordinate ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIds {
    /// First id on the host.
    pub start: u32,
    /// How many.
    pub count: u32,
}

/// The first range of `/etc/subuid`-style `text` for `user` (by name or number).
pub fn parse_sub_ids(text: &str, user: &str, uid: u32) -> Option<SubIds> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.trim().split(':').collect();
        if f.len() != 3 || (f[0] != user && f[0] != uid.to_string()) {
            return None;
        }
        Some(SubIds {
            start: f[1].parse().ok()?,
            count: f[2].parse().ok().filter(|c: &u32| *c > 0)?,
        })
    })
}

fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

fn rootless_err(reason: String) -> SandboxError {
    SandboxError::InvalidSpec { reason }
}

/// Runs this program again with the same arguments as root of a new user namespace and
/// returns its exit code. Call it before any thread is started (unsharing a user namespace
/// needs a single-threaded process).
pub fn run_in_user_namespace() -> Result<i32, SandboxError> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let name = user_name(uid);
    let read = |file: &str| std::fs::read_to_string(file).unwrap_or_default();
    let (Some(subuid), Some(subgid)) = (
        parse_sub_ids(&read("/etc/subuid"), &name, uid),
        parse_sub_ids(&read("/etc/subgid"), &name, uid),
    ) else {
        return Err(rootless_err(format!(
            "kiln runs as {name} (uid {uid}), not root: rootless builds need subordinate ids for \
             {name} in /etc/subuid and /etc/subgid (e.g. `usermod --add-subuids 100000-165535 \
             --add-subgids 100000-165535 {name}`) and newuidmap/newgidmap (Debian's uidmap), \
             or run kiln as root"
        )));
    };
    let (mut ready_r, ready_w) = pipe()?;
    let (go_r, mut go_w) = pipe()?;
    // SAFETY: the process is single-threaded (the caller's contract); the child only unshares,
    // reads and writes pipes, sets ids and execs.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SandboxError::Spawn(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(ready_r);
        drop(go_w);
        child(ready_w, go_r);
    }
    drop(ready_w);
    drop(go_r);
    let mut byte = [0u8; 1];
    let unshared = ready_r.read(&mut byte).map(|n| n == 1).unwrap_or(false);
    let mapped = if unshared {
        map_ids("newuidmap", pid, uid, subuid).and_then(|()| map_ids("newgidmap", pid, gid, subgid))
    } else {
        Err(rootless_err(
            "could not create a user namespace (are unprivileged user namespaces disabled?)".into(),
        ))
    };
    if mapped.is_ok() {
        forward_stop_signals(pid);
        let _ = go_w.write_all(b"1");
    }
    drop(go_w);
    let mut status = 0;
    // SAFETY: waiting for the child forked above (again when a forwarded signal interrupts).
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
    mapped?;
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    })
}

/// The kiln running in the user namespace, to which SIGTERM and SIGINT are passed on.
static FORWARD_TO: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // A signal the kernel sent (Ctrl-C at a terminal) reaches the whole process group, the
    // child too: only one sent by a process (`kill`, a container runtime) is passed on, so the
    // child never gets it twice (a second one makes it stop without waiting).
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let sent_by_process = unsafe { (*info).si_code } <= 0;
    let pid = FORWARD_TO.load(std::sync::atomic::Ordering::SeqCst);
    if sent_by_process && pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Passes SIGTERM and SIGINT on to `child` (the kiln in the user namespace stops its build
/// and exits; this process then exits with its status).
fn forward_stop_signals(child: i32) {
    FORWARD_TO.store(child, std::sync::atomic::Ordering::SeqCst);
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: installs a handler that only reads an atomic and calls kill.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

fn pipe() -> Result<(std::fs::File, std::fs::File), SandboxError> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SandboxError::Pipe(e.into()))?;
    Ok((std::fs::File::from(r), std::fs::File::from(w)))
}

fn map_ids(helper: &str, pid: i32, own: u32, sub: SubIds) -> Result<(), SandboxError> {
    let out = Command::new(helper)
        .args([pid.to_string(), "0".into(), own.to_string(), "1".into()])
        .args([
            "1".to_string(),
            sub.start.to_string(),
            sub.count.to_string(),
        ])
        .output()
        .map_err(|e| {
            rootless_err(format!(
                "cannot run {helper} (install Debian's uidmap): {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(rootless_err(format!(
            "{helper} failed: {} ({helper} needs CAP_SETUID/CAP_SETGID of its own: set-user-ID \
             root on a host, file capabilities (`setcap cap_setuid+ep newuidmap`, \
             `cap_setgid+ep newgidmap`) in a container, which must keep SETUID and SETGID and \
             allow privilege escalation; see docs/kubernetes.md)",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn child(mut ready: std::fs::File, mut go: std::fs::File) -> ! {
    // SAFETY: single-threaded child; CLONE_NEWUSER affects only this process.
    if unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER) }.is_err() {
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(125) };
    }
    let _ = ready.write_all(b"1");
    drop(ready);
    let mut byte = [0u8; 1];
    if go.read(&mut byte).map(|n| n != 1).unwrap_or(true) {
        // SAFETY: as above.
        unsafe { libc::_exit(125) };
    }
    // SAFETY: plain credential calls in the new namespace, where the caller is mapped to 0.
    unsafe {
        libc::setgroups(0, std::ptr::null());
        libc::setresgid(0, 0, 0);
        libc::setresuid(0, 0, 0);
    }
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let err = Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env(IN_USER_NAMESPACE_ENV, "1")
        .exec();
    let _ = writeln!(
        std::io::stderr(),
        "error: cannot run kiln again in the user namespace: {err}"
    );
    // SAFETY: as above.
    unsafe { libc::_exit(125) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_id_files() {
        let text = "alice:100000:65536\n1001:200000:1000\nbad line\n";
        assert_eq!(
            parse_sub_ids(text, "alice", 1000),
            Some(SubIds {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(parse_sub_ids(text, "bob", 1001).unwrap().start, 200000);
        assert_eq!(parse_sub_ids(text, "carol", 1002), None);
    }
}
