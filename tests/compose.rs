//! Compose and Swarm, end to end with the real engine: a compose project's named volume with
//! `driver` / `driver_opts` (`docker-compose` 1.29, Debian's), the user-facing example
//! `config/compose.yaml`, and a swarm service task mounting a volume through `--mount
//! volume-driver=…`. The tests that use the engine hold the `E2e` fixture (the shared driver
//! name, the Docker lock); the example's check needs only `docker-compose config` and a plugin
//! on a private socket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::e2e::{docker, docker_ok, image, E2e, DRIVER};
use crate::util::*;

/// A compose project in its own temporary directory; `down -v` on drop unless done already.
struct Project {
    name: String,
    file: PathBuf,
    removed: bool,
    _dir: tempfile::TempDir,
}

impl Project {
    fn new(prefix: &str, yaml: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        std::fs::write(&file, yaml).unwrap();
        Project { name: unique(prefix), file, removed: false, _dir: dir }
    }

    /// Runs `docker-compose -p NAME -f FILE ARGS…` (or `docker compose …`: see `TestEngine`),
    /// printing how long it took.
    fn run(&self, args: &[&str]) -> Output {
        let started = Instant::now();
        let out = test_engine()
            .compose_command()
            .arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(&self.file)
            .args(args)
            .output()
            .expect("compose (docker-compose: run tests/env.sh; docker compose: tests/engines.sh)");
        eprintln!("{} {}: {} ms", compose_name(), args.join(" "), started.elapsed().as_millis());
        out
    }

    fn ok(&mut self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}",
            compose_name(),
            String::from_utf8_lossy(&out.stderr)
        );
        self.removed = args.starts_with(&["down", "-v"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The running container of `service`, found by compose's labels as `docker-compose ps -q`
    /// does (without compose's volume look-ups: see `compose_up_reads_down_revokes_down_v_removes`).
    fn container(&self, service: &str) -> String {
        let project = format!("label=com.docker.compose.project={}", self.name);
        let service = format!("label=com.docker.compose.service={service}");
        docker_ok(&["ps", "-q", "--filter", &project, "--filter", &service])
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.run(&["down", "-v", "-t", "1"]);
        }
    }
}

/// `docker-compose` (1.29) or `docker compose` (v2), for messages.
fn compose_name() -> &'static str {
    if test_engine().compose_v2() {
        "docker compose"
    } else {
        "docker-compose"
    }
}

fn volume_names() -> Vec<String> {
    docker_ok(&["volume", "ls", "-q"]).lines().map(str::to_owned).collect()
}

