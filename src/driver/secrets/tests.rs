//! Swarm secrets over fakes: label validation, a token per task, the task watcher ending
//! tokens, a repeated request, a restart.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::dockerd::{FakeEngine, SwarmTask};
use crate::driver::{Edges, Parts};
use crate::identity::{Identity, IdentitySlot};
use crate::state::MemoryStore;
use crate::tmpfs::FakeMounter;
use crate::vault::fake::FakeVault;
use crate::volume::{Defaults, Format};

struct Fakes;

impl Edges for Fakes {
    type Vault = FakeVault;
    type Mounter = FakeMounter;
    type Store = MemoryStore;
    type Engine = FakeEngine;
}

/// Vault as far as swarm secrets use it: the plugin's token, a KV secret, one too large, and
/// a database role giving a new user per read, with a lease; `database/creds/nope` is denied.
fn vault() -> FakeVault {
    let vault = FakeVault::default();
    vault.knows("plugin-token", Duration::from_secs(3600));
    for (path, data) in [
        ("secret/data/app", json!({"password": "pw", "user": "app"})),
        ("secret/data/big", json!({"blob": "x".repeat(MAX_VALUE + 1)})),
        ("database/creds/app", json!({"username": "v-user-{n}", "password": "pw-{n}"})),
        ("database/creds/nope", json!("denied")),
    ] {
        vault.secrets.lock().unwrap().insert(path.into(), data);
    }
    vault.leased.lock().unwrap().insert("database/creds/app".into(), 60);
    vault
}

