//! Podman (Debian 12's 4.3, rootful), end to end: the plugin declared in `[engine.volume_plugins]`
//! of a `containers.conf.d` drop-in, as docs/engines.md, "Podman", says;
//! `podman volume create --driver`, `podman run` reading the secret from the tmpfs, `podman stop`
//! revoking the mount's token, `podman volume rm` removing the volume from the plugin.
//!
//! The drop-in also sets `[containers] default_ulimits = []`: this sandbox refuses Podman's
//! default nofile and nproc limits (nothing the plugin needs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;

use vault_secrets::dockerd::PODMAN_MOUNT_ID;

use crate::e2e::image;
use crate::util::*;

const DRIVER: &str = "vault-secrets-podman-test";
const DROP_IN_DIR: &str = "/etc/containers/containers.conf.d";

fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .env_remove("CONTAINERS_CONF")
        .output()
        .expect("podman (apt-get install podman: tests/engines.sh does)")
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The drop-in, and what the test made in Podman: removed on drop, whatever state the test
/// stopped in (the drop-in last: removing a volume needs its driver).
struct Cleanup {
    drop_in: PathBuf,
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = podman(&["rm", "-f", "-t", "0", c]);
        }
        for v in &self.volumes {
            let _ = podman(&["volume", "rm", "-f", v]);
        }
        let _ = std::fs::remove_file(&self.drop_in);
    }
}

fn plugin_volumes(plugin: &Plugin) -> Vec<String> {
    let v = plugin.ok("/VolumeDriver.List", json!({}));
    v["Volumes"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v["Name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[test]
fn podman_runs_a_container_with_its_secret_and_stop_revokes_it() {
    let version = podman(&["version", "--format", "{{.Client.Version}}"]);
    assert!(
        version.status.success(),
        "no podman: run tests/engines.sh ({})",
        String::from_utf8_lossy(&version.stderr)
    );
    eprintln!("podman {}", String::from_utf8_lossy(&version.stdout).trim());

    let bao = Bao::start();
    bao.put_kv2("podman", json!({"password": "from-podman", "user": "app"}));
    let mut plugin = Plugin::start(None, &bao.address(), &bao.token, "");
    // Podman's API service is not running here: the plugin's default engines are the Docker
    // engine under test, which answers but never makes a mount of Podman's ID, and Podman's
    // default socket, absent. Sweeps every second must leave the running container's mount.
    plugin.env.push(("VAULT_SECRETS_SWEEP_INTERVAL".into(), "1".into()));
    plugin.stop(false);
    plugin.restart();

    std::fs::create_dir_all(DROP_IN_DIR).unwrap();
    let drop_in = Path::new(DROP_IN_DIR).join(format!("{}.conf", unique("vault-secrets-test")));
    let mut cleanup =
        Cleanup { drop_in: drop_in.clone(), containers: Vec::new(), volumes: Vec::new() };
    std::fs::write(
        &drop_in,
        format!(
            "[engine.volume_plugins]\n{DRIVER} = \"{}\"\n\n[containers]\ndefault_ulimits = []\n",
            plugin.socket.display()
        ),
    )
    .unwrap();

    let vol = unique("podman");
    podman_ok(&[
        "volume",
        "create",
        "--driver",
        DRIVER,
        "-o",
        "path=secret/data/podman",
        "-o",
        "mode=0440",
        &vol,
    ]);
    cleanup.volumes.push(vol.clone());
    assert_eq!(podman_ok(&["volume", "inspect", "--format", "{{.Driver}}", &vol]), DRIVER);
    assert!(plugin_volumes(&plugin).contains(&vol), "the volume is the plugin's");

    let before = bao.accessors();
    let name = unique("vst-podman");
    cleanup.containers.push(name.clone());
    let mount = format!("{vol}:/run/secrets:ro");
    let started = Instant::now();
    podman_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "-v",
        &mount,
        &image(),
        "sleep",
        "600",
    ]);
    eprintln!("podman run -d: {} ms", started.elapsed().as_millis());
    assert_eq!(podman_ok(&["exec", &name, "cat", "/run/secrets/password"]), "from-podman");
    assert_eq!(podman_ok(&["exec", &name, "stat", "-c", "%a", "/run/secrets/user"]), "440");
    let mounts = podman_ok(&["exec", &name, "grep", " /run/secrets ", "/proc/mounts"]);
    assert!(mounts.contains(" /run/secrets tmpfs ro,"), "a read-only tmpfs: {mounts}");
    assert_eq!(bao.accessors().len(), before.len() + 1, "the container's mount has its own token");
    assert_eq!(plugin.mounts_left().len(), 1);
    // Three sweep rounds, each with the Docker engine answering, then still there.
    let sweeps = || plugin.log().matches("sweep done engines=1 silent=1 released=0").count();
    let first = sweeps();
    assert!(
        wait_until(Duration::from_secs(10), || sweeps() >= first + 3),
        "the plugin's sweep did not run every second:\n{}",
        plugin.log()
    );
    assert_eq!(podman_ok(&["exec", &name, "cat", "/run/secrets/password"]), "from-podman");
    assert_eq!(bao.accessors().len(), before.len() + 1, "no sweep took the running mount");

    podman_ok(&["stop", "-t", "1", &name]);
    let stopped = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || bao.accessors() == before),
        "podman stop did not revoke the mount's token:\n{}",
        plugin.log()
    );
    eprintln!("podman stop → token revoked: {} ms", stopped.elapsed().as_millis());
    assert!(
        wait_until(Duration::from_secs(5), || plugin.mounts_left().is_empty()),
        "the tmpfs is gone"
    );

    // Started again, it gets a fresh mount (and token); removed, the token goes again.
    podman_ok(&["start", &name]);
    assert_eq!(podman_ok(&["exec", &name, "cat", "/run/secrets/password"]), "from-podman");
    assert_eq!(bao.accessors().len(), before.len() + 1);
    podman_ok(&["rm", "-f", "-t", "1", &name]);
    cleanup.containers.clear();
    assert!(
        wait_until(Duration::from_secs(10), || bao.accessors() == before),
        "podman rm -f revoked it"
    );

    podman_ok(&["volume", "rm", &vol]);
    cleanup.volumes.clear();
    assert!(!plugin_volumes(&plugin).contains(&vol), "podman volume rm removed it from the plugin");
    assert!(!podman_ok(&["volume", "ls", "-q"]).lines().any(|l| l == vol));
    assert!(plugin.mounts_left().is_empty());
}

