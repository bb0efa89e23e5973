//! Start-up and shutdown: the directories and the private tmpfs, the identity, the driver
//! restored from state, the plugin socket, the background tasks. (`check` is [`crate::check`].)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::UnixListener;

use crate::api::listener;
use crate::config::Config;
use crate::dockerd::{DockerEngine, EngineKind};
use crate::driver::{Driver, Edges, Parts};
use crate::identity::IdentitySlot;
use crate::state::{create_private_dir, DirStore};
use crate::tmpfs::{LinuxMounter, Mounter, TmpfsOptions};
use crate::vault::HttpVault;

/// The size of the private tmpfs that holds tokens (a few hundred bytes per mount; a quarter
/// kept for the plugin's own records: [`crate::state::quota`]).
const PRIVATE_SIZE: u64 = crate::state::quota::CAPACITY;

/// The private tmpfs's size: [`PRIVATE_SIZE`], or `VAULT_SECRETS_PRIVATE_SIZE` (bytes, at
/// least 64 KiB), with which the tests fill it in a few dozen mounts.
fn private_size() -> u64 {
    std::env::var("VAULT_SECRETS_PRIVATE_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|size| *size >= 64 * 1024)
        .unwrap_or(PRIVATE_SIZE)
}

/// The host's real edges: OpenBao/Vault over HTTP, mount(2), the state directories, dockerd.
pub struct Host;

impl Edges for Host {
    type Vault = HttpVault;
    type Mounter = LinuxMounter;
    type Store = DirStore;
    type Engine = DockerEngine;
}

pub type RealDriver = Driver<Host>;

/// How often mounts that no running container uses are looked for, and how old such a mount
/// must be to be released. `VAULT_SECRETS_SWEEP_INTERVAL` (seconds) overrides it.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

fn sweep_interval() -> Duration {
    std::env::var("VAULT_SECRETS_SWEEP_INTERVAL")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(SWEEP_INTERVAL)
}

/// The Docker Engine API socket: `DOCKER_HOST` when it is `unix://…`, else the default.
fn docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(crate::dockerd::DEFAULT_SOCKET))
}

/// How long one call to an engine may take.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(10);

/// The container engines, each made once: `plugin.engines`, or by default the Docker engine
/// (`DOCKER_HOST` when it is `unix://…`, else the default socket) and rootful Podman's API
/// service ([`crate::dockerd::PODMAN_SOCKET`], taken for a Podman engine until it answers:
/// while it does not, only Podman's mounts wait for it).
pub fn engines(config: &Config) -> Vec<Arc<DockerEngine>> {
    match &config.plugin.engines {
        Some(sockets) => {
            sockets.iter().map(|s| Arc::new(DockerEngine::new(s, ENGINE_TIMEOUT))).collect()
        }
        None => {
            let docker = docker_socket();
            let podman = Path::new(crate::dockerd::PODMAN_SOCKET);
            let mut engines = vec![Arc::new(DockerEngine::new(&docker, ENGINE_TIMEOUT))];
            if docker != podman {
                let kind = EngineKind::Podman;
                engines.push(Arc::new(DockerEngine::of_kind(podman, ENGINE_TIMEOUT, kind)));
            }
            engines
        }
    }
}

/// The runtime directories: below `runtime_dir`, but for `mounts`.
pub struct RuntimeDirs {
    /// The read-only binds handed to Docker: `runtime_dir/mounts`, or `VAULT_SECRETS_MOUNTS_DIR`
    /// (the managed plugin's propagated mount, which cannot be below `runtime_dir`: runc mounts
    /// the `runtime` bind after it, and that would hide it).
    pub mounts: PathBuf,
    /// The tmpfs mounts themselves, written only by the plugin (mode 0700).
    pub files: PathBuf,
    pub private: PathBuf,
}

/// Overrides where the read-only binds Docker gets are made.
const MOUNTS_DIR_VAR: &str = "VAULT_SECRETS_MOUNTS_DIR";

impl RuntimeDirs {
    pub fn of(config: &Config) -> RuntimeDirs {
        let mounts = std::env::var_os(MOUNTS_DIR_VAR).filter(|d| !d.is_empty());
        RuntimeDirs {
            mounts: mounts
                .map(PathBuf::from)
                .unwrap_or_else(|| config.plugin.runtime_dir.join("mounts")),
            files: config.plugin.runtime_dir.join("files"),
            private: config.plugin.runtime_dir.join("private"),
        }
    }
}

/// Creates the runtime directories and mounts the private tmpfs (unless a previous run left
/// it mounted, with the tokens of the mounts it served). The locks on `runtime_dir` and
/// `state_dir` are held for as long as the process runs: a second plugin over the same
/// runtime directory would take the first one's mount records for its own and release them;
/// over the same state directory, serve and remove the other's volumes.
fn prepare_runtime(
    config: &Config,
    mounter: &LinuxMounter,
) -> anyhow::Result<(RuntimeDirs, [std::fs::File; 2])> {
    let dirs = RuntimeDirs::of(config);
    if !dirs.mounts.is_absolute() {
        anyhow::bail!("{MOUNTS_DIR_VAR}={}: not an absolute path", dirs.mounts.display());
    }
    create_private_dir(&config.plugin.runtime_dir)?;
    let runtime_lock = lock_dir(&config.plugin.runtime_dir, "runtime_dir")?;
    create_private_dir(&config.plugin.state_dir)?;
    let state_lock = lock_dir(&config.plugin.state_dir, "state_dir")?;
    create_private_dir(&dirs.mounts)?;
    create_private_dir(&dirs.files)?;
    if !mounter.is_mounted(&dirs.private) {
        create_private_dir(&dirs.private)?;
        let options = TmpfsOptions { size: private_size(), mode: 0o700, uid: 0, gid: 0 };
        mounter.mount_tmpfs(&dirs.private, &options).context("the private tmpfs for tokens")?;
    } else {
        // A copy of it that mount propagation made while it was being mounted (a managed
        // plugin enabled again sees the host's) is read-only per mount: made writable here.
        mounter.set_read_only(&dirs.private, false).context("the private tmpfs for tokens")?;
        if let Err(e) = mounter.resize_tmpfs(&dirs.private, private_size()) {
            // Left by an earlier run, perhaps of a build that mounted it smaller: what it
            // holds stays, only its room is set; without it the quota is still kept, on less
            // room.
            tracing::warn!(error = %crate::report::chain(&e), "cannot set the size of the private tmpfs");
        }
    }
    Ok((dirs, [runtime_lock, state_lock]))
}

