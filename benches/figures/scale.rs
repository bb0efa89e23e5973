//! Figures at scale: 2,000 active mounts (memory, a Mount's latency among them, `status`, a
//! restart re-adopting them), and the renewal traffic they send to Vault.
//!
//! Both have an OpenBao of their own with a file audit device, so that every request the
//! plugin makes is counted, and a plugin of their own that reaches no Docker engine (its sweep
//! would release mounts no container uses after 60 s).

use std::collections::BTreeMap;

use super::*;

const MOUNTS: usize = 2000;
const THREADS: usize = 4;

/// A plugin of its own against `bao`, its sweep off (no Docker engine).
fn lone_plugin(bao: &AuditedBao) -> Plugin {
    let mut plugin = start_plugin(None, &bao.address(), AuditedBao::TOKEN);
    plugin.env.push(("DOCKER_HOST".into(), "unix:///nonexistent/docker.sock".into()));
    plugin.log_filter = "info".into();
    plugin.stop(false);
    plugin.restart();
    plugin
}

/// Calls `f` on every ID from `THREADS` threads, until `end`; how many returned true.
fn on_each(ids: &[String], end: Instant, f: &(dyn Fn(&str) -> bool + Sync)) -> usize {
    std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .chunks(ids.len().div_ceil(THREADS))
            .map(|chunk| {
                s.spawn(move || {
                    chunk.iter().take_while(|_| Instant::now() < end).filter(|id| f(id)).count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

fn call_ok(plugin: &Plugin, path: &str, vol: &str, id: &str) -> bool {
    let body = json!({"Name": vol, "ID": id});
    matches!(plugin.call(path, Some(body)), Ok((200, v)) if v["Err"].as_str().unwrap_or("").is_empty())
}

/// Latencies of `n` Mount + Unmount pairs (the Mount timed).
fn sample_mounts(plugin: &Plugin, vol: &str, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let id = mount_id();
            let t = Instant::now();
            plugin.mount(vol, &id);
            let d = t.elapsed();
            plugin.unmount(vol, &id);
            d
        })
        .collect()
}

/// The `request` entries of a stretch of an audit log: (time in seconds since the epoch, path).
fn requests(log: &[u8]) -> Vec<(f64, String)> {
    String::from_utf8_lossy(log)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "request")
        .map(|e| {
            let at = e["time"].as_str().and_then(rfc3339_seconds).unwrap_or(0.0);
            (at, e["request"]["path"].as_str().unwrap_or("?").to_owned())
        })
        .collect()
}

/// `2026-12-01T19:03:04.123456789Z` as seconds since the epoch (UTC only, as OpenBao writes).
fn rfc3339_seconds(t: &str) -> Option<f64> {
    let (date, time) = t.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut c = time.splitn(3, ':');
    let (h, min) = (c.next()?.parse::<i64>().ok()?, c.next()?.parse::<i64>().ok()?);
    let s: f64 = c.next()?.parse().ok()?;
    // Days since the epoch of a civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some((days * 86400 + h * 3600 + min * 60) as f64 + s)
}

/// How often each path was asked, most first: `renew-self ×1990, …`.
fn tally(requests: &[(f64, String)]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, path) in requests {
        *counts.entry(path.as_str()).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let parts: Vec<String> = counts.iter().map(|(p, n)| format!("{p} ×{n}")).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// 2,000 mounts of a one-secret KV volume through the plugin protocol: VmRSS; a Mount's p50
/// among them against with none; `status --json` answering; then the plugin restarted (SIGTERM,
/// start): the time until it answered Activate, List and a new Mount, the mounts it re-adopted
/// and the Vault requests that took.
pub(crate) fn scale(b: &Bench) -> Vec<Row> {
    let bao = AuditedBao::start(&b.bao_bin);
    bao.put("secret/data/bench", json!({"data": {"password": "bench-secret", "user": "app"}}));
    let mut plugin = lone_plugin(&bao);
    let pid = pid_with_arg(&plugin.config.display().to_string()).expect("the plugin's pid");
    let idle = vm_rss(pid).unwrap();
    let vol = unique("bench-2k");
    plugin.create(&vol, json!({"path": "secret/data/bench"}));
    let ids: Vec<String> = (0..MOUNTS).map(|_| mount_id()).collect();
    let alone = sample_mounts(&plugin, &vol, 50);
    // Well before the first renewals (at about 2/3 of the 1 h default ttl).
    let end = Instant::now() + Duration::from_secs(120);
    let mounted = on_each(&ids, end, &|id| call_ok(&plugin, "/VolumeDriver.Mount", &vol, id));
    assert_eq!(mounted, MOUNTS, "only {mounted} of {MOUNTS} mounts succeeded within the time");
    let rss = vm_rss(pid).unwrap();
    let crowded = sample_mounts(&plugin, &vol, 50);
    let status = |plugin: &Plugin| -> (Duration, usize) {
        let t = Instant::now();
        let out = Command::new(BIN)
            .args(["status", "--json", "--config"])
            .arg(&plugin.config)
            .output()
            .expect("status");
        let took = t.elapsed();
        assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("status --json");
        let mounts = v["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v["mounts"].as_array().map_or(0, Vec::len))
            .sum();
        (took, mounts)
    };
    let statuses: Vec<(Duration, usize)> = (0..5).map(|_| status(&plugin)).collect();
    let status_p50 = percentile(&statuses.iter().map(|s| s.0).collect::<Vec<_>>(), 50.0);
    assert!(statuses.iter().all(|s| s.1 == MOUNTS), "status lists every mount: {statuses:?}");

    // The restart: SIGTERM, a new process, until it serves again.
    plugin.stop(false);
    let log_before = std::fs::metadata(bao.log()).map(|m| m.len() as usize).unwrap_or(0);
    let t = Instant::now();
    plugin.restart(); // returns once Activate answers (polled every 25 ms)
    let activated = t.elapsed();
    let (code, list) = plugin.call("/VolumeDriver.List", Some(json!({}))).expect("List");
    assert_eq!(code, 200, "List after the restart: {list}");
    let probe = mount_id();
    plugin.mount(&vol, &probe);
    let serving = t.elapsed();
    let log_after = std::fs::metadata(bao.log()).map(|m| m.len() as usize).unwrap_or(0);
    plugin.unmount(&vol, &probe);
    let text = std::fs::read(bao.log()).unwrap();
    let mut during = requests(&text[log_before..log_after]);
    // The probe Mount's own two requests are not the re-adoption's.
    for path in ["auth/token/create", "secret/data/bench"] {
        if let Some(i) = during.iter().rposition(|(_, p)| p == path) {
            during.remove(i);
        }
    }
    let (_, readopted) = status(&plugin);
    let end = Instant::now() + Duration::from_secs(120);
    on_each(&ids, end, &|id| call_ok(&plugin, "/VolumeDriver.Unmount", &vol, id));
    assert!(plugin.mounts_left().is_empty(), "{} mounts left", plugin.mounts_left().len());
    drop(plugin);

    let mib = |kib: u64| kib as f64 / 1024.0;
    let (crowded, alone) = (percentile(&crowded, 50.0), percentile(&alone, 50.0));
    let crowd_ratio = ratio(crowded, alone);
    vec![
        Row::new(
            &format!("resident memory, {MOUNTS} active mounts (VmRSS)"),
            format!("{:.1} MiB", mib(rss)),
            format!("{:.1} MiB idle", mib(idle)),
            "≤ 24 MiB".into(),
            Some(rss <= 24 * 1024),
        ),
        Row::new(
            &format!("Mount p50 with {MOUNTS} active mounts (n=50)"),
            ms(crowded),
            format!("{} with none active", ms(alone)),
            format!("≤ 1.2×: {crowd_ratio:.2}×"),
            Some(crowd_ratio <= 1.2),
        ),
        Row::new(
            &format!("`status --json` with {MOUNTS} mounts, p50 of 5 (the CLI process included)"),
            ms(status_p50),
            "".into(),
            "≤ 100 ms".into(),
            Some(status_p50 <= Duration::from_millis(100)),
        ),
        Row::new(
            &format!("restart with {MOUNTS} mounts: Activate, List and a new Mount served"),
            format!("{} (Activate after {})", ms(serving), ms(activated)),
            format!(
                "{readopted} of {MOUNTS} re-adopted; Vault requests meanwhile: {}",
                tally(&during)
            ),
            "≤ 2 s, all re-adopted".into(),
            Some(serving <= Duration::from_secs(2) && readopted == MOUNTS),
        ),
    ]
}

/// 2,000 mounts whose tokens have `ttl=1m`, kept for `VAULT_SECRETS_BENCH_RENEWAL_SECS`
/// (default 600): the requests per second OpenBao's audit device saw from when the last mount
/// was in place until the first unmount, against their mean over that time.
pub(crate) fn renewal_traffic(b: &Bench) -> Vec<Row> {
    let secs: u64 = std::env::var("VAULT_SECRETS_BENCH_RENEWAL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let bao = AuditedBao::start(&b.bao_bin);
    bao.put("secret/data/bench", json!({"data": {"password": "bench-secret", "user": "app"}}));
    let plugin = lone_plugin(&bao);
    let vol = unique("bench-renew");
    plugin.create(&vol, json!({"path": "secret/data/bench", "ttl": "1m", "refresh": "0"}));
    let ids: Vec<String> = (0..MOUNTS).map(|_| mount_id()).collect();
    let end = Instant::now() + Duration::from_secs(50);
    let mounted = on_each(&ids, end, &|id| call_ok(&plugin, "/VolumeDriver.Mount", &vol, id));
    assert_eq!(mounted, MOUNTS, "only {mounted} of {MOUNTS} mounts succeeded within 50 s");
    let from = std::fs::metadata(bao.log()).map(|m| m.len() as usize).unwrap_or(0);
    let started = Instant::now();
    eprintln!("  {MOUNTS} mounts in place; counting Vault requests for {secs} s");
    std::thread::sleep(Duration::from_secs(secs));
    let to = std::fs::metadata(bao.log()).map(|m| m.len() as usize).unwrap_or(0);
    let window = started.elapsed().as_secs_f64();
    let text = std::fs::read(bao.log()).unwrap();
    let seen = requests(&text[from..to]);
    let failed_renewals = std::fs::read_to_string(plugin.log_path())
        .unwrap_or_default()
        .matches("upkeep failed")
        .count();
    let end = Instant::now() + Duration::from_secs(120);
    let unmounted = on_each(&ids, end, &|id| call_ok(&plugin, "/VolumeDriver.Unmount", &vol, id));
    assert_eq!(unmounted, MOUNTS, "every token was still good for its Unmount");
    drop(plugin);

    // Per whole second of the window (the partial first and last seconds left out).
    let first = seen.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
    let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
    let start = first.floor() as i64;
    let seconds = window.floor() as i64 - 1;
    for s in start + 1..start + 1 + seconds {
        per_second.insert(s, 0);
    }
    for (at, _) in &seen {
        if let Some(n) = per_second.get_mut(&(at.floor() as i64)) {
            *n += 1;
        }
    }
    let counts: Vec<usize> = per_second.values().copied().collect();
    let total: usize = counts.iter().sum();
    let mean = total as f64 / counts.len().max(1) as f64;
    let peak = counts.iter().copied().max().unwrap_or(0);
    let peak_ratio = peak as f64 / mean.max(f64::MIN_POSITIVE);
    // The histogram: how many seconds carried how many requests, in bins of 10.
    let mut bins: BTreeMap<usize, usize> = BTreeMap::new();
    for n in &counts {
        *bins.entry(n / 10).or_default() += 1;
    }
    println!("renewal traffic, {MOUNTS} mounts, ttl=1m, {} s: requests per second", counts.len());
    for (bin, seconds) in &bins {
        let bar = "#".repeat((*seconds * 60).div_ceil(counts.len().max(1)));
        println!("  {:>4}–{:<4} {seconds:>5} s {bar}", bin * 10, bin * 10 + 9);
    }
    println!("  requests: {}", tally(&seen));
    vec![Row::new(
        &format!("renewal traffic, {MOUNTS} mounts, ttl=1m, {} s", counts.len()),
        format!("peak {peak}/s, mean {mean:.1}/s"),
        format!("{failed_renewals} failed upkeeps"),
        format!("peak ≤ 3× mean: {peak_ratio:.2}×"),
        Some(peak_ratio <= 3.0 && failed_renewals == 0),
    )]
}
