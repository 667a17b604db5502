//! The client side of SCRAM, fed server-first and server-final messages.
//!
//! Input: byte 0 picks the hash and channel binding; the rest is
//! `server-first \n server-final`.
//! Properties:
//! - a client-final is produced only for a server-first that extends the client's nonce, and
//!   it carries that nonce, the channel-binding data and a proof of the hash's length;
//! - a server that sends the same server-first (built from the password, salt and count it
//!   names) accepts that client-final, and the client accepts its server-final; any other
//!   server-final is refused.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use libfuzzer_sys::fuzz_target;
use xmpp::scram::{ChannelBinding, ScramClient, ScramHash, ScramServer, derive_keys};

const CLIENT_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";
const EXPORTER: [u8; 32] = [7; 32];
/// Iteration counts above this are skipped: the client accepts up to 10 million by design,
/// and PBKDF2 at that count would only slow the fuzzer down.
const MAX_FUZZ_ITERATIONS: u32 = 64;

fuzz_target!(|input: &[u8]| {
    let [mode, data @ ..] = input else {
        return;
    };
    let hash = if mode & 1 == 0 {
        ScramHash::Sha1
    } else {
        ScramHash::Sha256
    };
    let plus = mode & 2 != 0;
    let (sf, sfinal) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(sf_text) = std::str::from_utf8(sf) else {
        return;
    };
    let parts: Vec<&str> = sf_text.split(',').collect();
    let iterations = parts
        .get(2)
        .and_then(|p| p.strip_prefix("i="))
        .and_then(|i| i.parse::<u32>().ok());
    if iterations.is_some_and(|i| i > MAX_FUZZ_ITERATIONS) {
        return;
    }

    let exporter = plus.then(|| EXPORTER.to_vec());
    let mut client =
        ScramClient::new(hash, "user", "pencil", exporter, false).with_nonce(CLIENT_NONCE);
    let cf = client.client_first();
    let Ok(cfinal) = client.client_final(sf) else {
        assert!(
            client.verify_server_final(sfinal).is_err(),
            "verified without a proof"
        );
        return;
    };
    let cfinal = String::from_utf8(cfinal).unwrap_or_else(|e| panic!("client-final: {e}"));
    let nonce = parts
        .first()
        .and_then(|p| p.strip_prefix("r="))
        .unwrap_or_default();
    assert!(nonce.len() > CLIENT_NONCE.len() && nonce.starts_with(CLIENT_NONCE));
    let gs2: &[u8] = if plus { b"p=tls-exporter,," } else { b"n,," };
    let mut cb = gs2.to_vec();
    if plus {
        cb.extend_from_slice(&EXPORTER);
    }
    let prefix = format!("c={},r={nonce},p=", B64.encode(&cb));
    let proof = cfinal
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("client-final {cfinal:?} does not start with {prefix:?}"));
    assert_eq!(
        B64.decode(proof).map(|p| p.len()).ok(),
        Some(hash.output_len())
    );

    // The server that would have sent this server-first.
    let salt = parts
        .get(1)
        .and_then(|s| s.strip_prefix("s="))
        .unwrap_or_default();
    let (Ok(salt), Some(iterations)) = (B64.decode(salt), iterations) else {
        return;
    };
    let keys = derive_keys(hash, "pencil", &salt, iterations);
    let cb = ChannelBinding {
        tls_exporter: plus.then(|| EXPORTER.to_vec()),
        plus_advertised: plus,
    };
    let server_nonce = nonce.get(CLIENT_NONCE.len()..).unwrap_or_default();
    let mut server = ScramServer::new(hash, plus, cb).with_nonce(server_nonce);
    if server.client_first(&cf).is_err() {
        panic!("the server refuses the client's first message");
    }
    if server.server_first(Some(&keys)) != sf {
        // Not the canonical form the server writes (extensions, another base64 spelling).
        return;
    }
    let v = server
        .client_final(cfinal.as_bytes())
        .unwrap_or_else(|e| panic!("the server refuses the client's proof: {e}"));
    client
        .verify_server_final(&v)
        .unwrap_or_else(|e| panic!("the client refuses the server's signature: {e}"));
    if sfinal != v.as_slice() {
        let first = sfinal.split(|b| *b == b',').next().unwrap_or_default();
        if first != v.as_slice() {
            assert!(
                client.verify_server_final(sfinal).is_err(),
                "a forged server-final was accepted"
            );
        }
    }
});
