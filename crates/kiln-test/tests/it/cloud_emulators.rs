//! The Google and Azure emulators driven with raw HTTP(S), as kiln's
//! libraries drive them: the metadata server, a service-account key's
//! token_uri, Cloud Storage reads, Entra ID's token endpoint, ACR's token
//! exchange in front of a real registry, and the real Azurite.

use base64::Engine as _;
use kiln_test::{
    http_get, http_request, https_request, shared_key_authorization, skopeo,
    verify_self_signed_jwt, AcrFront, Azurite, AzuriteOptions, EntraClientAuth, EntraId,
    EntraOptions, GoogleCloud, GoogleEndpoint, GoogleOptions, GoogleTokenSource, HttpResponse,
    ManifestFormat, PushOptions, Registry, RegistryOptions, ServiceAccountKey, TestCa, TestImage,
    TokenAuthOptions, ACR_REFRESH_TOKEN_USER, AZURE_STORAGE_VERSION, CLIENT_ASSERTION_TYPE,
    CLOUD_PLATFORM_SCOPE, GOOGLE_REGISTRY_USER, JWT_BEARER_GRANT,
};
use serde_json::Value;

const METADATA_TOKEN: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// Header or form pairs, for tables of requests.
type Pairs<'a> = &'a [(&'a str, &'a str)];

fn json(response: &HttpResponse) -> Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("{e}: {}", response.text()))
}

/// The `access_token` of a token response, which must be a 200.
fn access_token(response: &HttpResponse) -> String {
    assert_eq!(response.status, 200, "{}", response.text());
    json(response)["access_token"].as_str().unwrap().to_string()
}

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Form-encodes pairs (unreserved characters kept).
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The object path as object_store sends it: every non-alphanumeric byte escaped.
fn gcs_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn metadata_token(google: &GoogleCloud) -> String {
    let response = http_get(
        google.addr(),
        &format!(
            "{METADATA_TOKEN}?audience=https%3A%2F%2Fwww.googleapis.com%2Foauth2%2Fv4%2Ftoken"
        ),
        &[("Metadata-Flavor", "Google")],
    )
    .unwrap();
    access_token(&response)
}

#[test]
fn metadata_server_needs_its_header_and_issues_bearer_tokens() {
    let google = GoogleCloud::start(GoogleOptions::new().token_lifetime(1234)).unwrap();
    assert_eq!(google.metadata_host(), google.addr().to_string());

    let get =
        |path: &str, headers: &[(&str, &str)]| http_get(google.addr(), path, headers).unwrap();
    let metadata = |path: &str| get(path, &[("Metadata-Flavor", "Google")]);

    let refused = get(METADATA_TOKEN, &[]);
    assert_eq!(refused.status, 403);
    assert!(refused
        .text()
        .contains("Missing Metadata-Flavor:Google header"));
    let proxied = get(
        METADATA_TOKEN,
        &[
            ("Metadata-Flavor", "Google"),
            ("X-Forwarded-For", "10.0.0.1"),
        ],
    );
    assert_eq!(proxied.status, 403);

    let response = metadata(METADATA_TOKEN);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("Metadata-Flavor"), Some("Google"));
    let body = json(&response);
    let token = body["access_token"].as_str().unwrap();
    assert!(token.starts_with("ya29."));
    assert_eq!(body["expires_in"], 1234);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body.as_object().unwrap().len(), 3);
    assert!(google.accepts_bearer(token));
    assert!(!google.accepts_bearer("ya29.made-up"));

    let issued = google.access_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].source, GoogleTokenSource::Metadata);
    assert_eq!(issued[0].scopes, [CLOUD_PLATFORM_SCOPE]);

    // Custom scopes, the email and the project, as gcp_auth and object_store read them.
    let scoped = metadata(&format!(
        "{METADATA_TOKEN}?scopes=https://www.googleapis.com/auth/devstorage.read_only"
    ));
    let scoped_token = access_token(&scoped);
    assert!(
        !google.accepts_bearer(&scoped_token),
        "no cloud-platform scope"
    );
    let email = metadata("/computeMetadata/v1/instance/service-accounts/default/email");
    assert_eq!(email.text(), GoogleOptions::new().metadata_account);
    let project = metadata("/computeMetadata/v1/project/project-id");
    assert_eq!(project.text(), "kiln-test-project");

    let seen = google.requests();
    assert_eq!(seen.len(), 6);
    assert!(seen.iter().all(|r| r.endpoint == GoogleEndpoint::Metadata));
    assert_eq!(
        seen.iter().map(|r| r.status).collect::<Vec<_>>(),
        [403, 403, 200, 200, 200, 200]
    );
    assert!(!seen[0].metadata_flavor && seen[2].metadata_flavor);

    google.revoke_tokens();
    assert!(!google.accepts_bearer(token));
}

