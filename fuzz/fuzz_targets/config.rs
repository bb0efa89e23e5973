//! Configuration under hostile input: any text parsed as the TOML configuration, with any
//! environment overrides. Nothing panics; an accepted configuration has absolute paths without
//! `..`, a driver name Docker accepts, a Vault address the client can join `v1/` to, a timeout
//! within bounds and defaults a volume could have asked for.

#![no_main]

use std::path::{Component, Path};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vault_secrets::config::{AuthConfig, Config, ConfigError, Overrides};
use vault_secrets::volume::{valid_volume_name, MAX_SIZE};

#[derive(Arbitrary, Debug)]
struct Input {
    text: String,
    vault_addr: Option<String>,
    vault_cacert: Option<String>,
    vault_namespace: Option<String>,
}

/// A role name goes into a login body: bounded, no `/`, no control characters.
fn auth_role(role: &str) {
    assert!(!role.is_empty() && role.len() <= 256, "role {role:?}");
    assert!(!role.chars().any(|c| c.is_control() || c == '/'), "role {role:?}");
}

/// An auth mount goes into the login's URL, segment by segment: no empty, `.` or `..` segment.
fn auth_mount(mount: &str) {
    assert!(mount.len() <= 256, "mount {mount:?}");
    for s in mount.split('/') {
        assert!(!s.is_empty() && s != "." && s != "..", "mount {mount:?}");
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "{mount:?}");
    }
}

fn clean(path: &Path) {
    assert!(path.is_absolute(), "{path:?}");
    assert!(!path.components().any(|c| c == Component::ParentDir), "{path:?}");
}

fuzz_target!(|input: Input| {
    let overrides = Overrides {
        vault_addr: input.vault_addr,
        vault_cacert: input.vault_cacert,
        vault_namespace: input.vault_namespace,
    };
    let config = match Config::parse(&input.text, &overrides) {
        Ok(config) => config,
        Err(e) => {
            match &e {
                ConfigError::Invalid { key, message } => {
                    assert!(!key.is_empty() && !message.is_empty(), "{e}")
                }
                ConfigError::Parse { message, .. } => assert!(!message.is_empty(), "{e}"),
                ConfigError::Defaults(o) => assert!(!o.message.is_empty(), "{e}"),
                ConfigError::Read { .. } => panic!("parse reads no file: {e}"),
            }
            return;
        }
    };
    let p = &config.plugin;
    for path in [&p.socket, &p.state_dir, &p.runtime_dir, &p.admin_socket, &p.templates_dir] {
        clean(path);
    }
    if let Some(path) = &p.audit_log {
        clean(path);
    }
    assert!(valid_volume_name(&p.driver_name()), "driver name {:?}", p.driver_name());
    let v = &config.vault;
    assert!(!v.address.is_empty());
    for address in v.address.iter() {
        assert!(matches!(address.scheme(), "http" | "https"), "{address}");
        assert!(address.host_str().is_some_and(|h| !h.is_empty()), "{address}");
        assert_eq!(address.path(), "/", "{address}");
        let api = address.join("v1/").expect("HttpVault::new joins v1/ to the address");
        assert_eq!(api.path(), "/v1/", "{api}");
    }
    if let Some(ca) = &v.ca_cert {
        clean(ca);
    }
    if let Some(ns) = &v.namespace {
        assert!(!ns.is_empty() && !ns.contains(|c: char| c.is_control() || c.is_whitespace()));
    }
    assert!(v.timeout >= Duration::from_millis(100) && v.timeout <= Duration::from_secs(300));
    match &v.auth {
        AuthConfig::Token { token_file } => clean(token_file),
        AuthConfig::AppRole { role_id_file, secret_id_file, .. } => {
            clean(role_id_file);
            clean(secret_id_file);
        }
        AuthConfig::Cert { client_cert, client_key, role, mount } => {
            clean(client_cert);
            clean(client_key);
            role.iter().for_each(|r| auth_role(r));
            auth_mount(mount);
            assert!(v.address.iter().all(|a| a.scheme() == "https"), "cert over {}", v.address);
        }
        AuthConfig::Jwt { jwt_file, role, mount } => {
            clean(jwt_file);
            auth_role(role);
            auth_mount(mount);
        }
    }
    let d = &config.defaults;
    assert!(d.mode <= 0o777 && d.mode & 0o111 == 0, "mode {:o}", d.mode);
    assert!((4096..=MAX_SIZE).contains(&d.size), "size {}", d.size);
});
