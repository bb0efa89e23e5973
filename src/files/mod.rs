//! Turning secrets into files: rendering a volume's sources as `files`, `json` or `env`
//! ([`render`]), and writing them into a mount's tmpfs ([`write()`], [`write_new`]: see
//! `write.rs` for how no path a container could have changed is ever followed).
//!
//! A key that cannot be a single file name fails the render with an error naming it; nothing is
//! ever written outside the directory given to [`write()`]. Contents are zeroed when dropped.

pub use write::{write, write_new, Digests, WriteError};

mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::vault::Secret;
use crate::volume::{valid_file_name, Format, VolumeSpec};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "key {key:?} of {path} cannot be a file name (empty, `.`, `..`, or containing `/` or NUL)"
    )]
    BadKey { key: String, path: String },
    #[error("key {key:?} of {path} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*) for format=env")]
    BadEnvKey { key: String, path: String },
    #[error("key {key:?} of {path} is also the sub-directory of source `path.{key}`; rename one of them")]
    Clash { key: String, path: String },
    #[error("field {field:?} is not in the secret at {path} (it has {count} keys)")]
    FieldMissing { field: String, path: String, count: usize },
    #[error("option `size`: the {files} file(s) need {need} bytes of tmpfs (each takes its size in whole pages of 4096 bytes, at least one, and the largest one again for its atomic rewrite); the volume's size is {size} bytes: raise `size` to at least {need}")]
    TooLarge { files: usize, need: u64, size: u64 },
    #[error("option `size`: {read} of its {sources} sources hold about {bytes} bytes once read; a mount holds about {budget} bytes at most of what it reads before its files are written (twice its size, 4 MiB at least): raise `size`, or read fewer or smaller secrets")]
    TooMuchRead { read: usize, sources: usize, bytes: u64, budget: u64 },
    #[error("cannot read template {path}")]
    TemplateRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("template {path}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Template { path: PathBuf, line: Option<usize>, message: String },
}

/// One file to write: its path relative to the volume root and its contents.
pub struct File {
    pub path: PathBuf,
    pub contents: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "File({}, {} bytes)", self.path.display(), self.contents.len())
    }
}

/// Who owns the files, and their modes.
#[derive(Debug, Clone, Copy)]
pub struct Ownership {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub dir_mode: u32,
}

impl Ownership {
    pub fn of(spec: &VolumeSpec) -> Ownership {
        Ownership { uid: spec.uid, gid: spec.gid, mode: spec.mode, dir_mode: spec.dir_mode() }
    }
}

/// Renders every source's secret into files; `secrets[i]` belongs to `spec.sources[i]`. A
/// `template` is read from `templates_dir`.
pub fn render(
    spec: &VolumeSpec,
    secrets: &[Secret],
    templates_dir: &Path,
) -> Result<Vec<File>, RenderError> {
    let mut files = Vec::new();
    if let Some(name) = &spec.template {
        let contents = render_template(&templates_dir.join(name), spec, secrets)?;
        let path = PathBuf::from(spec.output_file().unwrap_or(name));
        files.push(File { path, contents });
        return check_size(spec, files);
    }
    let dirs: Vec<&str> = spec.sources.iter().filter_map(|s| s.dir.as_deref()).collect();
    for (source, secret) in spec.sources.iter().zip(secrets) {
        let dir = source.dir.as_deref().map(PathBuf::from).unwrap_or_default();
        let selected: Vec<(&String, &Value)> = match &spec.field {
            Some(field) => {
                let value = secret.data.get(field).ok_or_else(|| RenderError::FieldMissing {
                    field: field.clone(),
                    path: source.path.clone(),
                    count: secret.data.len(),
                })?;
                vec![(field, value)]
            }
            None => secret.data.iter().collect(),
        };
        match spec.format {
            Format::Files => {
                for (key, value) in selected {
                    let name = match spec.output_file() {
                        Some(file) => file,
                        None if source.dir.is_none() && dirs.contains(&key.as_str()) => {
                            return Err(RenderError::Clash {
                                key: key.clone(),
                                path: source.path.clone(),
                            })
                        }
                        None if valid_file_name(key) => key.as_str(),
                        None => {
                            return Err(RenderError::BadKey {
                                key: key.clone(),
                                path: source.path.clone(),
                            })
                        }
                    };
                    files.push(File { path: dir.join(name), contents: value_bytes(value) });
                }
            }
            Format::Json => {
                let object: Map<String, Value> =
                    selected.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let mut value = Value::Object(object);
                let contents = Zeroizing::new(serde_json::to_vec(&value).unwrap_or_default());
                crate::vault::wipe(&mut value);
                files.push(File {
                    path: dir.join(spec.output_file().unwrap_or("secrets.json")),
                    contents,
                });
            }
            Format::Env => {
                let mut text = Zeroizing::new(Vec::new());
                for (key, value) in selected {
                    if !valid_env_name(key) {
                        return Err(RenderError::BadEnvKey {
                            key: key.clone(),
                            path: source.path.clone(),
                        });
                    }
                    text.extend_from_slice(key.as_bytes());
                    text.push(b'=');
                    shell_quote(&value_bytes(value), &mut text);
                    text.push(b'\n');
                }
                files.push(File {
                    path: dir.join(spec.output_file().unwrap_or("secrets.env")),
                    contents: text,
                });
            }
        }
    }
    check_size(spec, files)
}

