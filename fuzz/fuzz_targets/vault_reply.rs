//! Vault replies under hostile input: any bytes parsed as a reply, turned into a secret and
//! rendered into files by one of a few typical volume definitions. Nothing panics; errors name
//! the API path; every rendered path is relative, has only normal components, and is one file
//! name at the volume's root or one below a source's directory.

#![no_main]

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vault_secrets::files::{render, tmpfs_need, RenderError};
use vault_secrets::vault::client::{secret_from_reply, Reply};
use vault_secrets::vault::{Secret, VaultError};
use vault_secrets::volume::{valid_file_name, Defaults, Format, VolumeSpec};

const SPECS: &[&[(&str, &str)]] = &[
    &[("path", "kv/a")],
    &[("path", "kv/a"), ("format", "json")],
    &[("path", "kv/a"), ("format", "env")],
    &[("path", "kv/a"), ("field", "password")],
    &[("path", "kv/a"), ("field", "cert"), ("file", "tls.pem")],
    &[("path", "kv/a"), ("path.db", "database/creds/app")],
    &[("path.db", "database/creds/app"), ("path.tls", "pki/issue/web"), ("format", "json")],
    &[("path", "kv/a"), ("size", "8k")],
    &[("path", "kv/a"), ("path.db", "database/creds/app"), ("template", "all.tmpl")],
];

/// A templates directory with one template that prints every key and value of two sources.
fn templates() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vault-reply-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let template = "{% for k, v in secret|items %}{{ k }}={{ v }}\n{% endfor %}\
                        {% for k, v in db|items %}db.{{ k }}={{ v }}\n{% endfor %}";
        std::fs::write(dir.join("all.tmpl"), template).unwrap();
        dir
    })
}

fn spec(pairs: &[(&str, &str)]) -> VolumeSpec {
    let opts: BTreeMap<String, String> =
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    VolumeSpec::parse(&opts, &Defaults::default()).unwrap()
}

fn read(path: &str, body: &[u8]) -> Option<Secret> {
    let reply = serde_json::from_slice::<Reply>(body).ok()?;
    match secret_from_reply(path, Some(reply)) {
        Ok(secret) => Some(secret),
        Err(e) => {
            assert!(
                matches!(&e, VaultError::BadReply { path: p, .. } | VaultError::NotFound { path: p } if p == path),
                "{e}"
            );
            assert!(e.to_string().contains(path), "{e}");
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, body)) = data.split_first() else { return };
    let spec = spec(SPECS[choice as usize % SPECS.len()]);
    let mut secrets = Vec::new();
    for source in &spec.sources {
        match read(&source.path, body) {
            Some(secret) => secrets.push(secret),
            None => return,
        }
    }
    let dirs: Vec<Option<&str>> = spec.sources.iter().map(|s| s.dir.as_deref()).collect();
    let files = match render(&spec, &secrets, templates()) {
        Ok(files) => files,
        Err(e) => {
            let text = e.to_string();
            match &e {
                RenderError::BadKey { key, path } => {
                    assert!(spec.format == Format::Files && spec.output_file().is_none());
                    assert!(!valid_file_name(key), "{key:?} refused: {text}");
                    assert!(spec.sources.iter().any(|s| &s.path == path), "{text}");
                }
                RenderError::BadEnvKey { path, .. } | RenderError::FieldMissing { path, .. } => {
                    assert!(spec.sources.iter().any(|s| &s.path == path), "{text}");
                }
                RenderError::Clash { key, path } => {
                    assert!(
                        spec.sources.iter().any(|s| s.dir.as_deref() == Some(key.as_str())),
                        "{text}"
                    );
                    assert!(spec.sources.iter().any(|s| &s.path == path), "{text}");
                }
                RenderError::TooLarge { size, need, .. } => assert!(*size == spec.size && need > size),
                RenderError::Template { .. } | RenderError::TemplateRead { .. } => {
                    panic!("the template renders any secret: {text}")
                }
                RenderError::TooMuchRead { .. } => panic!("render reads nothing: {text}"),
            }
            return;
        }
    };
    for file in &files {
        let path = &file.path;
        assert!(path.is_relative(), "{path:?}");
        let parts: Vec<_> = path.components().collect();
        assert!(parts.iter().all(|c| matches!(c, Component::Normal(_))), "{path:?}");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap();
        assert!(valid_file_name(name), "{path:?}");
        match parts.len() {
            1 => assert!(dirs.contains(&None), "{path:?} at the root of a spec without `path`"),
            2 => {
                let dir = parts[0].as_os_str().to_str().unwrap();
                assert!(dirs.contains(&Some(dir)), "{path:?} below no source's directory");
            }
            _ => panic!("{path:?} is deeper than a source's directory"),
        }
        if spec.template.is_some() {
            assert_eq!(name, "all");
        } else if spec.format == Format::Files && spec.output_file().is_none() {
            assert!(secrets.iter().any(|s| s.data.contains_key(name)), "{name:?} is a key");
        }
    }
    // What the files need of the tmpfs (pages, and one rewrite's temporary file) fits in it.
    assert!(tmpfs_need(files.iter().map(|f| f.contents.len() as u64)) <= spec.size);
});
