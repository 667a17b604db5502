//! Archive ids, time buckets and small stable hashes.
//!
//! # Archive ids
//!
//! An id is 128 bits: the archive time in milliseconds (48 bits), a sequence number (48 bits)
//! and the random node number of the process that made it (32 bits), shown as 26 characters
//! of Crockford base32. The width is fixed, so ids compare as strings exactly like the
//! numbers, i.e. by time first: an id names its time, hence its bucket, and time filters are
//! id ranges. One process never repeats or reorders ids ([`ArchiveClock`]); two processes
//! differ by their node number.
//!
//! # Buckets
//!
//! The archive of an owner is split into buckets of `archive_bucket_days` (30 by default):
//! bucket `b` holds the ids whose time is in `[b * len, (b + 1) * len)`.

use std::fmt;

/// Characters of an id.
pub const ID_LEN: usize = 26;
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// The largest archive time an id holds (year 10889).
pub const MAX_MS: u64 = (1 << 48) - 1;
const MAX_SEQ: u64 = (1 << 48) - 1;
const DAY_MS: u64 = 86_400_000;
/// The longest bucket accepted (10 years).
pub const MAX_BUCKET_DAYS: u32 = 3650;

/// One archive id, ordered like its external form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArchiveId(u128);

impl ArchiveId {
    pub const MIN: ArchiveId = ArchiveId(0);
    pub const MAX: ArchiveId = ArchiveId(u128::MAX);

    pub fn new(ms: u64, seq: u64, node: u32) -> Self {
        let ms = u128::from(ms.min(MAX_MS));
        let seq = u128::from(seq.min(MAX_SEQ));
        ArchiveId((ms << 80) | (seq << 32) | u128::from(node))
    }

    /// The lowest id of millisecond `ms` (saturating at [`MAX_MS`]).
    pub fn lowest(ms: u64) -> Self {
        ArchiveId::new(ms, 0, 0)
    }

    /// The highest id of millisecond `ms` (saturating at [`MAX_MS`]).
    pub fn highest(ms: u64) -> Self {
        ArchiveId::new(ms, MAX_SEQ, u32::MAX)
    }

    pub fn ms(self) -> u64 {
        u64::try_from(self.0 >> 80).unwrap_or(MAX_MS)
    }

    pub fn seq(self) -> u64 {
        u64::try_from((self.0 >> 32) & u128::from(MAX_SEQ)).unwrap_or(0)
    }

    pub fn value(self) -> u128 {
        self.0
    }

    /// The id of a raw value (every value is a valid id).
    pub fn from_value(v: u128) -> Self {
        ArchiveId(v)
    }

    /// The next id in order, saturating.
    pub fn succ(self) -> Self {
        ArchiveId(self.0.saturating_add(1))
    }

    /// The previous id in order, saturating.
    pub fn pred(self) -> Self {
        ArchiveId(self.0.saturating_sub(1))
    }

    /// Parses an external id; `None` when it is not one this backend could have made.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != ID_LEN {
            return None;
        }
        let mut v: u128 = 0;
        for c in s.bytes() {
            let digit = ALPHABET.iter().position(|a| *a == c)?;
            v = v
                .checked_mul(32)?
                .checked_add(u128::try_from(digit).ok()?)?;
        }
        Some(ArchiveId(v))
    }
}

impl fmt::Display for ArchiveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 26 digits of 5 bits cover 130 bits; the top digit holds the last 3 (always 0..3).
        for i in (0..ID_LEN).rev() {
            let digit = (self.0 >> (i * 5)) & 31;
            let c = ALPHABET[usize::try_from(digit).unwrap_or(0)];
            write!(f, "{}", char::from(c))?;
        }
        Ok(())
    }
}

/// Hands out the ids of one process: strictly increasing, never below the time asked for nor
/// below a floor (the newest id already stored for the owner, read after a restart).
#[derive(Debug)]
pub struct ArchiveClock {
    node: u32,
    last: Option<(u64, u64)>,
}

impl ArchiveClock {
    pub fn new(node: u32) -> Self {
        ArchiveClock { node, last: None }
    }

