//! Node identities that survive a reboot, against a real OpenBao: TLS certificate auth over a
//! TLS listener (certificates made by `openssl`), JWT auth with a static public key (the JWT
//! signed by the test). For each: the plugin logs in, serves a container on the shared Docker
//! engine (cert) or a mount through the plugin protocol (jwt), renews its token, and
//! logs in again by itself after an operator revoked it. And `check` on each method's
//! problems; and a volume's `wrapped-token`, used once, failing on a second node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::docker::{docker, docker_lock, docker_ok, image, DRIVER};
use crate::util::tls::{bao_cli, set_mode, tokens_from, CertFiles, JwtSigner, Pki, TlsBao};
use crate::util::vault::plugin_cli;
use crate::util::*;

/// What the plugin's identity may do: child tokens for its mounts, reads of `secret/`.
fn plugin_policy(bao: &Bao) {
    bao.policy(
        "plugin",
        "path \"secret/data/*\" { capabilities = [\"read\"] }\npath \"auth/token/create\" { capabilities = [\"update\"] }",
    );
}

/// The plugin's token lives 10 s (renewed at about 2/3 of it) within a max TTL of an hour.
const TOKEN_TTL: &str = "10s";

/// Enables the cert auth method with `ca` trusted for the role `node-01`.
fn cert_auth(bao: &Bao, ca: &Pki) {
    bao.api("POST", "sys/auth/cert", Some(json!({"type": "cert"})));
    bao.api(
        "POST",
        "auth/cert/certs/node-01",
        Some(json!({
            "certificate": ca.ca_pem(),
            "allowed_common_names": ["node-01"],
            "token_policies": ["plugin"],
            "token_ttl": TOKEN_TTL,
            "token_max_ttl": "1h",
        })),
    );
}

/// A CA, OpenBao over TLS with the cert auth method trusting it for `node-01`, that node's
/// certificate, and `secret/node` holding `password`.
fn cert_setup(password: &str) -> (Pki, CertFiles, TlsBao) {
    let pki = Pki::new("vault-secrets-test-ca");
    let (server, node) = (pki.server(), pki.client("node-01"));
    let tls = TlsBao::start(&server);
    plugin_policy(&tls.bao);
    cert_auth(&tls.bao, &pki);
    tls.bao.put_kv2("node", json!({"password": password}));
    (pki, node, tls)
}

fn cert_config(pki: &Pki, node: &CertFiles) -> String {
    format!(
        "ca_cert = \"{}\"\n\n[vault.auth]\nmethod = \"cert\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nrole = \"node-01\"\n",
        pki.ca().display(),
        node.cert.display(),
        node.key.display()
    )
}

fn logged_in(plugin: &Plugin) {
    assert!(
        wait_until(Duration::from_secs(15), || plugin.log().contains("logged in to vault")),
        "the plugin did not log in:\n{}",
        plugin.log()
    );
}

/// The one valid token that logins at `path` issued, waiting for it to be there.
fn the_token(bao: &Bao, path: &str) -> String {
    let mut found = Vec::new();
    let one = wait_until(Duration::from_secs(20), || {
        found = tokens_from(bao, path);
        found.len() == 1
    });
    assert!(one, "expected one token from {path}, found {}", found.len());
    found.remove(0).0
}

/// Waits until the token `accessor` has been renewed.
fn renewed(bao: &Bao, path: &str, accessor: &str) -> bool {
    wait_until(Duration::from_secs(20), || {
        tokens_from(bao, path)
            .iter()
            .any(|(a, data)| a == accessor && data["last_renewal_time"].as_i64().unwrap_or(0) > 0)
    })
}

fn revoke(bao: &Bao, accessor: &str) {
    let out = bao_cli(bao, &["token", "revoke", "-accessor", accessor]);
    assert!(out.status.success(), "bao token revoke: {}", String::from_utf8_lossy(&out.stderr));
}

fn read(mount: &Path, file: &str) -> String {
    std::fs::read_to_string(mount.join(file)).unwrap()
}

