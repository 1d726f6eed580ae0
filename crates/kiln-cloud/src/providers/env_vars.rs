//! The kaniko fork's `env` helper: a login from `KANIKO_<HOST>_USER` and
//! `KANIKO_<HOST>_PASSWORD`, where HOST is the registry's name upper-cased, with `-` and `.` as
//! `_`, tried from the whole name down to its last label (`registry.example.com`:
//! `KANIKO_REGISTRY_EXAMPLE_COM_USER`, then `KANIKO_EXAMPLE_COM_USER`, then `KANIKO_COM_USER`),
//! so one pair can serve a whole domain. A name with a port is tried with it (as the fork does)
//! and then without it, since no shell can set a variable with `:` in its name.

use super::{host_name, Fetched};

/// The user and password the variables give for `registry`, if any pair is set.
pub(super) fn lookup(registry: &str) -> Option<(String, String)> {
    lookup_in(registry, |name| std::env::var(name).ok())
}

fn lookup_in(registry: &str, var: impl Fn(&str) -> Option<String>) -> Option<(String, String)> {
    // Docker Hub is `index.docker.io` to the fork's helper, whatever the image names.
    let registry = match registry {
        "docker.io" | "registry-1.docker.io" => "index.docker.io",
        other => other,
    };
    let mut names = vec![registry];
    if host_name(registry) != registry {
        names.push(host_name(registry));
    }
    for name in names {
        let upper = name.replace('-', "_").to_ascii_uppercase();
        let labels: Vec<&str> = upper.split('.').collect();
        for start in 0..labels.len() {
            let suffix = labels[start..].join("_");
            let Some(user) = var(&format!("KANIKO_{suffix}_USER")) else {
                continue;
            };
            if let Some(password) = var(&format!("KANIKO_{suffix}_PASSWORD")) {
                return Some((user, password));
            }
        }
    }
    None
}

pub(super) fn credential(registry: &str) -> Result<Fetched, String> {
    let (username, password) = lookup(registry).ok_or_else(|| {
        format!("no KANIKO_<HOST>_USER and KANIKO_<HOST>_PASSWORD variables for {registry}")
    })?;
    Ok(Fetched::from_variables(username, password))
}

#[cfg(test)]
mod tests {
    use super::lookup_in;
    use std::collections::BTreeMap;

    fn lookup(registry: &str, vars: &[(&str, &str)]) -> Option<(String, String)> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        lookup_in(registry, |name| vars.get(name).cloned())
    }

    fn pair(user: &str, password: &str) -> Option<(String, String)> {
        Some((user.to_string(), password.to_string()))
    }

    #[test]
    fn variables_from_the_whole_name_down_to_its_last_label() {
        let vars = [
            ("KANIKO_EXAMPLE_COM_USER", "domain"),
            ("KANIKO_EXAMPLE_COM_PASSWORD", "pw1"),
            ("KANIKO_MY_REGISTRY_EXAMPLE_COM_USER", "host"),
            ("KANIKO_MY_REGISTRY_EXAMPLE_COM_PASSWORD", "pw2"),
            // A user without a password is passed over.
            ("KANIKO_OTHER_EXAMPLE_COM_USER", "half"),
        ];
        assert_eq!(
            lookup("my-registry.example.com", &vars),
            pair("host", "pw2")
        );
        assert_eq!(lookup("other.example.com", &vars), pair("domain", "pw1"));
        assert_eq!(lookup("example.com", &vars), pair("domain", "pw1"));
        assert_eq!(lookup("example.org", &vars), None);
        // With a port: the name with it, then without it.
        assert_eq!(
            lookup("my-registry.example.com:5000", &vars),
            pair("host", "pw2")
        );
        assert_eq!(
            lookup(
                "my-registry.example.com:5000",
                &[
                    ("KANIKO_MY_REGISTRY_EXAMPLE_COM:5000_USER", "port"),
                    ("KANIKO_MY_REGISTRY_EXAMPLE_COM:5000_PASSWORD", "pw3"),
                ]
            ),
            pair("port", "pw3")
        );
        // Docker Hub.
        let hub = [
            ("KANIKO_DOCKER_IO_USER", "hub"),
            ("KANIKO_DOCKER_IO_PASSWORD", "pw4"),
        ];
        assert_eq!(lookup("registry-1.docker.io", &hub), pair("hub", "pw4"));
        assert_eq!(lookup("docker.io", &hub), pair("hub", "pw4"));
    }
}
