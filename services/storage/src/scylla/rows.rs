//! Rows ↔ domain types. The driver deserializes each row into one of the tuple types below
//! (regular columns as `Option`, since CQL stores an empty collection or a missing cell as
//! null); these functions turn them into domain values and report anything a correct writer
//! cannot have stored as [`StorageError::Corrupt`], never panicking.

use std::collections::HashMap;

use xmpp::BareJid;
use xmpp::scram::{ScramHash, ScramKeys};

use super::ids::{ArchiveId, Bucketing};
use crate::{
    ArchiveDefault, ArchivePrefs, ArchivedMessage, Credentials, Direction, OfflineMessage, Result,
    RosterItem, StorageError, Subscription,
};

/// One SCRAM key set as stored in `accounts.credentials`:
/// (salt, iterations, stored_key, server_key).
pub type CredentialTuple = (Vec<u8>, i64, Vec<u8>, Vec<u8>);
/// `SELECT credentials FROM accounts`.
pub type CredentialsRow = (Option<HashMap<String, CredentialTuple>>,);
/// `SELECT version, contact, name, subscription, ask_out, pending_in, approved, groups
/// FROM roster` (a roster with only its version yields one row with a null contact).
pub type RosterRow = (
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<bool>,
    Option<bool>,
    Option<Vec<String>>,
);
/// `SELECT id, stamp_ms, xml FROM offline` (null id: the static row only).
pub type OfflineRow = (Option<i64>, Option<i64>, Option<String>);
/// `SELECT id, with_jid, direction, xml FROM archive | archive_by_with`.
pub type ArchiveRow = (String, Option<String>, Option<i8>, Option<String>);
/// `SELECT default_mode, always_jids, never_jids FROM archive_prefs`.
pub type PrefsRow = (Option<String>, Option<Vec<String>>, Option<Vec<String>>);

fn corrupt(what: impl Into<String>) -> StorageError {
    StorageError::Corrupt(what.into())
}

fn required<T>(v: Option<T>, what: &str) -> Result<T> {
    v.ok_or_else(|| corrupt(format!("missing {what}")))
}

pub fn parse_jid(s: &str) -> Result<BareJid> {
    s.parse::<BareJid>()
        .map_err(|e| corrupt(format!("stored jid {s:?} is invalid: {e}")))
}

pub fn hash_name(hash: ScramHash) -> &'static str {
    match hash {
        ScramHash::Sha1 => "sha1",
        ScramHash::Sha256 => "sha256",
    }
}

fn parse_hash(s: &str) -> Result<ScramHash> {
    match s {
        "sha1" => Ok(ScramHash::Sha1),
        "sha256" => Ok(ScramHash::Sha256),
        other => Err(corrupt(format!("unknown scram hash {other:?}"))),
    }
}

/// The credential map written for `creds` (a later entry for the same hash wins).
pub fn credentials_to_map(creds: &Credentials) -> HashMap<String, CredentialTuple> {
    creds
        .keys
        .iter()
        .map(|k| {
            (
                hash_name(k.hash).to_owned(),
                (
                    k.salt.clone(),
                    i64::from(k.iterations),
                    k.stored_key.clone(),
                    k.server_key.clone(),
                ),
            )
        })
        .collect()
}

/// Keys sorted by hash name (sha1, sha256), like the SQLite backend.
pub fn credentials_from_row(row: CredentialsRow) -> Result<Credentials> {
    let mut entries: Vec<(String, CredentialTuple)> =
        row.0.unwrap_or_default().into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut keys = Vec::with_capacity(entries.len());
    for (hash, (salt, iterations, stored_key, server_key)) in entries {
        let iterations = u32::try_from(iterations)
            .map_err(|_| corrupt(format!("invalid iteration count {iterations}")))?;
        keys.push(ScramKeys {
            hash: parse_hash(&hash)?,
            salt,
            iterations,
            stored_key,
            server_key,
        });
    }
    Ok(Credentials { keys })
}