#[test]
fn token_uri_takes_the_jwt_bearer_grant_of_its_own_keys_only() {
    let google = GoogleCloud::start(GoogleOptions::new()).unwrap();
    let key = google
        .service_account("ci@kiln-test-project.iam.gserviceaccount.com")
        .unwrap();
    assert_eq!(key.token_uri, google.token_uri());
    let post = |body: &str| {
        http_request(
            google.addr(),
            "POST",
            "/token",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
        .unwrap()
    };
    let grant = |assertion: &str| {
        post(&form(&[
            ("grant_type", JWT_BEARER_GRANT),
            ("assertion", assertion),
        ]))
    };

    let assertion = key.jwt_bearer_assertion(&[CLOUD_PLATFORM_SCOPE]).unwrap();
    let ok = grant(&assertion);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let body = json(&ok);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    let token = body["access_token"].as_str().unwrap();
    assert!(google.accepts_bearer(token));
    let issued = google.access_tokens();
    assert_eq!(issued[0].account, key.client_email);
    assert_eq!(issued[0].source, GoogleTokenSource::JwtBearer);

    // The same claims signed by a key Google never saw.
    let stranger =
        ServiceAccountKey::generate(&key.client_email, "kiln-test-project", &google.token_uri())
            .unwrap();
    let forged = stranger
        .jwt_bearer_assertion(&[CLOUD_PLATFORM_SCOPE])
        .unwrap();
    let refused = grant(&forged);
    assert_eq!(refused.status, 400);
    assert_eq!(json(&refused)["error"], "invalid_grant");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let wrong_aud = key
        .sign_jwt(&serde_json::json!({
            "iss": key.client_email, "aud": "https://oauth2.googleapis.com/token",
            "scope": CLOUD_PLATFORM_SCOPE, "iat": now, "exp": now + 3600,
        }))
        .unwrap();
    let refused = grant(&wrong_aud);
    assert_eq!(refused.status, 400);
    assert!(json(&refused)["error_description"]
        .as_str()
        .unwrap()
        .contains("audience"));
    let too_long = key
        .sign_jwt(&serde_json::json!({
            "iss": key.client_email, "aud": key.token_uri,
            "scope": CLOUD_PLATFORM_SCOPE, "iat": now, "exp": now + 7200,
        }))
        .unwrap();
    assert_eq!(grant(&too_long).status, 400);
    let no_scope = key.jwt_bearer_assertion(&[]).unwrap();
    let refused = grant(&no_scope);
    assert_eq!(json(&refused)["error"], "invalid_scope");
    let refused = post(&form(&[("grant_type", "client_credentials")]));
    assert_eq!(json(&refused)["error"], "unsupported_grant_type");

    let grants: Vec<_> = google
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == GoogleEndpoint::Token)
        .map(|r| (r.status, r.account))
        .collect();
    assert_eq!(grants[0], (200, Some(key.client_email.clone())));
    assert_eq!(grants.len(), 6);
}

