//! The directory in Redis.
//!
//! Keys (prefix `relais`):
//! - `relais:jid:{}<bare>`: a hash per bare JID, resource -> encoded entry. The empty `{}` makes
//!   Redis Cluster hash the whole key, whatever braces a localpart contains.
//! - `relais:{dir}:live`: a sorted set of node incarnations `<node>#<incarnation hex>`, score =
//!   expiry in Redis-clock milliseconds. Each node renews its own member every `heartbeat`; this
//!   is the only key with a TTL-like role, so there is one write per node per heartbeat and no
//!   per-entry expiry.
//! - `relais:{dir}:sweeping`: incarnations a janitor has claimed, score = end of the claim.
//! - `relais:node:{<node>}:<incarnation hex>:jids`: the full JIDs one incarnation registered
//!   (the janitor's work list).
//!
//! Liveness: every entry records its session node and that node's incarnation (a random u32
//! chosen at start). Readers return an entry only while its incarnation's expiry lies in the
//! future, so a crashed node's entries disappear from lookups within `ttl` (6 s by default).
//! Readers cache the expiries they learn (each heartbeat returns the whole live set); an
//! incarnation the cache does not vouch for is checked with one extra round trip.
//!
//! Janitor ([`Directory::sweep`], any node): claims expired incarnations atomically (moving them
//! from `live` to `sweeping`), deletes each listed entry only if it still carries the dead
//! incarnation (compare-and-delete in a script, so an entry re-registered by another node
//! survives), and returns what it deleted. A claim that is not finished within `sweep_lease` is
//! taken over by the next janitor.
//!
//! Data loss: a heartbeat renews the node's member only if it still exists. If it is gone (Redis
//! restarted empty, was flushed, or a janitor declared this node dead during a partition), the
//! node picks a new incarnation, reports a reset on [`Directory::resets`], and the owner of the
//! sessions calls [`Directory::republish`]. The old incarnation is then retired (expired in
//! `live`) so a janitor removes whatever of it survived a partial loss; republished entries
//! carry the new incarnation and are not touched.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use redis::{Script, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use xmpp::{BareJid, FullJid};

use super::{
    Directory, DirectoryEntry, SweptEntry, decode_entry, encode_entry, node_prefix, owner_prefix,
    tail,
};
use crate::error::{ClusterError, Result};
use crate::node::NodeId;
use crate::redis_client::{LUA_NOW, RedisClient, value_to_bytes, value_to_i64};

/// How many Redis requests one call keeps in flight.
const CONCURRENCY: usize = 64;

#[derive(Clone, Debug)]
pub struct DirectoryConfig {
    /// The session node this handle writes for.
    pub node_id: NodeId,
    /// Key prefix, `relais` by default.
    pub prefix: String,
    /// Liveness heartbeat period (2 s).
    pub heartbeat: Duration,
    /// How long one heartbeat keeps the node's entries visible (6 s).
    pub ttl: Duration,
    /// How long a janitor's claim on a dead node lasts before another janitor may take over.
    pub sweep_lease: Duration,
    /// Full JIDs read per step while sweeping one dead node.
    pub sweep_batch: usize,
    /// Dead incarnations claimed per sweep call.
    pub sweep_max_nodes: usize,
}

