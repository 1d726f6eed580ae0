//! `RUN --mount=` specifications and `--chmod=` modes, validated as BuildKit does.

use crate::instructions::Word;
use serde::Serialize;

/// The kind of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A read-only (by default) view of the context, a stage or an image.
    Bind,
    /// A persistent cache directory shared between builds.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file (or environment variable).
    Secret,
    /// The SSH agent socket.
    Ssh,
}

impl MountType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bind" => MountType::Bind,
            "cache" => MountType::Cache,
            "tmpfs" => MountType::Tmpfs,
            "secret" => MountType::Secret,
            "ssh" => MountType::Ssh,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// One `--mount=` of a RUN instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// The mount type (`bind` when not given).
    #[serde(rename = "type")]
    pub kind: MountType,
    /// Where it appears in the RUN step's filesystem (defaulted for secret and ssh).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Path within `from` (bind, cache) or the secret's source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A stage name or index, or an image, to take files from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Read-only (bind and secret/ssh default true; cache and tmpfs default false).
    pub readonly: bool,
    /// Cache, secret or ssh id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Cache sharing: shared, private or locked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharing: Option<String>,
    /// File mode (octal) for cache, secret and ssh mounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Owner uid for cache, secret and ssh mounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Owner gid for cache, secret and ssh mounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Fail when the secret or ssh socket is not provided.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// tmpfs size limit in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Secret exposed as this environment variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The specification as written, kept for re-expansion.
    #[serde(skip)]
    pub spec: Option<Word>,
}

const MOUNT_KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "env",
];

/// Expands a mount field value; `None` validates the spec as written.
pub type FieldExpander<'a> = &'a mut dyn FnMut(&str) -> Result<String, String>;

