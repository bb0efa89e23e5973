//! Volume definitions: the `-o key=value` options Docker passes at create, parsed strictly into a
//! [`VolumeSpec`], and the defaults they fall back to.
//!
//! Every error names the option and says what is accepted. A definition holds no secret: the
//! options are what `docker volume create` was given, and they are what `state` persists.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::namespace::Namespace;

pub mod bounds;
mod token_paths;

/// The largest tmpfs a volume may ask for: secrets are small, host memory is not free.
pub const MAX_SIZE: u64 = 64 * 1024 * 1024;
/// The least tmpfs that holds one small key: a page for the file, and one for the temporary
/// file its atomic rewrite puts beside it (see [`crate::files::tmpfs_need`]).
const MIN_SIZE: u64 = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("option `{option}`: {message}")]
pub struct OptionError {
    pub option: String,
    pub message: String,
}

fn err(option: &str, message: impl Into<String>) -> OptionError {
    OptionError { option: option.to_owned(), message: message.into() }
}

/// Whether Docker would accept `name` as a volume name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
pub fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Whether `key` can be one file name inside a directory: not empty, not `.` or `..`, no `/`
/// and no NUL, at most 255 bytes.
pub fn valid_file_name(key: &str) -> bool {
    !key.is_empty() && key != "." && key != ".." && key.len() <= 255 && !key.contains(['/', '\0'])
}

/// How a source's keys become files (named as its option's value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One file per key.
    Files,
    /// One JSON object.
    Json,
    /// `KEY=value` lines, shell-quoted.
    Env,
}

/// Per-volume settings that fall back to the configuration's `[defaults]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub size: u64,
    pub refresh: Duration,
    pub ttl: Duration,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            uid: 0,
            gid: 0,
            mode: 0o400,
            size: 1024 * 1024,
            refresh: Duration::from_secs(300),
            ttl: Duration::from_secs(3600),
        }
    }
}

impl Defaults {
    /// Sets one setting by its option name, validated as the option would be.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), OptionError> {
        match key {
            "uid" => self.uid = parse_id(key, value)?,
            "gid" => self.gid = parse_id(key, value)?,
            "mode" => self.mode = parse_mode(value)?,
            "size" => self.size = parse_size(value)?,
            "refresh" => self.refresh = parse_refresh(value)?,
            "ttl" => self.ttl = parse_ttl(value)?,
            other => {
                return Err(err(
                    other,
                    "unknown; [defaults] accepts uid, gid, mode, size, refresh, ttl",
                ))
            }
        }
        Ok(())
    }
}

/// One place secrets are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The sub-directory its files go in (`path.NAME`), or `None` for the volume's root (`path`).
    pub dir: Option<String>,
    /// Vault API path below `/v1/`.
    pub path: String,
    /// Request parameters: when present the read is a write (`pki/issue/web`).
    pub params: BTreeMap<String, String>,
}

/// A validated volume definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub sources: Vec<Source>,
    pub field: Option<String>,
    pub file: Option<String>,
    pub format: Format,
    pub uid: u32,
    pub gid: u32,
    /// `uid=container`: the files' owner is the numeric `User` the engine recorded for the
    /// container each Mount is for (its group too, when it names one; else `gid`).
    pub uid_of_container: bool,
    pub mode: u32,
    pub size: u64,
    pub refresh: Duration,
    pub ttl: Duration,
    pub policies: Option<Vec<String>>,
    /// Sent to the containers using a mount when its files change.
    pub signal: Option<String>,
    /// Whose identity the mounts' tokens come from.
    pub identity: IdentityKind,
    /// A template in `templates_dir` rendered into the one file `output_file()`.
    pub template: Option<String>,
    /// The Vault namespace every request of the volume names (in place of `vault.namespace`).
    pub namespace: Option<Namespace>,
    /// Whether a certificate replaced ahead of its expiry is revoked once its successor is in
    /// place (`revoke-replaced`).
    pub revoke_replaced: bool,
}

/// Where a volume's mount tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityKind {
    /// Child tokens of the plugin's own identity.
    Plugin,
    /// Child tokens of the token a `wrapped-token` held.
    WrappedToken,
    /// An AppRole login per mount, with `role-id` and the secret_id a `wrapped-token` held.
    WrappedSecretId { role_id: String },
}

/// What the definition on disk holds in place of the wrapping token (used up at create).
pub const UNWRAPPED: &str = "unwrapped-at-create";

