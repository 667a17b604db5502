//! `relais-loadtest archive`: a benchmark of the message archive store (XEP-0313) itself,
//! without the network: the embedded SQLite backend Relais runs on, opened on a file with its
//! production settings (WAL, `synchronous=FULL`: every append is a durable commit).
//!
//! It appends N messages across U archives, one user holding most of them (as a heavy user
//! of a real deployment), from W concurrent writers (like W sessions archiving at once), and
//! reports the append rate. Then it times pages of P messages of the heavy user's archive, as
//! the session service asks for them (with the total count): the first page, a page from the
//! middle (after an id there), and the last page (an empty `<before/>`), plus a last page
//! filtered on one contact.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use storage::{ArchiveFilter, ArchivePage, Direction, NewArchived, Storage};
use xmpp::BareJid;

use crate::{Error, Result};

#[derive(Args, Debug, Clone)]
pub struct ArchiveBench {
    /// Messages to write in all
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Archives (users) to spread them over
    #[arg(long, default_value_t = 100)]
    pub users: u32,
    /// Share of the messages in the first user's archive
    #[arg(long, default_value_t = 0.9)]
    pub heavy_share: f64,
    /// Concurrent writers (sessions archiving at the same time)
    #[arg(long, default_value_t = 32)]
    pub writers: u32,
    /// Contacts the heavy user talks with
    #[arg(long, default_value_t = 20)]
    pub contacts: u32,
    /// Messages per page
    #[arg(long, default_value_t = 50)]
    pub page: usize,
    /// Timed queries per page position
    #[arg(long, default_value_t = 500)]
    pub samples: u32,
    /// Database file (default: a new one in a temporary directory, removed afterwards)
    #[arg(long)]
    pub db: Option<PathBuf>,
}

/// Latency percentiles of one kind of query, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArchiveReport {
    pub messages: u64,
    pub users: u32,
    pub writers: u32,
    pub heavy_user_messages: u64,
    pub write_secs: f64,
    pub writes_per_sec: f64,
    /// Append latency (each a durable commit), microseconds.
    pub append: Latency,
    pub page_size: usize,
    pub page_start: Latency,
    pub page_middle: Latency,
    pub page_end: Latency,
    pub page_end_with_contact: Latency,
    pub db_bytes: u64,
}

fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| Error::Config(format!("cannot create a histogram: {e}")))
}

