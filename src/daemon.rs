//! Start-up and shutdown: the directories and the private tmpfs, the identity, the driver
//! restored from state, the plugin socket, the background tasks; and the `check` command.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::UnixListener;

use crate::api::listener;
use crate::config::{AuthConfig, Config};
use crate::dockerd::{DockerEngine, Engine, EngineKind};
use crate::driver::{Driver, Edges, Parts};
use crate::identity::IdentitySlot;
use crate::state::{create_private_dir, DirStore, IdentityRecord};
use crate::tmpfs::{LinuxMounter, Mounter, TmpfsOptions};
use crate::vault::credentials::{load_client_certificate, load_jwt, load_secret_file};
use crate::vault::{HttpVault, Login, Vault};

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

/// `check`: the configuration is valid (already, to get here), Vault answers, the identity
/// works. Consumes nothing and creates nothing: a wrapped secret_id is looked up, not unwrapped;
/// the token a running plugin keeps is read only where its private tmpfs is mounted.
pub async fn check(config: &Config) -> anyhow::Result<Vec<String>> {
    let vault = HttpVault::new(&config.vault)?;
    let private = RuntimeDirs::of(config).private;
    let kept = LinuxMounter::default()
        .is_mounted(&private)
        .then(|| crate::state::peek_identity(&private))
        .flatten();
    let mut report = check_with(config, &vault, kept).await?;
    report.extend(check_engines(&engines(config), &config.plugin.driver_name()).await);
    report.extend(crate::swap::check_here());
    Ok(report)
}

/// What `check` says of each engine: it answers (and how many of its containers use the
/// plugin's volumes), or it cannot be asked — a warning, but for Podman's default socket where
/// no Podman API service runs (a host without Podman).
pub async fn check_engines<G: Engine>(engines: &[Arc<G>], driver: &str) -> Vec<String> {
    let mut report = Vec::new();
    if engines.is_empty() {
        report.push("warning: no container engine is configured (plugin.engines = []): nothing is signalled, mounts end only at their Unmount".into());
    }
    for engine in engines {
        let name = engine.name();
        match engine.volume_mounts(driver).await {
            Ok(mounts) => {
                let mut containers: Vec<&str> = mounts.iter().map(|m| m.container_id.as_str()).collect();
                containers.sort_unstable();
                containers.dedup();
                let kind = format!("{:?}", engine.kind()).to_lowercase();
                report.push(format!(
                    "engine {name} ({kind}) answers; {} of its containers use the plugin's volumes",
                    containers.len()
                ));
                if engine.kind() != EngineKind::Podman {
                    report.extend(crate::dockerd::userns::check_line(name, engine.id_map().await));
                }
            }
            Err(_) if engine.kind() == EngineKind::Podman && !Path::new(name).exists() => {
                report.push(format!("no Podman API service at {name}: needed only if Podman uses the plugin (podman.socket, or `podman system service --time=0 unix://{name}`)"));
            }
            Err(e) => report.push(format!(
                "warning: engine {name} cannot be asked ({}): its containers' mounts are neither signalled nor released by the sweep, and end at their Unmount",
                crate::report::chain(&e)
            )),
        }
    }
    report
}

