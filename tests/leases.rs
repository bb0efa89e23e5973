//! Leased secrets end to end, with the real Docker engine: database credentials renewed and
//! replaced while a container runs, KV refresh, an OpenBao outage, a plugin crash, PKI
//! certificates, `status` and `rotate`, and the signal sent when files change.
//!
//! Every check reads the files inside the container (`docker exec`) and, for database
//! credentials, logs in to PostgreSQL with them from the host. No secret value is printed:
//! usernames are, passwords never.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::docker::{docker, docker_ok, image, E2e};
use crate::util::vault::*;
use crate::util::*;

/// `docker run -d --network none` with each `(volume, target)` mounted read-only and `cmd`.
/// The container is named up front, so that `t` removes it when dropped even if `docker run`
/// created it and then failed (at the volume's mount).
fn run(t: &mut E2e, volumes: &[(&str, &str)], cmd: &[&str]) -> String {
    let name = unique("leases");
    t.containers.push(name.clone());
    let mounts: Vec<String> = volumes.iter().map(|(v, at)| format!("{v}:{at}:ro")).collect();
    let mut args = vec!["run", "-d", "--name", &name, "--network", "none"];
    for m in &mounts {
        args.extend(["-v", m.as_str()]);
    }
    let image = image();
    args.push(&image);
    args.extend(cmd);
    docker_ok(&args);
    name
}

/// A container that sleeps, with `volume` at /run/secrets.
fn run_sleeping(t: &mut E2e, volume: &str) -> String {
    run(t, &[(volume, "/run/secrets")], &["sleep", "600"])
}

/// The contents of `path` in container `c`.
fn cat(c: &str, path: &str) -> String {
    docker_ok(&["exec", c, "cat", path])
}

/// `username` and `password` from `dir` in container `c`, read in one `docker exec`.
fn read_creds(c: &str, dir: &str) -> Creds {
    let script = format!("cat {dir}/username && echo && cat {dir}/password");
    let out = docker(&["exec", c, "sh", "-c", &script]);
    assert!(
        out.status.success(),
        "reading {dir}/username and {dir}/password failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 credentials");
    let (user, password) = text.split_once('\n').expect("two files");
    Creds { user: user.to_owned(), password: password.to_owned() }
}

/// Reads the container's credentials and logs in with them. A failed login counts only if the
/// files did not change in between: then they are read again and the login retried once.
fn current_creds_work(c: &str, dir: &str) -> Result<Creds, String> {
    let first = read_creds(c, dir);
    let Err(e) = pg_login(&first) else { return Ok(first) };
    let again = read_creds(c, dir);
    if again == first {
        return Err(format!("{} (unchanged files) cannot log in: {e}", first.user));
    }
    pg_login(&again).map(|()| again.clone()).map_err(|e2| {
        format!("{} cannot log in ({e}); nor can {}, read again: {e2}", first.user, again.user)
    })
}

/// Runs `docker stop` and returns how long after it returned the database user was gone.
fn stop_and_time_the_drop(c: &str, user: &str) -> Duration {
    docker_ok(&["stop", "-t", "1", c]);
    let stopped = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || !pg_role_exists(user)),
        "{user} still exists 5 s after `docker stop`"
    );
    stopped.elapsed()
}

