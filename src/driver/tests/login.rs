//! The plugin's own login and its token's renewals, as the lease manager's job.

use super::*;
use crate::config::AuthConfig;

/// A login that fails (no token file yet) is retried with backoff, Mount meanwhile says why;
/// once in, the token's renewal is the lease manager's job, due at two thirds of its TTL, and
/// each renewal schedules the next.
#[tokio::test(start_paused = true)]
async fn the_plugin_logs_in_with_backoff_then_its_token_is_renewed_as_a_lease_manager_job() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let auth = AuthConfig::Token { token_file: token_file.clone() };
    let driver = Arc::new(
        f.restarted(FakeMounter::default(), Arc::new(IdentitySlot::new(Err("logging in".into())))),
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(driver.clone().log_in(auth, rx));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let why = driver.identity.token().unwrap_err();
    assert!(why.contains("token"), "{why}");
    assert_eq!(driver.leases.deadline(&Job::Plugin), None, "nothing to renew yet");

    std::fs::write(&token_file, "plugin-token\n").unwrap();
    // Backoff: 1 s, then 2 s at most (shortened by jitter), then 4 s at most: within 8 s.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(task.is_finished(), "logged in within the backoff");
    assert_eq!(driver.identity.token().unwrap().expose(), "plugin-token");
    let at = driver.leases.deadline(&Job::Plugin).expect("the renewal is scheduled");
    let in_secs = (at - Instant::now()).as_secs();
    assert!((2390..=2400).contains(&in_secs), "two thirds of the TTL (3600 s): {in_secs}");

    let next = driver.tick(&Job::Plugin).await.expect("renewed: the next one is due");
    assert_eq!(next - Instant::now(), Duration::from_secs(2400));
    drop(tx); // the login task has ended: nothing listens
}

/// A token without expiry (a root token, or `Identity::fixed`) is never scheduled.
#[tokio::test]
async fn a_token_without_expiry_has_no_renewal_job() {
    let f = fixture();
    assert_eq!(f.driver.tick(&Job::Plugin).await, None);
}
