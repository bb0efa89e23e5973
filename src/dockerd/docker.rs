//! [`DockerEngine`]: the [`Engine`] over an engine's Unix socket, through `bollard` — dockerd,
//! or Podman's Docker-compatible service. Every call is bounded by the engine timeout; container
//! IDs and signals are checked before they reach a request line.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use bollard::query_parameters::{KillContainerOptions, ListContainersOptions, ListTasksOptions};
use bollard::Docker;

use super::*;

/// How much of a container's mount table is read at most (about 30,000 mounts).
const MOUNT_TABLE_LIMIT: u64 = 4 << 20;

/// Reads `/proc/PID/mountinfo` off the runtime, bounded; `None` when the process is gone.
async fn read_mount_table(pid: u32) -> Result<Option<String>, EngineError> {
    let read = move || -> std::io::Result<Option<String>> {
        use std::io::Read;
        let path = format!("/proc/{pid}/mountinfo");
        let gone = |e: &std::io::Error| {
            e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error())
        };
        let file = match std::fs::File::open(path) {
            Err(e) if gone(&e) => return Ok(None),
            other => other?,
        };
        let mut text = String::new();
        file.take(MOUNT_TABLE_LIMIT + 1).read_to_string(&mut text)?;
        if text.len() as u64 > MOUNT_TABLE_LIMIT {
            return Err(std::io::Error::other(format!("larger than {MOUNT_TABLE_LIMIT} bytes")));
        }
        Ok(Some(text))
    };
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| std::io::Error::other(format!("the reading task failed: {e}")))
        .and_then(|r| r)
        .map_err(|source| EngineError::ProcMounts { pid, source })
}

/// The engine over its Unix socket, through `bollard`. The client is made, and the API version
/// negotiated, at the first call that reaches the engine (the plugin may start before dockerd);
/// `timeout` bounds each call.
#[derive(Debug)]
pub struct DockerEngine {
    pub(super) socket: PathBuf,
    pub(super) name: String,
    pub(super) timeout: Duration,
    pub(super) client: tokio::sync::Mutex<Option<Docker>>,
    /// Told by the engine's `/version` at the first connection, or given.
    pub(super) kind: OnceLock<EngineKind>,
    /// Its user namespace remapping, once learned (see [`Engine::id_map`]).
    pub(super) id_map: OnceLock<Option<userns::IdMap>>,
    /// `/info`'s `DockerRootDir`, once asked (see [`Engine::user_of`]).
    pub(super) root_dir: OnceLock<String>,
}

impl DockerEngine {
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        let socket = socket.into();
        DockerEngine {
            name: socket.display().to_string(),
            socket,
            timeout,
            client: tokio::sync::Mutex::new(None),
            kind: OnceLock::new(),
            id_map: OnceLock::new(),
            root_dir: OnceLock::new(),
        }
    }

    /// An engine whose kind is known before it is reached (Podman's default socket): until it
    /// answers, it is taken to have made only the mounts an engine of that kind makes.
    pub fn of_kind(socket: impl Into<PathBuf>, timeout: Duration, kind: EngineKind) -> Self {
        let engine = DockerEngine::new(socket, timeout);
        let _ = engine.kind.set(kind);
        engine
    }

    /// The engine's API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The client, negotiating the API version (and learning the engine's kind) on first use.
    pub(super) async fn client(&self) -> Result<Docker, EngineError> {
        let mut client = self.client.lock().await;
        if let Some(docker) = client.as_ref() {
            return Ok(docker.clone());
        }
        let socket = self.socket.to_string_lossy();
        let secs = self.timeout.as_secs().max(1);
        let docker = Docker::connect_with_unix(&socket, secs, bollard::API_DEFAULT_VERSION)
            .map_err(|e| self.error("/version", e))?;
        let docker = self.bounded("/version", docker.negotiate_version()).await?;
        let version = self.bounded("/version", docker.version()).await?;
        let podman =
            version.components.unwrap_or_default().iter().any(|c| c.name.contains("Podman"));
        let kind = if podman { EngineKind::Podman } else { EngineKind::Docker };
        if *self.kind.get_or_init(|| kind) != kind {
            tracing::warn!(engine = %self.name, ?kind, "the engine is not of the kind configured for its socket");
        }
        *client = Some(docker.clone());
        Ok(docker)
    }

    /// Runs one call within the timeout, its error given the call's context.
    pub(super) async fn bounded<T>(
        &self,
        path: &str,
        call: impl Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<T, EngineError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(|e| self.error(path, e)),
            Err(_) => Err(EngineError::Timeout {
                socket: self.socket.clone(),
                path: path.to_owned(),
                timeout: self.timeout,
            }),
        }
    }

    fn error(&self, path: &str, e: bollard::errors::Error) -> EngineError {
        use bollard::errors::Error as B;
        let path = path.to_owned();
        match e {
            B::DockerResponseServerError { status_code, message } => {
                let message = crate::report::one_line(message.trim(), 300);
                let message = if message.is_empty() { "no error message".into() } else { message };
                EngineError::Status { path, status: status_code, message }
            }
            B::RequestTimeoutError => {
                EngineError::Timeout { socket: self.socket.clone(), path, timeout: self.timeout }
            }
            B::JsonDataError { message, column, .. } => EngineError::BadReply {
                path,
                message: format!("{} (column {column})", crate::report::one_line(&message, 200)),
            },
            B::JsonSerdeError { err } => EngineError::BadReply { path, message: err.to_string() },
            B::APIVersionParseError {} => {
                EngineError::BadReply { path, message: "no API version in the reply".into() }
            }
            B::SocketNotFoundError(_) => EngineError::Unreachable {
                socket: self.socket.clone(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            },
            B::HyperLegacyError { err } if err.is_connect() => EngineError::Unreachable {
                socket: self.socket.clone(),
                source: std::io::Error::other(crate::report::chain(&err)),
            },
            other => EngineError::Connection {
                socket: self.socket.clone(),
                path,
                source: std::io::Error::other(crate::report::chain(&other)),
            },
        }
    }

    /// The names of the enabled managed plugins that serve `DRIVER.sock`. Docker names a
    /// managed plugin's volumes' driver after the plugin (`NAME:TAG`, an alias if it has one),
    /// which the plugin inside cannot know. Two such plugins on one engine only add containers
    /// to look at: a mount is told by its device. When the engine lists no plugins (Podman),
    /// there are none.
    async fn managed_names(&self, docker: &Docker, driver: &str) -> Vec<String> {
        let socket = format!("{driver}.sock");
        match self.bounded("/plugins", docker.list_plugins(None)).await {
            Ok(plugins) => plugins
                .into_iter()
                .filter(|p| p.enabled && p.config.interface.socket == socket)
                .map(|p| p.name)
                .collect(),
            Err(e) => {
                tracing::debug!(error = %crate::report::chain(&e), "no list of managed plugins");
                Vec::new()
            }
        }
    }
}

