//! The plugin against a real OpenBao: mounts, files, tokens, errors, restarts.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::util::*;

struct Setup {
    bao: Bao,
    plugin: Plugin,
}

fn setup() -> Setup {
    setup_with("")
}

fn setup_with(extra: &str) -> Setup {
    let bao = Bao::start();
    let plugin = Plugin::start(None, &bao.address(), &bao.token, extra);
    Setup { bao, plugin }
}

#[test]
fn kv2_mount_is_a_private_tmpfs_with_owned_files_and_its_own_token() {
    let Setup { bao, plugin } = setup();
    bao.put_kv2("app", json!({"password": "s3cr3t", "user": "app", "port": 5432}));
    plugin.create("app", json!({"path": "secret/data/app", "uid": "1000", "gid": "1001", "mode": "0440", "size": "64k"}));
    let before = bao.accessors();
    let id = mount_id();
    let mp = plugin.mount("app", &id);
    assert_eq!(std::fs::read_to_string(mp.join("password")).unwrap(), "s3cr3t");
    assert_eq!(std::fs::read_to_string(mp.join("port")).unwrap(), "5432");
    let meta = std::fs::metadata(mp.join("user")).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (1000, 1001, 0o440));
    let root = std::fs::metadata(&mp).unwrap();
    assert_eq!((root.uid(), root.mode() & 0o777), (1000, 0o550));
    let opts = mount_options(&mp).expect("a mount");
    for o in ["nosuid", "nodev", "noexec", "tmpfs", "size=64k", "noswap"] {
        assert!(opts.contains(o), "{o} missing in {opts}");
    }
    let after = bao.accessors();
    assert_eq!(after.len(), before.len() + 1, "one child token for the mount");
    plugin.unmount("app", &id);
    assert!(mount_options(&mp).is_none(), "tmpfs gone");
    assert!(!mp.exists(), "directory gone");
    assert_eq!(bao.accessors().len(), before.len(), "the mount's token is revoked");
}

#[test]
fn kv1_formats_fields_and_named_sources() {
    let Setup { bao, plugin } = setup();
    bao.api("POST", "sys/mounts/kv", Some(json!({"type": "kv", "options": {"version": "1"}})));
    bao.api("POST", "kv/db", Some(json!({"username": "u", "password": "it's"})));
    bao.put_kv2("tls", json!({"cert": "CERT"}));
    plugin.create("env", json!({"path": "kv/db", "format": "env"}));
    plugin.create("json", json!({"path": "kv/db", "format": "json", "file": "db.json"}));
    plugin.create("field", json!({"path": "kv/db", "field": "password", "file": "pw"}));
    plugin.create("multi", json!({"path": "kv/db", "path.tls": "secret/data/tls"}));
    let id = mount_id();
    let env = plugin.mount("env", &id);
    assert_eq!(
        std::fs::read_to_string(env.join("secrets.env")).unwrap(),
        "password='it'\\''s'\nusername='u'\n"
    );
    let js = plugin.mount("json", &id);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(js.join("db.json")).unwrap()).unwrap();
    assert_eq!(v, json!({"username": "u", "password": "it's"}));
    let field = plugin.mount("field", &id);
    let names: Vec<_> =
        std::fs::read_dir(&field).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["pw"]);
    let multi = plugin.mount("multi", &id);
    assert_eq!(std::fs::read_to_string(multi.join("tls/cert")).unwrap(), "CERT");
    assert_eq!(std::fs::read_to_string(multi.join("username")).unwrap(), "u");
    for name in ["env", "json", "field", "multi"] {
        plugin.unmount(name, &id);
    }
    assert!(plugin.mounts_left().is_empty());
}

