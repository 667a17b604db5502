//! The configuration of the ScyllaDB backend (the `[storage]` section maps onto it).

use std::collections::BTreeMap;

use super::ids::{Bucketing, MAX_BUCKET_DAYS};
use crate::{Result, StorageError};

/// How the keyspace is replicated (used only when `migrate` creates it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replication {
    /// `SimpleStrategy`: one datacenter, development and small clusters.
    Simple { replication_factor: u32 },
    /// `NetworkTopologyStrategy`: replicas per datacenter name.
    NetworkTopology { datacenters: BTreeMap<String, u32> },
}

/// The consistency of ordinary reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConsistencyLevel {
    One,
    LocalOne,
    Quorum,
    #[default]
    LocalQuorum,
    EachQuorum,
    All,
}

/// The consistency of the Paxos phase of lightweight transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SerialLevel {
    /// Linearizable across every datacenter: account names stay unique cluster-wide.
    #[default]
    Serial,
    /// Linearizable within the local datacenter only (faster; uniqueness per datacenter).
    LocalSerial,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScyllaConfig {
    /// Contact points, `host:port` each (see [`ScyllaConfig::hosts_from_uri`]).
    pub hosts: Vec<String>,
    /// Letters, digits and `_`, starting with a letter, at most 48 characters.
    pub keyspace: String,
    pub replication: Replication,
    pub consistency: ConsistencyLevel,
    pub serial_consistency: SerialLevel,
    /// The datacenter to prefer (token-aware routing stays on; other datacenters are used
    /// only as a fallback).
    pub local_datacenter: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Length of an archive bucket in days (1..=3650). Fixed when the keyspace is first
    /// opened: the value stored in the keyspace wins over a later, different setting.
    pub archive_bucket_days: u32,
    /// Archived messages expire this long after their archive time (a TTL). `None`: kept
    /// until `ArchiveStore::expire` or account deletion.
    pub archive_ttl_secs: Option<u32>,
    /// Offline messages expire this long after they were stored (a TTL).
    pub offline_ttl_secs: Option<u32>,
    /// Creates the keyspace with `tablets = {'enabled': false}` (ScyllaDB 2024.2+ only;
    /// lightweight transactions need vnodes on releases before tablet LWT support). Set
    /// false for Apache Cassandra or an older ScyllaDB, which reject the option.
    pub disable_tablets: bool,
    /// Client-side timeout of one request, in milliseconds.
    pub request_timeout_ms: u64,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        ScyllaConfig {
            hosts: vec!["127.0.0.1:9042".into()],
            keyspace: "relais".into(),
            replication: Replication::Simple {
                replication_factor: 3,
            },
            consistency: ConsistencyLevel::LocalQuorum,
            serial_consistency: SerialLevel::Serial,
            local_datacenter: None,
            username: None,
            password: None,
            archive_bucket_days: 30,
            archive_ttl_secs: None,
            offline_ttl_secs: None,
            disable_tablets: true,
            request_timeout_ms: 12_000,
        }
    }
}

fn invalid(msg: String) -> StorageError {
    StorageError::Unavailable(format!("invalid scylla configuration: {msg}"))
}

