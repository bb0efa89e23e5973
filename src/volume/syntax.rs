//! Each `-o` option read on its own: its value's syntax, into [`Given`]. How the options go
//! together (one output file, an identity, no clash) is [`super::VolumeSpec::parse`]'s to say.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{err, valid_dir_name, valid_file_name, Defaults, Format, OptionError, Source};
use super::{token_paths, ACCEPTED, MAX_SIZE, MIN_SIZE, SIGNALS};
use crate::namespace::Namespace;

/// What the options say, each one checked alone.
pub(super) struct Given {
    pub settings: Defaults,
    pub main_path: Option<String>,
    pub named: Vec<Source>,
    pub params: BTreeMap<String, String>,
    pub field: Option<String>,
    pub file: Option<String>,
    pub format: Format,
    pub policies: Option<Vec<String>>,
    pub signal: Option<String>,
    pub wrapped: bool,
    pub template: Option<String>,
    pub role_id: Option<String>,
    pub namespace: Option<Namespace>,
    pub revoke_replaced: bool,
    pub uid_of_container: bool,
    /// Whether `ttl` was given (not only defaulted).
    pub ttl_given: bool,
}

impl Given {
    pub fn read(
        opts: &BTreeMap<String, String>,
        defaults: &Defaults,
    ) -> Result<Given, OptionError> {
        let mut settings = defaults.clone();
        let mut main_path = None;
        let mut named = Vec::new();
        let mut params = BTreeMap::new();
        let mut field = None;
        let mut file = None;
        let mut format = Format::Files;
        let mut policies = None;
        let mut signal = None;
        let mut wrapped = false;
        let mut template = None;
        let mut role_id = None;
        let mut namespace = None;
        let mut revoke_replaced = true;
        let mut uid_of_container = false;
        for (key, value) in opts {
            match key.as_str() {
                "path" => main_path = Some(parse_vault_path(key, value)?),
                "field" => {
                    if !valid_file_name(value) || value.contains(char::is_control) {
                        return Err(err(
                            key,
                            "must be one key of the secret: not empty, no `/`, no control characters",
                        ));
                    }
                    field = Some(value.clone());
                }
                "file" => {
                    if !valid_file_name(value) || value.starts_with('.') {
                        return Err(err(
                            key,
                            "must be a plain file name: not empty, no `/`, not starting with `.`",
                        ));
                    }
                    file = Some(value.clone());
                }
                "format" => format = parse_format(value)?,
                "policies" => policies = Some(parse_policies(value)?),
                "uid" if value == "container" => uid_of_container = true,
                "uid" => settings.set(key, value).map_err(|e| {
                    err(key, format!("{}; or `container`: the container's numeric --user, read at each mount", e.message))
                })?,
                "gid" | "mode" | "size" | "refresh" | "ttl" => settings.set(key, value)?,
                "signal" => signal = Some(parse_signal(value)?),
                "namespace" => namespace = Some(Namespace::parse(value).map_err(|m| err(key, m))?),
                "revoke-replaced" => {
                    revoke_replaced = match value.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(err(key, format!("`{value}` is not true or false"))),
                    }
                }
                "wrapped-token" => {
                    if value.is_empty()
                        || value.len() > 1024
                        || value.contains(|c: char| c.is_whitespace() || c.is_control())
                    {
                        return Err(err(
                            key,
                            "must be a response-wrapping token (from `-wrap-ttl`)",
                        ));
                    }
                    wrapped = true;
                }
                "role-id" => {
                    if value.is_empty()
                        || value.len() > 256
                        || !value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    {
                        return Err(err(
                            key,
                            "must be an AppRole role_id (letters, digits, `-`, `_`, `.`)",
                        ));
                    }
                    role_id = Some(value.clone());
                }
                "template" => {
                    if !valid_dir_name(value) || value.starts_with('.') {
                        return Err(err(key, "must be the file name of a template in templates_dir (letters, digits, `_`, `.`, `-`)"));
                    }
                    template = Some(value.clone());
                }
                _ => {
                    if let Some(dir) = key.strip_prefix("path.") {
                        if !valid_dir_name(dir) {
                            return Err(err(
                                key,
                                "NAME in path.NAME must be letters, digits, `_`, `.` or `-` (not `.` or `..`)",
                            ));
                        }
                        named.push(Source {
                            dir: Some(dir.to_owned()),
                            path: parse_vault_path(key, value)?,
                            params: BTreeMap::new(),
                        });
                    } else if let Some(param) = key.strip_prefix("param.") {
                        if param.is_empty() || param.contains(char::is_whitespace) {
                            return Err(err(key, "KEY in param.KEY must be a non-empty name"));
                        }
                        params.insert(param.to_owned(), value.clone());
                    } else {
                        return Err(err(key, format!("unknown option; accepted: {ACCEPTED}")));
                    }
                }
            }
        }
        Ok(Given {
            settings,
            main_path,
            named,
            params,
            field,
            file,
            format,
            policies,
            signal,
            wrapped,
            template,
            role_id,
            namespace,
            revoke_replaced,
            uid_of_container,
            ttl_given: opts.contains_key("ttl"),
        })
    }
}

