//! The Docker Engine API, the one call the plugin makes *into* dockerd: which containers use
//! which of our volumes, and sending a container a signal. [`Engine`] is the trait; the real
//! [`DockerEngine`] speaks HTTP/1.1 over the engine's Unix socket, one request per connection;
//! [`FakeEngine`] is for unit tests.
//!
//! Requests carry no API version prefix (`/containers/json`, not `/v1.41/containers/json`), so
//! the engine answers in its own current version. A pinned version is refused once an engine
//! raises its minimum (Docker 29 requires 1.44 and refuses 1.41), while the few fields read
//! here — a container's `Id`, `State` and `Mounts[].{Type,Name,Source,Driver}` — and the
//! `kill` endpoint have kept their shape since API 1.23.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Where dockerd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The largest reply body accepted from the engine (a host with thousands of containers lists
/// a few MiB).
pub const MAX_REPLY: usize = 16 * 1024 * 1024;

/// The largest status line plus headers accepted.
const MAX_HEAD: usize = 64 * 1024;

/// One volume mount of a container, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMount {
    pub container_id: String,
    /// The container's state is `running`, `restarting` or `paused`.
    pub running: bool,
    /// The volume's name (`Mounts[].Name`).
    pub volume: String,
    /// Where the volume is mounted on the host (`Mounts[].Source`): the Mountpoint the volume's
    /// driver returned from Mount.
    pub source: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the docker engine at {socket} is unreachable")]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the connection to the docker engine at {socket} failed during {path}")]
    Connection {
        socket: PathBuf,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the docker engine at {socket} did not answer {path} within {timeout:?}")]
    Timeout { socket: PathBuf, path: String, timeout: Duration },
    #[error("the docker engine answered {status} for {path}: {message}")]
    Status { path: String, status: u16, message: String },
    #[error("the docker engine's reply for {path} is not what was expected: {message}")]
    BadReply { path: String, message: String },
    #[error("the docker engine's reply for {path} is larger than {limit} bytes")]
    TooLarge { path: String, limit: usize },
    #[error("not a container id: {id:?}")]
    InvalidContainerId { id: String },
    #[error("not a signal: {signal:?} (expected SIGNAME or a number from 1 to 64)")]
    InvalidSignal { signal: String },
    #[error("cannot read the mounts of container process {pid}")]
    ProcMounts {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    /// The HTTP status the engine answered with, if it answered with an error status (404: no
    /// such container; 409: the container is not running).
    pub fn status(&self) -> Option<u16> {
        match self {
            EngineError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The Docker Engine operations the plugin uses.
pub trait Engine: Send + Sync + 'static {
    /// Every container's volume mounts whose Driver is `driver` (running or not).
    fn volume_mounts(
        &self,
        driver: &str,
    ) -> impl Future<Output = Result<Vec<ContainerMount>, EngineError>> + Send;

    /// Sends `signal` (e.g. "SIGHUP") to the container.
    fn signal(
        &self,
        container_id: &str,
        signal: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// The devices (`major:minor`) of the plugin's tmpfs mounts that a running container
    /// holds, read from its main process's `/proc/PID/mountinfo`. (Engine 20.10 reports no
    /// `Source` for plugin volumes, so this is how a mount is tied to its container.)
    fn container_devices(
        &self,
        container_id: &str,
    ) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send;
}

/// The devices of the tmpfs mounts made by this plugin (source `vault-secrets`) in mountinfo
/// text.
pub fn plugin_tmpfs_devices(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let device = left.split(' ').nth(2)?;
            let mut right = right.split(' ');
            (right.next()? == "tmpfs" && right.next()? == "vault-secrets")
                .then(|| device.to_owned())
        })
        .collect()
}

/// The engine over its Unix socket. The timeout covers a whole exchange: connect, request,
/// reply.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    socket: PathBuf,
    timeout: Duration,
}

/// One entry of `GET /containers/json`; unknown fields are ignored, known ones type-checked.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerSummary {
    id: String,
    state: String,
    #[serde(default)]
    mounts: Option<Vec<MountPoint>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MountPoint {
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    driver: String,
}

impl DockerEngine {
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        DockerEngine { socket: socket.into(), timeout }
    }

    /// One request without a body; returns the body of a 2xx reply.
    async fn call(&self, method: &str, path: &str) -> Result<Vec<u8>, EngineError> {
        let reply = tokio::time::timeout(self.timeout, self.exchange(method, path))
            .await
            .map_err(|_| EngineError::Timeout {
                socket: self.socket.clone(),
                path: path.to_owned(),
                timeout: self.timeout,
            })??;
        if !(200..300).contains(&reply.status) {
            return Err(EngineError::Status {
                path: path.to_owned(),
                status: reply.status,
                message: error_message(&reply.body),
            });
        }
        Ok(reply.body)
    }

    async fn exchange(&self, method: &str, path: &str) -> Result<Reply, EngineError> {
        let mut stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| EngineError::Unreachable { socket: self.socket.clone(), source })?;
        let length = if method == "POST" { "Content-Length: 0\r\n" } else { "" };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: vault-secrets-plugin/{}\r\n\
             Accept: application/json\r\n{length}Connection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        let result = match stream.write_all(request.as_bytes()).await {
            Ok(()) => read_reply(&mut BufReader::new(stream), MAX_REPLY).await,
            Err(e) => Err(HttpError::Io(e)),
        };
        result.map_err(|e| match e {
            HttpError::Io(source) => EngineError::Connection {
                socket: self.socket.clone(),
                path: path.to_owned(),
                source,
            },
            HttpError::Malformed(message) => {
                EngineError::BadReply { path: path.to_owned(), message }
            }
            HttpError::TooLarge => {
                EngineError::TooLarge { path: path.to_owned(), limit: MAX_REPLY }
            }
        })
    }
}

