//! Ids in the container: a dockerd of the test's own under `--userns-remap=default` (container
//! root is an unprivileged host uid), where `-o uid`/`-o gid` name the container's ids; and
//! the hardened container of the README's first example on the shared engine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::util::docker::{docker, docker_ok, image, E2e, DRIVER};
use crate::util::dockerd::Dockerd;
use crate::util::*;

/// Removes the shared driver's socket when the test ends.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_userns_remapped_dockerd_gives_root_and_user_containers_their_secrets_on_one_engine() {
    let bao = Bao::start();
    bao.put_kv2("userns", json!({"password": "remapped"}));
    // The shared driver name under its lock (every dockerd sees /run/docker/plugins).
    let _lock = crate::util::docker::docker_lock();
    let socket = Path::new("/run/docker/plugins").join(format!("{DRIVER}.sock"));
    let _socket_file = SocketFile(socket.clone());
    // Declared before the dockerd: it is dropped after it (the dockerd's containers need it).
    let mut plugin = Plugin::configure(Some(&socket), &bao.address(), &bao.token, "");
    let dockerd = Dockerd::start_with("userns", &["--userns-remap=default"]);
    plugin.env.push(("DOCKER_HOST".into(), dockerd.host.clone()));
    plugin.restart();
    let info =
        dockerd.docker_ok(&["info", "--format", "{{json .SecurityOptions}} {{.DockerRootDir}}"]);
    assert!(info.contains("name=userns"), "the dockerd remaps: {info}");
    let suffix = info.rsplit('/').next().unwrap();
    let (base, gid_base) = suffix.split_once('.').expect(&info);
    let (base, gid_base): (u32, u32) = (base.parse().expect(&info), gid_base.parse().expect(&info));
    assert!(base > 0 && gid_base > 0, "{info}");
    // `check` says so.
    let check = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&plugin.config)
        .env("DOCKER_HOST", &dockerd.host)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(
        said.contains(&format!("remaps user namespaces (container root is host {base}:{gid_base}")),
        "{said}"
    );
    let create = |prefix: &str, opts: &[&str]| {
        let name = unique(prefix);
        let mut args = vec!["volume", "create", "--driver", DRIVER];
        for o in opts {
            args.extend(["-o", o]);
        }
        args.push(&name);
        (dockerd.docker(&args), name)
    };

    // A root container: container root owns its files (host uid `base`).
    let (out, root_vol) = create("userns-root", &["path=secret/data/userns"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mount = format!("{root_vol}:/run/secrets:ro");
    let seen = dockerd.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &mount,
        &image(),
        "sh",
        "-c",
        "cat /run/secrets/password && echo && stat -c '%u %g %a' /run/secrets/password",
    ]);
    assert_eq!(seen, "remapped\n0 0 400", "a root container reads its secret");

    // A --user 1000:1000 container with -o uid=1000 -o gid=1000.
    let (out, user_vol) =
        create("userns-user", &["path=secret/data/userns", "uid=1000", "gid=1000", "refresh=1s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mount = format!("{user_vol}:/run/secrets:ro");
    let before = bao.accessors();
    let c = dockerd.docker_ok(&[
        "run",
        "-d",
        "--user",
        "1000:1000",
        "--network",
        "none",
        "-v",
        &mount,
        &image(),
        "sleep",
        "600",
    ]);
    assert_eq!(dockerd.docker_ok(&["exec", &c, "cat", "/run/secrets/password"]), "remapped");
    assert_eq!(
        dockerd.docker_ok(&["exec", &c, "stat", "-c", "%u %g", "/run/secrets/password"]),
        "1000 1000"
    );
    // A rewrite (the KV changed) keeps the container's owner.
    bao.put_kv2("userns", json!({"password": "changed"}));
    let read = || dockerd.docker_ok(&["exec", &c, "cat", "/run/secrets/password"]);
    assert!(wait_until(Duration::from_secs(15), || read() == "changed"), "the change arrived");
    assert_eq!(
        dockerd.docker_ok(&["exec", &c, "stat", "-c", "%u %g", "/run/secrets/password"]),
        "1000 1000",
        "the rewritten file keeps the owner"
    );
    let host = plugin.mounts_left();
    assert_eq!(host.len(), 1, "one tmpfs on the host: {host:?}");
    let meta = std::fs::metadata(Path::new(&host[0]).join("password")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (base + 1000, gid_base + 1000), "host ids: base + 1000");
    assert_eq!(bao.accessors().len(), before.len() + 1, "the mount has its own token");

    // Revoked at stop.
    dockerd.docker_ok(&["stop", "-t", "1", &c]);
    assert_eq!(bao.accessors(), before, "docker stop revoked the mount's token");
    assert!(plugin.mounts_left().is_empty(), "the tmpfs is gone");
    dockerd.docker_ok(&["rm", &c]);

    // An id the namespace does not map is refused at create, naming the range.
    let (out, _) = create("userns-big", &["path=secret/data/userns", "uid=65536"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("uid") && stderr.contains("accepted: 0-65535"),
        "{stderr}"
    );

    // -o uid=container: the --user of the container, as its id, owned by the host's base + it.
    let (out, follow_vol) = create("userns-follow", &["path=secret/data/userns", "uid=container"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mount = format!("{follow_vol}:/run/secrets");
    let args = ["run", "-d", "--user", "1000:1000", "--network", "none", "-v", &mount];
    let c = dockerd.docker_ok(&[&args[..], &[image().as_str(), "sleep", "600"]].concat());
    let stat = dockerd.docker_ok(&["exec", &c, "stat", "-c", "%u %g", "/run/secrets/password"]);
    assert_eq!(stat, "1000 1000", "uid=container under userns-remap");
    let host = plugin.mounts_left();
    let meta = std::fs::metadata(Path::new(&host[0]).join("password")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (base + 1000, gid_base + 1000), "host ids: base + 1000");
    dockerd.docker_ok(&["rm", "-f", &c]);
    for v in [&root_vol, &user_vol, &follow_vol] {
        dockerd.docker_ok(&["volume", "rm", v]);
    }
}

/// README's first example: a read-only, capability-less, unprivileged container without a
/// network reads its secret with `-o uid=1000`; without it, `Permission denied`
/// (docs/operations.md, Troubleshooting).
#[test]
fn the_hardened_container_of_the_readme_reads_its_secret_on_every_engine() {
    let mut t = E2e::start();
    t.bao.put_kv2("hardened", json!({"password": "hardened"}));
    let run = |vol: &str| {
        let mount = format!("{vol}:/run/secrets");
        docker(&[
            "run",
            "--rm",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--user",
            "1000:1000",
            "--security-opt",
            "no-new-privileges",
            "--network",
            "none",
            "-v",
            &mount,
            &image(),
            "cat",
            "/run/secrets/password",
        ])
    };
    let vol = t.volume("hardened", &["path=secret/data/hardened", "uid=1000"]);
    let out = run(&vol);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hardened");
    let root_only = t.volume("hardened-root", &["path=secret/data/hardened"]);
    let out = run(&root_only);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("Permission denied"), "{stderr}");
    assert!(t.plugin.mounts_left().is_empty(), "both mounts ended with their containers");
}

/// `-o uid=container` (issue 20, Deliver 4): the files follow the numeric `--user` of the
/// container each mount is for, read from dockerd's record of it (the API's inspect waits for
/// the Mount); a user name is refused with the reason, and leaves nothing behind.
#[test]
fn uid_container_follows_each_containers_numeric_user_on_every_engine() {
    let mut t = E2e::start();
    t.bao.put_kv2("owner", json!({"password": "follows"}));
    let vol = t.volume("owner", &["path=secret/data/owner", "uid=container"]);
    let before = t.bao.accessors();
    let run = |user: Option<&str>, command: &[&str]| {
        let mount = format!("{vol}:/run/secrets");
        let mut args = vec!["run", "--rm", "--network", "none", "--cap-drop", "ALL"];
        if let Some(user) = user {
            args.extend(["--user", user]);
        }
        args.extend(["-v", mount.as_str(), "--read-only"]);
        let image = image();
        args.push(&image);
        args.extend(command);
        docker(&args)
    };
    let owner = ["sh", "-c", "stat -c '%u %g %a' /run/secrets/password; cat /run/secrets/password"];
    for (user, expected) in [
        (Some("1000:1000"), "1000 1000 400\nfollows"),
        (Some("2000"), "2000 0 400\nfollows"),
        (None, "0 0 400\nfollows"),
    ] {
        let out = run(user, &owner);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "--user {user:?}: {stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected, "--user {user:?}");
        eprintln!("--user {user:?}: {}", expected.lines().next().unwrap());
    }
    // A name would be looked up in the container's own /etc/passwd (which its image, and so
    // whoever made it, controls): refused at the start, though the image has the user.
    let named = format!("{}-passwd", unique("vault-secrets-test/owner"));
    let maker = unique("owner-passwd");
    let passwd = "mkdir -p /etc && echo 'app:x:1234:1234::/:/bin/sh' >> /etc/passwd";
    docker_ok(&["run", "--name", &maker, "--network", "none", &image(), "sh", "-c", passwd]);
    docker_ok(&["commit", &maker, &named]);
    docker_ok(&["rm", &maker]);
    let mount = format!("{vol}:/run/secrets");
    let args = ["run", "--rm", "--network", "none", "--user", "app", "-v", &mount, &named, "true"];
    let out = docker(&args);
    let _ = docker(&["rmi", &named]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("its user `app` is not numeric"), "{stderr}");
    eprintln!("--user app: {}", stderr.lines().next().unwrap_or_default());
    assert!(t.plugin.mounts_left().is_empty(), "every mount ended with its container");
    assert!(
        wait_until(Duration::from_secs(5), || t.bao.accessors() == before),
        "a token outlived its container"
    );
}
