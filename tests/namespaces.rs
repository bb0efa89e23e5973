//! Vault namespaces against OpenBao's (the dev server has them): `vault.namespace`, and a
//! volume's `namespace` option carried by every request of its mounts — seen in OpenBao's
//! audit log, which records each request's `X-Vault-Namespace` header.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::*;

/// An OpenBao dev server with a file audit device that logs the namespace header and the
/// user agent of every request, and the namespaces team-a, team-a/app and team-b.
struct Audited {
    bao: Bao,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn start() -> Audited {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let config = dir.path().join("audit.hcl");
    std::fs::write(
        &config,
        format!(
            "audit \"file\" \"to-file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
            log.display()
        ),
    )
    .unwrap();
    let bao = Bao::start_with(&["-config", config.to_str().unwrap()]);
    for header in ["X-Vault-Namespace", "User-Agent"] {
        let path = format!("sys/config/auditing/request-headers/{header}");
        bao.api("PUT", &path, Some(json!({"hmac": false})));
    }
    for (parent, name) in [("", "team-a"), ("team-a", "app"), ("", "team-b")] {
        ns_api(&bao, parent, "POST", &format!("sys/namespaces/{name}"), None);
    }
    Audited { bao, log, _dir: dir }
}

/// A call as root in namespace `ns` (`""`: the root namespace); panics on a status >= 400.
fn ns_api(bao: &Bao, ns: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, v) = ns_try(bao, &bao.token, ns, method, path, body);
    assert!(status < 400, "{method} {path} in {ns:?}: {status} {v}");
    v
}

fn ns_try(
    bao: &Bao,
    token: &str,
    ns: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}/v1/{path}", bao.address());
    let mut req = reqwest::blocking::Client::new()
        .request(method.parse().unwrap(), url)
        .header("X-Vault-Token", token);
    if !ns.is_empty() {
        req = req.header("X-Vault-Namespace", ns);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// A KV v2 engine at `secret/` of namespace `ns`, holding `secret/data/app`.
fn kv(bao: &Bao, ns: &str, password: &str) {
    let mount = json!({"type": "kv", "options": {"version": "2"}});
    ns_api(bao, ns, "POST", "sys/mounts/secret", Some(mount));
    // A new KV v2 mount upgrades itself for a moment.
    assert!(wait_until(Duration::from_secs(10), || {
        let body = json!({"data": {"password": password}});
        ns_try(bao, &bao.token, ns, "POST", "secret/data/app", Some(body)).0 < 400
    }));
}

/// The accessors of the tokens of namespace `ns`.
fn accessors(bao: &Bao, ns: &str) -> Vec<String> {
    let (status, v) = ns_try(bao, &bao.token, ns, "LIST", "auth/token/accessors", None);
    if status == 404 {
        return Vec::new();
    }
    let keys = v["data"]["keys"].as_array().cloned().unwrap_or_default();
    keys.iter().map(|k| k.as_str().unwrap().to_owned()).collect()
}

/// A request the plugin made, from the audit log: its path, the namespace it was served in
/// (`""`: the root namespace), and its `X-Vault-Namespace` header.
#[derive(Debug)]
struct Request {
    path: String,
    namespace: String,
    header: Option<String>,
}

fn plugin_requests(log: &Path) -> Vec<Request> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "request")
        .filter(|e| {
            let agent = &e["request"]["headers"]["user-agent"][0];
            agent.as_str().is_some_and(|a| a.starts_with("vault-secrets-plugin"))
        })
        .map(|e| Request {
            path: e["request"]["path"].as_str().unwrap_or("").to_owned(),
            namespace: e["request"]["namespace"]["path"]
                .as_str()
                .unwrap_or("")
                .trim_end_matches('/')
                .to_owned(),
            header: e["request"]["headers"]["x-vault-namespace"][0].as_str().map(str::to_owned),
        })
        .collect()
}