/// What `check` does, over any [`Vault`]: every failure is an error that says what is wrong;
/// the report says which identity `serve` would use.
pub async fn check_with<V: Vault>(
    config: &Config,
    vault: &V,
    kept: Option<IdentityRecord>,
) -> anyhow::Result<Vec<String>> {
    let mut report =
        vec![format!("configuration is valid; driver name {}", config.plugin.driver_name())];
    let states = vault.nodes().await;
    let nodes: Vec<String> =
        states.iter().map(|n| format!("vault node {}: {}", n.address, n.state)).collect();
    vault.health().await.map_err(|e| {
        anyhow::anyhow!("vault health: {}{}", crate::report::chain(&e), node_list(&nodes))
    })?;
    report.extend(nodes.iter().cloned());
    if states.len() > 1 && !states.iter().any(|n| n.state == crate::vault::NodeState::Active) {
        report.push("warning: no listed node is active: a leader election, or the active node is not in vault.address (standbys forward to it)".into());
    }
    report.push(format!("vault at {} answers, unsealed", config.vault.address));
    report.extend(
        crate::config::plain_http_warnings(&config.vault.address)
            .into_iter()
            .map(|w| format!("warning: {w}")),
    );
    let mut serve_uses = "the configured identity";
    if let Some(kept) = &kept {
        // What `serve` does: carry on with the kept token while it is valid, else log in anew.
        match vault.lookup_self(&kept.token).await {
            Ok(info) => {
                report.push(format!(
                    "the token kept by a running plugin (private tmpfs) is valid (ttl {})",
                    describe_ttl(info.ttl)
                ));
                serve_uses = "the kept token until it expires, then the configured identity";
            }
            Err(e) => report.push(format!(
                "the token kept from an earlier run is no longer valid ({})",
                crate::report::chain(&e)
            )),
        }
    }
    // The configured identity is checked whatever is kept: it is what a restart after the kept
    // token expires, or after a reboot, depends on.
    match &config.vault.auth {
        AuthConfig::Token { token_file } => {
            let token = load_secret_file("token", token_file).await?;
            report.extend(exposed("token", token_file));
            let info = vault
                .lookup_self(&token)
                .await
                .with_context(|| format!("the token in {}", token_file.display()))?;
            report.push(format!(
                "the token in {} is valid (ttl {})",
                token_file.display(),
                describe_ttl(info.ttl)
            ));
        }
        AuthConfig::AppRole { role_id_file, secret_id_file, secret_id_wrapped } => {
            load_secret_file("role_id", role_id_file).await?;
            report.extend(exposed("role_id", role_id_file));
            let kept_secret_id = kept.as_ref().is_some_and(|k| k.secret_id.is_some());
            if *secret_id_wrapped && kept_secret_id && !secret_id_file.exists() {
                report.push(format!(
                    "the secret_id was unwrapped by the running plugin and is kept in its private tmpfs; after a reboot, {} needs a fresh wrapped secret_id",
                    secret_id_file.display()
                ));
                report.push(format!("serve would use {serve_uses}"));
                return Ok(report);
            }
            let role_id = load_secret_file("role_id", role_id_file).await?;
            let secret = load_secret_file("secret_id", secret_id_file).await?;
            report.extend(exposed("secret_id", secret_id_file));
            if *secret_id_wrapped {
                vault.wrapping_creation_path(&secret).await.with_context(|| {
                    format!(
                        "the wrapping token in {} is used, expired or unknown",
                        secret_id_file.display()
                    )
                })?;
                report.push(format!(
                    "the wrapping token in {} is valid and unused",
                    secret_id_file.display()
                ));
            } else {
                let probe = vault
                    .approle_login(role_id.expose(), &secret)
                    .await
                    .context("AppRole login with the role_id and secret_id files")?;
                let _ = vault.revoke_self(&probe.token).await;
                report.push(format!("AppRole login works (ttl {})", describe_ttl(probe.ttl)));
            }
        }
        AuthConfig::Cert { client_cert, client_key, role, mount } => {
            load_client_certificate(client_cert, client_key).await?;
            report.push(format!(
                "the client certificate {} and its key {} parse and match",
                client_cert.display(),
                client_key.display()
            ));
            report.extend(exposed("client key", client_key));
            let login = Login::Cert { mount, role: role.as_deref() };
            report.push(probe_login(vault, &login, "certificate").await?);
        }
        AuthConfig::Jwt { jwt_file, role, mount } => {
            let jwt = load_jwt(jwt_file).await?;
            report.extend(exposed("JWT", jwt_file));
            let login = Login::Jwt { mount, role, jwt: &jwt };
            report.push(probe_login(vault, &login, "JWT").await?);
        }
    }
    report.push(format!("serve would use {serve_uses}"));
    Ok(report)
}

/// Logs in as `serve` would, and revokes the token at once; the error is Vault's reason.
async fn probe_login<V: Vault>(
    vault: &V,
    login: &Login<'_>,
    method: &str,
) -> anyhow::Result<String> {
    let role = match login {
        Login::Cert { role: Some(role), .. } | Login::Jwt { role, .. } => format!(", role {role}"),
        Login::Cert { role: None, .. } => String::new(),
    };
    let probe = vault
        .login(login)
        .await
        .with_context(|| format!("{method} login at {}{role}", login.path()))?;
    let _ = vault.revoke_self(&probe.token).await;
    Ok(format!("{method} login at {}{role} works (ttl {})", login.path(), describe_ttl(probe.ttl)))
}