impl DirectoryConfig {
    pub fn new(node_id: NodeId) -> Self {
        DirectoryConfig {
            node_id,
            prefix: "relais".into(),
            heartbeat: Duration::from_secs(2),
            ttl: Duration::from_secs(6),
            sweep_lease: Duration::from_secs(60),
            sweep_batch: 500,
            sweep_max_nodes: 16,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.heartbeat.is_zero() || self.ttl <= self.heartbeat {
            return Err(ClusterError::Config(
                "directory ttl must be longer than a non-zero heartbeat".into(),
            ));
        }
        if self.sweep_batch == 0 || self.sweep_max_nodes == 0 || self.sweep_lease.is_zero() {
            return Err(ClusterError::Config(
                "sweep batch, node count and lease must be non-zero".into(),
            ));
        }
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

struct Keys {
    prefix: String,
    live: String,
    sweeping: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            live: format!("{prefix}:{{dir}}:live"),
            sweeping: format!("{prefix}:{{dir}}:sweeping"),
        }
    }

    fn jid(&self, bare: &str) -> String {
        format!("{}:jid:{{}}{bare}", self.prefix)
    }

    fn index(&self, node: &NodeId, incarnation: u32) -> String {
        format!("{}:node:{{{node}}}:{incarnation:08x}:jids", self.prefix)
    }
}

fn live_member(node: &NodeId, incarnation: u32) -> String {
    format!("{node}#{incarnation:08x}")
}

fn parse_live_member(s: &str) -> Option<(NodeId, u32)> {
    let (node, inc) = s.split_once('#')?;
    Some((NodeId::new(node).ok()?, u32::from_str_radix(inc, 16).ok()?))
}

/// KEYS: live. ARGV: member ('' for none), ttl ms, '1' on the first beat of an incarnation.
/// Returns {now, status (0 none, 1 renewed, 2 lost), {member, score, ...}}.
const BEAT: &str = "\
local status = 0\n\
if ARGV[1] ~= '' then\n\
  if ARGV[3] == '1' or redis.call('ZSCORE', KEYS[1], ARGV[1]) then\n\
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\n\
    status = 1\n\
  else\n\
    status = 2\n\
  end\n\
end\n\
return {now, status, redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'WITHSCORES')}\n";

/// KEYS: live. ARGV: members. Returns {now, score or -1, ...}.
const CHECK: &str = "\
local out = {now}\n\
for i, m in ipairs(ARGV) do\n\
  out[i + 1] = redis.call('ZSCORE', KEYS[1], m) or '-1'\n\
end\n\
return out\n";

/// KEYS: jid hash. ARGV: resource, value. Returns the replaced value.
const REGISTER: &str = "\
local old = redis.call('HGET', KEYS[1], ARGV[1])\n\
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n\
return old\n";

/// KEYS: jid hash. ARGV: resource, owner prefix, new tail. Returns 1 if rewritten.
const UPDATE: &str = "\
local v = redis.call('HGET', KEYS[1], ARGV[1])\n\
if v and #v > #ARGV[2] + 2 and string.sub(v, 1, #ARGV[2]) == ARGV[2] then\n\
  redis.call('HSET', KEYS[1], ARGV[1], string.sub(v, 1, #v - 2) .. ARGV[3])\n\
  return 1\n\
end\n\
return 0\n";

/// KEYS: jid hash. ARGV: resource, owner prefix. Deletes and returns the value if it has the
/// prefix.
const DELETE_IF: &str = "\
local v = redis.call('HGET', KEYS[1], ARGV[1])\n\
if v and string.sub(v, 1, #ARGV[2]) == ARGV[2] then\n\
  redis.call('HDEL', KEYS[1], ARGV[1])\n\
  return v\n\
end\n\
return false\n";

/// KEYS: live, sweeping. ARGV: lease ms, max. Claims expired incarnations and lapsed claims.
const CLAIM: &str = "\
local lease = now + tonumber(ARGV[1])\n\
local max = tonumber(ARGV[2])\n\
local out = {}\n\
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 1, 'LIMIT', 0, max)) do\n\
  redis.call('ZREM', KEYS[1], m)\n\
  redis.call('ZADD', KEYS[2], lease, m)\n\
  out[#out + 1] = m\n\
end\n\
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - 1, 'LIMIT', 0, max)) do\n\
  redis.call('ZADD', KEYS[2], lease, m)\n\
  out[#out + 1] = m\n\
end\n\
return out\n";

struct Scripts {
    beat: Script,
    check: Script,
    register: Script,
    update: Script,
    delete_if: Script,
    claim: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            beat: Script::new(&format!("{LUA_NOW}{BEAT}")),
            check: Script::new(&format!("{LUA_NOW}{CHECK}")),
            register: Script::new(REGISTER),
            update: Script::new(UPDATE),
            delete_if: Script::new(DELETE_IF),
            claim: Script::new(&format!("{LUA_NOW}{CLAIM}")),
        }
    }
}

