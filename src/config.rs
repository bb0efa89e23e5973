//! Configuration: a strict raw TOML structure, validated into a typed [`Config`].
//!
//! Unknown keys are refused by name (`deny_unknown_fields`); every path and duration is checked
//! here, before any client or socket sees it. `VAULT_ADDR`, `VAULT_CACERT` and `VAULT_NAMESPACE`
//! override the file, as they do for the Vault CLI.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::volume::{Defaults, OptionError};

mod plain_http;
pub use plain_http::plain_http_warnings;
mod userns;

/// Where the configuration is read from when neither `--config` nor `VAULT_SECRETS_CONFIG` says.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vault-secrets/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
    /// A `[defaults]` value, refused as the volume option of the same name would be: the
    /// message is the option's, once (not also as a source).
    #[error("configuration key `defaults.{}`: {}", .0.option, .0.message)]
    Defaults(OptionError),
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), message: message.into() }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    plugin: RawPlugin,
    #[serde(default)]
    vault: RawVault,
    #[serde(default)]
    defaults: HashMap<String, toml::Value>,
    userns: Option<userns::RawUserns>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    runtime_dir: Option<PathBuf>,
    admin_socket: Option<PathBuf>,
    metrics_listen: Option<String>,
    templates_dir: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    engines: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVault {
    /// A string, or a list of strings (the nodes of a cluster).
    address: Option<toml::Value>,
    ca_cert: Option<PathBuf>,
    namespace: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    auth: RawAuth,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    method: Option<String>,
    role_id_file: Option<PathBuf>,
    secret_id_file: Option<PathBuf>,
    secret_id_wrapped: Option<bool>,
    token_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    jwt_file: Option<PathBuf>,
    role: Option<String>,
    mount: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub plugin: PluginConfig,
    pub vault: VaultConfig,
    pub defaults: Defaults,
    /// `[userns]`: the Docker engines' user namespace remapping, where they do not tell it.
    pub userns: Option<crate::dockerd::userns::IdMap>,
}

#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// The Docker plugin socket; its file stem is the driver name.
    pub socket: PathBuf,
    /// Volume definitions (never a secret or a token).
    pub state_dir: PathBuf,
    /// Per-mount tmpfs mounts and the private tmpfs live below it.
    pub runtime_dir: PathBuf,
    pub admin_socket: PathBuf,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub templates_dir: PathBuf,
    pub audit_log: Option<PathBuf>,
    /// The API sockets of the container engines whose containers use the plugin's volumes;
    /// `None`: the default (`DOCKER_HOST` or the Docker socket, and Podman's).
    pub engines: Option<Vec<PathBuf>>,
}

impl PluginConfig {
    /// The driver name Docker knows this plugin by: the socket file's stem.
    pub fn driver_name(&self) -> String {
        self.socket.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// The node or nodes of the cluster, in the configured order.
    pub address: Addresses,
    pub ca_cert: Option<PathBuf>,
    pub namespace: Option<String>,
    pub timeout: Duration,
    pub auth: AuthConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    Token {
        token_file: PathBuf,
    },
    AppRole {
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
        secret_id_wrapped: bool,
    },
    /// TLS certificate auth: the client certificate presented on the connection logs in at
    /// `auth/MOUNT/login` (`name` = `role` when given).
    Cert {
        client_cert: PathBuf,
        client_key: PathBuf,
        role: Option<String>,
        mount: String,
    },
    /// JWT auth: the JWT in `jwt_file`, read again at every login, for `role`.
    Jwt {
        jwt_file: PathBuf,
        role: String,
        mount: String,
    },
}

/// Vault's address, or the addresses of a cluster's nodes: base URLs, each validated (`http`
/// or `https`, a host, no path beyond `/`), at least one, none twice. A token only ever goes to
/// one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses(Vec<reqwest::Url>);

impl Addresses {
    /// Checks every address of `list`; `key` names where the list came from.
    pub fn parse<S: AsRef<str>>(key: &str, list: &[S]) -> Result<Addresses, ConfigError> {
        if list.is_empty() {
            return Err(invalid(key, "the list is empty; give at least one http(s)://host:port"));
        }
        let mut urls: Vec<reqwest::Url> = Vec::with_capacity(list.len());
        for s in list {
            let url = parse_vault_address(key, s.as_ref().trim())?;
            if urls.iter().any(|u| u.origin() == url.origin()) {
                return Err(invalid(key, format!("`{}` is given twice", s.as_ref().trim())));
            }
            urls.push(url);
        }
        Ok(Addresses(urls))
    }

