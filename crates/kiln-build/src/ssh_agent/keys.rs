//! A minimal, read-only SSH agent over private key files, for `--ssh ID=KEYFILE[,KEYFILE]`.
//!
//! BuildKit serves key files to `RUN --mount=type=ssh` steps through an agent of its own, so the
//! step can sign with the keys but never reads them. This does the same: it loads unencrypted
//! OpenSSH-format keys (OpenSSH's PROTOCOL.key) and answers the agent protocol
//! (draft-miller-ssh-agent) with only what a client needs: listing the keys and signing. It
//! refuses everything that would change the agent (adding, removing, locking) and every
//! extension, so a step can neither add keys nor learn anything but the public halves.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use num_bigint::BigUint;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// The largest agent message read: OpenSSH's own agent limit, so a peer cannot make kiln
/// allocate more than this for one frame.
const MAX_MESSAGE: usize = 256 * 1024;
/// The largest key file read: an RSA-16384 key file is under 16 KiB, so anything bigger is not a
/// key, and reading it whole would only cost memory.
const MAX_KEY_FILE: u64 = 1024 * 1024;

const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const END: &str = "-----END OPENSSH PRIVATE KEY-----";
const MAGIC: &[u8] = b"openssh-key-v1\0";

// Agent message numbers and flags (draft-miller-ssh-agent, section 7).
const FAILURE: u8 = 5;
const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
const RSA_SHA2_256: u32 = 2;
const RSA_SHA2_512: u32 = 4;

/// The advice for every key kiln cannot serve itself: a real agent can.
const USE_AN_AGENT: &str = "load it into an ssh-agent and pass --ssh ID=$SSH_AUTH_SOCK";

/// A private key loaded from a file, ready to sign.
pub(crate) struct AgentKey {
    /// The public key in SSH wire form: what clients ask for and what identifies the key.
    blob: Vec<u8>,
    /// The file's comment, as bytes: OpenSSH does not require it to be UTF-8.
    comment: Vec<u8>,
    signer: Signer,
}

/// The private key, as the ring key pair that signs with it.
enum Signer {
    Ed25519(Ed25519KeyPair),
    Ecdsa {
        pair: EcdsaKeyPair,
        /// The SSH key type, which is also the signature algorithm's name.
        name: &'static str,
    },
    Rsa(RsaKeyPair),
}

impl std::fmt::Debug for AgentKey {
    /// Shows the key type and comment only: never key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKey")
            .field("type", &self.signer.key_type())
            .field("comment", &String::from_utf8_lossy(&self.comment))
            .finish()
    }
}

impl AgentKey {
    /// Loads an unencrypted OpenSSH private key file ("-----BEGIN OPENSSH PRIVATE KEY-----"):
    /// ed25519, ecdsa-sha2-nistp256/384, ssh-rsa. Errors name the file and say what is wrong
    /// (and what to do instead); they never include key material.
    pub(crate) fn load(path: &Path) -> Result<AgentKey, String> {
        read_key_file(path)
            .and_then(|text| parse_file(&text.0))
            .map_err(|problem| problem.message(path))
    }
}

/// Serves one agent connection until the peer closes it: REQUEST_IDENTITIES is answered with
/// every key's public blob and comment, SIGN_REQUEST with a signature (RSA only with SHA-2, as
/// the request's flags ask: plain SHA-1 `ssh-rsa` is refused), and everything else, a key not
/// served included, with FAILURE. A frame over 256 KiB, or one cut short, ends the connection
/// with an error.
pub(crate) fn serve(mut conn: UnixStream, keys: &[AgentKey]) -> io::Result<()> {
    // An accepted socket may come from a non-blocking listener; replies need blocking writes.
    conn.set_nonblocking(false)?;
    let rng = SystemRandom::new();
    while let Some(message) = read_message(&mut conn)? {
        write_message(&mut conn, &answer(&message, keys, &rng))?;
    }
    Ok(())
}

/// Reads one agent message (without its length); `None` when the peer closed the connection
/// between messages. A message over 256 KiB, or one cut short, is an error.
pub(super) fn read_message(conn: &mut UnixStream) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    if !read_frame_start(conn, &mut header)? {
        return Ok(None);
    }
    let len = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("agent message of {len} bytes is over the {MAX_MESSAGE}-byte limit"),
        ));
    }
    let mut message = vec![0u8; len];
    conn.read_exact(&mut message)?;
    Ok(Some(message))
}

/// Writes one agent message with its length (FAILURE instead of one too long to frame).
pub(super) fn write_message(conn: &mut UnixStream, message: &[u8]) -> io::Result<()> {
    let message = if u32::try_from(message.len()).is_ok() {
        message
    } else {
        &[FAILURE]
    };
    let mut frame = Vec::with_capacity(message.len() + 4);
    put_string(&mut frame, message);
    conn.write_all(&frame)
}

/// Whether a request only reads the agent: listing keys or signing with one. Everything else
/// (adding, removing, locking keys, extensions) would change it or tell more.
pub(super) fn is_read_only_request(message: &[u8]) -> bool {
    matches!(
        message.first(),
        Some(&REQUEST_IDENTITIES) | Some(&SIGN_REQUEST)
    )
}