/// This node's identity in `live`.
struct Own {
    incarnation: u32,
    /// Successful heartbeats of the current incarnation.
    beats: u64,
    /// Earlier incarnations to expire once their sessions are republished (or after a while).
    retire: Vec<(u32, Instant)>,
}

/// What this handle knows of other incarnations' liveness.
struct LiveCache {
    /// When `server_now` was read.
    at: Instant,
    server_now: i64,
    /// Member -> expiry (server ms).
    live: HashMap<String, i64>,
    /// Members found dead since the last heartbeat.
    dead: HashSet<String>,
}

impl LiveCache {
    fn estimated_now(&self) -> i64 {
        let elapsed = i64::try_from(self.at.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.server_now.saturating_add(elapsed)
    }

    fn verdict(&self, member: &str) -> Option<bool> {
        if let Some(exp) = self.live.get(member)
            && *exp >= self.estimated_now()
        {
            return Some(true);
        }
        if self.dead.contains(member) {
            return Some(false);
        }
        None
    }
}

struct Inner {
    client: RedisClient,
    config: DirectoryConfig,
    keys: Keys,
    scripts: Scripts,
    own: Mutex<Own>,
    cache: Mutex<LiveCache>,
    resets: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn new_incarnation(not: u32) -> u32 {
    loop {
        let i: u32 = rand::random();
        if i != not {
            return i;
        }
    }
}

/// A bare JID's canonical string and the resource of a full JID.
fn split_full(jid: &FullJid) -> (&str, &str) {
    (jid.bare_str(), jid.resource())
}

impl Inner {
    fn client(&self) -> RedisClient {
        self.client.clone()
    }

    fn check_owner(&self, entry: &DirectoryEntry) -> Result<()> {
        if entry.session_node == self.config.node_id {
            Ok(())
        } else {
            Err(ClusterError::ForeignNode {
                entry: entry.session_node.to_string(),
                local: self.config.node_id.to_string(),
            })
        }
    }

    /// One heartbeat; on a detected loss, switches incarnation, beats again and reports it.
    async fn beat(&self) -> Result<()> {
        let (incarnation, first) = {
            let own = lock(&self.own);
            (own.incarnation, own.beats == 0)
        };
        let status = self.beat_as(incarnation, first).await?;
        if status == 2 {
            let fresh = new_incarnation(incarnation);
            {
                let mut own = lock(&self.own);
                if own.incarnation != incarnation {
                    return Ok(());
                }
                own.retire.push((incarnation, Instant::now()));
                own.incarnation = fresh;
                own.beats = 0;
            }
            tracing::warn!(
                node = %self.config.node_id,
                old = format_args!("{incarnation:08x}"),
                new = format_args!("{fresh:08x}"),
                "directory lost this node's registration; sessions must be republished"
            );
            // Report before beating as the new incarnation: if that beat fails, the next one
            // retries it (its `beats` is 0) and the reset must not be lost.
            self.resets.send_modify(|n| *n = n.wrapping_add(1));
            self.beat_as(fresh, true).await?;
        }
        self.retire_due(self.config.ttl * 2).await
    }

