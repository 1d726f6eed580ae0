//! The clouds' built-in credentials and object-store contexts, end to end: the kiln binary gets
//! credentials from a cloud's emulator (moto for STS, ECR and S3; local servers that follow
//! Google's and Microsoft's documented protocols), and the real Distribution registry, with
//! token auth over TLS, must accept the push. skopeo then reads the image back with the same
//! credentials. No credential may appear in kiln's output at debug verbosity.

mod common;

use common::{assert_success, context, unpack};
use kiln_test::{
    generate_account_key, AcrFront, AwsContainerCredentials, Azurite, AzuriteOptions, BaseImage,
    EntraId, EntraOptions, GoogleCloud, GoogleEndpoint, GoogleOptions, GoogleTokenSource, LayerTar,
    ManifestFormat, Moto, PushOptions, Registry, RegistryOptions, TestCa, TokenAuthOptions,
    JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A TLS registry with token auth that admits exactly one user (and anyone to pull
/// `busybox`), holding the busybox base image.
struct CloudRegistry {
    registry: Registry,
    dir: tempfile::TempDir,
}

impl CloudRegistry {
    fn start(user: &str, password: &str) -> CloudRegistry {
        CloudRegistry {
            registry: token_registry(true, user, password),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn host(&self) -> String {
        self.registry.host()
    }

    fn docker_config(&self, json: &str) -> PathBuf {
        docker_dir(self.dir.path(), json)
    }

    /// [`push_app`] with the registry's CA trusted through `SSL_CERT_FILE` (as a pod would
    /// mount it).
    fn build_and_push(&self, tag: &str, config_json: &str, env: &[(&str, String)]) -> Output {
        let mut env = env.to_vec();
        env.push((
            "SSL_CERT_FILE",
            self.registry.ca_pem_path().unwrap().display().to_string(),
        ));
        push_app(
            &self.host(),
            tag,
            &self.docker_config(config_json),
            &env,
            &self.dir.path().join("kiln"),
        )
    }

    /// `kiln build --credential-helpers HELPERS` of a one-file scratch image, pushed to
    /// `HOST/app:TAG`.
    fn push_scratch_with_helpers(
        &self,
        tag: &str,
        config_json: &str,
        env: &[(&str, String)],
        helpers: &str,
    ) -> Output {
        let ctx = context("FROM scratch\nCOPY f /f\n", &[("f", tag)]);
        kiln_command(&self.docker_config(config_json), env)
            .env("SSL_CERT_FILE", self.registry.ca_pem_path().unwrap())
            .args(["build", "--credential-helpers", helpers, "--context"])
            .arg(ctx.path())
            .args(["--destination", &format!("{}/app:{tag}", self.host())])
            .arg("--kiln-dir")
            .arg(self.dir.path().join("kiln"))
            .output()
            .unwrap()
    }

    /// skopeo's view of `HOST/app:TAG`, read with `user`/`password`.
    fn inspect(&self, tag: &str, user: &str, password: &str) -> serde_json::Value {
        common::inspect_remote(
            &format!("{}/app:{tag}", self.host()),
            self.registry.cert_dir().unwrap(),
            user,
            password,
        )
    }
}

/// A docker config holding `json` (`{}`: nothing) in `parent`, for the build's
/// `DOCKER_CONFIG`.
fn docker_dir(parent: &Path, json: &str) -> PathBuf {
    let dir = parent.join("docker");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), json).unwrap();
    dir
}

/// `kiln build` (debug verbosity) of a one-file context `FROM HOST/busybox`, pushed to
/// `HOST/app:TAG`.
fn push_app(
    host: &str,
    tag: &str,
    docker: &Path,
    env: &[(&str, String)],
    kiln_dir: &Path,
) -> Output {
    let ctx = context(
        &format!("FROM {host}/busybox:latest\nCOPY hello.txt /hello.txt\n"),
        &[("hello.txt", tag)],
    );
    kiln_command(docker, env)
        .args(["build", "--context"])
        .arg(ctx.path())
        .args(["--destination", &format!("{host}/app:{tag}")])
        .args(["--verbosity", "debug", "--kiln-dir"])
        .arg(kiln_dir)
        .output()
        .expect("kiln runs")
}

/// `kiln build SOURCE… --no-push` (debug verbosity, an empty docker config) into the OCI layout
/// `dir/layout`, which it returns (emptied first).
fn build_into_layout(dir: &Path, env: &[(&str, String)], source: &[&str]) -> (Output, PathBuf) {
    let layout = dir.join("layout");
    let _ = std::fs::remove_dir_all(&layout);
    let out = kiln_command(&docker_dir(dir, "{}"), env)
        .arg("build")
        .args(source)
        .args(["--no-push", "--verbosity", "debug", "--oci-layout-path"])
        .arg(&layout)
        .arg("--kiln-dir")
        .arg(dir.join("kiln"))
        .output()
        .expect("kiln runs");
    (out, layout)
}

/// The kiln binary with a clean environment of cloud variables: only `env`, so nothing of the
/// test runner's (or this machine's) credentials leaks in, and no SDK reaches for a real
/// metadata endpoint.
fn kiln_command(docker_config: &Path, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    for (name, _) in std::env::vars() {
        if [
            "AWS_",
            "AZURE_",
            "GOOGLE_",
            "GCE_",
            "CI_",
            "S3_",
            "CLOUDSDK_",
            "KANIKO_",
            "DOCKER_AUTH_CONFIG",
        ]
        .iter()
        .any(|p| name.starts_with(p))
        {
            command.env_remove(name);
        }
    }
    command
        .env("DOCKER_CONFIG", docker_config)
        .env("HOME", docker_config)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("GCE_METADATA_HOST", "127.0.0.1:9")
        .env_remove("SOURCE_DATE_EPOCH");
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts none of `secrets` is in the output.
fn assert_no_secret(out: &Output, secrets: &[impl AsRef<str>]) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in secrets {
        assert!(
            !all.contains(secret.as_ref()),
            "a secret is in kiln's output:\n{all}"
        );
    }
}

/// A web identity token file, as EKS mounts it for IRSA.
fn web_identity_file(dir: &Path) -> PathBuf {
    let path = dir.join("eks-token");
    std::fs::write(
        &path,
        Moto::web_identity_token("system:serviceaccount:ci:kiln"),
    )
    .unwrap();
    path
}

/// IRSA: the web identity token is exchanged at STS (moto) for a role's keys, those at ECR
/// for a registry password, and the registry takes it. The config names `ecr-login` for the
/// registry (a non-ECR host name here), and no helper binary exists.
#[test]
fn ecr_credentials_from_web_identity_push() {
    let account = "111122223333";
    let password = Moto::ecr_password(account);
    let registry = CloudRegistry::start("AWS", &password);
    let moto = Moto::start().unwrap();
    let token_file = web_identity_file(registry.dir.path());
    let config = format!(
        r#"{{"credHelpers": {{"{}": "ecr-login"}}}}"#,
        registry.host()
    );
    let env = [
        (
            "AWS_ROLE_ARN",
            format!("arn:aws:iam::{account}:role/kiln-push"),
        ),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("AWS_REGION", "eu-west-1".to_string()),
        ("AWS_ENDPOINT_URL", moto.endpoint_url()),
    ];
    let out = registry.build_and_push("ecr", &config, &env);
    assert_success(&out);
    assert_no_secret(&out, &[&password]);
    let inspected = registry.inspect("ecr", "AWS", &password);
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 2);
    // moto saw the web identity exchange and the token request.
    let log = moto.log();
    assert!(
        log.contains("AssumeRoleWithWebIdentity") || log.contains("POST / HTTP"),
        "{log}"
    );

    // The same without any AWS credentials: a clear error naming the provider and what to
    // set, and nothing pushed.
    let out = registry.build_and_push(
        "ecr-none",
        &config,
        &[("AWS_REGION", "eu-west-1".to_string())],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Amazon ECR credentials") && err.contains("AWS_WEB_IDENTITY_TOKEN_FILE"),
        "{err}"
    );
    let missing = kiln_test::skopeo([
        "inspect".to_string(),
        format!(
            "--cert-dir={}",
            registry.registry.cert_dir().unwrap().display()
        ),
        format!("--creds=AWS:{password}"),
        format!("docker://{}/app:ecr-none", registry.host()),
    ]);
    assert!(!missing.status.success(), "nothing was pushed");
}

/// The two other ways a pod or a laptop gets AWS keys: a named profile in the shared config
/// files (keys and region from the files alone), and EKS Pod Identity's container credentials
/// endpoint (the role's keys behind an authorization token). The registry admits only the
/// password of the account the keys belong to.
#[test]
fn ecr_credentials_from_profile_and_pod_identity() {
    let moto = Moto::start().unwrap();

    // A profile: AWS_PROFILE names it; the region is the profile's.
    let password = Moto::ecr_password(Moto::DEFAULT_ACCOUNT);
    let registry = CloudRegistry::start("AWS", &password);
    let config = format!(
        r#"{{"credHelpers": {{"{}": "ecr-login"}}}}"#,
        registry.host()
    );
    let aws = registry.dir.path().join("aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("config"),
        "[default]\nregion = us-west-2\n\n[profile ci]\nregion = eu-north-1\n",
    )
    .unwrap();
    let profile_secret = "kiln-profile-secret-key";
    std::fs::write(
        aws.join("credentials"),
        format!(
            "[ci]\naws_access_key_id = AKIAKILNTESTKEY00005\naws_secret_access_key = {profile_secret}\n"
        ),
    )
    .unwrap();
    let env = [
        ("AWS_PROFILE", "ci".to_string()),
        ("AWS_CONFIG_FILE", aws.join("config").display().to_string()),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            aws.join("credentials").display().to_string(),
        ),
        ("AWS_ENDPOINT_URL", moto.endpoint_url()),
    ];
    let out = registry.build_and_push("profile", &config, &env);
    assert_success(&out);
    assert_no_secret(&out, &[&password, profile_secret]);
    registry.inspect("profile", "AWS", &password);

    // EKS Pod Identity: the agent hands out the role's keys (here moto's STS keys for a role
    // in another account, so only they can unlock that account's registry).
    let account = "210987654321";
    let role_keys = moto
        .assume_role_with_web_identity(
            &format!("arn:aws:iam::{account}:role/kiln-pod-identity"),
            "kiln",
            &Moto::web_identity_token("system:serviceaccount:ci:kiln"),
        )
        .unwrap();
    let password = Moto::ecr_password(account);
    let registry = CloudRegistry::start("AWS", &password);
    let config = format!(
        r#"{{"credHelpers": {{"{}": "ecr-login"}}}}"#,
        registry.host()
    );
    let agent_token = "kiln-pod-identity-agent-token";
    let agent = AwsContainerCredentials::start(role_keys.clone(), agent_token).unwrap();
    let token_file = registry.dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, agent_token).unwrap();
    let env = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.full_uri()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("AWS_REGION", "eu-west-1".to_string()),
        ("AWS_ENDPOINT_URL", moto.endpoint_url()),
    ];
    let out = registry.build_and_push("pod-identity", &config, &env);
    assert_success(&out);
    assert_no_secret(
        &out,
        &[
            password.as_str(),
            agent_token,
            role_keys.secret_access_key.as_str(),
            role_keys.session_token.as_str(),
        ],
    );
    registry.inspect("pod-identity", "AWS", &password);
    let requests = agent.requests();
    assert!(
        !requests.is_empty()
            && requests
                .iter()
                .all(|r| r.method == "GET" && r.authorization.as_deref() == Some(agent_token)),
        "{requests:?}"
    );

    // A token the agent refuses: the build fails naming the provider, and pushes nothing.
    std::fs::write(&token_file, "a-stale-token").unwrap();
    let out = registry.build_and_push("pod-identity-refused", &config, &env);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Amazon ECR credentials")
            && err.contains("401")
            && err.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
        "{err}"
    );
    assert!(!err.contains("a-stale-token"), "{err}");
}