/// FAILURE, the reply to a request kiln does not pass on.
pub(super) const FAILURE_REPLY: &[u8] = &[FAILURE];

/// Reads a frame's 4-byte length, telling a clean close before it (`false`) from one inside
/// it (an error).
fn read_frame_start(conn: &mut UnixStream, header: &mut [u8; 4]) -> io::Result<bool> {
    let mut filled = 0;
    while let Some(rest) = header.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match conn.read(rest) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The reply to one message (without its length).
fn answer(message: &[u8], keys: &[AgentKey], rng: &SystemRandom) -> Vec<u8> {
    let mut reader = Reader(message);
    match reader.u8() {
        Some(REQUEST_IDENTITIES) => identities(keys),
        Some(SIGN_REQUEST) => sign_request(reader, keys, rng).unwrap_or_else(|| vec![FAILURE]),
        _ => vec![FAILURE],
    }
}

/// IDENTITIES_ANSWER: each distinct key once (the same file given twice lists once).
fn identities(keys: &[AgentKey]) -> Vec<u8> {
    let mut distinct: Vec<&AgentKey> = Vec::new();
    for key in keys {
        if !distinct.iter().any(|seen| seen.blob == key.blob) {
            distinct.push(key);
        }
    }
    let mut out = vec![IDENTITIES_ANSWER];
    put_u32(&mut out, distinct.len());
    for key in distinct {
        put_string(&mut out, &key.blob);
        put_string(&mut out, &key.comment);
    }
    out
}

/// SIGN_REQUEST: string key blob, string data, uint32 flags. `None` means FAILURE: a malformed
/// request, a key not served, or an algorithm refused.
fn sign_request(mut reader: Reader<'_>, keys: &[AgentKey], rng: &SystemRandom) -> Option<Vec<u8>> {
    let blob = reader.string()?;
    let data = reader.string()?;
    let flags = reader.u32()?;
    let key = keys.iter().find(|key| key.blob == blob)?;
    let signature = key.signer.sign(data, flags, rng)?;
    let mut out = vec![SIGN_RESPONSE];
    put_string(&mut out, &signature);
    Some(out)
}

impl Signer {
    fn key_type(&self) -> &'static str {
        match self {
            Signer::Ed25519(_) => "ssh-ed25519",
            Signer::Ecdsa { name, .. } => name,
            Signer::Rsa(_) => "ssh-rsa",
        }
    }

    /// An SSH signature blob (string algorithm, string signature) over `data`.
    fn sign(&self, data: &[u8], flags: u32, rng: &SystemRandom) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match self {
            Signer::Ed25519(pair) => {
                put_string(&mut out, b"ssh-ed25519");
                put_string(&mut out, pair.sign(data).as_ref());
            }
            Signer::Ecdsa { pair, name } => {
                // ring gives r || s at the field's width; SSH wants mpint r, mpint s.
                let fixed = pair.sign(rng, data).ok()?;
                let fixed = fixed.as_ref();
                let (r, s) = fixed.split_at_checked(fixed.len() / 2)?;
                let mut inner = Vec::new();
                put_mpint(&mut inner, r);
                put_mpint(&mut inner, s);
                put_string(&mut out, name.as_bytes());
                put_string(&mut out, &inner);
            }
            Signer::Rsa(pair) => {
                // OpenSSH's agent gives SHA-256 precedence when both flags are set; SHA-1
                // (no flag) is refused, as OpenSSH itself no longer accepts it by default.
                let (name, encoding): (&[u8], _) = if flags & RSA_SHA2_256 != 0 {
                    (b"rsa-sha2-256", &signature::RSA_PKCS1_SHA256)
                } else if flags & RSA_SHA2_512 != 0 {
                    (b"rsa-sha2-512", &signature::RSA_PKCS1_SHA512)
                } else {
                    return None;
                };
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(encoding, rng, data, &mut sig).ok()?;
                put_string(&mut out, name);
                put_string(&mut out, &sig);
            }
        }
        Some(out)
    }
}

