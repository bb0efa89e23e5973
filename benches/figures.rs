//! The figures of SPEC.md ("Figures to reach"), each measured next to its baseline in the same
//! run, on loopback against a local OpenBao dev server, PostgreSQL and Docker.
//!
//! Run it with `bash benches/run.sh` (root; it brings up the environment with `tests/env.sh`
//! and calls `cargo bench --bench figures`, so the plugin is a release build). Arguments after
//! `--` select figures by a part of their key: `cargo bench --bench figures -- mount memory`.
//!
//! Every loop is bounded in count and in time; every process started here is stopped and every
//! mount released at the end (the `Plugin` helper's `Drop` unmounts what is left). Exit status:
//! 0 when every figure was measured (met or missed), 1 when one could not be.

#[path = "../tests/util/mod.rs"]
mod util;

#[path = "figures/bao.rs"]
mod bao;
#[path = "figures/lifecycle.rs"]
mod lifecycle;
#[path = "figures/mounts.rs"]
mod mounts;
#[path = "figures/scale.rs"]
mod scale;

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use bao::*;
use lifecycle::*;
use mounts::*;
use scale::*;
use util::*;

/// The Docker driver name of the benchmark's plugin (its socket's file stem).
const DRIVER: &str = "vault-secrets-bench";
const WARMUP: usize = 10;

/// One line of the table.
struct Row {
    figure: String,
    measured: String,
    baseline: String,
    target: String,
    /// `None`: for information, no target.
    met: Option<bool>,
}

impl Row {
    fn new(
        figure: &str,
        measured: String,
        baseline: String,
        target: String,
        met: Option<bool>,
    ) -> Row {
        Row { figure: figure.to_owned(), measured, baseline, target, met }
    }
}

/// What every figure shares: one OpenBao, one plugin serving Docker as [`DRIVER`], and what the
/// figures left in Docker (removed at the end).
struct Bench {
    bao: Bao,
    plugin: Plugin,
    bao_bin: PathBuf,
    containers: std::sync::Mutex<Vec<String>>,
    volumes: std::sync::Mutex<Vec<String>>,
}

type Figure = fn(&Bench) -> Vec<Row>;

const FIGURES: &[(&str, &str, Figure)] = &[
    ("mount", "Mount of a one-secret KV v2 volume", mount_latency),
    ("concurrent", "64 concurrent mounts", concurrent_mounts),
    ("requests", "Vault requests per mount / unmount", requests_per_mount),
    ("first", "first secret files (KV + database)", first_secret),
    ("rotation", "KV change visible", kv_rotation),
    ("revocation", "container stop → database user dropped", revocation),
    ("docker", "docker run, vault-secrets vs local volume", docker_run),
    ("memory", "resident memory, 1,000 mounts", memory),
    ("scale", "2,000 active mounts: memory, Mount, status, restart", scale),
    ("renewal", "renewal traffic of 2,000 mounts, ttl=1m", renewal_traffic),
];

fn main() {
    let started = Instant::now();
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let selected =
        |key: &str| filters.is_empty() || filters.iter().any(|f| key.contains(f.as_str()));
    assert!(rustix::process::geteuid().is_root(), "run as root (mounts): sudo bash benches/run.sh");
    println!("vault-secrets figures ({})", machine());
    println!("load average at start: {}", load_average());

    let bao = Bao::start();
    let bao_bin = bao_binary(bao.port);
    let socket = Path::new("/run/docker/plugins").join(format!("{DRIVER}.sock"));
    let plugin = start_plugin(Some(&socket), &bao.address(), &bao.token);
    let bench =
        Bench { bao, plugin, bao_bin, containers: Default::default(), volumes: Default::default() };
    let mut rows = Vec::new();
    let mut failed = 0;
    for (key, title, figure) in FIGURES {
        if !selected(key) {
            continue;
        }
        let t = Instant::now();
        eprintln!("figure {key}: {title} …");
        match catch_unwind(AssertUnwindSafe(|| figure(&bench))) {
            Ok(r) => rows.extend(r),
            Err(panic) => {
                failed += 1;
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                let msg: String = msg.lines().next().unwrap_or("").chars().take(120).collect();
                rows.push(Row::new(
                    title,
                    format!("not measured: {msg}"),
                    "".into(),
                    "".into(),
                    None,
                ));
            }
        }
        eprintln!("figure {key}: {:.1} s", t.elapsed().as_secs_f64());
    }
    bench.cleanup();
    drop(bench);
    // The plugin was killed: its socket would stay behind, and dockerd would keep trying it.
    let _ = std::fs::remove_file(&socket);

    println!();
    print_table(&rows);
    println!();
    println!("load average at end: {}", load_average());
    println!("total: {:.0} s", started.elapsed().as_secs_f64());
    std::process::exit(i32::from(failed > 0));
}

