//! SIGTERM (a deleted pod, `docker stop`) and SIGINT (Ctrl-C).
//!
//! Without this, kiln died at once on either and said nothing, and as a container's pid 1 it
//! did not die at all (the kernel drops signals pid 1 has no handler for) until the kubelet's
//! SIGKILL. Now the signals are blocked in every thread and one thread waits for them
//! (`sigwait`: no handler, so nothing has to be async-signal-safe). On the first one kiln:
//! - says so on stderr;
//! - kills every running RUN step (their pid namespaces, and the mounts in them, go too) and
//!   lets no new step start, so the build fails at once with [`kiln_build::BuildError::Stopped`];
//! - the build then removes its own directory (trees, scratch files) and kiln exits with
//!   128 + the signal's number.
//!
//! A build stuck where it does not look (a registry that does not answer) gets [`GRACE`]; then,
//! or at a second signal, this thread removes the build's directory itself and exits. What
//! that leaves is what `kill -9` leaves, which the next build on the kiln dir sweeps. A command
//! that is not a build exits at once: its writes are whole files renamed into place.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How long a stopping build gets to finish on its own.
const GRACE: Duration = Duration::from_secs(5);

/// The first stop signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// The running build's directory, removed if kiln has to exit on its own.
static BUILD_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM and SIGINT and starts the thread that waits for them. Call it before any
/// other thread starts (threads inherit the mask; a thread that does not block them would get
/// them the default way). Processes kiln starts get an empty mask back (std resets it).
pub(crate) fn watch() {
    let set = signal_set();
    // SAFETY: changes only this thread's mask, with a set built above.
    let blocked = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if blocked != 0 {
        return;
    }
    std::thread::spawn(move || wait_for_signals(set));
}

/// The signal that stopped kiln, if one did.
pub(crate) fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// The exit code for a stop by `signal` (the shell's convention: 143 for SIGTERM).
pub(crate) fn exit_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(1)
}

/// The signal's name as users know it.
pub(crate) fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "a signal",
    }
}

/// Records the directory of the build now running (`None` once it is gone).
pub(crate) fn set_build_dir(dir: Option<PathBuf>) {
    *BUILD_DIR.lock().unwrap_or_else(|e| e.into_inner()) = dir;
}

fn next_signal(set: &libc::sigset_t, timeout: Option<Duration>) -> Option<i32> {
    loop {
        let got = match timeout {
            None => {
                let mut signal = 0;
                // SAFETY: waits on a valid set; writes the signal into a local.
                match unsafe { libc::sigwait(set, &mut signal) } {
                    0 => signal,
                    _ => -1,
                }
            }
            Some(timeout) => {
                let ts = libc::timespec {
                    tv_sec: timeout.as_secs() as libc::time_t,
                    tv_nsec: 0,
                };
                // SAFETY: waits on a valid set with a valid timeout; no siginfo is wanted.
                unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) }
            }
        };
        if got > 0 {
            return Some(got);
        }
        let interrupted = std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR);
        if timeout.is_some() && !interrupted {
            return None;
        }
    }
}

#[allow(clippy::print_stderr)]
fn wait_for_signals(set: libc::sigset_t) {
    let Some(signal) = next_signal(&set, None) else {
        return;
    };
    RECEIVED.store(signal, Ordering::SeqCst);
    let building = BUILD_DIR
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some();
    if !building {
        eprintln!("kiln: received {}: exiting", name(signal));
        std::process::exit(exit_code(signal).into());
    }
    eprintln!(
        "kiln: received {}: stopping the build (RUN steps are killed, this build's temporary \
         files removed)",
        name(signal)
    );
    kiln_sandbox::stop::stop_all_steps();
    let why = match next_signal(&set, Some(GRACE)) {
        Some(again) => format!("received {} again", name(again)),
        None => format!(
            "the build did not stop on its own within {} s",
            GRACE.as_secs()
        ),
    };
    let dir = BUILD_DIR.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!(
        "error: build stopped by {}: {why}; exited, this build's temporary files removed",
        name(signal)
    );
    std::process::exit(exit_code(signal).into());
}
