//! `[userns]`: the user namespace remapping of the Docker engines, for where they do not tell it
//! themselves (see [`crate::dockerd::userns`]).
//!
//! ```toml
//! [userns]
//! uid_base = 100000   # the host uid of a container's root
//! gid_base = 100000   # the host gid of a container's root (default: uid_base)
//! size = 65536        # how many ids are mapped (default: 65536)
//! ```

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::dockerd::userns::IdMap;

/// Docker's allocation for `--userns-remap=default` (`dockremap`).
const DEFAULT_SIZE: i64 = 65536;
/// The largest id: `(uid_t)-1` is no id.
const MAX_ID: i64 = u32::MAX as i64 - 1;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUserns {
    uid_base: Option<i64>,
    gid_base: Option<i64>,
    size: Option<i64>,
}

/// The validated `[userns]`: container ids `0..size` are host ids `uid_base..`, `gid_base..`.
pub(super) fn validate(raw: RawUserns) -> Result<IdMap, ConfigError> {
    let uid_base = raw.uid_base.ok_or_else(|| {
        invalid("userns.uid_base", "missing: the host uid of a container's root, such as 100000 (the start of the remap user's range in /etc/subuid)")
    })?;
    let gid_base = raw.gid_base.unwrap_or(uid_base);
    let size = raw.size.unwrap_or(DEFAULT_SIZE);
    if !(1..=MAX_ID).contains(&size) {
        return Err(invalid(
            "userns.size",
            format!("{size} is not a number of ids (1 to {MAX_ID})"),
        ));
    }
    for (key, base) in [("userns.uid_base", uid_base), ("userns.gid_base", gid_base)] {
        if base == 0 {
            return Err(invalid(
                key,
                "0 maps a container's root to the host's: that is no remapping; remove [userns]",
            ));
        }
        if !(1..=MAX_ID).contains(&(base + size - 1)) || base < 0 {
            return Err(invalid(
                key,
                format!("{base} with size {size} leaves the host's ids (1 to {MAX_ID}, base + size - 1 at most {MAX_ID})"),
            ));
        }
    }
    Ok(IdMap::single(uid_base as u32, gid_base as u32, size as u32))
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Overrides};
    use crate::dockerd::userns::IdMap;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, &Overrides::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn no_section_no_map() {
        assert_eq!(parse("").unwrap().userns, None);
    }

    #[test]
    fn a_base_and_a_size_map_container_ids() {
        let c = parse("[userns]\nuid_base = 100000\n").unwrap();
        assert_eq!(c.userns, Some(IdMap::single(100000, 100000, 65536)));
        let c = parse("[userns]\nuid_base = 231072\ngid_base = 300000\nsize = 1000\n").unwrap();
        assert_eq!(c.userns, Some(IdMap::single(231072, 300000, 1000)));
    }

    /// The commented `[userns]` of the example configuration parses, uncommented.
    #[test]
    fn the_example_block_parses() {
        let example = include_str!("../../config/config.toml");
        let lines: Vec<&str> = example.lines().collect();
        let at = lines.iter().position(|l| *l == "# [userns]").expect("a [userns] block");
        let block: Vec<&str> = lines[at..at + 4]
            .iter()
            .map(|l| l.trim_start_matches("# ").split("  #").next().unwrap())
            .collect();
        let c = parse(&block.join("\n")).unwrap();
        assert_eq!(c.userns, Some(IdMap::single(100000, 100000, 65536)));
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        for (text, key, says) in [
            ("[userns]\nsize = 10\n", "userns.uid_base", "missing"),
            ("[userns]\nuid_base = 0\n", "userns.uid_base", "no remapping"),
            ("[userns]\nuid_base = 1\ngid_base = 0\n", "userns.gid_base", "no remapping"),
            ("[userns]\nuid_base = -5\n", "userns.uid_base", "leaves the host's ids"),
            ("[userns]\nuid_base = 4294967000\n", "userns.uid_base", "leaves the host's ids"),
            ("[userns]\nuid_base = 100000\nsize = 0\n", "userns.size", "not a number of ids"),
            ("[userns]\nuid_base = 100000\nbase = 1\n", "unknown field", "uid_base"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key) && e.contains(says), "{text}: {e}");
        }
    }
}
