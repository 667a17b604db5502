//! Counters, latency histograms and errors, shared by every connection task.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Attempted / succeeded / failed counts of one kind of operation.
#[derive(Debug, Default)]
pub struct Op {
    attempted: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl Op {
    pub fn attempt(&self) {
        self.attempted.fetch_add(1, Ordering::Relaxed);
    }
    pub fn attempt_n(&self, n: u64) {
        self.attempted.fetch_add(n, Ordering::Relaxed);
    }
    pub fn succeed(&self) {
        self.succeeded.fetch_add(1, Ordering::Relaxed);
    }
    pub fn fail(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
    pub fn fail_n(&self, n: u64) {
        self.failed.fetch_add(n, Ordering::Relaxed);
    }
    pub fn attempted(&self) -> u64 {
        self.attempted.load(Ordering::Relaxed)
    }
    pub fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// A latency histogram in microseconds (1 µs to 1 h, 3 significant digits), with an optional
/// per-second window whose p99s are kept.
#[derive(Debug)]
pub struct Latency {
    all: Mutex<Histogram<u64>>,
    window: Mutex<Histogram<u64>>,
    window_p99s_us: Mutex<Vec<u64>>,
}

#[allow(clippy::expect_used)]
fn new_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram always accepts (low >= 1, high >= 2 * low, 3 digits).
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            all: Mutex::new(new_histogram()),
            window: Mutex::new(new_histogram()),
            window_p99s_us: Mutex::new(Vec::new()),
        }
    }
}

impl Latency {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        if let Ok(mut h) = self.all.lock() {
            h.saturating_record(us);
        }
        if let Ok(mut h) = self.window.lock() {
            h.saturating_record(us);
        }
    }

    /// Closes the current one-second window: keeps its p99 (if it saw any sample) and starts
    /// a new one.
    pub fn tick_window(&self) {
        let p99 = match self.window.lock() {
            Ok(mut h) => {
                let v = (!h.is_empty()).then(|| h.value_at_quantile(0.99));
                h.reset();
                v
            }
            Err(_) => None,
        };
        if let (Some(v), Ok(mut list)) = (p99, self.window_p99s_us.lock()) {
            list.push(v);
        }
    }

    /// Discards the current window without keeping it.
    pub fn reset_window(&self) {
        if let Ok(mut h) = self.window.lock() {
            h.reset();
        }
    }

    pub fn count(&self) -> u64 {
        self.all.lock().map(|h| h.len()).unwrap_or(0)
    }

    pub fn summary(&self) -> Option<LatencySummary> {
        let h = self.all.lock().ok()?;
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let p99s = self
            .window_p99s_us
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        Some(LatencySummary {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            per_second_p99_median_ms: median(&p99s).map(ms),
            per_second_windows: p99s.len(),
        })
    }
}

fn median(v: &[u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let mid = s.len() / 2;
    if s.len() % 2 == 1 {
        s.get(mid).copied()
    } else {
        Some((s.get(mid - 1)? + s.get(mid)?) / 2)
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The median of the p99s of each one-second window (None when not windowed).
    pub per_second_p99_median_ms: Option<f64>,
    pub per_second_windows: usize,
}

/// Everything one scenario measures.
#[derive(Debug)]
pub struct Metrics {
    /// The origin of every timestamp carried in messages and presences.
    pub epoch: Instant,
    pub login: Op,
    pub close: Op,
    pub message: Op,
    pub presence: Op,
    pub presence_delivery: Op,
    pub subscribe: Op,
    pub login_latency: Latency,
    pub message_latency: Latency,
    pub presence_latency: Latency,
    /// Sessions currently logged in.
    pub online: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    mechanisms: Mutex<BTreeMap<String, u64>>,
    /// Received message sequence numbers, to catch duplicates.
    seen: Mutex<Vec<u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            epoch: Instant::now(),
            login: Op::default(),
            close: Op::default(),
            message: Op::default(),
            presence: Op::default(),
            presence_delivery: Op::default(),
            subscribe: Op::default(),
            login_latency: Latency::default(),
            message_latency: Latency::default(),
            presence_latency: Latency::default(),
            online: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            mechanisms: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(Vec::new()),
        }
    }
}

impl Metrics {
    /// Nanoseconds since `epoch`, as carried in message bodies.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The time since a timestamp taken with `now_ns`.
    pub fn since_ns(&self, sent_ns: u64) -> Duration {
        Duration::from_nanos(self.now_ns().saturating_sub(sent_ns))
    }

    pub fn error(&self, kind: impl Into<String>) {
        self.error_n(kind, 1);
    }

    pub fn error_n(&self, kind: impl Into<String>, n: u64) {
        if n == 0 {
            return;
        }
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(kind.into()).or_insert(0) += n;
        }
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn mechanism_used(&self, mech: &str) {
        if let Ok(mut m) = self.mechanisms.lock() {
            *m.entry(mech.to_string()).or_insert(0) += 1;
        }
    }

    pub fn mechanisms(&self) -> BTreeMap<String, u64> {
        self.mechanisms
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Marks message `seq` as received; false when it was already received once.
    pub fn first_receipt(&self, seq: u64) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return true;
        };
        let word = usize::try_from(seq / 64).unwrap_or(usize::MAX);
        if word >= seen.len() {
            if word > 1 << 26 {
                return true; // beyond 4 G messages: stop tracking rather than allocate
            }
            seen.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        match seen.get_mut(word) {
            Some(w) if *w & bit != 0 => false,
            Some(w) => {
                *w |= bit;
                true
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn percentiles_and_window_medians() {
        let l = Latency::default();
        assert!(l.summary().is_none());
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        l.tick_window(); // p99 ~ 99 ms
        for _ in 0..10 {
            l.record(Duration::from_millis(1));
        }
        l.tick_window(); // p99 = 1 ms
        l.record(Duration::from_millis(7));
        l.tick_window(); // p99 = 7 ms
        l.tick_window(); // empty window: not kept
        let s = l.summary().unwrap();
        assert_eq!(s.count, 111);
        assert_eq!(s.per_second_windows, 3);
        let med = s.per_second_p99_median_ms.unwrap();
        assert!((med - 7.0).abs() < 0.01, "{med}");
        assert!((s.p50_ms - 45.0).abs() < 1.0, "{}", s.p50_ms);
        assert!((s.max_ms - 100.0).abs() < 0.1, "{}", s.max_ms);
        assert!((s.min_ms - 1.0).abs() < 0.01);
    }

    #[test]
    fn counts_errors_and_duplicates() {
        let m = Metrics::default();
        m.error("timeout/login");
        m.error("timeout/login");
        m.error("tls");
        let e = m.errors();
        assert_eq!(e.get("timeout/login"), Some(&2));
        assert_eq!(e.len(), 2);
        assert!(m.first_receipt(5));
        assert!(m.first_receipt(1000));
        assert!(!m.first_receipt(5));
        assert!(!m.first_receipt(1000));
        assert!(m.first_receipt(6));
        m.login.attempt();
        m.login.fail();
        assert_eq!(
            (m.login.attempted(), m.login.succeeded(), m.login.failed()),
            (1, 0, 1)
        );
    }
}