/// An exclusive lock on `dir/lock` (the directory that configuration key `key` names),
/// refused at once when another process holds it.
fn lock_dir(dir: &Path, key: &str) -> anyhow::Result<std::fs::File> {
    use rustix::fs::{flock, FlockOperation};
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => anyhow::bail!(
            "{key} {} is in use by another vault-secrets plugin (it holds {}): give each plugin a directory of its own",
            dir.display(),
            path.display()
        ),
        Err(e) => Err(std::io::Error::from(e))
            .with_context(|| format!("cannot lock {}", path.display())),
    }
}

fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e)
                .with_context(|| format!("cannot remove the old socket {}", path.display()))
        }
        _ => {}
    }
    // Created with no access for anyone but the owner, before the first connection can come.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let listener = UnixListener::bind(path);
    rustix::process::umask(old);
    listener.with_context(|| format!("cannot listen on {}", path.display()))
}

/// `serve`: runs until SIGTERM or SIGINT. Mounts are kept across a restart: running
/// containers keep their files, and a restarted plugin still revokes at Unmount.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let mounter = LinuxMounter::default();
    let (dirs, _locks) = prepare_runtime(&config, &mounter)?;
    let store =
        Arc::new(DirStore::open_sized(&config.plugin.state_dir, &dirs.private, private_size())?);
    let vault = HttpVault::new(&config.vault)?;
    for warning in crate::config::plain_http_warnings(&config.vault.address) {
        tracing::warn!("{warning}");
    }
    let driver = Arc::new(RealDriver::new(Parts {
        vault: Arc::new(vault),
        mounter,
        store,
        engines: engines(&config),
        identity: Arc::new(IdentitySlot::new(Err("logging in".into()))),
        defaults: config.defaults.clone(),
        userns: config.userns.clone(),
        mounts_root: dirs.mounts.clone(),
        files_root: dirs.files.clone(),
        driver_name: config.plugin.driver_name(),
        templates_dir: config.plugin.templates_dir.clone(),
        audit: Arc::new(
            crate::audit::Audit::open(config.plugin.audit_log.as_deref()).with_context(|| {
                format!("cannot open the audit log {:?}", config.plugin.audit_log)
            })?,
        ),
    }));
    driver.restore().await;
    driver.restore_tasks();

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(driver.clone().log_in(config.vault.auth.clone(), shutdown_rx.clone()));
    tasks.spawn(driver.lease_manager().run(driver.clone(), shutdown_rx.clone()));
    tasks.spawn(retry_revocations(driver.clone(), shutdown_rx.clone()));
    tasks.spawn(driver.clone().sweep_every(sweep_interval(), shutdown_rx.clone()));
    tasks.spawn(driver.clone().watch_tasks(shutdown_rx.clone()));
    tasks.spawn(driver.clone().tie_new_mounts(shutdown_rx.clone()));
    tasks.spawn(driver.clone().follow_deaths(shutdown_rx.clone()));

    // Every listener is bounded; their caps leave descriptors for Unmount and revocation.
    let [plugin_limits, admin_limits, metrics_limits] = listener::reserve_fds([
        crate::api::plugin::LIMITS,
        crate::api::admin::LIMITS,
        crate::api::metrics::LIMITS,
    ]);
    let (stop_listening, listening) = tokio::sync::watch::channel(false);
    let mut listeners = tokio::task::JoinSet::new();
    let admin = bind_socket(&config.plugin.admin_socket)?;
    let admin_app = crate::api::admin::router(driver.clone());
    listeners.spawn(listener::serve(admin, admin_app, admin_limits, listening.clone()));
    if let Some(addr) = config.plugin.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        let app = crate::api::metrics::router(driver.clone());
        listeners.spawn(listener::serve(metrics, app, metrics_limits, listening.clone()));
        tracing::info!(%addr, "metrics on /metrics");
    }
    let plugin = bind_socket(&config.plugin.socket)?;
    let app = crate::api::plugin::router(driver.clone());
    listeners.spawn(listener::serve(plugin, app, plugin_limits, listening));
    tracing::info!(
        version = crate::VERSION,
        socket = %config.plugin.socket.display(),
        driver = %config.plugin.driver_name(),
        vault = %config.vault.address,
        engines = ?driver.engine_names(),
        "serving"
    );

    shutdown_signal().await;
    // Stop accepting everywhere at once, and let the requests in flight finish.
    let _ = stop_listening.send(true);
    while let Some(done) = listeners.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, "a listener failed");
        }
    }
    let _ = shutdown_tx.send(true);
    tasks.shutdown().await;
    let _ = std::fs::remove_file(&config.plugin.socket);
    let _ = std::fs::remove_file(&config.plugin.admin_socket);
    tracing::info!("stopped; active mounts are kept for the next start");
    Ok(())
}

async fn retry_revocations<E: Edges>(
    driver: Arc<Driver<E>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = shutdown.changed() => return,
        }
        driver.retry_revocations().await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