fn latency(h: &Histogram<u64>) -> Latency {
    Latency {
        samples: h.len(),
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn jid(s: &str) -> Result<BareJid> {
    s.parse()
        .map_err(|e| Error::Config(format!("invalid jid {s}: {e}")))
}

fn storage_err(e: storage::StorageError) -> Error {
    Error::Config(format!("storage: {e}"))
}

impl ArchiveBench {
    pub fn validate(&self) -> Result<()> {
        if self.users == 0 || self.writers == 0 || self.page == 0 || self.samples == 0 {
            return Err(Error::Config(
                "--users, --writers, --page and --samples must be positive".into(),
            ));
        }
        if !(self.heavy_share > 0.0 && self.heavy_share <= 1.0) {
            return Err(Error::Config("--heavy-share must be in (0, 1]".into()));
        }
        if self.messages < u64::from(self.writers) {
            return Err(Error::Config(
                "--messages must be at least --writers".into(),
            ));
        }
        Ok(())
    }
}

/// The owner of message `n`: the heavy user (index 0) for a `heavy_share` of them, the others
/// in turn for the rest.
fn owner_of(n: u64, heavy_every: u64, users: u32) -> u32 {
    if users == 1 || !n.is_multiple_of(heavy_every) {
        0
    } else {
        1 + u32::try_from((n / heavy_every) % u64::from(users - 1)).unwrap_or(0)
    }
}

pub async fn run(args: &ArchiveBench, progress: bool) -> Result<ArchiveReport> {
    args.validate()?;
    let tmp;
    let path: PathBuf = match &args.db {
        Some(p) => p.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("archive-bench.db")
        }
    };
    let store = storage::sqlite::open(&path).map_err(storage_err)?;
    let owners: Vec<BareJid> = (0..args.users)
        .map(|u| jid(&format!("user{}@bench.example", u + 1)))
        .collect::<Result<_>>()?;
    let contacts: Vec<BareJid> = (0..args.contacts.max(1))
        .map(|c| jid(&format!("contact{}@peer.example", c + 1)))
        .collect::<Result<_>>()?;
    let owners = Arc::new(owners);
    let contacts = Arc::new(contacts);
    // Message n goes to a light user when n is a multiple of heavy_every.
    let light_share = 1.0 - args.heavy_share;
    let heavy_every = if light_share <= 0.0 {
        u64::MAX
    } else {
        ((1.0 / light_share).round() as u64).max(2)
    };

    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let store = store.clone();
        let owners = Arc::clone(&owners);
        let contacts = Arc::clone(&contacts);
        let (writers, total, users) = (u64::from(args.writers), args.messages, args.users);
        tasks.push(tokio::spawn(async move {
            write_share(
                &store,
                &owners,
                &contacts,
                (u64::from(w), writers, total, users, heavy_every),
                progress && w == 0,
            )
            .await
        }));
    }
    let mut append = histogram()?;
    let mut heavy = 0u64;
    for t in tasks {
        let (h, n) = t
            .await
            .map_err(|e| Error::Config(format!("writer failed: {e}")))??;
        append
            .add(&h)
            .map_err(|e| Error::Config(format!("histogram: {e}")))?;
        heavy += n;
    }
    let write_secs = started.elapsed().as_secs_f64();
    if progress {
        eprintln!(
            "archive: wrote {} messages in {write_secs:.1}s",
            args.messages
        );
    }

    let heavy_user = owners
        .first()
        .ok_or_else(|| Error::Config("no users".into()))?
        .clone();
    let middle_id = middle_id(&store, &heavy_user, heavy).await?;
    let pages = [
        ArchivePage {
            max: args.page,
            ..ArchivePage::default()
        },
        ArchivePage {
            max: args.page,
            after: Some(middle_id),
            ..ArchivePage::default()
        },
        ArchivePage {
            max: args.page,
            from_end: true,
            ..ArchivePage::default()
        },
    ];
    let mut results = Vec::new();
    for p in &pages {
        results.push(
            time_pages(
                &store,
                &heavy_user,
                &ArchiveFilter::default(),
                p,
                args.samples,
            )
            .await?,
        );
    }
    // A contact the heavy user talked with last.
    let last = store
        .archive
        .query(&heavy_user, &ArchiveFilter::default(), &pages[2])
        .await
        .map_err(storage_err)?;
    let with = ArchiveFilter {
        with: last.items.last().map(|m| m.with.clone()),
        ..ArchiveFilter::default()
    };
    let with_end = time_pages(&store, &heavy_user, &with, &pages[2], args.samples).await?;
    let db_bytes = file_bytes(&path);
    drop(store);
    let [start, middle, end]: [Latency; 3] = results
        .try_into()
        .map_err(|_| Error::Config("missing page results".into()))?;
    Ok(ArchiveReport {
        messages: args.messages,
        users: args.users,
        writers: args.writers,
        heavy_user_messages: heavy,
        write_secs,
        writes_per_sec: args.messages as f64 / write_secs.max(1e-9),
        append: latency(&append),
        page_size: args.page,
        page_start: start,
        page_middle: middle,
        page_end: end,
        page_end_with_contact: with_end,
        db_bytes,
    })
}

/// Writer `w` of `writers` appends messages w, w + writers, ... Returns its append latency
/// histogram and how many went to the heavy user.
async fn write_share(
    store: &Storage,
    owners: &[BareJid],
    contacts: &[BareJid],
    (w, writers, total, users, heavy_every): (u64, u64, u64, u32, u64),
    progress: bool,
) -> Result<(Histogram<u64>, u64)> {
    let mut h = histogram()?;
    let mut heavy = 0;
    let mut last_report = Instant::now();
    let mut n = w;
    while n < total {
        let u = owner_of(n, heavy_every, users);
        let owner = owners
            .get(usize::try_from(u).unwrap_or(0))
            .ok_or_else(|| Error::Config("owner index out of range".into()))?;
        let c = usize::try_from(n % contacts.len() as u64).unwrap_or(0);
        let with = contacts
            .get(c)
            .ok_or_else(|| Error::Config("contact index out of range".into()))?;
        let xml = format!(
            "<message xmlns='jabber:client' from='{with}/phone' to='{owner}' type='chat' \
             id='m{n}'><body>Message number {n} of the archive benchmark, about as long as \
             a short chat line.</body><origin-id xmlns='urn:xmpp:sid:0' id='o{n}'/></message>"
        );
        let stamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
            .unwrap_or(0);
        let msg = NewArchived {
            with,
            stamp_ms,
            direction: if n % 2 == 0 {
                Direction::Incoming
            } else {
                Direction::Outgoing
            },
            xml: &xml,
        };
        let t = Instant::now();
        store
            .archive
            .append(owner, &msg)
            .await
            .map_err(storage_err)?;
        h.record(micros(t.elapsed()))
            .map_err(|e| Error::Config(format!("histogram: {e}")))?;
        if u == 0 {
            heavy += 1;
        }
        if progress && last_report.elapsed() >= Duration::from_secs(10) {
            eprintln!("archive: ~{} of {total} written", n);
            last_report = Instant::now();
        }
        n += writers;
    }
    Ok((h, heavy))
}

