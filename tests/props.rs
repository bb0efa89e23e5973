//! Property tests of what hostile input can reach without Vault or Docker: keys of secrets as
//! file names, writing arbitrary secrets under arbitrary valid definitions, volume names against
//! Docker's own rule, and `format=env` files read back by `sh`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use serde_json::{Map, Value};
use vault_secrets::files::{render, write, Digests, Ownership, RenderError};
use vault_secrets::vault::Secret;
use vault_secrets::volume::{valid_file_name, valid_volume_name, Defaults, VolumeSpec};

/// No test here uses `template`.
const NO_TEMPLATES: &str = "/nonexistent";

fn spec(opts: &BTreeMap<String, String>) -> VolumeSpec {
    VolumeSpec::parse(opts, &Defaults::default())
        .unwrap_or_else(|e| panic!("a valid definition is refused: {e} ({opts:?})"))
}

fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn secret(data: Map<String, Value>) -> Secret {
    Secret { data, lease: None, kv_version: None }
}

/// Keys as a hostile Vault could send them: anything, and the shapes that matter for paths.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[./a\u{0}\u{e9}\u{1F600}\\\\]{0,6}",
        Just(String::new()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("../../etc/passwd".to_owned()),
        "[a-z]{250,300}",
        "\\PC{1,20}",
    ]
}

/// Secret values: strings (control characters, NUL, unicode), numbers, nested values.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<String>().prop_map(Value::String),
        "[\\PC\n\t\u{0}'\"$`\\\\]{0,40}".prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        Just(Value::from(vec!["-----BEGIN C-----\nA\n-----END C-----\n"; 2])),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Whether [`data`] adds keys named like another key's temporary file: off while `write` loses
/// them (see `a_key_named_like_another_keys_temporary_file_is_written`).
const TEMP_NAMED_KEYS: bool = true;

/// A secret's data; some keys are the names of sources' directories or of the fixed output
/// files, and (with [`TEMP_NAMED_KEYS`]) another key's temporary file name, `.KEY.tmp`.
fn data() -> impl Strategy<Value = Map<String, Value>> {
    let keys = prop_oneof![
        1 => key(),
        2 => "[a-zA-Z0-9_.-]{1,12}",
        2 => "[A-Z_][A-Z0-9_]{0,8}",
        2 => prop::sample::select(vec!["password", "a", "db", "tls", "secrets.json"])
            .prop_map(str::to_owned),
    ];
    (prop::collection::btree_map(keys, value(), 0..6), any::<prop::sample::Index>(), 0..3u8)
        .prop_map(|(mut data, pick, extra)| {
            if TEMP_NAMED_KEYS && extra == 0 && !data.is_empty() {
                let name = data.keys().nth(pick.index(data.len())).unwrap().clone();
                data.insert(format!(".{name}.tmp"), Value::from("beside"));
            }
            data.into_iter().collect()
        })
}

/// Valid definitions, built to be valid: every shape of output, named sources, modes, sizes.
fn definition() -> impl Strategy<Value = BTreeMap<String, String>> {
    let shape = prop_oneof![
        Just(vec![]),
        Just(vec![("field", "password")]),
        Just(vec![("field", "password"), ("file", "pw.txt")]),
        Just(vec![("field", "a"), ("file", "db")]),
        Just(vec![("format", "json")]),
        Just(vec![("format", "json"), ("file", "db")]),
        Just(vec![("format", "env")]),
        Just(vec![("format", "env"), ("file", "app.env")]),
    ];
    let mode = prop::sample::select(vec!["0400", "0440", "0600", "0640", "0644", "0666"]);
    let size = prop::sample::select(vec!["16k", "64k", "1m", "1m"]);
    (shape, any::<bool>(), prop::sample::subsequence(vec!["db", "tls"], 0..=2), mode, size)
        .prop_map(|(shape, root, named, mode, size)| {
            let field = shape.iter().any(|(k, _)| *k == "field");
            let mut o = opts(&shape);
            // An output file named like a source's sub-directory is refused at create.
            let output = o.get("file").cloned();
            let named: Vec<&str> =
                named.into_iter().filter(|d| output.as_deref() != Some(*d)).collect();
            if root || named.is_empty() || field {
                o.insert("path".into(), "kv/a".into());
            }
            if !field {
                for dir in named {
                    o.insert(format!("path.{dir}"), format!("database/creds/{dir}"));
                }
            }
            o.insert("mode".into(), mode.into());
            o.insert("size".into(), size.into());
            o
        })
}