pub fn version_from(v: Option<i64>) -> Result<u64> {
    match v {
        None => Ok(0),
        Some(v) => u64::try_from(v).map_err(|_| corrupt(format!("negative roster version {v}"))),
    }
}

/// The roster item of a row; `None` for the static-only row (a roster with no item).
pub fn roster_item_from_row(row: RosterRow) -> Result<Option<RosterItem>> {
    let (_, contact, name, subscription, ask_out, pending_in, approved, groups) = row;
    let Some(contact) = contact else {
        return Ok(None);
    };
    let subscription = required(subscription, "roster subscription")?;
    let subscription = Subscription::parse(&subscription)
        .ok_or_else(|| corrupt(format!("unknown subscription {subscription:?}")))?;
    Ok(Some(RosterItem {
        jid: parse_jid(&contact)?,
        name,
        groups: groups.unwrap_or_default(),
        subscription,
        ask_out: required(ask_out, "roster ask_out")?,
        pending_in: required(pending_in, "roster pending_in")?,
        approved: required(approved, "roster approved")?,
    }))
}

/// The message of a row; `None` for the static-only row (a queue with no message).
pub fn offline_from_row(row: OfflineRow) -> Result<Option<OfflineMessage>> {
    let (id, stamp, xml) = row;
    let Some(id) = id else {
        return Ok(None);
    };
    let id = u64::try_from(id).map_err(|_| corrupt(format!("negative offline id {id}")))?;
    let stamp = required(stamp, "offline stamp")?;
    let stamp_ms =
        u64::try_from(stamp).map_err(|_| corrupt(format!("negative offline stamp {stamp}")))?;
    Ok(Some(OfflineMessage {
        id,
        stamp_ms,
        xml: required(xml, "offline xml")?,
    }))
}

pub fn direction_code(d: Direction) -> i8 {
    match d {
        Direction::Incoming => 0,
        Direction::Outgoing => 1,
    }
}

fn parse_direction(v: i8) -> Result<Direction> {
    match v {
        0 => Ok(Direction::Incoming),
        1 => Ok(Direction::Outgoing),
        other => Err(corrupt(format!("unknown archive direction {other}"))),
    }
}

/// Parses a stored archive id.
pub fn stored_id(s: &str) -> Result<ArchiveId> {
    ArchiveId::parse(s).ok_or_else(|| corrupt(format!("invalid archive id {s:?}")))
}

/// An archive row read from partition `bucket`: its id must belong there.
pub fn archived_from_row(
    row: ArchiveRow,
    bucket: i32,
    bucketing: &Bucketing,
) -> Result<ArchivedMessage> {
    let (id, with, direction, xml) = row;
    let parsed = stored_id(&id)?;
    if bucketing.bucket_of_id(parsed) != bucket {
        return Err(corrupt(format!(
            "archive id {id} stored in bucket {bucket} instead of {}",
            bucketing.bucket_of_id(parsed)
        )));
    }
    Ok(ArchivedMessage {
        stamp_ms: parsed.ms(),
        id,
        with: parse_jid(&required(with, "archive with_jid")?)?,
        direction: parse_direction(required(direction, "archive direction")?)?,
        xml: required(xml, "archive xml")?,
    })
}

pub fn default_name(d: ArchiveDefault) -> &'static str {
    match d {
        ArchiveDefault::Always => "always",
        ArchiveDefault::Never => "never",
        ArchiveDefault::Roster => "roster",
    }
}

pub fn jid_strings(jids: &[BareJid]) -> Vec<String> {
    jids.iter().map(|j| j.as_str().to_owned()).collect()
}

