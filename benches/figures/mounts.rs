//! Figures of a mount itself: its latency alone and 64 at once, the Vault requests it makes,
//! the memory 1,000 of them take.

use std::sync::Barrier;

use super::*;

/// Mount latency through the plugin socket against the raw round trips it needs (a token
/// create and a read) made from this process over one kept-alive connection, by a minimal
/// HTTP/1.1 client on a TCP socket and by reqwest's blocking client; the three alternate, after
/// a warm-up.
pub(crate) fn mount_latency(b: &Bench) -> Vec<Row> {
    const N: usize = 200;
    b.bao.put_kv2("bench", json!({"password": "bench-secret", "user": "app"}));
    let vol = b.volume("bench-kv", json!({"path": "secret/data/bench"}));
    let mut tcp = TcpClient::connect(b.bao.port);
    let mut reqwest = ReqwestClient::new(&b.bao);
    let (mut mount, mut raw, mut via_reqwest) = (Vec::new(), Vec::new(), Vec::new());
    let end = Instant::now() + Duration::from_secs(40);
    for i in 0..WARMUP + N {
        if Instant::now() > end {
            break;
        }
        let id = mount_id();
        let t = Instant::now();
        let mountpoint = b.plugin.mount(&vol, &id);
        let m = t.elapsed();
        if i == 0 {
            let password = std::fs::read_to_string(mountpoint.join("password")).unwrap();
            assert_eq!(password, "bench-secret");
        }
        b.plugin.unmount(&vol, &id);
        let r = raw_round_trips(&mut tcp, &b.bao.token, "secret/data/bench");
        let q = raw_round_trips(&mut reqwest, &b.bao.token, "secret/data/bench");
        if i >= WARMUP {
            mount.push(m);
            raw.push(r);
            via_reqwest.push(q);
        }
    }
    let p = |s: &[Duration], q| percentile(s, q);
    let ratio50 = ratio(p(&mount, 50.0), p(&raw, 50.0));
    vec![
        Row::new(
            &format!("Mount, one KV v2 secret, p50 (n={})", mount.len()),
            ms(p(&mount, 50.0)),
            format!(
                "{} raw token create + read ({} with reqwest)",
                ms(p(&raw, 50.0)),
                ms(p(&via_reqwest, 50.0))
            ),
            format!("≤ 1.5× baseline: {ratio50:.2}×"),
            Some(ratio50 <= 1.5),
        ),
        Row::new(
            "Mount, one KV v2 secret, p99",
            ms(p(&mount, 99.0)),
            format!("{} raw ({} with reqwest)", ms(p(&raw, 99.0)), ms(p(&via_reqwest, 99.0))),
            format!("{:.2}×", ratio(p(&mount, 99.0), p(&raw, 99.0))),
            None,
        ),
    ]
}

/// The Vault round trips a KV mount needs, made directly: a child token of the same parent with
/// the plugin's request body, then the read with it. The token is revoked afterwards, untimed.
fn raw_round_trips(client: &mut impl VaultCall, parent: &str, path: &str) -> Duration {
    let t = Instant::now();
    let body = json!({
        "ttl": "3600s", "display_name": "vault-secrets-bench", "renewable": true,
        "meta": {"volume": "bench", "mount_id": "0123456789ab"},
    });
    let created = client.call("POST", "auth/token/create", parent, Some(&body));
    let token = created["auth"]["client_token"].as_str().expect("a client token").to_owned();
    let read = client.call("GET", path, &token, None);
    let elapsed = t.elapsed();
    assert!(read["data"]["data"].is_object(), "a KV v2 secret: {read}");
    client.call("POST", "auth/token/revoke-self", &token, None);
    elapsed
}

