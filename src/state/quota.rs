//! Room in the private tmpfs: what Docker users' records (mounts, swarm tasks, volumes' own
//! identities) may take, so that the plugin's own records — its identity, pending revocations
//! and certificates — always have room.
//!
//! Every Docker user's container makes a mount record, and the tmpfs is shared: without a
//! bound one user's mounts fill it, and then another's mount runs unrecorded (a restart loses
//! its token, never revoked) and the plugin cannot record its own identity or a revocation to
//! retry. So user records are counted here, each in whole tmpfs pages, and refused beyond
//! [`USER_RECORDS`]; the rest, [`RESERVED`], is the plugin's own. A mount whose record is
//! refused fails and is undone (`driver::mount`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::StateError;
use crate::metrics::METRICS;

/// The size of the private tmpfs (memory, taken only as records are written).
pub const CAPACITY: u64 = 64 * 1024 * 1024;
/// What only the plugin's own records may take: a quarter.
pub const RESERVED: u64 = CAPACITY / 4;
/// What Docker users' records (mounts, swarm tasks, volumes' identities) may take together.
pub const USER_RECORDS: u64 = CAPACITY - RESERVED;

/// What users' records may take of a private tmpfs of `capacity` bytes: three quarters.
pub fn user_records(capacity: u64) -> u64 {
    capacity - capacity / 4
}

/// The largest record: a mount's record is its token, leases and a digest per file, a few
/// hundred bytes for a real volume; 1 MiB is thousands of files. Beyond it one mount would
/// take a share of the store no container needs.
pub const MAX_RECORD: u64 = 1024 * 1024;
/// A tmpfs gives each file whole pages.
pub(super) const PAGE: u64 = 4096;
/// The share of the limit, in percent, at which a warning is logged (once, until it drops
/// below [`CALM`] percent again).
const WARN: u64 = 80;
const CALM: u64 = 70;

/// The pages a record of `len` bytes takes.
fn pages(len: u64) -> u64 {
    len.div_ceil(PAGE).max(1) * PAGE
}

/// What the users' records take, file by file.
#[derive(Debug)]
pub struct Quota {
    limit: u64,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    files: BTreeMap<PathBuf, u64>,
    total: u64,
    warned: bool,
}

impl Quota {
    /// A quota of `limit` bytes, charged with the records already in `dirs`.
    pub fn new(limit: u64, dirs: &[&Path]) -> Quota {
        let mut held = Held::default();
        for dir in dirs {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let len = entry.metadata().map(|m| pages(m.len())).unwrap_or(0);
                held.files.insert(entry.path(), len);
                held.total += len;
            }
        }
        METRICS.state_store.set(held.total, limit);
        Quota { limit, held: Mutex::new(held) }
    }

    /// Charges the record at `path` with `len` bytes (in place of what it took before), or
    /// refuses it when it is larger than [`MAX_RECORD`] or the users' records would take more
    /// than the limit. Returns what it took before, for [`Quota::restore`].
    pub fn charge(&self, path: &Path, len: u64) -> Result<u64, StateError> {
        if len > MAX_RECORD {
            return Err(StateError::TooLarge {
                path: path.to_owned(),
                size: len,
                limit: MAX_RECORD,
            });
        }
        let mut held = self.held.lock().unwrap();
        let before = held.files.get(path).copied().unwrap_or(0);
        let total = held.total - before + pages(len);
        if total > self.limit {
            tracing::error!(used = held.total, limit = self.limit, "the private tmpfs has no room for another Docker user's record: mounts (and creates with wrapped-token) are refused until containers stop or volumes are removed");
            return Err(StateError::Full {
                path: path.to_owned(),
                used: held.total,
                limit: self.limit,
            });
        }
        held.files.insert(path.to_owned(), pages(len));
        held.total = total;
        self.observe(&mut held);
        Ok(before)
    }

    /// Puts back what the record at `path` took before a write that failed.
    pub fn restore(&self, path: &Path, before: u64) {
        let mut held = self.held.lock().unwrap();
        let now = held.files.remove(path).unwrap_or(0);
        held.total = held.total - now + before;
        if before > 0 {
            held.files.insert(path.to_owned(), before);
        }
        self.observe(&mut held);
    }

    /// Forgets the record at `path` (removed).
    pub fn release(&self, path: &Path) {
        self.restore(path, 0);
    }

    /// What the users' records take.
    pub fn used(&self) -> u64 {
        self.held.lock().unwrap().total
    }

    fn observe(&self, held: &mut Held) {
        METRICS.state_store.set(held.total, self.limit);
        if !held.warned && held.total * 100 >= self.limit * WARN {
            held.warned = true;
            tracing::warn!(used = held.total, limit = self.limit, "the private tmpfs is filling: mount records take 80% of the room they may; a full store refuses mounts");
        } else if held.warned && held.total * 100 < self.limit * CALM {
            held.warned = false;
            tracing::info!(
                used = held.total,
                limit = self.limit,
                "the private tmpfs has room again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_counted_in_pages_and_refused_beyond_the_limit() {
        let quota = Quota::new(5 * PAGE, &[]);
        let (a, b) = (Path::new("/p/a"), Path::new("/p/b"));
        assert_eq!(quota.charge(a, 10).unwrap(), 0);
        assert_eq!(quota.used(), PAGE);
        assert_eq!(quota.charge(a, PAGE + 1).unwrap(), PAGE, "a rewrite replaces its charge");
        assert_eq!(quota.used(), 2 * PAGE);
        quota.charge(b, 3 * PAGE).unwrap();
        let e = quota.charge(Path::new("/p/c"), 1).unwrap_err();
        assert!(e.to_string().contains("20480 of the 20480 bytes"), "{e}");
        quota.restore(b, 0);
        assert_eq!(quota.used(), 2 * PAGE);
        quota.charge(Path::new("/p/c"), 1).unwrap();
        quota.release(a);
        quota.release(a);
        assert_eq!(quota.used(), PAGE);
    }

    #[test]
    fn a_record_over_the_largest_is_refused_naming_the_limit() {
        let quota = Quota::new(USER_RECORDS, &[]);
        let e = quota.charge(Path::new("/p/a"), MAX_RECORD + 1).unwrap_err();
        assert!(e.to_string().contains("at most 1048576"), "{e}");
        assert_eq!(quota.used(), 0);
    }
}
