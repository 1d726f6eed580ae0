//! `RUN --mount`: each mount's source made ready before the step (a cache directory held, a
//! secret read for the sandbox to write on the step's own tmpfs, an agent socket served, a view
//! of the context or a stage),
//! handed to kiln-sandbox as [`StepMount`]s, and everything undone when the step ends.
//!
//! The sandbox mounts the sources (overlay and chroot with namespaces) or, without namespaces,
//! moves them into the tree for the step's duration: every source handed to it then is kiln's
//! own (a copy where the step must not change the original) and lives in the kiln dir, on the
//! tree's file system. Nothing of a mount reaches the layer: the sandbox reports the mount
//! points it made, and the step removes them before the snapshot.

use super::copy_add::SourceView;
use super::StageRun;
use crate::copy::{self, CopySpec, Source};
use crate::error::BuildError;
use crate::ssh_agent::AgentSocket;
use kiln_dockerfile::instructions::Instruction;
use kiln_dockerfile::mount::{Mount, MountType};
use kiln_fs::cache_mounts::{CacheMounts, HeldCache, Sharing};
use kiln_sandbox::backend::Backend;
use kiln_sandbox::{FileContent, StepMount, StepMountKind};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What keeps a mount's source alive for the step; dropped after it.
#[allow(dead_code)] // each is held only for what its Drop does
enum Held {
    Cache(HeldCache),
    View(SourceView),
    Agent(AgentSocket),
}

/// A RUN step's mounts, ready: targets (absolute in the image, not yet resolved in the tree)
/// with their sources, the variables the step gets, and what holds the sources.
pub(super) struct PreparedMounts {
    mounts: Vec<(String, StepMountKind)>,
    /// Variables for the step only (`env=` secrets, `SSH_AUTH_SOCK`): never in the image, the
    /// history, a key or a log.
    pub(super) env: Vec<(String, String)>,
    held: Vec<Held>,
    /// Private files of the step (secrets, copies): removed with it.
    _scratch: Option<tempfile::TempDir>,
}

impl PreparedMounts {
    /// The mounts for the sandbox, their targets resolved inside `root` (symlinks followed
    /// there, never out of it), outer targets before the ones inside them.
    pub(super) fn step_mounts(&self, root: &Path) -> std::io::Result<Vec<StepMount>> {
        let mut mounts = Vec::new();
        for (target, kind) in &self.mounts {
            let rel = crate::paths::resolve_in_root(root, target, true)?;
            mounts.push(StepMount {
                target: format!("/{}", rel.trim_start_matches('/')),
                kind: kind.clone(),
            });
        }
        mounts.sort_by_key(|m| m.target.split('/').filter(|p| !p.is_empty()).count());
        Ok(mounts)
    }

    /// Whether the step has no mounts at all.
    pub(super) fn is_empty(&self) -> bool {
        self.mounts.is_empty() && self.env.is_empty()
    }
}

impl Drop for PreparedMounts {
    fn drop(&mut self) {
        // Agents stop and caches are released before the private files go.
        self.held.clear();
    }
}

/// The cache id BuildKit gives a cache mount without one: its target as written, cleaned.
fn default_cache_id(target: &str) -> String {
    kiln_oci::path::clean(target)
}