/// Containers and volumes of a test on the shared Docker engine, removed on drop.
#[derive(Default)]
struct OnDocker {
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for OnDocker {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
    }
}

#[test]
fn a_certificate_identity_serves_a_container_renews_and_logs_in_again_at_once_after_a_revocation_on_one_engine(
) {
    let (pki, node, tls) = cert_setup("via-cert");
    let bao = &tls.bao;
    let _lock = docker_lock();
    let socket = Path::new("/run/docker/plugins").join(format!("{DRIVER}.sock"));
    let plugin =
        Plugin::start(Some(&socket), &tls.https_address(), "unused", &cert_config(&pki, &node));
    logged_in(&plugin);
    let login = "auth/cert/login";
    let first_token = the_token(bao, login);

    let mut on = OnDocker::default();
    let volume = unique("node-cert");
    docker_ok(&["volume", "create", "--driver", DRIVER, "-o", "path=secret/data/node", &volume]);
    on.volumes.push(volume.clone());
    let secrets = format!("{volume}:/run/secrets:ro");
    let first =
        docker_ok(&["run", "-d", "--network", "none", "-v", &secrets, &image(), "sleep", "600"]);
    on.containers.push(first.clone());
    assert_eq!(docker_ok(&["exec", &first, "cat", "/run/secrets/password"]), "via-cert");
    assert!(renewed(bao, login, &first_token), "the plugin's token was not renewed");

    // An operator revokes the plugin's token: the next mount is refused, and the plugin logs
    // in again with its certificate there and then, and the container starts.
    revoke(bao, &first_token);
    let run = ["run", "--rm", "--network", "none", "-v", &secrets, &image()];
    let second = docker_ok(&[&run[..], &["cat", "/run/secrets/password"]].concat());
    assert_eq!(second, "via-cert");
    let second_token = the_token(bao, login);
    assert_ne!(second_token, first_token);
    assert!(plugin.log().contains("logged in to vault again"), "{}", plugin.log());
    assert!(renewed(bao, login, &second_token), "the new token is renewed too");
    docker_ok(&["rm", "-f", &first]);
    assert!(plugin.mounts_left().is_empty(), "{:?}", plugin.mounts_left());

    let out = plugin_cli(&plugin.config, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("parse and match"), "{stdout}");
    assert!(
        stdout.contains("certificate login at auth/cert/login, role node-01 works"),
        "{stdout}"
    );
}

/// The node's certificate is renewed on disk — by a new CA, and the cert auth role now trusts
/// only that one — while the plugin runs: its next login presents the new certificate, with no
/// restart. (A certificate read once at start would be refused there.)
#[test]
fn a_node_certificate_renewed_on_disk_is_presented_at_the_next_login_without_a_restart() {
    let (pki, node, tls) = cert_setup("via-renewed-cert");
    let bao = &tls.bao;
    let dir = tempfile::tempdir().unwrap();
    let on_disk =
        CertFiles { cert: dir.path().join("node.pem"), key: dir.path().join("node-key.pem") };
    std::fs::copy(&node.cert, &on_disk.cert).unwrap();
    std::fs::copy(&node.key, &on_disk.key).unwrap();
    set_mode(&on_disk.key, 0o600);
    let plugin = Plugin::start(None, &tls.https_address(), "unused", &cert_config(&pki, &on_disk));
    logged_in(&plugin);
    let login = "auth/cert/login";
    let first_token = the_token(bao, login);
    plugin.create("node", json!({"path": "secret/data/node"}));
    let first = mount_id();
    assert_eq!(read(&plugin.mount("node", &first), "password"), "via-renewed-cert");

    // A new CA issues the node's next certificate; the role trusts only the new CA from now.
    let next_ca = Pki::new("vault-secrets-test-ca-2");
    let renewed_cert = next_ca.client("node-01");
    std::fs::copy(&renewed_cert.cert, &on_disk.cert).unwrap();
    std::fs::copy(&renewed_cert.key, &on_disk.key).unwrap();
    let mut role = bao.api("GET", "auth/cert/certs/node-01", None)["data"].clone();
    role["certificate"] = json!(next_ca.ca_pem());
    bao.api("POST", "auth/cert/certs/node-01", Some(role));
    revoke(bao, &first_token);

    let second = mount_id();
    assert_eq!(read(&plugin.mount("node", &second), "password"), "via-renewed-cert");
    let second_token = the_token(bao, login);
    assert_ne!(second_token, first_token);
    assert!(plugin.log().contains("logged in to vault again"), "{}", plugin.log());
    // OpenBao checks the certificate that logged in at each renewal of the token it gave.
    assert!(renewed(bao, login, &second_token), "the new certificate's token is renewed too");
    plugin.unmount("node", &second);
    plugin.unmount("node", &first);
    assert!(plugin.mounts_left().is_empty(), "{:?}", plugin.mounts_left());
}

