//! The presence subscription state machine of RFC 6121 Appendix A, as pure functions.
//!
//! A state is one roster item's `subscription` plus its Pending Out, Pending In and
//! pre-approval flags. The service reads the item, applies [`outbound`] (the user sent the
//! stanza) or [`inbound`] (the stanza is for the user), writes the item back if the state
//! changed, and routes or delivers as the outcome says.

use storage::{RosterItem, Subscription};

/// The four subscription presence types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubKind {
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

impl SubKind {
    pub fn parse(ty: &str) -> Option<Self> {
        match ty {
            "subscribe" => Some(SubKind::Subscribe),
            "subscribed" => Some(SubKind::Subscribed),
            "unsubscribe" => Some(SubKind::Unsubscribe),
            "unsubscribed" => Some(SubKind::Unsubscribed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SubKind::Subscribe => "subscribe",
            SubKind::Subscribed => "subscribed",
            SubKind::Unsubscribe => "unsubscribe",
            SubKind::Unsubscribed => "unsubscribed",
        }
    }
}

/// The subscription state of one roster item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubState {
    pub sub: Subscription,
    /// Pending Out (`ask="subscribe"`).
    pub ask_out: bool,
    /// Pending In.
    pub pending_in: bool,
    /// Pre-approved (RFC 6121 §3.4).
    pub approved: bool,
}

impl SubState {
    pub const NONE: SubState = SubState {
        sub: Subscription::None,
        ask_out: false,
        pending_in: false,
        approved: false,
    };

    pub fn of(item: &RosterItem) -> Self {
        SubState {
            sub: item.subscription,
            ask_out: item.ask_out,
            pending_in: item.pending_in,
            approved: item.approved,
        }
    }

    pub fn apply(self, item: &mut RosterItem) {
        item.subscription = self.sub;
        item.ask_out = self.ask_out;
        item.pending_in = self.pending_in;
        item.approved = self.approved;
    }

    /// The contact receives the user's presence.
    pub fn has_from(self) -> bool {
        matches!(self.sub, Subscription::From | Subscription::Both)
    }

    /// The user receives the contact's presence.
    pub fn has_to(self) -> bool {
        matches!(self.sub, Subscription::To | Subscription::Both)
    }
}

fn add_from(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::From => Subscription::From,
        Subscription::To | Subscription::Both => Subscription::Both,
    }
}

fn remove_from(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::From => Subscription::None,
        Subscription::To | Subscription::Both => Subscription::To,
    }
}

fn add_to(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::To => Subscription::To,
        Subscription::From | Subscription::Both => Subscription::Both,
    }
}

fn remove_to(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::To => Subscription::None,
        Subscription::From | Subscription::Both => Subscription::From,
    }
}

/// What the user's server does with a subscription stanza the user sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outbound {
    pub state: SubState,
    /// Route the stanza to the contact.
    pub route: bool,
}

/// RFC 6121 Appendix A.2 (and §3.4 pre-approval). `subscribe` and `unsubscribe` are always
/// routed (the contact's server may have lost state); `subscribed` and `unsubscribed` only
/// when they change the state, and a pre-approval or its cancellation is never routed.
pub fn outbound(s: SubState, kind: SubKind) -> Outbound {
    let mut n = s;
    let route = match kind {
        SubKind::Subscribe => {
            if !s.has_to() {
                n.ask_out = true;
            }
            true
        }
        SubKind::Unsubscribe => {
            n.sub = remove_to(s.sub);
            n.ask_out = false;
            true
        }
        SubKind::Subscribed => {
            if s.pending_in {
                n.pending_in = false;
                n.sub = add_from(s.sub);
                n.approved = false;
                true
            } else if s.has_from() {
                false
            } else {
                // Pre-approval: None, None + Pending Out, To.
                n.approved = true;
                false
            }
        }
        SubKind::Unsubscribed => {
            n.approved = false;
            if s.pending_in {
                n.pending_in = false;
                true
            } else if s.has_from() {
                n.sub = remove_from(s.sub);
                true
            } else {
                false
            }
        }
    };
    Outbound { state: n, route }
}

/// What the user's server does with a subscription stanza addressed to the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub state: SubState,
    /// Deliver the stanza to the user's available resources (or keep it pending).
    pub deliver: bool,
    /// Answer `subscribed` on the user's behalf (already subscribed, or pre-approved).
    pub auto_subscribed: bool,
}