#[test]
fn key_files_have_googles_fields_and_self_signed_jwts_verify() {
    let google = GoogleCloud::start(GoogleOptions::new()).unwrap();
    let key = google
        .service_account("ctx@kiln-test-project.iam.gserviceaccount.com")
        .unwrap()
        .with_gcs_base_url(&google.gcs_base_url());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.json");
    key.write(&path).unwrap();
    let file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(file["type"], "service_account");
    assert_eq!(file["client_email"], key.client_email);
    assert_eq!(file["private_key_id"], key.private_key_id);
    assert_eq!(file["token_uri"], google.token_uri());
    assert_eq!(file["gcs_base_url"], google.gcs_base_url());
    assert!(file.get("disable_oauth").is_none());
    assert!(file["private_key"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let jwt = key.self_signed_jwt(CLOUD_PLATFORM_SCOPE).unwrap();
    let claims = verify_self_signed_jwt(&jwt, &key).unwrap();
    assert_eq!(claims["scope"], CLOUD_PLATFORM_SCOPE);
    assert_eq!(claims["sub"], key.client_email);
    assert!(google.accepts_bearer(&jwt));
    // One flipped byte of the signature.
    let mut tampered = jwt.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(verify_self_signed_jwt(&tampered, &key).is_err());
    assert!(!google.accepts_bearer(&tampered));
    let other = ServiceAccountKey::generate(&key.client_email, "p", "http://x/token").unwrap();
    assert!(verify_self_signed_jwt(&jwt, &other).is_err());
    assert!(format!("{key:?}").contains("<redacted>"));
}

#[test]
fn cloud_storage_serves_objects_to_issued_credentials_as_the_xml_api() {
    let google = GoogleCloud::start(GoogleOptions::new()).unwrap();
    let context: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    google.put_object("kiln-ctx", "team/app/context.tar.gz", &context);
    google.create_bucket("empty-bucket");
    let object = format!("/kiln-ctx/{}", gcs_encode("team/app/context.tar.gz"));
    assert!(object.contains("%2F"));

    let token = metadata_token(&google);
    let bearer = format!("Bearer {token}");
    let get =
        |path: &str, headers: &[(&str, &str)]| http_get(google.addr(), path, headers).unwrap();
    // A GET with the metadata server's token and `extra` headers.
    let authorized = |path: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![("Authorization", bearer.as_str())];
        headers.extend_from_slice(extra);
        get(path, &headers)
    };
    let got = authorized(&object, &[]);
    assert_eq!(got.status, 200);
    assert_eq!(got.body, context);
    let etag = got.header("ETag").unwrap().to_string();
    assert!(etag.starts_with('"'));
    assert!(got.header("Last-Modified").unwrap().ends_with(" GMT"));
    let generation = got.header("x-goog-generation").unwrap().to_string();

    // HEAD, a resumed read (Range + If-Match, as object_store retries), a
    // stale If-Match, an old generation.
    let head = http_request(
        google.addr(),
        "HEAD",
        &object,
        &[("Authorization", &bearer)],
        &[],
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("100000"));
    let part = authorized(&object, &[("Range", "bytes=99990-"), ("If-Match", &etag)]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &context[99_990..]);
    assert_eq!(
        part.header("Content-Range"),
        Some("bytes 99990-99999/100000")
    );
    let by_generation = format!("{object}?generation={generation}");
    let reads: [(&str, Pairs, u16); 3] = [
        (&object, &[("If-Match", "\"0000\"")], 412),
        (&by_generation, &[], 200),
        (&object, &[("Range", "bytes=200000-")], 416),
    ];
    for (path, extra, status) in reads {
        assert_eq!(authorized(path, extra).status, status, "{path} {extra:?}");
    }

    // A service-account key's self-signed JWT, as object_store sends it.
    let key = google
        .service_account("ctx@kiln-test-project.iam.gserviceaccount.com")
        .unwrap();
    let jwt = key.self_signed_jwt(CLOUD_PLATFORM_SCOPE).unwrap();
    let by_jwt = get(&object, &[("Authorization", &format!("Bearer {jwt}"))]);
    assert_eq!(by_jwt.status, 200);
    assert_eq!(
        google.requests().last().unwrap().account.as_deref(),
        Some(key.client_email.as_str())
    );

    // Refusals, with Google's XML errors.
    let anonymous = get(&object, &[]);
    assert_eq!(anonymous.status, 403);
    assert!(anonymous.text().contains("<Code>AccessDenied</Code>"));
    let forged = get(&object, &[("Authorization", "Bearer ya29.forged")]);
    assert_eq!(forged.status, 401);
    assert!(forged
        .text()
        .contains("<Code>AuthenticationRequired</Code>"));
    let missing = authorized(
        &format!("/kiln-ctx/{}", gcs_encode("team/other.tar.gz")),
        &[],
    );
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("<Code>NoSuchKey</Code>"));
    assert!(missing
        .text()
        .contains("No such object: kiln-ctx/team/other.tar.gz"));
    assert_eq!(
        missing.header("Content-Type"),
        Some("application/xml; charset=UTF-8")
    );
    let no_bucket = authorized("/nope/x", &[]);
    assert!(no_bucket.text().contains("<Code>NoSuchBucket</Code>"));
    let empty = authorized("/empty-bucket/x", &[]);
    assert!(empty.text().contains("<Code>NoSuchKey</Code>"));
    google.revoke_tokens();
    let revoked = authorized(&object, &[]);
    assert_eq!(revoked.status, 401);

    let storage: Vec<_> = google
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == GoogleEndpoint::Storage)
        .collect();
    assert_eq!(storage[0].bearer.as_deref(), Some(token.as_str()));
    assert_eq!(storage[0].scopes, [CLOUD_PLATFORM_SCOPE]);
}

