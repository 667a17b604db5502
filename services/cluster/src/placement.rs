//! Rendezvous (highest random weight) placement of bare JIDs on session nodes.
//!
//! For a key `k` and each member `m`, the weight is `XXH3-64(k, seed = XXH3-64(m.id))`; the
//! member with the highest weight owns `k` (ties, which need a 64-bit collision, go to the
//! smaller id). XXH3 is a specified algorithm with fixed output, so every process and every
//! version agrees on the owner; `tests::owners_are_stable` pins a sample.
//!
//! Removing a member moves only the keys it owned; adding one moves to it about `1/(n+1)` of
//! the keys, all taken from the others.

use xmpp::BareJid;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::node::Member;

/// The owners of bare JIDs among a fixed set of members. Build a new one when membership changes.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// Sorted by id, without duplicate ids; each with its precomputed seed.
    members: Vec<(u64, Member)>,
}

impl Placement {
    /// Duplicate ids keep their first occurrence; order of the input does not matter.
    pub fn new(members: impl IntoIterator<Item = Member>) -> Self {
        let mut seen: Vec<Member> = Vec::new();
        for m in members {
            if !seen.iter().any(|s| s.id == m.id) {
                seen.push(m);
            }
        }
        seen.sort_by(|a, b| a.id.cmp(&b.id));
        Placement {
            members: seen
                .into_iter()
                .map(|m| (xxh3_64(m.id.as_str().as_bytes()), m))
                .collect(),
        }
    }

    /// The owning member of a bare JID, or `None` when there are no members.
    pub fn owner(&self, jid: &BareJid) -> Option<&Member> {
        self.owner_of_key(jid.as_str().as_bytes())
    }

    /// The owner of an arbitrary key (the canonical bytes of what is being placed).
    pub fn owner_of_key(&self, key: &[u8]) -> Option<&Member> {
        let mut best: Option<(u64, &Member)> = None;
        for (seed, m) in &self.members {
            let w = xxh3_64_with_seed(key, *seed);
            // Members are sorted by id, so keeping the first maximum breaks ties by smaller id.
            if best.is_none_or(|(bw, _)| w > bw) {
                best = Some((w, m));
            }
        }
        best.map(|(_, m)| m)
    }

