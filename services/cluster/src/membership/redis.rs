//! Membership from heartbeats in Redis.
//!
//! Per role, two keys in one hash slot (the role is the hash tag, so scripts may touch both in
//! Redis Cluster):
//! - `{prefix}:members:{role}`: a sorted set, member = node id, score = expiry in Redis-clock
//!   milliseconds;
//! - `{prefix}:members:{role}:meta`: a hash, node id -> encoded metadata (the address).
//!
//! A node heartbeats every `heartbeat` (one script: set its expiry to now + `ttl`, store its
//! metadata, and delete members that have expired). Readers poll on the same period and keep the
//! members whose expiry is in the future by Redis's clock, so a crashed node disappears within
//! `ttl` plus one poll. While Redis cannot be reached, readers keep the last snapshot rather
//! than declaring everyone dead.

use std::time::Duration;

use redis::{Script, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{MemberSet, Membership, publish};
use crate::codec::{Reader, Writer};
use crate::error::{ClusterError, Result};
use crate::node::{Member, NodeId, Role};
use crate::redis_client::{LUA_NOW, RedisClient, value_to_bytes};

const META_VERSION: u8 = 1;

#[derive(Clone, Debug)]
pub struct RedisMembershipConfig {
    /// Key prefix, `relais` by default.
    pub prefix: String,
    /// Heartbeat and poll period (2 s).
    pub heartbeat: Duration,
    /// How long a heartbeat keeps a member alive (6 s); a crashed member is gone after this.
    pub ttl: Duration,
    /// The roles whose members are read (all three by default).
    pub roles: Vec<Role>,
}

impl Default for RedisMembershipConfig {
    fn default() -> Self {
        RedisMembershipConfig {
            prefix: "relais".into(),
            heartbeat: Duration::from_secs(2),
            ttl: Duration::from_secs(6),
            roles: Role::ALL.to_vec(),
        }
    }
}

impl RedisMembershipConfig {
    fn validate(&self) -> Result<()> {
        if self.heartbeat.is_zero() || self.ttl <= self.heartbeat {
            return Err(ClusterError::Config(
                "membership ttl must be longer than a non-zero heartbeat".into(),
            ));
        }
        Ok(())
    }
}

fn zset_key(prefix: &str, role: Role) -> String {
    format!("{prefix}:members:{{{}}}", role.as_str())
}

fn meta_key(prefix: &str, role: Role) -> String {
    format!("{prefix}:members:{{{}}}:meta", role.as_str())
}

fn encode_meta(m: &Member) -> Result<Vec<u8>> {
    let mut w = Writer::with_capacity(2 + m.addr.len());
    w.u8(META_VERSION).str8(&m.addr)?;
    Ok(w.into_bytes())
}

fn decode_meta(id: NodeId, role: Role, bytes: &[u8]) -> Result<Member> {
    let mut r = Reader::new(bytes, "member metadata");
    let v = r.u8()?;
    if v != META_VERSION {
        return Err(ClusterError::Corrupt(format!(
            "member metadata: unknown version {v}"
        )));
    }
    let addr = r.str8()?.to_owned();
    r.finish()?;
    Ok(Member { id, role, addr })
}

/// KEYS: zset, meta. ARGV: id, ttl ms, metadata.
const HEARTBEAT: &str = "\
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\n\
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])\n\
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 1)\n\
for _, id in ipairs(dead) do\n\
  redis.call('ZREM', KEYS[1], id)\n\
  redis.call('HDEL', KEYS[2], id)\n\
end\n\
return #dead\n";

/// KEYS: zset, meta. Returns id, metadata, id, metadata... of the live members.
const READ: &str = "\
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')\n\
local out = {}\n\
for _, id in ipairs(ids) do\n\
  local m = redis.call('HGET', KEYS[2], id)\n\
  if m then\n\
    out[#out + 1] = id\n\
    out[#out + 1] = m\n\
  end\n\
end\n\
return out\n";

/// KEYS: zset, meta. ARGV: id.
const LEAVE: &str = "\
redis.call('ZREM', KEYS[1], ARGV[1])\n\
redis.call('HDEL', KEYS[2], ARGV[1])\n\
return 1\n";

struct Scripts {
    heartbeat: Script,
    read: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            heartbeat: Script::new(&format!("{LUA_NOW}{HEARTBEAT}")),
            read: Script::new(&format!("{LUA_NOW}{READ}")),
        }
    }
}

struct Worker {
    client: RedisClient,
    config: RedisMembershipConfig,
    me: Option<(Member, Vec<u8>)>,
    scripts: Scripts,
    tx: watch::Sender<MemberSet>,
}

impl Worker {
    async fn heartbeat(&mut self) -> Result<()> {
        let Some((me, meta)) = &self.me else {
            return Ok(());
        };
        let ttl_ms = u64::try_from(self.config.ttl.as_millis()).unwrap_or(u64::MAX);
        let _: i64 = self
            .scripts
            .heartbeat
            .key(zset_key(&self.config.prefix, me.role))
            .key(meta_key(&self.config.prefix, me.role))
            .arg(me.id.as_str())
            .arg(ttl_ms)
            .arg(meta.as_slice())
            .invoke_async(&mut self.client)
            .await?;
        Ok(())
    }

