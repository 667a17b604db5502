//! SASL PLAIN (RFC 4616) as the edge parses it: `decode_payload` (the base64 text of
//! `<auth/>`) and `parse_plain`. The edge's `sasl.rs` is compiled in directly: it needs only
//! the protocol library, so the edge's I/O stack is not built for fuzzing.
//!
//! Input: byte 0 picks raw bytes or base64 text in an `<auth/>` element.
//! Properties: an accepted message has a non-empty authcid and no NUL in any part, and
//! `[authzid] NUL authcid NUL passwd` rebuilds exactly the bytes that were parsed; a payload
//! that decodes re-encodes to the same bytes.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../services/edge/src/sasl.rs"]
mod sasl;

use libfuzzer_sys::fuzz_target;
use xmpp::Element;

fuzz_target!(|input: &[u8]| {
    let [mode, data @ ..] = input else {
        return;
    };
    let payload = if mode & 1 == 0 {
        data.to_vec()
    } else {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let auth = Element::new("auth", xmpp::ns::SASL)
            .attr("mechanism", "PLAIN")
            .text_node(text);
        let Ok(payload) = sasl::decode_payload(&auth) else {
            return;
        };
        let again = sasl::encode_payload(&payload);
        let round = Element::new("auth", xmpp::ns::SASL).text_node(again);
        assert_eq!(
            sasl::decode_payload(&round),
            Ok(payload.clone()),
            "base64 round trip"
        );
        payload
    };
    let Ok(msg) = sasl::parse_plain(&payload) else {
        return;
    };
    assert!(!msg.authcid.is_empty(), "empty authcid accepted");
    let authzid = msg.authzid.as_deref().unwrap_or_default();
    for part in [authzid, msg.authcid.as_str(), msg.password.as_str()] {
        assert!(!part.contains('\0'), "NUL inside a part");
    }
    let rebuilt = format!("{authzid}\0{}\0{}", msg.authcid, msg.password);
    assert_eq!(
        rebuilt.as_bytes(),
        payload.as_slice(),
        "parts do not rebuild the message"
    );
});