/// The id of the heavy user's message at position `heavy / 2`, found by paging (untimed).
async fn middle_id(store: &Storage, owner: &BareJid, heavy: u64) -> Result<String> {
    let target = heavy / 2;
    // Walk to the middle in large pages: this also warms the cache as a long-lived server's
    // would be.
    let mut seen = 0u64;
    let mut after: Option<String> = None;
    loop {
        let page = ArchivePage {
            max: 10_000,
            after: after.clone(),
            ..ArchivePage::default()
        };
        let r = store
            .archive
            .query(owner, &ArchiveFilter::default(), &page)
            .await
            .map_err(storage_err)?;
        let len = r.items.len() as u64;
        if seen + len > target {
            let i = usize::try_from(target - seen).unwrap_or(0);
            return r
                .items
                .get(i)
                .map(|m| m.id.clone())
                .ok_or_else(|| Error::Config("middle message not found".into()));
        }
        seen += len;
        match r.items.last() {
            Some(m) if !r.complete => after = Some(m.id.clone()),
            _ => return Err(Error::Config("the heavy archive is too short".into())),
        }
    }
}

async fn time_pages(
    store: &Storage,
    owner: &BareJid,
    filter: &ArchiveFilter,
    page: &ArchivePage,
    samples: u32,
) -> Result<Latency> {
    let mut h = histogram()?;
    for _ in 0..samples {
        let t = Instant::now();
        let r = store
            .archive
            .query(owner, filter, page)
            .await
            .map_err(storage_err)?;
        h.record(micros(t.elapsed()))
            .map_err(|e| Error::Config(format!("histogram: {e}")))?;
        if r.items.len() != page.max {
            return Err(Error::Config(format!(
                "a page returned {} messages instead of {}",
                r.items.len(),
                page.max
            )));
        }
    }
    Ok(latency(&h))
}

fn file_bytes(path: &Path) -> u64 {
    let wal = path.with_extension("db-wal");
    [path.to_path_buf(), wal]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn owners_follow_the_heavy_share() {
        let every = 10;
        let owners: Vec<u32> = (0..1000).map(|n| owner_of(n, every, 5)).collect();
        let heavy = owners.iter().filter(|&&o| o == 0).count();
        assert_eq!(heavy, 900);
        for u in 1..5 {
            assert_eq!(owners.iter().filter(|&&o| o == u).count(), 25);
        }
        assert!(owners.iter().all(|&o| o < 5));
        assert!((0..100).all(|n| owner_of(n, u64::MAX, 3) == 0 || n == 0));
        assert!((0..100).all(|n| owner_of(n, 2, 1) == 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_run_reports_every_figure() {
        let args = ArchiveBench {
            messages: 600,
            users: 4,
            heavy_share: 0.75,
            writers: 3,
            contacts: 5,
            page: 10,
            samples: 5,
            db: None,
        };
        let r = run(&args, false).await.unwrap();
        assert_eq!(r.messages, 600);
        assert_eq!(r.heavy_user_messages, 450);
        assert_eq!(r.append.samples, 600);
        for l in [
            &r.page_start,
            &r.page_middle,
            &r.page_end,
            &r.page_end_with_contact,
        ] {
            assert_eq!(l.samples, 5);
            assert!(l.p50_us <= l.p99_us && l.p99_us <= l.max_us);
        }
        assert!(r.writes_per_sec > 0.0);
        assert!(r.db_bytes > 0);
    }

    #[test]
    fn bad_arguments_are_refused() {
        let good = ArchiveBench {
            messages: 10,
            users: 2,
            heavy_share: 0.5,
            writers: 2,
            contacts: 1,
            page: 5,
            samples: 1,
            db: None,
        };
        assert!(good.validate().is_ok());
        for bad in [
            ArchiveBench {
                users: 0,
                ..good.clone()
            },
            ArchiveBench {
                heavy_share: 1.5,
                ..good.clone()
            },
            ArchiveBench {
                messages: 1,
                ..good.clone()
            },
        ] {
            assert!(matches!(bad.validate(), Err(Error::Config(_))));
        }
    }
}
