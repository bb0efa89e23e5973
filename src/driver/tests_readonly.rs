//! Driver unit tests of the read-only view (`upkeep::write_sealed`): the tmpfs read-only once
//! filled; a change written only inside a window — every view sealed, then the superblock
//! writable, the write, read-only again; a view that cannot be sealed keeps the old files.

use std::sync::atomic::Ordering;

use std::time::Duration;

use serde_json::json;

use super::tests::{fixture, key, opts, read, ID};
use crate::lease::Worker;
use crate::metrics::METRICS;

#[tokio::test(start_paused = true)]
async fn a_change_is_written_between_sealing_every_view_and_read_only_again() {
    let f = fixture();
    f.driver.create("db", opts(&[("path", "kv/app"), ("refresh", "10s")])).await.unwrap();
    let path = f.driver.mount("db", ID).await.unwrap();
    let files = f.driver.files_dir("db", ID);
    let at = files.display().to_string();
    let journal = || f.driver.mounter.journal.lock().unwrap().clone();
    assert_eq!(
        journal(),
        vec![format!("ro {at}"), format!("rw {at}"), format!("ro {at} password=pw user=u")],
        "bound while read-only, then filled, read-only once filled"
    );
    f.driver.mounter.journal.lock().unwrap().clear();

    // Unchanged: no window (only the superblock made read-only again).
    tokio::time::advance(Duration::from_secs(10)).await;
    let next = f.driver.tick(&key(ID)).await.unwrap();
    assert!(journal().iter().all(|l| !l.starts_with("rw")), "{:?}", journal());

    f.vault.secrets.lock().unwrap().insert("kv/app".into(), json!({"password": "new"}));
    tokio::time::sleep_until(next).await;
    f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(read(&path, "password"), "new");
    let journal = journal();
    let rw = journal.iter().position(|l| l.starts_with("rw")).expect("a window");
    assert_eq!(
        journal[rw - 1..].to_vec(),
        vec![
            format!("seal {at}"),
            format!("rw {at} password=pw user=u"),
            format!("ro {at} password=new")
        ],
        "sealed, then writable with the old files, then read-only with the new"
    );
}

#[tokio::test(start_paused = true)]
async fn a_view_that_cannot_be_sealed_keeps_the_old_files_and_opens_no_window() {
    let f = fixture();
    f.driver.create("db", opts(&[("path", "kv/app"), ("refresh", "10s")])).await.unwrap();
    let path = f.driver.mount("db", ID).await.unwrap();
    f.driver.mounter.journal.lock().unwrap().clear();
    f.driver.mounter.fail_seal.store(true, Ordering::SeqCst);
    let failures = METRICS.seal_failures.get();
    f.vault.secrets.lock().unwrap().insert("kv/app".into(), json!({"password": "new"}));
    tokio::time::advance(Duration::from_secs(10)).await;
    f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(read(&path, "password"), "pw", "the old files stay");
    let journal = f.driver.mounter.journal.lock().unwrap().clone();
    assert!(journal.iter().all(|l| !l.starts_with("rw")), "never writable: {journal:?}");
    assert!(METRICS.seal_failures.get() > failures, "counted");
    let status = f.driver.status().await;
    let error = status[0].mounts[0].last_error.clone().unwrap();
    assert!(error.contains("read-only") && error.contains("fake seal failure"), "{error}");

    f.driver.mounter.fail_seal.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(60)).await;
    f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(read(&path, "password"), "new", "written once every view is sealed");
    assert_eq!(f.driver.status().await[0].mounts[0].last_error, None);
}

#[tokio::test(start_paused = true)]
async fn a_replaced_file_held_open_does_not_fail_the_write_that_replaced_it() {
    let f = fixture();
    f.driver.create("db", opts(&[("path", "kv/app"), ("refresh", "10s")])).await.unwrap();
    let path = f.driver.mount("db", ID).await.unwrap();
    let at = f.driver.files_dir("db", ID).display().to_string();
    // The kernel refuses the read-only remount after the rename (the old inode still open).
    f.driver.mounter.busy.store(true, Ordering::SeqCst);
    f.vault.secrets.lock().unwrap().insert("kv/app".into(), json!({"password": "new"}));
    tokio::time::advance(Duration::from_secs(10)).await;
    let next = f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(read(&path, "password"), "new");
    assert_eq!(f.driver.status().await[0].mounts[0].last_error, None, "written: no error");

    // Closed: the next refresh makes it read-only again, nothing else changed.
    f.driver.mounter.busy.store(false, Ordering::SeqCst);
    f.driver.mounter.journal.lock().unwrap().clear();
    tokio::time::sleep_until(next).await;
    f.driver.tick(&key(ID)).await.unwrap();
    let journal = f.driver.mounter.journal.lock().unwrap().clone();
    assert_eq!(journal.first(), Some(&format!("ro {at} password=new")), "{journal:?}");
}