/// A CQL identifier we interpolate (keyspace names cannot be bound).
fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && s.len() <= 48
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A datacenter name we put inside a CQL string literal.
fn valid_datacenter(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl ScyllaConfig {
    /// Parses `host:port[,host:port...]`, optionally prefixed by `scylla://` or `cql://`
    /// (a bare host gets port 9042).
    pub fn hosts_from_uri(uri: &str) -> Result<Vec<String>> {
        let rest = uri
            .strip_prefix("scylla://")
            .or_else(|| uri.strip_prefix("cql://"))
            .unwrap_or(uri);
        let rest = rest.trim_end_matches('/');
        let hosts: Vec<String> =
            rest.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| {
                    let has_port = h.rsplit_once(':').is_some_and(|(_, p)| {
                        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
                    }) && !h.ends_with(']');
                    if has_port {
                        h.to_owned()
                    } else {
                        format!("{h}:9042")
                    }
                })
                .collect();
        if hosts.is_empty() {
            return Err(invalid(format!("no host in {uri:?}")));
        }
        Ok(hosts)
    }

    /// Checks every field the backend interpolates or relies on.
    pub fn validate(&self) -> Result<()> {
        if self.hosts.is_empty() {
            return Err(invalid("no host".into()));
        }
        if !valid_identifier(&self.keyspace) {
            return Err(invalid(format!(
                "keyspace {:?} must be letters, digits and _ starting with a letter",
                self.keyspace
            )));
        }
        if self.bucketing().is_none() {
            return Err(invalid(format!(
                "archive_bucket_days must be 1..={MAX_BUCKET_DAYS}, not {}",
                self.archive_bucket_days
            )));
        }
        match &self.replication {
            Replication::Simple { replication_factor } if *replication_factor == 0 => {
                return Err(invalid("replication_factor must be at least 1".into()));
            }
            Replication::NetworkTopology { datacenters } => {
                if datacenters.is_empty() {
                    return Err(invalid("no datacenter in the replication map".into()));
                }
                if let Some(dc) = datacenters.keys().find(|dc| !valid_datacenter(dc)) {
                    return Err(invalid(format!("invalid datacenter name {dc:?}")));
                }
            }
            Replication::Simple { .. } => {}
        }
        if let Some(dc) = &self.local_datacenter
            && !valid_datacenter(dc)
        {
            return Err(invalid(format!("invalid local datacenter {dc:?}")));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(invalid("username and password go together".into()));
        }
        Ok(())
    }

    pub(crate) fn bucketing(&self) -> Option<Bucketing> {
        Bucketing::new(self.archive_bucket_days)
    }

    /// The `CREATE KEYSPACE` statement (after [`validate`](Self::validate)).
    pub fn create_keyspace_cql(&self) -> String {
        let replication = match &self.replication {
            Replication::Simple { replication_factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}")
            }
            Replication::NetworkTopology { datacenters } => {
                let dcs: Vec<String> = datacenters
                    .iter()
                    .map(|(dc, rf)| format!("'{dc}': {rf}"))
                    .collect();
                format!("{{'class': 'NetworkTopologyStrategy', {}}}", dcs.join(", "))
            }
        };
        let tablets = if self.disable_tablets {
            " AND tablets = {'enabled': false}"
        } else {
            ""
        };
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {replication}{tablets}",
            self.keyspace
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(
            ScyllaConfig::hosts_from_uri("127.0.0.1:9042").unwrap(),
            ["127.0.0.1:9042"]
        );
        assert_eq!(
            ScyllaConfig::hosts_from_uri("scylla://a.example, b.example:19042/").unwrap(),
            ["a.example:9042", "b.example:19042"]
        );
        assert_eq!(
            ScyllaConfig::hosts_from_uri("[::1]").unwrap(),
            ["[::1]:9042"]
        );
        assert_eq!(
            ScyllaConfig::hosts_from_uri("[::1]:9043").unwrap(),
            ["[::1]:9043"]
        );
        assert!(ScyllaConfig::hosts_from_uri("scylla://").is_err());
        assert!(ScyllaConfig::hosts_from_uri(" , ").is_err());
    }

    #[test]
    fn validation() {
        assert!(ScyllaConfig::default().validate().is_ok());
        for ks in ["", "1abc", "rel-ais", "a;DROP", &"k".repeat(49)] {
            let cfg = ScyllaConfig {
                keyspace: ks.to_owned(),
                ..ScyllaConfig::default()
            };
            assert!(cfg.validate().is_err(), "{ks}");
        }
        for days in [0, MAX_BUCKET_DAYS + 1] {
            let cfg = ScyllaConfig {
                archive_bucket_days: days,
                ..ScyllaConfig::default()
            };
            assert!(cfg.validate().is_err());
        }
        let cfg = ScyllaConfig {
            replication: Replication::NetworkTopology {
                datacenters: BTreeMap::from([("dc1'".to_owned(), 3)]),
            },
            ..ScyllaConfig::default()
        };
        assert!(cfg.validate().is_err());
        let cfg = ScyllaConfig {
            username: Some("relais".into()),
            ..ScyllaConfig::default()
        };
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn keyspace_statements() {
        let simple = ScyllaConfig {
            replication: Replication::Simple {
                replication_factor: 1,
            },
            ..ScyllaConfig::default()
        };
        assert_eq!(
            simple.create_keyspace_cql(),
            "CREATE KEYSPACE IF NOT EXISTS relais WITH replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 1} \
             AND tablets = {'enabled': false}"
        );
        let nts = ScyllaConfig {
            keyspace: "xmpp_prod".into(),
            replication: Replication::NetworkTopology {
                datacenters: BTreeMap::from([("eu-west".to_owned(), 3), ("us_east".to_owned(), 2)]),
            },
            disable_tablets: false,
            ..ScyllaConfig::default()
        };
        assert!(nts.validate().is_ok());
        assert_eq!(
            nts.create_keyspace_cql(),
            "CREATE KEYSPACE IF NOT EXISTS xmpp_prod WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'eu-west': 3, 'us_east': 2}"
        );
    }
}