#[test]
fn errors_name_the_cause_and_leave_nothing_behind() {
    let Setup { bao, plugin } = setup();
    bao.put_kv2("other", json!({"a": "b"}));
    bao.put_kv2("badkey", json!({"../../etc/passwd": "x"}));
    bao.policy("only-app", r#"path "secret/data/app" { capabilities = ["read"] }"#);
    plugin.create("denied", json!({"path": "secret/data/other", "policies": "only-app"}));
    plugin.create("missing", json!({"path": "secret/data/nothing-here"}));
    plugin.create("badkey", json!({"path": "secret/data/badkey"}));
    plugin.create("nopolicy", json!({"path": "secret/data/other", "policies": "no-such-policy"}));
    let before = bao.accessors();
    let id = mount_id();
    let mount_err = |name: &str| plugin.err("/VolumeDriver.Mount", json!({"Name": name, "ID": id}));
    let e = mount_err("denied");
    assert!(e.contains("permission denied on secret/data/other"), "{e}");
    let e = mount_err("missing");
    assert!(e.contains("no secret at secret/data/nothing-here"), "{e}");
    let e = mount_err("badkey");
    assert!(e.contains("\"../../etc/passwd\"") && e.contains("cannot be a file name"), "{e}");
    assert!(!Path::new("/etc/passwd.tmp").exists());
    assert!(plugin.mounts_left().is_empty(), "no stray mount");
    assert_eq!(bao.accessors(), before, "every token made was revoked");
    let e = plugin.err(
        "/VolumeDriver.Create",
        json!({"Name": "x", "Opts": {"path": "secret/data/a", "mode": "0999"}}),
    );
    assert!(e.contains("option `mode`") && e.contains("0400"), "{e}");
    let e = plugin.err(
        "/VolumeDriver.Create",
        json!({"Name": "x", "Opts": {"path": "secret/data/a", "format": "yaml"}}),
    );
    assert!(e.contains("`format`") && e.contains("files, json, env"), "{e}");
    let e = plugin.err("/VolumeDriver.Mount", json!({"Name": "ghost", "ID": id}));
    assert!(e.contains("no such volume: ghost"), "{e}");
}

#[test]
fn vault_unreachable_is_named_with_its_address_and_get_still_works() {
    let bao = Bao::start();
    let plugin = Plugin::start(None, &bao.address(), &bao.token, "");
    plugin.create("app", json!({"path": "secret/data/app"}));
    let port = bao.port;
    drop(bao);
    let e = plugin.err("/VolumeDriver.Mount", json!({"Name": "app", "ID": mount_id()}));
    assert!(e.contains(&format!("vault at http://127.0.0.1:{port} is unreachable")), "{e}");
    plugin.ok("/VolumeDriver.Get", json!({"Name": "app"}));
    let v = plugin.ok("/VolumeDriver.List", json!({}));
    assert_eq!(v["Volumes"][0]["Name"], "app");
    assert!(plugin.mounts_left().is_empty());
}

#[test]
fn a_killed_and_restarted_plugin_keeps_files_and_still_revokes() {
    let Setup { bao, mut plugin } = setup();
    bao.put_kv2("app", json!({"password": "p1"}));
    plugin.create("app", json!({"path": "secret/data/app"}));
    let before = bao.accessors();
    let id = mount_id();
    let mp = plugin.mount("app", &id);
    plugin.mount("app", &id); // two references
    plugin.stop(true);
    assert_eq!(
        std::fs::read_to_string(mp.join("password")).unwrap(),
        "p1",
        "files survive the crash"
    );
    plugin.restart();
    let v = plugin.ok("/VolumeDriver.Get", json!({"Name": "app"}));
    assert_eq!(v["Volume"]["Status"]["active_mounts"], 1, "the mount is restored: {v}");
    // Get and Path never show a mount's path: each is one container's, and they name none.
    assert!(v["Volume"]["Mountpoint"].as_str().unwrap_or("").is_empty(), "{v}");
    let v = plugin.ok("/VolumeDriver.Path", json!({"Name": "app"}));
    assert_eq!(v["Mountpoint"], "", "{v}");
    plugin.unmount("app", &id);
    assert!(mount_options(&mp).is_some(), "one reference left");
    plugin.stop(false);
    plugin.restart();
    plugin.unmount("app", &id);
    assert!(mount_options(&mp).is_none());
    assert_eq!(bao.accessors(), before, "the token made before the restarts is revoked");
    // The token file is not needed any more after the first start: the identity is kept in the
    // private tmpfs (a restart does not log in anew).
    assert!(plugin.log().contains("carrying on with the identity token"));
}

#[test]
fn mounts_left_by_a_crash_are_revoked_when_their_tmpfs_is_gone() {
    let Setup { bao, mut plugin } = setup();
    bao.put_kv2("app", json!({"password": "p1"}));
    plugin.create("app", json!({"path": "secret/data/app"}));
    let before = bao.accessors();
    let id = mount_id();
    let mp = plugin.mount("app", &id);
    plugin.stop(true);
    // The read-only bind and the tmpfs behind it (a bind alone is made again at restore).
    let files = plugin.runtime.join("files/app").join(&id);
    for m in [&mp, &files] {
        assert!(std::process::Command::new("umount").arg(m).status().unwrap().success());
    }
    plugin.restart();
    assert!(
        wait_until(Duration::from_secs(5), || bao.accessors() == before),
        "the orphaned token is revoked"
    );
    assert!(!mp.exists());
}

#[test]
fn approle_with_a_wrapped_secret_id_is_unwrapped_once_and_survives_restart() {
    let bao = Bao::start();
    bao.api("POST", "sys/auth/approle", Some(json!({"type": "approle"})));
    bao.policy("plugin", "path \"secret/data/*\" { capabilities = [\"read\"] }\npath \"auth/token/create\" { capabilities = [\"update\"] }");
    bao.api(
        "POST",
        "auth/approle/role/plugin",
        Some(json!({"token_policies": "plugin", "token_period": "1h"})),
    );
    let role_id = bao.api("GET", "auth/approle/role/plugin/role-id", None)["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A wrapped secret_id, as an operator makes it with `-wrap-ttl`.
    let wrap = reqwest::blocking::Client::new()
        .post(format!("{}/v1/auth/approle/role/plugin/secret-id", bao.address()))
        .header("X-Vault-Token", &bao.token)
        .header("X-Vault-Wrap-TTL", "120s")
        .send()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    let wrapping_token = wrap["wrap_info"]["token"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("role-id"), &role_id).unwrap();
    std::fs::write(dir.path().join("secret-id"), &wrapping_token).unwrap();
    let auth = format!(
        "[vault.auth]\nmethod = \"approle\"\nrole_id_file = \"{0}/role-id\"\nsecret_id_file = \"{0}/secret-id\"\nsecret_id_wrapped = true\n",
        dir.path().display()
    );
    let mut plugin = Plugin::start(None, &bao.address(), "unused", &auth);
    assert!(
        wait_until(Duration::from_secs(10), || plugin.log().contains("logged in to vault")),
        "{}",
        plugin.log()
    );
    assert!(!dir.path().join("secret-id").exists(), "the used wrapping token's file is deleted");
    bao.put_kv2("app", json!({"password": "via-approle"}));
    plugin.create("app", json!({"path": "secret/data/app"}));
    let id = mount_id();
    let mp = plugin.mount("app", &id);
    assert_eq!(std::fs::read_to_string(mp.join("password")).unwrap(), "via-approle");
    plugin.stop(false);
    plugin.restart();
    assert!(wait_until(Duration::from_secs(10), || plugin
        .log()
        .matches("logged in to vault")
        .count()
        == 2));
    let id2 = mount_id();
    plugin.mount("app", &id2);
    plugin.unmount("app", &id);
    plugin.unmount("app", &id2);
    // A used wrapping token is refused with a message that says it may have been intercepted.
    std::fs::write(dir.path().join("secret-id"), &wrapping_token).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(dir.path().join("none.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let cfg = dir.path().join("check.toml");
    std::fs::write(&cfg, format!("[plugin]\nruntime_dir = \"/run/vst-check-none\"\nstate_dir = \"{}/st\"\n[vault]\naddress = \"{}\"\n{auth}", dir.path().display(), bao.address())).unwrap();
    let out =
        std::process::Command::new(BIN).args(["check", "--config"]).arg(&cfg).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("used, expired or unknown"), "{stderr}");
    assert!(!stderr.contains(&wrapping_token), "no token in the error");
}

#[test]
fn check_reports_a_working_setup_and_a_bad_one() {
    let bao = Bao::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), &bao.token).unwrap();
    let cfg = dir.path().join("c.toml");
    let write = |addr: &str| {
        std::fs::write(&cfg, format!("[plugin]\nruntime_dir = \"{0}/rt\"\nstate_dir = \"{0}/st\"\n[vault]\naddress = \"{addr}\"\n[vault.auth]\nmethod = \"token\"\ntoken_file = \"{0}/token\"\n", dir.path().display())).unwrap()
    };
    write(&bao.address());
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .env_remove("VAULT_ADDR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is valid"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("serve would use the configured identity")
    );
    assert!(!dir.path().join("rt").exists(), "check creates no runtime directory");
    assert!(!dir.path().join("st").exists(), "check creates no state directory");
    write("http://127.0.0.1:1");
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .env_remove("VAULT_ADDR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("http://127.0.0.1:1"), "{stderr}");
    std::fs::write(&cfg, "[plugin]\nsokcet = \"/x.sock\"\n").unwrap();
    let out =
        std::process::Command::new(BIN).args(["check", "--config"]).arg(&cfg).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("sokcet"), "{stderr}");
}

#[test]
fn database_credentials_are_per_mount_and_dropped_at_unmount() {
    let Setup { bao, plugin } = setup();
    bao.database_role("app", "1h", "2h");
    plugin.create("db", json!({"path": "database/creds/app"}));
    let (a, b) = (mount_id(), mount_id());
    let user_a = std::fs::read_to_string(plugin.mount("db", &a).join("username")).unwrap();
    let user_b = std::fs::read_to_string(plugin.mount("db", &b).join("username")).unwrap();
    assert_ne!(user_a, user_b, "one database user per mount");
    assert!(pg_role_exists(&user_a) && pg_role_exists(&user_b));
    plugin.unmount("db", &a);
    assert!(!pg_role_exists(&user_a), "dropped as soon as Unmount returns");
    assert!(pg_role_exists(&user_b), "the other container's user stays");
    plugin.unmount("db", &b);
    assert!(!pg_role_exists(&user_b));
}

/// A response-wrapped reply from OpenBao (`X-Vault-Wrap-TTL`): the wrapping token.
fn wrapped(bao: &Bao, path: &str, body: serde_json::Value) -> String {
    let reply: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("{}/v1/{path}", bao.address()))
        .header("X-Vault-Token", &bao.token)
        .header("X-Vault-Wrap-TTL", "300s")
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    reply["wrap_info"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("not wrapped: {reply}"))
        .to_owned()
}

