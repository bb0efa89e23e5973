//! A mount whose record cannot be saved: it fails and is undone, nothing runs unrecorded.

use std::sync::atomic::Ordering;

use super::{fixture, opts, ID};
use crate::state::Store;

#[tokio::test]
async fn a_mount_that_cannot_be_recorded_fails_and_is_undone() {
    let f = fixture();
    f.driver.create("app", opts(&[("path", "kv/app")])).await.unwrap();
    f.store.full.store(true, Ordering::SeqCst);
    let e = f.driver.mount("app", ID).await.unwrap_err();
    let chain = crate::report::chain(&e);
    assert!(chain.contains("cannot record the mount of volume app, so it does not run"), "{chain}");
    assert!(chain.contains("no room to record"), "{chain}");
    assert_eq!(*f.vault.revoked.lock().unwrap(), vec!["child-0"], "its token is revoked");
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), 0, "nothing was read with it");
    assert!(f.driver.mounter.mounted.lock().unwrap().is_empty(), "nothing is left mounted");
    assert!(f.store.load_mounts().is_empty());
    assert_eq!(f.driver.get("app").unwrap().mountpoint, None);

    // With room again, the same ID mounts and is recorded.
    f.store.full.store(false, Ordering::SeqCst);
    f.driver.mount("app", ID).await.unwrap();
    assert_eq!(f.store.load_mounts().len(), 1);
}
