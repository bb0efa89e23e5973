//! Volume options under hostile input: any map of options (known names, `path.NAME`,
//! `param.KEY` and anything else, with any values), over defaults set as `[defaults]` would
//! set them. Nothing panics, and every accepted definition keeps its invariants: file and
//! directory names are single file names, Vault paths have no `.`/`..`/empty segments, the mode
//! has no execute, setuid or sticky bits, the size is within bounds.

#![no_main]

use std::collections::BTreeMap;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vault_secrets::volume::{
    valid_file_name, Defaults, Format, IdentityKind, VolumeSpec, MAX_SIZE,
};

const KNOWN: &[&str] = &[
    "path",
    "field",
    "file",
    "format",
    "uid",
    "gid",
    "mode",
    "size",
    "refresh",
    "ttl",
    "policies",
    "signal",
    "wrapped-token",
    "role-id",
    "template",
];

#[derive(Arbitrary, Debug)]
enum Key {
    Known(u8),
    Named(String),
    Param(String),
    Raw(String),
}

impl Key {
    fn name(&self) -> String {
        match self {
            Key::Known(i) => KNOWN[*i as usize % KNOWN.len()].to_owned(),
            Key::Named(n) => format!("path.{n}"),
            Key::Param(p) => format!("param.{p}"),
            Key::Raw(r) => r.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    defaults: Vec<(u8, String)>,
    opts: Vec<(Key, String)>,
}

const SETTINGS: &[&str] = &["uid", "gid", "mode", "size", "refresh", "ttl"];

fn check_defaults(d: &Defaults) {
    assert!(d.mode <= 0o777 && d.mode & 0o111 == 0, "default mode {:o}", d.mode);
    assert!((4096..=MAX_SIZE).contains(&d.size), "default size {}", d.size);
    assert!(d.uid < u32::MAX && d.gid < u32::MAX);
}

fn check_vault_path(path: &str) {
    assert!(!path.starts_with('/') && !path.ends_with('/'), "{path:?}");
    assert!(path.len() <= 512, "{path:?}");
    let segments: Vec<&str> = path.split('/').collect();
    assert!(segments.len() >= 2, "{path:?}");
    for s in segments {
        assert!(!s.is_empty() && s != "." && s != "..", "segment {s:?} of {path:?}");
    }
    assert!(!path.contains(['?', '#', '%', '\\', ' ', '\0']), "{path:?}");
}

fn check_spec(spec: &VolumeSpec, opts: &BTreeMap<String, String>) {
    assert!(!spec.sources.is_empty());
    let mut dirs = std::collections::BTreeSet::new();
    for (i, source) in spec.sources.iter().enumerate() {
        check_vault_path(&source.path);
        match &source.dir {
            None => assert_eq!(i, 0, "only the first source is the root one"),
            Some(dir) => {
                assert!(valid_file_name(dir) && dir.len() <= 64, "dir {dir:?}");
                assert!(dirs.insert(dir.clone()), "dir {dir:?} twice");
            }
        }
        if i > 0 {
            assert!(source.params.is_empty(), "params belong to `path`");
        }
    }
    if let Some(field) = &spec.field {
        assert!(valid_file_name(field), "field {field:?}");
        assert_eq!(spec.sources.len(), 1);
    }
    if let Some(template) = &spec.template {
        assert!(valid_file_name(template) && !template.starts_with('.'), "{template:?}");
        assert!(!template.contains(['/', '\\']), "{template:?}");
        assert!(spec.field.is_none() && spec.format == Format::Files);
    }
    if let Some(file) = &spec.file {
        assert!(valid_file_name(file) && !file.starts_with('.'), "file {file:?}");
    }
    match spec.output_file() {
        Some(name) => assert!(valid_file_name(name), "output file {name:?}"),
        None => {
            assert!(spec.format == Format::Files && spec.field.is_none() && spec.template.is_none())
        }
    }
    assert!(spec.mode <= 0o777 && spec.mode & 0o111 == 0, "mode {:o}", spec.mode);
    assert!(spec.dir_mode() <= 0o777, "dir mode {:o}", spec.dir_mode());
    assert_eq!(spec.dir_mode() & 0o222, spec.mode & 0o222, "dir_mode adds only x bits");
    assert!((4096..=MAX_SIZE).contains(&spec.size), "size {}", spec.size);
    assert!(spec.uid < u32::MAX && spec.gid < u32::MAX);
    assert!(spec.refresh.is_zero() || spec.refresh >= Duration::from_secs(1));
    assert!(spec.ttl >= Duration::from_secs(10) && spec.ttl <= Duration::from_secs(365 * 86400));
    if let Some(policies) = &spec.policies {
        assert!(!policies.is_empty() && policies.iter().all(|p| !p.is_empty()));
    }
    if let Some(signal) = &spec.signal {
        assert!(signal.starts_with("SIG"), "{signal}");
    }
    match &spec.identity {
        IdentityKind::Plugin => assert!(!opts.contains_key("wrapped-token")),
        IdentityKind::WrappedToken => assert!(opts.contains_key("wrapped-token")),
        IdentityKind::WrappedSecretId { role_id } => {
            assert!(!role_id.is_empty() && opts.contains_key("wrapped-token"));
            assert!(spec.policies.is_none() && !opts.contains_key("ttl"));
        }
    }
}

fuzz_target!(|input: Input| {
    let mut defaults = Defaults::default();
    for (i, value) in &input.defaults {
        let key = SETTINGS[*i as usize % SETTINGS.len()];
        if let Err(e) = defaults.set(key, value) {
            assert_eq!(e.option, key, "{e}");
        }
    }
    check_defaults(&defaults);
    let opts: BTreeMap<String, String> =
        input.opts.iter().map(|(k, v)| (k.name(), v.clone())).collect();
    match VolumeSpec::parse(&opts, &defaults) {
        Ok(spec) => {
            check_spec(&spec, &opts);
            assert_eq!(VolumeSpec::parse(&opts, &defaults).ok(), Some(spec), "deterministic");
        }
        Err(e) => {
            let named = opts.contains_key(&e.option) || KNOWN.contains(&e.option.as_str());
            assert!(named || e.option == "param", "an error names an option: {e}");
            assert!(!e.message.is_empty());
        }
    }
});
