//! SCRAM (RFC 5802, RFC 7677) with `tls-exporter` channel binding (RFC 9266), for the server
//! and for clients (tests and loadtest). The server side never sees or derives from a password
//! at login: it works from the stored `ScramKeys` only (HMACs, no PBKDF2).

use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use precis_core::profile::PrecisFastInvocation;
use precis_profiles::OpaqueString;
use rand::RngCore as _;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The hash of a SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    /// `SCRAM-SHA-1` or `SCRAM-SHA-256`; with `plus`, the `-PLUS` name.
    pub fn mechanism(self, plus: bool) -> &'static str {
        match (self, plus) {
            (ScramHash::Sha1, false) => "SCRAM-SHA-1",
            (ScramHash::Sha1, true) => "SCRAM-SHA-1-PLUS",
            (ScramHash::Sha256, false) => "SCRAM-SHA-256",
            (ScramHash::Sha256, true) => "SCRAM-SHA-256-PLUS",
        }
    }

    /// The hash output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// Parses a mechanism name into its hash and whether it is the -PLUS variant.
    pub fn from_mechanism(name: &str) -> Option<(ScramHash, bool)> {
        match name {
            "SCRAM-SHA-1" => Some((ScramHash::Sha1, false)),
            "SCRAM-SHA-1-PLUS" => Some((ScramHash::Sha1, true)),
            "SCRAM-SHA-256" => Some((ScramHash::Sha256, false)),
            "SCRAM-SHA-256-PLUS" => Some((ScramHash::Sha256, true)),
            _ => None,
        }
    }

    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            // HMAC accepts keys of any length, so this never fails; an empty output would only
            // make every comparison fail.
            let Ok(mut m) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
                return Vec::new();
            };
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        match self {
            ScramHash::Sha1 => run::<Hmac<Sha1>>(key, parts),
            ScramHash::Sha256 => run::<Hmac<Sha256>>(key, parts),
        }
    }

    fn h(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        let rounds = iterations.max(1);
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, rounds, &mut out),
            ScramHash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, rounds, &mut out),
        }
        out
    }
}

/// What the server stores for one hash: never the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramKeys {
    pub hash: ScramHash,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// Default PBKDF2 iteration count for new credentials: OWASP's guidance for
/// PBKDF2-HMAC-SHA256 (600,000, Password Storage Cheat Sheet, 2023). The server pays it only
/// for PLAIN logins and when it derives keys (registration, password change); a SCRAM login
/// costs the server two HMACs, and the client pays the derivation (clients cache the salted
/// password per salt and count).
pub const DEFAULT_ITERATIONS: u32 = 600_000;

/// The lowest iteration count accepted for new credentials (RFC 7677 §4: at least 4096).
pub const MIN_ITERATIONS: u32 = 4096;

/// The highest iteration count a client accepts from a server (bounds the PBKDF2 work).
pub const MAX_CLIENT_ITERATIONS: u32 = 10_000_000;

/// Random bytes in a server nonce (base64-encoded on the wire).
const NONCE_BYTES: usize = 24;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// Unparseable message (SASL `<malformed-request/>`).
    #[error("malformed scram message")]
    Malformed,
    /// Wrong proof, unknown user, or nonce mismatch (SASL `<not-authorized/>`).
    #[error("not authorized")]
    NotAuthorized,
    /// An authzid that is not the authcid's own JID (SASL `<invalid-authzid/>`).
    #[error("invalid authzid")]
    InvalidAuthzid,
    /// Channel-binding flag or data that does not match what this connection offers
    /// (SASL `<not-authorized/>`; RFC 5802 §6 downgrade protection for `y`).
    #[error("channel binding mismatch")]
    ChannelBinding,
    /// The password or username failed PRECIS preparation.
    #[error("invalid credentials encoding")]
    Prep,
}

/// Prepares a password with the PRECIS OpaqueString profile (RFC 8265).
pub fn prepare_password(password: &str) -> Result<String, ScramError> {
    OpaqueString::enforce(password)
        .map(|c| c.into_owned())
        .map_err(|_| ScramError::Prep)
}

