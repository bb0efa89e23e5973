//! The admin socket (mode 0600) behind `status` and `rotate`: a small HTTP API served by the
//! plugin, and the client the CLI commands use.
//!
//! - `GET /status` → `{"volumes": [VolumeStatus…], "tasks": [TaskStatus…]}` (accessors and
//!   lease IDs, never a token)
//! - `POST /rotate` with `{"volume": NAME}` → `{"rotated": N}`, or `{"error": …}`

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::listener::Limits;
use crate::driver::{DriverError, Operations, TaskStatus, VolumeStatus};
use crate::report::chain;

/// How long the CLI waits for a reply (a `rotate` of a volume with many mounts takes a while).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The admin socket's bounds (only root can connect): a handful of `status` or `rotate`
/// commands at once, a head within 10 s (the CLI writes it at once), and a reply within the
/// CLI's own [`CLIENT_TIMEOUT`], past which nobody waits for it.
pub const LIMITS: Limits = Limits {
    name: "admin",
    connections: 16,
    header_read: Duration::from_secs(10),
    request: CLIENT_TIMEOUT,
};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach the plugin's admin socket {path} (is `vault-secrets-plugin serve` running with this configuration?)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the admin socket {path} gave an unreadable reply")]
    BadReply { path: String },
    #[error("{0}")]
    Refused(String),
}

/// The admin routes over the driver's operations.
pub fn router<O: Operations>(driver: Arc<O>) -> Router {
    Router::new()
        .route("/status", get(status::<O>))
        .route("/rotate", post(rotate::<O>))
        .with_state(driver)
}

/// What `GET /status` answers, and what the CLI reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub volumes: Vec<VolumeStatus>,
    #[serde(default)]
    pub tasks: Vec<TaskStatus>,
}

impl Status {
    /// The reply's JSON: through a [`Value`], whose objects keep their keys in name order, as
    /// the reply always has.
    fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("status serializes")
    }
}

async fn status<O: Operations>(State(d): State<Arc<O>>) -> Response {
    let status = Status { volumes: d.status().await, tasks: d.tasks().await };
    Json(status.to_json()).into_response()
}

#[derive(Deserialize)]
struct RotateRequest {
    volume: String,
}

async fn rotate<O: Operations>(State(d): State<Arc<O>>, body: Bytes) -> Response {
    let request: RotateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": format!("bad request: {e}") })))
                .into_response()
        }
    };
    match d.rotate(&request.volume).await {
        Ok(n) => Json(json!({ "rotated": n })).into_response(),
        Err(e) => {
            let status = match e {
                DriverError::NoSuchVolume { .. } => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_GATEWAY,
            };
            (status, Json(json!({ "error": chain(&e) }))).into_response()
        }
    }
}

/// The largest reply the CLI reads (a `status` of thousands of mounts is a few MiB).
pub const MAX_REPLY: usize = 64 * 1024 * 1024;

/// One request to the admin socket (HTTP/1.1 through hyper); returns the JSON reply of a 2xx,
/// or the error it carries. The whole exchange is bounded by [`CLIENT_TIMEOUT`], the reply by
/// [`MAX_REPLY`].
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, AdminError> {
    let shown = socket.display().to_string();
    let connect = |source| AdminError::Connect { path: shown.clone(), source };
    let bad = || AdminError::BadReply { path: shown.clone() };
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket).await.map_err(connect)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| connect(std::io::Error::other(e)))?;
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "admin")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.map(Value::to_string).unwrap_or_default())))
            .map_err(|_| bad())?;
        let response =
            sender.send_request(request).await.map_err(|e| connect(std::io::Error::other(e)))?;
        let status = response.status();
        let payload = Limited::new(response.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(|_| bad())?
            .to_bytes();
        Ok::<_, AdminError>((status, payload))
    };
    let (status, payload) =
        tokio::time::timeout(CLIENT_TIMEOUT, exchange).await.map_err(|_| {
            connect(std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply in time"))
        })??;
    let value: Value = serde_json::from_slice(&payload).map_err(|_| bad())?;
    if status.is_success() {
        Ok(value)
    } else {
        Err(AdminError::Refused(value["error"].as_str().unwrap_or("refused").to_owned()))
    }
}

