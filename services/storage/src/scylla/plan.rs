//! Query planning for the archive: which buckets to read, in which order, with which id
//! bounds. Pure functions, so the walk across buckets is tested without a server.
//!
//! A query is reduced to an inclusive id range (the filter's times and ids, then the page
//! cursor). The owner's bucket list (`archive_buckets`, or `archive_with_buckets` for a `with`
//! filter) is read for the buckets that range spans; each listed bucket is then one partition
//! read bounded by `owner = ? AND bucket = ? AND id >= ? AND id <= ?`, oldest bucket first
//! when paging forwards and newest first when paging backwards, until the page (plus one row,
//! to know whether it is the last) is full.

use super::ids::{ArchiveId, Bucketing};
use crate::ArchivePage;

/// An inclusive id range; empty when `lo > hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub lo: ArchiveId,
    pub hi: ArchiveId,
}

impl IdRange {
    pub const ALL: IdRange = IdRange {
        lo: ArchiveId::MIN,
        hi: ArchiveId::MAX,
    };

    /// The ids of the times `start..=end` (milliseconds, inclusive; each optional).
    pub fn of_times(start_ms: Option<u64>, end_ms: Option<u64>) -> IdRange {
        IdRange {
            lo: start_ms.map_or(ArchiveId::MIN, ArchiveId::lowest),
            hi: end_ms.map_or(ArchiveId::MAX, ArchiveId::highest),
        }
    }

    /// Keeps only ids strictly after `id`.
    pub fn after(&mut self, id: ArchiveId) {
        if id == ArchiveId::MAX {
            // Nothing is after the largest id.
            self.lo = ArchiveId::MAX;
            self.hi = ArchiveId::MIN;
        } else {
            self.lo = self.lo.max(id.succ());
        }
    }

    /// Keeps only ids strictly before `id`.
    pub fn before(&mut self, id: ArchiveId) {
        if id == ArchiveId::MIN {
            self.lo = ArchiveId::MAX;
            self.hi = ArchiveId::MIN;
        } else {
            self.hi = self.hi.min(id.pred());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lo > self.hi
    }

    pub fn contains(&self, id: ArchiveId) -> bool {
        self.lo <= id && id <= self.hi
    }

    /// The buckets this range can touch, inclusive (for the bucket-list read).
    pub fn bucket_bounds(&self, b: &Bucketing) -> (i32, i32) {
        (b.bucket_of_id(self.lo), b.bucket_of_id(self.hi))
    }
}

/// Whether a page is read newest first (XEP-0059 `before`, or the last page).
pub fn backwards(page: &ArchivePage) -> bool {
    page.before.is_some() || (page.after.is_none() && page.from_end)
}

/// One partition read of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketScan {
    pub bucket: i32,
    /// Inclusive bounds, already clamped to the bucket.
    pub lo: ArchiveId,
    pub hi: ArchiveId,
}

/// The partition reads covering `range`, given the owner's listed buckets (any order,
/// duplicates allowed), in reading order: ascending, or descending when `descending`.
/// Listed buckets outside the range are skipped.
pub fn plan_scans(
    range: IdRange,
    listed: &[i32],
    bucketing: &Bucketing,
    descending: bool,
) -> Vec<BucketScan> {
    if range.is_empty() {
        return Vec::new();
    }
    let mut buckets: Vec<i32> = listed.to_vec();
    buckets.sort_unstable();
    buckets.dedup();
    let mut scans: Vec<BucketScan> = buckets
        .into_iter()
        .filter_map(|bucket| {
            let (start, end) = bucketing.id_span(bucket);
            let lo = range.lo.max(start);
            let hi = range.hi.min(end);
            (lo <= hi).then_some(BucketScan { bucket, lo, hi })
        })
        .collect();
    if descending {
        scans.reverse();
    }
    scans
}

