//! Base images for build tests, made offline: a busybox rootfs from Debian's `busybox-static`
//! (`/bin/busybox`) with users, groups and fixture files, or layers a test writes itself
//! (whiteouts, hard links, …). Written as an OCI layout and pushed with skopeo.

use std::fs;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};

use crate::error::{Error, IoContext, Result};
use crate::image::{sha256, write_blob, write_file};
use crate::registry::Registry;
use crate::skopeo::{push_layout, PushOptions};

/// Where the static busybox comes from (Debian's `busybox-static`).
pub const BUSYBOX_BIN: &str = "/bin/busybox";

/// `/etc/passwd` of [`BaseImage::busybox`].
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
/// `/etc/group` of [`BaseImage::busybox`].
pub const GROUP: &str = "root:x:0:\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n";

/// A layer tar under construction.
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerTar {
    /// An empty layer.
    pub fn new() -> Self {
        LayerTar {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, owner: (u64, u64), size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(1_600_000_000);
        h.set_size(size);
        h
    }

    /// A directory.
    pub fn dir(mut self, path: &str, mode: u32, owner: (u64, u64)) -> Result<Self> {
        let mut h = Self::header(tar::EntryType::Directory, mode, owner, 0);
        self.builder
            .append_data(&mut h, path, &[][..])
            .context(|| format!("tar dir {path}"))?;
        Ok(self)
    }

    /// A regular file.
    pub fn file(
        mut self,
        path: &str,
        mode: u32,
        owner: (u64, u64),
        content: &[u8],
    ) -> Result<Self> {
        let mut h = Self::header(tar::EntryType::Regular, mode, owner, content.len() as u64);
        self.builder
            .append_data(&mut h, path, content)
            .context(|| format!("tar file {path}"))?;
        Ok(self)
    }

    /// A regular file with extended attributes (PAX `SCHILY.xattr.*` records).
    pub fn file_with_xattrs(
        mut self,
        path: &str,
        mode: u32,
        content: &[u8],
        xattrs: &[(&str, &[u8])],
    ) -> Result<Self> {
        let records: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
            .context(|| format!("tar xattrs of {path}"))?;
        self.file(path, mode, (0, 0), content)
    }

    /// A symbolic link.
    pub fn symlink(mut self, path: &str, target: &str) -> Result<Self> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, (0, 0), 0);
        self.builder
            .append_link(&mut h, path, target)
            .context(|| format!("tar symlink {path}"))?;
        Ok(self)
    }

    /// A hard link to an earlier entry.
    pub fn hardlink(mut self, path: &str, target: &str) -> Result<Self> {
        let mut h = Self::header(tar::EntryType::Link, 0o644, (0, 0), 0);
        self.builder
            .append_link(&mut h, path, target)
            .context(|| format!("tar hardlink {path}"))?;
        Ok(self)
    }

    /// A whiteout removing `path` of lower layers.
    pub fn whiteout(self, path: &str) -> Result<Self> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, 0o644, (0, 0), b"")
    }

    /// The tar bytes.
    pub fn finish(self) -> Result<Vec<u8>> {
        self.builder
            .into_inner()
            .context(|| "finish layer tar".into())
    }
}

/// An OCI layout of a single-platform linux/amd64 image, tagged `latest`.
#[derive(Debug)]
pub struct BaseImage {
    dir: tempfile::TempDir,
}

impl BaseImage {
    /// A busybox image: `/bin/busybox` and a link per applet, `/etc/passwd` ([`PASSWD`]),
    /// `/etc/group` ([`GROUP`]), `/tmp` (1777), `/root`, `/home/app` (1000:1000), `/run` and
    /// `/var/run -> /run`, and fixtures: `/base/file`, `/base/dir/{a,b}`, `/base/replace-me/x`,
    /// `/base/link -> file`. Env PATH, Cmd `["sh"]`.
    pub fn busybox() -> Result<Self> {
        Self::build(
            vec![busybox_layer()?],
            json!({
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["sh"],
            }),
        )
    }