/// Static keys from the environment, and `--credential-helpers` turning the built-in off.
#[test]
fn ecr_static_keys_and_credential_helpers_flag() {
    let password = Moto::ecr_password(Moto::DEFAULT_ACCOUNT);
    let registry = CloudRegistry::start("AWS", &password);
    let moto = Moto::start().unwrap();
    let config = format!(
        r#"{{"credHelpers": {{"{}": "ecr-login"}}}}"#,
        registry.host()
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIAKILNTESTKEY00001".to_string()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "kiln-test-secret-access-key".to_string(),
        ),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", moto.endpoint_url()),
    ];
    let out = registry.build_and_push("keys", &config, &env);
    assert_success(&out);
    assert_no_secret(&out, &[&password, "kiln-test-secret-access-key"]);
    registry.inspect("keys", "AWS", &password);

    // Turned off: the config's helper is then a binary that does not exist.
    let out = registry.push_scratch_with_helpers("off", &config, &env, "gcr");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("docker-credential-ecr-login"), "{err}");

    // An unknown name is refused, naming the flag.
    let out = kiln_command(&registry.docker_config("{}"), &[])
        .args(["build", "--credential-helpers", "ecr,docker", "--no-push"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("--credential-helpers") && err.contains("docker"),
        "{err}"
    );
}

