//! The results: a JSON document and a human-readable table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::metrics::{LatencySummary, Metrics, Op};

/// Counts of one kind of operation over the measured window.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OpReport {
    pub attempted: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Succeeded per second of the window.
    pub throughput_per_sec: f64,
}

impl OpReport {
    pub fn from_op(op: &Op, window_secs: f64) -> Self {
        let succeeded = op.succeeded();
        OpReport {
            attempted: op.attempted(),
            succeeded,
            failed: op.failed(),
            throughput_per_sec: if window_secs > 0.0 {
                succeeded as f64 / window_secs
            } else {
                0.0
            },
        }
    }
}

/// The server's CPU and memory, from /proc.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ServerReport {
    pub pids: Vec<u32>,
    /// Server CPU seconds (user + system) over the measured window.
    pub cpu_secs: f64,
    /// CPU use over the window, in percent of one core.
    pub cpu_percent: f64,
    /// RSS before this scenario connected anything.
    pub rss_baseline_kib: u64,
    /// RSS with the scenario's sessions connected (after settling).
    pub rss_loaded_kib: Option<u64>,
    pub rss_peak_kib: u64,
    /// Sessions connected when `rss_loaded_kib` was taken.
    pub sessions: Option<u64>,
    /// (rss_loaded - rss_baseline) / sessions.
    pub rss_kib_per_session: Option<f64>,
    pub cpu_ms_per_login: Option<f64>,
    pub cpu_ms_per_1000_messages: Option<f64>,
    pub cpu_ms_per_1000_presence_deliveries: Option<f64>,
}

/// The load generator's own CPU, to show when the client is the bottleneck.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ClientReport {
    pub cpu_secs: f64,
    pub cpu_percent: f64,
    pub rss_kib: u64,
}

/// Everything one scenario measured.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub params: serde_json::Value,
    pub server_addr: String,
    pub tls: String,
    /// Mechanism name to number of logins that used it.
    pub mechanisms: BTreeMap<String, u64>,
    /// The measured window, in seconds (what throughput and CPU are computed over).
    pub window_secs: f64,
    /// The whole scenario, including setup and teardown.
    pub total_secs: f64,
    pub ops: BTreeMap<String, OpReport>,
    pub latency: BTreeMap<String, LatencySummary>,
    pub errors: BTreeMap<String, u64>,
    pub server: Option<ServerReport>,
    pub client: ClientReport,
    pub notes: Vec<String>,
}

impl ScenarioReport {
    /// Fills the counters that every scenario has from the metrics.
    pub fn collect(&mut self, m: &Metrics, ops: &[(&str, &Op, f64)]) {
        for (name, op, window) in ops {
            self.ops
                .insert((*name).to_string(), OpReport::from_op(op, *window));
        }
        for (name, lat) in [
            ("login", &m.login_latency),
            ("message", &m.message_latency),
            ("presence", &m.presence_latency),
        ] {
            if let Some(s) = lat.summary() {
                self.latency.insert(name.to_string(), s);
            }
        }
        self.errors = m.errors();
        self.mechanisms = m.mechanisms();
    }

    /// True when every attempted operation succeeded and nothing went wrong.
    pub fn clean(&self) -> bool {
        self.errors.is_empty()
            && self
                .ops
                .values()
                .all(|o| o.failed == 0 && o.attempted == o.succeeded)
    }
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub tool: &'static str,
    pub version: &'static str,
    pub scenarios: Vec<ScenarioReport>,
}

fn kib(v: u64) -> String {
    if v >= 10 * 1024 {
        format!("{:.1} MiB", v as f64 / 1024.0)
    } else {
        format!("{v} KiB")
    }
}

