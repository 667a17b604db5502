//! One Redis client type over a single server and a Redis Cluster.
//!
//! Both variants reconnect by themselves: the single-server variant is a
//! [`redis::aio::ConnectionManager`], the cluster variant redis-rs's cluster connection (which
//! follows MOVED/ASK and refreshes its slot map). While Redis is unreachable every command fails
//! with an error after at most the response timeout; nothing blocks forever.
//!
//! Everything in this crate sends single-key commands or scripts whose keys share one hash slot,
//! so the same code runs against both. Pipelines are avoided because a cluster pipeline must stay
//! on one node.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::error::{ClusterError, Result};

/// Where Redis is and how patient to be with it.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` for one server, or `redis+cluster://host:port[,host:port...]`
    /// for a Redis Cluster (the listed nodes are seeds; the rest is discovered).
    pub url: String,
    /// Time to establish one TCP connection.
    pub connect_timeout: Duration,
    /// Time to wait for one reply before the command fails.
    pub response_timeout: Duration,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
        }
    }
}

/// A cloneable, multiplexed Redis connection: one server or a cluster.
#[derive(Clone)]
pub enum RedisClient {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisClient::Single(_) => f.write_str("RedisClient::Single"),
            RedisClient::Cluster(_) => f.write_str("RedisClient::Cluster"),
        }
    }
}

impl RedisClient {
    /// Connects (the first connection is made now, so a wrong address fails here).
    pub async fn connect(config: &RedisConfig) -> Result<Self> {
        if let Some(seeds) = config.url.strip_prefix("redis+cluster://") {
            let seeds: Vec<String> = seeds
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| format!("redis://{s}"))
                .collect();
            if seeds.is_empty() {
                return Err(ClusterError::Config(
                    "redis cluster url without nodes".into(),
                ));
            }
            let client = ClusterClientBuilder::new(seeds)
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.response_timeout)
                .retries(2)
                .build()?;
            Ok(RedisClient::Cluster(client.get_async_connection().await?))
        } else if config.url.starts_with("redis://") || config.url.starts_with("redis+unix://") {
            let client = redis::Client::open(config.url.as_str())?;
            let mgr = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.response_timeout))
                .set_number_of_retries(2)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_millis(500));
            Ok(RedisClient::Single(
                ConnectionManager::new_with_config(client, mgr).await?,
            ))
        } else {
            Err(ClusterError::Config(format!(
                "redis url must start with redis:// or redis+cluster://: {}",
                config.url
            )))
        }
    }
}

impl ConnectionLike for RedisClient {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisClient::Single(c) => c.req_packed_command(cmd),
            RedisClient::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisClient::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisClient::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisClient::Single(c) => c.get_db(),
            RedisClient::Cluster(c) => c.get_db(),
        }
    }
}

/// The Lua prologue that reads the server clock in milliseconds into `now`. Every expiry in this
/// crate is computed from Redis's clock, so nodes' clocks may disagree.
pub(crate) const LUA_NOW: &str = "local t = redis.call('TIME')\n\
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// Parses a sorted-set score or a script number returned as a bulk string or an integer.
pub(crate) fn value_to_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => {
            let s = std::str::from_utf8(b).ok()?;
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().map(|f| f as i64))
        }
        Value::SimpleString(s) => s.parse::<i64>().ok(),
        Value::Double(f) => Some(*f as i64),
        _ => None,
    }
}

/// The bytes of a bulk or simple string reply.
pub(crate) fn value_to_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}