impl Engine for DockerEngine {
    async fn volume_mounts(&self, driver: &str) -> Result<Vec<ContainerMount>, EngineError> {
        let path = "/containers/json?all=1";
        let body = self.call("GET", path).await?;
        let containers: Vec<ContainerSummary> = serde_json::from_slice(&body)
            .map_err(|e| EngineError::BadReply { path: path.to_owned(), message: e.to_string() })?;
        let mut found = Vec::new();
        for c in containers {
            let running = matches!(c.state.as_str(), "running" | "restarting" | "paused");
            for m in c.mounts.unwrap_or_default() {
                if m.kind == "volume" && m.driver == driver && !m.name.is_empty() {
                    found.push(ContainerMount {
                        container_id: c.id.clone(),
                        running,
                        volume: m.name,
                        source: PathBuf::from(m.source),
                    });
                }
            }
        }
        Ok(found)
    }

    async fn signal(&self, container_id: &str, signal: &str) -> Result<(), EngineError> {
        check_container_id(container_id)?;
        check_signal(signal)?;
        self.call("POST", &format!("/containers/{container_id}/kill?signal={signal}")).await?;
        Ok(())
    }

    async fn container_devices(&self, container_id: &str) -> Result<Vec<String>, EngineError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Inspect {
            state: InspectState,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct InspectState {
            #[serde(default)]
            pid: u32,
        }
        check_container_id(container_id)?;
        let path = format!("/containers/{container_id}/json");
        let body = self.call("GET", &path).await?;
        let inspect: Inspect = serde_json::from_slice(&body)
            .map_err(|e| EngineError::BadReply { path: path.clone(), message: e.to_string() })?;
        let pid = inspect.state.pid;
        if pid == 0 {
            return Ok(Vec::new()); // not running
        }
        let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .map_err(|source| EngineError::ProcMounts { pid, source })?;
        Ok(plugin_tmpfs_devices(&mountinfo))
    }
}

/// A container ID (or name) safe to put in a request line: 1 to 128 ASCII letters and digits.
fn check_container_id(id: &str) -> Result<(), EngineError> {
    if (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(EngineError::InvalidContainerId { id: id.to_owned() })
    }
}

/// `SIG` and capitals or digits (`SIGHUP`, `SIGUSR1`), or a number from 1 to 64.
fn check_signal(signal: &str) -> Result<(), EngineError> {
    let named = signal.len() <= 16
        && signal.strip_prefix("SIG").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        });
    let numbered = signal.len() <= 2
        && signal.bytes().all(|b| b.is_ascii_digit())
        && signal.parse::<u8>().is_ok_and(|n| (1..=64).contains(&n));
    if named || numbered {
        Ok(())
    } else {
        Err(EngineError::InvalidSignal { signal: signal.to_owned() })
    }
}

