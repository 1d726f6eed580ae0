//! A loopback HTTP/1.1 proxy that forwards to a plain-HTTP upstream (a test
//! registry) and injects faults into chosen requests.
//!
//! It parses just enough HTTP to find each request's method, target and body
//! (Content-Length or chunked), so keep-alive connections carrying several
//! requests are counted and matched one request at a time.

use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::http::{copy_body, drain_body, read_head, Framing, Head};
use crate::listener::{Connections, Listener};

/// What a [`Fault`] does to a matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Forward the request, then close the connection after this many bytes
    /// of the response body (bytes as sent after the head, so for a chunked
    /// response the chunk framing counts).
    CloseAfterBodyBytes(u64),
    /// Answer `503 Service Unavailable` without forwarding.
    ServiceUnavailable,
    /// Answer `429 Too Many Requests` with `Retry-After: 1` without forwarding.
    TooManyRequests,
    /// Wait this long, then forward normally.
    Delay(Duration),
    /// Read at most this many bytes of the request body, then close the connection without
    /// forwarding or answering: an upload cut off mid-way.
    CloseAfterRequestBytes(u64),
    /// Forward the request without its `Range` header: a server that ignores ranges and
    /// answers `200` with the whole body.
    IgnoreRange,
}

/// A fault applied to the first `times` requests that match `method` and
/// `path_contains`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The method to match (`None`: any), compared case-insensitively.
    pub method: Option<String>,
    /// A substring of the request target (path and query) to match; empty
    /// matches all.
    pub path_contains: String,
    /// How many matching requests to apply it to.
    pub times: usize,
    /// What to do.
    pub action: FaultAction,
}

impl Fault {
    /// A fault for the first request of any method and path.
    pub fn new(action: FaultAction) -> Self {
        Self {
            method: None,
            path_contains: String::new(),
            times: 1,
            action,
        }
    }

    /// Only requests with this method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_string());
        self
    }

    /// Only requests whose target contains `fragment` (e.g. `/blobs/`).
    pub fn path(mut self, fragment: &str) -> Self {
        self.path_contains = fragment.to_string();
        self
    }

    /// Apply to the first `n` matching requests.
    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && target.contains(&self.path_contains)
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// The method.
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// The index of the fault applied to it, if any.
    pub fault: Option<usize>,
}

struct State {
    faults: Vec<Fault>,
    matched: Vec<usize>,
    applied: Vec<usize>,
    seen: Vec<SeenRequest>,
}

struct Proxy {
    upstream: SocketAddr,
    state: Mutex<State>,
}

