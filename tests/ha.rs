//! Vault HA end to end: a three-node OpenBao cluster with integrated (raft) storage on
//! loopback, the plugin given every node (or one standby), containers holding database
//! credentials while the active node is SIGKILLed. Credentials are checked as the containers'
//! users log in to PostgreSQL (as `leases` does); no password is printed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::docker::{docker, docker_ok, image, E2e};
use crate::util::raft::*;
use crate::util::vault::*;
use crate::util::*;

/// The E2e fixture with its plugin (same driver and socket) given `addresses` as
/// `vault.address` (a list when there are several) and `token` as its identity.
fn e2e_against(addresses: &[String], token: &str) -> E2e {
    let mut t = E2e::start();
    t.plugin.stop(true);
    let socket = t.plugin.socket.clone();
    t.plugin = Plugin::start(Some(&socket), &addresses[0], token, "");
    if addresses.len() > 1 {
        let text = std::fs::read_to_string(&t.plugin.config).unwrap();
        let list: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
        let line = format!("address = [{}]", list.join(", "));
        let text = text.replace(&format!("address = \"{}\"", addresses[0]), &line);
        assert!(text.contains(&line), "{text}");
        std::fs::write(&t.plugin.config, text).unwrap();
        t.plugin.stop(false);
        t.plugin.restart();
    }
    t
}

/// `docker run -d` of a sleeping container with `volume` at /run/db, named up front so that
/// `t` removes it even if the run fails.
fn run(t: &mut E2e, volume: &str) -> String {
    let name = unique("ha");
    t.containers.push(name.clone());
    run_named(&name, volume).map_err(|e| panic!("docker run: {e}")).unwrap();
    name
}

fn run_named(name: &str, volume: &str) -> Result<(), String> {
    let mount = format!("{volume}:/run/db:ro");
    let out = docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "-v",
        &mount,
        &image(),
        "sleep",
        "600",
    ]);
    out.status.success().then_some(()).ok_or_else(|| String::from_utf8_lossy(&out.stderr).into())
}

