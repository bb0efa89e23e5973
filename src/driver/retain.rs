//! What a mount keeps of the data it read, once its files are written: only what a refresh
//! cannot read again, bounded by the mount's `size`.
//!
//! A refresh re-reads the sources on `refresh` and renders every file again, so it needs the
//! data of the sources it does not re-read: those with a lease, an expiration or parameters
//! (read once per generation). Everything else is dropped (wiped) as soon as it is rendered:
//! a Docker user's sources must not make the shared plugin hold their parsed data for a
//! container's life. What is kept is bounded by the mount's `size` (what its container was
//! given), 64 KiB at least (a PKI issue's reply is some 10 KiB: under a smaller `size` a
//! certificate would otherwise be issued again at every refresh): beyond it nothing is kept,
//! and the next refresh renders from a fresh generation, as after a restart.

use crate::lease::plan::{SourceTimer, Timers};
use crate::vault::Secret;
use crate::volume::VolumeSpec;

/// What a mount may keep for its refreshes whatever its `size`.
const KEPT_AT_LEAST: u64 = 64 * 1024;

/// What to keep of `secrets` (index for index with the sources): `None` when a refresh
/// needs nothing of them, or when what it needs is larger than the mount's `size` (and
/// [`KEPT_AT_LEAST`]).
pub(super) fn retained(
    spec: &VolumeSpec,
    timers: &Timers,
    secrets: Vec<Secret>,
) -> Option<Vec<Secret>> {
    let reread = |i: usize| {
        matches!(timers.sources.get(i), Some(SourceTimer::Static { refresh_at: Some(_) }))
    };
    if spec.refresh.is_zero() || (0..secrets.len()).all(reread) {
        return None;
    }
    let kept: Vec<Secret> = secrets
        .into_iter()
        .enumerate()
        .map(|(i, secret)| if reread(i) { emptied(secret) } else { secret })
        .collect();
    let held: u64 = kept.iter().map(Secret::weight).sum();
    if held > spec.size.max(KEPT_AT_LEAST) {
        tracing::info!(held, size = spec.size, "the data a refresh would need is larger than the mount's size: not kept; a refresh takes a fresh generation");
        return None;
    }
    Some(kept)
}

/// `secret` without its data (wiped as `secret` is dropped), its lease and version kept.
fn emptied(secret: Secret) -> Secret {
    Secret {
        data: serde_json::Map::new(),
        lease: secret.lease.clone(),
        kv_version: secret.kv_version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::plan::Deadline;
    use crate::volume::Defaults;
    use serde_json::{json, Value};
    use std::time::Duration;
    use tokio::time::Instant;

    fn secret(data: Value) -> Secret {
        let Value::Object(data) = data else { panic!("an object") };
        Secret { data, lease: None, kv_version: None }
    }

    #[test]
    fn what_a_refresh_needs_is_kept_only_within_the_mount_size() {
        let opts = [("path", "kv/a"), ("path.db", "database/creds/app"), ("size", "16k")];
        let opts = opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let spec = VolumeSpec::parse(&opts, &Defaults::default()).unwrap();
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        let timers = Timers {
            token: Deadline::after_issue(now, hour, hour, true, 0.5),
            sources: vec![
                SourceTimer::Static { refresh_at: Some(now + hour) },
                SourceTimer::Leased(Deadline::after_issue(now, hour, hour, true, 0.5)),
            ],
            retiring: Vec::new(),
            retry_at: None,
            failing_since: None,
        };
        let small = vec![secret(json!({"kv": "a"})), secret(json!({"password": "pw"}))];
        let kept = retained(&spec, &timers, small).unwrap();
        assert!(kept[0].data.is_empty(), "the source a refresh reads again is dropped");
        assert_eq!(kept[1].data["password"], "pw");
        // A template can render a few bytes from megabytes: 80 KiB kept would exceed 16k (and
        // the 64 KiB any mount may keep).
        let big = vec![secret(json!({"kv": "a"})), secret(json!({"blob": "x".repeat(80 * 1024)}))];
        assert!(retained(&spec, &timers, big).is_none());
        // A PKI issue's reply (about 11 KiB) is kept under a smaller size: its certificate is
        // not issued again at every refresh.
        let pki = secret(json!({"certificate": "c".repeat(2000), "issuing_ca": "i".repeat(2000),
            "ca_chain": ["i".repeat(2000), "r".repeat(2000)], "private_key": "k".repeat(3000),
            "serial_number": "1a:2b", "expiration": 1_900_000_000}));
        let small_size = [("path", "kv/a"), ("path.web", "database/creds/app"), ("size", "8k")];
        let opts = small_size.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let small_spec = VolumeSpec::parse(&opts, &Defaults::default()).unwrap();
        let kept = retained(&small_spec, &timers, vec![secret(json!({"kv": "a"})), pki]).unwrap();
        assert_eq!(kept[1].data["private_key"].as_str().unwrap().len(), 3000);
        // 480,000 zeros (960 KB of text) are many more bytes once parsed.
        let zeros = vec![secret(json!({})), secret(json!({"z": vec![0; 480_000]}))];
        assert!(retained(&spec, &timers, zeros).is_none());
    }
}