/// GitLab CI: the job's registry from `CI_REGISTRY`, with the job token or the registry user,
/// and no config.json at all.
#[test]
fn gitlab_ci_variables_push() {
    let token = "glcbt-kiln-job-token-0123456789";
    let registry = CloudRegistry::start("gitlab-ci-token", token);
    let env = [
        ("CI_REGISTRY", registry.host()),
        ("CI_JOB_TOKEN", token.to_string()),
    ];
    let out = registry.build_and_push("job", "{}", &env);
    assert_success(&out);
    assert_no_secret(&out, &[token]);
    registry.inspect("job", "gitlab-ci-token", token);

    // CI_REGISTRY_USER/PASSWORD win over the job token.
    let other = CloudRegistry::start("deployer", "deploy-password-42");
    let env = [
        ("CI_REGISTRY", format!("https://{}", other.host())),
        ("CI_REGISTRY_USER", "deployer".to_string()),
        ("CI_REGISTRY_PASSWORD", "deploy-password-42".to_string()),
        ("CI_JOB_TOKEN", token.to_string()),
    ];
    let out = other.build_and_push("user", "{}", &env);
    assert_success(&out);
    assert_no_secret(&out, &["deploy-password-42", token]);
    other.inspect("user", "deployer", "deploy-password-42");

    // Another registry is not the job's: no credentials go there, so the push is refused.
    let env = [
        ("CI_REGISTRY", "gitlab.example.com:5050".to_string()),
        ("CI_JOB_TOKEN", token.to_string()),
    ];
    let out = registry.build_and_push("elsewhere", "{}", &env);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert_no_secret(&out, &[token]);

    // The group's dependency proxy (a registry whose every pull needs the proxy's login): the
    // base named with CI_DEPENDENCY_PROXY_SERVER's prefix pulls with the proxy's variables.
    let proxy_password = "dependency-proxy-password-7";
    let proxy = Registry::start(
        RegistryOptions::plain()
            .tls()
            .token_auth(TokenAuthOptions::new().user("gitlab-ci-token", proxy_password)),
    )
    .unwrap();
    BaseImage::busybox()
        .unwrap()
        .push(
            &proxy,
            "group/dependency_proxy/containers/busybox:latest",
            &PushOptions::new(ManifestFormat::V2s2).creds("gitlab-ci-token", proxy_password),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(
        &format!(
            "FROM {}/group/dependency_proxy/containers/busybox:latest\nRUN true\n",
            proxy.addr()
        ),
        &[],
    );
    let ctx_arg = ["--context", ctx.path().to_str().unwrap()];
    let mut env = vec![
        ("CI_DEPENDENCY_PROXY_SERVER", format!("{}", proxy.addr())),
        ("CI_DEPENDENCY_PROXY_USER", "gitlab-ci-token".to_string()),
        ("CI_DEPENDENCY_PROXY_PASSWORD", proxy_password.to_string()),
        (
            "SSL_CERT_FILE",
            proxy.ca_pem_path().unwrap().display().to_string(),
        ),
    ];
    let (out, layout) = build_into_layout(dir.path(), &env, &ctx_arg);
    assert_success(&out);
    assert_no_secret(&out, &[proxy_password]);
    assert!(layout.join("index.json").is_file());
    // Without the proxy's variables the pull is refused.
    env.retain(|(name, _)| {
        !["CI_DEPENDENCY_PROXY_USER", "CI_DEPENDENCY_PROXY_PASSWORD"].contains(name)
    });
    let (out, _) = build_into_layout(dir.path(), &env, &ctx_arg);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("CI_DEPENDENCY_PROXY_USER"), "{err}");
}