/// What is wrong with a key file; turned into a message naming the file by `message`.
#[derive(Debug)]
enum Problem {
    Unreadable(io::Error),
    TooLarge,
    NotAKey,
    PublicKey,
    /// Another private key encoding, by name.
    OtherFormat(&'static str),
    Encrypted,
    /// The key type, if it is printable.
    UnknownType(Option<String>),
    /// ring refused the key; its reason is a fixed word, never key material.
    Rejected {
        rsa: bool,
        reason: String,
    },
    Malformed(&'static str),
}

impl Problem {
    fn message(&self, path: &Path) -> String {
        let p = path.display();
        match self {
            Problem::Unreadable(e) => format!("cannot read ssh key {p}: {e}"),
            Problem::TooLarge => format!(
                "ssh key {p} is over {} KiB: not a private key file",
                MAX_KEY_FILE / 1024
            ),
            Problem::NotAKey => {
                format!("ssh key {p} is not an OpenSSH private key (it has no \"{BEGIN}\" line)")
            }
            Problem::PublicKey => format!(
                "ssh key {p} is a public key: pass the private key file (usually the same name \
                 without .pub)"
            ),
            Problem::OtherFormat(format) => format!(
                "ssh key {p} is in {format} format, and kiln reads OpenSSH-format keys only: \
                 convert it with `ssh-keygen -p -f {p}` (which rewrites the file in place) or \
                 {USE_AN_AGENT}"
            ),
            Problem::Encrypted => format!(
                "ssh key {p} is encrypted: kiln serves unencrypted keys only; {USE_AN_AGENT}"
            ),
            Problem::UnknownType(name) => format!(
                "ssh key {p} is of type {}, which kiln cannot serve (it serves ssh-ed25519, \
                 ecdsa-sha2-nistp256, ecdsa-sha2-nistp384 and ssh-rsa): {USE_AN_AGENT}",
                name.as_deref().unwrap_or("(unprintable)")
            ),
            Problem::Rejected { rsa: true, reason } => format!(
                "ssh key {p} was rejected ({reason}): kiln signs with RSA keys of 2048, 3072 or \
                 4096 bits with an exponent of at least 65537 only; {USE_AN_AGENT}"
            ),
            Problem::Rejected { rsa: false, reason } => format!(
                "ssh key {p} was rejected ({reason}): its private and public halves do not \
                 match, or it is damaged"
            ),
            Problem::Malformed(what) => {
                format!("ssh key {p} is not a valid OpenSSH private key: {what}")
            }
        }
    }
}

/// A buffer holding secret bytes, zeroed when dropped (best effort: it keeps the decoded key
/// from lingering in freed memory, but cannot reach copies ring or the allocator make).
struct Secret(Vec<u8>);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

fn read_key_file(path: &Path) -> Result<Secret, Problem> {
    let file = std::fs::File::open(path).map_err(Problem::Unreadable)?;
    let mut text = Secret(Vec::new());
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut text.0)
        .map_err(Problem::Unreadable)?;
    if u64::try_from(text.0.len()).unwrap_or(u64::MAX) > MAX_KEY_FILE {
        return Err(Problem::TooLarge);
    }
    Ok(text)
}

/// Recognises the file's format and, for OpenSSH's, decodes the armour and parses the key.
fn parse_file(text: &[u8]) -> Result<AgentKey, Problem> {
    let text = std::str::from_utf8(text).map_err(|_| Problem::NotAKey)?;
    let Some(start) = text.find(BEGIN) else {
        return Err(recognise_other(text));
    };
    let body = text.get(start + BEGIN.len()..).ok_or(Problem::NotAKey)?;
    let end = body
        .find(END)
        .ok_or(Problem::Malformed("it has no END line"))?;
    let armoured = body.get(..end).ok_or(Problem::NotAKey)?;
    let base64 = Secret(
        armoured
            .bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    // OpenSSH pads its base64; accept unpadded too, as its own reader does.
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let decoded = Secret(
        engine
            .decode(&base64.0)
            .map_err(|_| Problem::Malformed("its base64 is damaged"))?,
    );
    parse_container(&decoded.0)
}

/// Names the format of a file that is not an OpenSSH private key, for a message that helps.
fn recognise_other(text: &str) -> Problem {
    const OTHERS: [(&str, &str); 6] = [
        ("-----BEGIN RSA PRIVATE KEY-----", "PEM (PKCS#1)"),
        ("-----BEGIN EC PRIVATE KEY-----", "PEM (SEC1)"),
        ("-----BEGIN DSA PRIVATE KEY-----", "PEM"),
        ("-----BEGIN PRIVATE KEY-----", "PKCS#8"),
        ("-----BEGIN ENCRYPTED PRIVATE KEY-----", "PKCS#8"),
        ("PuTTY-User-Key-File-", "PuTTY"),
    ];
    if let Some((_, name)) = OTHERS.iter().find(|(marker, _)| text.contains(marker)) {
        return Problem::OtherFormat(name);
    }
    let first = text.trim_start();
    let is_public = first.starts_with("---- BEGIN SSH2 PUBLIC KEY ----")
        || ["ssh-", "ecdsa-", "sk-"].iter().any(|prefix| {
            first.starts_with(prefix)
                && first
                    .split_whitespace()
                    .next()
                    .is_some_and(|word| !word.contains('='))
        });
    if is_public {
        Problem::PublicKey
    } else {
        Problem::NotAKey
    }
}

/// Parses openssh-key-v1: magic, ciphername, kdfname, kdfoptions, nkeys, the public blobs, then
/// the private section (check ints, the key, its comment, padding 1, 2, 3, ...).
fn parse_container(data: &[u8]) -> Result<AgentKey, Problem> {
    const SHORT: Problem = Problem::Malformed("it is cut short");
    let mut reader = Reader(data);
    if reader.take(MAGIC.len()) != Some(MAGIC) {
        return Err(Problem::Malformed(
            "it does not start with \"openssh-key-v1\"",
        ));
    }
    let cipher = reader.string().ok_or(SHORT)?;
    let kdf = reader.string().ok_or(SHORT)?;
    let _kdf_options = reader.string().ok_or(SHORT)?;
    if cipher != b"none" || kdf != b"none" {
        return Err(Problem::Encrypted);
    }
    if reader.u32().ok_or(SHORT)? != 1 {
        return Err(Problem::Malformed("it does not hold exactly one key"));
    }
    let public_blob = reader.string().ok_or(SHORT)?;
    let private = reader.string().ok_or(SHORT)?;
    if !reader.is_empty() {
        return Err(Problem::Malformed("it has data after the private section"));
    }
    // Unencrypted sections are padded to the 8-byte "none" cipher block.
    if private.is_empty() || private.len() % 8 != 0 {
        return Err(Problem::Malformed("its private section has a bad length"));
    }
    let mut reader = Reader(private);
    if reader.u32().ok_or(SHORT)? != reader.u32().ok_or(SHORT)? {
        return Err(Problem::Malformed("its check numbers differ"));
    }
    let key_type = reader.string().ok_or(SHORT)?;
    let (blob, signer) = match key_type {
        b"ssh-ed25519" => ed25519(&mut reader)?,
        b"ecdsa-sha2-nistp256" => ecdsa(&mut reader, &ECDSA_P256)?,
        b"ecdsa-sha2-nistp384" => ecdsa(&mut reader, &ECDSA_P384)?,
        b"ssh-rsa" => rsa(&mut reader)?,
        other => return Err(Problem::UnknownType(printable(other))),
    };
    let comment = reader.string().ok_or(SHORT)?.to_vec();
    let padding_is_counting = reader
        .0
        .iter()
        .zip(1u8..)
        .all(|(&byte, expected)| byte == expected);
    if !padding_is_counting {
        return Err(Problem::Malformed("its padding is damaged"));
    }
    if blob != public_blob {
        return Err(Problem::Malformed(
            "its public key does not match its private key",
        ));
    }
    Ok(AgentKey {
        blob,
        comment,
        signer,
    })
}

/// Ed25519: string public key (32 bytes), string seed || public key (64 bytes).
fn ed25519(reader: &mut Reader<'_>) -> Result<(Vec<u8>, Signer), Problem> {
    let bad = || Problem::Malformed("its ed25519 key is damaged");
    let public = reader.string().ok_or_else(bad)?;
    let private = reader.string().ok_or_else(bad)?;
    if public.len() != 32 || private.len() != 64 {
        return Err(bad());
    }
    let (seed, public_copy) = private.split_at_checked(32).ok_or_else(bad)?;
    if public_copy != public {
        return Err(bad());
    }
    let pair = Ed25519KeyPair::from_seed_and_public_key(seed, public).map_err(rejected(false))?;
    let mut blob = Vec::new();
    put_string(&mut blob, b"ssh-ed25519");
    put_string(&mut blob, public);
    Ok((blob, Signer::Ed25519(pair)))
}

/// One ECDSA curve kiln serves.
struct Curve {
    key_type: &'static str,
    name: &'static [u8],
    /// The private scalar's width in bytes, which ring wants exactly.
    scalar_len: usize,
    algorithm: &'static signature::EcdsaSigningAlgorithm,
}

static ECDSA_P256: Curve = Curve {
    key_type: "ecdsa-sha2-nistp256",
    name: b"nistp256",
    scalar_len: 32,
    algorithm: &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
};

static ECDSA_P384: Curve = Curve {
    key_type: "ecdsa-sha2-nistp384",
    name: b"nistp384",
    scalar_len: 48,
    algorithm: &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
};

/// ECDSA: string curve name, string public point (uncompressed), mpint private scalar.
fn ecdsa(reader: &mut Reader<'_>, curve: &Curve) -> Result<(Vec<u8>, Signer), Problem> {
    let bad = || Problem::Malformed("its ECDSA key is damaged");
    if reader.string().ok_or_else(bad)? != curve.name {
        return Err(bad());
    }
    let point = reader.string().ok_or_else(bad)?;
    let scalar = reader.positive_mpint().ok_or_else(bad)?;
    let pad = curve.scalar_len.checked_sub(scalar.len()).ok_or_else(bad)?;
    let mut fixed = Secret(vec![0u8; pad]);
    fixed.0.extend_from_slice(scalar);
    let pair = EcdsaKeyPair::from_private_key_and_public_key(
        curve.algorithm,
        &fixed.0,
        point,
        &SystemRandom::new(),
    )
    .map_err(rejected(false))?;
    let mut blob = Vec::new();
    put_string(&mut blob, curve.key_type.as_bytes());
    put_string(&mut blob, curve.name);
    put_string(&mut blob, point);
    let name = curve.key_type;
    Ok((blob, Signer::Ecdsa { pair, name }))
}

/// RSA: mpint n, e, d, iqmp (q⁻¹ mod p), p, q. ring also wants d mod (p-1) and d mod (q-1).
fn rsa(reader: &mut Reader<'_>) -> Result<(Vec<u8>, Signer), Problem> {
    let bad = || Problem::Malformed("its RSA key is damaged");
    let mut next = || reader.positive_mpint().ok_or_else(bad);
    let (n, e, d, iqmp, p, q) = (next()?, next()?, next()?, next()?, next()?, next()?);
    let d_big = BigUint::from_bytes_be(d);
    let one = BigUint::from(1u8);
    let crt_exponent = |prime: &[u8]| -> Result<Secret, Problem> {
        let prime = BigUint::from_bytes_be(prime);
        if prime <= one {
            return Err(bad());
        }
        Ok(Secret((&d_big % (prime - &one)).to_bytes_be()))
    };
    let (dp, dq) = (crt_exponent(p)?, crt_exponent(q)?);
    let components = ring::rsa::KeyPairComponents {
        public_key: ring::rsa::PublicKeyComponents { n, e },
        d,
        p,
        q,
        dP: strip_zeros(&dp.0),
        dQ: strip_zeros(&dq.0),
        qInv: iqmp,
    };
    let pair = RsaKeyPair::from_components(&components).map_err(rejected(true))?;
    let mut blob = Vec::new();
    put_string(&mut blob, b"ssh-rsa");
    put_mpint(&mut blob, e);
    put_mpint(&mut blob, n);
    Ok((blob, Signer::Rsa(pair)))
}

fn rejected(rsa: bool) -> impl Fn(ring::error::KeyRejected) -> Problem {
    move |why| Problem::Rejected {
        rsa,
        reason: why.to_string(),
    }
}

/// A key type fit to print in a message: short printable ASCII, or nothing.
fn printable(name: &[u8]) -> Option<String> {
    let fits = !name.is_empty() && name.len() <= 64 && name.iter().all(u8::is_ascii_graphic);
    fits.then(|| String::from_utf8_lossy(name).into_owned())
}

/// A bounds-checked cursor over SSH wire data: every read returns `None` on short input rather
/// than panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u32(&mut self) -> Option<u32> {
        let bytes: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_be_bytes(bytes))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        self.take(len)
    }

    /// A non-negative mpint's magnitude, without leading zeros (which ring rejects).
    fn positive_mpint(&mut self) -> Option<&'a [u8]> {
        let bytes = self.string()?;
        if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            return None;
        }
        Some(strip_zeros(bytes))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.get(zeros..).unwrap_or_default()
}

