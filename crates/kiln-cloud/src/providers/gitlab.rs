//! GitLab CI: the job's own registry from `CI_REGISTRY`, with `CI_REGISTRY_USER` and
//! `CI_REGISTRY_PASSWORD`, or the job token; and the group's dependency proxy from
//! `CI_DEPENDENCY_PROXY_SERVER`, with `CI_DEPENDENCY_PROXY_USER` and
//! `CI_DEPENDENCY_PROXY_PASSWORD` (what the runner's own `docker login` to it uses), so
//! `FROM ${CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX}/alpine` pulls with no docker config.

use super::{env, host_name, Fetched};
use kiln_registry::credentials::hostname_of_key;

/// Whether `registry` is the host in variable `name` (compared by host name, as kaniko's
/// GitLab helper compares `CI_REGISTRY`: `gitlab.com:443` and `gitlab.com` are one).
fn names(name: &str, registry: &str) -> bool {
    env(name).is_some_and(|value| {
        host_name(hostname_of_key(&value)).eq_ignore_ascii_case(host_name(registry))
    })
}

/// Whether `registry` is the job's registry or its group's dependency proxy.
pub(super) fn is_gitlab_registry(registry: &str) -> bool {
    names("CI_REGISTRY", registry) || names("CI_DEPENDENCY_PROXY_SERVER", registry)
}

pub(super) fn credential(registry: &str) -> Result<Fetched, String> {
    // The dependency proxy's variables for its host, unless that is also CI_REGISTRY's.
    let (server_var, user_var, password_var) =
        if !names("CI_REGISTRY", registry) && names("CI_DEPENDENCY_PROXY_SERVER", registry) {
            (
                "CI_DEPENDENCY_PROXY_SERVER",
                "CI_DEPENDENCY_PROXY_USER",
                "CI_DEPENDENCY_PROXY_PASSWORD",
            )
        } else {
            ("CI_REGISTRY", "CI_REGISTRY_USER", "CI_REGISTRY_PASSWORD")
        };
    let found = match (env(user_var), env(password_var)) {
        (Some(user), Some(password)) => Some((user, password)),
        _ => env("CI_JOB_TOKEN").map(|token| ("gitlab-ci-token".to_string(), token)),
    }
    .ok_or_else(|| {
        format!(
            "{registry} is the job's {server_var}, but neither {user_var} and {password_var} nor \
             CI_JOB_TOKEN is set"
        )
    });
    let (username, password) = found?;
    Ok(Fetched::from_variables(username, password))
}
