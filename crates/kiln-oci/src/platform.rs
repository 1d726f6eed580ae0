//! Platforms (`linux/arm64/v8`), their normal form and containerd-style matching.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The platform an image runs on, as written in an index entry or a config.
///
/// Field names and order follow the OCI image spec. Comparison with
/// [`PartialEq`] is literal; use [`Platform::normalized`] or
/// [`PlatformMatcher`] to compare the way a runtime does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`, `arm`, `386`, `s390x`, …).
    pub architecture: String,
    /// Operating system (`linux`, `windows`).
    pub os: String,
    /// OS version, used by Windows images.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// Required OS features, used by Windows images.
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    /// CPU variant (`v7` for arm, `v8` for arm64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Fields kiln does not know, kept so they survive a round trip.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Platform {
    /// A platform with just an OS and an architecture.
    pub fn new(os: impl Into<String>, architecture: impl Into<String>) -> Platform {
        Platform {
            os: os.into(),
            architecture: architecture.into(),
            ..Platform::default()
        }
    }

    /// The same platform with a variant.
    pub fn with_variant(mut self, variant: impl Into<String>) -> Platform {
        self.variant = Some(variant.into());
        self
    }

    /// Parses `os[(os.version)]/arch[/variant]`, e.g. `linux/arm/v7` or
    /// `windows(10.0.17763)/amd64`. The result is kept as written; call
    /// [`normalized`](Self::normalized) to compare.
    pub fn parse(input: &str) -> Result<Platform, Error> {
        let invalid = |reason| Error::InvalidPlatform {
            input: input.to_owned(),
            reason,
        };
        let mut parts = input.split('/');
        let os_part = parts.next().unwrap_or("");
        let arch = parts
            .next()
            .ok_or_else(|| invalid("expected os/arch[/variant], e.g. linux/amd64"))?;
        let variant = parts.next();
        if parts.next().is_some() {
            return Err(invalid("too many parts; expected os/arch[/variant]"));
        }
        let (os, os_version) = match os_part.split_once('(') {
            Some((os, rest)) => {
                let version = rest
                    .strip_suffix(')')
                    .ok_or_else(|| invalid("unclosed '(' after the os"))?;
                (os, Some(version.to_owned()))
            }
            None => (os_part, None),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if !valid(os) {
            return Err(invalid("the os must be a non-empty word such as linux"));
        }
        if !valid(arch) {
            return Err(invalid(
                "the architecture must be a non-empty word such as amd64",
            ));
        }
        if variant.is_some_and(|v| !valid(v)) {
            return Err(invalid("the variant must be a non-empty word such as v7"));
        }
        Ok(Platform {
            os: os.to_owned(),
            architecture: arch.to_owned(),
            os_version,
            variant: variant.map(str::to_owned),
            ..Platform::default()
        })
    }

    /// Parses a `--platform` value as docker and BuildKit take it, normalised: `os/arch[/variant]`,
    /// an architecture alone (`arm64` means `linux/arm64`), or a known os alone (`linux` means
    /// this machine's architecture on that os).
    pub fn parse_flag(input: &str) -> Result<Platform, Error> {
        const KNOWN_OS: [&str; 16] = [
            "aix",
            "android",
            "darwin",
            "dragonfly",
            "freebsd",
            "illumos",
            "ios",
            "js",
            "linux",
            "macos",
            "netbsd",
            "openbsd",
            "plan9",
            "solaris",
            "wasip1",
            "windows",
        ];
        let platform = if input.contains('/') {
            Platform::parse(input)?
        } else if KNOWN_OS.contains(&input.to_ascii_lowercase().as_str()) {
            Platform::parse(&format!("{input}/{}", Platform::host().architecture))?
        } else {
            Platform::parse(&format!("linux/{input}"))?
        };
        Ok(platform.normalized())
    }

    /// The platform of the machine kiln runs on (`linux/amd64`, `linux/arm64`, …).
    ///
    /// A 32-bit arm host reports `arm/v7`: the variant cannot be known at compile time.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86" => "386",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform::new(std::env::consts::OS, arch).normalized()
    }

    /// The normal form containerd compares: lowercase os (`macos` → `darwin`),
    /// `x86_64`/`x86-64` → `amd64`, `aarch64` → `arm64`, `i386` → `386`,
    /// `armhf` → `arm/v7`, `armel` → `arm/v6`, bare `arm` → `arm/v7`,
    /// `arm64/v8` → `arm64`, `amd64/v1` → `amd64`, an empty variant → none.
    pub fn normalized(&self) -> Platform {
        let os = match self.os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_owned(),
            other => other.to_owned(),
        };
        let variant = self
            .variant
            .as_deref()
            .map(str::to_ascii_lowercase)
            .filter(|v| !v.is_empty());
        let (architecture, variant) =
            normalize_arch(&self.architecture.to_ascii_lowercase(), variant);
        Platform {
            os,
            architecture,
            variant,
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
            extra: self.extra.clone(),
        }
    }

    /// True for the `unknown/unknown` platform BuildKit gives attestation manifests.
    pub fn is_unknown(&self) -> bool {
        self.os == "unknown" || self.architecture == "unknown"
    }
}

