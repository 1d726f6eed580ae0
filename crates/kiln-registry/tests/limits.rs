//! What a malicious or broken registry can make kiln do: blobs of the wrong size or digest are
//! refused and never committed (against the real Distribution registry); configs over the cap
//! are refused before they are fetched; and huge or endless manifests, configs, token replies
//! and error bodies are cut at their caps, with bounded memory, by a loopback server that
//! misbehaves as no real registry does.

use kiln_oci::{media_type, Descriptor, Digest, Platform};
use kiln_registry::{BlobSink, Client, DockerConfig, RegistryError};
use kiln_test::{FaultProxy, ManifestFormat, PushOptions, Registry, TestImage};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

mod common;
use common::*;

fn amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

/// A sink that keeps what it is given and records which blobs were committed.
#[derive(Default)]
struct RecordingSink {
    committed: Mutex<Vec<Digest>>,
}

impl BlobSink for RecordingSink {
    type Writer = Vec<u8>;

    fn open(&self, _: &Descriptor) -> std::io::Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn commit(&self, descriptor: &Descriptor, _: Vec<u8>) -> std::io::Result<()> {
        self.committed
            .lock()
            .unwrap()
            .push(descriptor.digest.clone());
        Ok(())
    }
}

/// A blob announced one byte shorter or longer than it is, or whose stored bytes were changed,
/// is refused with an error naming it; no sink commits it and no file appears under its name
/// (nor a partial one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_of_the_wrong_size_or_digest_are_refused_and_never_committed() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    let image = TestImage::single(&vec![5u8; 50_000]).unwrap();
    image
        .push(&registry, "l/app:1", &PushOptions::new(ManifestFormat::Oci))
        .unwrap();
    let client = Client::new(plain_options(&[registry.host()]), DockerConfig::default());
    let r = reference(&registry.host(), "l/app:1");
    let resolved = client.resolve(&r, &amd64()).await.unwrap();
    let layer = resolved.manifest.layers[0].clone();
    let config = resolved.manifest.config.clone();

    let resized = |d: &Descriptor, size: u64| Descriptor { size, ..d.clone() };
    let cases = [
        ("more bytes than announced", resized(&layer, layer.size - 1)),
        (
            "fewer bytes than announced",
            resized(&layer, layer.size + 1),
        ),
    ];
    for (what, descriptor) in &cases {
        let sink = RecordingSink::default();
        let err = client
            .fetch_blobs_into(&resolved.source, std::slice::from_ref(descriptor), &sink)
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::Mismatch { what: "size", .. }),
            "{what}: {err}"
        );
        assert!(
            err.to_string().contains(&layer.digest.to_string()),
            "{what}: the error names the blob: {err}"
        );
        assert!(sink.committed.lock().unwrap().is_empty(), "{what}");

        let dir = tempfile::tempdir().unwrap();
        client
            .fetch_blobs(
                &resolved.source,
                std::slice::from_ref(descriptor),
                dir.path(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{what}: no blob, not even a partial one"
        );
    }

    // The config, held in memory, is checked the same way.
    for size in [config.size - 1, config.size + 1] {
        let err = client
            .fetch_blob_bytes(&resolved.source, &resized(&config, size))
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::Mismatch { what: "size", .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains(&config.digest.to_string()),
            "{err}"
        );
    }

    // Bytes changed inside the registry's own storage: the digest no longer matches.
    let hex = layer.digest.hex();
    let stored = registry
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let sink = RecordingSink::default();
    let err = client
        .fetch_blobs_into(&resolved.source, std::slice::from_ref(&layer), &sink)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Mismatch { what: "digest", .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&layer.digest.to_string()), "{err}");
    assert!(sink.committed.lock().unwrap().is_empty());
    let dir = tempfile::tempdir().unwrap();
    client
        .fetch_blobs(&resolved.source, std::slice::from_ref(&layer), dir.path())
        .await
        .unwrap_err();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A manifest whose config claims more than 16 MiB is refused before any byte of the config is
