//! The build cache end to end: which steps run again after each kind of change (read from
//! the step lines), a warm kiln dir, a registry cache repository shared by two kiln dirs,
//! TTL expiry, damaged and unreachable caches, and images from cache equal to images built
//! without it. A real registry; skopeo reads the cache repository.

mod common;

use common::{layout_digest, World};
use std::path::Path;

/// The file-changing steps that ran, and those taken from the cache, each named by its
/// first two words (`RUN cat`, `COPY src/`), from the step lines.
fn steps(stderr: &str) -> (Vec<String>, Vec<String>) {
    let mut ran = Vec::new();
    let mut cached = Vec::new();
    for line in stderr.lines() {
        let Some(at) = line.find("] STEP ") else {
            continue;
        };
        let Some((_, text)) = line[at..].split_once(": ") else {
            continue;
        };
        if text.contains("(started)") || text.starts_with("not in the cache") {
            continue;
        }
        let name: Vec<&str> = text.split_whitespace().take(2).collect();
        let name = name.join(" ");
        if !(name.starts_with("RUN") || name.starts_with("COPY") || name.starts_with("WORKDIR")) {
            continue;
        }
        if text.contains("  CACHED (") {
            cached.push(name);
        } else {
            ran.push(name);
        }
    }
    (ran, cached)
}

/// The tags of a repository on the test registry, as skopeo lists them.
fn tags(repo: &str) -> Vec<String> {
    let listed = kiln_test::skopeo_checked([
        "list-tags".to_string(),
        "--tls-verify=false".to_string(),
        format!("docker://{repo}"),
    ])
    .unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    serde_json::from_value(listed["Tags"].clone()).unwrap()
}

/// The store paths of the layer blobs the kiln dir's cache entries name.
fn cached_layer_blobs(kiln_dir: &Path) -> Vec<std::path::PathBuf> {
    let mut blobs = Vec::new();
    for entry in std::fs::read_dir(kiln_dir.join("store/cache/entries")).unwrap() {
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        if let Some(digest) = record["layer"]["descriptor"]["digest"].as_str() {
            let hex = digest.strip_prefix("sha256:").unwrap();
            blobs.push(kiln_dir.join("store/blobs/sha256").join(hex));
        }
    }
    blobs
}

const ALL: [&str; 5] = [
    "RUN echo",
    "COPY deps.txt",
    "RUN cat",
    "COPY src/",
    "RUN ls",
];

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn write(dir: &Path, name: &str, content: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

const APP: &str = r#"ARG BASE
FROM $BASE
ARG FLAVOR=plain
RUN echo base-tools > /tools
COPY deps.txt /app/deps.txt
RUN cat /app/deps.txt > /app/installed && echo "$FLAVOR" >> /app/installed
COPY src/ /app/src/
RUN ls /app/src > /app/listing
"#;

/// The context of [`APP`]: a dependency list, sources, and an ignored file.
fn app_context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "Dockerfile", APP);
    write(dir.path(), ".dockerignore", "notes.md\n");
    write(dir.path(), "deps.txt", "left-pad 1.0\n");
    write(dir.path(), "src/main.sh", "echo main\n");
    write(dir.path(), "notes.md", "not in the image\n");
    dir
}