    /// The next id for a message stamped `stamp_ms`: its time is raised to the last id's (or
    /// the floor's) when older, so ids and times always sort alike.
    pub fn next(&mut self, stamp_ms: u64, floor: Option<ArchiveId>) -> ArchiveId {
        let mut ms = stamp_ms.min(MAX_MS);
        let mut seq = 0u64;
        let floor = floor.map(|f| (f.ms(), f.seq()));
        for (bound_ms, bound_seq) in [self.last, floor].into_iter().flatten() {
            if bound_ms > ms {
                ms = bound_ms;
                seq = bound_seq.saturating_add(1);
            } else if bound_ms == ms {
                seq = seq.max(bound_seq.saturating_add(1));
            }
        }
        if seq > MAX_SEQ {
            // 2^48 ids in one millisecond: borrow the next millisecond.
            ms = ms.saturating_add(1).min(MAX_MS);
            seq = 0;
        }
        self.last = Some((ms, seq));
        ArchiveId::new(ms, seq, self.node)
    }
}

/// The division of an archive into time buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucketing {
    bucket_ms: u64,
}

impl Bucketing {
    /// Buckets of `days` days; `None` outside 1..=[`MAX_BUCKET_DAYS`].
    pub fn new(days: u32) -> Option<Self> {
        if days == 0 || days > MAX_BUCKET_DAYS {
            return None;
        }
        Some(Bucketing {
            bucket_ms: u64::from(days) * DAY_MS,
        })
    }

    pub fn days(&self) -> u32 {
        u32::try_from(self.bucket_ms / DAY_MS).unwrap_or(u32::MAX)
    }

    /// The bucket of a time. Every time an id can hold maps into an `i32` (with 1-day buckets
    /// the largest is about 3.3 million).
    pub fn bucket_of(&self, ms: u64) -> i32 {
        i32::try_from(ms.min(MAX_MS) / self.bucket_ms).unwrap_or(i32::MAX)
    }

    pub fn bucket_of_id(&self, id: ArchiveId) -> i32 {
        self.bucket_of(id.ms())
    }

    /// The first millisecond of a bucket.
    pub fn start_ms(&self, bucket: i32) -> u64 {
        u64::try_from(bucket)
            .unwrap_or(0)
            .saturating_mul(self.bucket_ms)
    }

    /// The last millisecond of a bucket.
    pub fn end_ms(&self, bucket: i32) -> u64 {
        self.start_ms(bucket)
            .saturating_add(self.bucket_ms)
            .saturating_sub(1)
    }

    /// The ids a bucket can hold, inclusive.
    pub fn id_span(&self, bucket: i32) -> (ArchiveId, ArchiveId) {
        (
            ArchiveId::lowest(self.start_ms(bucket)),
            ArchiveId::highest(self.end_ms(bucket)),
        )
    }
}

/// Shards of the per-domain and per-cluster listings.
pub const SHARDS: i32 = 16;

