//! Image-config semantics of the metadata instructions (ENV, LABEL, EXPOSE, CMD, …), the
//! history entries, and the timestamps `--reproducible` fixes.

use kiln_dockerfile::instructions::{CommandLine, Health};
use kiln_oci::ImageConfig;
use kiln_oci::{EmptyObject, Healthcheck, History};

/// The shell a stage runs shell-form commands with unless SHELL says otherwise.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// The config's environment as pairs.
pub fn env_pairs(config: &ImageConfig) -> Vec<(String, String)> {
    config
        .config
        .as_ref()
        .and_then(|c| c.env.as_ref())
        .map(|env| {
            env.iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (kv.clone(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Sets `key=value` in the config's environment, in place when the key exists.
pub fn set_env(config: &mut ImageConfig, key: &str, value: &str) {
    let env = config.config_mut().env.get_or_insert_with(Vec::new);
    let entry = format!("{key}={value}");
    match env
        .iter_mut()
        .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key)
    {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

/// The working directory (WORKDIR, else `/`).
pub fn working_dir(config: &ImageConfig) -> String {
    config
        .config
        .as_ref()
        .and_then(|c| c.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// The stage's shell (SHELL, else `/bin/sh -c`).
pub fn shell(config: &ImageConfig) -> Vec<String> {
    config
        .config
        .as_ref()
        .and_then(|c| c.shell.clone())
        .unwrap_or_else(|| DEFAULT_SHELL.iter().map(|s| s.to_string()).collect())
}

/// A command line as the config stores it: exec form as is, shell form wrapped in the shell.
pub fn command_vector(config: &ImageConfig, line: &CommandLine) -> Vec<String> {
    match line {
        CommandLine::Exec(args) => args.clone(),
        CommandLine::Shell(text) => {
            let mut v = shell(config);
            v.push(text.clone());
            v
        }
    }
}

/// EXPOSE entries as config keys: `80` → `80/tcp`, ranges expanded as docker does.
pub fn port_keys(spec: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_owned()),
    };
    // `ip:host:container` forms: only the container port counts.
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let bad = || format!("invalid port {spec:?}");
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Records EXPOSE ports.
pub fn expose(config: &mut ImageConfig, keys: Vec<String>) {
    let ports = config
        .config_mut()
        .exposed_ports
        .get_or_insert_with(Default::default);
    for key in keys {
        ports.insert(key, EmptyObject::default());
    }
}

/// Records VOLUME paths.
pub fn volumes(config: &mut ImageConfig, paths: &[String]) {
    let volumes = config
        .config_mut()
        .volumes
        .get_or_insert_with(Default::default);
    for path in paths {
        volumes.insert(path.clone(), EmptyObject::default());
    }
}

/// HEALTHCHECK as the config stores it.
pub fn healthcheck(health: &Health) -> Healthcheck {
    match health {
        Health::None => Healthcheck {
            test: Some(vec!["NONE".into()]),
            ..Healthcheck::default()
        },
        Health::Cmd {
            test,
            interval_ns,
            timeout_ns,
            start_period_ns,
            start_interval_ns,
            retries,
        } => {
            let mut h = Healthcheck {
                test: Some(test.clone()),
                interval: *interval_ns,
                timeout: *timeout_ns,
                start_period: *start_period_ns,
                retries: *retries,
                ..Healthcheck::default()
            };
            h.start_interval = *start_interval_ns;
            h
        }
    }
}

/// A history entry as BuildKit writes one.
pub fn history(created: &str, created_by: String) -> History {
    History {
        created: Some(created.to_owned()),
        created_by: Some(created_by),
        comment: Some("buildkit.dockerfile.v0".into()),
        ..History::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(port_keys("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(port_keys("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(port_keys("8000-8002").unwrap().len(), 3);
        assert!(port_keys("x").is_err());
    }

    #[test]
    fn env_set_in_place() {
        let mut c = ImageConfig::default();
        set_env(&mut c, "PATH", "/bin");
        set_env(&mut c, "A", "1");
        set_env(&mut c, "PATH", "/usr/bin");
        assert_eq!(
            env_pairs(&c),
            vec![("PATH".into(), "/usr/bin".into()), ("A".into(), "1".into())]
        );
    }
}
