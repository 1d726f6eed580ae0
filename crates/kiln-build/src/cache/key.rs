//! Cache keys: what a step's result depends on, named, so a key can be computed before the
//! step runs and a miss can say which input changed.
//!
//! A key is the SHA-256 of its inputs, in order, as a JSON list of `[name, value]` pairs. The
//! first input is always `parent`: the key of the stage's previous step that changes files, or
//! the stage's base (`image NAME@DIGEST`, `scratch`, or the key a base stage ended on). The
//! rest depend on the instruction; `docs/cache.md` lists them.

use crate::context::ContextView;
use crate::error::BuildError;
use kiln_dockerfile::instructions::Command;
use kiln_oci::{Digest, DigestWriter};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The version of how kiln turns a step's inputs into its layer.
const KEY_VERSION: &str = "1";

/// The named inputs of one step's key, in the order they were added.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct KeyInputs(pub(crate) Vec<(String, String)>);

impl KeyInputs {
    /// Inputs that start from `parent` (a key, or a description of the stage's base).
    pub(crate) fn after(parent: &str) -> KeyInputs {
        let mut inputs = KeyInputs::default();
        inputs.add("parent", parent);
        // Bumped when kiln makes layers differently from the same inputs: older entries then
        // miss instead of standing in for what this kiln would make.
        inputs.add("kiln cache", KEY_VERSION);
        inputs
    }

    pub(crate) fn add(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// The key: lowercase hex SHA-256 of the inputs.
    pub(crate) fn key(&self) -> String {
        let json = serde_json::to_vec(&self.0).expect("a list of string pairs serializes");
        Digest::of(&json).hex().to_owned()
    }

    /// The value of the input `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An instruction as its key sees it: every argument, flag and heredoc after expansion,
/// without where it was written (moving a line does not change its key).
pub(crate) fn instruction_text(command: &Command) -> String {
    serde_json::to_string(command).unwrap_or_else(|_| command.to_string())
}

/// Adds one input per context path a COPY/ADD reads: its type, mode, owner, content digest
/// or link target (modification times are left out, as BuildKit does).
pub(crate) fn add_context_files(
    inputs: &mut KeyInputs,
    context: &ContextView,
    sources: &[String],
) -> Result<(), BuildError> {
    for rel in crate::copy::context_read_set(context, sources) {
        let path = context.root.join(&rel);
        // A path kiln cannot read is an input as such (the COPY itself says whether that
        // matters: an `--exclude`d file may well be unreadable).
        let value = describe(&path).unwrap_or_else(|e| format!("unreadable: {e}"));
        inputs.add(format!("file {rel}"), value);
    }
    Ok(())
}

/// A context path as a key input: type, mode, owner, content digest or link target.
fn describe(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    let owner = format!(
        "mode {:o} uid {} gid {}",
        meta.mode(),
        meta.uid(),
        meta.gid()
    );
    Ok(if kind.is_symlink() {
        format!("link {} {owner}", std::fs::read_link(path)?.display())
    } else if kind.is_dir() {
        format!("dir {owner}")
    } else if kind.is_file() {
        format!("file {} {owner}", file_digest(path)?)
    } else {
        format!("special {owner} rdev {}", meta.rdev())
    })
}

fn file_digest(path: &Path) -> std::io::Result<Digest> {
    let mut hashed = DigestWriter::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hashed)?;
    Ok(hashed.digested().digest)
}

/// Names whose values are never written down or shown (they may hold credentials passed as
/// build args): a key takes their digest instead.
pub(crate) fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["TOKEN", "PASSWORD", "PASSWD", "SECRET", "CREDENTIAL"]
        .iter()
        .any(|w| upper.contains(w))
        || upper
            .split(['_', '-', '.'])
            .any(|word| matches!(word, "KEY" | "AUTH" | "PAT" | "PASS" | "PW" | "PWD"))
}

/// A value carrying a credential whatever its name: a URL with a user (`https://user:pw@host`).
fn carries_credentials(value: &str) -> bool {
    value.split_whitespace().any(|word| {
        word.split_once("://").is_some_and(|(_, rest)| {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            authority.contains('@')
        })
    })
}

/// A variable's value as a key input and an entry record it: the value, or its digest when
/// the name looks like a credential's or the value carries one.
pub(crate) fn recorded_value(name: &str, value: &str) -> String {
    if looks_secret(name) || carries_credentials(value) {
        format!("hidden {}", Digest::of(value.as_bytes()))
    } else {
        value.to_owned()
    }
}

/// The stage-independent place of a step, for finding the entries an earlier build made
/// there when a step misses: the Dockerfile, the stage and the step's position.
pub(crate) fn site(dockerfile: &str, stage: &str, step: usize) -> String {
    let mut inputs = KeyInputs::default();
    inputs.add("dockerfile", dockerfile);
    inputs.add("stage", stage);
    inputs.add("step", step.to_string());
    inputs.key()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_depends_on_every_input_and_its_order() {
        let mut a = KeyInputs::after("p");
        a.add("x", "1");
        let mut b = KeyInputs::after("p");
        b.add("x", "2");
        let mut c = KeyInputs::after("q");
        c.add("x", "1");
        assert_ne!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
        assert_eq!(a.key(), a.clone().key());
        assert_eq!(a.key().len(), 64);
        assert_eq!(a.get("x"), Some("1"));
    }

    #[test]
    fn credentials_are_recorded_as_digests() {
        assert!(recorded_value("NPM_TOKEN", "abc").starts_with("hidden sha256:"));
        assert!(recorded_value("GITHUB_PAT", "abc").starts_with("hidden sha256:"));
        let url = recorded_value(
            "PIP_INDEX_URL",
            "https://user:s3cr3t@pypi.example.com/simple",
        );
        assert!(
            url.starts_with("hidden sha256:") && !url.contains("s3cr3t"),
            "{url}"
        );
        assert_eq!(recorded_value("NODE_ENV", "production"), "production");
        assert_eq!(recorded_value("PATH", "/bin"), "/bin");
        assert!(recorded_value("API_KEY", "k").starts_with("hidden "));
        assert_eq!(
            recorded_value("MIRROR", "https://pypi.example.com/simple"),
            "https://pypi.example.com/simple"
        );
    }

    #[test]
    fn an_instruction_key_ignores_where_it_was_written() {
        let one =
            kiln_dockerfile::Dockerfile::parse("FROM x\nRUN echo hi\n", "Dockerfile").unwrap();
        let two = kiln_dockerfile::Dockerfile::parse("FROM x\n\n\n  RUN echo hi\n", "Dockerfile")
            .unwrap();
        let run = |d: &kiln_dockerfile::Dockerfile| {
            d.stages[0]
                .instructions
                .iter()
                .find(|i| i.keyword() == "RUN")
                .map(|i| instruction_text(&i.command))
                .unwrap()
        };
        assert_eq!(run(&one), run(&two));
        let three =
            kiln_dockerfile::Dockerfile::parse("FROM x\nRUN echo ho\n", "Dockerfile").unwrap();
        assert_ne!(run(&one), run(&three));
    }
}
