use kiln_test::{http_request, Error, Moto};

/// A SigV4-shaped header: moto routes by its scope and checks no signature.
fn sigv4(access_key_id: &str, region: &str, service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/20260101/{region}/{service}/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature={}",
        "f".repeat(64)
    )
}

#[test]
fn s3_objects_round_trip_path_style() {
    let moto = Moto::start().unwrap();
    assert!(moto.endpoint_url().starts_with("http://127.0.0.1:"));
    moto.create_bucket("kiln-contexts").unwrap();
    // Creating it again is fine (us-east-1 semantics).
    moto.create_bucket("kiln-contexts").unwrap();

    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    moto.put_object("kiln-contexts", "team/app/context.tar.gz", &bytes)
        .unwrap();
    moto.put_object("kiln-contexts", "empty", b"").unwrap();
    assert_eq!(
        moto.get_object("kiln-contexts", "team/app/context.tar.gz")
            .unwrap(),
        bytes
    );
    assert_eq!(moto.get_object("kiln-contexts", "empty").unwrap(), b"");

    // What `object_store` sends: a path-style GET signed for another region,
    // with a session token nobody issued; and a ranged GET.
    let path = "/kiln-contexts/team/app/context.tar.gz";
    let auth = sigv4("ASIAANYTHINGATALL000", "eu-west-1", "s3");
    let signed = [
        ("Authorization", auth.as_str()),
        ("x-amz-date", "20260101T000000Z"),
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ("x-amz-security-token", "made-up"),
    ];
    let get = http_request(moto.addr(), "GET", path, &signed, &[]).unwrap();
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(get.body, bytes);
    let mut ranged = signed.to_vec();
    ranged.push(("Range", "bytes=1-3"));
    let get = http_request(moto.addr(), "GET", path, &ranged, &[]).unwrap();
    assert_eq!(get.status, 206);
    assert_eq!(get.body, [1, 2, 3]);

    // Unsigned means anonymous: a private object is refused.
    let anonymous = http_request(moto.addr(), "GET", path, &[], &[]).unwrap();
    assert_eq!(anonymous.status, 403);
    // A missing key is S3's NoSuchKey, which the helper reports with the body.
    let missing = http_request(moto.addr(), "GET", "/kiln-contexts/nope", &signed, &[]).unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("NoSuchKey"));
    let err = moto.get_object("kiln-contexts", "nope").unwrap_err();
    assert!(
        matches!(&err, Error::UnexpectedResponse { detail, .. } if detail.contains("NoSuchKey")),
        "{err}"
    );

    moto.reset().unwrap();
    assert!(moto.get_object("kiln-contexts", "empty").is_err());
}

#[test]
fn ecr_authorization_token_is_the_documented_one() {
    let moto = Moto::start().unwrap();

    // The raw awsJson 1.1 request, as aws-sdk-ecr sends it.
    let auth = sigv4("AKIAIOSFODNN7EXAMPLE", "us-east-1", "ecr");
    let headers = [
        ("Authorization", auth.as_str()),
        (
            "X-Amz-Target",
            "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
        ),
        ("Content-Type", "application/x-amz-json-1.1"),
        ("x-amz-date", "20260101T000000Z"),
    ];
    let response = http_request(moto.addr(), "POST", "/", &headers, b"{}").unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("application/x-amz-json-1.1")
    );
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"authorizationData": [{
            // base64("AWS:123456789012-auth-token")
            "authorizationToken": "QVdTOjEyMzQ1Njc4OTAxMi1hdXRoLXRva2Vu",
            "expiresAt": 1420070400,
            "proxyEndpoint": "https://123456789012.dkr.ecr.us-east-1.amazonaws.com",
        }]})
    );

    // Without an Authorization header moto cannot route the request.
    let unsigned = http_request(moto.addr(), "POST", "/", &headers[1..], b"{}").unwrap();
    assert_eq!(unsigned.status, 500);

    // The helper decodes it; the region comes from the scope.
    let token = moto
        .ecr_authorization_token("AKIAANYOTHERKEY00000", "eu-central-1")
        .unwrap();
    assert_eq!(token.user, Moto::ECR_USER);
    assert_eq!(token.password, "123456789012-auth-token");
    assert_eq!(token.password, Moto::ecr_password(Moto::DEFAULT_ACCOUNT));
    assert_eq!(token.expires_at, Moto::ECR_EXPIRES_AT);
    assert_eq!(
        token.proxy_endpoint,
        Moto::ecr_proxy_endpoint(Moto::DEFAULT_ACCOUNT, "eu-central-1")
    );
}

#[test]
fn web_identity_keys_belong_to_the_role_account_for_ecr_and_s3() {
    let moto = Moto::start().unwrap();
    let jwt = Moto::web_identity_token("system:serviceaccount:ci:kiln");
    let creds = moto
        .assume_role_with_web_identity(
            "arn:aws:iam::111122223333:role/kiln-ci",
            "kiln-session",
            &jwt,
        )
        .unwrap();
    assert!(
        creds.access_key_id.starts_with("ASIA") && creds.access_key_id.len() == 20,
        "{creds:?}"
    );
    assert!(!creds.secret_access_key.is_empty());
    assert!(creds.session_token.starts_with("FQoGZXIvYXdzEBYaD"));
    assert!(creds.expiration.ends_with('Z'), "{creds:?}");
    assert_eq!(
        creds.assumed_role_arn,
        "arn:aws:sts::111122223333:assumed-role/kiln-ci/kiln-session"
    );

    // Any token works, JWT or not; every call issues new keys.
    let other = moto
        .assume_role_with_web_identity("arn:aws:iam::111122223333:role/kiln-ci", "s", "x")
        .unwrap();
    assert_ne!(other.access_key_id, creds.access_key_id);

    // ECR with the issued keys: the role's account, not the default one.
    let token = moto
        .ecr_authorization_token(&creds.access_key_id, "us-west-2")
        .unwrap();
    assert_eq!(token.password, "111122223333-auth-token");
    assert_eq!(
        token.proxy_endpoint,
        "https://111122223333.dkr.ecr.us-west-2.amazonaws.com"
    );

    // S3 with the issued keys.
    moto.create_bucket("irsa").unwrap();
    moto.put_object("irsa", "ctx.tar", b"context").unwrap();
    let auth = sigv4(&creds.access_key_id, "us-east-1", "s3");
    let get = http_request(
        moto.addr(),
        "GET",
        "/irsa/ctx.tar",
        &[
            ("Authorization", auth.as_str()),
            ("x-amz-security-token", creds.session_token.as_str()),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(get.body, b"context");
}

#[test]
fn moto_process_is_killed_on_drop() {
    let moto = Moto::start().unwrap();
    let pid = moto.pid();
    let addr = moto.addr();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(moto.log().contains("Running on"), "{}", moto.log());
    drop(moto);
    // Reaped, not a zombie: the pid is gone (or reused by something else).
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&cmdline).contains("moto_server"));
    assert!(std::net::TcpStream::connect(addr).is_err());
}
