//! The Docker Engine API client against the real engine: the containers using a volume, running
//! and stopped, and a signal delivered to a container.
//!
//! These tests share dockerd with the others in this binary: everything they create has a unique
//! name, and they remove only what they created. They hold the Docker lock, as every test that
//! drives the engine does: one of them restarts Engine 26 (live-restore).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use vault_secrets::dockerd::{ContainerMount, DockerEngine, Engine, EngineError};

use crate::util::docker::{docker, docker_ok, image};
use crate::util::*;

fn engine() -> DockerEngine {
    DockerEngine::new(&test_engine().socket, Duration::from_secs(20))
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// Removes the containers and volumes a test created, even when it panics.
#[derive(Default)]
struct Created {
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Created {
    fn volume(&mut self, prefix: &str) -> String {
        let name = unique(prefix);
        docker_ok(&["volume", "create", &name]);
        self.volumes.push(name.clone());
        name
    }

    /// `docker run -d --network none` of `args`; returns the container's ID.
    fn run(&mut self, options: &[&str], args: &[&str]) -> String {
        let name = unique("vs-engine");
        let mut all = vec!["run", "-d", "--network", "none", "--name", &name];
        all.extend(options);
        let image = image();
        all.push(&image);
        all.extend(args);
        // Recorded before the run, so a container that fails to start is removed too.
        self.containers.push(name.clone());
        docker_ok(&all)
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
    }
}

fn mounts_of(id: &str, driver: &str) -> Vec<ContainerMount> {
    let all = block_on(engine().volume_mounts(driver)).expect("the engine lists containers");
    all.into_iter().filter(|m| m.container_id == id).collect()
}

#[test]
fn volume_mounts_lists_running_and_stopped_containers_on_every_engine() {
    let _lock = crate::util::docker::docker_lock();
    let mut created = Created::default();
    let volume = created.volume("vs-engine");
    let mountpoint = docker_ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", &volume]);
    let bind = format!("{volume}:/data");
    let id = created.run(&["-v", &bind], &["sleep", "600"]);
    assert_eq!(id.len(), 64, "docker run -d prints the full ID: {id}");

    let name = docker_ok(&["inspect", "-f", "{{.Name}}", &id]);
    let expected = |running| ContainerMount {
        container_id: id.clone(),
        container_name: name.trim_start_matches('/').to_owned(),
        running,
        starting: false,
        restarting: false,
        volume: volume.clone(),
        destination: "/data".into(),
        source: PathBuf::from(&mountpoint),
    };
    assert_eq!(mounts_of(&id, "local"), [expected(true)]);
    assert_eq!(mounts_of(&id, "vault-secrets-no-such-driver"), []);

    docker_ok(&["stop", "-t", "0", &id]);
    // Engine 26 was seen still listing the container as running just after `docker stop`
    // returned; the list is what the sweep goes by, so wait for it to say so.
    assert!(
        wait_until(Duration::from_secs(10), || mounts_of(&id, "local") == [expected(false)]),
        "a stopped container is listed as not running: {:?}",
        mounts_of(&id, "local")
    );
}

#[test]
fn signal_reaches_a_running_container_on_every_engine() {
    let _lock = crate::util::docker::docker_lock();
    let mut created = Created::default();
    let script =
        r#"trap "echo got >/tmp/hup" HUP; touch /tmp/ready; while true; do sleep 0.2; done"#;
    let id = created.run(&[], &["sh", "-c", script]);
    let exec_ok = |args: &[&str]| docker(&[&["exec", id.as_str()], args].concat()).status.success();
    // Until the trap is set, SIGHUP to the container's PID 1 would be ignored.
    assert!(
        wait_until(Duration::from_secs(20), || exec_ok(&["test", "-e", "/tmp/ready"])),
        "the container did not start its script"
    );

    block_on(engine().signal(&id, "SIGHUP")).expect("signal a running container");
    assert!(
        wait_until(Duration::from_secs(20), || exec_ok(&["grep", "-qx", "got", "/tmp/hup"])),
        "the container's HUP trap did not run"
    );

    docker_ok(&["stop", "-t", "0", &id]);
    let e = block_on(engine().signal(&id, "SIGHUP")).unwrap_err();
    assert_eq!(e.status(), Some(409), "a stopped container: {e}");
}

#[test]
fn signal_to_a_missing_container_is_a_404_with_the_engines_message_on_every_engine() {
    let _lock = crate::util::docker::docker_lock();
    let missing = mount_id();
    let e = block_on(engine().signal(&missing, "SIGHUP")).unwrap_err();
    match &e {
        EngineError::Status { status: 404, message, .. } => {
            assert!(message.contains("No such container"), "{e}")
        }
        _ => panic!("expected a 404: {e:?}"),
    }
}

/// The private dockerd the crash tests use: a SIGKILL leaves a container it ran behind, a
/// restart finds it again, and dropping it leaves nothing mounted.
#[test]
fn a_private_dockerd_survives_a_kill_and_cleans_up_on_every_engine() {
    let mut d = crate::util::dockerd::Dockerd::start("engine-kill");
    let image = test_image();
    let id = d.docker_ok(&["run", "-d", "--network", "none", &image, "sleep", "300"]);
    let dockerd = d.pid().expect("dockerd runs");
    d.kill();
    assert!(
        wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!(
            "/proc/{dockerd}/status"
        ))
        .exists()
            || std::fs::read_to_string(format!("/proc/{dockerd}/status"))
                .is_ok_and(|s| s.contains("State:\tZ"))),
        "dockerd was killed"
    );
    assert!(!d.docker(&["info"]).status.success(), "a killed dockerd does not answer");
    d.restart();
    let listed = d.docker_ok(&["ps", "-a", "--no-trunc", "--format", "{{.ID}}"]);
    assert!(listed.lines().any(|l| l == id), "the container is known after the restart: {listed}");
    let roots: Vec<String> = ["/run/vst-dockerd", "/var/lib/vault-secrets-test/dockerd"]
        .iter()
        .map(|r| format!("{r}/{}", d.host.rsplit('/').nth(1).unwrap()))
        .collect();
    drop(d);
    for r in &roots {
        assert!(!std::path::Path::new(r).exists(), "{r} removed");
        assert!(mounts_below(std::path::Path::new(r)).is_empty(), "nothing mounted below {r}");
    }
}