struct Fixture {
    driver: Driver<Fakes>,
    vault: Arc<FakeVault>,
    store: Arc<MemoryStore>,
    engine: Arc<FakeEngine>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::over(Arc::new(vault()), Arc::default(), Arc::default())
    }

    /// A driver over these edges (the same ones again: as after a restart).
    fn over(vault: Arc<FakeVault>, store: Arc<MemoryStore>, engine: Arc<FakeEngine>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::fixed(Token::new("plugin-token".into()));
        let driver = Driver::new(Parts {
            vault: vault.clone(),
            mounter: FakeMounter::default(),
            store: store.clone(),
            engines: vec![engine.clone()],
            identity: Arc::new(IdentitySlot::new(Ok(Arc::new(identity)))),
            defaults: Defaults::default(),
            userns: None,
            mounts_root: dir.path().join("mounts"),
            files_root: dir.path().join("files"),
            driver_name: "vault-secrets".into(),
            templates_dir: "/nonexistent".into(),
            audit: Arc::new(crate::audit::Audit::memory()),
        });
        Fixture { driver, vault, store, engine, _dir: dir }
    }

    fn task(&self, id: &str, state: &str) {
        let mut tasks = self.engine.tasks.lock().unwrap();
        tasks.retain(|t| t.id != id);
        tasks.push(SwarmTask { id: id.into(), state: state.into() });
    }

    async fn get(&self, task: &str, labels: &[(&str, &str)]) -> Result<String, SecretError> {
        let request = SecretRequest {
            secret: "db_user".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            task: task.into(),
            service: "web".into(),
        };
        let value = self.driver.get_secret(&request).await?;
        Ok(String::from_utf8(value.0.to_vec()).unwrap())
    }

    fn revoked(&self) -> Vec<String> {
        self.vault.revoked.lock().unwrap().clone()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn parse(pairs: &[(&str, &str)]) -> Result<VolumeSpec, OptionError> {
    parse_labels(&labels(pairs), &Defaults::default())
}

const DB: &[(&str, &str)] = &[("path", "database/creds/app"), ("field", "username")];

#[test]
fn labels_are_options_as_far_as_they_apply_to_one_value() {
    let spec = parse(DB).unwrap();
    assert_eq!(spec.sources[0].path, "database/creds/app");
    assert_eq!(spec.output_file(), Some("username"));
    // Without `field`: the data as JSON.
    assert_eq!(parse(&[("path", "secret/data/app")]).unwrap().format, Format::Json);
    assert_eq!(parse(&[("path", "kv/a"), ("format", "env")]).unwrap().format, Format::Env);
    let spec = parse(&[("path", "pki/issue/web"), ("param.common_name", "web.internal")]);
    assert_eq!(spec.unwrap().sources[0].params["common_name"], "web.internal");
    let spec = parse(&[("path", "kv/a"), ("ttl", "15m"), ("policies", "db,app")]).unwrap();
    assert_eq!(
        (spec.ttl, spec.policies),
        (Duration::from_secs(900), Some(vec!["db".into(), "app".into()]))
    );
    // What `docker stack deploy` adds, and other tools' namespaced labels, are ignored.
    let with_stack =
        [("path", "kv/a"), ("com.docker.stack.namespace", "app"), ("org.example.team", "x")];
    assert_eq!(parse(&with_stack).unwrap().sources.len(), 1);
}

#[test]
fn labels_that_make_no_sense_for_one_value_are_refused_by_name() {
    for (key, value, says) in [
        ("uid", "1000", "makes no sense for a swarm secret"),
        ("gid", "1000", "--secret source="),
        ("mode", "0400", "accepted labels: path, field"),
        ("size", "1m", "volume option"),
        ("file", "x", "volume option"),
        ("template", "t", "volume option"),
        ("signal", "SIGHUP", "volume option"),
        ("refresh", "5m", "volume option"),
        ("role-id", "r", "volume option"),
        ("path.db", "database/creds/app", "one value from one path"),
        ("format", "files", "one value"),
        ("wrapped-token", "s.abc", "docker secret inspect"),
        ("owner", "team-a", "unknown label; accepted: path"),
    ] {
        let e = parse(&[("path", "kv/a"), (key, value)]).unwrap_err();
        assert_eq!(e.option, key, "{key}: {e}");
        assert!(e.message.contains(says), "{key}: {e}");
    }
    // The volume rules, under the label's name.
    for (key, value) in [
        ("path", "auth/token/create"),
        ("path", "sys/wrapping/unwrap"),
        ("path", "cubbyhole/response"),
        ("path", "nope"),
        ("field", "a/b"),
        ("format", "yaml"),
        ("ttl", "1s"),
        ("policies", "a,,b"),
        ("param.", "x"),
    ] {
        let e = parse(&[("path", "kv/a"), (key, value)]).unwrap_err();
        assert!(e.option.starts_with(key.trim_end_matches('.')), "{key}={value}: {e}");
    }
    let e = parse(&[("field", "username")]).unwrap_err();
    assert_eq!(e.option, "path");
    assert!(e.message.contains("required"), "{e}");
}

#[test]
fn names_from_the_request_are_checked() {
    assert!(valid_secret_name("db_password"));
    assert!(valid_secret_name("app.db-user"));
    for bad in ["", "-a", "a/b", "a b", "a\nb", &"a".repeat(65)] {
        assert!(!valid_secret_name(bad), "{bad:?}");
    }
}

#[tokio::test]
async fn every_task_gets_its_own_token_and_value_and_its_end_revokes_it() {
    let f = Fixture::new();
    f.task("task1", "running");
    f.task("task2", "assigned");
    let a = f.get("task1", DB).await.unwrap();
    let b = f.get("task2", DB).await.unwrap();
    assert_ne!(a, b);
    assert!(a.starts_with("v-user-"), "the field's value as it is: {a}");
    let created: Vec<_> =
        f.vault.children.lock().unwrap().iter().map(|c| c.request.clone()).collect();
    assert_eq!(created.len(), 2, "a token per task");
    assert!(created[0].meta.contains(&("task_id".into(), "task1".into())));
    assert!(created[0].meta.contains(&("service".into(), "web".into())));
    assert_eq!(created[0].ttl, Defaults::default().ttl);
    assert_eq!(f.store.load_tasks().len(), 2, "recorded in the private tmpfs");
    assert!(format!("{:?}", f.store.load_tasks()).contains("acc-0"));
    let records = serde_json::to_string(&f.store.load_tasks()[0].leases).unwrap();
    assert!(!records.contains("v-user"), "no value in a record: {records}");

    assert_eq!(f.driver.check_tasks().await, 0, "both still run");
    assert!(f.revoked().is_empty());
    f.task("task2", "shutdown");
    assert_eq!(f.driver.check_tasks().await, 1);
    assert_eq!(f.revoked(), ["child-1"]);
    f.engine.tasks.lock().unwrap().clear(); // `docker service rm`: the task is gone
    assert_eq!(f.driver.check_tasks().await, 1);
    assert_eq!(f.revoked(), ["child-1", "child-0"]);
    assert!(f.store.load_tasks().is_empty());
    assert_eq!(f.driver.task_tokens(), 0);
    assert_eq!(f.driver.check_tasks().await, 0);
}

#[tokio::test]
async fn every_end_state_ends_the_token_and_an_engine_that_cannot_tell_ends_none() {
    let f = Fixture::new();
    let ends = ["complete", "failed", "shutdown", "rejected", "orphaned", "remove"];
    for i in 0..ends.len() {
        f.task(&format!("t{i}"), "running");
        f.get(&format!("t{i}"), DB).await.unwrap();
    }
    f.engine.unreachable.store(true, Ordering::Relaxed);
    for (i, state) in ends.iter().enumerate() {
        f.task(&format!("t{i}"), state);
    }
    assert_eq!(f.driver.check_tasks().await, 0, "unknown is not ended");
    f.engine.unreachable.store(false, Ordering::Relaxed);
    assert_eq!(f.driver.check_tasks().await, ends.len());
    assert_eq!(f.revoked().len(), ends.len());
}

#[tokio::test]
async fn without_field_the_value_is_the_data_as_json() {
    let f = Fixture::new();
    let value = f.get("task1", &[("path", "secret/data/app")]).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&value).unwrap(),
        json!({"password": "pw", "user": "app"})
    );
    let value =
        f.get("task2", &[("path", "secret/data/app"), ("field", "password")]).await.unwrap();
    assert_eq!(value, "pw");
}

