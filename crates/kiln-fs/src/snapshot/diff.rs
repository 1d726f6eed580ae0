//! The change set between two stat indexes, merged in one pass over both in tree order.

use super::*;

/// What happened to one path between two indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeKind {
    /// New path.
    Added,
    /// Same path and type, some stat field (or the link target) differs.
    Modified,
    /// Same path, another type (a directory replaced by a file or a symlink,
    /// or the reverse). A layer removes the old entry, then adds the new one.
    TypeChanged,
    /// A directory removed and created again (a new inode): in a layer, an
    /// opaque directory, and every entry under it is [`ChangeKind::Added`].
    Recreated,
    /// Removed. For a directory this one change stands for its whole subtree.
    Deleted,
}

/// One changed path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Change {
    /// The path relative to the root.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// The changes between two indexes, in tree order (parents before children,
/// siblings in byte order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    items: Vec<Change>,
}

impl Changes {
    /// Changes from a list, put in tree order. Paths are relative; `.`,
    /// `..` and duplicates are the caller's to avoid.
    pub fn new(mut items: Vec<Change>) -> Changes {
        items
            .sort_by(|a, b| tree_cmp(a.path.as_os_str().as_bytes(), b.path.as_os_str().as_bytes()));
        Changes { items }
    }

    /// Every entry of `index` as added: the change set of a first layer.
    pub fn full(index: &StatIndex) -> Changes {
        Changes {
            items: index
                .iter()
                .map(|e| Change {
                    path: e.path.to_owned(),
                    kind: ChangeKind::Added,
                })
                .collect(),
        }
    }

    /// The changes in tree order.
    pub fn iter(&self) -> std::slice::Iter<'_, Change> {
        self.items.iter()
    }

    /// The changes as a slice.
    pub fn as_slice(&self) -> &[Change] {
        &self.items
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl<'a> IntoIterator for &'a Changes {
    type Item = &'a Change;
    type IntoIter = std::slice::Iter<'a, Change>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

/// The changes that turn the tree `before` recorded into the one `after` did.
///
/// One merge pass over both indexes (they are both in tree order): O(n) with
/// no lookups and no allocation beyond the result.
pub fn diff(before: &StatIndex, after: &StatIndex) -> Changes {
    let (b, a) = (&before.slots, &after.slots);
    let (mut i, mut j) = (0, 0);
    let mut items = Vec::new();
    let push = |items: &mut Vec<Change>, idx: &StatIndex, s: &Slot, kind| {
        items.push(Change {
            path: PathBuf::from(OsStr::from_bytes(idx.path_bytes(s))),
            kind,
        })
    };
    // Index past the entry at `k` and, for a directory, its whole subtree.
    let skip_subtree = |idx: &StatIndex, slots: &[Slot], k: usize| {
        let dir = idx.path_bytes(&slots[k]);
        let mut n = k + 1;
        if slots[k].stat.is_dir() {
            while n < slots.len() && is_under(idx.path_bytes(&slots[n]), dir) {
                n += 1;
            }
        }
        n
    };
    loop {
        let order = match (b.get(i), a.get(j)) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(sb), Some(sa)) => tree_cmp(before.path_bytes(sb), after.path_bytes(sa)),
        };
        match order {
            Ordering::Less => {
                push(&mut items, before, &b[i], ChangeKind::Deleted);
                i = skip_subtree(before, b, i);
            }
            Ordering::Greater => {
                push(&mut items, after, &a[j], ChangeKind::Added);
                j += 1;
            }
            Ordering::Equal => {
                let (sb, sa) = (&b[i], &a[j]);
                if sb.stat.kind() != sa.stat.kind() {
                    push(&mut items, after, sa, ChangeKind::TypeChanged);
                    i = skip_subtree(before, b, i);
                    j += 1;
                } else if sa.stat.is_dir()
                    && (sb.stat.ino, sb.stat.dev) != (sa.stat.ino, sa.stat.dev)
                {
                    push(&mut items, after, sa, ChangeKind::Recreated);
                    i = skip_subtree(before, b, i);
                    let end = skip_subtree(after, a, j);
                    for s in &a[j + 1..end] {
                        push(&mut items, after, s, ChangeKind::Added);
                    }
                    j = end;
                } else {
                    if sb.stat != sa.stat || before.target_bytes(sb) != after.target_bytes(sa) {
                        push(&mut items, after, sa, ChangeKind::Modified);
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
    }
    Changes { items }
}