/// FNV-1a (32 bits): a hash that never changes between builds, platforms or Rust versions
/// (unlike `DefaultHasher`), since shard numbers are stored.
pub fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The listing shard of a key, in `0..SHARDS`.
pub fn shard_of(key: &str) -> i32 {
    i32::try_from(fnv1a(key) % SHARDS.unsigned_abs()).unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_fixed_width_and_sort_like_values() {
        let samples = [
            ArchiveId::from_value(0),
            ArchiveId::from_value(1),
            ArchiveId::from_value(31),
            ArchiveId::from_value(32),
            ArchiveId::lowest(1_700_000_000_000),
            ArchiveId::new(1_700_000_000_000, 1, 0),
            ArchiveId::new(1_700_000_000_000, 1, u32::MAX),
            ArchiveId::highest(1_700_000_000_000),
            ArchiveId::lowest(1_700_000_000_001),
            ArchiveId::highest(MAX_MS - 1),
            ArchiveId::MAX,
        ];
        let encoded: Vec<String> = samples.iter().map(ToString::to_string).collect();
        for (id, e) in samples.iter().zip(&encoded) {
            assert_eq!(e.len(), ID_LEN);
            assert_eq!(ArchiveId::parse(e), Some(*id), "{e}");
        }
        assert!(encoded.windows(2).all(|w| w[0] < w[1]), "{encoded:?}");
        let id = ArchiveId::new(1_700_000_000_123, 77, 9);
        assert_eq!((id.ms(), id.seq()), (1_700_000_000_123, 77));
        assert_eq!(ArchiveId::highest(MAX_MS), ArchiveId::MAX);
        // The time prefix is the ULID one: 48 bits of milliseconds in 10 characters.
        assert!(
            ArchiveId::lowest(1_700_000_000_000)
                .to_string()
                .starts_with("01HF7YAT00")
        );
    }

    #[test]
    fn foreign_ids_do_not_parse() {
        for bad in [
            "",
            "unknown",
            "0000000000000",
            "0000000000000000000000000",
            "000000000000000000000000000",
            "00000000000000000000000000I",
            "0000000000000000000000000I",
            "0000000000000000000000000u",
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "ÀÀÀÀÀÀÀÀÀÀÀÀÀ",
        ] {
            assert_eq!(ArchiveId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn clock_is_strictly_increasing_and_raises_old_stamps() {
        let mut c = ArchiveClock::new(5);
        let a = c.next(1_000, None);
        let b = c.next(1_000, None);
        let older = c.next(10, None);
        let later = c.next(2_000, None);
        assert!(a < b && b < older && older < later);
        assert_eq!((a.ms(), a.seq()), (1_000, 0));
        assert_eq!((b.ms(), b.seq()), (1_000, 1));
        // The older stamp is raised to the last time.
        assert_eq!((older.ms(), older.seq()), (1_000, 2));
        assert_eq!((later.ms(), later.seq()), (2_000, 0));
    }

    #[test]
    fn clock_respects_a_stored_floor_after_restart() {
        // Another process (node 9) stored an id at ms 7, seq 3; this fresh process must go
        // above it even for an older stamp.
        let floor = ArchiveId::new(7, 3, 9);
        let mut c = ArchiveClock::new(1);
        let id = c.next(1, Some(floor));
        assert!(id > floor);
        assert_eq!((id.ms(), id.seq()), (7, 4));
        // A newer stamp is kept as is.
        let id = c.next(50, Some(floor));
        assert_eq!((id.ms(), id.seq()), (50, 0));
        // Two processes with the same time and sequence still differ by node.
        let mut other = ArchiveClock::new(2);
        let mut mine = ArchiveClock::new(1);
        assert_ne!(other.next(100, None), mine.next(100, None));
    }

    #[test]
    fn clock_saturates_at_the_largest_time() {
        let mut c = ArchiveClock::new(0);
        let a = c.next(u64::MAX, None);
        let b = c.next(u64::MAX, None);
        assert_eq!(a.ms(), MAX_MS);
        assert!(b > a);
    }

    #[test]
    fn bucketing_math() {
        assert_eq!(Bucketing::new(0), None);
        assert_eq!(Bucketing::new(MAX_BUCKET_DAYS + 1), None);
        let b = Bucketing::new(30).unwrap();
        assert_eq!(b.days(), 30);
        let len = 30 * DAY_MS;
        assert_eq!(b.bucket_of(0), 0);
        assert_eq!(b.bucket_of(len - 1), 0);
        assert_eq!(b.bucket_of(len), 1);
        assert_eq!(b.start_ms(1), len);
        assert_eq!(b.end_ms(1), 2 * len - 1);
        assert_eq!(b.bucket_of(b.end_ms(41)), 41);
        assert_eq!(b.bucket_of(b.start_ms(41)), 41);
        // 2023-11-14 is in bucket 655 of 30 days (1.7e12 / 2.592e9 = 655.9).
        assert_eq!(b.bucket_of(1_700_000_000_000), 655);
        // The largest time fits, even with one-day buckets.
        let daily = Bucketing::new(1).unwrap();
        assert_eq!(daily.bucket_of(u64::MAX), daily.bucket_of(MAX_MS));
        assert!(daily.bucket_of(MAX_MS) < i32::MAX);
        // An id's bucket is its time's; the span of a bucket holds exactly its ids.
        let id = ArchiveId::new(len + 5, 3, 3);
        assert_eq!(b.bucket_of_id(id), 1);
        let (lo, hi) = b.id_span(1);
        assert!(lo <= id && id <= hi);
        assert!(ArchiveId::highest(len - 1) < lo);
        assert!(ArchiveId::lowest(2 * len) > hi);
        assert_eq!(b.start_ms(-3), 0);
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        // FNV-1a test vectors: stored shard numbers must never change.
        assert_eq!(fnv1a(""), 0x811c_9dc5);
        assert_eq!(fnv1a("a"), 0xe40c_292c);
        assert_eq!(fnv1a("foobar"), 0xbf9c_f968);
        for s in ["alice@example.com", "bob@example.com", "", "日本"] {
            assert!((0..SHARDS).contains(&shard_of(s)));
        }
    }
}