    pub fn iter(&self) -> impl Iterator<Item = &reqwest::Url> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: there is at least one address.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Addresses {
    /// The addresses as configured, comma-separated (as `VAULT_ADDR` takes them).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, url) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{}", url.as_str().trim_end_matches('/'))?;
        }
        Ok(())
    }
}

/// The environment variables that override the file; passed in so tests need not touch the
/// process environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub vault_addr: Option<String>,
    pub vault_cacert: Option<String>,
    pub vault_namespace: Option<String>,
}

impl Overrides {
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Overrides {
            vault_addr: var("VAULT_ADDR"),
            vault_cacert: var("VAULT_CACERT"),
            vault_namespace: var("VAULT_NAMESPACE"),
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse(&text, overrides).map_err(|e| match e {
            ConfigError::Parse { message, .. } => {
                ConfigError::Parse { path: path.to_owned(), message }
            }
            other => other,
        })
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.message().to_owned() + &span_hint(text, e.span()),
        })?;
        Ok(Config {
            plugin: validate_plugin(raw.plugin)?,
            vault: validate_vault(raw.vault, overrides)?,
            defaults: validate_defaults(&raw.defaults)?,
            userns: raw.userns.map(userns::validate).transpose()?,
        })
    }
}

fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

fn absolute(key: &str, value: Option<PathBuf>, default: &str) -> Result<PathBuf, ConfigError> {
    let path = value.unwrap_or_else(|| PathBuf::from(default));
    if !path.is_absolute() {
        return Err(invalid(key, format!("`{}` is not an absolute path", path.display())));
    }
    if path.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(invalid(key, format!("`{}` contains `..`", path.display())));
    }
    Ok(path)
}

fn validate_plugin(raw: RawPlugin) -> Result<PluginConfig, ConfigError> {
    let socket = absolute("plugin.socket", raw.socket, "/run/docker/plugins/vault-secrets.sock")?;
    let stem_ok = socket
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".sock"))
        .is_some_and(crate::volume::valid_volume_name);
    if !stem_ok {
        return Err(invalid(
            "plugin.socket",
            "the file name must be NAME.sock, NAME being the driver name (letters, digits, `_`, `.`, `-`)",
        ));
    }
    let runtime_dir = absolute("plugin.runtime_dir", raw.runtime_dir, "/run/vault-secrets")?;
    let admin_socket = match raw.admin_socket {
        Some(p) => absolute("plugin.admin_socket", Some(p), "")?,
        None => runtime_dir.join("admin.sock"),
    };
    let metrics_listen = raw
        .metrics_listen
        .map(|s| {
            s.parse().map_err(|_| {
                invalid(
                    "plugin.metrics_listen",
                    format!("`{s}` is not an IP address and port such as 127.0.0.1:9479"),
                )
            })
        })
        .transpose()?;
    Ok(PluginConfig {
        socket,
        state_dir: absolute("plugin.state_dir", raw.state_dir, "/var/lib/vault-secrets")?,
        runtime_dir,
        admin_socket,
        metrics_listen,
        templates_dir: absolute(
            "plugin.templates_dir",
            raw.templates_dir,
            "/etc/vault-secrets/templates",
        )?,
        audit_log: raw.audit_log.map(|p| absolute("plugin.audit_log", Some(p), "")).transpose()?,
        engines: raw.engines.map(|list| engine_sockets(&list)).transpose()?,
    })
}

