//! The image config (`application/vnd.oci.image.config.v1+json`, Docker's
//! `container.image.v1+json`) in a form that round-trips.
//!
//! A base image's config is read, changed by the build and written back. So
//! every struct keeps the fields kiln does not know in `extra` (Docker's
//! `container_config`, `docker_version`, `config.Hostname`, …), absent fields
//! stay absent, and every map is a `BTreeMap` so the output is deterministic.
//! In the container config, known fields that were explicitly `null` (Docker
//! writes `"Entrypoint": null`) are remembered in
//! [`ContainerConfig::null_fields`] and written back as `null` while they stay
//! unset.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::canonical::impl_canonical;
use crate::digest::Digest;
use crate::error::Error;
use crate::platform::Platform;

/// Unknown fields of a struct, kept for the round trip.
pub type Extra = BTreeMap<String, Value>;

/// The image config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// When the image was created (RFC 3339, kept as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Who made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture (`amd64`, `arm64`, …). Always written.
    #[serde(default)]
    pub architecture: String,
    /// Operating system (`linux`). Always written.
    #[serde(default)]
    pub os: String,
    /// OS version (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// OS features (Windows).
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    /// CPU variant (`v7`, `v8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// What a container of this image runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    /// The layers' diff_ids. Always written.
    #[serde(default)]
    pub rootfs: RootFs,
    /// One entry per Dockerfile step, including steps that made no layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<History>>,
    /// Fields kiln does not know, kept so they survive a round trip.
    #[serde(flatten)]
    pub extra: Extra,
}

impl_canonical!(ImageConfig, "image config");

impl ImageConfig {
    /// Parses a config blob.
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::json("image config", e))
    }

    /// An empty config for a platform, with `rootfs.type` set to `layers`.
    pub fn for_platform(platform: &Platform) -> ImageConfig {
        ImageConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            os_version: platform.os_version.clone(),
            os_features: platform.os_features.clone(),
            variant: platform.variant.clone(),
            ..ImageConfig::default()
        }
    }

    /// The platform this config says the image is for.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
            variant: self.variant.clone(),
            extra: BTreeMap::new(),
        }
    }

    /// The container config, created empty if absent.
    pub fn config_mut(&mut self) -> &mut ContainerConfig {
        self.config.get_or_insert_with(ContainerConfig::default)
    }

    /// The history, created empty if absent.
    pub fn history_mut(&mut self) -> &mut Vec<History> {
        self.history.get_or_insert_with(Vec::new)
    }

    /// Records a step: appends its diff_id (when it made a layer) and its history entry.
    /// `history.empty_layer` is set from whether `diff_id` is given.
    pub fn push_step(&mut self, diff_id: Option<Digest>, mut history: History) {
        history.empty_layer = if diff_id.is_some() { None } else { Some(true) };
        if let Some(d) = diff_id {
            self.rootfs.diff_ids.push(d);
        }
        self.history_mut().push(history);
    }
}

/// The `rootfs` section: the uncompressed digests of the layers, base first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The diff_id of each layer.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
    /// Fields kiln does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".to_owned(),
            diff_ids: Vec::new(),
            extra: Extra::new(),
        }
    }
}

/// One `history` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When the step ran (RFC 3339, kept as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The command, e.g. `/bin/sh -c #(nop)  CMD ["sh"]` or `RUN /bin/sh -c make`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Who ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// A comment (`buildkit.dockerfile.v0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step made no layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_layer: Option<bool>,
    /// Fields kiln does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A JSON object used as a set member (`ExposedPorts`, `Volumes` values: `{}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyObject {
    /// Whatever was in it (normally nothing).
    #[serde(flatten)]
    pub extra: Extra,
}