/// `status` as a table.
pub fn render_table(status: &Status) -> String {
    let mut out = String::new();
    if status.volumes.is_empty() && status.tasks.is_empty() {
        return "no volumes\n".into();
    }
    let secs = |s: Option<u64>| {
        s.map(|s| crate::report::duration(Duration::from_secs(s))).unwrap_or_else(|| "-".into())
    };
    for v in &status.volumes {
        out.push_str(&format!(
            "{}  ({}; {} active mount(s))\n",
            v.name,
            v.sources.join(", "),
            v.mounts.len() + v.busy.len()
        ));
        for id in &v.busy {
            out.push_str(&format!(
                "  mount {}  busy (a Mount, Unmount or renewal under way); ask again\n",
                id.get(..12).unwrap_or(id)
            ));
        }
        for m in &v.mounts {
            out.push_str(&format!(
                "  mount {}  refs {}  token {} expires in {}  last refresh {}\n",
                m.id.get(..12).unwrap_or("?"),
                m.refs,
                m.accessor,
                secs(m.token_expires_in_secs),
                m.last_refresh.as_deref().unwrap_or("-"),
            ));
            for l in &m.leases {
                out.push_str(&format!(
                    "    lease {}  expires in {}  ({})\n",
                    l.lease_id,
                    secs(l.expires_in_secs),
                    l.state.name(),
                ));
            }
            for x in &m.expiring {
                out.push_str(&format!(
                    "    {} expires in {} (expiration {})  replaced in {}  ({})\n",
                    x.source,
                    secs(x.expires_in_secs),
                    x.expiration,
                    secs(Some(x.replace_in_secs)),
                    x.state.name(),
                ));
            }
            for c in &m.certificates {
                out.push_str(&format!("    certificate {}  {}\n", c.serial, c.at_stop.text()));
            }
            if let Some(e) = &m.last_error {
                out.push_str(&format!("    last error: {e}\n"));
            }
            if let Some(c) = &m.container {
                out.push_str(&format!(
                    "    container {} {} (engine {})\n",
                    c.id.get(..12).unwrap_or(&c.id),
                    c.name,
                    m.engine.as_deref().unwrap_or("?"),
                ));
            }
            if m.container_died {
                out.push_str("    its container died: token and leases revoked; the tmpfs waits for the Unmount\n");
            }
        }
    }
    if !status.tasks.is_empty() {
        out.push_str(&format!("swarm task secrets ({} task token(s))\n", status.tasks.len()));
    }
    for t in &status.tasks {
        out.push_str(&format!(
            "  task {}  secret {}  service {}  token {} expires in {}\n",
            t.task,
            t.secret,
            t.service,
            t.accessor,
            secs(t.token_expires_in_secs),
        ));
        for l in &t.leases {
            out.push_str(&format!(
                "    lease {}  expires in {}  ({})\n",
                l.lease_id,
                secs(l.expires_in_secs),
                l.state.name(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeOperations;

    impl Operations for FakeOperations {
        async fn status(&self) -> Vec<VolumeStatus> {
            vec![VolumeStatus {
                name: "app".into(),
                sources: vec!["kv/app".into()],
                mounts: vec![],
                busy: vec![],
            }]
        }

        async fn tasks(&self) -> Vec<crate::driver::TaskStatus> {
            vec![crate::driver::TaskStatus {
                task: "t0ask".into(),
                secret: "s3cret".into(),
                service: "web".into(),
                accessor: "acc-task".into(),
                token_expires_in_secs: Some(90),
                leases: vec![crate::driver::TaskLeaseStatus {
                    lease_id: "database/creds/app/L1".into(),
                    expires_in_secs: Some(30),
                    state: crate::driver::TaskLeaseState::Renew,
                }],
            }]
        }

        async fn rotate(&self, volume: &str) -> Result<usize, DriverError> {
            match volume {
                "app" => Ok(2),
                _ => Err(DriverError::NoSuchVolume { volume: volume.into() }),
            }
        }

        fn pending_revocations(&self) -> usize {
            0
        }
    }

    #[test]
    fn the_table_names_a_mounts_container_and_its_engine() {
        let mount = json!({"id": "0123456789abcdef", "refs": 1, "accessor": "acc",
            "mountpoint": "/run/vault-secrets/mounts/db/0123456789abcdef",
            "token_expires_in_secs": 60, "leases": [], "expiring": [], "container_died": false,
            "next_action_in_secs": 40, "container": {"id": "9c1e0123456789ab", "name": "web-1"},
            "engine": "/var/run/docker.sock"});
        let status = json!({"volumes": [{"name": "db", "sources": ["kv/db"], "mounts": [mount]}]});
        let table = render_table(&serde_json::from_value(status).unwrap());
        let line = "    container 9c1e01234567 web-1 (engine /var/run/docker.sock)\n";
        assert!(table.contains(line), "{table}");
    }

    /// A status with every field set, each enum in each of its values.
    fn full_status() -> Status {
        use crate::driver::{
            Action, AtStop, CertificateStatus, ExpiryStatus, LeaseStatus, MountStatus,
            TaskLeaseState, TaskLeaseStatus,
        };
        let lease = |id: &str, state| LeaseStatus {
            source: "database/creds/app".into(),
            lease_id: id.into(),
            expires_in_secs: Some(30),
            renewable: true,
            state,
        };
        let mount = MountStatus {
            id: "0123456789abcdef".into(),
            mountpoint: "/run/vault-secrets/mounts/db/0123456789abcdef".into(),
            refs: 2,
            accessor: "acc".into(),
            token_expires_in_secs: Some(60),
            leases: vec![lease("L1", Action::Renew), lease("L2", Action::Replace)],
            expiring: vec![ExpiryStatus {
                source: "pki/issue/web".into(),
                expiration: 1_800_000_000,
                expires_in_secs: None,
                replace_in_secs: 3600,
                state: Action::Replace,
            }],
            certificates: [("7b", AtStop::Revoked), ("7c", AtStop::NotStored)]
                .map(|(serial, at_stop)| CertificateStatus { serial: serial.into(), at_stop })
                .into(),
            next_action_in_secs: 20,
            last_refresh: Some("2026-12-07T05:00:00Z".into()),
            last_error: Some("vault unreachable".into()),
            container_died: true,
            container: Some(crate::state::Container { id: "9c1e".into(), name: "web-1".into() }),
            engine: Some("/var/run/docker.sock".into()),
        };
        let task_lease = |id: &str, state| TaskLeaseStatus {
            lease_id: id.into(),
            expires_in_secs: Some(30),
            state,
        };
        Status {
            volumes: vec![VolumeStatus {
                name: "db".into(),
                sources: vec!["database/creds/app".into(), "pki/issue/web".into()],
                mounts: vec![mount],
                busy: vec!["fedcba9876543210".into()],
            }],
            tasks: vec![TaskStatus {
                task: "t0ask".into(),
                secret: "s3cret".into(),
                service: "web".into(),
                accessor: "acc-task".into(),
                token_expires_in_secs: None,
                leases: vec![
                    task_lease("T1", TaskLeaseState::Renew),
                    task_lease("T2", TaskLeaseState::Ends),
                ],
            }],
        }
    }

    #[test]
    fn a_status_goes_through_its_json_unchanged() {
        let status = full_status();
        let json = status.to_json().to_string();
        // The bytes the reply had when it was built with `json!` from the same values.
        let before = json!({ "volumes": status.volumes, "tasks": status.tasks }).to_string();
        assert_eq!(json, before);
        for part in [
            r#""state":"renew""#,
            r#""state":"replace""#,
            r#""state":"ends""#,
            r#""at_stop":"revoked at stop""#,
            r#""at_stop":"not revoked at stop: its role has no_store"#,
        ] {
            assert!(json.contains(part), "{part} in {json}");
        }
        let read: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(read, status);
        let table = render_table(&read);
        for line in [
            "db  (database/creds/app, pki/issue/web; 2 active mount(s))\n",
            "    lease L2  expires in 30s  (replace)\n",
            "    pki/issue/web expires in - (expiration 1800000000)  replaced in 1h  (replace)\n",
            "    certificate 7c  not revoked at stop: its role has no_store",
            "    lease T2  expires in 30s  (ends)\n",
        ] {
            assert!(table.contains(line), "{line:?} in {table}");
        }
    }

    #[tokio::test]
    async fn the_cli_client_and_the_routes_agree() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let app = router(Arc::new(FakeOperations));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let status = request(&socket, "GET", "/status", None).await.unwrap();
        assert_eq!(status["volumes"][0]["name"], "app");
        let table = render_table(&serde_json::from_value(status).unwrap());
        assert!(table.starts_with("app  (kv/app; 0 active mount(s))"), "{table}");
        assert!(
            table.contains("swarm task secrets (1 task token(s))\n  task t0ask  secret s3cret  service web  token acc-task expires in 1m 30s\n    lease database/creds/app/L1  expires in 30s  (renew)\n"),
            "{table}"
        );
        let rotated =
            request(&socket, "POST", "/rotate", Some(&json!({"volume": "app"}))).await.unwrap();
        assert_eq!(rotated["rotated"], 2);
        let e = request(&socket, "POST", "/rotate", Some(&json!({"volume": "nope"})))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "no such volume: nope");
        let e = request(&dir.path().join("none.sock"), "GET", "/status", None).await.unwrap_err();
        assert!(matches!(e, AdminError::Connect { .. }) && e.to_string().contains("none.sock"));
    }
}