impl Mount {
    /// Parses a `--mount` value (CSV of `key=value` fields). With an expander, each value is
    /// expanded first; without one, values that hold a `$` are checked only after expansion.
    pub fn parse(spec: &str, mut expand: Option<FieldExpander<'_>>) -> Result<Mount, String> {
        let fields = parse_csv_record(spec)?;
        let mut m = Mount::unchecked();
        let mut readonly_given = false;
        for field in fields {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), v.to_string()),
                None => {
                    let key = field.to_ascii_lowercase();
                    match key.as_str() {
                        "readonly" | "ro" => {
                            m.readonly = true;
                            readonly_given = true;
                        }
                        "readwrite" | "rw" => {
                            m.readonly = false;
                            readonly_given = true;
                        }
                        "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                            m.required = true
                        }
                        "required" => {
                            return Err(format!(
                                "unexpected key 'required' for mount type '{}'",
                                m.kind.name()
                            ))
                        }
                        _ => {
                            return Err(format!(
                                "invalid field '{field}': it must be a key=value pair"
                            ))
                        }
                    }
                    continue;
                }
            };
            let value = match expand.as_mut() {
                Some(f) => f(&value)?,
                None => {
                    if value.contains('$') {
                        return Err(format!("{key}={value} is checked once expanded"));
                    }
                    value
                }
            };
            let bool_value =
                |v: &str| parse_go_bool(v).ok_or_else(|| format!("invalid value for {key}: {v}"));
            match key.as_str() {
                "type" => {
                    m.kind = MountType::parse(&value.to_ascii_lowercase()).ok_or_else(|| {
                        format!("unsupported mount type {value:?}: expected bind, cache, tmpfs, secret or ssh")
                    })?
                }
                "from" => m.from = Some(value),
                "source" | "src" => m.source = Some(value),
                "target" | "dst" | "destination" => m.target = Some(value),
                "readonly" | "ro" => {
                    m.readonly = bool_value(&value)?;
                    readonly_given = true;
                }
                "readwrite" | "rw" => {
                    m.readonly = !bool_value(&value)?;
                    readonly_given = true;
                }
                "required" => {
                    if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                        return Err(format!("unexpected key 'required' for mount type '{}'", m.kind.name()));
                    }
                    m.required = bool_value(&value)?;
                }
                "size" => {
                    if m.kind != MountType::Tmpfs {
                        return Err(format!("unexpected key 'size' for mount type '{}'", m.kind.name()));
                    }
                    m.size = Some(parse_ram_size(&value).ok_or_else(|| format!("invalid value for size: {value}"))?);
                }
                "id" => m.id = Some(value),
                "sharing" => {
                    if !matches!(value.to_ascii_lowercase().as_str(), "shared" | "private" | "locked") {
                        return Err(format!("unsupported cache sharing {value:?}: expected shared, private or locked"));
                    }
                    m.sharing = Some(value.to_ascii_lowercase());
                }
                "mode" => {
                    m.mode = Some(
                        u32::from_str_radix(&value, 8)
                            .map_err(|_| format!("invalid value {value} for mode: expected octal, e.g. 0644"))?,
                    )
                }
                "uid" => m.uid = Some(value.parse().map_err(|_| format!("invalid value {value} for uid"))?),
                "gid" => m.gid = Some(value.parse().map_err(|_| format!("invalid value {value} for gid"))?),
                "env" => m.env = Some(value),
                _ => {
                    let hint = crate::error::suggest(&key, MOUNT_KEYS)
                        .map(|s| format!(" (did you mean {s}?)"))
                        .unwrap_or_default();
                    return Err(format!("unexpected key '{key}' in '{field}'{hint}"));
                }
            }
        }
        if !readonly_given {
            m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
        }
        if m.sharing.is_some() && m.kind != MountType::Cache {
            return Err(format!(
                "invalid cache sharing set for {} mount",
                m.kind.name()
            ));
        }
        let file_info_allowed = matches!(
            m.kind,
            MountType::Secret | MountType::Ssh | MountType::Cache
        );
        if !file_info_allowed {
            for (name, set) in [
                ("mode", m.mode.is_some()),
                ("uid", m.uid.is_some()),
                ("gid", m.gid.is_some()),
            ] {
                if set {
                    return Err(format!(
                        "{name} not allowed for {:?} type mounts",
                        m.kind.name()
                    ));
                }
            }
        }
        match m.kind {
            MountType::Secret => {
                if m.from.is_some() {
                    return Err("secret mount should not have a from".into());
                }
                if m.source.is_none() && m.target.is_none() && m.id.is_none() {
                    return Err(
                        "invalid secret mount: one of id, source or target is required".into(),
                    );
                }
                if m.source.is_some() && m.id.is_some() {
                    return Err("both source and id can't be set on a secret mount".into());
                }
                if m.id.is_none() {
                    m.id = m
                        .source
                        .clone()
                        .or_else(|| m.target.as_deref().map(|t| base_name(t).to_string()));
                }
                if m.target.is_none() && m.env.is_none() {
                    m.target =
                        m.id.as_deref()
                            .map(|id| format!("/run/secrets/{}", base_name(id)));
                }
            }
            MountType::Ssh => {
                if m.id.is_none() {
                    m.id = Some("default".into());
                }
            }
            // Without a target, bind/cache/tmpfs mount at the working directory (BuildKit
            // resolves an empty target against WORKDIR and refuses only `/`).
            MountType::Bind | MountType::Cache | MountType::Tmpfs => {}
        }
        Ok(m)
    }

    /// What the parser checks before expansion, as BuildKit does: the CSV syntax and that
    /// `from=` holds no variable. The fields are checked when the stage is expanded
    /// ([`Mount::parse`] with an expander); until then a spec that does not validate yet (it
    /// may use variables) is kept with only its `from` read.
    pub fn parse_unexpanded(spec: &str) -> Result<Mount, String> {
        let fields = parse_csv_record(spec)?;
        let mut from = None;
        for field in &fields {
            if let Some((key, value)) = field.split_once('=') {
                if key.eq_ignore_ascii_case("from") {
                    if value.find('$').is_some_and(|i| i + 1 < value.len()) {
                        return Err("'from' doesn't support variable expansion, define an alias stage instead \
                                    (FROM ${IMAGE} AS src, then from=src)"
                            .into());
                    }
                    from = Some(value.to_string());
                }
            }
        }
        Ok(Mount::parse(spec, None).unwrap_or(Mount {
            from,
            ..Mount::unchecked()
        }))
    }

    fn unchecked() -> Mount {
        Mount {
            kind: MountType::Bind,
            target: None,
            source: None,
            from: None,
            readonly: true,
            id: None,
            sharing: None,
            mode: None,
            uid: None,
            gid: None,
            required: false,
            size: None,
            env: None,
            spec: None,
        }
    }

    pub(crate) fn with_spec(mut self, spec: Word) -> Self {
        self.spec = Some(spec);
        self
    }
}

fn base_name(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// docker's `units.RAMInBytes`: `64m`, `1g`, `512k`, `1024` (binary multiples).
fn parse_ram_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let number: f64 = v[..split].parse().ok()?;
    let unit = v[split..].trim().to_ascii_lowercase();
    let multiplier: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "p" | "pb" | "pib" => 1 << 50,
        _ => return None,
    };
    let bytes = number * multiplier as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// One record of Go's `encoding/csv` (comma separated, `"` quoting with `""` escapes).
fn parse_csv_record(input: &str) -> Result<Vec<String>, String> {
    if input.is_empty() {
        return Err("empty --mount value: expected e.g. type=cache,target=/root/.cache".into());
    }
    let mut fields = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quote in --mount value {input:?}")),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => {
                    return Err(format!(
                        "extraneous {c:?} after a quoted field in --mount value {input:?}"
                    ))
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(format!(
                            "bare \" in a non-quoted field of --mount value {input:?}"
                        ))
                    }
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