    async fn beat_as(&self, incarnation: u32, first: bool) -> Result<i64> {
        let member = live_member(&self.config.node_id, incarnation);
        let raw: Vec<Value> = self
            .scripts
            .beat
            .key(&self.keys.live)
            .arg(&member)
            .arg(millis(self.config.ttl))
            .arg(if first { "1" } else { "0" })
            .invoke_async(&mut self.client())
            .await?;
        let now = raw.first().and_then(value_to_i64);
        let status = raw.get(1).and_then(value_to_i64);
        let (Some(now), Some(status)) = (now, status) else {
            return Err(ClusterError::Corrupt("heartbeat reply".into()));
        };
        let mut live = HashMap::new();
        if let Some(Value::Array(pairs)) = raw.get(2) {
            for pair in pairs.chunks_exact(2) {
                let m = pair.first().and_then(value_to_bytes);
                let s = pair.get(1).and_then(value_to_i64);
                if let (Some(m), Some(s)) = (m, s)
                    && let Ok(m) = std::str::from_utf8(m)
                {
                    live.insert(m.to_owned(), s);
                }
            }
        }
        *lock(&self.cache) = LiveCache {
            at: Instant::now(),
            server_now: now,
            live,
            dead: HashSet::new(),
        };
        if status == 1 {
            let mut own = lock(&self.own);
            if own.incarnation == incarnation {
                own.beats += 1;
            }
        }
        Ok(status)
    }

    /// Expires retired incarnations older than `age` in `live`, so a janitor sweeps them.
    async fn retire_due(&self, age: Duration) -> Result<()> {
        let due: Vec<u32> = {
            let own = lock(&self.own);
            own.retire
                .iter()
                .filter(|(_, since)| since.elapsed() >= age)
                .map(|(i, _)| *i)
                .collect()
        };
        for inc in due {
            let member = live_member(&self.config.node_id, inc);
            let _: i64 = redis::cmd("ZADD")
                .arg(&self.keys.live)
                .arg(0)
                .arg(&member)
                .query_async(&mut self.client())
                .await?;
            lock(&self.own).retire.retain(|(i, _)| *i != inc);
            tracing::info!(node = %self.config.node_id, incarnation = %member, "retired old incarnation");
        }
        Ok(())
    }

    /// Which of these incarnations are alive now (at most one round trip).
    async fn alive(&self, members: HashSet<String>) -> Result<HashSet<String>> {
        let mut alive = HashSet::new();
        let mut unknown = Vec::new();
        {
            let cache = lock(&self.cache);
            for m in members {
                match cache.verdict(&m) {
                    Some(true) => {
                        alive.insert(m);
                    }
                    Some(false) => {}
                    None => unknown.push(m),
                }
            }
        }
        if unknown.is_empty() {
            return Ok(alive);
        }
        let mut inv = self.scripts.check.key(&self.keys.live);
        for m in &unknown {
            inv.arg(m);
        }
        let raw: Vec<Value> = inv.invoke_async(&mut self.client()).await?;
        let Some(now) = raw.first().and_then(value_to_i64) else {
            return Err(ClusterError::Corrupt("liveness reply".into()));
        };
        let mut cache = lock(&self.cache);
        for (m, score) in unknown.into_iter().zip(raw.iter().skip(1)) {
            match value_to_i64(score) {
                Some(exp) if exp >= now => {
                    // Store the expiry relative to the cache's clock estimate.
                    let exp = exp
                        .saturating_sub(now)
                        .saturating_add(cache.estimated_now());
                    cache.live.insert(m.clone(), exp);
                    alive.insert(m);
                }
                _ => {
                    cache.dead.insert(m);
                }
            }
        }
        Ok(alive)
    }