/// The unit a tmpfs charges its files in (directories take none), and rounds its size up to.
pub const PAGE: u64 = 4096;

/// The bytes of tmpfs that files of these sizes need: each takes its size in whole pages, at
/// least one; and the largest one again, for the temporary file beside it while it is rewritten
/// (`write`: a new file, then `renameat`).
pub fn tmpfs_need(sizes: impl IntoIterator<Item = u64>) -> u64 {
    let pages = |len: u64| len.div_ceil(PAGE).max(1);
    let (total, largest) = sizes.into_iter().map(pages).fold((0, 0), |(t, l), p| (t + p, l.max(p)));
    (total + largest) * PAGE
}

fn check_size(spec: &VolumeSpec, files: Vec<File>) -> Result<Vec<File>, RenderError> {
    let need = tmpfs_need(files.iter().map(|f| f.contents.len() as u64));
    // The kernel rounds a tmpfs's size up to whole pages.
    if need > spec.size.div_ceil(PAGE) * PAGE {
        return Err(RenderError::TooLarge { files: files.len(), need, size: spec.size });
    }
    Ok(files)
}

/// Compiles the template at `path` for `spec` (at create): a syntax error carries its line,
/// and a variable that is none of the volume's sources (`secret`, each `path.NAME`'s `NAME`)
/// nor one of minijinja's globals is refused by name.
pub fn check_template(path: &Path, spec: &VolumeSpec) -> Result<(), RenderError> {
    let source = read_template(path)?;
    let env = template_env();
    let template = env.template_from_str(&source).map_err(|e| template_error(path, &e))?;
    let names = source_names(spec);
    let mut unknown: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !names.contains(&v.as_str()) && env.globals().all(|(g, _)| g != v))
        .collect();
    unknown.sort();
    if let Some(first) = unknown.first() {
        return Err(RenderError::Template {
            path: path.to_owned(),
            line: None,
            message: format!(
                "uses `{first}`, which is not a source of this volume; its sources are {} (`path` is `secret`, each `path.NAME` is `NAME`)",
                names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    Ok(())
}

/// The names a template sees the volume's sources by: `secret` for `path`, `NAME` for
/// `path.NAME`.
fn source_names(spec: &VolumeSpec) -> Vec<&str> {
    spec.sources.iter().map(|s| s.dir.as_deref().unwrap_or("secret")).collect()
}

fn read_template(path: &Path) -> Result<String, RenderError> {
    std::fs::read_to_string(path)
        .map_err(|source| RenderError::TemplateRead { path: path.to_owned(), source })
}

fn template_env() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    // A misspelt key is an error naming its line, not an empty string in a config file.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env
}

fn template_error(path: &Path, e: &minijinja::Error) -> RenderError {
    let message = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    RenderError::Template { path: path.to_owned(), line: e.line(), message }
}

/// Renders a template with every source in scope: `secret` is the `path` source, and each
/// `path.NAME` source is `NAME` (`{{ secret.password }}`, `{{ db.username }}`).
fn render_template(
    path: &Path,
    spec: &VolumeSpec,
    secrets: &[Secret],
) -> Result<Zeroizing<Vec<u8>>, RenderError> {
    let source = Zeroizing::new(read_template(path)?);
    let mut scope = BTreeMap::new();
    for (name, secret) in source_names(spec).into_iter().zip(secrets) {
        scope.insert(name.to_owned(), minijinja::Value::from_serialize(&secret.data));
    }
    let env = template_env();
    let template = env.template_from_str(&source).map_err(|e| template_error(path, &e))?;
    let rendered = template.render(&scope).map_err(|e| {
        let mut error = template_error(path, &e);
        if let (minijinja::ErrorKind::UndefinedError, RenderError::Template { message, .. }) =
            (e.kind(), &mut error)
        {
            if let Some(name) = first_undefined(&template, &scope) {
                message.push_str(&format!(" (`{name}` is not there)"));
            }
        }
        error
    })?;
    Ok(Zeroizing::new(rendered.into_bytes()))
}

/// The first plain lookup of the template (`secret.kye`, `db.username`) that is undefined in
/// `scope`, by its name (never a value): what a strict render's undefined-value error meant.
fn first_undefined(
    template: &minijinja::Template<'_, '_>,
    scope: &BTreeMap<String, minijinja::Value>,
) -> Option<String> {
    let mut lookups: Vec<String> = template.undeclared_variables(true).into_iter().collect();
    lookups.sort();
    lookups.into_iter().find(|lookup| {
        let mut segments = lookup.split('.');
        let Some(mut value) = segments.next().and_then(|first| scope.get(first)).cloned() else {
            return true;
        };
        segments.any(|segment| match value.get_attr(segment) {
            Ok(next) if !next.is_undefined() => {
                value = next;
                false
            }
            _ => true,
        })
    })
}

/// A string is written as is (no newline added); a list of PEM blocks (PKI's `ca_chain`) as
/// one PEM bundle, a block a line; any other JSON value as JSON.
fn value_bytes(value: &Value) -> Zeroizing<Vec<u8>> {
    match value {
        Value::String(s) => Zeroizing::new(s.as_bytes().to_vec()),
        Value::Array(items) if !items.is_empty() && items.iter().all(is_pem) => {
            let blocks: Vec<&str> =
                items.iter().filter_map(Value::as_str).map(str::trim_end).collect();
            Zeroizing::new(blocks.join("\n").into_bytes())
        }
        other => Zeroizing::new(serde_json::to_vec(other).unwrap_or_default()),
    }
}

fn is_pem(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.starts_with("-----BEGIN ") && s.trim_end().ends_with("-----"))
}

fn valid_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// POSIX single quoting: `'…'`, with `'` written as `'\''`.
fn shell_quote(value: &[u8], out: &mut Vec<u8>) {
    out.push(b'\'');
    for &b in value {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Defaults;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    /// `render` with no templates directory (no test here uses `template` but the ones below).
    fn render(spec: &VolumeSpec, secrets: &[Secret]) -> Result<Vec<File>, RenderError> {
        super::render(spec, secrets, Path::new("/nonexistent"))
    }

    use render as render_at;

    #[test]
    fn templates_see_every_source_and_report_their_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("app.env.tmpl"),
            "DB_USER={{ db.username }}\nAPI_KEY={{ secret.key }}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("typo.tmpl"), "line one\n{{ secret.kye }}\n").unwrap();
        std::fs::write(dir.path().join("broken.tmpl"), "ok\nok\n{% if %}\n").unwrap();
        let s = spec(&[
            ("path", "kv/a"),
            ("path.db", "database/creds/x"),
            ("template", "app.env.tmpl"),
        ]);
        let secrets = [secret(r#"{"key":"k1"}"#), secret(r#"{"username":"u1"}"#)];
        let files = super::render(&s, &secrets, dir.path()).unwrap();
        assert_eq!(contents(&files), vec![("app.env".into(), "DB_USER=u1\nAPI_KEY=k1\n".into())]);
        let s =
            spec(&[("path", "kv/a"), ("path.db", "database/creds/x"), ("template", "typo.tmpl")]);
        let e = super::render(&s, &secrets, dir.path()).unwrap_err().to_string();
        assert!(e.contains("typo.tmpl line 2") && e.contains("undefined"), "{e}");
        assert!(e.contains("(`secret.kye` is not there)"), "{e}");
        let e = check_template(&dir.path().join("broken.tmpl"), &s).unwrap_err().to_string();
        assert!(e.contains("broken.tmpl line 3") && e.contains("syntax"), "{e}");
        let e = check_template(&dir.path().join("missing.tmpl"), &s).unwrap_err().to_string();
        assert!(e.contains("cannot read template") && e.contains("missing.tmpl"), "{e}");
    }

    #[test]
    fn a_template_using_a_source_the_volume_lacks_is_refused_at_create() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.env.tmpl");
        std::fs::write(
            &file,
            "{#- a comment -#}\n{% for k, v in secret|items %}{{ k }}={{ v }} {{ loop.index }}\n{% endfor %}{{ range(2)|list }}{{ db.username }}\n",
        )
        .unwrap();
        let both = spec(&[("path", "kv/a"), ("path.db", "database/creds/x"), ("template", "t")]);
        check_template(&file, &both).unwrap();
        let e = check_template(&file, &spec(&[("path", "kv/a"), ("template", "t")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("uses `db`, which is not a source") && e.contains("`secret`"), "{e}");
        let e = check_template(&file, &spec(&[("path.db", "kv/b"), ("template", "t")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("uses `secret`") && e.contains("are `db`"), "{e}");
        // `{#- … -#}` leaves no empty first line.
        let files = super::render(
            &both,
            &[secret(r#"{"a":"1"}"#), secret(r#"{"username":"u"}"#)],
            dir.path(),
        );
        assert!(files.is_err(), "template `t` does not exist in dir");
        std::fs::copy(&file, dir.path().join("t")).unwrap();
        let files = super::render(
            &both,
            &[secret(r#"{"a":"1"}"#), secret(r#"{"username":"u"}"#)],
            dir.path(),
        )
        .unwrap();
        assert_eq!(contents(&files), vec![("t".into(), "a=1 1\n[0, 1]u\n".into())]);
    }

    fn spec(pairs: &[(&str, &str)]) -> VolumeSpec {
        let opts: BTreeMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        VolumeSpec::parse(&opts, &Defaults::default()).unwrap()
    }

    fn secret(json: &str) -> Secret {
        let Value::Object(data) = serde_json::from_str(json).unwrap() else { panic!() };
        Secret { data, lease: None, kv_version: None }
    }

    fn contents(files: &[File]) -> Vec<(String, String)> {
        files
            .iter()
            .map(|f| {
                (f.path.display().to_string(), String::from_utf8(f.contents.to_vec()).unwrap())
            })
            .collect()
    }

    #[test]
    fn one_file_per_key_strings_as_is_other_values_as_json() {
        let files = render(
            &spec(&[("path", "kv/a")]),
            &[secret(r#"{"password":"p@ss\n","port":5432,"tags":["a"]}"#)],
        )
        .unwrap();
        assert_eq!(
            contents(&files),
            vec![
                ("password".into(), "p@ss\n".into()),
                ("port".into(), "5432".into()),
                ("tags".into(), "[\"a\"]".into())
            ]
        );
    }

    #[test]
    fn a_list_of_pem_blocks_is_a_bundle() {
        let pem = |n| format!("-----BEGIN CERTIFICATE-----\\nMII{n}\\n-----END CERTIFICATE-----");
        let json = format!(r#"{{"ca_chain":["{}","{}"],"other":["a"]}}"#, pem(1), pem(2));
        let files = render(&spec(&[("path", "pki/issue/web")]), &[secret(&json)]).unwrap();
        let c = contents(&files);
        assert_eq!(c[0].1, format!("{}\n{}", pem(1), pem(2)).replace("\\n", "\n"));
        assert_eq!(c[1].1, r#"["a"]"#);
    }

    #[test]
    fn keys_that_are_not_file_names_are_refused_by_name() {
        for key in ["", ".", "..", "../../etc/passwd", "a/b", "nul\u{0}"] {
            let json = serde_json::json!({ key: "x" }).to_string();
            let e = render(&spec(&[("path", "kv/a")]), &[secret(&json)]).unwrap_err();
            assert!(matches!(&e, RenderError::BadKey { key: k, .. } if k == key), "{e}");
            assert!(e.to_string().contains("kv/a"));
        }
    }

    #[test]
    fn field_file_json_env_and_named_sources() {
        let s = r#"{"user":"u","password":"it's"}"#;
        let files =
            render(&spec(&[("path", "kv/a"), ("field", "password"), ("file", "pw")]), &[secret(s)])
                .unwrap();
        assert_eq!(contents(&files), vec![("pw".into(), "it's".into())]);
        let e = render(&spec(&[("path", "kv/a"), ("field", "nope")]), &[secret(s)]).unwrap_err();
        assert!(e.to_string().contains("nope") && e.to_string().contains("kv/a"), "{e}");
        let files = render(&spec(&[("path", "kv/a"), ("format", "env")]), &[secret(s)]).unwrap();
        assert_eq!(
            contents(&files),
            vec![("secrets.env".into(), "password='it'\\''s'\nuser='u'\n".into())]
        );
        let files = render(&spec(&[("path", "kv/a"), ("format", "json")]), &[secret(s)]).unwrap();
        assert_eq!(contents(&files)[0].1, r#"{"password":"it's","user":"u"}"#);
        let e = render(&spec(&[("path", "kv/a"), ("format", "env")]), &[secret(r#"{"a-b":"x"}"#)])
            .unwrap_err();
        assert!(matches!(e, RenderError::BadEnvKey { .. }));
        let files = render(
            &spec(&[("path", "kv/a"), ("path.db", "database/creds/x")]),
            &[secret(r#"{"k":"1"}"#), secret(r#"{"username":"v"}"#)],
        )
        .unwrap();
        assert_eq!(
            contents(&files),
            vec![("k".into(), "1".into()), ("db/username".into(), "v".into())]
        );
    }

    #[test]
    fn a_key_named_like_a_temporary_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let owner = Ownership { uid, gid, mode: 0o400, dir_mode: 0o500 };
        let files = render(
            &spec(&[("path", "kv/a")]),
            &[secret(r#"{".password.tmp":"beside","password":"pw"}"#)],
        )
        .unwrap();
        write(dir.path(), &files, owner, &mut Digests::default()).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join(".password.tmp")).unwrap(), "beside");
        assert_eq!(std::fs::read_to_string(dir.path().join("password")).unwrap(), "pw");
    }

    #[test]
    fn a_root_key_cannot_take_a_named_source_s_directory() {
        let s = spec(&[("path", "kv/a"), ("path.db", "database/creds/x")]);
        let e = render(&s, &[secret(r#"{"db":"x"}"#), secret(r#"{"username":"u"}"#)]).unwrap_err();
        assert!(matches!(&e, RenderError::Clash { key, .. } if key == "db"), "{e}");
    }

    #[test]
    fn size_cap_is_enforced() {
        let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(70 * 1024));
        let e = render(&spec(&[("path", "kv/a"), ("size", "64k")]), &[secret(&big)]).unwrap_err();
        assert!(matches!(e, RenderError::TooLarge { files: 1, need: 147456, size: 65536 }), "{e}");
        // The least size holds one small key, and its rewrite.
        let small = spec(&[("path", "kv/a"), ("size", "8k")]);
        render(&small, &[secret(r#"{"k":"1234567"}"#)]).unwrap();
        let full = format!(r#"{{"k":"{}"}}"#, "x".repeat(4096));
        render(&small, &[secret(&full)]).unwrap();
        let e = render(&small, &[secret(r#"{"a":"1","b":"2"}"#)]).unwrap_err().to_string();
        assert!(
            e.contains("2 file(s) need 12288 bytes")
                && e.contains("size is 8192 bytes")
                && e.contains("option `size`"),
            "{e}"
        );
        let e = render(&small, &[secret(&format!(r#"{{"k":"{}x"}}"#, "x".repeat(4096)))]);
        assert!(matches!(e, Err(RenderError::TooLarge { need: 16384, .. })));
        // Three short keys: three pages and one for the rewrite.
        let three = || secret(r#"{"a":"1","b":"2","c":"3"}"#);
        render(&spec(&[("path", "kv/a"), ("size", "16k")]), &[three()]).unwrap();
        assert!(render(&spec(&[("path", "kv/a"), ("size", "12k")]), &[three()]).is_err());
        // Sizes are rounded up to pages, as the kernel does.
        render(&spec(&[("path", "kv/a"), ("size", "8193")]), &[secret(r#"{"a":"1","b":"2"}"#)])
            .unwrap();
        assert_eq!(tmpfs_need([0, 4096, 4097]), (1 + 1 + 2 + 2) * PAGE);
    }

    #[test]
    fn writes_are_atomic_owned_moded_and_replace_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let owner = Ownership { uid, gid, mode: 0o440, dir_mode: 0o550 };
        let s = spec(&[("path", "kv/a"), ("path.db", "kv/b")]);
        let files =
            render_at(&s, &[secret(r#"{"a":"1","old":"x"}"#), secret(r#"{"b":"2"}"#)]).unwrap();
        let mut digests = Digests::default();
        assert!(write(dir.path(), &files, owner, &mut digests).unwrap());
        assert!(
            !write(dir.path(), &files, owner, &mut digests).unwrap(),
            "the same contents change nothing"
        );
        let meta = std::fs::metadata(dir.path().join("a")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o440);
        assert_eq!(
            std::fs::metadata(dir.path().join("db")).unwrap().permissions().mode() & 0o777,
            0o550
        );
        assert_eq!(std::fs::read_to_string(dir.path().join("db/b")).unwrap(), "2");
        let files = render_at(&s, &[secret(r#"{"a":"3"}"#), secret(r#"{"b":"2"}"#)]).unwrap();
        assert!(write(dir.path(), &files, owner, &mut digests).unwrap());
        assert_eq!(std::fs::read_to_string(dir.path().join("a")).unwrap(), "3");
        assert!(!dir.path().join("old").exists());
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
    }
}
