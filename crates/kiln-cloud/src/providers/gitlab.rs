//! GitLab CI: the job's own registry from `CI_REGISTRY`, with `CI_REGISTRY_USER` and
//! `CI_REGISTRY_PASSWORD`, or the job token.

use super::{env, host_name, Fetched};
use kiln_registry::credentials::{hostname_of_key, Credential, Secret};
use std::time::{Duration, SystemTime};

/// Whether `registry` is the job's registry (`CI_REGISTRY`, compared by host name as
/// kaniko's GitLab helper does).
pub(super) fn is_ci_registry(registry: &str) -> bool {
    env("CI_REGISTRY")
        .is_some_and(|ci| host_name(hostname_of_key(&ci)).eq_ignore_ascii_case(host_name(registry)))
}

pub(super) fn credential(registry: &str) -> Result<Fetched, String> {
    let (username, password) = match (
        env("CI_REGISTRY_USER"),
        env("CI_REGISTRY_PASSWORD"),
        env("CI_JOB_TOKEN"),
    ) {
        (Some(user), Some(password), _) => (user, password),
        (_, _, Some(token)) => ("gitlab-ci-token".to_string(), token),
        _ => {
            return Err(format!(
                "{registry} is the job's CI_REGISTRY, but neither CI_REGISTRY_USER and \
                 CI_REGISTRY_PASSWORD nor CI_JOB_TOKEN is set"
            ))
        }
    };
    Ok(Fetched {
        credential: Credential::Basic {
            username,
            password: Secret::new(password),
        },
        // The variables last as long as the job.
        expires: SystemTime::now() + Duration::from_secs(365 * 24 * 3600),
    })
}