/// How many more rows to ask of the next partition: the page plus one (to learn whether the
/// page is the last) minus what was already read; `None` when the page is full.
pub fn next_limit(max: usize, read: usize) -> Option<i32> {
    let want = max.saturating_add(1).saturating_sub(read);
    if want == 0 {
        None
    } else {
        Some(i32::try_from(want).unwrap_or(i32::MAX))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    fn b30() -> Bucketing {
        Bucketing::new(30).unwrap()
    }

    fn buckets(scans: &[BucketScan]) -> Vec<i32> {
        scans.iter().map(|s| s.bucket).collect()
    }

    #[test]
    fn whole_archive_reads_every_listed_bucket_in_order() {
        let b = b30();
        let listed = [7, 3, 5, 3];
        let fwd = plan_scans(IdRange::ALL, &listed, &b, false);
        assert_eq!(buckets(&fwd), [3, 5, 7]);
        let back = plan_scans(IdRange::ALL, &listed, &b, true);
        assert_eq!(buckets(&back), [7, 5, 3]);
        // Each scan is bounded to its own bucket.
        for s in &fwd {
            assert_eq!((s.lo, s.hi), b.id_span(s.bucket));
        }
    }

    #[test]
    fn time_filter_skips_buckets_and_clamps_the_edges() {
        let b = b30();
        let start = 30 * DAY * 4 + 5; // inside bucket 4
        let end = 30 * DAY * 6 + 9; // inside bucket 6
        let range = IdRange::of_times(Some(start), Some(end));
        assert_eq!(range.bucket_bounds(&b), (4, 6));
        let scans = plan_scans(range, &[2, 4, 5, 6, 8], &b, false);
        assert_eq!(buckets(&scans), [4, 5, 6]);
        assert_eq!(scans[0].lo, ArchiveId::lowest(start));
        assert_eq!(scans[0].hi, b.id_span(4).1);
        assert_eq!((scans[1].lo, scans[1].hi), b.id_span(5));
        assert_eq!(scans[2].lo, b.id_span(6).0);
        assert_eq!(scans[2].hi, ArchiveId::highest(end));
    }

    #[test]
    fn cursors_name_their_bucket() {
        let b = b30();
        // Paging backwards before an id of bucket 5 reads 5 (up to the id) then older ones.
        let cursor = ArchiveId::new(30 * DAY * 5 + 1000, 2, 1);
        let mut range = IdRange::ALL;
        range.before(cursor);
        let scans = plan_scans(range, &[1, 5, 9], &b, true);
        assert_eq!(buckets(&scans), [5, 1]);
        assert_eq!(scans[0].hi, cursor.pred());
        // Forwards after the same id: 5 (from the id on) then newer.
        let mut range = IdRange::ALL;
        range.after(cursor);
        let scans = plan_scans(range, &[1, 5, 9], &b, false);
        assert_eq!(buckets(&scans), [5, 9]);
        assert_eq!(scans[0].lo, cursor.succ());
        // A cursor at the very end of a bucket skips that bucket entirely.
        let mut range = IdRange::ALL;
        range.after(b.id_span(5).1);
        assert_eq!(buckets(&plan_scans(range, &[1, 5, 9], &b, false)), [9]);
    }

    #[test]
    fn empty_and_inverted_ranges_read_nothing() {
        let b = b30();
        let inverted = IdRange::of_times(Some(6000), Some(3000));
        assert!(inverted.is_empty());
        assert!(plan_scans(inverted, &[0, 1], &b, false).is_empty());
        let mut r = IdRange::ALL;
        r.after(ArchiveId::MAX);
        assert!(r.is_empty());
        let mut r = IdRange::ALL;
        r.before(ArchiveId::MIN);
        assert!(r.is_empty());
        let mut between = IdRange::ALL;
        let id = ArchiveId::new(10, 0, 0);
        between.after(id);
        between.before(id.succ());
        assert!(between.is_empty());
        assert!(plan_scans(IdRange::ALL, &[], &b, true).is_empty());
    }

    #[test]
    fn far_future_times_stay_in_range() {
        let b = b30();
        let far = IdRange::of_times(Some(u64::MAX), Some(u64::MAX));
        assert!(!far.is_empty());
        let (lo, hi) = far.bucket_bounds(&b);
        assert_eq!(lo, hi);
        assert!(plan_scans(far, &[0, 656], &b, false).is_empty());
    }

    #[test]
    fn page_direction() {
        let page = |after: bool, before: bool, from_end: bool| ArchivePage {
            max: 10,
            after: after.then(|| "a".to_owned()),
            before: before.then(|| "b".to_owned()),
            from_end,
        };
        assert!(!backwards(&page(false, false, false)));
        assert!(backwards(&page(false, false, true)));
        assert!(backwards(&page(false, true, false)));
        assert!(!backwards(&page(true, false, true)));
    }

    #[test]
    fn limits_stop_at_the_page_plus_one() {
        assert_eq!(next_limit(4, 0), Some(5));
        assert_eq!(next_limit(4, 3), Some(2));
        assert_eq!(next_limit(4, 5), None);
        assert_eq!(next_limit(0, 0), Some(1));
        assert_eq!(next_limit(usize::MAX, 0), Some(i32::MAX));
    }
}