/// `; nodes: …` for an error, when there are nodes to tell apart.
fn node_list(nodes: &[String]) -> String {
    if nodes.is_empty() {
        return String::new();
    }
    format!("; {}", nodes.join("; "))
}

/// A warning when a file of the identity may be read or written by anyone but its owner (the
/// check still passes: the plugin can use it, but so may others).
fn exposed(what: &str, path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o066 != 0).then(|| {
        format!(
            "warning: the {what} file {} has mode {mode:04o}: others than its owner may read or change it; chmod 0600 it (and write such files with `umask 077` or `install -m 0600`)",
            path.display()
        )
    })
}

fn describe_ttl(ttl: Duration) -> String {
    if ttl.is_zero() {
        "none: it does not expire".into()
    } else {
        crate::report::duration(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use crate::vault::fake::FakeVault;
    use crate::vault::Token;

    fn config(token_file: &Path) -> Config {
        let text = format!(
            "[vault]\naddress = \"http://127.0.0.1:8200\"\n[vault.auth]\nmethod = \"token\"\ntoken_file = \"{}\"\n",
            token_file.display()
        );
        Config::parse(&text, &Overrides::default()).unwrap()
    }

    fn kept(token: &str) -> Option<IdentityRecord> {
        Some(IdentityRecord { token: Token::new(token.into()), secret_id: None })
    }

    #[tokio::test]
    async fn check_fails_on_a_broken_configured_identity_even_with_a_valid_kept_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "bad-token").unwrap();
        let vault = FakeVault::default();
        vault.knows("kept-token", Duration::from_secs(600));
        let e = check_with(&config(&file), &vault, kept("kept-token")).await.unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains(&file.display().to_string()) && e.contains("permission denied"), "{e}");
        let missing = dir.path().join("missing");
        let e = check_with(&config(&missing), &vault, kept("kept-token")).await.unwrap_err();
        assert!(format!("{e:#}").contains("cannot read token"), "{e:#}");
    }

    #[tokio::test]
    async fn check_warns_of_a_secret_file_others_may_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "good-token").unwrap();
        let vault = FakeVault::default();
        vault.knows("good-token", Duration::from_secs(600));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let report = check_with(&config(&file), &vault, None).await.unwrap();
        let warning = format!("warning: the token file {} has mode 0644", file.display());
        assert!(report.iter().any(|l| l.starts_with(&warning) && l.contains("chmod 0600")));
        assert!(!report.iter().any(|l| l.contains("good-token")), "{report:?}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let report = check_with(&config(&file), &vault, None).await.unwrap();
        assert!(!report.iter().any(|l| l.contains("warning")), "{report:?}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o620)).unwrap();
        let report = check_with(&config(&file), &vault, None).await.unwrap();
        assert!(report.iter().any(|l| l.contains("mode 0620")), "{report:?}");
    }

    #[tokio::test]
    async fn check_says_which_identity_serve_would_use() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "good-token").unwrap();
        let vault = FakeVault::default();
        vault.knows("good-token", Duration::from_secs(600));
        vault.knows("kept-token", Duration::from_secs(60));
        let report = check_with(&config(&file), &vault, None).await.unwrap();
        assert_eq!(report.last().unwrap(), "serve would use the configured identity");
        let report = check_with(&config(&file), &vault, kept("kept-token")).await.unwrap();
        assert!(report.iter().any(|l| l.contains("kept by a running plugin") && l.contains("1m")));
        assert!(report.last().unwrap().contains("the kept token until it expires"));
        let report = check_with(&config(&file), &vault, kept("gone-token")).await.unwrap();
        assert!(report.iter().any(|l| l.contains("no longer valid")), "{report:?}");
        assert_eq!(report.last().unwrap(), "serve would use the configured identity");
        vault.sealed.store(true, std::sync::atomic::Ordering::SeqCst);
        let e = check_with(&config(&file), &vault, None).await.unwrap_err();
        assert!(format!("{e:#}").contains("vault health") && format!("{e:#}").contains("sealed"));
    }

    #[tokio::test]
    async fn check_warns_of_plain_http_off_loopback_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "good-token").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let vault = FakeVault::default();
        vault.knows("good-token", Duration::from_secs(600));
        let report = check_with(&config(&file), &vault, None).await.unwrap();
        assert!(!report.iter().any(|l| l.contains("warning")), "loopback is silent: {report:?}");
        let mut remote = config(&file);
        remote.vault.address =
            crate::config::Addresses::parse("vault.address", &["http://10.0.0.1:8200"]).unwrap();
        let report = check_with(&remote, &vault, None).await.unwrap();
        assert!(
            report.iter().any(|l| l
                .starts_with("warning: vault address http://10.0.0.1:8200 is plain http")
                && l.contains("unencrypted")),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn check_says_which_engines_answer() {
        use crate::dockerd::FakeEngine;
        let docker = Arc::new(FakeEngine::named("/var/run/docker.sock", EngineKind::Docker));
        docker.runs("c1", "app", "/s", "0:40");
        docker.runs("c1", "db", "/d", "0:41");
        let podman = Arc::new(FakeEngine::named("/nonexistent/podman.sock", EngineKind::Podman));
        podman.unreachable.store(true, std::sync::atomic::Ordering::SeqCst);
        let other = Arc::new(FakeEngine::named("/run/other.sock", EngineKind::Unknown));
        other.unreachable.store(true, std::sync::atomic::Ordering::SeqCst);
        let remapping = Arc::new(FakeEngine::named("/run/remap.sock", EngineKind::Docker));
        *remapping.id_map.lock().unwrap() =
            Some(crate::dockerd::userns::IdMap::single(100000, 100000, 65536));
        let report = check_engines(&[docker, podman, other, remapping], "vault-secrets").await;
        assert_eq!(report[0], "engine /var/run/docker.sock (docker) answers; 1 of its containers use the plugin's volumes");
        assert!(report[4].starts_with("engine /run/remap.sock remaps user namespaces (container root is host 100000:100000"), "{report:?}");
        assert!(
            report[1].starts_with("no Podman API service at /nonexistent/podman.sock"),
            "{report:?}"
        );
        assert!(
            report[2].starts_with("warning: engine /run/other.sock cannot be asked"),
            "{report:?}"
        );
        let none = check_engines::<FakeEngine>(&[], "vault-secrets").await;
        assert!(none[0].starts_with("warning: no container engine"), "{none:?}");
    }

    #[tokio::test]
    async fn check_reports_a_jwt_identity_s_problems() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token.jwt");
        let text = format!(
            "[vault.auth]\nmethod = \"jwt\"\njwt_file = \"{}\"\nrole = \"hosts\"\n",
            file.display()
        );
        let config = Config::parse(&text, &Overrides::default()).unwrap();
        let vault = FakeVault::default();
        let e = format!("{:#}", check_with(&config, &vault, None).await.unwrap_err());
        assert!(
            e.contains("cannot read JWT from") && e.contains(&file.display().to_string()),
            "{e}"
        );
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJuIn0.c2ln";
        std::fs::write(&file, jwt).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", check_with(&config, &vault, None).await.unwrap_err());
        assert!(
            e.starts_with("JWT login at auth/jwt/login, role hosts: ")
                && e.contains("invalid audience"),
            "vault's reason: {e}"
        );
        *vault.jwt.lock().unwrap() = jwt.into();
        let report = check_with(&config, &vault, None).await.unwrap();
        assert!(
            report.iter().any(|l| l.starts_with("warning: the JWT file") && l.contains("0644")),
            "{report:?}"
        );
        assert!(
            report.iter().any(|l| l.starts_with("JWT login at auth/jwt/login, role hosts works")),
            "{report:?}"
        );
        assert!(vault.tokens.lock().unwrap().is_empty(), "the probe's token was revoked");
        assert!(!report.iter().any(|l| l.contains(jwt)), "{report:?}");
    }
}