/// The kaniko fork's two variables: `DOCKER_AUTH_CONFIG`'s `auths` before the docker config
/// (a malformed value warned of and left out, as docker does), and its `env` helper's
/// `KANIKO_<HOST>_USER`/`_PASSWORD`, off with `--credential-helpers` not naming `env`.
#[test]
fn docker_auth_config_and_kaniko_host_variables() {
    let password = "variable-password-31";
    let registry = CloudRegistry::start("pusher", password);
    let basic = |user: &str, password: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    };
    // The config file's login for the registry is wrong: only the variable's can push.
    let stale = format!(
        r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
        registry.host(),
        basic("pusher", "stale-password")
    );
    let variable = format!(
        r#"{{"auths": {{"https://{}/v1/": {{"auth": "{}"}}}}}}"#,
        registry.host(),
        basic("pusher", password)
    );
    let out = registry.build_and_push(
        "auth-config",
        &stale,
        &[("DOCKER_AUTH_CONFIG", variable.clone())],
    );
    assert_success(&out);
    assert_no_secret(&out, &[password, &basic("pusher", password)]);
    registry.inspect("auth-config", "pusher", password);

    // Malformed: a warning naming the variable (never its value), and the file's login used.
    let good = format!(
        r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
        registry.host(),
        basic("pusher", password)
    );
    let out = registry.build_and_push(
        "auth-config-bad",
        &good,
        &[(
            "DOCKER_AUTH_CONFIG",
            r#"{"auths": {"x": {"auth": "not-base64-secret!"}}}"#.to_string(),
        )],
    );
    assert_success(&out);
    let err = stderr(&out);
    assert!(
        err.contains("DOCKER_AUTH_CONFIG is not a valid docker auth config")
            && !err.contains("not-base64-secret"),
        "{err}"
    );

    // KANIKO_<HOST>_USER/_PASSWORD: the host 127.0.0.1 without its port, from its last three
    // labels (`0.0.1`).
    let variables = [
        ("KANIKO_0_0_1_USER", "pusher".to_string()),
        ("KANIKO_0_0_1_PASSWORD", password.to_string()),
    ];
    let out = registry.build_and_push("host-variables", "{}", &variables);
    assert_success(&out);
    assert_no_secret(&out, &[password]);
    registry.inspect("host-variables", "pusher", password);

    // The `env` helper off: the variables are not read and the push is refused.
    let out = registry.push_scratch_with_helpers("env-off", "{}", &variables, "ecr,gcr");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("401") || err.contains("UNAUTHORIZED"), "{err}");
}

/// A tar.gz context in moto's S3, with kaniko's `S3_ENDPOINT`/`S3_FORCE_PATH_STYLE`; a
/// missing object fails naming it.
#[test]
fn s3_context() {
    let moto = Moto::start().unwrap();
    moto.create_bucket("contexts").unwrap();
    let tarball = context_tarball(
        "FROM scratch\nCOPY app/ /app/\n",
        &[("app/main.txt", "from s3\n")],
    );
    moto.put_object("contexts", "team/app.tar.gz", &tarball)
        .unwrap();
    moto.put_object("contexts", "context.tar.gz", &tarball)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIAKILNTESTKEY00002".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "s3-secret-never-shown".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("S3_ENDPOINT", moto.endpoint_url()),
        ("S3_FORCE_PATH_STYLE", "true".to_string()),
    ];
    // The second read with IRSA's web identity instead of static keys (the chain ECR uses).
    let token_file = web_identity_file(dir.path());
    let irsa = [
        (
            "AWS_ROLE_ARN",
            "arn:aws:iam::111122223333:role/kiln-read".to_string(),
        ),
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", moto.endpoint_url()),
        ("S3_ENDPOINT", moto.endpoint_url()),
        ("S3_FORCE_PATH_STYLE", "true".to_string()),
    ];
    for (spec, env) in [
        ("s3://contexts/team/app.tar.gz", &env[..]),
        ("s3://contexts", &irsa[..]),
    ] {
        let (out, layout) = build_into_layout(dir.path(), env, &["--context", spec]);
        assert_success(&out);
        assert_no_secret(&out, &["s3-secret-never-shown"]);
        assert_eq!(unpack(&layout).read("app/main.txt"), "from s3\n", "{spec}");
    }
    // Nothing of the download is left in the kiln dir.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("kiln/contexts"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let (out, _) = build_into_layout(
        dir.path(),
        &env,
        &["--context", "s3://contexts/nope.tar.gz"],
    );
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("s3://contexts/nope.tar.gz"),
        "{err}"
    );
}

/// A gzipped tar of a Dockerfile and files.
fn context_tarball(dockerfile: &str, files: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = LayerTar::new()
        .file("Dockerfile", 0o644, (0, 0), dockerfile.as_bytes())
        .unwrap();
    let mut dirs = std::collections::BTreeSet::new();
    for (name, _) in files {
        if let Some((dir, _)) = name.rsplit_once('/') {
            dirs.insert(dir.to_string());
        }
    }
    for dir in dirs {
        tar = tar.dir(&dir, 0o755, (0, 0)).unwrap();
    }
    for (name, content) in files {
        tar = tar.file(name, 0o644, (0, 0), content.as_bytes()).unwrap();
    }
    let raw = tar.finish().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    gz.finish().unwrap()
}

