//! Paths inside an image, resolved as the kernel would with the image's root as `/`: one
//! algorithm for every place that asks (a tree on disk, a listing of layers), each telling it
//! where the symlinks are.

use std::io;

/// How many symlinks one resolution follows before it gives up (Linux's limit).
pub const MAX_LINKS: usize = 40;

/// The components of `path`, empty ones and `.` left out.
pub fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// Resolves `path` (absolute in the image) to a clean path relative to the root (`a/b`),
/// following the symlinks `read_link` reports: given a relative path, it answers the link's
/// target when a symlink is there. `..` stops at the root; components past what exists are
/// taken as written. With `follow_last` false the last component is not followed.
pub fn resolve(
    path: &str,
    follow_last: bool,
    mut read_link: impl FnMut(&str) -> io::Result<Option<String>>,
) -> io::Result<String> {
    let mut done: Vec<String> = Vec::new();
    let mut todo: Vec<String> = components(path).rev().map(str::to_owned).collect();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        done.push(part);
        let is_last = todo.is_empty();
        if !follow_last && is_last {
            break;
        }
        if let Some(target) = read_link(&done.join("/"))? {
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::other(format!(
                    "too many levels of symbolic links in {path}"
                )));
            }
            done.pop();
            if target.starts_with('/') {
                done.clear();
            }
            todo.extend(components(&target).rev().map(str::to_owned));
        }
    }
    Ok(done.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_followed_in_every_component() {
        let links = |rel: &str| {
            Ok(match rel {
                "var/run" => Some("../run".to_owned()),
                "abs" => Some("/etc".to_owned()),
                "loop" => Some("loop".to_owned()),
                _ => None,
            })
        };
        assert_eq!(resolve("/var/run/app", true, links).unwrap(), "run/app");
        assert_eq!(resolve("/abs/./x/", true, links).unwrap(), "etc/x");
        assert_eq!(resolve("/../../a", true, links).unwrap(), "a");
        assert_eq!(resolve("/var/run", false, links).unwrap(), "var/run");
        assert!(resolve("/loop", true, links)
            .unwrap_err()
            .to_string()
            .contains("too many levels"));
    }
}
