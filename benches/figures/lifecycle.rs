//! Figures of a container's life: its first secret files, a KV change while it runs, its
//! database user at stop, and `docker run` itself.

use super::*;

/// A Mount of a KV + database volume through the plugin socket, against an OpenBao Agent
/// started from nothing with AppRole auto-auth and two templates (process start to both files).
pub(crate) fn first_secret(b: &Bench) -> Vec<Row> {
    b.bao.database_role("bench", "1h", "2h");
    b.bao.put_kv2("first", json!({"password": "first-secret"}));
    let vol = b.volume(
        "bench-first",
        json!({"path": "secret/data/first", "path.db": "database/creds/bench"}),
    );
    let (mut plugin, mut raw) = (Vec::new(), Vec::new());
    let mut tcp = TcpClient::connect(b.bao.port);
    let end = Instant::now() + Duration::from_secs(30);
    for i in 0..3 + 10 {
        if Instant::now() > end {
            break;
        }
        let id = mount_id();
        let t = Instant::now();
        let mountpoint = b.plugin.mount(&vol, &id);
        let d = t.elapsed();
        assert!(mountpoint.join("password").exists() && mountpoint.join("db/username").exists());
        b.plugin.unmount(&vol, &id);
        // The same requests made directly: what Vault and PostgreSQL take.
        let t = Instant::now();
        let created = tcp.call("POST", "auth/token/create", &b.bao.token, Some(&json!({})));
        let token = created["auth"]["client_token"].as_str().expect("a token").to_owned();
        tcp.call("GET", "secret/data/first", &token, None);
        tcp.call("GET", "database/creds/bench", &token, None);
        let r = t.elapsed();
        tcp.call("POST", "auth/token/revoke-self", &token, None);
        if i >= 3 {
            plugin.push(d);
            raw.push(r);
        }
    }

    let (role_id, secret_id) = approle(&b.bao);
    let mut agent = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    for _ in 0..5 {
        if Instant::now() > end {
            break;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("role-id"), &role_id).unwrap();
        std::fs::write(p.join("secret-id"), &secret_id).unwrap();
        let auth = format!(
            "method \"approle\" {{\n config = {{\n  role_id_file_path = \"{0}/role-id\"\n  secret_id_file_path = \"{0}/secret-id\"\n  remove_secret_id_file_after_reading = false\n }}\n}}",
            p.display()
        );
        let templates = [
            ("kv", "{{ with secret \"secret/data/first\" }}{{ .Data.data.password }}{{ end }}"),
            ("db", "{{ with secret \"database/creds/bench\" }}{{ .Data.username }} {{ .Data.password }}{{ end }}"),
        ];
        let mut run = Agent::start(b, p, &auth, &templates);
        let rendered = run.wait_rendered(Duration::from_secs(20));
        let d = run.started.elapsed();
        drop(run);
        assert!(rendered, "the agent did not render both files within 20 s");
        agent.push(d);
    }
    // The agents' database users: their tokens outlive them (the plugin's were revoked).
    let _ =
        b.bao.api_as(&b.bao.token, "PUT", "sys/leases/revoke-prefix/database/creds/bench", None);
    let (p50, a50) = (percentile(&plugin, 50.0), percentile(&agent, 50.0));
    let faster = ratio(a50, p50);
    vec![Row::new(
        &format!("first secret files, KV + database, median (n={}/{})", plugin.len(), agent.len()),
        format!("{} Mount (the raw round trips: {})", ms(p50), ms(percentile(&raw, 50.0))),
        format!("{} OpenBao Agent from start (AppRole, 2 templates)", ms(a50)),
        format!("≥ 10× faster: {faster:.1}×"),
        Some(faster >= 10.0),
    )]
}

/// AppRole `bench` reading what the first-secret volume reads; its role_id and a secret_id.
fn approle(bao: &Bao) -> (String, String) {
    if bao.api("GET", "sys/auth", None)["approle/"].is_null() {
        bao.api("POST", "sys/auth/approle", Some(json!({"type": "approle"})));
    }
    bao.policy(
        "bench-agent",
        "path \"secret/data/first\" { capabilities = [\"read\"] }\npath \"database/creds/bench\" { capabilities = [\"read\"] }\n",
    );
    bao.api(
        "POST",
        "auth/approle/role/bench",
        Some(json!({"token_policies": "bench-agent", "token_ttl": "1h"})),
    );
    let role = bao.api("GET", "auth/approle/role/bench/role-id", None);
    let secret = bao.api("POST", "auth/approle/role/bench/secret-id", None);
    let text = |v: &Value| v.as_str().expect("approle ids").to_owned();
    (text(&role["data"]["role_id"]), text(&secret["data"]["secret_id"]))
}