#[test]
fn cloud_storage_over_tls_and_without_credentials() {
    let ca = TestCa::new("kiln-test cloud CA").unwrap();
    let google = GoogleCloud::start_tls(GoogleOptions::new().anonymous_reads(), &ca).unwrap();
    let tls = google.tls_addr().unwrap();
    assert_eq!(google.gcs_base_url(), format!("https://{tls}"));
    assert_eq!(google.token_uri(), format!("https://{tls}/token"));
    assert_eq!(google.metadata_host(), google.addr().to_string());
    google.put_object("public", "ctx.tar.gz", b"public bytes");

    // disable_oauth: no Authorization at all.
    let got = https_request(
        tls,
        ca.cert_pem(),
        "GET",
        "/public/ctx%2Etar%2Egz",
        &[],
        &[],
    )
    .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"public bytes");
    assert!(google.requests()[0].tls);

    // The token endpoint over TLS, for a key whose token_uri is https.
    let key = google
        .service_account("tls@kiln-test-project.iam.gserviceaccount.com")
        .unwrap();
    assert!(key.token_uri.starts_with("https://"));
    let assertion = key.jwt_bearer_assertion(&[CLOUD_PLATFORM_SCOPE]).unwrap();
    let body = form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)]);
    let ok = https_request(
        tls,
        ca.cert_pem(),
        "POST",
        "/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());

    // Another CA's client refuses the certificate.
    let other = TestCa::new("other").unwrap();
    assert!(https_request(tls, other.cert_pem(), "GET", "/public/ctx.tar.gz", &[], &[]).is_err());
}

#[test]
fn a_registry_accepts_google_access_tokens_as_oauth2accesstoken() {
    let google = GoogleCloud::start(GoogleOptions::new()).unwrap();
    let registry =
        Registry::start(RegistryOptions::plain().token_auth(TokenAuthOptions::new())).unwrap();
    let tokens = registry.token_server().unwrap();
    google.link_token_server(tokens);
    let access_token = metadata_token(&google);

    let realm = "/token?service=kiln-test-registry&scope=repository%3Ateam%2Fapp%3Apull%2Cpush";
    let login = |user: &str, password: &str| {
        http_get(
            tokens.addr(),
            realm,
            &[("Authorization", &basic(user, password))],
        )
        .unwrap()
    };
    let ok = login(GOOGLE_REGISTRY_USER, &access_token);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(login(GOOGLE_REGISTRY_USER, "ya29.nope").status, 401);
    assert_eq!(login("someone", &access_token).status, 401);

    // A real client pushes with it; a key's self-signed JWT works too.
    let image = TestImage::single(b"gcr").unwrap();
    image
        .push(
            &registry,
            "team/app:v1",
            &PushOptions::new(ManifestFormat::Oci).creds(GOOGLE_REGISTRY_USER, &access_token),
        )
        .unwrap();
    let key = google
        .service_account("push@kiln-test-project.iam.gserviceaccount.com")
        .unwrap();
    let jwt = key.self_signed_jwt(CLOUD_PLATFORM_SCOPE).unwrap();
    image
        .push(
            &registry,
            "team/app:v2",
            &PushOptions::new(ManifestFormat::Oci).creds(GOOGLE_REGISTRY_USER, &jwt),
        )
        .unwrap();
    assert!(tokens
        .requests()
        .iter()
        .any(|r| r.user.as_deref() == Some(GOOGLE_REGISTRY_USER) && r.status == 200));
}