#[tokio::test]
async fn a_failure_revokes_the_token_and_keeps_nothing() {
    let f = Fixture::new();
    let e = f.get("task1", &[("path", "database/creds/nope")]).await.unwrap_err();
    assert!(matches!(e, SecretError::Read { .. }), "{e:?}");
    let e = crate::report::chain(&e);
    assert!(e.contains("permission denied on database/creds/nope") && e.contains("task1"), "{e}");
    assert_eq!(f.revoked(), ["child-0"]);
    let e = f.get("task1", &[("path", "secret/data/app"), ("field", "nope")]).await.unwrap_err();
    assert!(crate::report::chain(&e).contains("field \"nope\" is not in the secret"), "{e}");
    let e = f.get("task1", &[("path", "secret/data/big")]).await.unwrap_err();
    assert!(matches!(e, SecretError::TooLarge { .. }), "{e:?}");
    assert_eq!(f.revoked().len(), 3);
    assert!(f.store.load_tasks().is_empty());
    assert_eq!(f.driver.task_tokens(), 0);
    // Bad labels and names cost no token at all.
    let e = f.get("task1", &[("path", "kv/a"), ("uid", "0")]).await.unwrap_err();
    assert_eq!(e.to_string().split(':').next(), Some("secret db_user"));
    assert!(e.to_string().contains("label `uid`"), "{e}");
    assert_eq!(crate::report::chain(&e), e.to_string(), "the label's error is said once");
    let request = SecretRequest { secret: "db".into(), task: "a/b".into(), ..Default::default() };
    assert!(matches!(f.driver.get_secret(&request).await, Err(SecretError::InvalidTask { .. })));
    assert_eq!(f.vault.created(), 3);
}

#[tokio::test]
async fn the_same_task_asking_again_is_read_again_with_its_token() {
    let f = Fixture::new();
    f.task("task1", "running");
    let a = f.get("task1", DB).await.unwrap();
    let b = f.get("task1", DB).await.unwrap();
    assert_ne!(a, b, "a fresh read");
    assert_eq!(f.vault.created(), 1, "with the task's one token");
    assert_eq!(f.store.load_tasks()[0].leases.len(), 2, "both leases are followed");
    f.task("task1", "complete");
    assert_eq!(f.driver.check_tasks().await, 1);
    assert_eq!(f.revoked(), ["child-0"], "one revocation ends both");
}

#[tokio::test(start_paused = true)]
async fn tokens_and_leases_are_renewed_only_while_the_task_is_seen() {
    let f = Fixture::new();
    f.task("task1", "running");
    f.get("task1", &[("path", "database/creds/app"), ("ttl", "30s")]).await.unwrap();
    // Before the watcher saw the task: nothing renewed.
    tokio::time::advance(Duration::from_secs(25)).await;
    assert!(f.driver.task_upkeep("task1", "db_user").await.is_some());
    assert_eq!(f.vault.token_renewals.load(Ordering::SeqCst), 0);
    f.driver.check_tasks().await;
    let next = f.driver.task_upkeep("task1", "db_user").await.unwrap();
    assert_eq!(f.vault.token_renewals.load(Ordering::SeqCst), 1);
    assert_eq!(f.vault.lease_renewals.load(Ordering::SeqCst), 0, "the 60 s lease is not due");
    let lease_due = tokio::time::Instant::now() + Duration::from_secs(8);
    assert!(next > lease_due, "the lease next, at two thirds of its 60 s: {next:?}");
    // Unseen past its TTL: it ends by itself, and is forgotten.
    f.engine.unreachable.store(true, Ordering::Relaxed);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(f.driver.task_upkeep("task1", "db_user").await.is_none());
    assert_eq!(f.driver.task_tokens(), 0);
    assert!(f.store.load_tasks().is_empty());
}