/// A tmpfs left writable by a write (a replaced file still open) is not left so until the next
/// refresh: every 5 s the upkeep tries to make it read-only again and, while the kernel still
/// refuses, seals every view of it (one a container made since, on a shared Podman mount, too).
#[tokio::test(start_paused = true)]
async fn a_tmpfs_left_writable_is_sealed_again_within_seconds_not_at_the_next_refresh() {
    let f = fixture();
    f.driver.create("db", opts(&[("path", "kv/app"), ("refresh", "5m")])).await.unwrap();
    let path = f.driver.mount("db", ID).await.unwrap();
    let at = f.driver.files_dir("db", ID).display().to_string();
    f.driver.mounter.busy.store(true, Ordering::SeqCst);
    f.vault.secrets.lock().unwrap().insert("kv/app".into(), json!({"password": "new"}));
    tokio::time::advance(Duration::from_secs(300)).await;
    let reads = f.vault.reads.load(Ordering::SeqCst);
    let next = f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(read(&path, "password"), "new");
    assert_eq!(next - tokio::time::Instant::now(), Duration::from_secs(5), "tried again in 5 s");

    // Still held open: the views are sealed again (a new one too), and it is tried again.
    f.driver.mounter.journal.lock().unwrap().clear();
    tokio::time::sleep_until(next).await;
    let next = f.driver.tick(&key(ID)).await.unwrap();
    let journal = f.driver.mounter.journal.lock().unwrap().clone();
    assert_eq!(journal, vec![format!("seal {at}")], "{journal:?}");
    assert_eq!(next - tokio::time::Instant::now(), Duration::from_secs(5));
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), reads + 1, "nothing else was done");
    assert_eq!(f.driver.status().await[0].mounts[0].last_error, None);

    // Closed: read-only again; the next tick is the refresh's.
    f.driver.mounter.busy.store(false, Ordering::SeqCst);
    f.driver.mounter.journal.lock().unwrap().clear();
    tokio::time::sleep_until(next).await;
    let next = f.driver.tick(&key(ID)).await.unwrap();
    let journal = f.driver.mounter.journal.lock().unwrap().clone();
    assert_eq!(journal, vec![format!("ro {at} password=new")], "{journal:?}");
    assert!(next - tokio::time::Instant::now() > Duration::from_secs(280), "the refresh's");
}

/// A reseal's tick does nothing else before a failing mount's backoff is over: it must not
/// make a mount retry Vault every 5 s through an outage.
#[tokio::test(start_paused = true)]
async fn a_reseal_tick_keeps_a_failing_mounts_backoff() {
    let f = fixture();
    f.driver.create("db", opts(&[("path", "kv/app"), ("refresh", "10s")])).await.unwrap();
    f.driver.mount("db", ID).await.unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    let now = tokio::time::Instant::now();
    {
        let slot = f.driver.volume("db").unwrap().slot(ID).unwrap();
        let mut guard = slot.lock().await;
        let active = guard.as_mut().unwrap();
        // The refresh is due, but failed a moment ago: retried in 20 s; a reseal is due now.
        active.timers.retry_at = Some(now + Duration::from_secs(20));
        active.timers.failing_since = Some(now);
        active.reseal_at = Some(now);
    }
    let reads = f.vault.reads.load(Ordering::SeqCst);
    let next = f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), reads, "Vault not asked before the retry");
    assert_eq!(next, now + Duration::from_secs(20), "the retry's time");
    tokio::time::sleep_until(next).await;
    f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), reads + 1, "refreshed at the retry");
}

/// A mount carried over a restart is made read-only at its first tick: the last run may have
/// left it writable.
#[tokio::test(start_paused = true)]
async fn a_restored_mount_is_made_read_only_at_its_first_tick() {
    let f = fixture();
    f.driver.create("db", opts(&[("path", "kv/app"), ("refresh", "10m")])).await.unwrap();
    let live = f.driver.mount("db", ID).await.unwrap();
    let files = f.driver.files_dir("db", ID);
    let mounter = crate::tmpfs::FakeMounter::default();
    let options = f.driver.mounter.mounted.lock().unwrap()[0].1.clone();
    mounter.mounted.lock().unwrap().push((files.clone(), options));
    mounter.binds.lock().unwrap().push((live, files.clone()));
    let again = f.restarted(mounter, f.driver.identity.clone());
    again.restore().await;
    let next = again.tick(&key(ID)).await.unwrap();
    let journal = again.mounter.journal.lock().unwrap().clone();
    assert!(
        journal.iter().any(|l| l.starts_with(&format!("ro {}", files.display()))),
        "{journal:?}"
    );
    assert!(next - tokio::time::Instant::now() > Duration::from_secs(60), "then the refresh's");
}
