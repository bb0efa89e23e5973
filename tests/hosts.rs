//! Many Docker hosts on one machine (`util::hosts`): a swarm of one manager and two workers,
//! each node with its own dockerd, plugin and Vault identity, in namespaces of the test's.
//!
//! - a service of three replicas, one per node, mounting a database-credentials volume: every
//!   task has its own PostgreSQL user; `docker service scale` down drops the removed tasks'
//!   users (measured per task, from the container's `die` to the user's end); `docker node
//!   update --availability drain` moves a worker's task and drops its user; `docker stack deploy`
//!   with `driver_opts`; a worker whose dockerd and plugin are SIGKILLed: its task comes back on
//!   the other nodes with a user of its own, and the dead node's user ends at its lease's TTL;
//!   revoking one node's identity takes its tasks' users and no other node's;
//! - Swarm secrets (`docker secret create --driver vault-secrets`) on three nodes whose plugins
//!   log in with certificates of their own (over TLS): the manager's plugin gives each task a
//!   user of its own, drops the removed task's user at scale down, and a denied path shows as the
//!   task's error in `docker service ps`; a service's `wrapped-token` is used up by the first
//!   node, and the second node's task says why.
//!
//! Every figure is printed (`--nocapture`); the bounds asserted are the issue's with margins.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::util::docker::DockerCli;
use crate::util::hosts::{Host, Hosts, Identity, DRIVER};
use crate::util::tls::{bao_cli, Pki, TlsBao};
use crate::util::vault::{pg_login, Creds};
use crate::util::*;

/// The nodes' policy: child tokens, and the two database roles (not `database/creds/other`).
const POLICY: &str = r#"path "auth/token/create" { capabilities = ["update"] }
path "database/creds/hosts" { capabilities = ["read"] }
path "database/creds/short" { capabilities = ["read"] }"#;

/// One cluster at a time: on Engine 26.1, with two of them starting at once, `docker import`
/// into a dockerd that had answered `docker info` milliseconds before failed now and then with
/// "Cannot connect to the Docker daemon" (the SIGTERM after it in dockerd's log is the test's
/// own clean-up: `perf` showed its sender). Not understood; one at a time it never happened.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

/// The database roles and the nodes' policy.
fn roles(bao: &Bao) {
    bao.database_role("hosts", "1h", "24h");
    // The node-kill case: what a dead node leaves ends at this TTL.
    bao.database_role("short", "20s", "40s");
    bao.policy("vault-secrets-node", POLICY);
}

/// Three hosts in a swarm, each plugin with a token of its own.
fn setup() -> (MutexGuard<'static, ()>, Bao, Hosts) {
    let turn = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let bao = Bao::start();
    roles(&bao);
    let started = Instant::now();
    let hosts = swarm(Hosts::start(3, &bao, "vault-secrets-node"), started);
    (turn, bao, hosts)
}

/// Three hosts in a swarm, each plugin with a client certificate of its own (`CN` = the host's
/// name) and a cert role of its own, against OpenBao's TLS listener.
fn setup_cert() -> (MutexGuard<'static, ()>, TlsBao, Pki, Hosts) {
    let turn = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    let pki = Pki::new("nodes-ca");
    let bao = TlsBao::start(&pki.server_for("10.231.0.1"));
    roles(&bao.bao);
    let identity =
        Identity::Cert { pki: &pki, policy: "vault-secrets-node", tls_port: bao.tls_port };
    let started = Instant::now();
    let hosts = swarm(Hosts::start_as(3, &bao.bao, identity), started);
    (turn, bao, pki, hosts)
}

/// Makes a swarm of `hosts` (started at `started`), printing how long each part took.
fn swarm(mut hosts: Hosts, started: Instant) -> Hosts {
    let up = started.elapsed();
    hosts.swarm();
    eprintln!(
        "3 hosts up (namespaces, dockerd, image, plugin logged in): {} ms; swarm of 1 manager + 2 workers: {} ms",
        up.as_millis(),
        (started.elapsed() - up).as_millis()
    );
    hosts
}

/// The database users in PostgreSQL now (the `v-…` ones OpenBao makes).
fn pg_users() -> BTreeSet<String> {
    let out = Command::new("psql")
        .env("PGPASSWORD", pg_password())
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tAc"])
        .arg("SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%'")
        .output()
        .expect("psql");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A task's container: the host it runs on and its ID.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Task {
    host: usize,
    container: String,
}

