//! The container engines' API, the calls the plugin makes *into* dockerd or Podman's
//! Docker-compatible service: which containers use which of our volumes, a container's mount
//! table, its death, and sending it a signal. [`Engine`] is the trait; the real
//! [`DockerEngine`] is `bollard` over the engine's Unix socket; [`FakeEngine`] is for unit
//! tests. On a swarm manager it also tells which swarm tasks still run (`GET /tasks`), for swarm
//! secrets. Which mount belongs to which container is decided from the engine's record and the
//! container's mount table: see [`mountinfo`].
//!
//! The API version is negotiated with the engine at the first call (bollard's newest, lowered to
//! the engine's; bollard 0.21 in fact sends paths without a version prefix, which the engine
//! answers in its own current version): a pinned version is refused once an engine raises its
//! minimum (Docker 29 requires 1.44 and refuses 1.41), while the few fields read here — a container's `Id`,
//! `State`, `State.Pid` and `Mounts[].{Type,Name,Destination,Driver}`, `/info`'s
//! `SecurityOptions` and `DockerRootDir` (user namespace remapping: [`userns`]) — and the `kill` and
//! `events` endpoints have kept their shape since API 1.23. Replies are not bounded by the
//! plugin: the engine is a root daemon of the host, trusted like the kernel.
//!
//! Podman (4.3 and later) serves the same API under `podman system service` and mounts a
//! plugin's volume once for all of its containers, always with the same mount ID
//! ([`PODMAN_MOUNT_ID`]); Docker mounts it once per container mount point, with a random ID.

mod docker;
mod fake;
pub mod mountinfo;
pub mod record;
pub mod userns;

pub use docker::DockerEngine;
use docker::{check_container_id, check_signal};
pub use fake::FakeEngine;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::stream::BoxStream;

/// Where dockerd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Where rootful Podman's API service listens (`podman.socket`, or `podman system service`).
pub const PODMAN_SOCKET: &str = "/run/podman/podman.sock";

/// The mount ID Podman sends with every Mount and Unmount of a plugin's volume (the SHA-256 of
/// `placeholder\n`): it counts its containers' uses itself and mounts a volume once for all of
/// them.
pub const PODMAN_MOUNT_ID: &str =
    "2f73349cfc4630255319c6c8dfc1b46a8996ace9d14d8e07563b165915918ec2";

/// Whether a mount with this ID is shared by every container of its engine that uses the
/// volume (Podman's), rather than made for one container mount point (Docker's).
pub fn shared_mount(id: &str) -> bool {
    id == PODMAN_MOUNT_ID
}

/// What kind of engine answers on a socket: told by its `/version` (Podman's names its
/// component "Podman Engine").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Docker,
    Podman,
    /// Not reached yet.
    Unknown,
}

impl EngineKind {
    /// Whether an engine of this kind could have made a mount with this ID: Podman makes only
    /// [`PODMAN_MOUNT_ID`], Docker never does; an engine not reached yet, anything.
    pub fn could_have_made(self, mount_id: &str) -> bool {
        match self {
            EngineKind::Docker => !shared_mount(mount_id),
            EngineKind::Podman => shared_mount(mount_id),
            EngineKind::Unknown => true,
        }
    }
}

/// The stream of the IDs of containers that die, as [`Engine::deaths`] gives it.
pub type Deaths = BoxStream<'static, Result<String, EngineError>>;

/// One volume mount of a container, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMount {
    pub container_id: String,
    /// The container's name, without Docker's leading `/`.
    pub container_name: String,
    /// The container's state is `running`, `restarting` or `paused`.
    pub running: bool,
    /// The container's state is `created`: being started (its volumes mounted, its process
    /// not yet there), or created and never started.
    pub starting: bool,
    /// The container's state is `restarting`: its restart policy starts it again (counted as
    /// `running`, its mounts being made anew).
    pub restarting: bool,
    /// The volume's name (`Mounts[].Name`).
    pub volume: String,
    /// Where the container has it (`Mounts[].Destination`), as the engine was asked for it.
    pub destination: String,
    /// `Mounts[].Source`: Podman's is the path its one Mount of the volume returned; Docker's
    /// is whatever the volume's Get or Path last answered, not this container's mount (empty
    /// when the plugin names none). Not used to attribute mounts.
    pub source: PathBuf,
}

/// A swarm task as the manager reports it (`GET /tasks`): its ID and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmTask {
    pub id: String,
    /// `Status.State`: `new` … `running`, then `complete`, `failed`, `shutdown`, `rejected`,
    /// `orphaned` or `remove`.
    pub state: String,
}

impl SwarmTask {
    /// Whether the task has ended: a state it never leaves (swarmkit's `TaskState` past
    /// `running`).
    pub fn ended(&self) -> bool {
        matches!(
            self.state.as_str(),
            "complete" | "failed" | "shutdown" | "rejected" | "orphaned" | "remove"
        )
    }
}

/// How many task IDs go in one `GET /tasks?filters=…` (the query stays a few KiB).
const TASKS_PER_QUERY: usize = 100;

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
    #[error("no container engine is configured (plugin.engines is empty)")]
    NoEngine,
    #[error("not a container id: {id:?}")]
    InvalidContainerId { id: String },
    #[error("not a signal: {signal:?} (expected SIGNAME or a number from 1 to 64)")]
    InvalidSignal { signal: String },
    #[error("the user namespace remapping of the docker engine at {socket} is unknown")]
    Userns {
        socket: PathBuf,
        #[source]
        source: userns::UsernsError,
    },
    #[error("cannot read the docker engine's record of container {id}")]
    Record {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the mount table of container process {pid}")]
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

/// The container engine operations the plugin uses.
pub trait Engine: Send + Sync + 'static {
    /// The engine's name in records, logs and the audit: its API socket's path.
    fn name(&self) -> &str;

    /// The engine's kind, once it has been reached (or when its configuration says).
    fn kind(&self) -> EngineKind;

    /// Every container's volume mounts whose Driver is `driver`, or a managed plugin serving
    /// the socket `driver.sock` (running or not).
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

    /// The mount table of a running container's main process (`/proc/PID/mountinfo`, parsed);
    /// `None` when the container does not run (or is gone).
    fn mount_table(
        &self,
        container_id: &str,
    ) -> impl Future<Output = Result<Option<Vec<mountinfo::MountEntry>>, EngineError>> + Send;

    /// The swarm tasks among `ids` that the manager knows, with their states (a task it no
    /// longer knows is absent). Fails on a node that is no swarm manager.
    fn tasks(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<SwarmTask>, EngineError>> + Send;

    /// The IDs of the containers that die from now on (Docker's `die` events; Podman's
    /// `died`, which its compatible API calls `die`), as a stream that ends, or yields an
    /// error, when the connection to the engine does.
    fn deaths(&self) -> impl Future<Output = Result<Deaths, EngineError>> + Send;

    /// How the engine maps its containers' user ids to the host's (`dockerd
    /// --userns-remap`): `None` when it does not remap. See [`userns`].
    fn id_map(&self) -> impl Future<Output = Result<Option<userns::IdMap>, EngineError>> + Send;

    /// The container's `User` (`""`: none, root) as the engine recorded it, readable while the
    /// engine starts the container (see [`record`]); Docker only.
    fn user_of(
        &self,
        container_id: &str,
    ) -> impl Future<Output = Result<String, EngineError>> + Send;
}