    /// Decodes stored entries, dropping (and logging) unreadable ones and those of dead nodes.
    async fn filter_live(
        &self,
        raw: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<(String, DirectoryEntry)>> {
        let mut decoded = Vec::with_capacity(raw.len());
        for (resource, bytes) in raw {
            match decode_entry(&bytes) {
                Ok((entry, inc)) => {
                    let member = live_member(&entry.session_node, inc);
                    decoded.push((resource, entry, member));
                }
                Err(error) => tracing::warn!(%error, "skipping unreadable directory entry"),
            }
        }
        let alive = self
            .alive(decoded.iter().map(|(_, _, m)| m.clone()).collect())
            .await?;
        Ok(decoded
            .into_iter()
            .filter(|(_, _, m)| alive.contains(m))
            .map(|(r, e, _)| (r, e))
            .collect())
    }

    async fn write(&self, jid: &FullJid, entry: &DirectoryEntry) -> Result<Option<Vec<u8>>> {
        self.check_owner(entry)?;
        let incarnation = lock(&self.own).incarnation;
        let value = encode_entry(entry, incarnation)?;
        let (bare, resource) = split_full(jid);
        // Index first: a crash between the two leaves an index item without an entry (harmless
        // to the janitor), never an entry the janitor cannot find.
        let _: i64 = redis::cmd("SADD")
            .arg(self.keys.index(&self.config.node_id, incarnation))
            .arg(jid.as_str())
            .query_async(&mut self.client())
            .await?;
        let old: Option<Vec<u8>> = self
            .scripts
            .register
            .key(self.keys.jid(bare))
            .arg(resource)
            .arg(value)
            .invoke_async(&mut self.client())
            .await?;
        Ok(old)
    }

    /// Sweeps one claimed incarnation; returns the entries it deleted.
    async fn sweep_one(&self, member: &str) -> Result<Vec<SweptEntry>> {
        let Some((node, inc)) = parse_live_member(member) else {
            tracing::warn!(member, "dropping unparsable claim");
            self.finish_claim(member).await?;
            return Ok(Vec::new());
        };
        let index = self.keys.index(&node, inc);
        let prefix = owner_prefix(&node, inc)?;
        let mut seen = HashSet::new();
        let mut swept = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SSCAN")
                .arg(&index)
                .arg(cursor)
                .arg("COUNT")
                .arg(self.config.sweep_batch)
                .query_async(&mut self.client())
                .await?;
            let fresh: Vec<String> = batch
                .into_iter()
                .filter(|j| seen.insert(j.clone()))
                .collect();
            let results: Vec<Option<SweptEntry>> = stream::iter(fresh)
                .map(|jid| self.delete_swept(jid, &prefix))
                .buffer_unordered(CONCURRENCY)
                .try_collect()
                .await?;
            swept.extend(results.into_iter().flatten());
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let _: i64 = redis::cmd("DEL")
            .arg(&index)
            .query_async(&mut self.client())
            .await?;
        self.finish_claim(member).await?;
        tracing::info!(node = %node, incarnation = member, swept = swept.len(), "swept dead node");
        Ok(swept)
    }

    async fn delete_swept(&self, jid: String, prefix: &[u8]) -> Result<Option<SweptEntry>> {
        let Ok(full) = jid.parse::<FullJid>() else {
            tracing::warn!("skipping unparsable jid in a node index");
            return Ok(None);
        };
        let (bare, resource) = split_full(&full);
        let old: Option<Vec<u8>> = self
            .scripts
            .delete_if
            .key(self.keys.jid(bare))
            .arg(resource)
            .arg(prefix)
            .invoke_async(&mut self.client())
            .await?;
        Ok(old.and_then(|bytes| match decode_entry(&bytes) {
            Ok((entry, _)) => Some(SweptEntry { jid: full, entry }),
            Err(error) => {
                tracing::warn!(%error, "deleted an unreadable directory entry");
                None
            }
        }))
    }

    async fn finish_claim(&self, member: &str) -> Result<()> {
        let _: i64 = redis::cmd("ZREM")
            .arg(&self.keys.sweeping)
            .arg(member)
            .query_async(&mut self.client())
            .await?;
        Ok(())
    }
}

/// The directory in Redis for one node. Dropping it stops the heartbeat, exactly like a crash:
/// the node's entries vanish from lookups within the TTL and a janitor sweeps them. Call
/// [`RedisDirectory::retire`] first for a prompt, graceful exit.
pub struct RedisDirectory {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl RedisDirectory {
    /// Heartbeats once (so entries registered right after are visible) and starts the
    /// heartbeat task.
    pub async fn start(client: RedisClient, config: DirectoryConfig) -> Result<Self> {
        config.validate()?;
        let keys = Keys::new(&config.prefix);
        let inner = Arc::new(Inner {
            client,
            keys,
            scripts: Scripts::new(),
            own: Mutex::new(Own {
                incarnation: new_incarnation(0),
                beats: 0,
                retire: Vec::new(),
            }),
            cache: Mutex::new(LiveCache {
                at: Instant::now(),
                server_now: 0,
                live: HashMap::new(),
                dead: HashSet::new(),
            }),
            resets: watch::Sender::new(0),
            config,
        });
        inner.beat().await?;
        let weak = Arc::downgrade(&inner);
        let period = inner.config.heartbeat;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(error) = inner.beat().await {
                    tracing::warn!(node = %inner.config.node_id, %error, "directory heartbeat failed");
                }
            }
        });
        Ok(RedisDirectory { inner, task })
    }