    /// The `n` members with the highest weights for `key`, best first: the owner, then the
    /// member that would own the key if the owner were gone, and so on (removing a member
    /// never reorders the others, so this is the failover order). One weight per member.
    pub fn ranked(&self, key: &[u8], n: usize) -> Vec<&Member> {
        let mut weighted: Vec<(u64, usize)> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, (seed, _))| (xxh3_64_with_seed(key, *seed), i))
            .collect();
        // Highest weight first; ties go to the smaller id (the lower index), as in `owner`.
        weighted.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        weighted
            .into_iter()
            .take(n)
            .filter_map(|(_, i)| self.members.get(i).map(|(_, m)| m))
            .collect()
    }

    pub fn members(&self) -> impl ExactSizeIterator<Item = &Member> {
        self.members.iter().map(|(_, m)| m)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::HashMap;

    use super::*;
    use crate::node::{NodeId, Role};

    #[test]
    fn ranking_is_the_failover_order() {
        let all: Vec<Member> = (0..6).map(|i| member(&format!("node-{i}"))).collect();
        let p = Placement::new(all.clone());
        for k in 0..300 {
            let key = format!("user{k}@example.org");
            let ranked = p.ranked(key.as_bytes(), 6);
            assert_eq!(ranked.len(), 6);
            assert_eq!(Some(ranked[0]), p.owner_of_key(key.as_bytes()));
            // Each next member owns the key once the ones before it are gone.
            let mut left = all.clone();
            for expected in &ranked {
                let q = Placement::new(left.clone());
                assert_eq!(q.owner_of_key(key.as_bytes()), Some(*expected));
                left.retain(|m| m.id != expected.id);
            }
            assert_eq!(p.ranked(key.as_bytes(), 2), ranked[..2]);
        }
        assert!(Placement::default().ranked(b"x", 3).is_empty());
    }

    fn member(id: &str) -> Member {
        Member::new(
            NodeId::new(id).unwrap(),
            Role::Session,
            format!("{id}:7001"),
        )
    }

    fn nodes(ids: &[&str]) -> Vec<Member> {
        ids.iter().map(|id| member(id)).collect()
    }

    fn jids(n: usize) -> Vec<BareJid> {
        (0..n)
            .map(|i| format!("user{i}@example.com").parse().unwrap())
            .collect()
    }

    fn owners(p: &Placement, jids: &[BareJid]) -> Vec<String> {
        jids.iter()
            .map(|j| p.owner(j).unwrap().id.to_string())
            .collect()
    }

    #[test]
    fn no_members_no_owner() {
        let p = Placement::new([]);
        assert!(p.is_empty());
        assert!(p.owner(&"a@b".parse().unwrap()).is_none());
    }

    #[test]
    fn owner_does_not_depend_on_input_order_or_duplicates() {
        let jids = jids(500);
        let a = Placement::new(nodes(&["s0", "s1", "s2", "s3"]));
        let b = Placement::new(nodes(&["s3", "s1", "s0", "s2", "s1"]));
        assert_eq!(b.len(), 4);
        assert_eq!(owners(&a, &jids), owners(&b, &jids));
    }

    /// Owners computed once and pinned (cross-checked with an independent XXH3 implementation,
    /// python-xxhash 3.x): a change here means running nodes would disagree with the new build.
    #[test]
    fn owners_are_stable() {
        let p = Placement::new(nodes(&["session-0", "session-1", "session-2", "session-3"]));
        let expected = [
            ("alice@example.com", "session-3"),
            ("bob@example.com", "session-1"),
            ("carol@example.com", "session-0"),
            ("dave@example.org", "session-0"),
            ("example.com", "session-1"),
            ("ünïcode@example.com", "session-2"),
            ("user0@example.com", "session-0"),
            ("user1@example.com", "session-2"),
        ];
        let got: Vec<(&str, String)> = expected
            .iter()
            .map(|(j, _)| (*j, p.owner(&j.parse().unwrap()).unwrap().id.to_string()))
            .collect();
        let want: Vec<(&str, String)> = expected
            .iter()
            .map(|(j, o)| (*j, (*o).to_string()))
            .collect();
        assert_eq!(got, want);
        // The raw weight is pinned too, so a change of hash function shows here first.
        assert_eq!(
            xxh3_64_with_seed(b"alice@example.com", xxh3_64(b"session-0")),
            PINNED_WEIGHT
        );
    }
    const PINNED_WEIGHT: u64 = 5_724_208_829_426_128_133;

    #[test]
    fn spread_is_even() {
        let jids = jids(10_000);
        let p = Placement::new(nodes(&["s0", "s1", "s2", "s3"]));
        let mut counts: HashMap<String, usize> = HashMap::new();
        for o in owners(&p, &jids) {
            *counts.entry(o).or_default() += 1;
        }
        assert_eq!(counts.len(), 4);
        for (node, n) in counts {
            assert!((2125..=2875).contains(&n), "{node} owns {n} of 10000");
        }
    }

    #[test]
    fn removing_a_member_moves_only_its_jids() {
        let jids = jids(10_000);
        let before = owners(&Placement::new(nodes(&["s0", "s1", "s2", "s3"])), &jids);
        let after = owners(&Placement::new(nodes(&["s0", "s1", "s3"])), &jids);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(b, "s2", "a jid moved off a surviving node");
                moved += 1;
            } else {
                assert_ne!(b, "s2");
            }
        }
        assert_eq!(moved, before.iter().filter(|o| *o == "s2").count());
    }

    #[test]
    fn adding_a_member_moves_about_a_fifth_all_to_it() {
        let jids = jids(10_000);
        let before = owners(&Placement::new(nodes(&["s0", "s1", "s2", "s3"])), &jids);
        let after = owners(
            &Placement::new(nodes(&["s0", "s1", "s2", "s3", "s4"])),
            &jids,
        );
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(a, "s4", "a jid moved between old nodes");
                moved += 1;
            }
        }
        // Expected 2000; ±15%.
        assert!((1700..=2300).contains(&moved), "moved {moved}");
    }
}
