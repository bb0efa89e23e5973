//! Helpers for leased secrets: an OpenBao that survives a restart (a one-node raft cluster),
//! PostgreSQL logins with credentials read from a mount, and the plugin's admin commands
//! (`status`, `rotate`).

use std::ops::Deref;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::raft::Cluster;
use super::{Bao, Plugin, BIN};

/// A non-dev OpenBao server: a [`Cluster`] of one node (integrated storage in a temporary
/// directory: OpenBao has no `file` storage; a plain-HTTP listener on a free loopback port),
/// initialised with one key share, unsealed, `secret/` enabled as KV v2. It can be stopped (an
/// outage) and restarted on the same port with the same storage; the root token from init stays
/// valid. Every [`Bao`] helper works through `Deref`.
pub struct BaoServer {
    cluster: Cluster,
}

impl BaoServer {
    pub fn start() -> BaoServer {
        BaoServer { cluster: Cluster::of(1) }
    }

    /// Kills the server (SIGKILL): requests are refused until [`BaoServer::restart`].
    pub fn stop(&mut self) {
        self.cluster.kill(0);
    }

    /// Starts the server again on the same port with the same storage, unseals it and waits
    /// until it is active.
    pub fn restart(&mut self) {
        self.cluster.restart(0);
        self.cluster.wait_active(Duration::from_secs(30));
    }

    /// The server's output (stdout and stderr, every run appended).
    pub fn log(&self) -> String {
        self.cluster.log(0)
    }
}

impl Deref for BaoServer {
    type Target = Bao;

    fn deref(&self) -> &Bao {
        &self.cluster.nodes[0].bao
    }
}

/// A database username and password read from a mount. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Creds {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creds").field("user", &self.user).finish_non_exhaustive()
    }
}

/// Logs in to the local PostgreSQL over TCP with `creds` and runs `select 1`. The password goes
/// through the environment of psql only; the error is psql's stderr (which never holds it).
pub fn pg_login(creds: &Creds) -> Result<(), String> {
    let out = Command::new("psql")
        .env("PGPASSWORD", &creds.password)
        .env("PGCONNECT_TIMEOUT", "5")
        .env_remove("PGSERVICE")
        .stdin(Stdio::null())
        .args(["-XAtqw", "-h", "127.0.0.1", "-d", "postgres", "-c", "select 1", "-U"])
        .arg(&creds.user)
        .output()
        .expect("psql");
    if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1" {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Runs `vault-secrets-plugin ARGS --config CONFIG` (the admin commands reach the plugin through
/// its admin socket, found from the configuration).
pub fn plugin_cli(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_SECRETS_CONFIG")
        .output()
        .expect("run vault-secrets-plugin")
}

/// `status --json` of `plugin`, parsed; panics (with the command's stderr) if it fails.
pub fn status(plugin: &Plugin) -> Value {
    let out = plugin_cli(&plugin.config, &["status", "--json"]);
    assert!(
        out.status.success(),
        "status --json failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("status --json is not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

/// The mounts of `volume` in a `status --json` answer (none if the volume is not listed).
pub fn status_mounts(status: &Value, volume: &str) -> Vec<Value> {
    status["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["name"] == volume)
        .flat_map(|v| v["mounts"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// A PKI engine at `pki/` with a root CA (`test-root`) and a role `name` for `*.internal`
/// issuing certificates of `ttl` (without leases: `generate_lease` stays false).
pub fn pki_role(bao: &Bao, name: &str, ttl: &str) {
    bao.api(
        "POST",
        "sys/mounts/pki",
        Some(json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}})),
    );
    bao.api(
        "POST",
        "pki/root/generate/internal",
        Some(
            json!({"common_name": "test-root", "ttl": "87600h", "key_type": "ec", "key_bits": 256}),
        ),
    );
    // EC keys: an issue takes a millisecond, where an RSA key pair can take seconds on a loaded
    // machine and run into the plugin's request timeout.
    let role = json!({"allowed_domains": "internal", "allow_subdomains": true, "ttl": ttl,
                      "max_ttl": "1000h", "key_type": "ec", "key_bits": 256});
    bao.api("POST", &format!("pki/roles/{name}"), Some(role));
}
