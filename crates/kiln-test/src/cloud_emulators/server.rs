//! The small HTTP/1.1 server under every emulator: a listener on a free
//! `127.0.0.1` port, plain or TLS (rustls with a [`TestCa`] certificate), one
//! thread per connection with keep-alive, whole request bodies handed to a
//! handler closure. Plus a one-shot HTTPS client for tests ([`https_request`])
//! and a plain forwarder for [`super::AcrFront`].

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use serde_json::Value;

use crate::certs::{IssuedCert, TestCa};
use crate::error::{Error, IoContext, Result};
use crate::http::{
    copy_body, dechunk, exchange, find_header, parse_form, read_head, request_head, Framing, Head,
    HttpResponse,
};
use crate::listener::{Connections, Listener};

/// Largest request body an emulator reads (registry blob uploads through the
/// ACR front are the biggest).
const MAX_BODY: u64 = 512 * 1024 * 1024;

/// How long a connection may sit idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Headers that frame a message or manage its connection: the server and
/// [`forward`] set their own.
const FRAMING_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
];

fn is_one_of(name: &str, names: &[&str]) -> bool {
    names.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// One request, body read whole.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// Path and query as sent.
    pub(crate) target: String,
    /// Headers in order as sent.
    pub(crate) headers: Vec<(String, String)>,
    /// The body (chunked bodies decoded).
    pub(crate) body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The path, without the query, still percent-encoded.
    pub(crate) fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query string (may be empty).
    pub(crate) fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    /// The bearer token of `Authorization: Bearer …`, if any.
    pub(crate) fn bearer(&self) -> Option<&str> {
        let value = self.header("authorization")?.trim();
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }

    /// The body as `application/x-www-form-urlencoded` pairs, decoded.
    pub(crate) fn form(&self) -> Vec<(String, String)> {
        parse_form(&String::from_utf8_lossy(&self.body))
    }
}

/// The first value of `name` in decoded form or query pairs.
pub(crate) fn form_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The words of a space-separated list (an OAuth `scope`), empty ones dropped.
pub(crate) fn split_scopes(list: &str) -> Vec<String> {
    list.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A response the handler returns.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Headers to send; `Content-Length`, `Transfer-Encoding` and
    /// `Connection` are set by the server.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub(crate) fn json(status: u16, body: &Value) -> Self {
        Self::new(
            status,
            "application/json; charset=utf-8",
            body.to_string().into_bytes(),
        )
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// What answers requests.
pub(crate) type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

struct Emulator {
    handler: Handler,
    tls: Option<Arc<ServerConfig>>,
}

/// What every connection thread sees: the emulator, the stop flag, the sockets.
type Shared = Connections<Emulator>;

/// A running server; stops, closes every connection and joins every thread
/// on drop.
pub(crate) struct HttpServer {
    listener: Listener<Emulator>,
}

impl HttpServer {
    /// Listens on a free `127.0.0.1` port; TLS with `tls` when given.
    pub(crate) fn start(
        name: &str,
        tls: Option<Arc<ServerConfig>>,
        handler: Handler,
    ) -> Result<Self> {
        let listener = Listener::start(
            name,
            format!("kiln-test-{name}"),
            "kiln-test-emulator-conn",
            Emulator { handler, tls },
            |stream, shared| {
                // Errors end only this connection.
                let _ = serve_connection(stream, shared);
            },
        )?;
        Ok(Self { listener })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.listener.shared().tls.is_some()
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }
}

/// A rustls server config for a certificate issued by a [`TestCa`]; no ALPN,
/// so clients speak HTTP/1.1.
pub(crate) fn tls_server_config(cert: &IssuedCert) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Crypto(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pkcs8_der.clone())),
        )
        .map_err(|e| Error::Crypto(format!("TLS server certificate: {e}")))?;
    Ok(Arc::new(config))
}

/// A TLS server config with a new `127.0.0.1`/`localhost` certificate from `ca`.
pub(crate) fn loopback_tls(ca: &TestCa) -> Result<Arc<ServerConfig>> {
    tls_server_config(&ca.issue_loopback_server()?)
}

/// A plain or TLS connection, either way `Read + Write`.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<ServerConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

