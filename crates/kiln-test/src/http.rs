//! Just enough HTTP/1.1 for the token server, the fault proxy, the cloud
//! emulators and readiness checks: message heads, body framing
//! (Content-Length and chunked), form and query decoding and percent-encoding,
//! and a one-shot plain-text client (whose request and response handling the
//! emulators' HTTPS client and forwarder share).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::{Error, IoContext, Result};

/// Longest message head we accept; registries and clients stay far below it.
const MAX_HEAD: usize = 64 * 1024;

/// The start line and headers of a request or a response.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    /// `GET /v2/ HTTP/1.1` or `HTTP/1.1 200 OK`.
    pub(crate) start_line: String,
    /// Header names and values in order, as sent.
    pub(crate) headers: Vec<(String, String)>,
}

/// The first value of header `name` in `headers` (case-insensitive).
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Whether header `name` lists `token` (comma-separated, case-insensitive).
    pub(crate) fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Request method and target, for a request head.
    pub(crate) fn request_line(&self) -> Option<(&str, &str)> {
        let mut parts = self.start_line.split(' ');
        let method = parts.next()?;
        let target = parts.next()?;
        parts
            .next()?
            .starts_with("HTTP/")
            .then_some((method, target))
    }

    /// Status code, for a response head.
    pub(crate) fn status(&self) -> Option<u16> {
        let mut parts = self.start_line.split(' ');
        parts.next()?.starts_with("HTTP/").then_some(())?;
        parts.next()?.parse().ok()
    }

    /// The head serialized back onto the wire, without the headers in `drop`.
    pub(crate) fn to_bytes_without(&self, drop: &[&str]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(self.start_line.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            if drop.iter().any(|d| d.eq_ignore_ascii_case(name)) {
                continue;
            }
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// How a request's body is delimited.
    pub(crate) fn request_framing(&self) -> Result<Framing> {
        if self.header_has_token("transfer-encoding", "chunked") {
            return Ok(Framing::Chunked);
        }
        match self.header("content-length") {
            Some(v) => v
                .trim()
                .parse()
                .map(Framing::Length)
                .map_err(|_| Error::Http(format!("bad Content-Length {v:?}"))),
            None => Ok(Framing::Length(0)),
        }
    }

    /// How a response's body is delimited, given the request method.
    pub(crate) fn response_framing(&self, request_method: &str) -> Result<Framing> {
        let status = self
            .status()
            .ok_or_else(|| Error::Http(format!("bad status line {:?}", self.start_line)))?;
        if request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304
        {
            return Ok(Framing::Length(0));
        }
        if self.header_has_token("transfer-encoding", "chunked") {
            return Ok(Framing::Chunked);
        }
        match self.header("content-length") {
            Some(v) => v
                .trim()
                .parse()
                .map(Framing::Length)
                .map_err(|_| Error::Http(format!("bad Content-Length {v:?}"))),
            None => Ok(Framing::UntilClose),
        }
    }
}

/// How a message body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// Reads one message head. `Ok(None)` means the peer closed before sending a byte.
pub(crate) fn read_head<R: BufRead>(reader: &mut R) -> Result<Option<Head>> {
    // Refuse non-HTTP bytes at once (e.g. a TLS ClientHello from a client
    // probing HTTPS first) instead of waiting for a newline that never comes.
    let first = reader.fill_buf().context(|| "read HTTP head".into())?;
    match first.first() {
        None => return Ok(None),
        Some(b) if b.is_ascii_alphabetic() || *b == b'\r' || *b == b'\n' => {}
        Some(b) => return Err(Error::Http(format!("not HTTP/1.x (first byte 0x{b:02x})"))),
    }
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = reader
            .read_until(b'\n', &mut line)
            .context(|| "read HTTP head".into())?;
        if n == 0 {
            if lines.is_empty() && total == 0 {
                return Ok(None);
            }
            return Err(Error::Http(
                "connection closed inside a message head".into(),
            ));
        }
        total += n;
        if total > MAX_HEAD {
            return Err(Error::Http("message head too large".into()));
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if line.is_empty() {
            // Tolerate stray blank lines before a request (RFC 9112 section 2.2).
            if lines.is_empty() {
                continue;
            }
            break;
        }
        lines.push(String::from_utf8_lossy(&line).into_owned());
    }
    let mut lines = lines.into_iter();
    let start_line = lines.next().unwrap_or_default();
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| Error::Http(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(Some(Head {
        start_line,
        headers,
    }))
}

/// Copies one body with the given framing from `reader` to `writer`, bytes as sent.
pub(crate) fn copy_body<R: BufRead, W: Write>(
    reader: &mut R,
    writer: &mut W,
    framing: Framing,
) -> io::Result<()> {
    match framing {
        Framing::Length(n) => copy_exact(reader, writer, n),
        Framing::UntilClose => io::copy(reader, writer).map(drop),
        Framing::Chunked => loop {
            let size_line = read_line(reader)?;
            writer.write_all(&size_line)?;
            let text = String::from_utf8_lossy(&size_line);
            let hex = text.trim().split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(hex, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size {hex:?}"),
                )
            })?;
            if size == 0 {
                // Trailer section, ended by an empty line.
                loop {
                    let line = read_line(reader)?;
                    writer.write_all(&line)?;
                    if line == b"\r\n" || line == b"\n" {
                        return Ok(());
                    }
                }
            }
            copy_exact(reader, writer, size)?;
            let crlf = read_line(reader)?;
            writer.write_all(&crlf)?;
        },
    }
}