/// Derives the stored keys from a (prepared) password: PBKDF2 (Hi), then ClientKey, StoredKey,
/// ServerKey. Used by `relais user add|passwd` and by PLAIN verification.
pub fn derive_keys(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> ScramKeys {
    let salted = hash.hi(password.as_bytes(), salt, iterations);
    let client_key = hash.hmac(&salted, &[b"Client Key"]);
    ScramKeys {
        hash,
        salt: salt.to_vec(),
        iterations: iterations.max(1),
        stored_key: hash.h(&client_key),
        server_key: hash.hmac(&salted, &[b"Server Key"]),
    }
}

/// A fresh random 16-byte salt.
pub fn new_salt() -> Vec<u8> {
    let mut salt = vec![0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    salt
}

/// Verifies a plaintext password against stored keys (constant-time compare of StoredKey).
/// The password is PRECIS-prepared here (preparation is idempotent); one that fails
/// preparation never verifies.
pub fn verify_password(keys: &ScramKeys, password: &str) -> bool {
    let Ok(prepared) = prepare_password(password) else {
        return false;
    };
    let derived = derive_keys(keys.hash, &prepared, &keys.salt, keys.iterations);
    bool::from(derived.stored_key.ct_eq(&keys.stored_key))
}

/// What the connection offers for channel binding.
#[derive(Clone, Debug, Default)]
pub struct ChannelBinding {
    /// The RFC 9266 `tls-exporter` value (32 bytes, label "EXPORTER-Channel-Binding", no
    /// context), when the TLS connection supports it.
    pub tls_exporter: Option<Vec<u8>>,
    /// True when the server advertised any -PLUS mechanism on this connection.
    pub plus_advertised: bool,
}

// ---------------------------------------------------------------------------------------------
// Message syntax helpers.

/// Decodes a `saslname` (RFC 5802 §7): `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
fn decode_saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(rest.get(..i).ok_or(ScramError::Malformed)?);
        let esc = rest.get(i..i + 3).ok_or(ScramError::Malformed)?;
        out.push(match esc {
            "=2C" => ',',
            "=3D" => '=',
            _ => return Err(ScramError::Malformed),
        });
        rest = rest.get(i + 3..).ok_or(ScramError::Malformed)?;
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(ScramError::Malformed);
    }
    Ok(out)
}

/// Encodes a `saslname`.
fn encode_saslname(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ',' => out.push_str("=2C"),
            '=' => out.push_str("=3D"),
            c => out.push(c),
        }
    }
    out
}

/// A nonce is printable ASCII except `,` (RFC 5802 §7).
fn valid_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Splits `k=value`, checking the attribute letter.
fn attr(part: &str, key: u8) -> Result<&str, ScramError> {
    let b = part.as_bytes();
    if b.len() >= 2 && b[0] == key && b[1] == b'=' {
        part.get(2..).ok_or(ScramError::Malformed)
    } else {
        Err(ScramError::Malformed)
    }
}

fn random_nonce() -> String {
    let mut raw = [0u8; NONCE_BYTES];
    rand::rng().fill_bytes(&mut raw);
    B64.encode(raw)
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// The per-process secret unknown-user salts are derived from.
fn fake_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut s = [0u8; 32];
        rand::rng().fill_bytes(&mut s);
        s
    })
}

/// Plausible keys for an unknown user: the salt is stable per username for the life of the
/// process, so repeated probes see the same answer as for a real account.
fn fake_keys(hash: ScramHash, username: &str, iterations: u32) -> ScramKeys {
    let secret = fake_secret();
    let tag = hash.mechanism(false).as_bytes();
    let mut salt = ScramHash::Sha256.hmac(secret, &[b"salt\0", tag, b"\0", username.as_bytes()]);
    salt.truncate(16);
    let stored_key = hash.hmac(secret, &[b"stored\0", username.as_bytes()]);
    let server_key = hash.hmac(secret, &[b"server\0", username.as_bytes()]);
    ScramKeys {
        hash,
        salt,
        iterations,
        stored_key,
        server_key,
    }
}

// ---------------------------------------------------------------------------------------------
// Server.

enum ServerState {
    Initial,
    GotClientFirst {
        gs2_header: String,
        first_bare: String,
        client_nonce: String,
        authcid: String,
    },
    SentServerFirst {
        gs2_header: String,
        first_bare: String,
        server_first: String,
        nonce: String,
        keys: ScramKeys,
        known: bool,
    },
    Done,
    Failed,
}

impl ServerState {
    fn name(&self) -> &'static str {
        match self {
            ServerState::Initial => "initial",
            ServerState::GotClientFirst { .. } => "got-client-first",
            ServerState::SentServerFirst { .. } => "sent-server-first",
            ServerState::Done => "done",
            ServerState::Failed => "failed",
        }
    }
}

