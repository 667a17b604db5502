//! SCRAM (RFC 5802, RFC 7677) with `tls-exporter` channel binding (RFC 9266), for the server
//! and for clients (tests and loadtest). CONTRACT STUB: keep every public signature; replace
//! the `todo!()` bodies. The server side never sees or derives from a password at login: it
//! works from the stored `ScramKeys` only (HMACs, no PBKDF2).

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

/// Default iteration count for new credentials.
pub const DEFAULT_ITERATIONS: u32 = 4096;

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
pub fn prepare_password(_password: &str) -> Result<String, ScramError> {
    todo!()
}

/// Derives the stored keys from a (prepared) password: PBKDF2 (Hi), then ClientKey, StoredKey,
/// ServerKey. Used by `relais user add|passwd` and by PLAIN verification.
pub fn derive_keys(_hash: ScramHash, _password: &str, _salt: &[u8], _iterations: u32) -> ScramKeys {
    todo!()
}

/// A fresh random 16-byte salt.
pub fn new_salt() -> Vec<u8> {
    todo!()
}

/// Verifies a plaintext password against stored keys (constant-time compare of StoredKey).
pub fn verify_password(_keys: &ScramKeys, _password: &str) -> bool {
    todo!()
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

/// One server-side SCRAM exchange.
#[derive(Debug)]
pub struct ScramServer {
    _todo: (),
}

impl ScramServer {
    /// `plus` is true when the client chose the -PLUS mechanism.
    pub fn new(_hash: ScramHash, _plus: bool, _cb: ChannelBinding) -> Self {
        todo!()
    }

    /// Parses client-first-message. Returns the authcid (saslname-decoded, not yet
    /// PRECIS-prepared) and the authzid if one was given.
    pub fn client_first(&mut self, _msg: &[u8]) -> Result<(String, Option<String>), ScramError> {
        todo!()
    }

    /// Builds server-first-message from the stored keys. With `None` (unknown user) it answers
    /// with a plausible fake salt so the exchange fails only at the proof, revealing nothing.
    pub fn server_first(&mut self, _keys: Option<&ScramKeys>) -> Vec<u8> {
        todo!()
    }

    /// Checks client-final-message (channel binding, nonce, proof) and returns
    /// server-final-message (`v=...`) on success.
    pub fn client_final(&mut self, _msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        todo!()
    }
}

/// One client-side SCRAM exchange (for tests and the load generator).
#[derive(Debug)]
pub struct ScramClient {
    _todo: (),
}

impl ScramClient {
    /// `tls_exporter` set means the -PLUS variant with `p=tls-exporter`; `server_supports_plus`
    /// picks `y` over `n` when not using -PLUS.
    pub fn new(
        _hash: ScramHash,
        _username: &str,
        _password: &str,
        _tls_exporter: Option<Vec<u8>>,
        _server_supports_plus: bool,
    ) -> Self {
        todo!()
    }

    pub fn client_first(&mut self) -> Vec<u8> {
        todo!()
    }

    pub fn client_final(&mut self, _server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        todo!()
    }

    /// Verifies the server signature.
    pub fn verify_server_final(&self, _server_final: &[u8]) -> Result<(), ScramError> {
        todo!()
    }
}