/// The human-readable table.
pub fn render(run: &RunReport) -> String {
    let mut o = String::new();
    for r in &run.scenarios {
        let _ = writeln!(
            o,
            "== {} against {} ({}) ==",
            r.scenario, r.server_addr, r.tls
        );
        let _ = writeln!(o, "params: {}", r.params);
        if !r.mechanisms.is_empty() {
            let mechs: Vec<String> = r
                .mechanisms
                .iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect();
            let _ = writeln!(o, "sasl: {}", mechs.join(", "));
        }
        let _ = writeln!(
            o,
            "window {:.2} s (total {:.2} s)",
            r.window_secs, r.total_secs
        );
        let _ = writeln!(
            o,
            "{:<20} {:>10} {:>10} {:>8} {:>12}",
            "operation", "attempted", "succeeded", "failed", "per second"
        );
        for (name, op) in &r.ops {
            let _ = writeln!(
                o,
                "{:<20} {:>10} {:>10} {:>8} {:>12.1}",
                name, op.attempted, op.succeeded, op.failed, op.throughput_per_sec
            );
        }
        if !r.latency.is_empty() {
            let _ = writeln!(
                o,
                "{:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
                "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max", "p99/s med"
            );
            for (name, l) in &r.latency {
                let med = l
                    .per_second_p99_median_ms
                    .map_or("-".to_string(), |v| format!("{v:.3}"));
                let _ = writeln!(
                    o,
                    "{:<20} {:>8} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>10}",
                    name, l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, med
                );
            }
        }
        if r.errors.is_empty() {
            let _ = writeln!(o, "errors: none");
        } else {
            let _ = writeln!(o, "errors:");
            for (k, v) in &r.errors {
                let _ = writeln!(o, "  {k:<40} {v:>8}");
            }
        }
        if let Some(s) = &r.server {
            let _ = writeln!(
                o,
                "server {:?}: cpu {:.2} s ({:.0}% of a core), rss baseline {} loaded {} peak {}",
                s.pids,
                s.cpu_secs,
                s.cpu_percent,
                kib(s.rss_baseline_kib),
                s.rss_loaded_kib.map_or("-".into(), kib),
                kib(s.rss_peak_kib)
            );
            if let Some(v) = s.cpu_ms_per_login {
                let _ = writeln!(o, "  server cpu per login: {v:.3} ms");
            }
            if let Some(v) = s.cpu_ms_per_1000_messages {
                let _ = writeln!(o, "  server cpu per 1000 delivered messages: {v:.1} ms");
            }
            if let Some(v) = s.cpu_ms_per_1000_presence_deliveries {
                let _ = writeln!(o, "  server cpu per 1000 presence deliveries: {v:.1} ms");
            }
            if let (Some(v), Some(n)) = (s.rss_kib_per_session, s.sessions) {
                let _ = writeln!(o, "  server rss per session: {v:.1} KiB ({n} sessions)");
            }
        }
        let _ = writeln!(
            o,
            "client: cpu {:.2} s ({:.0}% of a core), rss {}",
            r.client.cpu_secs,
            r.client.cpu_percent,
            kib(r.client.rss_kib)
        );
        for n in &r.notes {
            let _ = writeln!(o, "note: {n}");
        }
        let _ = writeln!(o);
    }
    o
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn renders_and_serializes() {
        let m = Metrics::default();
        m.message.attempt_n(3);
        m.message.succeed();
        m.message.succeed();
        m.message.fail();
        m.error("message/lost");
        m.message_latency
            .record(std::time::Duration::from_micros(1500));
        let mut r = ScenarioReport {
            scenario: "chat".into(),
            params: serde_json::json!({"users": 2}),
            server_addr: "127.0.0.1:5222".into(),
            tls: "starttls".into(),
            mechanisms: BTreeMap::new(),
            window_secs: 2.0,
            total_secs: 3.0,
            ops: BTreeMap::new(),
            latency: BTreeMap::new(),
            errors: BTreeMap::new(),
            server: Some(ServerReport {
                cpu_ms_per_1000_messages: Some(12.5),
                ..Default::default()
            }),
            client: ClientReport::default(),
            notes: vec![],
        };
        r.collect(&m, &[("message", &m.message, 2.0)]);
        assert!(!r.clean());
        assert_eq!(r.ops["message"].throughput_per_sec, 1.0);
        let run = RunReport {
            tool: "relais-loadtest",
            version: "0",
            scenarios: vec![r],
        };
        let text = render(&run);
        assert!(text.contains("message/lost"), "{text}");
        assert!(
            text.contains("server cpu per 1000 delivered messages: 12.5 ms"),
            "{text}"
        );
        let json = serde_json::to_value(&run).unwrap();
        assert_eq!(json["scenarios"][0]["ops"]["message"]["failed"], 1);
        assert_eq!(json["scenarios"][0]["latency"]["message"]["count"], 1);
    }
}
