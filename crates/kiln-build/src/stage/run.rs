//! RUN: the command in the sandbox, with the environment, user and mounts BuildKit gives it.

use super::StageRun;
use crate::error::BuildError;
use crate::image;
use crate::options::{Reporter, StepInfo};
use crate::paths;
use crate::snapshotter::Writes;
use crate::types::Layer;
use crate::users;
use kiln_dockerfile::instructions::{CommandLine, Instruction};
use kiln_oci::Platform;
use kiln_sandbox::backend::Backend;
use std::io::Write;
use std::path::Path;

/// Collects a RUN step's output: passes it to the reporter and keeps the tail for errors.
struct OutputTail<'a> {
    reporter: &'a dyn Reporter,
    step: &'a StepInfo,
    tail: Vec<u8>,
}

const TAIL_BYTES: usize = 4096;

impl Write for OutputTail<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.reporter.output(self.step, buf);
        self.tail.extend_from_slice(buf);
        if self.tail.len() > 2 * TAIL_BYTES {
            let cut = self.tail.len() - TAIL_BYTES;
            self.tail.drain(..cut);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl OutputTail<'_> {
    fn last_lines(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(&self.tail);
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(n);
        lines[start..]
            .iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn heredoc_is_command(text: &str, heredocs: &[kiln_dockerfile::parser::Heredoc]) -> bool {
    let [heredoc] = heredocs else { return false };
    let word = text.trim();
    let Some(rest) = word.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    rest.trim_matches(|c| c == '\'' || c == '"') == heredoc.name
}

impl StageRun<'_> {
    pub(super) fn run(
        &mut self,
        instruction: &Instruction,
        command: &CommandLine,
        heredocs: &[kiln_dockerfile::parser::Heredoc],
        mounts: &[kiln_dockerfile::mount::Mount],
        network: Option<&str>,
        info: &StepInfo,
    ) -> Result<Option<Layer>, BuildError> {
        let at = self.at(instruction);
        let host = Platform::host();
        if self.platform.os != host.os || self.platform.architecture != host.architecture {
            return Err(BuildError::Unsupported {
                at,
                what: format!(
                    "RUN for platform {} on this {} machine (no emulation)",
                    self.platform, host
                ),
            });
        }
        let argv = match command {
            CommandLine::Exec(args) => args.clone(),
            CommandLine::Shell(text) if heredoc_is_command(text, heredocs) => {
                let body = &heredocs[0].content;
                let mut v = image::shell(&self.image.config);
                if let Some(line) = body.strip_prefix("#!").and_then(|b| b.lines().next()) {
                    // A script with its own interpreter (BuildKit runs it as a file): kept in
                    // the step's /dev/shm, so it never reaches the layer, and handed to the
                    // interpreter, since /dev/shm is noexec.
                    let line = line.trim();
                    let (interpreter, arg) = match line.split_once(char::is_whitespace) {
                        Some((i, a)) => (i, format!(" '{}'", a.trim().replace('\'', "'\\''"))),
                        None => (line, String::new()),
                    };
                    v.push(format!(
                        "f=$(mktemp /dev/shm/kiln-heredoc.XXXXXX) && cat > \"$f\" <<'KILN_HEREDOC_END'\n{body}KILN_HEREDOC_END\n'{interpreter}'{arg} \"$f\"; s=$?; rm -f \"$f\"; exit $s"
                    ));
                } else {
                    v.push(body.clone());
                }
                v
            }
            CommandLine::Shell(text) => {
                let mut script = text.clone();
                // The shell reads heredoc bodies after the command line, as a script.
                for h in heredocs {
                    script.push('\n');
                    script.push_str(&h.content);
                    script.push_str(&h.name);
                }
                let mut v = image::shell(&self.image.config);
                v.push(script);
                v
            }
        };
        if argv.is_empty() {
            return Err(BuildError::Instruction {
                at,
                keyword: "RUN",
                message: "empty command".into(),
            });
        }
        let env = self.run_env.clone();
        // Held until the step is over: cache locks, agents, secret files (removed after).
        let prepared = self.prepare_mounts(instruction, mounts, &env)?;
        let user = self.user();
        let cwd = self.workdir_or_root();
        let hosts = self.services.layers.scratch().join("hosts");
        if !hosts.exists() {
            std::fs::write(
                &hosts,
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            )
            .map_err(BuildError::io("writing", &hosts))?;
        }
        let reporter = self.services.reporter;
        let label = self.label.clone();
        let shown_command = match command {
            CommandLine::Exec(a) => serde_json::to_string(a).unwrap_or_default(),
            CommandLine::Shell(t) => t.clone(),
        };
        let single = self.single;
        let writer = self.layer_writer();
        let namespaces = self.services.backend != (Backend::Chroot { namespaces: false });
        let volumes = self.volumes.clone();
        let (_, layer) = self.fs_mut().step(&writer, &at, true, single, |root| {
            // A VOLUME declared in this stage exists for the RUN steps after it (kaniko and
            // buildah make it; BuildKit's RUN would fail to write there): made here, it lands
            // in this step's layer.
            for volume in &volumes {
                let rel = paths::resolve_in_root(root, volume, true)
                    .map_err(BuildError::io("resolving", Path::new(volume)))?;
                paths::mkdir_all(root, &rel, 0o755, (0, 0), &mut Vec::new())
                    .map_err(BuildError::io("creating the volume", Path::new(volume)))?;
            }
            let identity = match &user {
                Some(spec) => {
                    users::resolve_user(root, spec).map_err(|m| BuildError::Instruction {
                        at: at.clone(),
                        keyword: "RUN",
                        message: format!("USER {spec}: {m}"),
                    })?
                }
                None => users::resolve_user(root, "0").unwrap_or(users::Identity {
                    uid: 0,
                    gid: 0,
                    groups: vec![0],
                    home: "/root".into(),
                }),
            };
            // As runc does: HOME from /etc/passwd unless the image or an ARG sets it.
            let mut env = env;
            env.entry("HOME".into()).or_insert(identity.home.clone());
            // Secrets as variables and SSH_AUTH_SOCK: the step's only (never in `run_env`,
            // which feeds keys and the image).
            env.extend(prepared.env.iter().cloned());
            let step_mounts = if prepared.is_empty() {
                Vec::new()
            } else {
                prepared
                    .step_mounts(root)
                    .map_err(BuildError::io("resolving mount targets in", root))?
            };
            let safe_file =
                |rel: &str| std::fs::symlink_metadata(root.join(rel)).map_or(true, |m| m.is_file());
            let resolv = Path::new("/etc/resolv.conf");
            let spec = kiln_sandbox::RunSpec {
                rootfs: root.to_owned(),
                argv,
                env: env.into_iter().collect(),
                cwd,
                uid: identity.uid,
                gid: identity.gid,
                extra_gids: identity.groups,
                hostname: Some("kiln".into()),
                resolv_conf: (resolv.is_file() && safe_file("etc/resolv.conf"))
                    .then(|| resolv.to_owned()),
                hosts: safe_file("etc/hosts").then_some(hosts),
                namespaces,
                mounts: step_mounts,
                network: network != Some("none"),
            };
            // stdout and stderr interleave in one tail, as a terminal shows them.
            let mut out = OutputTail {
                reporter,
                step: info,
                tail: Vec::new(),
            };
            let mut err = OutputTail {
                reporter,
                step: info,
                tail: Vec::new(),
            };
            let outcome = kiln_sandbox::run_step(&spec, &mut out, &mut err);
            out.tail.extend_from_slice(&err.tail);
            let outcome = outcome.map_err(|source| match source {
                kiln_sandbox::SandboxError::Stopped => BuildError::Stopped {
                    at: format!("{at}: RUN"),
                },
                source => BuildError::Sandbox {
                    at: format!("{at}: RUN"),
                    source,
                },
            })?;
            // Mount points kiln made are not the step's: remove them before the snapshot.
            let canonical =
                std::fs::canonicalize(root).map_err(BuildError::io("resolving", root))?;
            let mut kiln_touched = Vec::new();
            for point in outcome.created_mount_points.iter().rev() {
                // Never through a symlink the step left on the way (a directory only when
                // empty: what the step put in it is the step's).
                kiln_sandbox::remove_mount_point(&canonical, point);
                let Ok(rel) = point.strip_prefix(&canonical) else {
                    continue;
                };
                if let Some(parent) = rel.parent() {
                    kiln_touched.push(parent.to_owned());
                }
            }
            for dir in &outcome.touched {
                if let Ok(rel) = dir.strip_prefix(&canonical) {
                    kiln_touched.push(rel.to_owned());
                }
            }
            if outcome.without_sys {
                reporter.warn(&format!(
                    "{at}: RUN ran without /sys: this container has none to share"
                ));
            }
            if !outcome.status.success() {
                let status = match outcome.status {
                    kiln_sandbox::StepStatus::Exited(code) => format!("exited with status {code}"),
                    kiln_sandbox::StepStatus::Signaled(sig) => {
                        format!("was killed by signal {sig}")
                    }
                };
                // A step that ran out of space often says only "I/O error".
                let status = match out_of_space(root) {
                    Some(free) => format!(
                        "{status}; the file system of the kiln dir is full ({free} bytes free): \
                         free space or use a larger kiln dir"
                    ),
                    None => status,
                };
                return Err(BuildError::RunFailed {
                    at: at.clone(),
                    stage: label,
                    command: shown_command,
                    status,
                    tail: out.last_lines(20),
                });
            }
            Ok((
                (),
                Writes {
                    kiln_touched,
                    ..Writes::default()
                },
            ))
        })?;
        Ok(layer)
    }
}

/// The bytes left for the step's files under `root` when that is next to nothing (under
/// 1 MiB), else `None`.
fn out_of_space(root: &std::path::Path) -> Option<u64> {
    let stats = rustix::fs::statvfs(root).ok()?;
    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
    (free < 1 << 20).then_some(free)
}