#[test]
fn volumes_with_their_own_wrapped_identity() {
    let Setup { bao, plugin } = setup();
    bao.put_kv2("team-a", json!({"password": "team-a-secret"}));
    // The team's token makes its mounts' child tokens: it needs auth/token/create.
    bao.policy("team-a", "path \"secret/data/team-a\" { capabilities = [\"read\"] }\npath \"auth/token/create\" { capabilities = [\"update\"] }");
    // A wrapped token of the team's policy: its mounts get child tokens of it.
    let wt = wrapped(&bao, "auth/token/create", json!({"policies": ["team-a"], "ttl": "1h"}));
    plugin.create("team-a", json!({"path": "secret/data/team-a", "wrapped-token": wt}));
    let again = plugin.call("/VolumeDriver.Create", Some(json!({"Name": "team-a", "Opts": {"path": "secret/data/team-a", "wrapped-token": wt}}))).unwrap();
    assert_eq!(again.1["Err"], "", "a repeated Create with the same options succeeds");
    let state =
        std::fs::read_to_string(plugin.dir.path().join("state/volumes/team-a.json")).unwrap();
    assert!(!state.contains(&wt), "the wrapping token is not on disk");
    let id = mount_id();
    let mp = plugin.mount("team-a", &id);
    assert_eq!(std::fs::read_to_string(mp.join("password")).unwrap(), "team-a-secret");
    plugin.unmount("team-a", &id);
    // Used once: a second volume from the same wrapping token is refused, saying why.
    let e = plugin.err(
        "/VolumeDriver.Create",
        json!({"Name": "team-b", "Opts": {"path": "secret/data/team-a", "wrapped-token": wt}}),
    );
    assert!(e.contains("used, expired or unknown") && e.contains("intercepted"), "{e}");
    assert!(!e.contains(&wt), "the token is not echoed");
    // Something wrapped by anyone with sys/wrapping/wrap is not an identity.
    let forged = wrapped(&bao, "sys/wrapping/wrap", json!({"token": "attacker"}));
    let e = plugin.err(
        "/VolumeDriver.Create",
        json!({"Name": "team-c", "Opts": {"path": "secret/data/team-a", "wrapped-token": forged}}),
    );
    assert!(e.contains("sys/wrapping/wrap") && e.contains("refusing"), "{e}");
    // Policies wider than the volume's identity are refused at create, by name.
    let wt2 = wrapped(&bao, "auth/token/create", json!({"policies": ["team-a"], "ttl": "1h"}));
    let e = plugin.err("/VolumeDriver.Create", json!({"Name": "team-d", "Opts": {"path": "secret/data/team-a", "wrapped-token": wt2, "policies": "admin"}}));
    assert!(e.contains("option `policies`") && e.contains("`admin`"), "{e}");
    // A token whose policy lacks auth/token/create is refused at create (and revoked), rather
    // than failing every mount.
    bao.policy("team-r", "path \"secret/data/team-a\" { capabilities = [\"read\"] }");
    let wt3 = wrapped(&bao, "auth/token/create", json!({"policies": ["team-r"], "ttl": "1h"}));
    let before = bao.accessors().len();
    let e = plugin.err(
        "/VolumeDriver.Create",
        json!({"Name": "team-e", "Opts": {"path": "secret/data/team-a", "wrapped-token": wt3}}),
    );
    assert!(e.contains("may not create its mounts' child tokens") && e.contains("deny"), "{e}");
    assert_eq!(
        bao.accessors().len(),
        before - 2,
        "the wrapping token used, the token it held revoked"
    );
    // Removing the volume revokes its identity.
    let before = bao.accessors().len();
    plugin.ok("/VolumeDriver.Remove", json!({"Name": "team-a"}));
    assert_eq!(bao.accessors().len(), before - 1);
}

