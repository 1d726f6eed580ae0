use base64::Engine as _;
use kiln_test::{
    http_get, http_request, skopeo, ManifestFormat, PushOptions, Registry, RegistryOptions,
    SigningAlgorithm, TestImage, TokenAuthOptions, TokenFields, TokenServer,
};
use serde_json::Value;

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn token_registry(options: TokenAuthOptions) -> Registry {
    Registry::start(RegistryOptions::plain().token_auth(options)).unwrap()
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[test]
fn skopeo_pushes_with_credentials_and_pulls_public_repos_anonymously() {
    let registry = token_registry(
        TokenAuthOptions::new()
            .user("alice", "s3cret")
            .public_repository("public/app"),
    );
    let tokens = registry.token_server().unwrap();
    let image = TestImage::single(b"token").unwrap();
    let push = PushOptions::new(ManifestFormat::Oci).creds("alice", "s3cret");
    let public = image.push(&registry, "public/app:v1", &push).unwrap();
    image.push(&registry, "private/app:v1", &push).unwrap();

    let pushes: Vec<_> = tokens.requests();
    let first = &pushes[0];
    assert_eq!(first.method, "GET");
    assert_eq!(first.path, "/token");
    assert_eq!(first.service.as_deref(), Some("kiln-test-registry"));
    assert!(first.credentials_sent);
    assert_eq!(first.user.as_deref(), Some("alice"));
    assert!(pushes
        .iter()
        .any(|r| r.scopes == ["repository:public/app:pull,push"]
            && r.granted == ["repository:public/app:pull,push"]));
    tokens.clear_requests();

    let target = |repo: &str| format!("docker://{}/{repo}:v1", registry.host());
    let anonymous = skopeo(["inspect", "--tls-verify=false", &target("public/app")]);
    assert!(
        anonymous.status.success(),
        "{}",
        String::from_utf8_lossy(&anonymous.stderr)
    );
    assert_eq!(json(&anonymous.stdout)["Digest"], public);
    let pulls = tokens.requests();
    assert!(pulls
        .iter()
        .all(|r| !r.credentials_sent && r.user.is_none()));
    assert!(pulls
        .iter()
        .any(|r| r.scopes == ["repository:public/app:pull"]
            && r.granted == ["repository:public/app:pull"]));

    let denied = skopeo(["inspect", "--tls-verify=false", &target("private/app")]);
    assert!(!denied.status.success());
    let allowed = skopeo([
        "inspect",
        "--tls-verify=false",
        "--creds",
        "alice:s3cret",
        &target("private/app"),
    ]);
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );

    tokens.clear_requests();
    let wrong = image.push(
        &registry,
        "private/app:v2",
        &PushOptions::new(ManifestFormat::Oci).creds("alice", "wrong"),
    );
    assert!(wrong.is_err());
    assert!(tokens
        .requests()
        .iter()
        .any(|r| r.status == 401 && r.credentials_sent));
}