const ACCEPTED: &str =
    "path, path.NAME, field, file, format, template, param.KEY, uid, gid, mode, size, refresh, ttl, policies, signal, wrapped-token, role-id, namespace, revoke-replaced";

/// The signals `signal` accepts: those applications use to reload.
const SIGNALS: &[&str] = &[
    "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGQUIT", "SIGTERM", "SIGWINCH", "SIGALRM",
    "SIGCONT",
];

impl VolumeSpec {
    /// Parses Docker's `Opts` against the configured defaults.
    pub fn parse(
        opts: &BTreeMap<String, String>,
        defaults: &Defaults,
    ) -> Result<VolumeSpec, OptionError> {
        let mut settings = defaults.clone();
        let mut main_path = None;
        let mut named = Vec::new();
        let mut params = BTreeMap::new();
        let mut spec_field = None;
        let mut spec_file = None;
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
                    spec_field = Some(value.clone());
                }
                "file" => {
                    if !valid_file_name(value) || value.starts_with('.') {
                        return Err(err(
                            key,
                            "must be a plain file name: not empty, no `/`, not starting with `.`",
                        ));
                    }
                    spec_file = Some(value.clone());
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
        let mut sources = Vec::with_capacity(1 + named.len());
        match main_path {
            Some(path) => sources.push(Source { dir: None, path, params }),
            None if !params.is_empty() => {
                return Err(err("param", "param.KEY goes with `path`, which is missing"))
            }
            None if named.is_empty() => {
                return Err(err(
                    "path",
                    "is required: the Vault API path of the secret, e.g. secret/data/app",
                ))
            }
            None => {}
        }
        sources.extend(named);
        let identity = match (wrapped, role_id) {
            (false, None) => IdentityKind::Plugin,
            (false, Some(_)) => {
                return Err(err(
                    "role-id",
                    "goes with `wrapped-token`, a wrapped secret_id of that role",
                ))
            }
            (true, None) => IdentityKind::WrappedToken,
            (true, Some(role_id)) => {
                for (option, given) in
                    [("policies", policies.is_some()), ("ttl", opts.contains_key("ttl"))]
                {
                    if given {
                        return Err(err(option, "cannot go with `role-id`: each mount logs in with the AppRole, whose token_policies and token_ttl apply"));
                    }
                }
                IdentityKind::WrappedSecretId { role_id }
            }
        };
        let named: Vec<&str> = sources.iter().filter_map(|s| s.dir.as_deref()).collect();
        let output = match (&spec_file, &template, &spec_field, format) {
            (Some(f), _, _, _) => Some(f.as_str()),
            (None, Some(t), _, _) => Some(t.as_str()),
            (None, None, Some(f), _) => Some(f.as_str()),
            (None, None, None, Format::Json) => Some("secrets.json"),
            (None, None, None, Format::Env) => Some("secrets.env"),
            (None, None, None, Format::Files) => None,
        };
        if let Some(clash) = output.filter(|o| named.contains(o)) {
            return Err(err(
                "file",
                format!("the output file `{clash}` would take the name of the sub-directory of `path.{clash}`"),
            ));
        }
        if spec_field.is_some() && sources.len() > 1 {
            return Err(err("field", "selects a key of one source; it cannot go with path.NAME"));
        }
        if template.is_some() && (spec_field.is_some() || format != Format::Files) {
            return Err(err(
                "template",
                "renders the whole file itself; it cannot go with `field` or `format`",
            ));
        }
        if template.is_some() && sources[0].dir.is_none() && named.contains(&"secret") {
            return Err(err(
                "path.secret",
                "clashes with `secret`, the name a template gives the `path` source; name it otherwise (path.NAME: any other NAME)",
            ));
        }
        if spec_file.is_some()
            && spec_field.is_none()
            && format == Format::Files
            && template.is_none()
        {
            return Err(err(
                "file",
                "names the file of `field`, or of format=json / format=env; with format=files each key is its own file",
            ));
        }
        let spec = VolumeSpec {
            sources,
            field: spec_field,
            file: spec_file,
            format,
            uid: settings.uid,
            gid: settings.gid,
            uid_of_container,
            mode: settings.mode,
            size: settings.size,
            refresh: settings.refresh,
            ttl: settings.ttl,
            policies,
            signal,
            identity,
            template,
            namespace,
            revoke_replaced,
        };
        bounds::check(&spec)?;
        Ok(spec)
    }

