//! A flood of connections against the real plugin (issue 14, finding 5): thousands of idle and
//! half-header connections to `metrics_listen` (which any local user can reach) and to the
//! plugin socket, far over their caps, while a KV volume is mounted and unmounted.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::*;

/// The caps of the plugin socket, the admin socket and `metrics_listen` (`docker::LIMITS`,
/// `admin::LIMITS`, `metrics::LIMITS`).
const CAPS: usize = 256 + 16 + 32;
/// Descriptors the plugin holds besides its connections: listeners, the log, the runtime's
/// own, a few Vault connections.
const MARGIN: usize = 64;
/// Idle connections per target, and half-header ones opened before them (so that they hold
/// the slots and have to be dropped by the header timeout).
const IDLE: usize = 2_000;
const HALF: usize = 200;
/// The plugin socket's header timeout: the bound on how long a flood holds its slots.
const HEADER_READ: Duration = Duration::from_secs(10);

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Samples the plugin's open descriptors every 10 ms and keeps the highest count.
struct FdWatch {
    max: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FdWatch {
    fn start(pid: u32) -> FdWatch {
        let (max, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (m, s) = (max.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(open_fds(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        FdWatch { max, stop, thread: Some(thread) }
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }
}

impl Drop for FdWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `HALF` connections that send part of a head, then `IDLE` that send nothing; all kept open
/// (a connection the plugin closed stays open on our side). Stops early at `deadline`.
fn flood<S: Write>(
    mut connect: impl FnMut() -> std::io::Result<S>,
    half_head: &[u8],
    deadline: Instant,
) -> Vec<S> {
    let mut streams = Vec::with_capacity(HALF + IDLE);
    while streams.len() < HALF + IDLE && Instant::now() < deadline {
        let Ok(mut stream) = connect() else { continue };
        if streams.len() < HALF {
            let _ = stream.write_all(half_head);
        }
        streams.push(stream);
    }
    streams
}

/// How long opening a flood may take. On a loaded machine the kernel drops some SYNs while the
/// plugin's accept queue is full; the client sends them again after 1 s.
const FLOOD_DEADLINE: Duration = Duration::from_secs(30);

fn flood_metrics(addr: SocketAddr) -> Vec<TcpStream> {
    let deadline = Instant::now() + FLOOD_DEADLINE;
    flood(
        || TcpStream::connect_timeout(&addr, Duration::from_secs(3)),
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        deadline,
    )
}

fn flood_socket(path: &Path) -> Vec<UnixStream> {
    let deadline = Instant::now() + FLOOD_DEADLINE;
    flood(
        || UnixStream::connect(path),
        b"POST /VolumeDriver.List HTTP/1.1\r\nHost: x\r\n",
        deadline,
    )
}

/// One plugin call as dockerd's plugin client makes it: a connection closed without a reply is
/// retried after 1 s, 2 s, 4 s, … for up to 30 s (moby `pkg/plugins/client.go`,
/// `callWithRetry`). Returns the reply, how long it took and how many attempts.
fn call_like_dockerd(plugin: &Plugin, path: &str, body: Value) -> (Value, Duration, u32) {
    let started = Instant::now();
    let mut attempts = 0;
    let mut backoff = Duration::from_secs(1);
    loop {
        attempts += 1;
        if let Ok((status, reply)) = plugin.call(path, Some(body.clone())) {
            if status != 0 {
                assert_eq!(status, 200, "{path}: {reply}");
                assert_eq!(reply["Err"].as_str().unwrap_or(""), "", "{path}: {reply}");
                return (reply, started.elapsed(), attempts);
            }
        }
        assert!(
            started.elapsed() + backoff < Duration::from_secs(30),
            "{path}: dockerd would have given up after {attempts} attempts"
        );
        std::thread::sleep(backoff);
        backoff *= 2;
    }
}

/// Mounts and unmounts `name` as dockerd would; the mount's token exists in between and is
/// revoked after. Returns the Mount's latency and attempts.
fn mount_and_unmount(bao: &Bao, plugin: &Plugin, name: &str) -> (Duration, u32) {
    let before = bao.accessors();
    let id = mount_id();
    let request = json!({ "Name": name, "ID": id });
    let (reply, latency, attempts) =
        call_like_dockerd(plugin, "/VolumeDriver.Mount", request.clone());
    let mountpoint = Path::new(reply["Mountpoint"].as_str().unwrap()).to_owned();
    assert_eq!(std::fs::read_to_string(mountpoint.join("password")).unwrap(), "flood-proof");
    assert_eq!(bao.accessors().len(), before.len() + 1, "the mount's own token");
    call_like_dockerd(plugin, "/VolumeDriver.Unmount", request);
    assert!(mount_options(&mountpoint).is_none(), "tmpfs gone");
    assert_eq!(bao.accessors(), before, "the mount's token is revoked");
    (latency, attempts)
}

/// This process holds both ends' worth of client sockets: raise its own soft limit.
fn raise_own_fd_limit(needed: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    assert!(hard >= needed, "the test needs {needed} descriptors; the hard limit is {hard}");
    if limit.current.unwrap_or(u64::MAX) < needed {
        setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum })
            .unwrap();
    }
}

#[test]
fn a_connection_flood_leaves_mount_and_revocation_working_and_descriptors_bounded() {
    raise_own_fd_limit(2 * (HALF + IDLE) as u64 + 256);
    let bao = Bao::start();
    let mut plugin = Plugin::start(None, &bao.address(), &bao.token, "");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    plugin.stop(false);
    let config = std::fs::read_to_string(&plugin.config).unwrap().replacen(
        "[plugin]\n",
        &format!("[plugin]\nmetrics_listen = \"{metrics}\"\n"),
        1,
    );
    std::fs::write(&plugin.config, config).unwrap();
    plugin.restart();
    bao.put_kv2("flood", json!({ "password": "flood-proof" }));
    plugin.create("flood", json!({ "path": "secret/data/flood" }));
    let pid = plugin.pid();
    let (quiet, quiet_attempts) = mount_and_unmount(&bao, &plugin, "flood");
    assert_eq!(quiet_attempts, 1);
    let fds_before = open_fds(pid);
    let watch = FdWatch::start(pid);

    // The attack as reported: any local user, through metrics_listen.
    let tcp = flood_metrics(metrics);
    assert_eq!(tcp.len(), HALF + IDLE, "the flood is opened in full");
    let (during_metrics, attempts) = mount_and_unmount(&bao, &plugin, "flood");
    assert_eq!(attempts, 1, "a metrics flood does not touch the plugin socket");
    let fds_metrics_flood = watch.max();

    // The same on the plugin socket (only root can do that): its slots are held until the
    // header timeout drops the half-header connections, and dockerd's retries get through.
    let flooded_at = Instant::now();
    let unix = flood_socket(&plugin.socket);
    assert_eq!(unix.len(), HALF + IDLE, "the flood is opened in full");
    let (during_socket, attempts) = mount_and_unmount(&bao, &plugin, "flood");
    assert!(flooded_at.elapsed() >= HEADER_READ || attempts == 1, "the slots were held");
    let fds_max = watch.max();
    eprintln!(
        "plugin fds: {fds_before} before the flood, at most {fds_metrics_flood} during the metrics flood, \
         at most {fds_max} with both; Mount latency: {quiet:?} quiet, {during_metrics:?} during the metrics flood, \
         {during_socket:?} ({attempts} attempts) during the plugin socket flood"
    );
    assert!(fds_max < CAPS + MARGIN, "{fds_max} descriptors open in the plugin");
    drop((tcp, unix));

    // Every refusal counted; logged a few times, not once per connection.
    assert!(
        wait_until(Duration::from_secs(15), || open_fds(pid) <= fds_before + 4),
        "the plugin's descriptors come back down: {} open",
        open_fds(pid)
    );
    let text = reqwest::blocking::get(format!("http://{metrics}/metrics")).unwrap().text().unwrap();
    let refused = |listener: &str| -> u64 {
        let prefix = format!("vault_secrets_connections_refused_total{{listener=\"{listener}\"}} ");
        let line = text.lines().find_map(|l| l.strip_prefix(prefix.as_str()));
        line.unwrap_or_else(|| panic!("no {prefix}in\n{text}")).parse().unwrap()
    };
    assert!(refused("metrics") >= IDLE as u64, "{text}");
    assert!(refused("plugin") >= (IDLE + HALF - 256) as u64, "{text}");
    assert_eq!(refused("admin"), 0);
    let log_lines = plugin.log().matches("connections over the cap closed").count();
    assert!((2..=10).contains(&log_lines), "{log_lines} log lines about refusals");
}