fn normalize_arch(arch: &str, variant: Option<String>) -> (String, Option<String>) {
    let v = variant.as_deref();
    let (arch, variant): (&str, Option<&str>) = match arch {
        "i386" | "386" => ("386", None),
        "x86_64" | "x86-64" | "amd64" => ("amd64", v.filter(|v| *v != "v1")),
        "aarch64" | "arm64" => (
            "arm64",
            match v {
                Some("8" | "v8" | "v8.0") | None => None,
                other => other,
            },
        ),
        "armhf" => ("arm", Some("v7")),
        "armel" => ("arm", Some("v6")),
        "arm" => (
            "arm",
            match v {
                None | Some("7") | Some("v7") => Some("v7"),
                Some("5") => Some("v5"),
                Some("6") => Some("v6"),
                Some("8") => Some("v8"),
                other => other,
            },
        ),
        other => (other, v),
    };
    (arch.to_owned(), variant.map(str::to_owned))
}

impl fmt::Display for Platform {
    /// `os/arch[/variant]`, as written (not normalised).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match self.variant.as_deref() {
            Some(v) if !v.is_empty() => write!(f, "/{v}"),
            _ => Ok(()),
        }
    }
}

impl FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

/// Decides which platforms can stand in for a wanted one, best first.
///
/// Like containerd's `platforms.Only`, within one architecture: `linux/arm/v7`
/// accepts `v7`, then `v6`, then `v5`; `linux/amd64/v3` accepts `v3`, `v2`,
/// then plain `amd64`; `linux/arm64` and `linux/arm64/v8` are the same.
/// Unlike `Only`, it never crosses architectures (`amd64` does not accept
/// `386`, `arm64` does not accept `arm`): a build that asked for one
/// architecture must not silently get a base image of another.
/// OS versions are compared only for Windows (major.minor.build must agree).
#[derive(Clone, Debug)]
pub struct PlatformMatcher {
    accepted: Vec<Platform>,
}

impl PlatformMatcher {
    /// A matcher for `want`.
    pub fn new(want: &Platform) -> PlatformMatcher {
        let want = want.normalized();
        let mut accepted = vec![want.clone()];
        let version = want
            .variant
            .as_deref()
            .and_then(|v| v.strip_prefix('v'))
            .and_then(|n| n.parse::<u32>().ok());
        let fallbacks: Vec<Option<String>> = match (want.architecture.as_str(), version) {
            ("arm", Some(n)) if n > 5 => (5..n).rev().map(|k| Some(format!("v{k}"))).collect(),
            ("amd64", Some(n)) if n > 1 => (1..n)
                .rev()
                .map(|k| (k > 1).then(|| format!("v{k}")))
                .collect(),
            _ => Vec::new(),
        };
        for variant in fallbacks {
            accepted.push(Platform {
                variant,
                ..want.clone()
            });
        }
        PlatformMatcher { accepted }
    }

    /// The platforms accepted, best first, in normal form.
    pub fn accepted(&self) -> &[Platform] {
        &self.accepted
    }

    /// How good `candidate` is: `Some(0)` for an exact match, higher for
    /// fallbacks, `None` when it cannot be used.
    pub fn rank(&self, candidate: &Platform) -> Option<usize> {
        let c = candidate.normalized();
        self.accepted.iter().position(|a| {
            a.os == c.os
                && a.architecture == c.architecture
                && a.variant == c.variant
                && os_version_compatible(a, &c)
        })
    }

    /// True when `candidate` can be used at all.
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.rank(candidate).is_some()
    }
}

fn os_version_compatible(want: &Platform, candidate: &Platform) -> bool {
    if want.os != "windows" {
        return true;
    }
    match (&want.os_version, &candidate.os_version) {
        (Some(w), Some(c)) => {
            let build = |v: &str| v.split('.').take(3).collect::<Vec<_>>().join(".");
            build(w) == build(c)
        }
        _ => true,
    }
}

/// No entry of an index can run on the wanted platform.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct NoMatchingPlatform {
    /// What was asked for (boxed to keep `Result`s small).
    pub wanted: Box<Platform>,
    /// What the index offers, as written there (attestations and entries
    /// without a platform left out).
    pub available: Vec<Platform>,
}