impl Engine for DockerEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> EngineKind {
        self.kind.get().copied().unwrap_or(EngineKind::Unknown)
    }

    async fn volume_mounts(&self, driver: &str) -> Result<Vec<ContainerMount>, EngineError> {
        let path = "/containers/json?all=1";
        let docker = self.client().await?;
        let options = ListContainersOptions { all: true, ..Default::default() };
        let containers = self.bounded(path, docker.list_containers(Some(options))).await?;
        let managed = match self.kind() {
            EngineKind::Podman => Vec::new(), // Podman has no managed plugins (nor `/plugins`)
            _ => self.managed_names(&docker, driver).await,
        };
        let ours = |d: &str| d == driver || managed.iter().any(|name| name == d);
        let mut found = Vec::new();
        for c in containers {
            let state = c.state.map(|s| s.to_string()).unwrap_or_default();
            let running = matches!(state.as_str(), "running" | "restarting" | "paused");
            let id = c.id.unwrap_or_default();
            let name = c.names.and_then(|n| n.into_iter().next()).unwrap_or_default();
            let container_name = name.trim_start_matches('/').to_owned();
            for m in c.mounts.unwrap_or_default() {
                let kind = m.typ.map(|t| t.to_string()).unwrap_or_default();
                let name = m.name.unwrap_or_default();
                if kind == "volume" && m.driver.as_deref().is_some_and(ours) && !name.is_empty() {
                    found.push(ContainerMount {
                        container_id: id.clone(),
                        container_name: container_name.clone(),
                        running,
                        starting: state == "created",
                        restarting: state == "restarting",
                        volume: name,
                        destination: m.destination.unwrap_or_default(),
                        source: PathBuf::from(m.source.unwrap_or_default()),
                    });
                }
            }
        }
        Ok(found)
    }

    async fn signal(&self, container_id: &str, signal: &str) -> Result<(), EngineError> {
        check_container_id(container_id)?;
        check_signal(signal)?;
        let path = format!("/containers/{container_id}/kill?signal={signal}");
        let docker = self.client().await?;
        let options = KillContainerOptions { signal: signal.to_owned() };
        self.bounded(&path, docker.kill_container(container_id, Some(options))).await
    }

    async fn mount_table(
        &self,
        container_id: &str,
    ) -> Result<Option<Vec<mountinfo::MountEntry>>, EngineError> {
        check_container_id(container_id)?;
        let path = format!("/containers/{container_id}/json");
        let docker = self.client().await?;
        let inspect = match self.bounded(&path, docker.inspect_container(container_id, None)).await
        {
            Err(e) if e.status() == Some(404) => return Ok(None), // gone meanwhile
            other => other?,
        };
        let pid = inspect.state.and_then(|s| s.pid).unwrap_or(0);
        let Ok(pid) = u32::try_from(pid) else {
            return Err(EngineError::BadReply { path, message: format!("State.Pid {pid}") });
        };
        if pid == 0 {
            return Ok(None); // not running
        }
        Ok(read_mount_table(pid).await?.map(|text| mountinfo::parse(&text)))
    }

    async fn tasks(&self, ids: &[String]) -> Result<Vec<SwarmTask>, EngineError> {
        let mut found = Vec::new();
        for chunk in ids.chunks(TASKS_PER_QUERY) {
            found.extend(self.tasks_among(chunk).await?);
        }
        Ok(found)
    }

    async fn id_map(&self) -> Result<Option<userns::IdMap>, EngineError> {
        self.learn_id_map().await
    }

    async fn user_of(&self, container_id: &str) -> Result<String, EngineError> {
        check_container_id(container_id)?;
        let record_error = |source| EngineError::Record { id: container_id.to_owned(), source };
        if self.kind() == EngineKind::Podman {
            let why = "Podman keeps its containers' configuration in its own database";
            return Err(record_error(std::io::Error::other(why)));
        }
        let root_dir = match self.root_dir.get() {
            Some(dir) => dir.clone(),
            None => {
                let docker = self.client().await?;
                let info = self.bounded("/info", docker.info()).await?;
                let dir = info.docker_root_dir.unwrap_or_default();
                self.root_dir.get_or_init(|| dir).clone()
            }
        };
        let id = container_id.to_owned();
        let read = async {
            let pid = record::server_pid(&self.socket).await?;
            tokio::task::spawn_blocking(move || record::read_user(pid, &root_dir, &id))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?
        };
        match tokio::time::timeout(self.timeout, read).await {
            Ok(read) => read.map_err(record_error),
            Err(_) => Err(record_error(std::io::Error::other(format!(
                "not read within {:?}",
                self.timeout
            )))),
        }
    }

    async fn deaths(&self) -> Result<Deaths, EngineError> {
        use futures_util::StreamExt;
        let docker = self.client().await?;
        // Podman's compatible API filters on its own name (`died`), then calls it `die`.
        let filters = std::collections::HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("event".to_owned(), vec!["die".to_owned(), "died".to_owned()]),
        ]);
        let options = bollard::query_parameters::EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let socket = self.socket.clone();
        let deaths = docker.events(Some(options)).filter_map(move |event| {
            let item = match event {
                Ok(event) => event
                    .actor
                    .and_then(|actor| actor.id)
                    .filter(|id| {
                        matches!(event.action.as_deref(), Some("die" | "died"))
                            && check_container_id(id).is_ok()
                    })
                    .map(Ok),
                Err(e) => Some(Err(EngineError::Connection {
                    socket: socket.clone(),
                    path: "/events".into(),
                    source: std::io::Error::other(crate::report::chain(&e)),
                })),
            };
            std::future::ready(item)
        });
        Ok(deaths.boxed())
    }
}