/// A validated `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// An octal mode (`0755`).
    Octal(u32),
    /// A symbolic mode (`u+x,go-w`), applied to each copied file's mode.
    Symbolic(String),
}

/// Parses `--chmod`: octal up to 07777, or symbolic clauses `[ugoa]*[-+=]([rwxXst]*|[ugo])`
/// separated by commas.
pub fn parse_chmod(value: &str) -> Result<Chmod, String> {
    if !value.is_empty() && value.chars().all(|c| c.is_ascii_digit()) {
        return u32::from_str_radix(value, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(Chmod::Octal)
            .ok_or_else(|| {
                "expected an octal mode up to 7777 (e.g. 0755) or a symbolic mode (e.g. u+x)".into()
            });
    }
    let bad = || {
        format!(
            "expected an octal mode (e.g. 0755) or a symbolic mode (e.g. u+x,go-w), got {value:?}"
        )
    };
    if value.is_empty() {
        return Err(bad());
    }
    for clause in value.split(',') {
        let who_len = clause
            .find(|c: char| !"ugoa".contains(c))
            .unwrap_or(clause.len());
        let mut rest = &clause[who_len..];
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let Some(op) = rest.chars().next().filter(|c| "+-=".contains(*c)) else {
                return Err(bad());
            };
            rest = &rest[op.len_utf8()..];
            let perm_len = rest.find(|c: char| "+-=".contains(c)).unwrap_or(rest.len());
            let perms = &rest[..perm_len];
            let copy_from = perms.len() == 1 && "ugo".contains(perms);
            if !copy_from && !perms.chars().all(|c| "rwxXst".contains(c)) {
                return Err(bad());
            }
            rest = &rest[perm_len..];
        }
    }
    Ok(Chmod::Symbolic(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_defaults_follow_buildkit() {
        let m = Mount::parse("type=cache,target=/root/.cache", None).unwrap();
        assert!(!m.readonly);
        let m = Mount::parse("target=/src", None).unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.readonly);
        let m = Mount::parse("type=secret,id=npmrc", None).unwrap();
        assert_eq!(m.target.as_deref(), Some("/run/secrets/npmrc"));
        let m = Mount::parse("type=secret,id=aws/credentials", None).unwrap();
        assert_eq!(m.target.as_deref(), Some("/run/secrets/credentials"));
        let m = Mount::parse("type=secret,target=/root/.netrc", None).unwrap();
        assert_eq!(m.id.as_deref(), Some(".netrc"));
        let m = Mount::parse("type=ssh", None).unwrap();
        assert_eq!(m.id.as_deref(), Some("default"));
        let m = Mount::parse("type=tmpfs,target=/t,size=64m", None).unwrap();
        assert_eq!(m.size, Some(64 << 20));
    }

    #[test]
    fn mount_errors() {
        assert!(Mount::parse("type=secret,env=FOO", None).is_err());
        assert!(Mount::parse("type=nfs,target=/x", None).is_err());
        assert!(Mount::parse("type=bind,target=/x,mode=0755", None).is_err());
        assert!(Mount::parse("type=cache,target=/x,sharing=weird", None).is_err());
        assert!(Mount::parse_unexpanded("type=bind,target=/x,from=$X").is_err());
        assert!(Mount::parse_unexpanded("type=$T,target=/x").is_ok());
        assert!(Mount::parse("type=bind,targte=/x", None)
            .unwrap_err()
            .contains("did you mean target"));
        assert!(Mount::parse("type=cache,target=/x,required", None).is_err());
        assert!(Mount::parse("sharing=locked,type=cache,target=/x", None).is_ok());
        assert!(Mount::parse("", None).is_err());
        assert!(Mount::parse("\"type=bind,target=/x", None).is_err());
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(
            parse_csv_record(r#""target=/a,b",ro"#).unwrap(),
            ["target=/a,b", "ro"]
        );
        assert_eq!(parse_csv_record(r#"a,"b""c""#).unwrap(), ["a", "b\"c"]);
    }

    #[test]
    fn chmod_forms() {
        assert_eq!(parse_chmod("755"), Ok(Chmod::Octal(0o755)));
        assert_eq!(parse_chmod("0644"), Ok(Chmod::Octal(0o644)));
        assert!(parse_chmod("u+x,go-w").is_ok());
        assert!(parse_chmod("a=rX").is_ok());
        assert!(parse_chmod("=").is_ok());
        assert!(parse_chmod("888").is_err());
        assert!(parse_chmod("u+z").is_err());
        assert!(parse_chmod("rwx").is_err());
        assert!(parse_chmod("").is_err());
    }
}
