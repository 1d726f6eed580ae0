//! User and group names looked up in the image's own `/etc/passwd` and `/etc/group` (never the
//! host's), for `USER`, `COPY --chown` and `WORKDIR` ownership.

use crate::paths::{host, resolve_in_root};
use std::path::Path;

/// A resolved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups: the primary group, then the `/etc/group` memberships (what
    /// runc gives a container process).
    pub groups: Vec<u32>,
    /// The home directory from `/etc/passwd` (`/` when the user has no entry).
    pub home: String,
}

struct Entry {
    name: String,
    id: u32,
    /// passwd: the home directory.
    home: String,
    /// passwd: the primary gid; group: unused.
    gid: u32,
    /// group: the members.
    members: Vec<String>,
}

fn read_db(root: &Path, file: &str, group: bool) -> Vec<Entry> {
    let Ok(rel) = resolve_in_root(root, file, true) else {
        return Vec::new();
    };
    let Ok(text) = std::fs::read_to_string(host(root, &rel)) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let id = f.get(2)?.parse().ok()?;
            Some(Entry {
                name: f[0].to_owned(),
                id,
                home: if group {
                    String::new()
                } else {
                    f.get(5).map_or(String::new(), |h| (*h).to_owned())
                },
                gid: if group { 0 } else { f.get(3)?.parse().ok()? },
                members: if group {
                    f.get(3)
                        .map(|m| {
                            m.split(',')
                                .filter(|s| !s.is_empty())
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default()
                } else {
                    Vec::new()
                },
            })
        })
        .collect()
}

fn lookup_group(root: &Path, spec: &str) -> Result<u32, String> {
    if let Ok(id) = spec.parse::<u32>() {
        return Ok(id);
    }
    read_db(root, "/etc/group", true)
        .into_iter()
        .find(|g| g.name == spec)
        .map(|g| g.id)
        .ok_or_else(|| format!("unable to find group {spec:?} in the image's /etc/group"))
}

/// `USER` as a RUN step uses it: `name`, `uid`, `name:group`, `uid:gid`. A numeric user with
/// no passwd entry gets gid 0, as docker does; a named one must exist.
pub fn resolve_user(root: &Path, spec: &str) -> Result<Identity, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_db(root, "/etc/passwd", false);
    let entry =
        match user.parse::<u32>() {
            Ok(uid) => passwd.iter().find(|e| e.id == uid),
            Err(_) => Some(passwd.iter().find(|e| e.name == user).ok_or_else(|| {
                format!("unable to find user {user:?} in the image's /etc/passwd")
            })?),
        };
    let uid = match entry {
        Some(e) => e.id,
        None => user.parse().map_err(|_| format!("invalid user {user:?}"))?,
    };
    let gid = match group {
        Some(g) => lookup_group(root, g)?,
        None => entry.map_or(0, |e| e.gid),
    };
    let mut groups = vec![gid];
    if let (Some(e), None) = (entry, group) {
        for g in read_db(root, "/etc/group", true) {
            if g.members.contains(&e.name) && !groups.contains(&g.id) {
                groups.push(g.id);
            }
        }
    }
    let home = entry
        .map(|e| e.home.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    Ok(Identity {
        uid,
        gid,
        groups,
        home,
    })
}

/// The owner a file operation gets (`COPY --chown=user[:group]`, and a `WORKDIR` made under
/// `USER`), by BuildKit's rules for its file operations: a numeric user alone gives
/// `uid:uid`, a name its passwd entry's uid and primary group; a name the image does not have
/// (or an image without `/etc/passwd`) is root, and a group name it lacks keeps the user's
/// group.
pub fn resolve_chown(root: &Path, spec: &str) -> (u32, u32) {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => read_db(root, "/etc/passwd", false)
            .iter()
            .find(|e| e.name == user)
            .map_or((0, 0), |e| (e.id, e.gid)),
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(id) => id,
            Err(_) => read_db(root, "/etc/group", true)
                .iter()
                .find(|e| e.name == g)
                .map_or(primary, |e| e.id),
        },
        None => primary,
    };
    (uid, gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nappgrp:x:1001:\nwheel:x:10:app,other\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn users_by_name_and_number() {
        let dir = root();
        let app = resolve_user(dir.path(), "app").unwrap();
        assert_eq!((app.uid, app.gid, app.groups), (1000, 1001, vec![1001, 10]));
        assert_eq!(app.home, "/home/app");
        assert_eq!(resolve_user(dir.path(), "4242").unwrap().home, "/");
        assert_eq!(resolve_user(dir.path(), "4242").unwrap().gid, 0);
        assert_eq!(resolve_user(dir.path(), "app:wheel").unwrap().gid, 10);
        assert!(resolve_user(dir.path(), "nobody")
            .unwrap_err()
            .contains("unable to find user"));
        assert_eq!(resolve_chown(dir.path(), "app"), (1000, 1001));
        assert_eq!(resolve_chown(dir.path(), "12"), (12, 12));
        assert_eq!(resolve_chown(dir.path(), "12:wheel"), (12, 10));
        // BuildKit's file operations: unknown names are root, an unknown group keeps the
        // user's; an image without /etc/passwd resolves `root` (and any name) to 0.
        assert_eq!(resolve_chown(dir.path(), "nobody"), (0, 0));
        assert_eq!(resolve_chown(dir.path(), "app:nogroup"), (1000, 1001));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(resolve_chown(empty.path(), "root"), (0, 0));
        assert_eq!(resolve_chown(empty.path(), "7:root"), (7, 7));
    }
}