/// A response-wrapped `auth/token/create` made in namespace `ns`: the wrapping token.
fn wrapped_token(bao: &Bao, ns: &str, policies: &[&str]) -> String {
    let reply: Value = reqwest::blocking::Client::new()
        .post(format!("{}/v1/auth/token/create", bao.address()))
        .header("X-Vault-Token", &bao.token)
        .header("X-Vault-Namespace", ns)
        .header("X-Vault-Wrap-TTL", "300s")
        .json(&json!({"policies": policies, "ttl": "1h"}))
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
fn a_volume_s_namespace_goes_with_every_request_of_its_mounts_and_survives_a_restart() {
    let Audited { bao, log, _dir } = start();
    bao.put_kv2("app", json!({"password": "root-secret"}));
    kv(&bao, "team-b", "team-b-secret");
    let reader = "path \"secret/data/app\" { capabilities = [\"read\"] }";
    ns_api(&bao, "team-b", "PUT", "sys/policies/acl/reader", Some(json!({"policy": reader})));
    let team = format!("{reader}\npath \"auth/token/create\" {{ capabilities = [\"update\"] }}");
    ns_api(&bao, "team-b", "PUT", "sys/policies/acl/team", Some(json!({"policy": team})));
    // The plugin's identity is the root namespace's root token: it acts in every namespace.
    let mut plugin = Plugin::start(None, &bao.address(), &bao.token, "");
    let (root_before, b_before) = (bao.accessors().len(), accessors(&bao, "team-b").len());

    // A child of the plugin's token, made in team-b; its reads, renewals and revocation there.
    let opts = json!({"path": "secret/data/app", "namespace": "team-b", "policies": "reader", "ttl": "10s"});
    plugin.create("b", opts);
    let id = mount_id();
    let mp = plugin.mount("b", &id);
    assert_eq!(std::fs::read_to_string(mp.join("password")).unwrap(), "team-b-secret");
    assert_eq!(accessors(&bao, "team-b").len(), b_before + 1, "the mount's token is team-b's");
    assert_eq!(bao.accessors().len(), root_before, "and none in the root namespace");
    let renewed = wait_until(Duration::from_secs(20), || {
        plugin_requests(&log)
            .iter()
            .any(|r| r.path == "auth/token/renew-self" && r.namespace == "team-b")
    });
    assert!(renewed, "the mount's token is renewed in team-b");
    // A restart: the mount record keeps the token's namespace.
    plugin.stop(false);
    plugin.restart();
    plugin.unmount("b", &id);
    assert_eq!(accessors(&bao, "team-b").len(), b_before, "revoked in team-b after a restart");
    let state = std::fs::read_to_string(plugin.dir.path().join("state/volumes/b.json")).unwrap();
    assert!(state.contains("team-b"), "{state}");

    // A wrapped token of team-b: unwrapped there; its mounts' tokens are its children there.
    let wt = wrapped_token(&bao, "team-b", &["team"]);
    plugin.create(
        "w",
        json!({"path": "secret/data/app", "namespace": "team-b", "wrapped-token": wt}),
    );
    let mp = plugin.mount("w", &id);
    assert_eq!(std::fs::read_to_string(mp.join("password")).unwrap(), "team-b-secret");
    plugin.unmount("w", &id);
    plugin.ok("/VolumeDriver.Remove", json!({"Name": "w"}));
    assert_eq!(accessors(&bao, "team-b").len(), b_before, "its identity revoked at remove");

    // Every request made for these volumes went to team-b by its header (OpenBao files a
    // token's own operations under the token's namespace: the lookup of the root token).
    let requests = plugin_requests(&log);
    for r in requests.iter().filter(|r| r.namespace == "team-b") {
        assert_eq!(r.header.as_deref(), Some("team-b"), "{r:?}");
    }
    let in_b: Vec<&Request> =
        requests.iter().filter(|r| r.header.as_deref() == Some("team-b")).collect();
    for path in [
        "auth/token/lookup-self",
        "auth/token/create",
        "secret/data/app",
        "auth/token/renew-self",
        "auth/token/revoke-self",
        "sys/wrapping/lookup",
        "sys/wrapping/unwrap",
    ] {
        assert!(in_b.iter().any(|r| r.path == path), "{path} not sent to team-b: {requests:?}");
    }
    assert!(
        !requests.iter().any(|r| r.namespace.is_empty() && r.path == "secret/data/app"),
        "nothing read in the root namespace: {requests:?}"
    );

    // A namespace that does not exist: refused at create, naming it; no token anywhere.
    let e = plugin.err(
        "/VolumeDriver.Create",
        json!({"Name": "z", "Opts": {"path": "secret/data/app", "namespace": "team-zz"}}),
    );
    assert!(e.contains("no namespace \"team-zz\""), "{e}");
    assert_eq!(bao.accessors().len(), root_before);
    let wt = wrapped_token(&bao, "team-b", &["team"]);
    let e = plugin.err(
        "/VolumeDriver.Create",
        json!({"Name": "z", "Opts": {"path": "secret/data/app", "namespace": "team-b/zz", "wrapped-token": wt}}),
    );
    assert!(e.contains("no namespace \"team-b/zz\""), "{e}");
    assert_eq!(accessors(&bao, "team-b").len(), b_before + 2, "the unused wrapping token and its");
    for bad in ["team-b/../x", "/team-b", "team b", "https://elsewhere/x"] {
        let e = plugin.err(
            "/VolumeDriver.Create",
            json!({"Name": "z", "Opts": {"path": "secret/data/app", "namespace": bad}}),
        );
        assert!(
            e.contains("option `namespace`") && e.contains("accepted: the full namespace path"),
            "{e}"
        );
    }
}

#[test]
fn vault_namespace_is_the_plugin_s_and_a_volume_s_namespace_is_the_full_path() {
    let Audited { bao, log, _dir } = start();
    kv(&bao, "team-a", "team-a-secret");
    kv(&bao, "team-a/app", "app-secret");
    kv(&bao, "team-b", "team-b-secret");
    // The plugin's policy in team-a: its paths there and in team-a/app (a child namespace's
    // paths are below its own; a token made in a child namespace takes `sudo`); its children
    // in team-a/app take the policies they are given by name there.
    let plugin_policy = "path \"secret/data/app\" { capabilities = [\"read\"] }\n\
        path \"auth/token/create\" { capabilities = [\"update\"] }\n\
        path \"app/auth/token/create\" { capabilities = [\"update\", \"sudo\"] }";
    ns_api(
        &bao,
        "team-a",
        "PUT",
        "sys/policies/acl/plugin",
        Some(json!({"policy": plugin_policy})),
    );
    let reader = "path \"secret/data/app\" { capabilities = [\"read\"] }";
    ns_api(&bao, "team-a/app", "PUT", "sys/policies/acl/plugin", Some(json!({"policy": reader})));
    let token = ns_api(
        &bao,
        "team-a",
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["plugin"], "ttl": "1h"})),
    );
    let token = token["auth"]["client_token"].as_str().unwrap().to_owned();
    let mut plugin = Plugin::configure(None, &bao.address(), &token, "");
    plugin.env.push(("VAULT_NAMESPACE".into(), "team-a".into()));
    plugin.restart();
    let count = |ns| accessors(&bao, ns).len();
    let before = (count("team-a"), count("team-a/app"), count("team-b"));

    plugin.create("a", json!({"path": "secret/data/app"}));
    // A token made in a child namespace gets only `default` there unless policies are named.
    let opts = json!({"path": "secret/data/app", "namespace": "team-a/app", "policies": "plugin"});
    plugin.create("app", opts);
    let id = mount_id();
    let a = plugin.mount("a", &id);
    assert_eq!(std::fs::read_to_string(a.join("password")).unwrap(), "team-a-secret");
    let app = plugin.mount("app", &id);
    assert_eq!(std::fs::read_to_string(app.join("password")).unwrap(), "app-secret");
    assert_eq!((count("team-a"), count("team-a/app")), (before.0 + 1, before.1 + 1));
    plugin.unmount("a", &id);
    plugin.unmount("app", &id);
    assert_eq!((count("team-a"), count("team-a/app")), (before.0, before.1), "both revoked");

    // The full path, not one relative to vault.namespace: `app` is not team-a/app.
    let e = plugin.err(
        "/VolumeDriver.Create",
        json!({"Name": "rel", "Opts": {"path": "secret/data/app", "namespace": "app"}}),
    );
    assert!(e.contains("no namespace \"app\""), "{e}");
    // A namespace beside the identity's is out of its reach: the mount is refused, no token
    // made, nothing left mounted.
    plugin.create("b", json!({"path": "secret/data/app", "namespace": "team-b"}));
    let e = plugin.err("/VolumeDriver.Mount", json!({"Name": "b", "ID": id}));
    assert!(e.contains("volume b") && e.contains("auth/token/create"), "{e}");
    assert_eq!(count("team-b"), before.2, "no token in team-b");
    assert!(plugin.mounts_left().is_empty(), "{:?}", plugin.mounts_left());
    let requests = plugin_requests(&log);
    for r in &requests {
        assert!(r.header.is_some(), "vault.namespace or the volume's on every request: {r:?}");
    }
    let read_in = |ns: &str| {
        requests.iter().any(|r| {
            r.path == "secret/data/app" && r.namespace == ns && r.header.as_deref() == Some(ns)
        })
    };
    assert!(read_in("team-a"), "{requests:?}");
    assert!(read_in("team-a/app"), "{requests:?}");
}