#[test]
fn each_change_reruns_exactly_the_steps_after_it() {
    let world = World::new();
    let ctx = app_context();
    let dir = ctx.path();
    let build = |extra: &[&str]| {
        let built = world.build_in(dir, extra);
        built.ok();
        let (ran, cached) = steps(&built.stderr());
        (ran, cached, built)
    };
    // First build: everything runs (5 file-changing steps: RUN, COPY, RUN, COPY, RUN).
    let (ran, cached, _) = build(&[]);
    assert_eq!(ran, names(&ALL), "first build runs every step");
    assert!(cached.is_empty());

    // Nothing changed: every step from the kiln dir.
    let (ran, cached, built) = build(&[]);
    assert!(ran.is_empty(), "{}", built.stderr());
    assert_eq!(cached, names(&ALL));
    assert!(
        built.stderr().contains("5 of 5 steps from cache"),
        "{}",
        built.stderr()
    );
    assert!(built.stderr().contains("CACHED (kiln dir)"));
    assert_eq!(built.unpack().read("/app/listing"), "main.sh\n");

    // Touching mtimes, changing an ignored file, an unused build arg: still all cached.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for f in ["deps.txt", "src/main.sh"] {
        std::fs::File::options()
            .write(true)
            .open(dir.join(f))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    write(dir, "notes.md", "edited\n");
    let (ran, _, built) = build(&[
        "--build-arg",
        "UNUSED=1",
        "--build-arg",
        "HTTP_PROXY=http://proxy.invalid:3128",
    ]);
    assert!(
        ran.is_empty(),
        "mtimes, ignored files, unused args and proxy variables change nothing:\n{}",
        built.stderr()
    );

    // A source change: only the steps from its COPY on run again.
    write(dir, "src/main.sh", "echo changed\n");
    let (ran, cached, built) = build(&[]);
    assert_eq!(ran, names(&ALL[3..]), "{}", built.stderr());
    assert_eq!(cached, names(&ALL[..3]));
    assert!(
        built
            .stderr()
            .contains("not in the cache: content changed: src/main.sh"),
        "the miss says why:\n{}",
        built.stderr()
    );

    // A used build arg: from the first step that sees it.
    let (ran, _, built) = build(&["--build-arg", "FLAVOR=spicy"]);
    // Every RUN after the ARG sees it (as in BuildKit): all run again.
    assert_eq!(ran, names(&ALL), "{}", built.stderr());
    assert!(
        built
            .stderr()
            .contains(r#"variable FLAVOR: "plain" → "spicy""#),
        "{}",
        built.stderr()
    );
    assert_eq!(
        built.unpack().read("/app/installed"),
        "left-pad 1.0\nspicy\n"
    );

    // A dependency change: from its COPY on.
    write(dir, "deps.txt", "left-pad 2.0\n");
    let (ran, cached, built) = build(&[]);
    assert_eq!(ran, names(&ALL[1..]), "{}", built.stderr());
    assert_eq!(cached, names(&ALL[..1]));

    // --no-cache runs everything.
    let (ran, _, _) = build(&["--no-cache"]);
    assert_eq!(ran, names(&ALL));
}

#[test]
fn a_new_base_image_invalidates_every_step() {
    let world = World::new();
    let ctx = app_context();
    let built = world.build_in(ctx.path(), &[]);
    built.ok();
    // Another image under the same tag: a different manifest digest.
    let other = kiln_test::BaseImage::build(
        vec![kiln_test::busybox_layer().unwrap()],
        serde_json::json!({"Env": ["PATH=/bin", "NEW=1"]}),
    )
    .unwrap();
    world.push_base(&other, "busybox:latest");
    let built = world.build_in(ctx.path(), &[]);
    built.ok();
    let (ran, cached) = steps(&built.stderr());
    assert_eq!(ran, names(&ALL), "{}", built.stderr());
    assert!(cached.is_empty());
    assert!(
        built
            .stderr()
            .contains("not in the cache: base image changed"),
        "{}",
        built.stderr()
    );
}

#[test]
fn an_image_from_cache_is_the_image_built_without_it() {
    let world = World::new();
    let ctx = app_context();
    let digest = |built: &common::Built| layout_digest(&built.layout);
    let first = world.build_in(ctx.path(), &["--reproducible"]);
    first.ok();
    let cached = world.build_in(ctx.path(), &["--reproducible"]);
    cached.ok();
    assert_eq!(steps(&cached.stderr()).0, Vec::<String>::new());
    let fresh = world.build_in(ctx.path(), &["--reproducible", "--no-cache"]);
    fresh.ok();
    assert_eq!(digest(&first), digest(&cached));
    assert_eq!(digest(&cached), digest(&fresh));
}

#[test]
fn a_cache_entry_without_its_blob_is_a_miss_and_the_build_is_right() {
    let world = World::new();
    let ctx = app_context();
    world.build_in(ctx.path(), &[]).ok();
    // Damage the store: the blob of every cache entry's layer is cut short.
    let mut damaged = 0;
    for path in cached_layer_blobs(world.kiln_dir.path()) {
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, vec![0u8; len as usize / 2]).unwrap();
        damaged += 1;
    }
    assert!(damaged > 0);
    let built = world.build_in(ctx.path(), &[]);
    let (ran, _) = steps(&built.stderr());
    built.ok();
    assert!(!ran.is_empty(), "{}", built.stderr());
    assert_eq!(built.unpack().read("/app/listing"), "main.sh\n");
}