/// The engine's `{"message": …}` error body, bounded and on one line.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorReply {
        message: String,
    }
    match serde_json::from_slice::<ErrorReply>(body) {
        Ok(e) if !e.message.trim().is_empty() => crate::report::one_line(e.message.trim(), 300),
        _ => "no error message".to_owned(),
    }
}

/// An HTTP reply: its status and its whole body.
struct Reply {
    status: u16,
    body: Vec<u8>,
}

/// What reading a reply can run into, given context by [`DockerEngine::exchange`].
enum HttpError {
    Io(std::io::Error),
    Malformed(String),
    TooLarge,
}

impl From<std::io::Error> for HttpError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                HttpError::Malformed("the connection closed before the reply's end".into())
            }
            _ => HttpError::Io(e),
        }
    }
}

fn malformed(message: impl Into<String>) -> HttpError {
    HttpError::Malformed(message.into())
}

/// Reads an HTTP/1.1 reply: the body framed by `Transfer-Encoding: chunked`, `Content-Length`
/// or the end of the connection, at most `limit` bytes of it.
async fn read_reply<R: AsyncBufRead + Unpin>(r: &mut R, limit: usize) -> Result<Reply, HttpError> {
    let mut budget = MAX_HEAD;
    let status_line = read_line(r, &mut budget).await?;
    let status = parse_status_line(&status_line)?;
    let (mut length, mut chunked) = (None::<u64>, false);
    loop {
        let line = read_line(r, &mut budget).await?;
        if line.is_empty() {
            break;
        }
        let (name, value) =
            line.split_once(':').ok_or_else(|| malformed("a header without ':'"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value.parse::<u64>().map_err(|_| malformed("a bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(malformed("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return Err(malformed(format!("unsupported Transfer-Encoding {value:?}")));
            }
            chunked = true;
        }
    }
    let body = if status == 204 || status == 304 || status < 200 {
        Vec::new()
    } else if chunked {
        read_chunked(r, limit).await?
    } else if let Some(n) = length {
        if n > limit as u64 {
            return Err(HttpError::TooLarge);
        }
        let mut body = vec![0; n as usize];
        r.read_exact(&mut body).await?;
        body
    } else {
        let mut body = Vec::new();
        r.take(limit as u64 + 1).read_to_end(&mut body).await?;
        if body.len() > limit {
            return Err(HttpError::TooLarge);
        }
        body
    };
    Ok(Reply { status, body })
}

/// `HTTP/1.x NNN reason`.
fn parse_status_line(line: &str) -> Result<u16, HttpError> {
    let bad = || {
        let start: String = line.chars().take(80).collect();
        malformed(format!("not an HTTP status line: {start:?}"))
    };
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !(version == "HTTP/1.1" || version == "HTTP/1.0")
        || code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    code.parse().map_err(|_| bad())
}

async fn read_chunked<R: AsyncBufRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let mut budget = 4096;
        let line = read_line(r, &mut budget).await?;
        let size = line.split(';').next().unwrap_or_default().trim();
        if size.is_empty() || size.len() > 8 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed(format!("a bad chunk size {size:?}")));
        }
        let size = usize::from_str_radix(size, 16).map_err(|_| malformed("a bad chunk size"))?;
        if size == 0 {
            // Trailers, if any, up to the empty line.
            while !read_line(r, &mut budget).await?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > limit {
            return Err(HttpError::TooLarge);
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..]).await?;
        if !read_line(r, &mut budget).await?.is_empty() {
            return Err(malformed("a chunk longer than its size"));
        }
    }
}