/// Podman's Docker-compatible API (`podman system service`) on a socket of the test's own,
/// ended by its pid on drop. Start it after the drop-in is written: it reads the volume
/// plugins at start.
struct PodmanService {
    socket: PathBuf,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl PodmanService {
    fn start() -> PodmanService {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("podman.sock");
        let log = std::fs::File::create(dir.path().join("service.log")).unwrap();
        let child = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .env_remove("CONTAINERS_CONF")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("podman system service");
        let service = PodmanService { socket, child, _dir: dir };
        let up = || std::os::unix::net::UnixStream::connect(&service.socket).is_ok();
        assert!(wait_until(Duration::from_secs(20), up), "podman system service did not start");
        service
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shared Docker driver's plugin (Docker finds it by its socket), with `engines` in its
/// configuration, sweeping every second; `env` added.
fn plugin_with_engines(bao: &Bao, engines: &[&Path], env: &[(&str, String)]) -> Plugin {
    let socket = Path::new("/run/docker/plugins").join(format!("{}.sock", crate::e2e::DRIVER));
    let mut plugin = Plugin::configure(Some(&socket), &bao.address(), &bao.token, "");
    let list: Vec<String> = engines.iter().map(|e| format!("\"unix://{}\"", e.display())).collect();
    let text = std::fs::read_to_string(&plugin.config).unwrap();
    let text =
        text.replacen("[plugin]\n", &format!("[plugin]\nengines = [{}]\n", list.join(", ")), 1);
    std::fs::write(&plugin.config, text).unwrap();
    plugin.env.push(("VAULT_SECRETS_SWEEP_INTERVAL".into(), "1".into()));
    plugin.env.extend(env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    plugin.restart();
    plugin
}

/// The drop-in declaring the shared Docker driver's socket to Podman.
fn declare_to_podman(cleanup_name: &str) -> Cleanup {
    std::fs::create_dir_all(DROP_IN_DIR).unwrap();
    let drop_in = Path::new(DROP_IN_DIR).join(format!("{}.conf", unique(cleanup_name)));
    let driver = crate::e2e::DRIVER;
    let text = format!(
        "[engine.volume_plugins]\n{driver} = \"/run/docker/plugins/{driver}.sock\"\n\n[containers]\ndefault_ulimits = []\n"
    );
    std::fs::write(&drop_in, text).unwrap();
    Cleanup { drop_in, containers: Vec::new(), volumes: Vec::new() }
}

/// Docker and Podman on one host, one plugin serving both: each engine is asked about its own
/// containers. With sweeps every second, both containers keep their mounts (before, the sweep
/// asked Docker alone and released Podman's); each mount is tied to its container through its
/// own engine, and each stop revokes its own container's token only.
#[test]
fn docker_and_podman_on_one_host_each_keep_their_mounts_until_their_stop() {
    let _lock = crate::e2e::docker_lock();
    let mut cleanup = declare_to_podman("vault-secrets-both");
    let service = PodmanService::start();
    let bao = Bao::start();
    bao.put_kv2("both", json!({"value": "both"}));
    let docker_socket = &test_engine().socket;
    let plugin = plugin_with_engines(&bao, &[docker_socket, &service.socket], &[]);
    let driver = crate::e2e::DRIVER;
    let (dv, pv) = (unique("docker-side"), unique("podman-side"));
    crate::e2e::docker_ok(&[
        "volume",
        "create",
        "--driver",
        driver,
        "-o",
        "path=secret/data/both",
        &dv,
    ]);
    let _docker_volume = RemoveDockerVolume(dv.clone());
    podman_ok(&["volume", "create", "--driver", driver, "-o", "path=secret/data/both", &pv]);
    cleanup.volumes.push(pv.clone());

    let d = unique("vst-docker-side");
    let _docker_container = RemoveDockerContainer(d.clone());
    let dmount = format!("{dv}:/run/secrets:ro");
    let args =
        ["run", "-d", "--name", &d, "--network", "none", "-v", &dmount, &image(), "sleep", "600"];
    crate::e2e::docker_ok(&args);
    let p = unique("vst-podman-side");
    cleanup.containers.push(p.clone());
    let pmount = format!("{pv}:/run/secrets:ro");
    let args =
        ["run", "-d", "--name", &p, "--network", "none", "-v", &pmount, &image(), "sleep", "600"];
    podman_ok(&args);

    let lines = || crate::containers::audit_lines(&plugin);
    let tie_of = |volume: &str| {
        lines().into_iter().find(|l| l["volume"] == volume && l["event"] == "container")
    };
    let both = || tie_of(&dv).is_some() && tie_of(&pv).is_some();
    assert!(wait_until(Duration::from_secs(20), both), "not both tied:\n{}", plugin.log());
    let (dtie, ptie) = (tie_of(&dv).unwrap(), tie_of(&pv).unwrap());
    assert_eq!(dtie["detail"], format!("engine {}", docker_socket.display()), "{dtie}");
    assert_eq!(ptie["detail"], format!("engine {}", service.socket.display()), "{ptie}");
    assert_eq!(ptie["mount_id"], PODMAN_MOUNT_ID, "Podman's one mount of the volume");
    assert_eq!(ptie["container_name"], p.as_str(), "{ptie}");

    let sweeps = || plugin.log().matches("sweep done engines=2 silent=0 released=0").count();
    let first = sweeps();
    let three = || sweeps() >= first + 3;
    assert!(wait_until(Duration::from_secs(10), three), "no sweeps:\n{}", plugin.log());
    let accessor = |t: &serde_json::Value| t["accessor"].as_str().unwrap().to_owned();
    let (daccessor, paccessor) = (accessor(&dtie), accessor(&ptie));
    let lives = |a: &str| crate::containers::token_lives(&bao, a);
    assert!(lives(&daccessor) && lives(&paccessor), "a sweep took a running container's mount");
    assert_eq!(podman_ok(&["exec", &p, "cat", "/run/secrets/value"]), "both");

    podman_ok(&["stop", "-t", "1", &p]);
    assert!(wait_until(Duration::from_secs(10), || !lives(&paccessor)), "podman stop revoked");
    assert!(lives(&daccessor), "Docker's container keeps its token");
    crate::e2e::docker_ok(&["stop", "-t", "1", &d]);
    assert!(wait_until(Duration::from_secs(10), || !lives(&daccessor)), "docker stop revoked");
}

struct RemoveDockerContainer(String);

impl Drop for RemoveDockerContainer {
    fn drop(&mut self) {
        let _ = crate::e2e::docker(&["rm", "-f", &self.0]);
    }
}

struct RemoveDockerVolume(String);

impl Drop for RemoveDockerVolume {
    fn drop(&mut self) {
        let _ = crate::e2e::docker(&["volume", "rm", "-f", &self.0]);
    }
}

/// A shell loop that appends a line to /tmp/hup at each SIGHUP.
const TRAP: &str = "trap 'echo hup >> /tmp/hup' HUP; while true; do sleep 0.2; done";

fn hups(container: &str) -> usize {
    let out = podman(&["exec", container, "cat", "/tmp/hup"]);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// The same rule on Podman, which mounts a volume once for all its containers: two containers
/// share `app`'s mount, a watcher uses another volume and binds the plugin's mounts directory
/// `rslave`. A change of `app` signals the two, not the watcher; the watcher's stop ends
/// nothing of `app`; the first sharer's stop leaves the mount to the second; the last one's
/// revokes it.
#[test]
fn on_podman_a_shared_mount_ends_with_its_last_container_and_a_watcher_touches_nothing() {
    let _lock = crate::e2e::docker_lock();
    let mut cleanup = declare_to_podman("vault-secrets-podman-watch");
    let service = PodmanService::start();
    let mounts = crate::containers::SharedDir::new("vst-podman-mounts");
    let bao = Bao::start();
    bao.put_kv2("shared", json!({"value": "v1"}));
    bao.put_kv2("quiet", json!({"value": "q"}));
    let env = [("VAULT_SECRETS_MOUNTS_DIR", mounts.path.display().to_string())];
    let plugin = plugin_with_engines(&bao, &[&service.socket], &env);
    let driver = crate::e2e::DRIVER;
    let (app, other) = (unique("shared"), unique("quiet"));
    let opts = ["-o", "path=secret/data/shared", "-o", "refresh=1s", "-o", "signal=SIGHUP"];
    podman_ok(
        &[&["volume", "create", "--driver", driver][..], &opts[..], &[app.as_str()]].concat(),
    );
    podman_ok(&["volume", "create", "--driver", driver, "-o", "path=secret/data/quiet", &other]);
    cleanup.volumes.extend([app.clone(), other.clone()]);

    let run = |cleanup: &mut Cleanup, volumes: &[String]| {
        let name = unique("vst-podman-share");
        cleanup.containers.push(name.clone());
        let mut args = vec!["run", "-d", "--name", &name, "--network", "none"];
        for v in volumes {
            args.extend(["-v", v.as_str()]);
        }
        let image = image();
        args.extend([image.as_str(), "sh", "-c", TRAP]);
        podman_ok(&args);
        name
    };
    let watch = format!("{}:/watch:ro,rslave", mounts.path.display());
    let first = run(&mut cleanup, &[format!("{app}:/run/secrets:ro")]);
    let second = run(&mut cleanup, &[format!("{app}:/s2:ro")]);
    let watcher = run(&mut cleanup, &[format!("{other}:/run/secrets:ro"), watch]);
    let table = podman_ok(&["exec", &watcher, "cat", "/proc/self/mountinfo"]);
    assert!(
        table.contains(&format!(" /watch/{app}/{PODMAN_MOUNT_ID} ")),
        "the watcher does not see app's mount:\n{table}"
    );

    let lines = || crate::containers::audit_lines(&plugin);
    let tied = || lines().iter().any(|l| l["volume"] == app.as_str() && l["event"] == "container");
    assert!(wait_until(Duration::from_secs(20), tied), "not tied:\n{}", plugin.log());
    let mount_line =
        lines().into_iter().find(|l| l["volume"] == app.as_str() && l["event"] == "mount");
    let accessor = mount_line.unwrap()["accessor"].as_str().unwrap().to_owned();
    let lives = || crate::containers::token_lives(&bao, &accessor);

    bao.put_kv2("shared", json!({"value": "v2"}));
    let both = || hups(&first) >= 1 && hups(&second) >= 1;
    assert!(wait_until(Duration::from_secs(10), both), "no signals:\n{}", plugin.log());
    let signalled: Vec<String> = lines()
        .iter()
        .filter(|l| l["event"] == "signal")
        .map(|l| l["container_name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(!signalled.contains(&watcher), "the watcher was signalled: {signalled:?}");
    assert_eq!(hups(&watcher), 0, "the watcher was signalled");
    assert_eq!((hups(&first), hups(&second)), (1, 1), "one signal each for one change");

    podman_ok(&["stop", "-t", "1", &watcher]);
    podman_ok(&["stop", "-t", "1", &first]);
    // Podman's `died` is handled as it comes: two more seconds and the mount is intact.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(
            lives(),
            "a stop revoked the mount the second container still uses:\n{}",
            plugin.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(podman_ok(&["exec", &second, "cat", "/s2/value"]), "v2");
    podman_ok(&["stop", "-t", "1", &second]);
    assert!(wait_until(Duration::from_secs(10), || !lives()), "the last stop revoked it");
}
