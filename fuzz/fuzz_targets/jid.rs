//! JID parsing (RFC 7622).
//!
//! Properties, for every string that parses: the canonical form parses to the same JID (it is
//! a fixed point); `BareJid`, `FullJid` and `Jid` agree; the parts reassemble into the
//! canonical form, each within 1..=1023 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xmpp::jid::MAX_PART_BYTES;
use xmpp::{BareJid, FullJid, Jid};

fn check_part(part: &str) {
    assert!(
        !part.is_empty() && part.len() <= MAX_PART_BYTES,
        "bad part length: {part:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = s.parse::<Jid>();
    let bare = s.parse::<BareJid>();
    let full = s.parse::<FullJid>();
    match &parsed {
        Ok(Jid::Bare(b)) => {
            assert_eq!(
                bare.as_ref().ok(),
                Some(b),
                "BareJid and Jid disagree on {s:?}"
            );
            assert!(full.is_err(), "FullJid accepted a bare JID {s:?}");
        }
        Ok(Jid::Full(f)) => {
            assert_eq!(
                full.as_ref().ok(),
                Some(f),
                "FullJid and Jid disagree on {s:?}"
            );
            assert!(bare.is_err(), "BareJid accepted a full JID {s:?}");
        }
        Err(_) => {
            assert!(
                bare.is_err() && full.is_err(),
                "only some parsers accept {s:?}"
            );
        }
    }
    let Ok(jid) = parsed else {
        return;
    };

    let canonical = jid.to_string();
    let again = canonical
        .parse::<Jid>()
        .unwrap_or_else(|e| panic!("canonical form {canonical:?} of {s:?} does not parse: {e}"));
    assert_eq!(again, jid, "canonical form is not a fixed point");
    assert_eq!(again.as_str(), canonical);

    let mut rebuilt = String::new();
    if let Some(local) = jid.local() {
        check_part(local);
        rebuilt.push_str(local);
        rebuilt.push('@');
    }
    check_part(jid.domain());
    rebuilt.push_str(jid.domain());
    if let Some(res) = jid.resource() {
        check_part(res);
        rebuilt.push('/');
        rebuilt.push_str(res);
    }
    assert_eq!(rebuilt, canonical, "parts do not reassemble");
    if let Some(f) = jid.as_full() {
        assert_eq!(f.bare().as_str(), f.bare_str());
    }
    assert_eq!(
        BareJid::new(jid.local(), jid.domain()).ok().as_ref(),
        Some(&jid.bare()),
        "rebuilding the bare JID from its prepared parts fails"
    );
});