/// While Vault fails, a task's renewal backs off as a mount's does — by how long it has been
/// failing, never past two thirds of what its token has left — and its first success clears it.
#[tokio::test(start_paused = true)]
async fn a_task_s_failing_renewal_backs_off_with_its_time_failing_until_vault_answers() {
    let f = Fixture::new();
    f.task("task1", "running");
    f.get("task1", &[("path", "secret/data/app"), ("field", "password"), ("ttl", "10m")])
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(7 * 60)).await;
    f.driver.check_tasks().await;
    f.vault.sealed.store(true, Ordering::SeqCst);
    let start = tokio::time::Instant::now();
    // The token, renewed for 10 m at 7 m, has 3 m left when Vault starts failing.
    let expiry = start + Duration::from_secs(3 * 60);
    let mut waits = Vec::new();
    let mut due = start;
    while let Some(next) = f.driver.task_upkeep("task1", "db_user").await {
        due = next;
        let now = tokio::time::Instant::now();
        assert!(next < expiry, "a retry after the token's expiry: {waits:?}");
        waits.push(next.saturating_duration_since(now));
        if now - start > Duration::from_secs(150) {
            break;
        }
        tokio::time::advance(next.saturating_duration_since(now)).await;
        f.driver.check_tasks().await;
    }
    assert!(waits.len() >= 5, "{waits:?}");
    assert!(waits[0] <= Duration::from_secs(1), "the first retry soon: {waits:?}");
    assert!(waits[1..5].windows(2).all(|w| w[1] >= w[0]), "growing: {waits:?}");
    let renewals = f.vault.token_renewals.load(Ordering::SeqCst);
    assert!(renewals < 20, "{renewals} renewals in 150 s of failures: {waits:?}");
    f.vault.sealed.store(false, Ordering::SeqCst);
    tokio::time::advance(due.saturating_duration_since(tokio::time::Instant::now())).await;
    f.driver.check_tasks().await;
    let next = f.driver.task_upkeep("task1", "db_user").await.unwrap();
    let due = next.saturating_duration_since(tokio::time::Instant::now());
    assert!(due > Duration::from_secs(5 * 60), "renewed for 10 m, due at about 2/3: {due:?}");
}

#[tokio::test]
async fn a_restarted_plugin_still_revokes_the_tokens_of_ended_tasks() {
    let f = Fixture::new();
    f.task("task1", "running");
    f.task("task2", "running");
    f.get("task1", DB).await.unwrap();
    f.get("task2", DB).await.unwrap();
    let again = Fixture::over(f.vault.clone(), f.store.clone(), f.engine.clone());
    again.driver.restore_tasks();
    assert_eq!(again.driver.task_tokens(), 2);
    again.task("task1", "shutdown");
    assert_eq!(again.driver.check_tasks().await, 1);
    assert_eq!(again.revoked(), ["child-0"]);
    assert_eq!(again.store.load_tasks().len(), 1);
}

#[tokio::test]
async fn a_namespace_label_goes_with_the_task_s_token_through_a_restart() {
    let f = Fixture::new();
    f.task("task1", "running");
    let ns = [("path", "secret/data/app"), ("field", "password"), ("namespace", "team-b")];
    assert_eq!(f.get("task1", &ns).await.unwrap(), "pw");
    let tasks = f.store.load_tasks();
    let kept = tasks[0].token.namespace().map(|n| n.as_str().to_owned());
    assert_eq!(kept.as_deref(), Some("team-b"), "recorded with its namespace");
    // A restart: the record's token still names team-b when the task ends.
    let again = Fixture::over(f.vault.clone(), f.store.clone(), f.engine.clone());
    again.driver.restore_tasks();
    again.engine.tasks.lock().unwrap().clear();
    assert_eq!(again.driver.check_tasks().await, 1);
    let seen = f.vault.namespaces.lock().unwrap().clone();
    let b = Some("team-b".to_owned());
    assert_eq!(seen, [("create", b.clone()), ("read", b.clone()), ("revoke", b)]);
}