impl DockerEngine {
    /// One `GET /tasks` filtered by ID (the filter matches ID prefixes: only exact matches
    /// are kept).
    async fn tasks_among(&self, ids: &[String]) -> Result<Vec<SwarmTask>, EngineError> {
        let path = "/tasks?filters={\"id\":[…]}";
        let docker = self.client().await?;
        let filters = std::collections::HashMap::from([("id".to_owned(), ids.to_vec())]);
        let options = ListTasksOptions { filters: Some(filters) };
        let tasks = self.bounded(path, docker.list_tasks(Some(options))).await?;
        Ok(tasks
            .into_iter()
            .filter_map(|t| {
                let id = t.id.filter(|id| ids.contains(id))?;
                let state = t.status.and_then(|s| s.state).map(|s| s.to_string());
                Some(SwarmTask { id, state: state.unwrap_or_default() })
            })
            .collect())
    }
}

/// A container ID (or name) safe to put in a request line: 1 to 128 ASCII letters and digits.
pub(super) fn check_container_id(id: &str) -> Result<(), EngineError> {
    if (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(EngineError::InvalidContainerId { id: id.to_owned() })
    }
}

/// `SIG` and capitals or digits (`SIGHUP`, `SIGUSR1`), or a number from 1 to 64.
pub(super) fn check_signal(signal: &str) -> Result<(), EngineError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    /// An engine on a socket in a temporary directory: `/version` says API 1.41, every other
    /// request gets `reply` (or, for `None`, no answer at all). The request lines are recorded.
    struct Served {
        _dir: tempfile::TempDir,
        engine: DockerEngine,
        requests: std::sync::Arc<Mutex<Vec<String>>>,
    }

    fn serve(reply: Option<&'static str>, timeout: Duration) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = std::sync::Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let mut line = String::new();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let mut length = 0;
                        loop {
                            let mut header = String::new();
                            stream.read_line(&mut header).await.unwrap();
                            if header.trim().is_empty() {
                                break;
                            }
                            if let Some(v) =
                                header.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                length = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; length];
                        stream.read_exact(&mut body).await.unwrap();
                        seen.lock().unwrap().push(line.trim().to_owned());
                        let answer = if line.contains("/version ") {
                            self::reply("200 OK", r#"{"ApiVersion":"1.41"}"#).to_owned()
                        } else {
                            match reply {
                                Some(reply) => reply.to_owned(),
                                None => std::future::pending().await,
                            }
                        };
                        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Served { _dir: dir, engine: DockerEngine::new(socket, timeout), requests }
    }

    fn reply(status: &str, body: &str) -> &'static str {
        let text = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        Box::leak(text.into_boxed_str())
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
            container_name: if id == "aaa" { "a".into() } else { String::new() },
            running,
            starting: false,
            restarting: false,
            volume: volume.into(),
            destination: "/s".into(),
            source: source.into(),
        }
    }

    fn expected() -> Vec<ContainerMount> {
        vec![
            mount("aaa", true, "db", "/run/vs/mounts/db/1"),
            mount("bbb", false, "db", "/run/vs/mounts/db/2"),
            ContainerMount {
                restarting: true,
                ..mount("ddd", true, "api", "/run/vs/mounts/api/3")
            },
        ]
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn the_version_is_negotiated_then_the_drivers_mounts_listed() {
        let s = serve(Some(reply("200 OK", LIST)), TIMEOUT);
        assert_eq!(s.engine.volume_mounts("vault-secrets").await.unwrap(), expected());
        assert_eq!(s.engine.volume_mounts("vault-secrets").await.unwrap(), expected());
        let requests = s.requests.lock().unwrap().clone();
        // Once: the version negotiated, then the engine's kind read.
        assert_eq!(requests.iter().filter(|r| r.contains("/version")).count(), 2, "{requests:?}");
        assert!(requests[2].contains("/containers/json?all=true"), "{requests:?}");
        assert_eq!(s.engine.kind(), EngineKind::Docker);
    }

    #[tokio::test]
    async fn tasks_are_asked_for_by_id_and_only_exact_ids_kept() {
        let list = r#"[{"ID":"abc","Status":{"State":"running"},"DesiredState":"running"},
            {"ID":"abcdef","Status":{"State":"running"}},
            {"ID":"xyz","Status":{"State":"shutdown"},"DesiredState":"shutdown"}]"#;
        let s = serve(Some(reply("200 OK", list)), TIMEOUT);
        let ids = vec!["abc".to_owned(), "xyz".to_owned(), "gone".to_owned()];
        let tasks = s.engine.tasks(&ids).await.unwrap();
        let running = SwarmTask { id: "abc".into(), state: "running".into() };
        let shutdown = SwarmTask { id: "xyz".into(), state: "shutdown".into() };
        assert_eq!(tasks, [running.clone(), shutdown.clone()]);
        assert!(!running.ended() && shutdown.ended());
        let requests = s.requests.lock().unwrap().clone();
        assert!(requests[2].starts_with("GET /tasks?filters="), "{requests:?}");
        assert!(requests[2].contains("abc") && requests[2].contains("gone"), "{requests:?}");
    }

    #[tokio::test]
    async fn a_signal_is_a_kill_request() {
        let s = serve(Some("HTTP/1.1 204 No Content\r\n\r\n"), TIMEOUT);
        s.engine.signal("0a1b2c", "SIGHUP").await.unwrap();
        let requests = s.requests.lock().unwrap().clone();
        assert!(
            requests[2].starts_with("POST /")
                && requests[2].contains("/containers/0a1b2c/kill?signal=SIGHUP"),
            "{requests:?}"
        );
    }

    #[tokio::test]
    async fn an_error_status_carries_the_engines_message() {
        let body = r#"{"message":"No such container: x"}"#;
        let s = serve(Some(reply("404 Not Found", body)), TIMEOUT);
        let e = s.engine.signal("x", "SIGHUP").await.unwrap_err();
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
    }

    #[tokio::test]
    async fn malformed_replies_are_bad_replies() {
        for body in ["not json", r#"[{"Id":3,"State":"running"}]"#, r#"{"Id":"a"}"#] {
            let s = serve(Some(reply("200 OK", body)), TIMEOUT);
            let e = s.engine.volume_mounts("local").await.unwrap_err();
            assert!(matches!(e, EngineError::BadReply { .. }), "{body:?}: {e:?}");
            assert!(e.to_string().contains("/containers/json?all=1"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_silent_engine_times_out() {
        let s = serve(None, Duration::from_millis(300));
        let e = s.engine.volume_mounts("local").await.unwrap_err();
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
}