/// `plugin.engines`: each an API socket, `unix:///path` or `/path`; none twice.
fn engine_sockets(list: &[String]) -> Result<Vec<PathBuf>, ConfigError> {
    const KEY: &str = "plugin.engines";
    let mut sockets: Vec<PathBuf> = Vec::with_capacity(list.len());
    for entry in list {
        let path = match entry.split_once("://") {
            Some(("unix", path)) => path,
            Some(_) => {
                return Err(invalid(
                    KEY,
                    format!(
                    "`{entry}`: only an engine's Unix socket is accepted (unix:///path or /path)"
                ),
                ))
            }
            None => entry.as_str(),
        };
        let path = absolute(KEY, Some(PathBuf::from(path)), "")?;
        if sockets.contains(&path) {
            return Err(invalid(KEY, format!("`{}` is given twice", path.display())));
        }
        sockets.push(path);
    }
    Ok(sockets)
}

/// Checks a Vault address: `http(s)://host[:port]`, nothing after the authority.
pub fn parse_vault_address(key: &str, s: &str) -> Result<reqwest::Url, ConfigError> {
    let url = reqwest::Url::parse(s.trim_end_matches('/')).map_err(|e| {
        invalid(key, format!("`{s}` is not a URL ({e}); expected http(s)://host:port"))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(key, format!("`{s}`: the scheme must be http or https")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(key, format!("`{s}` has no host")));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            key,
            format!("`{s}` must not have a path, query or fragment; the plugin adds /v1/…"),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(key, "credentials do not belong in the address"));
    }
    Ok(url)
}

fn validate_vault(raw: RawVault, overrides: &Overrides) -> Result<VaultConfig, ConfigError> {
    let address = match (&overrides.vault_addr, raw.address) {
        // The Vault CLI takes one address; a comma cannot be part of one, so a list is unambiguous.
        (Some(a), _) => Addresses::parse("VAULT_ADDR", &a.split(',').collect::<Vec<_>>())?,
        (None, None) => Addresses::parse("vault.address", &["http://127.0.0.1:8200"])?,
        (None, Some(toml::Value::String(a))) => Addresses::parse("vault.address", &[a])?,
        (None, Some(toml::Value::Array(list))) => {
            let list = list
                .iter()
                .map(|v| v.as_str().ok_or_else(|| v.type_str()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|found| {
                    invalid(
                        "vault.address",
                        format!("every entry must be a string such as \"http://10.0.0.1:8200\"; found {found}"),
                    )
                })?;
            Addresses::parse("vault.address", &list)?
        }
        (None, Some(other)) => {
            return Err(invalid(
                "vault.address",
                format!(
                    "expected a string or a list of strings (the nodes of a cluster), found {}",
                    other.type_str()
                ),
            ))
        }
    };
    let ca_cert = match &overrides.vault_cacert {
        Some(p) => Some(absolute("VAULT_CACERT", Some(PathBuf::from(p)), "")?),
        None => raw.ca_cert.map(|p| absolute("vault.ca_cert", Some(p), "")).transpose()?,
    };
    let namespace = overrides.vault_namespace.clone().or(raw.namespace).filter(|n| !n.is_empty());
    if let Some(ns) = &namespace {
        if ns.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid(
                "vault.namespace",
                "must not contain spaces or control characters",
            ));
        }
    }
    let timeout = match raw.timeout {
        Some(t) => parse_duration("vault.timeout", &t)?,
        None => Duration::from_secs(10),
    };
    if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(300) {
        return Err(invalid("vault.timeout", "must be between 100ms and 5m"));
    }
    let auth = validate_auth(raw.auth)?;
    if matches!(auth, AuthConfig::Cert { .. }) {
        if let Some(plain) = address.iter().find(|a| a.scheme() != "https") {
            let key = if overrides.vault_addr.is_some() { "VAULT_ADDR" } else { "vault.address" };
            return Err(invalid(
                key,
                format!("`{plain}`: method \"cert\" logs in with a TLS client certificate, which only an https:// address carries; give vault's https address"),
            ));
        }
    }
    Ok(VaultConfig { address, ca_cert, namespace, timeout, auth })
}