fn entra_post(entra: &EntraId, ca: &TestCa, path: &str, body: &str) -> HttpResponse {
    https_request(
        entra.addr(),
        ca.cert_pem(),
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .unwrap()
}

/// The access token `entra` issues for the token request `fields`.
fn entra_token(entra: &EntraId, ca: &TestCa, fields: &[(&str, &str)]) -> String {
    let path = format!("/{}/oauth2/v2.0/token", entra.tenant_id());
    access_token(&entra_post(entra, ca, &path, &form(fields)))
}

#[test]
fn entra_issues_tokens_for_client_secrets_and_federated_tokens() {
    let ca = TestCa::new("kiln-test cloud CA").unwrap();
    let entra = EntraId::start(
        EntraOptions::new()
            .client_secret("app-secret", "s3cret~value")
            .workload_identity("app-wi", "system:serviceaccount:ci:kiln"),
        &ca,
    )
    .unwrap();
    assert!(entra.authority_host().starts_with("https://127.0.0.1:"));
    let path = format!("/{}/oauth2/v2.0/token", entra.tenant_id());
    assert_eq!(
        entra.token_endpoint(),
        format!("{}{path}", entra.authority_host())
    );
    let scope = "https://management.azure.com/.default";
    // What azure_identity's ClientSecretCredential sends.
    let secret_grant = |path: &str, client: &str, secret: &str, scope: &str| {
        entra_post(
            &entra,
            &ca,
            path,
            &form(&[
                ("client_id", client),
                ("client_secret", secret),
                ("grant_type", "client_credentials"),
                ("scope", scope),
            ]),
        )
    };

    let ok = secret_grant(&path, "app-secret", "s3cret~value", scope);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let body = json(&ok);
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 4);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    let token = body["access_token"].as_str().unwrap();
    let issued = entra.access_token(token).unwrap();
    assert_eq!(issued.audience, "https://management.azure.com");
    assert_eq!(issued.client_id, "app-secret");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["tid"], entra.tenant_id());
    assert_eq!(
        claims["iss"],
        format!("https://sts.windows.net/{}/", entra.tenant_id())
    );

    // What WorkloadIdentityCredential sends: the token file's contents.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    entra
        .write_federated_token_file(&file, "system:serviceaccount:ci:kiln")
        .unwrap();
    let assertion = std::fs::read_to_string(&file).unwrap();
    assert!(!assertion.ends_with('\n'));
    let federated = |client: &str, assertion: &str| {
        entra_post(
            &entra,
            &ca,
            &path,
            &form(&[
                ("client_assertion", assertion),
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_id", client),
                ("grant_type", "client_credentials"),
                ("scope", "https://containerregistry.azure.net/.default"),
            ]),
        )
    };
    let ok = access_token(&federated("app-wi", &assertion));
    assert_eq!(
        entra.access_token(&ok).unwrap().audience,
        "https://containerregistry.azure.net"
    );

    // Refusals, with Entra's AADSTS codes.
    let code = |r: &HttpResponse| json(r)["error_codes"][0].as_u64().unwrap();
    let other_subject = entra
        .federated_token("system:serviceaccount:ci:other")
        .unwrap();
    let refused = federated("app-wi", &other_subject);
    assert_eq!((refused.status, code(&refused)), (400, 700_213));
    let refused = federated("app-secret", &assertion);
    assert_eq!(code(&refused), 700_213);
    let refused = federated("app-wi", "not-a-jwt");
    assert_eq!(code(&refused), 50_027);
    let refused = secret_grant(&path, "app-secret", "wrong", scope);
    assert_eq!((refused.status, code(&refused)), (401, 7_000_215));
    let body = json(&refused);
    assert_eq!(body["error"], "invalid_client");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215: "));
    for key in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(body[key].is_string(), "{key}");
    }
    // Another tenant, a scope without `/.default`, an unknown application.
    let impersonation = "https://management.azure.com/user_impersonation";
    for (path, client, secret, scope, expected) in [
        (
            "/another-tenant/oauth2/v2.0/token",
            "app-secret",
            "s3cret~value",
            scope,
            90_002,
        ),
        (
            &path,
            "app-secret",
            "s3cret~value",
            impersonation,
            1_002_012,
        ),
        (&path, "nobody", "x", scope, 700_016),
    ] {
        let refused = secret_grant(path, client, secret, scope);
        assert_eq!(code(&refused), expected, "{path} {client} {scope}");
    }

    let seen = entra.requests();
    assert_eq!(seen[0].client_auth, EntraClientAuth::Secret);
    assert_eq!(seen[1].client_auth, EntraClientAuth::Assertion);
    assert_eq!(
        seen[1].scopes,
        ["https://containerregistry.azure.net/.default"]
    );
    assert_eq!(seen.len(), 9);
    assert!(seen[2..].iter().all(|r| r.error_code.is_some()));
}