/// One server-side SCRAM exchange.
pub struct ScramServer {
    hash: ScramHash,
    plus: bool,
    cb: ChannelBinding,
    fixed_nonce: Option<String>,
    /// The iteration count shown for unknown users (the one new credentials get).
    fake_iterations: u32,
    state: ServerState,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer")
            .field("mechanism", &self.hash.mechanism(self.plus))
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// `plus` is true when the client chose the -PLUS mechanism.
    pub fn new(hash: ScramHash, plus: bool, cb: ChannelBinding) -> Self {
        ScramServer {
            hash,
            plus,
            cb,
            fixed_nonce: None,
            fake_iterations: DEFAULT_ITERATIONS,
            state: ServerState::Initial,
        }
    }

    /// The iteration count an unknown user's fake keys show: the one new credentials get,
    /// so the count does not tell an unknown account from a fresh one.
    #[must_use]
    pub fn with_fake_iterations(mut self, iterations: u32) -> Self {
        self.fake_iterations = iterations;
        self
    }

    /// Test hook: use this server nonce part instead of a random one.
    #[doc(hidden)]
    #[must_use]
    pub fn with_nonce(mut self, server_nonce: &str) -> Self {
        self.fixed_nonce = Some(server_nonce.to_owned());
        self
    }

    /// Parses client-first-message. Returns the authcid (saslname-decoded, not yet
    /// PRECIS-prepared) and the authzid if one was given.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<(String, Option<String>), ScramError> {
        if !matches!(self.state, ServerState::Initial) {
            self.state = ServerState::Failed;
            return Err(ScramError::Malformed);
        }
        match self.parse_client_first(msg) {
            Ok((state, authzid)) => {
                let ServerState::GotClientFirst { authcid, .. } = &state else {
                    self.state = ServerState::Failed;
                    return Err(ScramError::Malformed);
                };
                let authcid = authcid.clone();
                self.state = state;
                Ok((authcid, authzid))
            }
            Err(e) => {
                self.state = ServerState::Failed;
                Err(e)
            }
        }
    }

    fn parse_client_first(&self, msg: &[u8]) -> Result<(ServerState, Option<String>), ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed)?;
        let (flag, rest) = msg.split_once(',').ok_or(ScramError::Malformed)?;
        let (authz, bare) = rest.split_once(',').ok_or(ScramError::Malformed)?;
        let gs2_header = msg
            .get(..flag.len() + authz.len() + 2)
            .ok_or(ScramError::Malformed)?;

        // Channel-binding flag against what this mechanism and connection offer.
        match flag {
            "n" => {
                if self.plus {
                    return Err(ScramError::ChannelBinding);
                }
            }
            "y" => {
                if self.plus || self.cb.plus_advertised {
                    return Err(ScramError::ChannelBinding);
                }
            }
            _ => {
                let name = flag.strip_prefix("p=").ok_or(ScramError::Malformed)?;
                if name.is_empty() {
                    return Err(ScramError::Malformed);
                }
                if !self.plus || name != "tls-exporter" || self.cb.tls_exporter.is_none() {
                    return Err(ScramError::ChannelBinding);
                }
            }
        }
        let authzid = match authz {
            "" => None,
            a => Some(decode_saslname(attr(a, b'a')?)?),
        };

        let mut parts = bare.split(',');
        let user_part = parts.next().ok_or(ScramError::Malformed)?;
        // A mandatory extension (`m=`) we do not understand fails the exchange.
        let authcid = decode_saslname(attr(user_part, b'n')?)?;
        let client_nonce = attr(parts.next().ok_or(ScramError::Malformed)?, b'r')?;
        if !valid_nonce(client_nonce) {
            return Err(ScramError::Malformed);
        }
        Ok((
            ServerState::GotClientFirst {
                gs2_header: gs2_header.to_owned(),
                first_bare: bare.to_owned(),
                client_nonce: client_nonce.to_owned(),
                authcid,
            },
            authzid,
        ))
    }

    /// Builds server-first-message from the stored keys. With `None` (unknown user) it answers
    /// with a plausible fake salt so the exchange fails only at the proof, revealing nothing.
    /// Called out of order (or with keys for another hash, treated as unknown), the exchange
    /// is failed and the empty message returned.
    pub fn server_first(&mut self, keys: Option<&ScramKeys>) -> Vec<u8> {
        let state = std::mem::replace(&mut self.state, ServerState::Failed);
        let ServerState::GotClientFirst {
            gs2_header,
            first_bare,
            client_nonce,
            authcid,
        } = state
        else {
            return Vec::new();
        };
        let (keys, known) = match keys {
            Some(k) if k.hash == self.hash => (k.clone(), true),
            _ => (fake_keys(self.hash, &authcid, self.fake_iterations), false),
        };
        let server_nonce = self.fixed_nonce.clone().unwrap_or_else(random_nonce);
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&keys.salt),
            keys.iterations
        );
        let out = server_first.as_bytes().to_vec();
        self.state = ServerState::SentServerFirst {
            gs2_header,
            first_bare,
            server_first,
            nonce,
            keys,
            known,
        };
        out
    }

    /// Checks client-final-message (channel binding, nonce, proof) and returns
    /// server-final-message (`v=...`) on success.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let state = std::mem::replace(&mut self.state, ServerState::Failed);
        let ServerState::SentServerFirst {
            gs2_header,
            first_bare,
            server_first,
            nonce,
            keys,
            known,
        } = state
        else {
            return Err(ScramError::Malformed);
        };
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed)?;
        let (without_proof, proof) = msg.rsplit_once(',').ok_or(ScramError::Malformed)?;
        let proof = B64
            .decode(attr(proof, b'p')?)
            .map_err(|_| ScramError::Malformed)?;
        let mut parts = without_proof.split(',');
        let cbind = attr(parts.next().ok_or(ScramError::Malformed)?, b'c')?;
        let cbind = B64.decode(cbind).map_err(|_| ScramError::Malformed)?;
        let got_nonce = attr(parts.next().ok_or(ScramError::Malformed)?, b'r')?;

        let mut expected_cb = gs2_header.into_bytes();
        if self.plus {
            expected_cb.extend_from_slice(self.cb.tls_exporter.as_deref().unwrap_or_default());
        }
        if !bool::from(cbind.ct_eq(&expected_cb)) {
            return Err(ScramError::ChannelBinding);
        }
        if got_nonce != nonce {
            return Err(ScramError::NotAuthorized);
        }
        if proof.len() != self.hash.output_len() {
            return Err(ScramError::NotAuthorized);
        }

        let auth_message = [
            first_bare.as_bytes(),
            b",",
            server_first.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = self.hash.hmac(&keys.stored_key, &auth_message);
        let client_key = xor(&proof, &client_signature);
        let ok = self.hash.h(&client_key).ct_eq(&keys.stored_key);
        if !(bool::from(ok) && known) {
            return Err(ScramError::NotAuthorized);
        }
        let server_signature = self.hash.hmac(&keys.server_key, &auth_message);
        self.state = ServerState::Done;
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

// ---------------------------------------------------------------------------------------------
// Client.

/// One client-side SCRAM exchange (for tests and the load generator).
pub struct ScramClient {
    hash: ScramHash,
    username: String,
    /// The prepared password, or `None` when preparation failed (reported at `client_final`).
    password: Option<String>,
    tls_exporter: Option<Vec<u8>>,
    gs2_header: String,
    client_nonce: String,
    first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field(
                "mechanism",
                &self.hash.mechanism(self.tls_exporter.is_some()),
            )
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// `tls_exporter` set means the -PLUS variant with `p=tls-exporter`. Without it,
    /// `cb_supported_not_offered` sends the gs2 flag `y` (RFC 5802 §6: the client could bind
    /// but the server advertised no -PLUS mechanism) instead of `n`. Sending `y` to a server
    /// that did advertise -PLUS is a downgrade the server rejects.
    pub fn new(
        hash: ScramHash,
        username: &str,
        password: &str,
        tls_exporter: Option<Vec<u8>>,
        cb_supported_not_offered: bool,
    ) -> Self {
        let gs2_header = match (&tls_exporter, cb_supported_not_offered) {
            (Some(_), _) => "p=tls-exporter,,",
            (None, true) => "y,,",
            (None, false) => "n,,",
        };
        ScramClient {
            hash,
            username: username.to_owned(),
            password: prepare_password(password).ok(),
            tls_exporter,
            gs2_header: gs2_header.to_owned(),
            client_nonce: random_nonce(),
            first_bare: String::new(),
            server_signature: None,
        }
    }

    /// Test hook: use this client nonce instead of a random one.
    #[doc(hidden)]
    #[must_use]
    pub fn with_nonce(mut self, client_nonce: &str) -> Self {
        self.client_nonce = client_nonce.to_owned();
        self
    }

    /// Test hook: send an authzid (`a=`) in the gs2 header.
    #[doc(hidden)]
    #[must_use]
    pub fn with_authzid(mut self, authzid: &str) -> Self {
        let flag = self.gs2_header.split(',').next().unwrap_or("n").to_owned();
        self.gs2_header = format!("{flag},a={},", encode_saslname(authzid));
        self
    }

    pub fn client_first(&mut self) -> Vec<u8> {
        self.first_bare = format!(
            "n={},r={}",
            encode_saslname(&self.username),
            self.client_nonce
        );
        format!("{}{}", self.gs2_header, self.first_bare).into_bytes()
    }

    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let password = self.password.as_deref().ok_or(ScramError::Prep)?;
        let sf = std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed)?;
        let mut parts = sf.split(',');
        let nonce = attr(parts.next().ok_or(ScramError::Malformed)?, b'r')?;
        let salt = attr(parts.next().ok_or(ScramError::Malformed)?, b's')?;
        let iterations = attr(parts.next().ok_or(ScramError::Malformed)?, b'i')?;
        if self.first_bare.is_empty()
            || !valid_nonce(nonce)
            || nonce.len() <= self.client_nonce.len()
            || !nonce.starts_with(&self.client_nonce)
        {
            return Err(ScramError::NotAuthorized);
        }
        let salt = B64.decode(salt).map_err(|_| ScramError::Malformed)?;
        let iterations: u32 = iterations.parse().map_err(|_| ScramError::Malformed)?;
        if iterations == 0 || iterations > MAX_CLIENT_ITERATIONS || salt.is_empty() {
            return Err(ScramError::Malformed);
        }

        let mut cb = self.gs2_header.as_bytes().to_vec();
        if let Some(exp) = &self.tls_exporter {
            cb.extend_from_slice(exp);
        }
        let without_proof = format!("c={},r={nonce}", B64.encode(&cb));

        let salted = self.hash.hi(password.as_bytes(), &salt, iterations);
        let client_key = self.hash.hmac(&salted, &[b"Client Key"]);
        let stored_key = self.hash.h(&client_key);
        let auth_message = [
            self.first_bare.as_bytes(),
            b",",
            sf.as_bytes(),
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = self.hash.hmac(&stored_key, &auth_message);
        let proof = xor(&client_key, &client_signature);
        let server_key = self.hash.hmac(&salted, &[b"Server Key"]);
        self.server_signature = Some(self.hash.hmac(&server_key, &auth_message));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Verifies the server signature.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let expected = self
            .server_signature
            .as_deref()
            .ok_or(ScramError::NotAuthorized)?;
        let sf = std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed)?;
        if sf.starts_with("e=") {
            return Err(ScramError::NotAuthorized);
        }
        let first = sf.split(',').next().unwrap_or_default();
        let v = B64
            .decode(attr(first, b'v')?)
            .map_err(|_| ScramError::Malformed)?;
        if bool::from(v.ct_eq(expected)) {
            Ok(())
        } else {
            Err(ScramError::NotAuthorized)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn s(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    struct Vector {
        hash: ScramHash,
        client_nonce: &'static str,
        server_nonce: &'static str,
        salt: &'static str,
        client_first: &'static str,
        server_first: &'static str,
        client_final: &'static str,
        server_final: &'static str,
    }

    const RFC5802: Vector = Vector {
        hash: ScramHash::Sha1,
        client_nonce: "fyko+d2lbbFgONRv9qkxdawL",
        server_nonce: "3rfcNHYJY1ZVvWVs7j",
        salt: "QSXCR+Q6sek8bf92",
        client_first: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        server_first: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
        client_final: "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        server_final: "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
    };

    const RFC7677: Vector = Vector {
        hash: ScramHash::Sha256,
        client_nonce: "rOprNGfwEbeRWgbNEkqO",
        server_nonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        salt: "W22ZaJ0SNY7soEsUEjb6gQ==",
        client_first: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        client_final: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        server_final: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
    };

    fn keys_for(v: &Vector, password: &str) -> ScramKeys {
        derive_keys(v.hash, password, &B64.decode(v.salt).unwrap(), 4096)
    }

    fn server_for(v: &Vector) -> ScramServer {
        ScramServer::new(v.hash, false, ChannelBinding::default()).with_nonce(v.server_nonce)
    }

    fn check_rfc_vector(v: &Vector) {
        // Client side reproduces the exact messages.
        let mut c =
            ScramClient::new(v.hash, "user", "pencil", None, false).with_nonce(v.client_nonce);
        assert_eq!(s(&c.client_first()), v.client_first);
        assert_eq!(
            s(&c.client_final(v.server_first.as_bytes()).unwrap()),
            v.client_final
        );
        c.verify_server_final(v.server_final.as_bytes()).unwrap();
        assert_eq!(
            c.verify_server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(ScramError::NotAuthorized)
        );

        // Server side too.
        let keys = keys_for(v, "pencil");
        let mut srv = server_for(v);
        assert_eq!(
            srv.client_first(v.client_first.as_bytes()).unwrap(),
            ("user".into(), None)
        );
        assert_eq!(s(&srv.server_first(Some(&keys))), v.server_first);
        assert_eq!(
            s(&srv.client_final(v.client_final.as_bytes()).unwrap()),
            v.server_final
        );
        // A finished exchange accepts nothing more.
        assert!(srv.client_final(v.client_final.as_bytes()).is_err());
        assert!(verify_password(&keys, "pencil"));
        assert!(!verify_password(&keys, "pencil2"));
    }

    #[test]
    fn rfc5802_example_exchange() {
        check_rfc_vector(&RFC5802);
    }

    #[test]
    fn rfc7677_example_exchange() {
        check_rfc_vector(&RFC7677);
    }

    #[test]
    fn wrong_password_is_rejected() {
        for v in [&RFC5802, &RFC7677] {
            let mut srv = server_for(v);
            srv.client_first(v.client_first.as_bytes()).unwrap();
            srv.server_first(Some(&keys_for(v, "not-pencil")));
            assert_eq!(
                srv.client_final(v.client_final.as_bytes()),
                Err(ScramError::NotAuthorized)
            );
        }
    }

    #[test]
    fn tampered_proof_nonce_and_binding_are_rejected() {
        let v = &RFC5802;
        let keys = keys_for(v, "pencil");
        let run = |final_msg: &str| {
            let mut srv = server_for(v);
            srv.client_first(v.client_first.as_bytes()).unwrap();
            srv.server_first(Some(&keys));
            srv.client_final(final_msg.as_bytes())
        };
        // Flip one proof character.
        let bad_proof = v.client_final.replace("p=v0X8", "p=v1X8");
        assert_eq!(run(&bad_proof), Err(ScramError::NotAuthorized));
        // Nonce not the combined one.
        let bad_nonce = v
            .client_final
            .replace("3rfcNHYJY1ZVvWVs7j", "3rfcNHYJY1ZVvWVs7k");
        assert_eq!(run(&bad_nonce), Err(ScramError::NotAuthorized));
        let short_nonce = v.client_final.replace("3rfcNHYJY1ZVvWVs7j", "");
        assert_eq!(run(&short_nonce), Err(ScramError::NotAuthorized));
        // c= must be base64("n,,").
        let bad_cb = v.client_final.replace("c=biws", "c=eSws");
        assert_eq!(run(&bad_cb), Err(ScramError::ChannelBinding));
        // Malformed.
        assert_eq!(run("garbage"), Err(ScramError::Malformed));
        assert_eq!(run("c=biws,p=!!!"), Err(ScramError::Malformed));
        let truncated = v
            .client_final
            .replace("p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", "p=AAAA");
        assert_eq!(run(&truncated), Err(ScramError::NotAuthorized));
    }

    #[test]
    fn malformed_client_first_is_rejected() {
        let cases: &[(&[u8], ScramError)] = &[
            (b"", ScramError::Malformed),
            (b"n,,", ScramError::Malformed),
            (b"x,,n=user,r=abc", ScramError::Malformed),
            (b"n,,n=,r=abc", ScramError::Malformed),
            (b"n,,n=us=er,r=abc", ScramError::Malformed),
            (b"n,,n=us=2Der,r=abc", ScramError::Malformed),
            (b"n,,n=user", ScramError::Malformed),
            (b"n,,n=user,r=", ScramError::Malformed),
            (b"n,,m=ext,n=user,r=abc", ScramError::Malformed),
            (b"n,b=x,n=user,r=abc", ScramError::Malformed),
            (b"n,,n=\xff,r=abc", ScramError::Malformed),
            (b"p=tls-exporter,,n=user,r=abc", ScramError::ChannelBinding),
        ];
        for (msg, want) in cases {
            let mut srv = ScramServer::new(ScramHash::Sha256, false, ChannelBinding::default());
            assert_eq!(srv.client_first(msg).err().as_ref(), Some(want), "{msg:?}");
            // The exchange is dead after an error.
            assert!(srv.server_first(None).is_empty());
        }
    }

    #[test]
    fn saslnames_and_authzid() {
        let mut srv = ScramServer::new(ScramHash::Sha256, false, ChannelBinding::default());
        let (authcid, authzid) = srv
            .client_first(b"n,a=juliet=2Cx=3Dz,n=ro=2Cmeo=3D,r=abc")
            .unwrap();
        assert_eq!(authcid, "ro,meo=");
        assert_eq!(authzid.as_deref(), Some("juliet,x=z"));
        assert!(decode_saslname("a=40").is_err());
        assert_eq!(decode_saslname("a=2Cb=3D").unwrap(), "a,b=");
        assert_eq!(encode_saslname("a,b="), "a=2Cb=3D");

        // Through a real exchange with the client's encoder.
        let keys = derive_keys(ScramHash::Sha256, "pw", b"saltsaltsaltsalt", 64);
        let mut c = ScramClient::new(ScramHash::Sha256, "a,b=c", "pw", None, false)
            .with_authzid("a,b=c@example.com");
        let mut srv = ScramServer::new(ScramHash::Sha256, false, ChannelBinding::default());
        let (authcid, authzid) = srv.client_first(&c.client_first()).unwrap();
        assert_eq!(authcid, "a,b=c");
        assert_eq!(authzid.as_deref(), Some("a,b=c@example.com"));
        let sf = srv.server_first(Some(&keys));
        let cf = c.client_final(&sf).unwrap();
        let fin = srv.client_final(&cf).unwrap();
        c.verify_server_final(&fin).unwrap();
    }

    #[test]
    fn invalid_saslname_escape_in_authzid() {
        let mut srv = ScramServer::new(ScramHash::Sha256, false, ChannelBinding::default());
        assert_eq!(
            srv.client_first(b"n,a=juliet=40x,n=user,r=abc").err(),
            Some(ScramError::Malformed)
        );
    }

    fn round_trip(
        hash: ScramHash,
        server_plus: bool,
        server_cb: ChannelBinding,
        client_exporter: Option<Vec<u8>>,
        client_y: bool,
        password: &str,
    ) -> Result<(), ScramError> {
        let keys = derive_keys(
            hash,
            &prepare_password("secret").unwrap(),
            &new_salt(),
            1000,
        );
        let mut c = ScramClient::new(hash, "alice", password, client_exporter, client_y);
        let mut srv = ScramServer::new(hash, server_plus, server_cb);
        let (authcid, authzid) = srv.client_first(&c.client_first())?;
        assert_eq!(authcid, "alice");
        assert_eq!(authzid, None);
        let sf = srv.server_first(Some(&keys));
        let cf = c.client_final(&sf)?;
        let fin = srv.client_final(&cf)?;
        c.verify_server_final(&fin)
    }

    #[test]
    fn client_server_round_trip() {
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            assert_eq!(
                round_trip(
                    hash,
                    false,
                    ChannelBinding::default(),
                    None,
                    false,
                    "secret"
                ),
                Ok(())
            );
            assert_eq!(
                round_trip(
                    hash,
                    false,
                    ChannelBinding::default(),
                    None,
                    false,
                    "Secret"
                ),
                Err(ScramError::NotAuthorized)
            );
        }
    }

    #[test]
    fn plus_with_matching_and_mismatching_exporter() {
        let exporter = vec![7u8; 32];
        let cb = ChannelBinding {
            tls_exporter: Some(exporter.clone()),
            plus_advertised: true,
        };
        let h = ScramHash::Sha256;
        assert_eq!(
            round_trip(h, true, cb.clone(), Some(exporter.clone()), false, "secret"),
            Ok(())
        );
        let mut other = exporter.clone();
        other[0] = 8;
        assert_eq!(
            round_trip(h, true, cb.clone(), Some(other), false, "secret"),
            Err(ScramError::ChannelBinding)
        );
        // -PLUS chosen but the connection has no exporter.
        let no_exporter = ChannelBinding {
            tls_exporter: None,
            plus_advertised: true,
        };
        assert_eq!(
            round_trip(
                h,
                true,
                no_exporter,
                Some(exporter.clone()),
                false,
                "secret"
            ),
            Err(ScramError::ChannelBinding)
        );
        // -PLUS chosen but the client sends `n`.
        assert_eq!(
            round_trip(h, true, cb.clone(), None, false, "secret"),
            Err(ScramError::ChannelBinding)
        );
        // `p=` with the non-PLUS mechanism.
        assert_eq!(
            round_trip(h, false, cb.clone(), Some(exporter), false, "secret"),
            Err(ScramError::ChannelBinding)
        );
        // Plain `n` on a connection that offers -PLUS is allowed.
        assert_eq!(round_trip(h, false, cb, None, false, "secret"), Ok(()));
    }

    #[test]
    fn downgrade_protection_for_y() {
        let h = ScramHash::Sha1;
        let advertised = ChannelBinding {
            tls_exporter: Some(vec![1; 32]),
            plus_advertised: true,
        };
        assert_eq!(
            round_trip(h, false, advertised, None, true, "secret"),
            Err(ScramError::ChannelBinding)
        );
        // Without -PLUS advertised, `y` is fine and c= must be base64("y,,").
        assert_eq!(
            round_trip(h, false, ChannelBinding::default(), None, true, "secret"),
            Ok(())
        );
    }

    #[test]
    fn unknown_user_fails_only_at_proof_with_stable_fake_salt() {
        let h = ScramHash::Sha256;
        let first = |user: &str| {
            let mut c = ScramClient::new(h, user, "pw", None, false);
            let mut srv = ScramServer::new(h, false, ChannelBinding::default());
            srv.client_first(&c.client_first()).unwrap();
            let sf = srv.server_first(None);
            let cf = c.client_final(&sf).unwrap();
            let salt = s(&sf).split(',').nth(1).unwrap().to_owned();
            (salt, srv.client_final(&cf))
        };
        let (salt1, res1) = first("ghost");
        let (salt2, res2) = first("ghost");
        let (salt3, _) = first("other-ghost");
        assert_eq!(res1, Err(ScramError::NotAuthorized));
        assert_eq!(res2, Err(ScramError::NotAuthorized));
        assert_eq!(salt1, salt2);
        assert_ne!(salt1, salt3);
        // Same shape as a real salt: 16 bytes.
        assert_eq!(
            B64.decode(salt1.trim_start_matches("s=")).unwrap().len(),
            16
        );
    }

    #[test]
    fn client_rejects_bad_server_first() {
        let mut c =
            ScramClient::new(ScramHash::Sha1, "user", "pencil", None, false).with_nonce("abc");
        c.client_first();
        assert_eq!(
            c.client_final(b"r=xyz123,s=QSXCR+Q6sek8bf92,i=4096"),
            Err(ScramError::NotAuthorized)
        );
        assert_eq!(
            c.client_final(b"r=abc,s=QSXCR+Q6sek8bf92,i=4096"),
            Err(ScramError::NotAuthorized)
        );
        assert_eq!(
            c.client_final(b"r=abcd,s=QSXCR+Q6sek8bf92,i=0"),
            Err(ScramError::Malformed)
        );
        assert_eq!(
            c.client_final(b"r=abcd,s=QSXCR+Q6sek8bf92,i=x"),
            Err(ScramError::Malformed)
        );
        assert_eq!(
            c.client_final(b"m=x,r=abcd,s=QSXCR+Q6sek8bf92,i=1"),
            Err(ScramError::Malformed)
        );
        assert_eq!(
            c.verify_server_final(b"v=x"),
            Err(ScramError::NotAuthorized)
        );
        assert!(c.client_final(b"r=abcd,s=QSXCR+Q6sek8bf92,i=1").is_ok());
        assert_eq!(
            c.verify_server_final(b"e=invalid-proof"),
            Err(ScramError::NotAuthorized)
        );
    }

    #[test]
    fn password_preparation() {
        assert_eq!(prepare_password("pencil").unwrap(), "pencil");
        // Non-ASCII spaces map to ASCII space (RFC 8265 §4.2.1).
        assert_eq!(prepare_password("a\u{00A0}b").unwrap(), "a b");
        assert_eq!(prepare_password(""), Err(ScramError::Prep));
        assert_eq!(prepare_password("a\u{0007}"), Err(ScramError::Prep));
        let mut c = ScramClient::new(ScramHash::Sha1, "u", "", None, false);
        c.client_first();
        assert_eq!(
            c.client_final(b"r=x,s=QSXCR+Q6sek8bf92,i=1"),
            Err(ScramError::Prep)
        );
        let keys = derive_keys(ScramHash::Sha1, "a b", b"salt", 2);
        assert!(verify_password(&keys, "a\u{00A0}b"));
        assert_eq!(new_salt().len(), 16);
        assert_ne!(new_salt(), new_salt());
        assert_eq!(
            ScramHash::from_mechanism("SCRAM-SHA-256-PLUS"),
            Some((ScramHash::Sha256, true))
        );
        assert_eq!(ScramHash::from_mechanism("PLAIN"), None);
    }
}