/// Volume names the plugin's List returns.
fn plugin_volumes(t: &E2e) -> Vec<String> {
    let v = t.plugin.ok("/VolumeDriver.List", json!({}));
    v["Volumes"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v["Name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Timing: dockerd asks every legacy driver it ever talked to when it lists volumes or looks up
/// one it does not know, and retries a dead one for ~15 s. `docker-compose` 1.29 does such
/// look-ups on every command of a project with volumes, so with a dead driver around each
/// command takes 15 s more (the durations are printed); hence `docker exec` and `docker ps`
/// where compose is not the point.
#[test]
fn compose_up_reads_down_revokes_down_v_removes() {
    let t = E2e::start();
    let key = unique("compose").replace('-', "_");
    t.bao.put_kv2(&key, json!({"password": "from-compose", "user": "app"}));
    let mut p = Project::new(
        "vstc",
        &format!(
            r#"services:
  app:
    image: {image}
    network_mode: none
    command: ["sleep", "600"]
    stop_grace_period: 1s
    volumes:
      - secrets:/run/secrets:ro
volumes:
  secrets:
    driver: {DRIVER}
    driver_opts:
      path: secret/data/{key}
      mode: "0440"
"#,
            image = image()
        ),
    );
    // Compose names the volume PROJECT_secrets.
    let vol = format!("{}_secrets", p.name);
    let before = t.bao.accessors();

    p.ok(&["up", "-d"]);
    assert_eq!(
        docker_ok(&["volume", "inspect", "--format", "{{.Driver}}", &vol]),
        DRIVER,
        "up created the volume through the plugin"
    );
    assert_eq!(p.ok(&["exec", "-T", "app", "cat", "/run/secrets/password"]), "from-compose");
    let c = p.container("app");
    assert_eq!(
        docker_ok(&["exec", &c, "stat", "-c", "%a", "/run/secrets/user"]),
        "440",
        "driver_opts reached the plugin"
    );
    assert_eq!(
        t.bao.accessors().len(),
        before.len() + 1,
        "the container's mount has its own token"
    );
    assert_eq!(t.plugin.mounts_left().len(), 1);

    p.ok(&["down", "-t", "1"]);
    assert_eq!(t.bao.accessors(), before, "down revoked the mount's token");
    assert!(t.plugin.mounts_left().is_empty(), "down unmounted the tmpfs");
    assert!(volume_names().contains(&vol), "down without -v keeps the volume");
    assert!(plugin_volumes(&t).contains(&vol));

    // A second `up` fetches afresh: the container sees the secret as it is now.
    t.bao.put_kv2(&key, json!({"password": "rotated", "user": "app"}));
    p.ok(&["up", "-d"]);
    let c = p.container("app");
    assert_eq!(docker_ok(&["exec", &c, "cat", "/run/secrets/password"]), "rotated");
    assert_eq!(t.bao.accessors().len(), before.len() + 1);

    p.ok(&["down", "-v", "-t", "1"]);
    assert_eq!(t.bao.accessors(), before, "down -v revoked the mount's token");
    assert!(t.plugin.mounts_left().is_empty());
    assert!(!volume_names().contains(&vol), "down -v removed the volume");
    assert!(!plugin_volumes(&t).contains(&vol), "down -v removed it from the plugin too");
}

/// The `volumes:` section of `docker-compose config` output (compose's normalised YAML):
/// each volume's driver and driver_opts.
fn compose_volumes(config: &str) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
    let unquote = |v: &str| {
        let v = v.trim();
        match v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            Some(inner) => inner.replace("''", "'"),
            None => v.trim_matches('"').to_owned(),
        }
    };
    let mut volumes = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_section = false;
    for line in config.lines() {
        if !line.starts_with(' ') {
            in_section = line == "volumes:";
            continue;
        }
        if !in_section {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let (k, v) = line.trim().split_once(':').unwrap_or((line.trim(), ""));
        match indent {
            2 => {
                current = Some(k.to_owned());
                volumes.insert(k.to_owned(), (String::new(), BTreeMap::new()));
            }
            4 if k == "driver" => {
                volumes.get_mut(current.as_ref().unwrap()).unwrap().0 = unquote(v);
            }
            6 => {
                volumes
                    .get_mut(current.as_ref().unwrap())
                    .unwrap()
                    .1
                    .insert(k.to_owned(), unquote(v));
            }
            _ => {}
        }
    }
    volumes
}

#[test]
fn compose_example_file_is_valid() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/compose.yaml");
    let compose = |args: &[&str]| {
        let out =
            test_engine().compose_command().arg("-f").arg(&file).args(args).output().expect(
                "compose (docker-compose: run tests/env.sh; docker compose: tests/engines.sh)",
            );
        assert!(
            out.status.success(),
            "{} -f config/compose.yaml {args:?}: {}",
            compose_name(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    compose(&["config", "-q"]);
    let volumes = compose_volumes(&compose(&["config"]));
    assert!(volumes.len() >= 2, "the example has a KV and a database volume: {volumes:?}");
    for (name, (driver, _)) in &volumes {
        assert_eq!(driver, "vault-secrets", "volume {name} uses the default driver name");
    }
    let paths: Vec<&str> =
        volumes.values().filter_map(|(_, o)| o.get("path").map(|p| p.as_str())).collect();
    assert!(paths.iter().any(|p| p.starts_with("secret/data/")), "a KV v2 secret: {paths:?}");
    assert!(
        paths.iter().any(|p| p.starts_with("database/creds/")),
        "dynamic credentials: {paths:?}"
    );

    // Every volume's driver_opts are options the plugin accepts: Create them as dockerd would.
    let bao = Bao::start();
    let plugin = Plugin::start(None, &bao.address(), &bao.token, "");
    for (name, (_, opts)) in &volumes {
        let opts: serde_json::Map<String, Value> =
            opts.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        // A volume with `policies` is checked against the plugin's identity, so its Create
        // waits for the plugin's first login (answered "not logged in … logging in" until then).
        let body = json!({ "Name": name, "Opts": opts });
        let mut last = String::new();
        let created = wait_until(Duration::from_secs(20), || {
            let (status, v) = plugin.call("/VolumeDriver.Create", Some(body.clone())).unwrap();
            last = v["Err"].as_str().unwrap_or("").to_owned();
            assert!(
                status == 200 && last.is_empty() || last.contains("logging in"),
                "Create {name} {opts:?}: {status} {v}\n{}",
                plugin.log()
            );
            last.is_empty()
        });
        assert!(created, "Create {name}: still {last:?} after 20 s\n{}", plugin.log());
    }
}

/// This node in a swarm for the test: joined (`swarm init`) if it was not, left on drop only if
/// the test joined it (and the `docker_gwbridge` network that init made removed).
pub(crate) struct Swarm {
    initialized: bool,
    had_gwbridge: bool,
}

impl Swarm {
    pub(crate) fn ensure() -> Swarm {
        let state = docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let had_gwbridge = docker(&["network", "inspect", "docker_gwbridge"]).status.success();
        if state == "active" {
            return Swarm { initialized: false, had_gwbridge };
        }
        let started = Instant::now();
        // Loopback only: the swarm's control port too (the default listens on every address).
        let out = docker(&[
            "swarm",
            "init",
            "--advertise-addr",
            "127.0.0.1",
            "--listen-addr",
            "127.0.0.1:2377",
        ]);
        assert!(
            out.status.success(),
            "swarm cannot run on this machine: `docker swarm init --advertise-addr 127.0.0.1` \
             (node state was {state:?}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("docker swarm init: {} ms", started.elapsed().as_millis());
        Swarm { initialized: true, had_gwbridge }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if self.initialized {
            let _ = docker(&["swarm", "leave", "--force"]);
            if !self.had_gwbridge {
                let _ = docker(&["network", "rm", "docker_gwbridge"]);
            }
        }
    }
}

/// A swarm service: `docker service rm` on drop, waiting for its containers to be gone (so the
/// plugin sees their Unmount while it still runs).
struct Service {
    name: String,
}

impl Service {
    fn containers(&self) -> Vec<String> {
        let filter = format!("label=com.docker.swarm.service.name={}", self.name);
        docker_ok(&["ps", "-aq", "--filter", &filter]).lines().map(str::to_owned).collect()
    }

    /// The tasks' states and errors, for failure messages.
    fn tasks(&self) -> String {
        let out = docker(&[
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{.Name}} {{.DesiredState}} {{.CurrentState}} {{.Error}}",
            &self.name,
        ]);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = docker(&["service", "rm", &self.name]);
        wait_until(Duration::from_secs(30), || self.containers().is_empty());
    }
}

#[test]
fn swarm_service_task_mounts_a_vault_secrets_volume() {
    let mut t = E2e::start();
    t.bao.put_kv2("swarm", json!({"password": "from-swarm"}));
    let _swarm = Swarm::ensure();
    let before = t.bao.accessors();
    let vol = unique("swarm");
    t.volumes.push(vol.clone());
    let service = Service { name: unique("vsts") };
    let mount = format!(
        "type=volume,source={vol},target=/run/secrets,readonly,volume-driver={DRIVER},volume-opt=path=secret/data/swarm,volume-opt=mode=0440"
    );
    // No `--network`: the task gets the engine's default network mode, which on this dockerd
    // (`--bridge=none`) is loopback only; `--network none` is refused by swarm ("network none
    // not found") and ingress is only needed for published ports.
    let started = Instant::now();
    docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &service.name,
        "--restart-condition",
        "none",
        "--stop-grace-period",
        "1s",
        "--mount",
        &mount,
        &image(),
        "sh",
        "-c",
        "cat /run/secrets/password; echo; exec sleep 600",
    ]);
    let running = wait_until(Duration::from_secs(60), || {
        let filter = format!("label=com.docker.swarm.service.name={}", service.name);
        !docker_ok(&["ps", "-q", "--filter", &filter, "--filter", "status=running"]).is_empty()
    });
    assert!(running, "the task did not start: {}", service.tasks());
    eprintln!("service create → task running: {} ms", started.elapsed().as_millis());

    let c = service.containers().remove(0);
    assert_eq!(docker_ok(&["exec", &c, "cat", "/run/secrets/password"]), "from-swarm");
    assert_eq!(docker_ok(&["exec", &c, "stat", "-c", "%a", "/run/secrets/password"]), "440");
    assert_eq!(
        docker_ok(&["volume", "inspect", "--format", "{{.Driver}}", &vol]),
        DRIVER,
        "the node created the volume through the plugin on first use"
    );
    assert!(plugin_volumes(&t).contains(&vol));
    assert_eq!(t.bao.accessors().len(), before.len() + 1, "the task's mount has its own token");
    assert_eq!(t.plugin.mounts_left().len(), 1);
    // What the task printed at start, as `docker service logs` shows it.
    let logged = wait_until(Duration::from_secs(10), || {
        docker(&["service", "logs", "--raw", &service.name])
            .stdout
            .windows(b"from-swarm".len())
            .any(|w| w == b"from-swarm")
    });
    assert!(logged, "the task's output is not in `docker service logs`");

    docker_ok(&["service", "rm", &service.name]);
    let removed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || t.bao.accessors() == before),
        "`docker service rm` did not revoke the task's token: {}",
        service.tasks()
    );
    eprintln!("service rm → token revoked: {} ms", removed.elapsed().as_millis());
    assert!(
        wait_until(Duration::from_secs(5), || t.plugin.mounts_left().is_empty()),
        "the task's tmpfs is still mounted: {:?}",
        t.plugin.mounts_left()
    );
    assert!(wait_until(Duration::from_secs(30), || service.containers().is_empty()));
    docker_ok(&["volume", "rm", &vol]);
    assert!(!plugin_volumes(&t).contains(&vol), "volume rm removed it from the plugin");
}