impl Proxy {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What every connection thread sees: the proxy, its stop flag and its sockets.
type Shared = Connections<Proxy>;

/// A fault-injecting proxy on a free `127.0.0.1` port. Plain TCP only.
/// Dropping it closes every connection and joins every thread.
pub struct FaultProxy {
    listener: Listener<Proxy>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr())
            .field("upstream", &self.shared().upstream)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Listens on a free `127.0.0.1` port and forwards to `upstream`, which
    /// must be a loopback address.
    pub fn start(upstream: SocketAddr, faults: Vec<Fault>) -> Result<Self> {
        if !upstream.ip().is_loopback() {
            return Err(Error::InvalidOptions(format!(
                "FaultProxy only forwards to loopback addresses, not {upstream}"
            )));
        }
        let n = faults.len();
        let proxy = Proxy {
            upstream,
            state: Mutex::new(State {
                faults,
                matched: vec![0; n],
                applied: vec![0; n],
                seen: Vec::new(),
            }),
        };
        let listener = Listener::start(
            "fault proxy",
            "kiln-test-proxy-accept".into(),
            "kiln-test-proxy-conn",
            proxy,
            |client, shared| {
                // Errors end only this connection, like a real proxy.
                let _ = serve_connection(&client, shared);
                let _ = client.shutdown(Shutdown::Both);
            },
        )?;
        Ok(Self { listener })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn host(&self) -> String {
        self.addr().to_string()
    }

    /// `http://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// How many requests fault `index` acted on (at most its `times`).
    pub fn applied(&self, index: usize) -> usize {
        self.shared()
            .state()
            .applied
            .get(index)
            .copied()
            .unwrap_or(0)
    }

    /// How many requests matched fault `index`, including those after it ran out.
    pub fn matched(&self, index: usize) -> usize {
        self.shared()
            .state()
            .matched
            .get(index)
            .copied()
            .unwrap_or(0)
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared().state().seen.clone()
    }

    fn shared(&self) -> &Shared {
        self.listener.shared()
    }
}

/// Whether to keep the client connection open after a request.
#[derive(PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

struct Upstream {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

fn serve_connection(client: &TcpStream, shared: &Shared) -> Result<()> {
    let mut client_reader = BufReader::new(client.try_clone().context(|| "clone client".into())?);
    let mut client_writer = client.try_clone().context(|| "clone client".into())?;
    let mut upstream: Option<Upstream> = None;
    loop {
        let Some(head) = read_head(&mut client_reader)? else {
            return Ok(());
        };
        let (method, target) = head
            .request_line()
            .map(|(m, t)| (m.to_string(), t.to_string()))
            .ok_or_else(|| Error::Http(format!("bad request line {:?}", head.start_line)))?;
        let framing = head.request_framing()?;
        let action = choose_fault(shared, &method, &target);
        let client_close = head.header_has_token("connection", "close");
        let next = match action {
            Some(FaultAction::ServiceUnavailable) => answer_error(
                &head,
                &method,
                framing,
                &mut client_reader,
                &mut client_writer,
                503,
            )?,
            Some(FaultAction::TooManyRequests) => answer_error(
                &head,
                &method,
                framing,
                &mut client_reader,
                &mut client_writer,
                429,
            )?,
            Some(FaultAction::CloseAfterRequestBytes(limit)) => {
                let available = match framing {
                    Framing::Length(len) => len.min(limit),
                    _ => limit,
                };
                let mut part = std::io::Read::take(&mut client_reader, available);
                let _ = std::io::copy(&mut part, &mut std::io::sink());
                Next::Close
            }
            // Everything else is forwarded: after a delay, cut short, or without `Range`.
            other => {
                let (cut_after, strip): (Option<u64>, &[&str]) = match other {
                    Some(FaultAction::Delay(delay)) => {
                        sleep_unless_stopped(shared, delay);
                        (None, &["expect"])
                    }
                    Some(FaultAction::CloseAfterBodyBytes(limit)) => (Some(limit), &["expect"]),
                    Some(FaultAction::IgnoreRange) => (None, &["expect", "range"]),
                    _ => (None, &["expect"]),
                };
                forward(
                    shared,
                    &mut upstream,
                    &head,
                    &method,
                    framing,
                    &mut client_reader,
                    &mut client_writer,
                    cut_after,
                    strip,
                )?
            }
        };
        if next == Next::Close || client_close || shared.stopping() {
            return Ok(());
        }
    }
}

fn choose_fault(shared: &Shared, method: &str, target: &str) -> Option<FaultAction> {
    let mut state = shared.state();
    let mut chosen = None;
    for i in 0..state.faults.len() {
        if !state.faults[i].matches(method, target) {
            continue;
        }
        state.matched[i] += 1;
        if chosen.is_none() && state.applied[i] < state.faults[i].times {
            state.applied[i] += 1;
            chosen = Some(i);
        }
    }
    state.seen.push(SeenRequest {
        method: method.to_string(),
        target: target.to_string(),
        fault: chosen,
    });
    chosen.map(|i| state.faults[i].action)
}

fn sleep_unless_stopped(shared: &Shared, delay: Duration) {
    let end = Instant::now() + delay;
    while Instant::now() < end && !shared.stopping() {
        std::thread::sleep(Duration::from_millis(10).min(end - Instant::now()));
    }
}

fn answer_error(
    head: &Head,
    method: &str,
    framing: Framing,
    client_reader: &mut BufReader<TcpStream>,
    client_writer: &mut TcpStream,
    status: u16,
) -> Result<Next> {
    // A client waiting for `100 Continue` has not sent its body: answer and
    // close rather than guess. Otherwise read the body so the connection
    // stays usable for the next request.
    let expects_continue = head.header_has_token("expect", "100-continue");
    if !expects_continue {
        drain_body(client_reader, framing).context(|| "drain request body".into())?;
    }
    let (reason, code, extra) = match status {
        429 => ("Too Many Requests", "TOOMANYREQUESTS", "Retry-After: 1\r\n"),
        _ => ("Service Unavailable", "UNAVAILABLE", ""),
    };
    let body = format!(
        r#"{{"errors":[{{"code":"{code}","message":"injected by kiln-test FaultProxy","detail":null}}]}}"#
    );
    let close = if expects_continue {
        "Connection: close\r\n"
    } else {
        ""
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}{close}\r\n",
        body.len()
    );
    if !method.eq_ignore_ascii_case("HEAD") {
        response.push_str(&body);
    }
    client_writer
        .write_all(response.as_bytes())
        .context(|| "write injected response".into())?;
    Ok(if expects_continue {
        Next::Close
    } else {
        Next::KeepAlive
    })
}

/// A writer that accepts `remaining` bytes, then fails.
struct Capped<'a, W> {
    inner: &'a mut W,
    remaining: u64,
}

