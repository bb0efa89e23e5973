//! Rootless Docker (`util::rootless`: Debian 12's dockerd-rootless.sh and rootlesskit, as the
//! user `vst-rootless`) with the plugin run inside the engine's user and mount namespaces, as
//! `docs/rootless.md` says: a root and a `--user 1000` container read their secrets, `docker
//! stop` revokes, the plugin says truthfully that the kernel refuses `noswap` there, and
//! `-o uid=container` owns each container's files by its numeric `--user`. The
//! same with rootless Podman (Debian 12's 4.3, as that user) and the plugin run with `podman
//! unshare`, where the containers' views (with and without `:ro`) also withstand the attacks of
//! `readonly`, before and after a rewrite made inside the user namespace.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::docker::{docker_lock, DRIVER};
use crate::util::rootless::{self, RootlessDockerd};
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
    rootless::give(&[plugin.dir.path(), &plugin.config, &plugin.dir.path().join("token")]);
    std::fs::set_permissions(plugin.dir.path().join("token"), PermissionsExt::from_mode(0o600))
        .unwrap();
    plugin.wrap = d.enter();
    plugin.env.push(("DOCKER_HOST".into(), d.host.clone()));
    plugin.runtime = d.host_path(&plugin.runtime);
    plugin.restart();

    let vol = unique("rootless");
    d.docker_ok(&volume_create(&vol));
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

    // -o uid=container: each container's numeric --user, read from the rootless engine's record
    // of it (its data root is the user's, seen through the engine's process).
    let follow = unique("rootless-follow");
    let options = ["path=secret/data/rootless", "uid=container"];
    let mut create = vec!["volume", "create", "--driver", DRIVER];
    create.extend(options.iter().flat_map(|o| ["-o", *o]));
    create.push(&follow);
    d.docker_ok(&create);
    let mount = format!("{follow}:/run/secrets:ro");
    let owner = "stat -c '%u %g %a' /run/secrets/password; cat /run/secrets/password";
    for (user, expected) in [
        (Some("1000:1000"), "1000 1000 400\nfrom-vault"),
        (Some("2000"), "2000 0 400\nfrom-vault"),
        (None, "0 0 400\nfrom-vault"),
    ] {
        let mut args = vec!["run", "--rm", "--network", "none", "--cap-drop", "ALL"];
        if let Some(user) = user {
            args.extend(["--user", user]);
        }
        args.extend(["-v", mount.as_str(), image.as_str(), "sh", "-c", owner]);
        let out = d.docker(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "uid=container, --user {user:?}: {stderr}\n{}", plugin.log());
        let seen = String::from_utf8_lossy(&out.stdout);
        assert_eq!(seen.trim(), expected, "uid=container, --user {user:?}");
    }
    assert!(
        wait_until(Duration::from_secs(10), || bao.accessors() == before),
        "every uid=container mount's token was revoked"
    );
    d.docker_ok(&["volume", "rm", &follow]);
    // The plugin before the engine: its namespaces go with rootlesskit.
    drop(plugin);
}