impl StageRun<'_> {
    /// Makes the sources of `mounts` ready for the step at `instruction`.
    pub(super) fn prepare_mounts(
        &self,
        instruction: &Instruction,
        mounts: &[Mount],
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<PreparedMounts, BuildError> {
        let at = self.at(instruction);
        let bad = |message: String| BuildError::Instruction {
            at: at.clone(),
            keyword: "RUN",
            message,
        };
        let mut prepared = PreparedMounts {
            mounts: Vec::new(),
            env: Vec::new(),
            held: Vec::new(),
            _scratch: None,
        };
        if mounts.is_empty() {
            return Ok(prepared);
        }
        std::fs::create_dir_all(&self.stage_dir)
            .map_err(BuildError::io("creating", &self.stage_dir))?;
        let scratch = tempfile::Builder::new()
            .prefix("mounts-")
            .tempdir_in(&self.stage_dir)
            .map_err(BuildError::io("creating", &self.stage_dir))?;
        let dir = scratch.path().to_owned();
        prepared._scratch = Some(scratch);
        let moved = self.services.backend == (Backend::Chroot { namespaces: false });
        let workdir = self.workdir_or_root();
        // Caches first, each once per step (its mounts share one directory, as BuildKit), in
        // the order of their identities: two steps that take the same locked caches never wait
        // on each other crosswise.
        let cache_id = |mount: &Mount| {
            mount
                .id
                .clone()
                .unwrap_or_else(|| default_cache_id(mount.target.as_deref().unwrap_or(&workdir)))
        };
        let mut first_use: BTreeMap<String, (String, &Mount)> = BTreeMap::new();
        // Each cache mount's identity, by its index among `mounts`.
        let mut identities = BTreeMap::new();
        for (n, mount) in mounts.iter().enumerate() {
            if mount.kind != MountType::Cache {
                continue;
            }
            let id = cache_id(mount);
            let identity = self.cache_identity(&id, mount);
            identities.insert(n, identity.clone());
            if moved && first_use.contains_key(&identity) {
                return Err(bad(format!(
                    "cache {id:?} is mounted twice: without namespaces a cache is moved to its \
                     target, and one directory cannot be at two targets"
                )));
            }
            first_use.entry(identity).or_insert((id, mount));
        }
        let mut caches: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (identity, (id, mount)) in first_use {
            let held = self.hold_cache(&id, &identity, mount, moved, &at, &mut prepared)?;
            caches.insert(identity, held);
        }
        let mut ssh_targets = Vec::new();
        for (n, mount) in mounts.iter().enumerate() {
            let target = |default: &str| {
                let written = mount.target.as_deref().unwrap_or(default);
                crate::paths::absolute(&workdir, written)
            };
            let owner = (mount.uid.unwrap_or(0), mount.gid.unwrap_or(0));
            match mount.kind {
                MountType::Cache => {
                    let mut source = caches[&identities[&n]].clone();
                    if moved && mount.readonly {
                        // Without namespaces nothing is read-only: a copy keeps the step's
                        // writes out of the cache, as a read-only mount would.
                        let copy_dir = dir.join(format!("cache-{n}"));
                        std::fs::create_dir(&copy_dir)
                            .map_err(BuildError::io("creating", &copy_dir))?;
                        source =
                            copy_tree(&Source::Rootfs(&source), "/", &copy_dir).map_err(|m| {
                                bad(format!("copying cache {:?}: {m}", cache_id(mount)))
                            })?;
                    }
                    prepared.mounts.push((
                        target(&workdir),
                        StepMountKind::Bind {
                            source,
                            readonly: mount.readonly,
                        },
                    ));
                }
                MountType::Tmpfs => prepared
                    .mounts
                    .push((target(&workdir), StepMountKind::Tmpfs { size: mount.size })),
                MountType::Secret => {
                    let id = mount.id.clone().unwrap_or_default();
                    let value = match self.services.opts.secrets.get(&id) {
                        Some(source) => source.read(&id).map_err(bad)?,
                        None => None,
                    };
                    let Some(value) = value else {
                        // Checked before the build: only a secret that is not required is
                        // missing here. Its file is absent, its variable empty (BuildKit).
                        if let Some(name) = &mount.env {
                            prepared.env.push((name.clone(), String::new()));
                        }
                        continue;
                    };
                    if let Some(name) = &mount.env {
                        let text = String::from_utf8(value.clone())
                            .ok()
                            .filter(|t| !t.contains('\0'))
                            .ok_or_else(|| {
                                bad(format!(
                                    "secret {id}: env={name} needs a UTF-8 value without NUL \
                                     bytes, and this one is not"
                                ))
                            })?;
                        prepared.env.push((name.clone(), text));
                    }
                    if let Some(target) = &mount.target {
                        // Made by the sandbox on the step's own tmpfs (on disk only for the
                        // step's duration where there are no namespaces).
                        prepared.mounts.push((
                            crate::paths::absolute(&workdir, target),
                            StepMountKind::File {
                                content: FileContent(value),
                                mode: mount.mode.unwrap_or(0o400),
                                uid: owner.0,
                                gid: owner.1,
                            },
                        ));
                    }
                }
                MountType::Ssh => {
                    let id = mount.id.clone().unwrap_or_else(|| "default".into());
                    let target = target(&format!("/run/buildkit/ssh_agent.{}", ssh_targets.len()));
                    ssh_targets.push(target.clone());
                    let Some(source) = self.services.opts.ssh.get(&id) else {
                        continue;
                    };
                    let socket = AgentSocket::serve(
                        &dir,
                        &format!("ssh-{n}.sock"),
                        source,
                        mount.mode.unwrap_or(0o600),
                        owner,
                    )
                    .map_err(|e| bad(format!("ssh {id}: serving the agent: {e}")))?;
                    prepared.mounts.push((
                        target,
                        StepMountKind::Bind {
                            source: socket.path().to_owned(),
                            readonly: false,
                        },
                    ));
                    prepared.held.push(Held::Agent(socket));
                }
                MountType::Bind => {
                    let target = target(&workdir);
                    let source = mount.source.as_deref().unwrap_or("/");
                    let view = match &mount.from {
                        Some(from) => Some(self.mount_view(from, &at)?),
                        None => None,
                    };
                    // A read-only view is bound as it is where the sandbox mounts it and
                    // nothing is hidden from it; otherwise the step gets a copy.
                    let direct = !moved
                        && mount.readonly
                        && (view.is_some() || self.context.ignore_file.is_none());
                    let source_path = if direct {
                        let root = view
                            .as_ref()
                            .map_or(self.context.root.as_path(), |v| v.path());
                        let rel = crate::paths::resolve_in_root(root, source, true)
                            .map_err(|e| bad(format!("mount source {source}: {e}")))?;
                        let path = root.join(&rel);
                        if std::fs::symlink_metadata(&path).is_err() {
                            return Err(bad(format!(
                                "mount source {source}: not found in {}",
                                mount.from.as_deref().unwrap_or("the build context")
                            )));
                        }
                        path
                    } else {
                        let copy_dir = dir.join(format!("bind-{n}"));
                        std::fs::create_dir(&copy_dir)
                            .map_err(BuildError::io("creating", &copy_dir))?;
                        let from = match &view {
                            Some(v) => Source::Rootfs(v.path()),
                            None => Source::Context(self.context),
                        };
                        copy_tree(&from, source, &copy_dir)
                            .map_err(|m| bad(format!("mount source {source}: {m}")))?
                    };
                    if let Some(view) = view {
                        prepared.held.push(Held::View(view));
                    }
                    prepared.mounts.push((
                        target,
                        StepMountKind::Bind {
                            source: source_path,
                            readonly: mount.readonly,
                        },
                    ));
                }
            }
        }
        if let Some(first) = ssh_targets.first() {
            if !env.contains_key("SSH_AUTH_SOCK") {
                prepared
                    .env
                    .push(("SSH_AUTH_SOCK".to_owned(), first.clone()));
            }
        }
        Ok(prepared)
    }

    /// What tells caches apart: the id, and, as BuildKit has it, what a new one starts from
    /// (the directory made for `uid`/`gid`/`mode`, or the `from` content).
    fn cache_identity(&self, id: &str, mount: &Mount) -> String {
        let mut identity = id.to_owned();
        if let Some(from) = &mount.from {
            identity.push_str(&format!(
                "\nfrom {} {}",
                self.source_identity(from, false),
                mount.source.as_deref().unwrap_or("/")
            ));
        } else if mount.uid.is_some() || mount.gid.is_some() || mount.mode.is_some() {
            identity.push_str(&format!(
                "\nowner {}:{} mode {:o}",
                mount.uid.unwrap_or(0),
                mount.gid.unwrap_or(0),
                mount.mode.unwrap_or(0o755)
            ));
        }
        identity
    }

    /// Takes cache `id` for the step (a new one filled from `from`/`source`, or given
    /// `mode`/`uid`/`gid`); returns its directory. The hold is released with `prepared`.
    fn hold_cache(
        &self,
        id: &str,
        identity: &str,
        mount: &Mount,
        moved: bool,
        at: &str,
        prepared: &mut PreparedMounts,
    ) -> Result<PathBuf, BuildError> {
        let sharing = match mount.sharing.as_deref() {
            Some("private") => Sharing::Private,
            Some("locked") => Sharing::Locked,
            _ => Sharing::Shared,
        };
        let seed = match &mount.from {
            Some(from) => Some(self.mount_view(from, at)?),
            None => None,
        };
        let seed_path = seed.as_ref().map(|v| v.path().to_owned());
        let source = mount.source.clone();
        let mode = mount.mode.unwrap_or(0o755);
        let owner = (mount.uid.unwrap_or(0), mount.gid.unwrap_or(0));
        let init = move |new: &Path| -> std::io::Result<()> {
            if let Some(view) = &seed_path {
                copy_tree(&Source::Rootfs(view), source.as_deref().unwrap_or("/"), new)
                    .map_err(std::io::Error::other)?;
                return Ok(());
            }
            std::fs::set_permissions(new, std::fs::Permissions::from_mode(mode))?;
            std::os::unix::fs::lchown(new, Some(owner.0), Some(owner.1))
        };
        let held = CacheMounts::new(self.services.layers.store().root())
            .acquire(identity, sharing, moved, &init)
            .map_err(|e| BuildError::Instruction {
                at: at.to_owned(),
                keyword: "RUN",
                message: format!("cache mount {id:?}: {e}"),
            })?;
        tracing::debug!(
            "{at}: cache mount {id:?}: {}{}",
            held.dir.display(),
            if held.created { " (new)" } else { "" }
        );
        if let Some(view) = seed {
            prepared.held.push(Held::View(view));
        }
        let dir = held.dir.clone();
        prepared.held.push(Held::Cache(held));
        Ok(dir)
    }

    /// What `RUN --mount=from=X` reads: a stage (by name only: a number names an image, as in
    /// BuildKit) or an image.
    fn mount_view(&self, from: &str, at: &str) -> Result<SourceView, BuildError> {
        self.source_view(from, at, false, "RUN")
    }
}

