//! Rootless Docker (`util::rootless`: Debian 12's dockerd-rootless.sh and rootlesskit, as the
//! user `vst-rootless`) with the plugin run inside the engine's user and mount namespaces, as
//! `docs/rootless.md` says: a root and a `--user 1000` container read their secrets, `docker
//! stop` revokes, and the plugin says truthfully that the kernel refuses `noswap` there.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::util::docker::{docker_lock, DRIVER};
use crate::util::rootless::RootlessDockerd;
use crate::util::*;

#[test]
fn rootless_docker_with_the_plugin_in_its_namespaces_reads_and_revokes_on_one_engine() {
    let _lock = docker_lock();
    let d = RootlessDockerd::start();
    let bao = Bao::start();
    bao.put_kv2("rootless", json!({"password": "from-vault", "user": "app"}));

    // In the engine's mount namespace, /run is rootlesskit's copy: the plugin's socket and
    // runtime directory are there, where the engine and runc look; the host reaches the socket
    // through /proc/PID/root.
    let inside = Path::new("/run/docker/plugins").join(format!("{DRIVER}.sock"));
    let mut plugin = Plugin::configure_in(
        Path::new("/run"),
        Some(&d.host_path(&inside)),
        &bao.address(),
        &bao.token,
        "",
    );
    let config = std::fs::read_to_string(&plugin.config).unwrap();
    let config = config.replace(
        &format!("socket = \"{}\"", plugin.socket.display()),
        &format!("socket = \"{}\"", inside.display()),
    );
    std::fs::write(&plugin.config, config).unwrap();
    // The plugin is the engine's user on the host: its configuration, token file and state
    // directory are that user's.
    for p in [plugin.dir.path().to_owned(), plugin.config.clone(), plugin.dir.path().join("token")]
    {
        rustix::fs::chown(
            &p,
            Some(rustix::fs::Uid::from_raw(d.uid)),
            Some(rustix::fs::Gid::from_raw(d.gid)),
        )
        .unwrap();
    }
    std::fs::set_permissions(plugin.dir.path().join("token"), PermissionsExt::from_mode(0o600))
        .unwrap();
    plugin.wrap = d.enter();
    plugin.env.push(("DOCKER_HOST".into(), d.host.clone()));
    plugin.runtime = d.host_path(&plugin.runtime);
    plugin.restart();

    let vol = unique("rootless");
    d.docker_ok(&[
        "volume",
        "create",
        "--driver",
        DRIVER,
        "-o",
        "path=secret/data/rootless",
        "-o",
        "uid=1000",
        "-o",
        "gid=1000",
        "-o",
        "mode=0440",
        &vol,
    ]);
    let before = bao.accessors();
    let mount = format!("{vol}:/run/secrets:ro");
    let image = test_image();
    let run = |user: &[&str]| {
        let mut args = vec!["run", "-d", "--network", "none"];
        args.extend(user);
        args.extend(["-v", mount.as_str(), image.as_str(), "sleep", "600"]);
        d.docker_ok(&args)
    };
    let root = run(&[]);
    let user = run(&["--user", "1000:1000"]);
    for c in [&root, &user] {
        assert_eq!(d.docker_ok(&["exec", c, "cat", "/run/secrets/password"]), "from-vault");
    }
    assert_eq!(
        d.docker_ok(&["exec", &user, "stat", "-c", "%u %g %a", "/run/secrets/user"]),
        "1000 1000 440",
        "uid and gid are ids in the container (the engine's user namespace)"
    );
    assert!(
        !d.docker(&["exec", "-u", "2000:2000", &user, "cat", "/run/secrets/user"]).status.success(),
        "another user in the container cannot read"
    );
    let mounts = d.docker_ok(&["exec", &root, "grep", " /run/secrets ", "/proc/mounts"]);
    assert!(mounts.starts_with("vault-secrets /run/secrets tmpfs ro,"), "{mounts}");
    assert!(!mounts.contains("noswap"), "the kernel refuses noswap in a user namespace: {mounts}");
    let log = plugin.log();
    assert!(
        log.contains("tmpfs noswap is refused in a user namespace: secrets may be swapped"),
        "the plugin says why its mounts may be swapped:\n{log}"
    );
    assert!(!log.contains("has no noswap option"), "not the old kernel's message:\n{log}");
    assert_eq!(bao.accessors().len(), before.len() + 2, "each container's mount has its token");

    d.docker_ok(&["stop", "-t", "1", &root]);
    assert!(
        wait_until(Duration::from_secs(10), || bao.accessors().len() == before.len() + 1),
        "docker stop revoked the root container's token"
    );
    d.docker_ok(&["stop", "-t", "1", &user]);
    assert!(
        wait_until(Duration::from_secs(10), || bao.accessors() == before),
        "docker stop revoked the --user 1000 container's token"
    );
    d.docker_ok(&["rm", &root, &user]);
    d.docker_ok(&["volume", "rm", &vol]);
    // The plugin before the engine: its namespaces go with rootlesskit.
    drop(plugin);
}