    async fn read_role(&mut self, role: Role) -> Result<Vec<Member>> {
        let raw: Vec<Value> = self
            .scripts
            .read
            .key(zset_key(&self.config.prefix, role))
            .key(meta_key(&self.config.prefix, role))
            .invoke_async(&mut self.client)
            .await?;
        let mut out = Vec::with_capacity(raw.len() / 2);
        for pair in raw.chunks_exact(2) {
            let (Some(id), Some(meta)) = (
                pair.first().and_then(value_to_bytes),
                pair.get(1).and_then(value_to_bytes),
            ) else {
                continue;
            };
            let parsed = std::str::from_utf8(id)
                .map_err(|_| ClusterError::Corrupt("member id: invalid utf-8".into()))
                .and_then(NodeId::new)
                .and_then(|id| decode_meta(id, role, meta));
            match parsed {
                Ok(m) => out.push(m),
                Err(error) => {
                    tracing::warn!(role = role.as_str(), %error, "skipping unreadable member");
                }
            }
        }
        Ok(out)
    }

    /// One heartbeat and one poll of every watched role. A role that cannot be read keeps its
    /// previous members.
    async fn round(&mut self) -> Result<()> {
        let beat = self.heartbeat().await;
        let mut next = self.tx.borrow().clone();
        let mut first_err = beat.err();
        for role in self.config.roles.clone() {
            match self.read_role(role).await {
                Ok(members) => next.set_role(role, members),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if publish(&self.tx, next) {
            tracing::debug!("cluster membership changed");
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval(self.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(error) = self.round().await {
                tracing::warn!(%error, "membership heartbeat or poll failed");
            }
        }
    }
}

/// Membership through Redis heartbeats. Dropping it stops heartbeating (as a crash would);
/// call [`RedisMembership::leave`] first for a graceful exit.
pub struct RedisMembership {
    rx: watch::Receiver<MemberSet>,
    client: RedisClient,
    config: RedisMembershipConfig,
    me: Option<Member>,
    task: JoinHandle<()>,
}

impl RedisMembership {
    /// Heartbeats as `me` (when given, e.g. `None` for a read-only observer) and reads the
    /// configured roles once before returning, so the first snapshot is current; then keeps
    /// doing both every `heartbeat` in a background task.
    pub async fn start(
        client: RedisClient,
        me: Option<Member>,
        config: RedisMembershipConfig,
    ) -> Result<Self> {
        config.validate()?;
        let me_meta = match &me {
            Some(m) => Some((m.clone(), encode_meta(m)?)),
            None => None,
        };
        let (tx, rx) = watch::channel(MemberSet::default());
        let mut worker = Worker {
            client: client.clone(),
            config: config.clone(),
            me: me_meta,
            scripts: Scripts::new(),
            tx,
        };
        worker.round().await?;
        let task = tokio::spawn(worker.run());
        Ok(RedisMembership {
            rx,
            client,
            config,
            me,
            task,
        })
    }

    /// Stops heartbeating and removes this node now, so readers drop it at their next poll
    /// instead of after the TTL.
    pub async fn leave(&self) -> Result<()> {
        self.task.abort();
        let Some(me) = &self.me else {
            return Ok(());
        };
        let mut client = self.client.clone();
        let _: i64 = Script::new(LEAVE)
            .key(zset_key(&self.config.prefix, me.role))
            .key(meta_key(&self.config.prefix, me.role))
            .arg(me.id.as_str())
            .invoke_async(&mut client)
            .await?;
        Ok(())
    }
}

impl Drop for RedisMembership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Membership for RedisMembership {
    fn watch(&self) -> watch::Receiver<MemberSet> {
        self.rx.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn keys_share_a_hash_tag_per_role() {
        assert_eq!(
            zset_key("relais", Role::Session),
            "relais:members:{session}"
        );
        assert_eq!(
            meta_key("relais", Role::Session),
            "relais:members:{session}:meta"
        );
        use crate::slot::key_slot;
        assert_eq!(
            key_slot(zset_key("p", Role::Edge).as_bytes()),
            key_slot(meta_key("p", Role::Edge).as_bytes())
        );
    }

    #[test]
    fn metadata_round_trips_and_rejects_garbage() {
        let m = Member::new(NodeId::new("s1").unwrap(), Role::Session, "[fe80::1]:7001");
        let bytes = encode_meta(&m).unwrap();
        assert_eq!(bytes.len(), 2 + m.addr.len());
        assert_eq!(decode_meta(m.id.clone(), Role::Session, &bytes).unwrap(), m);
        assert!(decode_meta(m.id.clone(), Role::Session, &[9, 0]).is_err());
        assert!(decode_meta(m.id.clone(), Role::Session, &bytes[..3]).is_err());
        let long = Member::new(m.id.clone(), Role::Session, "x".repeat(300));
        assert!(encode_meta(&long).is_err());
    }

    #[test]
    fn ttl_must_exceed_heartbeat() {
        let bad = RedisMembershipConfig {
            heartbeat: Duration::from_secs(2),
            ttl: Duration::from_secs(2),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert!(RedisMembershipConfig::default().validate().is_ok());
    }
}