/// `--cache=true` against the test registry: two kiln dirs share the cache repository.
#[test]
fn a_cache_repo_serves_a_second_kiln_dir_without_downloading_layers() {
    let world = World::new();
    let ctx = app_context();
    let repo = format!("{}/app/cache", world.registry.host());
    let cache_flags = [
        "--cache=true",
        "--cache-repo",
        repo.as_str(),
        "--cache-copy-layers",
    ];
    let first = world.build_in(ctx.path(), &cache_flags);
    first.ok();
    assert!(first.stderr().contains("cache entr"), "{}", first.stderr());
    // The entries are images any client reads.
    // One tag per entry (its key), and one per Dockerfile step naming the latest entry there.
    let all = tags(&repo);
    assert_eq!(
        all.iter().filter(|t| !t.starts_with("site-")).count(),
        5,
        "{all:?}"
    );
    assert_eq!(
        all.iter().filter(|t| t.starts_with("site-")).count(),
        5,
        "{all:?}"
    );

    // A fresh kiln dir (another pod): every step from the repository.
    let second_world = World {
        kiln_dir: tempfile::tempdir().unwrap(),
        ..world
    };
    let debug: Vec<&str> = cache_flags
        .iter()
        .copied()
        .chain(["--verbosity", "debug"])
        .collect();
    let second = second_world.build_in(ctx.path(), &debug);
    second.ok();
    // Looked up all at once, before the first step: every entry request comes before it.
    let stderr = second.stderr();
    let first_step = stderr.find("] STEP ").unwrap();
    let lookups: Vec<usize> = stderr
        .match_indices("/v2/app/cache/manifests/")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(lookups.len(), 5, "{stderr}");
    assert!(lookups.iter().all(|&i| i < first_step), "{stderr}");
    let (ran, cached) = steps(&second.stderr());
    assert!(ran.is_empty(), "{}", second.stderr());
    assert_eq!(cached.len(), 5);
    assert!(
        second.stderr().contains("CACHED (cache repo"),
        "{}",
        second.stderr()
    );
    assert!(
        !second.stderr().contains("extracting"),
        "a fully cached build unpacks nothing:\n{}",
        second.stderr()
    );
    let fs = second.unpack();
    assert_eq!(fs.read("/app/listing"), "main.sh\n");
    assert_eq!(fs.read("/tools"), "base-tools\n");

    // Lazy: pushed to the same registry (no local output), a fully cached build downloads no
    // layer: the only blob it fetches is the base image's config; the layers are mounted.
    let lazy_world = World {
        kiln_dir: tempfile::tempdir().unwrap(),
        ..second_world
    };
    let base_arg = format!("BASE={}", lazy_world.base);
    let destination = format!("{}/app:lazy", lazy_world.registry.host());
    let mut args = vec![
        "build",
        "--context",
        ctx.path().to_str().unwrap(),
        "--destination",
        &destination,
        "--build-arg",
        &base_arg,
        "--verbosity",
        "debug",
    ];
    args.extend_from_slice(&cache_flags);
    let out = lazy_world.kiln(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let blob_gets: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("GET ") && l.contains("/blobs/sha256:"))
        .collect();
    assert_eq!(blob_gets.len(), 1, "{blob_gets:#?}");
    assert!(
        blob_gets[0].contains("/v2/busybox/blobs/"),
        "{blob_gets:#?}"
    );
    assert!(stderr.contains("5 of 5 steps from cache"), "{stderr}");
    let second_world = lazy_world;

    // Without --cache-copy-layers, COPY steps run, and the RUN after them is still found.
    let third_world = World {
        kiln_dir: tempfile::tempdir().unwrap(),
        ..second_world
    };
    let third = third_world.build_in(ctx.path(), &["--cache=true", "--cache-repo", &repo]);
    third.ok();
    let (ran, cached) = steps(&third.stderr());
    assert_eq!(
        ran,
        names(&["COPY deps.txt", "COPY src/"]),
        "{}",
        third.stderr()
    );
    assert_eq!(
        cached,
        names(&["RUN echo", "RUN cat", "RUN ls"]),
        "{}",
        third.stderr()
    );
    assert_eq!(
        third.unpack().read("/app/installed"),
        "left-pad 1.0\nplain\n"
    );

    // An expired entry is a miss.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let fourth_world = World {
        kiln_dir: tempfile::tempdir().unwrap(),
        ..third_world
    };
    let fourth = fourth_world.build_in(
        ctx.path(),
        &[
            "--cache=true",
            "--cache-repo",
            &repo,
            "--cache-ttl",
            "1s",
            "--no-push-cache",
        ],
    );
    fourth.ok();
    let (ran, _) = steps(&fourth.stderr());
    assert_eq!(ran.len(), 5, "{}", fourth.stderr());

    // On a fresh kiln dir, a miss is explained from the cache repository's latest entry there.
    write(ctx.path(), "src/main.sh", "echo changed\n");
    let fifth = World {
        kiln_dir: tempfile::tempdir().unwrap(),
        ..fourth_world
    };
    let built = fifth.build_in(ctx.path(), &cache_flags);
    built.ok();
    let (ran, _) = steps(&built.stderr());
    assert_eq!(ran, names(&ALL[3..]), "{}", built.stderr());
    assert!(
        built
            .stderr()
            .contains("not in the cache: content changed: src/main.sh"),
        "{}",
        built.stderr()
    );
}