/// A swarm service, created on the manager; `docker service rm` on drop.
struct Service {
    name: String,
    /// The manager's `DOCKER_HOST`.
    manager: String,
}

impl Service {
    fn create(hosts: &Hosts, prefix: &str, args: &[&str]) -> Service {
        let name = unique(prefix);
        let mut all = vec![
            "service",
            "create",
            "--detach",
            "--no-resolve-image",
            "--name",
            &name,
            "--stop-grace-period",
            "1s",
            "--restart-delay",
            "100ms",
        ];
        all.extend(args);
        let image = test_image();
        all.extend([image.as_str(), "sleep", "600"]);
        hosts.manager().docker_ok(&all);
        Service { name, manager: hosts.manager().dockerd().host.clone() }
    }

    /// The running containers of the service on every host still up.
    fn running(&self, hosts: &Hosts) -> Vec<Task> {
        running_with_label(hosts, &format!("com.docker.swarm.service.name={}", self.name))
    }

    /// Waits for `n` running tasks, at most `per_host` on a host; returns them.
    fn wait_running(&self, hosts: &Hosts, n: usize, per_host: usize) -> Vec<Task> {
        let ok = wait_until(Duration::from_secs(90), || {
            let tasks = self.running(hosts);
            tasks.len() == n
                && (0..hosts.hosts.len())
                    .all(|h| tasks.iter().filter(|t| t.host == h).count() <= per_host)
        });
        assert!(ok, "{} did not get {n} running tasks:\n{}", self.name, self.tasks(hosts));
        self.running(hosts)
    }

    /// `docker service ps --no-trunc` on the manager.
    fn tasks(&self, hosts: &Hosts) -> String {
        let out = hosts.manager().docker(&[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}} {{.Error}}",
            &self.name,
        ]);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    fn scale(&self, hosts: &Hosts, n: usize) {
        hosts.manager().docker_ok(&["service", "scale", "--detach", &format!("{}={n}", self.name)]);
    }
}

impl Drop for Service {
    /// The tasks' containers go with the hosts' teardown.
    fn drop(&mut self) {
        let _ = DockerCli::engine().at(&self.manager).docker(&["service", "rm", &self.name]);
    }
}

fn running_with_label(hosts: &Hosts, label: &str) -> Vec<Task> {
    let filter = format!("label={label}");
    let mut tasks = Vec::new();
    for (i, h) in hosts.hosts.iter().enumerate() {
        if h.dockerd.as_ref().and_then(|d| d.pid()).is_none() {
            continue;
        }
        let out = h.docker_ok(&["ps", "-q", "--no-trunc", "--filter", &filter]);
        tasks.extend(out.lines().map(|c| Task { host: i, container: c.to_owned() }));
    }
    tasks.sort();
    tasks
}

/// The database credentials a task's container reads from its volume at /run/secrets.
fn creds(hosts: &Hosts, t: &Task) -> Creds {
    let h = &hosts.hosts[t.host];
    let read = |f: &str| h.docker_ok(&["exec", &t.container, "cat", &format!("/run/secrets/{f}")]);
    Creds { user: read("username"), password: read("password") }
}

