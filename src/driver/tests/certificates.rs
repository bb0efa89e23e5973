//! Certificates issued without a lease: replaced at two thirds of their validity, deadlines
//! that survive a restart and hostile ones; revoked at the end of their mount, a replaced one
//! once its successor is in place, and a failed revocation retried, also after a restart.

use super::*;
use crate::state::Store;
use crate::vault::fake::Expiration;

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

fn certify(f: &Fixture, path: &str, expiration: Expiration) {
    f.vault.secrets.lock().unwrap().insert(path.into(), json!({"private_key": "key"}));
    f.vault.certified.lock().unwrap().insert(path.into(), expiration);
}

#[tokio::test(start_paused = true)]
async fn a_certificate_without_a_lease_is_replaced_at_two_thirds_of_its_validity_not_at_refresh() {
    let f = fixture();
    certify(&f, "pki/issue/web", Expiration::In(60));
    let options = [("path", "pki/issue/web"), ("param.common_name", "web"), ("refresh", "10s")];
    f.driver.create("db", opts(&options)).await.unwrap();
    let start = Instant::now();
    let path = f.driver.mount("db", ID).await.unwrap();
    assert_eq!(read(&path, "certificate"), "cert-0");
    let status = f.driver.status().await;
    let expiring = &status[0].mounts[0].expiring[0];
    assert_eq!(
        (expiring.source.as_str(), expiring.state),
        ("pki/issue/web", plan::Action::Replace)
    );
    assert!(expiring.expires_in_secs.is_some_and(|s| (59..=60).contains(&s)), "{expiring:?}");
    let record = &f.store.load_mounts()[0];
    assert_eq!(record.expiring.len(), 1, "the deadline is recorded for a restart");
    assert!(record.expiring[0].replace_at.is_some_and(|at| at < record.expiring[0].expires_at));
    // `refresh` comes round: nothing is issued again.
    tokio::time::advance(Duration::from_secs(11)).await;
    let next = f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), 1, "not re-issued on refresh");
    let at = next - start;
    assert!(at > Duration::from_secs(33) && at <= Duration::from_secs(40), "{at:?}");
    // At about two thirds of its validity: a fresh generation with a new certificate.
    tokio::time::sleep_until(next).await;
    let next = f.driver.tick(&key(ID)).await.unwrap();
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), 2);
    assert_eq!(f.vault.created(), 2, "a new token for the new generation");
    assert_eq!(read(&path, "certificate"), "cert-1");
    assert!(next - Instant::now() > Duration::from_secs(4), "the old token's grace comes first");
    assert_eq!(f.driver.status().await[0].mounts[0].expiring.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn hostile_expirations_neither_panic_nor_spin() {
    let f = fixture();
    let hostile =
        [json!(-5), json!(0), json!(-1e300), json!(1e300), json!(u64::MAX), json!("soon")];
    for (i, value) in hostile.iter().enumerate() {
        let path = format!("pki/issue/h{i}");
        certify(&f, &path, Expiration::Raw(value.clone()));
        let name = format!("h{i}");
        let options = [("path", path.as_str()), ("param.common_name", "x"), ("refresh", "1s")];
        f.driver.create(&name, opts(&options)).await.unwrap();
        f.driver.mount(&name, ID).await.unwrap();
    }
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), hostile.len());
    tokio::time::advance(Duration::from_secs(5)).await;
    for (i, value) in hostile.iter().enumerate() {
        let next = f.driver.tick(&Job::mount(&format!("h{i}"), ID)).await.unwrap();
        assert!(next > Instant::now() + Duration::from_secs(60), "{value}: {next:?}");
    }
    assert_eq!(f.vault.reads.load(Ordering::SeqCst), hostile.len(), "none is read again");
    for volume in f.driver.status().await {
        let expiring = &volume.mounts[0].expiring;
        let far = |e: &ExpiryStatus| {
            e.expires_in_secs.is_some_and(|s| s <= crate::vault::MAX_TTL.as_secs())
        };
        match volume.name.as_str() {
            "h3" | "h4" => assert!(expiring.len() == 1 && far(&expiring[0]), "{expiring:?}"),
            name => assert!(expiring.is_empty(), "{name}: a past or bad expiration is ignored"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_certificate_s_deadline_survives_a_restart() {
    let f = fixture();
    certify(&f, "pki/issue/web", Expiration::In(60));
    f.driver.create("db", opts(&[("path", "pki/issue/web"), ("param.cn", "w")])).await.unwrap();
    let path = f.driver.mount("db", ID).await.unwrap();
    let record = f.store.load_mounts().remove(0);
    let spec = f.driver.volume("db").unwrap().spec.clone();
    let active = restore::restored(&spec, &record);
    let (_, expiration, deadline) = active.expiring().next().expect("carried over");
    assert_eq!(expiration, record.expiring[0].expires_at);
    assert!(
        deadline.action == plan::Action::Replace && deadline.act_at < deadline.expires_at.unwrap()
    );
    let act = deadline.act_at - Instant::now();
    assert!(act >= Duration::from_secs(32) && act <= Duration::from_secs(41), "{act:?}");
    assert_eq!(read(&path, "certificate"), "cert-0");
}

/// A Mount that fails after its PKI source issued a certificate (a later source refused) revokes
/// the certificate: revoking the mount's token does not take it.
#[tokio::test]
async fn a_certificate_issued_by_a_mount_that_then_fails_is_revoked() {
    let f = fixture();
    certify(&f, "pki/issue/web", Expiration::In(3600));
    let mut pairs = WEB.to_vec();
    pairs.push(("path.other", "kv/denied"));
    f.driver.create("web", opts(&pairs)).await.unwrap();
    let e = crate::report::chain(&f.driver.mount("web", ID).await.unwrap_err());
    assert!(e.contains("permission denied on kv/denied"), "{e}");
    assert_eq!(*f.vault.certificates_revoked.lock().unwrap(), ["00"], "revoked with the failure");
    assert_eq!(f.vault.revoked.lock().unwrap().len(), 1, "and the token");
    assert!(f.store.load_mounts().is_empty() && f.store.load_certificates().is_empty());
}
