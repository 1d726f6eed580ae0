//! Extended attributes: which belong to an image's files and which are overlayfs' own, in one
//! place for the layer writer, COPY and the overlay backend.

use std::io;
use std::path::Path;

use rustix::io::Errno;

/// overlayfs' own key of an attribute (`opaque` for `trusted.overlay.opaque`, root's namespace,
/// or `user.overlay.opaque`, a user namespace's); `None` for any other attribute.
pub fn overlay_key(name: &[u8]) -> Option<&[u8]> {
    name.strip_prefix(b"trusted.overlay.")
        .or_else(|| name.strip_prefix(b"user.overlay."))
}

/// Whether an attribute may travel with a file into an image: never overlayfs' own, never the
/// host's SELinux label.
pub fn belongs_to_image(name: &[u8]) -> bool {
    overlay_key(name).is_none() && name != b"security.selinux"
}

/// Whether `dir` (in an overlay upper dir) is marked opaque, in either namespace.
pub fn is_overlay_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| {
            let mut value = [0u8; 8];
            let name = std::ffi::CString::new(*name).expect("no NUL in a constant");
            rustix::fs::lgetxattr(dir, name.as_c_str(), &mut value).is_ok()
        })
}

/// Copies the attributes of `src` that belong to an image (file capabilities, `user.*`, ACLs)
/// to `dst`, without following symlinks. Refusals of the destination file system are skipped.
/// Call after chown, which drops capabilities.
pub fn copy_image_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(src, &mut names) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(()),
        Err(Errno::RANGE) => {
            names = vec![0u8; 65536];
            rustix::fs::llistxattr(src, &mut names)?
        }
        Err(e) => return Err(e.into()),
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !belongs_to_image(name) {
            continue;
        }
        let Ok(cname) = std::ffi::CString::new(name) else {
            continue;
        };
        let mut value = vec![0u8; 65536];
        let len = match rustix::fs::lgetxattr(src, cname.as_c_str(), &mut value) {
            Ok(len) => len,
            Err(_) => continue,
        };
        match rustix::fs::lsetxattr(
            dst,
            cname.as_c_str(),
            &value[..len],
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) | Err(Errno::NOTSUP | Errno::PERM | Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(overlay_key(b"trusted.overlay.opaque"), Some(&b"opaque"[..]));
        assert_eq!(
            overlay_key(b"user.overlay.whiteout"),
            Some(&b"whiteout"[..])
        );
        assert_eq!(overlay_key(b"user.mime_type"), None);
        assert!(belongs_to_image(b"security.capability"));
        assert!(belongs_to_image(b"user.mime_type"));
        assert!(!belongs_to_image(b"security.selinux"));
        assert!(!belongs_to_image(b"trusted.overlay.opaque"));
    }
}