fn read_creds(c: &str) -> Result<Creds, String> {
    let out =
        docker(&["exec", c, "sh", "-c", "cat /run/db/username && echo && cat /run/db/password"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    let text = String::from_utf8(out.stdout).map_err(|_| "not UTF-8".to_owned())?;
    let (user, password) = text.split_once('\n').ok_or("two files")?;
    Ok(Creds { user: user.to_owned(), password: password.to_owned() })
}

/// The container's credentials work: read, log in; a failed login counts only if the files
/// did not change in between (read again and retried once).
fn creds_work(c: &str) -> Result<Creds, String> {
    let first = read_creds(c)?;
    let Err(e) = pg_login(&first) else { return Ok(first) };
    let again = read_creds(c)?;
    if again == first {
        return Err(format!("{} cannot log in: {e}", first.user));
    }
    pg_login(&again).map(|()| again)
}

/// Checks every container's credentials over and over in a thread; keeps, per container, the
/// longest time between two successful checks, and the failures seen.
struct Watch {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<Vec<Watched>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone)]
struct Watched {
    container: String,
    last_ok: Instant,
    longest_gap: Duration,
    failures: Vec<String>,
    checks: usize,
}

impl Watch {
    fn start(containers: &[String]) -> Watch {
        let now = Instant::now();
        let state: Vec<Watched> = containers
            .iter()
            .map(|c| Watched {
                container: c.clone(),
                last_ok: now,
                longest_gap: Duration::ZERO,
                failures: Vec::new(),
                checks: 0,
            })
            .collect();
        let (stop, state) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(state)));
        let (s, st) = (stop.clone(), state.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let containers: Vec<String> =
                    st.lock().unwrap().iter().map(|w| w.container.clone()).collect();
                for (i, c) in containers.iter().enumerate() {
                    let result = creds_work(c);
                    let mut st = st.lock().unwrap();
                    let w = &mut st[i];
                    w.checks += 1;
                    match result {
                        Ok(_) => {
                            w.longest_gap = w.longest_gap.max(w.last_ok.elapsed());
                            w.last_ok = Instant::now();
                        }
                        Err(e) => w.failures.push(e),
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Watch { stop, state, thread: Some(thread) }
    }

    fn finish(mut self) -> Vec<Watched> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        let mut state = self.state.lock().unwrap().clone();
        for w in &mut state {
            w.longest_gap = w.longest_gap.max(w.last_ok.elapsed());
        }
        state
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `docker stop` of `c`; how long after it returned the database user was gone.
fn stop_and_time_the_drop(c: &str, user: &str) -> Duration {
    docker_ok(&["stop", "-t", "1", c]);
    let stopped = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || !pg_role_exists(user)),
        "{user} still exists 10 s after `docker stop`"
    );
    stopped.elapsed()
}

#[test]
fn a_leader_failover_keeps_every_container_s_credentials_working_on_one_engine() {
    let mut cluster = Cluster::start();
    cluster.active_node().database_role("ha", "15s", "10m");
    let token = cluster.plugin_token();
    let mut t = e2e_against(&cluster.addresses(), &token);
    let vol = t.volume("ha-db", &["path=database/creds/ha"]);
    let containers: Vec<String> = (0..3).map(|_| run(&mut t, &vol)).collect();
    for c in &containers {
        creds_work(c).unwrap_or_else(|e| panic!("before the failover: {e}"));
    }
    let watch = Watch::start(&containers);
    // Into the leases' lives (renewed at about 10 s of 15), then the active node goes.
    std::thread::sleep(Duration::from_secs(6));
    let leader = cluster.wait_active(Duration::from_secs(5));
    cluster.kill(leader);
    let killed = Instant::now();
    let during = unique("ha");
    t.containers.push(during.clone());
    let run_during = {
        let (name, vol) = (during.clone(), vol.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            (run_named(&name, &vol), started.elapsed())
        })
    };
    let new_leader = cluster.wait_active(Duration::from_secs(60));
    let election = killed.elapsed();
    eprintln!("node{leader} SIGKILLed; node{new_leader} active after {}", secs(election));
    let (ran, run_took) = run_during.join().unwrap();
    ran.unwrap_or_else(|e| panic!("`docker run` started during the election failed: {e}"));
    eprintln!("`docker run` started during the election took {}", secs(run_took));
    let user_during = creds_work(&during)
        .unwrap_or_else(|e| panic!("the container started during the election: {e}"))
        .user;
    // Past two TTLs of the leases: they must have been renewed (or replaced) by the new leader.
    while killed.elapsed() < Duration::from_secs(35) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let watched = watch.finish();
    let longest = watched.iter().map(|w| w.longest_gap).max().unwrap();
    let checks: usize = watched.iter().map(|w| w.checks).sum();
    let failures: Vec<&String> = watched.iter().flat_map(|w| &w.failures).collect();
    eprintln!(
        "election {}; longest time a container was without working credentials: {} ({checks} checks, {} failed)",
        secs(election),
        secs(longest),
        failures.len()
    );
    for f in failures.iter().take(5) {
        eprintln!("  failed check: {f}");
    }
    assert!(
        longest <= election + Duration::from_secs(5),
        "a container was without working credentials for {} (election {})",
        secs(longest),
        secs(election)
    );

    cluster.restart(leader);
    let rejoined = wait_until(Duration::from_secs(30), || {
        cluster.voters().len() == 3 && cluster.nodes[leader].bao.health() == 429
    });
    assert!(rejoined, "node{leader} did not rejoin: {:?}\n{}", cluster.voters(), cluster.logs());
    eprintln!("node{leader} restarted and rejoined as a standby: {:?}", cluster.voters());
    let check = plugin_cli(&t.plugin.config, &["check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "check: {report}{}", String::from_utf8_lossy(&check.stderr));
    assert_eq!(report.matches(": active").count(), 1, "{report}");
    assert_eq!(report.matches(": standby").count(), 2, "{report}");

    for c in containers.iter().chain([&during]) {
        let user = if *c == during { user_during.clone() } else { creds_work(c).unwrap().user };
        let delay = stop_and_time_the_drop(c, &user);
        eprintln!("{user} dropped {} ms after `docker stop` returned", delay.as_millis());
    }
}

#[test]
fn a_plugin_pointed_at_one_standby_works_through_it_on_one_engine() {
    let mut cluster = Cluster::start();
    cluster.active_node().database_role("ha1", "1m", "10m");
    cluster.active_node().put_kv2("ha1", json!({"value": "v1"}));
    let token = cluster.plugin_token();
    let standby = cluster.standby();
    // A standby serves KV reads itself once the new mount has settled there.
    let readable = wait_until(Duration::from_secs(20), || {
        let bao = &cluster.nodes[standby].bao;
        bao.api_as(&bao.token, "GET", "secret/data/ha1", None).is_ok_and(|r| r.0 == 200)
    });
    assert!(readable, "node{standby} does not serve secret/data/ha1");
    let mut t = e2e_against(&[cluster.nodes[standby].bao.address()], &token);
    let kv = t.volume("ha1-kv", &["path=secret/data/ha1"]);
    let db = t.volume("ha1-db", &["path=database/creds/ha1"]);
    let c = run(&mut t, &db);
    let user = creds_work(&c).unwrap_or_else(|e| panic!("through the standby: {e}")).user;
    let kv_c = unique("ha");
    t.containers.push(kv_c.clone());
    let mount = format!("{kv}:/run/kv:ro");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &kv_c,
        "--network",
        "none",
        "-v",
        &mount,
        &image(),
        "sleep",
        "600",
    ]);
    assert_eq!(docker_ok(&["exec", &kv_c, "cat", "/run/kv/value"]), "v1");
    let delay = stop_and_time_the_drop(&c, &user);
    eprintln!(
        "through standby node{standby}: {user} dropped {} ms after `docker stop`",
        delay.as_millis()
    );

    // The active node goes: once a leader is elected (this standby or the other), the same
    // single address serves again.
    let leader = cluster.wait_active(Duration::from_secs(5));
    cluster.kill(leader);
    let killed = Instant::now();
    // With one address nothing is waited out inside a request: a mount now fails at once and
    // says why (or works, if the election is already over).
    let id = mount_id();
    let (_, during) =
        t.plugin.call("/VolumeDriver.Mount", Some(json!({"Name": db, "ID": id}))).unwrap();
    match during["Err"].as_str().filter(|e| !e.is_empty()) {
        Some(e) => {
            eprintln!("a mount through node{standby} during the election: {e}");
            assert!(e.contains(&cluster.nodes[standby].bao.address()), "{e}");
        }
        None => t.plugin.unmount(&db, &id),
    }
    let new_leader = cluster.wait_active(Duration::from_secs(60));
    let election = killed.elapsed();
    eprintln!("node{new_leader} active after {}", secs(election));
    // A standby may answer with a redirect to the new leader (not followed: it is not listed)
    // until its forwarding to it is up; the error says so.
    let mut last = String::new();
    let serves = wait_until(Duration::from_secs(60), || {
        let id = mount_id();
        let (_, v) =
            t.plugin.call("/VolumeDriver.Mount", Some(json!({"Name": db, "ID": id}))).unwrap();
        match v["Err"].as_str().filter(|e| !e.is_empty()) {
            Some(e) => {
                if e != last {
                    eprintln!("{:>8}: {e}", secs(killed.elapsed()));
                    last = e.to_owned();
                }
                if e.contains("307") {
                    assert!(e.contains("redirects to") && e.contains("not followed"), "{e}");
                }
                std::thread::sleep(Duration::from_millis(250));
                false
            }
            None => {
                t.plugin.unmount(&db, &id);
                true
            }
        }
    });
    assert!(serves, "node{standby} does not serve a mount 60 s after the election: {last}");
    eprintln!(
        "through node{standby} alone: mounts work again {} after the kill (election {})",
        secs(killed.elapsed()),
        secs(election)
    );
    let c = run(&mut t, &db);
    let user = creds_work(&c).unwrap_or_else(|e| panic!("after the election: {e}")).user;
    let delay = stop_and_time_the_drop(&c, &user);
    eprintln!("after the election: {user} dropped {} ms after `docker stop`", delay.as_millis());
}