/// asked for, with an error naming the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_over_the_cap_is_refused_before_it_is_fetched() {
    let registry = Registry::start(kiln_test::RegistryOptions::plain()).unwrap();
    let image = TestImage::single(b"small").unwrap();
    image
        .push(&registry, "l/app:1", &PushOptions::new(ManifestFormat::Oci))
        .unwrap();
    let proxy = FaultProxy::start(registry.addr(), vec![]).unwrap();
    let client = Client::new(plain_options(&[proxy.host()]), DockerConfig::default());
    let r = reference(&proxy.host(), "l/app:1");
    let resolved = client.resolve(&r, &amd64()).await.unwrap();
    let huge = Descriptor {
        size: (16 << 20) + 1,
        ..resolved.manifest.config.clone()
    };
    let blob_requests = || {
        proxy
            .requests()
            .iter()
            .filter(|r| r.target.contains("/blobs/"))
            .count()
    };
    let before = blob_requests();
    let err = client
        .fetch_blob_bytes(&resolved.source, &huge)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&huge.digest.to_string()), "{text}");
    assert!(text.contains("more than the 16 MiB"), "{text}");
    assert_eq!(blob_requests(), before, "the config was asked for");
}

/// What the loopback server answers to one request.
#[derive(Clone)]
enum Reply {
    /// A whole response: status, extra headers, body (sent with Content-Length).
    Fixed(u16, Vec<(String, String)>, Vec<u8>),
    /// A chunked body that never ends: status, headers, then `chunk` over and over.
    Endless(u16, Vec<(String, String)>, Vec<u8>),
    /// Headers announcing this Content-Length, then the body `chunk` repeated to that length.
    Announced(u64, Vec<u8>),
}

type Handler = dyn Fn(&str, SocketAddr) -> Reply + Send + Sync;

/// A plain-HTTP/1.1 server on 127.0.0.1 that answers by path, for behaviour no real registry
/// has. It counts the body bytes it managed to send: an endless body stops only when the
/// client hangs up. Dropping it stops accepting and joins every thread.
struct LoopServer {
    addr: SocketAddr,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl LoopServer {
    fn start(handler: impl Fn(&str, SocketAddr) -> Reply + Send + Sync + 'static) -> LoopServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let acceptor = {
            let (sent, stop, threads) = (sent.clone(), stop.clone(), threads.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (sent, handler) = (sent.clone(), handler.clone());
                    let thread = std::thread::spawn(move || serve(stream, addr, &*handler, &sent));
                    threads.lock().unwrap().push(thread);
                }
            })
        };
        LoopServer {
            addr,
            sent,
            stop,
            threads,
            acceptor: Some(acceptor),
        }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Body bytes sent so far.
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for LoopServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for thread in self.threads.lock().unwrap().drain(..) {
            let _ = thread.join();
        }
    }
}

/// Answers the requests of one connection until the client hangs up (or 5 s of silence).
fn serve(stream: TcpStream, addr: SocketAddr, handler: &Handler, sent: &AtomicU64) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        // Not HTTP (the client trying TLS first): hang up, so it falls back to plain HTTP.
        match reader.fill_buf() {
            Ok(b) if b.first().is_some_and(u8::is_ascii_alphabetic) => {}
            _ => return,
        }
        let mut path = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if path.is_empty() {
                path = line.split(' ').nth(1).unwrap_or("").to_owned();
            }
            if line == "\r\n" {
                break;
            }
        }
        let head = |status: u16, headers: &[(String, String)], framing: &str| {
            let mut head = format!("HTTP/1.1 {status} X\r\n{framing}\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            head.into_bytes()
        };
        match handler(&path, addr) {
            Reply::Fixed(status, headers, body) => {
                let framing = format!("Content-Length: {}", body.len());
                if writer.write_all(&head(status, &headers, &framing)).is_err()
                    || writer.write_all(&body).is_err()
                {
                    return;
                }
                sent.fetch_add(body.len() as u64, Ordering::SeqCst);
            }
            Reply::Endless(status, headers, chunk) => {
                let framing = "Transfer-Encoding: chunked";
                if writer.write_all(&head(status, &headers, framing)).is_err() {
                    return;
                }
                let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                framed.extend_from_slice(&chunk);
                framed.extend_from_slice(b"\r\n");
                while writer.write_all(&framed).is_ok() {
                    sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
                return;
            }
            Reply::Announced(length, chunk) => {
                let framing = format!("Content-Length: {length}");
                if writer.write_all(&head(200, &[], &framing)).is_err() {
                    return;
                }
                let mut left = length;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if writer.write_all(&chunk[..n]).is_err() {
                        return;
                    }
                    sent.fetch_add(n as u64, Ordering::SeqCst);
                    left -= n as u64;
                }
            }
        }
    }
}