#[test]
fn acr_front_exchanges_entra_tokens_and_fronts_the_registry() {
    let ca = TestCa::new("kiln-test cloud CA").unwrap();
    let entra = EntraId::start(EntraOptions::new().client_secret("kiln-sp", "pw"), &ca).unwrap();
    let registry =
        Registry::start(RegistryOptions::plain().token_auth(TokenAuthOptions::new())).unwrap();
    let acr = AcrFront::start(&registry, &entra, &ca).unwrap();
    let host = acr.host();
    assert_eq!(acr.url(), format!("https://{host}"));
    let get = |path: &str, headers: &[(&str, &str)]| {
        https_request(acr.addr(), ca.cert_pem(), "GET", path, headers, &[]).unwrap()
    };

    // The registry's challenge names ACR's realm on the login server.
    let challenge = get("/v2/", &[]);
    assert_eq!(challenge.status, 401);
    assert_eq!(
        challenge.header("WWW-Authenticate"),
        Some(format!("Bearer realm=\"https://{host}/oauth2/token\",service=\"{host}\"").as_str())
    );

    let aad = entra_token(
        &entra,
        &ca,
        &[
            ("client_id", "kiln-sp"),
            ("client_secret", "pw"),
            ("grant_type", "client_credentials"),
            ("scope", "https://management.azure.com/.default"),
        ],
    );
    let exchange = |fields: &[(&str, &str)]| {
        https_request(
            acr.addr(),
            ca.cert_pem(),
            "POST",
            "/oauth2/exchange",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form(fields).as_bytes(),
        )
        .unwrap()
    };
    let ok = exchange(&[
        ("grant_type", "access_token"),
        ("service", &host),
        ("tenant", entra.tenant_id()),
        ("access_token", &aad),
    ]);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let body = json(&ok);
    assert_eq!(body.as_object().unwrap().len(), 1);
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(refresh.split('.').count(), 3);

    // Refusals: a token nobody issued, another tenant, another service.
    let refusals: [(Pairs, u16); 3] = [
        (&[("service", &host), ("access_token", "eyJ.x.y")], 401),
        (
            &[
                ("service", &host),
                ("tenant", "other"),
                ("access_token", &aad),
            ],
            401,
        ),
        (
            &[("service", "example.azurecr.io"), ("access_token", &aad)],
            400,
        ),
    ];
    for (fields, status) in refusals {
        let mut fields = fields.to_vec();
        fields.insert(0, ("grant_type", "access_token"));
        assert_eq!(exchange(&fields).status, status, "{fields:?}");
    }
    let records = acr.exchanges();
    assert_eq!(records.len(), 4);
    assert!(records[0].access_token_valid);
    assert_eq!(records[0].service.as_deref(), Some(host.as_str()));
    assert_eq!(records[0].tenant.as_deref(), Some(entra.tenant_id()));
    assert!(!records[1].access_token_valid);

    // The refresh token logs in as 00000000-…, by basic auth and by the
    // refresh_token grant, at the login server's /oauth2/token.
    let scope = "repository%3Ateam%2Fapp%3Apull%2Cpush";
    let login = |password: &str| {
        get(
            &format!("/oauth2/token?service={host}&scope={scope}"),
            &[("Authorization", &basic(ACR_REFRESH_TOKEN_USER, password))],
        )
    };
    let access = access_token(&login(&refresh));
    let grant = https_request(
        acr.addr(),
        ca.cert_pem(),
        "POST",
        "/oauth2/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form(&[
            ("grant_type", "refresh_token"),
            ("service", &host),
            ("scope", "repository:team/app:pull,push"),
            ("refresh_token", &refresh),
        ])
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(grant.status, 200, "{}", grant.text());
    assert_eq!(login("forged").status, 401);
    let v2 = get("/v2/", &[("Authorization", &format!("Bearer {access}"))]);
    assert_eq!(v2.status, 200, "{}", v2.text());

    // skopeo pushes through the front over TLS with the refresh token: the
    // upload Locations the registry builds name the front, over https.
    let certs = tempfile::tempdir().unwrap();
    std::fs::write(certs.path().join("ca.crt"), ca.cert_pem()).unwrap();
    let image = TestImage::single(b"acr").unwrap();
    let target = format!("docker://{host}/team/app:v1");
    let out = skopeo([
        "copy",
        "--dest-cert-dir",
        &certs.path().to_string_lossy(),
        "--dest-creds",
        &format!("{ACR_REFRESH_TOKEN_USER}:{refresh}"),
        &image.oci_reference(),
        &target,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(acr.requests().iter().any(|r| r.method == "PUT"
        && r.target.starts_with("/v2/team/app/manifests/v1")
        && r.status == 201));

    acr.revoke_refresh_tokens();
    assert_eq!(login(&refresh).status, 401);
}

/// Azurite comes from npm (scripts/test.sh installs it), like the registry
/// and skopeo from Debian: without it these tests fail and say so.
fn require_azurite() {
    assert!(
        Azurite::available(),
        "Azurite is not installed at {} (bash scripts/test.sh installs it)",
        kiln_test::azurite_dir().display()
    );
}

#[test]
fn azurite_serves_blobs_to_shared_key_requests() {
    require_azurite();
    let key = kiln_test::generate_account_key();
    let azurite = Azurite::start(AzuriteOptions::new().account("kilnctx", &key)).unwrap();
    assert!(azurite.blob_endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(
        azurite.account_endpoint("kilnctx"),
        format!("{}/kilnctx", azurite.blob_endpoint())
    );
    let context: Vec<u8> = (0..=255u8).cycle().take(50_000).collect();
    azurite
        .put_blob("kilnctx", "contexts", "team/app/context.tar.gz", &context)
        .unwrap();

    // object_store's Get Blob: path-style with the account, SharedKey-signed.
    let target = "/kilnctx/contexts/team/app/context.tar.gz";
    let got = azurite
        .signed_request("kilnctx", "GET", target, &[], &[])
        .unwrap();
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, context);
    assert!(got.header("ETag").is_some());
    let part = azurite
        .signed_request("kilnctx", "GET", target, &[("Range", "bytes=0-9")], &[])
        .unwrap();
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &context[..10]);

    // A signature with another key, and no signature at all, are refused.
    let date = "Sun, 06 Nov 1994 08:49:37 GMT".to_string();
    let wrong = shared_key_authorization(
        "kilnctx",
        &kiln_test::generate_account_key(),
        "GET",
        target,
        &[
            ("x-ms-date", &date),
            ("x-ms-version", AZURE_STORAGE_VERSION),
        ],
    )
    .unwrap();
    let refused = azurite
        .request(
            "GET",
            target,
            &[
                ("x-ms-date", &date),
                ("x-ms-version", AZURE_STORAGE_VERSION),
                ("Authorization", &wrong),
            ],
            &[],
        )
        .unwrap();
    assert_eq!(refused.status, 403, "{}", refused.text());
    let anonymous = azurite
        .request(
            "GET",
            target,
            &[("x-ms-version", AZURE_STORAGE_VERSION)],
            &[],
        )
        .unwrap();
    assert!(
        matches!(anonymous.status, 403 | 404),
        "{}",
        anonymous.status
    );
    let missing = azurite
        .signed_request("kilnctx", "GET", "/kilnctx/contexts/nope.tar.gz", &[], &[])
        .unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("BlobNotFound"));

    // Dropping it kills the process.
    let pid = azurite.pid();
    drop(azurite);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn azurite_accepts_entra_tokens_over_tls() {
    require_azurite();
    let ca = TestCa::new("kiln-test cloud CA").unwrap();
    let entra = EntraId::start(
        EntraOptions::new().workload_identity("blob-reader", "system:serviceaccount:ci:kiln"),
        &ca,
    )
    .unwrap();
    let azurite = Azurite::start(AzuriteOptions::new().oauth()).unwrap();
    assert!(azurite.blob_endpoint().starts_with("https://"));
    let account = kiln_test::AZURITE_DEV_ACCOUNT;
    azurite
        .put_blob(account, "ctx", "c.tar.gz", b"blob via oauth")
        .unwrap();

    // What object_store's workload-identity provider asks Entra for.
    let assertion = entra
        .federated_token("system:serviceaccount:ci:kiln")
        .unwrap();
    let token = entra_token(
        &entra,
        &ca,
        &[
            ("client_id", "blob-reader"),
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", &assertion),
            ("scope", "https://storage.azure.com/.default"),
            ("grant_type", "client_credentials"),
        ],
    );
    let got = azurite
        .request(
            "GET",
            &format!("/{account}/ctx/c.tar.gz"),
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("x-ms-version", AZURE_STORAGE_VERSION),
            ],
            &[],
        )
        .unwrap();
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, b"blob via oauth");
}
