//! What a registry (or a malicious one) sends kiln, and the docker config.json it reads, by the
//! functions kiln parses them with. The first byte picks the parser:
//! - 0: a manifest or index (`Manifest::parse`, with the Content-Type the next byte picks), as
//!   `fetch_manifest` and `resolve` take them: parse → canonical JSON → parse gives the same
//!   value and the same bytes; an index's platform selection returns one of its entries;
//! - 1: an image config (`ImageConfig::parse`): the same round trip;
//! - 2: a `WWW-Authenticate` header (`auth::parse_challenge`): a parsed Bearer challenge,
//!   written back with its values quoted, parses to itself;
//! - 3: a token server's reply (`auth::parse_token_response`): a token is never empty, and
//!   written back as `{"token":…,"expires_in":…}` it parses to itself;
//! - 4: a docker `config.json` (`DockerConfig::from_bytes`, then `credential_for` each of its
//!   registries, helpers looked up in a directory that does not exist): no password, auth or
//!   token value shows in the config's `Debug`, a credential's `Debug` or any error;
//! - 5: a digest (`Digest::parse`): printed and parsed again it is the same.
#![no_main]

use kiln_oci::{media_type, Digest, ImageConfig, Manifest, Platform};
use kiln_registry::auth::{parse_challenge, parse_token_response, Challenge};
use kiln_registry::DockerConfig;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

const CONTENT_TYPES: [Option<&str>; 9] = [
    None,
    Some(media_type::OCI_MANIFEST),
    Some(media_type::OCI_INDEX),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
    Some("text/html"),
];

fn manifest(data: &[u8]) {
    let Some((&ct, bytes)) = data.split_first() else {
        return;
    };
    let ct = CONTENT_TYPES[ct as usize % CONTENT_TYPES.len()];
    let Ok(parsed) = Manifest::parse(bytes, ct) else {
        return;
    };
    let json = parsed.to_canonical_json().expect("a parsed manifest serializes");
    let again = Manifest::parse(&json, Some(parsed.media_type()))
        .unwrap_or_else(|e| panic!("canonical {} does not parse: {e}", String::from_utf8_lossy(&json)));
    assert_eq!(again, parsed, "round trip changed the manifest");
    assert_eq!(
        again.to_canonical_json().expect("serializes"),
        json,
        "canonical JSON is not stable"
    );
    match &parsed {
        Manifest::Index(index) => {
            for want in ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "windows/amd64"] {
                let want = Platform::parse(want).expect("platform");
                if let Ok(entry) = index.select(&want) {
                    assert!(
                        index.manifests.iter().any(|m| std::ptr::eq(m, entry)),
                        "select returned a descriptor not in the index"
                    );
                }
            }
        }
        Manifest::Image(image) => {
            let _ = image.required_blobs().count();
            let oci = image.to_oci();
            let json = oci.to_canonical_json().expect("an OCI copy serializes");
            assert!(Manifest::parse(&json, Some(media_type::OCI_MANIFEST)).is_ok());
        }
    }
}

fn config(bytes: &[u8]) {
    let Ok(parsed) = ImageConfig::parse(bytes) else {
        return;
    };
    let _ = parsed.platform();
    let json = parsed.to_canonical_json().expect("a parsed config serializes");
    let again = ImageConfig::parse(&json)
        .unwrap_or_else(|e| panic!("canonical {} does not parse: {e}", String::from_utf8_lossy(&json)));
    assert_eq!(again, parsed, "round trip changed the config");
    assert_eq!(again.to_canonical_json().expect("serializes"), json);
}

fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn challenge(bytes: &[u8]) {
    let header = String::from_utf8_lossy(bytes);
    let Some(parsed) = parse_challenge(&header) else {
        return;
    };
    if let Challenge::Bearer {
        realm,
        service,
        scope,
    } = &parsed
    {
        let mut written = format!("Bearer realm={}", quoted(realm));
        if let Some(service) = service {
            written.push_str(&format!(",service={}", quoted(service)));
        }
        if let Some(scope) = scope {
            written.push_str(&format!(", scope={}", quoted(scope)));
        }
        assert_eq!(parse_challenge(&written), Some(parsed), "written as {written:?}");
    }
}

fn token(bytes: &[u8]) {
    let Ok((token, expires_in)) = parse_token_response(bytes) else {
        return;
    };
    assert!(!token.is_empty(), "an empty token was accepted");
    let written = serde_json::json!({ "token": token, "expires_in": expires_in });
    let again = parse_token_response(written.to_string().as_bytes()).expect("written back");
    assert_eq!(again, (token, expires_in));
}

/// Strings of a config.json: (secret values, everything else). Secrets are the values of
/// `password`, `auth`, `identitytoken`, `registrytoken` (and the password inside `auth`).
fn strings(value: &serde_json::Value, key: &str, secrets: &mut Vec<String>, other: &mut Vec<String>) {
    use base64::Engine;
    match value {
        serde_json::Value::String(s) => {
            if matches!(key, "password" | "auth" | "identitytoken" | "registrytoken") {
                secrets.push(s.clone());
                if key == "auth" {
                    if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(s.trim()) {
                        let text = String::from_utf8_lossy(&bytes).into_owned();
                        if let Some((user, password)) = text.split_once(':') {
                            other.push(user.to_owned());
                            secrets.push(password.to_owned());
                        }
                    }
                }
            } else {
                other.push(s.clone());
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                strings(item, key, secrets, other);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                other.push(k.clone());
                strings(v, k, secrets, other);
            }
        }
        _ => {}
    }
}

fn docker_config(bytes: &[u8]) {
    let mut secrets = Vec::new();
    let mut other = Vec::new();
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        strings(&value, "", &mut secrets, &mut other);
    }
    // A secret counts when it is not also shown legitimately (a key, a user name, a helper
    // name), and holds a character kiln's own wording never has.
    secrets.retain(|s| {
        s.chars().count() >= 4
            && s.contains(['$', '%', '@', '~', '^'])
            && !other.iter().any(|o| o.contains(s.as_str()))
    });
    let leaks = |what: &str, text: &str| {
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "{what} shows the secret {s:?}: {text}");
        }
    };
    let config = match DockerConfig::from_bytes(Path::new("/fuzz/config.json"), bytes) {
        Ok(c) => c.with_helper_dir("/nonexistent-kiln-fuzz"),
        Err(e) => {
            leaks("the parse error", &e.to_string());
            return;
        }
    };
    leaks("the config's Debug", &format!("{config:?}"));
    let mut registries: Vec<String> = other.iter().take(4).cloned().collect();
    registries.extend(["docker.io".to_owned(), "r.example:5000".to_owned()]);
    for registry in &registries {
        let _ = config.has_entry_for(registry);
        match config.credential_for(registry) {
            Ok(credential) => leaks("a credential's Debug", &format!("{credential:?}")),
            Err(e) => leaks("a credential error", &e.to_string()),
        }
    }
}

fn digest(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(d) = Digest::parse(&text) {
        let again = Digest::parse(&d.to_string()).expect("a digest prints parseably");
        assert_eq!(again, d);
        assert_eq!(again.hex().len(), d.algorithm().hex_len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => manifest(rest),
        1 => config(rest),
        2 => challenge(rest),
        3 => token(rest),
        4 => docker_config(rest),
        _ => digest(rest),
    }
});