impl fmt::Display for NoMatchingPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no image for {} in this index; ", self.wanted)?;
        if self.available.is_empty() {
            return f.write_str("it has no platform-specific images");
        }
        f.write_str("it has: ")?;
        for (i, p) in self.available.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn parse_and_display_round_trip() {
        for s in [
            "linux/amd64",
            "linux/arm/v7",
            "linux/arm64/v8",
            "windows/amd64",
        ] {
            assert_eq!(p(s).to_string(), s);
        }
        let w = p("windows(10.0.17763.5329)/amd64");
        assert_eq!(w.os, "windows");
        assert_eq!(w.os_version.as_deref(), Some("10.0.17763.5329"));
    }

    #[test]
    fn parse_refuses_malformed_platforms() {
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux/arm/v7/x",
            "linux(1/amd64",
        ] {
            assert!(
                matches!(Platform::parse(bad), Err(Error::InvalidPlatform { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn normalisation_follows_containerd() {
        let cases = [
            ("linux/x86_64", "linux/amd64"),
            ("linux/x86-64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/aarch64/8", "linux/arm64"),
            ("linux/arm64/v9", "linux/arm64/v9"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/i386", "linux/386"),
            ("Linux/AMD64", "linux/amd64"),
            ("macos/arm64", "darwin/arm64"),
            ("linux/s390x", "linux/s390x"),
        ];
        for (input, want) in cases {
            assert_eq!(p(input).normalized().to_string(), want, "{input}");
        }
    }

    #[test]
    fn arm_v7_accepts_v6_then_v5_in_that_order() {
        let m = PlatformMatcher::new(&p("linux/arm/v7"));
        assert_eq!(m.rank(&p("linux/arm/v7")), Some(0));
        assert_eq!(m.rank(&p("linux/arm/v6")), Some(1));
        assert_eq!(m.rank(&p("linux/arm/v5")), Some(2));
        assert_eq!(m.rank(&p("linux/armhf")), Some(0));
        assert_eq!(m.rank(&p("linux/arm")), Some(0));
        assert_eq!(m.rank(&p("linux/arm/v8")), None);
        assert_eq!(m.rank(&p("linux/arm64")), None);
        let v6 = PlatformMatcher::new(&p("linux/arm/v6"));
        assert!(!v6.matches(&p("linux/arm/v7")));
    }

    #[test]
    fn arm64_and_arm64_v8_are_the_same() {
        let m = PlatformMatcher::new(&p("linux/arm64"));
        assert_eq!(m.rank(&p("linux/arm64/v8")), Some(0));
        assert_eq!(m.rank(&p("linux/aarch64")), Some(0));
        assert!(
            !m.matches(&p("linux/arm/v7")),
            "no cross-architecture fallback"
        );
        let v8 = PlatformMatcher::new(&p("linux/arm64/v8"));
        assert_eq!(v8.rank(&p("linux/arm64")), Some(0));
    }

    #[test]
    fn amd64_variants_fall_back_but_never_to_386() {
        let m = PlatformMatcher::new(&p("linux/amd64/v3"));
        assert_eq!(m.rank(&p("linux/amd64/v3")), Some(0));
        assert_eq!(m.rank(&p("linux/amd64/v2")), Some(1));
        assert_eq!(m.rank(&p("linux/amd64")), Some(2));
        let plain = PlatformMatcher::new(&p("linux/amd64"));
        assert!(!plain.matches(&p("linux/amd64/v2")));
        assert!(!plain.matches(&p("linux/386")));
        assert!(!plain.matches(&p("windows/amd64")));
    }

    #[test]
    fn windows_os_versions_must_share_the_build() {
        let m = PlatformMatcher::new(&p("windows(10.0.17763.100)/amd64"));
        assert!(m.matches(&p("windows(10.0.17763.5329)/amd64")));
        assert!(!m.matches(&p("windows(10.0.20348.1)/amd64")));
        assert!(m.matches(&p("windows/amd64")));
    }

    #[test]
    fn serde_uses_oci_field_names_and_keeps_unknown_fields() {
        let json = r#"{"architecture":"amd64","os":"windows","os.version":"10.0.17763.1","os.features":["win32k"],"variant":"v2","features":["sse4"]}"#;
        let plat: Platform = serde_json::from_str(json).unwrap();
        assert_eq!(
            plat.os_features.as_deref(),
            Some(&["win32k".to_owned()][..])
        );
        assert!(plat.extra.contains_key("features"));
        assert_eq!(serde_json::to_string(&plat).unwrap(), json);
    }

    #[test]
    fn host_platform_is_normalised() {
        let h = Platform::host();
        assert_eq!(h, h.normalized());
        assert!(!h.architecture.is_empty());
    }
}