/// The plugin (a release build: `cargo bench` builds one) with its token-file identity, its
/// `runtime_dir` on a tmpfs of its own, as `/run` is on a production host (on some machines,
/// this one included, `/run` is a directory of the root file system, where every mount's
/// directory would cost a journalled mkdir and rmdir).
fn start_plugin(socket: Option<&Path>, vault_address: &str, token: &str) -> Plugin {
    let mut plugin = Plugin::start(socket, vault_address, token, "");
    plugin.stop(false);
    for m in mounts_below(&plugin.runtime).into_iter().rev() {
        rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH).unwrap();
    }
    rustix::mount::mount(
        "vault-secrets-bench",
        &plugin.runtime,
        "tmpfs",
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
        c"mode=0700,size=16m",
    )
    .expect("a tmpfs for the runtime directory");
    plugin.restart();
    plugin
}

impl Bench {
    /// A volume of the benchmark's plugin through the plugin socket, with `opts`.
    fn volume(&self, prefix: &str, opts: Value) -> String {
        let name = unique(prefix);
        self.plugin.create(&name, opts);
        name
    }

    /// A volume of the benchmark's driver through `docker volume create`.
    fn docker_volume(&self, prefix: &str, driver: Option<&str>, opts: &[&str]) -> String {
        let name = unique(prefix);
        let mut args = vec!["volume", "create"];
        if let Some(d) = driver {
            args.extend(["--driver", d]);
        }
        for o in opts {
            args.extend(["-o", o]);
        }
        args.push(&name);
        docker_ok(&args);
        self.volumes.lock().unwrap().push(name.clone());
        name
    }

    fn plugin_pid(&self) -> u32 {
        pid_with_arg(&self.plugin.config.display().to_string()).expect("the plugin's pid")
    }

    fn bao_pid(&self) -> u32 {
        let listen = format!("-dev-listen-address=127.0.0.1:{}", self.bao.port);
        pid_with_arg(&listen).expect("the bao server's pid")
    }

    fn cleanup(&self) {
        for c in self.containers.lock().unwrap().iter() {
            let _ = docker(&["rm", "-f", c]);
        }
        for v in self.volumes.lock().unwrap().iter() {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
    }
}

// ---- helpers ----------------------------------------------------------------------------------

fn wait_every(every: Duration, timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Nearest-rank percentile.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    assert!(!samples.is_empty(), "no samples");
    let mut s = samples.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

fn image() -> String {
    std::env::var("VAULT_SECRETS_TEST_IMAGE")
        .unwrap_or_else(|_| "vault-secrets-test/busybox:latest".into())
}

/// The docker CLI, given two minutes at most.
fn docker(args: &[&str]) -> Output {
    Command::new("timeout").args(["120", "docker"]).args(args).output().expect("docker CLI")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The first process whose command line has `arg` as one of its arguments.
fn pid_with_arg(arg: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()).then_some(pid)
    })
}

/// The `bao` binary itself (PATH may hold a wrapper script that `exec`s it): the executable of
/// the dev server listening on `port`.
fn bao_binary(port: u16) -> PathBuf {
    let pid = pid_with_arg(&format!("-dev-listen-address=127.0.0.1:{port}"))
        .expect("the bao server's pid");
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("the bao binary")
}

/// User + system CPU time of process `pid` so far (its threads', ended ones too).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |s| s.1).split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10) // in USER_HZ, 100 a second on Linux
}

/// VmRSS of `pid`, KiB.
fn vm_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut bao = String::new();
    if let Ok(mut c) = Command::new("bao").arg("version").stdout(Stdio::piped()).spawn() {
        let _ = c.stdout.take().unwrap().read_to_string(&mut bao);
        let _ = c.wait();
    }
    let bao = bao.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let docker = docker(&["version", "-f", "{{.Server.Version}}"]);
    format!(
        "{cpus} CPUs, {model}, Linux {}, {bao}, Docker {}",
        kernel.trim(),
        String::from_utf8_lossy(&docker.stdout).trim()
    )
}

fn load_average() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn print_table(rows: &[Row]) {
    println!("| figure | measured | baseline (same run) | target | met |");
    println!("|---|---|---|---|---|");
    for r in rows {
        let met = match r.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "—",
        };
        println!("| {} | {} | {} | {} | {met} |", r.figure, r.measured, r.baseline, r.target);
    }
}