/// A FIFO at `jwt_file`, which the plugin reads at every login. It was opened with a blocking
/// open on the runtime's one thread: `List`, `/status` and SIGTERM froze until something wrote
/// to the FIFO. Now it is refused at once, named in the login's error, and the plugin keeps
/// answering. (No Vault: the login fails at the file, before any request.)
#[test]
fn a_fifo_at_the_jwt_file_is_refused_and_freezes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("token.jwt");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let vault = format!("http://127.0.0.1:{}", free_port());
    let auth = format!(
        "[vault.auth]\nmethod = \"jwt\"\njwt_file = \"{}\"\nrole = \"docker-hosts\"\n",
        fifo.display()
    );
    let mut plugin = Plugin::configure(None, &vault, "unused", &auth);
    plugin.restart(); // Activate answers
    let refused = format!("{} is a FIFO (named pipe), not a regular file", fifo.display());
    assert!(
        wait_until(Duration::from_secs(10), || plugin.log().contains(&refused)),
        "the login's error names the FIFO:\n{}",
        plugin.log()
    );
    let timed = |what: &str, f: &mut dyn FnMut()| {
        let started = std::time::Instant::now();
        f();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "{what} took {took:?}");
    };
    timed("List", &mut || {
        plugin.ok("/VolumeDriver.List", json!({}));
    });
    timed("status", &mut || {
        crate::util::vault::status(&plugin);
    });
    plugin.create("fifo", json!({"path": "secret/data/app"}));
    timed("Mount", &mut || {
        let e = plugin.err("/VolumeDriver.Mount", json!({"Name": "fifo", "ID": mount_id()}));
        assert!(e.contains("not logged in") && e.contains(&refused), "{e}");
    });
    let pid = plugin.pid();
    timed("SIGTERM", &mut || plugin.stop(false));
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the plugin ended");
}