/// One line without its CRLF, taking at most `budget` bytes (which it decreases).
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    budget: &mut usize,
) -> Result<String, HttpError> {
    let mut line = Vec::new();
    let n = (&mut *r).take(*budget as u64).read_until(b'\n', &mut line).await?;
    *budget -= n;
    if line.last() != Some(&b'\n') {
        return Err(if *budget == 0 {
            malformed("the reply's head is too long")
        } else {
            malformed("the connection closed before the reply's end")
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| malformed("the reply's head is not UTF-8"))
}

/// A fake engine for unit tests. `volume_mounts` returns every mount in `mounts`, whatever the
/// driver (the fake holds only the plugin's own). `signal` validates its inputs like the real
/// one, answers 404 for a container not in `mounts` and 409 for one not running, and records
/// the signals it delivered. `unreachable` makes every call fail as if dockerd were down.
#[derive(Debug, Default)]
pub struct FakeEngine {
    pub mounts: Mutex<Vec<ContainerMount>>,
    pub signals: Mutex<Vec<(String, String)>>,
    pub unreachable: AtomicBool,
    /// What `container_devices` answers, by container ID.
    pub devices: Mutex<std::collections::HashMap<String, Vec<String>>>,
}

impl FakeEngine {
    fn reachable(&self) -> Result<(), EngineError> {
        if self.unreachable.load(Ordering::Relaxed) {
            return Err(EngineError::Unreachable {
                socket: PathBuf::from("fake"),
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            });
        }
        Ok(())
    }
}

impl Engine for FakeEngine {
    async fn volume_mounts(&self, _driver: &str) -> Result<Vec<ContainerMount>, EngineError> {
        self.reachable()?;
        Ok(self.mounts.lock().unwrap().clone())
    }

    async fn container_devices(&self, container_id: &str) -> Result<Vec<String>, EngineError> {
        self.reachable()?;
        Ok(self.devices.lock().unwrap().get(container_id).cloned().unwrap_or_default())
    }

    async fn signal(&self, container_id: &str, signal: &str) -> Result<(), EngineError> {
        check_container_id(container_id)?;
        check_signal(signal)?;
        self.reachable()?;
        let path = format!("/containers/{container_id}/kill?signal={signal}");
        let running = self
            .mounts
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.container_id == container_id)
            .map(|m| m.running)
            .reduce(|a, b| a || b);
        match running {
            None => Err(EngineError::Status {
                path,
                status: 404,
                message: format!("No such container: {container_id}"),
            }),
            Some(false) => Err(EngineError::Status {
                path,
                status: 409,
                message: format!("Container {container_id} is not running"),
            }),
            Some(true) => {
                self.signals.lock().unwrap().push((container_id.to_owned(), signal.to_owned()));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_tmpfs_devices_are_found_in_mountinfo() {
        let info = "600 500 0:123 / /run/secrets ro,relatime - tmpfs vault-secrets rw,size=1024k\n\
                    601 500 0:124 / /tmp rw - tmpfs tmpfs rw\n\
                    602 500 0:125 / /run/other rw shared:5 - tmpfs vault-secrets rw\n\
                    603 500 8:1 / /etc/hosts rw - ext4 /dev/vda rw\n";
        assert_eq!(plugin_tmpfs_devices(info), vec!["0:123", "0:125"]);
    }
    use tokio::net::UnixListener;
    use tokio::task::JoinHandle;

    /// A one-shot engine on a socket in a temporary directory: it accepts one connection, reads
    /// the request head, writes `reply` (or, for `None`, holds the connection open and says
    /// nothing) and returns the request head it read.
    fn serve(
        reply: Option<Vec<u8>>,
        timeout: Duration,
    ) -> (tempfile::TempDir, DockerEngine, JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            let mut head = String::new();
            while stream.read_line(&mut head).await.unwrap() > 2 {}
            match reply {
                // The client may stop reading an oversized reply: a failed write is expected.
                Some(reply) => drop(stream.get_mut().write_all(&reply).await),
                None => std::future::pending().await,
            }
            head
        });
        (dir, DockerEngine::new(socket, timeout), task)
    }

    fn reply(status: &str, body: &str) -> Option<Vec<u8>> {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        Some((head + body).into_bytes())
    }

    fn chunked(chunks: &[&str]) -> Option<Vec<u8>> {
        let mut text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned();
        for c in chunks {
            text += &format!("{:x};ext=1\r\n{c}\r\n", c.len());
        }
        Some((text + "0\r\nX-Trailer: t\r\n\r\n").into_bytes())
    }

    const LIST: &str = r#"[
        {"Id":"aaa","State":"running","Names":["/a"],"Mounts":[
            {"Type":"volume","Name":"db","Source":"/run/vs/mounts/db/1","Destination":"/s",
             "Driver":"vault-secrets","Mode":"","RW":true,"Propagation":""},
            {"Type":"bind","Source":"/etc/hosts","Destination":"/etc/hosts","RW":true},
            {"Type":"volume","Name":"data","Source":"/var/lib/docker/volumes/data/_data",
             "Destination":"/data","Driver":"local"}]},
        {"Id":"bbb","State":"exited","Mounts":[{"Type":"volume","Name":"db",
            "Source":"/run/vs/mounts/db/2","Destination":"/s","Driver":"vault-secrets"}]},
        {"Id":"ccc","State":"paused","Mounts":null},
        {"Id":"ddd","State":"restarting","Mounts":[{"Type":"volume","Name":"api",
            "Source":"/run/vs/mounts/api/3","Destination":"/s","Driver":"vault-secrets"}]}
    ]"#;

    fn mount(id: &str, running: bool, volume: &str, source: &str) -> ContainerMount {
        ContainerMount {
            container_id: id.into(),
            running,
            volume: volume.into(),
            source: source.into(),
        }
    }

    fn expected() -> Vec<ContainerMount> {
        vec![
            mount("aaa", true, "db", "/run/vs/mounts/db/1"),
            mount("bbb", false, "db", "/run/vs/mounts/db/2"),
            mount("ddd", true, "api", "/run/vs/mounts/api/3"),
        ]
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_content_length_reply_lists_the_drivers_mounts() {
        let (_dir, engine, server) = serve(reply("200 OK", LIST), TIMEOUT);
        assert_eq!(engine.volume_mounts("vault-secrets").await.unwrap(), expected());
        let head = server.await.unwrap();
        assert!(head.starts_with("GET /containers/json?all=1 HTTP/1.1\r\n"), "{head}");
        assert!(
            head.contains("\r\nHost: docker\r\n") && head.contains("\r\nConnection: close\r\n")
        );
    }

    #[tokio::test]
    async fn a_chunked_reply_is_reassembled() {
        let (a, b) = LIST.split_at(100);
        let (b, c) = b.split_at(7);
        let (_dir, engine, _server) = serve(chunked(&[a, b, c]), TIMEOUT);
        assert_eq!(engine.volume_mounts("vault-secrets").await.unwrap(), expected());
    }

    #[tokio::test]
    async fn a_signal_is_a_kill_request() {
        let (_dir, engine, server) =
            serve(Some(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()), TIMEOUT);
        engine.signal("0a1b2c", "SIGHUP").await.unwrap();
        let head = server.await.unwrap();
        assert!(
            head.starts_with("POST /containers/0a1b2c/kill?signal=SIGHUP HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nContent-Length: 0\r\n"), "{head}");
    }

    #[tokio::test]
    async fn an_error_status_carries_the_engines_message() {
        let body = r#"{"message":"No such container: x"}"#;
        let (_dir, engine, _server) = serve(reply("404 Not Found", body), TIMEOUT);
        let e = engine.signal("x", "SIGHUP").await.unwrap_err();
        assert!(
            matches!(&e, EngineError::Status { status: 404, message, path }
                if message == "No such container: x" && path == "/containers/x/kill?signal=SIGHUP"),
            "{e:?}"
        );
        assert_eq!(e.status(), Some(404));
        assert_eq!(
            e.to_string(),
            "the docker engine answered 404 for /containers/x/kill?signal=SIGHUP: No such container: x"
        );
        let (_dir, engine, _server) = serve(reply("409 Conflict", "<html>"), TIMEOUT);
        let e = engine.signal("y", "9").await.unwrap_err();
        assert!(
            matches!(&e, EngineError::Status { status: 409, message, .. } if message == "no error message"),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn oversized_replies_are_refused() {
        let declared = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n[", MAX_REPLY + 1);
        let (_dir, engine, _server) = serve(Some(declared.into_bytes()), TIMEOUT);
        let e = engine.volume_mounts("local").await.unwrap_err();
        assert!(matches!(e, EngineError::TooLarge { limit: MAX_REPLY, .. }), "{e:?}");

        let big = " ".repeat(1024 * 1024);
        let chunks: Vec<&str> = std::iter::repeat_n(big.as_str(), 17).collect();
        let (_dir, engine, _server) = serve(chunked(&chunks), TIMEOUT);
        let e = engine.volume_mounts("local").await.unwrap_err();
        assert!(matches!(e, EngineError::TooLarge { .. }), "{e:?}");

        let mut unframed = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        unframed.resize(unframed.len() + MAX_REPLY + 1, b' ');
        let (_dir, engine, _server) = serve(Some(unframed), TIMEOUT);
        let e = engine.volume_mounts("local").await.unwrap_err();
        assert!(matches!(e, EngineError::TooLarge { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn malformed_replies_are_bad_replies() {
        let cases = [
            reply("200 OK", "not json"),
            reply("200 OK", r#"[{"Id":3,"State":"running"}]"#),
            reply("200 OK", r#"{"Id":"a"}"#),
            Some(b"HTTP/1.1 2x0 OK\r\n\r\n".to_vec()),
            Some(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n[]".to_vec()),
            Some(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec()),
            Some(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec()),
            Some(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n[]".to_vec()),
            Some(b"HTTP/1.1 200 OK\r\nContent-Le".to_vec()),
            Some(Vec::new()),
        ];
        for case in cases {
            let shown = String::from_utf8_lossy(case.as_deref().unwrap()).into_owned();
            let (_dir, engine, _server) = serve(case, TIMEOUT);
            let e = engine.volume_mounts("local").await.unwrap_err();
            assert!(matches!(e, EngineError::BadReply { .. }), "{shown:?}: {e:?}");
            assert!(e.to_string().contains("/containers/json?all=1"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_silent_engine_times_out() {
        let (_dir, engine, _server) = serve(None, Duration::from_millis(200));
        let e = engine.volume_mounts("local").await.unwrap_err();
        assert!(matches!(e, EngineError::Timeout { .. }), "{e:?}");
        assert!(e.to_string().contains("docker.sock"), "{e}");
    }

    #[tokio::test]
    async fn an_absent_engine_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let engine = DockerEngine::new(dir.path().join("none.sock"), TIMEOUT);
        let e = engine.volume_mounts("local").await.unwrap_err();
        assert!(matches!(e, EngineError::Unreachable { .. }), "{e:?}");
        assert!(e.to_string().contains("none.sock"), "{e}");
    }

    #[tokio::test]
    async fn bad_ids_and_signals_are_refused_before_any_connection() {
        // The socket does not exist: a request would fail as Unreachable.
        let engine = DockerEngine::new("/nonexistent/docker.sock", TIMEOUT);
        for id in ["", "a/b", "a?b", "a%2F", "a b", "../x", "a\r\nb", "é", &"a".repeat(129)] {
            let e = engine.signal(id, "SIGHUP").await.unwrap_err();
            assert!(matches!(e, EngineError::InvalidContainerId { .. }), "{id:?}: {e:?}");
        }
        for signal in
            ["", "HUP", "SIG", "sighup", "SIGHUP HTTP/1.1", "SIG-1", "0", "65", "064", "-1"]
        {
            let e = engine.signal("abc", signal).await.unwrap_err();
            assert!(matches!(e, EngineError::InvalidSignal { .. }), "{signal:?}: {e:?}");
        }
        for signal in ["SIGHUP", "SIGUSR1", "SIGRTMIN", "1", "9", "64"] {
            assert!(check_signal(signal).is_ok(), "{signal}");
        }
        assert!(check_container_id(&"f".repeat(64)).is_ok());
    }

    #[tokio::test]
    async fn the_fake_answers_like_the_engine_and_records_signals() {
        let fake = FakeEngine::default();
        fake.mounts.lock().unwrap().extend(expected());
        assert_eq!(fake.volume_mounts("vault-secrets").await.unwrap(), expected());
        fake.signal("aaa", "SIGHUP").await.unwrap();
        assert_eq!(fake.signal("bbb", "SIGHUP").await.unwrap_err().status(), Some(409));
        assert_eq!(fake.signal("zzz", "SIGHUP").await.unwrap_err().status(), Some(404));
        assert!(fake.signal("a/b", "SIGHUP").await.is_err());
        assert_eq!(*fake.signals.lock().unwrap(), [("aaa".to_owned(), "SIGHUP".to_owned())]);
        fake.unreachable.store(true, Ordering::Relaxed);
        let e = fake.volume_mounts("vault-secrets").await.unwrap_err();
        assert!(matches!(e, EngineError::Unreachable { .. }), "{e:?}");
    }
}