#[test]
fn an_unreachable_cache_repo_is_one_warning_and_the_build_goes_on() {
    let world = World::new();
    let ctx = app_context();
    let port = kiln_test::free_port().unwrap();
    let repo = format!("127.0.0.1:{port}/nowhere/cache");
    let built = world.build_in(
        ctx.path(),
        &[
            "--cache=true",
            "--cache-repo",
            &repo,
            "--insecure-registry",
            &format!("127.0.0.1:{port}"),
        ],
    );
    built.ok();
    let stderr = built.stderr();
    let lookups = stderr
        .lines()
        .filter(|l| l.contains("building without it"))
        .count();
    assert_eq!(lookups, 1, "one warning for the lookups:\n{stderr}");
    assert_eq!(built.unpack().read("/app/listing"), "main.sh\n");
}

#[test]
fn concurrent_builds_share_one_kiln_dir() {
    let world = World::new();
    let contexts: Vec<tempfile::TempDir> = (0..8)
        .map(|i| {
            let ctx = app_context();
            write(ctx.path(), "src/main.sh", &format!("echo {}\n", i % 2));
            ctx
        })
        .collect();
    let outputs: Vec<common::Built> = std::thread::scope(|scope| {
        let handles: Vec<_> = contexts
            .iter()
            .map(|c| scope.spawn(|| world.build_in(c.path(), &[])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for built in &outputs {
        built.ok();
        let listing = built.unpack().read("/app/listing");
        assert_eq!(listing, "main.sh\n");
    }
    // And a build after them finds every step.
    let after = world.build_in(contexts[0].path(), &[]);
    after.ok();
    assert!(steps(&after.stderr()).0.is_empty(), "{}", after.stderr());
}

/// BuildKit's inline cache: the pushed image records its keys; another kiln dir builds from it.
#[test]
fn cache_from_a_pushed_image_with_inline_keys() {
    let world = World::new();
    let ctx = app_context();
    let image = format!("{}/app:latest", world.registry.host());
    let base_arg = format!("BASE={}", world.base);
    let context = ctx.path().to_str().unwrap();
    let push = |world: &World, extra: &[&str]| {
        let mut args = vec![
            "build",
            "--context",
            context,
            "--destination",
            &image,
            "--build-arg",
            &base_arg,
            "--reproducible",
        ];
        args.extend_from_slice(extra);
        let out = world.kiln(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let inspect = || {
        let raw = kiln_test::skopeo_checked([
            "inspect".to_string(),
            "--raw".to_string(),
            "--tls-verify=false".to_string(),
            format!("docker://{image}"),
        ])
        .unwrap();
        serde_json::from_str::<serde_json::Value>(&raw).unwrap()
    };
    // Without --inline-cache the manifest records nothing, and --cache-from says so.
    push(&world, &[]);
    assert!(inspect()["annotations"]["dev.kiln.cache.v1"].is_null());
    let fresh = World {
        kiln_dir: tempfile::tempdir().unwrap(),
        ..world
    };
    let stderr = push(&fresh, &["--cache-from", &image]);
    assert!(stderr.contains("records no cache keys"), "{stderr}");

    push(&fresh, &["--inline-cache"]);
    let manifest = inspect();
    let keys: Vec<(String, Option<usize>)> = serde_json::from_str(
        manifest["annotations"]["dev.kiln.cache.v1"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(keys.len(), 5, "{manifest}");
    let digest_before = kiln_test::skopeo_checked([
        "inspect".to_string(),
        "--tls-verify=false".to_string(),
        "--format={{.Digest}}".to_string(),
        format!("docker://{image}"),
    ])
    .unwrap();

    // Another kiln dir: every step from the image, nothing unpacked, the same image pushed.
    let other = World {
        kiln_dir: tempfile::tempdir().unwrap(),
        ..fresh
    };
    let stderr = push(&other, &["--inline-cache", "--cache-from", &image]);
    let (ran, cached) = steps(&stderr);
    assert!(ran.is_empty(), "{stderr}");
    assert_eq!(cached.len(), 5);
    assert!(
        stderr.contains(&format!("CACHED (image {image})")),
        "{stderr}"
    );
    assert!(!stderr.contains("extracting"), "{stderr}");
    let digest_after = kiln_test::skopeo_checked([
        "inspect".to_string(),
        "--tls-verify=false".to_string(),
        "--format={{.Digest}}".to_string(),
        format!("docker://{image}"),
    ])
    .unwrap();
    assert_eq!(digest_before, digest_after);

    // --no-cache takes nothing from it.
    let stderr = push(&other, &["--cache-from", &image, "--no-cache"]);
    assert_eq!(steps(&stderr).0.len(), 5, "{stderr}");
}

/// Bytes of the files under the store's blobs and unpacked layers.
fn store_bytes(kiln_dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        let mut n = if m.is_file() { m.blocks() * 512 } else { 0 };
        if m.is_dir() {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                n += walk(&e.path());
            }
        }
        n
    }
    walk(&kiln_dir.join("store/blobs")) + walk(&kiln_dir.join("store/layers"))
}

#[test]
fn prune_and_the_size_cap_free_the_kiln_dir_and_builds_go_on() {
    let world = World::new();
    let ctx = app_context();
    let kiln_dir = world.kiln_dir.path().to_str().unwrap().to_owned();
    world.build_in(ctx.path(), &[]).ok();
    assert!(store_bytes(world.kiln_dir.path()) > 0);
    let prune = |args: &[&str]| {
        let mut all = vec!["prune", "--kiln-dir", kiln_dir.as_str()];
        all.extend_from_slice(args);
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(&all)
            .output()
            .unwrap()
    };
    // Nothing said: nothing removed.
    let out = prune(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--all, --until"));

    // Unused for an hour: nothing yet.
    let out = prune(&["--until", "1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ran, _) = steps(&world.build_in(ctx.path(), &[]).stderr());
    assert!(ran.is_empty(), "a recent cache survives --until 1h");

    // Everything: the next build runs every step, and is right.
    let out = prune(&["--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(store_bytes(world.kiln_dir.path()), 0);
    let built = world.build_in(ctx.path(), &[]);
    built.ok();
    assert_eq!(steps(&built.stderr()).0, names(&ALL));
    assert_eq!(built.unpack().read("/app/listing"), "main.sh\n");

    // A cap of 64 KiB on the build itself: the store ends under it, builds still work.
    let built = world.build_in(ctx.path(), &["--keep-storage", "64KiB", "--no-cache"]);
    built.ok();
    assert!(
        built.stderr().contains("over its size cap"),
        "{}",
        built.stderr()
    );
    assert!(store_bytes(world.kiln_dir.path()) <= 64 * 1024);
    world.build_in(ctx.path(), &[]).ok();

    // While a build runs, prune refuses (it never removes what a build uses).
    write(
        ctx.path(),
        "Dockerfile",
        "ARG BASE\nFROM $BASE\nRUN sleep 4\n",
    );
    let build_dirs = || -> std::collections::BTreeSet<std::ffi::OsString> {
        std::fs::read_dir(world.kiln_dir.path().join("builds"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default()
    };
    let before = build_dirs();
    let base_arg = format!("BASE={}", world.base);
    let mut running = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "build",
            "--context",
            ctx.path().to_str().unwrap(),
            "--no-push",
            "--build-arg",
            &base_arg,
            "--insecure-registry",
            &world.registry.host(),
            "--kiln-dir",
            &kiln_dir,
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the build made its directory (it holds the store from then on).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while build_dirs().is_subset(&before) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let out = prune(&["--all"]);
    let status = running.wait().unwrap();
    assert!(status.success());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a build is using"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// kaniko's warmer: base images in a directory, read by builds with --cache-dir.
#[test]
fn kiln_warm_fills_a_cache_dir_that_builds_read_without_the_registry() {
    let world = World::new();
    let ctx = app_context();
    let warm_dir = tempfile::tempdir().unwrap();
    let dir = warm_dir.path().to_str().unwrap();
    let base_arg = format!("BASE={}", world.base);
    let dockerfile = ctx.path().join("Dockerfile");
    let warm = |extra: &[&str]| {
        let mut args = vec!["warm", "--cache-dir", dir, "--insecure-registry"];
        let host = world.registry.host();
        args.push(&host);
        args.extend_from_slice(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(&args)
            .env("DOCKER_CONFIG", world.docker_config.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = warm(&[
        "--dockerfile",
        dockerfile.to_str().unwrap(),
        "--build-arg",
        &base_arg,
    ]);
    assert!(stderr.contains("1 images warmed"), "{stderr}");
    let stderr = warm(&["--image", &world.base]);
    assert!(stderr.contains("already warm"), "{stderr}");

    // The registry is made unreachable for this build: the base comes from the directory.
    let unreachable = format!(
        "{}=127.0.0.1:{}",
        world.registry.host(),
        kiln_test::free_port().unwrap()
    );
    let built = world.build_in(
        ctx.path(),
        &[
            "--cache-dir",
            dir,
            "--registry-map",
            &unreachable,
            "--skip-default-registry-fallback",
            "--no-cache",
        ],
    );
    built.ok();
    assert!(
        built.stderr().contains("from --cache-dir"),
        "{}",
        built.stderr()
    );
    // Without the directory the same build cannot reach its base.
    let without = world.build_in(
        ctx.path(),
        &[
            "--registry-map",
            &unreachable,
            "--skip-default-registry-fallback",
            "--no-cache",
        ],
    );
    without.failure();
    let fs = built.unpack();
    assert!(fs.exists("/bin/busybox"));
    assert_eq!(fs.read("/app/listing"), "main.sh\n");
}

/// An entry a cache repository holds under a key's tag that is not kiln's (garbage, or another
/// tool's image): a miss, one warning, and a right build.
#[test]
fn a_cache_repo_answering_garbage_is_a_miss_with_one_warning() {
    let world = World::new();
    let ctx = app_context();
    let repo = format!("{}/app/cache", world.registry.host());
    let flags = [
        "--cache=true",
        "--cache-repo",
        repo.as_str(),
        "--cache-copy-layers",
    ];
    world.build_in(ctx.path(), &flags).ok();
    // Every entry's tag now names the busybox image instead.
    for tag in tags(&repo) {
        kiln_test::skopeo_checked([
            "copy".to_string(),
            "--src-tls-verify=false".to_string(),
            "--dest-tls-verify=false".to_string(),
            format!("docker://{}", world.base),
            format!("docker://{repo}:{tag}"),
        ])
        .unwrap();
    }
    let fresh = World {
        kiln_dir: tempfile::tempdir().unwrap(),
        ..world
    };
    let built = fresh.build_in(ctx.path(), &flags);
    built.ok();
    let stderr = built.stderr();
    assert_eq!(steps(&stderr).0, names(&ALL), "{stderr}");
    assert_eq!(
        stderr.matches("is not a kiln cache entry").count(),
        1,
        "one warning:\n{stderr}"
    );
    assert_eq!(built.unpack().read("/app/listing"), "main.sh\n");
}

#[test]
fn the_target_platform_is_part_of_every_key() {
    let world = World::new();
    let ctx = common::context("FROM scratch\nCOPY a.txt /a.txt\n", &[("a.txt", "a\n")]);
    let build = |platform: &str| {
        let built = world.build_in(ctx.path(), &["--custom-platform", platform]);
        built.ok();
        steps(&built.stderr())
    };
    assert_eq!(build("linux/arm64").0, names(&["COPY a.txt"]));
    assert_eq!(build("linux/arm64").1, names(&["COPY a.txt"]));
    assert_eq!(build("linux/amd64").0, names(&["COPY a.txt"]));
}

#[test]
fn a_cache_entry_whose_blob_changed_in_place_is_a_miss_and_the_image_is_right() {
    let world = World::new();
    let ctx = app_context();
    let first = world.build_in(ctx.path(), &["--reproducible"]);
    first.ok();
    // Every cached layer blob gets other bytes of the same size (its name stays).
    let mut changed = 0;
    for path in cached_layer_blobs(world.kiln_dir.path()) {
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        changed += 1;
    }
    assert!(changed > 0);
    let second = world.build_in(ctx.path(), &["--reproducible"]);
    second.ok();
    assert_eq!(
        steps(&second.stderr()).0,
        names(&ALL),
        "{}",
        second.stderr()
    );
    assert_eq!(
        layout_digest(&first.layout),
        layout_digest(&second.layout),
        "the image is the one built before"
    );
    assert_eq!(second.unpack().read("/app/listing"), "main.sh\n");
}

/// Multi-stage: a stage taken whole from the cache repository (never unpacked) is still what a
/// later stage copies from and builds on, in a fresh kiln dir, under both backends.
#[test]
fn stages_from_the_cache_feed_copy_from_and_from_stage() {
    let world = World::new();
    let dockerfile = r#"ARG BASE
FROM $BASE AS deps
RUN mkdir /out && echo built > /out/dep.txt
FROM deps AS tools
RUN echo tool > /out/tool.txt
FROM $BASE
COPY --from=tools /out/ /app/
RUN cat /app/dep.txt /app/tool.txt > /app/all.txt
COPY app.txt /app/app.txt
"#;
    let ctx = common::context(dockerfile, &[("app.txt", "v1\n")]);
    let repo = format!("{}/multi/cache", world.registry.host());
    let mut world = world;
    for backend in common::BACKENDS {
        *world.isolation.lock().unwrap() = backend.into();
        let flags = ["--cache=true", "--cache-repo", repo.as_str()];
        world.build_in(ctx.path(), &flags).ok();
        // A fresh kiln dir, the last COPY's source changed: every RUN from the repository.
        std::fs::write(ctx.path().join("app.txt"), format!("{backend}\n")).unwrap();
        world = World {
            kiln_dir: tempfile::tempdir().unwrap(),
            ..world
        };
        let built = world.build_in(ctx.path(), &flags);
        built.ok();
        let stderr = built.stderr();
        let (_, cached) = steps(&stderr);
        assert_eq!(
            cached,
            names(&["RUN mkdir", "RUN echo", "RUN cat"]),
            "{backend}: {stderr}"
        );
        let fs = built.unpack();
        assert_eq!(fs.read("/app/all.txt"), "built\ntool\n", "{backend}");
        assert_eq!(fs.read("/app/tool.txt"), "tool\n");
        assert_eq!(fs.read("/app/app.txt"), format!("{backend}\n"));
        world = World {
            kiln_dir: tempfile::tempdir().unwrap(),
            ..world
        };
    }
}

/// Files under `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap().flatten() {
                stack.push(entry.path());
            }
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(path);
            }
        }
    }
    found
}

/// Build args that carry credentials (by name or in a URL) reach RUN but no cache entry (the
/// kiln dir's, the cache repository's), no log line and not the image's history.
#[test]
fn credentials_in_build_args_stay_out_of_entries_and_reasons() {
    let world = World::new();
    let dockerfile = "ARG BASE\nFROM $BASE\nARG NPM_TOKEN\nARG INDEX_URL\nRUN test -n \"$NPM_TOKEN$INDEX_URL\" && echo ok > /ok\n";
    let ctx = common::context(dockerfile, &[]);
    let repo = format!("{}/creds/cache", world.registry.host());
    let build = |token: &str, password: &str| {
        let url = format!("INDEX_URL=https://ci:{password}@pypi.example.com/simple");
        let token = format!("NPM_TOKEN={token}");
        let built = world.build_in(
            ctx.path(),
            &[
                "--cache=true",
                "--cache-repo",
                &repo,
                "--build-arg",
                &token,
                "--build-arg",
                &url,
            ],
        );
        built.ok();
        // Nor the image: its history shows `ARG NPM_TOKEN`, not the value (as BuildKit).
        for secret in [token.as_str(), url.as_str()] {
            let value = secret.split_once('=').unwrap().1;
            let in_image = files_holding(&built.layout, value);
            assert!(in_image.is_empty(), "{value} in {in_image:?}");
        }
        built.stderr()
    };
    build("tok-first-9c1", "pw-first-77a");
    let stderr = build("tok-second-4e2", "pw-second-13b");
    assert!(stderr.contains("not in the cache: variable"), "{stderr}");
    for secret in [
        "tok-first-9c1",
        "pw-first-77a",
        "tok-second-4e2",
        "pw-second-13b",
    ] {
        assert!(!stderr.contains(secret), "{secret} in the log:\n{stderr}");
        let in_kiln_dir = files_holding(&world.kiln_dir.path().join("store/cache"), secret);
        assert!(in_kiln_dir.is_empty(), "{secret} in {in_kiln_dir:?}");
        let in_registry = files_holding(world.registry.storage_dir(), secret);
        assert!(in_registry.is_empty(), "{secret} in {in_registry:?}");
    }
}