/// A token-auth registry over plain HTTP (for the ACR front) or TLS, admitting `user` to push
/// and anyone to pull `busybox`, which it holds.
fn token_registry(tls: bool, user: &str, password: &str) -> Registry {
    let options = RegistryOptions::plain();
    let options = if tls { options.tls() } else { options };
    let registry = Registry::start(
        options.token_auth(
            TokenAuthOptions::new()
                .user(user, password)
                .public_repository("busybox"),
        ),
    )
    .expect("registry starts");
    BaseImage::busybox()
        .unwrap()
        .push(
            &registry,
            "busybox:latest",
            &PushOptions::new(ManifestFormat::V2s2).creds(user, password),
        )
        .expect("push busybox");
    registry
}

/// GKE Workload Identity: the metadata server's token, as `oauth2accesstoken`; then a
/// service-account key (`GOOGLE_APPLICATION_CREDENTIALS`) exchanged at its `token_uri`. The
/// config names `gcr` for the registry, and no helper binary exists.
#[test]
fn google_credentials_from_metadata_server_and_key_file() {
    let google = GoogleCloud::start(GoogleOptions::new()).unwrap();
    let registry = CloudRegistry::start("pusher", "pusher-password");
    google.link_token_server(registry.registry.token_server().unwrap());
    let config = format!(r#"{{"credHelpers": {{"{}": "gcr"}}}}"#, registry.host());

    let out = registry.build_and_push(
        "gke",
        &config,
        &[("GCE_METADATA_HOST", google.metadata_host())],
    );
    assert_success(&out);
    let metadata: Vec<_> = google
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == GoogleEndpoint::Metadata)
        .collect();
    assert!(
        !metadata.is_empty() && metadata.iter().all(|r| r.metadata_flavor),
        "{metadata:?}"
    );
    let tokens: Vec<String> = google
        .access_tokens()
        .into_iter()
        .map(|t| t.token)
        .collect();
    assert!(!tokens.is_empty());
    assert_no_secret(&out, &tokens);
    registry.inspect("gke", "pusher", "pusher-password");

    // A service-account key: the JWT-bearer grant at the key's token_uri.
    let key = google
        .service_account("kiln-builder@kiln-test-project.iam.gserviceaccount.com")
        .unwrap();
    let key_file = registry.dir.path().join("key.json");
    key.write(&key_file).unwrap();
    google.clear_requests();
    let out = registry.build_and_push(
        "key",
        &config,
        &[(
            "GOOGLE_APPLICATION_CREDENTIALS",
            key_file.display().to_string(),
        )],
    );
    assert_success(&out);
    let grants: Vec<_> = google
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == GoogleEndpoint::Token)
        .collect();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0].grant_type.as_deref(), Some(JWT_BEARER_GRANT));
    let tokens: Vec<String> = google
        .access_tokens()
        .into_iter()
        .map(|t| t.token)
        .collect();
    assert_no_secret(&out, &tokens);
    registry.inspect("key", "pusher", "pusher-password");

    // No credentials and no metadata server: the error names the provider and what to set.
    let out = registry.build_and_push("none", &config, &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Google credentials") && err.contains("GOOGLE_APPLICATION_CREDENTIALS"),
        "{err}"
    );
}

/// Workload identity federation: an `external_account` file as `gcloud iam
/// workload-identity-pools create-cred-config` writes it for a CI job, whose subject token (the
/// job's ID token, in a file) STS exchanges for a federated token, which then impersonates a
/// service account; and the same without impersonation, the token read from a JSON file.
#[test]
fn google_workload_identity_federation() {
    let audience = "//iam.googleapis.com/projects/123456789012/locations/global/\
                    workloadIdentityPools/gitlab/providers/gitlab-com";
    let id_token = "eyJhbGciOiJSUzI1NiJ9.kiln-gitlab-job-id-token.c2lnbmF0dXJl";
    let google = GoogleCloud::start(GoogleOptions::new().federation(audience, id_token)).unwrap();
    let registry = CloudRegistry::start("pusher", "pusher-password");
    google.link_token_server(registry.registry.token_server().unwrap());
    let config = format!(r#"{{"credHelpers": {{"{}": "gcr"}}}}"#, registry.host());
    let account = "kiln-builder@kiln-test-project.iam.gserviceaccount.com";

    let token_file = registry.dir.path().join("gitlab-id-token");
    std::fs::write(&token_file, format!("{id_token}\n")).unwrap();
    let external = registry.dir.path().join("federation.json");
    let write_external = |source: serde_json::Value, impersonate: bool| {
        let mut file = serde_json::json!({
            "type": "external_account",
            "audience": audience,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": google.sts_token_url(),
            "credential_source": source,
        });
        if impersonate {
            file["service_account_impersonation_url"] = google.impersonation_url(account).into();
        }
        std::fs::write(&external, file.to_string()).unwrap();
    };
    let env = [(
        "GOOGLE_APPLICATION_CREDENTIALS",
        external.display().to_string(),
    )];
    let all_secrets = |google: &GoogleCloud| {
        let mut secrets: Vec<String> = google
            .access_tokens()
            .into_iter()
            .map(|t| t.token)
            .collect();
        secrets.push(id_token.to_string());
        secrets
    };

    write_external(
        serde_json::json!({"file": token_file, "format": {"type": "text"}}),
        true,
    );
    let out = registry.build_and_push("federated-sa", &config, &env);
    assert_success(&out);
    let seen = google.requests();
    let exchange: Vec<_> = seen
        .iter()
        .filter(|r| r.endpoint == GoogleEndpoint::Sts)
        .collect();
    assert!(
        !exchange.is_empty()
            && exchange
                .iter()
                .all(|r| r.grant_type.as_deref() == Some(TOKEN_EXCHANGE_GRANT) && r.status == 200),
        "{seen:?}"
    );
    let impersonations: Vec<_> = seen
        .iter()
        .filter(|r| r.endpoint == GoogleEndpoint::IamCredentials)
        .collect();
    assert!(
        !impersonations.is_empty()
            && impersonations
                .iter()
                .all(|r| r.status == 200 && r.account.as_deref() == Some(account)),
        "{seen:?}"
    );
    assert!(google
        .access_tokens()
        .iter()
        .any(|t| t.source == GoogleTokenSource::Impersonated && t.account == account));
    assert_no_secret(&out, &all_secrets(&google));
    registry.inspect("federated-sa", "pusher", "pusher-password");

    // Without impersonation (the pool's principal has the registry role itself), the subject
    // token a field of a JSON document.
    google.clear_requests();
    let json_token = registry.dir.path().join("token.json");
    std::fs::write(
        &json_token,
        serde_json::json!({"id_token": id_token}).to_string(),
    )
    .unwrap();
    write_external(
        serde_json::json!({
            "file": json_token,
            "format": {"type": "json", "subject_token_field_name": "id_token"},
        }),
        false,
    );
    let out = registry.build_and_push("federated", &config, &env);
    assert_success(&out);
    let seen = google.requests();
    assert!(
        seen.iter().any(|r| r.endpoint == GoogleEndpoint::Sts)
            && !seen
                .iter()
                .any(|r| r.endpoint == GoogleEndpoint::IamCredentials),
        "{seen:?}"
    );
    assert_no_secret(&out, &all_secrets(&google));
    registry.inspect("federated", "pusher", "pusher-password");

    // A subject token the pool refuses: STS's refusal, named, and nothing pushed.
    std::fs::write(&token_file, "an-expired-job-token").unwrap();
    write_external(serde_json::json!({"file": token_file}), true);
    let out = registry.build_and_push("refused", &config, &env);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Google credentials")
            && err.contains("token exchange")
            && err.contains("invalid_grant")
            && !err.contains("an-expired-job-token"),
        "{err}"
    );
}