/// A project whose volume's `driver_opts` changed after the volume was made: docker-compose 1.29
/// refuses to go on (`VolumeConfigChangedError`: "remove the existing volume"); Compose v2 (2.26;
/// before 2.32, which asks) goes on silently with the old volume and its old options. Either
/// way, `down -v` first is what makes the new options count (docs/engines.md, "Compose").
#[test]
fn compose_with_changed_driver_opts_refuses_or_keeps_the_old_volume() {
    let t = E2e::start();
    let key = unique("compose-opts").replace('-', "_");
    t.bao.put_kv2(&key, json!({"password": "p"}));
    let yaml = |mode: &str| {
        format!(
            r#"services:
  app:
    image: {image}
    network_mode: none
    command: ["sleep", "600"]
    stop_grace_period: 1s
    volumes:
      - type: volume
        source: secrets
        target: /run/secrets
        read_only: true
volumes:
  secrets:
    driver: {DRIVER}
    driver_opts:
      path: secret/data/{key}
      mode: "{mode}"
"#,
            image = image()
        )
    };
    let mut p = Project::new("vsto", &yaml("0440"));
    p.ok(&["up", "-d"]);
    let mode = |p: &Project| {
        docker_ok(&["exec", &p.container("app"), "stat", "-c", "%a", "/run/secrets/password"])
    };
    assert_eq!(mode(&p), "440");
    p.ok(&["down", "-t", "1"]);

    std::fs::write(&p.file, yaml("0400")).unwrap();
    let out = p.run(&["up", "-d"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if test_engine().compose_v2() {
        assert!(out.status.success(), "Compose v2 (2.26) goes on: {stderr}");
        assert_eq!(mode(&p), "440", "with the old volume and its old options, silently");
    } else {
        assert!(!out.status.success(), "docker-compose 1.29 refuses: {stderr}");
        assert!(
            stderr.contains("remove the existing volume"),
            "and says to remove the volume: {stderr}"
        );
    }
    p.ok(&["down", "-v", "-t", "1"]);
    // With the volume gone, the new options count.
    p.ok(&["up", "-d"]);
    assert_eq!(mode(&p), "400");
    p.ok(&["down", "-v", "-t", "1"]);
    assert!(t.plugin.mounts_left().is_empty());
}
