//! Soak and load: 1,000 mount/unmount cycles leave zero tmpfs mounts, tokens, leases, file
//! descriptors and records behind, with flat memory; 64 containers started at once all get
//! their secrets.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::docker::{docker, docker_ok, image, E2e, DRIVER};
use crate::util::*;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

fn leases(bao: &Bao, prefix: &str) -> usize {
    let (status, v) =
        bao.api_as(&bao.token, "LIST", &format!("sys/leases/lookup/{prefix}"), None).unwrap();
    if status == 404 {
        return 0;
    }
    v["data"]["keys"].as_array().map_or(0, Vec::len)
}

#[test]
fn a_thousand_mount_unmount_cycles_leave_nothing_behind() {
    let bao = Bao::start();
    let plugin = Plugin::start(None, &bao.address(), &bao.token, "");
    let pid = plugin.pid();
    bao.put_kv2("soak", json!({"password": "soak-pw"}));
    bao.database_role("soak", "1h", "2h");
    plugin.create("kv", json!({"path": "secret/data/soak"}));
    plugin.create("db", json!({"path": "database/creds/soak"}));
    let cycle = |volume: &str| {
        let id = mount_id();
        let mp = plugin.mount(volume, &id);
        assert!(mp.join("password").exists());
        plugin.unmount(volume, &id);
    };
    for _ in 0..50 {
        cycle("kv"); // warm-up: connection pools, allocator arenas
    }
    let (accessors, fds_before, rss_before) = (bao.accessors().len(), fds(pid), rss_kib(pid));
    let started = Instant::now();
    for i in 0..1000 {
        cycle(if i % 10 == 0 { "db" } else { "kv" }); // 100 of them with a database lease
    }
    let elapsed = started.elapsed();
    let (fds_after, rss_after) = (fds(pid), rss_kib(pid));
    eprintln!(
        "1000 cycles in {:.1} s ({:.1} ms each); fds {fds_before} -> {fds_after}; RSS {rss_before} -> {rss_after} KiB",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    assert!(plugin.mounts_left().is_empty(), "tmpfs mounts left: {:?}", plugin.mounts_left());
    assert_eq!(bao.accessors().len(), accessors, "tokens left");
    assert_eq!(leases(&bao, "database/creds/soak/"), 0, "database leases left");
    assert!(fds_after <= fds_before + 2, "file descriptors grew: {fds_before} -> {fds_after}");
    assert!(
        rss_after <= rss_before + 4096,
        "memory grew by more than 4 MiB: {rss_before} -> {rss_after} KiB"
    );
    let records = std::fs::read_dir(plugin.runtime.join("private/mounts")).unwrap().count();
    assert_eq!(records, 0, "mount records left in the private tmpfs");
    let leftover_dirs = std::fs::read_dir(plugin.runtime.join("mounts")).unwrap().count();
    assert_eq!(leftover_dirs, 0, "mount directories left");
}

#[test]
fn sixty_four_containers_started_at_once_all_get_their_secrets_on_one_engine() {
    let mut t = E2e::start();
    t.bao.put_kv2("load", json!({"password": "load-pw"}));
    let vol = t.volume("load", &["path=secret/data/load"]);
    let before = t.bao.accessors().len();
    let mount = format!("{vol}:/run/secrets:ro");
    let started = Instant::now();
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|_| {
                let mount = mount.clone();
                s.spawn(move || {
                    let out = docker(&[
                        "run",
                        "-d",
                        "--network",
                        "none",
                        "-v",
                        &mount,
                        &image(),
                        "sh",
                        "-c",
                        "cat /run/secrets/password; echo; sleep 600",
                    ]);
                    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                    String::from_utf8_lossy(&out.stdout).trim().to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    t.containers.extend(ids.iter().cloned());
    eprintln!("64 containers started in {:.1} s", started.elapsed().as_secs_f64());
    for id in &ids {
        assert!(
            wait_until(Duration::from_secs(30), || docker_ok(&["logs", id]) == "load-pw"),
            "container {id} did not read its secret"
        );
    }
    assert_eq!(t.bao.accessors().len(), before + 64, "one token per container");
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().map(String::as_str));
    let removing = Instant::now();
    docker_ok(&args);
    t.containers.clear();
    let revoked = wait_until(Duration::from_secs(60), || t.bao.accessors().len() == before);
    eprintln!(
        "64 containers removed; {} tokens left after {:.1} s; unmounts logged: {}",
        t.bao.accessors().len() - before,
        removing.elapsed().as_secs_f64(),
        t.plugin.log().matches("unmounted and revoked").count()
    );
    assert!(revoked, "every token revoked");
    assert!(t.plugin.mounts_left().is_empty());
    let _ = DRIVER;
}