/// Copies `source` (a path in `from`) into `into`: a directory's contents into it, anything
/// else as `into/<name>`. Returns the path to bind.
fn copy_tree(from: &Source<'_>, source: &str, into: &Path) -> Result<PathBuf, String> {
    let cleaned = crate::paths::clean_abs(source);
    let rel = cleaned.trim_start_matches('/');
    let is_dir = std::fs::metadata(
        crate::paths::resolve_in_root(source_root(from), &cleaned, true)
            .map(|r| source_root(from).join(r))
            .unwrap_or_default(),
    )
    .map(|m| m.is_dir())
    .unwrap_or(false);
    let (dest, bound) = if is_dir || rel.is_empty() {
        ("/".to_owned(), into.to_owned())
    } else {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        (format!("/{name}"), into.join(name))
    };
    let spec = CopySpec {
        sources: vec![if rel.is_empty() {
            ".".into()
        } else {
            rel.into()
        }],
        inline: Vec::new(),
        downloads: Vec::new(),
        dest,
        owner: None,
        chmod: None,
        parents: false,
        exclude: None,
        unpack_archives: false,
        record_parents: false,
    };
    copy::copy(from, &spec, into)?;
    Ok(bound)
}

fn source_root<'a>(from: &'a Source<'_>) -> &'a Path {
    match from {
        Source::Context(c) => &c.root,
        Source::Rootfs(p) => p,
    }
}
