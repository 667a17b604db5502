//! The server side of SCRAM, fed client-first and client-final messages.
//!
//! Input: byte 0 picks the hash, -PLUS, whether the connection advertised -PLUS, whether the
//! user is known, and the mode; the rest is `client-first \n client-final` (or, in the
//! differential mode, `username \n client-nonce \n tamper`).
//! Properties:
//! - an unknown user never authenticates, and a failed exchange stays failed;
//! - server-first starts with the client's nonce and names the stored salt and iterations;
//! - differential: the genuine client's exchange succeeds, and a client-final that differs
//!   from the genuine one in any byte is refused.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use libfuzzer_sys::fuzz_target;
use xmpp::scram::{ChannelBinding, ScramClient, ScramHash, ScramServer, derive_keys};

const SERVER_NONCE: &str = "3rfcNHYJY1ZVvWVs7j";
const EXPORTER: [u8; 32] = [7; 32];

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
    let advertised = mode & 4 != 0;
    let known = mode & 8 != 0;
    let cb = ChannelBinding {
        tls_exporter: (plus || advertised).then(|| EXPORTER.to_vec()),
        plus_advertised: plus || advertised,
    };
    // One iteration keeps each run cheap; the exchange does not depend on the count.
    let keys = derive_keys(hash, "pencil", b"QSXCR+Q6sek8bf92", 1);
    let mut server = ScramServer::new(hash, plus, cb).with_nonce(SERVER_NONCE);

    if mode & 16 != 0 {
        differential(hash, plus, data, server, &keys);
        return;
    }

    let (first, last) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let first_ok = server.client_first(first).is_ok();
    let sf = server.server_first(known.then_some(&keys));
    if !first_ok {
        assert!(sf.is_empty(), "server-first after a failed client-first");
        assert!(server.client_final(last).is_err());
        return;
    }
    let sf = String::from_utf8(sf).unwrap_or_else(|e| panic!("server-first not UTF-8: {e}"));
    let text = String::from_utf8_lossy(first);
    let client_nonce = text
        .split(",r=")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_default();
    assert!(
        sf.starts_with(&format!("r={client_nonce}{SERVER_NONCE},s=")),
        "server-first {sf:?} does not carry the client nonce {client_nonce:?}"
    );
    if known {
        assert!(
            sf.ends_with(",i=1"),
            "server-first {sf:?} does not name the stored count"
        );
    }
    let result = server.client_final(last);
    if !known {
        assert!(result.is_err(), "an unknown user authenticated");
    }
    if let Ok(v) = result {
        let v = String::from_utf8(v).unwrap_or_else(|e| panic!("server-final not UTF-8: {e}"));
        let sig = v
            .strip_prefix("v=")
            .unwrap_or_else(|| panic!("server-final {v:?}"));
        assert_eq!(
            B64.decode(sig).map(|s| s.len()).ok(),
            Some(hash.output_len())
        );
    }
    assert!(
        server.client_final(last).is_err(),
        "a finished exchange accepted a second final"
    );
});

fn differential(
    hash: ScramHash,
    plus: bool,
    data: &[u8],
    mut server: ScramServer,
    keys: &xmpp::scram::ScramKeys,
) {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (Some(user), Some(nonce), tamper) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let (Ok(user), Ok(nonce)) = (std::str::from_utf8(user), std::str::from_utf8(nonce)) else {
        return;
    };
    // The genuine client sends the nonce it is given: only a valid one makes a genuine client.
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return;
    }
    let exporter = plus.then(|| EXPORTER.to_vec());
    let mut client = ScramClient::new(hash, user, "pencil", exporter, false).with_nonce(nonce);
    let cf = client.client_first();
    let Ok((authcid, _)) = server.client_first(&cf) else {
        return;
    };
    assert_eq!(authcid, user, "the server decoded another username");
    let sf = server.server_first(Some(keys));
    let genuine = client
        .client_final(&sf)
        .unwrap_or_else(|e| panic!("client refuses the server's first message: {e}"));
    let mut sent = genuine.clone();
    for (i, t) in tamper.unwrap_or_default().iter().enumerate() {
        if let Some(b) = sent.get_mut(i) {
            *b ^= t;
        }
    }
    match server.client_final(&sent) {
        Ok(v) => {
            assert_eq!(sent, genuine, "a tampered client-final was accepted");
            client
                .verify_server_final(&v)
                .unwrap_or_else(|e| panic!("client refuses the server's signature: {e}"));
        }
        Err(e) => assert_ne!(sent, genuine, "the genuine client-final was refused: {e}"),
    }
}