/// A `gs://` context (and kaniko's `--bucket`) read with the metadata server's token.
#[test]
fn gcs_context() {
    let google = GoogleCloud::start(GoogleOptions::new()).unwrap();
    google.create_bucket("kiln-contexts");
    let tarball = context_tarball(
        "FROM scratch\nCOPY app/ /app/\n",
        &[("app/main.txt", "from gcs\n")],
    );
    google.put_object("kiln-contexts", "team/app.tar.gz", &tarball);
    google.put_object("kiln-contexts", "context.tar.gz", &tarball);
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("GCE_METADATA_HOST", google.metadata_host()),
        ("GOOGLE_BASE_URL", google.gcs_base_url()),
    ];
    for args in [
        &["--context", "gs://kiln-contexts/team/app.tar.gz"][..],
        &["--bucket", "kiln-contexts"][..],
    ] {
        let (out, layout) = build_into_layout(dir.path(), &env, args);
        assert_success(&out);
        assert_eq!(
            unpack(&layout).read("app/main.txt"),
            "from gcs\n",
            "{args:?}"
        );
    }
    let storage: Vec<_> = google
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == GoogleEndpoint::Storage)
        .collect();
    assert!(storage.iter().all(|r| r.bearer.is_some()), "{storage:?}");
}

/// AKS workload identity: the federated token file is exchanged at Entra (TLS) for a token,
/// that at the registry's `/oauth2/exchange` for an ACR refresh token, which the registry's
/// token service takes. Then a service principal's client secret.
#[test]
fn acr_credentials_from_workload_identity_and_client_secret() {
    let ca = TestCa::new("kiln cloud test CA").unwrap();
    let client_id = "6f3c2a9e-0b7d-4d51-9c1e-2f8a7b4c5d6e";
    let subject = "system:serviceaccount:ci:kiln";
    let secret = "entra-client-secret-never-shown";
    let entra = EntraId::start(
        EntraOptions::new()
            .workload_identity(client_id, subject)
            .client_secret(client_id, secret),
        &ca,
    )
    .unwrap();
    let registry = token_registry(false, "pusher", "pusher-password");
    let front = AcrFront::start(&registry, &entra, &ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let token_file = dir.path().join("azure-identity-token");
    entra
        .write_federated_token_file(&token_file, subject)
        .unwrap();
    let docker = docker_dir(
        dir.path(),
        &format!(r#"{{"credHelpers": {{"{}": "acr-env"}}}}"#, front.host()),
    );
    let push = |tag: &str, env: &[(&str, String)]| {
        let mut all = vec![
            ("AZURE_AUTHORITY_HOST", entra.authority_host()),
            ("AZURE_TENANT_ID", entra.tenant_id().to_string()),
            ("AZURE_CLIENT_ID", client_id.to_string()),
            ("SSL_CERT_FILE", ca_file.display().to_string()),
        ];
        all.extend(env.iter().cloned());
        push_app(&front.host(), tag, &docker, &all, &dir.path().join("kiln"))
    };
    let secrets = |extra: &[&str]| {
        let mut all: Vec<String> = entra.access_tokens().into_iter().map(|t| t.token).collect();
        all.extend(
            front
                .exchanges()
                .into_iter()
                .filter_map(|e| e.refresh_token),
        );
        all.extend(extra.iter().map(|s| s.to_string()));
        all
    };

    let out = push(
        "workload",
        &[(
            "AZURE_FEDERATED_TOKEN_FILE",
            token_file.display().to_string(),
        )],
    );
    assert_success(&out);
    let exchanges = front.exchanges();
    assert!(
        !exchanges.is_empty() && exchanges.iter().all(|e| e.access_token_valid),
        "{exchanges:?}"
    );
    assert_eq!(exchanges[0].tenant.as_deref(), Some(entra.tenant_id()));
    let token = std::fs::read_to_string(&token_file).unwrap();
    let all = secrets(&[token.as_str()]);
    assert_no_secret(&out, &all);

    let out = push("secret", &[("AZURE_CLIENT_SECRET", secret.to_string())]);
    assert_success(&out);
    let all = secrets(&[secret]);
    assert_no_secret(&out, &all);

    // Both images, read back from the registry itself by skopeo.
    for tag in ["workload", "secret"] {
        assert_pushed_behind_front(&registry, tag);
    }

    // A wrong secret: Entra's refusal, named, and nothing of the secret.
    let out = push(
        "wrong",
        &[("AZURE_CLIENT_SECRET", "not-the-secret-123".to_string())],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Azure Container Registry credentials"),
        "{err}"
    );
    assert_no_secret(&out, &["not-the-secret-123"]);
}

/// An Azure Blob context (`https://ACCOUNT.blob.core.windows.net/…`) read from Azurite with
/// kaniko's `AZURE_STORAGE_ACCESS_KEY`.
#[test]
fn azure_blob_context() {
    let key = generate_account_key();
    let azurite = Azurite::start(AzuriteOptions::new().account("kilnctx", &key)).unwrap();
    let tarball = context_tarball(
        "FROM scratch\nCOPY app/ /app/\n",
        &[("app/main.txt", "from azure\n")],
    );
    azurite
        .put_blob("kilnctx", "contexts", "team/app.tar.gz", &tarball)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blob = [
        "--context",
        "https://kilnctx.blob.core.windows.net/contexts/team/app.tar.gz",
    ];
    let env = [
        ("AZURE_STORAGE_USE_EMULATOR", "true".to_string()),
        ("AZURITE_BLOB_STORAGE_URL", azurite.blob_endpoint()),
        ("AZURE_STORAGE_ACCESS_KEY", key.clone()),
    ];
    let (out, layout) = build_into_layout(dir.path(), &env, &blob);
    assert_success(&out);
    assert_no_secret(&out, &[&key]);
    assert_eq!(unpack(&layout).read("app/main.txt"), "from azure\n");

    // A wrong key: the store's refusal, with the URL.
    let wrong = generate_account_key();
    let mut env = env.to_vec();
    env[2] = ("AZURE_STORAGE_ACCESS_KEY", wrong.clone());
    let (out, _) = build_into_layout(dir.path(), &env, &blob);
    let err = stderr(&out);
    assert!(
        !out.status.success()
            && err.contains("kilnctx.blob.core.windows.net/contexts/team/app.tar.gz"),
        "{err}"
    );
    assert_no_secret(&out, &[&wrong]);
}

/// An Azure Blob context read with AKS workload identity: an Entra token for Azure Storage,
/// accepted by Azurite (OAuth over TLS) at the endpoint `AZURE_STORAGE_ENDPOINT` names.
#[test]
fn azure_blob_context_with_workload_identity() {
    let key = generate_account_key();
    let azurite = Azurite::start(AzuriteOptions::new().account("kilnctx", &key).oauth()).unwrap();
    let tarball = context_tarball(
        "FROM scratch\nCOPY app/ /app/\n",
        &[("app/main.txt", "from azure with an identity\n")],
    );
    azurite
        .put_blob("kilnctx", "contexts", "app.tar.gz", &tarball)
        .unwrap();
    let ca = TestCa::new("kiln cloud test CA").unwrap();
    let client_id = "0b7d4d51-6f3c-4a9e-9c1e-2f8a7b4c5d6e";
    let subject = "system:serviceaccount:ci:kiln";
    let entra = EntraId::start(
        EntraOptions::new().workload_identity(client_id, subject),
        &ca,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("cas.pem");
    std::fs::write(
        &ca_file,
        format!("{}{}", ca.cert_pem(), azurite.ca_pem().unwrap()),
    )
    .unwrap();
    let token_file = dir.path().join("azure-identity-token");
    entra
        .write_federated_token_file(&token_file, subject)
        .unwrap();
    let env = [
        (
            "AZURE_STORAGE_ENDPOINT",
            azurite.account_endpoint("kilnctx"),
        ),
        ("AZURE_AUTHORITY_HOST", entra.authority_host()),
        ("AZURE_TENANT_ID", entra.tenant_id().to_string()),
        ("AZURE_CLIENT_ID", client_id.to_string()),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        ("SSL_CERT_FILE", ca_file.display().to_string()),
    ];
    let (out, layout) = build_into_layout(
        dir.path(),
        &env,
        &[
            "--context",
            "https://kilnctx.blob.core.windows.net/contexts/app.tar.gz",
        ],
    );
    assert_success(&out);
    let tokens: Vec<String> = entra.access_tokens().into_iter().map(|t| t.token).collect();
    assert!(!tokens.is_empty(), "Entra issued no token");
    assert_no_secret(&out, &tokens);
    assert_eq!(
        unpack(&layout).read("app/main.txt"),
        "from azure with an identity\n"
    );
}

/// `command` run in a mount namespace of its own where `/etc/hosts` is `hosts`: the clouds'
/// registry names then reach the local registries, and nothing else on the machine sees them.
fn with_hosts(command: &Command, hosts: &Path) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/hosts && shift && exec "$@""#)
        .arg("sh")
        .arg(hosts)
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(name, value),
            None => wrapped.env_remove(name),
        };
    }
    wrapped
}

