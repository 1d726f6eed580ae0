//! JSON Web Tokens as the clouds use them: RS256 (Google service-account
//! keys) and ES256 (the emulators' own tokens), signed and checked with ring;
//! plus the small helpers every emulator shares (randomness, clocks, dates).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    self, EcdsaKeyPair, KeyPair as _, RsaKeyPair, UnparsedPublicKey,
    ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// A signing key for JWTs.
pub(crate) enum JwtKey {
    /// RS256.
    Rsa(RsaKeyPair),
    /// ES256 (P-256, fixed 64-byte signatures).
    Ecdsa(EcdsaKeyPair),
}

impl JwtKey {
    /// A new random ES256 key.
    pub(crate) fn new_es256() -> Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| Error::Crypto(format!("generate P-256 key: {e}")))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| Error::Crypto(format!("P-256 key: {e}")))?;
        Ok(Self::Ecdsa(key))
    }

    /// An RS256 key from PKCS#8 DER.
    pub(crate) fn rs256_from_pkcs8(der: &[u8]) -> Result<Self> {
        RsaKeyPair::from_pkcs8(der)
            .map(Self::Rsa)
            .map_err(|e| Error::Crypto(format!("RSA key: {e}")))
    }

    /// The JWT `alg`.
    pub(crate) fn alg(&self) -> &'static str {
        match self {
            Self::Rsa(_) => "RS256",
            Self::Ecdsa(_) => "ES256",
        }
    }

    /// The public key: RSAPublicKey DER for RSA, the uncompressed point for P-256.
    pub(crate) fn public_key(&self) -> Vec<u8> {
        match self {
            Self::Rsa(key) => key.public().as_ref().to_vec(),
            Self::Ecdsa(key) => key.public_key().as_ref().to_vec(),
        }
    }

    /// Signs `claims` under a header of `{"alg", "typ": "JWT"}` plus `extra_header`.
    pub(crate) fn sign(&self, extra_header: &Value, claims: &Value) -> Result<String> {
        let mut header = json!({"alg": self.alg(), "typ": "JWT"});
        if let (Some(h), Some(extra)) = (header.as_object_mut(), extra_header.as_object()) {
            for (k, v) in extra {
                h.insert(k.clone(), v.clone());
            }
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let signature = match self {
            Self::Rsa(key) => {
                let mut sig = vec![0; key.public().modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .map_err(|e| Error::Crypto(format!("RS256 sign: {e}")))?;
                sig
            }
            Self::Ecdsa(key) => key
                .sign(&rng, input.as_bytes())
                .map_err(|e| Error::Crypto(format!("ES256 sign: {e}")))?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// A JWT taken apart (not yet verified).
#[derive(Debug, Clone)]
pub(crate) struct ParsedJwt {
    pub(crate) header: Value,
    pub(crate) claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

impl ParsedJwt {
    /// Splits and decodes `token`; base64url with or without padding (gcp_auth pads).
    pub(crate) fn parse(token: &str) -> Result<Self> {
        let bad = |why: &str| Error::Crypto(format!("malformed JWT: {why}"));
        let mut parts = token.trim().split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not three dot-separated parts"));
        };
        let header: Value = serde_json::from_slice(&b64url_decode(h).ok_or_else(|| bad("header"))?)
            .map_err(|_| bad("header is not JSON"))?;
        let claims: Value = serde_json::from_slice(&b64url_decode(c).ok_or_else(|| bad("claims"))?)
            .map_err(|_| bad("claims are not JSON"))?;
        let signature = b64url_decode(s).ok_or_else(|| bad("signature"))?;
        Ok(Self {
            header,
            claims,
            signing_input: format!("{h}.{c}"),
            signature,
        })
    }

    pub(crate) fn alg(&self) -> &str {
        self.header["alg"].as_str().unwrap_or("")
    }

    /// A string claim.
    pub(crate) fn claim(&self, name: &str) -> Option<&str> {
        self.claims[name].as_str()
    }

    /// A numeric claim (seconds).
    pub(crate) fn time_claim(&self, name: &str) -> Option<i64> {
        self.claims[name].as_i64()
    }

    /// Checks the signature against an RS256 public key (RSAPublicKey DER).
    pub(crate) fn verify_rs256(&self, public_key: &[u8]) -> bool {
        self.alg() == "RS256"
            && UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_key)
                .verify(self.signing_input.as_bytes(), &self.signature)
                .is_ok()
    }

    /// Checks the signature against an ES256 public key (uncompressed point).
    pub(crate) fn verify_es256(&self, public_key: &[u8]) -> bool {
        self.alg() == "ES256"
            && UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_key)
                .verify(self.signing_input.as_bytes(), &self.signature)
                .is_ok()
    }

    /// Checks with whichever of the two algorithms `key` uses.
    pub(crate) fn verify_with(&self, key: &JwtKey) -> bool {
        match key {
            JwtKey::Rsa(_) => self.verify_rs256(&key.public_key()),
            JwtKey::Ecdsa(_) => self.verify_es256(&key.public_key()),
        }
    }

    /// Whether `aud` is `audience` or a list holding it.
    pub(crate) fn has_audience(&self, audience: &str) -> bool {
        match &self.claims["aud"] {
            Value::String(s) => s == audience,
            Value::Array(list) => list.iter().any(|v| v.as_str() == Some(audience)),
            _ => false,
        }
    }
}

fn b64url_decode(part: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()
}

/// `bytes` random bytes as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // SystemRandom only fails if the OS has no randomness at all.
    SystemRandom::new()
        .fill(&mut buf)
        .expect("system randomness");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random version-4-style UUID.
pub(crate) fn random_uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `(year, month, day, hour, minute, second, weekday 0=Sunday)` of a Unix time (UTC).
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32, usize) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7) as usize;
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
        weekday,
    )
}