#[test]
fn a_jwt_identity_reads_its_file_at_every_login_and_logs_in_again_by_itself() {
    let bao = Bao::start();
    plugin_policy(&bao);
    let signer = JwtSigner::new();
    bao.api("POST", "sys/auth/jwt", Some(json!({"type": "jwt"})));
    bao.api(
        "POST",
        "auth/jwt/config",
        Some(
            json!({"jwt_validation_pubkeys": [signer.public_pem], "jwt_supported_algs": ["ES256"]}),
        ),
    );
    bao.api(
        "POST",
        "auth/jwt/role/docker-hosts",
        Some(json!({
            "role_type": "jwt",
            "bound_audiences": ["vault-secrets"],
            "user_claim": "sub",
            "token_policies": ["plugin"],
            "token_ttl": TOKEN_TTL,
            "token_max_ttl": "1h",
        })),
    );
    let jwt = |audience: &str| {
        let exp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
                + 3600;
        signer.sign(json!({"sub": "node-01", "aud": audience, "exp": exp}))
    };
    let dir = tempfile::tempdir().unwrap();
    let jwt_file = dir.path().join("token.jwt");
    std::fs::write(&jwt_file, jwt("vault-secrets") + "\n").unwrap();
    set_mode(&jwt_file, 0o600);
    let auth = format!(
        "[vault.auth]\nmethod = \"jwt\"\njwt_file = \"{}\"\nrole = \"docker-hosts\"\n",
        jwt_file.display()
    );
    let plugin = Plugin::start(None, &bao.address(), "unused", &auth);
    logged_in(&plugin);
    let login = "auth/jwt/login";
    let first_token = the_token(&bao, login);
    bao.put_kv2("node", json!({"password": "via-jwt"}));
    plugin.create("node", json!({"path": "secret/data/node"}));
    let first = mount_id();
    assert_eq!(read(&plugin.mount("node", &first), "password"), "via-jwt");
    assert!(renewed(&bao, login, &first_token), "the plugin's token was not renewed");

    // The file now holds a JWT vault refuses, and the token is revoked: the plugin finds out
    // at its next renewal, tries to log in with what the file holds, and says why it fails.
    std::fs::write(&jwt_file, jwt("someone-else")).unwrap();
    revoke(&bao, &first_token);
    let refused = wait_until(Duration::from_secs(30), || plugin.log().contains("JWT login failed"));
    assert!(refused, "{}", plugin.log());
    let e = plugin.err("/VolumeDriver.Mount", json!({"Name": "node", "ID": mount_id()}));
    assert!(e.contains("JWT login failed") && e.contains("aud"), "vault's reason: {e}");
    assert!(!e.contains(&jwt("someone-else")[..40]), "no JWT in the error: {e}");

    // The identity provider writes a good JWT: the plugin logs in by itself, no mount needed.
    std::fs::write(&jwt_file, jwt("vault-secrets")).unwrap();
    let second_token = the_token(&bao, login);
    assert_ne!(second_token, first_token);
    assert!(plugin.log().contains("logged in to vault again"), "{}", plugin.log());
    let second = mount_id();
    assert_eq!(read(&plugin.mount("node", &second), "password"), "via-jwt");
    plugin.unmount("node", &second);
    plugin.unmount("node", &first);

    let out = plugin_cli(&plugin.config, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("JWT login at auth/jwt/login, role docker-hosts works"), "{stdout}");
    assert!(!stdout.contains("warning"), "the JWT file is 0600: {stdout}");
}

/// A configuration for `check` and `serve` in `dir` with `vault_section` and `auth`.
fn write_config(dir: &Path, vault_section: &str, auth: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[plugin]\nsocket = \"{0}/vs-check.sock\"\nstate_dir = \"{0}/state\"\nruntime_dir = \"{0}/run\"\n\n[vault]\n{vault_section}timeout = \"3s\"\n{auth}",
        dir.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `check`: (success, stdout, stderr).
fn check(config: &Path) -> (bool, String, String) {
    let out = plugin_cli(config, &["check"]);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn check_and_serve_name_what_is_wrong_with_a_certificate_identity() {
    let pki = Pki::new("vault-secrets-test-ca");
    let (server, node) = (pki.server(), pki.client("node-01"));
    let other_ca = Pki::new("some-other-ca");
    let stranger = other_ca.client("node-01");
    let tls = TlsBao::start(&server);
    plugin_policy(&tls.bao);
    cert_auth(&tls.bao, &pki);
    let dir = tempfile::tempdir().unwrap();
    let https =
        format!("address = \"{}\"\nca_cert = \"{}\"\n", tls.https_address(), pki.ca().display());
    let auth = |cert: &Path, key: &Path| {
        format!(
            "[vault.auth]\nmethod = \"cert\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nrole = \"node-01\"\n",
            cert.display(),
            key.display()
        )
    };

    let config = write_config(dir.path(), &https, &auth(&node.cert, &node.key));
    let (ok, stdout, stderr) = check(&config);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("certificate login at auth/cert/login, role node-01 works"),
        "{stdout}"
    );
    assert!(!stdout.contains("warning"), "{stdout}");
    assert!(tokens_from(&tls.bao, "auth/cert/login").is_empty(), "check revokes its probe");

    set_mode(&node.key, 0o644);
    let (ok, stdout, _) = check(&config);
    assert!(ok, "a readable key works, with a warning");
    let warning = format!("warning: the client key file {} has mode 0644", node.key.display());
    assert!(stdout.contains(&warning) && stdout.contains("chmod 0600"), "{stdout}");
    set_mode(&node.key, 0o600);

    let cases: [(&Path, &Path, &str); 3] = [
        (&node.cert, &stranger.key, "is not the private key of the certificate"),
        (&node.cert, &dir.path().join("missing.pem"), "cannot read it"),
        (&node.key, &node.key, "no `-----BEGIN CERTIFICATE-----`"),
    ];
    for (cert, key, says) in cases {
        let config = write_config(dir.path(), &https, &auth(cert, key));
        let (ok, _, stderr) = check(&config);
        assert!(!ok && stderr.contains(says), "{says}: {stderr}");
        assert!(stderr.contains("for the client certificate"), "{stderr}");
        assert!(!stderr.contains("PRIVATE KEY-----\n"), "no key material: {stderr}");
    }
    // A certificate vault does not trust: vault's reason.
    let config = write_config(dir.path(), &https, &auth(&stranger.cert, &stranger.key));
    let (ok, _, stderr) = check(&config);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("certificate login at auth/cert/login, role node-01: vault answered 400"),
        "{stderr}"
    );
    assert!(stderr.contains("invalid certificate"), "{stderr}");
    // Over plain HTTP no certificate is presented: refused before anything is sent.
    let http = format!("address = \"{}\"\n", tls.bao.address());
    let config = write_config(dir.path(), &http, &auth(&node.cert, &node.key));
    let (ok, _, stderr) = check(&config);
    assert!(!ok && stderr.contains("`vault.address`") && stderr.contains("https://"), "{stderr}");

    // `serve` checks the same at start-up, and exits.
    let config = write_config(dir.path(), &https, &auth(&node.cert, &stranger.key));
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("VAULT_ADDR")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    wait_until(Duration::from_secs(20), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        panic!("serve did not exit on a key that does not match its certificate");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success() && stderr.contains("is not the private key"), "{stderr}");
}

