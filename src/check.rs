//! `check`: the configuration is valid (already, to get here), Vault answers, the identity
//! works, the engines answer, mounts can be kept out of swap. Each line of the report is a
//! [`Finding`]: what works, or a warning (the check still passes); a failure is an error that
//! says what is wrong.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::{AuthConfig, Config};
use crate::daemon::{engines, RuntimeDirs};
use crate::dockerd::{Engine, EngineKind};
use crate::report::Finding;
use crate::state::IdentityRecord;
use crate::tmpfs::{LinuxMounter, Mounter};
use crate::vault::credentials::{load_client_certificate, load_jwt, load_secret_file};
use crate::vault::{HttpVault, Login, Vault};

/// `check`: the configuration is valid (already, to get here), Vault answers, the identity
/// works. Consumes nothing and creates nothing: a wrapped secret_id is looked up, not unwrapped;
/// the token a running plugin keeps is read only where its private tmpfs is mounted.
pub async fn check(config: &Config) -> anyhow::Result<Vec<Finding>> {
    let vault = HttpVault::new(&config.vault)?;
    let private = RuntimeDirs::of(config).private;
    let kept = LinuxMounter::default()
        .is_mounted(&private)
        .then(|| crate::state::peek_identity(&private))
        .flatten();
    let mut report = check_with(config, &vault, kept).await?;
    report.extend(check_engines(&engines(config), &config.plugin.driver_name()).await);
    report.push(crate::swap::check_here());
    Ok(report)
}

/// What `check` says of each engine: it answers (and how many of its containers use the
/// plugin's volumes), or it cannot be asked — a warning, but for Podman's default socket where
/// no Podman API service runs (a host without Podman).
pub async fn check_engines<G: Engine>(engines: &[Arc<G>], driver: &str) -> Vec<Finding> {
    let mut report = Vec::new();
    if engines.is_empty() {
        report.push(Finding::Warning("no container engine is configured (plugin.engines = []): nothing is signalled, mounts end only at their Unmount".into()));
    }
    for engine in engines {
        let name = engine.name();
        match engine.volume_mounts(driver).await {
            Ok(mounts) => {
                let mut containers: Vec<&str> = mounts.iter().map(|m| m.container_id.as_str()).collect();
                containers.sort_unstable();
                containers.dedup();
                let kind = format!("{:?}", engine.kind()).to_lowercase();
                report.push(Finding::Ok(format!(
                    "engine {name} ({kind}) answers; {} of its containers use the plugin's volumes",
                    containers.len()
                )));
                if engine.kind() != EngineKind::Podman {
                    report.extend(crate::dockerd::userns::check_line(name, engine.id_map().await));
                }
            }
            Err(_) if engine.kind() == EngineKind::Podman && !Path::new(name).exists() => {
                report.push(Finding::Ok(format!("no Podman API service at {name}: needed only if Podman uses the plugin (podman.socket, or `podman system service --time=0 unix://{name}`)")));
            }
            Err(e) => report.push(Finding::Warning(format!(
                "engine {name} cannot be asked ({}): its containers' mounts are neither signalled nor released by the sweep, and end at their Unmount",
                crate::report::chain(&e)
            ))),
        }
    }
    report
}

