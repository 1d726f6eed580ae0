//! Paths inside a rootfs: cleaning (Go's `path.Clean`, what docker applies to Dockerfile
//! paths) and resolution *inside* the root, so a symlink in an image (`/app -> /etc`, or
//! `../../..`) can never lead a COPY or WORKDIR outside the directory kiln builds in.

use std::io;
use std::os::unix::fs::{chown, DirBuilderExt};
use std::path::{Path, PathBuf};

/// `path.Clean` of `path` taken as absolute: `/a/./b/../c/` → `/a/c`, `a/..` → `/`.
pub fn clean_abs(path: &str) -> String {
    kiln_oci::path::clean(&format!("/{path}"))
}

/// `path` made absolute against `cwd` and cleaned (`WORKDIR`, COPY destinations).
pub fn absolute(cwd: &str, path: &str) -> String {
    if path.starts_with('/') {
        clean_abs(path)
    } else {
        clean_abs(&format!("{cwd}/{path}"))
    }
}

/// Resolves `path` (absolute, in the image) to a relative path under `root`, following
/// symlinks as the kernel would with `root` as `/`. With `follow_last` false the last
/// component is not followed (it may itself be a symlink). Missing components are fine:
/// the rest of the path is taken as written.
pub fn resolve_in_root(root: &Path, path: &str, follow_last: bool) -> io::Result<String> {
    kiln_fs::image_path::resolve(path, follow_last, |rel| {
        let candidate = root.join(rel);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => Ok(Some(
                std::fs::read_link(&candidate)?
                    .to_string_lossy()
                    .into_owned(),
            )),
            _ => Ok(None),
        }
    })
}

/// Creates `rel` (resolved, relative to `root`) and its missing parents as directories with
/// `mode` and owner `uid:gid`; pushes each created relative path to `created`. An existing
/// non-directory on the way is an error.
pub fn mkdir_all(
    root: &Path,
    rel: &str,
    mode: u32,
    owner: (u32, u32),
    created: &mut Vec<String>,
) -> io::Result<()> {
    let mut current = String::new();
    for part in kiln_fs::image_path::components(rel) {
        if !current.is_empty() {
            current.push('/');
        }
        current.push_str(part);
        let full = root.join(&current);
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("/{current} exists and is not a directory"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new().mode(mode).create(&full)?;
                // The umask may have cleared bits.
                std::fs::set_permissions(
                    &full,
                    std::os::unix::fs::PermissionsExt::from_mode(mode),
                )?;
                chown(&full, Some(owner.0), Some(owner.1))?;
                created.push(current.clone());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The host path of a resolved relative path.
pub fn host(root: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        root.to_owned()
    } else {
        root.join(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go() {
        assert_eq!(clean_abs("/a/./b/../c/"), "/a/c");
        assert_eq!(clean_abs("/../.."), "/");
        assert_eq!(absolute("/app", "sub/../x"), "/app/x");
        assert_eq!(absolute("/app", "/abs"), "/abs");
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/etc")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("real/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            resolve_in_root(root, "/abs/etc/x", true).unwrap(),
            "real/etc/x"
        );
        assert_eq!(resolve_in_root(root, "/real/up/etc", true).unwrap(), "etc");
        assert_eq!(resolve_in_root(root, "/abs", false).unwrap(), "abs");
        assert!(resolve_in_root(root, "/loop/x", true).is_err());
    }
}
