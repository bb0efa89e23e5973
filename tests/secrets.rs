//! Swarm secrets from Vault, end to end on one node: the shared engine in a single-node swarm
//! (joined for the test if it was not, left after), `docker secret create --driver` with the
//! plugin's labels, services whose tasks read their own values from `/run/secrets`, and their
//! tokens — with the database users they made — revoked when the tasks end.
//!
//! The driver name is one of its own, used for nothing but secrets: dockerd keeps the first
//! `/Plugin.Activate` answer of a legacy plugin for its whole life (moby `pkg/plugins`), so a
//! dockerd that met `vault-secrets-e2e` before this plugin implemented `secretprovider` would
//! refuse it as a secret driver; and a name only ever used for secrets never becomes one of the
//! volume drivers dockerd asks (and, once its socket is gone, retries) on every volume lookup.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::compose::Swarm;
use crate::util::docker::{docker, docker_lock, docker_ok, image};
use crate::util::*;

/// The e2e tests' driver name (the same lock): a name of its own, once its plugin is gone, would
/// cost every later lookup of an unknown volume on the shared dockerds ~15 s of retries.
const DRIVER: &str = crate::util::docker::DRIVER;

/// A swarm secret of the plugin's; removed on drop.
struct Secret {
    name: String,
}

impl Secret {
    fn create(prefix: &str, labels: &[&str]) -> Secret {
        let name = unique(prefix);
        let mut args = vec!["secret", "create", "--driver", DRIVER];
        for l in labels {
            args.extend(["--label", l]);
        }
        args.push(&name);
        docker_ok(&args);
        Secret { name }
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let _ = docker(&["secret", "rm", &self.name]);
    }
}

/// A service of `sleep` tasks holding `secret`; `docker service rm` on drop, waiting for its
/// containers to be gone (so the plugin sees the tasks end while it still runs).
struct Service {
    name: String,
}

impl Service {
    fn create(secret: &Secret, replicas: u32) -> Service {
        let service = Service { name: unique("vss") };
        let replicas = replicas.to_string();
        // No `--network`: the engine's default network mode (see tests/compose.rs).
        docker_ok(&[
            "service",
            "create",
            "--detach",
            "--name",
            &service.name,
            "--replicas",
            &replicas,
            "--restart-condition",
            "none",
            "--stop-grace-period",
            "1s",
            "--secret",
            &secret.name,
            &image(),
            "sleep",
            "600",
        ]);
        service
    }

    fn containers(&self, running: bool) -> Vec<String> {
        let filter = format!("label=com.docker.swarm.service.name={}", self.name);
        let mut args = vec!["ps", "-aq", "--filter", &filter];
        if running {
            args.extend(["--filter", "status=running"]);
        }
        docker_ok(&args).lines().map(str::to_owned).collect()
    }

    /// The tasks' states and errors, as `docker service ps --no-trunc` shows them.
    fn tasks(&self) -> String {
        let out = docker(&[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{.Name}} {{.DesiredState}} {{.CurrentState}} {{.Error}}",
            &self.name,
        ]);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// Waits for `n` running containers; returns them.
    fn running(&self, n: usize) -> Vec<String> {
        let ok = wait_until(Duration::from_secs(60), || self.containers(true).len() == n);
        assert!(ok, "{} did not get {n} running tasks:\n{}", self.name, self.tasks());
        self.containers(true)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = docker(&["service", "rm", &self.name]);
        wait_until(Duration::from_secs(30), || self.containers(false).is_empty());
    }
}

/// OpenBao with a database role and a KV secret, and the plugin (on the secrets-only driver
/// name) whose identity may read only those.
struct Setup {
    bao: Bao,
    plugin: Plugin,
}

impl Drop for Setup {
    /// The plugin stopped, its socket is removed: dockerd tries every socket in
    /// /run/docker/plugins when it lists volumes, and a dead one costs each listing seconds of
    /// retries.
    fn drop(&mut self) {
        self.plugin.stop(true);
        let _ = std::fs::remove_file(&self.plugin.socket);
    }
}

