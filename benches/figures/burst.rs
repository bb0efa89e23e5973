//! The burst: 64 running containers, each with its own database user, removed at once — by 64
//! parallel `docker rm -f` (the benchmark's engine) and by `docker compose down` of a 64-replica
//! service (Engine 26 and Compose v2, from `tests/engines.sh`) — measured per container from its
//! own `die` event (`docker events`, `timeNano`) to its user's disappearance from `pg_roles`
//! (one query listing them all, every 5 ms, on one psql session). Beside each, in the same run,
//! 64 tokens each holding one database lease revoked at once with `revoke-self` (what the
//! plugin sends), per token from its request's start. The plugin's audit lines (the end taken —
//! at the container's `die` event, which the plugin follows, or at the Unmount —, revocation
//! confirmed: each names its container) split every delay into the plugin's and OpenBao's share
//! and PostgreSQL's after the revocation returned; dockerd's Unmount is timed apart.

use super::*;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout};
use std::sync::mpsc;
use std::time::SystemTime;

const N: usize = 64;
const ROLE: &str = "burst";
/// The driver name of the plugin serving Engine 26 (its sweep and signals ask that engine).
const DRIVER26: &str = "vault-secrets-bench26";
const ENGINE26_SOCKET: &str = "/run/vault-secrets-test/docker26.sock";

pub(crate) fn burst(b: &Bench) -> Vec<Row> {
    let _lock = docker_lock();
    b.bao.database_role(ROLE, "1h", "2h");
    b.bao.policy(
        "burst-raw",
        &format!("path \"database/creds/{ROLE}\" {{ capabilities = [\"read\"] }}"),
    );
    let tokens_before = b.bao.accessors().len();
    let mut rows = Vec::new();

    let engine = Cli::default_engine();
    let vol =
        b.docker_volume("bench-burst", Some(DRIVER), &[&format!("path=database/creds/{ROLE}")]);
    let ids = start_containers(b, &engine, &vol);
    let users = users_of(&engine, &ids);
    let tied = wait_tied(&b.plugin, &ids);
    let removal = measure(&engine, &users, || {
        std::thread::scope(|s| {
            for id in &ids {
                s.spawn(|| engine.ok(&["rm", "-f", id]));
            }
        })
    });
    b.containers.lock().unwrap().retain(|c| !ids.contains(c));
    let raw = raw_burst(&b.bao);
    rows.extend(report("64 × parallel `docker rm -f`", &removal, &raw, &b.plugin, tied));

    match Cli::engine26() {
        Some(engine26) => {
            let compose = compose_burst(b, &engine26);
            let raw = raw_burst(&b.bao);
            let (down, plugin, tied) = compose;
            rows.extend(report("`docker compose down`, 64 replicas, Engine 26", &down, &raw, &plugin, tied));
        }
        None => eprintln!("burst: no Engine 26 at {ENGINE26_SOCKET} (tests/engines.sh): compose down not measured"),
    }

    // Nothing of the bursts is left: tokens, leases, mount records.
    let left = |b: &Bench| b.bao.accessors().len().saturating_sub(tokens_before);
    assert!(
        wait_until(Duration::from_secs(10), || left(b) == 0),
        "{} tokens left after the bursts",
        left(b)
    );
    assert_eq!(leases_of(&b.bao, &format!("database/creds/{ROLE}/")), 0, "database leases left");
    let records =
        std::fs::read_dir(b.plugin.runtime.join("private/mounts")).map_or(0, |d| d.count());
    assert_eq!(records, 0, "mount records left");
    rows
}

/// The delays of one burst: per container (or token), from its `die` event (or its request's
/// start) to its user's disappearance; the containers' IDs, their die times and users.
struct Burst {
    delays: Vec<Duration>,
    /// Per container: its ID, its die time, when its user was gone.
    containers: Vec<(String, SystemTime, SystemTime)>,
}