#[test]
fn rootless_podman_with_the_plugin_in_podman_unshare_reads_and_revokes_on_one_engine() {
    // Podman's own engine (Debian 12's 4.3, rootless) whatever the pass: once is enough; the
    // lock keeps it beside no other Docker test, as the tier's budget assumes.
    let _lock = docker_lock();
    let (uid, _, home) = rootless::user();
    let user = rootless::as_user();
    let podman = |args: &[&str]| {
        let mut c = wrapped(&user, "podman");
        c.args(args).env_remove("CONTAINERS_CONF").current_dir(&home);
        c.output().expect("podman")
    };
    let podman_ok = |args: &[&str]| {
        let out = podman(args);
        assert!(
            out.status.success(),
            "podman {} (rootless): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(podman_ok(&["info", "--format", "{{.Host.Security.Rootless}}"]), "true");
    let image = test_image();
    if !podman(&["image", "exists", &image]).status.success() {
        let rootfs = Path::new(paths::ROOTFS).display().to_string();
        podman_ok(&["import", "--change", "CMD [\"sh\"]", &rootfs, &image]);
    }
    // Podman's pause process keeps its namespaces: it is ended (by pid) at the end.
    let pause = std::fs::read_to_string(format!("/run/user/{uid}/libpod/tmp/pause.pid"));
    let _pause =
        EndAtDrop { pid: pause.unwrap().trim().parse().unwrap(), program: "podman".into() };

    let bao = Bao::start();
    bao.put_kv2("rootless", json!({"password": "from-vault", "user": "app"}));
    let mut plugin = Plugin::configure_in(
        Path::new(&format!("/run/user/{uid}")),
        None,
        &bao.address(),
        &bao.token,
        "",
    );
    let config = std::fs::read_to_string(&plugin.config).unwrap();
    // No engine API: Podman's (`podman system service`) is optional, the host's is not this one.
    std::fs::write(&plugin.config, config.replacen("[plugin]\n", "[plugin]\nengines = []\n", 1))
        .unwrap();
    rootless::give(&[plugin.dir.path(), &plugin.config, &plugin.dir.path().join("token")]);
    std::fs::set_permissions(plugin.dir.path().join("token"), PermissionsExt::from_mode(0o600))
        .unwrap();
    // The user's containers.conf names the plugin's socket.
    let conf = home.join(".config/containers");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("containers.conf"),
        format!(
            "[containers]\ndefault_ulimits = []\n\n[engine.volume_plugins]\n{DRIVER} = \"{}\"\n",
            plugin.socket.display()
        ),
    )
    .unwrap();
    rootless::give(&[&home.join(".config"), &conf, &conf.join("containers.conf")]);
    plugin.wrap = user.clone();
    plugin.wrap.extend(["podman".into(), "unshare".into()]);
    plugin.restart();
    // `podman unshare` runs the plugin as a child (of the podman it re-executes in its
    // namespaces): ended by its own pid.
    let program = plugin.program.display().to_string();
    let serve = descendant(plugin.pid(), &program).expect("the plugin's process");
    let _serve = EndAtDrop { pid: serve, program };

    let vol = unique("rootless");
    podman_ok(&volume_create(&vol));
    let before = bao.accessors();
    let mount = format!("{vol}:/run/secrets:ro");
    let run = |name: &str, user: &[&str]| {
        let mut args = vec!["run", "-d", "--name", name, "--network", "none"];
        args.extend(user);
        args.extend(["-v", mount.as_str(), image.as_str(), "sleep", "600"]);
        podman_ok(&args)
    };
    let (root, user_c) = (unique("rootless-root"), unique("rootless-user"));
    run(&root, &[]);
    run(&user_c, &["--user", "1000:1000"]);
    // And one without `:ro` (the same mount: Podman shares it among the volume's containers).
    let writable = unique("rootless-rw");
    podman_ok(&[
        "run",
        "-d",
        "--name",
        &writable,
        "--network",
        "none",
        "-v",
        &format!("{vol}:/run/secrets"),
        &image,
        "sleep",
        "600",
    ]);
    for c in [&root, &user_c, &writable] {
        assert_eq!(podman_ok(&["exec", c, "cat", "/run/secrets/password"]), "from-vault");
    }
    // The read-only view (issue 20), as root in the containers, with and without `:ro`; then
    // after a rewrite (refresh=1s) made inside the user namespace.
    let exec = |args: &[&str]| String::from_utf8_lossy(&podman(args).stdout).trim().to_owned();
    let files = ["password", "user"];
    for (c, what) in [(&root, "rootless podman -v :ro"), (&writable, "rootless podman -v")] {
        crate::readonly::attack_holding(&exec, c, "from-vault", &files, what);
    }
    bao.put_kv2("rootless", json!({"password": "rotated", "user": "app"}));
    let changed = Instant::now();
    for c in [&root, &user_c, &writable] {
        assert!(
            wait_until(Duration::from_secs(15), || exec(&[
                "exec",
                c,
                "cat",
                "/run/secrets/password"
            ]) == "rotated"),
            "the change did not reach {c}:\n{}",
            plugin.log()
        );
    }
    eprintln!(
        "rootless podman: the change reached 3 containers in {} ms",
        changed.elapsed().as_millis()
    );
    for (c, what) in
        [(&root, "rootless podman -v :ro, rotated"), (&writable, "rootless podman -v, rotated")]
    {
        crate::readonly::attack_holding(&exec, c, "rotated", &files, what);
    }
    assert_eq!(
        podman_ok(&["exec", &user_c, "stat", "-c", "%u %g %a", "/run/secrets/user"]),
        "1000 1000 440"
    );
    assert!(!podman(&["exec", "-u", "2000:2000", &user_c, "cat", "/run/secrets/user"])
        .status
        .success());
    let log = plugin.log();
    assert!(
        log.contains("tmpfs noswap is refused in a user namespace: secrets may be swapped"),
        "the plugin says why its mounts may be swapped:\n{log}"
    );
    // Podman mounts a plugin's volume once for all its containers: one token, revoked with the
    // last of them.
    assert_eq!(bao.accessors().len(), before.len() + 1, "the mount has its token");
    podman_ok(&["stop", "-t", "1", &root]);
    assert_eq!(bao.accessors().len(), before.len() + 1, "kept while a container uses it");
    podman_ok(&["stop", "-t", "1", &user_c]);
    assert_eq!(bao.accessors().len(), before.len() + 1, "kept while a container uses it");
    podman_ok(&["stop", "-t", "1", &writable]);
    assert!(
        wait_until(Duration::from_secs(10), || bao.accessors() == before),
        "podman stop of the last container revoked the mount's token"
    );
    podman_ok(&["rm", &root, &user_c, &writable]);
    podman_ok(&["volume", "rm", &vol]);
    drop(plugin);
    let _ = std::fs::remove_file(conf.join("containers.conf"));
}

/// Ends process `pid` at drop (SIGTERM, then waits for it) if it still runs `program` (its
/// argv[0]): a process of the test's that nothing else ends.
struct EndAtDrop {
    pid: u32,
    program: String,
}

impl EndAtDrop {
    fn runs(&self) -> bool {
        argv0(self.pid).is_some_and(|a| a == self.program)
    }
}

impl Drop for EndAtDrop {
    fn drop(&mut self) {
        if self.runs() {
            let _ =
                std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
            wait_until(Duration::from_secs(10), || !self.runs());
        }
    }
}

/// The first process below `pid` that runs `program` (its argv[0]; from every process's
/// parent in /proc: a Go program's children hang off whichever of its threads forked them).
fn descendant(pid: u32, program: &str) -> Option<u32> {
    let procs: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let p: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            Some((p, stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?))
        })
        .collect();
    let mut below = vec![pid];
    while let Some(parent) = below.pop() {
        for &(p, _) in procs.iter().filter(|(_, ppid)| *ppid == parent) {
            if argv0(p).is_some_and(|a| a == program) {
                return Some(p);
            }
            below.push(p);
        }
    }
    None
}

fn argv0(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let first = cmdline.split(|b| *b == 0).next()?;
    Some(String::from_utf8_lossy(first).into_owned())
}

/// `volume create` of the rootless tests' volume: the secret, readable by uid and gid 1000 only.
fn volume_create(vol: &str) -> Vec<&str> {
    let options = ["path=secret/data/rootless", "uid=1000", "gid=1000", "mode=0440", "refresh=1s"];
    let mut args = vec!["volume", "create", "--driver", DRIVER];
    args.extend(options.iter().flat_map(|o| ["-o", *o]));
    args.push(vol);
    args
}
