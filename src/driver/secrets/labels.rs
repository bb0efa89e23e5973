//! A swarm secret's labels as its options, and the names in a request.

use std::collections::BTreeMap;

use crate::volume::{Defaults, OptionError, VolumeSpec, MAX_SIZE};

/// Volume options that make no sense for one value that Docker writes itself.
const VOLUME_ONLY: &[&str] = &[
    "file",
    "template",
    "uid",
    "gid",
    "mode",
    "size",
    "refresh",
    "signal",
    "role-id",
    "revoke-replaced",
];

/// The labels a secret accepts, for error messages.
const ACCEPTED: &str = "path, field, format (json or env), param.KEY, ttl, policies, namespace";

/// Whether `name` is a swarm secret name as Docker accepts it (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`,
/// at most 64 characters).
pub fn valid_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(super) fn valid_task_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn label(key: &str, message: impl Into<String>) -> OptionError {
    OptionError { option: key.to_owned(), message: message.into() }
}

/// A secret's labels as a one-source [`VolumeSpec`] whose rendering is one file: its value.
pub fn parse_labels(
    labels: &BTreeMap<String, String>,
    defaults: &Defaults,
) -> Result<VolumeSpec, OptionError> {
    let mut opts = BTreeMap::new();
    for (key, value) in labels {
        match key.as_str() {
            "path" | "field" | "ttl" | "policies" | "namespace" => {}
            "format" if value == "files" => {
                return Err(label(key, "`files` makes a file per key, and a swarm secret is one value: leave `format` out (the data as JSON, or the value of `field`) or give json or env"));
            }
            "format" => {}
            "wrapped-token" => {
                return Err(label(key, "is not accepted on a swarm secret: anyone who may `docker secret inspect` sees its labels, and a wrapped token is used up by the first task; the tasks' tokens are children of the plugin's identity"));
            }
            k if VOLUME_ONLY.contains(&k) => {
                return Err(label(key, format!("is a volume option that makes no sense for a swarm secret, one value that Docker writes itself (file name, owner and mode come from the service's `--secret source=…,target=…,uid=…,gid=…,mode=…`); accepted labels: {ACCEPTED}")));
            }
            k if k.starts_with("param.") => {}
            k if k.starts_with("path.") => {
                return Err(label(key, "a swarm secret is one value from one path: give `path`"));
            }
            // Namespaced labels belong to other tools (`docker stack deploy` adds
            // com.docker.stack.namespace).
            k if k.contains('.') => continue,
            _ => {
                return Err(label(key, format!("unknown label; accepted: {ACCEPTED} (labels with a `.` in their name, like com.docker.stack.namespace, are other tools' and ignored)")));
            }
        }
        opts.insert(key.clone(), value.clone());
    }
    if !opts.contains_key("field") && !opts.contains_key("format") {
        opts.insert("format".into(), "json".into());
    }
    let mut spec = VolumeSpec::parse(&opts, defaults)?;
    spec.size = MAX_SIZE; // no tmpfs: the bound is MAX_VALUE
    Ok(spec)
}
