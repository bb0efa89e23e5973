//! A chaos soak (issue 13, deliverable 5): on a dockerd of the test's own, with a plugin of its
//! own (the e2e tests' driver name, under their lock: see the test), containers holding a KV and a database volume
//! start and stop continuously while, at random moments (seeded; the seed is printed), the
//! plugin is SIGKILLed and restarted, OpenBao is restarted, the private dockerd is SIGKILLed and
//! restarted, and a PostgreSQL cluster of the test's own is restarted.
//!
//! Every running container's credentials are checked over and over: the KV file's content, and
//! a login to PostgreSQL with the database files. A failed check counts unless it overlaps the
//! grace window of a fault that explains its error ([`Fault::explains`]): a dockerd kill (no
//! `docker exec`, and its restart kills the containers) or a PostgreSQL restart (no
//! connection).
//! A plugin crash or an OpenBao outage excuses no failed check: the files and the database
//! users must outlive them. `docker run` and `docker rm` failures are excused in every fault's
//! window and counted outside them too. At the end, with every container removed: no tmpfs
//! mount, token, lease, PostgreSQL role or mount record may be left.
//!
//! `VAULT_SECRETS_CHAOS_SECS` (default 180) sets how long the faults go on,
//! `VAULT_SECRETS_CHAOS_SEED` replays a run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::outage::put_kv2_when_ready;
use crate::util::docker::DockerCli;
use crate::util::dockerd::Dockerd;
use crate::util::vault::*;
use crate::util::*;

/// The KV secret every container must see.
const KV_VALUE: &str = "chaos-kv-value";
/// Containers started at a time, each living a random 3–25 s.
const STARTERS: usize = 4;
/// After a fault ends: how long its effects may last (a dockerd restart kills its containers;
/// OpenBao's connections to a restarted PostgreSQL are re-made at their next use).
const GRACE: Duration = Duration::from_secs(10);
/// The plugin's sweep of mounts whose containers are gone (a dockerd crash sends no Unmount).
const SWEEP_SECS: u64 = 10;

/// A PostgreSQL cluster of the test's own (initdb in a temporary directory, run as `postgres` on
/// a free loopback port), so that restarting it disturbs no other test. Stopped on drop.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

const PG_PASSWORD: &str = "chaos-pg-admin";

