use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use kiln_test::{
    Fault, FaultAction, FaultProxy, ManifestFormat, PushOptions, Registry, RegistryOptions,
    TestImage,
};

/// Reads one response with a known Content-Length (or none) from `reader`.
fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn connect(proxy: &FaultProxy) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    (stream, reader)
}

#[test]
fn injected_503_then_429_then_the_real_answer_on_one_keep_alive_connection() {
    let registry = Registry::start(RegistryOptions::plain()).unwrap();
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![
            Fault::new(FaultAction::ServiceUnavailable)
                .method("GET")
                .path("/v2/"),
            Fault::new(FaultAction::TooManyRequests).path("/v2/"),
        ],
    )
    .unwrap();
    let (mut stream, mut reader) = connect(&proxy);
    let request = format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.host());

    stream.write_all(request.as_bytes()).unwrap();
    let (status, _, body) = read_response(&mut reader);
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("UNAVAILABLE"));

    stream.write_all(request.as_bytes()).unwrap();
    let (status, headers, _) = read_response(&mut reader);
    assert_eq!(status, 429);
    assert_eq!(header(&headers, "retry-after"), Some("1"));

    stream.write_all(request.as_bytes()).unwrap();
    let (status, headers, _) = read_response(&mut reader);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "docker-distribution-api-version"),
        Some("registry/2.0")
    );

    assert_eq!((proxy.applied(0), proxy.matched(0)), (1, 3));
    assert_eq!((proxy.applied(1), proxy.matched(1)), (1, 3));
    let faults: Vec<_> = proxy.requests().iter().map(|r| r.fault).collect();
    assert_eq!(faults, [Some(0), Some(1), None]);
}

#[test]
fn blob_responses_are_cut_after_k_body_bytes_then_served_whole() {
    let registry = Registry::start(RegistryOptions::plain()).unwrap();
    let image = TestImage::single(&[7u8; 4096]).unwrap();
    image
        .push(
            &registry,
            "demo/cut:v1",
            &PushOptions::new(ManifestFormat::Oci),
        )
        .unwrap();
    let blob = &image.images()[0];
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![Fault::new(FaultAction::CloseAfterBodyBytes(10))
            .method("GET")
            .path("/blobs/")],
    )
    .unwrap();
    let request = format!(
        "GET /v2/demo/cut/blobs/{} HTTP/1.1\r\nHost: {}\r\n\r\n",
        blob.layer_digest,
        proxy.host()
    );

    let (mut stream, mut reader) = connect(&proxy);
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    reader.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let head_end = text.find("\r\n\r\n").unwrap() + 4;
    assert!(text.starts_with("HTTP/1.1 200"));
    assert!(text.contains(&format!("Content-Length: {}", blob.layer_size)));
    assert_eq!(raw.len() - head_end, 10);

    let (mut stream, mut reader) = connect(&proxy);
    stream.write_all(request.as_bytes()).unwrap();
    let (status, _, body) = read_response(&mut reader);
    assert_eq!(status, 200);
    assert_eq!(body.len() as u64, blob.layer_size);
    assert_eq!(proxy.applied(0), 1);
    assert_eq!(proxy.matched(0), 2);
}

#[test]
fn chunked_uploads_and_keep_alive_pass_through_and_are_counted() {
    let registry = Registry::start(RegistryOptions::plain()).unwrap();
    let delay = Duration::from_millis(300);
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![Fault::new(FaultAction::Delay(delay)).method("PUT")],
    )
    .unwrap();
    let (mut stream, mut reader) = connect(&proxy);
    let host = proxy.host();

    write!(
        stream,
        "POST /v2/demo/up/blobs/uploads/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let (status, headers, _) = read_response(&mut reader);
    assert_eq!(status, 202);
    let location = header(&headers, "location").unwrap().to_string();
    let path = location.trim_start_matches(&format!("http://{host}"));

    write!(
        stream,
        "PATCH {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n\
         Transfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
    )
    .unwrap();
    let (status, headers, _) = read_response(&mut reader);
    assert_eq!(status, 202);
    assert_eq!(header(&headers, "range"), Some("0-10"));
    let location = header(&headers, "location").unwrap().to_string();
    let path = location.trim_start_matches(&format!("http://{host}"));

    let digest = "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
    let started = Instant::now();
    write!(
        stream,
        "PUT {path}&digest={digest} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let (status, _, _) = read_response(&mut reader);
    assert_eq!(status, 201);
    assert!(started.elapsed() >= delay);

    write!(
        stream,
        "GET /v2/demo/up/blobs/{digest} HTTP/1.1\r\nHost: {host}\r\n\r\n"
    )
    .unwrap();
    let (status, _, body) = read_response(&mut reader);
    assert_eq!(status, 200);
    assert_eq!(body, b"hello world");

    let methods: Vec<_> = proxy.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["POST", "PATCH", "PUT", "GET"]);
    assert_eq!(proxy.applied(0), 1);
}

#[test]
fn skopeo_push_through_the_proxy_fails_on_an_injected_503_then_succeeds() {
    let registry = Registry::start(RegistryOptions::plain()).unwrap();
    let proxy = FaultProxy::start(
        registry.addr(),
        vec![Fault::new(FaultAction::ServiceUnavailable)
            .method("PUT")
            .path("/manifests/")],
    )
    .unwrap();
    let image = TestImage::single(b"retry").unwrap();
    let options = PushOptions::new(ManifestFormat::Oci).via(&proxy.host());
    let started = Instant::now();
    let err = image
        .push(&registry, "demo/retry:v1", &options)
        .unwrap_err();
    // skopeo probes HTTPS first; the proxy must refuse the TLS hello at once
    // rather than wait for skopeo's 10 s handshake timeout.
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "the 10 s TLS handshake timeout was hit"
    );
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(proxy.applied(0), 1);

    let digest = image.push(&registry, "demo/retry:v1", &options).unwrap();
    assert_eq!(digest, image.images()[0].manifest_digest);
    assert_eq!((proxy.applied(0), proxy.matched(0)), (1, 2));
    // The second push found its blobs already there (HEAD) and sent no blob bodies.
    assert!(proxy
        .requests()
        .iter()
        .any(|r| r.method == "HEAD" && r.target.contains("/blobs/")));
}