/// The keys of `[vault.auth]` each method takes, for the errors.
const METHODS: [(&str, &[&str]); 4] = [
    ("approle", &["role_id_file", "secret_id_file", "secret_id_wrapped"]),
    ("token", &["token_file"]),
    ("cert", &["client_cert", "client_key", "role", "mount"]),
    ("jwt", &["jwt_file", "role", "mount"]),
];

fn validate_auth(raw: RawAuth) -> Result<AuthConfig, ConfigError> {
    let method = raw.method.as_deref().unwrap_or("approle");
    let Some((_, takes)) = METHODS.iter().find(|(name, _)| *name == method) else {
        return Err(invalid(
            "vault.auth.method",
            format!(
                "`{method}` is not a method; accepted: \"approle\", \"token\", \"cert\", \"jwt\""
            ),
        ));
    };
    let given = [
        ("role_id_file", raw.role_id_file.is_some()),
        ("secret_id_file", raw.secret_id_file.is_some()),
        ("secret_id_wrapped", raw.secret_id_wrapped.is_some()),
        ("token_file", raw.token_file.is_some()),
        ("client_cert", raw.client_cert.is_some()),
        ("client_key", raw.client_key.is_some()),
        ("jwt_file", raw.jwt_file.is_some()),
        ("role", raw.role.is_some()),
        ("mount", raw.mount.is_some()),
    ];
    if let Some((key, _)) = given.iter().find(|(key, set)| *set && !takes.contains(key)) {
        let owners: Vec<String> = METHODS
            .iter()
            .filter(|(_, keys)| keys.contains(key))
            .map(|(name, _)| format!("\"{name}\""))
            .collect();
        return Err(invalid(
            &format!("vault.auth.{key}"),
            format!(
                "belongs to method {}; method \"{method}\" takes {}",
                owners.join(" and "),
                takes.join(", ")
            ),
        ));
    }
    let required = |key: &str, value: Option<PathBuf>| match value {
        Some(path) => absolute(&format!("vault.auth.{key}"), Some(path), ""),
        None => Err(invalid(
            &format!("vault.auth.{key}"),
            format!("method \"{method}\" needs it; it takes {}", takes.join(", ")),
        )),
    };
    let mount = || auth_mount(raw.mount.as_deref().unwrap_or(method));
    match method {
        "token" => Ok(AuthConfig::Token {
            token_file: absolute(
                "vault.auth.token_file",
                raw.token_file,
                "/etc/vault-secrets/token",
            )?,
        }),
        "approle" => Ok(AuthConfig::AppRole {
            role_id_file: absolute(
                "vault.auth.role_id_file",
                raw.role_id_file,
                "/etc/vault-secrets/role-id",
            )?,
            secret_id_file: absolute(
                "vault.auth.secret_id_file",
                raw.secret_id_file,
                "/etc/vault-secrets/secret-id",
            )?,
            secret_id_wrapped: raw.secret_id_wrapped.unwrap_or(true),
        }),
        "cert" => Ok(AuthConfig::Cert {
            client_cert: required("client_cert", raw.client_cert.clone())?,
            client_key: required("client_key", raw.client_key.clone())?,
            role: raw.role.as_deref().map(auth_role).transpose()?,
            mount: mount()?,
        }),
        _ => Ok(AuthConfig::Jwt {
            jwt_file: required("jwt_file", raw.jwt_file.clone())?,
            role: match raw.role.as_deref() {
                Some(role) => auth_role(role)?,
                None => return Err(invalid(
                    "vault.auth.role",
                    "method \"jwt\" needs the role to log in as; it takes jwt_file, role, mount",
                )),
            },
            mount: mount()?,
        }),
    }
}