/// The container config (`config` in the image config), Docker's field names.
///
/// Docker's extensions to the OCI set (`Healthcheck`, `OnBuild`, `Shell`,
/// `StopTimeout`, `ArgsEscaped`) are first-class; the rest of Docker's
/// fields (`Hostname`, `Image`, `AttachStdin`, …) live in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct ContainerConfig {
    /// `USER`.
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `EXPOSE`: keys like `80/tcp`.
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, EmptyObject>>,
    /// `ENV`: `KEY=value` entries.
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`.
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, EmptyObject>>,
    /// `WORKDIR`.
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    /// `LABEL`.
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `STOPSIGNAL`.
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
    /// Windows: the command line is already escaped.
    #[serde(
        rename = "ArgsEscaped",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub args_escaped: Option<bool>,
    /// `HEALTHCHECK`.
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<Healthcheck>,
    /// `ONBUILD` instructions, as written.
    #[serde(rename = "OnBuild", default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// `SHELL`.
    #[serde(rename = "Shell", default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Seconds to wait before killing the container on stop.
    #[serde(
        rename = "StopTimeout",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_timeout: Option<i64>,
    /// Known fields (by JSON name, e.g. `Entrypoint`) that were `null` in the
    /// source document; written back as `null` while the field is `None`.
    #[serde(skip)]
    pub null_fields: BTreeSet<String>,
    /// Fields kiln does not know, kept so they survive a round trip.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The JSON names of [`ContainerConfig`]'s known fields.
const CONTAINER_CONFIG_FIELDS: &[&str] = &[
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "ArgsEscaped",
    "Healthcheck",
    "OnBuild",
    "Shell",
    "StopTimeout",
];

impl Serialize for ContainerConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.null_fields.is_empty() {
            return ContainerConfig::serialize(self, s);
        }
        let mut value = ContainerConfig::serialize(self, serde_json::value::Serializer)
            .map_err(serde::ser::Error::custom)?;
        if let Value::Object(map) = &mut value {
            for key in &self.null_fields {
                map.entry(key.clone()).or_insert(Value::Null);
            }
        }
        value.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ContainerConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = serde_json::Map::<String, Value>::deserialize(d)?;
        let null_fields = CONTAINER_CONFIG_FIELDS
            .iter()
            .filter(|k| matches!(map.get(**k), Some(Value::Null)))
            .map(|k| (*k).to_owned())
            .collect();
        let mut config =
            ContainerConfig::deserialize(Value::Object(map)).map_err(serde::de::Error::custom)?;
        config.null_fields = null_fields;
        Ok(config)
    }
}

/// `HEALTHCHECK` settings. Durations are nanoseconds, as Docker writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`.
    #[serde(rename = "Test", default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    /// Time between checks (ns).
    #[serde(rename = "Interval", default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// Time a check may take (ns).
    #[serde(rename = "Timeout", default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Grace period after start (ns).
    #[serde(
        rename = "StartPeriod",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub start_period: Option<i64>,
    /// Time between checks during the start period (ns).
    #[serde(
        rename = "StartInterval",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub start_interval: Option<i64>,
    /// Failures in a row before unhealthy.
    #[serde(rename = "Retries", default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// Fields kiln does not know.
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config as `docker build` (classic builder, Docker 20.10) wrote it for
    /// a small image, with the fields kiln does not model.
    const DOCKER_CONFIG: &str = r##"{"architecture":"amd64","config":{"Hostname":"","Domainname":"","User":"app","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"ExposedPorts":{"8080/tcp":{}},"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","APP_HOME=/srv"],"Cmd":["serve","--port","8080"],"Healthcheck":{"Test":["CMD-SHELL","wget -q -O- localhost:8080/health || exit 1"],"Interval":30000000000,"Timeout":5000000000,"StartPeriod":10000000000,"StartInterval":1000000000,"Retries":3},"ArgsEscaped":true,"Image":"sha256:9c6f0724472873bb50a2ae67a9e7adcb57673a183cea8b06eb778dca859181b5","Volumes":{"/data":{}},"WorkingDir":"/srv","Entrypoint":null,"OnBuild":null,"Labels":{"maintainer":"ops@example.com","org.opencontainers.image.source":"https://example.com/app"},"StopSignal":"SIGTERM","StopTimeout":20,"Shell":["/bin/sh","-c"]},"container":"3f6c1b2a9d8e","container_config":{"Hostname":"3f6c1b2a9d8e","Domainname":"","User":"app","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/bin/sh","-c","#(nop) ","CMD [\"serve\" \"--port\" \"8080\"]"],"Image":"sha256:9c6f0724472873bb50a2ae67a9e7adcb57673a183cea8b06eb778dca859181b5","Volumes":null,"WorkingDir":"/srv","Entrypoint":null,"OnBuild":null,"Labels":{}},"created":"2023-02-11T04:46:42.558343068Z","docker_version":"20.10.23","history":[{"created":"2023-02-11T04:46:42.449083344Z","created_by":"/bin/sh -c #(nop) ADD file:40887ab7c06977737e63c215c9bd297c0c74de8d12d16ebdf1c3d40ac392f62d in / "},{"created":"2023-02-11T04:46:42.558343068Z","created_by":"/bin/sh -c #(nop)  CMD [\"serve\"]","empty_layer":true},{"created":"2023-02-12T10:00:00Z","created_by":"RUN /bin/sh -c make # buildkit","comment":"buildkit.dockerfile.v0","author":"someone"}],"os":"linux","os.features":["x"],"variant":"v2","rootfs":{"type":"layers","diff_ids":["sha256:7cd52847ad775a5ddc4b58326cf884beee34544296402c6292ed76474c686d39","sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},"moby.buildkit.buildinfo.v1":"eyJmcm9udGVuZCI6ImRvY2tlcmZpbGUudjAifQ=="}"##;

    /// Found by the `registry` fuzz target: a number in an unknown field that only a float
    /// holds was read one ulp off, so the canonical JSON of the parsed config did not parse
    /// back to it, and each pass gave other bytes (and another digest).
    #[test]
    fn canonical_json_of_unknown_numbers_is_stable() {
        let bytes = br#"{"architecture":"amd64","os":"linux","config":{"Healthcheck":{"Retries":3,"Inrtleav":300000000500000000000000000000000000}},"x":[0.30000000000000004,1e-320,-0.0,18446744073709551616]}"#;
        let parsed = ImageConfig::parse(bytes).unwrap();
        let canonical = parsed.to_canonical_json().unwrap();
        let again = ImageConfig::parse(&canonical).unwrap();
        assert_eq!(again, parsed);
        assert_eq!(again.to_canonical_json().unwrap(), canonical);
    }

    #[test]
    fn docker_config_round_trips_with_unknown_fields_and_nulls() {
        let config = ImageConfig::parse(DOCKER_CONFIG.as_bytes()).unwrap();
        let c = config.config.as_ref().unwrap();
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(c.entrypoint, None);
        assert!(c.null_fields.contains("Entrypoint") && c.null_fields.contains("OnBuild"));
        assert_eq!(c.healthcheck.as_ref().unwrap().retries, Some(3));
        assert_eq!(c.stop_timeout, Some(20));
        assert!(c.extra.contains_key("Hostname") && c.extra.contains_key("Image"));
        assert!(config.extra.contains_key("container_config"));
        assert!(config.extra.contains_key("docker_version"));
        assert_eq!(config.rootfs.diff_ids.len(), 2);
        assert_eq!(config.history.as_ref().unwrap()[1].empty_layer, Some(true));

        let written = config.to_canonical_json().unwrap();
        let before: Value = serde_json::from_str(DOCKER_CONFIG).unwrap();
        let after: Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(before, after);
        assert_eq!(ImageConfig::parse(&written).unwrap(), config);
    }

    #[test]
    fn canonical_json_is_deterministic_across_runs() {
        let a = ImageConfig::parse(DOCKER_CONFIG.as_bytes()).unwrap();
        let digests: BTreeSet<_> = (0..4)
            .map(|_| {
                ImageConfig::parse(&a.to_canonical_json().unwrap())
                    .unwrap()
                    .canonical()
                    .unwrap()
                    .digest
            })
            .collect();
        assert_eq!(digests.len(), 1);
        let text = String::from_utf8(a.to_canonical_json().unwrap()).unwrap();
        assert!(!text.contains('\n'));
    }

    #[test]
    fn setting_a_null_field_writes_the_value_and_clearing_it_writes_null_again() {
        let mut config = ImageConfig::parse(DOCKER_CONFIG.as_bytes()).unwrap();
        config.config_mut().entrypoint = Some(vec!["/entry".to_owned()]);
        let v: Value = serde_json::from_slice(&config.to_canonical_json().unwrap()).unwrap();
        assert_eq!(v["config"]["Entrypoint"], serde_json::json!(["/entry"]));
        config.config_mut().entrypoint = None;
        let v: Value = serde_json::from_slice(&config.to_canonical_json().unwrap()).unwrap();
        assert_eq!(v["config"]["Entrypoint"], Value::Null);
    }

    #[test]
    fn a_fresh_config_writes_only_what_is_set() {
        let mut config = ImageConfig::for_platform(&Platform::new("linux", "arm64"));
        config.config_mut().cmd = Some(vec!["sh".to_owned()]);
        config.push_step(
            Some(Digest::of(b"layer")),
            History {
                created_by: Some("COPY . /".to_owned()),
                ..History::default()
            },
        );
        config.push_step(
            None,
            History {
                created_by: Some("CMD [\"sh\"]".to_owned()),
                ..History::default()
            },
        );
        let text = String::from_utf8(config.to_canonical_json().unwrap()).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"architecture":"arm64","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["{}"]}},"history":[{{"created_by":"COPY . /"}},{{"created_by":"CMD [\"sh\"]","empty_layer":true}}]}}"#,
                Digest::of(b"layer")
            )
        );
        assert_eq!(config.platform().to_string(), "linux/arm64");
    }

    #[test]
    fn an_oci_config_with_nothing_optional_round_trips() {
        let json =
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config = ImageConfig::parse(json.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(config.to_canonical_json().unwrap()).unwrap(),
            json
        );
    }

    #[test]
    fn a_bad_diff_id_is_a_json_error_naming_the_config() {
        let err = ImageConfig::parse(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:XYZ"]}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("invalid image config JSON"),
            "{err}"
        );
    }
}