/// When `container` on `host` died (its `die` event), as a time of the machine's clock.
fn died_at(host: &Host, container: &str, since: u64) -> SystemTime {
    let (since, until) = (since.to_string(), (unix_now() + 1).to_string());
    let filter = format!("container={container}");
    let out = host.docker_ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        &filter,
        "--filter",
        "event=die",
        "--format",
        "{{.TimeNano}}",
    ]);
    let nanos: u64 = out
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no die event of {container} on {}: {out:?}", host.name));
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// Waits until `count` of `users` are gone from PostgreSQL (polled, one query for all); returns
/// each gone user with the time it was first seen gone.
fn wait_gone(users: &[String], count: usize, timeout: Duration) -> Vec<(String, SystemTime)> {
    let mut gone: Vec<(String, SystemTime)> = Vec::new();
    let end = Instant::now() + timeout;
    while gone.len() < count && Instant::now() < end {
        let now = pg_users();
        let seen = SystemTime::now();
        for u in users {
            if !now.contains(u) && !gone.iter().any(|(g, _)| g == u) {
                gone.push((u.clone(), seen));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    gone
}

/// For each user gone, how long after its task's container died, in ms: (user, host, ms). It
/// is below zero when the user went before the `die` event (Engine 26.1 emits it after the
/// volumes' Unmount).
fn die_to_gone(
    hosts: &Hosts,
    tasks: &[(Task, Creds)],
    gone: &[(String, SystemTime)],
    since: u64,
) -> Vec<(String, usize, i64)> {
    gone.iter()
        .map(|(user, at)| {
            let (t, _) = tasks.iter().find(|(_, c)| &c.user == user).expect("a task's user");
            let died = died_at(&hosts.hosts[t.host], &t.container, since);
            let ms = match at.duration_since(died) {
                Ok(d) => d.as_millis() as i64,
                Err(e) => -(e.duration().as_millis() as i64),
            };
            (user.clone(), t.host, ms)
        })
        .collect()
}

fn users_of(tasks: &[(Task, Creds)]) -> Vec<String> {
    tasks.iter().map(|(_, c)| c.user.clone()).collect()
}

/// Each running task's credentials, checked: a user of its own that can log in.
fn check_own_users(hosts: &Hosts, tasks: &[Task]) -> Vec<(Task, Creds)> {
    let with: Vec<(Task, Creds)> = tasks.iter().map(|t| (t.clone(), creds(hosts, t))).collect();
    let users: BTreeSet<&str> = with.iter().map(|(_, c)| c.user.as_str()).collect();
    assert_eq!(users.len(), tasks.len(), "every task has a user of its own: {with:?}");
    for (t, c) in &with {
        assert!(c.user.starts_with("v-"), "not a database user: {c:?}");
        pg_login(c).unwrap_or_else(|e| panic!("{c:?} of {t:?} cannot log in: {e}"));
    }
    with
}

#[test]
fn a_service_on_three_nodes_gets_a_user_per_task_scaled_drained_stacked_and_node_killed_on_one_engine(
) {
    let (_turn, bao, mut hosts) = setup();
    let ids: Vec<String> = (0..3).map(|i| hosts.node_id(i)).collect();
    let vol = unique("vshdb");
    let mount = format!(
        "type=volume,source={vol},target=/run/secrets,readonly,volume-driver={DRIVER},volume-opt=path=database/creds/hosts"
    );
    let service = Service::create(
        &hosts,
        "vshsvc",
        &["--replicas", "3", "--placement-pref", "spread=node.id", "--mount", &mount],
    );
    let started = Instant::now();
    let tasks = service.wait_running(&hosts, 3, 1);
    eprintln!(
        "service create → 3 tasks running, one per node: {} ms",
        started.elapsed().as_millis()
    );
    let tasks = check_own_users(&hosts, &tasks);
    // Scale 3 → 1: the two removed tasks' users go.
    let since = unix_now().saturating_sub(1);
    service.scale(&hosts, 1);
    let gone = wait_gone(&users_of(&tasks), 2, Duration::from_secs(30));
    assert_eq!(gone.len(), 2, "scale 3→1 did not drop two users:\n{}", service.tasks(&hosts));
    let left = service.wait_running(&hosts, 1, 1);
    let kept = creds(&hosts, &left[0]);
    assert!(!gone.iter().any(|(u, _)| *u == kept.user), "the remaining task keeps its user");
    pg_login(&kept).unwrap();
    for (user, host, took) in die_to_gone(&hosts, &tasks, &gone, since) {
        eprintln!(
            "scale 3→1: task on {} died → its user {user} gone: {took} ms",
            hosts.hosts[host].name,
        );
        // The issue's target is 0.5 s; asserted with a margin (the machine is shared).
        assert!(took < 5000, "{user}: {took} ms");
    }

    // Back to 3, then drain worker 2: its task moves to the other nodes, its user goes.
    service.scale(&hosts, 3);
    let tasks = check_own_users(&hosts, &service.wait_running(&hosts, 3, 1));
    let on_w2: Vec<&(Task, Creds)> = tasks.iter().filter(|(t, _)| t.host == 2).collect();
    assert_eq!(on_w2.len(), 1, "a task on worker 2: {tasks:?}");
    let old = on_w2[0].1.clone();
    let since = unix_now().saturating_sub(1);
    let drained = Instant::now();
    hosts.manager().docker_ok(&["node", "update", "--availability", "drain", &ids[2]]);
    let gone = wait_gone(std::slice::from_ref(&old.user), 1, Duration::from_secs(30));
    assert_eq!(
        gone.len(),
        1,
        "drain did not drop the user of worker 2's task:\n{}",
        service.tasks(&hosts)
    );
    for (user, _, took) in die_to_gone(&hosts, &tasks, &gone, since) {
        eprintln!("drain: worker 2's task died → its user {user} gone: {took} ms");
        assert!(took < 5000, "{user}: {took} ms");
    }
    let moved = service.wait_running(&hosts, 3, 2);
    eprintln!("drain → 3 tasks running on 2 nodes: {} ms", drained.elapsed().as_millis());
    assert!(moved.iter().all(|t| t.host != 2), "nothing runs on the drained node: {moved:?}");
    let moved = check_own_users(&hosts, &moved);
    assert!(!users_of(&moved).contains(&old.user));
    assert!(pg_login(&old).is_err(), "the drained task's user cannot log in");
    hosts.manager().docker_ok(&["node", "update", "--availability", "active", &ids[2]]);
    let removed = Instant::now();
    drop(service);
    let all = users_of(&moved);
    assert_eq!(wait_gone(&all, 3, Duration::from_secs(30)).len(), 3, "service rm left users");
    eprintln!("service rm → its 3 users gone: {} ms", removed.elapsed().as_millis());

    // A stack file whose volume has driver_opts.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.yaml");
    let yaml = format!(
        r#"version: "3.8"
services:
  app:
    image: {image}
    command: ["sleep", "600"]
    stop_grace_period: 1s
    deploy:
      replicas: 3
      placement: {{preferences: [{{spread: node.id}}]}}
    networks: [hostnet]
    volumes:
      - db:/run/secrets:ro
networks:
  hostnet:
    external: true
    name: host
volumes:
  db:
    driver: {DRIVER}
    driver_opts:
      path: database/creds/hosts
"#,
        image = test_image()
    );
    std::fs::write(&file, yaml).unwrap();
    let stack = unique("vshstack");
    let deployed = Instant::now();
    hosts.manager().docker_ok(&[
        "stack",
        "deploy",
        "--resolve-image",
        "never",
        "-c",
        &file.display().to_string(),
        &stack,
    ]);
    let label = format!("com.docker.stack.namespace={stack}");
    let ok = wait_until(Duration::from_secs(90), || {
        let t = running_with_label(&hosts, &label);
        t.len() == 3 && (0..3).all(|h| t.iter().filter(|t| t.host == h).count() == 1)
    });
    assert!(
        ok,
        "the stack's tasks did not start one per node: {}",
        hosts.manager().docker_ok(&["stack", "ps", "--no-trunc", &stack])
    );
    eprintln!("stack deploy → 3 tasks running: {} ms", deployed.elapsed().as_millis());
    let stacked = check_own_users(&hosts, &running_with_label(&hosts, &label));
    let driver = hosts.hosts[stacked[0].0.host].docker_ok(&[
        "volume",
        "inspect",
        "--format",
        "{{.Driver}} {{.Options.path}}",
        &format!("{stack}_db"),
    ]);
    assert_eq!(driver, format!("{DRIVER} database/creds/hosts"), "the stack's driver_opts");
    let removed = Instant::now();
    hosts.manager().docker_ok(&["stack", "rm", &stack]);
    let all = users_of(&stacked);
    assert_eq!(wait_gone(&all, 3, Duration::from_secs(30)).len(), 3, "stack rm left users");
    eprintln!("stack rm → its 3 users gone: {} ms", removed.elapsed().as_millis());
    assert!(wait_until(Duration::from_secs(30), || running_with_label(&hosts, &label).is_empty()));

    // A worker's dockerd and plugin SIGKILLed: its task comes back elsewhere with a user of
    // its own; the dead node's user lives until its lease's TTL (20 s, renewed up to 40 s).
    let short = format!(
        "type=volume,source={vol}-short,target=/run/secrets,readonly,volume-driver={DRIVER},volume-opt=path=database/creds/short"
    );
    let service = Service::create(
        &hosts,
        "vshkill",
        &["--replicas", "3", "--placement-pref", "spread=node.id", "--mount", &short],
    );
    let tasks = check_own_users(&hosts, &service.wait_running(&hosts, 3, 1));
    let dead = tasks.iter().find(|(t, _)| t.host == 2).expect("a task on worker 2").1.clone();
    let killed = Instant::now();
    hosts.hosts[2].kill();
    let ok = wait_until(Duration::from_secs(60), || service.running(&hosts).len() == 3);
    assert!(ok, "the dead node's task did not come back:\n{}", service.tasks(&hosts));
    eprintln!(
        "worker 2 killed → its task running again on another node: {} ms",
        killed.elapsed().as_millis()
    );
    let back = check_own_users(&hosts, &service.running(&hosts));
    assert!(!users_of(&back).contains(&dead.user), "fresh credentials, not the dead node's");
    assert!(pg_login(&dead).is_ok(), "nothing revokes the dead node's user before its TTL");
    let ended = wait_until(Duration::from_secs(60), || pg_login(&dead).is_err());
    let took = killed.elapsed();
    assert!(ended, "the dead node's user still logs in 60 s after the kill");
    eprintln!("worker 2 killed → its task's user can no longer log in: {} ms", took.as_millis());
    // The lease's TTL is 20 s from its last renewal (the plugin renews it at two thirds):
    // at most 20 s after the kill, with a margin for OpenBao's expiry and the shared machine.
    assert!(took < Duration::from_secs(35), "{took:?}");
    assert!(wait_until(Duration::from_secs(10), || !pg_role_exists(&dead.user)));

    // Each node's mounts hang from its own identity: revoking worker 1's token takes its tasks'
    // child tokens, and their users, with it; the manager's tasks keep theirs.
    let on_w1: Vec<&Creds> = back.iter().filter(|(t, _)| t.host == 1).map(|(_, c)| c).collect();
    let on_m: Vec<&Creds> = back.iter().filter(|(t, _)| t.host == 0).map(|(_, c)| c).collect();
    assert!(!on_w1.is_empty() && !on_m.is_empty(), "tasks on both nodes left: {back:?}");
    let accessor = json!({"accessor": hosts.hosts[1].identity_accessor});
    bao.api("POST", "auth/token/revoke-accessor", Some(accessor));
    let w1: Vec<String> = on_w1.iter().map(|c| c.user.clone()).collect();
    let gone = wait_gone(&w1, w1.len(), Duration::from_secs(10));
    assert_eq!(gone.len(), w1.len(), "revoking worker 1's identity left its tasks' users");
    for c in on_m {
        pg_login(c).unwrap_or_else(|e| panic!("the manager's task lost {c:?}: {e}"));
    }
}

#[test]
fn swarm_secrets_on_three_nodes_with_certificate_identities_and_a_wrapped_token_used_once_on_one_engine(
) {
    let (_turn, tls, _pki, hosts) = setup_cert();
    let bao = &tls.bao;
    // Each node logged in with its own certificate, at its own cert role.
    let identities: BTreeSet<&str> =
        hosts.hosts.iter().map(|h| h.identity_accessor.as_str()).collect();
    assert_eq!(identities.len(), 3, "three identities of their own");
    let manager = hosts.manager();
    let secret = unique("vshsecret");
    manager.docker_ok(&[
        "secret",
        "create",
        "--driver",
        DRIVER,
        "--label",
        "path=database/creds/hosts",
        "--label",
        "field=username",
        &secret,
    ]);
    let target = format!("source={secret},target=db_user");
    let service = Service::create(
        &hosts,
        "vshsec",
        &["--replicas", "2", "--placement-pref", "spread=node.id", "--secret", &target],
    );
    let started = Instant::now();
    let tasks = service.wait_running(&hosts, 2, 1);
    eprintln!("secret service create → 2 tasks on 2 nodes: {} ms", started.elapsed().as_millis());
    assert!(tasks.iter().any(|t| t.host != 0), "a task on a worker: {tasks:?}");
    let tasks: Vec<(Task, Creds)> = tasks
        .iter()
        .map(|t| {
            let user = hosts.hosts[t.host].docker_ok(&[
                "exec",
                &t.container,
                "cat",
                "/run/secrets/db_user",
            ]);
            (t.clone(), Creds { user, password: String::new() })
        })
        .collect();
    let users = users_of(&tasks);
    assert_ne!(users[0], users[1], "each task has a user of its own");
    for u in &users {
        assert!(u.starts_with("v-") && pg_role_exists(u), "{u} is not a database user");
    }

    let since = unix_now().saturating_sub(1);
    service.scale(&hosts, 1);
    let gone = wait_gone(&users, 1, Duration::from_secs(30));
    assert_eq!(gone.len(), 1, "scale 2→1 did not drop a user:\n{}", service.tasks(&hosts));
    for (user, host, took) in die_to_gone(&hosts, &tasks, &gone, since) {
        eprintln!(
            "secret, scale 2→1: task on {} died → its user {user} gone: {took} ms",
            hosts.hosts[host].name,
        );
        // The issue's bound is 5 s (the manager's plugin polls the tasks every second).
        assert!(took < 10_000, "{user}: {took} ms");
    }
    let kept: Vec<&String> = users.iter().filter(|u| !gone.iter().any(|(g, _)| g == *u)).collect();
    assert!(pg_role_exists(kept[0]), "the remaining task keeps its user");
    let removed = Instant::now();
    drop(service);
    assert_eq!(wait_gone(&users, 2, Duration::from_secs(30)).len(), 2, "service rm left a user");
    eprintln!("secret service rm → the last user gone: {} ms", removed.elapsed().as_millis());

    // A path the plugin's identity may not read: the task fails, and says so.
    let denied = unique("vshdenied");
    manager.docker_ok(&[
        "secret",
        "create",
        "--driver",
        DRIVER,
        "--label",
        "path=database/creds/other",
        "--label",
        "field=username",
        &denied,
    ]);
    let service = Service::create(
        &hosts,
        "vshden",
        &["--replicas", "1", "--restart-condition", "none", "--secret", &denied],
    );
    let failed = wait_until(Duration::from_secs(60), || {
        let t = service.tasks(&hosts);
        t.contains("Failed") || t.contains("Rejected")
    });
    let tasks = service.tasks(&hosts);
    eprintln!("docker service ps --no-trunc of the denied secret's service:\n{tasks}");
    assert!(failed, "the task did not fail:\n{tasks}");
    assert!(tasks.contains("secret") && tasks.contains("not found"), "{tasks}");
    assert!(service.running(&hosts).is_empty());
    let log = manager.plugin().log();
    assert!(
        log.contains("permission denied on database/creds/other") && log.contains(&denied),
        "the manager's plugin log names the path:\n{log}"
    );
    drop(service);

    // A wrapped token in a service's volume-opt: the first node to create the volume unwraps
    // it, the second cannot, and its task's error says why.
    let out = bao_cli(
        bao,
        &[
            "token",
            "create",
            "-policy=vault-secrets-node",
            "-ttl=1h",
            "-wrap-ttl=5m",
            "-field=wrapping_token",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let wrapping = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mount = format!(
        "type=volume,source={},target=/run/secrets,readonly,volume-driver={DRIVER},volume-opt=path=database/creds/hosts,volume-opt=wrapped-token={wrapping}",
        unique("vshwrap")
    );
    let service = Service::create(
        &hosts,
        "vshwrap",
        &[
            "--replicas",
            "2",
            "--placement-pref",
            "spread=node.id",
            "--restart-condition",
            "none",
            "--mount",
            &mount,
        ],
    );
    let settled = wait_until(Duration::from_secs(60), || {
        service.running(&hosts).len() == 1 && service.tasks(&hosts).contains("unwrapped once")
    });
    let tasks = service.tasks(&hosts);
    eprintln!("docker service ps --no-trunc of the wrapped token's service:\n{tasks}");
    assert!(settled, "not one task running and one failed saying why:\n{tasks}");
    assert!(
        tasks.contains("a wrapped token can be unwrapped once: for a service on several nodes, give each node its identity"),
        "{tasks}"
    );
    assert!(!tasks.contains(&wrapping), "the wrapping token is not in the error");
    let first = service.running(&hosts).remove(0);
    let c = creds(&hosts, &first);
    pg_login(&c).unwrap();
}
