//! Wall-clock time as stored with offline messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The instant `ms` milliseconds after the Unix epoch.
pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_milliseconds() {
        let now = now_ms();
        assert!(now > 1_577_836_800_000, "after 2020");
        let back = from_ms(now)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .ok();
        assert_eq!(back, Some(u128::from(now)));
    }
}
