//! Every element type in `services/xmpp/src/xep/`.
//!
//! Input: a stanza (it is parsed inside a `jabber:client` stream). Every `TryFrom<&Element>`
//! is tried on the stanza and on its descendants. When one accepts an element, the value is
//! turned back into an element, serialized, parsed again and converted again.
//! Properties: the value survives both trips unchanged, and the element it gives is stable
//! (converting the re-parsed value gives the same element again).
#![no_main]

use libfuzzer_sys::fuzz_target;
use relais_fuzz::{descendants, first_stanza, normalize, reparse};
use xmpp::Element;
use xmpp::xep::data_form::DataForm;
use xmpp::xep::delay::Delay;
use xmpp::xep::disco::{DiscoInfo, DiscoItems};
use xmpp::xep::forward::Forwarded;
use xmpp::xep::mam::{Fin, MamResult, Metadata, Prefs, Query};
use xmpp::xep::ping::Ping;
use xmpp::xep::rsm::Set;
use xmpp::xep::stanza_id::{OriginId, StanzaId};
use xmpp::xep::time::EntityTime;
use xmpp::xep::version::Version;

/// The element in the namespace it sits in, so it serializes with the `xmlns` it needs.
const PARENT_NS: &str = "jabber:client";

fn round_trip<T>(el: &Element)
where
    T: for<'a> TryFrom<&'a Element> + Into<Element> + Clone + PartialEq + std::fmt::Debug,
{
    let Ok(value) = T::try_from(el) else {
        return;
    };
    let built: Element = value.clone().into();
    let from_built = T::try_from(&built).unwrap_or_else(|_| {
        panic!(
            "{} refuses its own element {built}",
            std::any::type_name::<T>()
        )
    });
    assert_eq!(
        from_built, value,
        "value changed through its element: {built}"
    );

    let bytes = built.to_bytes_in(PARENT_NS);
    let parsed = reparse(&bytes, PARENT_NS);
    assert_eq!(
        normalize(&parsed),
        normalize(&built),
        "element changed through bytes"
    );
    let from_parsed = T::try_from(&parsed).unwrap_or_else(|_| {
        panic!(
            "{} refuses its re-parsed element {}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(from_parsed, value, "value changed through bytes");
    let rebuilt: Element = from_parsed.into();
    assert_eq!(rebuilt, built, "element not stable");
}

fn all_types(el: &Element) {
    round_trip::<DataForm>(el);
    round_trip::<Delay>(el);
    round_trip::<DiscoInfo>(el);
    round_trip::<DiscoItems>(el);
    round_trip::<Forwarded>(el);
    round_trip::<Query>(el);
    round_trip::<MamResult>(el);
    round_trip::<Fin>(el);
    round_trip::<Prefs>(el);
    round_trip::<Metadata>(el);
    round_trip::<Ping>(el);
    round_trip::<Set>(el);
    round_trip::<StanzaId>(el);
    round_trip::<OriginId>(el);
    round_trip::<EntityTime>(el);
    round_trip::<Version>(el);
}

fuzz_target!(|data: &[u8]| {
    let Some(stanza) = first_stanza(data) else {
        return;
    };
    for el in descendants(&stanza, 64) {
        all_types(el);
    }
});
