//! Which container a mount belongs to, end to end on the Docker engine under test: a container
//! that sees other containers' mounts (the plugin's mounts directory bound `rslave`, as a
//! monitoring agent's `/:/host:ro,rslave` sees them) is not their holder — its stop revokes
//! nothing of theirs, and it is not signalled when their files change (issue 21, item 3).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::e2e::{docker, docker_ok, image, DRIVER};
use crate::util::vault::{status, status_mounts};
use crate::util::*;

/// A directory bound on itself and made a shared mount, for the plugin's mounts directory
/// (`VAULT_SECRETS_MOUNTS_DIR`): a container can bind it `rslave` and see every container's
/// mount appear in it (a managed plugin's propagated mount is such a directory). Unmounted,
/// with whatever is left below it, on drop.
pub struct SharedDir {
    pub path: PathBuf,
}

impl SharedDir {
    pub fn new(prefix: &str) -> SharedDir {
        let path = PathBuf::from("/run").join(unique(prefix));
        std::fs::create_dir_all(&path).unwrap();
        let dir = SharedDir { path };
        let run = |args: &[&str]| {
            let out = Command::new("mount").args(args).arg(&dir.path).output().unwrap();
            assert!(
                out.status.success(),
                "mount {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["--bind", dir.path.to_str().unwrap()]);
        run(&["--make-rshared"]);
        dir
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-R").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The audit lines in the plugin's log (no `audit_log` set: they go to stderr).
pub fn audit_lines(plugin: &Plugin) -> Vec<Value> {
    plugin
        .log()
        .lines()
        .filter(|l| l.starts_with("{\"seq\":"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The audit lines of mount `id`.
pub fn of_mount(plugin: &Plugin, id: &str) -> Vec<Value> {
    audit_lines(plugin).into_iter().filter(|l| l["mount_id"] == id).collect()
}

/// Each mount of `volume` tied to its container: mount ID → container ID, from the
/// `container` lines.
pub fn ties(plugin: &Plugin, volume: &str) -> Vec<(String, String)> {
    let lines = audit_lines(plugin);
    lines
        .iter()
        .filter(|l| l["volume"] == volume && l["event"] == "container")
        .map(|l| {
            (l["mount_id"].as_str().unwrap().into(), l["container_id"].as_str().unwrap().into())
        })
        .collect()
}

/// The ID of the mount `container` has at /run/secrets: the mount below `mounts` (the plugin's
/// mounts directory, `VOLUME/ID`) of the same device.
fn mount_of(mounts: &Path, container: &str) -> String {
    let table = docker_ok(&["exec", container, "cat", "/proc/self/mountinfo"]);
    let device = |line: &str| line.split(' ').nth(2).map(str::to_owned);
    let at = |line: &&str, point: &str| line.split(' ').nth(4) == Some(point);
    let line = table.lines().find(|l| at(l, "/run/secrets")).expect("the volume at /run/secrets");
    let theirs = device(line);
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = format!("{}/", mounts.display());
    let ours = host.lines().find(|l| {
        l.split(' ').nth(4).is_some_and(|p| p.starts_with(&prefix)) && device(l) == theirs
    });
    let point = ours.and_then(|l| l.split(' ').nth(4)).expect("the container's mount on the host");
    point.rsplit('/').next().unwrap().to_owned()
}

/// The token of `accessor` is still valid.
pub fn token_lives(bao: &Bao, accessor: &str) -> bool {
    let body = json!({ "accessor": accessor });
    let answer = bao.api_as(&bao.token, "POST", "auth/token/lookup-accessor", Some(body));
    answer.is_ok_and(|(status, _)| status == 200)
}

/// What the test made, removed on drop whatever state it stopped in.
#[derive(Default)]
struct Made {
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Made {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
    }
}

/// A shell loop that appends a line to /tmp/hup at each SIGHUP.
const TRAP: &str = "trap 'echo hup >> /tmp/hup' HUP; while true; do sleep 0.2; done";

fn hups(container: &str) -> usize {
    let out = docker(&["exec", container, "cat", "/tmp/hup"]);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// The repro, and the signal that goes with it: V and A use the same volume, A also
/// binds the plugin's mounts directory `rslave` (so V's tmpfs shows in A's mount table), and
/// A's ID sorts before V's (the old rule took the lowest ID). Started A, then V: each mount is
/// tied to its own container; a change of the secret signals each container once, for its
/// own mount; `docker stop A` leaves V's token valid, its status fine and its audit trail
/// without a `die`, `revoke` or `unmount`.
#[test]
fn a_container_that_sees_anothers_mount_neither_ends_it_nor_is_signalled_for_it() {
    let _lock = crate::e2e::docker_lock();
    let mounts = SharedDir::new("vst-shared-mounts");
    let bao = Bao::start();
    bao.put_kv2("watched", json!({"value": "v1"}));
    let socket = Path::new("/run/docker/plugins").join(format!("{DRIVER}.sock"));
    let mut plugin = Plugin::configure(Some(&socket), &bao.address(), &bao.token, "");
    plugin.env.push(("VAULT_SECRETS_MOUNTS_DIR".into(), mounts.path.display().to_string()));
    plugin.restart();
    let mut made = Made::default();

    let vol = unique("watched");
    let opts = ["path=secret/data/watched", "refresh=1s", "signal=SIGHUP"];
    let mut args = vec!["volume", "create", "--driver", DRIVER];
    args.extend(opts.iter().flat_map(|o| ["-o", *o]));
    args.push(&vol);
    docker_ok(&args);
    made.volumes.push(vol.clone());

    let own = format!("{vol}:/run/secrets:ro");
    let watch = format!("{}:/watch:ro,rslave", mounts.path.display());
    let image = image();
    let a = docker_ok(&[
        "create",
        "--network",
        "none",
        "-v",
        &own,
        "-v",
        &watch,
        &image,
        "sh",
        "-c",
        TRAP,
    ]);
    made.containers.push(a.clone());
    docker_ok(&["start", &a]);
    let v = loop {
        let v = docker_ok(&["create", "--network", "none", "-v", &own, &image, "sh", "-c", TRAP]);
        made.containers.push(v.clone());
        if v > a {
            break v;
        }
    };
    docker_ok(&["start", &v]);

    let both = || ties(&plugin, &vol).len() == 2;
    assert!(wait_until(Duration::from_secs(20), both), "not both tied:\n{}", plugin.log());
    let (a_mount, v_mount) = (mount_of(&mounts.path, &a), mount_of(&mounts.path, &v));
    // The attack is real: A's mount table shows V's tmpfs, below its bind.
    let a_table = docker_ok(&["exec", &a, "cat", "/proc/self/mountinfo"]);
    assert!(
        a_table.contains(&format!(" /watch/{vol}/{v_mount} ")),
        "A does not see V's mount:\n{a_table}"
    );
    let mut tied = ties(&plugin, &vol);
    tied.sort();
    let mut expected = vec![(a_mount.clone(), a.clone()), (v_mount.clone(), v.clone())];
    expected.sort();
    assert_eq!(tied, expected, "each mount is tied to its own container (A < V: {})", a < v);

    // A change: each container is signalled once, for its own mount.
    bao.put_kv2("watched", json!({"value": "v2"}));
    let signals = || -> Vec<(String, String)> {
        let lines = audit_lines(&plugin);
        let signals = lines.iter().filter(|l| l["volume"] == vol && l["event"] == "signal");
        signals
            .map(|l| {
                (l["mount_id"].as_str().unwrap().into(), l["container_id"].as_str().unwrap().into())
            })
            .collect()
    };
    let two = || signals().len() >= 2 && hups(&a) >= 1 && hups(&v) >= 1;
    assert!(wait_until(Duration::from_secs(10), two), "no signals:\n{}", plugin.log());
    let mut seen = signals();
    seen.sort();
    assert_eq!(seen, expected, "each mount signals its own container");
    assert_eq!((hups(&a), hups(&v)), (1, 1), "one signal each for one change");

    let v_accessor = of_mount(&plugin, &v_mount)[0]["accessor"].as_str().unwrap().to_owned();
    assert!(token_lives(&bao, &v_accessor));
    docker_ok(&["stop", "-t", "1", &a]);
    let a_ended = || of_mount(&plugin, &a_mount).iter().any(|l| l["event"] == "unmount");
    assert!(
        wait_until(Duration::from_secs(10), a_ended),
        "A's mount did not end:\n{}",
        plugin.log()
    );
    // A `die` is handled as it comes, before the Unmount: two more seconds and V is intact.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let v_lines = of_mount(&plugin, &v_mount);
        let events: Vec<&str> = v_lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert!(
            events.iter().all(|e| ["mount", "container", "signal", "renew", "rotate"].contains(e)),
            "V's mount was touched: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(token_lives(&bao, &v_accessor), "V's token was revoked");
    assert_eq!(docker_ok(&["exec", &v, "cat", "/run/secrets/value"]), "v2");
    let mounts = status_mounts(&status(&plugin), &vol);
    let mount = mounts.iter().find(|m| m["id"] == v_mount.as_str()).expect("V's mount in status");
    assert_eq!(mount["container_died"], false, "{mount}");
    assert!(mount["last_error"].is_null(), "{mount}");

    docker_ok(&["stop", "-t", "1", &v]);
    let revoked = || !token_lives(&bao, &v_accessor);
    assert!(wait_until(Duration::from_secs(10), revoked), "V's stop revoked its token");
}