impl<W: Write> Write for Capped<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Err(io::Error::other("kiln-test: injected cut"));
        }
        let n = buf
            .len()
            .min(self.remaining.try_into().unwrap_or(usize::MAX));
        let written = self.inner.write(&buf[..n])?;
        self.remaining -= written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[allow(clippy::too_many_arguments)]
fn forward(
    shared: &Shared,
    upstream: &mut Option<Upstream>,
    head: &Head,
    method: &str,
    framing: Framing,
    client_reader: &mut BufReader<TcpStream>,
    client_writer: &mut TcpStream,
    cut_after: Option<u64>,
    strip_headers: &[&str],
) -> Result<Next> {
    if upstream.is_none() {
        let stream = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(10))
            .context(|| format!("connect to upstream {}", shared.upstream))?;
        shared.track(&stream);
        *upstream = Some(Upstream {
            reader: BufReader::new(stream.try_clone().context(|| "clone upstream".into())?),
            writer: stream,
        });
    }
    let up = upstream.as_mut().expect("upstream connected above");

    // We answer `Expect: 100-continue` ourselves and strip it, so the body
    // streams through without waiting on the upstream's interim response.
    if head.header_has_token("expect", "100-continue") {
        client_writer
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .context(|| "write 100 Continue".into())?;
    }
    up.writer
        .write_all(&head.to_bytes_without(strip_headers))
        .context(|| "forward request head".into())?;
    copy_body(client_reader, &mut up.writer, framing).context(|| "forward request body".into())?;

    let response = loop {
        let response = read_head(&mut up.reader)?
            .ok_or_else(|| Error::Http("upstream closed without a response".into()))?;
        let status = response.status().unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            client_writer
                .write_all(&response.to_bytes_without(&[]))
                .context(|| "forward interim response".into())?;
            continue;
        }
        break response;
    };
    let response_framing = response.response_framing(method)?;
    client_writer
        .write_all(&response.to_bytes_without(&[]))
        .context(|| "forward response head".into())?;

    if let Some(limit) = cut_after {
        let mut capped = Capped {
            inner: client_writer,
            remaining: limit,
        };
        let _ = copy_body(&mut up.reader, &mut capped, response_framing);
        let _ = capped.flush();
        // Cut both sides: the client sees the body end early; the upstream
        // connection is out of sync and must not be reused.
        close_upstream(upstream);
        return Ok(Next::Close);
    }
    copy_body(&mut up.reader, client_writer, response_framing)
        .context(|| "forward response body".into())?;
    if response_framing == Framing::UntilClose || response.header_has_token("connection", "close") {
        close_upstream(upstream);
        return Ok(Next::Close);
    }
    Ok(Next::KeepAlive)
}

fn close_upstream(upstream: &mut Option<Upstream>) {
    if let Some(up) = upstream.take() {
        // Shut down rather than just drop: a clone lives in `Shared::sockets`.
        let _ = up.writer.shutdown(Shutdown::Both);
    }
}
