//! The thread plumbing under the fault proxy and the cloud emulators' HTTP
//! server: a listener on a free `127.0.0.1` port whose accept thread serves
//! each connection on a thread of its own, and a drop that stops accepting,
//! shuts every connection down and joins every thread.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{IoContext, Result};

/// What a [`Listener`]'s threads share: the server's own state `T` (reached
/// through `Deref`), the stop flag and the sockets to shut down on drop.
pub(crate) struct Connections<T> {
    inner: T,
    stop: AtomicBool,
    /// Clones of every socket, so drop can shut them down and unblock threads.
    sockets: Mutex<Vec<TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl<T> Deref for Connections<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> Connections<T> {
    /// Whether the listener is being dropped.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Keeps a clone of `stream` to shut down on drop (accepted connections
    /// are tracked already; this is for others, e.g. to an upstream).
    pub(crate) fn track(&self, stream: &TcpStream) {
        if let Ok(clone) = stream.try_clone() {
            self.sockets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(clone);
        }
    }

    fn add_thread(&self, handle: JoinHandle<()>) {
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        // Reap finished connection threads so a long test does not pile them up.
        let (done, running): (Vec<_>, Vec<_>) = threads.drain(..).partition(|t| t.is_finished());
        for thread in done {
            let _ = thread.join();
        }
        *threads = running;
        threads.push(handle);
    }
}

/// A running listener; stops, closes every connection and joins every
/// thread on drop.
pub(crate) struct Listener<T> {
    addr: SocketAddr,
    connections: Arc<Connections<T>>,
    accept_thread: Option<JoinHandle<()>>,
}

impl<T: Send + Sync + 'static> Listener<T> {
    /// Listens on a free `127.0.0.1` port and calls `serve` on a new thread
    /// named `connection_thread` for each connection; `what` names the
    /// server in errors, `accept_thread` the accepting thread.
    pub(crate) fn start(
        what: &str,
        accept_thread: String,
        connection_thread: &'static str,
        state: T,
        serve: fn(TcpStream, &Connections<T>),
    ) -> Result<Self> {
        let listener =
            TcpListener::bind("127.0.0.1:0").context(|| format!("bind {what} on 127.0.0.1"))?;
        let addr = listener
            .local_addr()
            .context(|| format!("{what} address"))?;
        let connections = Arc::new(Connections {
            inner: state,
            stop: AtomicBool::new(false),
            sockets: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let accept_thread = {
            let connections = Arc::clone(&connections);
            std::thread::Builder::new()
                .name(accept_thread)
                .spawn(move || accept_loop(listener, connections, connection_thread, serve))
                .context(|| format!("spawn {what} thread"))?
        };
        Ok(Self {
            addr,
            connections,
            accept_thread: Some(accept_thread),
        })
    }
}

impl<T> Listener<T> {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the connection threads share (the server's state through `Deref`).
    pub(crate) fn shared(&self) -> &Connections<T> {
        &self.connections
    }
}

impl<T> Drop for Listener<T> {
    fn drop(&mut self) {
        self.connections.stop.store(true, Ordering::SeqCst);
        // Wake the accept call; the loop sees `stop` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        for socket in self
            .connections
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = self
            .connections
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop<T: Send + Sync + 'static>(
    listener: TcpListener,
    connections: Arc<Connections<T>>,
    connection_thread: &'static str,
    serve: fn(TcpStream, &Connections<T>),
) {
    for conn in listener.incoming() {
        if connections.stopping() {
            return;
        }
        let Ok(stream) = conn else { continue };
        connections.track(&stream);
        let worker = {
            let connections = Arc::clone(&connections);
            std::thread::Builder::new()
                .name(connection_thread.into())
                .spawn(move || serve(stream, &connections))
        };
        if let Ok(handle) = worker {
            connections.add_thread(handle);
        }
    }
}
