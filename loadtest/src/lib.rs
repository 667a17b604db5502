//! relais-loadtest: a standards-only XMPP client load generator.
//!
//! It logs in real accounts over TLS (STARTTLS or direct) with SCRAM, binds, fetches the
//! roster and sends initial presence, then runs one of the scenarios (login storm, idle
//! sessions, 1:1 chat, presence churn) against any XMPP server, and reports operation counts,
//! latency percentiles, errors by kind and, given the server's pids, the server's CPU and
//! memory per unit of work. See `config` for the scenario file format.

pub mod archive;
pub mod client;
pub mod config;
pub mod error;
pub mod metrics;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod session;
pub mod tls;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use error::{Error, ErrorCode, Result};

/// One complete run: the target, the scenarios in order, the server pids to sample.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub target: config::Target,
    pub scenarios: Vec<config::Scenario>,
    pub server_pids: Vec<u32>,
    /// Hard bound on the whole run.
    pub max_time: Duration,
    /// Print progress to stderr once a second.
    pub progress: bool,
}

/// Runs every scenario, one after another, and reports on each.
pub async fn run(opts: RunOptions) -> Result<report::RunReport> {
    for sc in &opts.scenarios {
        sc.validate()?;
    }
    let target = Arc::new(opts.target);
    let tls = tls::client_config(target.tls_resume)?;
    let connector = client::Connector::new(target, tls)?;
    let env = scenario::RunEnv {
        connector,
        server_pids: opts.server_pids,
        deadline: Instant::now() + opts.max_time,
        progress: opts.progress,
    };
    let mut scenarios = Vec::with_capacity(opts.scenarios.len());
    for sc in &opts.scenarios {
        scenarios.push(scenario::run_scenario(&env, sc).await?);
    }
    Ok(report::RunReport {
        tool: "relais-loadtest",
        version: env!("CARGO_PKG_VERSION"),
        scenarios,
    })
}