    /// The name of the single output file for `format=json`/`env` or `field`, if there is one.
    pub fn output_file(&self) -> Option<&str> {
        if let (None, Some(template)) = (&self.file, &self.template) {
            let stem = [".tmpl", ".j2", ".jinja"].iter().find_map(|x| template.strip_suffix(x));
            return Some(stem.filter(|s| valid_file_name(s)).unwrap_or(template));
        }
        match (&self.file, &self.field, self.format) {
            (Some(file), _, _) => Some(file),
            (None, _, Format::Json) => Some("secrets.json"),
            (None, _, Format::Env) => Some("secrets.env"),
            (None, Some(field), Format::Files) => Some(field),
            (None, None, Format::Files) => None,
        }
    }

    /// The mode of the volume's directories: the file mode with `x` wherever it has `r`.
    pub fn dir_mode(&self) -> u32 {
        self.mode | ((self.mode & 0o444) >> 2)
    }
}

fn valid_dir_name(name: &str) -> bool {
    valid_file_name(name)
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn parse_vault_path(key: &str, value: &str) -> Result<String, OptionError> {
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

fn parse_format(value: &str) -> Result<Format, OptionError> {
    match value {
        "files" => Ok(Format::Files),
        "json" => Ok(Format::Json),
        "env" => Ok(Format::Env),
        _ => Err(err("format", format!("`{value}` is not a format; accepted: files, json, env"))),
    }
}

fn parse_signal(value: &str) -> Result<String, OptionError> {
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

fn parse_policies(value: &str) -> Result<Vec<String>, OptionError> {
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

fn parse_id(key: &str, value: &str) -> Result<u32, OptionError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|id| *id < u32::MAX)
        .ok_or_else(|| err(key, format!("`{value}` is not a numeric id (0 to 4294967294)")))
}

fn parse_mode(value: &str) -> Result<u32, OptionError> {
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
fn parse_size(value: &str) -> Result<u64, OptionError> {
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

fn parse_duration(key: &str, value: &str) -> Result<Duration, OptionError> {
    if value.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(value.trim())
        .map_err(|_| err(key, format!("`{value}` is not a duration; examples: 30s, 5m, 1h")))
}

fn parse_refresh(value: &str) -> Result<Duration, OptionError> {
    let d = parse_duration("refresh", value)?;
    if !d.is_zero() && d < Duration::from_secs(1) {
        return Err(err("refresh", "must be 0 (off) or at least 1s"));
    }
    Ok(d)
}

fn parse_ttl(value: &str) -> Result<Duration, OptionError> {
    let d = parse_duration("ttl", value)?;
    if d < Duration::from_secs(10) || d > Duration::from_secs(365 * 24 * 3600) {
        return Err(err("ttl", format!("`{value}` must be between 10s and 8760h")));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<VolumeSpec, OptionError> {
        VolumeSpec::parse(&opts(pairs), &Defaults::default())
    }

    #[test]
    fn path_alone_takes_the_defaults() {
        let spec = parse(&[("path", "secret/data/app")]).unwrap();
        assert_eq!(spec.sources.len(), 1);
        assert_eq!(spec.sources[0].path, "secret/data/app");
        assert_eq!(spec.sources[0].dir, None);
        assert_eq!((spec.uid, spec.gid, spec.mode), (0, 0, 0o400));
        assert_eq!(spec.dir_mode(), 0o500);
        assert_eq!(spec.format, Format::Files);
        assert_eq!(spec.output_file(), None);
    }

    #[test]
    fn path_is_required_and_checked() {
        let e = parse(&[]).unwrap_err();
        assert_eq!(e.option, "path");
        for bad in ["secret", "secret/../sys", "secret//x", "secret/a b", "sec?ret/x"] {
            let e = parse(&[("path", bad)]).unwrap_err();
            assert_eq!(e.option, "path", "{bad}");
        }
        assert_eq!(parse(&[("path", "/v1/kv/app/")]).unwrap().sources[0].path, "kv/app");
    }

    #[test]
    fn unknown_options_are_named_with_what_is_accepted() {
        let e = parse(&[("path", "kv/a"), ("bogus", "1")]).unwrap_err();
        assert_eq!(e.option, "bogus");
        assert!(e.to_string().contains("accepted: path"), "{e}");
        assert_eq!(
            parse(&[("path", "kv/a"), ("signal", "hup")]).unwrap().signal.as_deref(),
            Some("SIGHUP")
        );
        assert_eq!(parse(&[("path", "kv/a"), ("signal", "SIGKILL")]).unwrap_err().option, "signal");
        assert_eq!(
            parse(&[("path", "kv/a"), ("wrapped-token", "s.abc")]).unwrap().identity,
            IdentityKind::WrappedToken
        );
        let spec =
            parse(&[("path", "kv/a"), ("wrapped-token", "s.abc"), ("role-id", "r-1")]).unwrap();
        assert_eq!(spec.identity, IdentityKind::WrappedSecretId { role_id: "r-1".into() });
        assert_eq!(parse(&[("path", "kv/a"), ("role-id", "r-1")]).unwrap_err().option, "role-id");
        let e = parse(&[
            ("path", "kv/a"),
            ("wrapped-token", "s.a"),
            ("role-id", "r"),
            ("policies", "p"),
        ])
        .unwrap_err();
        assert_eq!(e.option, "policies");
        assert_eq!(
            parse(&[("path", "kv/a"), ("wrapped-token", "a b")]).unwrap_err().option,
            "wrapped-token"
        );
        let spec = parse(&[("path", "kv/a"), ("template", "app.env.tmpl")]).unwrap();
        assert_eq!(spec.output_file(), Some("app.env"));
        let spec = parse(&[("path", "kv/a"), ("template", "t"), ("file", "config.json")]).unwrap();
        assert_eq!(spec.output_file(), Some("config.json"));
        assert_eq!(
            parse(&[("path", "kv/a"), ("template", "../t")]).unwrap_err().option,
            "template"
        );
        assert_eq!(
            parse(&[("path", "kv/a"), ("template", "t"), ("format", "env")]).unwrap_err().option,
            "template"
        );
        let e = parse(&[("path", "kv/a"), ("path.secret", "kv/b"), ("template", "t")]);
        assert_eq!(e.unwrap_err().option, "path.secret");
        // Without `path`, or without a template, `secret` is a name like any other.
        parse(&[("path.secret", "kv/b"), ("template", "t")]).unwrap();
        parse(&[("path", "kv/a"), ("path.secret", "kv/b")]).unwrap();
    }

    #[test]
    fn named_sources_go_in_sub_directories() {
        let spec = parse(&[("path", "kv/a"), ("path.db", "database/creds/app")]).unwrap();
        assert_eq!(spec.sources[1].dir.as_deref(), Some("db"));
        let spec = parse(&[("path.db", "database/creds/app")]).unwrap();
        assert_eq!(spec.sources.len(), 1);
        assert!(parse(&[("path.", "kv/a")]).is_err());
        assert!(parse(&[("path...", "kv/a")]).is_err());
        assert!(parse(&[("path.a/b", "kv/a")]).is_err());
    }

    #[test]
    fn params_go_with_path() {
        let spec =
            parse(&[("path", "pki/issue/web"), ("param.common_name", "web.internal")]).unwrap();
        assert_eq!(spec.sources[0].params["common_name"], "web.internal");
        assert!(parse(&[("path.x", "pki/issue/web"), ("param.common_name", "a")]).is_err());
    }

    #[test]
    fn field_file_and_format_combine_sensibly() {
        let spec = parse(&[("path", "kv/a"), ("field", "password")]).unwrap();
        assert_eq!(spec.output_file(), Some("password"));
        let spec = parse(&[("path", "kv/a"), ("field", "password"), ("file", "db-pass")]).unwrap();
        assert_eq!(spec.output_file(), Some("db-pass"));
        let spec = parse(&[("path", "kv/a"), ("format", "env")]).unwrap();
        assert_eq!(spec.output_file(), Some("secrets.env"));
        let spec = parse(&[("path", "kv/a"), ("format", "json"), ("file", "c.json")]).unwrap();
        assert_eq!(spec.output_file(), Some("c.json"));
        assert_eq!(parse(&[("path", "kv/a"), ("file", "x")]).unwrap_err().option, "file");
        assert_eq!(parse(&[("path", "kv/a"), ("format", "yaml")]).unwrap_err().option, "format");
        assert_eq!(parse(&[("path", "kv/a"), ("field", "a/b")]).unwrap_err().option, "field");
        assert_eq!(
            parse(&[("path", "kv/a"), ("field", "p"), ("file", "../x")]).unwrap_err().option,
            "file"
        );
        let e = parse(&[("path", "kv/a"), ("path.db", "kv/b"), ("format", "json"), ("file", "db")])
            .unwrap_err();
        assert_eq!(e.option, "file");
        let e = parse(&[("path", "kv/a"), ("path.b", "kv/b"), ("field", "x")]).unwrap_err();
        assert_eq!(e.option, "field");
    }

    #[test]
    fn ownership_mode_size_and_durations() {
        let spec = parse(&[
            ("path", "kv/a"),
            ("uid", "1000"),
            ("gid", "1001"),
            ("mode", "0440"),
            ("size", "64k"),
            ("ttl", "15m"),
            ("refresh", "0"),
        ])
        .unwrap();
        assert_eq!((spec.uid, spec.gid, spec.mode, spec.size), (1000, 1001, 0o440, 65536));
        assert_eq!(spec.dir_mode(), 0o550);
        assert_eq!(spec.ttl, Duration::from_secs(900));
        assert!(spec.refresh.is_zero());
        for (k, v) in [
            ("uid", "-1"),
            ("uid", "root"),
            ("mode", "0800"),
            ("mode", "4755"),
            ("mode", "0755"),
            ("mode", "0500"),
            ("mode", "+44"),
            ("mode", "0000"),
            ("mode", "0200"),
            ("mode", "0044"),
            ("mode", "000"),
            ("mode", "7"),
            ("size", "1g"),
            ("size", "1k"),
            ("size", "4k"),
            ("size", "8191"),
            ("size", "lots"),
            ("ttl", "1s"),
            ("ttl", "forever"),
            ("refresh", "10ms"),
        ] {
            let e = parse(&[("path", "kv/a"), (k, v)]).unwrap_err();
            assert_eq!(e.option, k, "{k}={v}");
            assert!(e.message.contains(v) || !e.message.is_empty());
        }
    }

    #[test]
    fn a_mode_the_owner_cannot_read_is_refused() {
        let e = parse(&[("path", "kv/a"), ("mode", "0200")]).unwrap_err().to_string();
        assert!(e.starts_with("option `mode`: `0200` leaves the files unreadable"), "{e}");
        assert!(e.contains("accepted:") && e.contains("0400"), "{e}");
        for ok in ["0400", "0600", "0440", "0644", "600"] {
            parse(&[("path", "kv/a"), ("mode", ok)]).unwrap();
        }
    }

    #[test]
    fn policies_are_a_list() {
        let spec = parse(&[("path", "kv/a"), ("policies", "app-read, db")]).unwrap();
        assert_eq!(spec.policies.unwrap(), vec!["app-read", "db"]);
        assert!(parse(&[("path", "kv/a"), ("policies", "a,,b")]).is_err());
        assert!(parse(&[("path", "kv/a"), ("policies", "")]).is_err());
    }

    #[test]
    fn names() {
        assert!(valid_volume_name("app-secrets"));
        assert!(valid_volume_name("a"));
        assert!(!valid_volume_name("-a"));
        assert!(!valid_volume_name("a/b"));
        assert!(!valid_volume_name(""));
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
        assert!(valid_file_name(".hidden"));
        assert!(valid_file_name("tls.crt"));
    }

    #[test]
    fn paths_that_could_carry_a_token_elsewhere_or_into_a_container_are_refused() {
        for path in ["http:127.0.0.1:18999/x", "https:evil.example/a", "localhost:8200/v1/x"] {
            let e = parse(&[("path", path)]).unwrap_err();
            assert!(e.option == "path" && e.message.contains("starts like a URL"), "{e}");
        }
        for path in [
            "auth/token/lookup-self",
            "auth/token/create",
            "sys/wrapping/wrap",
            "/v1/sys/wrapping/unwrap",
            "cubbyhole/response",
            "team-a/auth/token/lookup-self",
            "team-a/sys/wrapping/lookup",
            "org/team-a/cubbyhole/response",
        ] {
            let e = parse(&[("path", path)]).unwrap_err();
            assert!(e.message.contains("refused as sources"), "{path}: {e}");
            let e = parse(&[("path", "kv/a"), ("path.x", path)]).unwrap_err();
            assert_eq!(e.option, "path.x");
        }
        // A colon further on is an ordinary character of Vault paths.
        assert!(parse(&[("path", "kv/app:v2")]).is_ok());
        assert!(parse(&[("path", "secret/data/auth")]).is_ok());
        assert!(parse(&[("path", "secret/data/app/auth/db")]).is_ok());
        let e = parse(&[("path", "team-a/auth/token/lookup-self")]).unwrap_err();
        assert!(e.message.contains("`NAMESPACE/auth/…`") && e.message.contains("namespace"), "{e}");
        let e = parse(&[("path", "kv/a"), ("field", "pass\nword")]).unwrap_err();
        assert_eq!(e.option, "field");
    }
}