fn setup() -> Setup {
    let out = docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        out.status.success(),
        "no Docker engine {}: run tests/env.sh (and tests/engines.sh for 26) first ({})",
        test_engine().name,
        String::from_utf8_lossy(&out.stderr)
    );
    let bao = Bao::start();
    bao.database_role("swarm", "1h", "24h");
    bao.put_kv2("swarm-kv", json!({"api_key": "from-vault-kv", "other": "x"}));
    bao.policy(
        "swarm-plugin",
        r#"path "auth/token/create" { capabilities = ["update"] }
path "database/creds/swarm" { capabilities = ["read"] }
path "secret/data/swarm-kv" { capabilities = ["read"] }"#,
    );
    let identity = bao.api(
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["swarm-plugin"], "ttl": "1h", "no_parent": true})),
    );
    let token = identity["auth"]["client_token"].as_str().unwrap().to_owned();
    let socket = Path::new("/run/docker/plugins").join(format!("{DRIVER}.sock"));
    let plugin = Plugin::start(Some(&socket), &bao.address(), &token, "");
    Setup { bao, plugin }
}

/// What a task's container reads from its secret (at `/run/secrets/NAME`, Docker's default).
fn read(container: &str, secret: &Secret) -> String {
    read_file(container, &secret.name)
}

/// What a task's container reads from `/run/secrets/FILE`.
fn read_file(container: &str, file: &str) -> String {
    docker_ok(&["exec", container, "cat", &format!("/run/secrets/{file}")])
}

/// The user a database secret gave a container at `/run/secrets/FILE`, checked to exist in
/// PostgreSQL.
fn user_of(container: &str, file: &str) -> String {
    let user = read_file(container, file);
    assert!(user.starts_with("v-"), "not a database user: {user:?}");
    assert!(pg_role_exists(&user), "{user} is not in pg_roles");
    user
}