/// What `check` does, over any [`Vault`]: every failure is an error that says what is wrong;
/// the report says which identity `serve` would use.
pub async fn check_with<V: Vault>(
    config: &Config,
    vault: &V,
    kept: Option<IdentityRecord>,
) -> anyhow::Result<Vec<Finding>> {
    let mut report = vec![Finding::Ok(format!(
        "configuration is valid; driver name {}",
        config.plugin.driver_name()
    ))];
    let states = vault.nodes().await;
    let nodes: Vec<String> =
        states.iter().map(|n| format!("vault node {}: {}", n.address, n.state)).collect();
    vault.health().await.map_err(|e| {
        anyhow::anyhow!("vault health: {}{}", crate::report::chain(&e), node_list(&nodes))
    })?;
    report.extend(nodes.iter().cloned().map(Finding::Ok));
    if states.len() > 1 && !states.iter().any(|n| n.state == crate::vault::NodeState::Active) {
        report.push(Finding::Warning("no listed node is active: a leader election, or the active node is not in vault.address (standbys forward to it)".into()));
    }
    report.push(Finding::Ok(format!("vault at {} answers, unsealed", config.vault.address)));
    report.extend(
        crate::config::plain_http_warnings(&config.vault.address).into_iter().map(Finding::Warning),
    );
    let mut serve_uses = "the configured identity";
    if let Some(kept) = &kept {
        // What `serve` does: carry on with the kept token while it is valid, else log in anew.
        match vault.lookup_self(&kept.token).await {
            Ok(info) => {
                report.push(Finding::Ok(format!(
                    "the token kept by a running plugin (private tmpfs) is valid (ttl {})",
                    describe_ttl(info.ttl)
                )));
                serve_uses = "the kept token until it expires, then the configured identity";
            }
            Err(e) => report.push(Finding::Ok(format!(
                "the token kept from an earlier run is no longer valid ({})",
                crate::report::chain(&e)
            ))),
        }
    }
    // The configured identity is checked whatever is kept: it is what a restart after the kept
    // token expires, or after a reboot, depends on.
    match &config.vault.auth {
        AuthConfig::Token { token_file } => {
            let token = load_secret_file("token", token_file).await?;
            report.extend(exposed("token", token_file));
            let info = vault
                .lookup_self(&token)
                .await
                .with_context(|| format!("the token in {}", token_file.display()))?;
            report.push(Finding::Ok(format!(
                "the token in {} is valid (ttl {})",
                token_file.display(),
                describe_ttl(info.ttl)
            )));
        }
        AuthConfig::AppRole { role_id_file, secret_id_file, secret_id_wrapped } => {
            load_secret_file("role_id", role_id_file).await?;
            report.extend(exposed("role_id", role_id_file));
            let kept_secret_id = kept.as_ref().is_some_and(|k| k.secret_id.is_some());
            if *secret_id_wrapped && kept_secret_id && !secret_id_file.exists() {
                report.push(Finding::Ok(format!(
                    "the secret_id was unwrapped by the running plugin and is kept in its private tmpfs; after a reboot, {} needs a fresh wrapped secret_id",
                    secret_id_file.display()
                )));
                report.push(Finding::Ok(format!("serve would use {serve_uses}")));
                return Ok(report);
            }
            let role_id = load_secret_file("role_id", role_id_file).await?;
            let secret = load_secret_file("secret_id", secret_id_file).await?;
            report.extend(exposed("secret_id", secret_id_file));
            if *secret_id_wrapped {
                vault.wrapping_creation_path(&secret).await.with_context(|| {
                    format!(
                        "the wrapping token in {} is used, expired or unknown",
                        secret_id_file.display()
                    )
                })?;
                report.push(Finding::Ok(format!(
                    "the wrapping token in {} is valid and unused",
                    secret_id_file.display()
                )));
            } else {
                let probe = vault
                    .approle_login(role_id.expose(), &secret)
                    .await
                    .context("AppRole login with the role_id and secret_id files")?;
                let _ = vault.revoke_self(&probe.token).await;
                report.push(Finding::Ok(format!(
                    "AppRole login works (ttl {})",
                    describe_ttl(probe.ttl)
                )));
            }
        }
        AuthConfig::Cert { client_cert, client_key, role, mount } => {
            load_client_certificate(client_cert, client_key).await?;
            report.push(Finding::Ok(format!(
                "the client certificate {} and its key {} parse and match",
                client_cert.display(),
                client_key.display()
            )));
            report.extend(exposed("client key", client_key));
            let login = Login::Cert { mount, role: role.as_deref() };
            report.push(probe_login(vault, &login, "certificate").await?);
        }
        AuthConfig::Jwt { jwt_file, role, mount } => {
            let jwt = load_jwt(jwt_file).await?;
            report.extend(exposed("JWT", jwt_file));
            let login = Login::Jwt { mount, role, jwt: &jwt };
            report.push(probe_login(vault, &login, "JWT").await?);
        }
    }
    report.push(Finding::Ok(format!("serve would use {serve_uses}")));
    Ok(report)
}

/// Logs in as `serve` would, and revokes the token at once; the error is Vault's reason.
async fn probe_login<V: Vault>(
    vault: &V,
    login: &Login<'_>,
    method: &str,
) -> anyhow::Result<Finding> {
    let role = match login {
        Login::Cert { role: Some(role), .. } | Login::Jwt { role, .. } => format!(", role {role}"),
        Login::Cert { role: None, .. } => String::new(),
    };
    let probe = vault
        .login(login)
        .await
        .with_context(|| format!("{method} login at {}{role}", login.path()))?;
    let _ = vault.revoke_self(&probe.token).await;
    Ok(Finding::Ok(format!(
        "{method} login at {}{role} works (ttl {})",
        login.path(),
        describe_ttl(probe.ttl)
    )))
}

