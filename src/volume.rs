//! Volume definitions: the `-o key=value` options Docker passes at create, parsed strictly into a
//! [`VolumeSpec`], and the defaults they fall back to.
//!
//! Every error names the option and says what is accepted. A definition holds no secret: the
//! options are what `docker volume create` was given, and they are what `state` persists.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::namespace::Namespace;

pub mod bounds;
mod syntax;
mod token_paths;

use syntax::{parse_id, parse_mode, parse_refresh, parse_size, parse_ttl, Given};

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
    /// Parses Docker's `Opts` of a Create against the configured defaults: every rule, and the
    /// [`bounds`] new volumes are held to.
    pub fn parse(
        opts: &BTreeMap<String, String>,
        defaults: &Defaults,
    ) -> Result<VolumeSpec, OptionError> {
        let spec = VolumeSpec::parse_rules(opts, defaults)?;
        bounds::check(&spec)?;
        Ok(spec)
    }

    /// Parses a definition the plugin stored when it was created: every rule, but a bound it
    /// exceeds is not a refusal (it was created before the bound, or under other `[defaults]`:
    /// refusing it now would take running containers' secrets away at a restart or an upgrade).
    /// Returns the spec and the bound it exceeds, if any, for the caller to warn of.
    pub fn parse_stored(
        opts: &BTreeMap<String, String>,
        defaults: &Defaults,
    ) -> Result<(VolumeSpec, Option<OptionError>), OptionError> {
        let spec = VolumeSpec::parse_rules(opts, defaults)?;
        let over = bounds::check(&spec).err();
        Ok((spec, over))
    }

    /// Every rule but the bounds.
    fn parse_rules(
        opts: &BTreeMap<String, String>,
        defaults: &Defaults,
    ) -> Result<VolumeSpec, OptionError> {
        let Given {
            settings,
            main_path,
            named,
            params,
            field: spec_field,
            file: spec_file,
            format,
            policies,
            signal,
            wrapped,
            template,
            role_id,
            namespace,
            revoke_replaced,
            uid_of_container,
            ttl_given,
        } = Given::read(opts, defaults)?;
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
                for (option, given) in [("policies", policies.is_some()), ("ttl", ttl_given)] {
                    if given {
                        return Err(err(option, "cannot go with `role-id`: each mount logs in with the AppRole, whose token_policies and token_ttl apply"));
                    }
                }
                IdentityKind::WrappedSecretId { role_id }
            }
        };
        let named: Vec<&str> = sources.iter().filter_map(|s| s.dir.as_deref()).collect();
        let output = output_file_of(
            spec_file.as_deref(),
            template.as_deref(),
            spec_field.as_deref(),
            format,
        );
        if let Some(clash) = output.filter(|o| named.contains(o)) {
            let by = match (&spec_file, &template, format) {
                (Some(_), _, _) => "file",
                (None, Some(_), _) => "template",
                (None, None, Format::Json | Format::Env) => "format",
                (None, None, Format::Files) => "field",
            };
            return Err(err(
                by,
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
        Ok(spec)
    }

    /// The name of the single output file for `format=json`/`env`, `field` or `template`, if
    /// there is one.
    pub fn output_file(&self) -> Option<&str> {
        output_file_of(
            self.file.as_deref(),
            self.template.as_deref(),
            self.field.as_deref(),
            self.format,
        )
    }

    /// The mode of the volume's directories: the file mode with `x` wherever it has `r`.
    pub fn dir_mode(&self) -> u32 {
        self.mode | ((self.mode & 0o444) >> 2)
    }
}

/// The one output file a definition names, decided here only (parse's clash check and the
/// writer ask the same): `file`; else a template's name without `.tmpl`, `.j2` or `.jinja`;
/// else `secrets.json` / `secrets.env` for those formats; else `field`; else none (one file
/// per key).
fn output_file_of<'a>(
    file: Option<&'a str>,
    template: Option<&'a str>,
    field: Option<&'a str>,
    format: Format,
) -> Option<&'a str> {
    if let (None, Some(template)) = (file, template) {
        let stem = [".tmpl", ".j2", ".jinja"].iter().find_map(|x| template.strip_suffix(x));
        return Some(stem.filter(|s| valid_file_name(s)).unwrap_or(template));
    }
    match (file, field, format) {
        (Some(file), _, _) => Some(file),
        (None, _, Format::Json) => Some("secrets.json"),
        (None, _, Format::Env) => Some("secrets.env"),
        (None, Some(field), Format::Files) => Some(field),
        (None, None, Format::Files) => None,
    }
}

pub(crate) fn valid_dir_name(name: &str) -> bool {
    valid_file_name(name)
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
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

    /// The output file is decided once: the clash check sees the name the writer will use
    /// (a template's without `.tmpl`; `secrets.json` for format=json), and names the option
    /// that chose it.
    #[test]
    fn an_output_file_may_not_take_a_sources_directory_name() {
        let e = parse(&[("path", "kv/a"), ("path.app", "kv/b"), ("template", "app.tmpl")]);
        let e = e.unwrap_err();
        assert_eq!(e.option, "template");
        assert!(e.message.contains("`app`") && e.message.contains("path.app"), "{e}");
        let e = parse(&[("path", "kv/a"), ("path.secrets.json", "kv/b"), ("format", "json")]);
        assert_eq!(e.unwrap_err().option, "format");
        let e =
            parse(&[("path", "kv/a"), ("path.out", "kv/b"), ("format", "env"), ("file", "out")]);
        assert_eq!(e.unwrap_err().option, "file");
        // A name that differs from every directory's is fine.
        parse(&[("path", "kv/a"), ("path.app", "kv/b"), ("template", "app.conf.tmpl")]).unwrap();
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
