//! OpenBao processes (an Agent, a server with an audit device) and raw API clients: the
//! baselines the plugin is measured against.

use std::io::{BufRead, Read, Write};
use std::process::{Child, Stdio};

use super::*;

// ---- OpenBao Agent ----------------------------------------------------------------------------

/// An OpenBao Agent (the real binary, not a wrapper script) rendering `templates` into `dir`,
/// killed on drop.
pub(crate) struct Agent {
    pub(crate) child: Child,
    pub(crate) started: Instant,
    outputs: Vec<PathBuf>,
}

impl Agent {
    pub(crate) fn start(
        b: &Bench,
        dir: &Path,
        auto_auth: &str,
        templates: &[(&str, &str)],
    ) -> Agent {
        let mut config = format!(
            "vault {{\n address = \"{}\"\n}}\nauto_auth {{\n{auto_auth}\n}}\n",
            b.bao.address()
        );
        let mut outputs = Vec::new();
        for (name, contents) in templates {
            let out = dir.join(format!("{name}.out"));
            config += &format!(
                "template {{\n contents = {}\n destination = \"{}\"\n}}\n",
                serde_json::to_string(contents).unwrap(),
                out.display()
            );
            outputs.push(out);
        }
        std::fs::write(dir.join("agent.hcl"), config).unwrap();
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let started = Instant::now();
        let child = Command::new(&b.bao_bin)
            .args(["agent", "-log-level=warn", "-config"])
            .arg(dir.join("agent.hcl"))
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_ADDR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bao agent");
        Agent { child, started, outputs }
    }

    /// Polls every millisecond until every template's file is there and not empty.
    pub(crate) fn wait_rendered(&mut self, timeout: Duration) -> bool {
        wait_every(Duration::from_millis(1), timeout, || {
            self.outputs.iter().all(|o| std::fs::metadata(o).is_ok_and(|m| m.len() > 0))
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- raw Vault clients ------------------------------------------------------------------------

/// One Vault API call on a kept-alive connection; panics on a transport error or a status >= 400.
pub(crate) trait VaultCall {
    fn call(&mut self, method: &str, path: &str, token: &str, body: Option<&Value>) -> Value;
}

/// The least an HTTP/1.1 client does: one TCP connection (no Nagle), requests written whole,
/// replies read by Content-Length or chunks.
pub(crate) struct TcpClient {
    stream: std::io::BufReader<std::net::TcpStream>,
}

impl TcpClient {
    pub(crate) fn connect(port: u16) -> TcpClient {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to OpenBao");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        TcpClient { stream: std::io::BufReader::new(stream) }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stream.read_line(&mut line).expect("a reply line");
        line.trim_end().to_owned()
    }

    fn exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.stream.read_exact(&mut buf).expect("a reply body");
        buf
    }
}

impl VaultCall for TcpClient {
    fn call(&mut self, method: &str, path: &str, token: &str, body: Option<&Value>) -> Value {
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} /v1/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Vault-Token: {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).expect("send to OpenBao");
        let status: u16 = self.line().split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let (mut length, mut chunked) = (0, false);
        loop {
            let header = self.line().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(v) = header.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            chunked |= header.starts_with("transfer-encoding:") && header.contains("chunked");
        }
        let reply = if chunked {
            let mut reply = Vec::new();
            loop {
                let size =
                    usize::from_str_radix(self.line().split(';').next().unwrap(), 16).unwrap();
                reply.extend(self.exact(size));
                self.line();
                if size == 0 {
                    break reply;
                }
            }
        } else {
            self.exact(length)
        };
        let reply = serde_json::from_slice(&reply).unwrap_or(Value::Null);
        assert!((200..400).contains(&status), "{method} {path}: {status} {reply}");
        reply
    }
}

/// reqwest's blocking client: one kept-alive connection in its pool.
pub(crate) struct ReqwestClient {
    http: reqwest::blocking::Client,
    address: String,
}

impl ReqwestClient {
    pub(crate) fn new(bao: &Bao) -> ReqwestClient {
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build();
        ReqwestClient { http: http.unwrap(), address: bao.address() }
    }
}

impl VaultCall for ReqwestClient {
    fn call(&mut self, method: &str, path: &str, token: &str, body: Option<&Value>) -> Value {
        let url = format!("{}/v1/{path}", self.address);
        let mut request =
            self.http.request(method.parse().unwrap(), url).header("X-Vault-Token", token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let reply = request.send().and_then(|r| r.error_for_status()).expect(path);
        let text = reply.text().expect(path);
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

// ---- an audited OpenBao ----------------------------------------------------------------------

/// An OpenBao dev server with a file audit device declared in its configuration, killed on drop.
pub(crate) struct AuditedBao {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    http: reqwest::blocking::Client,
}

impl AuditedBao {
    pub(crate) const TOKEN: &'static str = "bench-root";

    pub(crate) fn start(bin: &Path) -> AuditedBao {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        let config = format!(
            "audit \"file\" \"bench\" {{\n options {{\n  file_path = \"{}\"\n }}\n}}\n",
            audit.display()
        );
        std::fs::write(dir.path().join("config.hcl"), config).unwrap();
        let http =
            reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        // The dev server's cluster listener takes the next port, which may be taken: a few tries.
        for _ in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
            let mut child = Command::new(bin)
                .args(["server", "-dev", &format!("-dev-root-token-id={}", Self::TOKEN)])
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                .arg(format!("-config={}/config.hcl", dir.path().display()))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start bao server");
            let health = format!("http://127.0.0.1:{port}/v1/sys/health");
            let up = wait_until(Duration::from_secs(20), || {
                matches!(child.try_wait(), Ok(None))
                    && http.get(&health).send().is_ok_and(|r| r.status().is_success())
            });
            if up {
                return AuditedBao { child, port, dir, http };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "the audited OpenBao did not start: {}",
            std::fs::read_to_string(dir.path().join("bao.log")).unwrap_or_default()
        );
    }

    pub(crate) fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn log(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    pub(crate) fn put(&self, path: &str, body: Value) {
        self.http
            .post(format!("{}/v1/{path}", self.address()))
            .header("X-Vault-Token", Self::TOKEN)
            .json(&body)
            .send()
            .and_then(|r| r.error_for_status())
            .expect("write to the audited OpenBao");
    }
}

impl Drop for AuditedBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