#[test]
fn swarm_tasks_get_their_own_database_users_dropped_when_the_tasks_end_on_every_engine() {
    let _lock = docker_lock();
    let s = setup();
    let _swarm = Swarm::ensure();
    let before = s.bao.accessors();
    let secret = Secret::create(
        "db_user",
        &["path=database/creds/swarm", "field=username", "com.example.team=payments"],
    );
    let started = Instant::now();
    let service = Service::create(&secret, 2);
    let containers = service.running(2);
    eprintln!("service create → 2 tasks running: {} ms", started.elapsed().as_millis());
    let users: Vec<String> = containers.iter().map(|c| user_of(c, &secret.name)).collect();
    assert_ne!(users[0], users[1], "each task has a user of its own");
    assert_eq!(s.bao.accessors().len(), before.len() + 2, "each task has a token of its own");
    // `status` shows each task's token (its accessor, never the token) and its lease.
    let shown = crate::util::vault::status(&s.plugin);
    let tasks = shown["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 2, "{shown}");
    let accessors = s.bao.accessors();
    for task in &tasks {
        assert!(accessors.iter().any(|a| task["accessor"] == a.as_str()), "{task}");
        assert_eq!(task["service"], service.name.as_str(), "{task}");
        let leases = task["leases"].as_array().unwrap();
        assert!(
            leases.len() == 1
                && leases[0]["lease_id"].as_str().unwrap().starts_with("database/creds/swarm/"),
            "{task}"
        );
    }
    let table = crate::util::vault::plugin_cli(&s.plugin.config, &["status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("swarm task secrets (2 task token(s))"), "{table}");
    let mode = docker_ok(&[
        "exec",
        &containers[0],
        "stat",
        "-c",
        "%a",
        &format!("/run/secrets/{}", secret.name),
    ]);
    assert_eq!(mode, "444", "Docker writes the file, with the service's mode");

    // Scale down: the removed task's user goes, the other stays.
    let scaled = Instant::now();
    docker_ok(&["service", "scale", "--detach", &format!("{}=1", service.name)]);
    let stopped = wait_until(Duration::from_secs(10), || service.containers(true).len() == 1);
    let stop_took = scaled.elapsed();
    let dropped = wait_until(Duration::from_secs(10), || {
        users.iter().filter(|u| pg_role_exists(u)).count() == 1
    });
    let took = scaled.elapsed();
    assert!(
        stopped && dropped,
        "scale to 1 did not drop a user within 10 s:\n{}\n{}",
        service.tasks(),
        s.plugin.log()
    );
    eprintln!(
        "service scale 2→1 → the removed task's container stopped: {} ms, its user dropped: {} ms",
        stop_took.as_millis(),
        took.as_millis()
    );
    // The issue's bound is 5 s; asserted with a margin (the machine is shared).
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let left = service.running(1);
    let kept = user_of(&left[0], &secret.name);
    assert!(users.contains(&kept));
    assert_eq!(s.bao.accessors().len(), before.len() + 1);

    // Remove the service: the rest goes.
    let removed = Instant::now();
    docker_ok(&["service", "rm", &service.name]);
    assert!(
        wait_until(Duration::from_secs(10), || !pg_role_exists(&kept)),
        "service rm did not drop {kept}:\n{}",
        s.plugin.log()
    );
    eprintln!("service rm → the last user dropped: {} ms", removed.elapsed().as_millis());
    assert!(wait_until(Duration::from_secs(10), || s.bao.accessors() == before));
    assert!(s.plugin.mounts_left().is_empty(), "no tmpfs of the plugin's: Docker holds the value");
    let log = s.plugin.log();
    assert!(!users.iter().any(|u| log.contains(u.as_str())), "a value in the plugin's log");
}

#[test]
fn a_kv_field_is_a_task_s_secret_and_a_denied_path_fails_the_task_on_every_engine() {
    let _lock = docker_lock();
    let s = setup();
    let _swarm = Swarm::ensure();
    let before = s.bao.accessors();

    let kv = Secret::create("api_key", &["path=secret/data/swarm-kv", "field=api_key"]);
    let service = Service::create(&kv, 1);
    let c = service.running(1).remove(0);
    assert_eq!(read(&c, &kv), "from-vault-kv");
    assert_eq!(s.bao.accessors().len(), before.len() + 1);
    let whole = Secret::create("kv_json", &["path=secret/data/swarm-kv"]);
    let service2 = Service::create(&whole, 1);
    let c2 = service2.running(1).remove(0);
    let data: serde_json::Value = serde_json::from_str(&read(&c2, &whole)).unwrap();
    assert_eq!(data, json!({"api_key": "from-vault-kv", "other": "x"}), "without field: JSON");
    drop(service);
    drop(service2);
    assert!(wait_until(Duration::from_secs(10), || s.bao.accessors() == before));

    // A path the plugin's identity may not read: the task fails; the token made for it is
    // revoked at once; the plugin's log says why.
    let denied = Secret::create("denied", &["path=database/creds/other", "field=username"]);
    let service = Service::create(&denied, 1);
    let failed = wait_until(Duration::from_secs(60), || {
        let tasks = service.tasks();
        tasks.contains("Failed") || tasks.contains("Rejected")
    });
    let tasks = service.tasks();
    eprintln!("docker service ps --no-trunc of the denied secret's service:\n{tasks}");
    assert!(failed, "the task did not fail:\n{tasks}");
    assert!(tasks.contains("secret") && tasks.contains("not found"), "{tasks}");
    assert!(service.containers(true).is_empty());
    let log = s.plugin.log();
    assert!(
        log.contains("permission denied on database/creds/other") && log.contains(&denied.name),
        "the plugin's log names the path:\n{log}"
    );
    assert!(wait_until(Duration::from_secs(5), || s.bao.accessors() == before));

    // A label that makes no sense for one value: refused by name, no token made.
    let bad = Secret::create("bad", &["path=secret/data/swarm-kv", "mode=0400"]);
    let service = Service::create(&bad, 1);
    assert!(wait_until(Duration::from_secs(60), || service.tasks().contains("Failed")));
    assert!(s.plugin.log().contains("label `mode`: is a volume option"), "{}", s.plugin.log());
    assert_eq!(s.bao.accessors(), before);
}

/// `docker stack rm` on drop, waiting for the stack's containers to be gone.
struct Stack {
    name: String,
}

impl Stack {
    fn containers(&self) -> Vec<String> {
        let filter = format!("label=com.docker.stack.namespace={}", self.name);
        docker_ok(&["ps", "-q", "--filter", &filter]).lines().map(str::to_owned).collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = docker(&["stack", "rm", &self.name]);
        wait_until(Duration::from_secs(30), || self.containers().is_empty());
    }
}

#[test]
fn a_stack_file_s_secret_with_the_driver_gets_a_user_per_task_on_every_engine() {
    let _lock = docker_lock();
    let s = setup();
    let _swarm = Swarm::ensure();
    let before = s.bao.accessors();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.yaml");
    // The host network: a stack's default overlay network is of no use to a task that only
    // reads its secret (and the test dockerd runs with `--bridge=none`).
    let yaml = format!(
        r#"version: "3.8"
services:
  app:
    image: {image}
    command: ["sleep", "600"]
    stop_grace_period: 1s
    deploy:
      replicas: 2
      restart_policy: {{condition: none}}
    networks: [hostnet]
    secrets: [db_user]
networks:
  hostnet:
    external: true
    name: host
secrets:
  db_user:
    driver: {DRIVER}
    labels:
      path: database/creds/swarm
      field: username
"#,
        image = image()
    );
    std::fs::write(&file, yaml).unwrap();
    let stack = Stack { name: unique("vsstack") };
    docker_ok(&["stack", "deploy", "-c", &file.display().to_string(), &stack.name]);
    let secret = Secret { name: format!("{}_db_user", stack.name) };
    let labels =
        docker_ok(&["secret", "inspect", "--format", "{{json .Spec.Labels}}", &secret.name]);
    assert!(labels.contains("com.docker.stack.namespace"), "stack deploy adds its label: {labels}");
    assert!(
        wait_until(Duration::from_secs(60), || stack.containers().len() == 2),
        "the stack's tasks did not start: {}\n{}",
        docker_ok(&["stack", "ps", "--no-trunc", &stack.name]),
        s.plugin.log()
    );
    // The file is named by the stack file's key; the secret, by the stack.
    let users: Vec<String> = stack.containers().iter().map(|c| user_of(c, "db_user")).collect();
    assert_ne!(users[0], users[1]);
    let removed = Instant::now();
    docker_ok(&["stack", "rm", &stack.name]);
    assert!(
        wait_until(Duration::from_secs(10), || !users.iter().any(|u| pg_role_exists(u))),
        "docker stack rm did not drop the users:\n{}",
        s.plugin.log()
    );
    eprintln!("stack rm → both users dropped: {} ms", removed.elapsed().as_millis());
    assert!(wait_until(Duration::from_secs(10), || s.bao.accessors() == before));
}

#[test]
fn a_plugin_killed_and_restarted_still_revokes_when_the_task_ends_on_every_engine() {
    let _lock = docker_lock();
    let mut s = setup();
    let _swarm = Swarm::ensure();
    let before = s.bao.accessors();
    let secret = Secret::create("db_restart", &["path=database/creds/swarm", "field=username"]);
    let service = Service::create(&secret, 1);
    let c = service.running(1).remove(0);
    let user = user_of(&c, &secret.name);
    let records = std::fs::read_dir(s.plugin.runtime.join("private/tasks")).unwrap().count();
    assert_eq!(records, 1, "the task's token is recorded in the private tmpfs");
    let state = s.plugin.dir.path().join("state");
    let on_disk = std::process::Command::new("grep").args(["-rl", &user]).arg(&state).output();
    assert!(on_disk.unwrap().stdout.is_empty(), "the value is nowhere in state_dir");

    s.plugin.stop(true); // SIGKILL
    s.plugin.restart();
    assert!(s.plugin.log().contains("swarm tasks' tokens taken back"), "{}", s.plugin.log());
    assert!(pg_role_exists(&user), "the running task keeps its user across the restart");
    let removed = Instant::now();
    docker_ok(&["service", "rm", &service.name]);
    assert!(
        wait_until(Duration::from_secs(10), || !pg_role_exists(&user)),
        "the restarted plugin did not revoke the task's token:\n{}",
        s.plugin.log()
    );
    eprintln!(
        "after a plugin restart, service rm → user dropped: {} ms",
        removed.elapsed().as_millis()
    );
    assert!(wait_until(Duration::from_secs(10), || s.bao.accessors() == before));
}