/// Everything below `dir`: relative path → what it is (a file's contents, a link's target).
fn walk(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn go(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(root.join(rel)).unwrap() {
            let entry = entry.unwrap();
            let path = rel.join(entry.file_name());
            let kind = entry.file_type().unwrap();
            let full = root.join(&path);
            if kind.is_symlink() {
                out.insert(path, format!("link {:?}", std::fs::read_link(&full).unwrap()));
            } else if kind.is_dir() {
                out.insert(path.clone(), "dir".into());
                go(root, &path, out);
            } else {
                out.insert(path, format!("file {:?}", std::fs::read(&full).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    go(dir, Path::new(""), &mut out);
    out
}

/// Whether one rendered file's path is another's directory (a key named like a `path.NAME`).
fn clash(paths: &[&Path]) -> bool {
    paths.iter().any(|p| paths.iter().any(|q| q.parent() == Some(*p)))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_key_is_refused_by_name_or_is_one_normal_path_component(key in key()) {
        for (pairs, dir) in [(&[("path", "kv/a")][..], None), (&[("path.db", "kv/b")][..], Some("db"))] {
            let data: Map<String, Value> = [(key.clone(), Value::from("x"))].into_iter().collect();
            match render(&spec(&opts(pairs)), &[secret(data)], Path::new(NO_TEMPLATES)) {
                Err(RenderError::BadKey { key: k, path }) => {
                    prop_assert_eq!(&k, &key);
                    prop_assert!(!valid_file_name(&key));
                    prop_assert!(path == "kv/a" || path == "kv/b");
                }
                Err(e) => prop_assert!(false, "unexpected error: {}", e),
                Ok(files) => {
                    prop_assert_eq!(files.len(), 1);
                    let parts: Vec<Component> = files[0].path.components().collect();
                    let name = parts.last().unwrap().as_os_str();
                    prop_assert_eq!(name, key.as_str(), "the file is named by its key");
                    prop_assert!(parts.iter().all(|c| matches!(c, Component::Normal(_))));
                    match dir {
                        None => prop_assert_eq!(parts.len(), 1),
                        Some(d) => {
                            prop_assert_eq!(parts.len(), 2);
                            prop_assert_eq!(parts[0].as_os_str(), d);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn an_env_key_is_refused_by_name_or_is_a_variable_name(key in key()) {
        let data: Map<String, Value> = [(key.clone(), Value::from("x"))].into_iter().collect();
        let s = spec(&opts(&[("path", "kv/a"), ("format", "env")]));
        match render(&s, &[secret(data)], Path::new(NO_TEMPLATES)) {
            Err(RenderError::BadEnvKey { key: k, path }) => {
                prop_assert_eq!(k, key);
                prop_assert_eq!(path, "kv/a");
            }
            Err(e) => prop_assert!(false, "unexpected error: {}", e),
            Ok(files) => {
                let first = key.chars().next().unwrap();
                prop_assert!(first.is_ascii_alphabetic() || first == '_', "{:?}", key);
                prop_assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                let text = String::from_utf8(files[0].contents.to_vec()).unwrap();
                prop_assert_eq!(text, format!("{key}='x'\n"));
            }
        }
    }

    #[test]
    fn write_stays_inside_its_directory_and_writes_what_was_rendered(
        definition in definition(),
        data in prop::collection::vec(data(), 3),
        field_present in prop::bool::weighted(0.8),
        field_value in value(),
    ) {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("vol");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(parent.path().join("outside"), "untouched").unwrap();
        std::fs::create_dir(parent.path().join("db")).unwrap();
        let meta = std::fs::metadata(parent.path()).unwrap();
        let mut definition = definition;
        definition.insert("uid".into(), meta.uid().to_string());
        definition.insert("gid".into(), meta.gid().to_string());
        let spec = spec(&definition);
        let mut data = data;
        if let (Some(field), true) = (&spec.field, field_present) {
            data[0].insert(field.clone(), field_value);
        }
        let secrets: Vec<Secret> =
            data.into_iter().take(spec.sources.len()).map(secret).collect();
        let before = walk(parent.path());

        let files = match render(&spec, &secrets, Path::new(NO_TEMPLATES)) {
            Ok(files) => files,
            Err(RenderError::BadKey { .. } | RenderError::BadEnvKey { .. }
                | RenderError::FieldMissing { .. } | RenderError::TooLarge { .. }
                | RenderError::Clash { .. }) => {
                prop_assert_eq!(walk(parent.path()), before);
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("unexpected error: {e}"))),
        };
        let mut digests = Digests::default();
        let result = write(&root, &files, Ownership::of(&spec), &mut digests);

        let after = walk(parent.path());
        for (path, what) in &after {
            if !path.starts_with("vol") {
                prop_assert_eq!(Some(what), before.get(path), "{:?} outside vol/ changed", path);
            }
        }
        for path in before.keys() {
            prop_assert!(after.contains_key(path), "{:?} disappeared", path);
        }
        let paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
        match result {
            Err(e) => prop_assert!(clash(&paths), "write failed without a name clash: {:#?}", e),
            Ok(changed) => {
                prop_assert!(changed || files.is_empty());
                let mut wanted = BTreeSet::new();
                for file in &files {
                    let full = root.join(&file.path);
                    let on_disk = std::fs::read(&full);
                    prop_assert!(
                        on_disk.as_deref().ok() == Some(file.contents.as_slice()),
                        "{:?}: {:?} on disk, {} bytes rendered",
                        file.path,
                        on_disk.map(|b| b.len()),
                        file.contents.len()
                    );
                    let mode = std::fs::metadata(&full).unwrap().permissions().mode() & 0o7777;
                    prop_assert_eq!(mode, spec.mode);
                    wanted.insert(PathBuf::from("vol").join(&file.path));
                    if let Some(dir) = file.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        wanted.insert(PathBuf::from("vol").join(dir));
                    }
                }
                let under: BTreeSet<PathBuf> = after
                    .keys()
                    .filter(|p| p.starts_with("vol") && p.as_path() != Path::new("vol"))
                    .cloned()
                    .collect();
                prop_assert_eq!(under, wanted, "only the rendered files, no temporary file");
                prop_assert!(
                    !write(&root, &files, Ownership::of(&spec), &mut digests).unwrap(),
                    "rewrite"
                );
            }
        }
    }

    #[test]
    fn valid_volume_name_is_dockers_rule(
        name in prop_oneof![
            any::<String>(),
            "[a-zA-Z0-9_.\\- /\u{e9}\u{212a}\n]{0,12}",
            "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}",
            "[a-zA-Z0-9][a-zA-Z0-9_.-]{250,300}",
        ],
    ) {
        // Docker's `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$` (Go: `$` is the end of the text), bytewise.
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let b = name.as_bytes();
        let docker = !b.is_empty()
            && ALNUM.contains(&b[0])
            && b[1..].iter().all(|c| ALNUM.contains(c) || b"_.-".contains(c));
        prop_assert_eq!(valid_volume_name(&name), docker && b.len() <= 255, "{:?}", name);
    }
}

proptest! {
    // Each case spawns `sh`.
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn env_files_read_back_in_sh_to_the_values(
        vars in prop::collection::btree_map("V_[A-Za-z0-9_]{0,8}", "[\\PC\n\t]{0,40}", 1..5),
    ) {
        let data: Map<String, Value> =
            vars.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
        let s = spec(&opts(&[("path", "kv/a"), ("format", "env")]));
        let files = render(&s, &[secret(data)], Path::new(NO_TEMPLATES)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.env");
        std::fs::write(&file, files[0].contents.as_slice()).unwrap();
        let names: Vec<String> = vars.keys().map(|k| format!("\"${k}\"")).collect();
        let script = format!(". \"$1\" && printf '%s\\0' {}", names.join(" "));
        let out = Command::new("sh").args(["-c", &script, "sh"]).arg(&file).output().unwrap();
        prop_assert!(out.status.success(), "sh: {}", String::from_utf8_lossy(&out.stderr));
        let mut got: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
        prop_assert_eq!(got.pop(), Some(&b""[..]));
        let want: Vec<&[u8]> = vars.values().map(|v| v.as_bytes()).collect();
        prop_assert_eq!(got, want);
    }
}

/// Found by `write_stays_inside_its_directory_and_writes_what_was_rendered`: a key `.KEY.tmp`
/// beside a key `KEY` was deleted when `write` cleared the temporary file of `KEY`.
#[test]
fn a_key_named_like_another_keys_temporary_file_is_written() {
    let data: Map<String, Value> =
        serde_json::from_str(r#"{".password.tmp": "beside", "password": "p"}"#).unwrap();
    let s = spec(&opts(&[("path", "kv/a")]));
    let files = render(&s, &[secret(data)], Path::new(NO_TEMPLATES)).unwrap();
    assert_eq!(files.len(), 2, "both keys are rendered");
    let dir = tempfile::tempdir().unwrap();
    let meta = std::fs::metadata(dir.path()).unwrap();
    let owner = Ownership { uid: meta.uid(), gid: meta.gid(), mode: 0o600, dir_mode: 0o700 };
    assert!(write(dir.path(), &files, owner, &mut Digests::default()).unwrap());
    assert_eq!(std::fs::read_to_string(dir.path().join("password")).unwrap(), "p");
    assert_eq!(std::fs::read_to_string(dir.path().join(".password.tmp")).unwrap(), "beside");
}

/// The render-time `size` check against a real tmpfs of that size (root: mount(2)): what it
/// accepts is written, and rewritten (a temporary file beside each, then a rename); what it
/// refuses for want of the rewrite's page is indeed refused by the kernel at the rewrite.
#[test]
fn the_size_check_agrees_with_a_real_tmpfs() {
    use vault_secrets::files::write_new;
    use vault_secrets::tmpfs::{LinuxMounter, Mounter, TmpfsOptions};

    let owner = Ownership { uid: 0, gid: 0, mode: 0o400, dir_mode: 0o500 };
    let mounter = LinuxMounter::default();
    // Files of these sizes, a first and a second version (different contents), on `size`.
    let attempt = |size: &str, sources: &[(&str, &str)], sizes: &[usize]| {
        let mut pairs = vec![("size", size)];
        pairs.extend_from_slice(sources);
        let spec = spec(&opts(&pairs));
        let version = |fill: &str| -> Vec<Secret> {
            spec.sources
                .iter()
                .map(|_| {
                    let data = sizes
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (format!("k{i}"), Value::String(fill.repeat(*n))))
                        .collect();
                    secret(data)
                })
                .collect()
        };
        let first = render(&spec, &version("a"), Path::new(NO_TEMPLATES));
        let second = render(&spec, &version("b"), Path::new(NO_TEMPLATES));
        let dir = tempfile::tempdir().unwrap();
        let options = TmpfsOptions { size: spec.size, mode: 0o700, uid: 0, gid: 0 };
        mounter.mount_tmpfs(dir.path(), &options).expect("mount a tmpfs (run as root)");
        // What the kernel does with the same files, whatever the check said.
        let plain = spec_without_cap(&pairs);
        let files1 = render(&plain, &version("a"), Path::new(NO_TEMPLATES)).unwrap();
        let files2 = render(&plain, &version("b"), Path::new(NO_TEMPLATES)).unwrap();
        let written = write_new(dir.path(), &files1, owner);
        let rewritten =
            written.and_then(|mut digests| write(dir.path(), &files2, owner, &mut digests));
        mounter.unmount(dir.path()).unwrap();
        let accepted = first.is_ok() && second.is_ok();
        if let Err(e) = &first {
            assert!(matches!(e, RenderError::TooLarge { .. }), "{e}");
        }
        (accepted, rewritten.is_ok())
    };
    // (size, sources, file sizes): the check accepts, and the kernel holds it and its rewrite.
    for (size, sources, sizes) in [
        ("8k", &[("path", "kv/a")][..], &[7][..]),
        ("8k", &[("path", "kv/a")], &[4096]),
        ("8k", &[("path.db", "kv/a")], &[1]),
        ("16k", &[("path", "kv/a")], &[1, 1, 1]),
        ("8193", &[("path", "kv/a")], &[1, 1]),
        ("24k", &[("path", "kv/a")], &[5000, 1, 1]),
        ("16k", &[("path", "kv/a"), ("path.db", "kv/b")], &[1]),
    ] {
        assert_eq!(attempt(size, sources, sizes), (true, true), "{size} {sources:?} {sizes:?}");
    }
    // One page short: the check refuses, and the kernel indeed cannot rewrite it.
    for (size, sizes) in
        [("8k", &[1, 1][..]), ("8k", &[4097]), ("12k", &[1, 1, 1]), ("20k", &[5000, 1, 1])]
    {
        let sources = &[("path", "kv/a")][..];
        assert_eq!(attempt(size, sources, sizes), (false, false), "{size} {sizes:?}");
    }
}

/// `spec` with the largest `size`, so that `render` gives the files whatever their size.
fn spec_without_cap(pairs: &[(&str, &str)]) -> VolumeSpec {
    let mut pairs: Vec<(&str, &str)> =
        pairs.iter().filter(|(k, _)| *k != "size").copied().collect();
    pairs.push(("size", "64m"));
    spec(&opts(&pairs))
}