/// Appends a uint32. Every length written here is bounded by the key file and message caps,
/// far below 4 GiB, so the saturation never happens.
fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends an unsigned big-endian number as an mpint: minimal, with a leading zero byte when
/// the top bit is set (so it does not read as negative); zero is the empty string.
fn put_mpint(out: &mut Vec<u8>, magnitude: &[u8]) {
    let magnitude = strip_zeros(magnitude);
    if magnitude.first().is_some_and(|b| b & 0x80 != 0) {
        put_u32(out, magnitude.len() + 1);
        out.push(0);
        out.extend_from_slice(magnitude);
    } else {
        put_string(out, magnitude);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::process::{Command, Output};
    use std::sync::Arc;

    /// A directory of its own under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("kiln-keys-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn run(command: &mut Command) -> Output {
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// `ssh-keygen -t TYPE ... -f dir/name` with the given extra arguments; returns the path.
    fn keygen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
        let path = dir.join(name);
        run(Command::new("ssh-keygen")
            .args(["-q", "-C", &format!("{name}@kiln-test")])
            .args(args)
            .arg("-f")
            .arg(&path));
        path
    }

    /// The four key types kiln serves, generated by the host's ssh-keygen.
    const KINDS: [(&str, &[&str]); 4] = [
        ("ed25519", &["-t", "ed25519", "-N", ""]),
        ("ecdsa256", &["-t", "ecdsa", "-b", "256", "-N", ""]),
        ("ecdsa384", &["-t", "ecdsa", "-b", "384", "-N", ""]),
        ("rsa2048", &["-t", "rsa", "-b", "2048", "-N", ""]),
    ];

    fn generate_all(dir: &Path) -> Vec<PathBuf> {
        KINDS
            .iter()
            .map(|(name, args)| keygen(dir, name, args))
            .collect()
    }

    /// Serves `keys` on `dir/agent.sock`, one thread per connection, as kiln would.
    fn start_agent(dir: &Path, keys: Vec<AgentKey>) -> PathBuf {
        let socket = dir.join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let keys = Arc::new(keys);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let keys = Arc::clone(&keys);
                std::thread::spawn(move || {
                    let _ = serve(conn, &keys);
                });
            }
        });
        socket
    }

    /// Sends one framed message and reads the framed reply.
    fn request(conn: &mut UnixStream, message: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        put_string(&mut frame, message);
        conn.write_all(&frame).unwrap();
        let mut len = [0u8; 4];
        conn.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
        conn.read_exact(&mut reply).unwrap();
        reply
    }

    fn sign_message(blob: &[u8], data: &[u8], flags: u32) -> Vec<u8> {
        let mut message = vec![SIGN_REQUEST];
        put_string(&mut message, blob);
        put_string(&mut message, data);
        message.extend_from_slice(&flags.to_be_bytes());
        message
    }

    #[test]
    fn ssh_add_lists_every_key_with_its_fingerprint() {
        let dir = TempDir::new("list");
        let paths = generate_all(&dir.0);
        let keys = paths.iter().map(|p| AgentKey::load(p).unwrap()).collect();
        let socket = start_agent(&dir.0, keys);

        let listed = run(Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &socket));
        let listed = String::from_utf8(listed.stdout).unwrap();
        let public = run(Command::new("ssh-add")
            .arg("-L")
            .env("SSH_AUTH_SOCK", &socket));
        let public = String::from_utf8(public.stdout).unwrap();
        assert_eq!(listed.lines().count(), KINDS.len(), "{listed}");
        for path in &paths {
            let pub_path = path.with_extension("pub");
            let expected = run(Command::new("ssh-keygen").arg("-lf").arg(&pub_path));
            let expected = String::from_utf8(expected.stdout).unwrap();
            // "BITS SHA256:... COMMENT (TYPE)": ssh-add -l prints the same line.
            assert!(
                listed.lines().any(|line| line == expected.trim_end()),
                "{expected} not in {listed}"
            );
            let pub_line = std::fs::read_to_string(&pub_path).unwrap();
            assert!(public.lines().any(|line| line == pub_line.trim_end()));
        }
    }

    #[test]
    fn ssh_keygen_signs_through_the_agent_and_verifies() {
        let dir = TempDir::new("sign");
        let paths = generate_all(&dir.0);
        let keys = paths.iter().map(|p| AgentKey::load(p).unwrap()).collect();
        // Without the private files, ssh-keygen can only sign through the agent.
        for path in &paths {
            std::fs::remove_file(path).unwrap();
        }
        let socket = start_agent(&dir.0, keys);
        let file = dir.0.join("data");
        std::fs::write(&file, b"what the step signs\n").unwrap();
        for path in &paths {
            let pub_path = path.with_extension("pub");
            run(Command::new("ssh-keygen")
                .args(["-Y", "sign", "-n", "test", "-f"])
                .arg(&pub_path)
                .arg(&file)
                .env("SSH_AUTH_SOCK", &socket));
            let signers = dir.0.join("allowed_signers");
            let pub_line = std::fs::read_to_string(&pub_path).unwrap();
            std::fs::write(&signers, format!("signer@kiln {pub_line}")).unwrap();
            let verified = Command::new("ssh-keygen")
                .args(["-Y", "verify", "-n", "test", "-I", "signer@kiln", "-f"])
                .arg(&signers)
                .arg("-s")
                .arg(file.with_extension("sig"))
                .stdin(std::fs::File::open(&file).unwrap())
                .output()
                .unwrap();
            assert!(
                verified.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&verified.stderr)
            );
            std::fs::remove_file(file.with_extension("sig")).unwrap();
        }
    }

    /// `ssh-add -T` signs through the agent and verifies. Not for RSA: OpenSSH 9.2's asks for a
    /// plain (SHA-1) ssh-rsa signature, which the agent refuses; the RSA test below covers it.
    #[test]
    fn ssh_add_tests_each_key() {
        let dir = TempDir::new("test");
        let paths = generate_all(&dir.0);
        let keys = paths.iter().map(|p| AgentKey::load(p).unwrap()).collect();
        let socket = start_agent(&dir.0, keys);
        for path in paths.iter().filter(|p| !p.ends_with("rsa2048")) {
            run(Command::new("ssh-add")
                .arg("-T")
                .arg(path.with_extension("pub"))
                .env("SSH_AUTH_SOCK", &socket));
        }
    }

    #[test]
    fn rsa_signs_with_sha2_as_asked_and_refuses_sha1() {
        let dir = TempDir::new("rsa");
        let path = keygen(&dir.0, "rsa", &["-t", "rsa", "-b", "2048", "-N", ""]);
        let key = AgentKey::load(&path).unwrap();
        let mut blob = Reader(&key.blob);
        assert_eq!(blob.string(), Some(&b"ssh-rsa"[..]));
        let e = blob.positive_mpint().unwrap().to_vec();
        let n = blob.positive_mpint().unwrap().to_vec();
        let public = signature::RsaPublicKeyComponents { n, e };
        let blob = key.blob.clone();
        let (mut conn, theirs) = UnixStream::pair().unwrap();
        let agent = std::thread::spawn(move || serve(theirs, &[key]));
        let data = b"session data";
        for (flags, name, algorithm) in [
            (
                RSA_SHA2_256,
                "rsa-sha2-256",
                &signature::RSA_PKCS1_2048_8192_SHA256,
            ),
            (
                RSA_SHA2_512,
                "rsa-sha2-512",
                &signature::RSA_PKCS1_2048_8192_SHA512,
            ),
            (
                RSA_SHA2_256 | RSA_SHA2_512,
                "rsa-sha2-256",
                &signature::RSA_PKCS1_2048_8192_SHA256,
            ),
        ] {
            let reply = request(&mut conn, &sign_message(&blob, data, flags));
            let mut reply = Reader(&reply);
            assert_eq!(reply.u8(), Some(SIGN_RESPONSE));
            let mut sig = Reader(reply.string().unwrap());
            assert_eq!(sig.string(), Some(name.as_bytes()));
            public
                .verify(algorithm, data, sig.string().unwrap())
                .unwrap();
        }
        assert_eq!(request(&mut conn, &sign_message(&blob, data, 0)), [FAILURE]);
        drop(conn);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn ecdsa_signatures_are_mpint_pairs() {
        let dir = TempDir::new("ecdsa");
        for (bits, verify) in [
            ("256", &signature::ECDSA_P256_SHA256_FIXED),
            ("384", &signature::ECDSA_P384_SHA384_FIXED),
        ] {
            let path = keygen(&dir.0, bits, &["-t", "ecdsa", "-b", bits, "-N", ""]);
            let key = AgentKey::load(&path).unwrap();
            let mut blob = Reader(&key.blob);
            blob.string().unwrap();
            blob.string().unwrap();
            let point = blob.string().unwrap().to_vec();
            let width = (point.len() - 1) / 2;
            let rng = SystemRandom::new();
            // Enough signatures that some r or s has its top bit set (and needs a zero byte).
            for _ in 0..16 {
                let sig = key.signer.sign(b"data", 0, &rng).unwrap();
                let mut sig = Reader(&sig);
                sig.string().unwrap();
                let mut pair = Reader(sig.string().unwrap());
                let mut fixed = Vec::new();
                for _ in 0..2 {
                    let raw = pair.string().unwrap();
                    assert!(raw.first().is_none_or(|&b| b & 0x80 == 0));
                    assert!(raw.len() < 2 || raw[0] != 0 || raw[1] & 0x80 != 0);
                    let number = strip_zeros(raw);
                    fixed.extend(std::iter::repeat_n(0, width - number.len()));
                    fixed.extend_from_slice(number);
                }
                assert!(pair.is_empty());
                signature::UnparsedPublicKey::new(verify, &point)
                    .verify(b"data", &fixed)
                    .unwrap();
            }
        }
    }

    #[test]
    fn mpints_are_minimal_twos_complement() {
        let encode = |n: &[u8]| {
            let mut out = Vec::new();
            put_mpint(&mut out, n);
            out
        };
        assert_eq!(encode(&[]), [0, 0, 0, 0]);
        assert_eq!(encode(&[0, 0]), [0, 0, 0, 0]);
        assert_eq!(encode(&[0x7f]), [0, 0, 0, 1, 0x7f]);
        assert_eq!(encode(&[0x80]), [0, 0, 0, 2, 0, 0x80]);
        assert_eq!(encode(&[0, 0, 0x12, 0x34]), [0, 0, 0, 2, 0x12, 0x34]);
    }

    #[test]
    fn unusable_files_get_clear_errors() {
        let dir = TempDir::new("errors");
        let cases: [(&str, &[&str], &str); 6] = [
            ("encrypted", &["-t", "ed25519", "-N", "pass"], "is encrypted: kiln serves unencrypted keys only; load it into an ssh-agent and pass --ssh ID=$SSH_AUTH_SOCK"),
            ("encrypted_rsa", &["-t", "rsa", "-b", "2048", "-N", "pass"], "is encrypted"),
            ("pem_rsa", &["-t", "rsa", "-b", "2048", "-N", "", "-m", "PEM"], "is in PEM (PKCS#1) format"),
            ("pem_ecdsa", &["-t", "ecdsa", "-N", "", "-m", "PEM"], "is in PEM (SEC1) format"),
            ("pkcs8", &["-t", "ecdsa", "-N", "", "-m", "PKCS8"], "is in PKCS#8 format"),
            ("small_rsa", &["-t", "rsa", "-b", "1024", "-N", ""], "RSA keys of 2048, 3072 or 4096 bits"),
        ];
        for (name, args, expected) in cases {
            let path = keygen(&dir.0, name, args);
            let error = AgentKey::load(&path).unwrap_err();
            assert!(error.contains(expected), "{name}: {error}");
            assert!(error.contains(&path.display().to_string()), "{error}");
            if expected.contains("format") {
                let convert = format!("`ssh-keygen -p -f {}`", path.display());
                assert!(error.contains(&convert), "{error}");
            }
            // No line of the key file (its base64 included) shows up in the message.
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text
                .lines()
                .filter(|l| l.len() > 20 && !l.starts_with("-----"))
            {
                assert!(!error.contains(line), "{name}: {error}");
            }
        }
        let public = keygen(&dir.0, "dsa_free", &["-t", "ed25519", "-N", ""]).with_extension("pub");
        assert!(AgentKey::load(&public)
            .unwrap_err()
            .contains("is a public key"));
        let missing = AgentKey::load(&dir.0.join("missing")).unwrap_err();
        assert!(missing.starts_with("cannot read ssh key "), "{missing}");
        let garbage = dir.0.join("garbage");
        std::fs::write(&garbage, [0xff, 0, 1, 2]).unwrap();
        assert!(AgentKey::load(&garbage)
            .unwrap_err()
            .contains("not an OpenSSH private key"));
    }

    #[test]
    fn unknown_key_types_are_named() {
        // A well-formed container whose key type kiln does not serve.
        let mut private = Vec::new();
        private.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 7]);
        put_string(&mut private, b"ssh-dss");
        while private.len() % 8 != 0 {
            private.push(0);
        }
        let mut data = MAGIC.to_vec();
        for field in [&b"none"[..], b"none", b""] {
            put_string(&mut data, field);
        }
        put_u32(&mut data, 1);
        put_string(&mut data, b"");
        put_string(&mut data, &private);
        let error = parse_container(&data).unwrap_err().message(Path::new("k"));
        assert!(
            error.contains("is of type ssh-dss, which kiln cannot serve"),
            "{error}"
        );
    }

    /// Decodes a generated key file to its openssh-key-v1 bytes.
    fn container(path: &Path) -> Vec<u8> {
        let text = std::fs::read_to_string(path).unwrap();
        let body: String = text
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    /// Every truncation and many one-byte corruptions of real key files are refused (or, where
    /// the byte is the comment or a check number pair, still load) without panicking.
    #[test]
    fn damaged_key_files_do_not_panic() {
        let dir = TempDir::new("damaged");
        for path in generate_all(&dir.0) {
            let data = container(&path);
            assert!(parse_container(&data).is_ok());
            for len in 0..data.len() {
                assert!(parse_container(&data[..len]).is_err());
            }
            // RSA validation is slow in debug builds: corrupt every 7th byte there.
            let step = if data.len() > 1000 { 7 } else { 1 };
            for at in (0..data.len()).step_by(step) {
                for flip in [0x01, 0x80, 0xff] {
                    let mut damaged = data.clone();
                    damaged[at] ^= flip;
                    let _ = parse_container(&damaged);
                }
            }
        }
        // And text that only looks like a key file.
        for text in [
            format!("{BEGIN}\n"),
            format!("{BEGIN}\n!!!!\n{END}\n"),
            format!("{BEGIN}\nAAAA\n{END}\n"),
            format!("{END}\n{BEGIN}\n"),
        ] {
            assert!(parse_file(text.as_bytes()).is_err(), "{text}");
        }
    }

    /// A small deterministic generator, so the garbage is the same on every run.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn garbage_messages_get_failure() {
        let dir = TempDir::new("garbage");
        let path = keygen(&dir.0, "ed", &["-t", "ed25519", "-N", ""]);
        let key = AgentKey::load(&path).unwrap();
        let blob = key.blob.clone();
        let (mut conn, theirs) = UnixStream::pair().unwrap();
        let agent = std::thread::spawn(move || serve(theirs, &[key]));

        // Protocol messages the agent refuses: add, remove, remove all, lock, extension, ...
        for message in [
            &[][..],
            &[17, 0, 0, 0, 0],
            &[18],
            &[19],
            &[22, 0, 0, 0, 1, b'x'],
            &[27, 0, 0, 0, 5, b'q', b'u', b'e', b'r', b'y'],
            &[1],
            &[SIGN_REQUEST],
            &[SIGN_REQUEST, 0, 0, 0, 9, 1],
            &[SIGN_REQUEST, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert_eq!(request(&mut conn, message), [FAILURE], "{message:?}");
        }
        // A key not served.
        let mut other = blob.clone();
        *other.last_mut().unwrap() ^= 1;
        assert_eq!(
            request(&mut conn, &sign_message(&other, b"x", 0)),
            [FAILURE]
        );
        // A sign request cut before its flags.
        let cut = sign_message(&blob, b"x", 0);
        assert_eq!(request(&mut conn, &cut[..cut.len() - 2]), [FAILURE]);

        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let len = (rng.next() % 300) as usize;
            let mut message: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if let Some(first) = message.first_mut() {
                *first = [REQUEST_IDENTITIES, SIGN_REQUEST, *first][(rng.next() % 3) as usize];
            }
            let reply = request(&mut conn, &message);
            assert!(matches!(
                reply.first(),
                Some(&(FAILURE | IDENTITIES_ANSWER))
            ));
        }
        // The connection still works after all that.
        let reply = request(&mut conn, &sign_message(&blob, b"x", 0));
        assert_eq!(reply.first(), Some(&SIGN_RESPONSE));
        drop(conn);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn bad_frames_end_the_connection_without_panicking() {
        let frames: [&[u8]; 4] = [
            // Over the 256 KiB limit.
            &((MAX_MESSAGE as u32) + 1).to_be_bytes(),
            &[0xff, 0xff, 0xff, 0xff],
            // A length and then only part of the message.
            &[0, 0, 0, 9, REQUEST_IDENTITIES],
            // Part of a length.
            &[0, 0],
        ];
        for frame in frames {
            let (mut conn, theirs) = UnixStream::pair().unwrap();
            let agent = std::thread::spawn(move || serve(theirs, &[]));
            conn.write_all(frame).unwrap();
            conn.shutdown(std::net::Shutdown::Write).unwrap();
            let result = agent.join().expect("serve does not panic");
            assert!(result.is_err(), "{frame:?}");
        }
        // A close between frames is the normal end.
        let (conn, theirs) = UnixStream::pair().unwrap();
        let agent = std::thread::spawn(move || serve(theirs, &[]));
        drop(conn);
        agent.join().unwrap().unwrap();
    }

    #[test]
    fn each_key_is_listed_once() {
        let dir = TempDir::new("twice");
        let path = keygen(&dir.0, "ed", &["-t", "ed25519", "-N", ""]);
        let keys = vec![
            AgentKey::load(&path).unwrap(),
            AgentKey::load(&path).unwrap(),
        ];
        let reply = identities(&keys);
        let mut reader = Reader(&reply);
        assert_eq!(reader.u8(), Some(IDENTITIES_ANSWER));
        assert_eq!(reader.u32(), Some(1));
        assert_eq!(reader.string(), Some(&keys[0].blob[..]));
        assert_eq!(reader.string(), Some(&b"ed@kiln-test"[..]));
        assert!(reader.is_empty());
        assert!(!format!("{:?}", keys[0]).is_empty());
    }
}