    /// An image of these layer tars (each gzipped) with this container config.
    pub fn build(layers: Vec<Vec<u8>>, container_config: Value) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-test-base-")
            .tempdir()
            .context(|| "create base image temp dir".into())?;
        let blobs = dir.path().join("blobs").join("sha256");
        fs::create_dir_all(&blobs).path_context(&blobs)?;
        write_file(
            &dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let mut diff_ids = Vec::new();
        let mut descriptors = Vec::new();
        let mut history = Vec::new();
        for tar in &layers {
            diff_ids.push(sha256(tar));
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            std::io::Write::write_all(&mut gz, tar).context(|| "gzip layer".into())?;
            let gz = gz.finish().context(|| "gzip layer".into())?;
            let (digest, size) = write_blob(&blobs, &gz)?;
            descriptors.push(json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest, "size": size,
            }));
            history.push(
                json!({"created": "2020-09-13T12:26:40Z", "created_by": "kiln-test base layer"}),
            );
        }
        let config = json!({
            "created": "2020-09-13T12:26:40Z",
            "architecture": "amd64",
            "os": "linux",
            "config": container_config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        let (config_digest, config_size) = write_blob(&blobs, config.to_string().as_bytes())?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": descriptors,
        });
        let (digest, size) = write_blob(&blobs, manifest.to_string().as_bytes())?;
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest, "size": size,
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }],
        });
        write_file(&dir.path().join("index.json"), index.to_string().as_bytes())?;
        Ok(BaseImage { dir })
    }

    /// The layout directory.
    pub fn layout_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Pushes it to `registry` as `repo_tag` (skopeo, Docker v2s2 or OCI per `options`);
    /// returns the manifest digest.
    pub fn push(
        &self,
        registry: &Registry,
        repo_tag: &str,
        options: &PushOptions,
    ) -> Result<String> {
        push_layout(
            &format!("oci:{}:latest", self.dir.path().display()),
            false,
            registry,
            repo_tag,
            options,
        )
    }
}

/// The busybox rootfs layer of [`BaseImage::busybox`].
pub fn busybox_layer() -> Result<Vec<u8>> {
    let busybox = fs::read(BUSYBOX_BIN).path_context(Path::new(BUSYBOX_BIN))?;
    let list = std::process::Command::new(BUSYBOX_BIN)
        .arg("--list")
        .output()
        .context(|| format!("{BUSYBOX_BIN} --list"))?;
    if !list.status.success() {
        return Err(Error::Command {
            command: format!("{BUSYBOX_BIN} --list"),
            status: list.status.to_string(),
            stderr: String::from_utf8_lossy(&list.stderr).into_owned(),
        });
    }
    let mut layer =
        LayerTar::new()
            .dir("bin", 0o755, (0, 0))?
            .file("bin/busybox", 0o755, (0, 0), &busybox)?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if !applet.is_empty() && applet != "busybox" {
            layer = layer.symlink(&format!("bin/{applet}"), "busybox")?;
        }
    }
    layer
        .dir("etc", 0o755, (0, 0))?
        .file("etc/passwd", 0o644, (0, 0), PASSWD.as_bytes())?
        .file("etc/group", 0o644, (0, 0), GROUP.as_bytes())?
        .dir("tmp", 0o1777, (0, 0))?
        .dir("root", 0o700, (0, 0))?
        .dir("home", 0o755, (0, 0))?
        .dir("home/app", 0o755, (1000, 1000))?
        .dir("run", 0o755, (0, 0))?
        .dir("var", 0o755, (0, 0))?
        .symlink("var/run", "/run")?
        .dir("base", 0o755, (0, 0))?
        .file("base/file", 0o644, (0, 0), b"base file\n")?
        .symlink("base/link", "file")?
        .dir("base/dir", 0o755, (0, 0))?
        .file("base/dir/a", 0o644, (0, 0), b"a\n")?
        .file("base/dir/b", 0o600, (1000, 1000), b"b\n")?
        .dir("base/replace-me", 0o755, (0, 0))?
        .file("base/replace-me/x", 0o644, (0, 0), b"x\n")?
        .finish()
}

/// Writes `DIR/config.json` with basic-auth credentials for `host`, as `docker login` would.
pub fn write_docker_config(dir: &Path, host: &str, user: &str, password: &str) -> Result<()> {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = json!({"auths": {host: {"auth": auth}}});
    write_file(&dir.join("config.json"), config.to_string().as_bytes())
}