/// With no docker config entry at all, the provider is picked by the registry's name, as
/// kaniko's keychain picks it: an ECR host (its region taken from the name; no AWS_REGION),
/// an Artifact Registry host and an ACR host, each resolved to a local registry.
#[test]
fn providers_chosen_by_registry_name() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n\
         127.0.0.1 123456789012.dkr.ecr.eu-central-1.amazonaws.com\n\
         127.0.0.1 europe-west1-docker.pkg.dev\n\
         127.0.0.1 kilnreg.azurecr.io\n",
    )
    .unwrap();
    let push = |host: &str, tag: &str, ca: &Path, env: &[(&str, String)]| {
        let docker = docker_dir(dir.path(), "{}");
        let ctx = context(
            &format!("FROM {host}/busybox:latest\nCOPY hello.txt /hello.txt\n"),
            &[("hello.txt", tag)],
        );
        let mut command = kiln_command(&docker, env);
        command
            .env("SSL_CERT_FILE", ca)
            .args(["build", "--context"])
            .arg(ctx.path())
            .args(["--destination", &format!("{host}/app:{tag}")])
            // The local registries' certificates name 127.0.0.1, not the clouds' hosts.
            .args(["--skip-tls-verify-registry", host, "--verbosity", "debug"])
            .arg("--kiln-dir")
            .arg(dir.path().join("kiln"));
        with_hosts(&command, &hosts).output().expect("kiln runs")
    };

    // Amazon ECR.
    let password = Moto::ecr_password(Moto::DEFAULT_ACCOUNT);
    let ecr = CloudRegistry::start("AWS", &password);
    let moto = Moto::start().unwrap();
    let ecr_host = format!(
        "123456789012.dkr.ecr.eu-central-1.amazonaws.com:{}",
        ecr.registry.addr().port()
    );
    let out = push(
        &ecr_host,
        "ecr",
        ecr.registry.ca_pem_path().unwrap(),
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAKILNTESTKEY00003".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "by-name-secret".to_string()),
            ("AWS_ENDPOINT_URL", moto.endpoint_url()),
        ],
    );
    assert_success(&out);
    assert_no_secret(&out, &[&password, "by-name-secret"]);
    // No AWS_REGION is set: the push worked only with the region taken from the host name.
    ecr.inspect("ecr", "AWS", &password);

    // No AWS credentials at all: the pull of the public base still works anonymously (as with
    // kaniko's keychain), and the refused push says why no credentials were sent.
    let out = push(
        &ecr_host,
        "ecr-none",
        ecr.registry.ca_pem_path().unwrap(),
        &[("AWS_ENDPOINT_URL", moto.endpoint_url())],
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    let last = err
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(
        last.contains("401")
            && last.contains("no credentials were sent because Amazon ECR credentials")
            && last.contains("AWS_WEB_IDENTITY_TOKEN_FILE"),
        "{err}"
    );
    // The pull and the push each asked the provider; the note of going on without credentials
    // is shown once.
    assert_eq!(
        err.matches("going on without credentials").count(),
        1,
        "{err}"
    );

    // Google Artifact Registry.
    let google = GoogleCloud::start(GoogleOptions::new()).unwrap();
    let gar = CloudRegistry::start("pusher", "pusher-password");
    google.link_token_server(gar.registry.token_server().unwrap());
    let gar_host = format!("europe-west1-docker.pkg.dev:{}", gar.registry.addr().port());
    let out = push(
        &gar_host,
        "gar",
        gar.registry.ca_pem_path().unwrap(),
        &[("GCE_METADATA_HOST", google.metadata_host())],
    );
    assert_success(&out);
    let tokens: Vec<String> = google
        .access_tokens()
        .into_iter()
        .map(|t| t.token)
        .collect();
    assert!(!tokens.is_empty(), "no Google token was asked for");
    assert_no_secret(&out, &tokens);
    gar.inspect("gar", "pusher", "pusher-password");

    // Azure Container Registry, through its refresh-token exchange.
    let ca = TestCa::new("kiln cloud test CA").unwrap();
    let client_id = "9c1e2f8a-7b4c-4d51-8e6f-0b7d3c2a9e5d";
    let secret = "by-name-entra-secret";
    let entra = EntraId::start(EntraOptions::new().client_secret(client_id, secret), &ca).unwrap();
    let plain = token_registry(false, "pusher", "pusher-password");
    let front = AcrFront::start(&plain, &entra, &ca).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let acr_host = format!("kilnreg.azurecr.io:{}", front.addr().port());
    let out = push(
        &acr_host,
        "acr",
        &ca_file,
        &[
            ("AZURE_AUTHORITY_HOST", entra.authority_host()),
            ("AZURE_TENANT_ID", entra.tenant_id().to_string()),
            ("AZURE_CLIENT_ID", client_id.to_string()),
            ("AZURE_CLIENT_SECRET", secret.to_string()),
        ],
    );
    assert_success(&out);
    let exchanges = front.exchanges();
    assert!(
        !exchanges.is_empty() && exchanges.iter().all(|e| e.access_token_valid),
        "{exchanges:?}"
    );
    assert_no_secret(&out, &[secret]);
    assert_pushed_behind_front(&plain, "acr");
}

/// skopeo reads `app:TAG` from the plain registry behind an ACR front, as its pushing user.
fn assert_pushed_behind_front(registry: &Registry, tag: &str) {
    let inspected = kiln_test::skopeo_checked([
        "inspect".to_string(),
        "--tls-verify=false".to_string(),
        "--creds=pusher:pusher-password".to_string(),
        format!("docker://{}/app:{tag}", registry.host()),
    ])
    .unwrap();
    assert!(inspected.contains("Layers"), "{inspected}");
}
