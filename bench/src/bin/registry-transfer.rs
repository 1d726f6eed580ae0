//! Registry push and pull over loopback, kiln-registry side by side with skopeo:
//! `cargo run --release -p kiln-bench --bin registry-transfer [SIZES_MIB] [RUNS]`
//! (default `256,1024 3`). Prints a Markdown table.
//!
//! A real Distribution registry (`docker-registry`) runs on 127.0.0.1. The image is one
//! uncompressed `application/vnd.oci.image.layer.v1.tar` layer of pseudo-random bytes (not a
//! real tar: the registry does not look), a tiny config and an OCI manifest, written once as an
//! OCI layout that both tools read. Every transfer runs in a child process (kiln: this binary
//! re-executed as `registry-transfer --child push|pull …`; skopeo: `skopeo copy`), timed from
//! spawn to exit, with its peak RSS and CPU time read from `wait4`'s rusage. Each push goes to a
//! fresh, empty registry, so neither tool can skip the upload (HEAD, mounts, skopeo's blob-info
//! cache); pulls read the same registry. Runs alternate which tool goes first.
//!
//! A third argument `push` or `pull` runs only those; `KILN_BENCH_CHUNK_MIB=N` sets kiln's
//! upload chunk size (default 32 MiB; larger than the blob means one monolithic PUT).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use kiln_oci::{
    media_type, Descriptor, History, ImageConfig, ImageManifest, Manifest, OciLayout,
    OciLayoutWriter, Platform,
};
use kiln_registry::{Client, DockerConfig, Reference, RegistryOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// The layout's ref name (skopeo's `oci:DIR:x`).
const REF_NAME: &str = "x";
/// A transfer taking longer than this is killed and the benchmark fails.
const CHILD_TIMEOUT: Duration = Duration::from_secs(900);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        if let Err(e) = child(&args[2..]) {
            eprintln!("registry-transfer child: {e}");
            std::process::exit(1);
        }
        return;
    }
    let sizes: Vec<u64> = args.get(1).map_or(vec![256, 1024], |s| {
        s.split(',')
            .map(|n| {
                n.parse()
                    .expect("SIZES_MIB: comma-separated MiB, e.g. 256,1024")
            })
            .collect()
    });
    let runs: usize = args
        .get(2)
        .map_or(3, |r| r.parse().expect("RUNS must be a number"));
    let ops = args.get(3).map_or("push,pull", String::as_str);
    if let Err(e) = bench(&sizes, runs, ops.contains("push"), ops.contains("pull")) {
        eprintln!("registry-transfer: {e}");
        std::process::exit(1);
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

// ---------------------------------------------------------------------------------------------
// The kiln side, in a child process.

/// `--child push HOST/REPO:TAG LAYOUT` or `--child pull HOST/REPO:TAG OUT_DIR`.
fn child(args: &[String]) -> Result<()> {
    let [op, image, path] = args else {
        return Err("usage: --child push|pull IMAGE PATH".into());
    };
    let reference = Reference::parse(image)?;
    let mut options = RegistryOptions::default();
    options
        .transport
        .insecure_registries
        .push(reference.registry.clone());
    if let Some(mib) = std::env::var("KILN_BENCH_CHUNK_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        options.chunk_size = mib * MIB;
    }
    let client = Client::new(options, DockerConfig::default());
    // As the kiln binary builds it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match op.as_str() {
        "push" => runtime.block_on(push(&client, &reference, Path::new(path))),
        "pull" => runtime.block_on(pull(&client, &reference, Path::new(path))),
        _ => Err(format!("unknown child operation {op:?}").into()),
    }
}

/// What `kiln push --oci-layout-path` does: push access check, layers, config, manifest.
async fn push(client: &Client, reference: &Reference, layout: &Path) -> Result<()> {
    let layout = OciLayout::open(layout)?;
    let entry = layout.manifest(Some(REF_NAME))?.clone();
    let bytes = layout.read_blob(&entry.digest)?;
    let Manifest::Image(manifest) = Manifest::parse(&bytes, Some(&entry.media_type))? else {
        return Err("the layout's manifest is an index".into());
    };
    client.check_push_access(reference).await?;
    for blob in manifest.layers.iter().chain([&manifest.config]) {
        client
            .push_blob(reference, blob, &layout.blob_path(&blob.digest), None)
            .await?;
    }
    let digest = client
        .push_manifest(reference, &bytes, &entry.media_type)
        .await?;
    if digest != entry.digest {
        return Err(format!("pushed manifest {digest}, expected {}", entry.digest).into());
    }
    Ok(())
}

