//! kiln-build on its own, without the binary or a registry: where the Dockerfile is found, how
//! a context tarball is prepared, and COPY's semantics on a temp root.

use kiln_build::context::{prepare, read_dockerfile, ContextView, GitOptions};
use kiln_build::copy::{copy, CopySpec, Source};
use kiln_build::BuildError;
use kiln_registry::RegistryOptions;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn spec<'a>(sources: &[&str], dest: &str) -> CopySpec<'a> {
    CopySpec {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        inline: Vec::new(),
        downloads: Vec::new(),
        dest: dest.into(),
        owner: None,
        chmod: None,
        parents: false,
        exclude: None,
        unpack_archives: false,
        record_parents: true,
    }
}

#[test]
fn a_dockerfile_in_the_context_is_named_relative_to_it() {
    let context = tempfile::tempdir().unwrap();
    write(context.path(), "docker/app.Dockerfile", "FROM scratch\n");
    let scratch = tempfile::tempdir().unwrap();
    // Not in the working directory (the crate's), so looked up in the context.
    let found = read_dockerfile(
        "docker/app.Dockerfile",
        context.path(),
        &RegistryOptions::default(),
        scratch.path(),
    )
    .unwrap();
    assert_eq!(found.text, "FROM scratch\n");
    assert_eq!(found.name, "docker/app.Dockerfile");
    assert_eq!(found.in_context.as_deref(), Some("docker/app.Dockerfile"));
    assert_eq!(found.outside_ignore_file, None);
}

#[test]
fn a_dockerfile_outside_the_context_brings_its_own_ignore_file() {
    let context = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    write(elsewhere.path(), "build.Dockerfile", "FROM scratch\n");
    write(
        elsewhere.path(),
        "build.Dockerfile.dockerignore",
        "secret\n",
    );
    let path = elsewhere.path().join("build.Dockerfile");
    let found = read_dockerfile(
        path.to_str().unwrap(),
        context.path(),
        &RegistryOptions::default(),
        context.path(),
    )
    .unwrap();
    assert_eq!(found.in_context, None);
    let (ignore_path, text) = found.outside_ignore_file.unwrap();
    assert!(ignore_path.ends_with("build.Dockerfile.dockerignore"));
    assert_eq!(text, "secret\n");
}

#[test]
fn a_missing_dockerfile_is_named_with_where_it_was_looked_for() {
    let context = tempfile::tempdir().unwrap();
    let err = read_dockerfile(
        "nope.Dockerfile",
        context.path(),
        &RegistryOptions::default(),
        context.path(),
    )
    .unwrap_err();
    assert!(matches!(err, BuildError::DockerfileSource { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("nope.Dockerfile") && text.contains(&context.path().display().to_string()),
        "{text}"
    );
}

#[test]
fn a_context_tarball_is_unpacked_path_safely_and_removed_with_the_context() {
    let work = tempfile::tempdir().unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(3);
    tar.append_data(&mut header, "app/main.txt", &b"hi\n"[..])
        .unwrap();
    let archive = work.path().join("context.tar");
    std::fs::write(&archive, tar.into_inner().unwrap()).unwrap();
    let scratch = work.path().join("scratch");
    let prepared = prepare(
        &format!("tar://{}", archive.display()),
        Some("app"),
        &scratch,
        &GitOptions::default(),
        &RegistryOptions::default(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(prepared.dir.join("main.txt")).unwrap(),
        "hi\n"
    );
    assert!(prepared.dir.starts_with(&scratch));
    drop(prepared);
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);

    // An entry that climbs out of the directory is refused; nothing lands beside it.
    let mut bad = Vec::new();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(1);
    header.as_gnu_mut().unwrap().name[..12].copy_from_slice(b"../escaped\0\0");
    header.set_cksum();
    bad.extend_from_slice(header.as_bytes());
    bad.extend_from_slice(&[b'x'; 512]);
    bad.extend_from_slice(&[0; 1024]);
    std::fs::write(&archive, bad).unwrap();
    let err = prepare(
        &format!("tar://{}", archive.display()),
        None,
        &scratch,
        &GitOptions::default(),
        &RegistryOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, BuildError::Context { .. }), "{err}");
    assert!(!scratch.join("escaped").exists() && !work.path().join("escaped").exists());
}

#[test]
fn object_store_contexts_are_refused_naming_the_scheme() {
    let scratch = tempfile::tempdir().unwrap();
    let err = prepare(
        "s3://bucket/context.tar.gz",
        None,
        scratch.path(),
        &GitOptions::default(),
        &RegistryOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("s3://"), "{err}");
}

#[test]
fn copy_follows_dockerignore_wildcards_and_directory_contents_rules() {
    let context = tempfile::tempdir().unwrap();
    write(context.path(), ".dockerignore", "*.log\n");
    write(context.path(), "a.txt", "a\n");
    write(context.path(), "b.txt", "b\n");
    write(context.path(), "debug.log", "no\n");
    write(context.path(), "dir/inner/c.txt", "c\n");
    let view = ContextView::scan(context.path(), None, None).unwrap();
    let root = tempfile::tempdir().unwrap();

    // One wildcard matching two files into a non-directory: the last match wins (BuildKit).
    copy(
        &Source::Context(&view),
        &spec(&["*.txt"], "/out"),
        root.path(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(root.path().join("out")).unwrap(),
        "b\n"
    );
    let changes = copy(
        &Source::Context(&view),
        &spec(&["*.txt", "*.log", "dir"], "/app/"),
        root.path(),
    )
    .unwrap();
    let app = root.path().join("app");
    assert_eq!(std::fs::read_to_string(app.join("a.txt")).unwrap(), "a\n");
    assert_eq!(std::fs::read_to_string(app.join("b.txt")).unwrap(), "b\n");
    assert!(!app.join("debug.log").exists(), ".dockerignore applies");
    // A directory source copies its contents, not itself.
    assert_eq!(
        std::fs::read_to_string(app.join("inner/c.txt")).unwrap(),
        "c\n"
    );
    assert!(!app.join("dir").exists());
    // Context files belong to root, whoever owns them on disk.
    let meta = std::fs::metadata(app.join("a.txt")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let paths: Vec<String> = changes
        .iter()
        .map(|c| c.path.display().to_string())
        .collect();
    for expected in ["app", "app/a.txt", "app/inner/c.txt"] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} in {paths:?}"
        );
    }
}

#[test]
fn copy_with_chown_owns_the_files_and_the_directories_it_makes() {
    let context = tempfile::tempdir().unwrap();
    write(context.path(), "f", "f\n");
    let view = ContextView::scan(context.path(), None, None).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut owned = spec(&["f"], "/srv/data/");
    owned.owner = Some((1000, 1001));
    copy(&Source::Context(&view), &owned, root.path()).unwrap();
    for rel in ["srv/data", "srv/data/f"] {
        let meta = std::fs::symlink_metadata(root.path().join(rel)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1001), "{rel}");
    }
}