/// The E2e fixture with its plugin replaced by one against `bao` (same driver and socket).
fn e2e_against(bao: &Bao) -> E2e {
    let mut t = E2e::start();
    t.plugin.stop(true);
    let socket = t.plugin.socket.clone();
    t.plugin = Plugin::start(Some(&socket), &bao.address(), &bao.token, "");
    t
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[test]
fn database_credentials_roll_over_for_30s_on_every_engine() {
    let mut t = E2e::start();
    t.bao.database_role("roll", "4s", "12s");
    // The mount's child token lives 10 s unless the plugin keeps it alive; with it would go
    // every lease it made. (A fresh generation brings a new token; the old one is revoked.)
    let vol = t.volume("roll", &["path=database/creds/roll", "ttl=10s"]);
    let before: HashSet<String> = t.bao.accessors().into_iter().collect();
    let c = run_sleeping(&mut t, &vol);
    let tokens = || t.bao.accessors().iter().filter(|a| !before.contains(*a)).count();
    assert_eq!(tokens(), 1, "one child token for the mount");
    let start = Instant::now();
    let mut users: Vec<String> = Vec::new();
    let mut replaced: Vec<(String, Instant)> = Vec::new(); // not yet dropped
    let mut drop_delays: Vec<Duration> = Vec::new();
    let mut checks = 0;
    while start.elapsed() < Duration::from_secs(30) {
        let tick = Instant::now();
        let creds = current_creds_work(&c, "/run/secrets").unwrap_or_else(|e| {
            panic!("at {}: the container's credentials do not work: {e}", secs(start.elapsed()))
        });
        checks += 1;
        if users.last() != Some(&creds.user) {
            eprintln!("{:>8}: username {}", secs(start.elapsed()), creds.user);
            if let Some(old) = users.last() {
                replaced.push((old.clone(), Instant::now()));
            }
            assert!(!users.contains(&creds.user), "{} came back", creds.user);
            users.push(creds.user);
        }
        replaced.retain(|(user, since)| {
            if pg_role_exists(user) {
                assert!(
                    since.elapsed() < Duration::from_secs(5),
                    "{user} still exists {} after it was replaced",
                    secs(since.elapsed())
                );
                return true;
            }
            drop_delays.push(since.elapsed());
            false
        });
        let n = tokens();
        assert!(
            (1..=2).contains(&n),
            "at {}: {n} tokens for the mount (one, or two while the old one is in its grace)",
            secs(start.elapsed())
        );
        std::thread::sleep(
            (tick + Duration::from_millis(500)).saturating_duration_since(Instant::now()),
        );
    }
    for (user, since) in replaced {
        let left = Duration::from_secs(5).saturating_sub(since.elapsed());
        assert!(
            wait_until(left, || !pg_role_exists(&user)),
            "{user} not dropped 5 s after it was replaced"
        );
        drop_delays.push(since.elapsed());
    }
    eprintln!(
        "{checks} checks in 30 s, all logged in; {} usernames; replaced users dropped within {:?} ms of the switch being seen",
        users.len(),
        drop_delays.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    assert!(users.len() >= 3, "only {} usernames in 30 s: {users:?}", users.len());
    let last = users.last().unwrap();
    let delay = stop_and_time_the_drop(&c, last);
    eprintln!("last user {last} dropped {} ms after `docker stop` returned", delay.as_millis());
    assert!(delay <= Duration::from_millis(500), "dropped {} after `docker stop`", secs(delay));
}

#[test]
fn kv_change_is_visible_within_refresh_plus_one_second_on_every_engine() {
    let mut t = E2e::start();
    t.bao.put_kv2("refresh", json!({"value": "v0"}));
    let vol = t.volume("refresh", &["path=secret/data/refresh", "refresh=2s"]);
    let c = run_sleeping(&mut t, &vol);
    assert_eq!(cat(&c, "/run/secrets/value"), "v0");
    // Unchanged secrets are not rewritten: the file stays the same one across two refreshes.
    let stat = || docker_ok(&["exec", &c, "stat", "-c", "%i %y", "/run/secrets/value"]);
    let first = stat();
    let quiet = Instant::now() + Duration::from_millis(4500);
    while Instant::now() < quiet {
        assert_eq!(stat(), first, "the file was rewritten though the secret did not change");
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut delays = Vec::new();
    for i in 1..=3 {
        let value = format!("v{i}");
        t.bao.put_kv2("refresh", json!({ "value": value }));
        let changed = Instant::now();
        let seen = wait_until(Duration::from_secs(6), || cat(&c, "/run/secrets/value") == value);
        assert!(seen, "{value} not visible 6 s after the change");
        delays.push(changed.elapsed());
    }
    eprintln!(
        "KV change visible in the container after {:?} ms (refresh=2s)",
        delays.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    for d in &delays {
        assert!(
            *d <= Duration::from_secs(3),
            "visible after {}, more than refresh + 1 s",
            secs(*d)
        );
    }
}

#[test]
fn openbao_outage_keeps_files_and_recovers_on_every_engine() {
    let mut bao = BaoServer::start();
    bao.database_role("outage", "4s", "60s");
    bao.put_kv2("outage", json!({"value": "before"}));
    let mut t = e2e_against(&bao);
    let db = t.volume("outage-db", &["path=database/creds/outage"]);
    let kv = t.volume("outage-kv", &["path=secret/data/outage", "refresh=1s"]);
    let c = run(&mut t, &[(&db, "/run/db"), (&kv, "/run/kv")], &["sleep", "600"]);
    let user = current_creds_work(&c, "/run/db").expect("credentials work before the outage").user;
    let last_errors = |s: &Value| {
        [&db, &kv].map(|v| {
            let mounts = status_mounts(s, v);
            assert_eq!(mounts.len(), 1, "one mount of {v} in {s}");
            mounts[0]["last_error"].as_str().map(str::to_owned)
        })
    };
    assert_eq!(last_errors(&status(&t.plugin)), [None, None], "no error before the outage");

    bao.stop();
    let down = Instant::now();
    let mut errors_seen = [None, None];
    let mut reads = 0;
    while down.elapsed() < Duration::from_secs(8) {
        assert_eq!(cat(&c, "/run/kv/value"), "before", "KV file during the outage");
        assert!(
            !read_creds(&c, "/run/db").user.is_empty(),
            "database files stay during the outage"
        );
        reads += 1;
        for (seen, e) in errors_seen.iter_mut().zip(last_errors(&status(&t.plugin))) {
            if let (None, Some(e)) = (&seen, e) {
                *seen = Some((down.elapsed(), e));
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for (v, seen) in [&db, &kv].iter().zip(&errors_seen) {
        let (after, e) =
            seen.as_ref().unwrap_or_else(|| panic!("no last_error for {v} in 8 s of outage"));
        eprintln!("{v}: last_error after {}: {e}", secs(*after));
    }
    eprintln!("files read {reads} times during the 8 s outage, unchanged");

    bao.restart();
    let up = Instant::now();
    let mut recovered = None;
    // After 8 s of failures the backoff is at its 4–8 s step: recovery comes within one step.
    let ok = wait_until(Duration::from_secs(20), || {
        if recovered.is_none() && current_creds_work(&c, "/run/db").is_ok() {
            recovered = Some(up.elapsed());
        }
        recovered.is_some() && last_errors(&status(&t.plugin)) == [None, None]
    });
    let now = current_creds_work(&c, "/run/db");
    assert!(
        ok,
        "20 s after OpenBao came back: credentials {now:?}, last errors {:?}",
        last_errors(&status(&t.plugin))
    );
    let new_user = now.unwrap().user;
    eprintln!(
        "working credentials {} after OpenBao came back (user {user} → {new_user}); errors cleared after {}",
        secs(recovered.unwrap()),
        secs(up.elapsed())
    );
    // Refresh works again too, in the same container.
    bao.put_kv2("outage", json!({"value": "after"}));
    assert!(
        wait_until(Duration::from_secs(5), || cat(&c, "/run/kv/value") == "after"),
        "a KV change after the outage is not visible"
    );
    let delay = stop_and_time_the_drop(&c, &new_user);
    eprintln!("user {new_user} dropped {} ms after `docker stop`", delay.as_millis());
    drop(t);
}

#[test]
fn plugin_sigkill_keeps_leases_alive_on_every_engine() {
    let mut t = E2e::start();
    t.bao.database_role("crash", "4s", "30s");
    let vol = t.volume("crash", &["path=database/creds/crash"]);
    let c = run_sleeping(&mut t, &vol);
    let first = current_creds_work(&c, "/run/secrets").expect("credentials work").user;
    t.plugin.stop(true);
    t.plugin.restart();
    let restarted = Instant::now();
    let mut users = vec![first];
    while restarted.elapsed() < Duration::from_secs(10) {
        let tick = Instant::now();
        let creds = current_creds_work(&c, "/run/secrets").unwrap_or_else(|e| {
            panic!("{} after the plugin restart: {e}", secs(restarted.elapsed()))
        });
        if users.last() != Some(&creds.user) {
            eprintln!(
                "{:>8} after the restart: username {}",
                secs(restarted.elapsed()),
                creds.user
            );
            users.push(creds.user);
        }
        std::thread::sleep(
            (tick + Duration::from_millis(500)).saturating_duration_since(Instant::now()),
        );
    }
    eprintln!("credentials worked for 10 s after SIGKILL and restart; usernames {users:?}");
    let last = users.last().unwrap();
    let delay = stop_and_time_the_drop(&c, last);
    eprintln!("user {last} dropped {} ms after `docker stop`", delay.as_millis());
    for user in &users {
        assert!(
            wait_until(Duration::from_secs(5), || !pg_role_exists(user)),
            "{user} outlived its container"
        );
    }
}

/// Writes `contents` to `dir/name` (mode 0600) and returns the path.
fn write_file(dir: &Path, name: &str, contents: &str) -> String {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    path.display().to_string()
}

fn openssl(args: &[&str]) -> String {
    let out =
        std::process::Command::new("openssl").args(args).output().expect("openssl CLI on PATH");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn pki_certificate_verifies_against_its_ca_on_every_engine() {
    let mut t = E2e::start();
    t.bao.api(
        "POST",
        "sys/mounts/pki",
        Some(json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}})),
    );
    t.bao.api(
        "POST",
        "pki/root/generate/internal",
        Some(json!({"common_name": "test-root", "ttl": "87600h"})),
    );
    t.bao.api(
        "POST",
        "pki/roles/web",
        Some(json!({"allowed_domains": "internal", "allow_subdomains": true, "max_ttl": "1h"})),
    );
    let vol =
        t.volume("pki", &["path=pki/issue/web", "param.common_name=web.internal", "param.ttl=10m"]);
    let c = run_sleeping(&mut t, &vol);
    let names = docker_ok(&["exec", &c, "ls", "/run/secrets"]);
    let names: Vec<&str> = names.lines().collect();
    for f in ["certificate", "private_key", "issuing_ca", "ca_chain", "serial_number", "expiration"]
    {
        assert!(names.contains(&f), "{f} missing: {names:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> = ["certificate", "issuing_ca", "ca_chain", "private_key"]
        .iter()
        .map(|f| write_file(dir.path(), f, &cat(&c, &format!("/run/secrets/{f}"))))
        .collect();
    let [cert, ca, chain, key] = &files[..] else { unreachable!() };
    let chain_text = std::fs::read_to_string(chain).unwrap();
    assert!(
        chain_text.starts_with("-----BEGIN CERTIFICATE-----"),
        "ca_chain is not PEM: {}",
        &chain_text[..chain_text.len().min(60)]
    );
    assert_eq!(openssl(&["verify", "-CAfile", ca, cert]), format!("{cert}: OK"));
    assert_eq!(
        openssl(&["verify", "-CAfile", chain, cert]),
        format!("{cert}: OK"),
        "ca_chain as CA file"
    );
    let subject = openssl(&["x509", "-in", cert, "-noout", "-subject"]);
    assert!(subject.contains("web.internal"), "{subject}");
    // The private key is the certificate's.
    assert_eq!(
        openssl(&["x509", "-in", cert, "-noout", "-pubkey"]),
        openssl(&["pkey", "-in", key, "-pubout"]),
        "private_key does not match certificate"
    );
    let serial = cat(&c, "/run/secrets/serial_number");
    let from_cert = openssl(&["x509", "-in", cert, "-noout", "-serial"]);
    assert_eq!(
        from_cert.trim_start_matches("serial=").to_ascii_lowercase(),
        serial.replace(':', "").to_ascii_lowercase(),
        "serial_number"
    );
    eprintln!("certificate {subject}, serial {serial}, verified against issuing_ca and ca_chain");
    // The role issues without a lease: revoking the mount's token would leave the certificate
    // valid. It is revoked by its serial when the container stops.
    let revoked = || {
        let v = t.bao.api("GET", &format!("pki/cert/{serial}"), None);
        v["data"]["revocation_time"].as_u64().unwrap_or(0) > 0
    };
    assert!(!revoked(), "valid while the container runs");
    let stopped = std::time::Instant::now();
    docker_ok(&["stop", "-t", "1", &c]);
    assert!(wait_until(Duration::from_secs(10), revoked), "not revoked after docker stop");
    eprintln!("certificate revoked {:?} after docker stop began", stopped.elapsed());
}

#[test]
fn status_and_rotate_on_every_engine() {
    let mut t = E2e::start();
    t.bao.database_role("rot", "5m", "1h");
    let vol = t.volume("rot", &["path=database/creds/rot"]);
    let c = run_sleeping(&mut t, &vol);
    let first = current_creds_work(&c, "/run/secrets").expect("credentials work").user;

    let s = status(&t.plugin);
    let mounts = status_mounts(&s, &vol);
    assert_eq!(mounts.len(), 1, "one mount of {vol}: {s}");
    let m = &mounts[0];
    assert_eq!(m["refs"], 1, "{m}");
    assert!(Path::new(m["mountpoint"].as_str().expect("mountpoint")).is_dir(), "{m}");
    let accessor = m["accessor"].as_str().expect("accessor");
    assert!(t.bao.accessors().iter().any(|a| a == accessor), "the accessor is a live token's: {m}");
    assert!(m["token_expires_in_secs"].as_u64().is_some_and(|s| s > 0), "{m}");
    let leases = m["leases"].as_array().expect("leases");
    assert_eq!(leases.len(), 1, "{m}");
    let lease = &leases[0];
    assert_eq!(lease["source"], "database/creds/rot", "{lease}");
    let lease_id = lease["lease_id"].as_str().expect("lease_id").to_owned();
    assert!(lease_id.starts_with("database/creds/rot/"), "{lease}");
    assert!(lease["expires_in_secs"].as_u64().is_some_and(|s| s > 0 && s <= 300), "{lease}");
    assert_eq!(lease["renewable"], true, "{lease}");
    assert!(m["last_error"].is_null(), "{m}");
    eprintln!("status --json: {s}");

    let out = plugin_cli(&t.plugin.config, &["status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains(&vol), "status names the volume:\n{table}");
    eprintln!("status:\n{table}");

    let out = plugin_cli(&t.plugin.config, &["rotate", &vol]);
    let rotated = Instant::now();
    assert!(out.status.success(), "rotate {vol}: {}", String::from_utf8_lossy(&out.stderr));
    let changed =
        wait_until(Duration::from_secs(2), || read_creds(&c, "/run/secrets").user != first);
    assert!(changed, "username still {first} 2 s after rotate");
    let seen = rotated.elapsed();
    let second = current_creds_work(&c, "/run/secrets").expect("rotated credentials work").user;
    // The old generation is revoked after a grace of a few seconds.
    assert!(
        wait_until(Duration::from_secs(10), || !pg_role_exists(&first)),
        "{first} not dropped 10 s after rotate"
    );
    eprintln!(
        "rotate: new user {second} in the container after {}, {first} dropped after {}",
        secs(seen),
        secs(rotated.elapsed())
    );
    let s = status(&t.plugin);
    let m = &status_mounts(&s, &vol)[0];
    assert_ne!(m["leases"][0]["lease_id"], lease_id.as_str(), "status shows the new lease: {m}");
    assert!(m["last_refresh"].is_string(), "{m}");

    let out = plugin_cli(&t.plugin.config, &["rotate", "no-such-volume"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no-such-volume"), "{}: {stderr}", out.status);
    let delay = stop_and_time_the_drop(&c, &second);
    eprintln!("user {second} dropped {} ms after `docker stop`", delay.as_millis());
}

#[test]
fn signal_on_change_on_every_engine() {
    let mut t = E2e::start();
    t.bao.put_kv2("signal", json!({"value": "v1"}));
    let vol = t.volume("signal", &["path=secret/data/signal", "refresh=1s", "signal=SIGHUP"]);
    // The trap records the value the container sees when the signal arrives.
    let script =
        "trap 'cat /run/secrets/value >> /tmp/hup; echo >> /tmp/hup' HUP; while true; do sleep 0.2; done";
    let c = run(&mut t, &[(&vol, "/run/secrets")], &["sh", "-c", script]);
    let hup = || docker(&["exec", &c, "test", "-e", "/tmp/hup"]).status.success();
    // Nothing changes for two refreshes: no signal.
    let quiet = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < quiet {
        assert!(!hup(), "signalled though nothing changed");
        std::thread::sleep(Duration::from_millis(250));
    }
    t.bao.put_kv2("signal", json!({"value": "v2"}));
    let changed = Instant::now();
    assert!(wait_until(Duration::from_secs(3), hup), "no SIGHUP within 3 s of the change");
    let delay = changed.elapsed();
    eprintln!("SIGHUP received {} ms after the change (refresh=1s)", delay.as_millis());
    assert!(
        wait_until(Duration::from_secs(1), || cat(&c, "/tmp/hup") == "v2"),
        "the files had not changed when the signal came"
    );
    // No further signal while nothing changes.
    let quiet = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < quiet {
        assert_eq!(cat(&c, "/tmp/hup"), "v2", "one signal for one change");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The serial number and `expiration` of the certificate in `dir`, with the certificate
/// verified against `issuing_ca` (copied out first: the files can be swapped meanwhile).
fn verified_certificate(dir: &Path) -> (String, u64) {
    let copy = tempfile::tempdir().unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let cert = write_file(copy.path(), "certificate", &read("certificate"));
    let ca = write_file(copy.path(), "issuing_ca", &read("issuing_ca"));
    assert_eq!(openssl(&["verify", "-CAfile", &ca, &cert]), format!("{cert}: OK"));
    let serial = openssl(&["x509", "-in", &cert, "-noout", "-serial"]);
    let end = openssl(&["x509", "-in", &cert, "-noout", "-enddate"]);
    let expiration: u64 = read("expiration").trim().parse().expect("expiration in seconds");
    eprintln!("certificate {serial}, {end}");
    (serial.trim_start_matches("serial=").to_owned(), expiration)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A certificate without a lease (20 s role TTL), through the plugin protocol (no Docker):
/// replaced ahead of its `expiration` each time, each replacement verifying against the CA;
/// never merely on `refresh`.
#[test]
fn pki_certificates_are_replaced_ahead_of_their_expiry() {
    let bao = Bao::start();
    pki_role(&bao, "short", "20s");
    let mut plugin = Plugin::start(None, &bao.address(), &bao.token, "");
    // No container holds this protocol-made mount: with a Docker engine to ask, the sweep of
    // mounts whose containers are gone would release it after 60 s, in the middle of the test.
    plugin.env.push(("DOCKER_HOST".into(), "unix:///nonexistent/docker.sock".into()));
    plugin.stop(false);
    plugin.restart();
    let vol = unique("pki-short");
    let opts =
        json!({"path": "pki/issue/short", "param.common_name": "web.internal", "refresh": "3s"});
    plugin.create(&vol, opts);
    let id = mount_id();
    let dir = plugin.mount(&vol, &id);
    let (mut serial, mut expiration) = verified_certificate(&dir);
    let s = status(&plugin);
    let expiring = &status_mounts(&s, &vol)[0]["expiring"][0];
    assert_eq!(expiring["state"], "replace", "{s}");
    assert_eq!(expiring["expiration"], expiration, "{s}");
    let started = Instant::now();
    let mut margins = Vec::new();
    while started.elapsed() < Duration::from_secs(65) {
        let replaced = wait_until(Duration::from_secs(25), || {
            std::fs::read_to_string(dir.join("serial_number"))
                .is_ok_and(|s| !s.is_empty() && !s.replace(':', "").eq_ignore_ascii_case(&serial))
        });
        let at = unix_now();
        assert!(replaced, "no replacement within 25 s of the last:\n{}", plugin.log());
        let margin = expiration as i64 - at as i64;
        eprintln!("replaced {margin} s before the previous certificate's expiration");
        assert!(margin >= 2, "replaced only {margin} s before expiry");
        margins.push(margin);
        (serial, expiration) = verified_certificate(&dir);
    }
    eprintln!("replacement margins (s before expiration): {margins:?}");
    assert!(margins.len() >= 3, "{margins:?}");
    // About two thirds of 20 s: never as often as `refresh` (3 s).
    assert!(margins.len() <= 6, "replaced more often than its validity asks: {margins:?}");
    plugin.unmount(&vol, &id);
    assert!(plugin.mounts_left().is_empty());
}

/// A 30-day certificate with `refresh=2s` keeps its serial: no re-issue on refresh.
#[test]
fn a_long_certificate_keeps_its_serial_across_refreshes() {
    let bao = Bao::start();
    pki_role(&bao, "long", "720h");
    let plugin = Plugin::start(None, &bao.address(), &bao.token, "");
    let vol = unique("pki-long");
    let opts =
        json!({"path": "pki/issue/long", "param.common_name": "web.internal", "refresh": "2s"});
    plugin.create(&vol, opts);
    let certs =
        || bao.api("LIST", "pki/certs", None)["data"]["keys"].as_array().map_or(0, Vec::len);
    let before = certs();
    let id = mount_id();
    let dir = plugin.mount(&vol, &id);
    let (serial, expiration) = verified_certificate(&dir);
    assert!(expiration > unix_now() + 29 * 24 * 3600, "a 30-day certificate");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(9) {
        std::thread::sleep(Duration::from_secs(1));
        let now = std::fs::read_to_string(dir.join("serial_number")).unwrap();
        assert_eq!(
            now.replace(':', "").to_ascii_lowercase(),
            serial.to_ascii_lowercase(),
            "re-issued"
        );
    }
    let s = status(&plugin);
    let m = &status_mounts(&s, &vol)[0];
    assert!(
        m["expiring"][0]["replace_in_secs"].as_u64().is_some_and(|r| r > 16 * 24 * 3600),
        "{m}"
    );
    assert_eq!(certs() - before, 1, "one certificate issued in all");
    plugin.unmount(&vol, &id);
}