/// The sentence a used wrapping token's error starts its explanation with.
const SINGLE_USE: &str =
    "a wrapped token can be unwrapped once: for a service on several nodes, give each node its identity";

#[test]
fn a_wrapped_token_in_a_volume_definition_fails_on_the_second_node_saying_why() {
    let bao = Bao::start();
    bao.put_kv2("svc", json!({"password": "svc-secret"}));
    bao.policy("svc", "path \"secret/data/svc\" { capabilities = [\"read\"] }\npath \"auth/token/create\" { capabilities = [\"update\"] }");
    // Two nodes: each its own plugin and state, one OpenBao.
    let node_one = Plugin::start(None, &bao.address(), &bao.token, "");
    let node_two = Plugin::start(None, &bao.address(), &bao.token, "");
    let out = bao_cli(
        &bao,
        &["token", "create", "-policy=svc", "-ttl=1h", "-wrap-ttl=5m", "-field=wrapping_token"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let wrapping = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // What a service's `--mount …,volume-opt=wrapped-token=…` hands every node's Create.
    let definition =
        json!({"Name": "svc", "Opts": {"path": "secret/data/svc", "wrapped-token": wrapping}});

    node_one.ok("/VolumeDriver.Create", definition.clone());
    let id = mount_id();
    assert_eq!(read(&node_one.mount("svc", &id), "password"), "svc-secret");
    let e = node_two.err("/VolumeDriver.Create", definition.clone());
    assert!(e.contains(SINGLE_USE), "{e}");
    assert!(e.contains("option `wrapped-token`") && e.contains("intercepted"), "{e}");
    assert!(!e.contains(&wrapping), "the wrapping token is not echoed: {e}");
    let (_, got) = node_two.call("/VolumeDriver.Get", Some(json!({"Name": "svc"}))).unwrap();
    assert!(got["Err"].as_str().unwrap_or("").contains("no such volume"), "{got}");
    // Docker's repeated Create on the first node still succeeds: its volume is unchanged.
    node_one.ok("/VolumeDriver.Create", definition);
    node_one.unmount("svc", &id);
    let listed: Value = node_one.ok("/VolumeDriver.List", json!({}));
    assert_eq!(listed["Volumes"].as_array().map(Vec::len), Some(1), "{listed}");
}