/// Reads and discards one body.
pub(crate) fn drain_body<R: BufRead>(reader: &mut R, framing: Framing) -> io::Result<()> {
    copy_body(reader, &mut io::sink(), framing)
}

fn copy_exact<R: Read, W: Write>(reader: &mut R, writer: &mut W, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(n), writer)?;
    if copied != n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("body ended after {copied} of {n} bytes"),
        ));
    }
    Ok(())
}

fn read_line<R: BufRead>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed inside a chunked body",
        ));
    }
    Ok(line)
}

/// Decodes `application/x-www-form-urlencoded` (also used for query strings).
pub(crate) fn parse_form(input: &str) -> Vec<(String, String)> {
    input
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Percent-decodes, treating `+` as a space (form encoding).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query or form value (unreserved characters kept).
pub(crate) fn percent_encode(s: &str) -> String {
    percent_encode_keeping(s, b"")
}

/// Percent-encodes a URL path (unreserved characters and `/` kept).
pub(crate) fn percent_encode_path(s: &str) -> String {
    percent_encode_keeping(s, b"/")
}

fn percent_encode_keeping(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A response read by [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Headers in order as received.
    pub headers: Vec<(String, String)>,
    /// The whole body (chunked bodies are decoded).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one plain-HTTP/1.1 request over a new connection to `addr` and reads
/// the response (`Connection: close`). `headers` are added after `Host`.
///
/// A deliberately tiny client for tests of the test services themselves: plain
/// TCP only, no redirects, 10 s timeouts.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse> {
    request_with_timeout(addr, method, path, headers, body, Duration::from_secs(10))
}

/// [`http_request`] with a chosen connect and read timeout.
pub(crate) fn request_with_timeout(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<HttpResponse> {
    let what = format!("{method} http://{addr}{path}");
    let stream = TcpStream::connect_timeout(&addr, timeout).context(|| what.clone())?;
    stream
        .set_read_timeout(Some(timeout))
        .context(|| what.clone())?;
    let head = request_head(addr, method, path, headers, body);
    exchange(&stream, &head, body, method, &what)
}

/// The head of a one-shot request to `addr`: `Host` and `Connection: close`,
/// then `headers`, then `Content-Length` when there is a body or the method
/// is `POST` or `PUT`.
pub(crate) fn request_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head
}

/// Writes a request (`head`, then `body`) to `stream` and reads the whole
/// response to it (a `method` request), chunked bodies decoded; `what` names
/// the request in errors.
pub(crate) fn exchange<S: Read + Write>(
    mut stream: S,
    head: &str,
    body: &[u8],
    method: &str,
    what: &str,
) -> Result<HttpResponse> {
    let context = || what.to_string();
    stream.write_all(head.as_bytes()).context(context)?;
    stream.write_all(body).context(context)?;
    stream.flush().context(context)?;
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader)?
        .ok_or_else(|| Error::Http(format!("{what}: closed without a response")))?;
    let status = head
        .status()
        .ok_or_else(|| Error::Http(format!("bad status line {:?}", head.start_line)))?;
    let framing = head.response_framing(method)?;
    let mut raw = Vec::new();
    copy_body(&mut reader, &mut raw, framing).context(context)?;
    let body = if framing == Framing::Chunked {
        dechunk(&raw)?
    } else {
        raw
    };
    Ok(HttpResponse {
        status,
        headers: head.headers,
        body,
    })
}

/// Shorthand for a `GET` with [`http_request`].
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
    http_request(addr, "GET", path, headers, &[])
}

pub(crate) fn dechunk(raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut reader = raw;
    loop {
        let line = read_line(&mut reader).context(|| "decode chunked body".into())?;
        let text = String::from_utf8_lossy(&line);
        let hex = text.trim().split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| Error::Http(format!("bad chunk size {hex:?}")))?;
        if size == 0 {
            return Ok(out);
        }
        if reader.len() < size + 2 {
            return Err(Error::Http("truncated chunk".into()));
        }
        out.extend_from_slice(&reader[..size]);
        reader = &reader[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_handles_plus_and_percent() {
        let form =
            parse_form("scope=repository%3Afoo%2Fbar%3Apull%2Cpush+registry%3Acatalog%3A*&x=");
        assert_eq!(
            form,
            vec![
                (
                    "scope".into(),
                    "repository:foo/bar:pull,push registry:catalog:*".into()
                ),
                ("x".into(), String::new()),
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
        assert_eq!(
            percent_encode("arn:aws:iam::1:role/x"),
            "arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx"
        );
        assert_eq!(
            percent_encode_path("dir/a b+c.tar.gz"),
            "dir/a%20b%2Bc.tar.gz"
        );
    }

    #[test]
    fn chunked_body_is_copied_verbatim_and_decodable() {
        let wire = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let mut reader = &wire[..];
        let mut out = Vec::new();
        copy_body(&mut reader, &mut out, Framing::Chunked).unwrap();
        assert_eq!(reader, b"NEXT");
        assert_eq!(dechunk(&out).unwrap(), b"Wikipedia");
    }

    #[test]
    fn head_parsing_reads_request_line_and_headers() {
        let wire = b"\r\nPUT /v2/x/blobs/uploads/1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        let head = read_head(&mut &wire[..]).unwrap().unwrap();
        assert_eq!(head.request_line(), Some(("PUT", "/v2/x/blobs/uploads/1")));
        assert_eq!(head.request_framing().unwrap(), Framing::Chunked);
        assert_eq!(head.header("host"), Some("a"));
    }
}