/// KV change → changed file in the mount, with `refresh=1s`, at several phases of the refresh.
pub(crate) fn kv_rotation(b: &Bench) -> Vec<Row> {
    const N: usize = 5;
    b.bao.put_kv2("rotate", json!({"value": "v0"}));
    let vol = b.volume("bench-rotate", json!({"path": "secret/data/rotate", "refresh": "1s"}));
    let id = mount_id();
    let file = b.plugin.mount(&vol, &id).join("value");
    let mut delays = Vec::new();
    let mut missed = 0;
    for i in 1..=N {
        std::thread::sleep(Duration::from_millis((i as u64 * 370) % 1000));
        let value = format!("v{i}");
        b.bao.put_kv2("rotate", json!({"value": value}));
        let t = Instant::now();
        let seen = wait_every(Duration::from_millis(5), Duration::from_secs(5), || {
            std::fs::read_to_string(&file).is_ok_and(|v| v == value)
        });
        if seen {
            delays.push(t.elapsed());
        } else {
            missed += 1;
        }
    }
    b.plugin.unmount(&vol, &id);
    assert!(!delays.is_empty(), "no change became visible within 5 s");
    let max = delays.iter().max().copied().unwrap();
    vec![Row::new(
        &format!("KV change visible, refresh=1s, max of {N}"),
        format!("{} (median {})", ms(max), ms(percentile(&delays, 50.0))),
        "refresh = 1 s".into(),
        "≤ refresh + 1 s".into(),
        Some(missed == 0 && max <= Duration::from_secs(2)),
    )]
}

/// `docker stop` of a container with a database-credentials volume → its user gone from
/// pg_roles; baseline: revoking such a lease directly as root.
pub(crate) fn revocation(b: &Bench) -> Vec<Row> {
    const N: usize = 3;
    b.bao.database_role("bench", "1h", "2h");
    let poll = {
        let t = Instant::now();
        pg_role_exists("postgres");
        t.elapsed()
    };
    let vol = b.docker_volume("bench-db", Some(DRIVER), &["path=database/creds/bench"]);
    let mount = format!("{vol}:/run/secrets:ro");
    let mut delays = Vec::new();
    let end = Instant::now() + Duration::from_secs(60);
    for _ in 0..N {
        if Instant::now() > end {
            break;
        }
        let name = unique("bench-stop");
        b.containers.lock().unwrap().push(name.clone());
        docker_ok(&[
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
        let user = docker_ok(&["exec", &name, "cat", "/run/secrets/username"]);
        assert!(pg_role_exists(&user), "the container's database user exists");
        docker_ok(&["stop", "-t", "0", &name]);
        let t = Instant::now();
        assert!(
            wait_until(Duration::from_secs(5), || !pg_role_exists(&user)),
            "{user} not dropped in 5 s"
        );
        delays.push(t.elapsed());
        docker_ok(&["rm", &name]);
    }
    let mut direct = Vec::new();
    for _ in 0..N {
        let creds = b.bao.api("GET", "database/creds/bench", None);
        let user = creds["data"]["username"].as_str().unwrap().to_owned();
        let lease = creds["lease_id"].as_str().unwrap().to_owned();
        assert!(pg_role_exists(&user));
        let t = Instant::now();
        b.bao.api("PUT", "sys/leases/revoke", Some(json!({"lease_id": lease})));
        assert!(
            wait_until(Duration::from_secs(5), || !pg_role_exists(&user)),
            "{user} not dropped in 5 s"
        );
        direct.push(t.elapsed());
    }
    let max = delays.iter().max().copied().unwrap();
    vec![Row::new(
        &format!("docker stop → database user dropped, max of {}", delays.len()),
        format!(
            "{} (median {}; one psql poll: {})",
            ms(max),
            ms(percentile(&delays, 50.0)),
            ms(poll)
        ),
        format!("{} lease revoked directly", ms(percentile(&direct, 50.0))),
        "≤ 500 ms".into(),
        Some(max <= Duration::from_millis(500)),
    )]
}

/// `docker run --rm` with a vault-secrets volume against one with a local volume: pairs in
/// alternating order (ABBA), the median of the per-pair ratios.
pub(crate) fn docker_run(b: &Bench) -> Vec<Row> {
    const PAIRS: usize = 31;
    b.bao.put_kv2("bench", json!({"password": "bench-secret", "user": "app"}));
    let secrets = b.docker_volume("bench-run", Some(DRIVER), &["path=secret/data/bench"]);
    let local = b.docker_volume("bench-local", None, &[]);
    let run = |vol: &str| {
        let mount = format!("{vol}:/run/secrets:ro");
        let t = Instant::now();
        docker_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &mount,
            &image(),
            "ls",
            "/run/secrets",
        ]);
        t.elapsed()
    };
    run(&secrets);
    run(&local);
    let (mut with, mut without, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let end = Instant::now() + Duration::from_secs(90);
    for i in 0..PAIRS {
        if Instant::now() > end {
            break;
        }
        let (s, l) = if i % 2 == 0 {
            let s = run(&secrets);
            (s, run(&local))
        } else {
            let l = run(&local);
            (run(&secrets), l)
        };
        with.push(s);
        without.push(l);
        ratios.push(s.as_secs_f64() / l.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    // Rounded as shown: the target has two decimals, the noise here is larger than the third.
    let median = (ratios[(ratios.len() - 1) / 2] * 1000.0).round() / 1000.0;
    vec![Row::new(
        &format!("docker run --rm, median of {} pairs", ratios.len()),
        format!("{} vault-secrets volume", ms(percentile(&with, 50.0))),
        format!("{} local volume", ms(percentile(&without, 50.0))),
        format!("≤ 1.05×: {median:.3}×"),
        Some(median <= 1.05),
    )]
}