/// RFC 6121 Appendix A.3: a stanza that does not change the state is not delivered.
pub fn inbound(s: SubState, kind: SubKind) -> Inbound {
    let mut n = s;
    let mut auto_subscribed = false;
    let deliver = match kind {
        SubKind::Subscribe => {
            if s.has_from() {
                auto_subscribed = true;
                false
            } else if s.approved {
                n.approved = false;
                n.pending_in = false;
                n.sub = add_from(s.sub);
                auto_subscribed = true;
                false
            } else if s.pending_in {
                false
            } else {
                n.pending_in = true;
                true
            }
        }
        SubKind::Unsubscribe => {
            if s.pending_in {
                n.pending_in = false;
                true
            } else if s.has_from() {
                n.sub = remove_from(s.sub);
                true
            } else {
                false
            }
        }
        SubKind::Subscribed => {
            if s.ask_out {
                n.ask_out = false;
                n.sub = add_to(s.sub);
                true
            } else {
                false
            }
        }
        SubKind::Unsubscribed => {
            if s.ask_out || s.has_to() {
                n.ask_out = false;
                n.sub = remove_to(s.sub);
                true
            } else {
                false
            }
        }
    };
    Inbound {
        state: n,
        deliver,
        auto_subscribed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Subscription::{Both, From, None as Nn, To};

    /// The nine defined states of RFC 6121 Appendix A.1, by name.
    fn st(name: &str) -> SubState {
        let (sub, ask_out, pending_in) = match name {
            "None" => (Nn, false, false),
            "None+PO" => (Nn, true, false),
            "None+PI" => (Nn, false, true),
            "None+PO+PI" => (Nn, true, true),
            "To" => (To, false, false),
            "To+PI" => (To, false, true),
            "From" => (From, false, false),
            "From+PO" => (From, true, false),
            "Both" => (Both, false, false),
            other => panic!("unknown state {other}"),
        };
        SubState {
            sub,
            ask_out,
            pending_in,
            approved: false,
        }
    }

    const STATES: [&str; 9] = [
        "None",
        "None+PO",
        "None+PI",
        "None+PO+PI",
        "To",
        "To+PI",
        "From",
        "From+PO",
        "Both",
    ];

    #[test]
    fn inbound_tables_of_appendix_a3() {
        // (kind, state before, state after, delivered)
        let table: &[(SubKind, &str, &str, bool)] = &[
            (SubKind::Subscribe, "None", "None+PI", true),
            (SubKind::Subscribe, "None+PO", "None+PO+PI", true),
            (SubKind::Subscribe, "None+PI", "None+PI", false),
            (SubKind::Subscribe, "None+PO+PI", "None+PO+PI", false),
            (SubKind::Subscribe, "To", "To+PI", true),
            (SubKind::Subscribe, "To+PI", "To+PI", false),
            (SubKind::Subscribe, "From", "From", false),
            (SubKind::Subscribe, "From+PO", "From+PO", false),
            (SubKind::Subscribe, "Both", "Both", false),
            (SubKind::Unsubscribe, "None", "None", false),
            (SubKind::Unsubscribe, "None+PO", "None+PO", false),
            (SubKind::Unsubscribe, "None+PI", "None", true),
            (SubKind::Unsubscribe, "None+PO+PI", "None+PO", true),
            (SubKind::Unsubscribe, "To", "To", false),
            (SubKind::Unsubscribe, "To+PI", "To", true),
            (SubKind::Unsubscribe, "From", "None", true),
            (SubKind::Unsubscribe, "From+PO", "None+PO", true),
            (SubKind::Unsubscribe, "Both", "To", true),
            (SubKind::Subscribed, "None", "None", false),
            (SubKind::Subscribed, "None+PO", "To", true),
            (SubKind::Subscribed, "None+PI", "None+PI", false),
            (SubKind::Subscribed, "None+PO+PI", "To+PI", true),
            (SubKind::Subscribed, "To", "To", false),
            (SubKind::Subscribed, "To+PI", "To+PI", false),
            (SubKind::Subscribed, "From", "From", false),
            (SubKind::Subscribed, "From+PO", "Both", true),
            (SubKind::Subscribed, "Both", "Both", false),
            (SubKind::Unsubscribed, "None", "None", false),
            (SubKind::Unsubscribed, "None+PO", "None", true),
            (SubKind::Unsubscribed, "None+PI", "None+PI", false),
            (SubKind::Unsubscribed, "None+PO+PI", "None+PI", true),
            (SubKind::Unsubscribed, "To", "None", true),
            (SubKind::Unsubscribed, "To+PI", "None+PI", true),
            (SubKind::Unsubscribed, "From", "From", false),
            (SubKind::Unsubscribed, "From+PO", "From", true),
            (SubKind::Unsubscribed, "Both", "From", true),
        ];
        assert_eq!(table.len(), 36);
        for &(kind, before, after, deliver) in table {
            let out = inbound(st(before), kind);
            assert_eq!(out.state, st(after), "inbound {kind:?} in {before}");
            assert_eq!(
                out.deliver, deliver,
                "inbound {kind:?} in {before} delivery"
            );
            // Delivery happens exactly when the state changes.
            assert_eq!(
                out.deliver,
                out.state != st(before),
                "inbound {kind:?} in {before}"
            );
        }
    }

    #[test]
    fn inbound_subscribe_when_subscribed_is_auto_answered() {
        for name in STATES {
            let out = inbound(st(name), SubKind::Subscribe);
            assert_eq!(out.auto_subscribed, st(name).has_from(), "{name}");
        }
    }

    #[test]
    fn outbound_tables_of_appendix_a2() {
        // (kind, state before, state after, routed)
        let table: &[(SubKind, &str, &str, bool)] = &[
            (SubKind::Subscribe, "None", "None+PO", true),
            (SubKind::Subscribe, "None+PO", "None+PO", true),
            (SubKind::Subscribe, "None+PI", "None+PO+PI", true),
            (SubKind::Subscribe, "None+PO+PI", "None+PO+PI", true),
            (SubKind::Subscribe, "To", "To", true),
            (SubKind::Subscribe, "To+PI", "To+PI", true),
            (SubKind::Subscribe, "From", "From+PO", true),
            (SubKind::Subscribe, "From+PO", "From+PO", true),
            (SubKind::Subscribe, "Both", "Both", true),
            (SubKind::Unsubscribe, "None", "None", true),
            (SubKind::Unsubscribe, "None+PO", "None", true),
            (SubKind::Unsubscribe, "None+PI", "None+PI", true),
            (SubKind::Unsubscribe, "None+PO+PI", "None+PI", true),
            (SubKind::Unsubscribe, "To", "None", true),
            (SubKind::Unsubscribe, "To+PI", "None+PI", true),
            (SubKind::Unsubscribe, "From", "From", true),
            (SubKind::Unsubscribe, "From+PO", "From", true),
            (SubKind::Unsubscribe, "Both", "From", true),
            (SubKind::Subscribed, "None+PI", "From", true),
            (SubKind::Subscribed, "None+PO+PI", "From+PO", true),
            (SubKind::Subscribed, "To+PI", "Both", true),
            (SubKind::Subscribed, "From", "From", false),
            (SubKind::Subscribed, "From+PO", "From+PO", false),
            (SubKind::Subscribed, "Both", "Both", false),
            (SubKind::Unsubscribed, "None", "None", false),
            (SubKind::Unsubscribed, "None+PO", "None+PO", false),
            (SubKind::Unsubscribed, "None+PI", "None", true),
            (SubKind::Unsubscribed, "None+PO+PI", "None+PO", true),
            (SubKind::Unsubscribed, "To", "To", false),
            (SubKind::Unsubscribed, "To+PI", "To", true),
            (SubKind::Unsubscribed, "From", "None", true),
            (SubKind::Unsubscribed, "From+PO", "None+PO", true),
            (SubKind::Unsubscribed, "Both", "To", true),
        ];
        for &(kind, before, after, route) in table {
            let out = outbound(st(before), kind);
            assert_eq!(out.state, st(after), "outbound {kind:?} in {before}");
            assert_eq!(out.route, route, "outbound {kind:?} in {before} routing");
        }
    }

    #[test]
    fn outbound_subscribed_without_pending_in_pre_approves() {
        for name in ["None", "None+PO", "To"] {
            let out = outbound(st(name), SubKind::Subscribed);
            assert!(!out.route, "{name}");
            assert_eq!(
                out.state,
                SubState {
                    approved: true,
                    ..st(name)
                },
                "{name}"
            );
            // Pre-approving twice changes nothing.
            assert_eq!(outbound(out.state, SubKind::Subscribed).state, out.state);
            // Unsubscribed cancels the pre-approval without routing.
            let cancel = outbound(out.state, SubKind::Unsubscribed);
            assert_eq!(
                cancel,
                Outbound {
                    state: st(name),
                    route: false
                },
                "{name}"
            );
        }
    }

    #[test]
    fn pre_approved_inbound_subscribe_is_accepted_without_delivery() {
        for name in ["None", "None+PO", "To"] {
            let pre = SubState {
                approved: true,
                ..st(name)
            };
            let out = inbound(pre, SubKind::Subscribe);
            assert!(!out.deliver && out.auto_subscribed, "{name}");
            assert!(out.state.has_from(), "{name}");
            assert!(!out.state.approved && !out.state.pending_in, "{name}");
        }
        let out = inbound(
            SubState {
                approved: true,
                ..st("To")
            },
            SubKind::Subscribe,
        );
        assert_eq!(out.state.sub, Both);
    }

    #[test]
    fn kinds_round_trip() {
        for k in [
            SubKind::Subscribe,
            SubKind::Subscribed,
            SubKind::Unsubscribe,
            SubKind::Unsubscribed,
        ] {
            assert_eq!(SubKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(SubKind::parse("probe"), None);
    }
}
