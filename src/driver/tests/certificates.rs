//! Certificates issued without a lease: revoked at the end of their mount, a replaced one once
//! its successor is in place, and a failed revocation retried, also after a restart.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{certify, fixture, opts, Expiration, ID};
use crate::driver::IdentitySlot;
use crate::identity::Identity;
use crate::lease::{Job, Worker};
use crate::state::Store;
use crate::tmpfs::FakeMounter;
use crate::vault::Token;

const WEB: [(&str, &str); 2] = [("path", "pki/issue/web"), ("param.common_name", "web")];

#[tokio::test]
async fn a_certificate_is_revoked_at_unmount_before_its_token_and_a_failure_is_retried() {
    let f = fixture();
    certify(&f, "pki/issue/web", Expiration::In(3600));
    f.driver.create("web", opts(&WEB)).await.unwrap();
    f.driver.mount("web", ID).await.unwrap();
    let record = &f.store.load_mounts()[0];
    assert_eq!(record.certificates.len(), 1, "recorded for a restart");
    assert_eq!(record.certificates[0].revoke_path, "pki/revoke");
    f.driver.unmount("web", ID).await.unwrap();
    assert_eq!(*f.vault.certificates_revoked.lock().unwrap(), ["00"]);

    // Vault out of reach at the end of the next mount: kept, retried after a restart.
    f.driver.mount("web", ID).await.unwrap();
    f.vault.unreachable_revoke.store(true, Ordering::SeqCst);
    f.driver.unmount("web", ID).await.unwrap();
    assert_eq!(f.store.load_certificates().len(), 1);
    assert_eq!(f.driver.pending_revocations(), 2, "the certificate and the token");
    let identity = Arc::new(IdentitySlot::new(Ok(Arc::new(Identity::fixed(Token::new(
        "plugin-token".into(),
    ))))));
    let restarted = f.restarted(FakeMounter::default(), identity);
    f.vault.unreachable_revoke.store(false, Ordering::SeqCst);
    restarted.restore().await;
    assert_eq!(*f.vault.certificates_revoked.lock().unwrap(), ["00", "01"]);
    assert!(f.store.load_certificates().is_empty());
    assert_eq!(restarted.pending_revocations(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_replaced_certificate_is_revoked_once_its_successor_is_in_place_unless_turned_off() {
    let f = fixture();
    certify(&f, "pki/issue/web", Expiration::In(60));
    f.driver.create("web", opts(&WEB)).await.unwrap();
    let mut kept = WEB.to_vec();
    kept.push(("revoke-replaced", "false"));
    f.driver.create("kept", opts(&kept)).await.unwrap();
    f.driver.mount("web", ID).await.unwrap();
    f.driver.mount("kept", ID).await.unwrap();
    tokio::time::advance(Duration::from_secs(45)).await;
    f.driver.tick(&Job::mount("web", ID)).await.unwrap();
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), 3, "web's certificate replaced");
    assert_eq!(*f.vault.certificates_revoked.lock().unwrap(), ["00"], "once replaced");
    f.driver.tick(&Job::mount("kept", ID)).await.unwrap();
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), 4, "kept's replaced too");
    assert_eq!(*f.vault.certificates_revoked.lock().unwrap(), ["00"], "revoke-replaced=false");
    f.driver.unmount("kept", ID).await.unwrap();
    assert_eq!(*f.vault.certificates_revoked.lock().unwrap(), ["00", "03"], "the last at stop");
    let e = f.driver.create("bad", opts(&[("path", "kv/app"), ("revoke-replaced", "no")])).await;
    let e = crate::report::chain(&e.unwrap_err());
    assert!(e.contains("option `revoke-replaced`") && e.contains("true or false"), "{e}");
}

#[tokio::test]
async fn a_no_store_role_s_certificate_is_said_to_stay_valid_and_not_revoked() {
    let f = fixture();
    certify(&f, "nostore/issue/web", Expiration::In(3600));
    f.vault.not_stored.lock().unwrap().push("nostore".into());
    f.driver
        .create("web", opts(&[("path", "nostore/issue/web"), ("param.cn", "w")]))
        .await
        .unwrap();
    f.driver.mount("web", ID).await.unwrap();
    let status = f.driver.status().await;
    let certificates = &status[0].mounts[0].certificates;
    assert_eq!(certificates.len(), 1);
    assert!(certificates[0].at_stop.text().contains("no_store"), "{certificates:?}");
    f.driver.unmount("web", ID).await.unwrap();
    assert!(f.vault.certificates_revoked.lock().unwrap().is_empty());
    assert!(f.store.load_certificates().is_empty(), "nothing to retry");
}
