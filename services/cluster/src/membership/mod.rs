//! Who is in the cluster: members per role, and a `watch` of changes.
//!
//! Implementations: [`StaticMembership`] (a fixed list), [`RedisMembership`] (heartbeats into
//! Redis sorted sets) and, behind the `kube` feature, `KubeMembership` (EndpointSlices).

use tokio::sync::watch;

use crate::node::{Member, NodeId, Role};

mod redis;
pub use self::redis::{RedisMembership, RedisMembershipConfig};

#[cfg(feature = "kube")]
mod kube;
#[cfg(feature = "kube")]
pub use self::kube::{KubeMembership, KubeRole, members_from_slice};

/// A snapshot of the members of every role, each list sorted by id without duplicate ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberSet {
    edge: Vec<Member>,
    session: Vec<Member>,
    router: Vec<Member>,
}

impl MemberSet {
    /// Sorts by id; a duplicate `(role, id)` keeps its first occurrence.
    pub fn new(members: impl IntoIterator<Item = Member>) -> Self {
        let mut set = MemberSet::default();
        for m in members {
            let list = set.list_mut(m.role);
            if !list.iter().any(|x| x.id == m.id) {
                list.push(m);
            }
        }
        for role in Role::ALL {
            set.list_mut(role).sort_by(|a, b| a.id.cmp(&b.id));
        }
        set
    }

    fn list_mut(&mut self, role: Role) -> &mut Vec<Member> {
        match role {
            Role::Edge => &mut self.edge,
            Role::Session => &mut self.session,
            Role::Router => &mut self.router,
        }
    }

    /// The members of one role, sorted by id.
    pub fn role(&self, role: Role) -> &[Member] {
        match role {
            Role::Edge => &self.edge,
            Role::Session => &self.session,
            Role::Router => &self.router,
        }
    }

    pub fn get(&self, role: Role, id: &NodeId) -> Option<&Member> {
        self.role(role).iter().find(|m| &m.id == id)
    }

    /// Replaces one role's list (used by sources that observe roles independently).
    pub(crate) fn set_role(&mut self, role: Role, members: Vec<Member>) {
        let only = MemberSet::new(members.into_iter().filter(|m| m.role == role));
        *self.list_mut(role) = only.role(role).to_vec();
    }

    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.edge.iter().chain(&self.session).chain(&self.router)
    }

    pub fn is_empty(&self) -> bool {
        self.edge.is_empty() && self.session.is_empty() && self.router.is_empty()
    }
}

/// A source of cluster members.
pub trait Membership: Send + Sync {
    /// The current members, updated whenever they change (the receiver sees only changes:
    /// a poll that finds the same members sends nothing).
    fn watch(&self) -> watch::Receiver<MemberSet>;

    /// The current members of one role, sorted by id.
    fn members(&self, role: Role) -> Vec<Member> {
        self.watch().borrow().role(role).to_vec()
    }
}

/// A fixed member list (tests and single-host setups). [`StaticMembership::set`] replaces it,
/// which tests use to simulate changes.
#[derive(Debug)]
pub struct StaticMembership {
    tx: watch::Sender<MemberSet>,
}

impl StaticMembership {
    pub fn new(members: impl IntoIterator<Item = Member>) -> Self {
        StaticMembership {
            tx: watch::Sender::new(MemberSet::new(members)),
        }
    }

    pub fn set(&self, members: impl IntoIterator<Item = Member>) {
        let set = MemberSet::new(members);
        self.tx.send_if_modified(|cur| {
            if *cur == set {
                false
            } else {
                *cur = set;
                true
            }
        });
    }
}

impl Membership for StaticMembership {
    fn watch(&self) -> watch::Receiver<MemberSet> {
        self.tx.subscribe()
    }
}

/// Publishes `set` unless it equals the current value; returns whether it changed.
pub(crate) fn publish(tx: &watch::Sender<MemberSet>, set: MemberSet) -> bool {
    tx.send_if_modified(|cur| {
        if *cur == set {
            false
        } else {
            *cur = set;
            true
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn m(id: &str, role: Role) -> Member {
        Member::new(NodeId::new(id).unwrap(), role, format!("{id}:1"))
    }

    #[test]
    fn member_set_sorts_per_role_and_drops_duplicates() {
        let set = MemberSet::new([
            m("s2", Role::Session),
            m("e1", Role::Edge),
            m("s1", Role::Session),
            m("s2", Role::Session),
            m("s1", Role::Router),
        ]);
        let ids: Vec<&str> = set
            .role(Role::Session)
            .iter()
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(ids, ["s1", "s2"]);
        assert_eq!(set.role(Role::Edge).len(), 1);
        assert_eq!(set.role(Role::Router).len(), 1);
        assert!(set.get(Role::Router, &NodeId::new("s1").unwrap()).is_some());
        assert!(set.get(Role::Edge, &NodeId::new("s1").unwrap()).is_none());
        assert_eq!(set.iter().count(), 4);
    }

    #[tokio::test]
    async fn static_membership_notifies_changes_only() {
        let sm = StaticMembership::new([m("s1", Role::Session)]);
        let mut rx = sm.watch();
        assert_eq!(sm.members(Role::Session).len(), 1);
        rx.mark_unchanged();
        sm.set([m("s1", Role::Session)]);
        assert!(!rx.has_changed().unwrap());
        sm.set([m("s1", Role::Session), m("s2", Role::Session)]);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().role(Role::Session).len(), 2);
        assert!(sm.members(Role::Edge).is_empty());
    }
}