    /// The incarnation this node currently writes with (changes after a reset).
    pub fn incarnation(&self) -> u32 {
        lock(&self.inner.own).incarnation
    }

    /// Graceful exit: stops heartbeating and expires this node now, so the next janitor
    /// sweeps whatever it did not unregister (readers that cached this node's expiry keep
    /// returning its unswept entries until that expiry, at most one TTL).
    pub async fn retire(&self) -> Result<()> {
        self.task.abort();
        let inc = self.incarnation();
        let _: i64 = redis::cmd("ZADD")
            .arg(&self.inner.keys.live)
            .arg(0)
            .arg(live_member(&self.inner.config.node_id, inc))
            .query_async(&mut self.inner.client())
            .await?;
        Ok(())
    }
}

impl Drop for RedisDirectory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl Directory for RedisDirectory {
    fn node_id(&self) -> &NodeId {
        &self.inner.config.node_id
    }

    async fn register(
        &self,
        jid: &FullJid,
        entry: &DirectoryEntry,
    ) -> Result<Option<DirectoryEntry>> {
        let Some(old) = self.inner.write(jid, entry).await? else {
            return Ok(None);
        };
        let live = self
            .inner
            .filter_live(vec![(jid.resource().to_owned(), old)])
            .await?;
        Ok(live.into_iter().next().map(|(_, e)| e))
    }

    async fn update(&self, jid: &FullJid, priority: i8, available: bool) -> Result<bool> {
        let (bare, resource) = split_full(jid);
        let n: i64 = self
            .inner
            .scripts
            .update
            .key(self.inner.keys.jid(bare))
            .arg(resource)
            .arg(node_prefix(&self.inner.config.node_id)?)
            .arg(tail(priority, available).as_slice())
            .invoke_async(&mut self.inner.client())
            .await?;
        Ok(n == 1)
    }

    async fn unregister(&self, jid: &FullJid) -> Result<Option<DirectoryEntry>> {
        let (bare, resource) = split_full(jid);
        let old: Option<Vec<u8>> = self
            .inner
            .scripts
            .delete_if
            .key(self.inner.keys.jid(bare))
            .arg(resource)
            .arg(node_prefix(&self.inner.config.node_id)?)
            .invoke_async(&mut self.inner.client())
            .await?;
        let Some(old) = old else {
            return Ok(None);
        };
        let (entry, inc) = decode_entry(&old)?;
        let _: i64 = redis::cmd("SREM")
            .arg(self.inner.keys.index(&entry.session_node, inc))
            .arg(jid.as_str())
            .query_async(&mut self.inner.client())
            .await?;
        Ok(Some(entry))
    }

    async fn lookup(&self, jid: &FullJid) -> Result<Option<DirectoryEntry>> {
        let (bare, resource) = split_full(jid);
        let raw: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(self.inner.keys.jid(bare))
            .arg(resource)
            .query_async(&mut self.inner.client())
            .await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let live = self
            .inner
            .filter_live(vec![(resource.to_owned(), raw)])
            .await?;
        Ok(live.into_iter().next().map(|(_, e)| e))
    }

    async fn resources(&self, jid: &BareJid) -> Result<Vec<(String, DirectoryEntry)>> {
        let raw: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(self.inner.keys.jid(jid.as_str()))
            .query_async(&mut self.inner.client())
            .await?;
        let mut live = self.inner.filter_live(raw).await?;
        live.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(live)
    }