fn ok(body: &[u8], content_type: &str) -> Reply {
    Reply::Fixed(
        200,
        vec![("Content-Type".into(), content_type.into())],
        body.to_vec(),
    )
}

/// An endless body of JSON-looking text.
fn endless(status: u16) -> Reply {
    Reply::Endless(status, vec![], vec![b'x'; 64 << 10])
}

/// Whatever an endless or huge reply made the server send before kiln hung up: the cap, plus
/// what the loopback socket buffers hold, far from everything.
const SENT_BOUND: u64 = 48 << 20;

async fn within_a_minute<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("kiln kept reading")
}

/// A manifest that never ends, or that announces more than 4 MiB, is cut at the cap with an
/// error naming the request; kiln does not read on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_endless_manifests_are_cut_at_4_mib() {
    let server = LoopServer::start(|path, _| match path {
        "/v2/" => ok(b"{}", "application/json"),
        p if p.ends_with("/manifests/endless") => endless(200),
        p if p.ends_with("/manifests/announced") => Reply::Announced(64 << 20, vec![b' '; 1 << 16]),
        _ => Reply::Fixed(404, vec![], vec![]),
    });
    let client = Client::new(plain_options(&[server.host()]), DockerConfig::default());
    for tag in ["endless", "announced"] {
        let r = reference(&server.host(), &format!("l/app:{tag}"));
        let err = within_a_minute(client.fetch_manifest(&r))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("larger than 4 MiB"), "{tag}: {text}");
        assert!(text.contains(&format!("/manifests/{tag}")), "{tag}: {text}");
    }
    assert!(server.sent() < SENT_BOUND, "{} bytes sent", server.sent());
}

/// A config blob that never ends is cut as soon as it passes its descriptor's size, with an
/// error naming the blob: `resolve` never holds more than the size the manifest gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_config_is_cut_at_its_descriptor_size() {
    let config = Descriptor::for_bytes(media_type::OCI_CONFIG, br#"{"architecture":"amd64"}"#);
    let manifest = kiln_oci::ImageManifest::oci(config.clone(), vec![])
        .to_canonical_json()
        .unwrap();
    let server = LoopServer::start(move |path, _| match path {
        "/v2/" => ok(b"{}", "application/json"),
        p if p.contains("/manifests/") => ok(&manifest, media_type::OCI_MANIFEST),
        p if p.contains("/blobs/") => endless(200),
        _ => Reply::Fixed(404, vec![], vec![]),
    });
    let client = Client::new(plain_options(&[server.host()]), DockerConfig::default());
    let r = reference(&server.host(), "l/app:1");
    let err = within_a_minute(client.resolve(&r, &amd64()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Mismatch { what: "size", .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(&config.digest.to_string()), "{text}");
    assert!(
        text.contains(&format!("more than {}", config.size)),
        "{text}"
    );
    assert!(server.sent() < SENT_BOUND, "{} bytes sent", server.sent());
}

/// A token server whose reply never ends is cut at 1 MiB: authentication fails, naming the
/// token endpoint, instead of filling memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_token_reply_is_cut_at_1_mib() {
    let server = LoopServer::start(|path, addr| match path {
        p if p.starts_with("/token") => endless(200),
        _ => Reply::Fixed(
            401,
            vec![(
                "WWW-Authenticate".into(),
                format!(r#"Bearer realm="http://{addr}/token",service="loop""#),
            )],
            vec![],
        ),
    });
    let client = Client::new(plain_options(&[server.host()]), DockerConfig::default());
    let r = reference(&server.host(), "l/app:1");
    let err = within_a_minute(client.fetch_manifest(&r))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Auth { .. }), "{text}");
    assert!(text.contains("sent more than 1 MiB"), "{text}");
    assert!(
        text.contains(&format!("http://{}/token", server.host())),
        "{text}"
    );
    assert!(server.sent() < SENT_BOUND, "{} bytes sent", server.sent());
}

/// An error status whose body never ends still fails at once with the status: only the first
/// 64 KiB of an error body are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_error_body_is_cut() {
    let server = LoopServer::start(|path, _| match path {
        "/v2/" => ok(b"{}", "application/json"),
        _ => endless(404),
    });
    let client = Client::new(plain_options(&[server.host()]), DockerConfig::default());
    let r = reference(&server.host(), "l/app:1");
    let err = within_a_minute(client.fetch_manifest(&r))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert!(server.sent() < SENT_BOUND, "{} bytes sent", server.sent());
}