#[test]
fn rs256_tokens_in_access_token_only_responses_work_for_skopeo() {
    let registry = token_registry(
        TokenAuthOptions::new()
            .user("alice", "s3cret")
            .algorithm(SigningAlgorithm::Rs256)
            .fields(TokenFields::AccessTokenOnly),
    );
    let image = TestImage::multi_platform(b"rs256").unwrap();
    let digest = image
        .push(
            &registry,
            "demo/rs:v1",
            &PushOptions::new(ManifestFormat::V2s2).creds("alice", "s3cret"),
        )
        .unwrap();
    let out = skopeo([
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "alice:s3cret",
        &format!("docker://{}/demo/rs:v1", registry.host()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json(&out.stdout)["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert!(digest.starts_with("sha256:"));
}

#[test]
fn the_docker_token_flow_works_by_hand_with_token_only_responses() {
    let registry = token_registry(
        TokenAuthOptions::new()
            .user("alice", "s3cret")
            .fields(TokenFields::TokenOnly),
    );
    let tokens = registry.token_server().unwrap();
    let challenge = http_get(registry.addr(), "/v2/_catalog", &[]).unwrap();
    assert_eq!(challenge.status, 401);
    let expected = format!(
        "Bearer realm=\"{}\",service=\"kiln-test-registry\",scope=\"registry:catalog:*\"",
        tokens.realm()
    );
    assert_eq!(
        challenge.header("www-authenticate"),
        Some(expected.as_str())
    );

    let reply = http_get(
        tokens.addr(),
        "/token?service=kiln-test-registry&scope=registry:catalog:*",
        &[("Authorization", &basic("alice", "s3cret"))],
    )
    .unwrap();
    assert_eq!(reply.status, 200);
    let body = json(&reply.body);
    assert!(body.get("access_token").is_none());
    assert_eq!(body["expires_in"], 300);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    let token = body["token"].as_str().unwrap();
    let catalog = http_get(
        registry.addr(),
        "/v2/_catalog",
        &[("Authorization", &bearer(token))],
    )
    .unwrap();
    assert_eq!(catalog.status, 200, "{}", catalog.text());

    // Anonymous tokens carry no access: the registry says insufficient_scope.
    let anon = http_get(
        tokens.addr(),
        "/token?service=kiln-test-registry&scope=registry:catalog:*",
        &[],
    )
    .unwrap();
    let anon_token = json(&anon.body)["token"].as_str().unwrap().to_string();
    let refused = http_get(
        registry.addr(),
        "/v2/_catalog",
        &[("Authorization", &bearer(&anon_token))],
    )
    .unwrap();
    assert_eq!(refused.status, 401);
    assert!(refused
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"insufficient_scope\""));
}

#[test]
fn oauth2_password_and_refresh_grants_issue_tokens_the_registry_accepts() {
    let registry = token_registry(TokenAuthOptions::new().user("alice", "s3cret"));
    let tokens = registry.token_server().unwrap();
    let form = "grant_type=password&username=alice&password=s3cret&service=kiln-test-registry\
                &client_id=kiln&access_type=offline&scope=repository%3Ademo%2Fa%3Apull+registry%3Acatalog%3A*";
    let reply = http_request(
        tokens.addr(),
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
    )
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = json(&reply.body);
    assert_eq!(body["token"], body["access_token"]);
    let refresh = body["refresh_token"].as_str().unwrap().to_string();

    let form = format!(
        "grant_type=refresh_token&refresh_token={refresh}&service=kiln-test-registry&client_id=kiln\
         &scope=registry%3Acatalog%3A*"
    );
    let reply = http_request(tokens.addr(), "POST", "/token", &[], form.as_bytes()).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let token = json(&reply.body)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let catalog = http_get(
        registry.addr(),
        "/v2/_catalog",
        &[("Authorization", &bearer(&token))],
    )
    .unwrap();
    assert_eq!(catalog.status, 200);

    let bad = http_request(
        tokens.addr(),
        "POST",
        "/token",
        &[],
        b"grant_type=refresh_token&refresh_token=forged&service=kiln-test-registry",
    )
    .unwrap();
    assert_eq!(bad.status, 401);

    let log = tokens.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].grant_type.as_deref(), Some("password"));
    assert_eq!(
        log[0].scopes,
        ["repository:demo/a:pull", "registry:catalog:*"]
    );
    assert!(log[0].credentials_sent);
    assert!(log[1].refresh_token_sent && !log[1].credentials_sent);
    assert_eq!(log[1].user.as_deref(), Some("alice"));
    assert_eq!(log[2].status, 401);
}

#[test]
fn expired_untrusted_and_pull_only_tokens_are_refused_by_the_registry() {
    // Distribution allows 60 s of clock skew past `exp`.
    let lenient = token_registry(
        TokenAuthOptions::new()
            .user("alice", "s3cret")
            .claim_lifetime(-30),
    );
    let token = lenient
        .token_server()
        .unwrap()
        .mint_token(Some("alice"), &["registry:catalog:*"])
        .unwrap();
    let ok = http_get(
        lenient.addr(),
        "/v2/_catalog",
        &[("Authorization", &bearer(&token))],
    )
    .unwrap();
    assert_eq!(ok.status, 200);

    let strict = token_registry(
        TokenAuthOptions::new()
            .user("alice", "s3cret")
            .pull_only_user("bob", "pw")
            .claim_lifetime(-120),
    );
    let server = strict.token_server().unwrap();
    let expired = server
        .mint_token(Some("alice"), &["registry:catalog:*"])
        .unwrap();
    let refused = http_get(
        strict.addr(),
        "/v2/_catalog",
        &[("Authorization", &bearer(&expired))],
    )
    .unwrap();
    assert_eq!(refused.status, 401);
    assert!(refused
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"invalid_token\""));

    // Same issuer and service, but signed under a CA the registry does not trust.
    let stranger = TokenServer::start(TokenAuthOptions::new().user("alice", "s3cret")).unwrap();
    let forged = stranger
        .mint_token(Some("alice"), &["registry:catalog:*"])
        .unwrap();
    let refused = http_get(
        lenient.addr(),
        "/v2/_catalog",
        &[("Authorization", &bearer(&forged))],
    )
    .unwrap();
    assert_eq!(refused.status, 401);

    // A pull-only user asking for push is granted pull only, so a push fails.
    let reply = http_get(
        server.addr(),
        "/token?service=kiln-test-registry&scope=repository:demo/b:pull,push",
        &[("Authorization", &basic("bob", "pw"))],
    )
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        server.requests().last().unwrap().granted,
        ["repository:demo/b:pull"]
    );
}