#[test]
fn a_wrapped_approle_secret_id_logs_each_mount_in() {
    let Setup { bao, plugin } = setup();
    bao.api("POST", "sys/auth/approle", Some(json!({"type": "approle"})));
    bao.policy("web", r#"path "secret/data/web" { capabilities = ["read"] }"#);
    bao.api(
        "POST",
        "auth/approle/role/web",
        Some(json!({"token_policies": "web", "token_ttl": "10m"})),
    );
    let role_id = bao.api("GET", "auth/approle/role/web/role-id", None)["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    bao.put_kv2("web", json!({"tls_key": "k"}));
    let wt = wrapped(&bao, "auth/approle/role/web/secret-id", json!({}));
    let e = plugin.err(
        "/VolumeDriver.Create",
        json!({"Name": "web", "Opts": {"path": "secret/data/web", "wrapped-token": wt}}),
    );
    assert!(e.contains("role-id"), "a wrapped secret_id needs its role_id: {e}");
    let wt = wrapped(&bao, "auth/approle/role/web/secret-id", json!({}));
    plugin
        .create("web", json!({"path": "secret/data/web", "wrapped-token": wt, "role-id": role_id}));
    let before = bao.accessors();
    let id = mount_id();
    let mp = plugin.mount("web", &id);
    assert_eq!(std::fs::read_to_string(mp.join("tls_key")).unwrap(), "k");
    assert_eq!(bao.accessors().len(), before.len() + 1);
    plugin.unmount("web", &id);
    assert_eq!(bao.accessors(), before, "the mount's login token is revoked");
}

/// Every file below `dir`, as text.
fn all_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            text += &all_text(&path);
        } else {
            text += &String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default());
        }
    }
    text
}