/// An auth role name: sent in the login's JSON body, so only its shape is checked.
fn auth_role(role: &str) -> Result<String, ConfigError> {
    if role.is_empty() || role.len() > 256 || role.chars().any(|c| c.is_control() || c == '/') {
        return Err(invalid(
            "vault.auth.role",
            "must be 1 to 256 characters, without `/` or control characters",
        ));
    }
    Ok(role.to_owned())
}

/// The path an auth method is mounted at below `auth/`: `cert`, `jwt`, `team-a/cert`.
fn auth_mount(mount: &str) -> Result<String, ConfigError> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if mount.len() > 256 || !mount.split('/').all(segment_ok) {
        return Err(invalid(
            "vault.auth.mount",
            format!("`{mount}` is not an auth mount path: segments of letters, digits, `-`, `_`, `.` separated by `/` (the login is auth/MOUNT/login)"),
        ));
    }
    Ok(mount.to_owned())
}

/// Parses a duration such as `90s`, `5m`, `1h30m` or `0`.
pub fn parse_duration(key: &str, s: &str) -> Result<Duration, ConfigError> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s.trim())
        .map_err(|_| invalid(key, format!("`{s}` is not a duration; examples: 30s, 5m, 1h")))
}

fn validate_defaults(raw: &HashMap<String, toml::Value>) -> Result<Defaults, ConfigError> {
    let mut defaults = Defaults::default();
    for (key, value) in raw {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            other => {
                return Err(invalid(
                    &format!("defaults.{key}"),
                    format!("expected a string or an integer, found {}", other.type_str()),
                ))
            }
        };
        defaults.set(key, &text).map_err(ConfigError::Defaults)?;
    }
    Ok(defaults)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, &Overrides::default())
    }

    #[test]
    fn empty_file_takes_every_default() {
        let c = parse("").unwrap();
        assert_eq!(c.plugin.socket, Path::new("/run/docker/plugins/vault-secrets.sock"));
        assert_eq!(c.plugin.driver_name(), "vault-secrets");
        assert_eq!(c.plugin.admin_socket, Path::new("/run/vault-secrets/admin.sock"));
        assert_eq!(c.vault.address.to_string(), "http://127.0.0.1:8200");
        assert_eq!(c.vault.timeout, Duration::from_secs(10));
        assert!(matches!(c.vault.auth, AuthConfig::AppRole { secret_id_wrapped: true, .. }));
        assert_eq!(c.defaults.mode, 0o400);
        assert_eq!(c.plugin.engines, None, "the default engines");
    }

    #[test]
    fn engines_are_unix_sockets_given_once() {
        let c = parse(
            "[plugin]\nengines = [\"unix:///var/run/docker.sock\", \"/run/podman/podman.sock\"]\n",
        );
        let engines = c.unwrap().plugin.engines.unwrap();
        assert_eq!(
            engines,
            [Path::new("/var/run/docker.sock"), Path::new("/run/podman/podman.sock")]
        );
        assert_eq!(parse("[plugin]\nengines = []\n").unwrap().plugin.engines, Some(vec![]));
        for (list, says) in [
            ("[\"tcp://10.0.0.1:2375\"]", "only an engine's Unix socket"),
            ("[\"docker.sock\"]", "not an absolute path"),
            ("[\"/a.sock\", \"unix:///a.sock\"]", "given twice"),
            ("[\"/run/../a.sock\"]", "contains `..`"),
        ] {
            let e = parse(&format!("[plugin]\nengines = {list}\n")).unwrap_err().to_string();
            assert!(e.contains("plugin.engines") && e.contains(says), "{list}: {e}");
        }
    }

    /// The example shipped in `config/` is a valid configuration, and so is each commented
    /// identity method and the address list in it, uncommented.
    #[test]
    fn the_example_configuration_and_its_commented_alternatives_parse() {
        let example = include_str!("../config/config.toml");
        let c = parse(example).unwrap();
        assert!(matches!(c.vault.auth, AuthConfig::AppRole { .. }));
        let block = |first: &str, keys: usize| -> String {
            let lines: Vec<&str> = example.lines().collect();
            let at = lines.iter().position(|l| l.trim_start().starts_with(first)).expect(first);
            lines[at..at + keys]
                .iter()
                .map(|l| l.trim_start_matches("# ").split("  #").next().unwrap().to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let with_auth = |auth: String, address: &str| {
            let body = format!("[vault]\naddress = {address}\n[vault.auth]\n{auth}\n");
            parse(&body).unwrap_or_else(|e| panic!("{body}: {e}"))
        };
        let https = "\"https://127.0.0.1:8200\"";
        let c = with_auth(block("# method = \"token\"", 2), https);
        assert!(matches!(c.vault.auth, AuthConfig::Token { .. }));
        let c = with_auth(block("# method = \"jwt\"", 4), https);
        assert!(matches!(c.vault.auth, AuthConfig::Jwt { .. }));
        // (The certificate files are read only when the client is built, not at parse.)
        let c = with_auth(block("# method = \"cert\"", 5), https);
        assert!(matches!(c.vault.auth, AuthConfig::Cert { .. }));
        let list = block("# address = [", 1);
        let c = parse(&format!("[vault]\n{list}\n")).unwrap();
        assert_eq!(c.vault.address.iter().count(), 3);
        let engines = block("# engines = [", 1);
        let c = parse(&format!("[plugin]\n{engines}\n")).unwrap();
        assert_eq!(c.plugin.engines.map(|e| e.len()), Some(2));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("[plugin]\nsokcet = \"/x.sock\"\n").unwrap_err().to_string();
        assert!(err.contains("sokcet"), "{err}");
        let err =
            parse("[vault.auth]\nmethod = \"token\"\ntoken = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("token"), "{err}");
        let err = parse("[defaults]\ncolour = \"red\"\n").unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn paths_must_be_absolute() {
        let err = parse("[plugin]\nstate_dir = \"var/lib\"\n").unwrap_err().to_string();
        assert!(err.contains("plugin.state_dir") && err.contains("absolute"), "{err}");
    }

    #[test]
    fn socket_stem_is_the_driver_name() {
        let c = parse("[plugin]\nsocket = \"/run/docker/plugins/secrets-b.sock\"\n").unwrap();
        assert_eq!(c.plugin.driver_name(), "secrets-b");
        assert!(parse("[plugin]\nsocket = \"/run/x/plugin\"\n").is_err());
    }

    #[test]
    fn vault_address_is_checked_and_env_overrides() {
        assert!(parse("[vault]\naddress = \"127.0.0.1:8200\"\n").is_err());
        assert!(parse("[vault]\naddress = \"ftp://vault\"\n").is_err());
        assert!(parse("[vault]\naddress = \"http://vault:8200/v1\"\n").is_err());
        let o = Overrides {
            vault_addr: Some("https://vault.internal:8200".into()),
            vault_namespace: Some("team-a".into()),
            ..Default::default()
        };
        let c = Config::parse("[vault]\naddress = \"http://x:1\"\n", &o).unwrap();
        assert_eq!(c.vault.address.to_string(), "https://vault.internal:8200");
        assert_eq!(c.vault.namespace.as_deref(), Some("team-a"));
        let bad = Overrides { vault_addr: Some("nonsense".into()), ..Default::default() };
        let err = Config::parse("", &bad).unwrap_err().to_string();
        assert!(err.contains("VAULT_ADDR"), "{err}");
    }

    #[test]
    fn vault_address_takes_a_list_of_nodes_in_the_file_and_in_vault_addr() {
        let c =
            parse("[vault]\naddress = [\"http://10.0.0.1:8200\", \"https://b:8200/\"]\n").unwrap();
        let urls: Vec<&str> = c.vault.address.iter().map(|u| u.as_str()).collect();
        assert_eq!(urls, ["http://10.0.0.1:8200/", "https://b:8200/"]);
        assert_eq!(c.vault.address.to_string(), "http://10.0.0.1:8200, https://b:8200");
        let o = Overrides {
            vault_addr: Some("http://a:1, http://b:2,http://c:3".into()),
            ..Default::default()
        };
        let c = Config::parse("[vault]\naddress = \"http://x:1\"\n", &o).unwrap();
        assert_eq!(c.vault.address.len(), 3);
        assert_eq!(c.vault.address.to_string(), "http://a:1, http://b:2, http://c:3");
        for (text, says) in [
            ("address = []", "the list is empty"),
            ("address = [\"http://a:1\", \"http://a:1/\"]", "given twice"),
            ("address = [\"http://a:1\", 8200]", "found integer"),
            ("address = 8200", "expected a string or a list of strings"),
            ("address = [\"http://a:1\", \"a:2\"]", "`a:2`"),
        ] {
            let err = parse(&format!("[vault]\n{text}\n")).unwrap_err().to_string();
            assert!(err.contains("vault.address") && err.contains(says), "{text}: {err}");
        }
        let o =
            Overrides { vault_addr: Some("http://a:1,,http://b:2".into()), ..Default::default() };
        let err = Config::parse("", &o).unwrap_err().to_string();
        assert!(err.contains("VAULT_ADDR") && err.contains("not a URL"), "{err}");
    }

    #[test]
    fn durations_and_defaults_are_validated() {
        let err = parse("[vault]\ntimeout = \"soon\"\n").unwrap_err().to_string();
        assert!(err.contains("vault.timeout"), "{err}");
        let c = parse("[defaults]\nuid = 1000\nmode = \"0440\"\nsize = \"64k\"\nttl = \"30m\"\n")
            .unwrap();
        assert_eq!(c.defaults.uid, 1000);
        assert_eq!(c.defaults.mode, 0o440);
        assert_eq!(c.defaults.size, 64 * 1024);
        assert_eq!(c.defaults.ttl, Duration::from_secs(1800));
        let err = parse("[defaults]\nmode = \"999\"\n").unwrap_err().to_string();
        assert!(err.contains("mode"), "{err}");
        // Said once, with its key: the whole chain, as `main` prints it.
        let e = parse("[defaults]\nsize = \"2k\"\n").unwrap_err();
        let chain = crate::report::chain(&e);
        assert!(
            chain.starts_with("configuration key `defaults.size`: `2k` is not a size"),
            "{chain}"
        );
        assert_eq!(chain.matches("is not a size").count(), 1, "{chain}");
        assert!(!chain.contains("option `size`"), "{chain}");
    }

    #[test]
    fn auth_methods_take_their_own_keys() {
        let c = parse("[vault.auth]\nmethod = \"token\"\ntoken_file = \"/etc/t\"\n").unwrap();
        assert_eq!(c.vault.auth, AuthConfig::Token { token_file: "/etc/t".into() });
        let err = parse("[vault.auth]\nmethod = \"token\"\nrole_id_file = \"/r\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("approle"), "{err}");
        let err = parse("[vault.auth]\nmethod = \"ldap\"\n").unwrap_err().to_string();
        assert!(err.contains("ldap") && err.contains("approle"), "{err}");
    }

    #[test]
    fn cert_and_jwt_take_their_keys_and_name_what_is_missing_or_misplaced() {
        let https = "[vault]\naddress = \"https://vault.internal:8200\"\n";
        let c = parse(&format!("{https}[vault.auth]\nmethod = \"cert\"\nclient_cert = \"/etc/n.pem\"\nclient_key = \"/etc/k.pem\"\n")).unwrap();
        assert_eq!(
            c.vault.auth,
            AuthConfig::Cert {
                client_cert: "/etc/n.pem".into(),
                client_key: "/etc/k.pem".into(),
                role: None,
                mount: "cert".into()
            }
        );
        let c = parse(&format!("{https}[vault.auth]\nmethod = \"cert\"\nclient_cert = \"/etc/n.pem\"\nclient_key = \"/etc/k.pem\"\nrole = \"node-01\"\nmount = \"hosts/cert\"\n")).unwrap();
        assert!(
            matches!(&c.vault.auth, AuthConfig::Cert { role: Some(r), mount, .. } if r == "node-01" && mount == "hosts/cert")
        );
        let c =
            parse("[vault.auth]\nmethod = \"jwt\"\njwt_file = \"/run/id.jwt\"\nrole = \"hosts\"\n")
                .unwrap();
        assert_eq!(
            c.vault.auth,
            AuthConfig::Jwt {
                jwt_file: "/run/id.jwt".into(),
                role: "hosts".into(),
                mount: "jwt".into()
            }
        );
        for (text, key, says) in [
            ("method = \"cert\"\nclient_key = \"/k\"\n", "vault.auth.client_cert", "method \"cert\" needs it; it takes client_cert, client_key, role, mount"),
            ("method = \"cert\"\nclient_cert = \"/c\"\n", "vault.auth.client_key", "needs it"),
            ("method = \"cert\"\nclient_cert = \"/c\"\nclient_key = \"/k\"\njwt_file = \"/j\"\n", "vault.auth.jwt_file", "belongs to method \"jwt\"; method \"cert\" takes client_cert, client_key, role, mount"),
            ("method = \"cert\"\nclient_cert = \"c.pem\"\nclient_key = \"/k\"\n", "vault.auth.client_cert", "absolute"),
            ("method = \"jwt\"\nrole = \"r\"\n", "vault.auth.jwt_file", "method \"jwt\" needs it; it takes jwt_file, role, mount"),
            ("method = \"jwt\"\njwt_file = \"/j\"\n", "vault.auth.role", "needs the role"),
            ("method = \"jwt\"\njwt_file = \"/j\"\nrole = \"\"\n", "vault.auth.role", "1 to 256 characters"),
            ("method = \"jwt\"\njwt_file = \"/j\"\nrole = \"r\"\nmount = \"../sys\"\n", "vault.auth.mount", "not an auth mount path"),
            ("method = \"jwt\"\njwt_file = \"/j\"\nrole = \"r\"\nmount = \"a//b\"\n", "vault.auth.mount", "auth/MOUNT/login"),
            ("method = \"jwt\"\njwt_file = \"/j\"\nrole = \"r\"\nclient_key = \"/k\"\n", "vault.auth.client_key", "belongs to method \"cert\""),
            ("method = \"token\"\nrole = \"r\"\n", "vault.auth.role", "belongs to method \"cert\" and \"jwt\"; method \"token\" takes token_file"),
            ("method = \"approle\"\nmount = \"x\"\n", "vault.auth.mount", "method \"approle\" takes role_id_file, secret_id_file, secret_id_wrapped"),
        ] {
            let err = parse(&format!("{https}[vault.auth]\n{text}")).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")) && err.contains(says), "{text}: {err}");
        }
        // A client certificate is presented only over TLS.
        let text = "[vault.auth]\nmethod = \"cert\"\nclient_cert = \"/c\"\nclient_key = \"/k\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("`vault.address`") && err.contains("https://"), "{err}");
        let o =
            Overrides { vault_addr: Some("http://127.0.0.1:8200".into()), ..Default::default() };
        let err = Config::parse(&format!("{https}{text}"), &o).unwrap_err().to_string();
        assert!(err.contains("`VAULT_ADDR`") && err.contains("method \"cert\""), "{err}");
        let err = parse("[vault.auth]\nmethod = \"kerberos\"\n").unwrap_err().to_string();
        assert!(err.contains("\"cert\", \"jwt\""), "{err}");
    }

    #[test]
    fn example_configurations_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for name in ["config.toml", "minimal.toml"] {
            let path = dir.join(name);
            Config::load(&path, &Overrides::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}