impl Postgres {
    fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL installed: run tests/env.sh")
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("an initdb below /usr/lib/postgresql");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), PG_PASSWORD).unwrap();
        for p in [dir.path().to_owned(), dir.path().join("pw")] {
            let ok = Command::new("chown").arg("postgres:postgres").arg(&p).status().unwrap();
            assert!(ok.success(), "chown {}", p.display());
        }
        let pg = Postgres { dir, bin, port: free_port() };
        let data = pg.data().display().to_string();
        let pw = pg.dir.path().join("pw").display().to_string();
        pg.as_postgres(
            "initdb",
            &["-D", &data, "-U", "postgres", "--pwfile", &pw, "--auth-local=trust"],
        );
        pg.as_postgres(
            "pg_ctl",
            &["-D", &data, "-l", &pg.log(), "-w", "-o", &pg.options(), "start"],
        );
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> String {
        self.dir.path().join("postgres.log").display().to_string()
    }

    /// Loopback TCP only (scram, as initdb sets up host logins), its socket in its own directory.
    fn options(&self) -> String {
        format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.path().display()
        )
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("runuser");
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A fast restart: connections are cut, the server comes back on the same port.
    fn restart(&self) {
        let data = self.data().display().to_string();
        self.as_postgres(
            "pg_ctl",
            &["-D", &data, "-l", &self.log(), "-w", "-m", "fast", "-o", &self.options(), "restart"],
        );
    }

    fn connection_url(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// psql over TCP as `user` with `password` (through the environment); stdout or stderr.
    fn psql(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .env_remove("PGSERVICE")
            .stdin(Stdio::null())
            .args(["-XAtqw", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-d", "postgres"])
            .args(["-c", sql, "-U", user])
            .output()
            .expect("psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    fn login(&self, creds: &Creds) -> Result<(), String> {
        match self.psql(&creds.user, &creds.password, "select 1")?.as_str() {
            "1" => Ok(()),
            other => Err(format!("select 1 gave {other:?}")),
        }
    }

    /// The roles OpenBao made (`v-…`).
    fn dynamic_roles(&self) -> Vec<String> {
        let roles = self
            .psql("postgres", PG_PASSWORD, "SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%'")
            .expect("psql as postgres");
        roles.lines().map(str::to_owned).collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &data, "-w", "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The faults injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    PluginKill,
    BaoRestart,
    DockerdKill,
    PostgresRestart,
}

impl Fault {
    const ALL: [Fault; 4] =
        [Fault::PluginKill, Fault::BaoRestart, Fault::DockerdKill, Fault::PostgresRestart];

    /// Whether a credential check failing with `error` during this fault (and its grace) is
    /// explained by it: no `docker exec` while dockerd is away (its restart kills the
    /// containers); no connection to PostgreSQL while it restarts. Nothing else: a user that
    /// does not exist, or a password refused, is never a restart's doing.
    fn explains(self, error: &str) -> bool {
        const RESTARTING: [&str; 6] = [
            "Connection refused",
            "shutting down",
            "starting up",
            "terminating connection",
            "server closed the connection",
            "timeout expired",
        ];
        match self {
            Fault::DockerdKill => error.starts_with("docker exec:"),
            Fault::PostgresRestart => RESTARTING.iter().any(|r| error.contains(r)),
            Fault::PluginKill | Fault::BaoRestart => false,
        }
    }
}

/// One injected fault, from its start to the moment the component answered again.
#[derive(Debug, Clone, Copy)]
struct Window {
    fault: Fault,
    start: Instant,
    end: Option<Instant>,
}

#[derive(Default)]
struct Windows(Mutex<Vec<Window>>);

impl Windows {
    fn open(&self, fault: Fault) -> usize {
        let mut w = self.0.lock().unwrap();
        w.push(Window { fault, start: Instant::now(), end: None });
        w.len() - 1
    }

    /// Closes window `i`; returns how long it was open.
    fn close(&self, i: usize) -> Duration {
        let mut windows = self.0.lock().unwrap();
        let now = Instant::now();
        windows[i].end = Some(now);
        now - windows[i].start
    }

    /// The fault that excuses a failure seen in `[from, to]`: one of those that `explains`
    /// whose window (widened by a second before and [`GRACE`] after) overlaps it.
    fn excuse(
        &self,
        from: Instant,
        to: Instant,
        explains: impl Fn(Fault) -> bool,
    ) -> Option<Fault> {
        self.0.lock().unwrap().iter().find_map(|w| {
            let overlaps = to + Duration::from_secs(1) >= w.start
                && w.end.is_none_or(|end| from <= end + GRACE);
            (explains(w.fault) && overlaps).then_some(w.fault)
        })
    }
}

/// What the workload saw.
#[derive(Default)]
struct Tally {
    checks: AtomicUsize,
    excused_checks: AtomicUsize,
    failed_checks: AtomicUsize,
    runs: AtomicUsize,
    excused_docker: AtomicUsize,
    failed_docker: AtomicUsize,
    /// Containers lost to a dockerd kill (its restart kills them): no longer checked.
    lost: AtomicUsize,
    /// The first few unexcused failures, for the report (never a secret value).
    failures: Mutex<Vec<String>>,
    /// Excused failures: by the fault that explains them, and the first three of each fault.
    excused: Mutex<(Vec<Fault>, Vec<String>)>,
}

impl Tally {
    fn excused(&self, counter: &AtomicUsize, fault: Fault, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut e = self.excused.lock().unwrap();
        if e.0.iter().filter(|f| **f == fault).count() < 3 {
            e.1.push(format!("{fault:?}: {what}"));
        }
        e.0.push(fault);
    }

    /// An unexcused failure, stamped with the wall-clock time to match the plugin log (printed
    /// when the test fails).
    fn failure(&self, counter: &AtomicUsize, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let what = format!("{} {what}", humantime::format_rfc3339_millis(SystemTime::now()));
        eprintln!("UNEXCUSED FAILURE: {what}");
        let mut f = self.failures.lock().unwrap();
        if f.len() < 20 {
            f.push(what);
        }
    }
}

/// A running container of the workload.
struct Running {
    name: String,
    started: Instant,
}

/// What the workload threads share.
struct Soak {
    /// The docker CLI against the private dockerd.
    cli: DockerCli,
    kv: String,
    db: String,
    pg: Arc<Postgres>,
    windows: Windows,
    tally: Tally,
    running: Mutex<Vec<Running>>,
    /// Set at each dockerd restart: containers started before it are gone.
    dockerd_restarted: Mutex<Option<Instant>>,
    stop: AtomicBool,
}

impl Soak {
    fn docker(&self, args: &[&str]) -> Output {
        self.cli.docker(args)
    }

    /// Whether a container started at `started` was lost to a later dockerd restart.
    fn lost(&self, started: Instant) -> bool {
        self.dockerd_restarted.lock().unwrap().is_some_and(|r| r > started)
    }

    /// Starts containers and removes them after a random lifetime, until told to stop.
    fn starter(&self, seed: u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let image = test_image();
        let (kv, db) = (format!("{}:/run/kv:ro", self.kv), format!("{}:/run/db:ro", self.db));
        while !self.stop.load(Ordering::Relaxed) {
            let name = unique("chaos");
            let from = Instant::now();
            let out = self.docker(&[
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                "none",
                "-v",
                &kv,
                "-v",
                &db,
                &image,
                "sleep",
                "3600",
            ]);
            self.tally.runs.fetch_add(1, Ordering::Relaxed);
            if out.status.success() {
                self.running.lock().unwrap().push(Running { name: name.clone(), started: from });
                let life = Duration::from_millis(rng.u64(3_000..25_000));
                while from.elapsed() < life && !self.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                }
                self.running.lock().unwrap().retain(|r| r.name != name);
            } else {
                self.docker_failure(from, &format!("docker run {name}"), &out);
                std::thread::sleep(Duration::from_millis(500));
            }
            self.remove(&name);
        }
    }

    /// `docker rm -f`, retried until the container is gone (a dockerd kill may be under way);
    /// for a minute at most once the workload is told to stop.
    fn remove(&self, name: &str) {
        for attempt in 0.. {
            if attempt >= 60 && self.stop.load(Ordering::Relaxed) {
                return eprintln!("cannot remove {name}: given up");
            }
            let from = Instant::now();
            let out = self.docker(&["rm", "-f", name]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() || stderr.contains("No such container") {
                return;
            }
            self.docker_failure(from, &format!("docker rm -f {name}"), &out);
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn docker_failure(&self, from: Instant, what: &str, out: &Output) {
        let error = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if let Some(fault) = self.windows.excuse(from, Instant::now(), |_| true) {
            self.tally.excused(&self.tally.excused_docker, fault, format!("{what}: {error}"));
        } else {
            self.tally.failure(&self.tally.failed_docker, format!("{what}: {error}"));
        }
    }

    /// Checks every running container's credentials, over and over, until told to stop.
    fn checker(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            let containers: Vec<(String, Instant)> =
                self.running.lock().unwrap().iter().map(|r| (r.name.clone(), r.started)).collect();
            for (name, started) in containers {
                if self.lost(started) {
                    continue;
                }
                let from = Instant::now();
                let result = self.check(&name);
                let to = Instant::now();
                self.tally.checks.fetch_add(1, Ordering::Relaxed);
                let Err(e) = result else { continue };
                let gone = !self.running.lock().unwrap().iter().any(|r| r.name == name);
                if gone || self.lost(started) {
                    // Removed by its starter (or lost to a dockerd restart) meanwhile.
                    self.tally.lost.fetch_add(self.lost(started) as usize, Ordering::Relaxed);
                } else if let Some(fault) = self.windows.excuse(from, to, |f| f.explains(&e)) {
                    self.tally.excused(
                        &self.tally.excused_checks,
                        fault,
                        format!("container {name}: {e}"),
                    );
                } else {
                    self.tally.failure(&self.tally.failed_checks, format!("container {name}: {e}"));
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The KV file's content, and a login with the database files (read again and retried once
    /// if it fails and the files changed: a rotation).
    fn check(&self, name: &str) -> Result<(), String> {
        let read = || -> Result<(String, Creds), String> {
            let script = "cat /run/kv/password && echo && cat /run/db/username && echo && cat /run/db/password";
            let out = self.docker(&["exec", name, "sh", "-c", script]);
            if !out.status.success() {
                return Err(format!(
                    "docker exec: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            let text = String::from_utf8(out.stdout).map_err(|_| "files not UTF-8".to_owned())?;
            let mut lines = text.splitn(3, '\n');
            let (kv, user, password) = (lines.next(), lines.next(), lines.next());
            match (kv, user, password) {
                (Some(kv), Some(user), Some(password)) => Ok((
                    kv.to_owned(),
                    Creds { user: user.to_owned(), password: password.to_owned() },
                )),
                _ => Err("the files are incomplete".to_owned()),
            }
        };
        let (kv, creds) = read()?;
        if kv != KV_VALUE {
            return Err("the KV file does not hold the secret".to_owned());
        }
        let Err(e) = self.pg.login(&creds) else { return Ok(()) };
        let (_, again) = read()?;
        if again == creds {
            return Err(format!("{} (unchanged files) cannot log in: {e}", creds.user));
        }
        self.pg.login(&again).map_err(|e2| {
            format!("{} cannot log in ({e}); nor can {}, read again: {e2}", creds.user, again.user)
        })
    }
}

fn leases(bao: &Bao, prefix: &str) -> usize {
    let (status, v) =
        bao.api_as(&bao.token, "LIST", &format!("sys/leases/lookup/{prefix}"), None).unwrap();
    if status == 404 {
        return 0;
    }
    v["data"]["keys"].as_array().map_or(0, Vec::len)
}

/// The workload's threads: stopped and joined by [`Workload::stop`], or when dropped (a panic of
/// the test), before the dockerd, the plugin, OpenBao and PostgreSQL go.
struct Workload {
    soak: Arc<Soak>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workload {
    fn stop(&mut self) {
        self.soak.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.soak.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Removes the plugin's socket from /run/docker/plugins when the test ends.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn chaos_secs() -> u64 {
    std::env::var("VAULT_SECRETS_CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(180)
}

fn seed() -> u64 {
    std::env::var("VAULT_SECRETS_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

/// The accessors listed that were not there `before`.
fn new_accessors(bao: &Bao, before: &[String]) -> Vec<String> {
    bao.accessors().into_iter().filter(|a| !before.contains(a)).collect()
}

/// Whether `accessor` belongs to a valid token (`lookup-accessor` answers).
fn valid(bao: &Bao, accessor: &str) -> bool {
    let body = json!({ "accessor": accessor });
    let reply = bao.api_as(&bao.token, "POST", "auth/token/lookup-accessor", Some(body));
    reply.is_ok_and(|(status, _)| status == 200)
}

/// The valid tokens made since `before`. An OpenBao killed in the middle of creating or
/// revoking a token can leave its accessor entry listed without the token (lookup: permission
/// denied; `auth/token/tidy` removes such entries): those are no tokens, and not counted.
fn new_tokens(bao: &Bao, before: &[String]) -> Vec<String> {
    new_accessors(bao, before).into_iter().filter(|a| valid(bao, a)).collect()
}

/// What Vault knows of a token left behind (never the token itself): who made it for what,
/// when, and its TTL.
fn describe_token(bao: &Bao, accessor: &str) -> String {
    let (status, v) = bao
        .api_as(
            &bao.token,
            "POST",
            "auth/token/lookup-accessor",
            Some(json!({"accessor": accessor})),
        )
        .unwrap();
    let d = &v["data"];
    format!(
        "{accessor} ({status}): {} meta {} created {} ttl {} expires {}",
        d["display_name"], d["meta"], d["creation_time"], d["ttl"], d["expire_time"]
    )
}

/// Leftovers once everything is removed: (mounts, tokens, leases, roles, records).
fn leftovers(plugin: &Plugin, bao: &Bao, pg: &Postgres, tokens_before: &[String]) -> [usize; 5] {
    let records = std::fs::read_dir(plugin.runtime.join("private/mounts")).map_or(0, |d| d.count());
    [
        plugin.mounts_left().len(),
        new_tokens(bao, tokens_before).len(),
        leases(bao, "database/creds/chaos/"),
        pg.dynamic_roles().len(),
        records,
    ]
}

#[test]
fn chaos_soak_leaves_nothing_behind_and_no_credential_fails_outside_the_faults_on_one_engine() {
    let (secs, seed) = (chaos_secs(), seed());
    eprintln!(
        "chaos soak: {secs} s of faults, seed {seed} (VAULT_SECRETS_CHAOS_SEED={seed} replays it)"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let pg = Arc::new(Postgres::start());
    let mut bao = BaoServer::start();
    bao.api("POST", "sys/mounts/database", Some(json!({"type": "database"})));
    bao.api(
        "POST",
        "database/config/pg",
        Some(json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": pg.connection_url(),
            "username": "postgres",
            "password": PG_PASSWORD,
            "allowed_roles": "*",
            "verify_connection": true,
        })),
    );
    bao.api(
        "POST",
        "database/roles/chaos",
        Some(json!({
            "db_name": "pg",
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
            "revocation_statements": ["DROP ROLE IF EXISTS \"{{name}}\";"],
            "default_ttl": "1m",
            "max_ttl": "3m",
        })),
    );
    put_kv2_when_ready(&bao, "chaos", json!({"password": KV_VALUE}));

    // The e2e tests' driver name, under their lock: the shared dockerds see every socket in
    // /run/docker/plugins while they list volumes, remember each for good, and retry a dead
    // one for ~15 s at every lookup of an unknown volume. A name of its own would do that to
    // them once this test ends.
    let _lock = crate::util::docker::docker_lock();
    let driver = crate::util::docker::DRIVER.to_owned();
    let socket = Path::new("/run/docker/plugins").join(format!("{driver}.sock"));
    let _socket_file = SocketFile(socket.clone());
    let mut plugin = Plugin::start(Some(&socket), &bao.address(), &bao.token, "");
    let mut dockerd = Dockerd::start("chaos");
    plugin.env.push(("DOCKER_HOST".into(), dockerd.host.clone()));
    plugin.env.push(("VAULT_SECRETS_SWEEP_INTERVAL".into(), SWEEP_SECS.to_string()));
    plugin.log_filter = "vault_secrets=info".into();
    plugin.stop(false);
    plugin.restart();
    let tokens_before = bao.accessors();
    let (kv, db) = (unique("chaos-kv"), unique("chaos-db"));
    for (name, path) in [(&kv, "secret/data/chaos"), (&db, "database/creds/chaos")] {
        dockerd.docker_ok(&[
            "volume",
            "create",
            "--driver",
            &driver,
            "-o",
            &format!("path={path}"),
            "-o",
            "ttl=1m",
            "-o",
            "refresh=5s",
            name,
        ]);
    }

    let soak = Arc::new(Soak {
        cli: dockerd.cli.clone(),
        kv: kv.clone(),
        db: db.clone(),
        pg: pg.clone(),
        windows: Windows::default(),
        tally: Tally::default(),
        running: Mutex::new(Vec::new()),
        dockerd_restarted: Mutex::new(None),
        stop: AtomicBool::new(false),
    });
    let mut workload = Workload { soak: soak.clone(), threads: Vec::new() };
    for i in 0..STARTERS {
        let (soak, seed) = (soak.clone(), seed.wrapping_add(i as u64 + 1));
        workload.threads.push(std::thread::spawn(move || soak.starter(seed)));
    }
    let checker = soak.clone();
    workload.threads.push(std::thread::spawn(move || checker.checker()));

    // The faults: each kind in turn, in a shuffled order, at random moments.
    let started = Instant::now();
    let mut injected = Vec::new();
    let mut order = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(rng.u64(8_000..20_000)));
        if order.is_empty() {
            order = Fault::ALL.to_vec();
            rng.shuffle(&mut order);
        }
        let fault = order.pop().unwrap();
        let down = Duration::from_millis(rng.u64(500..4_000));
        let at = started.elapsed();
        let w = soak.windows.open(fault);
        match fault {
            Fault::PluginKill => {
                plugin.stop(true);
                std::thread::sleep(down);
                plugin.restart();
            }
            Fault::BaoRestart => {
                bao.stop();
                std::thread::sleep(down);
                bao.restart();
            }
            Fault::DockerdKill => {
                dockerd.kill();
                std::thread::sleep(down);
                dockerd.restart();
                *soak.dockerd_restarted.lock().unwrap() = Some(Instant::now());
            }
            Fault::PostgresRestart => pg.restart(),
        }
        let took = soak.windows.close(w);
        eprintln!(
            "t={:>5.1} s {fault:?}: out for {:.1} s ({} containers running)",
            at.as_secs_f64(),
            took.as_secs_f64(),
            soak.running.lock().unwrap().len()
        );
        injected.push(fault);
    }
    workload.stop();
    let left_containers = dockerd.docker_ok(&["ps", "-aq"]);
    assert!(left_containers.is_empty(), "containers left: {left_containers}");

    // Everything revoked and released: the sweep takes mounts whose Unmount never came.
    let settle = Instant::now();
    let at_once = leftovers(&plugin, &bao, &pg, &tokens_before);
    eprintln!("left as the last container was removed (mounts, tokens, leases, roles, records): {at_once:?}");
    let clean = wait_until(Duration::from_secs(6 * SWEEP_SECS + 60), || {
        leftovers(&plugin, &bao, &pg, &tokens_before) == [0; 5]
    });
    let [mounts, tokens, leases, roles, records] = leftovers(&plugin, &bao, &pg, &tokens_before);
    let dangling = new_accessors(&bao, &tokens_before).len() - tokens;
    let t = &soak.tally;
    let count = |f: Fault| injected.iter().filter(|i| **i == f).count();
    eprintln!(
        "chaos soak (seed {seed}, {secs} s): faults: {} plugin SIGKILLs, {} OpenBao restarts, {} dockerd SIGKILLs, {} PostgreSQL restarts; \
         {} docker runs, {} credential checks; failed checks: {} outside the faults, {} excused; \
         docker run/rm failures: {} outside the faults, {} excused; {} checks of containers lost to a dockerd restart; \
         left after {:.1} s: {mounts} tmpfs mounts, {tokens} tokens, {leases} leases, {roles} PostgreSQL roles, {records} mount records \
         ({dangling} accessor entries of no token: OpenBao killed mid-write)",
        count(Fault::PluginKill),
        count(Fault::BaoRestart),
        count(Fault::DockerdKill),
        count(Fault::PostgresRestart),
        t.runs.load(Ordering::Relaxed),
        t.checks.load(Ordering::Relaxed),
        t.failed_checks.load(Ordering::Relaxed),
        t.excused_checks.load(Ordering::Relaxed),
        t.failed_docker.load(Ordering::Relaxed),
        t.excused_docker.load(Ordering::Relaxed),
        t.lost.load(Ordering::Relaxed),
        settle.elapsed().as_secs_f64(),
    );
    let (excused_by, excused_first) = t.excused.lock().unwrap().clone();
    let by = |f: Fault| excused_by.iter().filter(|e| **e == f).count();
    eprintln!(
        "excused failures by fault: plugin {}, OpenBao {}, dockerd {}, PostgreSQL {}; the first of each: {excused_first:#?}; \
         mounts released by the sweep (no Unmount came): {}",
        by(Fault::PluginKill),
        by(Fault::BaoRestart),
        by(Fault::DockerdKill),
        by(Fault::PostgresRestart),
        plugin.log().matches("no running container uses this mount any more").count()
    );
    let failures = t.failures.lock().unwrap().clone();
    assert!(
        t.failed_checks.load(Ordering::Relaxed) == 0
            && t.failed_docker.load(Ordering::Relaxed) == 0,
        "failures outside the faults: {failures:#?}"
    );
    assert!(t.checks.load(Ordering::Relaxed) > 0, "no credential was checked");
    if !clean {
        for accessor in new_tokens(&bao, &tokens_before) {
            eprintln!("token left: {}", describe_token(&bao, &accessor));
        }
    }
    assert!(clean, "left behind: {mounts} mounts, {tokens} tokens, {leases} leases, {roles} roles, {records} records");
    for v in [&kv, &db] {
        dockerd.docker_ok(&["volume", "rm", v]);
    }
}