#[test]
fn no_secret_or_token_reaches_logs_state_or_audit_even_at_trace_level() {
    let Setup { bao, mut plugin } = setup();
    let metrics_port = free_port();
    plugin.stop(false);
    let config = std::fs::read_to_string(&plugin.config).unwrap().replacen(
        "[plugin]\n",
        &format!("[plugin]\naudit_log = \"{}/audit/audit.log\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n", plugin.dir.path().display()),
        1,
    );
    std::fs::write(&plugin.config, config).unwrap();
    plugin.log_filter = "trace".into();
    plugin.restart();
    bao.database_role("trace", "1h", "2h");
    bao.put_kv2("trace", json!({"api_key": "kv-value-one-7f3a"}));
    plugin.create(
        "trace",
        json!({"path": "secret/data/trace", "path.db": "database/creds/trace", "refresh": "1s"}),
    );
    let id = mount_id();
    let mp = plugin.mount("trace", &id);
    let mut secrets =
        vec!["kv-value-one-7f3a".to_owned(), "kv-value-two-91bc".to_owned(), bao.token.clone()];
    secrets.push(std::fs::read_to_string(mp.join("db/password")).unwrap());
    let private = plugin.runtime.join("private");
    let tokens_of = |text: &str| -> Vec<String> {
        text.split('"')
            .filter(|s| s.starts_with("s.") || s.starts_with("hvs.") || s.starts_with("b."))
            .map(str::to_owned)
            .collect()
    };
    secrets.extend(tokens_of(&all_text(&private)));
    // A KV change, picked up by the refresh; then a rotation through the admin socket.
    bao.put_kv2("trace", json!({"api_key": "kv-value-two-91bc"}));
    assert!(wait_until(Duration::from_secs(5), || std::fs::read_to_string(mp.join("api_key"))
        .unwrap()
        == "kv-value-two-91bc"));
    let out = std::process::Command::new(BIN)
        .args(["rotate", "trace", "--config"])
        .arg(&plugin.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    secrets.push(std::fs::read_to_string(mp.join("db/password")).unwrap());
    secrets.extend(tokens_of(&all_text(&private)));
    let status = std::process::Command::new(BIN)
        .args(["status", "--json", "--config"])
        .arg(&plugin.config)
        .output()
        .unwrap();
    let status_text = String::from_utf8_lossy(&status.stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(&status_text).unwrap();
    assert_eq!(v["volumes"][0]["mounts"][0]["leases"].as_array().unwrap().len(), 1, "{v}");
    let metrics = reqwest::blocking::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("vault_secrets_mounts_active 1\n"), "{metrics}");
    assert!(metrics.contains("vault_secrets_rotations_total 1\n"), "{metrics}");
    assert!(
        metrics.contains(
            "vault_secrets_vault_request_duration_seconds_count{op=\"token_create\"} 2\n"
        ),
        "{metrics}"
    );
    plugin.unmount("trace", &id);
    plugin.stop(false);
    let audit = std::fs::read_to_string(plugin.dir.path().join("audit/audit.log")).unwrap();
    for event in ["\"create\"", "\"mount\"", "\"rotate\"", "\"revoke\"", "\"unmount\""] {
        assert!(audit.contains(event), "{event} missing from the audit log");
    }
    let log = plugin.log();
    assert!(log.contains("TRACE"), "the plugin ran at trace level");
    let state = all_text(&plugin.dir.path().join("state"));
    assert!(secrets.len() >= 7, "collected {} secrets and tokens to look for", secrets.len());
    for (i, secret) in secrets.iter().enumerate().filter(|(_, s)| s.len() >= 8) {
        // Never print the secret itself: say which one leaked.
        assert!(!log.contains(secret.as_str()), "secret #{i} is in the plugin's log");
        assert!(!state.contains(secret.as_str()), "secret #{i} is in the state directory");
        assert!(!audit.contains(secret.as_str()), "secret #{i} is in the audit log");
        assert!(!status_text.contains(secret.as_str()), "secret #{i} is in `status`");
        assert!(!metrics.contains(secret.as_str()), "secret #{i} is in the metrics");
    }
}