impl Conn {
    fn close(&mut self) {
        let tcp = match self {
            Conn::Plain(s) => &*s,
            Conn::Tls(s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
                &s.sock
            }
        };
        let _ = tcp.shutdown(Shutdown::Both);
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared) -> Result<()> {
    stream
        .set_read_timeout(Some(IDLE_TIMEOUT))
        .context(|| "emulator set timeout".into())?;
    let _ = stream.set_nodelay(true);
    let conn = match &shared.tls {
        None => Conn::Plain(stream),
        Some(config) => {
            let server = ServerConnection::new(Arc::clone(config))
                .map_err(|e| Error::Crypto(format!("TLS session: {e}")))?;
            Conn::Tls(Box::new(rustls::StreamOwned::new(server, stream)))
        }
    };
    let mut reader = BufReader::new(conn);
    let result = serve_requests(&mut reader, shared);
    reader.get_mut().close();
    result
}

fn serve_requests(reader: &mut BufReader<Conn>, shared: &Shared) -> Result<()> {
    loop {
        let Some(head) = read_head(reader)? else {
            return Ok(());
        };
        let (method, target) = head
            .request_line()
            .map(|(m, t)| (m.to_string(), t.to_string()))
            .ok_or_else(|| Error::Http(format!("bad request line {:?}", head.start_line)))?;
        if head.header_has_token("expect", "100-continue") {
            reader
                .get_mut()
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .context(|| "write 100 Continue".into())?;
        }
        let body = read_body(reader, &head)?;
        let close = head.header_has_token("connection", "close")
            || head.start_line.ends_with("HTTP/1.0")
            || shared.stopping();
        let request = Request {
            method,
            target,
            headers: head.headers.clone(),
            body,
        };
        let response = (shared.handler)(&request);
        write_response(reader.get_mut(), &request.method, &response, close)
            .context(|| "write emulator response".into())?;
        if close {
            return Ok(());
        }
    }
}

fn read_body<R: io::BufRead>(reader: &mut R, head: &Head) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    match head.request_framing()? {
        Framing::Length(n) if n > MAX_BODY => {
            return Err(Error::Http(format!(
                "request body of {n} bytes is too large"
            )))
        }
        Framing::Length(n) => {
            reader
                .take(n)
                .read_to_end(&mut body)
                .context(|| "read request body".into())?;
            if body.len() as u64 != n {
                return Err(Error::Http("request body cut short".into()));
            }
        }
        framing => {
            let mut raw = Vec::new();
            copy_body(reader, &mut raw, framing).context(|| "read request body".into())?;
            body = dechunk(&raw)?;
        }
    }
    Ok(body)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        502 => "Bad Gateway",
        _ => "Status",
    }
}

fn write_response<W: Write>(
    out: &mut W,
    method: &str,
    response: &Response,
    close: bool,
) -> io::Result<()> {
    let head_request = method.eq_ignore_ascii_case("HEAD");
    let bodiless =
        (100..200).contains(&response.status) || response.status == 204 || response.status == 304;
    // A HEAD answer keeps the length a GET would have: the handler's own
    // `Content-Length` (a forwarded HEAD), else the body it built.
    let given_length = find_header(&response.headers, "content-length");
    let mut text = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        if !is_one_of(name, FRAMING_HEADERS) {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    if !bodiless {
        let length = match (head_request, given_length) {
            (true, Some(given)) => given.to_string(),
            _ => response.body.len().to_string(),
        };
        text.push_str(&format!("Content-Length: {length}\r\n"));
    }
    if close {
        text.push_str("Connection: close\r\n");
    }
    text.push_str("\r\n");
    out.write_all(text.as_bytes())?;
    if !head_request && !bodiless {
        out.write_all(&response.body)?;
    }
    out.flush()
}

/// Sends one request over a new plain connection to `upstream` with exactly
/// `headers` (the caller's `Host` kept; framing headers replaced), reads the
/// whole response and returns it with hop-by-hop headers dropped.
pub(crate) fn forward(
    upstream: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Response> {
    let what = format!("forward {method} {target} to {upstream}");
    let stream =
        TcpStream::connect_timeout(&upstream, Duration::from_secs(10)).context(|| what.clone())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .context(|| what.clone())?;
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in headers {
        if !is_one_of(name, FRAMING_HEADERS) && !name.eq_ignore_ascii_case("expect") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let response = exchange(&stream, &head, body, method, &what)?;
    // A HEAD answer keeps its length for `write_response` to pass on.
    let keep_length = method.eq_ignore_ascii_case("HEAD");
    let headers = response
        .headers
        .into_iter()
        .filter(|(name, _)| {
            !is_one_of(name, FRAMING_HEADERS)
                || (keep_length && name.eq_ignore_ascii_case("content-length"))
        })
        .collect();
    Ok(Response {
        status: response.status,
        headers,
        body: response.body,
    })
}

/// Sends one HTTPS/1.1 request over a new connection to `addr`, trusting only
/// the CA certificate `ca_pem` (a [`TestCa`]'s), and reads the response
/// (`Connection: close`). `headers` are added after `Host`; the server name
/// checked is `addr`'s IP address.
///
/// The TLS twin of [`crate::http_request`], for tests of the TLS emulators:
/// no redirects, 10 s timeouts.
pub fn https_request(
    addr: SocketAddr,
    ca_pem: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse> {
    let what = format!("{method} https://{addr}{path}");
    let mut roots = RootCertStore::empty();
    for der in pem_certificates(ca_pem)? {
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| Error::Crypto(format!("CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Crypto(format!("TLS versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = ClientConnection::new(Arc::new(config), name)
        .map_err(|e| Error::Crypto(format!("TLS client: {e}")))?;
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).context(|| what.clone())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .context(|| what.clone())?;
    let stream = rustls::StreamOwned::new(conn, tcp);
    let head = request_head(addr, method, path, headers, body);
    exchange(stream, &head, body, method, &what)
}

/// The DER certificates in a PEM text.
fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut inside = None::<String>;
    for line in pem.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            inside = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            let text = inside.take().unwrap_or_default();
            out.push(
                STANDARD
                    .decode(text)
                    .map_err(|e| Error::Crypto(format!("PEM certificate: {e}")))?,
            );
        } else if let Some(text) = inside.as_mut() {
            text.push_str(line);
        }
    }
    if out.is_empty() {
        return Err(Error::Crypto("no certificate in the PEM text".into()));
    }
    Ok(out)
}