pub fn prefs_from_row(row: PrefsRow) -> Result<ArchivePrefs> {
    let (default, always, never) = row;
    let default = match required(default, "archive default")?.as_str() {
        "always" => ArchiveDefault::Always,
        "never" => ArchiveDefault::Never,
        "roster" => ArchiveDefault::Roster,
        other => return Err(corrupt(format!("unknown archive default {other:?}"))),
    };
    let parse_all = |v: Option<Vec<String>>| -> Result<Vec<BareJid>> {
        v.unwrap_or_default().iter().map(|s| parse_jid(s)).collect()
    };
    Ok(ArchivePrefs {
        default,
        always: parse_all(always)?,
        never: parse_all(never)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn is_corrupt<T: std::fmt::Debug>(r: Result<T>) -> bool {
        matches!(r, Err(StorageError::Corrupt(_)))
    }

    fn jid(s: &str) -> BareJid {
        s.parse().unwrap()
    }

    #[test]
    fn credentials_round_trip_through_the_map() {
        let creds = Credentials {
            keys: vec![
                ScramKeys {
                    hash: ScramHash::Sha256,
                    salt: vec![0, 0xff],
                    iterations: u32::MAX,
                    stored_key: vec![1; 32],
                    server_key: vec![2; 32],
                },
                ScramKeys {
                    hash: ScramHash::Sha1,
                    salt: vec![],
                    iterations: 1,
                    stored_key: vec![3; 20],
                    server_key: vec![4; 20],
                },
            ],
        };
        let got = credentials_from_row((Some(credentials_to_map(&creds)),)).unwrap();
        // Sorted by hash name.
        assert_eq!(got.keys[0], creds.keys[1]);
        assert_eq!(got.keys[1], creds.keys[0]);
        // An empty map is stored as null: an account without keys.
        assert!(credentials_from_row((None,)).unwrap().keys.is_empty());
    }

    #[test]
    fn corrupt_credentials() {
        let bad_hash = HashMap::from([("md5".to_owned(), (vec![], 1, vec![], vec![]))]);
        assert!(is_corrupt(credentials_from_row((Some(bad_hash),))));
        for iterations in [-1, i64::from(u32::MAX) + 1] {
            let m = HashMap::from([("sha1".to_owned(), (vec![], iterations, vec![], vec![]))]);
            assert!(is_corrupt(credentials_from_row((Some(m),))));
        }
    }

    fn roster_row(contact: Option<&str>, sub: Option<&str>) -> RosterRow {
        (
            Some(3),
            contact.map(str::to_owned),
            Some("Bob".into()),
            sub.map(str::to_owned),
            Some(true),
            Some(false),
            Some(true),
            Some(vec!["".into(), "Friends".into()]),
        )
    }

    #[test]
    fn roster_rows() {
        let item = roster_item_from_row(roster_row(Some("bob@example.com"), Some("both")))
            .unwrap()
            .unwrap();
        assert_eq!(
            item,
            RosterItem {
                jid: jid("bob@example.com"),
                name: Some("Bob".into()),
                groups: vec!["".into(), "Friends".into()],
                subscription: Subscription::Both,
                ask_out: true,
                pending_in: false,
                approved: true,
            }
        );
        // The static row of an emptied roster carries no item.
        assert_eq!(roster_item_from_row(roster_row(None, None)).unwrap(), None);
        // Null groups (an empty list) are no groups.
        let mut row = roster_row(Some("bob@example.com"), Some("to"));
        row.7 = None;
        assert!(
            roster_item_from_row(row)
                .unwrap()
                .unwrap()
                .groups
                .is_empty()
        );
        assert_eq!(version_from(None).unwrap(), 0);
        assert_eq!(version_from(Some(7)).unwrap(), 7);
    }

    #[test]
    fn corrupt_roster_rows() {
        assert!(is_corrupt(roster_item_from_row(roster_row(
            Some("bob@example.com"),
            Some("maybe")
        ))));
        assert!(is_corrupt(roster_item_from_row(roster_row(
            Some("bob@example.com"),
            None
        ))));
        assert!(is_corrupt(roster_item_from_row(roster_row(
            Some(""),
            Some("none")
        ))));
        let mut row = roster_row(Some("bob@example.com"), Some("none"));
        row.4 = None;
        assert!(is_corrupt(roster_item_from_row(row)));
        assert!(is_corrupt(version_from(Some(-1))));
    }

    #[test]
    fn offline_rows() {
        let m = offline_from_row((Some(4), Some(1_700_000_000_000), Some("<m/>".into())))
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.id, m.stamp_ms, m.xml.as_str()),
            (4, 1_700_000_000_000, "<m/>")
        );
        assert_eq!(offline_from_row((None, None, None)).unwrap(), None);
        assert!(is_corrupt(offline_from_row((
            Some(-4),
            Some(1),
            Some("x".into())
        ))));
        assert!(is_corrupt(offline_from_row((
            Some(4),
            Some(-1),
            Some("x".into())
        ))));
        assert!(is_corrupt(offline_from_row((
            Some(4),
            None,
            Some("x".into())
        ))));
        assert!(is_corrupt(offline_from_row((Some(4), Some(1), None))));
    }

    #[test]
    fn archive_rows() {
        let b = Bucketing::new(30).unwrap();
        let id = ArchiveId::new(1_700_000_000_123, 2, 7);
        let bucket = b.bucket_of_id(id);
        let row = |id: String, dir: Option<i8>| -> ArchiveRow {
            (
                id,
                Some("bob@example.com".into()),
                dir,
                Some("<message/>".into()),
            )
        };
        let m = archived_from_row(row(id.to_string(), Some(1)), bucket, &b).unwrap();
        assert_eq!(m.id, id.to_string());
        assert_eq!(m.stamp_ms, 1_700_000_000_123);
        assert_eq!(m.with, jid("bob@example.com"));
        assert_eq!(m.direction, Direction::Outgoing);
        assert_eq!(m.xml, "<message/>");
        assert_eq!(
            archived_from_row(row(id.to_string(), Some(0)), bucket, &b)
                .unwrap()
                .direction,
            Direction::Incoming
        );
        // Corrupt: bad id, id in the wrong partition, unknown direction, nulls, bad jid.
        assert!(is_corrupt(archived_from_row(
            row("x".into(), Some(1)),
            bucket,
            &b
        )));
        assert!(is_corrupt(archived_from_row(
            row(id.to_string(), Some(1)),
            bucket + 1,
            &b
        )));
        assert!(is_corrupt(archived_from_row(
            row(id.to_string(), Some(2)),
            bucket,
            &b
        )));
        assert!(is_corrupt(archived_from_row(
            row(id.to_string(), None),
            bucket,
            &b
        )));
        let no_xml = (
            id.to_string(),
            Some("bob@example.com".into()),
            Some(1),
            None,
        );
        assert!(is_corrupt(archived_from_row(no_xml, bucket, &b)));
        let bad_with = (
            id.to_string(),
            Some("@".into()),
            Some(1),
            Some("<m/>".into()),
        );
        assert!(is_corrupt(archived_from_row(bad_with, bucket, &b)));
    }

    #[test]
    fn prefs_rows() {
        let p = prefs_from_row((
            Some("roster".into()),
            Some(vec!["bob@example.com".into()]),
            None,
        ))
        .unwrap();
        assert_eq!(
            p,
            ArchivePrefs {
                default: ArchiveDefault::Roster,
                always: vec![jid("bob@example.com")],
                never: vec![],
            }
        );
        for d in [
            ArchiveDefault::Always,
            ArchiveDefault::Never,
            ArchiveDefault::Roster,
        ] {
            let row = (Some(default_name(d).to_owned()), None, None);
            assert_eq!(prefs_from_row(row).unwrap().default, d);
        }
        assert!(is_corrupt(prefs_from_row((
            Some("sometimes".into()),
            None,
            None
        ))));
        assert!(is_corrupt(prefs_from_row((None, None, None))));
        assert!(is_corrupt(prefs_from_row((
            Some("always".into()),
            Some(vec!["@".into()]),
            None
        ))));
        assert_eq!(
            jid_strings(&[jid("a@example.com"), jid("example.net")]),
            ["a@example.com", "example.net"]
        );
    }
}