/// An HTTP date (RFC 9110 IMF-fixdate), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, wd) = civil(secs);
    format!(
        "{}, {d:02} {} {y} {h:02}:{mi:02}:{s:02} GMT",
        DAYS[wd],
        MONTHS[(mo - 1) as usize]
    )
}

/// `YYYY-MM-DD HH:MM:SSZ`, as Entra ID's error `timestamp`.
pub(crate) fn entra_timestamp(secs: i64) -> String {
    let (y, mo, d, h, mi, s, _) = civil(secs);
    format!("{y}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}

/// Percent-decodes a URL path segment (`+` stays `+`).
pub(crate) fn decode_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_http_dates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(entra_timestamp(1_709_251_200), "2024-03-01 00:00:00Z");
    }

    #[test]
    fn paths_decode_percent_but_not_plus() {
        assert_eq!(decode_path("a%2Fb%2Ec+d"), "a/b.c+d");
        assert_eq!(decode_path("100%"), "100%");
        assert_eq!(decode_path("x%4"), "x%4");
    }

    #[test]
    fn es256_tokens_verify_and_padding_is_tolerated() {
        let key = JwtKey::new_es256().unwrap();
        let token = key
            .sign(
                &json!({"kid": "k"}),
                &json!({"sub": "s", "aud": ["a", "b"]}),
            )
            .unwrap();
        let parsed = ParsedJwt::parse(&token).unwrap();
        assert!(parsed.verify_with(&key));
        assert!(parsed.has_audience("b"));
        assert_eq!(parsed.header["kid"], "k");
        let other = JwtKey::new_es256().unwrap();
        assert!(!parsed.verify_with(&other));
        // gcp_auth pads its base64url parts (and signs the padded text).
        let padded: Vec<String> = token.split('.').map(|p| format!("{p}==")).collect();
        assert_eq!(
            ParsedJwt::parse(&padded.join(".")).unwrap().claims["sub"],
            "s"
        );
        assert_eq!(random_uuid().len(), 36);
    }
}
