//! SSH agents for RUN steps (`RUN --mount=type=ssh`): one socket per mount, made by kiln with
//! the mount's mode and owner, that forwards each connection to the agent given with `--ssh`
//! (the step never sees the caller's own socket, its path, owner or other users), or answers it
//! with kiln's own read-only agent over key files (`keys.rs`).

mod keys;

pub(crate) use keys::AgentKey;

use crate::options::SshSource;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What a socket serves: another agent, or keys kiln signs with itself.
#[derive(Clone)]
enum Upstream {
    Agent(PathBuf),
    Keys(Arc<Vec<keys::AgentKey>>),
}

/// A socket serving one `--ssh` id until dropped (then it is closed and removed).
pub(crate) struct AgentSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AgentSocket {
    /// Listens on `dir/name` (`dir` may be deeper than a socket path allows: the socket is
    /// bound through `/proc/self/fd`), with `mode` and owner `uid:gid`, and serves `source`.
    pub(crate) fn serve(
        dir: &Path,
        name: &str,
        source: &SshSource,
        mode: u32,
        (uid, gid): (u32, u32),
    ) -> io::Result<AgentSocket> {
        // Keys are loaded now: a bad key file fails the step before it starts.
        let upstream = match source {
            SshSource::Agent(socket) => Upstream::Agent(socket.clone()),
            SshSource::Keys(files) => Upstream::Keys(Arc::new(
                files
                    .iter()
                    .map(|f| keys::AgentKey::load(f))
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(io::Error::other)?,
            )),
        };
        let dir_handle = std::fs::File::open(dir)?;
        let short = format!("/proc/self/fd/{}/{name}", dir_handle.as_raw_fd());
        let listener = UnixListener::bind(&short)?;
        drop(dir_handle);
        let path = dir.join(name);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ssh-agent".into())
            .spawn(move || accept_loop(listener, &upstream, &stopping))?;
        Ok(AgentSocket {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// Where the socket is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: UnixListener, upstream: &Upstream, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                let upstream = upstream.clone();
                std::thread::spawn(move || {
                    let served = match &upstream {
                        Upstream::Agent(socket) => forward(conn, socket),
                        Upstream::Keys(keys) => keys::serve(conn, keys),
                    };
                    if let Err(e) = served {
                        tracing::debug!("ssh agent connection: {e}");
                    }
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => {
                tracing::debug!("ssh agent socket: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Passes one connection's requests to the agent, read-only (as BuildKit's forwarding does):
/// listing keys and signing go through, one reply each; adding, removing or locking keys and
/// extensions get FAILURE, so a step cannot change the caller's agent.
fn forward(mut conn: UnixStream, upstream: &Path) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    let mut agent = UnixStream::connect(upstream)?;
    while let Some(request) = keys::read_message(&mut conn)? {
        if !keys::is_read_only_request(&request) {
            keys::write_message(&mut conn, keys::FAILURE_REPLY)?;
            continue;
        }
        keys::write_message(&mut agent, &request)?;
        let reply = keys::read_message(&mut agent)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        keys::write_message(&mut conn, &reply)?;
    }
    Ok(())
}