/// Resolve (manifest and config), then every layer streamed to `out/<hex>`, verified.
async fn pull(client: &Client, reference: &Reference, out: &Path) -> Result<()> {
    let image = client
        .resolve(reference, &Platform::parse("linux/amd64")?)
        .await?;
    std::fs::write(out.join("manifest.json"), &image.manifest_bytes)?;
    std::fs::write(out.join(image.manifest.config.digest.hex()), &image.config)?;
    for layer in &image.manifest.layers {
        client
            .fetch_blob(&image.source, layer, &out.join(layer.digest.hex()))
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The image.

/// `len` cheap pseudo-random bytes (xorshift64*), made as they are read, at most 1 MiB a read:
/// incompressible, never repeated, never held in memory.
struct Noise {
    state: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left).min(MIB) as usize;
        for word in buf[..n].chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let x = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            word.copy_from_slice(&x[..word.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// An OCI layout at `dir` with one `size`-byte uncompressed layer (digest computed while
/// writing), its config and manifest, named [`REF_NAME`]. Returns the layer's descriptor.
fn write_layout(dir: &Path, size: u64) -> Result<Descriptor> {
    let mut layout = OciLayoutWriter::create(dir)?;
    let noise = Noise {
        state: 0x9e37_79b9_7f4a_7c15 ^ size,
        left: size,
    };
    let layer = Descriptor::from_digested(media_type::OCI_LAYER_TAR, layout.add_blob(noise, None)?);
    let mut config = ImageConfig::for_platform(&Platform::parse("linux/amd64")?);
    config.push_step(
        Some(layer.digest.clone()),
        History {
            created_by: Some("registry-transfer benchmark".into()),
            ..History::default()
        },
    );
    let config = config.to_canonical_json()?;
    let config_desc =
        Descriptor::from_digested(media_type::OCI_CONFIG, layout.add_blob(&config[..], None)?);
    let manifest = ImageManifest::oci(config_desc, vec![layer.clone()]).to_canonical_json()?;
    layout.add_manifest(&manifest, media_type::OCI_MANIFEST, Some(REF_NAME))?;
    layout.finish()?;
    Ok(layer)
}

// ---------------------------------------------------------------------------------------------
// Measuring child processes.

#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    /// user + system CPU time.
    cpu: Duration,
    /// Peak resident set, KiB.
    max_rss_kib: u64,
    /// CPU time the registry spent meanwhile (user + system).
    registry_cpu: Duration,
}

/// A process's CPU time so far (user + system), from `/proc/PID/stat`.
fn process_cpu(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .ok_or("malformed /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// Runs `command` to completion: wall time from spawn to reaping, and the child's own rusage
/// from `wait4` (peak RSS, CPU), and the CPU time of the registry (`registry_pid`) meanwhile.
/// Its output goes to `log`, shown if it fails.
fn measure(mut command: Command, log: &Path, registry_pid: u32) -> Result<Sample> {
    let log_file = std::fs::File::create(log)?;
    command
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let registry_before = process_cpu(registry_pid)?;
    let start = Instant::now();
    let child = command.spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut killed = false;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: rusage is plain data; wait4 fills it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our unreaped child; the pointers are valid for the call.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (status, usage);
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("wait4({pid}): {e}").into());
        }
        if !killed && start.elapsed() > CHILD_TIMEOUT {
            // SAFETY: not yet reaped, so `pid` is still our child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let wall = start.elapsed();
    let registry_cpu = process_cpu(registry_pid)?.saturating_sub(registry_before);
    // Reaped above: dropping `child` neither waits nor kills.
    drop(child);
    if killed || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        let output = std::fs::read_to_string(log).unwrap_or_default();
        return Err(format!("{command:?} failed (wait status {status:#x}):\n{output}").into());
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(Sample {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss as u64,
        registry_cpu,
    })
}

fn skopeo(args: &[&str]) -> Command {
    let mut c = Command::new(kiln_test::SKOPEO_BIN);
    c.args(["--insecure-policy", "copy"]).args(args);
    c
}

fn kiln_child(op: &str, image: &str, path: &Path) -> Result<Command> {
    let mut c = Command::new(std::env::current_exe()?);
    c.args(["--child", op, image]).arg(path);
    Ok(c)
}

/// Free bytes on the file system holding `path`.
fn free_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: statvfs is plain data; `c` is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// Flushes dirty pages (earlier runs' writes) so that their writeback does not land in the
/// next measurement.
fn sync() {
    // SAFETY: no arguments, no failure.
    unsafe { libc::sync() };
}

/// Checks that a push left the blob and the tag in the registry's storage.
fn check_pushed(registry: &kiln_test::Registry, repo: &str, layer: &Descriptor) -> Result<()> {
    let v2 = registry.storage_dir().join("docker/registry/v2");
    let hex = layer.digest.hex();
    let data = v2.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]));
    let len = std::fs::metadata(&data)?.len();
    let tag = v2.join(format!(
        "repositories/{repo}/_manifests/tags/x/current/link"
    ));
    if len != layer.size || !tag.exists() {
        return Err(format!(
            "push to {repo} left {len} bytes, tag present: {}",
            tag.exists()
        )
        .into());
    }
    Ok(())
}

fn check_pulled(file: &Path, layer: &Descriptor) -> Result<()> {
    let len = std::fs::metadata(file)?.len();
    if len != layer.size {
        return Err(format!(
            "{} has {len} bytes, expected {}",
            file.display(),
            layer.size
        )
        .into());
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Tool {
    Kiln,
    Skopeo,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Kiln => "kiln",
            Tool::Skopeo => "skopeo",
        }
    }
}

/// One push of `layout` to a fresh registry.
fn push_once(tool: Tool, layout: &Path, layer: &Descriptor, work: &Path) -> Result<Sample> {
    let registry = kiln_test::Registry::start(kiln_test::RegistryOptions::plain())?;
    let repo = format!("bench/push-{}", tool.name());
    let image = format!("{}/{repo}:{REF_NAME}", registry.host());
    let command = match tool {
        Tool::Kiln => kiln_child("push", &image, layout)?,
        Tool::Skopeo => skopeo(&[
            // Keeps the layer as it is (skopeo would gzip an uncompressed layer for a registry).
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:{REF_NAME}", layout.display()),
            &format!("docker://{image}"),
        ]),
    };
    sync();
    let sample = measure(command, &work.join("child.log"), registry.pid())?;
    check_pushed(&registry, &repo, layer)?;
    Ok(sample)
}

/// One pull of `image` into a fresh directory under `work`, removed afterwards.
fn pull_once(
    tool: Tool,
    registry: &kiln_test::Registry,
    image: &str,
    layer: &Descriptor,
    work: &Path,
) -> Result<Sample> {
    let out = work.join(format!("pulled-{}", tool.name()));
    let command = match tool {
        Tool::Kiln => {
            std::fs::create_dir(&out)?;
            kiln_child("pull", image, &out)?
        }
        Tool::Skopeo => skopeo(&[
            "--src-tls-verify=false",
            &format!("docker://{image}"),
            &format!("dir:{}", out.display()),
        ]),
    };
    sync();
    let sample = measure(command, &work.join("child.log"), registry.pid())?;
    check_pulled(&out.join(layer.digest.hex()), layer)?;
    std::fs::remove_dir_all(&out)?;
    Ok(sample)
}

struct Row {
    operation: &'static str,
    tool: Tool,
    size_mib: u64,
    samples: Vec<Sample>,
}

fn bench(sizes: &[u64], runs: usize, do_push: bool, do_pull: bool) -> Result<()> {
    for bin in [kiln_test::SKOPEO_BIN, kiln_test::REGISTRY_BIN] {
        if !Path::new(bin).exists() {
            return Err(
                format!("{bin} is missing (apt-get install skopeo docker-registry)").into(),
            );
        }
    }
    let work = tempfile::Builder::new()
        .prefix("kiln-bench-transfer-")
        .tempdir_in("/tmp")?;
    // The layout, the pull registry, one push registry and one pull destination at a time.
    let largest = sizes.iter().max().copied().unwrap_or(0) * MIB;
    let free = free_bytes(work.path())?;
    if free < 4 * largest + 2 * 1024 * MIB {
        return Err(format!(
            "/tmp has {} MiB free; {} MiB needed",
            free / MIB,
            (4 * largest) / MIB + 2048
        )
        .into());
    }
    let skopeo_version = Command::new(kiln_test::SKOPEO_BIN)
        .arg("--version")
        .output()?;
    eprintln!(
        "{} run(s) per size; {}; /tmp has {} MiB free",
        runs,
        String::from_utf8_lossy(&skopeo_version.stdout).trim(),
        free / MIB
    );
    let mut rows: Vec<Row> = Vec::new();
    for &size_mib in sizes {
        let layout: PathBuf = work.path().join(format!("layout-{size_mib}"));
        let started = Instant::now();
        let layer = write_layout(&layout, size_mib * MIB)?;
        eprintln!(
            "{size_mib} MiB layer {} written in {:.1?}",
            layer.digest,
            started.elapsed()
        );
        // The registry the pulls read, filled once by kiln (untimed).
        let source = kiln_test::Registry::start(kiln_test::RegistryOptions::plain())?;
        let pull_image = format!("{}/bench/pull:{REF_NAME}", source.host());
        measure(
            kiln_child("push", &pull_image, &layout)?,
            &work.path().join("child.log"),
            source.pid(),
        )?;
        let mut push = [Vec::new(), Vec::new()];
        let mut pull = [Vec::new(), Vec::new()];
        for run in 0..runs {
            let order = if run % 2 == 0 {
                [Tool::Kiln, Tool::Skopeo]
            } else {
                [Tool::Skopeo, Tool::Kiln]
            };
            for tool in order.into_iter().filter(|_| do_push) {
                let s = push_once(tool, &layout, &layer, work.path())?;
                eprintln!("run {run}: push {size_mib} MiB {}: {s:?}", tool.name());
                push[tool as usize].push(s);
            }
            for tool in order.into_iter().filter(|_| do_pull) {
                let s = pull_once(tool, &source, &pull_image, &layer, work.path())?;
                eprintln!("run {run}: pull {size_mib} MiB {}: {s:?}", tool.name());
                pull[tool as usize].push(s);
            }
        }
        drop(source);
        std::fs::remove_dir_all(&layout)?;
        for (operation, samples) in [("push", push), ("pull", pull)] {
            for (tool, samples) in [Tool::Kiln, Tool::Skopeo].into_iter().zip(samples) {
                if samples.is_empty() {
                    continue;
                }
                rows.push(Row {
                    operation,
                    tool,
                    size_mib,
                    samples,
                });
            }
        }
    }
    rows.sort_by_key(|r| (r.operation != "push", r.size_mib, r.tool));
    println!(
        "| operation | tool | size | wall time median (min–max) | MiB/s | peak RSS MiB | CPU s | registry CPU s |"
    );
    println!("|---|---|---:|---|---:|---:|---:|---:|");
    for row in &rows {
        let mut walls: Vec<Duration> = row.samples.iter().map(|s| s.wall).collect();
        walls.sort();
        let (median, min, max) = kiln_bench::summary_ms(&walls);
        let median_of = |f: fn(&Sample) -> Duration| {
            let mut v: Vec<Duration> = row.samples.iter().map(f).collect();
            v.sort();
            v[v.len() / 2].as_secs_f64()
        };
        let rss = row.samples.iter().map(|s| s.max_rss_kib).max().unwrap_or(0);
        println!(
            "| {} | {} | {} MiB | {:.2} s ({:.2}–{:.2}) | {:.0} | {:.1} | {:.2} | {:.2} |",
            row.operation,
            row.tool.name(),
            row.size_mib,
            median / 1e3,
            min / 1e3,
            max / 1e3,
            row.size_mib as f64 / (median / 1e3),
            rss as f64 / 1024.0,
            median_of(|s| s.cpu),
            median_of(|s| s.registry_cpu),
        );
    }
    Ok(())
}
