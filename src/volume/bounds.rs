//! The bounds a Docker user cannot exceed with a volume's options, each with its reason.
//!
//! The plugin is one root daemon shared by every Docker user of the host: what one volume can
//! make it hold or send is bounded here, and a volume that could never keep within a bound is
//! refused at create, the error naming the bound.

use std::time::Duration;

use super::{err, OptionError, VolumeSpec};

/// The most sources (`path` and `path.NAME`) a volume may read. Every mount reads each of them
/// with its own token and records a digest per file it writes: without a bound one volume makes
/// the plugin hold, read and record without end. 64 is far above any real volume (an
/// application with a database, a certificate and a few KV secrets has under ten).
pub const MAX_SOURCES: usize = 64;

/// The most Vault reads per second one mount of a volume may ask for by its `refresh`: sources
/// re-read every `refresh` (a source with a lease is renewed instead, but which has one is not
/// known before the first read). Keeps one container from making the plugin flood Vault on
/// behalf of everybody (Vault's rate limits and audit log are shared).
pub const MAX_READS_PER_SECOND: u32 = 10;

/// The least a mount may hold of what its sources return, whatever its `size`.
pub const LEAST_READ_BUDGET: u64 = 4 * 1024 * 1024;

/// How much of what its sources return (about, in memory: [`crate::vault::Secret::weight`]) a
/// mount of `spec` may hold at once before its files are written: twice its `size` (its
/// files are at most `size`; what they are rendered from may be larger: a `field` or a
/// template picks from it), 4 MiB at least. Without it one volume's 64 sources of a 1 MiB
/// reply each made a Mount hold some hundreds of MiB before its files were found too large.
pub fn read_budget(spec: &VolumeSpec) -> u64 {
    spec.size.saturating_mul(2).max(LEAST_READ_BUDGET)
}

/// Refuses a definition that exceeds a bound.
pub(super) fn check(spec: &VolumeSpec) -> Result<(), OptionError> {
    let sources = spec.sources.len();
    if sources > MAX_SOURCES {
        return Err(err(
            "path.NAME",
            format!("{sources} sources given; a volume reads at most {MAX_SOURCES} (path and path.NAME together): split it into several volumes"),
        ));
    }
    if let Some(needed) =
        least_refresh(sources).filter(|least| !spec.refresh.is_zero() && spec.refresh < *least)
    {
        return Err(err(
            "refresh",
            format!(
                "{} with {sources} sources would read Vault {:.1} times a second per mount; at most {MAX_READS_PER_SECOND} are allowed: refresh={}s or more (or 0: off)",
                humantime::format_duration(spec.refresh),
                sources as f64 / spec.refresh.as_secs_f64(),
                needed.as_secs_f64().ceil() as u64,
            ),
        ));
    }
    Ok(())
}

/// The shortest `refresh` that keeps `sources` reads within [`MAX_READS_PER_SECOND`].
fn least_refresh(sources: usize) -> Option<Duration> {
    let sources = u32::try_from(sources).ok()?;
    Some(Duration::from_secs(1) * sources / MAX_READS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Defaults;
    use std::collections::BTreeMap;

    fn with_sources(n: usize, refresh: &str) -> BTreeMap<String, String> {
        let mut opts: BTreeMap<String, String> =
            (0..n).map(|i| (format!("path.s{i}"), "secret/data/app".to_string())).collect();
        opts.insert("refresh".into(), refresh.into());
        opts
    }

    #[test]
    fn a_volume_over_the_source_limit_is_refused_naming_it() {
        let defaults = Defaults::default();
        VolumeSpec::parse(&with_sources(MAX_SOURCES, "0"), &defaults).unwrap();
        let e = VolumeSpec::parse(&with_sources(MAX_SOURCES + 1, "0"), &defaults).unwrap_err();
        assert_eq!(e.option, "path.NAME");
        assert!(e.message.contains("65 sources") && e.message.contains("at most 64"), "{e}");
        let e = VolumeSpec::parse(&with_sources(706, "5m"), &defaults).unwrap_err();
        assert_eq!(e.option, "path.NAME");
    }

    #[test]
    fn reads_per_second_are_bounded_by_refresh() {
        let defaults = Defaults::default();
        VolumeSpec::parse(&with_sources(10, "1s"), &defaults).unwrap();
        VolumeSpec::parse(&with_sources(64, "7s"), &defaults).unwrap();
        VolumeSpec::parse(&with_sources(64, "0"), &defaults).unwrap();
        let e = VolumeSpec::parse(&with_sources(11, "1s"), &defaults).unwrap_err();
        assert_eq!(e.option, "refresh");
        assert!(
            e.message.contains("11.0 times a second") && e.message.contains("refresh=2s"),
            "{e}"
        );
        let e = VolumeSpec::parse(&with_sources(64, "6s"), &defaults).unwrap_err();
        assert!(e.message.contains("refresh=7s"), "{e}");
        // The configured default counts like the option.
        let fast = Defaults { refresh: Duration::from_secs(1), ..Defaults::default() };
        let mut opts = with_sources(20, "1s");
        opts.remove("refresh");
        assert_eq!(VolumeSpec::parse(&opts, &fast).unwrap_err().option, "refresh");
    }
}