/// 64 distinct mount IDs of one volume, issued at once through the plugin socket, several
/// rounds; each latency from its request to its answer. Baseline: 64 clients making the raw
/// round trips at once.
pub(crate) fn concurrent_mounts(b: &Bench) -> Vec<Row> {
    const CLIENTS: usize = 64;
    const ROUNDS: usize = 5;
    b.bao.put_kv2("bench", json!({"password": "bench-secret", "user": "app"}));
    let vol = b.volume("bench-c64", json!({"path": "secret/data/bench"}));
    let (mut mount, mut raw, mut walls) = (Vec::new(), Vec::new(), Vec::new());
    // CPU time the plugin and OpenBao spend on the mounts (not on the unmounts or the baseline).
    let pids = [b.plugin_pid(), b.bao_pid()];
    let mut cpu = [Duration::ZERO; 2];
    let end = Instant::now() + Duration::from_secs(40);
    for _ in 0..ROUNDS {
        if Instant::now() > end {
            break;
        }
        let ids: Vec<String> = (0..CLIENTS).map(|_| mount_id()).collect();
        let barrier = Barrier::new(CLIENTS);
        let t = Instant::now();
        let cpu_before = pids.map(cpu_time);
        let results: Vec<(Duration, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = ids
                .iter()
                .map(|id| {
                    let (barrier, vol) = (&barrier, &vol);
                    s.spawn(move || {
                        barrier.wait();
                        let t = Instant::now();
                        let body = json!({"Name": vol, "ID": id});
                        let answer = b.plugin.call("/VolumeDriver.Mount", Some(body));
                        let err = match answer {
                            Ok((200, v)) => v["Err"].as_str().unwrap_or("").to_owned(),
                            Ok((status, v)) => format!("{status} {v}"),
                            Err(e) => e.to_string(),
                        };
                        (t.elapsed(), err)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        walls.push(t.elapsed());
        for (i, before) in cpu_before.into_iter().enumerate() {
            cpu[i] += cpu_time(pids[i]).saturating_sub(before);
        }
        for id in &ids {
            let _ = b.plugin.call("/VolumeDriver.Unmount", Some(json!({"Name": vol, "ID": id})));
        }
        let errors: Vec<&String> = results.iter().map(|r| &r.1).filter(|e| !e.is_empty()).collect();
        assert!(errors.is_empty(), "{} of {CLIENTS} mounts failed: {}", errors.len(), errors[0]);
        mount.extend(results.into_iter().map(|r| r.0));
        raw.extend(concurrent_raw(b, CLIENTS));
    }
    assert!(b.plugin.mounts_left().is_empty(), "mounts left: {:?}", b.plugin.mounts_left());
    let (m99, r99) = (percentile(&mount, 99.0), percentile(&raw, 99.0));
    vec![
        Row::new(
            &format!("64 concurrent mounts, p99 ({} rounds)", walls.len()),
            format!("{} (p50 {})", ms(m99), ms(percentile(&mount, 50.0))),
            format!("{} raw round trips, 64 at once", ms(r99)),
            format!("≤ 1.25× baseline: {:.2}×", ratio(m99, r99)),
            Some(ratio(m99, r99) <= 1.25),
        ),
        Row::new(
            "CPU time per mount, 64 at once",
            format!("{} plugin", ms(cpu[0] / mount.len().max(1) as u32)),
            format!("{} OpenBao", ms(cpu[1] / mount.len().max(1) as u32)),
            format!("{} CPUs", std::thread::available_parallelism().map_or(0, |n| n.get())),
            None,
        ),
    ]
}

/// `clients` threads making the raw round trips at once, each on its own warmed connection.
fn concurrent_raw(b: &Bench, clients: usize) -> Vec<Duration> {
    let barrier = Barrier::new(clients);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut tcp = TcpClient::connect(b.bao.port);
                    tcp.call("GET", "sys/health", "", None);
                    barrier.wait();
                    raw_round_trips(&mut tcp, &b.bao.token, "secret/data/bench")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Requests OpenBao's file audit device records during one Mount and during one Unmount of a
/// one-source KV volume. OpenBao enables audit devices only from its configuration, so this
/// figure has an OpenBao of its own, with a plugin of its own: nothing else talks to it.
pub(crate) fn requests_per_mount(b: &Bench) -> Vec<Row> {
    let bao = AuditedBao::start(&b.bao_bin);
    bao.put("secret/data/bench", json!({"data": {"password": "bench-secret", "user": "app"}}));
    let plugin = start_plugin(None, &bao.address(), AuditedBao::TOKEN);
    let vol = unique("bench-audit");
    plugin.create(&vol, json!({"path": "secret/data/bench"}));
    let size = || std::fs::metadata(bao.log()).map(|m| m.len() as usize).unwrap_or(0);
    // Audit entries are written before the reply; the pause catches any request made later.
    let settle = Duration::from_millis(300);
    let (id, before) = (mount_id(), size());
    plugin.mount(&vol, &id);
    std::thread::sleep(settle);
    let mounted = size();
    plugin.unmount(&vol, &id);
    std::thread::sleep(settle);
    let text = std::fs::read(bao.log()).unwrap();
    let mount = audited_requests(&text[before..mounted]);
    let unmount = audited_requests(&text[mounted..]);
    vec![
        Row::new(
            "Vault requests per Mount (one KV source)",
            format!("{} ({})", mount.len(), mount.join(", ")),
            "token create + read".into(),
            "2".into(),
            Some(mount.len() == 2),
        ),
        Row::new(
            "Vault requests per Unmount",
            format!("{} ({})", unmount.len(), unmount.join(", ")),
            "revoke".into(),
            "1".into(),
            Some(unmount.len() == 1),
        ),
    ]
}

/// The paths of the `request` entries in a stretch of an audit log.
fn audited_requests(log: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(log)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "request")
        .map(|e| e["request"]["path"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// VmRSS of a fresh plugin process holding 1,000 active mounts, against one OpenBao Agent with
/// token_file auto-auth and one template, once it rendered.
pub(crate) fn memory(b: &Bench) -> Vec<Row> {
    const MOUNTS: usize = 1000;
    const THREADS: usize = 4;
    b.bao.put_kv2("bench", json!({"password": "bench-secret", "user": "app"}));
    let plugin = start_plugin(None, &b.bao.address(), &b.bao.token);
    let pid = pid_with_arg(&plugin.config.display().to_string()).expect("the plugin's pid");
    let idle = vm_rss(pid).unwrap();
    let vol = unique("bench-mem");
    plugin.create(&vol, json!({"path": "secret/data/bench"}));
    let ids: Vec<String> = (0..MOUNTS).map(|_| mount_id()).collect();
    // Well within the plugin's stale-mount sweep (mounts no container uses, after 60 s).
    let end = Instant::now() + Duration::from_secs(40);
    let on_each = |f: &(dyn Fn(&str) -> bool + Sync)| -> usize {
        std::thread::scope(|s| {
            let handles: Vec<_> = ids
                .chunks(MOUNTS.div_ceil(THREADS))
                .map(|chunk| {
                    s.spawn(move || {
                        chunk.iter().take_while(|_| Instant::now() < end).filter(|id| f(id)).count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        })
    };
    let call = |path: &str, id: &str| {
        let body = json!({"Name": vol, "ID": id});
        matches!(plugin.call(path, Some(body)), Ok((200, v)) if v["Err"].as_str().unwrap_or("").is_empty())
    };
    // A mount's latency, before and with the 1,000 mounts in place.
    let sample = || -> Vec<Duration> {
        (0..20)
            .map(|_| {
                let id = mount_id();
                let t = Instant::now();
                plugin.mount(&vol, &id);
                let d = t.elapsed();
                plugin.unmount(&vol, &id);
                d
            })
            .collect()
    };
    let alone = sample();
    let mounted = on_each(&|id| call("/VolumeDriver.Mount", id));
    let active = plugin.mounts_left().len();
    let rss = vm_rss(pid).unwrap();
    let crowded = sample();
    on_each(&|id| call("/VolumeDriver.Unmount", id));
    assert_eq!(mounted, MOUNTS, "only {mounted} of {MOUNTS} mounts succeeded within the time");
    assert_eq!(active, MOUNTS, "{active} tmpfs mounts in place, {MOUNTS} expected");
    drop(plugin);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), &b.bao.token).unwrap();
    let auth = format!(
        "method \"token_file\" {{\n config = {{\n  token_file_path = \"{}/token\"\n }}\n}}",
        dir.path().display()
    );
    let templates =
        [("kv", "{{ with secret \"secret/data/bench\" }}{{ .Data.data.password }}{{ end }}")];
    let mut agent = Agent::start(b, dir.path(), &auth, &templates);
    assert!(agent.wait_rendered(Duration::from_secs(20)), "the agent did not render within 20 s");
    std::thread::sleep(Duration::from_millis(500));
    let agent_rss = vm_rss(agent.child.id()).unwrap();
    drop(agent);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let (crowded, alone) = (percentile(&crowded, 50.0), percentile(&alone, 50.0));
    vec![
        Row::new(
            &format!("resident memory, {MOUNTS} active mounts (VmRSS)"),
            format!("{:.1} MiB (idle {:.1} MiB)", mib(rss), mib(idle)),
            format!("{:.1} MiB one OpenBao Agent, 1 template", mib(agent_rss)),
            "≤ 16 MiB".into(),
            Some(rss <= 16 * 1024),
        ),
        Row::new(
            &format!("Mount p50 with {MOUNTS} active mounts (n=20)"),
            ms(crowded),
            format!("{} with none active", ms(alone)),
            format!("{:.2}×", ratio(crowded, alone)),
            None,
        ),
    ]
}