    async fn republish(&self, entries: &[(FullJid, DirectoryEntry)]) -> Result<()> {
        for (_, e) in entries {
            self.inner.check_owner(e)?;
        }
        let writes: Vec<_> = entries
            .iter()
            .map(|(jid, e)| self.inner.write(jid, e))
            .collect();
        stream::iter(writes)
            .buffer_unordered(CONCURRENCY)
            .try_for_each(|_| async { Ok(()) })
            .await?;
        tracing::info!(node = %self.inner.config.node_id, entries = entries.len(), "republished directory entries");
        self.inner.retire_due(Duration::ZERO).await
    }

    async fn sweep(&self) -> Result<Vec<SweptEntry>> {
        let inner = &self.inner;
        let claimed: Vec<String> = inner
            .scripts
            .claim
            .key(&inner.keys.live)
            .key(&inner.keys.sweeping)
            .arg(millis(inner.config.sweep_lease))
            .arg(inner.config.sweep_max_nodes)
            .invoke_async(&mut inner.client())
            .await?;
        let mut swept = Vec::new();
        for member in claimed {
            swept.extend(inner.sweep_one(&member).await?);
        }
        Ok(swept)
    }

    fn resets(&self) -> watch::Receiver<u64> {
        self.inner.resets.subscribe()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::slot::key_slot;

    #[test]
    fn script_keys_share_slots_and_jid_keys_ignore_braces() {
        let keys = Keys::new("relais");
        assert_eq!(
            key_slot(keys.live.as_bytes()),
            key_slot(keys.sweeping.as_bytes())
        );
        // A localpart with braces must not pick the slot: the key is hashed whole.
        let a = keys.jid("x{tag}y@example.com");
        let b = keys.jid("z{tag}w@example.com");
        assert_eq!(a, "relais:jid:{}x{tag}y@example.com");
        assert_ne!(key_slot(a.as_bytes()), key_slot(b"tag"));
        assert_ne!(key_slot(a.as_bytes()), key_slot(b.as_bytes()));
        let node = NodeId::new("session-1").unwrap();
        assert_eq!(
            keys.index(&node, 0xab),
            "relais:node:{session-1}:000000ab:jids"
        );
        assert_eq!(
            key_slot(keys.index(&node, 1).as_bytes()),
            key_slot(b"session-1")
        );
    }

    #[test]
    fn live_members_round_trip() {
        let node = NodeId::new("s-1").unwrap();
        let m = live_member(&node, 0xdead_beef);
        assert_eq!(m, "s-1#deadbeef");
        assert_eq!(parse_live_member(&m), Some((node, 0xdead_beef)));
        assert_eq!(parse_live_member("s-1"), None);
        assert_eq!(parse_live_member("s{1}#00"), None);
        assert_eq!(parse_live_member("s#zz"), None);
    }

    #[test]
    fn cache_vouches_only_until_the_expiry() {
        let mut cache = LiveCache {
            at: Instant::now(),
            server_now: 1_000,
            live: HashMap::from([("a#1".to_owned(), 2_000), ("b#1".to_owned(), 999)]),
            dead: HashSet::from(["c#1".to_owned()]),
        };
        assert_eq!(cache.verdict("a#1"), Some(true));
        assert_eq!(cache.verdict("b#1"), None);
        assert_eq!(cache.verdict("c#1"), Some(false));
        assert_eq!(cache.verdict("d#1"), None);
        cache.server_now = 2_001;
        assert_eq!(cache.verdict("a#1"), None);
    }

    #[test]
    fn config_is_validated() {
        let node = NodeId::new("n").unwrap();
        assert!(DirectoryConfig::new(node.clone()).validate().is_ok());
        let mut c = DirectoryConfig::new(node.clone());
        c.ttl = c.heartbeat;
        assert!(c.validate().is_err());
        let mut c = DirectoryConfig::new(node);
        c.sweep_batch = 0;
        assert_eq!(c.validate().unwrap_err().code(), crate::ErrorCode::Config);
    }
}