/// `; nodes: …` for an error, when there are nodes to tell apart.
fn node_list(nodes: &[String]) -> String {
    if nodes.is_empty() {
        return String::new();
    }
    format!("; {}", nodes.join("; "))
}

/// A warning when a file of the identity may be read or written by anyone but its owner (the
/// check still passes: the plugin can use it, but so may others).
fn exposed(what: &str, path: &Path) -> Option<Finding> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o066 != 0).then(|| {
        Finding::Warning(format!(
            "the {what} file {} has mode {mode:04o}: others than its owner may read or change it; chmod 0600 it (and write such files with `umask 077` or `install -m 0600`)",
            path.display()
        ))
    })
}

fn describe_ttl(ttl: Duration) -> String {
    if ttl.is_zero() {
        "none: it does not expire".into()
    } else {
        crate::report::duration(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use crate::vault::fake::FakeVault;
    use crate::vault::Token;

    /// The report as `check` prints it.
    fn printed(report: Vec<Finding>) -> Vec<String> {
        report.iter().map(ToString::to_string).collect()
    }

    fn config(token_file: &Path) -> Config {
        let text = format!(
            "[vault]\naddress = \"http://127.0.0.1:8200\"\n[vault.auth]\nmethod = \"token\"\ntoken_file = \"{}\"\n",
            token_file.display()
        );
        Config::parse(&text, &Overrides::default()).unwrap()
    }

    fn kept(token: &str) -> Option<IdentityRecord> {
        Some(IdentityRecord { token: Token::new(token.into()), secret_id: None })
    }

    #[tokio::test]
    async fn check_fails_on_a_broken_configured_identity_even_with_a_valid_kept_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "bad-token").unwrap();
        let vault = FakeVault::default();
        vault.knows("kept-token", Duration::from_secs(600));
        let e = check_with(&config(&file), &vault, kept("kept-token")).await.unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains(&file.display().to_string()) && e.contains("permission denied"), "{e}");
        let missing = dir.path().join("missing");
        let e = check_with(&config(&missing), &vault, kept("kept-token")).await.unwrap_err();
        assert!(format!("{e:#}").contains("cannot read token"), "{e:#}");
    }

    #[tokio::test]
    async fn check_warns_of_a_secret_file_others_may_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "good-token").unwrap();
        let vault = FakeVault::default();
        vault.knows("good-token", Duration::from_secs(600));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let report = printed(check_with(&config(&file), &vault, None).await.unwrap());
        let warning = format!("warning: the token file {} has mode 0644", file.display());
        assert!(report.iter().any(|l| l.starts_with(&warning) && l.contains("chmod 0600")));
        assert!(!report.iter().any(|l| l.contains("good-token")), "{report:?}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let report = printed(check_with(&config(&file), &vault, None).await.unwrap());
        assert!(!report.iter().any(|l| l.contains("warning")), "{report:?}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o620)).unwrap();
        let report = printed(check_with(&config(&file), &vault, None).await.unwrap());
        assert!(report.iter().any(|l| l.contains("mode 0620")), "{report:?}");
    }

    #[tokio::test]
    async fn check_says_which_identity_serve_would_use() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "good-token").unwrap();
        let vault = FakeVault::default();
        vault.knows("good-token", Duration::from_secs(600));
        vault.knows("kept-token", Duration::from_secs(60));
        let report = printed(check_with(&config(&file), &vault, None).await.unwrap());
        assert_eq!(report.last().unwrap(), "ok: serve would use the configured identity");
        let report = printed(check_with(&config(&file), &vault, kept("kept-token")).await.unwrap());
        assert!(report.iter().any(|l| l.contains("kept by a running plugin") && l.contains("1m")));
        assert!(report.last().unwrap().contains("the kept token until it expires"));
        let report = printed(check_with(&config(&file), &vault, kept("gone-token")).await.unwrap());
        assert!(report.iter().any(|l| l.contains("no longer valid")), "{report:?}");
        assert_eq!(report.last().unwrap(), "ok: serve would use the configured identity");
        vault.sealed.store(true, std::sync::atomic::Ordering::SeqCst);
        let e = check_with(&config(&file), &vault, None).await.unwrap_err();
        assert!(format!("{e:#}").contains("vault health") && format!("{e:#}").contains("sealed"));
    }

    #[tokio::test]
    async fn check_warns_of_plain_http_off_loopback_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "good-token").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let vault = FakeVault::default();
        vault.knows("good-token", Duration::from_secs(600));
        let report = printed(check_with(&config(&file), &vault, None).await.unwrap());
        assert!(!report.iter().any(|l| l.contains("warning")), "loopback is silent: {report:?}");
        let mut remote = config(&file);
        remote.vault.address =
            crate::config::Addresses::parse("vault.address", &["http://10.0.0.1:8200"]).unwrap();
        let report = printed(check_with(&remote, &vault, None).await.unwrap());
        assert!(
            report.iter().any(|l| l
                .starts_with("warning: vault address http://10.0.0.1:8200 is plain http")
                && l.contains("unencrypted")),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn check_says_which_engines_answer() {
        use crate::dockerd::FakeEngine;
        let docker = Arc::new(FakeEngine::named("/var/run/docker.sock", EngineKind::Docker));
        docker.runs("c1", "app", "/s", "0:40");
        docker.runs("c1", "db", "/d", "0:41");
        let podman = Arc::new(FakeEngine::named("/nonexistent/podman.sock", EngineKind::Podman));
        podman.unreachable.store(true, std::sync::atomic::Ordering::SeqCst);
        let other = Arc::new(FakeEngine::named("/run/other.sock", EngineKind::Unknown));
        other.unreachable.store(true, std::sync::atomic::Ordering::SeqCst);
        let remapping = Arc::new(FakeEngine::named("/run/remap.sock", EngineKind::Docker));
        *remapping.id_map.lock().unwrap() =
            Some(crate::dockerd::userns::IdMap::single(100000, 100000, 65536));
        let report =
            printed(check_engines(&[docker, podman, other, remapping], "vault-secrets").await);
        assert_eq!(report[0], "ok: engine /var/run/docker.sock (docker) answers; 1 of its containers use the plugin's volumes");
        assert!(report[4].starts_with("ok: engine /run/remap.sock remaps user namespaces (container root is host 100000:100000"), "{report:?}");
        assert!(
            report[1].starts_with("ok: no Podman API service at /nonexistent/podman.sock"),
            "{report:?}"
        );
        assert!(
            report[2].starts_with("warning: engine /run/other.sock cannot be asked"),
            "{report:?}"
        );
        let none = check_engines::<FakeEngine>(&[], "vault-secrets").await;
        assert!(
            none[0].is_warning() && none[0].text().starts_with("no container engine"),
            "{none:?}"
        );
    }

    #[tokio::test]
    async fn check_reports_a_jwt_identity_s_problems() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token.jwt");
        let text = format!(
            "[vault.auth]\nmethod = \"jwt\"\njwt_file = \"{}\"\nrole = \"hosts\"\n",
            file.display()
        );
        let config = Config::parse(&text, &Overrides::default()).unwrap();
        let vault = FakeVault::default();
        let e = format!("{:#}", check_with(&config, &vault, None).await.unwrap_err());
        assert!(
            e.contains("cannot read JWT from") && e.contains(&file.display().to_string()),
            "{e}"
        );
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJuIn0.c2ln";
        std::fs::write(&file, jwt).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", check_with(&config, &vault, None).await.unwrap_err());
        assert!(
            e.starts_with("JWT login at auth/jwt/login, role hosts: ")
                && e.contains("invalid audience"),
            "vault's reason: {e}"
        );
        *vault.jwt.lock().unwrap() = jwt.into();
        let report = printed(check_with(&config, &vault, None).await.unwrap());
        assert!(
            report.iter().any(|l| l.starts_with("warning: the JWT file") && l.contains("0644")),
            "{report:?}"
        );
        assert!(
            report
                .iter()
                .any(|l| l.starts_with("ok: JWT login at auth/jwt/login, role hosts works")),
            "{report:?}"
        );
        assert!(vault.tokens.lock().unwrap().is_empty(), "the probe's token was revoked");
        assert!(!report.iter().any(|l| l.contains(jwt)), "{report:?}");
    }
}