/// 64 containers of `vol` started (16 at a time), each printing its user name; their IDs.
fn start_containers(b: &Bench, engine: &Cli, vol: &str) -> Vec<String> {
    let bind = format!("{vol}:/run/secrets:ro");
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..N / 16 {
        let batch: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let name = unique("bench-burst");
                    b.containers.lock().unwrap().push(name.clone());
                    let bind = &bind;
                    s.spawn(move || {
                        let image = image();
                        let script = "cat /run/secrets/username; echo; exec sleep 600";
                        let args = ["run", "-d", "--name", &name, "--network", "none", "-v", bind];
                        engine.ok(&[&args[..], &[&image, "sh", "-c", script]].concat())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        ids.extend(batch);
    }
    b.containers.lock().unwrap().extend(ids.iter().cloned());
    eprintln!("burst: {N} containers started in {:.1} s", started.elapsed().as_secs_f64());
    ids
}

/// Each container's database user (what it printed), by container ID.
fn users_of(engine: &Cli, ids: &[String]) -> HashMap<String, String> {
    ids.iter()
        .map(|id| {
            let mut user = String::new();
            let read = wait_until(Duration::from_secs(30), || {
                user = engine.ok(&["logs", id]);
                !user.is_empty()
            });
            assert!(read, "container {id} printed no user name");
            (id.clone(), user)
        })
        .collect()
}

/// Waits (30 s at most) for the plugin's `container` line of each of `ids`; how many came.
fn wait_tied(plugin: &Plugin, ids: &[String]) -> usize {
    let started = Instant::now();
    let count = || {
        let lines = audit_lines(plugin);
        let tied: HashSet<&str> = lines
            .iter()
            .filter(|l| l["event"] == "container")
            .filter_map(|l| l["container_id"].as_str())
            .collect();
        ids.iter().filter(|id| tied.contains(id.as_str())).count()
    };
    wait_until(Duration::from_secs(30), || count() == ids.len());
    let n = count();
    eprintln!(
        "burst: {n} of {} mounts tied to their containers after {:.1} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    n
}

/// Removes the containers with `remove` while their users are watched; the delays from each
/// container's `die` event.
fn measure(engine: &Cli, users: &HashMap<String, String>, remove: impl FnOnce()) -> Burst {
    let ids: Vec<String> = users.keys().cloned().collect();
    let dies = Dies::start(engine, &ids);
    let watch = Watch::start(users.values().cloned().collect());
    let started = Instant::now();
    remove();
    let removed = started.elapsed();
    let gone = watch.finish(Duration::from_secs(60));
    let dies = dies.finish();
    eprintln!(
        "burst: removal returned after {:.2} s; {} users gone, {} die events",
        removed.as_secs_f64(),
        gone.len(),
        dies.len()
    );
    let mut burst = Burst { delays: Vec::new(), containers: Vec::new() };
    for (id, user) in users {
        let die = *dies.get(id).unwrap_or_else(|| panic!("no die event for {id}"));
        let gone =
            *gone.get(user).unwrap_or_else(|| panic!("the user of {id} was not dropped in 60 s"));
        burst.delays.push(gone.duration_since(die).unwrap_or_default());
        burst.containers.push((id.clone(), die, gone));
    }
    burst
}

/// 64 tokens, each holding one lease of the database role, revoked at once (`revoke-self`);
/// per token from its request's start to its user's disappearance.
fn raw_burst(bao: &Bao) -> Burst {
    let tokens: Vec<(String, String)> = (0..N)
        .map(|_| {
            let body = json!({"policies": ["burst-raw"], "ttl": "1h"});
            let token = bao.api("POST", "auth/token/create", Some(body))["auth"]["client_token"]
                .as_str()
                .unwrap()
                .to_owned();
            let (status, creds) =
                bao.api_as(&token, "GET", &format!("database/creds/{ROLE}"), None).unwrap();
            assert_eq!(status, 200, "{creds}");
            (token, creds["data"]["username"].as_str().unwrap().to_owned())
        })
        .collect();
    let watch = Watch::start(tokens.iter().map(|t| t.1.clone()).collect());
    let barrier = std::sync::Barrier::new(N);
    let starts: Vec<(String, SystemTime)> = std::thread::scope(|s| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|(token, user)| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = SystemTime::now();
                    let (status, v) =
                        bao.api_as(token, "POST", "auth/token/revoke-self", None).unwrap();
                    assert!(status < 300, "revoke-self: {status} {v}");
                    (user.clone(), start)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let gone = watch.finish(Duration::from_secs(60));
    let delays = starts
        .iter()
        .map(|(user, start)| {
            let gone = gone.get(user).unwrap_or_else(|| panic!("{user} not dropped in 60 s"));
            gone.duration_since(*start).unwrap_or_default()
        })
        .collect();
    Burst { delays, containers: Vec::new() }
}

/// The 64-replica compose project on Engine 26, its own plugin serving it, brought down at once.
fn compose_burst(b: &Bench, engine: &Cli) -> (Burst, Plugin, usize) {
    let socket = Path::new("/run/docker/plugins").join(format!("{DRIVER26}.sock"));
    let host = format!("unix://{ENGINE26_SOCKET}");
    let plugin =
        start_plugin_with(Some(&socket), &b.bao.address(), &b.bao.token, &[("DOCKER_HOST", &host)]);
    let project = Project::new(engine.clone());
    project.write(&format!(
        "services:\n  app:\n    image: {}\n    network_mode: none\n    command: [\"sh\", \"-c\", \"cat /run/secrets/username; echo; exec sleep 600\"]\n    volumes: [\"creds:/run/secrets:ro\"]\nvolumes:\n  creds:\n    driver: {DRIVER26}\n    driver_opts:\n      path: database/creds/{ROLE}\n",
        image()
    ));
    let started = Instant::now();
    project.ok(&["up", "-d", "--scale", &format!("app={N}")]);
    eprintln!("burst: compose up of {N} replicas in {:.1} s", started.elapsed().as_secs_f64());
    let label = format!("label=com.docker.compose.project={}", project.name);
    let ids: Vec<String> = engine
        .ok(&["ps", "-q", "--no-trunc", "--filter", &label])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), N, "{N} replicas running");
    let users = users_of(engine, &ids);
    let tied = wait_tied(&plugin, &ids);
    let down = measure(engine, &users, || {
        project.ok(&["down", "-t", "0"]);
    });
    drop(project); // down -v: the volume too
    let _ = std::fs::remove_file(&socket);
    (down, plugin, tied)
}

/// The figures of one burst beside its raw baseline, and where the time went.
fn report(what: &str, burst: &Burst, raw: &Burst, plugin: &Plugin, tied: usize) -> Vec<Row> {
    let (p50, max) = (percentile(&burst.delays, 50.0), percentile(&burst.delays, 100.0));
    let (raw_p50, raw_max) = (percentile(&raw.delays, 50.0), percentile(&raw.delays, 100.0));
    let r = ratio(max, raw_max);
    // Signed: a user can be gone before its container's `die` is logged (Engine 26).
    let mut from_die: Vec<f64> =
        burst.containers.iter().map(|(_, die, gone)| signed_ms(*die, *gone)).collect();
    let mut rows = vec![Row::new(
        &format!("burst, {what}: die → user dropped (n={})", burst.delays.len()),
        format!("p50 {}, max {} ({})", ms(p50), ms(max), split(&mut from_die)),
        format!("p50 {}, max {} raw: {N} tokens revoke-self at once", ms(raw_p50), ms(raw_max)),
        format!("max ≤ 1.25× raw max: {r:.2}×"),
        Some(r <= 1.25),
    )];
    // The split, from the plugin's audit lines of each container: the end taken (its `die`
    // line: the plugin followed the engine's event; or its `unmount` line, whichever came
    // first), the revocation confirmed; and, apart, when dockerd's Unmount came. Signed:
    // Engine 26 logs `die` after it has unmounted the volumes.
    let lines = audit_lines(plugin);
    let at = |event: &str, id: &str| {
        lines
            .iter()
            .rev()
            .filter(|l| l["event"] == event && l["container_id"] == id)
            .find_map(|l| humantime::parse_rfc3339(l["time"].as_str()?).ok())
    };
    let (mut to_taken, mut to_revoked, mut to_gone) = (Vec::new(), Vec::new(), Vec::new());
    let (mut to_unmount, mut by_die) = (Vec::new(), 0);
    for (id, die, gone) in &burst.containers {
        let (died, unmounted) = (at("die", id), at("unmount", id));
        let (Some(taken), Some(revoked)) =
            (died.into_iter().chain(unmounted).min(), at("revoke", id))
        else {
            continue;
        };
        by_die += usize::from(died.is_some_and(|d| unmounted.is_none_or(|u| d <= u)));
        to_taken.push(signed_ms(*die, taken));
        to_revoked.push(signed_ms(taken, revoked));
        to_gone.push(signed_ms(revoked, *gone));
        if let Some(unmount) = unmounted {
            to_unmount.push(signed_ms(*die, unmount));
        }
    }
    if to_taken.is_empty() {
        return rows;
    }
    let n = to_taken.len();
    rows.push(Row::new(
        &format!("  where it goes ({tied} of {N} mounts tied to their containers; split over {n})"),
        format!(
            "die → end taken ({by_die} at the die event, {} at the Unmount) {}; → revoke confirmed {}",
            n - by_die,
            split(&mut to_taken),
            split(&mut to_revoked)
        ),
        format!(
            "revoke confirmed → user gone {}; die → dockerd's Unmount {}",
            split(&mut to_gone),
            split(&mut to_unmount)
        ),
        "".into(),
        None,
    ));
    rows
}

/// Milliseconds from `a` to `b`, negative when `b` came first.
fn signed_ms(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// "p50 X ms, max Y ms" of signed milliseconds.
fn split(ms: &mut [f64]) -> String {
    ms.sort_by(f64::total_cmp);
    let p50 = ms[(ms.len().div_ceil(2)).max(1) - 1];
    format!("p50 {p50:.1} ms, max {:.1} ms", ms[ms.len() - 1])
}

// ---- helpers ----------------------------------------------------------------------------------

/// The audit lines of a plugin (on its stderr, in its log: no `audit_log` is set).
fn audit_lines(plugin: &Plugin) -> Vec<Value> {
    plugin
        .log()
        .lines()
        .filter(|l| l.starts_with("{\"seq\":"))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `docker events` of the containers' deaths, streamed (dockerd keeps only its last 256
/// events for `--since`: a burst's die events are not all there afterwards).
struct Dies {
    child: Child,
    reader: std::thread::JoinHandle<HashMap<String, SystemTime>>,
}

impl Dies {
    fn start(engine: &Cli, ids: &[String]) -> Dies {
        let args = ["events", "--filter", "type=container", "--filter", "event=die"];
        let mut child = engine
            .command()
            .args(args)
            .args(["--format", "{{json .}}"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker events");
        let out = BufReader::new(child.stdout.take().unwrap());
        let wanted: HashSet<String> = ids.iter().cloned().collect();
        let reader = std::thread::spawn(move || {
            let mut dies = HashMap::new();
            for line in out.lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                let (Some(nanos), Some(id)) = (v["timeNano"].as_u64(), v["Actor"]["ID"].as_str())
                else {
                    continue;
                };
                if wanted.contains(id) {
                    dies.insert(
                        id.to_owned(),
                        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos),
                    );
                }
                if dies.len() == wanted.len() {
                    break;
                }
            }
            dies
        });
        std::thread::sleep(Duration::from_secs(1)); // subscribed before anything dies
        Dies { child, reader }
    }

    /// Each container's die time, by ID (waiting 30 s at most for the last).
    fn finish(mut self) -> HashMap<String, SystemTime> {
        let end = Instant::now() + Duration::from_secs(30);
        while !self.reader.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reader.join().expect("the events reader")
    }
}

fn leases_of(bao: &Bao, prefix: &str) -> usize {
    let (status, v) =
        bao.api_as(&bao.token, "LIST", &format!("sys/leases/lookup/{prefix}"), None).unwrap();
    if status == 404 {
        return 0;
    }
    v["data"]["keys"].as_array().map_or(0, Vec::len)
}

/// The Docker lock the end-to-end tests take (`tests/e2e.rs`): the burst's 64 containers do
/// not run beside another test's containers on the shared engines.
fn docker_lock() -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/vault-secrets-e2e.lock")
        .expect("lock file");
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    file
}

/// A docker CLI against one engine.
#[derive(Clone)]
struct Cli {
    docker: PathBuf,
    env: Vec<(String, String)>,
}

impl Cli {
    /// The benchmark's engine (`docker` on PATH, its default socket).
    fn default_engine() -> Cli {
        Cli { docker: "docker".into(), env: Vec::new() }
    }

    /// Engine 26 with Compose v2, if `tests/engines.sh` runs it.
    fn engine26() -> Option<Cli> {
        let prefix = engine_prefix("26");
        let cli = Cli {
            docker: prefix.join("usr/bin/docker"),
            env: vec![
                ("DOCKER_HOST".into(), format!("unix://{ENGINE26_SOCKET}")),
                ("DOCKER_CONFIG".into(), prefix.join("docker-config").display().to_string()),
            ],
        };
        let up = cli.command().args(["version", "-f", "{{.Server.Version}}"]).output();
        up.is_ok_and(|o| o.status.success()).then_some(cli)
    }

    fn command(&self) -> Command {
        let mut c = Command::new("timeout");
        c.arg("120").arg(&self.docker).env_remove("DOCKER_HOST");
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("docker CLI");
        assert!(
            out.status.success(),
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// A compose project in a temporary directory; `down -v` when dropped.
struct Project {
    engine: Cli,
    name: String,
    dir: tempfile::TempDir,
}

impl Project {
    fn new(engine: Cli) -> Project {
        Project { engine, name: unique("bench-burst"), dir: tempfile::tempdir().unwrap() }
    }

    fn write(&self, yaml: &str) {
        std::fs::write(self.dir.path().join("compose.yaml"), yaml).unwrap();
    }

    fn ok(&self, args: &[&str]) -> String {
        let file = self.dir.path().join("compose.yaml").display().to_string();
        let all = [&["compose", "-p", &self.name, "-f", &file][..], args].concat();
        self.engine.ok(&all)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let file = self.dir.path().join("compose.yaml").display().to_string();
        let _ = self
            .engine
            .command()
            .args(["compose", "-p", &self.name, "-f", &file, "down", "-t", "0", "-v"])
            .output();
    }
}

/// The users' disappearance from `pg_roles`, watched every 5 ms on one psql session.
struct Watch {
    handle: std::thread::JoinHandle<HashMap<String, SystemTime>>,
    stop: mpsc::Sender<Duration>,
}

impl Watch {
    /// Starts watching once every one of `users` is seen to exist.
    fn start(users: HashSet<String>) -> Watch {
        let (ready_tx, ready) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<Duration>();
        let handle = std::thread::spawn(move || {
            let mut roles = Roles::open();
            let present = roles.list();
            let missing = users.iter().filter(|u| !present.contains(*u)).count();
            ready_tx.send(missing).unwrap();
            let mut gone = HashMap::new();
            let mut deadline: Option<Instant> = None;
            while gone.len() < users.len() && deadline.is_none_or(|d| Instant::now() < d) {
                if deadline.is_none() {
                    deadline = stop_rx.try_recv().ok().map(|t| Instant::now() + t);
                }
                let present = roles.list();
                let now = SystemTime::now();
                for u in &users {
                    if !present.contains(u) {
                        gone.entry(u.clone()).or_insert(now);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            gone
        });
        let missing = ready.recv().expect("the watch started");
        assert_eq!(missing, 0, "{missing} users did not exist before the burst");
        Watch { handle, stop }
    }

    /// Waits (`timeout` at most) for every user to be gone; when each was.
    fn finish(self, timeout: Duration) -> HashMap<String, SystemTime> {
        let _ = self.stop.send(timeout);
        self.handle.join().expect("the watch")
    }
}

/// One psql session listing the roles Vault made (`v-…`).
struct Roles {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Roles {
    fn open() -> Roles {
        let mut child = Command::new("psql")
            .env("PGPASSWORD", pg_password())
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-tAq",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("psql");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Roles { child, stdin, out }
    }

    fn list(&mut self) -> HashSet<String> {
        let query = "SELECT 'roles:' || coalesce(string_agg(rolname, ','), '') FROM pg_roles WHERE rolname LIKE 'v-%';\n";
        self.stdin.write_all(query.as_bytes()).expect("psql takes the query");
        let mut line = String::new();
        self.out.read_line(&mut line).expect("psql answers");
        let roles = line.trim().strip_prefix("roles:").unwrap_or_else(|| panic!("psql: {line:?}"));
        roles.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect()
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