pub(super) fn parse_vault_path(key: &str, value: &str) -> Result<String, OptionError> {
    let path = value.trim_start_matches("/v1/").trim_matches('/');
    let segments: Vec<&str> = path.split('/').collect();
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_.@:=+,~".contains(c);
    if segments.len() < 2
        || segments.iter().any(|s| s.is_empty() || *s == "." || *s == ".." || !s.chars().all(safe))
    {
        return Err(err(
            key,
            format!(
                "`{value}` is not a Vault API path; expected segments of letters, digits and -_.@:=+,~ separated by `/`, e.g. secret/data/app, kv/app, database/creds/app"
            ),
        ));
    }
    if path.len() > 512 {
        return Err(err(key, "is longer than 512 characters"));
    }
    if segments[0].contains(':') {
        // `http:HOST:PORT/x` looks like a URL to a URL parser: refused, whatever builds the URL.
        return Err(err(
            key,
            format!("`{value}` starts like a URL (`:` in its first segment); give a Vault API path below /v1/, e.g. secret/data/app"),
        ));
    }
    if let Some((mount, namespaced)) = token_paths::token_mount(&segments) {
        let (shown, namespace) = if namespaced {
            (format!("NAMESPACE/{mount}/…"), " (after a prefix, which vault reads as a namespace)")
        } else {
            (format!("{mount}/…"), "")
        };
        return Err(err(
            key,
            format!("`{shown}` paths{namespace} are refused as sources: they log in, show, wrap or unwrap tokens, and a mount's token must never reach a container; read secrets from a secrets engine (kv, database, pki, …); a KV version 1 folder named `{mount}` reads the same, so keep such keys in KV version 2 (MOUNT/data/…)"),
        ));
    }
    Ok(path.to_owned())
}

pub(super) fn parse_format(value: &str) -> Result<Format, OptionError> {
    match value {
        "files" => Ok(Format::Files),
        "json" => Ok(Format::Json),
        "env" => Ok(Format::Env),
        _ => Err(err("format", format!("`{value}` is not a format; accepted: files, json, env"))),
    }
}

pub(super) fn parse_signal(value: &str) -> Result<String, OptionError> {
    let upper = value.trim().to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    if SIGNALS.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(err(
            "signal",
            format!("`{value}` is not a signal it sends; accepted: {}", SIGNALS.join(", ")),
        ))
    }
}

pub(super) fn parse_policies(value: &str) -> Result<Vec<String>, OptionError> {
    let names: Vec<String> = value.split(',').map(|p| p.trim().to_owned()).collect();
    let ok = |p: &String| {
        !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@/".contains(c))
    };
    if names.is_empty() || !names.iter().all(ok) {
        return Err(err(
            "policies",
            format!("`{value}` is not a comma-separated list of policy names"),
        ));
    }
    Ok(names)
}

pub(super) fn parse_id(key: &str, value: &str) -> Result<u32, OptionError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|id| *id < u32::MAX)
        .ok_or_else(|| err(key, format!("`{value}` is not a numeric id (0 to 4294967294)")))
}

pub(super) fn parse_mode(value: &str) -> Result<u32, OptionError> {
    let digits = value.strip_prefix("0o").unwrap_or(value);
    let octal = digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(digits, 8).ok().filter(|_| octal) {
        Some(mode) if (3..=4).contains(&digits.len()) && mode <= 0o777 && mode & 0o111 == 0 => {
            if mode & 0o400 == 0 {
                return Err(err(
                    "mode",
                    format!("`{value}` leaves the files unreadable by their owner (`uid`); accepted: octal read/write bits with the owner's read bit, e.g. 0400, 0440, 0644"),
                ));
            }
            Ok(mode)
        }
        _ => Err(err(
            "mode",
            format!(
                "`{value}` is not a file mode for secrets; expected octal read/write bits only (no execute, setuid or sticky bits), e.g. 0400, 0440, 0644"
            ),
        )),
    }
}

/// Parses `64k`, `1m`, `1048576` into bytes, within 8k and 64m.
pub(super) fn parse_size(value: &str) -> Result<u64, OptionError> {
    let lower = value.trim().to_ascii_lowercase();
    let (digits, unit) = match lower.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => lower.split_at(i),
        None => (lower.as_str(), ""),
    };
    let multiplier = match unit {
        "" => 1,
        "k" | "kb" | "ki" => 1024,
        "m" | "mb" | "mi" => 1024 * 1024,
        _ => 0,
    };
    match digits.parse::<u64>() {
        Ok(n)
            if multiplier > 0
                && (MIN_SIZE..=MAX_SIZE).contains(&(n.saturating_mul(multiplier))) =>
        {
            Ok(n * multiplier)
        }
        _ => Err(err(
            "size",
            format!("`{value}` is not a size between 8k (one small file and its rewrite: a 4 KiB page each) and 64m; examples: 64k, 1m"),
        )),
    }
}

pub(super) fn parse_duration(key: &str, value: &str) -> Result<Duration, OptionError> {
    if value.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(value.trim())
        .map_err(|_| err(key, format!("`{value}` is not a duration; examples: 30s, 5m, 1h")))
}

pub(super) fn parse_refresh(value: &str) -> Result<Duration, OptionError> {
    let d = parse_duration("refresh", value)?;
    if !d.is_zero() && d < Duration::from_secs(1) {
        return Err(err("refresh", "must be 0 (off) or at least 1s"));
    }
    Ok(d)
}

pub(super) fn parse_ttl(value: &str) -> Result<Duration, OptionError> {
    let d = parse_duration("ttl", value)?;
    if d < Duration::from_secs(10) || d > Duration::from_secs(365 * 24 * 3600) {
        return Err(err("ttl", format!("`{value}` must be between 10s and 8760h")));
    }
    Ok(d)
}
