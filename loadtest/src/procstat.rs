//! Samples CPU seconds and RSS of processes from /proc (Linux).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// CPU and memory of one process or of a group of processes (summed).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time, in seconds.
    pub cpu_secs: f64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
}

/// Clock ticks per second for /proc/PID/stat (`getconf CLK_TCK`, 100 on Linux in practice).
fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|v| *v > 0.0)
            .unwrap_or(100.0)
    })
}

/// Parses utime + stime (fields 14 and 15) out of a /proc/PID/stat line, in ticks.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // rest starts at field 3 (state); utime is field 14, so skip 11 fields.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Parses `VmRSS:` (kB) out of /proc/PID/status; a process without one (zombie) has 0.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_ascii_whitespace().next())
        .and_then(|v| v.parse().ok())
        .or(Some(0))
}

/// Reads one process.
pub fn sample_pid(pid: u32) -> Result<ProcSample> {
    let err = |source| Error::Proc { pid, source };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(err)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(err)?;
    let bad = || Error::Proc {
        pid,
        source: std::io::Error::other("unexpected /proc format"),
    };
    let ticks = parse_stat_ticks(&stat).ok_or_else(bad)?;
    let rss_kib = parse_status_rss(&status).ok_or_else(bad)?;
    Ok(ProcSample {
        cpu_secs: ticks as f64 / clk_tck(),
        rss_kib,
    })
}

/// This process (the load generator itself).
pub fn sample_self() -> ProcSample {
    sample_pid(std::process::id()).unwrap_or_default()
}

/// Samples a fixed set of server processes. A process that exits keeps its last values, so
/// deltas stay meaningful.
#[derive(Debug)]
pub struct ServerProbe {
    last: BTreeMap<u32, ProcSample>,
}

impl ServerProbe {
    /// Checks that every pid can be read now.
    pub fn new(pids: &[u32]) -> Result<Self> {
        let mut last = BTreeMap::new();
        for &pid in pids {
            last.insert(pid, sample_pid(pid)?);
        }
        Ok(ServerProbe { last })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.last.keys().copied().collect()
    }

    /// The sum over all pids, now.
    pub fn sample(&mut self) -> ProcSample {
        let mut total = ProcSample::default();
        for (pid, last) in self.last.iter_mut() {
            if let Ok(s) = sample_pid(*pid) {
                *last = s;
            }
            total.cpu_secs += last.cpu_secs;
            total.rss_kib += last.rss_kib;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "1234 (we(ird) name) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_stat_ticks(line), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn parses_status_rss() {
        let s = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t   4321 kB\nThreads:\t1\n";
        assert_eq!(parse_status_rss(s), Some(4321));
        assert_eq!(parse_status_rss("Name:\tzombie\n"), Some(0));
    }

    #[test]
    fn samples_this_process() {
        let mut probe = ServerProbe::new(&[std::process::id()]).unwrap();
        let a = probe.sample();
        assert!(a.rss_kib > 0);
        // Burn a little CPU so the counter moves by at least one tick.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let b = probe.sample();
        assert!(b.cpu_secs > a.cpu_secs, "{a:?} -> {b:?}");
        assert!(ServerProbe::new(&[u32::MAX]).is_err());
    }
}
