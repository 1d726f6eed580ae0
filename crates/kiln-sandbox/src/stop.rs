//! Stopping every step at once, for a build told to stop (kiln's SIGTERM and SIGINT handling).
//!
//! Each running step is registered here while it runs. [`stop_all_steps`] kills them (with a
//! namespace: the intermediate process, whose death takes pid 1 and so the whole pid and mount
//! namespace; without: the step's process group) and makes every later [`crate::run_step`]
//! fail with [`crate::SandboxError::Stopped`] before it starts anything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static STOPPING: AtomicBool = AtomicBool::new(false);
static RUNNING: Mutex<Vec<Running>> = Mutex::new(Vec::new());

/// What to kill to end one running step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Running {
    /// The intermediate process of a namespaced step.
    Intermediate(i32),
    /// The process group a step without namespaces leads.
    Group(i32),
}

impl Running {
    fn kill(self) {
        let signal = rustix::process::Signal::KILL;
        match self {
            Running::Intermediate(pid) => {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, signal);
                }
            }
            Running::Group(pgid) => {
                if let Some(pgid) = rustix::process::Pid::from_raw(pgid) {
                    let _ = rustix::process::kill_process_group(pgid, signal);
                }
            }
        }
    }
}

fn running() -> std::sync::MutexGuard<'static, Vec<Running>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills every step running now and refuses every later one. Cannot be undone: the process is
/// on its way out.
pub fn stop_all_steps() {
    STOPPING.store(true, Ordering::SeqCst);
    for step in running().iter() {
        step.kill();
    }
}

/// Whether [`stop_all_steps`] was called.
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// A step's registration, removed on drop (once it has been waited for).
pub(crate) struct Registered(Running);

/// Registers a step that has just started; kills it at once if the build is already stopping
/// (a stop that came between the start and this registration).
pub(crate) fn register(step: Running) -> Registered {
    running().push(step);
    if stopping() {
        step.kill();
    }
    Registered(step)
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut running = running();
        if let Some(at) = running.iter().position(|r| *r == self.0) {
            running.swap_remove(at);
        }
    }
}
